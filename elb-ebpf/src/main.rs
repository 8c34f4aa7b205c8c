//! The servo's XDP program: per-connection round-robin to the healthy backends of a listener,
//! with full NAT (destination and source rewritten), so backends need no configuration.
//!
//! Entry points are thin; the work lives in modules by concern: `flows` (the flow table),
//! `tcp` (established flows: rewrite, translation, close and reset tracking), `events` (flow
//! events for access logs and the per-flow counts behind them), `syn` (new flows,
//! SYN cookies and the SYN proxy), `icmp` (error translation and the errors a router sends),
//! `fwd` (next hops and transmit), `opts` (TCP options and checksums), `proxy` (the PROXY
//! protocol header), `rst` (resets we answer with), `sg` (security groups' allow lists),
//! `stats`. Packet headers live in the crate's library (`elb_ebpf::hdr`).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the only fetch-and-add on bpfel, see toolchain.md"
)]

mod cache;
mod events;
mod flows;
mod fwd;
mod icmp;
mod maps;
mod opts;
mod proxy;
mod rst;
mod sg;
mod stats;
mod syn;
mod tcp;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use elb_common::{Counters, PROTO_ICMP, PROTO_TCP};
use elb_ebpf::hdr::{self, ETH_LEN, ETH_P_IP_BE, EthHdr, IP_MF_OFFSET_BE, Ipv4Hdr, ptr_at};

/// The load balancer.
#[xdp]
pub fn elb(ctx: XdpContext) -> u32 {
    let Some(counters) = maps::COUNTERS.get_ptr_mut(0) else {
        // Cannot happen (a one-entry per-CPU array always has entry 0); stay out of the way.
        return XDP_PASS;
    };
    // SAFETY: per-CPU entry, only this CPU's running program touches it.
    let c = unsafe { &mut *counters };
    c.rx_packets += 1;
    process(&ctx, c)
}

/// Passes everything to the kernel. Attached to the peer of a veth that the balancer
/// transmits into: veth delivers XDP_TX/redirected frames only to a peer running XDP.
#[xdp]
pub fn elb_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[inline(always)]
fn process(ctx: &XdpContext, c: &mut Counters) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        c.pass_eth_truncated += 1;
        return XDP_PASS;
    };
    // SAFETY (all derefs below): every pointer came from `ptr_at`, which bounds-checked it.
    if unsafe { (*eth).proto } != ETH_P_IP_BE {
        c.pass_not_ipv4 += 1;
        return XDP_PASS;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
        c.drop_ip_truncated += 1;
        return XDP_DROP;
    };
    let vihl = unsafe { (*ip).vihl };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be(unsafe { (*ip).tot_len }));
    if vihl >> 4 != 4
        || ihl < hdr::IP_LEN
        || tot_len < ihl
        || ETH_LEN + tot_len > ctx.data_end() - ctx.data()
    {
        c.drop_ip_malformed += 1;
        return XDP_DROP;
    }
    // Routers verify the header checksum (RFC 1812 5.2.2); a corrupted header must not be
    // forwarded, nor create state.
    if !header_checksum_ok(ctx, ip, ihl) {
        c.drop_ip_checksum += 1;
        return XDP_DROP;
    }
    let fragment = unsafe { (*ip).frag_off } & IP_MF_OFFSET_BE != 0;
    match unsafe { (*ip).proto } {
        PROTO_TCP => {
            if fragment {
                c.drop_fragment += 1;
                return XDP_DROP;
            }
            tcp::handle(ctx, c, eth, ip, ihl, tot_len)
        }
        PROTO_ICMP if !fragment && ihl == hdr::IP_LEN => icmp::handle(ctx, c, ip),
        _ => {
            c.pass_not_tcp += 1;
            XDP_PASS
        }
    }
}

/// True if the IPv4 header at `ip` (`ihl` bytes, already checked to lie in the packet) sums to
/// zero.
#[inline(always)]
fn header_checksum_ok(ctx: &XdpContext, ip: *mut Ipv4Hdr, ihl: usize) -> bool {
    // SAFETY: the 20-byte header was bounds-checked by the caller.
    let mut sum = unsafe { hdr::sum_words::<10>(ip.cast()) };
    // Options (rare: they are dropped or passed later), 2 bytes at a time.
    for i in 10..30 {
        if i * 2 >= ihl {
            break;
        }
        let Some(w) = ptr_at::<u16>(ctx, ETH_LEN + i * 2) else {
            return false;
        };
        // SAFETY: bounds-checked by `ptr_at`.
        sum += u32::from(unsafe { *w });
    }
    elb_common::csum::fold(sum) == 0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF programs cannot unwind; the verifier rejects any path that could reach here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
