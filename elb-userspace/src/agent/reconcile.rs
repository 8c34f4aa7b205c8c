//! From the configuration and the instances' health to the dataplane's maps.
//!
//! The reconciler owns the listener and backend ids. Each `apply` computes what every listener's
//! backend set and every backend's state should be, and writes only what differs, so a reload or a
//! health change disturbs nothing it does not touch:
//! - a backend is ACTIVE (in its listener's set) while its instance is registered, InService and
//!   eligible under the zone rule ([`elb_contract::zone`]);
//! - when that stops being true, it goes DRAINING for ConnectionDraining.Timeout if draining is
//!   enabled (existing flows continue, no new ones), then REMOVED (flows are cut); without
//!   draining, straight to REMOVED;
//! - a REMOVED backend that becomes ACTIVE again gets a new generation, so flows cut earlier stay cut.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use elb_common::{
    BACKEND_ACTIVE, BACKEND_DRAINING, BACKEND_REMOVED, Backend, Listener, ListenerKey,
    MAX_BACKENDS, MAX_LISTENERS, PROTO_TCP,
};

use elb_contract::{LoadBalancer, zone};

use crate::{
    config::ServoConfig,
    dataplane::{DataplaneError, Maps},
    health::InstanceHealth,
};

/// What the reconciler writes. Implemented by [`Maps`]; tests use an in-memory table.
pub trait MapWriter {
    /// Adds or replaces a listener.
    fn upsert_listener(
        &mut self,
        key: ListenerKey,
        listener: Listener,
    ) -> Result<(), DataplaneError>;
    /// Removes a listener.
    fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), DataplaneError>;
    /// Writes a backend.
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DataplaneError>;
    /// Reads a backend (its generation survives the id being freed).
    fn backend(&self, id: u32) -> Result<Backend, DataplaneError>;
    /// Replaces a listener's backend set.
    fn replace_backend_set(&mut self, listener_id: u32, ids: &[u32]) -> Result<(), DataplaneError>;
    /// Removes a listener's backend set.
    fn remove_backend_set(&mut self, listener_id: u32) -> Result<(), DataplaneError>;
    /// Resets a listener id's cursor and statistics before it is reused.
    fn reset_listener_id(&mut self, listener_id: u32) -> Result<(), DataplaneError>;
    /// Resets a backend id's statistics before it is reused.
    fn reset_backend_id(&mut self, backend_id: u32) -> Result<(), DataplaneError>;
}

impl MapWriter for Maps {
    fn upsert_listener(
        &mut self,
        key: ListenerKey,
        listener: Listener,
    ) -> Result<(), DataplaneError> {
        Maps::upsert_listener(self, key, listener)
    }
    fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), DataplaneError> {
        Maps::remove_listener(self, key)
    }
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DataplaneError> {
        Maps::set_backend(self, id, backend)
    }
    fn backend(&self, id: u32) -> Result<Backend, DataplaneError> {
        Maps::backend(self, id)
    }
    fn replace_backend_set(&mut self, listener_id: u32, ids: &[u32]) -> Result<(), DataplaneError> {
        Maps::replace_backend_set(self, listener_id, ids)
    }
    fn remove_backend_set(&mut self, listener_id: u32) -> Result<(), DataplaneError> {
        Maps::remove_backend_set(self, listener_id)
    }
    fn reset_listener_id(&mut self, listener_id: u32) -> Result<(), DataplaneError> {
        self.reset_cursor(listener_id)?;
        self.reset_listener_stats(listener_id)
    }
    fn reset_backend_id(&mut self, backend_id: u32) -> Result<(), DataplaneError> {
        self.reset_backend_stats(backend_id)
    }
}

/// An instance as health is tracked: one per load balancer it is registered with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// The load balancer's name on this servo.
    pub load_balancer: String,
    /// The instance id.
    pub instance_id: String,
}

impl InstanceKey {
    /// The key of `instance_id` of `load_balancer`.
    pub fn new(load_balancer: &str, instance_id: &str) -> Self {
        Self {
            load_balancer: load_balancer.to_string(),
            instance_id: instance_id.to_string(),
        }
    }
}

/// `web-948861756935/i-web2`, as logs show it.
impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.load_balancer, self.instance_id)
    }
}

/// Where a backend sends flows: its listener, and the instance's address and port. The same
/// instance behind two listeners is two backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAt {
    /// Listener id.
    pub listener_id: u32,
    /// Instance address.
    pub addr: Ipv4Addr,
    /// Instance port.
    pub port: u16,
}

/// One listener the dataplane knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSlot {
    /// Listener id.
    pub id: u32,
    /// The load balancer it belongs to (empty for a listener adopted from pinned state that no
    /// configuration claimed yet).
    pub lb: String,
    /// Back-end port.
    pub instance_port: u16,
    /// Idle timeout in seconds.
    pub idle_timeout_s: u32,
    /// `LISTENER_F_*` flags ([`super::l7::listener_flags`]).
    pub flags: u32,
}

/// One backend (an instance behind one listener) the dataplane knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSlot {
    /// Backend id.
    pub id: u32,
    /// Generation written with it.
    pub generation: u32,
    /// Its listener.
    pub listener_id: u32,
    /// Its instance (empty names for an adopted, unclaimed backend).
    pub instance: InstanceKey,
    /// Address.
    pub addr: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// `BACKEND_*` state written to the map.
    pub state: u8,
    /// While DRAINING: when it becomes REMOVED.
    pub drain_until: Option<Instant>,
}

impl BackendSlot {
    /// Where it sends flows.
    pub fn at(&self) -> BackendAt {
        BackendAt {
            listener_id: self.listener_id,
            addr: self.addr,
            port: self.port,
        }
    }
}

/// The configuration's view of one backend.
#[derive(Clone, Debug)]
struct WantedBackend {
    instance: InstanceKey,
    addr: Ipv4Addr,
    port: u16,
    /// Registered, in service and eligible for this servo's traffic.
    active: bool,
    drain: Option<Duration>,
}

/// What an `apply` changed, for the log line that reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Listeners added (`vip:port`).
    pub listeners_added: Vec<String>,
    /// Listeners removed.
    pub listeners_removed: Vec<String>,
    /// Backends whose state changed: (instance, `ip:port`, new state).
    pub backends: Vec<(String, String, &'static str)>,
    /// Listeners whose backend set was rewritten.
    pub sets_written: usize,
}

impl Changes {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.listeners_added.is_empty()
            && self.listeners_removed.is_empty()
            && self.backends.is_empty()
            && self.sets_written == 0
    }
}

/// Name of a `BACKEND_*` state.
pub fn state_name(state: u8) -> &'static str {
    match state {
        BACKEND_ACTIVE => "active",
        BACKEND_DRAINING => "draining",
        BACKEND_REMOVED => "removed",
        _ => "unused",
    }
}

/// Whether each instance of `lb` is in service: by this servo's checks (`health`) for the
/// instances it checks, by the state control relays for the others.
pub fn in_service(lb: &LoadBalancer, health: &BTreeMap<InstanceKey, InstanceHealth>) -> Vec<bool> {
    lb.instances
        .iter()
        .map(|i| {
            if i.health_check {
                health
                    .get(&InstanceKey::new(&lb.load_balancer_name, &i.instance_id))
                    .is_some_and(InstanceHealth::is_in_service)
            } else {
                i.health
                    .as_ref()
                    .is_some_and(elb_contract::InstanceHealth::is_in_service)
            }
        })
        .collect()
}

/// For each instance of `lb`, whether it takes new flows on this servo: in service and
/// eligible under the zone rule.
fn eligible_instances(
    cfg: &ServoConfig,
    lb: &LoadBalancer,
    health: &BTreeMap<InstanceKey, InstanceHealth>,
) -> Vec<bool> {
    let candidates: Vec<zone::Candidate<'_>> = lb
        .instances
        .iter()
        .zip(in_service(lb, health))
        .map(|(i, in_service)| zone::Candidate {
            zone: i.zone.as_deref(),
            in_service,
        })
        .collect();
    zone::eligible(
        cfg.zone.as_deref(),
        lb.attributes.cross_zone_load_balancing.enabled,
        &candidates,
    )
}

/// The reconciler.
#[derive(Debug)]
pub struct Reconciler<W> {
    writer: W,
    listeners: BTreeMap<ListenerKey, ListenerSlot>,
    backends: BTreeMap<u32, BackendSlot>,
    sets: BTreeMap<u32, Vec<u32>>,
    /// Listener values last written, so unchanged ones are not written again.
    written_listeners: BTreeMap<ListenerKey, Listener>,
    free_listener_ids: BTreeSet<u32>,
    free_backend_ids: BTreeSet<u32>,
}

fn endpoint(key: &ListenerKey) -> String {
    format!("{}:{}", Ipv4Addr::from(key.vip), key.port)
}

impl<W: MapWriter> Reconciler<W> {
    /// A reconciler over empty maps.
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            listeners: BTreeMap::new(),
            backends: BTreeMap::new(),
            sets: BTreeMap::new(),
            written_listeners: BTreeMap::new(),
            free_listener_ids: (0..MAX_LISTENERS).collect(),
            free_backend_ids: (0..MAX_BACKENDS).collect(),
        }
    }

    /// A reconciler that adopts what an earlier agent left in the pinned maps, so the same
    /// listeners and backends keep their ids (and their flows).
    pub fn adopt(
        writer: W,
        listeners: Vec<(ListenerKey, Listener)>,
        backends: Vec<(u32, Backend)>,
        sets: Vec<(u32, Vec<u32>)>,
    ) -> Self {
        let mut r = Self::new(writer);
        for (key, l) in listeners {
            r.free_listener_ids.remove(&l.id);
            r.listeners.insert(
                key,
                ListenerSlot {
                    id: l.id,
                    lb: String::new(),
                    instance_port: 0,
                    idle_timeout_s: l.idle_timeout_s,
                    flags: l.flags,
                },
            );
        }
        for (id, b) in backends {
            if b.state == 0 {
                continue;
            }
            r.free_backend_ids.remove(&id);
            r.backends.insert(
                id,
                BackendSlot {
                    id,
                    generation: b.generation,
                    listener_id: b.listener_id,
                    instance: InstanceKey::default(),
                    addr: Ipv4Addr::from(b.addr),
                    port: b.port,
                    state: b.state,
                    drain_until: None,
                },
            );
        }
        r.sets = sets.into_iter().collect();
        r
    }

    /// Listeners by key.
    pub fn listeners(&self) -> &BTreeMap<ListenerKey, ListenerSlot> {
        &self.listeners
    }

    /// Backends by id.
    pub fn backends(&self) -> &BTreeMap<u32, BackendSlot> {
        &self.backends
    }

    /// Instances whose backends are active in the dataplane right now (an adopted agent seeds
    /// them InService so their traffic continues while health is re-derived).
    pub fn active_addresses(&self) -> BTreeSet<BackendAt> {
        self.backends
            .values()
            .filter(|b| b.state == BACKEND_ACTIVE)
            .map(BackendSlot::at)
            .collect()
    }

    /// Brings the maps in line with `cfg` and `health`; `now` drives draining deadlines.
    /// Returns what changed.
    pub fn apply(
        &mut self,
        cfg: &ServoConfig,
        health: &BTreeMap<InstanceKey, InstanceHealth>,
        now: Instant,
    ) -> Result<Changes, DataplaneError> {
        let mut changes = Changes::default();

        // 1. The listeners the configuration wants, and their backends.
        let mut wanted: BTreeMap<ListenerKey, (&LoadBalancer, u16, u32)> = BTreeMap::new();
        for lb in &cfg.load_balancers {
            for vip in &lb.vips {
                for l in &lb.listeners {
                    let key = ListenerKey {
                        vip: vip.octets(),
                        port: l.load_balancer_port,
                        proto: PROTO_TCP,
                        _pad: 0,
                    };
                    wanted.insert(
                        key,
                        (
                            lb,
                            l.instance_port,
                            super::l7::listener_flags(lb, l)
                                | super::security_groups::listener_flags(lb)
                                | super::events::listener_flags(lb),
                        ),
                    );
                }
            }
        }

        // 2. Listener slots: claim adopted ones, allocate new ones.
        for (key, (lb, instance_port, flags)) in &wanted {
            let idle = lb.attributes.connection_settings.idle_timeout;
            match self.listeners.get_mut(key) {
                Some(slot) => {
                    slot.lb.clone_from(&lb.load_balancer_name);
                    slot.instance_port = *instance_port;
                    slot.idle_timeout_s = idle;
                    slot.flags = *flags;
                }
                None => {
                    let id = self.free_listener_ids.pop_first().ok_or_else(|| {
                        DataplaneError::Invalid(format!("more than {MAX_LISTENERS} listeners"))
                    })?;
                    self.writer.reset_listener_id(id)?;
                    self.listeners.insert(
                        *key,
                        ListenerSlot {
                            id,
                            lb: lb.load_balancer_name.clone(),
                            instance_port: *instance_port,
                            idle_timeout_s: idle,
                            flags: *flags,
                        },
                    );
                    changes.listeners_added.push(endpoint(key));
                }
            }
        }

        // 3. Every backend the configuration names, and whether it should take new flows.
        let eligible: BTreeMap<&str, Vec<bool>> = cfg
            .load_balancers
            .iter()
            .map(|lb| {
                (
                    lb.load_balancer_name.as_str(),
                    eligible_instances(cfg, lb, health),
                )
            })
            .collect();
        let mut wanted_backends: BTreeMap<BackendAt, WantedBackend> = BTreeMap::new();
        for (key, (lb, instance_port, _)) in &wanted {
            let listener_id = self.listeners[key].id;
            let drain =
                lb.attributes.connection_draining.enabled.then(|| {
                    Duration::from_secs(u64::from(lb.attributes.connection_draining.timeout))
                });
            let eligible = &eligible[lb.load_balancer_name.as_str()];
            for (inst, active) in lb.instances.iter().zip(eligible) {
                wanted_backends.insert(
                    BackendAt {
                        listener_id,
                        addr: inst.address,
                        port: *instance_port,
                    },
                    WantedBackend {
                        instance: InstanceKey::new(&lb.load_balancer_name, &inst.instance_id),
                        addr: inst.address,
                        port: *instance_port,
                        active: *active,
                        drain,
                    },
                );
            }
        }
        // Draining of backends that are no longer configured follows their load balancer's
        // attribute, if the load balancer is still there.
        let drain_of: BTreeMap<&str, Option<Duration>> = cfg
            .load_balancers
            .iter()
            .map(|lb| {
                let d = &lb.attributes.connection_draining;
                (
                    lb.load_balancer_name.as_str(),
                    d.enabled.then(|| Duration::from_secs(u64::from(d.timeout))),
                )
            })
            .collect();

        // 4. Existing backend slots: claim, update state, or let go.
        let mut claimed: BTreeSet<BackendAt> = BTreeSet::new();
        let ids: Vec<u32> = self.backends.keys().copied().collect();
        for id in ids {
            let slot = self.backends.get(&id).cloned().expect("present");
            let ident = slot.at();
            let wanted_here = wanted_backends.get(&ident);
            if wanted_here.is_some() {
                claimed.insert(ident);
            }
            let (active, drain, instance) = match wanted_here {
                Some(w) => (w.active, w.drain, w.instance.clone()),
                None => (
                    false,
                    drain_of
                        .get(slot.instance.load_balancer.as_str())
                        .copied()
                        .flatten(),
                    slot.instance.clone(),
                ),
            };
            let mut next = slot.clone();
            next.instance = instance;
            if active {
                if slot.state == BACKEND_REMOVED {
                    next.generation = slot.generation.wrapping_add(1);
                }
                next.state = BACKEND_ACTIVE;
                next.drain_until = None;
            } else {
                match slot.state {
                    BACKEND_ACTIVE => match drain {
                        Some(d) => {
                            next.state = BACKEND_DRAINING;
                            next.drain_until = Some(now + d);
                        }
                        None => next.state = BACKEND_REMOVED,
                    },
                    BACKEND_DRAINING => {
                        let deadline = slot.drain_until.unwrap_or(now);
                        if now >= deadline {
                            next.state = BACKEND_REMOVED;
                            next.drain_until = None;
                        }
                    }
                    _ => {}
                }
            }
            if next.state != slot.state || next.generation != slot.generation {
                self.write_backend(&next)?;
                changes.backends.push((
                    next.instance.instance_id.clone(),
                    format!("{}:{}", next.addr, next.port),
                    state_name(next.state),
                ));
            }
            if wanted_here.is_none() && next.state == BACKEND_REMOVED {
                // Deregistered and done: free the id. Its generation stays in the map, so
                // a new owner gets the next one and old flows stay cut.
                self.backends.remove(&id);
                self.free_backend_ids.insert(id);
            } else {
                self.backends.insert(id, next);
            }
        }

        // 5. New backends.
        for (ident, w) in &wanted_backends {
            if claimed.contains(ident) {
                continue;
            }
            let id = self.free_backend_ids.pop_first().ok_or_else(|| {
                DataplaneError::Invalid(format!("more than {MAX_BACKENDS} backends"))
            })?;
            let previous = self.writer.backend(id).map(|b| b.generation).unwrap_or(0);
            self.writer.reset_backend_id(id)?;
            let slot = BackendSlot {
                id,
                generation: previous.wrapping_add(1),
                listener_id: ident.listener_id,
                instance: w.instance.clone(),
                addr: w.addr,
                port: w.port,
                state: if w.active {
                    BACKEND_ACTIVE
                } else {
                    BACKEND_REMOVED
                },
                drain_until: None,
            };
            self.write_backend(&slot)?;
            if w.active {
                changes.backends.push((
                    slot.instance.instance_id.clone(),
                    format!("{}:{}", slot.addr, slot.port),
                    "active",
                ));
            }
            self.backends.insert(id, slot);
        }

        // 6. Backend sets, in a stable order (instance id) so the rotation is predictable.
        let listener_ids: BTreeMap<u32, ListenerKey> =
            self.listeners.iter().map(|(k, s)| (s.id, *k)).collect();
        for (listener_id, key) in &listener_ids {
            if !wanted.contains_key(key) {
                continue;
            }
            let mut members: Vec<(&str, u32)> = self
                .backends
                .values()
                .filter(|b| b.listener_id == *listener_id && b.state == BACKEND_ACTIVE)
                .map(|b| (b.instance.instance_id.as_str(), b.id))
                .collect();
            members.sort();
            let set: Vec<u32> = members.into_iter().map(|(_, id)| id).collect();
            if self.sets.get(listener_id) != Some(&set) {
                self.writer.replace_backend_set(*listener_id, &set)?;
                self.sets.insert(*listener_id, set);
                changes.sets_written += 1;
            }
        }
        // Listeners are written after their sets, so a new listener never appears without one;
        // only changed ones are written (an apply runs on every health event).
        for (key, slot) in &self.listeners {
            let value = Listener {
                id: slot.id,
                flags: slot.flags,
                idle_timeout_s: slot.idle_timeout_s,
                _pad: 0,
            };
            if wanted.contains_key(key) && self.written_listeners.get(key) != Some(&value) {
                self.written_listeners.insert(*key, value);
                self.writer.upsert_listener(*key, value)?;
            }
        }

        // 7. Listeners no longer wanted: gone from the map now (no new flows); the id is freed
        // once none of its backends remain (their flows drain or are cut as configured).
        let stale: Vec<ListenerKey> = self
            .listeners
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            let id = self.listeners[&key].id;
            if self.sets.contains_key(&id) {
                self.written_listeners.remove(&key);
                self.writer.remove_listener(&key)?;
                self.writer.remove_backend_set(id)?;
                self.sets.remove(&id);
                changes.listeners_removed.push(endpoint(&key));
            }
            if !self.backends.values().any(|b| b.listener_id == id) {
                self.listeners.remove(&key);
                self.free_listener_ids.insert(id);
            }
        }
        Ok(changes)
    }

    /// The next time `apply` has work to do by itself (a drain deadline).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.backends.values().filter_map(|b| b.drain_until).min()
    }

    fn write_backend(&mut self, slot: &BackendSlot) -> Result<(), DataplaneError> {
        self.writer.set_backend(
            slot.id,
            Backend {
                addr: slot.addr.octets(),
                port: slot.port,
                state: slot.state,
                _pad: 0,
                generation: slot.generation,
                listener_id: slot.listener_id,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use elb_contract::{Instance, Protocol};

    use super::*;

    /// The maps, in memory.
    #[derive(Default, Debug)]
    struct Table {
        listeners: HashMap<ListenerKey, Listener>,
        backends: HashMap<u32, Backend>,
        sets: HashMap<u32, Vec<u32>>,
        writes: usize,
    }

    impl MapWriter for Table {
        fn upsert_listener(&mut self, key: ListenerKey, l: Listener) -> Result<(), DataplaneError> {
            if self.listeners.insert(key, l) != Some(l) {
                self.writes += 1;
            }
            Ok(())
        }
        fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), DataplaneError> {
            self.listeners.remove(key);
            self.writes += 1;
            Ok(())
        }
        fn set_backend(&mut self, id: u32, b: Backend) -> Result<(), DataplaneError> {
            self.backends.insert(id, b);
            self.writes += 1;
            Ok(())
        }
        fn backend(&self, id: u32) -> Result<Backend, DataplaneError> {
            Ok(self.backends.get(&id).copied().unwrap_or_default())
        }
        fn replace_backend_set(&mut self, id: u32, ids: &[u32]) -> Result<(), DataplaneError> {
            self.sets.insert(id, ids.to_vec());
            self.writes += 1;
            Ok(())
        }
        fn remove_backend_set(&mut self, id: u32) -> Result<(), DataplaneError> {
            self.sets.remove(&id);
            self.writes += 1;
            Ok(())
        }
        fn reset_listener_id(&mut self, _: u32) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn reset_backend_id(&mut self, _: u32) -> Result<(), DataplaneError> {
            Ok(())
        }
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn inst(id: &str, last: u8, zone: &str) -> Instance {
        Instance {
            instance_id: id.into(),
            address: Ipv4Addr::new(198, 19, 0, last),
            zone: Some(zone.into()),
            health_check: true,
            health: None,
        }
    }

    fn config(draining: bool) -> ServoConfig {
        let mut cfg: ServoConfig = toml::from_str("interfaces = [\"eth0\"]\nzone = \"a\"").unwrap();
        let mut lb: LoadBalancer = serde_json::from_value(serde_json::json!({
            "LoadBalancerName": "web",
            "Vips": ["198.18.0.1"],
            "Listeners": [{"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 8080}],
        }))
        .unwrap();
        lb.instances = vec![
            inst("i-1", 11, "a"),
            inst("i-2", 12, "a"),
            inst("i-3", 13, "a"),
        ];
        lb.attributes.connection_draining.enabled = draining;
        lb.attributes.connection_draining.timeout = 30;
        cfg.load_balancers = vec![lb];
        cfg
    }

    fn healthy(ids: &[&str]) -> BTreeMap<InstanceKey, InstanceHealth> {
        ids.iter()
            .map(|i| (InstanceKey::new("web", i), InstanceHealth::in_service()))
            .collect()
    }

    fn set_addrs(r: &Reconciler<Table>) -> Vec<u8> {
        let key = ListenerKey {
            vip: VIP.octets(),
            port: 80,
            proto: PROTO_TCP,
            _pad: 0,
        };
        let id = r.writer.listeners[&key].id;
        r.writer.sets[&id]
            .iter()
            .map(|b| r.writer.backends[b].addr[3])
            .collect()
    }

    fn state_of(r: &Reconciler<Table>, last: u8) -> (u8, u32) {
        let b = r
            .writer
            .backends
            .values()
            .find(|b| b.addr[3] == last)
            .expect("backend");
        (b.state, b.generation)
    }

    #[test]
    fn healthy_instances_form_the_set_in_instance_order() {
        let mut r = Reconciler::new(Table::default());
        let c = r
            .apply(
                &config(false),
                &healthy(&["i-3", "i-1", "i-2"]),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(set_addrs(&r), [11, 12, 13]);
        assert_eq!(c.listeners_added, ["198.18.0.1:80"]);
        assert_eq!(
            r.writer.listeners.values().next().unwrap().idle_timeout_s,
            60
        );
    }

    #[test]
    fn registering_instances_get_no_traffic() {
        let mut r = Reconciler::new(Table::default());
        r.apply(&config(false), &healthy(&["i-1"]), Instant::now())
            .unwrap();
        assert_eq!(set_addrs(&r), [11]);
        assert_eq!(
            state_of(&r, 12).0,
            BACKEND_REMOVED,
            "known but not in service"
        );
    }

    #[test]
    fn apply_is_idempotent() {
        let mut r = Reconciler::new(Table::default());
        let cfg = config(false);
        let h = healthy(&["i-1", "i-2", "i-3"]);
        r.apply(&cfg, &h, Instant::now()).unwrap();
        let writes = r.writer.writes;
        let c = r.apply(&cfg, &h, Instant::now()).unwrap();
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(
            r.writer.writes, writes,
            "no map writes when nothing changed"
        );
    }

    #[test]
    fn out_of_service_without_draining_is_removed_at_once() {
        let mut r = Reconciler::new(Table::default());
        let cfg = config(false);
        r.apply(&cfg, &healthy(&["i-1", "i-2", "i-3"]), Instant::now())
            .unwrap();
        let c = r
            .apply(&cfg, &healthy(&["i-1", "i-3"]), Instant::now())
            .unwrap();
        assert_eq!(set_addrs(&r), [11, 13]);
        assert_eq!(state_of(&r, 12).0, BACKEND_REMOVED);
        assert_eq!(
            c.backends,
            [("i-2".to_string(), "198.19.0.12:8080".to_string(), "removed")]
        );
        // Back in service: active again with a new generation, so flows cut earlier stay cut.
        let gen_before = state_of(&r, 12).1;
        r.apply(&cfg, &healthy(&["i-1", "i-2", "i-3"]), Instant::now())
            .unwrap();
        assert_eq!(state_of(&r, 12), (BACKEND_ACTIVE, gen_before + 1));
        assert_eq!(set_addrs(&r), [11, 12, 13]);
    }

    #[test]
    fn deregistration_with_draining_drains_until_the_timeout() {
        let mut r = Reconciler::new(Table::default());
        let mut cfg = config(true);
        let t0 = Instant::now();
        let h = healthy(&["i-1", "i-2", "i-3"]);
        r.apply(&cfg, &h, t0).unwrap();
        cfg.load_balancers[0]
            .instances
            .retain(|i| i.instance_id != "i-2");
        r.apply(&cfg, &h, t0).unwrap();
        assert_eq!(set_addrs(&r), [11, 13], "no new flows");
        assert_eq!(
            state_of(&r, 12).0,
            BACKEND_DRAINING,
            "existing flows continue"
        );
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(30)));
        r.apply(&cfg, &h, t0 + Duration::from_secs(29)).unwrap();
        assert_eq!(state_of(&r, 12).0, BACKEND_DRAINING);
        r.apply(&cfg, &h, t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(state_of(&r, 12).0, BACKEND_REMOVED, "cut at the deadline");
        assert_eq!(
            r.backends().len(),
            2,
            "the deregistered backend's id is freed"
        );
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn reregistered_instance_gets_a_new_generation_on_a_reused_id() {
        let mut r = Reconciler::new(Table::default());
        let mut cfg = config(false);
        let h = healthy(&["i-1", "i-2", "i-3"]);
        r.apply(&cfg, &h, Instant::now()).unwrap();
        let (_, first_gen) = state_of(&r, 12);
        cfg.load_balancers[0]
            .instances
            .retain(|i| i.instance_id != "i-2");
        r.apply(&cfg, &h, Instant::now()).unwrap();
        cfg = config(false);
        r.apply(&cfg, &h, Instant::now()).unwrap();
        let (state, gen_now) = state_of(&r, 12);
        assert_eq!(state, BACKEND_ACTIVE);
        assert!(gen_now > first_gen);
    }

    #[test]
    fn other_zones_with_cross_zone_or_when_the_own_zone_has_none_in_service() {
        let mut r = Reconciler::new(Table::default());
        let mut cfg = config(false);
        cfg.load_balancers[0].instances[2].zone = Some("b".into());
        let h = healthy(&["i-1", "i-2", "i-3"]);
        r.apply(&cfg, &h, Instant::now()).unwrap();
        assert_eq!(set_addrs(&r), [11, 12]);
        cfg.load_balancers[0]
            .attributes
            .cross_zone_load_balancing
            .enabled = true;
        r.apply(&cfg, &h, Instant::now()).unwrap();
        assert_eq!(set_addrs(&r), [11, 12, 13]);
        // Cross-zone off, and zone a's instances out of service: zone b's take the traffic.
        cfg.load_balancers[0]
            .attributes
            .cross_zone_load_balancing
            .enabled = false;
        r.apply(&cfg, &healthy(&["i-3"]), Instant::now()).unwrap();
        assert_eq!(set_addrs(&r), [13]);
        // One of zone a's is back: zone a alone again.
        r.apply(&cfg, &healthy(&["i-2", "i-3"]), Instant::now())
            .unwrap();
        assert_eq!(set_addrs(&r), [12]);
    }

    #[test]
    fn instances_checked_elsewhere_use_the_given_state() {
        let mut r = Reconciler::new(Table::default());
        let mut cfg = config(false);
        cfg.load_balancers[0]
            .attributes
            .cross_zone_load_balancing
            .enabled = true;
        let other = &mut cfg.load_balancers[0].instances[2];
        other.zone = Some("b".into());
        other.health_check = false;
        other.health = Some(elb_contract::InstanceHealth::in_service());
        r.apply(&cfg, &healthy(&["i-1", "i-2"]), Instant::now())
            .unwrap();
        assert_eq!(set_addrs(&r), [11, 12, 13]);
        cfg.load_balancers[0].instances[2].health = Some(elb_contract::InstanceHealth::failed());
        r.apply(&cfg, &healthy(&["i-1", "i-2"]), Instant::now())
            .unwrap();
        assert_eq!(set_addrs(&r), [11, 12]);
    }

    #[test]
    fn listeners_added_and_removed_without_touching_others() {
        let mut r = Reconciler::new(Table::default());
        let mut cfg = config(false);
        let h = healthy(&["i-1", "i-2", "i-3"]);
        r.apply(&cfg, &h, Instant::now()).unwrap();
        let web_set = set_addrs(&r);
        cfg.load_balancers[0]
            .listeners
            .push(elb_contract::Listener {
                protocol: Protocol::Tcp,
                load_balancer_port: 8443,
                instance_protocol: Protocol::Tcp,
                instance_port: 443,
                ssl_certificate_id: None,
            });
        let c = r.apply(&cfg, &h, Instant::now()).unwrap();
        assert_eq!(c.listeners_added, ["198.18.0.1:8443"]);
        assert!(
            c.backends.iter().all(|(_, ep, _)| ep.ends_with(":443")),
            "only the new listener's backends: {c:?}"
        );
        assert_eq!(set_addrs(&r), web_set);
        assert_eq!(r.writer.listeners.len(), 2);

        cfg.load_balancers[0].listeners.pop();
        let c = r.apply(&cfg, &h, Instant::now()).unwrap();
        assert_eq!(c.listeners_removed, ["198.18.0.1:8443"]);
        assert_eq!(r.writer.listeners.len(), 1);
        assert_eq!(
            r.listeners().len(),
            1,
            "id freed once its backends are gone"
        );
    }

    #[test]
    fn adoption_keeps_ids_and_generations() {
        let mut first = Reconciler::new(Table::default());
        let cfg = config(false);
        let h = healthy(&["i-1", "i-2", "i-3"]);
        first.apply(&cfg, &h, Instant::now()).unwrap();
        let table = first.writer;
        let listeners: Vec<_> = table.listeners.iter().map(|(k, v)| (*k, *v)).collect();
        let backends: Vec<_> = table.backends.iter().map(|(k, v)| (*k, *v)).collect();
        let sets: Vec<_> = table.sets.iter().map(|(k, v)| (*k, v.clone())).collect();
        let before = table.backends.clone();
        let mut second = Reconciler::adopt(table, listeners, backends, sets);
        assert_eq!(second.active_addresses().len(), 3);
        let c = second.apply(&cfg, &h, Instant::now()).unwrap();
        assert!(
            c.backends.is_empty() && c.listeners_added.is_empty() && c.sets_written == 0,
            "{c:?}"
        );
        assert_eq!(second.writer.backends, before, "same ids, same generations");
    }
}
