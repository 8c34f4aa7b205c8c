//! The TCP path: the flow lookup, the established path in both directions (rewrite, sequence
//! translation, close tracking, RST validation), and the dispatch of what has no flow.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use elb_common::{
    ACK_TRACK_STEP, BACKEND_REMOVED, Counters, FLOW_F_ACKED, FLOW_F_ALIVE_BACKEND,
    FLOW_F_ALIVE_CLIENT, FLOW_F_CONFIRMED, FLOW_F_EVENTS, FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT,
    FLOW_F_PROXY, FLOW_F_REPLY, FLOW_F_RESERVED, FLOW_F_RST, FLOW_F_SYNPROXY, FLOW_F_XLATE,
    FlowKey, FlowSlot, FlowWord, LISTENER_F_LOCAL, ListenerKey, NatTuple, NextHop, PROTO_TCP,
    RST_WINDOW, SEEN_REFRESH_JIFFIES, SYNPROXY_RESEND_JIFFIES, StageArgs, csum, stages,
};

use crate::{
    cache, events,
    flows::{self, Found, Table},
    fwd::{self, NoHop},
    hdr::{
        ETH_LEN, EthHdr, IP_DF_BE, IP_LEN, Ipv4Hdr, TCP_ACK, TCP_FIN, TCP_LEN, TCP_RST, TCP_SYN,
        TcpHdr, ptr_at,
    },
    icmp,
    maps::{
        BACKENDS, COUNTERS, FINISH, FINISH_PASS_FRAGMENT, FINISH_PASS_NO_NEIGH, FINISH_SEND,
        Finish, RR_CURSORS, STAGE_ARGS, STAGES,
    },
    opts, rst, sg,
    stats::{self, Direction},
};

/// A parsed IPv4/TCP packet (IPv4 header without options unless `ihl` says otherwise).
#[derive(Clone, Copy)]
pub struct Pkt {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub tcp: *mut TcpHdr,
    /// IPv4 header length.
    pub ihl: usize,
    /// IPv4 total length.
    pub tot_len: usize,
    /// TCP header length.
    pub doff: usize,
    /// TCP flags.
    pub flags: u8,
    /// Sequence and acknowledgement numbers, host order.
    pub seq: u32,
    pub ack: u32,
}

impl Pkt {
    /// A packet with nothing parsed yet.
    pub const EMPTY: Self = Self {
        eth: core::ptr::null_mut(),
        ip: core::ptr::null_mut(),
        tcp: core::ptr::null_mut(),
        ihl: 0,
        tot_len: 0,
        doff: 0,
        flags: 0,
        seq: 0,
        ack: 0,
    };

    /// Offset of the TCP header in the frame.
    #[inline(always)]
    pub fn tcp_off(&self) -> usize {
        ETH_LEN + self.ihl
    }
}

/// Parses the packet at `ctx` as IPv4 without options and TCP into `p` and `key` (for the
/// stages, which get only the context: `elb` checked all this already). Out-parameters, not an
/// `Option`: the compiler copies an `Option`'s unset bytes, and the verifier refuses reads of
/// uninitialised registers.
#[inline(always)]
pub fn parse(ctx: &XdpContext, p: &mut Pkt, key: &mut FlowKey) -> bool {
    let (Some(eth), Some(ip), Some(tcp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN),
        ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN),
    ) else {
        return false;
    };
    // SAFETY: all three headers were bounds-checked.
    unsafe {
        let tot_len = usize::from(u16::from_be((*ip).tot_len));
        let doff = usize::from((*tcp).doff >> 4) * 4;
        if (*ip).vihl != 0x45
            || doff < TCP_LEN
            || IP_LEN + doff > tot_len
            || ETH_LEN + tot_len > ctx.data_end() - ctx.data()
        {
            return false;
        }
        *p = Pkt {
            eth,
            ip,
            tcp,
            ihl: IP_LEN,
            tot_len,
            doff,
            flags: (*tcp).flags,
            seq: u32::from_be((*tcp).seq),
            ack: u32::from_be((*tcp).ack_seq),
        };
        *key = FlowKey {
            src: (*ip).saddr.to_ne_bytes(),
            dst: (*ip).daddr.to_ne_bytes(),
            sport: u16::from_be((*tcp).sport),
            dport: u16::from_be((*tcp).dport),
            proto: PROTO_TCP,
            _pad: 0,
            _pad1: 0,
        };
    }
    true
}

/// What every path needs besides the packet: the flow table and the time.
#[derive(Clone, Copy)]
pub struct Env {
    /// The flow table.
    pub table: Table,
    /// jiffies, low 32 bits.
    pub now: u32,
}

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
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, ETH_LEN + ihl) else {
        c.drop_tcp_truncated += 1;
        return XDP_DROP;
    };
    // SAFETY (derefs of ip/tcp below): bounds-checked by `ptr_at`, and no helper that moves
    // packet data runs before their last use.
    let doff = usize::from(unsafe { (*tcp).doff } >> 4) * 4;
    if doff < TCP_LEN || ihl + doff > tot_len {
        c.drop_tcp_truncated += 1;
        return XDP_DROP;
    }
    let p = unsafe {
        Pkt {
            eth,
            ip,
            tcp,
            ihl,
            tot_len,
            doff,
            flags: (*tcp).flags,
            seq: u32::from_be((*tcp).seq),
            ack: u32::from_be((*tcp).ack_seq),
        }
    };
    let key = unsafe {
        FlowKey {
            src: (*ip).saddr.to_ne_bytes(),
            dst: (*ip).daddr.to_ne_bytes(),
            sport: u16::from_be((*tcp).sport),
            dport: u16::from_be((*tcp).dport),
            proto: PROTO_TCP,
            _pad: 0,
            _pad1: 0,
        }
    };
    let pure_syn = p.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
    let listener_key = ListenerKey {
        vip: key.dst,
        port: key.dport,
        proto: PROTO_TCP,
        _pad: 0,
    };
    let Some(table) = Table::get() else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let env = Env {
        table,
        // SAFETY: a helper without side effects (inlined by the verifier: a plain load).
        now: unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() } as u32,
    };

    let syn_listener = if pure_syn {
        cache::listener(&listener_key)
    } else {
        None
    };
    if let Some(found) = &syn_listener {
        crate::syn::touch_new_flow(&table, &key, found, env.now);
    }
    if let Some(found) = table.lookup(&key) {
        let reply = found.flags() & FLOW_F_REPLY != 0;
        if pure_syn && reply {
            // Backends answer with SYN-ACKs; a bare SYN is never a reply. (SNAT never hands
            // out a listener's port, so no listener's client can collide with a reply tuple.)
            c.drop_no_flow += 1;
            return XDP_DROP;
        }
        if pure_syn && elb_common::is_closed(found.flags()) {
            // The client reuses its port for a new connection after the old one closed.
            if let Some(cache::Found { listener, .. }) = syn_listener {
                if ihl != IP_LEN {
                    c.drop_ip_options += 1;
                    return XDP_DROP;
                }
                return stage_with(
                    ctx,
                    c,
                    stages::SYN,
                    StageArgs {
                        index: found.index,
                        ident: found.ident(),
                        listener_id: listener.id,
                        listener_flags: listener.flags,
                    },
                );
            }
        }
        if ihl != IP_LEN {
            c.drop_ip_options += 1;
            return XDP_DROP;
        }
        if found.flags() & (FLOW_F_SYNPROXY | FLOW_F_PROXY) != 0 {
            // Flows whose sequence numbers are translated take the `elb_xlate` stage: the
            // common path stays small (for the verifier, the stack and the cache).
            return stage(ctx, c, stages::XLATE, found.index, found.ident());
        }
        return established::<false>(ctx, c, &env, &p, &found);
    }

    let listener = if pure_syn {
        syn_listener
    } else {
        cache::listener(&listener_key)
    };
    match listener.map(|found| found.listener) {
        Some(listener) if listener.flags & LISTENER_F_LOCAL != 0 => {
            // The engine's sockets get what the kernel accepts: a client the security groups
            // do not admit never gets its SYN there (later segments find no connection).
            if p.flags & TCP_SYN != 0 && !sg::admits(&listener, &key) {
                c.drop_sg_denied += 1;
                return XDP_DROP;
            }
            c.pass_local += 1;
            XDP_PASS
        }
        Some(listener) if pure_syn => {
            if ihl != IP_LEN {
                c.drop_ip_options += 1;
                return XDP_DROP;
            }
            stage_with(
                ctx,
                c,
                stages::SYN,
                StageArgs {
                    index: 0,
                    ident: 0,
                    listener_id: listener.id,
                    listener_flags: listener.flags,
                },
            )
        }
        Some(listener) if p.flags & (TCP_RST | TCP_SYN) == 0 && ihl == IP_LEN => {
            // The handshake's ACK of a SYN we answered with a cookie opens a flow; any other
            // segment of an unknown connection is answered with a RST.
            stage_with(
                ctx,
                c,
                stages::COOKIE_ACK,
                StageArgs {
                    index: 0,
                    ident: 0,
                    listener_id: listener.id,
                    listener_flags: listener.flags,
                },
            )
        }
        Some(_) => {
            // Never answer a RST, and never packets with IP options (we only build option-less
            // resets).
            c.drop_no_flow += 1;
            XDP_DROP
        }
        None => {
            c.pass_not_ours += 1;
            XDP_PASS
        }
    }
}

/// Hands the packet to stage `slot` (a tail call: the stage gets a stack of its own);
/// `index`/`ident` name the flow concerned.
#[inline(always)]
pub fn stage(ctx: &XdpContext, c: &mut Counters, slot: u32, index: u32, ident: u32) -> u32 {
    stage_with(
        ctx,
        c,
        slot,
        StageArgs {
            index,
            ident,
            listener_id: 0,
            listener_flags: 0,
        },
    )
}

/// Hands the packet to stage `slot` with `args`.
#[inline(always)]
pub fn stage_with(ctx: &XdpContext, c: &mut Counters, slot: u32, args: StageArgs) -> u32 {
    if let Some(a) = STAGE_ARGS.get_ptr_mut(0) {
        // SAFETY: this CPU's entry; the stage runs next on this CPU. Field by field and
        // volatile: LLVM turns a copy of zeros into a `memset` call, which the BPF target runs
        // a byte at a time.
        unsafe {
            core::ptr::write_volatile(&raw mut (*a).index, args.index);
            core::ptr::write_volatile(&raw mut (*a).ident, args.ident);
            core::ptr::write_volatile(&raw mut (*a).listener_id, args.listener_id);
            core::ptr::write_volatile(&raw mut (*a).listener_flags, args.listener_flags);
        }
    }
    // SAFETY: a tail call; it returns only if the slot is empty.
    unsafe { STAGES.tail_call(ctx, slot) };
    c.drop_internal += 1;
    XDP_DROP
}

/// How a flow half's sequence space differs on the far side.
#[derive(Clone, Copy, Default)]
pub struct Xlate {
    /// Added to the sequence number.
    pub seq_add: u32,
    /// Subtracted from the acknowledgement number and the SACK edges.
    pub ack_sub: u32,
    /// Window field conversion: `(win << from) >> to`.
    pub win_from: u8,
    pub win_to: u8,
}

/// Stage `elb_xlate`: a packet of a flow whose sequence numbers are translated (SYN proxy,
/// PROXY protocol); `StageArgs` names its flow half.
#[xdp]
pub fn elb_xlate(ctx: XdpContext) -> u32 {
    let Some(c) = COUNTERS.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    // SAFETY: this CPU's counters.
    let c = unsafe { &mut *c };
    let (index, ident) = STAGE_ARGS.get(0).map_or((0, 0), |a| (a.index, a.ident));
    let mut p = Pkt::EMPTY;
    let mut key = FlowKey::default();
    let table = Table::get();
    if !parse(&ctx, &mut p, &mut key) || table.is_none() {
        c.drop_internal += 1;
        return XDP_DROP;
    }
    let Some(table) = table else {
        return XDP_DROP;
    };
    let env = Env {
        table,
        // SAFETY: a helper without side effects.
        now: unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() } as u32,
    };
    let Some(found) = crate::syn::found_at(index, ident) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let fl = found.flags();
    if fl & FLOW_F_SYNPROXY != 0
        && fl & FLOW_F_REPLY != 0
        && p.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    {
        return crate::syn::backend_synack(&ctx, c, &env, &p, &found);
    }
    established::<true>(&ctx, c, &env, &p, &found)
}

/// A packet of a known flow, in either direction (`XLATE`: with sequence translation).
#[inline(always)]
fn established<const XLATE: bool>(
    ctx: &XdpContext,
    c: &mut Counters,
    env: &Env,
    p: &Pkt,
    found: &Found,
) -> u32 {
    let (table, now) = (&env.table, env.now);
    let f = found.slot;
    let ident = found.ident();
    let fl = found.flags();
    let reply = fl & FLOW_F_REPLY != 0;
    if fl & FLOW_F_RESERVED != 0 {
        c.drop_flow_closed += 1;
        return XDP_DROP;
    }
    // SAFETY: a pointer into the flow table (first cache line); the identity is re-checked
    // once everything is read.
    let (nat, backend_id, backend_gen, listener_id, hop_mtu) = unsafe {
        (
            (*f).nat,
            u32::from((*f).backend_id),
            (*f).backend_gen,
            u32::from((*f).listener_id),
            (*f).hop_mtu,
        )
    };
    let Some(backend) = BACKENDS.get(backend_id) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    if backend.generation != backend_gen || backend.state == BACKEND_REMOVED || backend.state == 0 {
        return refuse_removed(ctx, c, reply, p.tot_len);
    }

    let mut x = Xlate::default();
    if XLATE && fl & FLOW_F_SYNPROXY != 0 {
        {
            if fl & FLOW_F_XLATE == 0 {
                // SAFETY: second cache line of the slot, fixed at creation.
                let (isn, created) = unsafe { ((*f).isn, (*f).created) };
                if !reply
                    && p.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK
                    && p.seq == isn.wrapping_add(1)
                    && now.wrapping_sub(created) >= SYNPROXY_RESEND_JIFFIES
                    && found.still_valid()
                {
                    return stage(ctx, c, stages::RESEND, found.index, ident);
                }
                c.drop_synproxy_pending += 1;
                return XDP_DROP;
            }
            // SAFETY: second cache line of the slot, read-only.
            let (delta, shifts) = unsafe {
                (
                    flows::word(&raw const (*f).xlate).value,
                    flows::word(&raw const (*f).xlate_wscale).value,
                )
            };
            if reply {
                x.seq_add = delta;
            } else {
                x.ack_sub = delta;
            }
            x.win_from = shifts as u8;
            x.win_to = (shifts >> 8) as u8;
        }
    }
    // PROXY protocol: the backend's view of the client's sequence space holds the header
    // before the client's first byte (`proxy_seq`). The client's first data segment gets it
    // inserted (`insert`), later client segments move up by its length, the backend's ACKs
    // (and SACK edges) move down; an ACK of part of the header acknowledges none of the
    // client's data. Zero-length client segments at `proxy_seq` (the handshake ACK, a pure ACK
    // before any data) stay where they are.
    let mut insert = 0u32;
    let mut mss_sub = 0u32;
    if XLATE && fl & FLOW_F_PROXY != 0 {
        // SAFETY: second cache line of the slot, fixed at creation.
        let (base, len) = unsafe { ((*f).proxy_seq, u32::from((*f).proxy_len)) };
        if reply {
            let d = p.ack.wrapping_sub(base);
            if p.flags & TCP_ACK != 0 && (d as i32) > 0 {
                x.ack_sub = d.min(len);
            }
            if p.flags & TCP_SYN != 0 && fl & FLOW_F_SYNPROXY == 0 {
                // The client's segments must leave room for the header (see `elb_proxy`).
                mss_sub = elb_common::proxy_v1::MAX_LEN as u32;
            }
        } else {
            let d = p.seq.wrapping_sub(base);
            if d == 0 && p.tot_len > p.ihl + p.doff {
                insert = len;
            } else if (d as i32) > 0 {
                x.seq_add = len;
            }
        }
    }

    // SAFETY: bounds-checked header (no packet-moving helper ran).
    let ttl = unsafe { (*p.ip).ttl };
    if ttl <= 1 {
        return icmp::send_error(ctx, icmp::ICMP_TIME_EXCEEDED, 0, 0);
    }

    // The next hop: back to where the client's SYN came from, or towards the backend.
    let mut unresolved = false;
    let hop = if reply {
        // SAFETY: second cache line of the slot, fixed at creation.
        let stored = unsafe {
            NextHop {
                ifindex: (*f).hop_ifindex,
                updated: now,
                dmac: (*f).hop_dmac,
                smac: (*f).hop_smac,
                mtu: hop_mtu,
                _pad: 0,
            }
        };
        if stored.ifindex != 0 {
            stored
        } else {
            let mut hop = NextHop::default();
            match fwd::lookup(
                ctx,
                PROTO_TCP,
                u32::from_ne_bytes(nat.src),
                u32::from_ne_bytes(nat.dst),
                &mut hop,
            ) {
                aya_ebpf::bindings::BPF_FIB_LKUP_RET_SUCCESS => hop,
                aya_ebpf::bindings::BPF_FIB_LKUP_RET_NO_NEIGH => {
                    unresolved = true;
                    hop
                }
                _ => {
                    c.drop_fib_failed += 1;
                    return XDP_DROP;
                }
            }
        }
    } else {
        match fwd::backend_hop(ctx, backend_id, u32::from_ne_bytes(backend.addr), now) {
            Ok(hop) => hop,
            Err(NoHop::Unresolved(_)) => {
                unresolved = true;
                NextHop::default()
            }
            Err(NoHop::NoRoute) => {
                c.drop_fib_failed += 1;
                return XDP_DROP;
            }
        }
    };
    let mut fragment = false;
    if hop.mtu != 0 && p.tot_len + insert as usize > usize::from(hop.mtu) {
        // SAFETY: bounds-checked header.
        if unsafe { (*p.ip).frag_off } & IP_DF_BE != 0 {
            // With a header to insert, the client must make room for it.
            return icmp::send_error(
                ctx,
                icmp::ICMP_DEST_UNREACH,
                icmp::ICMP_FRAG_NEEDED,
                hop.mtu - insert as u16,
            );
        }
        if XLATE && insert != 0 {
            // The kernel would fragment it without the header.
            c.drop_proxy_failed += 1;
            return XDP_DROP;
        }
        fragment = true;
    }

    // Flow state: close and reset tracking, the handshake's completion, last seen, last ACK.
    let state = found.state_word();
    let mut refresh = false;
    if p.flags & TCP_RST != 0 {
        if !rst_acceptable(table, f, ident, p, reply, &x) {
            c.drop_rst_out_of_window += 1;
            return XDP_DROP;
        }
        mark_both(table, f, ident, FLOW_F_RST);
        refresh = true;
    } else {
        if fl & FLOW_F_RST != 0 {
            note_alive(c, table, f, ident, reply);
        }
        if p.flags & TCP_FIN != 0 {
            mark_both(
                table,
                f,
                ident,
                if reply {
                    FLOW_F_FIN_BACKEND
                } else {
                    FLOW_F_FIN_CLIENT
                },
            );
            refresh = true;
        }
    }
    let confirmed = !reply
        && fl & FLOW_F_CONFIRMED == 0
        && p.flags & (TCP_ACK | TCP_SYN) == TCP_ACK
        && confirm(state, ident, listener_id);
    // SAFETY: pointers into the slot; CAS on words carrying the identity.
    unsafe {
        let seen = &raw mut (*f).seen;
        if refresh || now.wrapping_sub(flows::word(seen).value) >= SEEN_REFRESH_JIFFIES {
            flows::word_store(seen, ident, now);
        }
        if p.flags & TCP_ACK != 0 {
            let ack = p.ack.wrapping_sub(x.ack_sub);
            let acked = &raw mut (*f).acked;
            let last = flows::word(acked).value;
            let moved = ack.wrapping_sub(last);
            if (fl & FLOW_F_ACKED == 0 || (moved >= ACK_TRACK_STEP && (moved as i32) > 0))
                && flows::word_store(acked, ident, ack)
                && fl & FLOW_F_ACKED == 0
            {
                flows::word_or(state, ident, FLOW_F_ACKED);
            }
        }
    }
    if !found.still_valid() {
        // The slot was reused while we read it: what we read may mix two flows.
        c.drop_internal += 1;
        return XDP_DROP;
    }
    if fl & FLOW_F_EVENTS != 0 {
        events::count(f, p.tot_len.saturating_sub(p.ihl + p.doff) as u64);
        if confirmed {
            events::start(c, f, found.index, ident, now);
        }
    }

    rewrite::<XLATE>(p, &nat, ttl, &x);
    stats::account(
        listener_id,
        backend_id,
        if reply { Direction::Out } else { Direction::In },
        p.tot_len as u64,
        false,
    );
    let sack = XLATE && x.ack_sub != 0 && p.flags & TCP_ACK != 0 && p.doff > TCP_LEN;
    if XLATE && (sack || insert != 0 || (mss_sub != 0 && p.doff > TCP_LEN)) {
        // SACK edges move with the ACK number, a PROXY flow's SYN-ACK announces a smaller
        // MSS, a first data segment gets the PROXY header: stages with stacks of their own
        // (`elb_sack`, `elb_proxy`) finish the packet and send it.
        if let Some(fin) = FINISH.get_ptr_mut(0) {
            // SAFETY: this CPU's entry; the stage runs next on this CPU; the slot's key is
            // fixed at creation.
            unsafe {
                *fin = Finish {
                    hop,
                    delta: if sack { x.ack_sub.wrapping_neg() } else { 0 },
                    verdict: if unresolved {
                        FINISH_PASS_NO_NEIGH
                    } else if fragment {
                        FINISH_PASS_FRAGMENT
                    } else {
                        FINISH_SEND
                    },
                    mss_sub: if p.doff > TCP_LEN { mss_sub } else { 0 },
                    client: (*f).key,
                    proxy_len: insert,
                }
            };
        }
        let next = if insert != 0 {
            stages::PROXY
        } else {
            stages::SACK
        };
        return stage(ctx, c, next, 0, 0);
    }
    if unresolved {
        c.pass_no_neigh += 1;
        return XDP_PASS;
    }
    if fragment {
        c.pass_fragment += 1;
        return XDP_PASS;
    }
    fwd::transmit(ctx, c, p.eth, &hop)
}

/// Stage `elb_sack`: shifts the SACK edges of a translated packet (already rewritten) by
/// `Finish::delta` and lowers its MSS option by `Finish::mss_sub`, then sends it as `Finish`
/// says.
#[xdp]
pub fn elb_sack(ctx: XdpContext) -> u32 {
    let (Some(c), Some(fin)) = (COUNTERS.get_ptr_mut(0), FINISH.get(0)) else {
        return XDP_DROP;
    };
    // SAFETY: this CPU's counters.
    let c = unsafe { &mut *c };
    let mut p = Pkt::EMPTY;
    let mut key = FlowKey::default();
    if !parse(&ctx, &mut p, &mut key) {
        c.drop_internal += 1;
        return XDP_DROP;
    }
    // SAFETY: bounds-checked header.
    let mut check = u32::from(unsafe { (*p.tcp).check });
    if fin.delta != 0 {
        check = opts::shift_sack(ctx.ctx, p.tcp_off() as u32, p.doff as u32, fin.delta, check);
    }
    if fin.mss_sub != 0 {
        check = opts::lower_mss(
            ctx.ctx,
            p.tcp_off() as u32,
            p.doff as u32,
            fin.mss_sub,
            check,
        );
    }
    let check = check as u16;
    // The option bytes were written through a helper: re-derive the header pointer.
    let Some(tcp) = ptr_at::<TcpHdr>(&ctx, ETH_LEN + IP_LEN) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    // SAFETY: bounds-checked above.
    unsafe { (*tcp).check = check };
    finish(&ctx, c, fin)
}

/// Sends a finished packet as `fin` says (the stages that finish packets: `elb_sack`,
/// `elb_proxy`).
#[inline(always)]
pub fn finish(ctx: &XdpContext, c: &mut Counters, fin: &Finish) -> u32 {
    match fin.verdict {
        FINISH_PASS_NO_NEIGH => {
            c.pass_no_neigh += 1;
            XDP_PASS
        }
        FINISH_PASS_FRAGMENT => {
            c.pass_fragment += 1;
            XDP_PASS
        }
        _ => {
            // Packet pointers do not survive the helpers the stages call: derive it here.
            let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
                c.drop_internal += 1;
                return XDP_DROP;
            };
            fwd::transmit(ctx, c, eth, &fin.hop)
        }
    }
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

/// The other half of the flow in slot `f` (identity `ident`), if it is still there.
#[inline(always)]
fn partner(table: &Table, f: *mut FlowSlot, ident: u32) -> Option<Found> {
    // SAFETY: a pointer into the flow table.
    let key = unsafe { (*f).partner_key() };
    table.find(&key).filter(|p| p.ident() == ident)
}

/// Sets `bit` in both halves of the flow.
#[inline(always)]
fn mark_both(table: &Table, f: *mut FlowSlot, ident: u32, bit: u32) {
    // SAFETY: a pointer into the flow table.
    flows::word_or(unsafe { &raw mut (*f).state }, ident, bit);
    if let Some(other) = partner(table, f, ident) {
        flows::word_or(other.state_word(), ident, bit);
    }
}

/// After an accepted RST, a non-RST packet from one side. Once both sides did so, the RST did
/// not end the connection (the endpoint rejected it, RFC 5961): the flow is open again.
#[inline(always)]
fn note_alive(c: &mut Counters, table: &Table, f: *mut FlowSlot, ident: u32, reply: bool) {
    let bit = if reply {
        FLOW_F_ALIVE_BACKEND
    } else {
        FLOW_F_ALIVE_CLIENT
    };
    let both = FLOW_F_ALIVE_CLIENT | FLOW_F_ALIVE_BACKEND;
    // SAFETY: a pointer into the flow table.
    let own = unsafe { &raw mut (*f).state };
    let Some(mine) = flows::word_or(own, ident, bit) else {
        return;
    };
    let other = partner(table, f, ident);
    let theirs = other
        .and_then(|o| flows::word_or(o.state_word(), ident, bit))
        .unwrap_or(0);
    if (mine | theirs) & both == both && mine & FLOW_F_RST != 0 {
        flows::word_clear(own, ident, FLOW_F_RST | both);
        if let Some(o) = other {
            flows::word_clear(o.state_word(), ident, FLOW_F_RST | both);
        }
        c.flows_recovered += 1;
    }
}

/// Whether a RST arriving on this half ends the flow (RFC 5961 in spirit): its sequence number
/// must lie in the receiver's window, i.e. just past the last ACK the receiver sent (remembered
/// in the other half). Before the receiver ever acknowledged anything (a backend refusing the
/// client's SYN), the RST must acknowledge the SYN instead.
#[inline(always)]
fn rst_acceptable(
    table: &Table,
    f: *mut FlowSlot,
    ident: u32,
    p: &Pkt,
    reply: bool,
    x: &Xlate,
) -> bool {
    let Some(other) = partner(table, f, ident) else {
        // Half a flow: nothing to protect.
        return true;
    };
    let _ = reply;
    if other.flags() & FLOW_F_ACKED != 0 {
        // SAFETY: a pointer into the flow table.
        let acked = flows::word(unsafe { &raw const (*other.slot).acked });
        return acked.ident == ident && p.seq.wrapping_sub(acked.value) < RST_WINDOW;
    }
    // SAFETY: a pointer into the flow table.
    let own = flows::word(unsafe { &raw const (*f).acked });
    p.flags & TCP_ACK != 0 && p.ack.wrapping_sub(x.ack_sub) == own.value
}

/// The client's first ACK: the handshake is complete, the flow no longer counts against its
/// listener's SYN backlog. True if this packet confirmed it (once per flow).
#[inline(always)]
fn confirm(state: *mut FlowWord, ident: u32, listener_id: u32) -> bool {
    let raw = flows::load64(state.cast());
    let cur = FlowWord::unpack(raw);
    if cur.ident != ident || cur.value & FLOW_F_CONFIRMED != 0 {
        return false;
    }
    let new = FlowWord {
        ident,
        value: cur.value | FLOW_F_CONFIRMED,
    };
    if !flows::cas64(state.cast(), raw, new.pack()) {
        return false;
    }
    if let Some(l) = RR_CURSORS.get_ptr_mut(listener_id) {
        // SAFETY: an array element.
        flows::fetch_add(unsafe { &raw mut (*l).half_open }, u64::MAX);
    }
    true
}

/// Rewrites addresses, ports, TTL and (translated flows) sequence, acknowledgement and window
/// to the flow's far side, updating both checksums incrementally.
#[inline(always)]
pub fn rewrite<const XLATE: bool>(p: &Pkt, nat: &NatTuple, ttl: u8, x: &Xlate) {
    let (ip, tcp) = (p.ip, p.tcp);
    let new_src = u32::from_ne_bytes(nat.src);
    let new_dst = u32::from_ne_bytes(nat.dst);
    let ports = tcp.cast::<u32>();
    let new_ports = u32::from(nat.sport.to_be()) | (u32::from(nat.dport.to_be()) << 16);
    // SAFETY: ip and tcp were bounds-checked by the caller; the ports are the first 4 bytes of
    // the TCP header, loaded natively as the header's 32-bit fields are (see `hdr`).
    unsafe {
        let old_src = (*ip).saddr;
        let old_dst = (*ip).daddr;
        let old_ports = *ports;

        let mut ip_check = (*ip).check;
        ip_check = csum::replace_u32(ip_check, old_src, new_src);
        ip_check = csum::replace_u32(ip_check, old_dst, new_dst);
        ip_check = csum::replace_u16(
            ip_check,
            u16::from_ne_bytes([ttl, PROTO_TCP]),
            u16::from_ne_bytes([ttl - 1, PROTO_TCP]),
        );
        (*ip).check = ip_check;
        (*ip).ttl = ttl - 1;
        (*ip).saddr = new_src;
        (*ip).daddr = new_dst;

        let mut tcp_check = (*tcp).check;
        tcp_check = csum::replace_u32(tcp_check, old_src, new_src);
        tcp_check = csum::replace_u32(tcp_check, old_dst, new_dst);
        tcp_check = csum::replace_u32(tcp_check, old_ports, new_ports);
        *ports = new_ports;
        if XLATE && x.seq_add != 0 {
            let old = (*tcp).seq;
            let new = u32::from_be(old).wrapping_add(x.seq_add).to_be();
            (*tcp).seq = new;
            tcp_check = csum::replace_u32(tcp_check, old, new);
        }
        if XLATE && x.ack_sub != 0 && p.flags & TCP_ACK != 0 {
            let old = (*tcp).ack_seq;
            let new = u32::from_be(old).wrapping_sub(x.ack_sub).to_be();
            (*tcp).ack_seq = new;
            tcp_check = csum::replace_u32(tcp_check, old, new);
        }
        if XLATE && x.win_from != x.win_to {
            let old = (*tcp).window;
            let win = (u32::from(u16::from_be(old)) << (x.win_from & 15)) >> (x.win_to & 15);
            let new = (win.min(0xffff) as u16).to_be();
            (*tcp).window = new;
            tcp_check = csum::replace_u16(tcp_check, old, new);
        }
        (*tcp).check = tcp_check;
    }
}
