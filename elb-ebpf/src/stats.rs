//! Per-listener and per-backend traffic accounting.

use elb_common::TrafficStats;

use crate::maps::{BACKEND_STATS, LISTENER_STATS};

/// Which way a packet of a flow travels.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to backend.
    In,
    /// Backend to client.
    Out,
}

#[inline(always)]
fn add(s: *mut TrafficStats, dir: Direction, bytes: u64, new_flow: bool) {
    // SAFETY: per-CPU array entry of this CPU.
    let s = unsafe { &mut *s };
    match dir {
        Direction::In => {
            s.packets_in += 1;
            s.bytes_in += bytes;
        }
        Direction::Out => {
            s.packets_out += 1;
            s.bytes_out += bytes;
        }
    }
    if new_flow {
        s.new_flows += 1;
    }
}

/// Accounts one packet of a flow to its listener and backend.
#[inline(always)]
pub fn account(listener_id: u32, backend_id: u32, dir: Direction, bytes: u64, new_flow: bool) {
    if let Some(s) = LISTENER_STATS.get_ptr_mut(listener_id) {
        add(s, dir, bytes, new_flow);
    }
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend_id) {
        add(s, dir, bytes, new_flow);
    }
}
