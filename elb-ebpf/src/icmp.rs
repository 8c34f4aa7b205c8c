//! ICMP errors about NATed flows (RFC 5508 §4.2): a router between the servo and a backend (or a
//! client) reports "fragmentation needed" or "unreachable" about a packet the servo sent. The
//! error embeds that packet's header, which carries the NAT tuple; the client (or backend) only
//! recognises it with its own tuple. So both the outer and the embedded headers are translated,
//! which is what makes Path MTU discovery work through the balancer.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
        xdp_md,
    },
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use elb_common::{Counters, FlowKey, PROTO_ICMP, PROTO_TCP, csum};

use crate::{
    flows::Table,
    fwd,
    hdr::{ETH_LEN, EthHdr, ICMP_LEN, IP_LEN, IcmpHdr, Ipv4Hdr, ptr_at, sum_words},
    maps::COUNTERS,
};

/// ICMP destination unreachable (code 4: fragmentation needed and DF set).
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Code of "fragmentation needed and DF set".
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMP time exceeded (code 0: TTL exceeded in transit).
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// Offset of the embedded IP header.
const INNER_IP: usize = ETH_LEN + IP_LEN + ICMP_LEN;
/// Offset of the embedded TCP header.
const INNER_L4: usize = INNER_IP + IP_LEN;

/// The embedded TCP header: RFC 792 guarantees only its first 8 bytes.
#[repr(C)]
struct InnerPorts {
    sport: u16,
    dport: u16,
    seq: u32,
}

/// Handles an unfragmented ICMP packet (outer header without options).
#[inline(always)]
pub fn handle(ctx: &XdpContext, c: &mut Counters, ip: *mut Ipv4Hdr) -> u32 {
    let Some(icmp) = ptr_at::<IcmpHdr>(ctx, ETH_LEN + IP_LEN) else {
        c.pass_not_tcp += 1;
        return XDP_PASS;
    };
    // SAFETY (all derefs): pointers from `ptr_at`, no packet-moving helper before their use.
    let kind = unsafe { (*icmp).kind };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        c.pass_not_tcp += 1;
        return XDP_PASS;
    }
    let (Some(inner), Some(ports)) = (
        ptr_at::<Ipv4Hdr>(ctx, INNER_IP),
        ptr_at::<InnerPorts>(ctx, INNER_L4),
    ) else {
        c.drop_icmp_malformed += 1;
        return XDP_DROP;
    };
    let (inner_vihl, inner_proto) = unsafe { ((*inner).vihl, (*inner).proto) };
    if inner_vihl != 0x45 || inner_proto != PROTO_TCP {
        // We only ever send TCP without options; anything else is not about our flows.
        c.pass_icmp_no_flow += 1;
        return XDP_PASS;
    }
    // The embedded packet is one the servo sent; a packet travelling the other way would have
    // the swapped tuple, which is the conntrack key of the half that produced it.
    let key = unsafe {
        FlowKey {
            src: (*inner).daddr.to_ne_bytes(),
            dst: (*inner).saddr.to_ne_bytes(),
            sport: u16::from_be((*ports).dport),
            dport: u16::from_be((*ports).sport),
            proto: PROTO_TCP,
            _pad: 0,
            _pad1: 0,
        }
    };
    let Some(found) = Table::get().and_then(|t| t.find(&key)) else {
        c.pass_icmp_no_flow += 1;
        return XDP_PASS;
    };
    // SAFETY: a pointer into the flow table; its identity is re-checked below.
    let nat = unsafe { (*found.slot).nat };
    if !found.still_valid() {
        c.pass_icmp_no_flow += 1;
        return XDP_PASS;
    }
    let (nat_src, nat_dst) = (u32::from_ne_bytes(nat.src), u32::from_ne_bytes(nat.dst));
    let new_inner_ports = u32::from(nat.dport.to_be()) | (u32::from(nat.sport.to_be()) << 16);
    // A router forwards ICMP errors like any packet: TTL decremented; one that expires here is
    // dropped silently (no ICMP about an ICMP error, RFC 1812 4.3.2.7).
    let ttl = unsafe { (*ip).ttl };
    if ttl <= 1 {
        c.drop_icmp_malformed += 1;
        return XDP_DROP;
    }

    // The embedded TCP checksum is only there if the router quoted at least 18 bytes of TCP.
    let inner_check = ptr_at::<[u16; 9]>(ctx, INNER_L4);
    unsafe {
        let (old_outer_src, old_outer_dst) = ((*ip).saddr, (*ip).daddr);
        let (old_inner_src, old_inner_dst) = ((*inner).saddr, (*inner).daddr);
        let old_inner_ports = *ports.cast::<u32>();

        // Outer header: now from the flow's other side to the peer that should hear about it.
        let mut check = (*ip).check;
        check = csum::replace_u32(check, old_outer_src, nat_src);
        check = csum::replace_u32(check, old_outer_dst, nat_dst);
        check = csum::replace_u16(
            check,
            u16::from_ne_bytes([ttl, PROTO_ICMP]),
            u16::from_ne_bytes([ttl - 1, PROTO_ICMP]),
        );
        (*ip).check = check;
        (*ip).ttl = ttl - 1;
        (*ip).saddr = nat_src;
        (*ip).daddr = nat_dst;

        // Embedded header: as the peer sent it (its own addresses and ports).
        let mut icmp_check = (*icmp).check;
        let old_inner_ip_check = (*inner).check;
        let mut inner_ip_check = old_inner_ip_check;
        inner_ip_check = csum::replace_u32(inner_ip_check, old_inner_src, nat_dst);
        inner_ip_check = csum::replace_u32(inner_ip_check, old_inner_dst, nat_src);
        (*inner).check = inner_ip_check;
        (*inner).saddr = nat_dst;
        (*inner).daddr = nat_src;
        *ports.cast::<u32>() = new_inner_ports;
        icmp_check = csum::replace_u32(icmp_check, old_inner_src, nat_dst);
        icmp_check = csum::replace_u32(icmp_check, old_inner_dst, nat_src);
        icmp_check = csum::replace_u16(icmp_check, old_inner_ip_check, inner_ip_check);
        icmp_check = csum::replace_u32(icmp_check, old_inner_ports, new_inner_ports);

        if let Some(words) = inner_check {
            let old = (*words)[8];
            let mut l4 = old;
            l4 = csum::replace_u32(l4, old_inner_src, nat_dst);
            l4 = csum::replace_u32(l4, old_inner_dst, nat_src);
            l4 = csum::replace_u32(l4, old_inner_ports, new_inner_ports);
            (*words)[8] = l4;
            icmp_check = csum::replace_u16(icmp_check, old, l4);
        }
        (*icmp).check = icmp_check;
    }
    c.icmp_translated += 1;

    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        c.drop_internal += 1;
        return XDP_DROP;
    };
    let mut hop = elb_common::NextHop::default();
    match fwd::lookup(ctx, PROTO_ICMP, nat_src, nat_dst, &mut hop) {
        BPF_FIB_LKUP_RET_SUCCESS => fwd::transmit(ctx, c, eth, &hop),
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            c.pass_no_neigh += 1;
            XDP_PASS
        }
        _ => {
            c.drop_fib_failed += 1;
            XDP_DROP
        }
    }
}

/// Length of the ICMP error the servo sends: Ethernet, IP, ICMP, and the offending packet's IP
/// header and first 8 bytes (RFC 792; what the peer needs to find its connection).
const ERROR_FRAME_LEN: usize = ETH_LEN + IP_LEN + ICMP_LEN + IP_LEN + 8;

/// Answers the packet (IPv4 without options, not yet rewritten) with an ICMP error of `kind`
/// and `code` (`mtu`: the next-hop MTU of a "fragmentation needed"), from the address it was
/// sent to, back out of the interface it came in on, as a router on the path would. The
/// quoted header is the sender's own, so it finds its connection.
#[inline(always)]
pub fn send_error(ctx: &XdpContext, kind: u8, code: u8, mtu: u16) -> u32 {
    elb_icmp_error(ctx.ctx, u32::from(kind), u32::from(code), u32::from(mtu))
}

/// [`send_error`], as a global BPF function (checked once by the verifier).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn elb_icmp_error(ctx: *mut xdp_md, kind: u32, code: u32, mtu: u32) -> u32 {
    let Some(c) = COUNTERS.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    // SAFETY: this CPU's counters.
    build_error(
        &XdpContext::new(ctx),
        unsafe { &mut *c },
        kind as u8,
        code as u8,
        mtu as u16,
    )
}

#[inline(always)]
fn build_error(ctx: &XdpContext, c: &mut Counters, kind: u8, code: u8, mtu: u16) -> u32 {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
        c.drop_icmp_failed += 1;
        return XDP_DROP;
    };
    // SAFETY: bounds-checked above.
    let (saddr, daddr) = unsafe { ((*ip).saddr, (*ip).daddr) };
    let grow = (IP_LEN + ICMP_LEN) as i32;
    // SAFETY: the kernel checks the headroom; all packet pointers are re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr().cast(), -grow) } != 0 {
        c.drop_icmp_failed += 1;
        return XDP_DROP;
    }
    let have = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: shrinking the tail; the kernel validates the delta.
    if have != ERROR_FRAME_LEN as i32
        && unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), ERROR_FRAME_LEN as i32 - have) } != 0
    {
        c.drop_icmp_failed += 1;
        return XDP_DROP;
    }
    let (Some(eth), Some(old_eth), Some(outer), Some(icmp), Some(quote)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<EthHdr>(ctx, grow as usize),
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN),
        ptr_at::<IcmpHdr>(ctx, ETH_LEN + IP_LEN),
        ptr_at::<[u16; (IP_LEN + 8) / 2]>(ctx, ETH_LEN + IP_LEN + ICMP_LEN),
    ) else {
        c.drop_icmp_failed += 1;
        return XDP_DROP;
    };
    // SAFETY: every pointer was bounds-checked after the last adjust. The old Ethernet header
    // (read first) overlaps the new IP and ICMP headers.
    unsafe {
        let (src_mac, dst_mac) = ((*old_eth).src, (*old_eth).dst);
        (*eth).dst = src_mac;
        (*eth).src = dst_mac;
        (*eth).proto = crate::hdr::ETH_P_IP_BE;
        (*outer).vihl = 0x45;
        (*outer).tos = 0xc0;
        (*outer).tot_len = ((ERROR_FRAME_LEN - ETH_LEN) as u16).to_be();
        (*outer).id = 0;
        (*outer).frag_off = 0;
        (*outer).ttl = 64;
        (*outer).proto = PROTO_ICMP;
        (*outer).check = 0;
        (*outer).saddr = daddr;
        (*outer).daddr = saddr;
        (*outer).check = csum::fold(sum_words::<10>(outer.cast()));
        (*icmp).kind = kind;
        (*icmp).code = code;
        (*icmp).check = 0;
        (*icmp).rest = u32::from(mtu).to_be();
        let sum = sum_words::<4>(icmp.cast()) + sum_words::<{ (IP_LEN + 8) / 2 }>(quote.cast());
        (*icmp).check = csum::fold(sum);
    }
    if kind == ICMP_TIME_EXCEEDED {
        c.icmp_time_exceeded += 1;
    } else {
        c.icmp_frag_needed += 1;
    }
    XDP_TX
}
