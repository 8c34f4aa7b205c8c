//! Forwarding: a FIB lookup for the rewritten destination, then XDP_TX out of the interface the
//! packet came in on, or a devmap redirect to another one. What the FIB cannot resolve to a
//! neighbour goes to the kernel (already rewritten: the kernel forwards it and resolves the
//! neighbour, after which the fast path takes over).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use elb_common::{Counters, NextHop};

use crate::{hdr::EthHdr, maps::TX_PORTS};

const AF_INET: u8 = 2;

/// Result of a route lookup.
pub struct Route {
    /// `BPF_FIB_LKUP_RET_*`.
    pub rc: u32,
    /// Filled in by the kernel: egress ifindex and MAC addresses.
    pub params: FibParams,
}

impl Route {
    /// Stores a successful lookup in `hop` (an unresolved neighbour is not cached: the next
    /// packet looks again, once the kernel has resolved it).
    #[inline(always)]
    pub fn remember(&self, hop: &mut NextHop, now: u64) {
        if self.rc == BPF_FIB_LKUP_RET_SUCCESS {
            hop.ifindex = self.params.ifindex;
            hop.dmac = self.params.dmac;
            hop.smac = self.params.smac;
            hop.updated_ns = now;
        }
    }

    /// Egress interface, when the lookup found one (also for an unresolved neighbour).
    #[inline(always)]
    pub fn egress(&self) -> Option<u32> {
        if self.rc == BPF_FIB_LKUP_RET_SUCCESS || self.rc == BPF_FIB_LKUP_RET_NO_NEIGH {
            Some(self.params.ifindex)
        } else {
            None
        }
    }
}

/// Looks up the route from `src` to `dst` (memory-order addresses) as if the packet arrived
/// on the context's ingress interface.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, proto: u8, src: u32, dst: u32, tot_len: u16) -> Route {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input (plain integers and arrays).
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = proto;
    params.__bindgen_anon_1.tot_len = tot_len;
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
    };
    Route {
        rc: rc as u32,
        params,
    }
}

/// Sends the packet to `hop`: XDP_TX if that is out of the interface it came in on, a devmap
/// redirect otherwise.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, c: &mut Counters, eth: *mut EthHdr, hop: &NextHop) -> u32 {
    let (ifindex, dmac, smac) = (hop.ifindex, hop.dmac, hop.smac);
    // SAFETY: `eth` was bounds-checked by the caller and no helper that could move packet data
    // ran since.
    unsafe {
        (*eth).dst = dmac;
        (*eth).src = smac;
    }
    if ifindex == ctx.ingress_ifindex() as u32 {
        c.fwd_tx += 1;
        return XDP_TX;
    }
    match TX_PORTS.redirect(ifindex, 0) {
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

/// Sends the (already rewritten) packet along `route`.
#[inline(always)]
pub fn emit(ctx: &XdpContext, c: &mut Counters, eth: *mut EthHdr, route: &Route) -> u32 {
    match route.rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let hop = NextHop {
                ifindex: route.params.ifindex,
                dmac: route.params.dmac,
                smac: route.params.smac,
                ..NextHop::default()
            };
            transmit(ctx, c, eth, &hop)
        }
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
