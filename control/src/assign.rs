//! Assignment of load balancers to servos (Eucalyptus' `vm_per_zone`): each load balancer is
//! served by `servos_per_zone` live servos in each of its enabled zones.
//!
//! [`plan`] is a pure function of the stored state, deterministic (ties broken by ids), and
//! stable: existing assignments are kept while they stay valid, and only deficits are filled,
//! so a servo coming back does not pull load balancers away from the servo that took them over
//! (it gets new ones, being the least loaded). [`run`] applies it every second and whenever
//! something changes; the store re-plans inside a write transaction, so every replica can run
//! the task without two of them undoing each other's work.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::store::{
    AssignmentChange, AssignmentChanges, AssignmentRow, LbPlacement, PlacementState,
    ServoPlacement, Store, StoreError,
};

/// How the assignment task behaves.
#[derive(Debug, Clone)]
pub struct AssignmentSettings {
    /// Live servos per zone each load balancer gets.
    pub servos_per_zone: usize,
    /// A servo is live while its last heartbeat is younger than this.
    pub servo_timeout: Duration,
}

/// A zone where a load balancer has fewer servos than wanted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shortfall {
    /// The load balancer's servo-side name.
    pub lb: String,
    pub zone: String,
    /// Servos it has there.
    pub have: usize,
}

/// What a pass found besides changes: the shortfalls.
pub type Shortfalls = BTreeSet<Shortfall>;

/// One servo's load while planning.
#[derive(Default)]
pub(crate) struct Load<'a> {
    /// Load balancers assigned (kept or new).
    count: usize,
    /// Per VIP: load balancers on it and the front-end ports they use.
    ports: HashMap<Ipv4Addr, (usize, HashSet<u16>)>,
    lbs: BTreeSet<&'a str>,
}

impl<'a> Load<'a> {
    fn conflicts(&self, vip: Ipv4Addr, ports: &BTreeSet<u16>) -> bool {
        self.ports
            .get(&vip)
            .is_some_and(|(_, used)| ports.iter().any(|p| used.contains(p)))
    }

    fn add(&mut self, lb: &'a LbPlacement, vip: Ipv4Addr) {
        self.count += 1;
        let (n, used) = self.ports.entry(vip).or_default();
        *n += 1;
        used.extend(lb.ports.iter().copied());
        self.lbs.insert(&lb.id);
    }

    /// Whether the servo may take one more load balancer.
    pub(crate) fn has_room(&self, servo: &ServoPlacement) -> bool {
        servo
            .capacity
            .is_none_or(|c| self.count < usize::try_from(c).unwrap_or(usize::MAX))
    }

    /// Whether `port` is free on `vip`.
    pub(crate) fn port_free(&self, vip: Ipv4Addr, port: u16) -> bool {
        self.ports
            .get(&vip)
            .is_none_or(|(_, used)| !used.contains(&port))
    }

    /// The servo address to serve `lb` on: one where none of the servo's other load
    /// balancers uses any of `lb`'s ports, preferring the address with fewest load balancers
    /// (then the servo's own order). `None` makes the servo ineligible.
    fn choose_vip(&self, servo: &ServoPlacement, lb: &LbPlacement) -> Option<Ipv4Addr> {
        addresses(servo, lb.internal)
            .iter()
            .copied()
            .filter(|a| !self.conflicts(*a, &lb.ports))
            .min_by_key(|a| self.ports.get(a).map_or(0, |(n, _)| *n))
    }
}

/// Public addresses for internet-facing load balancers, private ones for internal.
pub(crate) fn addresses(servo: &ServoPlacement, internal: bool) -> &[Ipv4Addr] {
    if internal {
        &servo.private_addresses
    } else {
        &servo.public_addresses
    }
}

/// The assignments that stay valid, and the load they put on each servo.
pub(crate) struct Kept<'a> {
    /// Servo id -> its load.
    pub(crate) loads: HashMap<&'a str, Load<'a>>,
    /// (lb id, zone) -> servos kept there.
    per_zone: HashMap<(&'a str, &'a str), usize>,
    /// Assignments undone, with why.
    removed: Vec<AssignmentChange>,
}

impl Kept<'_> {
    /// Servos `lb` keeps in `zone`.
    pub(crate) fn servos_of(&self, lb: &str, zone: &str) -> usize {
        self.per_zone.get(&(lb, zone)).copied().unwrap_or(0)
    }
}

/// The first half of a plan: keep what is still valid, earliest first (earlier assignments
/// win conflicts).
pub(crate) fn keep(state: &PlacementState, servos_per_zone: usize, expire_dead: bool) -> Kept<'_> {
    let lbs: HashMap<&str, &LbPlacement> = state.lbs.iter().map(|l| (l.id.as_str(), l)).collect();
    let servos: HashMap<&str, &ServoPlacement> =
        state.servos.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut kept = Kept {
        loads: HashMap::new(),
        per_zone: HashMap::new(),
        removed: Vec::new(),
    };
    let mut remove = |row: &AssignmentRow, lb_name: &str, reason: String| {
        kept.removed.push(AssignmentChange {
            row: row.clone(),
            lb_name: lb_name.to_string(),
            reason,
        });
    };
    for a in &state.assignments {
        let Some(lb) = lbs.get(a.lb_id.as_str()) else {
            remove(a, &a.lb_id, "the load balancer was deleted".into());
            continue;
        };
        let Some(servo) = servos.get(a.servo_id.as_str()) else {
            remove(a, &lb.servo_name, "the servo was removed".into());
            continue;
        };
        if !servo.live && expire_dead {
            remove(a, &lb.servo_name, "the servo missed its heartbeats".into());
            continue;
        }
        if servo.zone != a.zone || !lb.zones.contains(&a.zone) {
            remove(
                a,
                &lb.servo_name,
                format!("zone {} is no longer enabled", a.zone),
            );
            continue;
        }
        let vip = a.vip.parse::<Ipv4Addr>().ok();
        let Some(vip) = vip.filter(|v| addresses(servo, lb.internal).contains(v)) else {
            remove(
                a,
                &lb.servo_name,
                format!("the servo no longer offers VIP {}", a.vip),
            );
            continue;
        };
        let load = kept.loads.entry(servo.id.as_str()).or_default();
        if load.conflicts(vip, &lb.ports) {
            remove(
                a,
                &lb.servo_name,
                format!("a port of VIP {vip} is taken by another load balancer on the servo"),
            );
            continue;
        }
        if !load.has_room(servo) {
            remove(a, &lb.servo_name, "the servo is over its capacity".into());
            continue;
        }
        let n = kept
            .per_zone
            .entry((lb.id.as_str(), a.zone.as_str()))
            .or_default();
        if *n >= servos_per_zone {
            remove(
                a,
                &lb.servo_name,
                format!("more than {servos_per_zone} servos in the zone"),
            );
            continue;
        }
        *n += 1;
        load.add(lb, vip);
    }
    kept
}

/// The live servo of `zone` that would take `lb` next (least loaded first), with the VIP.
pub(crate) fn candidate<'s>(
    state: &'s PlacementState,
    loads: &HashMap<&str, Load<'_>>,
    lb: &LbPlacement,
    zone: &str,
) -> Option<(&'s ServoPlacement, Ipv4Addr)> {
    state
        .servos
        .iter()
        .filter(|s| s.live && s.zone == zone)
        .filter_map(|s| {
            let load = loads.get(s.id.as_str());
            if load.is_some_and(|l| l.lbs.contains(lb.id.as_str())) {
                return None;
            }
            let empty = Load::default();
            let load = load.unwrap_or(&empty);
            if !load.has_room(s) {
                return None;
            }
            let vip = load.choose_vip(s, lb)?;
            Some((load.count, s.id.as_str(), s, vip))
        })
        .min_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)))
        .map(|(_, _, s, vip)| (s, vip))
}

/// Decides the changes that bring `state` to the wanted assignment. `expire_dead` is false
/// during the grace period after start, when servos that could not reach a stopped control
/// have not had a chance to heartbeat yet.
pub fn plan(
    state: &PlacementState,
    servos_per_zone: usize,
    expire_dead: bool,
) -> (AssignmentChanges, Shortfalls) {
    let Kept {
        mut loads,
        per_zone,
        removed,
    } = keep(state, servos_per_zone, expire_dead);
    let mut changes = AssignmentChanges {
        removed,
        added: Vec::new(),
    };
    // Fill deficits, least loaded servo first.
    let mut shortfalls = Shortfalls::new();
    for lb in &state.lbs {
        let zones: BTreeSet<&str> = lb.zones.iter().map(String::as_str).collect();
        for zone in zones {
            let mut have = per_zone.get(&(lb.id.as_str(), zone)).copied().unwrap_or(0);
            while have < servos_per_zone {
                let Some((servo, vip)) = candidate(state, &loads, lb, zone) else {
                    shortfalls.insert(Shortfall {
                        lb: lb.servo_name.clone(),
                        zone: zone.to_string(),
                        have,
                    });
                    break;
                };
                loads.entry(servo.id.as_str()).or_default().add(lb, vip);
                have += 1;
                changes.added.push(AssignmentChange {
                    row: AssignmentRow {
                        lb_id: lb.id.clone(),
                        servo_id: servo.id.clone(),
                        zone: zone.to_string(),
                        vip: vip.to_string(),
                        assigned_at: state.now,
                    },
                    lb_name: lb.servo_name.clone(),
                    reason: String::new(),
                });
            }
        }
    }
    (changes, shortfalls)
}

/// One pass: look, and if there is work, apply it under the write lock. Returns the changes
/// made and the shortfalls seen.
pub async fn pass(
    store: &Store,
    settings: &AssignmentSettings,
    expire_dead: bool,
) -> Result<(AssignmentChanges, Shortfalls), StoreError> {
    let timeout_ms = i64::try_from(settings.servo_timeout.as_millis()).unwrap_or(i64::MAX);
    let per_zone = settings.servos_per_zone;
    let snapshot = store.placement_snapshot(timeout_ms).await?;
    let (changes, shortfalls) = plan(&snapshot, per_zone, expire_dead);
    if changes.is_empty() {
        return Ok((changes, shortfalls));
    }
    let mut final_shortfalls = shortfalls;
    let request = store.request_since_last_assignment().await?;
    let applied = crate::store::with_origin(
        crate::store::ChangeOrigin::Assignment(request),
        store.apply_assignments(timeout_ms, |state| {
            let (changes, shortfalls) = plan(state, per_zone, expire_dead);
            final_shortfalls = shortfalls;
            changes
        }),
    )
    .await?;
    for c in &applied.removed {
        tracing::info!(
            servo = %c.row.servo_id, load_balancer = %c.lb_name, zone = %c.row.zone, vip = %c.row.vip,
            "unassigned {} from servo {} in {}, VIP {}: {}",
            c.lb_name, c.row.servo_id, c.row.zone, c.row.vip, c.reason
        );
    }
    for c in &applied.added {
        tracing::info!(
            servo = %c.row.servo_id, load_balancer = %c.lb_name, zone = %c.row.zone, vip = %c.row.vip,
            "assigned {} to servo {} in {}, VIP {}",
            c.lb_name, c.row.servo_id, c.row.zone, c.row.vip
        );
    }
    Ok((applied, final_shortfalls))
}

/// How long `changes` rows are kept (they explain recent versions to long-polling servos).
const CHANGES_RETENTION: Duration = Duration::from_secs(3600);

/// Runs the assignment task until `shutdown` turns true: a pass every second, after every
/// config change (new load balancer, zones, listeners) and when `wake` is notified (a servo
/// registered or came back).
pub async fn run(
    store: Store,
    settings: AssignmentSettings,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut versions = store.subscribe();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shortfalls = Shortfalls::new();
    let mut last_prune: Option<Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = versions.changed() => {
                // Commits come in bursts under API load; one pass covers a burst.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = wake.notified() => {}
            () = crate::server::until_true(&mut shutdown) => return,
        }
        versions.borrow_and_update();
        // Servos that heart-beat to a control that was down could not reach it: give them
        // one timeout after start before taking their load balancers away.
        let expire_dead = started.elapsed() >= settings.servo_timeout;
        match pass(&store, &settings, expire_dead).await {
            Ok((_, now_short)) => {
                if failing {
                    tracing::info!("servo assignment works again");
                    failing = false;
                }
                for Shortfall { lb, zone, have } in now_short.difference(&shortfalls) {
                    tracing::warn!(
                        load_balancer = %lb, zone = %zone,
                        "{lb} has {have} of {} servos in {zone}: no live servo there has capacity and a free VIP for it",
                        settings.servos_per_zone
                    );
                }
                shortfalls = now_short;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "servo assignment failed; retrying every second");
                }
                failing = true;
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_prune = Some(Instant::now());
            let age = i64::try_from(CHANGES_RETENTION.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = store.prune_changes(age).await {
                tracing::debug!(error = %e, "could not prune old change records");
            }
        }
    }
}

/// Placement fixtures for the planner's and readiness' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::store::{LbPlacement, ServoPlacement};

    pub(crate) fn lb(id: &str, zones: &[&str], ports: &[u16], internal: bool) -> LbPlacement {
        LbPlacement {
            id: id.into(),
            servo_name: format!("{id}-123456789012"),
            internal,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            ports: ports.iter().copied().collect(),
        }
    }

    pub(crate) fn servo(id: &str, zone: &str, public: &[&str], live: bool) -> ServoPlacement {
        ServoPlacement {
            id: id.into(),
            zone: zone.into(),
            public_addresses: public.iter().map(|a| a.parse().unwrap()).collect(),
            private_addresses: vec!["10.0.0.1".parse().unwrap()],
            capacity: None,
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::fixtures::{lb, servo};
    use super::*;

    /// Servo id -> load balancers assigned.
    fn loads(assignments: &[AssignmentRow]) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for a in assignments {
            *out.entry(a.servo_id.as_str()).or_insert(0) += 1;
        }
        out
    }

    fn apply(state: &mut PlacementState, changes: &AssignmentChanges) {
        state
            .assignments
            .retain(|a| !changes.removed.iter().any(|c| &c.row == a));
        state
            .assignments
            .extend(changes.added.iter().map(|c| c.row.clone()));
    }

    fn state(lbs: Vec<LbPlacement>, servos: Vec<ServoPlacement>) -> PlacementState {
        PlacementState {
            now: 1000,
            lbs,
            servos,
            assignments: vec![],
        }
    }

    #[test]
    fn one_servo_per_zone_least_loaded_first() {
        let mut st = state(
            vec![
                lb("a", &["z1", "z2"], &[80], false),
                lb("b", &["z1"], &[80], false),
            ],
            vec![
                servo("s1", "z1", &["198.18.0.1"], true),
                servo("s2", "z1", &["198.18.0.2"], true),
                servo("s3", "z2", &["198.18.1.1"], true),
            ],
        );
        let (changes, short) = plan(&st, 1, true);
        assert!(short.is_empty());
        let got: Vec<(&str, &str, &str)> = changes
            .added
            .iter()
            .map(|c| {
                (
                    c.row.lb_id.as_str(),
                    c.row.servo_id.as_str(),
                    c.row.vip.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "s1", "198.18.0.1"),
                ("a", "s3", "198.18.1.1"),
                ("b", "s2", "198.18.0.2")
            ]
        );
        apply(&mut st, &changes);
        // Stable: nothing more to do.
        assert!(plan(&st, 1, true).0.is_empty());
    }

    #[test]
    fn vips_never_share_a_port_on_one_servo() {
        let st = state(
            vec![
                lb("a", &["z1"], &[80, 443], false),
                lb("b", &["z1"], &[80], false),
                lb("c", &["z1"], &[8080], false),
                lb("d", &["z1"], &[443], false),
            ],
            vec![servo("s1", "z1", &["198.18.0.1", "198.18.0.2"], true)],
        );
        let (changes, short) = plan(&st, 1, true);
        let vips: Vec<(&str, &str)> = changes
            .added
            .iter()
            .map(|c| (c.row.lb_id.as_str(), c.row.vip.as_str()))
            .collect();
        // a takes .1; b cannot share port 80 with a there; c fits beside b on the emptier
        // address... both have one LB, so the first listed (.1) wins; d conflicts with a on
        // .1 (443) and fits on .2.
        assert_eq!(
            vips,
            vec![
                ("a", "198.18.0.1"),
                ("b", "198.18.0.2"),
                ("c", "198.18.0.1"),
                ("d", "198.18.0.2")
            ]
        );
        assert!(short.is_empty());
        // A fifth load balancer on port 80 fits nowhere: a shortfall, not a conflict.
        let mut st2 = st.clone();
        st2.lbs.push(lb("e", &["z1"], &[80], false));
        let (changes, short) = plan(&st2, 1, true);
        assert!(!changes.added.iter().any(|c| c.row.lb_id == "e"));
        assert!(short.contains(&Shortfall {
            lb: "e-123456789012".into(),
            zone: "z1".into(),
            have: 0
        }));
    }

    #[test]
    fn internal_load_balancers_use_private_addresses() {
        let st = state(
            vec![lb("a", &["z1"], &[80], true)],
            vec![servo("s1", "z1", &["198.18.0.1"], true)],
        );
        let (changes, _) = plan(&st, 1, true);
        assert_eq!(changes.added[0].row.vip, "10.0.0.1");
    }

    #[test]
    fn dead_servos_lose_their_load_balancers_after_the_grace_period() {
        let mut st = state(
            vec![lb("a", &["z1"], &[80], false)],
            vec![
                servo("s1", "z1", &["198.18.0.1"], true),
                servo("s2", "z1", &["198.18.0.2"], true),
            ],
        );
        let (changes, _) = plan(&st, 1, true);
        apply(&mut st, &changes);
        assert_eq!(st.assignments[0].servo_id, "s1");
        st.servos[0].live = false;
        assert!(plan(&st, 1, false).0.is_empty(), "grace period");
        let (changes, _) = plan(&st, 1, true);
        assert_eq!(changes.removed.len(), 1);
        assert_eq!(changes.removed[0].reason, "the servo missed its heartbeats");
        assert_eq!(changes.added[0].row.servo_id, "s2");
        apply(&mut st, &changes);
        // s1 comes back: the assignment stays where it is.
        st.servos[0].live = true;
        assert!(plan(&st, 1, true).0.is_empty());
    }

    #[test]
    fn capacity_zones_and_per_zone_count() {
        let mut st = state(
            vec![
                lb("a", &["z1"], &[80], false),
                lb("b", &["z1"], &[81], false),
            ],
            vec![
                servo("s1", "z1", &["198.18.0.1"], true),
                servo("s2", "z1", &["198.18.0.2"], true),
                servo("s3", "z1", &["198.18.0.3"], true),
            ],
        );
        st.servos[0].capacity = Some(0);
        let (changes, _) = plan(&st, 2, true);
        assert!(changes.added.iter().all(|c| c.row.servo_id != "s1"));
        assert_eq!(changes.added.len(), 4);
        apply(&mut st, &changes);
        assert_eq!(loads(&st.assignments).get("s2"), Some(&2));
        // Lowering the count drops the extra (later) assignments.
        let (changes, _) = plan(&st, 1, true);
        assert_eq!(changes.removed.len(), 2);
        apply(&mut st, &changes);
        // Disabling the zone drops the rest.
        st.lbs[0].zones = vec!["z2".into()];
        let (changes, short) = plan(&st, 1, true);
        assert_eq!(changes.removed.len(), 1);
        assert!(short.contains(&Shortfall {
            lb: "a-123456789012".into(),
            zone: "z2".into(),
            have: 0
        }));
    }

    #[test]
    fn a_new_listener_that_conflicts_moves_the_later_load_balancer() {
        let mut st = state(
            vec![
                lb("a", &["z1"], &[80], false),
                lb("b", &["z1"], &[81], false),
            ],
            vec![servo("s1", "z1", &["198.18.0.1", "198.18.0.2"], true)],
        );
        st.assignments = vec![
            AssignmentRow {
                lb_id: "a".into(),
                servo_id: "s1".into(),
                zone: "z1".into(),
                vip: "198.18.0.1".into(),
                assigned_at: 1,
            },
            AssignmentRow {
                lb_id: "b".into(),
                servo_id: "s1".into(),
                zone: "z1".into(),
                vip: "198.18.0.1".into(),
                assigned_at: 2,
            },
        ];
        st.lbs[1].ports.insert(80);
        let (changes, _) = plan(&st, 1, true);
        assert_eq!(changes.removed.len(), 1);
        assert_eq!(changes.removed[0].row.lb_id, "b");
        assert_eq!(changes.added[0].row.vip, "198.18.0.2");
    }
}
