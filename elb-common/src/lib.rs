//! The map ABI shared by the XDP program (`elb-ebpf`) and userspace (`elb-userspace`).
//!
//! One source of truth: every map key and value is `#[repr(C)]` with explicit padding, no
//! `bool`/`Option`/enums, and a size assertion, so the kernel, the program and the agent agree
//! byte for byte. Addresses are stored as `[u8; 4]` in network order (so `bpftool` prints them as
//! `[198,18,0,1]`); ports are stored in host order (so `bpftool` prints `80`, not `20480`).
#![no_std]

pub mod csum;

/// Bumped whenever a map key or value layout changes. The agent refuses to reuse pinned maps that
/// were created by a different ABI version (they would be misread); `--reset` starts fresh.
pub const ABI_VERSION: u32 = 3;

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
/// Default number of conntrack entries (two per flow; about 170 MiB of kernel memory).
/// Userspace may size it at load time. A closed flow keeps its entries about 70 s (close grace,
/// then the TIME_WAIT hold of its SNAT tuple), so this sustains roughly 7,000 new connections
/// per second of churn.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 1 << 20;
/// How many SNAT ports the program tries for one new flow before giving up.
pub const SNAT_TRIES: u32 = 16;
/// `last_seen_ns` is refreshed at most this often, so established packets rarely write to the
/// shared conntrack entry (a write per packet would bounce its cache line between CPUs).
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;
/// How long a flow half trusts its cached next hop (egress interface and MACs) before looking
/// the route up again: a moved backend or a changed neighbour is followed within this time.
pub const ROUTE_CACHE_NS: u64 = 1_000_000_000;
/// After both FINs, the flow keeps forwarding stragglers (last ACK, retransmitted FINs) this
/// long; the agent removes the forward entry after it.
pub const CLOSE_GRACE_NS: u64 = 10_000_000_000;
/// A closed flow's SNAT tuple stays reserved this long: the backend may hold the tuple in
/// TIME_WAIT (60 s on Linux) and would reject a new SYN on it (PAWS).
pub const TIME_WAIT_HOLD_NS: u64 = 60_000_000_000;

/// Names of the maps, as pinned under the pin root (`/sys/fs/bpf/elb/<name>`).
pub mod map_names {
    /// [`crate::ListenerKey`] -> [`crate::Listener`].
    pub const LISTENERS: &str = "listeners";
    /// listener id -> [`crate::BackendSet`].
    pub const BACKEND_SETS: &str = "backend_sets";
    /// backend id -> [`crate::Backend`].
    pub const BACKENDS: &str = "backends";
    /// listener id -> round-robin cursor.
    pub const RR_CURSORS: &str = "rr_cursors";
    /// [`crate::FlowKey`] -> [`crate::Flow`], forward and reverse entries.
    pub const CONNTRACK: &str = "conntrack";
    /// egress ifindex -> [`crate::SnatAddrs`].
    pub const SNAT_ADDRS: &str = "snat_addrs";
    /// ifindex -> ifindex, the interfaces the program may redirect to.
    pub const TX_PORTS: &str = "tx_ports";
    /// The single [`crate::Config`] entry.
    pub const CONFIG: &str = "config";
    /// The single [`crate::Meta`] entry.
    pub const META: &str = "meta";
    /// Per-CPU [`crate::Counters`].
    pub const COUNTERS: &str = "counters";
    /// Per-CPU [`crate::TrafficStats`] per listener id.
    pub const LISTENER_STATS: &str = "listener_stats";
    /// Per-CPU [`crate::TrafficStats`] per backend id.
    pub const BACKEND_STATS: &str = "backend_stats";
    /// backend id -> [`crate::NextHop`], written by the program (new flows skip the FIB lookup).
    pub const BACKEND_ROUTES: &str = "backend_routes";

    /// Every map, in the order the agent checks and pins them.
    pub const ALL: [&str; 13] = [
        LISTENERS,
        BACKEND_SETS,
        BACKENDS,
        RR_CURSORS,
        CONNTRACK,
        SNAT_ADDRS,
        TX_PORTS,
        CONFIG,
        META,
        COUNTERS,
        LISTENER_STATS,
        BACKEND_STATS,
        BACKEND_ROUTES,
    ];
}

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
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey>() == 16);

/// This entry is the reverse (backend -> servo) half of a flow.
pub const FLOW_F_REPLY: u32 = 1 << 0;
/// The client sent a FIN.
pub const FLOW_F_FIN_CLIENT: u32 = 1 << 1;
/// The backend sent a FIN.
pub const FLOW_F_FIN_BACKEND: u32 = 1 << 2;
/// Either side sent a RST: the flow is closed at once.
pub const FLOW_F_RST: u32 = 1 << 3;
/// The agent expired the flow for idleness and removed its forward half; this (reverse) half
/// only keeps the SNAT tuple reserved.
pub const FLOW_F_EXPIRED: u32 = 1 << 4;

/// Conntrack value: how to rewrite packets that match the key, and the flow's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    /// New source address.
    pub nat_src: Ipv4,
    /// New destination address.
    pub nat_dst: Ipv4,
    /// New source port, host order.
    pub nat_sport: u16,
    /// New destination port, host order.
    pub nat_dport: u16,
    /// The backend the flow was given to.
    pub backend_id: u32,
    /// That backend's generation when the flow was created.
    pub backend_gen: u32,
    /// The listener the flow arrived on.
    pub listener_id: u32,
    /// `FLOW_F_*` flags.
    pub flags: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// Monotonic time (`bpf_ktime_get_ns`) of the last packet, refreshed at most once per
    /// [`LAST_SEEN_GRANULARITY_NS`].
    pub last_seen_ns: u64,
    /// Monotonic time the flow closed (both FINs or a RST), 0 while open.
    pub closed_ns: u64,
    /// Monotonic time the flow was created.
    pub created_ns: u64,
    /// Cached next hop of the rewritten packets. A FIB lookup costs several times the rest of
    /// the established path, so it runs once per [`ROUTE_CACHE_NS`] per flow half.
    pub route: NextHop,
}
const _: () = assert!(size_of::<Flow>() == 88);

impl Flow {
    /// The key under which the other half of this flow is stored.
    #[inline(always)]
    pub fn partner_key(&self, proto: u8) -> FlowKey {
        FlowKey {
            src: self.nat_dst,
            dst: self.nat_src,
            sport: self.nat_dport,
            dport: self.nat_sport,
            proto,
            _pad: [0; 3],
        }
    }

    /// True once both FINs or a RST were seen.
    #[inline(always)]
    pub fn is_closed(&self) -> bool {
        self.closed_ns != 0
    }
}

/// A resolved next hop: where and how to send a rewritten packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// Egress ifindex, 0 when nothing is cached.
    pub ifindex: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// Destination MAC (the next hop's).
    pub dmac: [u8; 6],
    /// Source MAC (the egress interface's).
    pub smac: [u8; 6],
    /// Explicit padding, always zero.
    pub _pad2: [u8; 4],
    /// Monotonic time of the lookup.
    pub updated_ns: u64,
}
const _: () = assert!(size_of::<NextHop>() == 32);

impl NextHop {
    /// True if a next hop is cached and younger than [`ROUTE_CACHE_NS`] at `now`.
    #[inline(always)]
    pub fn fresh(&self, now: u64) -> bool {
        self.ifindex != 0 && now.wrapping_sub(self.updated_ns) < ROUTE_CACHE_NS
    }
}

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

/// Global settings of the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// First SNAT port (inclusive). The agent reserves the range in `ip_local_reserved_ports`.
    pub snat_port_min: u16,
    /// Last SNAT port (inclusive).
    pub snat_port_max: u16,
    /// `CONFIG_F_*` flags.
    pub flags: u32,
}
const _: () = assert!(size_of::<Config>() == 8);

/// Identifies who created the pinned maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// [`ABI_VERSION`] of the creator.
    pub abi_version: u32,
    /// Size of the conntrack map the maps were created with.
    pub conntrack_entries: u32,
}
const _: () = assert!(size_of::<Meta>() == 8);

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
    /// Dropped: a TCP fragment (TCP sets DF; fragments to a VIP would be half-forwardable).
    drop_fragment,
    /// Passed: neither TCP nor an ICMP error (UDP, ICMP echo to the servo...).
    pass_not_tcp,
    /// Passed: TCP that belongs to no listener and no flow (the servo's own traffic).
    pass_not_ours,
    /// Dropped: TCP header truncated or data offset invalid.
    drop_tcp_truncated,
    /// Dropped: a listener or flow packet carrying IP options.
    drop_ip_options,
    /// Dropped: a RST (or a packet with IP options) to a listener without a flow.
    drop_no_flow,
    /// Answered with RST: non-SYN TCP to a listener without a flow (expired, evicted, unknown).
    rst_no_flow,
    /// Dropped: packet of a flow closed by a RST, or closed longer than the close grace.
    drop_flow_closed,
    /// Answered with RST: client packet of a flow whose backend was removed.
    rst_backend_removed,
    /// Dropped: backend packet of a flow whose backend was removed.
    drop_backend_removed,
    /// Answered with RST: SYN to a listener with no backend accepting new flows.
    rst_no_backend,
    /// New flows created.
    new_flows,
    /// SNAT ports tried and found taken (allocation pressure).
    snat_retries,
    /// New flows refused because no SNAT port was free (answered with RST).
    snat_failures,
    /// Dropped: no SNAT address configured for the egress interface towards the backend.
    drop_no_snat_addr,
    /// New flows refused because the conntrack insert failed.
    drop_conntrack_full,
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
}
const _: () = assert!(size_of::<RingState>() == 24);

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
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for SnatAddrs {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Meta {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for TrafficStats {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for GenTemplate {}
    unsafe impl aya::Pod for RingFrame {}
    unsafe impl aya::Pod for RingState {}
}
