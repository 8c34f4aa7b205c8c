//! Forwarding: where a rewritten packet goes, and sending it there.
//!
//! - Towards a backend: the next hop (egress interface, MACs, MTU) comes from `bpf_fib_lookup`,
//!   cached per backend and per CPU for HOP_REFRESH_JIFFIES (the lookup costs more than the
//!   rest of the path together).
//! - Towards a client: back to the neighbour its SYN came from, out of the interface it came in
//!   on (remembered in the flow's reverse half; no lookup at all).
//!
//! Then XDP_TX out of the interface the packet came in on, or a devmap redirect to another one.
//! A neighbour the FIB cannot resolve yet sends the rewritten packet to the kernel, which
//! forwards it and resolves the neighbour; the next packets take the fast path.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action::{XDP_PASS, XDP_TX},
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use elb_common::{Counters, NextHop};

use crate::{hdr::EthHdr, maps::BACKEND_ROUTES, maps::TX_PORTS};

const AF_INET: u8 = 2;

/// Looks up the route from `src` to `dst` (memory-order addresses) as if the packet arrived on
/// the context's ingress interface, and fills `hop` with its next hop (all but `updated`) (`hop.ifindex`: also the
/// egress of an unresolved neighbour). Returns the `BPF_FIB_LKUP_RET_*` code. (A BPF
/// subprogram: the 64-byte lookup structure lives in its own stack frame.)
#[inline(never)]
pub fn lookup(ctx: &XdpContext, proto: u8, src: u32, dst: u32, hop: &mut NextHop) -> u32 {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input (plain integers and arrays).
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = proto;
    // tot_len 0: the lookup then never answers FRAG_NEEDED and always reports the MTU.
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_3.ipv4_src = src;
    params.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: params is a valid, writable bpf_fib_lookup of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &raw mut params,
            size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    if rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH {
        *hop = NextHop {
            ifindex: params.ifindex,
            updated: 0,
            dmac: params.dmac,
            smac: params.smac,
            // SAFETY: the kernel stores the route's MTU in this union member.
            mtu: unsafe { params.__bindgen_anon_1.mtu_result },
            _pad: 0,
        };
    }
    rc
}

/// Why there is no next hop to use now.
pub enum NoHop {
    /// The route exists but its neighbour is unresolved: hand the packet to the kernel.
    Unresolved(u32),
    /// No route.
    NoRoute,
}

/// The next hop towards backend `backend_id` at `addr` (memory order), from this CPU's cache
/// or a fresh lookup.
#[inline(always)]
pub fn backend_hop(
    ctx: &XdpContext,
    backend_id: u32,
    addr: u32,
    now: u32,
) -> Result<NextHop, NoHop> {
    let Some(cached) = BACKEND_ROUTES.get_ptr_mut(backend_id) else {
        return Err(NoHop::NoRoute);
    };
    // SAFETY: this CPU's entry of a per-CPU array; nothing else writes it.
    let cached = unsafe { &mut *cached };
    if cached.fresh(now) {
        return Ok(*cached);
    }
    let mut hop = NextHop::default();
    match lookup(ctx, elb_common::PROTO_TCP, 0, addr, &mut hop) {
        BPF_FIB_LKUP_RET_SUCCESS => {
            hop.updated = now;
            *cached = hop;
            Ok(hop)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(NoHop::Unresolved(hop.ifindex)),
        _ => Err(NoHop::NoRoute),
    }
}

/// Sends the packet to `hop`: XDP_TX if that is out of the interface it came in on, a devmap
/// redirect otherwise.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, c: &mut Counters, eth: *mut EthHdr, hop: &NextHop) -> u32 {
    // SAFETY: `eth` was bounds-checked by the caller and no helper that could move packet data
    // ran since.
    unsafe {
        (*eth).dst = hop.dmac;
        (*eth).src = hop.smac;
    }
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        c.fwd_tx += 1;
        return XDP_TX;
    }
    match TX_PORTS.redirect(hop.ifindex, 0) {
        Ok(action) => {
            c.fwd_redirect += 1;
            action
        }
        Err(_) => {
            c.pass_no_tx_port += 1;
            XDP_PASS
        }
    }
}
