//! New flows: a SYN to a listener, with state while the listener's SYN backlog has room, or
//! answered with a SYN cookie (no state at all) when it has not; the handshake's ACK carrying a
//! valid cookie opens the flow, and the servo completes the backend's handshake itself (a SYN
//! proxy), translating sequence numbers for the rest of the flow.
//!
//! Why: a flood of spoofed SYNs never completes a handshake. With cookies it creates nothing,
//! holds no SNAT tuple and reaches no backend; established flows live in a table that never
//! evicts, so nothing a flood does can push them out.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext as _,
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_get_prandom_u32, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use elb_common::{
    BACKEND_ACTIVE, COOKIE_SLOT_SHIFT, Counters, FLOW_F_ACKED, FLOW_F_CONFIRMED, FLOW_F_EVENTS,
    FLOW_F_PROXY, FLOW_F_REPLY, FLOW_F_SYNPROXY, FLOW_F_XLATE, FlowKey, FlowWord,
    LISTENER_F_EVENTS, LISTENER_F_PROXY_V1, Listener, ListenerKey, NatTuple, NextHop, PROTO_TCP,
    SNAT_TRIES, SYNPROXY_MSS, SYNPROXY_WSCALE, StageArgs, WSCALE_NONE, csum,
    hash::{self, CookieOptions},
    proxy_v1, stages,
};

use crate::{
    cache, events,
    flows::{self, Found, Table},
    fwd::{self, NoHop},
    hdr::{
        ETH_LEN, EthHdr, IP_DF_BE, IP_LEN, Ipv4Hdr, TCP_ACK, TCP_LEN, TCP_SYN, TcpHdr, ptr_at,
        sum_words,
    },
    icmp,
    maps::{
        BACKEND_ROUTES, BACKENDS, CONFIG, COUNTERS, HALF_OPEN_FIX, IFACES, LISTENER_PORTS, META,
        RR_CURSORS, SCRATCH, STAGE_ARGS,
    },
    opts, rst, sg,
    stats::{self, Direction},
    tcp::{self, Env, Pkt, Xlate},
};

/// A SYN (or a cookie's ACK) to a listener.
pub struct NewSyn {
    /// Its flow key.
    pub key: FlowKey,
    /// The listener.
    pub listener: Listener,
    /// The closed flow whose client port it reuses: its slot index and identity (0: none;
    /// an `Option` here would copy uninitialised bytes, which the verifier refuses).
    pub replacing_index: u32,
    pub replacing_ident: u32,
}

/// How a new flow came about.
#[derive(Clone, Copy)]
struct Origin {
    /// 0: a SYN forwarded as it came (counts against the listener's SYN backlog until the
    /// client's ACK); 1: the handshake ACK of a SYN cookie, turned into a SYN for the backend.
    /// (Plain fields, not an enum: copies of an enum's unused payload read uninitialised
    /// registers, which the verifier refuses.)
    cookie_flow: u32,
    /// The servo's ISN towards the client (cookie flows).
    cookie: u32,
    /// The client's window field and shift (cookie flows).
    client_win: u16,
    wscale: u8,
}

impl Origin {
    const SYN: Self = Self {
        cookie_flow: 0,
        cookie: 0,
        client_win: 0,
        wscale: WSCALE_NONE,
    };
}

/// What a stage works with: the packet re-parsed, its key, the table and the time.
struct Entered {
    p: Pkt,
    key: FlowKey,
    env: Env,
}

/// Fills `e` for the packet at `ctx`; false if it is not what `elb` handed over (or the maps
/// are not set up). Out-parameters: see `tcp::parse`.
#[inline(always)]
fn enter(ctx: &XdpContext, e: &mut Entered) -> bool {
    let Some(table) = Table::get() else {
        return false;
    };
    e.env = Env {
        table,
        // SAFETY: a helper without side effects.
        now: unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() } as u32,
    };
    tcp::parse(ctx, &mut e.p, &mut e.key)
}

/// A stage's start: this CPU's counters, with `e` filled (see [`enter`]); `None` (counted in
/// `drop_internal` when the counters are there) if the packet or the maps are not as `elb` left
/// them.
#[inline(always)]
fn begin(ctx: &XdpContext, e: &mut Entered) -> Option<&'static mut Counters> {
    let c = counters()?;
    if !enter(ctx, e) {
        c.drop_internal += 1;
        return None;
    }
    Some(c)
}

/// This CPU's counters.
#[inline(always)]
fn counters() -> Option<&'static mut Counters> {
    // SAFETY: this CPU's entry; XDP programs run to completion on one CPU.
    COUNTERS.get_ptr_mut(0).map(|c| unsafe { &mut *c })
}

impl Entered {
    const EMPTY: Self = Self {
        p: Pkt::EMPTY,
        key: FlowKey {
            src: [0; 4],
            dst: [0; 4],
            sport: 0,
            dport: 0,
            proto: 0,
            _pad: 0,
            _pad1: 0,
        },
        env: Env {
            table: Table::EMPTY,
            now: 0,
        },
    };
}

/// The listener `elb` found for the packet (in the stage arguments).
#[inline(always)]
fn listener_of(args: &StageArgs) -> Listener {
    Listener {
        id: args.listener_id,
        flags: args.listener_flags,
        idle_timeout_s: 0,
        _pad: 0,
    }
}

/// This CPU's stage arguments.
#[inline(always)]
fn args() -> StageArgs {
    STAGE_ARGS.get(0).copied().unwrap_or(StageArgs {
        index: 0,
        ident: 0,
        listener_id: 0,
        listener_flags: 0,
    })
}

/// The flow half at table index `index` if it still holds flow `ident`.
#[inline(always)]
pub fn found_at(index: u32, ident: u32) -> Option<Found> {
    let slot = crate::maps::CONNTRACK.get_ptr_mut(index)?;
    // SAFETY: a pointer into the flow table.
    let state = flows::word(unsafe { &raw const (*slot).state });
    (state.ident == ident && ident != 0).then_some(Found { slot, index, state })
}

/// `StageArgs::index` (with identity 0) telling `elb_syn` to answer with a cookie at once.
const COOKIE_NOW: u32 = u32::MAX;

/// Stage `elb_syn`: a SYN to a listener (IPv4 without options; `StageArgs`: the closed flow
/// whose client port it reuses, if any).
#[xdp]
pub fn elb_syn(ctx: XdpContext) -> u32 {
    let args = args();
    let (replacing_index, replacing_ident) = (args.index, args.ident);
    let mut e = Entered::EMPTY;
    let Some(c) = begin(&ctx, &mut e) else {
        return XDP_DROP;
    };
    let Entered { p, key, .. } = e;
    let listener = listener_of(&args);
    // Security groups first: a client they do not admit gets nothing (no cookie, no RST, no
    // state).
    if !sg::admits(&listener, &key) {
        c.drop_sg_denied += 1;
        return XDP_DROP;
    }
    if replacing_index == COOKIE_NOW && replacing_ident == 0 {
        return answer_with_cookie(&ctx, c, &p, &key, args.listener_flags);
    }
    new_flow(
        &ctx,
        c,
        &p,
        &NewSyn {
            key,
            listener,
            replacing_index,
            replacing_ident,
        },
    )
}

/// Stage `elb_cookie_ack`: an ACK to a listener without a flow (IPv4 without options): a
/// cookie handshake's ACK opens a flow, anything else gets a RST.
#[xdp]
pub fn elb_cookie_ack(ctx: XdpContext) -> u32 {
    let mut e = Entered::EMPTY;
    let Some(c) = begin(&ctx, &mut e) else {
        return XDP_DROP;
    };
    let Entered { p, key, .. } = e;
    let listener = listener_of(&args());
    if !sg::admits(&listener, &key) {
        c.drop_sg_denied += 1;
        return XDP_DROP;
    }
    cookie_ack(
        &ctx,
        c,
        &p,
        &NewSyn {
            key,
            listener,
            replacing_index: 0,
            replacing_ident: 0,
        },
    )
}

/// A SYN to a listener.
#[inline(always)]
fn new_flow(ctx: &XdpContext, c: &mut Counters, p: &Pkt, n: &NewSyn) -> u32 {
    let (key, listener) = (&n.key, &n.listener);
    if !opts::checksum_ok(
        ctx.ctx,
        u32::from_ne_bytes(key.src),
        u32::from_ne_bytes(key.dst),
        p.doff,
        p.tot_len - p.ihl,
    ) {
        c.drop_tcp_checksum += 1;
        return XDP_DROP;
    }
    // SAFETY: bounds-checked header.
    if unsafe { (*p.ip).ttl } <= 1 {
        return icmp::send_error(ctx, icmp::ICMP_TIME_EXCEEDED, 0, 0);
    }
    let (Some(cfg), Some(state)) = (CONFIG.get(0), RR_CURSORS.get_ptr_mut(listener.id)) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let fix = HALF_OPEN_FIX.get(listener.id).map_or(0, |f| f.value);
    // SAFETY: an array element; a plain read of a counter other CPUs change atomically.
    let half_open = unsafe { core::ptr::read_volatile(&raw const (*state).half_open) };
    if (half_open.wrapping_sub(fix) as i64) >= i64::from(cfg.syn_backlog()) {
        // A closed flow whose client port this SYN reuses ends now, as it would when a flow
        // with state replaced it: the client's cookie ACK must open a new flow, not reach the
        // old connection's backend (which holds it in TIME_WAIT).
        retire_at(c, n.replacing_index, n.replacing_ident);
        return answer_with_cookie(ctx, c, p, key, listener.flags);
    }
    to_plan(ctx, c, &Origin::SYN, n)
}

/// Hands the packet (a SYN to a listener) to stage `elb_plan`, with how the flow came about.
#[inline(always)]
fn to_plan(ctx: &XdpContext, c: &mut Counters, origin: &Origin, n: &NewSyn) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // SAFETY: this CPU's scratch entry; the next stage runs on this CPU.
    unsafe {
        if origin.cookie_flow != 0 {
            // A cookie's ACK gets no hint from `elb`: one left by an earlier SYN is not its.
            (*scratch).hint.valid = 0;
        }
        let plan = &raw mut (*scratch).plan;
        (*plan).cookie_flow = origin.cookie_flow;
        (*plan).cookie = origin.cookie;
        (*plan).client_win = origin.client_win;
        (*plan).wscale = origin.wscale;
        (*plan).replacing_index = n.replacing_index;
        (*plan).replacing_ident = n.replacing_ident;
    }
    tcp::stage_with(
        ctx,
        c,
        stages::PLAN,
        StageArgs {
            index: 0,
            ident: 0,
            listener_id: n.listener.id,
            listener_flags: n.listener.flags,
        },
    )
}

/// Stage `elb_plan`: plans the new flow of the SYN at hand (see `open`).
#[xdp]
pub fn elb_plan(ctx: XdpContext) -> u32 {
    let mut e = Entered::EMPTY;
    let Some(c) = begin(&ctx, &mut e) else {
        return XDP_DROP;
    };
    let Entered { p, key, env } = e;
    let listener = listener_of(&args());
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // SAFETY: this CPU's scratch entry, written by the stage that tail-called this one.
    let plan = unsafe { (*scratch).plan };
    open(
        &ctx,
        c,
        &env,
        &p,
        &Open {
            syn: &NewSyn {
                key,
                listener,
                replacing_index: plan.replacing_index,
                replacing_ident: plan.replacing_ident,
            },
            origin: Origin {
                cookie_flow: plan.cookie_flow,
                cookie: plan.cookie,
                client_win: plan.client_win,
                wscale: plan.wscale,
            },
        },
    )
}

/// The MTU of interface `ifindex` (the way back to the client), from this CPU's cache in its
/// scratch entry (trusted for `HOP_REFRESH_JIFFIES`, as cached routes are: a hash map lookup
/// costs about 40 ns here) or from `ifaces`; 0 if the interface is not there.
#[inline(always)]
fn ingress_mtu(scratch: *mut crate::maps::Scratch, ifindex: u32, now: u32) -> u16 {
    // SAFETY: this CPU's scratch entry.
    let cached = unsafe { &raw mut (*scratch).ingress };
    // SAFETY: as above.
    unsafe {
        if (*cached).ifindex == ifindex && (*cached).fresh(now) {
            return (*cached).mtu;
        }
    }
    // SAFETY: map value, read-only.
    let Some(iface) = (unsafe { IFACES.get(ifindex) }) else {
        return 0;
    };
    let mtu = iface.mtu.min(0xffff) as u16;
    // SAFETY: as above.
    unsafe {
        (*cached).ifindex = ifindex;
        (*cached).updated = now;
        (*cached).mtu = mtu;
    }
    mtu
}

/// What `open` opens.
struct Open<'b> {
    syn: &'b NewSyn,
    origin: Origin,
}

/// Plans a new flow: picks the backend (round robin), its next hop and SNAT addresses, and
/// writes both halves (all but the SNAT tuple) into this CPU's scratch space; then hands the
/// packet to stage `elb_open`, which allocates the tuple and inserts the flow. (Two stages:
/// the allocation loop needs a stack frame of its own.)
#[inline(always)]
fn open(ctx: &XdpContext, c: &mut Counters, env: &Env, p: &Pkt, o: &Open) -> u32 {
    let now = env.now;
    let (key, listener, origin) = (&o.syn.key, &o.syn.listener, &o.origin);
    let refuse_seq = (origin.cookie_flow != 0).then_some(origin.cookie.wrapping_add(1));
    let (Some(state), Some(scratch)) =
        (RR_CURSORS.get_ptr_mut(listener.id), SCRATCH.get_ptr_mut(0))
    else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // The exact round-robin: one atomic fetch-and-add per new flow, shared by all CPUs.
    // SeqCst is required: with Relaxed the compiler emits a non-fetching add (toolchain.md).
    // SAFETY: `state` points at a live array element.
    let turn =
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*state).cursor, 1) };
    // SAFETY: this CPU's scratch entry; a hint is used once. (Read in place: a copy would
    // take stack this stage does not have.)
    let hint = unsafe { &raw mut (*scratch).hint };
    // SAFETY: as above.
    let hinted = unsafe {
        let hinted = (*hint).valid == 1
            && (*hint).cursor == turn
            && (*hint).listener_id == listener.id
            && (*hint).src == key.src
            && (*hint).sport == key.sport;
        (*hint).valid = 0;
        hinted
    };
    let backend_id = if hinted {
        // SAFETY: as above.
        unsafe { (*hint).backend_id }
    } else {
        let copy = cache::current(&ListenerKey {
            vip: key.dst,
            port: key.dport,
            proto: PROTO_TCP,
            _pad: 0,
        });
        let Some(id) = cache::backend_of_turn(listener.id, copy, turn) else {
            c.rst_no_backend += 1;
            return rst::reply_with(ctx, c, p.tot_len, refuse_seq);
        };
        id
    };
    let Some(backend) = BACKENDS.get(backend_id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    if backend.state != BACKEND_ACTIVE {
        c.drop_internal += 1;
        return XDP_DROP;
    }

    // The egress interface towards the backend decides the SNAT address.
    let mut unresolved = 0;
    let hop = match fwd::backend_hop(ctx, backend_id, u32::from_ne_bytes(backend.addr), now) {
        Ok(hop) => hop,
        Err(NoHop::Unresolved(egress)) => {
            unresolved = 1;
            NextHop {
                ifindex: egress,
                ..NextHop::default()
            }
        }
        Err(NoHop::NoRoute) => {
            c.drop_fib_failed += 1;
            return XDP_DROP;
        }
    };
    // One random number: the flow's identity, and where the SNAT port search starts.
    // SAFETY: helper without side effects.
    let r = unsafe { bpf_get_prandom_u32() };
    let ident = if r == 0 { 0x5eed } else { r };
    // SAFETY: bounds-checked header (no packet-moving helper ran).
    let (src_mac, dst_mac) = unsafe { ((*p.eth).src, (*p.eth).dst) };
    let ingress = ctx.ingress_ifindex() as u32;
    let flags = if origin.cookie_flow != 0 {
        FLOW_F_SYNPROXY | FLOW_F_CONFIRMED
    } else {
        0
    };
    let flags = if listener.flags & LISTENER_F_EVENTS != 0 {
        flags | FLOW_F_EVENTS
    } else {
        flags
    };
    let (proxy_len, proxy_flag) = if listener.flags & LISTENER_F_PROXY_V1 != 0 {
        (
            proxy_v1::header_len(key.src, key.dst, key.sport, key.dport) as u8,
            FLOW_F_PROXY,
        )
    } else {
        (0, 0)
    };
    let word = |value| FlowWord { ident, value };
    // SAFETY: this CPU's scratch entry; both halves are written field by field there (the
    // BPF stack cannot hold them), and the plan beside them.
    unsafe {
        let reverse = &raw mut (*scratch).slots[0];
        let forward = &raw mut (*scratch).slots[1];
        flows::clear(reverse);
        (*reverse).key.src = backend.addr;
        (*reverse).key.sport = backend.port;
        (*reverse).key.proto = PROTO_TCP;
        (*reverse).state = word(FLOW_F_REPLY | FLOW_F_ACKED | flags | proxy_flag);
        (*reverse).nat = NatTuple {
            src: key.dst,
            dst: key.src,
            sport: key.dport,
            dport: key.sport,
        };
        (*reverse).backend_id = backend_id as u16;
        (*reverse).listener_id = listener.id as u16;
        (*reverse).backend_gen = backend.generation;
        // (`hop_mtu`: filled in by `elb_open`, whose stack has room for the lookup.)
        // The backend's first ACK will acknowledge the client's SYN.
        (*reverse).acked = word(p.seq.wrapping_add(1));
        (*reverse).seen = word(now);
        (*reverse).xlate = word(0);
        (*reverse).xlate_wscale = word(0);
        (*reverse).hop_ifindex = ingress;
        (*reverse).hop_dmac = src_mac;
        (*reverse).hop_smac = dst_mac;
        (*reverse).isn = origin.cookie;
        (*reverse).created = now;
        (*reverse).proxy_len = proxy_len;
        (*reverse).proxy_seq = p.seq.wrapping_add(1);

        flows::clear(forward);
        (*forward).key = *key;
        (*forward).state = word(flags | proxy_flag);
        (*forward).nat.dst = backend.addr;
        (*forward).nat.dport = backend.port;
        (*forward).backend_id = backend_id as u16;
        (*forward).listener_id = listener.id as u16;
        (*forward).backend_gen = backend.generation;
        (*forward).proxy_len = proxy_len;
        (*forward).proxy_seq = p.seq.wrapping_add(1);
        (*forward).acked = word(0);
        (*forward).seen = word(now);
        (*forward).xlate = word(0);
        (*forward).xlate_wscale = word(0);
        (*forward).isn = p.seq;
        (*forward).client_win = origin.client_win;
        (*forward).wscale = origin.wscale;
        (*forward).created = now;
        // The packet that opens the flow (the SYN, or a cookie's handshake ACK) is its first.
        (*forward).packets = u32::from(flags & FLOW_F_EVENTS != 0);

        let plan = &raw mut (*scratch).plan;
        (*plan).hop = hop;
        (*plan).unresolved = unresolved;
        (*plan).pick = r >> 16;
        (*plan).first_addr = first_addr(key);
    }
    tcp::stage(ctx, c, stages::OPEN, 0, 0)
}

/// Stage `elb_open`: allocates the SNAT tuple of the flow planned in this CPU's scratch space
/// (the client's port first, then a pseudo-random walk of the range; each try inserts the
/// reverse half, which fails while any flow, or a closed flow's TIME_WAIT reservation, holds
/// the tuple), inserts the forward half, and forwards the SYN.
#[xdp]
pub fn elb_open(ctx: XdpContext) -> u32 {
    let Some(c) = COUNTERS.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    // SAFETY: this CPU's counters.
    let c = unsafe { &mut *c };
    let mut p = Pkt::EMPTY;
    let mut key = FlowKey::default();
    let (true, Some(scratch), Some(cfg)) = (
        tcp::parse(&ctx, &mut p, &mut key),
        SCRATCH.get_ptr_mut(0),
        CONFIG.get(0),
    ) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // SAFETY: this CPU's scratch entry, written by the stage that tail-called this one.
    let (reverse, forward, plan) = unsafe {
        (
            &raw mut (*scratch).slots[0],
            &raw mut (*scratch).slots[1],
            (*scratch).plan,
        )
    };
    let refuse_seq = (plan.cookie_flow != 0).then_some(plan.cookie.wrapping_add(1));
    if cfg.snat_port_max < cfg.snat_port_min {
        c.drop_no_snat_addr += 1;
        return XDP_DROP;
    }
    // SAFETY: this CPU's scratch entry.
    unsafe {
        (*reverse).hop_mtu = ingress_mtu(scratch, ctx.ingress_ifindex() as u32, (*reverse).created);
    }
    // SAFETY: this CPU's scratch entry.
    let client_port = unsafe { (*forward).key.sport };
    let span = u32::from(cfg.snat_port_max - cfg.snat_port_min) + 1;
    let mut pick = plan.pick;
    let mut chosen = false;
    for attempt in 0..SNAT_TRIES {
        // The client's own port first (keeps ports recognisable in captures), then a
        // pseudo-random walk through the range. A port some listener uses is never handed
        // out: a client of that listener could then look like this flow's reply.
        let port =
            if attempt == 0 && client_port >= cfg.snat_port_min && client_port <= cfg.snat_port_max
            {
                client_port
            } else {
                pick = pick.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                cfg.snat_port_min + ((pick >> 8) % span) as u16
            };
        if is_listener_port(port) {
            c.snat_retries += 1;
            continue;
        }
        // The interface's addresses in turn, from this CPU's copy (`cache`).
        let Some(addr) = cache::snat_addr(plan.hop.ifindex, plan.first_addr.wrapping_add(attempt))
        else {
            c.drop_no_snat_addr += 1;
            return XDP_DROP;
        };
        // SAFETY: this CPU's scratch entry.
        unsafe {
            (*reverse).key.dst = addr;
            (*reverse).key.dport = port;
        }
        // A tuple held by a live or recently closed flow (TIME_WAIT hold) is in the table: the
        // insert fails and we probe on.
        match flows::elb_flow_insert(reverse) {
            -1 => c.snat_retries += 1,
            i if i < 0 => {
                c.drop_conntrack_full += 1;
                if plan.cookie_flow == 0 {
                    // As in `new_flow`: the cookie's ACK must not find the closed flow this
                    // SYN replaces.
                    retire_at(c, plan.replacing_index, plan.replacing_ident);
                    // No room for state: the client still gets in, with a cookie (from the
                    // `elb_syn` stage: this stage's stack has no room for it).
                    return cookie_now(&ctx, c, forward);
                }
                return rst::reply_with(&ctx, c, p.tot_len, refuse_seq);
            }
            i => {
                // SAFETY: this CPU's scratch entry.
                unsafe { (*forward).partner = i as u32 };
                chosen = true;
                break;
            }
        }
    }
    if !chosen {
        c.snat_failures += 1;
        return rst::reply_with(&ctx, c, p.tot_len, refuse_seq);
    }
    // SAFETY: this CPU's scratch entry.
    let (reverse_key, nat) = unsafe {
        (*forward).nat.src = (*reverse).key.dst;
        (*forward).nat.sport = (*reverse).key.dport;
        ((*reverse).key, (*forward).nat)
    };
    let Some(table) = Table::get() else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    if let Some(old) = found_at(plan.replacing_index, plan.replacing_ident) {
        retire(c, &table, &old);
    }
    let index = match flows::elb_flow_insert(forward) {
        i if i >= 0 => i as u32,
        e => {
            // Never leave half a flow behind.
            if let Some(r) = table.find(&reverse_key) {
                flows::remove(&r);
            }
            if e != -1 {
                c.drop_conntrack_full += 1;
                if plan.cookie_flow == 0 {
                    return cookie_now(&ctx, c, forward);
                }
                return rst::reply_with(&ctx, c, p.tot_len, refuse_seq);
            }
            // The same SYN on another CPU won the race: its flow forwards the retransmission.
            c.drop_internal += 1;
            return XDP_DROP;
        }
    };
    // SAFETY: this CPU's scratch entry.
    let (listener_id, backend_id) = unsafe {
        (
            u32::from((*forward).listener_id),
            u32::from((*forward).backend_id),
        )
    };
    if plan.cookie_flow == 0 {
        if let Some(state) = RR_CURSORS.get_ptr_mut(listener_id) {
            // SAFETY: an array element.
            flows::fetch_add(unsafe { &raw mut (*state).half_open }, 1);
        }
    } else {
        c.syncookies_valid += 1;
        // A cookie's flow opens with the client's handshake complete: it starts now.
        // SAFETY: this CPU's scratch entry (a copy of what was inserted).
        let state = flows::word(unsafe { &raw const (*forward).state });
        if state.value & FLOW_F_EVENTS != 0 {
            // SAFETY: as above.
            let now = unsafe { (*forward).created };
            events::start(c, forward, index, state.ident, now);
        }
    }
    c.new_flows += 1;

    // SAFETY: bounds-checked header.
    let ttl = unsafe { (*p.ip).ttl };
    tcp::rewrite::<false>(&p, &nat, ttl, &Xlate::default());
    stats::account(
        listener_id,
        backend_id,
        Direction::In,
        p.tot_len as u64,
        true,
    );
    if plan.unresolved != 0 {
        c.pass_no_neigh += 1;
        return XDP_PASS;
    }
    fwd::transmit(&ctx, c, p.eth, &plan.hop)
}

/// Answers the SYN at hand with a cookie (from the `elb_syn` stage: `elb_open`'s stack has no
/// room for it), for the listener of the planned flow `forward`.
#[inline(always)]
fn cookie_now(ctx: &XdpContext, c: &mut Counters, forward: *mut elb_common::FlowSlot) -> u32 {
    // SAFETY: this CPU's scratch entry.
    let proxy = flows::word(unsafe { &raw const (*forward).state }).value & FLOW_F_PROXY != 0;
    tcp::stage_with(
        ctx,
        c,
        stages::SYN,
        StageArgs {
            index: COOKIE_NOW,
            ident: 0,
            listener_id: 0,
            listener_flags: if proxy { LISTENER_F_PROXY_V1 } else { 0 },
        },
    )
}

/// Ends a closed flow whose client port a new SYN reuses: the forward half goes, the reverse
/// half stays as the SNAT tuple's reservation (the backend may hold it in TIME_WAIT). A flow
/// that reported its start reports its end here (the sweep will not see it).
#[inline(always)]
fn retire(c: &mut Counters, table: &Table, old: &Found) {
    // SAFETY: a pointer into the flow table.
    let partner_key = unsafe { (*old.slot).partner_key() };
    let reverse = table
        .lookup(&partner_key)
        .filter(|r| r.ident() == old.ident());
    let flags = old.flags();
    if flags & (FLOW_F_EVENTS | FLOW_F_CONFIRMED) == FLOW_F_EVENTS | FLOW_F_CONFIRMED {
        // SAFETY: a helper without side effects.
        let now = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() } as u32;
        // The close time: the last packet the flow saw.
        // SAFETY: a pointer into the flow table.
        let seen = flows::word(unsafe { &raw const (*old.slot).seen });
        let when = if seen.ident == old.ident() {
            seen.value
        } else {
            now
        };
        let both = flags | reverse.map_or(0, |r| r.flags());
        events::end(
            c,
            old.slot,
            reverse.map(|r| r.slot.cast_const()),
            old.index,
            old.ident(),
            both,
            when,
        );
    }
    if let Some(r) = reverse {
        // SAFETY: pointers into the flow table; CAS on words carrying the identity.
        unsafe {
            flows::word_or(r.state_word(), old.ident(), elb_common::FLOW_F_RESERVED);
            let now = aya_ebpf::helpers::generated::bpf_jiffies64() as u32;
            flows::word_store(&raw mut (*r.slot).seen, old.ident(), now);
        }
    }
    if old.flags() & FLOW_F_CONFIRMED == 0
        // SAFETY: a pointer into the flow table.
        && let Some(l) = RR_CURSORS.get_ptr_mut(u32::from(unsafe { (*old.slot).listener_id }))
    {
        // SAFETY: an array element.
        flows::fetch_add(unsafe { &raw mut (*l).half_open }, u64::MAX);
    }
    flows::remove(old);
}

/// [`retire`] for the flow at `index` if it still is `ident` (a subprogram: the SYN stage's
/// stack has no room for it inline).
#[inline(never)]
fn retire_at(c: &mut Counters, index: u32, ident: u32) {
    if let (Some(old), Some(table)) = (found_at(index, ident), Table::get()) {
        retire(c, &table, &old);
    }
}

/// True if some listener uses `port`.
#[inline(always)]
fn is_listener_port(port: u16) -> bool {
    LISTENER_PORTS
        .get(u32::from(port >> 6))
        .is_some_and(|w| w & (1u64 << (port & 63)) != 0)
}

/// For a SYN to `listener` (of flow `key`): starts reading the flow table slots its new flow
/// will use, its own (the lookup that follows needs it) and its first SNAT tuple's (the
/// insert's), back to back, so that the two cache misses overlap instead of coming one after
/// the other (everything needed to find both slots is read first: it is in cache). The backend
/// is predicted from the round-robin cursor (another CPU may take that turn first: then one
/// hint is wasted, nothing else), and the prediction is left in this CPU's scratch space for
/// the stages that open the flow (`Hint`). Only the SYN's own slot when the listener's SYN
/// backlog is full (the SYN gets a cookie and opens nothing).
#[inline(always)]
pub fn touch_new_flow(table: &Table, key: &FlowKey, found: &cache::Found, now: u32) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        table.touch(key);
        return;
    };
    // SAFETY: this CPU's scratch entry; the stages that read the hint run next on this CPU.
    let hint = unsafe { &raw mut (*scratch).hint };
    match first_tuple(key, found, now, hint) {
        Some(reverse) => {
            table.touch(key);
            table.touch(&reverse);
        }
        None => {
            // SAFETY: as above.
            unsafe { (*hint).valid = 0 };
            table.touch(key);
        }
    }
}

/// The reverse key of the SNAT tuple `elb_open` will try first for a SYN of flow `key` to
/// `listener` (the client's port, the address `first_addr` picks), for the backend the
/// round-robin cursor points at now, with the prediction written to `hint`; `None` (and
/// `hint` untouched) if that cannot be told cheaply or no flow will open (the listener's SYN
/// backlog is full).
#[inline(always)]
fn first_tuple(
    key: &FlowKey,
    found: &cache::Found,
    now: u32,
    hint: *mut crate::maps::Hint,
) -> Option<FlowKey> {
    let listener = &found.listener;
    let (cfg, state) = (CONFIG.get(0)?, RR_CURSORS.get_ptr(listener.id)?);
    // SAFETY: an array element; plain reads of words other CPUs change atomically.
    let (cursor, half_open) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*state).cursor),
            core::ptr::read_volatile(&raw const (*state).half_open),
        )
    };
    let fix = HALF_OPEN_FIX.get(listener.id).map_or(0, |f| f.value);
    // The backlog first (array reads): under a flood it is full, and the SYN should then pay
    // nothing more.
    if (half_open.wrapping_sub(fix) as i64) >= i64::from(cfg.syn_backlog())
        || key.sport < cfg.snat_port_min
        || key.sport > cfg.snat_port_max
    {
        return None;
    }
    let backend_id = cache::backend_of_turn(listener.id, found.copy, cursor)?;
    let (backend, hop) = (BACKENDS.get(backend_id)?, BACKEND_ROUTES.get(backend_id)?);
    if !hop.fresh(now) {
        return None;
    }
    let addr = cache::snat_addr(hop.ifindex, first_addr(key))?;
    // SAFETY: this CPU's scratch entry (see `touch_new_flow`).
    unsafe {
        (*hint).cursor = cursor;
        (*hint).src = key.src;
        (*hint).sport = key.sport;
        (*hint).valid = 1;
        (*hint).listener_id = listener.id;
        (*hint).backend_id = backend_id;
    }
    Some(FlowKey {
        src: backend.addr,
        dst: addr,
        sport: backend.port,
        dport: key.sport,
        proto: PROTO_TCP,
        _pad: 0,
        _pad1: 0,
    })
}

/// Which of the egress interface's SNAT addresses the first try of flow `key` takes (the later
/// tries take the next ones).
#[inline(always)]
fn first_addr(key: &FlowKey) -> u32 {
    u32::from(key.sport) ^ u32::from_ne_bytes(key.src)
}

/// Masks `value` with `mask` in a way the compiler cannot fold away: when the compiler already
/// knows the bound (from a modulo), it drops a plain mask, but the verifier needs to see one.
#[inline(always)]
pub fn verifier_bound(value: usize, mask: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&raw const value) & mask }
}

/// Length of the fixed headers (Ethernet, IPv4 without options, TCP without options).
const HEADERS: usize = ETH_LEN + IP_LEN + TCP_LEN;

/// Trims the frame to its fixed headers (options and payload go); then, with `extra` > 0,
/// makes room for `extra` bytes of TCP options after them by moving the headers into the
/// headroom (XDP guarantees headroom; a frame built from a small skb may have no tailroom).
/// Returns the header pointers.
#[inline(always)]
fn reshape<const EXTRA: usize>(
    ctx: &XdpContext,
) -> Option<(*mut EthHdr, *mut Ipv4Hdr, *mut TcpHdr)> {
    let have = ctx.data_end() - ctx.data();
    if have < HEADERS {
        return None;
    }
    // SAFETY: shrinking the tail; the kernel validates the delta.
    if have > HEADERS
        && unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), HEADERS as i32 - have as i32) } != 0
    {
        return None;
    }
    if EXTRA > 0 {
        // SAFETY: the kernel checks the headroom; pointers are re-derived below.
        if unsafe { bpf_xdp_adjust_head(ctx.as_ptr().cast(), -(EXTRA as i32)) } != 0 {
            return None;
        }
        let (dst, src) = (
            ptr_at::<[u16; HEADERS / 2]>(ctx, 0)?,
            ptr_at::<[u16; HEADERS / 2]>(ctx, EXTRA)?,
        );
        for i in 0..HEADERS / 2 {
            // SAFETY: both ranges were bounds-checked; ascending copy to a lower address.
            unsafe { *dst.cast::<u16>().add(i) = *src.cast::<u16>().add(i) };
        }
    }
    Some((
        ptr_at::<EthHdr>(ctx, 0)?,
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?,
        ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN)?,
    ))
}

/// Writes the 12 option bytes of a handshake segment: MSS, SACK permitted (or two NOPs),
/// NOP + window scale (or four NOPs).
#[inline(always)]
fn write_handshake_options(ctx: &XdpContext, mss: u16, sack: bool, wscale: u8) -> Option<()> {
    let o = ptr_at::<[u8; 12]>(ctx, ETH_LEN + IP_LEN + TCP_LEN)?;
    let m = mss.to_be_bytes();
    let (s0, s1) = if sack { (4, 2) } else { (1, 1) };
    let w = if wscale == WSCALE_NONE {
        [1, 1, 1, 1]
    } else {
        [1, 3, 3, wscale]
    };
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *o = [2, 4, m[0], m[1], s0, s1, w[0], w[1], w[2], w[3], 0, 0] };
    // The last two bytes are end-of-options padding (the header is 32 bytes).
    Some(())
}

/// Finishes a built segment: IP header fields and both checksums (full computation).
#[inline(never)]
fn seal(ctx: &XdpContext, ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, tcp_len: usize) -> Option<()> {
    // SAFETY: header pointers bounds-checked by the caller after the last resize.
    unsafe {
        (*ip).vihl = 0x45;
        (*ip).tot_len = ((IP_LEN + tcp_len) as u16).to_be();
        (*ip).frag_off = IP_DF_BE;
        (*ip).check = 0;
        (*ip).check = csum::fold(sum_words::<10>(ip.cast()));
        (*tcp).check = 0;
        let pseudo = sum_words::<4>((ip as *const u16).add(6))
            + u32::from(u16::from(PROTO_TCP).to_be())
            + u32::from((tcp_len as u16).to_be());
        let body = if tcp_len == TCP_LEN {
            sum_words::<10>(tcp.cast())
        } else {
            let opts = ptr_at::<[u16; 6]>(ctx, ETH_LEN + IP_LEN + TCP_LEN)?;
            sum_words::<10>(tcp.cast()) + sum_words::<6>(opts.cast())
        };
        (*tcp).check = csum::fold(pseudo + body);
    }
    Some(())
}

/// The current SYN cookie time slot.
#[inline(always)]
fn cookie_slot() -> u32 {
    // SAFETY: a helper without side effects.
    (unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() } >> COOKIE_SLOT_SHIFT) as u32
}

/// Answers a SYN with a SYN-ACK whose sequence number is a cookie: no state, no SNAT tuple,
/// nothing sent to a backend. Only a client that receives it can come back with a valid ACK.
/// (A subprogram: its locals stay out of the new-flow path's stack frame.)
#[inline(never)]
#[expect(clippy::manual_swap, reason = "packet memory: no references into it")]
fn answer_with_cookie(
    ctx: &XdpContext,
    c: &mut Counters,
    p: &Pkt,
    key: &FlowKey,
    listener_flags: u32,
) -> u32 {
    let Some(meta) = META.get(0) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let o = opts::parse_syn(ctx.ctx, p.tcp_off(), p.doff);
    let options = CookieOptions::from_syn(o.mss, o.wscale, o.sack);
    let cookie = hash::syn_cookie(
        meta.cookie_key,
        key.src,
        key.dst,
        key.sport,
        key.dport,
        p.seq,
        cookie_slot(),
        options.bits(),
    );
    let Some((eth, ip, tcp)) = reshape::<12>(ctx) else {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    };
    // SAFETY: header pointers bounds-checked after the resize.
    unsafe {
        let mac = (*eth).dst;
        (*eth).dst = (*eth).src;
        (*eth).src = mac;
        let addr = (*ip).saddr;
        (*ip).saddr = (*ip).daddr;
        (*ip).daddr = addr;
        (*ip).tos = 0;
        (*ip).id = 0;
        (*ip).ttl = 64;
        let port = (*tcp).sport;
        (*tcp).sport = (*tcp).dport;
        (*tcp).dport = port;
        (*tcp).seq = cookie.to_be();
        (*tcp).ack_seq = p.seq.wrapping_add(1).to_be();
        (*tcp).doff = (((TCP_LEN + 12) / 4) as u8) << 4;
        (*tcp).flags = TCP_SYN | TCP_ACK;
        (*tcp).window = 0xffffu16.to_be();
        (*tcp).urg_ptr = 0;
    }
    let ws = if options.wscale == WSCALE_NONE {
        WSCALE_NONE
    } else {
        SYNPROXY_WSCALE
    };
    // A PROXY listener's clients leave room for the header in their first segment (`proxy`).
    let mss = if listener_flags & LISTENER_F_PROXY_V1 != 0 {
        SYNPROXY_MSS - proxy_v1::MAX_LEN as u16
    } else {
        SYNPROXY_MSS
    };
    if write_handshake_options(ctx, mss, options.sack, ws).is_none()
        || seal(ctx, ip, tcp, TCP_LEN + 12).is_none()
    {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    }
    c.syncookies_sent += 1;
    XDP_TX
}

/// An ACK to a listener without a flow: the client's half of a cookie handshake opens a flow
/// (its ACK becomes the SYN the backend gets); anything else is answered with a RST.
#[inline(always)]
fn cookie_ack(ctx: &XdpContext, c: &mut Counters, p: &Pkt, n: &NewSyn) -> u32 {
    let key = &n.key;
    let cookie = p.ack.wrapping_sub(1);
    let options = CookieOptions::from_bits(cookie as u8);
    let client_isn = p.seq.wrapping_sub(1);
    let valid = p.flags & TCP_ACK != 0
        && META.get(0).is_some_and(|meta| {
            let slot = cookie_slot();
            let check = |s: u32| {
                hash::syn_cookie(
                    meta.cookie_key,
                    key.src,
                    key.dst,
                    key.sport,
                    key.dport,
                    client_isn,
                    s,
                    options.bits(),
                ) == cookie
            };
            check(slot) || check(slot.wrapping_sub(1))
        });
    if !valid {
        if p.flags & TCP_ACK != 0 {
            c.syncookies_invalid += 1;
        }
        c.rst_no_flow += 1;
        return rst::reply(ctx, c, p.tot_len);
    }
    if !opts::checksum_ok(
        ctx.ctx,
        u32::from_ne_bytes(key.src),
        u32::from_ne_bytes(key.dst),
        p.doff,
        p.tot_len - p.ihl,
    ) {
        c.drop_tcp_checksum += 1;
        return XDP_DROP;
    }
    // SAFETY: bounds-checked header.
    let client_win = u16::from_be(unsafe { (*p.tcp).window });
    // The client's ACK becomes the SYN the backend gets: its own ISN and options.
    if syn_from_ack(ctx, client_win, options, client_isn).is_none() {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    }
    to_plan(
        ctx,
        c,
        &Origin {
            cookie_flow: 1,
            cookie,
            client_win,
            wscale: options.wscale,
        },
        n,
    )
}

/// Rebuilds the client's segment at hand into the SYN the backend gets for a cookie flow: the
/// client's ISN, the options its cookie carries, its window unscaled. Returns the SYN.
#[inline(always)]
fn syn_from_ack(
    ctx: &XdpContext,
    client_win: u16,
    options: CookieOptions,
    client_isn: u32,
) -> Option<Pkt> {
    let (eth, ip, tcp) = reshape::<12>(ctx)?;
    let syn_window = if options.wscale == WSCALE_NONE {
        u32::from(client_win)
    } else {
        u32::from(client_win) << options.wscale
    };
    // SAFETY: header pointers bounds-checked after the resize.
    unsafe {
        (*tcp).seq = client_isn.to_be();
        (*tcp).ack_seq = 0;
        (*tcp).doff = (((TCP_LEN + 12) / 4) as u8) << 4;
        (*tcp).flags = TCP_SYN;
        (*tcp).window = (syn_window.min(0xffff) as u16).to_be();
        (*tcp).urg_ptr = 0;
    }
    write_handshake_options(ctx, options.mss(), options.sack, options.wscale)?;
    seal(ctx, ip, tcp, TCP_LEN + 12)?;
    Some(Pkt {
        eth,
        ip,
        tcp,
        ihl: IP_LEN,
        tot_len: IP_LEN + TCP_LEN + 12,
        doff: TCP_LEN + 12,
        flags: TCP_SYN,
        seq: client_isn,
        ack: 0,
    })
}

/// Stage `elb_resend`: the client's first segment again (its handshake ACK or first data,
/// retransmitted; `StageArgs`: the flow) while a SYN proxy flow still waits for the backend's
/// SYN-ACK: the SYN to the backend, or the backend's SYN-ACK, was lost. The segment is rebuilt
/// into the same SYN (the cookie it acknowledges carries the options) and sent to the backend
/// again; a backend that has the connection answers a repeated SYN with its SYN-ACK again. So
/// the client's retransmissions drive the backend handshake's.
#[xdp]
pub fn elb_resend(ctx: XdpContext) -> u32 {
    let args = args();
    let mut e = Entered::EMPTY;
    let Some(c) = begin(&ctx, &mut e) else {
        return XDP_DROP;
    };
    let Entered { p, env, .. } = e;
    let Some(found) = found_at(args.index, args.ident) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    resend_syn(&ctx, c, &p, found.slot, env.now)
}

#[inline(always)]
fn resend_syn(
    ctx: &XdpContext,
    c: &mut Counters,
    p: &Pkt,
    f: *const elb_common::FlowSlot,
    now: u32,
) -> u32 {
    // SAFETY: a pointer into the flow table; fields fixed at creation (`found_at` checked the
    // identity).
    let (nat, backend_id, client_win) =
        unsafe { ((*f).nat, u32::from((*f).backend_id), (*f).client_win) };
    let Some(backend) = BACKENDS.get(backend_id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let addr = u32::from_ne_bytes(backend.addr);
    // SAFETY: bounds-checked header.
    let ttl = unsafe { (*p.ip).ttl };
    let options = CookieOptions::from_bits(p.ack.wrapping_sub(1) as u8);
    let Some(syn) = syn_from_ack(ctx, client_win, options, p.seq.wrapping_sub(1)) else {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    };
    tcp::rewrite::<false>(&syn, &nat, ttl, &Xlate::default());
    c.synproxy_syn_resent += 1;
    match fwd::backend_hop(ctx, backend_id, addr, now) {
        Ok(hop) => fwd::transmit(ctx, c, syn.eth, &hop),
        Err(NoHop::Unresolved(_)) => {
            c.pass_no_neigh += 1;
            XDP_PASS
        }
        Err(NoHop::NoRoute) => {
            c.drop_fib_failed += 1;
            XDP_DROP
        }
    }
}

/// The backend's SYN-ACK of a SYN proxy flow: the offset between the servo's and the backend's
/// sequence numbers is now known; the SYN-ACK becomes the ACK that completes the backend's
/// handshake (the client's was completed by the cookie). Retransmitted SYN-ACKs are answered
/// the same way.
#[inline(always)]
#[expect(clippy::manual_swap, reason = "packet memory: no references into it")]
pub fn backend_synack(
    ctx: &XdpContext,
    c: &mut Counters,
    env: &Env,
    p: &Pkt,
    found: &Found,
) -> u32 {
    let table = &env.table;
    let f = found.slot;
    let ident = found.ident();
    // SAFETY: a pointer into the flow table.
    let (cookie, expected_ack, partner_key) = unsafe {
        (
            (*f).isn,
            flows::word(&raw const (*f).acked).value,
            (*f).partner_key(),
        )
    };
    if p.ack != expected_ack {
        // Not an answer to the SYN we sent.
        c.drop_internal += 1;
        return XDP_DROP;
    }
    let Some(fwd) = table.lookup(&partner_key).filter(|f| f.ident() == ident) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // SAFETY: a pointer into the flow table (second cache line, fixed at creation).
    let (client_win, c_shift) = unsafe { ((*fwd.slot).client_win, (*fwd.slot).wscale) };
    let b_shift = opts::parse_syn(ctx.ctx, p.tcp_off(), p.doff).wscale;
    let agreed = c_shift != WSCALE_NONE && b_shift != WSCALE_NONE;
    // Window fields: the client scales by its shift and reads ours with SYNPROXY_WSCALE (if
    // it offered scaling at all); the backend scales by its own and reads the client's with
    // the client's shift only if it agreed to scaling.
    let fwd_from = if c_shift == WSCALE_NONE { 0 } else { c_shift };
    let fwd_to = if agreed { c_shift } else { 0 };
    let rev_from = if agreed { b_shift } else { 0 };
    let rev_to = if c_shift == WSCALE_NONE {
        0
    } else {
        SYNPROXY_WSCALE
    };
    if found.flags() & FLOW_F_XLATE == 0 {
        let delta = cookie.wrapping_sub(p.seq);
        // SAFETY: pointers into the flow table; CAS on words carrying the identity.
        unsafe {
            flows::word_store(&raw mut (*f).xlate, ident, delta);
            flows::word_store(
                &raw mut (*f).xlate_wscale,
                ident,
                u32::from(rev_from) | (u32::from(rev_to) << 8),
            );
            flows::word_store(&raw mut (*fwd.slot).xlate, ident, delta);
            flows::word_store(
                &raw mut (*fwd.slot).xlate_wscale,
                ident,
                u32::from(fwd_from) | (u32::from(fwd_to) << 8),
            );
        }
        flows::word_or(found.state_word(), ident, FLOW_F_XLATE);
        flows::word_or(fwd.state_word(), ident, FLOW_F_XLATE);
    }
    let backend_isn = p.seq;
    let window = (u32::from(client_win) << fwd_from) >> fwd_to;
    let Some((eth, ip, tcp)) = reshape::<0>(ctx) else {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    };
    // SAFETY: header pointers bounds-checked after the resize.
    unsafe {
        let mac = (*eth).dst;
        (*eth).dst = (*eth).src;
        (*eth).src = mac;
        let addr = (*ip).saddr;
        (*ip).saddr = (*ip).daddr;
        (*ip).daddr = addr;
        (*ip).tos = 0;
        (*ip).id = 0;
        (*ip).ttl = 64;
        let port = (*tcp).sport;
        (*tcp).sport = (*tcp).dport;
        (*tcp).dport = port;
        (*tcp).seq = expected_ack.to_be();
        (*tcp).ack_seq = backend_isn.wrapping_add(1).to_be();
        (*tcp).doff = ((TCP_LEN / 4) as u8) << 4;
        (*tcp).flags = TCP_ACK;
        (*tcp).window = (window.min(0xffff) as u16).to_be();
        (*tcp).urg_ptr = 0;
    }
    if seal(ctx, ip, tcp, TCP_LEN).is_none() {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    }
    c.synproxy_acks += 1;
    XDP_TX
}
