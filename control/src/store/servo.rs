//! Servos (load balancer nodes): identities, registration and liveness, their assignments to
//! load balancers, the data of their configuration, their health reports, and the DNS view of
//! the assignments.
//!
//! Liveness is a timestamp in the database (`last_heartbeat`, on the database's clock), so
//! every control replica reaches the same verdict. Heartbeats and registrations do not bump
//! the config version: they change nothing a servo is told, and bumping on every beat would
//! wake every long-poll every second. What liveness changes (assignments) is bumped by the
//! assignment task when it acts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use elb_contract::wire::Refusal;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::lb::load;
use super::{Store, StoreError, flag, is_unique_violation};
use crate::model::{
    InstanceHealth, InstanceState, LoadBalancer, Scheme, ZoneService, ZoneServices,
};
use crate::timefmt::now_millis;

/// A servo as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServoRecord {
    pub id: String,
    pub zone: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    pub public_addresses: Vec<Ipv4Addr>,
    pub private_addresses: Vec<Ipv4Addr>,
    /// Most load balancers the servo takes; `None` is unlimited.
    pub capacity: Option<u32>,
    /// Milliseconds (database clock) of the last registration; `None` if it never registered.
    pub registered_at: Option<i64>,
    /// Milliseconds (database clock) of the last registration or heartbeat.
    pub last_heartbeat: Option<i64>,
    pub created_at: i64,
    /// The dataplane counters of the last heartbeat that carried them (JSON object).
    pub counters: Option<String>,
}

/// A load balancer assigned to a servo, as `admin servo list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedLb {
    /// Servo-side name, `<name>-<account>`.
    pub name: String,
    pub vip: String,
}

/// A change of an instance's state made by a health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Servo-side name of the load balancer.
    pub lb: String,
    pub instance_id: String,
    pub from: InstanceState,
    pub to: InstanceState,
}

/// A servo with what `admin servo list` shows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServoInfo {
    pub servo: ServoRecord,
    pub live: bool,
    /// By name.
    pub load_balancers: Vec<AssignedLb>,
    /// The load balancers it refuses, by name.
    pub refused: Vec<Refusal>,
}

/// What a servo last reported about the load balancers it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServoMetrics {
    pub servo_id: String,
    pub zone: String,
    pub live: bool,
    /// JSON list of `elb_contract::wire::LoadBalancerMetrics`.
    pub metrics: String,
}

/// A load balancer as the assignment task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbPlacement {
    pub id: String,
    /// `<name>-<account>`, for logs.
    pub servo_name: String,
    pub internal: bool,
    /// Enabled availability zones.
    pub zones: Vec<String>,
    /// Front-end ports of its listeners.
    pub ports: BTreeSet<u16>,
}

/// A servo as the assignment task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServoPlacement {
    pub id: String,
    pub zone: String,
    pub public_addresses: Vec<Ipv4Addr>,
    pub private_addresses: Vec<Ipv4Addr>,
    pub capacity: Option<u32>,
    pub live: bool,
}

/// One row of `servo_assignments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRow {
    pub lb_id: String,
    pub servo_id: String,
    pub zone: String,
    pub vip: String,
    /// Milliseconds; earlier assignments win conflicts.
    pub assigned_at: i64,
}

/// Everything the assignment planner needs, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementState {
    /// Database time, milliseconds.
    pub now: i64,
    /// In creation order.
    pub lbs: Vec<LbPlacement>,
    /// By id.
    pub servos: Vec<ServoPlacement>,
    /// In (assigned_at, lb_id, servo_id) order.
    pub assignments: Vec<AssignmentRow>,
}

/// An assignment made or undone, with the load balancer's servo-side name for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentChange {
    pub row: AssignmentRow,
    pub lb_name: String,
    /// Why an assignment was undone (empty for additions).
    pub reason: String,
}

/// What one assignment pass decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentChanges {
    pub removed: Vec<AssignmentChange>,
    pub added: Vec<AssignmentChange>,
}

impl AssignmentChanges {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// A load balancer assigned to a servo, with the VIP it serves it on.
#[derive(Debug, Clone)]
pub struct ServoLb {
    pub lb: LoadBalancer,
    pub vip: Ipv4Addr,
    pub assigned_at: i64,
    /// Whether each of its zones is served (for the states relayed to other zones).
    pub service: ZoneServices,
}

/// What a servo's configuration is built from.
#[derive(Debug, Clone)]
pub struct ServoConfigData {
    /// The committed config version the data is at least as new as.
    pub version: u64,
    pub lbs: Vec<ServoLb>,
    /// Request ids of the API writes with versions in (since, version], oldest first.
    pub request_ids: Vec<String>,
    /// Ingress rules of the security groups these load balancers name, by group id (a group
    /// without a row is absent: it admits no one).
    pub security_groups: BTreeMap<String, Vec<elb_contract::security_group::IngressRule>>,
}

/// One entry of a servo's health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUpdate {
    /// The servo-side name, `<name>-<account>`.
    pub lb_name: String,
    pub instance_id: String,
    pub health: InstanceHealth,
}

/// What became of a refusal report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalOutcome {
    /// Refusals stored (or already current).
    pub accepted: usize,
    /// Refusals of load balancers not assigned to the servo.
    pub ignored: usize,
    /// Refusals that are new or have a new reason.
    pub added: Vec<Refusal>,
    /// Load balancers no longer refused (by servo-side name).
    pub cleared: Vec<String>,
}

/// What became of a health report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthUpdateOutcome {
    /// Entries stored (or already current).
    pub accepted: usize,
    /// Entries skipped: instances no longer registered, or entries the servo has no right to
    /// make (`refused` of them).
    pub ignored: usize,
    /// Of the ignored: entries naming load balancers not assigned to the servo or instances
    /// outside its zone.
    pub refused: usize,
    /// State changes made.
    pub changes: Vec<StateChange>,
}

/// The answer to a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsLookup {
    /// No load balancer has this name.
    NoSuchName,
    /// The VIPs of its live assigned servos (possibly none), sorted.
    Vips(Vec<Ipv4Addr>),
}

/// `<name>-<account>`: a load balancer's name on servos, unique per servo (a servo's zone is
/// in one region, and names are unique per account and region).
pub fn servo_lb_name(name: &str, account_id: &str) -> String {
    format!("{name}-{account_id}")
}

fn addresses_to_text(list: &[Ipv4Addr]) -> String {
    let texts: Vec<String> = list.iter().map(Ipv4Addr::to_string).collect();
    serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())
}

fn addresses_from_text(text: &str) -> Result<Vec<Ipv4Addr>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        table: "servos",
        detail: "address list".into(),
    };
    let texts: Vec<String> = serde_json::from_str(text).map_err(|_| corrupt())?;
    texts
        .iter()
        .map(|t| t.parse().map_err(|_| corrupt()))
        .collect()
}

fn servo_from_row(r: &AnyRow) -> Result<ServoRecord, StoreError> {
    let capacity: Option<i64> = r.try_get("capacity")?;
    Ok(ServoRecord {
        id: r.try_get("id")?,
        zone: r.try_get("zone")?,
        secret_hash: r.try_get("secret_hash")?,
        public_addresses: addresses_from_text(&r.try_get::<String, _>("public_addresses")?)?,
        private_addresses: addresses_from_text(&r.try_get::<String, _>("private_addresses")?)?,
        capacity: capacity.and_then(|c| u32::try_from(c).ok()),
        registered_at: r.try_get("registered_at")?,
        last_heartbeat: r.try_get("last_heartbeat")?,
        created_at: r.try_get("created_at")?,
        counters: r.try_get("counters")?,
    })
}

const SERVO_COLUMNS: &str = "id, zone, secret_hash, public_addresses, private_addresses, capacity, registered_at, last_heartbeat, created_at, counters";

/// Whether a servo with this record is live at `now` given the timeout.
pub fn is_live(servo: &ServoRecord, now: i64, timeout_ms: i64) -> bool {
    servo.registered_at.is_some()
        && servo
            .last_heartbeat
            .is_some_and(|hb| hb > now.saturating_sub(timeout_ms))
}

/// Whether each enabled zone of each load balancer is served: by a live servo assigned to it
/// that does not refuse it (or still serves an earlier version), with the other cases told
/// apart for DescribeInstanceHealth.
async fn zone_services(
    conn: &mut AnyConnection,
    lbs: &[LoadBalancer],
    timeout_ms: i64,
    now: i64,
) -> Result<Vec<ZoneServices>, StoreError> {
    if lbs.is_empty() {
        return Ok(Vec::new());
    }
    let mut live_zones = BTreeSet::new();
    let mut live_servos = BTreeSet::new();
    for r in sqlx::query(&format!("SELECT {SERVO_COLUMNS} FROM servos"))
        .fetch_all(&mut *conn)
        .await?
    {
        let s = servo_from_row(&r)?;
        if is_live(&s, now, timeout_ms) {
            live_zones.insert(s.zone.clone());
            live_servos.insert(s.id);
        }
    }
    /// What the live servos assigned to one load balancer in one zone do with it.
    #[derive(Default)]
    struct Seen {
        serving: bool,
        /// The first refusal: (servo, reason).
        refused: Option<(String, String)>,
    }
    // (lb id, zone) -> what its servos there do.
    let mut seen: HashMap<(String, String), Seen> = HashMap::new();
    let wanted: BTreeSet<&str> = lbs.iter().map(|l| l.id.as_str()).collect();
    for r in sqlx::query(
        "SELECT a.lb_id, a.servo_id, a.zone, f.reason, f.serving_previous
         FROM servo_assignments a
         LEFT JOIN servo_refusals f ON f.lb_id = a.lb_id AND f.servo_id = a.servo_id
         ORDER BY a.assigned_at, a.servo_id",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let lb_id: String = r.try_get("lb_id")?;
        let servo: String = r.try_get("servo_id")?;
        if !wanted.contains(lb_id.as_str()) || !live_servos.contains(&servo) {
            continue;
        }
        let zone: String = r.try_get("zone")?;
        let reason: Option<String> = r.try_get("reason")?;
        let previous: Option<i64> = r.try_get("serving_previous")?;
        let entry = seen.entry((lb_id, zone)).or_default();
        match reason {
            Some(reason) if previous.unwrap_or(0) == 0 => {
                entry.refused.get_or_insert((servo, reason));
            }
            _ => entry.serving = true,
        }
    }
    Ok(lbs
        .iter()
        .map(|lb| {
            lb.zones
                .iter()
                .map(|z| {
                    let service = match seen.get(&(lb.id.clone(), z.clone())) {
                        Some(Seen { serving: true, .. }) => ZoneService::Serving,
                        Some(Seen {
                            refused: Some((servo, reason)),
                            ..
                        }) => ZoneService::Refused {
                            servo: servo.clone(),
                            reason: reason.clone(),
                        },
                        _ if live_zones.contains(z) => ZoneService::Unassigned,
                        _ => ZoneService::NoLiveServo,
                    };
                    (z.clone(), service)
                })
                .collect()
        })
        .collect())
}

impl Store {
    async fn db_now(&self, conn: &mut AnyConnection) -> Result<i64, StoreError> {
        let row = sqlx::query(&format!("SELECT {} AS now", self.now_sql()))
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.try_get("now")?)
    }

    /// Creates a servo identity in an existing zone.
    pub async fn create_servo(
        &self,
        id: &str,
        zone: &str,
        secret_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let zone_exists = sqlx::query("SELECT name FROM zones WHERE name = $1")
            .bind(zone)
            .fetch_optional(tx.conn())
            .await?
            .is_some();
        if !zone_exists {
            return Err(StoreError::NotFound {
                what: "zone",
                name: zone.to_string(),
            });
        }
        let result = sqlx::query(
            "INSERT INTO servos (id, zone, secret_hash, public_addresses, private_addresses, created_at)
             VALUES ($1, $2, $3, '[]', '[]', $4)",
        )
        .bind(id)
        .bind(zone)
        .bind(secret_hash)
        .bind(now_millis())
        .execute(tx.conn())
        .await;
        match result {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists {
                    what: "servo",
                    name: id.to_string(),
                });
            }
            other => other?,
        };
        self.commit(tx).await?;
        Ok(())
    }

    /// Removes a servo and its assignments; `false` if there was none.
    pub async fn remove_servo(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        for table in ["servo_assignments", "servo_refusals"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE servo_id = $1"))
                .bind(id)
                .execute(tx.conn())
                .await?;
        }
        let n = sqlx::query("DELETE FROM servos WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        self.commit(tx).await?;
        Ok(true)
    }

    pub async fn servo(&self, id: &str) -> Result<Option<ServoRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SERVO_COLUMNS} FROM servos WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(servo_from_row).transpose()
    }

    /// Every servo with its liveness (at the database's now) and assignments.
    pub async fn list_servos(&self, timeout_ms: i64) -> Result<Vec<ServoInfo>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let now = self.db_now(&mut conn).await?;
        let rows = sqlx::query(&format!("SELECT {SERVO_COLUMNS} FROM servos ORDER BY id"))
            .fetch_all(&mut *conn)
            .await?;
        let assigned = sqlx::query(
            "SELECT a.servo_id, a.vip, lb.name, lb.account_id FROM servo_assignments a
             JOIN load_balancers lb ON lb.id = a.lb_id ORDER BY lb.name, lb.account_id",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut by_servo: HashMap<String, Vec<AssignedLb>> = HashMap::new();
        for r in &assigned {
            let name: String = r.try_get("name")?;
            let account: String = r.try_get("account_id")?;
            by_servo
                .entry(r.try_get("servo_id")?)
                .or_default()
                .push(AssignedLb {
                    name: servo_lb_name(&name, &account),
                    vip: r.try_get("vip")?,
                });
        }
        let mut refused: HashMap<String, Vec<Refusal>> = HashMap::new();
        for r in sqlx::query(
            "SELECT f.servo_id, f.reason, f.serving_previous, lb.name, lb.account_id
             FROM servo_refusals f JOIN load_balancers lb ON lb.id = f.lb_id
             ORDER BY lb.name, lb.account_id",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            refused
                .entry(r.try_get("servo_id")?)
                .or_default()
                .push(Refusal {
                    load_balancer_name: servo_lb_name(
                        &r.try_get::<String, _>("name")?,
                        &r.try_get::<String, _>("account_id")?,
                    ),
                    reason: r.try_get("reason")?,
                    serving_previous: r.try_get::<i64, _>("serving_previous")? != 0,
                });
        }
        rows.iter()
            .map(|r| {
                let servo = servo_from_row(r)?;
                Ok(ServoInfo {
                    live: is_live(&servo, now, timeout_ms),
                    load_balancers: by_servo.remove(&servo.id).unwrap_or_default(),
                    refused: refused.remove(&servo.id).unwrap_or_default(),
                    servo,
                })
            })
            .collect()
    }

    /// Records a (re-)registration: addresses, capacity, and a heartbeat. Returns whether the
    /// servo was live before, so the caller knows if assignments may change.
    pub async fn register_servo(
        &self,
        id: &str,
        public: &[Ipv4Addr],
        private: &[Ipv4Addr],
        capacity: Option<u32>,
        timeout_ms: i64,
    ) -> Result<bool, StoreError> {
        let before = self.servo(id).await?;
        let now_sql = self.now_sql();
        sqlx::query(&format!(
            "UPDATE servos SET public_addresses = $1, private_addresses = $2, capacity = $3,
                registered_at = {now_sql}, last_heartbeat = {now_sql}
             WHERE id = $4"
        ))
        .bind(addresses_to_text(public))
        .bind(addresses_to_text(private))
        .bind(capacity.map(i64::from))
        .bind(id)
        .execute(self.pool())
        .await?;
        let mut conn = self.pool().acquire().await?;
        let now = self.db_now(&mut conn).await?;
        Ok(before.is_some_and(|s| is_live(&s, now, timeout_ms)))
    }

    /// Records a heartbeat, with the counters and metrics it carries (each kept as it was when
    /// left out). `None` if the servo has not registered (it must register first); otherwise
    /// whether it was live before this beat.
    pub async fn heartbeat(
        &self,
        id: &str,
        timeout_ms: i64,
        counters: Option<&str>,
        metrics: Option<&str>,
    ) -> Result<Option<bool>, StoreError> {
        let Some(before) = self.servo(id).await? else {
            return Ok(None);
        };
        if before.registered_at.is_none() {
            return Ok(None);
        }
        let mut conn = self.pool().acquire().await?;
        let now = self.db_now(&mut conn).await?;
        sqlx::query(&format!(
            "UPDATE servos SET last_heartbeat = {}, counters = COALESCE($2, counters),
                metrics = COALESCE($3, metrics)
             WHERE id = $1",
            self.now_sql()
        ))
        .bind(id)
        .bind(counters)
        .bind(metrics)
        .execute(&mut *conn)
        .await?;
        Ok(Some(is_live(&before, now, timeout_ms)))
    }

    /// The metrics each servo's last heartbeat reported (JSON), with its zone and liveness.
    pub async fn servo_metrics(&self, timeout_ms: i64) -> Result<Vec<ServoMetrics>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let now = self.db_now(&mut conn).await?;
        let rows = sqlx::query(
            "SELECT id, zone, registered_at, last_heartbeat, metrics FROM servos
             WHERE metrics IS NOT NULL ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                let registered_at: Option<i64> = r.try_get("registered_at")?;
                let last_heartbeat: Option<i64> = r.try_get("last_heartbeat")?;
                Ok(ServoMetrics {
                    servo_id: r.try_get("id")?,
                    zone: r.try_get("zone")?,
                    live: registered_at.is_some()
                        && last_heartbeat.is_some_and(|hb| hb > now.saturating_sub(timeout_ms)),
                    metrics: r.try_get("metrics")?,
                })
            })
            .collect()
    }

    /// The placement state now, outside any transaction (for a first look).
    pub async fn placement_snapshot(&self, timeout_ms: i64) -> Result<PlacementState, StoreError> {
        let mut conn = self.pool().acquire().await?;
        self.placement_state(&mut conn, timeout_ms).await
    }

    async fn placement_state(
        &self,
        conn: &mut AnyConnection,
        timeout_ms: i64,
    ) -> Result<PlacementState, StoreError> {
        let now = self.db_now(conn).await?;
        let mut lbs = Vec::new();
        let mut index = HashMap::new();
        for r in sqlx::query(
            "SELECT id, name, account_id, scheme FROM load_balancers ORDER BY created_at, id",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let id: String = r.try_get("id")?;
            let scheme: String = r.try_get("scheme")?;
            index.insert(id.clone(), lbs.len());
            lbs.push(LbPlacement {
                id,
                servo_name: servo_lb_name(
                    &r.try_get::<String, _>("name")?,
                    &r.try_get::<String, _>("account_id")?,
                ),
                internal: Scheme::parse(&scheme) == Some(Scheme::Internal),
                zones: Vec::new(),
                ports: BTreeSet::new(),
            });
        }
        for r in sqlx::query("SELECT lb_id, zone FROM lb_zones ORDER BY lb_id, pos")
            .fetch_all(&mut *conn)
            .await?
        {
            if let Some(i) = index.get(&r.try_get::<String, _>("lb_id")?) {
                lbs[*i].zones.push(r.try_get("zone")?);
            }
        }
        for r in sqlx::query("SELECT lb_id, lb_port FROM lb_listeners")
            .fetch_all(&mut *conn)
            .await?
        {
            if let Some(i) = index.get(&r.try_get::<String, _>("lb_id")?) {
                let port: i64 = r.try_get("lb_port")?;
                if let Ok(port) = u16::try_from(port) {
                    lbs[*i].ports.insert(port);
                }
            }
        }
        let mut servos = Vec::new();
        for r in sqlx::query(&format!("SELECT {SERVO_COLUMNS} FROM servos ORDER BY id"))
            .fetch_all(&mut *conn)
            .await?
        {
            let s = servo_from_row(&r)?;
            servos.push(ServoPlacement {
                live: is_live(&s, now, timeout_ms),
                id: s.id,
                zone: s.zone,
                public_addresses: s.public_addresses,
                private_addresses: s.private_addresses,
                capacity: s.capacity,
            });
        }
        let assignments = sqlx::query(
            "SELECT lb_id, servo_id, zone, vip, assigned_at FROM servo_assignments
             ORDER BY assigned_at, lb_id, servo_id",
        )
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(AssignmentRow {
                lb_id: r.try_get("lb_id")?,
                servo_id: r.try_get("servo_id")?,
                zone: r.try_get("zone")?,
                vip: r.try_get("vip")?,
                assigned_at: r.try_get("assigned_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(PlacementState {
            now,
            lbs,
            servos,
            assignments,
        })
    }

    /// Applies what `plan` decides on the state read inside a write transaction.
    ///
    /// Callers look at a [`placement_snapshot`](Self::placement_snapshot) first: most passes
    /// find nothing to do and must not take the write lock or bump the version. When there is
    /// work, the state is read again here, inside a write transaction that excludes every
    /// other writer (the config_version row lock), and the plan recomputed on it; if another
    /// replica got there first the plan comes out empty and the transaction is rolled back,
    /// bump included. So replicas may all run the task without fighting, and a plan is never
    /// applied to a state it was not made from.
    pub async fn apply_assignments<P>(
        &self,
        timeout_ms: i64,
        plan: P,
    ) -> Result<AssignmentChanges, StoreError>
    where
        P: FnOnce(&PlacementState) -> AssignmentChanges,
    {
        let mut tx = self.write().await?;
        let state = self.placement_state(tx.conn(), timeout_ms).await?;
        let changes = plan(&state);
        if changes.is_empty() {
            return Ok(changes);
        }
        for r in changes.removed.iter().map(|c| &c.row) {
            sqlx::query("DELETE FROM servo_assignments WHERE lb_id = $1 AND servo_id = $2")
                .bind(&r.lb_id)
                .bind(&r.servo_id)
                .execute(tx.conn())
                .await?;
        }
        for a in changes.added.iter().map(|c| &c.row) {
            sqlx::query(
                "INSERT INTO servo_assignments (lb_id, servo_id, zone, vip, assigned_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&a.lb_id)
            .bind(&a.servo_id)
            .bind(&a.zone)
            .bind(&a.vip)
            .bind(a.assigned_at)
            .execute(tx.conn())
            .await?;
        }
        self.commit(tx).await?;
        Ok(changes)
    }

    /// The load balancers assigned to a servo, at a committed version, and the request ids of
    /// the API writes after `since` (at most `max_request_ids`, the newest).
    pub async fn servo_config_data(
        &self,
        servo_id: &str,
        since: Option<u64>,
        max_request_ids: usize,
        timeout_ms: i64,
    ) -> Result<ServoConfigData, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The version is read first: everything up to it is committed (writers bump and commit
        // in order under the row lock), so the data read next is at least that new. Reading
        // it last could label older data with a newer version, and the servo would then miss
        // the change for good.
        let row = sqlx::query("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let version: i64 = row.try_get("version")?;
        let assigned = sqlx::query(
            "SELECT lb_id, vip, assigned_at FROM servo_assignments WHERE servo_id = $1",
        )
        .bind(servo_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut vips: HashMap<String, (Ipv4Addr, i64)> = HashMap::new();
        for r in &assigned {
            let vip: String = r.try_get("vip")?;
            let vip = vip.parse().map_err(|_| StoreError::Corrupt {
                table: "servo_assignments",
                detail: format!("VIP {vip}"),
            })?;
            vips.insert(r.try_get("lb_id")?, (vip, r.try_get("assigned_at")?));
        }
        let lbs = if vips.is_empty() {
            Vec::new()
        } else {
            load(
                &mut tx,
                "id IN (SELECT lb_id FROM servo_assignments WHERE servo_id = $1)",
                &[servo_id],
                None,
            )
            .await?
        };
        let now = self.db_now(&mut tx).await?;
        let services = zone_services(&mut tx, &lbs, timeout_ms, now).await?;
        let group_ids: Vec<String> = lbs
            .iter()
            .flat_map(|lb| lb.security_groups.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let security_groups = super::security_groups::ingress_of(&mut tx, &group_ids).await?;
        let lbs = lbs
            .into_iter()
            .zip(services)
            .filter_map(|(lb, service)| {
                let (vip, assigned_at) = vips.remove(&lb.id)?;
                Some(ServoLb {
                    lb,
                    vip,
                    assigned_at,
                    service,
                })
            })
            .collect();
        let request_ids = match since {
            // A servo without a version gets a full snapshot; there is no delta to explain.
            None => Vec::new(),
            Some(since) => {
                let since = i64::try_from(since).unwrap_or(i64::MAX);
                let limit = i64::try_from(max_request_ids).unwrap_or(1000);
                let rows = sqlx::query(
                    "SELECT request_id FROM changes
                     WHERE version > $1 AND version <= $2 AND request_id IS NOT NULL
                     ORDER BY version DESC LIMIT $3",
                )
                .bind(since)
                .bind(version)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut ids = rows
                    .iter()
                    .map(|r| r.try_get("request_id"))
                    .collect::<Result<Vec<String>, _>>()?;
                ids.reverse();
                // An assignment carries the request that called for it: name each once.
                let mut seen = BTreeSet::new();
                ids.retain(|id| seen.insert(id.clone()));
                ids
            }
        };
        tx.rollback().await?;
        Ok(ServoConfigData {
            version: u64::try_from(version).unwrap_or(0),
            lbs,
            request_ids,
            security_groups,
        })
    }

    /// Stores a servo's health report. Only instances of the servo's own zone, of load
    /// balancers assigned to it, are stored (Eucalyptus: only the same-zone servo changes an
    /// instance's state). State changes bump the config version, since other zones' servos
    /// carry those states; reason or description changes alone are stored without a bump.
    pub async fn report_health(
        &self,
        servo_id: &str,
        servo_zone: &str,
        updates: &[HealthUpdate],
    ) -> Result<HealthUpdateOutcome, StoreError> {
        let mut outcome = HealthUpdateOutcome::default();
        if updates.is_empty() {
            return Ok(outcome);
        }
        let assigned = sqlx::query(
            "SELECT a.lb_id, lb.name, lb.account_id FROM servo_assignments a
             JOIN load_balancers lb ON lb.id = a.lb_id WHERE a.servo_id = $1",
        )
        .bind(servo_id)
        .fetch_all(self.pool())
        .await?;
        let mut lb_ids: HashMap<String, String> = HashMap::new();
        for r in &assigned {
            let name: String = r.try_get("name")?;
            let account: String = r.try_get("account_id")?;
            lb_ids.insert(servo_lb_name(&name, &account), r.try_get("lb_id")?);
        }
        // (lb_id, instance) -> (zone, state, reason, description) as stored.
        let mut current: HashMap<(String, String), (String, String, String, String)> =
            HashMap::new();
        let wanted: BTreeSet<&String> = updates
            .iter()
            .filter_map(|u| lb_ids.get(&u.lb_name))
            .collect();
        for lb_id in wanted {
            for r in sqlx::query(
                "SELECT instance_id, zone, state, reason_code, description FROM lb_instances WHERE lb_id = $1",
            )
            .bind(lb_id)
            .fetch_all(self.pool())
            .await?
            {
                current.insert(
                    (lb_id.clone(), r.try_get("instance_id")?),
                    (
                        r.try_get("zone")?,
                        r.try_get("state")?,
                        r.try_get("reason_code")?,
                        r.try_get("description")?,
                    ),
                );
            }
        }
        // The last entry for an instance wins; (lb_id, instance) -> (update, state changed).
        let mut writes: BTreeMap<(String, String), (&HealthUpdate, Option<InstanceState>)> =
            BTreeMap::new();
        for u in updates {
            let Some(lb_id) = lb_ids.get(&u.lb_name) else {
                outcome.ignored += 1;
                outcome.refused += 1;
                continue;
            };
            let key = (lb_id.clone(), u.instance_id.clone());
            let Some((zone, state, reason, description)) = current.get(&key) else {
                // Deregistered while the servo was checking it.
                outcome.ignored += 1;
                continue;
            };
            if zone != servo_zone {
                outcome.ignored += 1;
                outcome.refused += 1;
                continue;
            }
            outcome.accepted += 1;
            let old_state = InstanceState::parse(state).unwrap_or(InstanceState::Unknown);
            let h = &u.health;
            if old_state == h.state
                && reason == h.reason_code.as_str()
                && *description == h.description
            {
                writes.remove(&key);
                continue;
            }
            let changed = (old_state != h.state).then_some(old_state);
            writes.insert(key, (u, changed));
        }
        if writes.is_empty() {
            return Ok(outcome);
        }
        let bump = writes.values().any(|(_, changed)| changed.is_some());
        // Guarded again at write time: the assignment or the registration may have gone since
        // the reads above.
        let sql = "UPDATE lb_instances SET state = $1, reason_code = $2, description = $3, updated_at = $4
             WHERE lb_id = $5 AND instance_id = $6 AND zone = $7
               AND EXISTS (SELECT 1 FROM servo_assignments WHERE lb_id = $5 AND servo_id = $8)";
        let mut changes = Vec::new();
        if bump {
            let mut tx = self.write().await?;
            for ((lb_id, instance_id), (u, changed)) in &writes {
                let n = sqlx::query(sql)
                    .bind(u.health.state.as_str())
                    .bind(u.health.reason_code.as_str())
                    .bind(&u.health.description)
                    .bind(now_millis())
                    .bind(lb_id)
                    .bind(instance_id)
                    .bind(servo_zone)
                    .bind(servo_id)
                    .execute(tx.conn())
                    .await?
                    .rows_affected();
                if let (Some(old), true) = (changed, n > 0) {
                    changes.push(StateChange {
                        lb: u.lb_name.clone(),
                        instance_id: instance_id.clone(),
                        from: *old,
                        to: u.health.state,
                    });
                }
            }
            self.commit(tx).await?;
        } else {
            let mut tx = self.pool().begin().await?;
            for ((lb_id, instance_id), (u, _)) in &writes {
                sqlx::query(sql)
                    .bind(u.health.state.as_str())
                    .bind(u.health.reason_code.as_str())
                    .bind(&u.health.description)
                    .bind(now_millis())
                    .bind(lb_id)
                    .bind(instance_id)
                    .bind(servo_zone)
                    .bind(servo_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        outcome.changes = changes;
        Ok(outcome)
    }

    /// The A records of a load balancer DNS name (lower-cased by the caller): VIPs of its
    /// assigned servos that are live at the database's now.
    pub async fn dns_lookup(&self, name: &str, timeout_ms: i64) -> Result<DnsLookup, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let now = self.db_now(&mut conn).await?;
        let rows = sqlx::query(
            "SELECT lb.id AS lb_id, a.vip AS vip, s.registered_at AS registered_at,
                    s.last_heartbeat AS last_heartbeat, f.serving_previous AS serving_previous,
                    f.reason AS refused
             FROM load_balancers lb
             LEFT JOIN servo_assignments a ON a.lb_id = lb.id
             LEFT JOIN servos s ON s.id = a.servo_id
             LEFT JOIN servo_refusals f ON f.lb_id = lb.id AND f.servo_id = a.servo_id
             WHERE lb.dns_name = $1",
        )
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(DnsLookup::NoSuchName);
        }
        let cutoff = now.saturating_sub(timeout_ms);
        let mut vips = BTreeSet::new();
        for r in &rows {
            let vip: Option<String> = r.try_get("vip")?;
            let registered: Option<i64> = r.try_get("registered_at")?;
            let heartbeat: Option<i64> = r.try_get("last_heartbeat")?;
            let live = registered.is_some() && heartbeat.is_some_and(|hb| hb > cutoff);
            // A servo that refuses the load balancer (and serves no earlier version) is left
            // out: its address would answer nothing.
            let refused: Option<String> = r.try_get("refused")?;
            let previous: Option<i64> = r.try_get("serving_previous")?;
            let serves = refused.is_none() || previous.is_some_and(|p| p != 0);
            if let (Some(vip), true) = (vip, live && serves)
                && let Ok(ip) = vip.parse::<Ipv4Addr>()
            {
                vips.insert(ip);
            }
        }
        Ok(DnsLookup::Vips(vips.into_iter().collect()))
    }

    /// Replaces the refusals a servo reported. Refusals of load balancers not assigned to it
    /// are ignored. Refusals are not configuration (nothing a servo is told changes), so the
    /// version is not bumped.
    pub async fn replace_refusals(
        &self,
        servo_id: &str,
        refusals: &[Refusal],
        version: Option<u64>,
    ) -> Result<RefusalOutcome, StoreError> {
        let mut outcome = RefusalOutcome::default();
        let mut tx = self.pool().begin().await?;
        // A write first, as in `Store::write` (see the module notes): on SQLite it takes the
        // write lock, waiting on the busy timeout, before the reads below open a snapshot that
        // would otherwise have to be upgraded (SQLITE_BUSY at once if another writer got in
        // between); on PostgreSQL it locks the servo's row, so two reports of one servo apply
        // in turn.
        sqlx::query("UPDATE servos SET last_heartbeat = last_heartbeat WHERE id = $1")
            .bind(servo_id)
            .execute(&mut *tx)
            .await?;
        let mut assigned: HashMap<String, String> = HashMap::new();
        for r in sqlx::query(
            "SELECT a.lb_id, lb.name, lb.account_id FROM servo_assignments a
             JOIN load_balancers lb ON lb.id = a.lb_id WHERE a.servo_id = $1",
        )
        .bind(servo_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let name = servo_lb_name(
                &r.try_get::<String, _>("name")?,
                &r.try_get::<String, _>("account_id")?,
            );
            assigned.insert(name, r.try_get("lb_id")?);
        }
        let mut before: HashMap<String, (String, String, bool)> = HashMap::new();
        for r in sqlx::query(
            "SELECT f.lb_id, f.reason, f.serving_previous, lb.name, lb.account_id
             FROM servo_refusals f JOIN load_balancers lb ON lb.id = f.lb_id
             WHERE f.servo_id = $1",
        )
        .bind(servo_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let name = servo_lb_name(
                &r.try_get::<String, _>("name")?,
                &r.try_get::<String, _>("account_id")?,
            );
            before.insert(
                r.try_get("lb_id")?,
                (
                    name,
                    r.try_get("reason")?,
                    r.try_get::<i64, _>("serving_previous")? != 0,
                ),
            );
        }
        sqlx::query("DELETE FROM servo_refusals WHERE servo_id = $1")
            .bind(servo_id)
            .execute(&mut *tx)
            .await?;
        let mut kept = BTreeSet::new();
        for r in refusals {
            let Some(lb_id) = assigned.get(&r.load_balancer_name) else {
                outcome.ignored += 1;
                continue;
            };
            if !kept.insert(lb_id.clone()) {
                continue;
            }
            outcome.accepted += 1;
            sqlx::query(
                "INSERT INTO servo_refusals (servo_id, lb_id, reason, serving_previous, version, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(servo_id)
            .bind(lb_id)
            .bind(&r.reason)
            .bind(flag(r.serving_previous))
            .bind(version.and_then(|v| i64::try_from(v).ok()))
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
            let same = before.get(lb_id).is_some_and(|(_, reason, prev)| {
                *reason == r.reason && *prev == r.serving_previous
            });
            if !same {
                outcome.added.push(r.clone());
            }
        }
        tx.commit().await?;
        outcome.cleared = before
            .into_iter()
            .filter(|(lb_id, _)| !kept.contains(lb_id))
            .map(|(_, (name, _, _))| name)
            .collect();
        outcome.cleared.sort();
        Ok(outcome)
    }

    /// Whether each enabled zone of each of `lbs` is served (for DescribeInstanceHealth).
    pub async fn zone_services(
        &self,
        lbs: &[LoadBalancer],
        timeout_ms: i64,
    ) -> Result<Vec<ZoneServices>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let now = self.db_now(&mut conn).await?;
        zone_services(&mut conn, lbs, timeout_ms, now).await
    }

    /// The newest API request id committed after the assignment task's last change.
    pub async fn request_since_last_assignment(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT request_id FROM changes WHERE request_id IS NOT NULL AND origin = 'api'
               AND version > COALESCE((SELECT MAX(version) FROM changes WHERE origin = 'assignment'), 0)
             ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("request_id")).transpose()?)
    }

    /// Forgets `changes` rows older than `max_age_ms` (they only explain recent versions).
    pub async fn prune_changes(&self, max_age_ms: i64) -> Result<u64, StoreError> {
        let n = sqlx::query("DELETE FROM changes WHERE created_at < $1")
            .bind(now_millis().saturating_sub(max_age_ms))
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let list: Vec<Ipv4Addr> = vec!["198.18.0.1".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        assert_eq!(
            addresses_from_text(&addresses_to_text(&list)).unwrap(),
            list
        );
        assert!(addresses_from_text("[\"::1\"]").is_err());
        assert!(addresses_from_text("nope").is_err());
    }

    #[test]
    fn liveness() {
        let mut s = ServoRecord {
            id: "s1".into(),
            zone: "z".into(),
            secret_hash: String::new(),
            public_addresses: vec![],
            private_addresses: vec![],
            capacity: None,
            registered_at: None,
            last_heartbeat: Some(10_000),
            created_at: 0,
            counters: None,
        };
        assert!(!is_live(&s, 10_000, 3_000), "never registered");
        s.registered_at = Some(9_000);
        assert!(is_live(&s, 12_999, 3_000));
        assert!(!is_live(&s, 13_000, 3_000));
    }
}
