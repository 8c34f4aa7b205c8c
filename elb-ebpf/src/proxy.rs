//! PROXY protocol v1 in XDP: the header goes into the client's first data segment.
//!
//! The established path (`tcp::established`) decides: a client segment of a PROXY flow whose
//! sequence number is the client's ISN + 1 and that carries data is the first data segment
//! (or its retransmission: the same header again). It rewrites the segment as usual (NAT,
//! TTL, acknowledgement translation) and hands it here with the header's contents in `Finish`.
//! This stage grows the frame at the front, moves the Ethernet, IPv4 and TCP headers (with
//! options) to the new start, writes the header into the gap before the payload, and fixes
//! the IPv4 total length and both checksums (the TCP one incrementally, see
//! `elb_common::proxy_v1::insert_checksum`).
//!
//! Room: the backend's SYN-ACK reaches the client with its MSS lowered by the longest header
//! (56 bytes), so a first segment of full size still fits the path towards the backend after
//! the insertion; a segment that does not fit is answered with "fragmentation needed" for a
//! size that leaves room (DF) or dropped and counted (`drop_proxy_failed`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::xdp_action::XDP_DROP,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::xdp,
    programs::XdpContext,
};
use elb_common::{csum, proxy_v1, stages};

use crate::{
    hdr::{ETH_LEN, IP_LEN, Ipv4Hdr, TCP_LEN, TcpHdr, ptr_at},
    maps::{COUNTERS, FINISH, PROXY_BUF},
    tcp,
};

/// Longest Ethernet + IPv4 + TCP header with options.
const MAX_HEADERS: usize = ETH_LEN + IP_LEN + 60;

/// Stage `elb_proxy`: inserts the PROXY header described by `Finish` into the (already
/// rewritten) segment at hand, then sends it as `Finish` says.
#[xdp]
pub fn elb_proxy(ctx: XdpContext) -> u32 {
    let (Some(c), Some(fin)) = (COUNTERS.get_ptr_mut(0), FINISH.get(0)) else {
        return XDP_DROP;
    };
    // SAFETY: this CPU's counters.
    let c = unsafe { &mut *c };
    if insert(&ctx).is_none() {
        c.drop_proxy_failed += 1;
        return XDP_DROP;
    }
    c.proxy_headers += 1;
    if fin.delta != 0 {
        // SACK edges to shift as well (a SYN proxy flow): `elb_sack` sends it.
        return tcp::stage(&ctx, c, stages::SACK, 0, 0);
    }
    tcp::finish(&ctx, c, fin)
}

/// Opaque to the compiler, so the verifier sees the range check on the register used.
#[inline(always)]
fn opaque(v: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&raw const v) }
}

/// The insertion itself (see the module documentation).
#[inline(always)]
fn insert(ctx: &XdpContext) -> Option<()> {
    let fin = FINISH.get(0)?;
    // SAFETY: this CPU's entry; nothing else uses it while this program runs.
    let b = unsafe { &mut *PROXY_BUF.get_ptr_mut(0)? };
    b.text = [0; proxy_v1::BUF];
    let k = &fin.client;
    let len = proxy_v1::write(&mut b.text, k.src, k.dst, k.sport, k.dport);
    if len != fin.proxy_len as usize || len == 0 || len > proxy_v1::MAX_LEN {
        return None;
    }
    let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN)?;
    // SAFETY: bounds-checked.
    let doff = usize::from(unsafe { (*tcp).doff } >> 4) * 4;
    let headers = opaque(ETH_LEN + IP_LEN + doff);
    if !(ETH_LEN + IP_LEN + TCP_LEN..=MAX_HEADERS).contains(&headers) {
        return None;
    }
    let len = opaque(len);
    if len == 0 || len > proxy_v1::MAX_LEN {
        return None;
    }
    // SAFETY: the kernel checks the headroom and bounds-checks the packet ranges; the buffers
    // hold MAX_HEADERS and MAX_LEN bytes; every packet pointer is re-derived afterwards.
    unsafe {
        if bpf_xdp_load_bytes(
            ctx.as_ptr().cast(),
            0,
            b.headers.as_mut_ptr().cast(),
            headers as u32,
        ) != 0
            || bpf_xdp_adjust_head(ctx.as_ptr().cast(), -(len as i32)) != 0
        {
            return None;
        }
        if bpf_xdp_store_bytes(
            ctx.as_ptr().cast(),
            0,
            b.headers.as_mut_ptr().cast(),
            headers as u32,
        ) != 0
            || bpf_xdp_store_bytes(
                ctx.as_ptr().cast(),
                headers as u32,
                b.text.as_mut_ptr().cast(),
                len as u32,
            ) != 0
        {
            return None;
        }
    }
    // The sums the checksum needs: the text (zero-padded: the buffer is zero past it) and the
    // TCP header with options, its checksum field (word 8) left out.
    let mut text_sum = 0u32;
    for i in 0..proxy_v1::BUF / 2 {
        text_sum += u32::from(u16::from_ne_bytes([b.text[2 * i], b.text[2 * i + 1]]));
    }
    let mut hdr_sum = 0u32;
    for i in 0..30 {
        if 2 * i >= doff {
            break;
        }
        if i != 8 {
            let at = ETH_LEN + IP_LEN + 2 * i;
            hdr_sum += u32::from(u16::from_ne_bytes([b.headers[at], b.headers[at + 1]]));
        }
    }

    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN)?;
    // SAFETY: bounds-checked headers.
    unsafe {
        let old_tot = (*ip).tot_len;
        let tot = u16::from_be(old_tot);
        let new_tot = (tot + len as u16).to_be();
        (*ip).tot_len = new_tot;
        (*ip).check = csum::replace_u16((*ip).check, old_tot, new_tot);
        let tcp_len = tot - IP_LEN as u16;
        let (s, d) = ((*ip).saddr, (*ip).daddr);
        (*tcp).check = proxy_v1::insert_checksum(
            (*tcp).check,
            proxy_v1::pseudo_sum(s, d, tcp_len),
            proxy_v1::pseudo_sum(s, d, tcp_len + len as u16),
            hdr_sum,
            text_sum,
            len % 2 == 1,
        );
    }
    Some(())
}
