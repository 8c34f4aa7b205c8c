//! ICMP errors about NATed flows (RFC 5508 §4.2): a router between the servo and a backend (or a
//! client) reports "fragmentation needed" or "unreachable" about a packet the servo sent. The
//! error embeds that packet's header, which carries the NAT tuple; the client (or backend) only
//! recognises it with its own tuple. So both the outer and the embedded headers are translated,
//! which is what makes Path MTU discovery work through the balancer.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use elb_common::{Counters, FlowKey, PROTO_TCP, csum};

use crate::{
    fwd,
    hdr::{ETH_LEN, EthHdr, ICMP_LEN, IP_LEN, IcmpHdr, Ipv4Hdr, ptr_at},
    maps::CONNTRACK,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

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
            _pad: [0; 3],
        }
    };
    // SAFETY: read-only use of the value.
    let Some(f) = (unsafe { CONNTRACK.get(key) }) else {
        c.pass_icmp_no_flow += 1;
        return XDP_PASS;
    };
    let (nat_src, nat_dst) = (u32::from_ne_bytes(f.nat_src), u32::from_ne_bytes(f.nat_dst));
    let new_inner_ports = u32::from(f.nat_dport.to_be()) | (u32::from(f.nat_sport.to_be()) << 16);
    let tot_len = unsafe { u16::from_be((*ip).tot_len) };

    // The embedded TCP checksum is only there if the router quoted at least 18 bytes of TCP.
    let inner_check = ptr_at::<[u16; 9]>(ctx, INNER_L4);
    unsafe {
        let (old_outer_src, old_outer_dst) = ((*ip).saddr, (*ip).daddr);
        let (old_inner_src, old_inner_dst) = ((*inner).saddr, (*inner).daddr);
        let old_inner_ports = ports.cast::<u32>().read_unaligned();

        // Outer header: now from the flow's other side to the peer that should hear about it.
        let mut check = (*ip).check;
        check = csum::replace_u32(check, old_outer_src, nat_src);
        check = csum::replace_u32(check, old_outer_dst, nat_dst);
        (*ip).check = check;
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
        ports.cast::<u32>().write_unaligned(new_inner_ports);
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
    let route = fwd::lookup(ctx, elb_common::PROTO_ICMP, nat_src, nat_dst, tot_len);
    fwd::emit(ctx, c, eth, &route)
}
