//! The map ABI shared by the XDP program (`elb-ebpf`) and userspace (`elb-userspace`).
//!
//! One source of truth: every map key and value is `#[repr(C)]` with explicit padding, no
//! `bool`/`Option`/enums, and a size assertion, so the kernel, the program and the agent agree
//! byte for byte. Addresses are stored as `[u8; 4]` in network order (so `bpftool` prints them as
//! `[198,18,0,1]`); ports are stored in host order (so `bpftool` prints `80`, not `20480`).
#![no_std]

pub mod csum;
pub mod hash;
pub mod proxy_v1;
pub mod sg;

/// Bumped whenever a map key or value layout changes. The agent refuses to reuse pinned maps that
/// were created by a different ABI version (they would be misread); `--reset` starts fresh.
pub const ABI_VERSION: u32 = 10;

/// An IPv4 address in network byte order, as it appears on the wire.
pub type Ipv4 = [u8; 4];

/// Largest listener id + 1 (listener ids index the cursor and per-listener stats arrays).
pub const MAX_LISTENERS: u32 = 4096;
/// Largest backend id + 1 (backend ids index the backends and per-backend stats arrays).
pub const MAX_BACKENDS: u32 = 16384;
/// Most backends one listener can send new flows to at once (ELB allows 1,000 instances per LB).
pub const MAX_SET_BACKENDS: usize = 1024;
/// Most SNAT source addresses per egress interface.
pub const MAX_SNAT_ADDRS: usize = 8;
/// Most interfaces the program forwards between (devmap and SNAT address map size).
pub const MAX_IFACES: u32 = 64;
/// Default size of the flow table in slots (rounded up to a power of two; two slots per flow).
/// Each slot is 128 bytes, so the default takes 128 MiB. Inserts start to fail (counted as
/// `drop_conntrack_full`) when a slot's probe window is full, which becomes likely above about
/// 75 % occupancy: the default holds about 390,000 flows. A closed flow keeps its slots about
/// 70 s (close grace, then the TIME_WAIT hold of its SNAT tuple), so the default sustains
/// roughly 5,000 new connections per second of churn.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 1 << 20;
/// Slots a key may sit away from its home slot in the flow table (linear probing).
pub const FLOW_PROBES: u32 = 32;
/// Slots per insert lock of the flow table. An insert holds the lock of its key's home block;
/// a key's probe window (FLOW_PROBES slots from its home) reaches at most into the next block,
/// so the sweep compacting a block holds its lock and the previous block's.
pub const FLOW_LOCK_SLOTS: u32 = 32;
const _: () = assert!(FLOW_LOCK_SLOTS >= FLOW_PROBES && FLOW_LOCK_SLOTS.is_power_of_two());
/// Insert locks of the flow table (`conntrack_locks`): block `b` of [`FLOW_LOCK_SLOTS`] slots
/// is guarded by lock [`flow_lock`]`(b)`, so many blocks share a lock. Few enough that the
/// locks stay in cache (4 KiB): one lock per block took a cache miss per insert in a large
/// table, as costly as the slot's own. Whoever takes two takes them in increasing lock order.
pub const FLOW_LOCK_STRIPES: u32 = 1024;
const _: () = assert!(FLOW_LOCK_STRIPES.is_power_of_two());

/// The insert lock guarding block `block` of the flow table (see [`FLOW_LOCK_STRIPES`]).
#[inline(always)]
pub const fn flow_lock(block: u32) -> u32 {
    block & (FLOW_LOCK_STRIPES - 1)
}
/// How many SNAT ports the program tries for one new flow before giving up.
pub const SNAT_TRIES: u32 = 16;
/// Default number of half-open flows (SYN forwarded, handshake not completed by the client) a
/// listener may have before its new SYNs are answered with SYN cookies instead of state.
pub const DEFAULT_SYN_BACKLOG: u32 = 1024;

/// The program keeps time in jiffies (`bpf_jiffies64`, a plain load: a clock read costs
/// 15-30 ns here), truncated to 32 bits (wraps after 49 days at 1000 Hz; every comparison is
/// of differences). `last seen` is refreshed at most this often (a write per packet would
/// bounce the flow's cache line between CPUs).
pub const SEEN_REFRESH_JIFFIES: u32 = 128;
/// How long a cached next hop towards a backend is trusted before the route is looked up
/// again (128 jiffies: 0.13 s at 1000 Hz, 0.5 s at 250 Hz, 1.3 s at 100 Hz).
pub const HOP_REFRESH_JIFFIES: u32 = 128;
/// A half's remembered ACK is refreshed when the sender's ACK moved this far past it, so RST
/// validation knows the receiver's expectation to within this many bytes.
pub const ACK_TRACK_STEP: u32 = 1 << 16;
/// A RST is in window when its sequence number lies this far at most past the receiver's last
/// ACK (RFC 5961 checks the receive window; a middlebox does not know it exactly).
pub const RST_WINDOW: u32 = 1 << 24;
/// SYN cookies carry a time slot of `jiffies >> COOKIE_SLOT_SHIFT` (16 s at 1000 Hz, 65 s at
/// 250 Hz); a cookie is accepted in its slot and the next.
pub const COOKIE_SLOT_SHIFT: u32 = 14;
/// The window scale the servo announces in its SYN cookie SYN-ACKs (when the client offers
/// window scaling); the backend's own shift is translated to it.
pub const SYNPROXY_WSCALE: u8 = 7;
/// The MSS the servo announces in its SYN cookie SYN-ACKs (at most; the client's if smaller).
pub const SYNPROXY_MSS: u16 = 1460;
/// A SYN proxy flow whose backend has not answered sends its SYN again when the client
/// retransmits its first segment, once the flow is this old (jiffies: 25-100 ms); a client
/// sending its first data right behind its handshake ACK does not double the SYN.
pub const SYNPROXY_RESEND_JIFFIES: u32 = 25;
/// The MSS values a SYN cookie can encode (3 bits); the largest not above the client's is used.
pub const COOKIE_MSS: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460];
/// Window shift value meaning "no window scaling" (in cookies and flows).
pub const WSCALE_NONE: u8 = 15;

/// Flow lifetimes the agent's sweep applies, in seconds.
pub mod lifetimes {
    /// After both FINs or an accepted RST, the flow keeps forwarding stragglers (last ACK,
    /// retransmitted FINs, a RST the endpoint rejected) this long; then the forward half goes.
    pub const CLOSE_GRACE_S: u64 = 10;
    /// A closed flow's SNAT tuple stays reserved this long: the backend may hold the tuple in
    /// TIME_WAIT (60 s on Linux) and would reject a new SYN on it (PAWS).
    pub const TIME_WAIT_HOLD_S: u64 = 60;
    /// A flow whose client never completed the handshake (spoofed SYNs, most likely) is removed
    /// after this long, freeing its listener's SYN backlog.
    pub const HALF_OPEN_S: u64 = 5;
}

/// Names of the maps, as pinned under the pin root (`/sys/fs/bpf/elb/<name>`).
pub mod map_names {
    /// [`crate::ListenerKey`] -> [`crate::Listener`].
    pub const LISTENERS: &str = "listeners";
    /// listener id -> [`crate::BackendSet`].
    pub const BACKEND_SETS: &str = "backend_sets";
    /// backend id -> [`crate::Backend`].
    pub const BACKENDS: &str = "backends";
    /// listener id -> [`crate::ListenerState`] (round-robin cursor, half-open flows).
    pub const RR_CURSORS: &str = "rr_cursors";
    /// listener id -> half-open correction written by the sweep.
    pub const HALF_OPEN_FIX: &str = "half_open_fix";
    /// The flow table: [`crate::FlowSlot`]s, forward and reverse halves, found by a keyed hash.
    pub const CONNTRACK: &str = "conntrack";
    /// One insert lock (u32) per [`crate::FLOW_LOCK_SLOTS`] slots of the flow table.
    pub const CONNTRACK_LOCKS: &str = "conntrack_locks";
    /// egress ifindex -> [`crate::SnatAddrs`].
    pub const SNAT_ADDRS: &str = "snat_addrs";
    /// ifindex -> ifindex, the interfaces the program may redirect to.
    pub const TX_PORTS: &str = "tx_ports";
    /// ifindex -> [`crate::Iface`], the attached interfaces' MTUs.
    pub const IFACES: &str = "ifaces";
    /// Ports that some listener uses, one bit each (SNAT never allocates them).
    pub const LISTENER_PORTS: &str = "listener_ports";
    /// The single [`crate::Config`] entry.
    pub const CONFIG: &str = "config";
    /// Ring buffer of [`crate::FlowEvent`]s ([`crate::EVENT_RING_BYTES`]): flow starts,
    /// and ends the program sees itself, for the agent's access logs.
    pub const FLOW_EVENTS: &str = "flow_events";
    /// The single [`crate::Meta`] entry.
    pub const META: &str = "meta";
    /// Per-CPU [`crate::Counters`].
    pub const COUNTERS: &str = "counters";
    /// Per-CPU [`crate::TrafficStats`] per listener id.
    pub const LISTENER_STATS: &str = "listener_stats";
    /// Per-CPU [`crate::TrafficStats`] per backend id.
    pub const BACKEND_STATS: &str = "backend_stats";
    /// Per-CPU backend id -> [`crate::NextHop`], written by the program.
    pub const BACKEND_ROUTES: &str = "backend_routes";
    /// `Key<`[`crate::sg::SgSource`]`>` -> u32: the security groups' allow lists (LPM trie).
    pub const SG_ALLOW: &str = "sg_allow";

    /// The program's stages (tail calls): `crate::STAGE_*` -> program.
    pub const STAGES: &str = "stages";
    /// Per-CPU: what the main program hands the stage it tail-calls.
    pub const STAGE_ARGS: &str = "stage_args";
    /// Per-CPU: a new flow's plan, between the stages that open it.
    pub const SCRATCH: &str = "scratch";
    /// Per-CPU: how `elb_sack` finishes a translated packet.
    pub const FINISH: &str = "finish";

    /// Every map, in the order the agent checks and pins them. The per-CPU hand-over maps
    /// of the stages are pinned too: a new loader fills the pinned `stages` array before it
    /// swaps its main program in, so for that moment the old main program tail-calls the new
    /// stages, and both must read the same arguments (their layouts change only with
    /// [`crate::ABI_VERSION`]).
    pub const ALL: [&str; 23] = [
        LISTENERS,
        BACKEND_SETS,
        BACKENDS,
        RR_CURSORS,
        HALF_OPEN_FIX,
        CONNTRACK,
        CONNTRACK_LOCKS,
        SNAT_ADDRS,
        TX_PORTS,
        IFACES,
        LISTENER_PORTS,
        CONFIG,
        META,
        COUNTERS,
        LISTENER_STATS,
        BACKEND_STATS,
        BACKEND_ROUTES,
        SG_ALLOW,
        STAGES,
        STAGE_ARGS,
        SCRATCH,
        FINISH,
        FLOW_EVENTS,
    ];
}

/// The program's stages: `elb` tail-calls them (each gets a stack of its own, and the verifier
/// checks each on its own), in the `stages` program array, which the loader fills.
pub mod stages {
    /// Slot of `elb_syn`: a SYN to a listener (state, or a SYN cookie).
    pub const SYN: u32 = 0;
    /// Slot of `elb_cookie_ack`: an ACK to a listener without a flow (a cookie's handshake).
    pub const COOKIE_ACK: u32 = 1;
    /// Slot of `elb_xlate`: a packet of a flow whose sequence numbers are translated (SYN
    /// proxy, PROXY protocol).
    pub const XLATE: u32 = 2;
    /// Slot of `elb_plan`: a new flow's backend, next hop and both halves but the SNAT tuple.
    pub const PLAN: u32 = 3;
    /// Slot of `elb_open`: the end of a new flow (SNAT tuple, inserts, forward).
    pub const OPEN: u32 = 4;
    /// Slot of `elb_sack`: the SACK edges of a translated packet (and the MSS of a PROXY
    /// flow's SYN-ACK), then its transmission.
    pub const SACK: u32 = 5;
    /// Slot of `elb_proxy`: inserts the PROXY protocol v1 header into a client's first data
    /// segment, then sends it.
    pub const PROXY: u32 = 6;
    /// Slot of `elb_resend`: the SYN of a SYN proxy flow again, when the client retransmits
    /// its first segment and the backend has not answered.
    pub const RESEND: u32 = 7;
    /// Program name of each slot, in slot order.
    pub const PROGRAMS: [&str; 8] = [
        "elb_syn",
        "elb_cookie_ack",
        "elb_xlate",
        "elb_plan",
        "elb_open",
        "elb_sack",
        "elb_proxy",
        "elb_resend",
    ];
}

/// What `elb` hands a stage besides the packet (a per-CPU scratch entry: a tail call keeps the
/// CPU and the packet, nothing else).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StageArgs {
    /// Index of the flow table slot concerned (if any).
    pub index: u32,
    /// Identity of its flow (0: none).
    pub ident: u32,
    /// The listener concerned (new flows): its id and flags, so no stage looks it up again.
    pub listener_id: u32,
    pub listener_flags: u32,
}
const _: () = assert!(size_of::<StageArgs>() == 16);

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;

/// Key of the listeners map: a VIP, a port and a protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    /// The virtual IP clients connect to.
    pub vip: Ipv4,
    /// LoadBalancerPort, host order.
    pub port: u16,
    /// IP protocol ([`PROTO_TCP`]).
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}
const _: () = assert!(size_of::<ListenerKey>() == 8);

/// A listener: where its backend set and statistics live.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Listener {
    /// Index into `backend_sets`, `rr_cursors` and `listener_stats` (< [`MAX_LISTENERS`]).
    pub id: u32,
    /// `LISTENER_F_*` flags.
    pub flags: u32,
    /// ConnectionSettings.IdleTimeout in seconds (enforced by the agent's sweep).
    pub idle_timeout_s: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<Listener>() == 16);

/// Listener flag: the servo's own TLS/HTTP engine serves this listener. The program hands its
/// packets to the local stack (XDP_PASS, counted as `pass_local`) instead of balancing them.
pub const LISTENER_F_LOCAL: u32 = 1 << 0;
/// Listener flag: its backends expect a PROXY protocol v1 header (`PROXY TCP4 <client> <vip>
/// <cport> <vport>\r\n`) before the client's first byte; the program inserts it into the
/// client's first data segment and translates sequence numbers for the rest of the flow.
pub const LISTENER_F_PROXY_V1: u32 = 1 << 1;
/// Listener flag: its flows report events ([`FlowEvent`], for access logs): the program counts
/// each flow's packets and payload bytes in the flow's slots and writes a start event when the
/// client completes the handshake. (`1 << 2` is `sg::LISTENER_F_SECURITY_GROUPS`.)
pub const LISTENER_F_EVENTS: u32 = 1 << 3;

/// Per-listener state the program keeps (one array entry per listener id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ListenerState {
    /// Round-robin cursor, advanced with an atomic fetch-and-add per new flow.
    pub cursor: u64,
    /// Half-open flows created (atomic add) minus those completed (atomic sub); the sweep's
    /// [`HalfOpenFix`] removes those that expired.
    pub half_open: u64,
}
const _: () = assert!(size_of::<ListenerState>() == 16);

/// Written by the sweep only: `ListenerState::half_open - value` is the listener's current
/// number of half-open flows (the sweep counts them in the table and sets this to the excess).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HalfOpenFix {
    /// Half-open flows the program counted that are gone.
    pub value: u64,
}
const _: () = assert!(size_of::<HalfOpenFix>() == 8);

/// The backends currently accepting new flows for one listener. Replaced as a whole with one
/// map update, so the program never sees a half-written list.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BackendSet {
    /// How many entries of `backends` are valid.
    pub count: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// Backend ids (indices into `backends`).
    pub backends: [u32; MAX_SET_BACKENDS],
}
const _: () = assert!(size_of::<BackendSet>() == 8 + 4 * MAX_SET_BACKENDS);
// The program masks indices with `N - 1` for the verifier.
const _: () = assert!(MAX_SET_BACKENDS.is_power_of_two() && MAX_SNAT_ADDRS.is_power_of_two());

impl BackendSet {
    /// An empty set.
    pub const EMPTY: Self = Self {
        count: 0,
        _pad: 0,
        backends: [0; MAX_SET_BACKENDS],
    };
}

/// Backend accepts new flows.
pub const BACKEND_ACTIVE: u8 = 1;
/// Backend keeps its existing flows but gets no new ones (ConnectionDraining).
pub const BACKEND_DRAINING: u8 = 2;
/// Backend is gone: packets of its flows are not forwarded (client side gets a TCP reset).
pub const BACKEND_REMOVED: u8 = 3;

/// One backend: an instance address and port behind one listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Instance address.
    pub addr: Ipv4,
    /// InstancePort, host order.
    pub port: u16,
    /// `BACKEND_ACTIVE`, `BACKEND_DRAINING` or `BACKEND_REMOVED` (0 = never used).
    pub state: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
    /// Bumped each time the id is given to a new backend, so flows of the id's previous owner
    /// are recognised as belonging to a removed backend.
    pub generation: u32,
    /// The listener this backend serves.
    pub listener_id: u32,
}
const _: () = assert!(size_of::<Backend>() == 16);

/// Conntrack key: the tuple of a packet as it arrives at the servo.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    /// Source address.
    pub src: Ipv4,
    /// Destination address.
    pub dst: Ipv4,
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding, always zero (two fields, not an array: the BPF target builds a
    /// zeroed array with a call to a byte-by-byte `memset`).
    pub _pad: u8,
    pub _pad1: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 16);

/// Flow flag: this slot is the reverse (backend -> servo) half of a flow.
pub const FLOW_F_REPLY: u32 = 1 << 0;
/// Flow flag: the client sent a FIN.
pub const FLOW_F_FIN_CLIENT: u32 = 1 << 1;
/// Flow flag: the backend sent a FIN.
pub const FLOW_F_FIN_BACKEND: u32 = 1 << 2;
/// Flow flag: an in-window RST was seen; the flow is closed (but recovers if both ends go on
/// talking: the endpoint may have rejected the RST).
pub const FLOW_F_RST: u32 = 1 << 3;
/// Flow flag (reverse half): the flow is over and its forward half gone; this half only
/// reserves the SNAT tuple (backend packets are dropped) until the sweep releases it.
pub const FLOW_F_RESERVED: u32 = 1 << 4;
/// Flow flag (forward half): the client completed the handshake (sent an ACK after its SYN).
/// Until then the flow counts against its listener's SYN backlog.
pub const FLOW_F_CONFIRMED: u32 = 1 << 5;
/// Flow flag: opened by the SYN proxy (from a SYN cookie): sequence numbers are translated
/// once the backend's SYN-ACK is seen (`FLOW_F_XLATE`).
pub const FLOW_F_SYNPROXY: u32 = 1 << 6;
/// Flow flag: the SYN proxy's sequence offset is known (`FlowSlot::xlate`).
pub const FLOW_F_XLATE: u32 = 1 << 7;
/// Flow flag (forward half): the backend gets a PROXY protocol v1 header.
pub const FLOW_F_PROXY: u32 = 1 << 8;
/// Flow flag: after a RST, the client sent something other than a RST.
pub const FLOW_F_ALIVE_CLIENT: u32 = 1 << 9;
/// Flow flag: after a RST, the backend sent something other than a RST.
pub const FLOW_F_ALIVE_BACKEND: u32 = 1 << 10;
/// Flow flag: this half's sender has sent an ACK, remembered in `FlowSlot::acked`.
pub const FLOW_F_ACKED: u32 = 1 << 11;
/// Flow flag (both halves): the flow's listener has [`LISTENER_F_EVENTS`]: its packets and
/// payload bytes are counted (`FlowSlot::packets`, `FlowSlot::bytes`) and it reports events.
pub const FLOW_F_EVENTS: u32 = 1 << 12;
/// Slot state: being written by an insert (not visible to lookups).
pub const FLOW_F_CLAIM: u32 = 1 << 30;
/// Slot state: deleted (lookups skip it and go on; inserts may reuse it).
pub const FLOW_F_TOMB: u32 = 1 << 31;

/// A 64-bit word of a flow slot that the program and the sweep change with compare-and-swap:
/// the flow's identity beside the value. A flow slot can be reused by another flow while a
/// packet of the old one is being processed (the table never waits for readers); the CAS
/// fails then, so no write lands in the wrong flow.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct FlowWord {
    /// The flow's identity (random, never 0 for a live flow; both halves share it).
    pub ident: u32,
    /// The value.
    pub value: u32,
}
const _: () = assert!(size_of::<FlowWord>() == 8);

impl FlowWord {
    /// The word as one u64 (the layout the atomics use on a little-endian machine).
    #[inline(always)]
    pub fn pack(self) -> u64 {
        u64::from(self.ident) | (u64::from(self.value) << 32)
    }

    /// The word from its u64.
    #[inline(always)]
    pub fn unpack(raw: u64) -> Self {
        Self {
            ident: raw as u32,
            value: (raw >> 32) as u32,
        }
    }
}

/// The rewritten tuple of a flow half.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct NatTuple {
    /// New source address.
    pub src: Ipv4,
    /// New destination address.
    pub dst: Ipv4,
    /// New source port, host order.
    pub sport: u16,
    /// New destination port, host order.
    pub dport: u16,
}
const _: () = assert!(size_of::<NatTuple>() == 12);

/// One slot of the flow table: a flow half (its key and what to do with its packets) in two
/// cache lines. An established packet reads only the first.
///
/// The table is an array found by a keyed hash of the key ([`hash::flow_hash`]), with linear
/// probing (at most [`FLOW_PROBES`] slots from the home slot), so a lookup is a hash computed
/// inline and, at low occupancy, one cache line. Everything the program changes after an
/// insert lives in [`FlowWord`]s.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSlot {
    /// The tuple of packets of this half as they arrive at the servo.
    pub key: FlowKey,
    /// `ident` | `FLOW_F_*` flags. `ident == 0 && flags == 0`: an empty slot.
    pub state: FlowWord,
    /// How to rewrite this half's packets.
    pub nat: NatTuple,
    /// The backend the flow was given to.
    pub backend_id: u16,
    /// The listener the flow arrived on.
    pub listener_id: u16,
    /// That backend's generation when the flow was created.
    pub backend_gen: u32,
    /// Reverse half: MTU of the interface towards the client (0: not checked).
    pub hop_mtu: u16,
    /// PROXY flows (both halves): length of the PROXY protocol v1 header inserted (0: none).
    pub proxy_len: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
    /// `ident` | jiffies (low 32 bits) of the last packet, refreshed every
    /// [`SEEN_REFRESH_JIFFIES`] at most; the sweep sets it when it reserves a tuple.
    pub seen: FlowWord,
    /// `ident` | the last ACK number this half's sender sent, as its peer received it (after
    /// translation), refreshed every [`ACK_TRACK_STEP`] bytes. RSTs towards this sender are
    /// checked against it.
    pub acked: FlowWord,
    /// `ident` | the SYN proxy's sequence offset (servo ISN - backend ISN), set once.
    pub xlate: FlowWord,
    /// Reverse half: the interface towards the client (the one its SYN came in on).
    pub hop_ifindex: u32,
    /// Forward half: the client's initial sequence number. Reverse half of a SYN proxy flow:
    /// the servo's (the cookie).
    pub isn: u32,
    /// Reverse half: the client-side next hop's MAC (the source of the client's SYN).
    pub hop_dmac: [u8; 6],
    /// Reverse half: the servo's MAC on that interface.
    pub hop_smac: [u8; 6],
    /// SYN proxy, forward half: the client's window field in its handshake ACK.
    pub client_win: u16,
    /// SYN proxy: the client's window shift (forward half) or the backend's (reverse half,
    /// set with `xlate`); [`WSCALE_NONE`] without window scaling.
    pub wscale: u8,
    /// Explicit padding, always zero.
    pub _pad2: u8,
    /// jiffies (low 32 bits) at creation.
    pub created: u32,
    /// [`FLOW_F_EVENTS`] flows: packets this half forwarded (atomic adds; wraps at 2^32).
    pub packets: u32,
    /// `ident` | the backend's window shift, set with `xlate` (SYN proxy, reverse half).
    pub xlate_wscale: FlowWord,
    /// Forward half: the slot index of the reverse half at creation (a hint for the sweep,
    /// which checks it: it pairs halves without a lookup).
    pub partner: u32,
    /// PROXY flows (both halves): the client's ISN + 1, the sequence number the header takes
    /// in the backend's view (the client's data follows it, shifted by `proxy_len`).
    pub proxy_seq: u32,
    /// [`FLOW_F_EVENTS`] flows: TCP payload bytes this half forwarded (atomic adds), as its
    /// sender sent them (a PROXY protocol header is not counted).
    pub bytes: u64,
}
const _: () = assert!(size_of::<FlowSlot>() == 128);
const _: () = assert!(core::mem::offset_of!(FlowSlot, packets) == 100);
const _: () = assert!(core::mem::offset_of!(FlowSlot, bytes) == 120);
const _: () = assert!(core::mem::offset_of!(FlowSlot, acked) == 56);
const _: () = assert!(core::mem::offset_of!(FlowSlot, state) == 16);

impl FlowSlot {
    /// An empty slot.
    pub const EMPTY: Self = Self {
        key: FlowKey {
            src: [0; 4],
            dst: [0; 4],
            sport: 0,
            dport: 0,
            proto: 0,
            _pad: 0,
            _pad1: 0,
        },
        state: FlowWord { ident: 0, value: 0 },
        nat: NatTuple {
            src: [0; 4],
            dst: [0; 4],
            sport: 0,
            dport: 0,
        },
        backend_id: 0,
        listener_id: 0,
        backend_gen: 0,
        hop_mtu: 0,
        proxy_len: 0,
        _pad: 0,
        seen: FlowWord { ident: 0, value: 0 },
        acked: FlowWord { ident: 0, value: 0 },
        xlate: FlowWord { ident: 0, value: 0 },
        hop_ifindex: 0,
        isn: 0,
        hop_dmac: [0; 6],
        hop_smac: [0; 6],
        client_win: 0,
        wscale: 0,
        _pad2: 0,
        created: 0,
        packets: 0,
        xlate_wscale: FlowWord { ident: 0, value: 0 },
        partner: 0,
        proxy_seq: 0,
        bytes: 0,
    };

    /// The key under which the other half of this flow is stored.
    #[inline(always)]
    pub fn partner_key(&self) -> FlowKey {
        FlowKey {
            src: self.nat.dst,
            dst: self.nat.src,
            sport: self.nat.dport,
            dport: self.nat.sport,
            proto: self.key.proto,
            _pad: 0,
            _pad1: 0,
        }
    }

    /// True for a slot holding a flow half (not empty, being written or deleted).
    #[inline(always)]
    pub fn is_live(&self) -> bool {
        self.state.ident != 0 && self.state.value & (FLOW_F_CLAIM | FLOW_F_TOMB) == 0
    }

    /// True once both FINs or an accepted RST were seen.
    #[inline(always)]
    pub fn is_closed(&self) -> bool {
        is_closed(self.state.value)
    }
}

/// True if `flags` say the flow closed (both FINs, or an accepted RST).
#[inline(always)]
pub fn is_closed(flags: u32) -> bool {
    flags & FLOW_F_RST != 0
        || flags & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND)
            == FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND
}

/// Size in bytes of the `flow_events` ring buffer (a power of two, a multiple of the page
/// size): about 11,000 events (80 bytes each plus the ring's 8-byte header). Only flows whose
/// client completed the handshake write events, so a SYN flood writes none; past the ring's
/// size events are dropped and counted (`events_dropped`), the memory stays this.
pub const EVENT_RING_BYTES: u32 = 1 << 20;

/// [`FlowEvent::kind`]: the client completed the handshake (a flow opened from a SYN cookie:
/// at creation).
pub const FLOW_EVENT_START: u8 = 1;
/// [`FlowEvent::kind`]: the flow ended (written by the program when a new connection retires a
/// closed one, by the agent's sweep for the others).
pub const FLOW_EVENT_END: u8 = 2;

/// [`FlowEvent::reason`] of an end: both FINs.
pub const FLOW_END_FIN: u8 = 1;
/// [`FlowEvent::reason`] of an end: an accepted RST.
pub const FLOW_END_RST: u8 = 2;
/// [`FlowEvent::reason`] of an end: idle past the listener's idle timeout.
pub const FLOW_END_IDLE: u8 = 3;
/// [`FlowEvent::reason`] of an end: its backend was removed (deregistered, or drained past
/// the ConnectionDraining timeout).
pub const FLOW_END_BACKEND_GONE: u8 = 4;
/// [`FlowEvent::reason`] of an end: the backend refused the connection (a RST before its
/// SYN-ACK; only SYN proxy flows, whose clients completed the handshake with the servo).
pub const FLOW_END_REFUSED: u8 = 5;

/// How a closed flow (both FINs or an accepted RST: [`is_closed`]) ended, from its halves'
/// flags: `FLOW_END_FIN`, `FLOW_END_RST`, or `FLOW_END_REFUSED` (a RST before the backend's
/// SYN-ACK on a SYN proxy flow).
#[inline(always)]
pub fn close_reason(flags: u32) -> u8 {
    if flags & FLOW_F_RST == 0 {
        FLOW_END_FIN
    } else if flags & (FLOW_F_SYNPROXY | FLOW_F_XLATE) == FLOW_F_SYNPROXY {
        FLOW_END_REFUSED
    } else {
        FLOW_END_RST
    }
}

/// One flow event, as the `flow_events` ring carries it. A start fills the tuple, ids and
/// times; an end adds both halves' counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    /// `FLOW_EVENT_*`.
    pub kind: u8,
    /// Ends: `FLOW_END_*` (0 for starts).
    pub reason: u8,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// The flow's identity (with `index`, what pairs a start with its end).
    pub ident: u32,
    /// Slot index of the forward half.
    pub index: u32,
    /// The listener and backend ids.
    pub listener_id: u16,
    pub backend_id: u16,
    /// The client's tuple: client -> VIP:port.
    pub key: FlowKey,
    /// Towards the backend: SNAT address:port -> backend:port.
    pub nat: NatTuple,
    /// jiffies (low 32 bits) of the client's SYN.
    pub created: u32,
    /// jiffies (low 32 bits): starts, of the handshake's completion; ends, of the last packet.
    pub time: u32,
    /// Packets client -> backend and backend -> client (ends).
    pub packets_in: u32,
    pub packets_out: u32,
    /// Explicit padding, always zero.
    pub _pad2: u32,
    /// TCP payload bytes client -> backend and backend -> client (ends).
    pub bytes_in: u64,
    pub bytes_out: u64,
}
const _: () = assert!(size_of::<FlowEvent>() == 80);

/// A resolved next hop: where and how to send a rewritten packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// Egress ifindex, 0 when nothing is cached.
    pub ifindex: u32,
    /// jiffies (low 32 bits) of the lookup.
    pub updated: u32,
    /// Destination MAC (the next hop's).
    pub dmac: [u8; 6],
    /// Source MAC (the egress interface's).
    pub smac: [u8; 6],
    /// MTU of the route (packets above it get ICMP fragmentation needed).
    pub mtu: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
}
const _: () = assert!(size_of::<NextHop>() == 24);

impl NextHop {
    /// True if a next hop is cached and younger than [`HOP_REFRESH_JIFFIES`] at `now`.
    #[inline(always)]
    pub fn fresh(&self, now: u32) -> bool {
        self.ifindex != 0 && now.wrapping_sub(self.updated) < HOP_REFRESH_JIFFIES
    }
}

/// An interface the program is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Iface {
    /// Its MTU (replies leaving through it above this get ICMP fragmentation needed).
    pub mtu: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<Iface>() == 8);

/// The servo's source addresses on one egress interface, used for SNAT.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnatAddrs {
    /// How many entries of `addrs` are valid (1..=[`MAX_SNAT_ADDRS`]).
    pub count: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The addresses.
    pub addrs: [Ipv4; MAX_SNAT_ADDRS],
}
const _: () = assert!(size_of::<SnatAddrs>() == 8 + 4 * MAX_SNAT_ADDRS);

/// Global settings of the program (written by the agent; read on the new-flow path).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// First SNAT port (inclusive). The agent reserves the range in `ip_local_reserved_ports`.
    pub snat_port_min: u16,
    /// Last SNAT port (inclusive).
    pub snat_port_max: u16,
    /// `CONFIG_F_*` flags.
    pub flags: u32,
    /// Half-open flows per listener before SYNs get cookies (0: [`DEFAULT_SYN_BACKLOG`]).
    pub syn_backlog: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<Config>() == 16);

impl Config {
    /// A configuration with this SNAT port range and defaults for the rest.
    pub const fn with_snat_ports(min: u16, max: u16) -> Self {
        Self {
            snat_port_min: min,
            snat_port_max: max,
            flags: 0,
            syn_backlog: 0,
            _pad: 0,
        }
    }

    /// The SYN backlog in effect.
    #[inline(always)]
    pub fn syn_backlog(&self) -> u32 {
        if self.syn_backlog == 0 {
            DEFAULT_SYN_BACKLOG
        } else {
            self.syn_backlog
        }
    }
}

/// Identifies who created the pinned maps, and the secrets and sizes fixed at creation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// [`ABI_VERSION`] of the creator.
    pub abi_version: u32,
    /// Slots of the flow table (a power of two).
    pub conntrack_entries: u32,
    /// Key of the flow table's hash (random, chosen at creation): clients cannot aim their
    /// tuples at one probe window without it.
    pub flow_seed: [u64; 2],
    /// SipHash key of the SYN cookies (random, chosen at creation).
    pub cookie_key: [u64; 2],
    /// Generation of `listeners`, `backend_sets` and `snat_addrs`: a fresh random non-zero
    /// value written after every change to one of them ([`Meta::next_generation`]). The program
    /// keeps per-CPU copies of what a new flow reads from those maps and trusts a copy only
    /// while the generation it was made at is current.
    pub maps_generation: u64,
}
const _: () = assert!(size_of::<Meta>() == 48);

impl Meta {
    /// A generation for `maps_generation` from `random`: never 0 (0 marks a copy never made).
    pub const fn next_generation(random: u64) -> u64 {
        if random == 0 { 1 } else { random }
    }
}

/// Declares [`Counters`] with one documented `u64` per decision, plus the list of their names
/// (the agent exports each as a Prometheus series, so names and fields cannot drift apart).
macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// Per-CPU counters of every decision the program takes. Each field counts packets.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
        pub struct Counters {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl Counters {
            /// Field names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];
            /// Field docs (first line), in declaration order.
            pub const HELP: &'static [&'static str] = &[$(counters!(@first $($doc)+)),+];

            /// Values, in declaration order.
            pub fn values(&self) -> [u64; Self::NAMES.len()] {
                [$(self.$name),+]
            }

            /// Adds another CPU's counters into this one.
            pub fn accumulate(&mut self, other: &Self) {
                $( self.$name = self.$name.wrapping_add(other.$name); )+
            }

            /// What moved since `earlier` (each field's difference).
            pub fn since(&self, earlier: &Self) -> Self {
                Self { $( $name: self.$name.wrapping_sub(earlier.$name), )+ }
            }
        }
    };
    (@first $first:literal $($rest:literal)*) => { $first };
}

counters! {
    /// Every packet the program saw.
    rx_packets,
    /// Passed: frame shorter than an Ethernet header.
    pass_eth_truncated,
    /// Passed: not IPv4 (ARP, IPv6, VLAN...).
    pass_not_ipv4,
    /// Dropped: IPv4 header truncated.
    drop_ip_truncated,
    /// Dropped: IPv4 version, IHL or total length inconsistent.
    drop_ip_malformed,
    /// Dropped: IPv4 header checksum wrong (RFC 1812 5.2.2).
    drop_ip_checksum,
    /// Dropped: a TCP fragment (TCP sets DF; fragments to a VIP would be half-forwardable).
    drop_fragment,
    /// Passed: neither TCP nor an ICMP error (UDP, ICMP echo to the servo...).
    pass_not_tcp,
    /// Passed: TCP that belongs to no listener and no flow (the servo's own traffic).
    pass_not_ours,
    /// Passed to the local stack: a listener the servo's own engine serves (LISTENER_F_LOCAL).
    pass_local,
    /// Dropped: TCP header truncated or data offset invalid.
    drop_tcp_truncated,
    /// Dropped: a listener or flow packet carrying IP options.
    drop_ip_options,
    /// Dropped: a SYN (or a handshake ACK carrying a SYN cookie) with a wrong TCP checksum;
    /// no state is created for it.
    drop_tcp_checksum,
    /// Answered with ICMP time exceeded: TTL 0 or 1 on a packet to forward (as a router).
    icmp_time_exceeded,
    /// Answered with ICMP fragmentation needed: a packet with DF above the egress MTU.
    icmp_frag_needed,
    /// Passed rewritten to the kernel (which fragments it): above the egress MTU without DF.
    pass_fragment,
    /// Dropped: building an ICMP error failed (headroom).
    drop_icmp_failed,
    /// Dropped: a RST (or a packet with IP options) to a listener without a flow.
    drop_no_flow,
    /// Dropped: a RST outside the receiver's window (RFC 5961): it does not end the flow.
    drop_rst_out_of_window,
    /// Flows closed by an accepted RST that recovered (both ends kept talking).
    flows_recovered,
    /// Answered with RST: non-SYN TCP to a listener without a flow (expired, evicted, unknown).
    rst_no_flow,
    /// Dropped: backend packet of a flow that is over (its SNAT tuple is only reserved).
    drop_flow_closed,
    /// Answered with RST: client packet of a flow whose backend was removed.
    rst_backend_removed,
    /// Dropped: backend packet of a flow whose backend was removed.
    drop_backend_removed,
    /// Answered with RST: SYN to a listener with no backend accepting new flows.
    rst_no_backend,
    /// Dropped: SYN from a client the listener's security groups do not admit.
    drop_sg_denied,
    /// New flows created.
    new_flows,
    /// SNAT ports tried and found taken (allocation pressure).
    snat_retries,
    /// New flows refused because no SNAT port was free (answered with RST).
    snat_failures,
    /// Dropped: no SNAT address configured for the egress interface towards the backend.
    drop_no_snat_addr,
    /// New flows refused because the flow table had no free slot in the probe window.
    drop_conntrack_full,
    /// SYNs answered with a SYN cookie (the listener's SYN backlog was full): no state.
    syncookies_sent,
    /// Flows opened from a valid SYN cookie (the SYN proxy then opens the backend connection).
    syncookies_valid,
    /// Handshake ACKs to a listener without a flow whose cookie was not valid (answered with
    /// a RST, like any segment of an unknown connection: also counted in `rst_no_flow`).
    syncookies_invalid,
    /// Backend SYN-ACKs of SYN proxy flows, answered with the ACK that completes the backend
    /// handshake.
    synproxy_acks,
    /// Dropped: client data of a SYN proxy flow before the backend's SYN-ACK (retransmitted
    /// by the client).
    drop_synproxy_pending,
    /// SYNs of SYN proxy flows sent to the backend again: the client retransmitted its first
    /// segment while the backend's SYN-ACK was still missing.
    synproxy_syn_resent,
    /// PROXY protocol headers inserted (first data segments and their retransmissions).
    proxy_headers,
    /// Dropped: a PROXY protocol header could not be inserted (no room in the frame).
    drop_proxy_failed,
    /// Forwarded with XDP_TX (out of the interface it came in on).
    fwd_tx,
    /// Forwarded with a devmap redirect to another interface.
    fwd_redirect,
    /// Passed rewritten to the kernel: the next hop's neighbour entry is not resolved yet.
    pass_no_neigh,
    /// Passed rewritten to the kernel: egress interface is not in `tx_ports`.
    pass_no_tx_port,
    /// Dropped: no route to the rewritten destination (FIB lookup failed).
    drop_fib_failed,
    /// ICMP errors about a NATed flow, translated and forwarded.
    icmp_translated,
    /// Passed: ICMP error about no known flow.
    pass_icmp_no_flow,
    /// Dropped: truncated or malformed ICMP error.
    drop_icmp_malformed,
    /// TCP RSTs generated by the program (sum of the `rst_*` reasons above).
    tx_rst,
    /// Dropped: `bpf_xdp_adjust_tail` failed while building a RST.
    drop_rst_failed,
    /// Dropped: internal inconsistency (backend set names an inactive backend, ...).
    drop_internal,
    /// Flow events not written: the `flow_events` ring was full (the agent reads it too
    /// slowly); the flow is forwarded all the same.
    events_dropped,
}

/// Packet and byte counts for one listener or backend, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrafficStats {
    /// Packets client -> backend.
    pub packets_in: u64,
    /// Bytes client -> backend (IP length).
    pub bytes_in: u64,
    /// Packets backend -> client.
    pub packets_out: u64,
    /// Bytes backend -> client (IP length).
    pub bytes_out: u64,
    /// New flows.
    pub new_flows: u64,
}
const _: () = assert!(size_of::<TrafficStats>() == 40);

/// Frame length of the benchmark generators (Ethernet + IPv4 + TCP, no payload).
pub const GEN_FRAME_LEN: usize = 54;

/// The frame the benchmark generators send. Live-frames test runs recycle pages without
/// rewriting them, and the receiving XDP program rewrites the frame in place, so the generator
/// writes the whole template into every frame it sends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenTemplate {
    /// The frame.
    pub frame: [u8; GEN_FRAME_LEN],
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<GenTemplate>() == 56);

/// Source addresses of generated floods (spoofed SYNs): 198.18.128.0/17, host order. Test
/// topologies never give a real host an address in it.
pub const SPOOF_BASE: u32 = u32::from_be_bytes([198, 18, 128, 0]);
/// Mask of [`SPOOF_BASE`]'s range, host order.
pub const SPOOF_MASK: u32 = 0xffff_8000;

/// Largest frame of the per-packet timing ring (a multiple of 8).
pub const RING_FRAME_MAX: usize = 128;
/// Most frames in the timing ring.
pub const RING_MAX: u32 = 1 << 16;
/// `RingState::mode`: walk the ring of frames.
pub const RING_MODE_RING: u32 = 0;
/// `RingState::mode`: frame 0 is a SYN template; each iteration gives it the source of a flow
/// never seen before (the same numbering as the SYN-flood generator).
pub const RING_MODE_SYN: u32 = 1;

/// One frame of the per-packet timing ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFrame {
    /// Frame length (a multiple of 8, at most [`RING_FRAME_MAX`]; pad with zeros after the IP
    /// packet, as Ethernet does).
    pub len: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The frame.
    pub frame: [u8; RING_FRAME_MAX],
}
const _: () = assert!(size_of::<RingFrame>() == 8 + RING_FRAME_MAX);

/// Settings and position of the per-packet timing ring (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RingState {
    /// Iterations so far (the next frame is `next % len`, or flow number `next` in SYN mode).
    pub next: u64,
    /// Frames in the ring.
    pub len: u32,
    /// `RING_MODE_*`.
    pub mode: u32,
    /// Slot of `ring_targets` to tail-call.
    pub target: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// Where the frame started in the first iteration of this run (0: not yet known). A
    /// program that moved the frame's start (`bpf_xdp_adjust_head`) left it moved for the next
    /// iteration (the kernel reuses the buffer): the ring moves it back.
    pub base: u64,
    /// Scratch: the current start, stored and read back (a packet pointer becomes a number).
    pub cur: u64,
}
const _: () = assert!(size_of::<RingState>() == 40);

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` marks a type as safe to copy to and from the kernel byte for byte: these types
    //! are `repr(C)`, fully initialised and padded explicitly.
    use super::*;

    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for Listener {}
    unsafe impl aya::Pod for BackendSet {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowSlot {}
    unsafe impl aya::Pod for FlowWord {}
    unsafe impl aya::Pod for ListenerState {}
    unsafe impl aya::Pod for HalfOpenFix {}
    unsafe impl aya::Pod for Iface {}
    unsafe impl aya::Pod for StageArgs {}
    unsafe impl aya::Pod for SnatAddrs {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Meta {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for TrafficStats {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for GenTemplate {}
    unsafe impl aya::Pod for sg::SgSource {}
    unsafe impl aya::Pod for RingFrame {}
    unsafe impl aya::Pod for RingState {}
    unsafe impl aya::Pod for FlowEvent {}
}
