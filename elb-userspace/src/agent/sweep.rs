//! The flow sweep: ends idle, closed and half-open flows, releases SNAT reservations, removes
//! orphaned halves, corrects the listeners' half-open counts, compacts the table, and counts
//! active flows per listener and backend for `/metrics`. The flows it ends whose listener
//! reports events (`FLOW_F_EVENTS`) and whose client completed the handshake come back as end
//! events ([`SweepReport::ends`], with both halves' counts) for the access logs.
//!
//! The flow table is memory-mapped: the sweep reads it directly (a million flows in tens of
//! milliseconds) and changes it only with compare-and-swap on words that carry the flow's
//! identity, as the XDP program does. So it never overwrites what the program wrote meanwhile
//! (a FIN or RST bit, a last-seen time), and never touches a slot that a new flow took since it
//! was read (a client reusing its port gets a new identity).

use std::collections::{BTreeMap, HashMap};

use elb_common::{
    BACKEND_REMOVED, Backend, FLOW_END_BACKEND_GONE, FLOW_END_IDLE, FLOW_EVENT_END,
    FLOW_F_CONFIRMED, FLOW_F_EVENTS, FLOW_F_REPLY, FLOW_F_RESERVED, FLOW_F_SYNPROXY, FLOW_F_XLATE,
    FlowEvent, FlowKey, FlowSlot,
    lifetimes::{CLOSE_GRACE_S, HALF_OPEN_S, TIME_WAIT_HOLD_S},
};

use crate::dataplane::{DataplaneError, Maps, clock};

/// How old a half found without its partner must be before the sweep treats it as an orphan
/// (younger, it may be a flow being inserted).
const ORPHAN_GRACE_S: u64 = 2;

/// Current `CLOCK_MONOTONIC` time in nanoseconds (what [`sweep`] takes as "now").
pub fn monotonic_ns() -> u64 {
    clock::monotonic_ns()
}

/// What one sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Flow halves in the table.
    pub entries: usize,
    /// Open flows (handshake completed, not closed) per listener id.
    pub active_by_listener: BTreeMap<u32, u64>,
    /// Open flows per backend id.
    pub active_by_backend: BTreeMap<u32, u64>,
    /// Half-open flows (client handshake not completed) per listener id, after this sweep.
    pub half_open_by_listener: BTreeMap<u32, u64>,
    /// Flows expired for idleness.
    pub expired_idle: u64,
    /// Closed flows removed after the close grace.
    pub removed_closed: u64,
    /// Flows of removed backends cut.
    pub removed_backend_gone: u64,
    /// Half-open flows removed (the client never completed the handshake).
    pub expired_half_open: u64,
    /// Halves whose other half was missing (removed, or reserved).
    pub orphans: u64,
    /// SNAT reservations released (reverse halves deleted).
    pub released: u64,
    /// Deleted slots turned back into empty ones.
    pub compacted: u64,
    /// End events of the flows this sweep ended that report events (for the access logs;
    /// the agent takes them out of the report).
    pub ends: Vec<FlowEvent>,
    /// Duration of the sweep.
    pub duration: std::time::Duration,
}

/// What to do with a flow (both halves present).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Keep; counts as active (handshake completed) or half-open.
    Keep { half_open: bool },
    /// End it: the forward half goes, the reverse half reserves the SNAT tuple.
    End(Reason),
}

#[derive(Debug, PartialEq, Eq)]
enum Reason {
    Idle,
    Closed,
    BackendGone,
    HalfOpen,
}

/// Ages in seconds: of the forward half's last packet, and of the flow's (either half's).
struct Ages {
    forward_s: u64,
    flow_s: u64,
}

fn verdict(
    forward: &FlowSlot,
    reverse: &FlowSlot,
    ages: &Ages,
    idle_timeout_s: Option<u64>,
    backend: Option<&Backend>,
) -> Verdict {
    let backend_gone = match backend {
        Some(b) => {
            b.generation != forward.backend_gen || b.state == BACKEND_REMOVED || b.state == 0
        }
        None => true,
    };
    if backend_gone {
        return Verdict::End(Reason::BackendGone);
    }
    let flags = forward.state.value | reverse.state.value;
    if elb_common::is_closed(flags) {
        if ages.flow_s > CLOSE_GRACE_S {
            return Verdict::End(Reason::Closed);
        }
        return Verdict::Keep { half_open: false };
    }
    let half_open = forward.state.value & FLOW_F_CONFIRMED == 0;
    // A SYN proxy flow whose backend never answered its SYN (the client's handshake was
    // completed by the cookie) is half-open on the backend's side: it goes as soon, and the
    // client's next retransmission opens it again with the same cookie.
    let backend_pending = forward.state.value & (FLOW_F_SYNPROXY | FLOW_F_XLATE) == FLOW_F_SYNPROXY;
    if (half_open || backend_pending) && ages.forward_s > HALF_OPEN_S {
        return Verdict::End(Reason::HalfOpen);
    }
    // A listener deleted meanwhile: the longest ELB idle timeout.
    if ages.flow_s > idle_timeout_s.unwrap_or(3600) {
        return Verdict::End(Reason::Idle);
    }
    Verdict::Keep { half_open }
}

/// The end event of the flow in slots `fi` (forward half `f`) and `r` (reverse half), ended
/// for `reason`. Its time is the flow's last packet.
fn end_event(fi: usize, f: &FlowSlot, r: &FlowSlot, reason: &Reason) -> FlowEvent {
    let last = if (r.seen.value.wrapping_sub(f.seen.value) as i32) > 0 {
        r.seen.value
    } else {
        f.seen.value
    };
    FlowEvent {
        kind: FLOW_EVENT_END,
        reason: match reason {
            Reason::Closed => elb_common::close_reason(f.state.value | r.state.value),
            Reason::BackendGone => FLOW_END_BACKEND_GONE,
            Reason::Idle | Reason::HalfOpen => FLOW_END_IDLE,
        },
        _pad: 0,
        ident: f.state.ident,
        index: fi as u32,
        listener_id: f.listener_id,
        backend_id: f.backend_id,
        key: f.key,
        nat: f.nat,
        created: f.created,
        time: last,
        packets_in: f.packets,
        packets_out: r.packets,
        _pad2: 0,
        bytes_in: f.bytes,
        bytes_out: r.bytes,
    }
}

/// Runs one sweep over `maps` at monotonic time `now_ns` (a later time ages every flow).
pub fn sweep(maps: &mut Maps, now_ns: u64) -> Result<SweepReport, DataplaneError> {
    let started = std::time::Instant::now();
    let clock_err = |source| DataplaneError::Syscall {
        what: "reading the kernel's jiffies (/proc/timer_list)",
        source,
    };
    let hz = u64::from(clock::hz().map_err(clock_err)?);
    let now = clock::jiffies_at(now_ns).map_err(clock_err)?;
    // The program may stamp a half after `now` was taken: a time "ahead" is age 0.
    let age_s = |seen: u32| (now.wrapping_sub(seen) as i32).max(0) as u64 / hz;
    let idle: HashMap<u32, u64> = maps
        .listeners()?
        .into_iter()
        .map(|(_, l)| (l.id, u64::from(l.idle_timeout_s)))
        .collect();
    let backends: HashMap<u32, Backend> = maps.backends()?.into_iter().collect();
    let table = maps.flow_table();
    let live = table.live();
    let mut report = SweepReport {
        entries: live.len(),
        ..SweepReport::default()
    };
    // Each forward half's reverse half is read from the live table (at the slot the program
    // noted, else by key), and checked by identity and key (identities are random and may
    // repeat). The snapshot is not atomic: a flow being inserted (reverse half first) or ended
    // while it was read may show one half only, so a half found alone counts as an orphan only
    // once it is older than `ORPHAN_GRACE_S`.
    let mut paired = vec![false; table.len()];
    let mut half_open: BTreeMap<u32, u64> = BTreeMap::new();
    let is_reverse_of = |r: &FlowSlot, ident: u32, key: &FlowKey| {
        r.state.ident == ident && r.state.value & FLOW_F_REPLY != 0 && r.key == *key
    };
    for (fi, f) in live
        .iter()
        .filter(|(_, s)| s.state.value & FLOW_F_REPLY == 0)
    {
        let (fi, ident) = (*fi, f.state.ident);
        let partner_key = f.partner_key();
        // The slot the program noted at creation, else a lookup (flows inserted by tests).
        let hint = f.partner as usize;
        let reverse = table
            .read(hint)
            .filter(|r| hint < table.len() && is_reverse_of(r, ident, &partner_key))
            .map(|r| (hint, r))
            .or_else(|| {
                table
                    .lookup(&partner_key)
                    .filter(|(_, r)| is_reverse_of(r, ident, &partner_key))
            });
        if let Some((ri, _)) = reverse {
            paired[ri] = true;
        }
        let Some((ri, r)) = reverse else {
            if age_s(f.created) > ORPHAN_GRACE_S && table.remove(fi, ident) {
                report.orphans += 1;
            }
            continue;
        };
        if r.state.value & FLOW_F_RESERVED != 0 {
            // The tuple is reserved, not this flow's any more: the forward half must go.
            if table.remove(fi, ident) {
                report.orphans += 1;
            }
            continue;
        }
        let ages = Ages {
            forward_s: age_s(f.seen.value),
            flow_s: age_s(f.seen.value).min(age_s(r.seen.value)),
        };
        match verdict(
            f,
            &r,
            &ages,
            idle.get(&u32::from(f.listener_id)).copied(),
            backends.get(&u32::from(f.backend_id)),
        ) {
            Verdict::Keep { half_open: true } => {
                *half_open.entry(u32::from(f.listener_id)).or_default() += 1;
            }
            Verdict::Keep { half_open: false } => {
                if !elb_common::is_closed(f.state.value | r.state.value) {
                    *report
                        .active_by_listener
                        .entry(u32::from(f.listener_id))
                        .or_default() += 1;
                    *report
                        .active_by_backend
                        .entry(u32::from(f.backend_id))
                        .or_default() += 1;
                }
            }
            Verdict::End(reason) => {
                // The forward half goes first: the client's next packet then gets a RST; the
                // reverse half stays as the SNAT tuple's reservation (the backend may hold the
                // tuple in TIME_WAIT), dropping late packets.
                if table.remove(fi, ident) {
                    table.set_flags(ri, ident, FLOW_F_RESERVED);
                    if reason != Reason::HalfOpen
                        && f.state.value & (FLOW_F_EVENTS | FLOW_F_CONFIRMED)
                            == FLOW_F_EVENTS | FLOW_F_CONFIRMED
                    {
                        // Read again: the counts moved since the snapshot (the reverse half
                        // counts nothing once reserved).
                        let again = |i: usize, old: &FlowSlot| {
                            table
                                .read(i)
                                .filter(|s| s.state.ident == ident && s.key == old.key)
                                .unwrap_or(*old)
                        };
                        report
                            .ends
                            .push(end_event(fi, &again(fi, f), &again(ri, &r), &reason));
                    }
                    table.set_seen(ri, ident, now);
                    match reason {
                        Reason::Idle => report.expired_idle += 1,
                        Reason::Closed => report.removed_closed += 1,
                        Reason::BackendGone => report.removed_backend_gone += 1,
                        Reason::HalfOpen => report.expired_half_open += 1,
                    }
                }
            }
        }
    }
    for (ri, r) in live
        .iter()
        .filter(|(i, s)| s.state.value & FLOW_F_REPLY != 0 && !paired[*i])
    {
        let (ri, ident) = (*ri, r.state.ident);
        if r.state.value & FLOW_F_RESERVED != 0 {
            if age_s(r.seen.value) > TIME_WAIT_HOLD_S && table.remove(ri, ident) {
                report.released += 1;
            }
            continue;
        }
        // Not reserved, and no forward half seen: still being inserted, or its forward half
        // vanished without the flow ending here. Once old enough, reserve the tuple as for an
        // ended flow (if the forward half is really gone).
        let forward = table
            .lookup(&r.partner_key())
            .filter(|(_, f)| f.state.ident == ident);
        if forward.is_none() && age_s(r.created) > ORPHAN_GRACE_S {
            table.set_flags(ri, ident, FLOW_F_RESERVED);
            table.set_seen(ri, ident, now);
            report.orphans += 1;
        }
    }
    // The program counts half-open flows up (SYN) and down (handshake completed); those that
    // expire here are gone without the program knowing: correct its count to what the table
    // holds.
    for &id in idle.keys() {
        let counted = maps.listener_state(id)?.half_open;
        let actual = half_open.get(&id).copied().unwrap_or(0);
        let fix = counted.wrapping_sub(actual);
        if maps.half_open_fix(id)? != fix {
            maps.set_half_open_fix(id, fix)?;
        }
    }
    report.half_open_by_listener = half_open;
    report.compacted = maps.flow_table().compact() as u64;
    report.duration = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use elb_common::{BACKEND_ACTIVE, FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT, FLOW_F_RST, FlowWord};

    use super::*;

    fn half(flags: u32) -> FlowSlot {
        FlowSlot {
            state: FlowWord {
                ident: 7,
                value: flags,
            },
            backend_gen: 1,
            ..FlowSlot::EMPTY
        }
    }

    fn live() -> Backend {
        Backend {
            state: BACKEND_ACTIVE,
            generation: 1,
            ..Backend::default()
        }
    }

    fn ages(forward_s: u64, flow_s: u64) -> Ages {
        Ages { forward_s, flow_s }
    }

    const OPEN: u32 = FLOW_F_CONFIRMED;

    #[test]
    fn idle_flows_end_after_the_listener_timeout_counting_either_direction() {
        let (f, r) = (half(OPEN), half(FLOW_F_REPLY));
        let b = live();
        assert_eq!(
            verdict(&f, &r, &ages(59, 59), Some(60), Some(&b)),
            Verdict::Keep { half_open: false }
        );
        assert_eq!(
            verdict(&f, &r, &ages(61, 61), Some(60), Some(&b)),
            Verdict::End(Reason::Idle)
        );
        // The client is quiet but the backend talks (server push): not idle.
        assert_eq!(
            verdict(&f, &r, &ages(300, 2), Some(60), Some(&b)),
            Verdict::Keep { half_open: false }
        );
    }

    #[test]
    fn closed_flows_end_after_the_grace() {
        let b = live();
        for closed in [FLOW_F_RST, FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND] {
            let (f, r) = (half(OPEN | closed), half(FLOW_F_REPLY | closed));
            assert_eq!(
                verdict(&f, &r, &ages(9, 9), Some(60), Some(&b)),
                Verdict::Keep { half_open: false }
            );
            assert_eq!(
                verdict(&f, &r, &ages(11, 11), Some(60), Some(&b)),
                Verdict::End(Reason::Closed)
            );
        }
        // One FIN is not a close.
        let (f, r) = (half(OPEN | FLOW_F_FIN_CLIENT), half(FLOW_F_REPLY));
        assert_eq!(
            verdict(&f, &r, &ages(11, 11), Some(60), Some(&b)),
            Verdict::Keep { half_open: false }
        );
    }

    #[test]
    fn half_open_flows_end_quickly() {
        let (f, r) = (half(0), half(FLOW_F_REPLY));
        let b = live();
        assert_eq!(
            verdict(&f, &r, &ages(HALF_OPEN_S, 1), Some(60), Some(&b)),
            Verdict::Keep { half_open: true }
        );
        assert_eq!(
            verdict(&f, &r, &ages(HALF_OPEN_S + 1, 1), Some(60), Some(&b)),
            Verdict::End(Reason::HalfOpen)
        );
    }

    #[test]
    fn syn_proxy_flows_the_backend_never_answered_end_like_half_open_ones() {
        let b = live();
        let (f, r) = (
            half(OPEN | FLOW_F_SYNPROXY),
            half(FLOW_F_REPLY | FLOW_F_SYNPROXY),
        );
        assert_eq!(
            verdict(&f, &r, &ages(HALF_OPEN_S, 1), Some(60), Some(&b)),
            Verdict::Keep { half_open: false },
            "not counted in the listener's SYN backlog (a cookie flow never was)"
        );
        assert_eq!(
            verdict(
                &f,
                &r,
                &ages(HALF_OPEN_S + 1, HALF_OPEN_S + 1),
                Some(60),
                Some(&b)
            ),
            Verdict::End(Reason::HalfOpen)
        );
        // Once the backend answered, it is an ordinary flow.
        let (f, r) = (
            half(OPEN | FLOW_F_SYNPROXY | FLOW_F_XLATE),
            half(FLOW_F_REPLY | FLOW_F_SYNPROXY | FLOW_F_XLATE),
        );
        assert_eq!(
            verdict(&f, &r, &ages(30, 30), Some(60), Some(&b)),
            Verdict::Keep { half_open: false }
        );
    }

    #[test]
    fn flows_of_removed_or_replaced_backends_are_cut() {
        let (f, r) = (half(OPEN), half(FLOW_F_REPLY));
        let removed = Backend {
            state: BACKEND_REMOVED,
            ..live()
        };
        assert_eq!(
            verdict(&f, &r, &ages(0, 0), Some(60), Some(&removed)),
            Verdict::End(Reason::BackendGone)
        );
        let reused = Backend {
            generation: 2,
            ..live()
        };
        assert_eq!(
            verdict(&f, &r, &ages(0, 0), Some(60), Some(&reused)),
            Verdict::End(Reason::BackendGone)
        );
        assert_eq!(
            verdict(&f, &r, &ages(0, 0), Some(60), None),
            Verdict::End(Reason::BackendGone)
        );
    }
}
