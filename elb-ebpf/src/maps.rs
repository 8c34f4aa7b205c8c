//! Every map of the program. All are BTF maps so `bpftool map dump` prints named fields; the
//! agent pins each under the pin root by its name.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use elb_common::{
    Backend, BackendSet, Config, Counters, DEFAULT_CONNTRACK_ENTRIES, Flow, FlowKey,
    Listener, ListenerKey, MAX_BACKENDS, MAX_IFACES, MAX_LISTENERS, Meta, NextHop, SnatAddrs,
    TrafficStats,
};

const LISTENERS_N: usize = MAX_LISTENERS as usize;
const BACKENDS_N: usize = MAX_BACKENDS as usize;
const IFACES_N: usize = MAX_IFACES as usize;
const CONNTRACK_N: usize = DEFAULT_CONNTRACK_ENTRIES as usize;

/// Listeners by `{vip, port, proto}`.
#[btf_map(name = "listeners")]
pub static LISTENERS: HashMap<ListenerKey, Listener, LISTENERS_N> = HashMap::new();

/// Backend set of each listener id. Not preallocated: sets are 4 KiB each and most listener ids
/// are unused; an update swaps the whole element under RCU, so readers see old or new, never a mix.
#[btf_map(name = "backend_sets")]
pub static BACKEND_SETS: HashMap<u32, BackendSet, LISTENERS_N, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// Backends by id.
#[btf_map(name = "backends")]
pub static BACKENDS: Array<Backend, BACKENDS_N> = Array::new();

/// Round-robin cursor of each listener id, advanced with an atomic fetch-and-add per new flow.
#[btf_map(name = "rr_cursors")]
pub static RR_CURSORS: Array<u64, LISTENERS_N> = Array::new();

/// Global (not per-CPU) LRU conntrack: a reply may arrive on any CPU. Two entries per flow.
#[btf_map(name = "conntrack")]
pub static CONNTRACK: LruHashMap<FlowKey, Flow, CONNTRACK_N> = LruHashMap::new();

/// SNAT source addresses per egress ifindex.
#[btf_map(name = "snat_addrs")]
pub static SNAT_ADDRS: HashMap<u32, SnatAddrs, IFACES_N> = HashMap::new();

/// Interfaces the program may redirect to, keyed by ifindex.
#[btf_map(name = "tx_ports")]
pub static TX_PORTS: DevMapHash<IFACES_N> = DevMapHash::new();

/// Global settings (one entry).
#[btf_map(name = "config")]
pub static CONFIG: Array<Config, 1> = Array::new();

/// ABI version and sizes the maps were created with (one entry, written by the agent).
#[btf_map(name = "meta")]
pub static META: Array<Meta, 1> = Array::new();

/// Decision counters (one per-CPU entry).
#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();

/// Traffic per listener id.
#[btf_map(name = "listener_stats")]
pub static LISTENER_STATS: PerCpuArray<TrafficStats, LISTENERS_N> = PerCpuArray::new();

/// Traffic per backend id.
#[btf_map(name = "backend_stats")]
pub static BACKEND_STATS: PerCpuArray<TrafficStats, BACKENDS_N> = PerCpuArray::new();

/// Next hop towards each backend, cached by the program for new flows (refreshed by a FIB
/// lookup when older than ROUTE_CACHE_NS).
#[btf_map(name = "backend_routes")]
pub static BACKEND_ROUTES: Array<NextHop, BACKENDS_N> = Array::new();
