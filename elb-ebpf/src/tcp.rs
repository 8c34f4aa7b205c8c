//! The TCP path: conntrack lookup, new-flow backend selection (per-connection round-robin),
//! SNAT port allocation, the full-NAT rewrite and connection-close tracking.

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_NOEXIST,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::XdpContext,
};
use elb_common::{
    BACKEND_ACTIVE, BACKEND_REMOVED, CLOSE_GRACE_NS, Counters, FLOW_F_EXPIRED, FLOW_F_FIN_BACKEND,
    FLOW_F_FIN_CLIENT, FLOW_F_REPLY, FLOW_F_RST, Flow, FlowKey, LAST_SEEN_GRANULARITY_NS,
    LISTENER_F_LOCAL, Listener, ListenerKey, MAX_SET_BACKENDS, MAX_SNAT_ADDRS, NextHop, PROTO_TCP,
    SNAT_TRIES, csum,
};

use crate::{
    fwd,
    hdr::{EthHdr, IP_LEN, Ipv4Hdr, TCP_ACK, TCP_FIN, TCP_LEN, TCP_RST, TCP_SYN, TcpHdr, ptr_at},
    maps::{
        BACKEND_ROUTES, BACKEND_SETS, BACKENDS, CONFIG, CONNTRACK, LISTENERS, RR_CURSORS,
        SNAT_ADDRS,
    },
    rst, sg,
    stats::{self, Direction},
};

/// Handles an unfragmented IPv4 TCP packet.
#[inline(always)]
pub fn handle(
    ctx: &XdpContext,
    c: &mut Counters,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    ihl: usize,
    tot_len: usize,
) -> u32 {
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, crate::hdr::ETH_LEN + ihl) else {
        c.drop_tcp_truncated += 1;
        return XDP_DROP;
    };
    // SAFETY (derefs of ip/tcp/eth below): bounds-checked by `ptr_at`, and no helper that moves
    // packet data runs before their last use.
    let doff = usize::from(unsafe { (*tcp).doff } >> 4) * 4;
    if doff < TCP_LEN || ihl + doff > tot_len {
        c.drop_tcp_truncated += 1;
        return XDP_DROP;
    }
    let key = unsafe {
        FlowKey {
            src: (*ip).saddr.to_ne_bytes(),
            dst: (*ip).daddr.to_ne_bytes(),
            sport: u16::from_be((*tcp).sport),
            dport: u16::from_be((*tcp).dport),
            proto: PROTO_TCP,
            _pad: [0; 3],
        }
    };
    let flags = unsafe { (*tcp).flags };
    let pure_syn = flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
    let listener_key = ListenerKey {
        vip: key.dst,
        port: key.dport,
        proto: PROTO_TCP,
        _pad: 0,
    };

    if let Some(flow) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: a conntrack value; other CPUs may update its fields concurrently, which the
        // code tolerates (flags use atomic OR; timestamps are last-writer-wins).
        let f = unsafe { &mut *flow };
        let reply = f.flags & FLOW_F_REPLY != 0;
        if pure_syn && !reply && (f.is_closed() || f.flags & FLOW_F_EXPIRED != 0) {
            // The client reuses its port for a new connection after the old one closed.
            if let Some(listener) = unsafe { LISTENERS.get(listener_key) } {
                if listener.flags & LISTENER_F_LOCAL != 0 {
                    c.pass_local += 1;
                    return XDP_PASS;
                }
                if ihl != IP_LEN {
                    c.drop_ip_options += 1;
                    return XDP_DROP;
                }
                return new_flow(ctx, c, eth, ip, tcp, &key, listener, tot_len);
            }
        }
        if ihl != IP_LEN {
            c.drop_ip_options += 1;
            return XDP_DROP;
        }
        return established(ctx, c, eth, ip, tcp, f, flags, tot_len);
    }

    match unsafe { LISTENERS.get(listener_key) } {
        // The servo's own engine serves it: the local stack gets every packet of it.
        Some(listener) if listener.flags & LISTENER_F_LOCAL != 0 => {
            c.pass_local += 1;
            XDP_PASS
        }
        Some(listener) if pure_syn => {
            if ihl != IP_LEN {
                c.drop_ip_options += 1;
                return XDP_DROP;
            }
            new_flow(ctx, c, eth, ip, tcp, &key, listener, tot_len)
        }
        Some(_) => {
            // A segment of a connection we do not know (expired, evicted, or from before a
            // reset of the state): answer as a TCP stack would (RFC 793 "Reset Generation"),
            // so the client learns now instead of retransmitting into silence. Never answer a
            // RST, and never for packets with IP options (we only build option-less resets).
            if flags & TCP_RST != 0 || ihl != IP_LEN {
                c.drop_no_flow += 1;
                XDP_DROP
            } else {
                c.rst_no_flow += 1;
                rst::reply(ctx, c, tot_len)
            }
        }
        None => {
            c.pass_not_ours += 1;
            XDP_PASS
        }
    }
}

/// A packet of a known flow, in either direction.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "packet pointers stay in registers this way"
)]
fn established(
    ctx: &XdpContext,
    c: &mut Counters,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    tcp: *mut TcpHdr,
    f: &mut Flow,
    flags: u8,
    tot_len: usize,
) -> u32 {
    let reply = f.flags & FLOW_F_REPLY != 0;
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };

    // FLOW_F_EXPIRED: the agent expired the flow for idleness and removed its forward half; the
    // reverse half only keeps the SNAT tuple reserved.
    if f.flags & (FLOW_F_RST | FLOW_F_EXPIRED) != 0
        || (f.is_closed() && now.wrapping_sub(f.closed_ns) > CLOSE_GRACE_NS)
    {
        c.drop_flow_closed += 1;
        return XDP_DROP;
    }
    let Some(backend) = BACKENDS.get(f.backend_id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    if backend.generation != f.backend_gen || backend.state == BACKEND_REMOVED || backend.state == 0
    {
        return refuse_removed(ctx, c, reply, tot_len);
    }
    if now.wrapping_sub(f.last_seen_ns) > LAST_SEEN_GRANULARITY_NS {
        f.last_seen_ns = now;
    }
    if flags & (TCP_FIN | TCP_RST) != 0 {
        track_close(f, flags, reply, now);
    }

    rewrite(ip, tcp, f);
    stats::account(
        f.listener_id,
        f.backend_id,
        if reply { Direction::Out } else { Direction::In },
        tot_len as u64,
        false,
    );
    if f.route.fresh(now) {
        return fwd::transmit(ctx, c, eth, &f.route);
    }
    let route = fwd::lookup(
        ctx,
        PROTO_TCP,
        u32::from_ne_bytes(f.nat_src),
        u32::from_ne_bytes(f.nat_dst),
        tot_len as u16,
    );
    route.remember(&mut f.route, now);
    fwd::emit(ctx, c, eth, &route)
}

/// A packet of a flow whose backend was removed: the client gets a RST (so it stops at once),
/// the backend's packets are dropped.
#[inline(always)]
fn refuse_removed(ctx: &XdpContext, c: &mut Counters, reply: bool, tot_len: usize) -> u32 {
    if reply {
        c.drop_backend_removed += 1;
        return XDP_DROP;
    }
    c.rst_backend_removed += 1;
    rst::reply(ctx, c, tot_len)
}

/// Records a FIN or RST in both halves of the flow; the flow is closed once both sides sent a
/// FIN, or at once on a RST. Its SNAT tuple stays reserved (the agent removes it later).
#[inline(always)]
fn track_close(f: &mut Flow, flags: u8, reply: bool, now: u64) {
    let bit = if flags & TCP_RST != 0 {
        FLOW_F_RST
    } else if reply {
        FLOW_F_FIN_BACKEND
    } else {
        FLOW_F_FIN_CLIENT
    };
    // SAFETY: `flags` is a live u32 inside a map value.
    unsafe { atomic_or::<u32, u32, { AtomicOrdering::SeqCst }>(&raw mut f.flags, bit) };
    let mut seen = f.flags;
    let partner = CONNTRACK.get_ptr_mut(f.partner_key(PROTO_TCP));
    if let Some(p) = partner {
        // SAFETY: as above, for the other half.
        unsafe {
            atomic_or::<u32, u32, { AtomicOrdering::SeqCst }>(&raw mut (*p).flags, bit);
            seen |= (*p).flags;
        }
    }
    let closed = seen & FLOW_F_RST != 0
        || seen & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND)
            == FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND;
    if closed && f.closed_ns == 0 {
        f.closed_ns = now;
        if let Some(p) = partner {
            // SAFETY: as above.
            unsafe { (*p).closed_ns = now };
        }
    }
}

/// A SYN to a listener: pick the next backend, allocate a SNAT tuple, create both halves of the
/// flow, rewrite and forward.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "packet pointers stay in registers this way"
)]
fn new_flow(
    ctx: &XdpContext,
    c: &mut Counters,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    tcp: *mut TcpHdr,
    key: &FlowKey,
    listener: &Listener,
    tot_len: usize,
) -> u32 {
    // Security groups first: a client they do not admit gets nothing (no RST, no state).
    if !sg::admits(listener, key) {
        c.drop_sg_denied += 1;
        return XDP_DROP;
    }
    // SAFETY: a map value; replaced (not modified) by userspace, so reading it is consistent.
    let Some(set) = (unsafe { BACKEND_SETS.get(listener.id) }) else {
        c.rst_no_backend += 1;
        return rst::reply(ctx, c, tot_len);
    };
    let count = set.count as u64;
    if count == 0 || count > MAX_SET_BACKENDS as u64 {
        c.rst_no_backend += 1;
        return rst::reply(ctx, c, tot_len);
    }
    let Some(cursor) = RR_CURSORS.get_ptr_mut(listener.id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // The exact round-robin: one atomic fetch-and-add per new flow, shared by all CPUs.
    // SeqCst is required: with Relaxed the compiler emits a non-fetching add (toolchain.md).
    // SAFETY: `cursor` points at a live u64 array element.
    let turn = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(cursor, 1) };
    // slot < count <= MAX_SET_BACKENDS (a power of two), so the mask changes nothing; it is
    // there because the verifier does not derive bounds from a modulo.
    let slot = verifier_bound((turn % count) as usize, MAX_SET_BACKENDS - 1);
    let backend_id = set.backends[slot];
    let Some(backend) = BACKENDS.get(backend_id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    if backend.state != BACKEND_ACTIVE {
        c.drop_internal += 1;
        return XDP_DROP;
    }
    let backend_addr = backend.addr;
    let backend_port = backend.port;

    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    // Route to the backend first: the egress interface decides the SNAT address. The next hop
    // towards a backend is the same for all its flows; it is cached per backend.
    let Some(cached) = BACKEND_ROUTES.get_ptr_mut(backend_id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // SAFETY: array element of a live map; concurrent writers store the same lookup result.
    let cached = unsafe { &mut *cached };
    let mut hop = *cached;
    let mut unresolved = false;
    if !hop.fresh(now) {
        let route = fwd::lookup(
            ctx,
            PROTO_TCP,
            u32::from_ne_bytes(key.dst),
            u32::from_ne_bytes(backend_addr),
            tot_len as u16,
        );
        match route.egress() {
            Some(_) if route.rc == aya_ebpf::bindings::BPF_FIB_LKUP_RET_SUCCESS => {
                route.remember(cached, now);
                hop = *cached;
            }
            Some(egress) => {
                // Neighbour not resolved yet: the kernel forwards this packet (and resolves it).
                hop.ifindex = egress;
                unresolved = true;
            }
            None => {
                c.drop_fib_failed += 1;
                return XDP_DROP;
            }
        }
    }
    let egress = hop.ifindex;
    // SAFETY: map value read-only here.
    let Some(snat) = (unsafe { SNAT_ADDRS.get(egress) }) else {
        c.drop_no_snat_addr += 1;
        return XDP_DROP;
    };
    let Some(cfg) = CONFIG.get(0) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let addr_count = snat.count;
    if addr_count == 0
        || addr_count > MAX_SNAT_ADDRS as u32
        || cfg.snat_port_max < cfg.snat_port_min
    {
        c.drop_no_snat_addr += 1;
        return XDP_DROP;
    }
    let reverse = Flow {
        nat_src: key.dst,
        nat_dst: key.src,
        nat_sport: key.dport,
        nat_dport: key.sport,
        backend_id,
        backend_gen: backend.generation,
        listener_id: listener.id,
        flags: FLOW_F_REPLY,
        _pad: 0,
        last_seen_ns: now,
        closed_ns: 0,
        created_ns: now,
        route: NextHop::default(),
    };
    let span = u32::from(cfg.snat_port_max - cfg.snat_port_min) + 1;
    let first_addr = u32::from(key.sport) ^ u32::from_ne_bytes(key.src);
    let mut chosen: Option<FlowKey> = None;
    for attempt in 0..SNAT_TRIES {
        // The client's own port first (keeps ports recognisable in captures), then random ones.
        let port =
            if attempt == 0 && key.sport >= cfg.snat_port_min && key.sport <= cfg.snat_port_max {
                key.sport
            } else {
                // SAFETY: helper without side effects.
                cfg.snat_port_min + (unsafe { bpf_get_prandom_u32() } % span) as u16
            };
        // Masked for the verifier, as above (addr_count <= MAX_SNAT_ADDRS, a power of two).
        let addr_slot = verifier_bound(
            (first_addr.wrapping_add(attempt) % addr_count) as usize,
            MAX_SNAT_ADDRS - 1,
        );
        let reverse_key = FlowKey {
            src: backend_addr,
            dst: snat.addrs[addr_slot],
            sport: backend_port,
            dport: port,
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        // NOEXIST: a tuple still held by a live or recently closed flow (TIME_WAIT hold) is
        // taken; the insert fails and we probe on.
        if CONNTRACK
            .insert(reverse_key, reverse, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            chosen = Some(reverse_key);
            break;
        }
        c.snat_retries += 1;
    }
    let Some(reverse_key) = chosen else {
        c.snat_failures += 1;
        return rst::reply(ctx, c, tot_len);
    };
    let forward = Flow {
        nat_src: reverse_key.dst,
        nat_dst: backend_addr,
        nat_sport: reverse_key.dport,
        nat_dport: backend_port,
        flags: 0,
        route: if unresolved { NextHop::default() } else { hop },
        ..reverse
    };
    if CONNTRACK.insert(key, forward, u64::from(BPF_ANY)).is_err() {
        // Never leave half a mapping behind.
        let _ = CONNTRACK.remove(reverse_key);
        c.drop_conntrack_full += 1;
        return XDP_DROP;
    }
    c.new_flows += 1;

    rewrite(ip, tcp, &forward);
    stats::account(listener.id, backend_id, Direction::In, tot_len as u64, true);
    if unresolved {
        c.pass_no_neigh += 1;
        return XDP_PASS;
    }
    fwd::transmit(ctx, c, eth, &hop)
}

/// Masks `value` with `mask` in a way the compiler cannot fold away: when the compiler already
/// knows the bound (from a modulo), it drops a plain mask, but the verifier needs to see one.
#[inline(always)]
fn verifier_bound(value: usize, mask: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&raw const value) & mask }
}

/// Rewrites addresses and ports to the flow's NAT tuple, updating both checksums incrementally.
#[inline(always)]
fn rewrite(ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, f: &Flow) {
    let new_src = u32::from_ne_bytes(f.nat_src);
    let new_dst = u32::from_ne_bytes(f.nat_dst);
    let ports = tcp.cast::<u32>();
    let new_ports = u32::from(f.nat_sport.to_be()) | (u32::from(f.nat_dport.to_be()) << 16);
    // SAFETY: ip and tcp were bounds-checked by the caller; the ports are the first 4 bytes of
    // the TCP header.
    unsafe {
        let old_src = (*ip).saddr;
        let old_dst = (*ip).daddr;
        let old_ports = ports.read_unaligned();

        let mut ip_check = (*ip).check;
        ip_check = csum::replace_u32(ip_check, old_src, new_src);
        ip_check = csum::replace_u32(ip_check, old_dst, new_dst);
        (*ip).check = ip_check;
        (*ip).saddr = new_src;
        (*ip).daddr = new_dst;

        let mut tcp_check = (*tcp).check;
        tcp_check = csum::replace_u32(tcp_check, old_src, new_src);
        tcp_check = csum::replace_u32(tcp_check, old_dst, new_dst);
        tcp_check = csum::replace_u32(tcp_check, old_ports, new_ports);
        (*tcp).check = tcp_check;
        ports.write_unaligned(new_ports);
    }
}
