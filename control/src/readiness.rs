//! Readiness: whether each zone has live servos with room for load balancers, and the check
//! that refuses a change no live servo could serve (instead of a load balancer whose DNS name
//! answers nothing).
//!
//! Both read the same placement state as the assignment task and use its rules
//! ([`crate::assign`]): a zone is ready when a live servo there has capacity left and at least
//! one address; a load balancer can be served in a zone when the planner would place it
//! there (kept where it is, or on a live servo with room and an address where all its ports
//! are free).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::assign::{self, Kept};
use crate::store::{LbPlacement, PlacementState, Store, StoreError, Zone};

/// Addresses of one kind (public or private) on a zone's live servos with room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressRoom {
    /// Addresses offered by live servos that can take another load balancer.
    pub addresses: usize,
    /// For each front-end port in use there: the addresses where it is still free (a port
    /// not listed is free on every address).
    pub free_by_port: BTreeMap<u16, usize>,
}

/// One zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ZoneStatus {
    pub zone: String,
    pub region: String,
    /// Servos created in the zone.
    pub servos: usize,
    /// Of those, live (heart-beating).
    pub live_servos: usize,
    /// Load balancers with the zone enabled.
    pub load_balancers: usize,
    /// A live servo has room and an address: a new load balancer can be served here.
    pub ready: bool,
    /// For internet-facing load balancers.
    pub public: AddressRoom,
    /// For internal load balancers.
    pub private: AddressRoom,
}

/// The service's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    /// Every zone is ready.
    pub ready: bool,
    pub zones: Vec<ZoneStatus>,
}

fn room(state: &PlacementState, kept: &Kept<'_>, zone: &str, internal: bool) -> AddressRoom {
    let mut out = AddressRoom::default();
    let ports: BTreeSet<u16> = state
        .lbs
        .iter()
        .filter(|lb| lb.internal == internal)
        .flat_map(|lb| lb.ports.iter().copied())
        .collect();
    let empty = assign::Load::default();
    for s in state.servos.iter().filter(|s| s.live && s.zone == zone) {
        let load = kept.loads.get(s.id.as_str()).unwrap_or(&empty);
        if !load.has_room(s) {
            continue;
        }
        for a in assign::addresses(s, internal) {
            out.addresses += 1;
            for p in &ports {
                if load.port_free(*a, *p) {
                    *out.free_by_port.entry(*p).or_default() += 1;
                } else {
                    out.free_by_port.entry(*p).or_default();
                }
            }
        }
    }
    out
}

/// The readiness of every zone, from a placement state (pure).
fn status_of(state: &PlacementState, zones: &[Zone]) -> Status {
    let kept = assign::keep(state, usize::MAX, true);
    let zones: Vec<ZoneStatus> = zones
        .iter()
        .map(|z| {
            let servos: Vec<_> = state.servos.iter().filter(|s| s.zone == z.name).collect();
            let public = room(state, &kept, &z.name, false);
            let private = room(state, &kept, &z.name, true);
            ZoneStatus {
                zone: z.name.clone(),
                region: z.region.clone(),
                servos: servos.len(),
                live_servos: servos.iter().filter(|s| s.live).count(),
                load_balancers: state
                    .lbs
                    .iter()
                    .filter(|l| l.zones.contains(&z.name))
                    .count(),
                ready: public.addresses + private.addresses > 0,
                public,
                private,
            }
        })
        .collect();
    Status {
        ready: zones.iter().all(|z| z.ready),
        zones,
    }
}

/// The readiness of every zone now.
pub async fn status(store: &Store, timeout_ms: i64) -> Result<Status, StoreError> {
    let zones = store.list_zones().await?;
    let state = store.placement_snapshot(timeout_ms).await?;
    Ok(status_of(&state, &zones))
}

/// A zone where no live servo could take a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unservable {
    pub zone: String,
    /// The zone has no live servo at all (as opposed to none with room or a free address).
    pub no_live_servo: bool,
    /// Why, in a sentence naming the zone (and the port when a port is the reason).
    pub why: String,
}

/// The zones where `lb` (new, or as a change would make it) could not be served; empty when
/// every zone can (pure).
pub fn unservable(
    state: &PlacementState,
    lb: LbPlacement,
    servos_per_zone: usize,
) -> Vec<Unservable> {
    let mut state = state.clone();
    state.lbs.retain(|l| l.id != lb.id);
    state.lbs.push(lb);
    let lb = state.lbs.last().expect("just pushed");
    let kept = assign::keep(&state, servos_per_zone, true);
    let kind = if lb.internal { "private" } else { "public" };
    let mut out = Vec::new();
    let zones: BTreeSet<&str> = lb.zones.iter().map(String::as_str).collect();
    for zone in zones {
        if kept.servos_of(&lb.id, zone) > 0
            || assign::candidate(&state, &kept.loads, lb, zone).is_some()
        {
            continue;
        }
        let live: Vec<_> = state
            .servos
            .iter()
            .filter(|s| s.live && s.zone == zone)
            .collect();
        let empty = assign::Load::default();
        let with_room: Vec<_> = live
            .iter()
            .filter(|s| kept.loads.get(s.id.as_str()).unwrap_or(&empty).has_room(s))
            .collect();
        let why = if live.is_empty() {
            format!("no load balancer node (servo) is live in Availability Zone {zone}")
        } else if with_room.is_empty() {
            format!("every live load balancer node in Availability Zone {zone} is at capacity")
        } else if with_room
            .iter()
            .all(|s| assign::addresses(s, lb.internal).is_empty())
        {
            format!(
                "no live load balancer node in Availability Zone {zone} offers {kind} addresses"
            )
        } else {
            let taken: Vec<String> = lb
                .ports
                .iter()
                .filter(|p| {
                    !with_room.iter().any(|s| {
                        let load = kept.loads.get(s.id.as_str()).unwrap_or(&empty);
                        assign::addresses(s, lb.internal)
                            .iter()
                            .any(|a| load.port_free(*a, **p))
                    })
                })
                .map(u16::to_string)
                .collect();
            if taken.is_empty() {
                let ports: Vec<String> = lb.ports.iter().map(u16::to_string).collect();
                format!(
                    "no {kind} address of a live load balancer node in Availability Zone {zone} \
                     has LoadBalancerPorts {} all free",
                    ports.join(", ")
                )
            } else {
                format!(
                    "LoadBalancerPort {} is taken on every {kind} address of the live load \
                     balancer nodes in Availability Zone {zone}",
                    taken.join(", ")
                )
            }
        };
        out.push(Unservable {
            zone: zone.to_string(),
            no_live_servo: live.is_empty(),
            why,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::fixtures::{self, servo};
    use crate::store::AssignmentRow;

    fn lb(id: &str, zones: &[&str], ports: &[u16]) -> LbPlacement {
        fixtures::lb(id, zones, ports, false)
    }

    fn zone(name: &str) -> Zone {
        Zone {
            name: name.into(),
            region: "us-east-1".into(),
        }
    }

    fn state() -> PlacementState {
        PlacementState {
            now: 0,
            lbs: vec![lb("a", &["z1"], &[80])],
            servos: vec![
                servo("s1", "z1", &["198.18.0.1", "198.18.0.2"], true),
                servo("s2", "z2", &["198.18.1.1"], false),
            ],
            assignments: vec![AssignmentRow {
                lb_id: "a".into(),
                servo_id: "s1".into(),
                zone: "z1".into(),
                vip: "198.18.0.1".into(),
                assigned_at: 0,
            }],
        }
    }

    #[test]
    fn zones_with_live_servos_and_free_addresses_per_port() {
        let st = status_of(&state(), &[zone("z1"), zone("z2")]);
        assert!(!st.ready);
        let z1 = &st.zones[0];
        assert!(z1.ready);
        assert_eq!((z1.servos, z1.live_servos, z1.load_balancers), (1, 1, 1));
        assert_eq!(z1.public.addresses, 2);
        assert_eq!(z1.public.free_by_port, BTreeMap::from([(80, 1)]));
        assert_eq!(z1.private.addresses, 1);
        assert!(
            z1.private.free_by_port.is_empty(),
            "no internal load balancer uses a port"
        );
        let z2 = &st.zones[1];
        assert!(!z2.ready && z2.live_servos == 0 && z2.public.addresses == 0);
    }

    #[test]
    fn changes_no_live_servo_can_serve_name_the_zone_and_port() {
        let st = state();
        assert!(
            unservable(&st, lb("b", &["z1"], &[80]), 1).is_empty(),
            "198.18.0.2 is free"
        );
        assert!(
            unservable(&st, lb("a", &["z1"], &[80, 443]), 1).is_empty(),
            "kept, 443 free"
        );
        let mut full = st.clone();
        full.lbs.push(lb("b", &["z1"], &[80]));
        full.assignments.push(AssignmentRow {
            lb_id: "b".into(),
            servo_id: "s1".into(),
            zone: "z1".into(),
            vip: "198.18.0.2".into(),
            assigned_at: 1,
        });
        let why = unservable(&full, lb("c", &["z1"], &[80]), 1);
        assert_eq!(why.len(), 1);
        assert!(!why[0].no_live_servo);
        assert!(
            why[0].why.contains("LoadBalancerPort 80") && why[0].why.contains("z1"),
            "{why:?}"
        );
        assert!(unservable(&full, lb("c", &["z1"], &[81]), 1).is_empty());
        let why = unservable(&st, lb("d", &["z1", "z2"], &[80]), 1);
        assert_eq!(
            why,
            [Unservable {
                zone: "z2".into(),
                no_live_servo: true,
                why: "no load balancer node (servo) is live in Availability Zone z2".into()
            }]
        );
        let mut capped = st.clone();
        capped.servos[0].capacity = Some(1);
        let why = unservable(&capped, lb("e", &["z1"], &[8080]), 1);
        assert!(why[0].why.contains("at capacity"), "{why:?}");
    }
}
