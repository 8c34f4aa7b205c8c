//! The benchmark and test object (`elb-bench`): never loaded by `elb-servo`.
//!
//! - `elb_floor`: the per-packet floor (swap MACs, XDP_TX);
//! - `elb_floor_redirect`: the floor of a forwarded packet (swap MACs, redirect out of another
//!   interface through a devmap, as the servo sends to its backends);
//! - `elb_drop`: a sink for veth peers that receive benchmark traffic;
//! - `elb_sink_spoofed`: a sink for the client side of a SYN flood: drops what is addressed to
//!   the spoofed range, passes the rest (the legitimate clients' traffic);
//! - `elb_gen`, `elb_gen_syn`: traffic generators for `BPF_PROG_TEST_RUN` in live-frames mode;
//! - `bench_ring`: the per-packet timing harness. `BPF_PROG_TEST_RUN` with `repeat` runs a
//!   program N times on one buffer, so a program that rewrites its packet sees its own output on
//!   the next iteration. This wrapper writes a fresh frame into the buffer at every iteration
//!   (the next one of a ring of distinct flows, or a SYN of a flow never seen before) and
//!   tail-calls the program under test. The floor is timed through the same wrapper.
#![no_std]
#![no_main]
#![allow(internal_features)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    btf_maps::{Array, DevMap, PerCpuArray, ProgramArray},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use elb_common::{
    FlowKey, FlowSlot, GEN_FRAME_LEN, GenTemplate, RING_FRAME_MAX, RING_MAX, RING_MODE_SYN,
    RingFrame, RingState, SPOOF_BASE, SPOOF_MASK, csum,
};
use elb_ebpf::hdr::{ETH_LEN, EthHdr, IP_LEN, Ipv4Hdr, TcpHdr, ptr_at};

/// Sequence of the SYN generator, per CPU.
#[btf_map(name = "gen_seq")]
static GEN_SEQ: PerCpuArray<u32, 1> = PerCpuArray::new();

/// The frame the generators send (written by the benchmark).
#[btf_map(name = "gen_template")]
static GEN_TEMPLATE: Array<GenTemplate, 1> = Array::new();

/// The frames `bench_ring` cycles through.
#[btf_map(name = "ring")]
static RING: Array<RingFrame, { RING_MAX as usize }> = Array::new();

/// `bench_ring`'s settings and position (per CPU: each CPU walks the ring on its own).
#[btf_map(name = "ring_state")]
static RING_STATE: PerCpuArray<RingState, 1> = PerCpuArray::new();

/// The programs `bench_ring` hands its frame to (0: the floor, 1: the program under test).
#[btf_map(name = "ring_targets")]
static RING_TARGETS: ProgramArray<16> = ProgramArray::new();

/// The benchmark floor: swap the Ethernet addresses and send the frame back (XDP_TX).
#[xdp]
pub fn elb_floor(ctx: XdpContext) -> u32 {
    if swap_macs(&ctx) { XDP_TX } else { XDP_DROP }
}

/// Swaps the frame's Ethernet addresses (all the floor does to a frame); false if it has no
/// Ethernet header.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> bool {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return false;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet.
    unsafe {
        let (dst, src) = ((*eth).dst, (*eth).src);
        (*eth).dst = src;
        (*eth).src = dst;
    }
    true
}

/// The interface `elb_floor_redirect` sends out of (entry 0, set by the benchmark).
#[btf_map(name = "floor_ports")]
static FLOOR_PORTS: DevMap<1> = DevMap::new();

/// The floor of a forwarded packet: swap the Ethernet addresses and redirect the frame out of
/// `floor_ports[0]`, the servo's path towards a backend on another interface (the devmap's
/// bulk queue and flush, which XDP_TX does not pay).
#[xdp]
pub fn elb_floor_redirect(ctx: XdpContext) -> u32 {
    if !swap_macs(&ctx) {
        return XDP_DROP;
    }
    FLOOR_PORTS.redirect(0, 0).unwrap_or(XDP_DROP)
}

/// A table of the flow table's size (set at load) and its index mask, for `elb_floor_lookup`.
#[btf_map(name = "floor_table")]
static FLOOR_TABLE: Array<FlowSlot, 1024> = Array::new();
#[btf_map(name = "floor_mask")]
static FLOOR_MASK: Array<u32, 1> = Array::new();

/// The floor plus the one memory access that no flow lookup avoids: the frame's 4-tuple is
/// hashed as the flow table hashes it, and the state and key words of that slot are read from a
/// table of the flow table's size. What a ring of flows costs before any flow work is done.
#[xdp]
pub fn elb_floor_lookup(ctx: XdpContext) -> u32 {
    let (Some(eth), Some(ip), Some(tcp), Some(mask)) = (
        ptr_at::<EthHdr>(&ctx, 0),
        ptr_at::<Ipv4Hdr>(&ctx, ETH_LEN),
        ptr_at::<TcpHdr>(&ctx, ETH_LEN + IP_LEN),
        FLOOR_MASK.get(0),
    ) else {
        return XDP_DROP;
    };
    // SAFETY: bounds-checked headers.
    let key = unsafe {
        FlowKey {
            src: (*ip).saddr.to_ne_bytes(),
            dst: (*ip).daddr.to_ne_bytes(),
            sport: (*tcp).sport,
            dport: (*tcp).dport,
            proto: 6,
            _pad: 0,
            _pad1: 0,
        }
    };
    let index = elb_common::hash::flow_hash([1, 2], &key) as u32 & *mask;
    let Some(slot) = FLOOR_TABLE.get_ptr(index) else {
        return XDP_DROP;
    };
    // SAFETY: a pointer into the array; volatile so that the reads happen.
    unsafe {
        let w = slot.cast::<u64>();
        core::ptr::read_volatile(w);
        core::ptr::read_volatile(w.add(2));
    }
    // SAFETY: `ptr_at` checked the header lies inside the packet.
    unsafe {
        let (dst, src) = ((*eth).dst, (*eth).src);
        (*eth).dst = src;
        (*eth).src = dst;
    }
    XDP_TX
}

/// Benchmark sink: drops everything (on veth peers that receive forwarded benchmark traffic).
#[xdp]
pub fn elb_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Client-side sink during a SYN flood: the servo answers spoofed SYNs (with SYN-ACKs, or RSTs)
/// towards addresses that do not exist; dropping them here keeps the client namespace's kernel
/// out of the measurement. Everything else (the legitimate clients' traffic) is passed.
#[xdp]
pub fn elb_sink_spoofed(ctx: XdpContext) -> u32 {
    let Some(ip) = ptr_at::<Ipv4Hdr>(&ctx, ETH_LEN) else {
        return XDP_PASS;
    };
    // SAFETY: bounds-checked above.
    let dst = u32::from_be(unsafe { (*ip).daddr });
    if dst & SPOOF_MASK == SPOOF_BASE {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// Writes the generator template into the frame; the template's IP and TCP headers.
#[inline(always)]
fn write_template(ctx: &XdpContext) -> Option<(*mut Ipv4Hdr, *mut TcpHdr)> {
    let template = GEN_TEMPLATE.get(0)?;
    let frame = ptr_at::<[u8; GEN_FRAME_LEN]>(ctx, 0)?;
    // SAFETY: `frame` is bounds-checked for the whole template length.
    unsafe { *frame = template.frame };
    Some((
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?,
        ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN)?,
    ))
}

/// Benchmark generator (`BPF_PROG_TEST_RUN` live frames): sends the template frame.
#[xdp]
pub fn elb_gen(ctx: XdpContext) -> u32 {
    match write_template(&ctx) {
        Some(_) => XDP_TX,
        None => XDP_DROP,
    }
}

/// Gives the SYN at `ip`/`tcp` the source of flow number `n`: the port cycles through
/// 1024..61024 and the address through the spoofed range (`SPOOF_BASE` + `n / 60000`), so
/// 2^32 consecutive numbers are 2^32 distinct flows. Checksums are updated incrementally.
#[inline(always)]
fn set_source(ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, n: u32) {
    // 60,000 ports per address, in an order that differs from one address to the next (as
    // real clients' ephemeral ports do: in order, they would all try the same SNAT ports).
    let a = (n / 60000) % (!SPOOF_MASK - 1);
    let port = (1024 + ((n % 60000) * 7919 + a * 4099) % 60000) as u16;
    let addr = SPOOF_BASE.wrapping_add(1 + a);
    // SAFETY: the caller bounds-checked both headers.
    unsafe {
        let old_src = (*ip).saddr;
        let new_src = addr.to_be();
        let old_port = (*tcp).sport;
        let new_port = port.to_be();
        (*ip).check = csum::replace_u32((*ip).check, old_src, new_src);
        let mut check = csum::replace_u32((*tcp).check, old_src, new_src);
        check = csum::replace_u16(check, old_port, new_port);
        (*tcp).check = check;
        (*ip).saddr = new_src;
        (*tcp).sport = new_port;
    }
}

/// Benchmark SYN-flood generator: the template frame from the next spoofed source, so each
/// frame is a new flow.
#[xdp]
pub fn elb_gen_syn(ctx: XdpContext) -> u32 {
    let (Some((ip, tcp)), Some(seq)) = (write_template(&ctx), GEN_SEQ.get_ptr_mut(0)) else {
        return XDP_DROP;
    };
    // SAFETY: `seq` is this CPU's entry.
    let n = unsafe {
        let n = *seq;
        *seq = n.wrapping_add(1);
        n
    };
    set_source(ip, tcp, n);
    XDP_TX
}

/// The per-packet timing harness: writes the next frame (see the module documentation) and
/// tail-calls `ring_targets[target]`. Returns XDP_ABORTED if anything fails, so a timed loop
/// that did not run the program under test cannot go unnoticed.
#[xdp]
pub fn bench_ring(ctx: XdpContext) -> u32 {
    match ring_next(&ctx) {
        Some(target) => {
            // SAFETY: a tail call; it returns only if the slot is empty.
            unsafe { RING_TARGETS.tail_call(&ctx, target) };
            XDP_ABORTED
        }
        None => XDP_ABORTED,
    }
}

#[inline(always)]
fn ring_next(ctx: &XdpContext) -> Option<u32> {
    let state = RING_STATE.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry.
    let state = unsafe { &mut *state };
    let n = state.next;
    state.next = n.wrapping_add(1);
    let len = state.len;
    if len == 0 || len > RING_MAX {
        return None;
    }
    let slot = if state.mode == RING_MODE_SYN {
        0
    } else {
        n.checked_rem(u64::from(len))? as u32
    };
    // Undo a previous iteration's head move (see `RingState::base`).
    // SAFETY: this CPU's entry; volatile so that the pointer really goes through memory.
    let cur = unsafe {
        core::ptr::write_volatile(&raw mut state.cur, ctx.data() as u64);
        core::ptr::read_volatile(&raw const state.cur)
    };
    if state.base == 0 {
        state.base = cur;
    } else if cur != state.base {
        let delta = state.base.wrapping_sub(cur) as i64;
        if !(-256..=256).contains(&delta)
            // SAFETY: the kernel validates the delta against the buffer.
            || unsafe { bpf_xdp_adjust_head(ctx.as_ptr().cast(), delta as i32) } != 0
        {
            return None;
        }
    }
    let frame = RING.get(slot)?;
    let want = frame.len as usize;
    if !(ETH_LEN..=RING_FRAME_MAX).contains(&want) || !want.is_multiple_of(8) {
        return None;
    }
    let have = ctx.data_end() - ctx.data();
    if have != want {
        // SAFETY: the kernel validates the delta against the buffer.
        if unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), want as i32 - have as i32) } != 0 {
            return None;
        }
    }
    for i in 0..RING_FRAME_MAX / 8 {
        if i * 8 >= want {
            break;
        }
        let dst = ptr_at::<u64>(ctx, i * 8)?;
        // SAFETY: `dst` is bounds-checked; `i * 8 + 8 <= RING_FRAME_MAX`. Both are 8-byte
        // aligned: map values are, and XDP data starts 256 bytes into its page.
        unsafe { *dst = *frame.frame.as_ptr().add(i * 8).cast::<u64>() };
    }
    if state.mode == RING_MODE_SYN {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
        let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN)?;
        set_source(ip, tcp, n as u32);
    }
    Some(state.target)
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
