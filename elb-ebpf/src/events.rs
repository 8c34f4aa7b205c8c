//! Flow events for the agent's access logs (`flow_events` ring buffer), and the per-flow counts
//! behind them. Only flows with `FLOW_F_EVENTS` (their listener has `LISTENER_F_EVENTS`) pay.
//!
//! The program writes a start when the client completes the handshake (a flow opened from a
//! SYN cookie: when it is opened), so half-open flows (a SYN flood's) write nothing, and an end
//! when a new connection reusing a closed flow's client port retires it (the flow leaves the
//! table here, the sweep never sees it). Every other end (closed, idle, backend gone) is the
//! sweep's, which reads both halves when it removes the flow: nothing on the established path
//! but the counts.

use elb_common::{Counters, FLOW_EVENT_END, FLOW_EVENT_START, FlowEvent, FlowSlot};

use crate::{flows, maps::FLOW_EVENTS};

/// Counts one packet with `payload` bytes in the half at `f`. Atomic adds: the halves are
/// shared by all CPUs (a flow's packets may arrive on several), and a plain add would lose
/// counts there; uncontended, an atomic add costs a few nanoseconds (see the README's
/// per-packet numbers), and only flows of listeners with access logs pay it.
#[inline(always)]
pub fn count(f: *mut FlowSlot, payload: u64) {
    // SAFETY: pointers into the flow table (a slot reused meanwhile gets a stray count at
    // worst: the counts are statistics, never control flow).
    unsafe {
        flows::fetch_add32(&raw mut (*f).packets, 1);
        if payload != 0 {
            flows::fetch_add(&raw mut (*f).bytes, payload);
        }
    }
}

/// Writes a start for the forward half at `f` (slot `index`, identity `ident`) at `now`.
#[inline(always)]
pub fn start(c: &mut Counters, f: *const FlowSlot, index: u32, ident: u32, now: u32) {
    write(c, FLOW_EVENT_START, 0, f, None, index, ident, now);
}

/// Writes the end of the closed flow whose forward half is at `f` (slot `index`) and reverse
/// half at `r` (if found), with flags `flags`, at `now`.
#[inline(always)]
pub fn end(
    c: &mut Counters,
    f: *const FlowSlot,
    r: Option<*const FlowSlot>,
    index: u32,
    ident: u32,
    flags: u32,
    now: u32,
) {
    let reason = elb_common::close_reason(flags);
    write(c, FLOW_EVENT_END, reason, f, r, index, ident, now);
}

/// Writes one event about the flow of forward half `f`; ends carry both halves' counts.
#[expect(
    clippy::too_many_arguments,
    reason = "an event's fields, from registers: no stack room for a struct"
)]
#[inline(always)]
fn write(
    c: &mut Counters,
    kind: u8,
    reason: u8,
    f: *const FlowSlot,
    r: Option<*const FlowSlot>,
    index: u32,
    ident: u32,
    time: u32,
) {
    let Some(mut e) = FLOW_EVENTS.reserve(0) else {
        c.events_dropped += 1;
        return;
    };
    let end = kind == FLOW_EVENT_END;
    // SAFETY: `f` and `r` point into the flow table (or this CPU's scratch); the ring entry is
    // ours until submitted.
    unsafe {
        let (packets_in, bytes_in) = if end {
            ((*f).packets, (*f).bytes)
        } else {
            (0, 0)
        };
        let (packets_out, bytes_out) = match r {
            Some(r) if end => ((*r).packets, (*r).bytes),
            _ => (0, 0),
        };
        e.write(FlowEvent {
            kind,
            reason,
            _pad: 0,
            ident,
            index,
            listener_id: (*f).listener_id,
            backend_id: (*f).backend_id,
            key: (*f).key,
            nat: (*f).nat,
            created: (*f).created,
            time,
            packets_in,
            packets_out,
            _pad2: 0,
            bytes_in,
            bytes_out,
        });
    }
    e.submit(0);
}
