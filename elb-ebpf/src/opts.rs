//! TCP header options and checksum verification.
//!
//! These are global BPF functions (`#[no_mangle] extern "C"`): the verifier checks each once,
//! on its own, instead of again at every call site, and their variable-offset packet access
//! goes through `bpf_xdp_load_bytes`/`bpf_xdp_store_bytes` (bounds-checked by the kernel).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_csum_diff, bpf_xdp_load_bytes, bpf_xdp_store_bytes, generated::bpf_loop},
    programs::XdpContext,
};
use elb_common::{PROTO_TCP, WSCALE_NONE, csum};

use crate::hdr::{ETH_LEN, IP_LEN, TCP_LEN, ptr_at};

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_SACK: u8 = 5;
/// Most option bytes a TCP header holds.
const MAX_OPTS: usize = 40;
/// Size of the buffer options are copied into: a power of two, so masking any index keeps
/// reads inside it (the verifier checks variable-offset stack reads against the whole range).
const OPT_BUF: usize = 64;

/// Byte `i` of an option buffer.
#[inline(always)]
fn at(buf: &[u8; OPT_BUF], i: usize) -> u8 {
    buf[i & (OPT_BUF - 1)]
}

/// What a SYN or SYN-ACK announces.
#[derive(Clone, Copy)]
pub struct SynOptions {
    /// MSS (0: none).
    pub mss: u16,
    /// Window shift, or WSCALE_NONE.
    pub wscale: u8,
    /// SACK permitted.
    pub sack: bool,
}

/// Copies the options of the TCP header at `tcp_off` (length `doff`) into `buf`; returns
/// their length.
#[inline(always)]
fn load_options(ctx: *mut xdp_md, tcp_off: u32, doff: u32, buf: &mut [u8; OPT_BUF]) -> usize {
    let len = (doff as usize).saturating_sub(TCP_LEN);
    // Opaque to the compiler, so the verifier sees the range check on the register it passes.
    // SAFETY: a volatile read of a local.
    let n = unsafe { core::ptr::read_volatile(&raw const len) };
    if n == 0 || n > MAX_OPTS {
        return 0;
    }
    // SAFETY: the kernel bounds-checks the packet range; `buf` holds MAX_OPTS >= n bytes.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx,
            tcp_off + TCP_LEN as u32,
            buf.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if rc == 0 { n } else { 0 }
}

/// An option walk: the options, the position, and what was found. Walked with `bpf_loop`:
/// the verifier checks one step instead of every path through 40 data-dependent steps.
#[repr(C)]
struct Walk {
    buf: [u8; OPT_BUF],
    len: u32,
    i: u32,
    mss: u32,
    wscale: u32,
    sack_perm: u32,
    sack_at: u32,
    sack_len: u32,
    /// Position of the MSS option + 1 (0: none).
    mss_at: u32,
}

/// One step of an option walk: returns 1 to stop.
extern "C" fn walk_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `bpf_loop` passes the `Walk` its caller gave it.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    let i = (w.i as usize) & (OPT_BUF - 1);
    if w.i >= w.len {
        return 1;
    }
    let kind = at(&w.buf, i);
    if kind == OPT_EOL {
        return 1;
    }
    if kind == OPT_NOP {
        w.i += 1;
        return 0;
    }
    let olen = u32::from(at(&w.buf, i + 1));
    if olen < 2 || w.i + olen > w.len {
        return 1;
    }
    match kind {
        OPT_MSS if olen == 4 => {
            w.mss = u32::from(u16::from_be_bytes([at(&w.buf, i + 2), at(&w.buf, i + 3)]));
            w.mss_at = w.i + 1;
        }
        OPT_WSCALE if olen == 3 => w.wscale = u32::from(at(&w.buf, i + 2).min(14)),
        OPT_SACK_PERM if olen == 2 => w.sack_perm = 1,
        OPT_SACK => {
            w.sack_at = w.i;
            w.sack_len = olen;
        }
        _ => {}
    }
    w.i += olen;
    0
}

/// Copies the options of the TCP header at `tcp_off` (length `doff`) and walks them.
#[inline(always)]
fn walk(ctx: *mut xdp_md, tcp_off: u32, doff: u32, w: &mut Walk) {
    w.len = load_options(ctx, tcp_off, doff, &mut w.buf) as u32;
    w.wscale = u32::from(WSCALE_NONE);
    if w.len == 0 {
        return;
    }
    // SAFETY: a verified callback and a pointer to this frame's `Walk`.
    unsafe {
        bpf_loop(
            MAX_OPTS as u32,
            walk_step as *mut c_void,
            (w as *mut Walk).cast(),
            0,
        )
    };
}

/// The options of a SYN or SYN-ACK at `tcp_off`, packed: MSS in the low 16 bits, the window
/// shift in bits 16..24 (WSCALE_NONE if absent), SACK permitted in bit 24.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn elb_syn_options(ctx: *mut xdp_md, tcp_off: u32, doff: u32) -> u32 {
    let mut w = new_walk();
    // Direct reads at constant offsets (the header sits right after an option-less IPv4
    // header here): cheaper than a helper copy.
    let xdp = XdpContext::new(ctx);
    let len = (doff as usize).saturating_sub(TCP_LEN).min(MAX_OPTS);
    if tcp_off as usize != ETH_LEN + IP_LEN || len == 0 {
        return u32::from(WSCALE_NONE) << 16;
    }
    for i in 0..MAX_OPTS / 4 {
        if 4 * i >= len {
            break;
        }
        let Some(p) = ptr_at::<[u8; 4]>(&xdp, ETH_LEN + IP_LEN + TCP_LEN + 4 * i) else {
            break;
        };
        // SAFETY: bounds-checked by `ptr_at`.
        let b = unsafe { *p };
        w.buf[4 * i..4 * i + 4].copy_from_slice(&b);
    }
    w.len = len as u32;
    w.wscale = u32::from(WSCALE_NONE);
    // SAFETY: a verified callback and a pointer to this frame's `Walk`.
    unsafe {
        bpf_loop(
            MAX_OPTS as u32,
            walk_step as *mut c_void,
            (&raw mut w).cast(),
            0,
        )
    };
    (w.mss & 0xffff) | ((w.wscale & 0xff) << 16) | ((w.sack_perm & 1) << 24)
}

#[inline(always)]
fn new_walk() -> Walk {
    Walk {
        buf: [0; OPT_BUF],
        len: 0,
        i: 0,
        mss: 0,
        wscale: 0,
        sack_perm: 0,
        sack_at: 0,
        sack_len: 0,
        mss_at: 0,
    }
}

/// The options of the SYN or SYN-ACK at `tcp_off`.
#[inline(always)]
pub fn parse_syn(ctx: *mut xdp_md, tcp_off: usize, doff: usize) -> SynOptions {
    let packed = elb_syn_options(ctx, tcp_off as u32, doff as u32);
    SynOptions {
        mss: packed as u16,
        wscale: (packed >> 16) as u8,
        sack: packed & (1 << 24) != 0,
    }
}

/// Adds `delta` to every SACK edge of the TCP header at `tcp_off` (length `doff`) and returns
/// the checksum `check` updated for it. SACK edges are sequence numbers of the data they
/// acknowledge: they move with the ACK number.
#[inline(always)]
pub fn shift_sack(ctx: *mut xdp_md, tcp_off: u32, doff: u32, delta: u32, check: u32) -> u32 {
    let mut w = new_walk();
    walk(ctx, tcp_off, doff, &mut w);
    let (start, sack_len, buf) = (
        w.sack_at as usize & (OPT_BUF - 1),
        w.sack_len as usize,
        &w.buf,
    );
    if !(10..=34).contains(&sack_len) {
        return check;
    }
    let mut check = check as u16;
    let blocks = (sack_len - 2) / 8;
    for b in 0..4 {
        if b >= blocks {
            break;
        }
        for e in 0..2 {
            let off = start + 2 + 8 * b + 4 * e;
            let old = [
                at(buf, off),
                at(buf, off + 1),
                at(buf, off + 2),
                at(buf, off + 3),
            ];
            let mut new = u32::from_be_bytes(old).wrapping_add(delta).to_be_bytes();
            check = csum::replace_u32(check, u32::from_ne_bytes(old), u32::from_ne_bytes(new));
            // SAFETY: the kernel bounds-checks the packet range.
            unsafe {
                bpf_xdp_store_bytes(
                    ctx,
                    tcp_off + (TCP_LEN + off) as u32,
                    new.as_mut_ptr().cast(),
                    4,
                );
            }
        }
    }
    u32::from(check)
}

/// Lowers the MSS option of the TCP header at `tcp_off` (length `doff`) by `sub` (never below
/// `MIN_MSS`) and returns the checksum `check` updated for it. A header without the option is
/// left alone.
#[inline(always)]
pub fn lower_mss(ctx: *mut xdp_md, tcp_off: u32, doff: u32, sub: u32, check: u32) -> u32 {
    /// IPv4's minimum MSS (RFC 9293: 576 - 40).
    const MIN_MSS: u32 = 536;
    let mut w = new_walk();
    walk(ctx, tcp_off, doff, &mut w);
    if w.mss_at == 0 || w.mss <= MIN_MSS {
        return check;
    }
    let new = w.mss.saturating_sub(sub).max(MIN_MSS);
    let off = (w.mss_at - 1) as usize & (OPT_BUF - 1);
    let old = u16::from_ne_bytes([at(&w.buf, off + 2), at(&w.buf, off + 3)]);
    let mut bytes = (new as u16).to_be_bytes();
    // SAFETY: the kernel bounds-checks the packet range.
    unsafe {
        bpf_xdp_store_bytes(
            ctx,
            tcp_off + (TCP_LEN + off + 2) as u32,
            bytes.as_mut_ptr().cast(),
            2,
        );
    }
    u32::from(csum::replace_u16(
        check as u16,
        old,
        u16::from_ne_bytes(bytes),
    ))
}

/// 1 if the TCP checksum of the segment after an option-less IPv4 header (`tcp_len` bytes:
/// header, options and payload) is right, 0 otherwise. Used where a packet creates state (a
/// SYN, a cookie's ACK), and affordable there: a SYN with a bad checksum would reach the
/// backend, be dropped there, and leave a flow and a SNAT tuple behind.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn elb_tcp_checksum_ok(
    ctx: *mut xdp_md,
    saddr: u32,
    daddr: u32,
    doff: u32,
    tcp_len: u32,
) -> u32 {
    let xdp = XdpContext::new(ctx);
    let (hdr, tcp_len) = (doff as usize, tcp_len as usize);
    if !(TCP_LEN..=60).contains(&hdr) || hdr > tcp_len || tcp_len > 24 * 64 {
        // Jumbo SYNs do not occur; refusing one costs nothing.
        return 0;
    }
    let mut sum = u64::from(
        (saddr & 0xffff)
            + (saddr >> 16)
            + (daddr & 0xffff)
            + (daddr >> 16)
            + u32::from(u16::from(PROTO_TCP).to_be())
            + u32::from((tcp_len as u16).to_be()),
    );
    // The header and options: direct reads at constant offsets.
    for i in 0..30 {
        if 2 * i >= hdr {
            break;
        }
        let Some(p) = ptr_at::<u16>(&xdp, ETH_LEN + IP_LEN + 2 * i) else {
            return 0;
        };
        // SAFETY: bounds-checked by `ptr_at`; an even offset (see `hdr::sum_words`).
        sum += u64::from(unsafe { *p });
    }
    // The payload (rare in a SYN): through the kernel's copy and checksum helpers.
    let payload_off = (ETH_LEN + IP_LEN + hdr) as u32;
    let payload = (tcp_len - hdr) as u32;
    if payload == 0 {
        // The usual SYN: no buffer to clear (the BPF target clears one a byte at a time).
        return folds_to_zero(sum);
    }
    let mut off = 0u32;
    let mut buf = [0u8; 64];
    for _ in 0..24 {
        if off + 64 > payload {
            break;
        }
        // SAFETY: the kernel bounds-checks the packet range; buf holds 64 bytes.
        let part = unsafe {
            if bpf_xdp_load_bytes(ctx, payload_off + off, buf.as_mut_ptr().cast(), 64) != 0 {
                return 0;
            }
            bpf_csum_diff(core::ptr::null_mut(), 0, buf.as_mut_ptr().cast(), 64, 0)
        };
        if part < 0 {
            return 0;
        }
        sum += part as u64 & 0xffff_ffff;
        off += 64;
    }
    let rest = payload - off;
    if rest > 0 {
        buf = [0u8; 64];
        // SAFETY: a volatile read of a local (see `load_options`).
        let n = unsafe { core::ptr::read_volatile(&raw const rest) };
        if n == 0 || n > 63 {
            return 0;
        }
        // SAFETY: as above; n < 64.
        if unsafe { bpf_xdp_load_bytes(ctx, payload_off + off, buf.as_mut_ptr().cast(), n) } != 0 {
            return 0;
        }
        for i in 0..32 {
            sum += u64::from(u16::from_ne_bytes([buf[2 * i], buf[2 * i + 1]]));
        }
    }
    folds_to_zero(sum)
}

/// 1 if the 64-bit one's-complement accumulator `sum` folds to zero (a right checksum).
#[inline(always)]
fn folds_to_zero(mut sum: u64) -> u32 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    u32::from(csum::fold(sum as u32) == 0)
}

/// True if the TCP checksum of the segment (header length `doff`) is right (see
/// `elb_tcp_checksum_ok`).
#[inline(always)]
pub fn checksum_ok(ctx: *mut xdp_md, saddr: u32, daddr: u32, doff: usize, tcp_len: usize) -> bool {
    elb_tcp_checksum_ok(ctx, saddr, daddr, doff as u32, tcp_len as u32) != 0
}
