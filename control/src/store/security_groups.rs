//! Security groups: the groups load balancers name and their ingress rules, which servos turn
//! into allow lists. Built-in groups are made by administrators (`elb-control admin
//! security-group ...`); with an EC2-compatible cloud, the rows of the groups in use are the
//! cloud's, kept up to date by [`crate::cloud::refresh`]. Either way the servos' documents
//! are built from these rows, so a change here (a commit, which bumps the config version)
//! reaches them within moments.

use std::collections::BTreeMap;

use elb_contract::security_group::IngressRule;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError, WriteTx, is_unique_violation};
use crate::timefmt::now_millis;

/// Where a group's row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum GroupOrigin {
    /// Made with `elb-control admin security-group create`.
    #[serde(rename = "built-in")]
    BuiltIn,
    /// Read from the EC2-compatible cloud.
    #[serde(rename = "cloud")]
    Cloud,
}

impl GroupOrigin {
    fn as_str(self) -> &'static str {
        match self {
            Self::BuiltIn => "built-in",
            Self::Cloud => "cloud",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "built-in" => Ok(Self::BuiltIn),
            "cloud" => Ok(Self::Cloud),
            other => Err(StoreError::Corrupt {
                table: "security_groups",
                detail: format!("origin {other}"),
            }),
        }
    }
}

/// One security group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityGroupRecord {
    #[serde(rename = "GroupId")]
    pub id: String,
    #[serde(rename = "GroupName")]
    pub name: String,
    #[serde(rename = "Description")]
    pub description: String,
    /// Its VPC; `None` for built-in groups of load balancers created with AvailabilityZones.
    #[serde(rename = "VpcId")]
    pub vpc_id: Option<String>,
    /// Owner among control's accounts (built-in groups); `None`: any account may use it.
    #[serde(rename = "AccountId")]
    pub account_id: Option<String>,
    /// The rules servos enforce (IPv4 CIDR rules; see [`elb_contract::security_group`]).
    #[serde(rename = "IngressRules")]
    pub ingress: Vec<IngressRule>,
    #[serde(rename = "Origin")]
    pub origin: GroupOrigin,
}

const COLUMNS: &str = "id, name, description, vpc_id, account_id, ingress, origin";

fn record(r: &sqlx::any::AnyRow) -> Result<SecurityGroupRecord, StoreError> {
    let ingress: String = r.try_get("ingress")?;
    let origin: String = r.try_get("origin")?;
    Ok(SecurityGroupRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        vpc_id: r.try_get("vpc_id")?,
        account_id: r.try_get("account_id")?,
        ingress: serde_json::from_str(&ingress).map_err(|e| StoreError::Corrupt {
            table: "security_groups",
            detail: format!("ingress rules: {e}"),
        })?,
        origin: GroupOrigin::parse(&origin)?,
    })
}

fn ingress_json(rules: &[IngressRule]) -> String {
    serde_json::to_string(rules).unwrap_or_else(|_| "[]".into())
}

/// The ingress rules of the groups `ids` (absent groups are absent from the map), read on
/// `conn` (the servo document's transaction).
pub(crate) async fn ingress_of(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<IngressRule>>, StoreError> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM security_groups WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(&mut *conn).await? {
            let g = record(&r)?;
            out.insert(g.id, g.ingress);
        }
    }
    Ok(out)
}

async fn insert(tx: &mut WriteTx, g: &SecurityGroupRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO security_groups (id, name, description, vpc_id, account_id, ingress, origin, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&g.id)
    .bind(&g.name)
    .bind(&g.description)
    .bind(g.vpc_id.as_deref())
    .bind(g.account_id.as_deref())
    .bind(ingress_json(&g.ingress))
    .bind(g.origin.as_str())
    .bind(now_millis())
    .execute(tx.conn())
    .await
    .map(|_| ())
}

impl Store {
    /// Adds a group (an administrator's, or one a load balancer takes from the cloud).
    pub async fn create_security_group(&self, g: &SecurityGroupRecord) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        match insert(&mut tx, g).await {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "security group",
                    name: g.id.clone(),
                });
            }
            other => other?,
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Every group, by id.
    pub async fn list_security_groups(&self) -> Result<Vec<SecurityGroupRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM security_groups ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// The groups among `ids` (absent ones are left out).
    pub async fn security_groups_by_id(
        &self,
        ids: &[String],
    ) -> Result<Vec<SecurityGroupRecord>, StoreError> {
        let all = self.list_security_groups().await?;
        Ok(all.into_iter().filter(|g| ids.contains(&g.id)).collect())
    }

    /// Changes a group's ingress rules with `change` (which returns whether it changed
    /// anything); returns the group as it is now.
    pub async fn update_security_group_ingress(
        &self,
        id: &str,
        change: impl FnOnce(&mut Vec<IngressRule>) -> bool,
    ) -> Result<SecurityGroupRecord, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM security_groups WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "security group",
                name: id.to_string(),
            });
        };
        let mut group = record(&row)?;
        if !change(&mut group.ingress) {
            // Nothing to write: no version bump, servos are not woken for nothing.
            tx.tx.rollback().await?;
            return Ok(group);
        }
        sqlx::query("UPDATE security_groups SET ingress = $1, updated_at = $2 WHERE id = $3")
            .bind(ingress_json(&group.ingress))
            .bind(now_millis())
            .bind(id)
            .execute(tx.conn())
            .await?;
        self.commit(tx).await?;
        Ok(group)
    }

    /// Removes a group no load balancer uses.
    pub async fn delete_security_group(&self, id: &str) -> Result<bool, StoreError> {
        let users: Vec<String> = sqlx::query(
            "SELECT l.name FROM lb_security_groups g JOIN load_balancers l ON l.id = g.lb_id
             WHERE g.group_id = $1 ORDER BY l.name",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| r.try_get("name"))
        .collect::<Result<_, _>>()?;
        if !users.is_empty() {
            return Err(StoreError::InUse {
                what: "security group",
                name: id.to_string(),
                users,
            });
        }
        let mut tx = self.write().await?;
        let n = sqlx::query("DELETE FROM security_groups WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(n > 0)
    }

    /// The groups load balancers use, with the region of a load balancer that uses each.
    pub async fn security_groups_in_use(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT g.group_id AS group_id, l.region AS region
             FROM lb_security_groups g JOIN load_balancers l ON l.id = g.lb_id
             ORDER BY region, group_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("group_id")?, r.try_get("region")?)))
            .collect()
    }

    /// Brings the rows of cloud groups in line with `groups` (what the cloud says now): new
    /// groups are added, changed ones rewritten, in one transaction, and only if something
    /// differs (no version bump otherwise). Returns the ids that changed.
    pub async fn sync_cloud_security_groups(
        &self,
        groups: &[SecurityGroupRecord],
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
        let stored = self.security_groups_by_id(&ids).await?;
        let changed: Vec<&SecurityGroupRecord> =
            groups.iter().filter(|g| !stored.contains(g)).collect();
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        for g in &changed {
            sqlx::query("DELETE FROM security_groups WHERE id = $1")
                .bind(&g.id)
                .execute(tx.conn())
                .await?;
            insert(&mut tx, g).await?;
        }
        self.commit(tx).await?;
        Ok(changed.iter().map(|g| g.id.clone()).collect())
    }
}
