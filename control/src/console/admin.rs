//! What administrators see besides load balancers: servos, zones, readiness and capacity, from
//! the servo records and the assignment planner.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::server::AppState;
use crate::store::{ServoInfo, StoreError};

/// The administrators' overview.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Overview {
    pub readiness: Readiness,
    pub zones: Vec<ZoneView>,
    /// As `elb-control admin servo list` prints them.
    pub servos: Value,
    pub servos_per_zone: usize,
}

/// Whether the service can place every load balancer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ZoneView {
    pub name: String,
    pub region: String,
    pub servos: usize,
    pub live_servos: usize,
    /// Load balancers assigned to the zone's servos (an assignment per servo).
    pub assignments: usize,
    /// Sum of the live servos' capacities (`None`: some live servo has no limit).
    pub capacity: Option<u64>,
}

fn zone_views(zones: Vec<crate::store::Zone>, servos: &[ServoInfo]) -> Vec<ZoneView> {
    let mut out: BTreeMap<String, ZoneView> = zones
        .into_iter()
        .map(|z| {
            (
                z.name.clone(),
                ZoneView {
                    name: z.name,
                    region: z.region,
                    capacity: Some(0),
                    ..ZoneView::default()
                },
            )
        })
        .collect();
    for s in servos {
        let Some(z) = out.get_mut(&s.servo.zone) else {
            continue;
        };
        z.servos += 1;
        z.assignments += s.load_balancers.len();
        if s.live {
            z.live_servos += 1;
            z.capacity = match (z.capacity, s.servo.capacity) {
                (Some(total), Some(c)) => Some(total + u64::from(c)),
                _ => None,
            };
        }
    }
    out.into_values().collect()
}

/// The readiness of the service: servos are live, every zone has a live servo with room
/// (control's own readiness, as `admin status` and `/health` report it), and every zone of
/// every load balancer has the servos it should.
pub async fn readiness(state: &AppState, servos: &[ServoInfo]) -> Readiness {
    let mut checks = Vec::new();
    let live = servos.iter().filter(|s| s.live).count();
    checks.push(Check {
        name: "Servos".into(),
        ok: live > 0,
        detail: format!("{live} of {} servos live", servos.len()),
    });
    match crate::readiness::status(state.store(), state.config().servo.timeout_ms()).await {
        Ok(status) => {
            let waiting: Vec<&str> = status
                .zones
                .iter()
                .filter(|z| !z.ready)
                .map(|z| z.zone.as_str())
                .collect();
            checks.push(Check {
                name: "Zones".into(),
                ok: status.ready,
                detail: if waiting.is_empty() {
                    format!(
                        "{} zone(s), each with a live servo that has room",
                        status.zones.len()
                    )
                } else {
                    format!("no live servo with room in {}", waiting.join(", "))
                },
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot read readiness");
        }
    }
    let per_zone = state.config().servo.servos_per_zone;
    match state
        .store()
        .placement_snapshot(state.config().servo.timeout_ms())
        .await
    {
        Ok(snapshot) => {
            let (_, shortfalls) = crate::assign::plan(&snapshot, per_zone, false);
            checks.push(Check {
                name: "Placement".into(),
                ok: shortfalls.is_empty(),
                detail: if shortfalls.is_empty() {
                    format!("every load balancer has {per_zone} live servo(s) in each of its zones")
                } else {
                    shortfalls
                        .iter()
                        .map(|s| format!("{} in {}: {} of {per_zone}", s.lb, s.zone, s.have))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot read the placement state");
            checks.push(Check {
                name: "Store".into(),
                ok: false,
                detail: "the store did not answer".into(),
            });
        }
    }
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

pub async fn overview(state: &AppState) -> Result<Overview, StoreError> {
    let store = state.store();
    let timeout_ms = state.config().servo.timeout_ms();
    let servos = store.list_servos(timeout_ms).await?;
    let zones = zone_views(store.list_zones().await?, &servos);
    let readiness = readiness(state, &servos).await;
    let servo_list = crate::admin::servo_list(store, state.config().servo.timeout.as_secs())
        .await
        .map_err(|e| match e {
            crate::admin::AdminError::Store(e) => e,
            crate::admin::AdminError::Invalid(m) => StoreError::Corrupt {
                table: "servos",
                detail: m,
            },
        })?;
    Ok(Overview {
        readiness,
        zones,
        servos: servo_list,
        servos_per_zone: state.config().servo.servos_per_zone,
    })
}
