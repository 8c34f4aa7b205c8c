//! Load balancers as aggregates: loaded whole (row + child tables), changed in memory by the
//! API's rules, written back inside one write transaction.

use std::collections::{BTreeSet, HashMap};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError, flag, is_unique_violation};
use crate::model::{
    AccessLog, Attributes, HealthCheck, InstanceHealth, InstanceState, LbKey, Listener,
    LoadBalancer, Policy, Protocol, ReasonCode, RegisteredInstance, Scheme, Tag,
};
use crate::timefmt::now_millis;

/// Child tables, deleted before the load balancer row.
const CHILD_TABLES: &[&str] = &[
    "lb_listeners",
    "lb_listener_policies",
    "lb_zones",
    "lb_subnets",
    "lb_security_groups",
    "lb_instances",
    "lb_policies",
    "lb_policy_attributes",
    "lb_backend_policies",
    "lb_tags",
    "lb_additional_attributes",
    "servo_assignments",
    "servo_refusals",
];

/// One page of a listing, in (account, name) order.
#[derive(Debug, Clone)]
pub struct LbPage {
    pub items: Vec<LoadBalancer>,
    /// Whether more load balancers follow the last one.
    pub more: bool,
}

fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.into(),
    }
}

fn u16_of(table: &'static str, v: i64) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| corrupt(table, format!("port {v} out of range")))
}

fn u32_of(table: &'static str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(table, format!("value {v} out of range")))
}

fn protocol_of(table: &'static str, text: &str) -> Result<Protocol, StoreError> {
    Protocol::parse(text).ok_or_else(|| corrupt(table, format!("protocol {text}")))
}

fn target_of(table: &'static str, text: &str) -> Result<elb_contract::HealthTarget, StoreError> {
    text.parse()
        .map_err(|e| corrupt(table, format!("health check target {text}: {e}")))
}

fn lb_from_row(r: &AnyRow) -> Result<LoadBalancer, StoreError> {
    const T: &str = "load_balancers";
    let scheme: String = r.try_get("scheme")?;
    Ok(LoadBalancer {
        id: r.try_get("id")?,
        key: LbKey {
            account_id: r.try_get("account_id")?,
            region: r.try_get("region")?,
            name: r.try_get("name")?,
        },
        dns_name: r.try_get("dns_name")?,
        scheme: Scheme::parse(&scheme).ok_or_else(|| corrupt(T, format!("scheme {scheme}")))?,
        vpc_id: r.try_get("vpc_id")?,
        created_at: r.try_get("created_at")?,
        listeners: Vec::new(),
        zones: Vec::new(),
        subnets: Vec::new(),
        security_groups: Vec::new(),
        instances: Vec::new(),
        health_check: HealthCheck {
            target: target_of(T, &r.try_get::<String, _>("hc_target")?)?,
            interval: u32_of(T, r.try_get("hc_interval")?)?,
            timeout: u32_of(T, r.try_get("hc_timeout")?)?,
            unhealthy_threshold: u32_of(T, r.try_get("hc_unhealthy")?)?,
            healthy_threshold: u32_of(T, r.try_get("hc_healthy")?)?,
        },
        attributes: Attributes {
            servo: elb_contract::Attributes {
                connection_draining: elb_contract::ConnectionDraining {
                    enabled: r.try_get::<i64, _>("draining_enabled")? != 0,
                    timeout: u32_of(T, r.try_get("draining_timeout")?)?,
                },
                connection_settings: elb_contract::ConnectionSettings {
                    idle_timeout: u32_of(T, r.try_get("idle_timeout")?)?,
                },
                cross_zone_load_balancing: elb_contract::CrossZone {
                    enabled: r.try_get::<i64, _>("cross_zone")? != 0,
                },
            },
            access_log: AccessLog {
                enabled: r.try_get::<i64, _>("access_log_enabled")? != 0,
                s3_bucket_name: r.try_get("access_log_bucket")?,
                emit_interval: u32_of(T, r.try_get("access_log_interval")?)?,
                s3_bucket_prefix: r.try_get("access_log_prefix")?,
            },
            additional: Vec::new(),
        },
        policies: Vec::new(),
        backend_policies: Vec::new(),
        tags: Vec::new(),
    })
}

/// Rows of a child table for the given load balancers, in the given order.
async fn child_rows(
    conn: &mut AnyConnection,
    columns: &str,
    table: &str,
    order: &str,
    ids: &[String],
) -> Result<Vec<AnyRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT lb_id, {columns} FROM {table} WHERE lb_id IN ({}) ORDER BY lb_id, {order}",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// Loads the load balancers selected by `where_sql` (with `binds` as $1..), children included.
pub(super) async fn load(
    conn: &mut AnyConnection,
    where_sql: &str,
    binds: &[&str],
    limit: Option<usize>,
) -> Result<Vec<LoadBalancer>, StoreError> {
    let mut sql =
        format!("SELECT * FROM load_balancers WHERE {where_sql} ORDER BY account_id, name");
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut lbs: Vec<LoadBalancer> = rows.iter().map(lb_from_row).collect::<Result<_, _>>()?;
    if lbs.is_empty() {
        return Ok(lbs);
    }
    let ids: Vec<String> = lbs.iter().map(|lb| lb.id.clone()).collect();
    let index: HashMap<String, usize> = ids
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let slot = |r: &AnyRow, table: &'static str| -> Result<usize, StoreError> {
        let id: String = r.try_get("lb_id")?;
        index
            .get(&id)
            .copied()
            .ok_or_else(|| corrupt(table, format!("unexpected lb_id {id}")))
    };

    const L: &str = "lb_listeners";
    for r in child_rows(
        conn,
        "lb_port, protocol, instance_port, instance_protocol, ssl_certificate_id",
        L,
        "pos",
        &ids,
    )
    .await?
    {
        let i = slot(&r, L)?;
        lbs[i].listeners.push(Listener::new(elb_contract::Listener {
            load_balancer_port: u16_of(L, r.try_get("lb_port")?)?,
            protocol: protocol_of(L, &r.try_get::<String, _>("protocol")?)?,
            instance_port: u16_of(L, r.try_get("instance_port")?)?,
            instance_protocol: protocol_of(L, &r.try_get::<String, _>("instance_protocol")?)?,
            ssl_certificate_id: r.try_get("ssl_certificate_id")?,
        }));
    }
    const LP: &str = "lb_listener_policies";
    for r in child_rows(conn, "lb_port, policy_name", LP, "lb_port, pos", &ids).await? {
        let i = slot(&r, LP)?;
        let port = u16_of(LP, r.try_get("lb_port")?)?;
        if let Some(l) = lbs[i].listener_mut(port) {
            l.policy_names.push(r.try_get("policy_name")?);
        }
    }
    for r in child_rows(conn, "zone", "lb_zones", "pos", &ids).await? {
        let i = slot(&r, "lb_zones")?;
        lbs[i].zones.push(r.try_get("zone")?);
    }
    for r in child_rows(conn, "subnet_id", "lb_subnets", "pos", &ids).await? {
        let i = slot(&r, "lb_subnets")?;
        lbs[i].subnets.push(r.try_get("subnet_id")?);
    }
    for r in child_rows(conn, "group_id", "lb_security_groups", "pos", &ids).await? {
        let i = slot(&r, "lb_security_groups")?;
        lbs[i].security_groups.push(r.try_get("group_id")?);
    }
    const I: &str = "lb_instances";
    for r in child_rows(
        conn,
        "instance_id, address, zone, state, reason_code, description",
        I,
        "pos",
        &ids,
    )
    .await?
    {
        let i = slot(&r, I)?;
        let state: String = r.try_get("state")?;
        let reason: String = r.try_get("reason_code")?;
        lbs[i].instances.push(RegisteredInstance {
            instance_id: r.try_get("instance_id")?,
            address: r.try_get("address")?,
            zone: r.try_get("zone")?,
            health: InstanceHealth {
                state: InstanceState::parse(&state)
                    .ok_or_else(|| corrupt(I, format!("state {state}")))?,
                reason_code: ReasonCode::parse(&reason)
                    .ok_or_else(|| corrupt(I, format!("reason code {reason}")))?,
                description: r.try_get("description")?,
            },
        });
    }
    for r in child_rows(conn, "name, type_name", "lb_policies", "pos", &ids).await? {
        let i = slot(&r, "lb_policies")?;
        lbs[i].policies.push(Policy {
            name: r.try_get("name")?,
            type_name: r.try_get("type_name")?,
            attributes: Vec::new(),
        });
    }
    const PA: &str = "lb_policy_attributes";
    for r in child_rows(
        conn,
        "policy_name, attr_name, attr_value",
        PA,
        "policy_name, pos",
        &ids,
    )
    .await?
    {
        let i = slot(&r, PA)?;
        let policy: String = r.try_get("policy_name")?;
        if let Some(p) = lbs[i].policies.iter_mut().find(|p| p.name == policy) {
            p.attributes
                .push((r.try_get("attr_name")?, r.try_get("attr_value")?));
        }
    }
    const BP: &str = "lb_backend_policies";
    for r in child_rows(
        conn,
        "instance_port, policy_name",
        BP,
        "instance_port, pos",
        &ids,
    )
    .await?
    {
        let i = slot(&r, BP)?;
        let port = u16_of(BP, r.try_get("instance_port")?)?;
        let name: String = r.try_get("policy_name")?;
        match lbs[i].backend_policies.iter_mut().find(|(p, _)| *p == port) {
            Some((_, names)) => names.push(name),
            None => lbs[i].backend_policies.push((port, vec![name])),
        }
    }
    for r in child_rows(conn, "tag_key, tag_value", "lb_tags", "pos", &ids).await? {
        let i = slot(&r, "lb_tags")?;
        lbs[i].tags.push(Tag {
            key: r.try_get("tag_key")?,
            value: r.try_get("tag_value")?,
        });
    }
    for r in child_rows(
        conn,
        "attr_key, attr_value",
        "lb_additional_attributes",
        "pos",
        &ids,
    )
    .await?
    {
        let i = slot(&r, "lb_additional_attributes")?;
        lbs[i]
            .attributes
            .additional
            .push((r.try_get("attr_key")?, r.try_get("attr_value")?));
    }
    Ok(lbs)
}

async fn delete_children(
    conn: &mut AnyConnection,
    table: &str,
    lb_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(&format!("DELETE FROM {table} WHERE lb_id = $1"))
        .bind(lb_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn pos(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

async fn write_main_row(
    conn: &mut AnyConnection,
    lb: &LoadBalancer,
    insert: bool,
) -> Result<(), StoreError> {
    let sql = if insert {
        "INSERT INTO load_balancers (id, account_id, region, name, dns_name, scheme, vpc_id, created_at,
            hc_target, hc_interval, hc_timeout, hc_unhealthy, hc_healthy, cross_zone, draining_enabled,
            draining_timeout, idle_timeout, access_log_enabled, access_log_bucket, access_log_interval,
            access_log_prefix)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
    } else {
        "UPDATE load_balancers SET account_id = $2, region = $3, name = $4, dns_name = $5, scheme = $6,
            vpc_id = $7, created_at = $8, hc_target = $9, hc_interval = $10, hc_timeout = $11,
            hc_unhealthy = $12, hc_healthy = $13, cross_zone = $14, draining_enabled = $15,
            draining_timeout = $16, idle_timeout = $17, access_log_enabled = $18, access_log_bucket = $19,
            access_log_interval = $20, access_log_prefix = $21
         WHERE id = $1"
    };
    let a = &lb.attributes;
    let hc = &lb.health_check;
    sqlx::query(sql)
        .bind(&lb.id)
        .bind(&lb.key.account_id)
        .bind(&lb.key.region)
        .bind(&lb.key.name)
        .bind(&lb.dns_name)
        .bind(lb.scheme.as_str())
        .bind(lb.vpc_id.as_deref())
        .bind(lb.created_at)
        .bind(hc.target.to_string())
        .bind(i64::from(hc.interval))
        .bind(i64::from(hc.timeout))
        .bind(i64::from(hc.unhealthy_threshold))
        .bind(i64::from(hc.healthy_threshold))
        .bind(flag(a.servo.cross_zone_load_balancing.enabled))
        .bind(flag(a.servo.connection_draining.enabled))
        .bind(i64::from(a.servo.connection_draining.timeout))
        .bind(i64::from(a.servo.connection_settings.idle_timeout))
        .bind(flag(a.access_log.enabled))
        .bind(a.access_log.s3_bucket_name.as_deref())
        .bind(i64::from(a.access_log.emit_interval))
        .bind(a.access_log.s3_bucket_prefix.as_deref())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes the child rows of `new` that differ from `old` (all of them when `old` is `None`).
/// Registered instances are written as a difference, never rewritten, so that health reported
/// for an instance concurrently is not overwritten by a stale copy.
async fn write_children(
    conn: &mut AnyConnection,
    old: Option<&LoadBalancer>,
    new: &LoadBalancer,
) -> Result<(), StoreError> {
    let id = new.id.as_str();
    let changed = |f: &dyn Fn(&LoadBalancer) -> bool| old.is_none_or(f);

    if changed(&|o| o.listeners != new.listeners) {
        delete_children(conn, "lb_listeners", id).await?;
        delete_children(conn, "lb_listener_policies", id).await?;
        for (i, l) in new.listeners.iter().enumerate() {
            sqlx::query(
                "INSERT INTO lb_listeners (lb_id, pos, lb_port, protocol, instance_port, instance_protocol, ssl_certificate_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(pos(i))
            .bind(i64::from(l.load_balancer_port))
            .bind(l.protocol.as_str())
            .bind(i64::from(l.instance_port))
            .bind(l.instance_protocol.as_str())
            .bind(l.ssl_certificate_id.as_deref())
            .execute(&mut *conn)
            .await?;
            for (j, p) in l.policy_names.iter().enumerate() {
                sqlx::query("INSERT INTO lb_listener_policies (lb_id, lb_port, pos, policy_name) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(i64::from(l.load_balancer_port))
                    .bind(pos(j))
                    .bind(p)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    for (table, column, old_list, new_list) in [
        ("lb_zones", "zone", old.map(|o| &o.zones), &new.zones),
        (
            "lb_subnets",
            "subnet_id",
            old.map(|o| &o.subnets),
            &new.subnets,
        ),
        (
            "lb_security_groups",
            "group_id",
            old.map(|o| &o.security_groups),
            &new.security_groups,
        ),
    ] {
        if old_list == Some(new_list) {
            continue;
        }
        delete_children(conn, table, id).await?;
        for (i, v) in new_list.iter().enumerate() {
            sqlx::query(&format!(
                "INSERT INTO {table} (lb_id, pos, {column}) VALUES ($1, $2, $3)"
            ))
            .bind(id)
            .bind(pos(i))
            .bind(v)
            .execute(&mut *conn)
            .await?;
        }
    }
    if changed(&|o| o.instances != new.instances) {
        let old_ids: BTreeSet<&str> = old
            .map(|o| o.instances.iter().map(|i| i.instance_id.as_str()).collect())
            .unwrap_or_default();
        let new_ids: BTreeSet<&str> = new
            .instances
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect();
        for gone in old_ids.difference(&new_ids) {
            sqlx::query("DELETE FROM lb_instances WHERE lb_id = $1 AND instance_id = $2")
                .bind(id)
                .bind(*gone)
                .execute(&mut *conn)
                .await?;
        }
        let base = now_millis().saturating_mul(1000);
        for (i, inst) in new
            .instances
            .iter()
            .enumerate()
            .filter(|(_, i)| !old_ids.contains(i.instance_id.as_str()))
        {
            sqlx::query(
                "INSERT INTO lb_instances (lb_id, instance_id, pos, address, zone, state, reason_code, description, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(&inst.instance_id)
            .bind(base.saturating_add(pos(i)))
            .bind(&inst.address)
            .bind(&inst.zone)
            .bind(inst.health.state.as_str())
            .bind(inst.health.reason_code.as_str())
            .bind(&inst.health.description)
            .bind(now_millis())
            .execute(&mut *conn)
            .await?;
        }
    }
    if changed(&|o| o.policies != new.policies) {
        delete_children(conn, "lb_policies", id).await?;
        delete_children(conn, "lb_policy_attributes", id).await?;
        for (i, p) in new.policies.iter().enumerate() {
            sqlx::query(
                "INSERT INTO lb_policies (lb_id, pos, name, type_name) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(pos(i))
            .bind(&p.name)
            .bind(&p.type_name)
            .execute(&mut *conn)
            .await?;
            for (j, (name, value)) in p.attributes.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO lb_policy_attributes (lb_id, policy_name, pos, attr_name, attr_value) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(&p.name)
                .bind(pos(j))
                .bind(name)
                .bind(value)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    if changed(&|o| o.backend_policies != new.backend_policies) {
        delete_children(conn, "lb_backend_policies", id).await?;
        for (port, names) in &new.backend_policies {
            for (j, name) in names.iter().enumerate() {
                sqlx::query("INSERT INTO lb_backend_policies (lb_id, instance_port, pos, policy_name) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(i64::from(*port))
                    .bind(pos(j))
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    if changed(&|o| o.tags != new.tags) {
        delete_children(conn, "lb_tags", id).await?;
        for (i, t) in new.tags.iter().enumerate() {
            sqlx::query(
                "INSERT INTO lb_tags (lb_id, pos, tag_key, tag_value) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(pos(i))
            .bind(&t.key)
            .bind(&t.value)
            .execute(&mut *conn)
            .await?;
        }
    }
    if changed(&|o| o.attributes.additional != new.attributes.additional) {
        delete_children(conn, "lb_additional_attributes", id).await?;
        for (i, (k, v)) in new.attributes.additional.iter().enumerate() {
            sqlx::query("INSERT INTO lb_additional_attributes (lb_id, pos, attr_key, attr_value) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(pos(i))
                .bind(k)
                .bind(v)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

const KEY_WHERE: &str = "account_id = $1 AND region = $2 AND name = $3";

impl Store {
    pub async fn get_lb(&self, key: &LbKey) -> Result<Option<LoadBalancer>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let mut found = load(
            &mut conn,
            KEY_WHERE,
            &[&key.account_id, &key.region, &key.name],
            Some(1),
        )
        .await?;
        Ok(found.pop())
    }

    /// Load balancers of one account (or of all accounts when `account_id` is `None`) in a
    /// region, in (account, name) order, starting after `after` = (account, name).
    pub async fn list_lbs(
        &self,
        region: &str,
        account_id: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<LbPage, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let (after_account, after_name) = after.unwrap_or(("", ""));
        let where_sql = "region = $1 AND ($2 = '' OR account_id = $2)
             AND (account_id > $3 OR (account_id = $3 AND name > $4))";
        let mut items = load(
            &mut conn,
            where_sql,
            &[region, account_id.unwrap_or(""), after_account, after_name],
            Some(limit + 1),
        )
        .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(LbPage { items, more })
    }

    /// Inserts a new load balancer unless the name is taken or the account already has
    /// `max_lbs` of them in the region (checked inside the serialised write transaction).
    pub async fn create_lb(&self, lb: &LoadBalancer, max_lbs: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let taken = sqlx::query(&format!("SELECT id FROM load_balancers WHERE {KEY_WHERE}"))
            .bind(&lb.key.account_id)
            .bind(&lb.key.region)
            .bind(&lb.key.name)
            .fetch_optional(tx.conn())
            .await?
            .is_some();
        if taken {
            return Err(StoreError::AlreadyExists {
                what: "load balancer",
                name: lb.key.name.clone(),
            });
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM load_balancers WHERE account_id = $1 AND region = $2",
        )
        .bind(&lb.key.account_id)
        .bind(&lb.key.region)
        .fetch_one(tx.conn())
        .await?;
        let count: i64 = row.try_get("n")?;
        if count >= max_lbs {
            return Err(StoreError::QuotaExceeded {
                what: "load balancers",
                limit: max_lbs,
            });
        }
        match write_main_row(tx.conn(), lb, true).await {
            // The DNS name is unique too: names differing only in case collide there.
            Err(StoreError::Db(e)) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "load balancer",
                    name: lb.key.name.clone(),
                });
            }
            other => other?,
        }
        write_children(tx.conn(), None, lb).await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Deletes a load balancer; `false` when there was none.
    pub async fn delete_lb(&self, key: &LbKey) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!("SELECT id FROM load_balancers WHERE {KEY_WHERE}"))
            .bind(&key.account_id)
            .bind(&key.region)
            .bind(&key.name)
            .fetch_optional(tx.conn())
            .await?;
        let Some(row) = row else { return Ok(false) };
        let id: String = row.try_get("id")?;
        for table in CHILD_TABLES {
            delete_children(tx.conn(), table, &id).await?;
        }
        sqlx::query("DELETE FROM load_balancers WHERE id = $1")
            .bind(&id)
            .execute(tx.conn())
            .await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Loads a load balancer, lets `change` modify it (or refuse with an error), and writes
    /// the result back, all in one write transaction. Nothing is written when `change` fails.
    pub async fn update_lb<T, E>(
        &self,
        key: &LbKey,
        change: impl FnOnce(&mut LoadBalancer) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut tx = self.write().await?;
        let mut found = load(
            tx.conn(),
            KEY_WHERE,
            &[&key.account_id, &key.region, &key.name],
            Some(1),
        )
        .await?;
        let Some(original) = found.pop() else {
            return Err(StoreError::NotFound {
                what: "load balancer",
                name: key.name.clone(),
            }
            .into());
        };
        let mut lb = original.clone();
        let out = change(&mut lb)?;
        if lb != original {
            lb.id = original.id.clone();
            write_main_row(tx.conn(), &lb, false).await?;
            write_children(tx.conn(), Some(&original), &lb).await?;
            self.commit(tx).await?;
        }
        Ok(out)
    }
}
