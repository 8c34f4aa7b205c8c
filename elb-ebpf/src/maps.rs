//! Every map of the program. All are BTF maps so `bpftool map dump` prints named fields; the
//! agent pins each under the pin root by its name.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    btf_maps::{Array, DevMapHash, HashMap, LpmTrie, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use elb_common::{
    Backend, BackendSet, Config, Counters, DEFAULT_CONNTRACK_ENTRIES, EVENT_RING_BYTES,
    FLOW_LOCK_STRIPES, FlowEvent, FlowKey, FlowSlot, HalfOpenFix, Iface, Ipv4, Listener,
    ListenerKey, ListenerState, MAX_BACKENDS, MAX_IFACES, MAX_LISTENERS, Meta, NextHop, SnatAddrs,
    StageArgs, TrafficStats,
    sg::{SG_ALLOW_ENTRIES, SgSource},
};

const LISTENERS_N: usize = MAX_LISTENERS as usize;
const BACKENDS_N: usize = MAX_BACKENDS as usize;
const IFACES_N: usize = MAX_IFACES as usize;
const CONNTRACK_N: usize = DEFAULT_CONNTRACK_ENTRIES as usize;
const MMAPABLE: usize = BPF_F_MMAPABLE as usize;

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

/// Round-robin cursor and half-open flows of each listener id (atomics).
#[btf_map(name = "rr_cursors")]
pub static RR_CURSORS: Array<ListenerState, LISTENERS_N> = Array::new();

/// The sweep's correction of each listener's half-open count (written by userspace only, so
/// its whole-value writes never clobber the program's atomics).
#[btf_map(name = "half_open_fix")]
pub static HALF_OPEN_FIX: Array<HalfOpenFix, LISTENERS_N> = Array::new();

/// The flow table (two slots per flow), sized by the agent at creation. Memory-mappable: the
/// agent's sweep reads it and changes slots with the same compare-and-swap as the program.
#[btf_map(name = "conntrack")]
pub static CONNTRACK: Array<FlowSlot, CONNTRACK_N, MMAPABLE> = Array::new();

/// The flow table's insert locks (`elb_common::flow_lock`; the sweep takes them too, to
/// compact).
#[btf_map(name = "conntrack_locks")]
pub static CONNTRACK_LOCKS: Array<u32, { FLOW_LOCK_STRIPES as usize }, MMAPABLE> = Array::new();

/// SNAT source addresses per egress ifindex.
#[btf_map(name = "snat_addrs")]
pub static SNAT_ADDRS: HashMap<u32, SnatAddrs, IFACES_N> = HashMap::new();

/// Interfaces the program may redirect to, keyed by ifindex.
#[btf_map(name = "tx_ports")]
pub static TX_PORTS: DevMapHash<IFACES_N> = DevMapHash::new();

/// MTU of each attached interface.
#[btf_map(name = "ifaces")]
pub static IFACES: HashMap<u32, Iface, IFACES_N> = HashMap::new();

/// Ports used by some listener, one bit each: SNAT never allocates them, so a listener port
/// inside the SNAT range is never mistaken for a reply.
#[btf_map(name = "listener_ports")]
pub static LISTENER_PORTS: Array<u64, 1024> = Array::new();

/// Flow events for the agent (starts, and ends the program sees: see `events`), written only
/// for flows of listeners with `LISTENER_F_EVENTS` whose client completed the handshake.
#[btf_map(name = "flow_events")]
pub static FLOW_EVENTS: RingBuf<FlowEvent, { EVENT_RING_BYTES as usize }> = RingBuf::new();

/// Global settings (one entry).
#[btf_map(name = "config")]
pub static CONFIG: Array<Config, 1> = Array::new();

/// ABI version, table size and secrets, fixed when the maps are created (one entry).
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

/// Next hop towards each backend, cached by the program (per CPU: no CPU ever reads another's
/// half-written entry), refreshed by a FIB lookup when older than HOP_REFRESH_JIFFIES.
#[btf_map(name = "backend_routes")]
pub static BACKEND_ROUTES: PerCpuArray<NextHop, BACKENDS_N> = PerCpuArray::new();

/// Security groups' allow lists: `{vip, port, client block}` -> allowed, consulted for SYNs to
/// listeners with `LISTENER_F_SECURITY_GROUPS` (the `sg` module).
#[btf_map(name = "sg_allow")]
pub static SG_ALLOW: LpmTrie<SgSource, u32, { SG_ALLOW_ENTRIES as usize }> = LpmTrie::new();

/// A new flow being opened: both halves (the reverse one without its SNAT tuple yet) and how
/// to finish it. Written by the stage that plans the flow, read by `elb_open`.
#[repr(C)]
pub struct Scratch {
    /// Reverse half, then forward half.
    pub slots: [FlowSlot; 2],
    /// The rest of the plan.
    pub plan: Plan,
    /// What `elb` predicted for the SYN at hand.
    pub hint: Hint,
    /// The last ingress interface a flow was opened from and its MTU (`ifindex`, `mtu`,
    /// `updated` used; see `syn::ingress_mtu`).
    pub ingress: NextHop,
    /// Copies of listeners and the start of their backend sets (`cache`).
    pub listeners: [ListenerCopy; LISTENER_COPIES],
    /// A copy of one interface's SNAT addresses (`cache`).
    pub snat: SnatCopy,
}

/// How many listeners each CPU keeps a copy of (a power of two; a listener's place is chosen
/// by its key).
pub const LISTENER_COPIES: usize = 4;
/// How many backend ids of a listener's set its copy holds (larger sets are read from the map).
pub const SET_COPY: usize = 16;

/// This CPU's copy of a listener and of the start of its backend set, made at `generation`
/// (`Meta::maps_generation`; 0: none).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListenerCopy {
    pub generation: u64,
    pub key: ListenerKey,
    pub listener: Listener,
    /// The set's `count`.
    pub set_count: u32,
    /// 1: `set` holds the whole set (it had at most [`SET_COPY`] backends).
    pub set_whole: u32,
    pub set: [u32; SET_COPY],
}

/// This CPU's copy of the SNAT addresses of interface `ifindex`, made at `generation`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SnatCopy {
    pub generation: u64,
    pub ifindex: u32,
    /// Explicit padding.
    pub _pad: u32,
    pub addrs: SnatAddrs,
}

/// What `elb` predicted for the SYN at hand while it started reading the new flow's table slots
/// (`syn::touch_new_flow`): the round-robin turn it saw and the backend of that turn. When the
/// turn `elb_plan` takes is that one and the packet is the one the hint was made for, the plan
/// uses it instead of finding the backend again. The maps may have changed in between; the
/// flow is then opened as if the SYN had come a moment earlier, as it could have.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hint {
    /// The round-robin cursor `elb` read.
    pub cursor: u64,
    /// The SYN's client address and port (the packet the hint belongs to).
    pub src: Ipv4,
    pub sport: u16,
    /// 1: made for the SYN at hand; cleared once used and when a SYN gets none.
    pub valid: u16,
    /// The listener.
    pub listener_id: u32,
    /// The backend of turn `cursor`.
    pub backend_id: u32,
}

/// How to finish opening a flow (see [`Scratch`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Plan {
    /// Next hop towards the backend (its interface decides the SNAT addresses).
    pub hop: NextHop,
    /// 1: the neighbour is unresolved (the kernel forwards the SYN).
    pub unresolved: u32,
    /// 1: opened from a SYN cookie.
    pub cookie_flow: u32,
    /// A cookie flow's initial sequence number towards the client (the cookie).
    pub cookie: u32,
    /// A cookie flow's client window field and shift.
    pub client_win: u16,
    pub wscale: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Where the SNAT port walk starts.
    pub pick: u32,
    /// Which SNAT address is tried first.
    pub first_addr: u32,
    /// The closed flow whose client port this one reuses (identity 0: none).
    pub replacing_index: u32,
    pub replacing_ident: u32,
}

/// Scratch space for opening a flow (the BPF stack holds 512 bytes), per CPU.
#[btf_map(name = "scratch")]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// The program's stages, tail-called by `elb` (see `elb_common::stages`).
#[btf_map(name = "stages")]
pub static STAGES: ProgramArray<8> = ProgramArray::new();

/// What `elb` hands the stage it tail-calls (per CPU).
#[btf_map(name = "stage_args")]
pub static STAGE_ARGS: PerCpuArray<StageArgs, 1> = PerCpuArray::new();

/// How `elb_sack` finishes a packet (per CPU, written by the stage that tail-calls it).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Finish {
    /// Where to send it.
    pub hop: NextHop,
    /// Added to each SACK edge.
    pub delta: u32,
    /// `FINISH_*`.
    pub verdict: u32,
    /// Subtracted from the MSS option (a PROXY flow's SYN-ACK; 0: none).
    pub mss_sub: u32,
    /// `elb_proxy`: the connection as the client addressed it (the header's contents).
    pub client: FlowKey,
    /// `elb_proxy`: the header's length, as stored in the flow.
    pub proxy_len: u32,
}

/// `Finish::verdict`: transmit towards `hop`.
pub const FINISH_SEND: u32 = 0;
/// `Finish::verdict`: hand to the kernel (neighbour unresolved).
pub const FINISH_PASS_NO_NEIGH: u32 = 1;
/// `Finish::verdict`: hand to the kernel (it fragments).
pub const FINISH_PASS_FRAGMENT: u32 = 2;

/// The `Finish` of this CPU's packet.
#[btf_map(name = "finish")]
pub static FINISH: PerCpuArray<Finish, 1> = PerCpuArray::new();

/// `elb_proxy`'s buffers (per CPU: its stack has no room for them).
#[repr(C)]
pub struct ProxyBuf {
    /// The PROXY protocol header being inserted, zero past its end.
    pub text: [u8; elb_common::proxy_v1::BUF],
    /// The packet's Ethernet, IPv4 and TCP headers, on their way to the frame's new start.
    pub headers: [u8; 128],
}

/// `elb_proxy`'s buffers.
#[btf_map(name = "proxy_buf")]
pub static PROXY_BUF: PerCpuArray<ProxyBuf, 1> = PerCpuArray::new();
