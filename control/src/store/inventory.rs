//! The built-in inventory: availability zones, VPC subnets and instances, managed by admins.

use sqlx::Row;

use super::{Store, StoreError, is_unique_violation};
use crate::timefmt::now_millis;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Zone {
    #[serde(rename = "ZoneName")]
    pub name: String,
    #[serde(rename = "Region")]
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subnet {
    #[serde(rename = "SubnetId")]
    pub id: String,
    #[serde(rename = "AvailabilityZone")]
    pub zone: String,
    #[serde(rename = "VpcId")]
    pub vpc_id: String,
}

/// An instance as an inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InventoryInstance {
    #[serde(rename = "InstanceId")]
    pub id: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "AvailabilityZone")]
    pub zone: String,
    /// Owner; `None` means any account may register it.
    #[serde(rename = "AccountId")]
    pub account_id: Option<String>,
}

impl Store {
    pub async fn add_zone(&self, name: &str, region: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let result = sqlx::query("INSERT INTO zones (name, region) VALUES ($1, $2)")
            .bind(name)
            .bind(region)
            .execute(tx.conn())
            .await;
        match result {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "zone",
                    name: name.to_string(),
                });
            }
            other => other?,
        };
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn list_zones(&self) -> Result<Vec<Zone>, StoreError> {
        let rows = sqlx::query("SELECT name, region FROM zones ORDER BY region, name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Zone {
                    name: r.try_get("name")?,
                    region: r.try_get("region")?,
                })
            })
            .collect()
    }

    pub async fn add_subnet(&self, id: &str, zone: &str, vpc_id: &str) -> Result<(), StoreError> {
        if !self.list_zones().await?.iter().any(|z| z.name == zone) {
            return Err(StoreError::NotFound {
                what: "zone",
                name: zone.to_string(),
            });
        }
        let mut tx = self.write().await?;
        let result = sqlx::query("INSERT INTO subnets (id, zone, vpc_id) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(zone)
            .bind(vpc_id)
            .execute(tx.conn())
            .await;
        match result {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "subnet",
                    name: id.to_string(),
                });
            }
            other => other?,
        };
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn list_subnets(&self) -> Result<Vec<Subnet>, StoreError> {
        let rows = sqlx::query("SELECT id, zone, vpc_id FROM subnets ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Subnet {
                    id: r.try_get("id")?,
                    zone: r.try_get("zone")?,
                    vpc_id: r.try_get("vpc_id")?,
                })
            })
            .collect()
    }

    pub async fn add_instance(&self, instance: &InventoryInstance) -> Result<(), StoreError> {
        if !self
            .list_zones()
            .await?
            .iter()
            .any(|z| z.name == instance.zone)
        {
            return Err(StoreError::NotFound {
                what: "zone",
                name: instance.zone.clone(),
            });
        }
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO instances (id, address, zone, account_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&instance.id)
        .bind(&instance.address)
        .bind(&instance.zone)
        .bind(instance.account_id.as_deref())
        .bind(now_millis())
        .execute(tx.conn())
        .await;
        match result {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "instance",
                    name: instance.id.clone(),
                });
            }
            other => other?,
        };
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn remove_instance(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let n = sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(n > 0)
    }

    pub async fn list_instances(&self) -> Result<Vec<InventoryInstance>, StoreError> {
        let rows = sqlx::query("SELECT id, address, zone, account_id FROM instances ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InventoryInstance {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    zone: r.try_get("zone")?,
                    account_id: r.try_get("account_id")?,
                })
            })
            .collect()
    }

    /// The inventory entries among `ids` (unknown ids are simply absent from the result).
    pub async fn instances_by_id(
        &self,
        ids: &[String],
    ) -> Result<Vec<InventoryInstance>, StoreError> {
        let mut out = Vec::new();
        // Chunked so that the bind count stays far below every backend's limit.
        for chunk in ids.chunks(200) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, address, zone, account_id FROM instances WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.pool()).await? {
                out.push(InventoryInstance {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    zone: r.try_get("zone")?,
                    account_id: r.try_get("account_id")?,
                });
            }
        }
        Ok(out)
    }
}
