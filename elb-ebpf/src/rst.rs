//! Answering a client with a TCP reset, built in place from the packet that triggered it and
//! sent back out of the interface it came in on. Used when a flow cannot be served (its backend
//! was removed, no backend is in service, no SNAT port is free): the client learns at once
//! instead of retransmitting into silence.

use aya_ebpf::{
    EbpfContext as _,
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::bpf_xdp_adjust_tail,
    programs::XdpContext,
};
use elb_common::Counters;

use crate::hdr::{
    ETH_LEN, EthHdr, IP_DF_BE, IP_LEN, Ipv4Hdr, TCP_ACK, TCP_FIN, TCP_LEN, TCP_RST, TCP_SYN,
    TcpHdr, ptr_at, sum_words,
};

/// Turns the TCP packet (IPv4 without options, checked by the caller) into a RST answering it and
/// returns XDP_TX, or XDP_DROP if the frame could not be trimmed.
#[inline(always)]
pub fn reply(ctx: &XdpContext, c: &mut Counters, ip_tot_len: usize) -> u32 {
    reply_with(ctx, c, ip_tot_len, None)
}

/// As [`reply`], but with sequence number `seq` (and no ACK): for a segment the servo itself
/// rewrote (the SYN proxy's SYN to a backend), whose client expects the servo's sequence.
#[inline(always)]
#[expect(
    clippy::manual_swap,
    reason = "packet fields may be unaligned; mem::swap would take references to them"
)]
pub fn reply_with(ctx: &XdpContext, c: &mut Counters, ip_tot_len: usize, seq: Option<u32>) -> u32 {
    // Read what the answer depends on before trimming invalidates packet pointers.
    let (Some(tcp), Some(_ip)) = (
        ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN),
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN),
    ) else {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    };
    // SAFETY: bounds-checked above.
    let (in_flags, in_seq, in_ack, doff) = unsafe {
        (
            (*tcp).flags,
            u32::from_be((*tcp).seq),
            (*tcp).ack_seq,
            usize::from((*tcp).doff >> 4) * 4,
        )
    };
    let payload = ip_tot_len.saturating_sub(IP_LEN + doff) as u32;

    let want = (ETH_LEN + IP_LEN + TCP_LEN) as i32;
    let have = (ctx.data_end() - ctx.data()) as i32;
    if have != want {
        // SAFETY: shrinking the frame's tail; the kernel validates the delta.
        if unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), want - have) } != 0 {
            c.drop_rst_failed += 1;
            return XDP_DROP;
        }
    }
    let (Some(eth), Some(ip), Some(tcp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN),
        ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN),
    ) else {
        c.drop_rst_failed += 1;
        return XDP_DROP;
    };
    // SAFETY: all three pointers were bounds-checked after the trim.
    unsafe {
        let mac = (*eth).dst;
        (*eth).dst = (*eth).src;
        (*eth).src = mac;

        let addr = (*ip).saddr;
        (*ip).saddr = (*ip).daddr;
        (*ip).daddr = addr;
        (*ip).vihl = 0x45;
        (*ip).tos = 0;
        (*ip).tot_len = ((IP_LEN + TCP_LEN) as u16).to_be();
        (*ip).id = 0;
        (*ip).frag_off = IP_DF_BE;
        (*ip).ttl = 64;
        (*ip).check = 0;
        (*ip).check = elb_common::csum::fold(sum_words::<10>(ip.cast()));

        let port = (*tcp).sport;
        (*tcp).sport = (*tcp).dport;
        (*tcp).dport = port;
        // RFC 793 "Reset Generation": answer an ACK with seq = its ack; otherwise ack
        // everything the segment occupied.
        if let Some(seq) = seq {
            (*tcp).seq = seq.to_be();
            (*tcp).ack_seq = 0;
            (*tcp).flags = TCP_RST;
        } else if in_flags & TCP_ACK != 0 {
            (*tcp).seq = in_ack;
            (*tcp).ack_seq = 0;
            (*tcp).flags = TCP_RST;
        } else {
            let syn_fin = u32::from(in_flags & TCP_SYN != 0) + u32::from(in_flags & TCP_FIN != 0);
            (*tcp).seq = 0;
            (*tcp).ack_seq = in_seq.wrapping_add(payload).wrapping_add(syn_fin).to_be();
            (*tcp).flags = TCP_RST | TCP_ACK;
        }
        (*tcp).doff = ((TCP_LEN / 4) as u8) << 4;
        (*tcp).window = 0;
        (*tcp).urg_ptr = 0;
        (*tcp).check = 0;
        // Pseudo-header: addresses (words 6..10 of the IP header), protocol, TCP length.
        let pseudo = sum_words::<4>((ip as *const u16).add(6))
            + u32::from(u16::from(elb_common::PROTO_TCP).to_be())
            + u32::from((TCP_LEN as u16).to_be());
        (*tcp).check = elb_common::csum::fold(pseudo + sum_words::<10>(tcp.cast()));
    }
    c.tx_rst += 1;
    XDP_TX
}
