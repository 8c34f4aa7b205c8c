//! Typed access to the program's pinned maps.
//!
//! `Maps::open` opens the pins with their own file descriptors, so any thread or process (the
//! agent's reconciler and sweeper, a test, `bpftool`) can read and write the dataplane without
//! holding the loaded program object.

use std::{
    net::Ipv4Addr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{
    Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf,
    xdp::{DevMapHash, XdpMapError},
};
use elb_common::{
    Backend, BackendSet, Config, Counters, FlowEvent, FlowKey, FlowSlot, HalfOpenFix, Iface, Ipv4,
    Listener, ListenerKey, ListenerState, MAX_SET_BACKENDS, MAX_SNAT_ADDRS, Meta, SnatAddrs,
    TrafficStats, map_names,
};

use super::{
    DataplaneError,
    flows::{FlowTable, InsertError},
    sys,
};

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: large enough that a 2M-entry table takes a few
/// hundred calls, small enough (a few hundred KiB) to stay cache- and allocator-friendly.
const BATCH: usize = 8192;

/// Handles on every map of a loaded dataplane.
pub struct Maps {
    pin_root: PathBuf,
    listeners: HashMap<MapData, ListenerKey, Listener>,
    backend_sets: HashMap<MapData, u32, BackendSet>,
    backends: Array<MapData, Backend>,
    rr_cursors: Array<MapData, ListenerState>,
    half_open_fix: Array<MapData, HalfOpenFix>,
    flows: FlowTable,
    snat_addrs: HashMap<MapData, u32, SnatAddrs>,
    tx_ports: DevMapHash<MapData>,
    ifaces: HashMap<MapData, u32, Iface>,
    listener_ports: Array<MapData, u64>,
    config: Array<MapData, Config>,
    meta: Array<MapData, Meta>,
    /// `meta` as read at open: everything but `maps_generation` is fixed at creation.
    meta_at_open: Meta,
    counters: PerCpuArray<MapData, Counters>,
    listener_stats: PerCpuArray<MapData, TrafficStats>,
    backend_stats: PerCpuArray<MapData, TrafficStats>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("pin_root", &self.pin_root)
            .finish_non_exhaustive()
    }
}

fn open(root: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = root.join(name);
    let data = MapData::from_pin(&path).map_err(|source| DataplaneError::OpenPin {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| DataplaneError::OpenPin { path, source })
}

macro_rules! typed {
    ($root:expr, $name:expr) => {{
        let name = $name;
        open($root, name)?
            .try_into()
            .map_err(|source| DataplaneError::Map {
                map: name,
                op: "open",
                source,
            })?
    }};
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

fn sum_per_cpu<T: aya::Pod + Default + Copy>(
    values: &PerCpuValues<T>,
    add: impl Fn(&mut T, &T),
) -> T {
    let mut total = T::default();
    for v in values.iter() {
        add(&mut total, v);
    }
    total
}

fn add_traffic(total: &mut TrafficStats, v: &TrafficStats) {
    total.packets_in += v.packets_in;
    total.bytes_in += v.bytes_in;
    total.packets_out += v.packets_out;
    total.bytes_out += v.bytes_out;
    total.new_flows += v.new_flows;
}

/// Opens the `flow_events` ring buffer pinned under `pin_root` for reading. A ring buffer has
/// one reader: the agent (its read position lives in the map, so a restarted agent goes on
/// where the last one stopped).
pub fn flow_events(pin_root: &Path) -> Result<RingBuf<MapData>, DataplaneError> {
    Ok(typed!(pin_root, map_names::FLOW_EVENTS))
}

/// The [`FlowEvent`] in a ring buffer record (`None`: too short, from another build).
pub fn parse_flow_event(record: &[u8]) -> Option<FlowEvent> {
    if record.len() < size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: FlowEvent is plain old data (repr(C), every bit pattern valid) and the record
    // holds at least its size.
    Some(unsafe { record.as_ptr().cast::<FlowEvent>().read_unaligned() })
}

impl Maps {
    /// Opens every map pinned under `pin_root`.
    pub fn open(pin_root: impl AsRef<Path>) -> Result<Self, DataplaneError> {
        let root = pin_root.as_ref();
        let meta: Array<MapData, Meta> = typed!(root, map_names::META);
        let m = meta.get(&0, 0).map_err(map_err(map_names::META, "get"))?;
        Ok(Self {
            pin_root: root.to_path_buf(),
            listeners: typed!(root, map_names::LISTENERS),
            backend_sets: typed!(root, map_names::BACKEND_SETS),
            backends: typed!(root, map_names::BACKENDS),
            rr_cursors: typed!(root, map_names::RR_CURSORS),
            half_open_fix: typed!(root, map_names::HALF_OPEN_FIX),
            flows: FlowTable::open(root, &m)?,
            snat_addrs: typed!(root, map_names::SNAT_ADDRS),
            tx_ports: typed!(root, map_names::TX_PORTS),
            ifaces: typed!(root, map_names::IFACES),
            listener_ports: typed!(root, map_names::LISTENER_PORTS),
            config: typed!(root, map_names::CONFIG),
            meta,
            meta_at_open: m,
            counters: typed!(root, map_names::COUNTERS),
            listener_stats: typed!(root, map_names::LISTENER_STATS),
            backend_stats: typed!(root, map_names::BACKEND_STATS),
        })
    }

    /// Where the maps are pinned.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// The program's global settings.
    pub fn config(&self) -> Result<Config, DataplaneError> {
        self.config
            .get(&0, 0)
            .map_err(map_err(map_names::CONFIG, "get"))
    }

    /// Replaces the program's global settings.
    pub fn set_config(&mut self, config: Config) -> Result<(), DataplaneError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(map_names::CONFIG, "set"))
    }

    /// ABI version and sizes recorded when the maps were created.
    pub fn meta(&self) -> Result<Meta, DataplaneError> {
        self.meta
            .get(&0, 0)
            .map_err(map_err(map_names::META, "get"))
    }

    /// Starts a new generation of the maps the program copies per CPU (`listeners`,
    /// `backend_sets`, `snat_addrs`; see [`Meta::maps_generation`]): called after every change
    /// to one of them, so no CPU uses a copy made before it. A fresh random value, not an
    /// increment: two writers racing (the agent and `elb-servo` commands) cannot both write
    /// the same value, whatever order their writes land in.
    /// (One write, no read: the other fields of `meta` never change after creation.)
    fn changed(&mut self) -> Result<(), DataplaneError> {
        let meta = Meta {
            maps_generation: Meta::next_generation(rand::random()),
            ..self.meta_at_open
        };
        self.meta
            .set(0, meta, 0)
            .map_err(map_err(map_names::META, "set"))
    }

    /// Sets the SNAT source addresses used for flows leaving through `ifindex`.
    pub fn set_snat_addrs(
        &mut self,
        ifindex: u32,
        addrs: &[Ipv4Addr],
    ) -> Result<(), DataplaneError> {
        if addrs.is_empty() || addrs.len() > MAX_SNAT_ADDRS {
            return Err(DataplaneError::Invalid(format!(
                "an interface needs 1 to {MAX_SNAT_ADDRS} SNAT addresses, got {}",
                addrs.len()
            )));
        }
        let mut value = SnatAddrs {
            count: addrs.len() as u32,
            ..SnatAddrs::default()
        };
        for (slot, addr) in value.addrs.iter_mut().zip(addrs) {
            *slot = addr.octets();
        }
        self.snat_addrs
            .insert(ifindex, value, 0)
            .map_err(map_err(map_names::SNAT_ADDRS, "insert"))?;
        self.changed()
    }

    /// SNAT addresses per egress ifindex.
    pub fn snat_addrs(&self) -> Result<Vec<(u32, Vec<Ipv4Addr>)>, DataplaneError> {
        let mut out = Vec::new();
        for entry in self.snat_addrs.iter() {
            let (ifindex, v) = entry.map_err(map_err(map_names::SNAT_ADDRS, "iter"))?;
            let n = (v.count as usize).min(MAX_SNAT_ADDRS);
            out.push((
                ifindex,
                v.addrs[..n].iter().map(|a| Ipv4Addr::from(*a)).collect(),
            ));
        }
        Ok(out)
    }

    /// Removes the SNAT addresses of `ifindex`.
    pub fn remove_snat_addrs(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match self.snat_addrs.remove(&ifindex) {
            Err(e) if !is_not_found(&e) => Err(map_err(map_names::SNAT_ADDRS, "remove")(e)),
            _ => self.changed(),
        }
    }

    /// Allows the program to redirect packets out of `ifindex`, whose MTU is `mtu` (replies
    /// leaving through it above that get ICMP fragmentation needed; 0: not checked).
    pub fn add_tx_port(&mut self, ifindex: u32, mtu: u32) -> Result<(), DataplaneError> {
        self.ifaces
            .insert(ifindex, Iface { mtu, _pad: 0 }, 0)
            .map_err(map_err(map_names::IFACES, "insert"))?;
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| match e {
                XdpMapError::MapError(source) => map_err(map_names::TX_PORTS, "insert")(source),
                other => DataplaneError::Invalid(format!(
                    "adding ifindex {ifindex} to tx_ports: {other}"
                )),
            })
    }

    /// Stops redirects out of `ifindex`.
    pub fn remove_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        if let Err(e) = self.ifaces.remove(&ifindex)
            && !is_not_found(&e)
        {
            return Err(map_err(map_names::IFACES, "remove")(e));
        }
        match self.tx_ports.remove(ifindex) {
            Err(e) if !is_not_found(&e) => Err(map_err(map_names::TX_PORTS, "remove")(e)),
            _ => Ok(()),
        }
    }

    /// Adds or replaces a listener. Its `flags` choose what the program does with its
    /// packets: balance them (0), hand them to the servo's own engine
    /// ([`elb_common::LISTENER_F_LOCAL`]), or balance them with a PROXY protocol v1 header for
    /// the backends ([`elb_common::LISTENER_F_PROXY_V1`]). Its port is marked as a listener
    /// port, which SNAT then never allocates.
    pub fn upsert_listener(
        &mut self,
        key: ListenerKey,
        listener: Listener,
    ) -> Result<(), DataplaneError> {
        self.set_listener_port(key.port, true)?;
        self.listeners
            .insert(key, listener, 0)
            .map_err(map_err(map_names::LISTENERS, "insert"))?;
        self.changed()
    }

    /// Changes the flags of an existing listener (see [`Maps::upsert_listener`]).
    pub fn set_listener_flags(
        &mut self,
        key: &ListenerKey,
        flags: u32,
    ) -> Result<(), DataplaneError> {
        let mut l = self
            .listeners
            .get(key, 0)
            .map_err(map_err(map_names::LISTENERS, "get"))?;
        l.flags = flags;
        self.listeners
            .insert(*key, l, 0)
            .map_err(map_err(map_names::LISTENERS, "insert"))?;
        self.changed()
    }

    /// Removes a listener (its backend set stays until replaced or removed). Its port stays a
    /// listener port while another listener (on another VIP) uses it.
    pub fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), DataplaneError> {
        match self.listeners.remove(key) {
            Err(e) if !is_not_found(&e) => {
                return Err(map_err(map_names::LISTENERS, "remove")(e));
            }
            _ => {}
        }
        self.changed()?;
        let still_used = self.listeners()?.iter().any(|(k, _)| k.port == key.port);
        if !still_used {
            self.set_listener_port(key.port, false)?;
        }
        Ok(())
    }

    fn set_listener_port(&mut self, port: u16, used: bool) -> Result<(), DataplaneError> {
        let index = u32::from(port >> 6);
        let word = self
            .listener_ports
            .get(&index, 0)
            .map_err(map_err(map_names::LISTENER_PORTS, "get"))?;
        let bit = 1u64 << (port & 63);
        let new = if used { word | bit } else { word & !bit };
        if new != word {
            self.listener_ports
                .set(index, new, 0)
                .map_err(map_err(map_names::LISTENER_PORTS, "set"))?;
        }
        Ok(())
    }

    /// True if some listener uses `port` (SNAT never allocates it).
    pub fn is_listener_port(&self, port: u16) -> Result<bool, DataplaneError> {
        let word = self
            .listener_ports
            .get(&u32::from(port >> 6), 0)
            .map_err(map_err(map_names::LISTENER_PORTS, "get"))?;
        Ok(word & (1u64 << (port & 63)) != 0)
    }

    /// Every listener.
    pub fn listeners(&self) -> Result<Vec<(ListenerKey, Listener)>, DataplaneError> {
        self.listeners
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(map_names::LISTENERS, "iter"))
    }

    /// Writes backend `id`.
    pub fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DataplaneError> {
        self.backends
            .set(id, backend, 0)
            .map_err(map_err(map_names::BACKENDS, "set"))
    }

    /// Reads backend `id`.
    pub fn backend(&self, id: u32) -> Result<Backend, DataplaneError> {
        self.backends
            .get(&id, 0)
            .map_err(map_err(map_names::BACKENDS, "get"))
    }

    /// Every backend id ever used (state != 0), with its entry (one batched read of the
    /// array, not one system call per slot).
    pub fn backends(&self) -> Result<Vec<(u32, Backend)>, DataplaneError> {
        let all: Vec<(u32, Backend)> = sys::lookup_batch(self.backends.map().fd().as_fd(), BATCH)
            .map_err(|source| DataplaneError::Syscall {
            what: "BPF_MAP_LOOKUP_BATCH on backends",
            source,
        })?;
        Ok(all.into_iter().filter(|(_, b)| b.state != 0).collect())
    }

    /// Changes the state of backend `id` (active, draining, removed).
    pub fn set_backend_state(&mut self, id: u32, state: u8) -> Result<(), DataplaneError> {
        let mut b = self.backend(id)?;
        b.state = state;
        self.set_backend(id, b)
    }

    /// Replaces the set of backends that get new flows for `listener_id`, in one map update.
    pub fn replace_backend_set(
        &mut self,
        listener_id: u32,
        ids: &[u32],
    ) -> Result<(), DataplaneError> {
        if ids.len() > MAX_SET_BACKENDS {
            return Err(DataplaneError::Invalid(format!(
                "a listener can send new flows to at most {MAX_SET_BACKENDS} backends, got {}",
                ids.len()
            )));
        }
        let mut set = Box::new(BackendSet::EMPTY);
        set.count = ids.len() as u32;
        set.backends[..ids.len()].copy_from_slice(ids);
        self.backend_sets
            .insert(listener_id, *set, 0)
            .map_err(map_err(map_names::BACKEND_SETS, "insert"))?;
        self.changed()
    }

    /// The backends getting new flows for `listener_id`.
    pub fn backend_set(&self, listener_id: u32) -> Result<Vec<u32>, DataplaneError> {
        match self.backend_sets.get(&listener_id, 0) {
            Ok(set) => Ok(set.backends[..(set.count as usize).min(MAX_SET_BACKENDS)].to_vec()),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(map_err(map_names::BACKEND_SETS, "get")(e)),
        }
    }

    /// Removes the backend set of `listener_id`.
    pub fn remove_backend_set(&mut self, listener_id: u32) -> Result<(), DataplaneError> {
        match self.backend_sets.remove(&listener_id) {
            Err(e) if !is_not_found(&e) => Err(map_err(map_names::BACKEND_SETS, "remove")(e)),
            _ => self.changed(),
        }
    }

    /// Resets the round-robin cursor and the half-open count of `listener_id` (a reused
    /// listener id starts afresh).
    pub fn reset_cursor(&mut self, listener_id: u32) -> Result<(), DataplaneError> {
        self.rr_cursors
            .set(listener_id, ListenerState::default(), 0)
            .map_err(map_err(map_names::RR_CURSORS, "set"))?;
        self.half_open_fix
            .set(listener_id, HalfOpenFix::default(), 0)
            .map_err(map_err(map_names::HALF_OPEN_FIX, "set"))
    }

    /// The program's per-listener state (cursor, half-open flows counted).
    pub fn listener_state(&self, listener_id: u32) -> Result<ListenerState, DataplaneError> {
        self.rr_cursors
            .get(&listener_id, 0)
            .map_err(map_err(map_names::RR_CURSORS, "get"))
    }

    /// The sweep's half-open correction of `listener_id`.
    pub fn half_open_fix(&self, listener_id: u32) -> Result<u64, DataplaneError> {
        self.half_open_fix
            .get(&listener_id, 0)
            .map(|f| f.value)
            .map_err(map_err(map_names::HALF_OPEN_FIX, "get"))
    }

    /// Sets the half-open correction of `listener_id` (the sweep's: see [`HalfOpenFix`]).
    pub fn set_half_open_fix(
        &mut self,
        listener_id: u32,
        value: u64,
    ) -> Result<(), DataplaneError> {
        self.half_open_fix
            .set(listener_id, HalfOpenFix { value }, 0)
            .map_err(map_err(map_names::HALF_OPEN_FIX, "set"))
    }

    /// Decision counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let values = self
            .counters
            .get(&0, 0)
            .map_err(map_err(map_names::COUNTERS, "get"))?;
        Ok(sum_per_cpu(&values, Counters::accumulate))
    }

    /// Traffic of `listener_id` summed over CPUs.
    pub fn listener_stats(&self, listener_id: u32) -> Result<TrafficStats, DataplaneError> {
        let values = self
            .listener_stats
            .get(&listener_id, 0)
            .map_err(map_err(map_names::LISTENER_STATS, "get"))?;
        Ok(sum_per_cpu(&values, add_traffic))
    }

    /// Traffic of `backend_id` summed over CPUs.
    pub fn backend_stats(&self, backend_id: u32) -> Result<TrafficStats, DataplaneError> {
        let values = self
            .backend_stats
            .get(&backend_id, 0)
            .map_err(map_err(map_names::BACKEND_STATS, "get"))?;
        Ok(sum_per_cpu(&values, add_traffic))
    }

    fn zero_per_cpu(
        map: &mut PerCpuArray<MapData, TrafficStats>,
        name: &'static str,
        id: u32,
    ) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| DataplaneError::Invalid(format!("nr_cpus: {e}")))?;
        let zeros = PerCpuValues::try_from(vec![TrafficStats::default(); cpus])
            .map_err(|e| DataplaneError::Invalid(format!("per-CPU values: {e}")))?;
        map.set(id, zeros, 0).map_err(map_err(name, "set"))
    }

    /// Zeroes the traffic of `listener_id` (before the id is given to a new listener).
    pub fn reset_listener_stats(&mut self, listener_id: u32) -> Result<(), DataplaneError> {
        Self::zero_per_cpu(
            &mut self.listener_stats,
            map_names::LISTENER_STATS,
            listener_id,
        )
    }

    /// Zeroes the traffic of `backend_id` (before the id is given to a new backend).
    pub fn reset_backend_stats(&mut self, backend_id: u32) -> Result<(), DataplaneError> {
        Self::zero_per_cpu(
            &mut self.backend_stats,
            map_names::BACKEND_STATS,
            backend_id,
        )
    }

    /// Kernel memory charged to each map (`memlock` in `/proc/self/fdinfo`), in bytes.
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        use std::os::fd::AsRawFd as _;
        let fds = [
            (
                map_names::LISTENERS,
                self.listeners.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::BACKEND_SETS,
                self.backend_sets.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::BACKENDS,
                self.backends.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::RR_CURSORS,
                self.rr_cursors.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::SNAT_ADDRS,
                self.snat_addrs.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::COUNTERS,
                self.counters.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::LISTENER_STATS,
                self.listener_stats.map().fd().as_fd().as_raw_fd(),
            ),
            (
                map_names::BACKEND_STATS,
                self.backend_stats.map().fd().as_fd().as_raw_fd(),
            ),
        ];
        let conntrack = (
            map_names::CONNTRACK,
            self.flows.len() as u64 * size_of::<FlowSlot>() as u64,
        );
        fds.into_iter()
            .map(|(name, fd)| {
                let info =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
                let bytes = info
                    .lines()
                    .find_map(|l| l.strip_prefix("memlock:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                (name, bytes)
            })
            .chain(std::iter::once(conntrack))
            .collect()
    }

    /// The flow table (memory-mapped).
    pub fn flow_table(&self) -> &FlowTable {
        &self.flows
    }

    /// Every flow half in the table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowSlot)>, DataplaneError> {
        Ok(self
            .flows
            .live()
            .into_iter()
            .map(|(_, s)| (s.key, s))
            .collect())
    }

    /// The flow half stored under `key`.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowSlot>, DataplaneError> {
        Ok(self.flows.lookup(key).map(|(_, s)| s))
    }

    /// Inserts a flow half (tests and benchmarks prepare flows this way; the agent never does).
    pub fn insert_flow(&mut self, slot: &FlowSlot) -> Result<(), DataplaneError> {
        self.flows.insert(slot).map(|_| ()).map_err(|e| {
            DataplaneError::Invalid(format!(
                "inserting flow {:?}: {}",
                slot.key,
                match e {
                    InsertError::Exists => "the key exists",
                    InsertError::Full => "no free slot in its probe window",
                }
            ))
        })
    }

    /// Deletes the flow halves stored under `keys`; returns how many existed.
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<usize, DataplaneError> {
        Ok(keys
            .iter()
            .filter(|k| {
                self.flows
                    .lookup(k)
                    .is_some_and(|(i, s)| self.flows.remove(i, s.state.ident))
            })
            .count())
    }
}

/// `Ipv4Addr` <-> map address conversions.
pub fn ipv4(addr: Ipv4) -> Ipv4Addr {
    Ipv4Addr::from(addr)
}
