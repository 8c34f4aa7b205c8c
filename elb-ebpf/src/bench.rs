//! The benchmark and test object (`elb-bench`): never loaded by `elb-servo`.
//!
//! - `elb_floor`: the per-packet floor (swap MACs, XDP_TX);
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
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    btf_maps::{Array, PerCpuArray, ProgramArray},
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
    let Some(eth) = ptr_at::<EthHdr>(&ctx, 0) else {
        return XDP_DROP;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet.
    unsafe {
        let (dst, src) = ((*eth).dst, (*eth).src);
        (*eth).dst = src;
        (*eth).src = dst;
    }
    XDP_TX
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
            _pad: [0; 3],
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

// ----- EXPERIMENTS (temporary) -----
use aya_ebpf::btf_maps::{HashMap, LruHashMap};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExpVal {
    pub w: [u64; 6],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExpSlot {
    pub w: [u64; 8],
}

#[btf_map(name = "m_htab")]
static EXP_HTAB: HashMap<[u64; 2], ExpVal, 2097152> = HashMap::new();
#[btf_map(name = "m_lru")]
static EXP_LRU: LruHashMap<[u64; 2], ExpVal, 2097152> = LruHashMap::new();
#[btf_map(name = "m_lru_nc")]
static EXP_LRU_NC: LruHashMap<
    [u64; 2],
    ExpVal,
    262144,
    { aya_ebpf::bindings::BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();
#[btf_map(name = "m_htab_np")]
static EXP_HTAB_NP: HashMap<
    [u64; 2],
    ExpVal,
    2097152,
    { aya_ebpf::bindings::BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

#[xdp]
pub fn exp_htab_np(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    match unsafe { EXP_HTAB_NP.get(k) } {
        Some(v) => exp_done(&ctx, v.w[0]),
        None => XDP_DROP,
    }
}

#[btf_map(name = "i_htab")]
static INS_HTAB: HashMap<[u64; 2], ExpVal, 2097152> = HashMap::new();
#[btf_map(name = "i_lru")]
static INS_LRU: LruHashMap<[u64; 2], ExpVal, 2097152> = LruHashMap::new();
#[btf_map(name = "i_lru_nc")]
static INS_LRU_NC: LruHashMap<
    [u64; 2],
    ExpVal,
    2097152,
    { aya_ebpf::bindings::BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();
#[btf_map(name = "i_arr")]
static INS_ARR: Array<ExpSlot, 2097152> = Array::new();
#[btf_map(name = "m_arr")]
static EXP_ARR: Array<ExpSlot, 2097152> = Array::new();

#[inline(always)]
fn exp_key(ctx: &XdpContext) -> Option<[u64; 2]> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    let tcp = ptr_at::<TcpHdr>(ctx, ETH_LEN + IP_LEN)?;
    unsafe {
        let a = u64::from((*ip).saddr) | (u64::from((*ip).daddr) << 32);
        let b = u64::from((*tcp).sport) | (u64::from((*tcp).dport) << 16) | (6u64 << 32);
        Some([a, b])
    }
}

#[inline(always)]
pub fn exp_hash(k: [u64; 2]) -> u64 {
    let mut h = (k[0] ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 31;
    h = (h ^ k[1]).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 29;
    h
}

#[inline(always)]
fn exp_done(ctx: &XdpContext, v: u64) -> u32 {
    if let Some(eth) = ptr_at::<EthHdr>(ctx, 0) {
        unsafe { (*eth).dst[0] ^= v as u8 };
    }
    XDP_TX
}

#[xdp]
pub fn exp_htab(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    match unsafe { EXP_HTAB.get(k) } {
        Some(v) => exp_done(&ctx, v.w[0]),
        None => XDP_DROP,
    }
}

#[xdp]
pub fn exp_lru(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    match unsafe { EXP_LRU.get(k) } {
        Some(v) => exp_done(&ctx, v.w[0]),
        None => XDP_DROP,
    }
}

#[xdp]
pub fn exp_lru_nc(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    match unsafe { EXP_LRU_NC.get(k) } {
        Some(v) => exp_done(&ctx, v.w[0]),
        None => XDP_DROP,
    }
}

#[xdp]
pub fn exp_arr(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    let h = exp_hash(k);
    for p in 0..4u64 {
        let idx = ((h.wrapping_add(p)) & 2097151) as u32;
        let Some(s) = EXP_ARR.get(idx) else {
            return XDP_ABORTED;
        };
        if s.w[0] == k[0] && s.w[1] == k[1] {
            return exp_done(&ctx, s.w[2]);
        }
        if s.w[0] == 0 {
            break;
        }
    }
    XDP_DROP
}

#[xdp]
pub fn exp_ktime(ctx: XdpContext) -> u32 {
    let t = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    exp_done(&ctx, t)
}
#[xdp]
pub fn exp_coarse(ctx: XdpContext) -> u32 {
    let t = unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() };
    exp_done(&ctx, t)
}
#[xdp]
pub fn exp_jiffies(ctx: XdpContext) -> u32 {
    let t = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() };
    exp_done(&ctx, t)
}
#[xdp]
pub fn exp_prandom(ctx: XdpContext) -> u32 {
    let t = unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() };
    exp_done(&ctx, u64::from(t))
}

#[xdp]
pub fn exp_ins_htab(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    let v = ExpVal { w: [k[0]; 6] };
    if INS_HTAB
        .insert(k, v, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_ok()
    {
        exp_done(&ctx, 1)
    } else {
        XDP_DROP
    }
}
#[xdp]
pub fn exp_ins_lru(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    let v = ExpVal { w: [k[0]; 6] };
    if INS_LRU
        .insert(k, v, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_ok()
    {
        exp_done(&ctx, 1)
    } else {
        XDP_DROP
    }
}
#[xdp]
pub fn exp_ins_lru_nc(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    let v = ExpVal { w: [k[0]; 6] };
    if INS_LRU_NC
        .insert(k, v, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_ok()
    {
        exp_done(&ctx, 1)
    } else {
        XDP_DROP
    }
}
#[xdp]
pub fn exp_ins_arr(ctx: XdpContext) -> u32 {
    use core::intrinsics::{AtomicOrdering, atomic_cxchg};
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    let h = exp_hash(k);
    for p in 0..8u64 {
        let idx = ((h.wrapping_add(p)) & 2097151) as u32;
        let Some(s) = INS_ARR.get_ptr_mut(idx) else {
            return XDP_ABORTED;
        };
        let w3 = unsafe { &raw mut (*s).w[3] };
        if unsafe { *w3 } != 0 {
            continue;
        }
        let (_, ok) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                w3,
                0,
                h | 1,
            )
        };
        if ok {
            unsafe {
                (*s).w[0] = k[0];
                (*s).w[1] = k[1];
                (*s).w[2] = 1;
                (*s).w[4] = k[0];
                (*s).w[5] = k[1];
            }
            return exp_done(&ctx, 1);
        }
    }
    XDP_DROP
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn exp_global_fn(ctx: *mut aya_ebpf::bindings::xdp_md, x: u64) -> u64 {
    let c = XdpContext::new(ctx);
    match ptr_at::<u8>(&c, (x & 15) as usize) {
        Some(p) => u64::from(unsafe { *p }) + x,
        None => 0,
    }
}

#[xdp]
pub fn exp_global(ctx: XdpContext) -> u32 {
    let v = exp_global_fn(ctx.ctx, 3);
    exp_done(&ctx, v)
}

#[btf_map(name = "exp_tail")]
static EXP_TAIL: ProgramArray<4> = ProgramArray::new();

#[xdp]
pub fn exp_siphash(ctx: XdpContext) -> u32 {
    let Some(k) = exp_key(&ctx) else {
        return XDP_ABORTED;
    };
    let h = elb_common::hash::syn_cookie(
        [k[0], k[1]],
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        k[1] as u16,
        80,
        k[0] as u32,
        7,
        0x5a,
    );
    exp_done(&ctx, u64::from(h >> 8))
}

#[xdp]
pub fn exp_adjust(ctx: XdpContext) -> u32 {
    unsafe {
        if bpf_xdp_adjust_tail(ctx.as_ptr().cast(), -8) != 0 {
            return XDP_ABORTED;
        }
        if bpf_xdp_adjust_tail(ctx.as_ptr().cast(), 8) != 0 {
            return XDP_ABORTED;
        }
    }
    exp_done(&ctx, 1)
}

#[xdp]
pub fn exp_loadbytes(ctx: XdpContext) -> u32 {
    let mut buf = [0u8; 64];
    let rc =
        unsafe { aya_ebpf::helpers::bpf_xdp_load_bytes(ctx.ctx, 34, buf.as_mut_ptr().cast(), 20) };
    if rc != 0 {
        return XDP_ABORTED;
    }
    let mut sum = 0u64;
    for i in 0..32 {
        sum += u64::from(u16::from_ne_bytes([buf[2 * i], buf[2 * i + 1]]));
    }
    exp_done(&ctx, sum)
}

#[xdp]
pub fn exp_tailcall(ctx: XdpContext) -> u32 {
    unsafe { EXP_TAIL.tail_call(&ctx, 0) };
    XDP_ABORTED
}

#[xdp]
pub fn exp_mapget(ctx: XdpContext) -> u32 {
    let a = GEN_SEQ.get(0).copied().unwrap_or(0);
    let b = RING_STATE.get(0).map_or(0, |s| s.len);
    exp_done(&ctx, u64::from(a + b))
}
