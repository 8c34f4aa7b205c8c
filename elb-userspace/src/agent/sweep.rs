//! The flow sweep: expires idle flows, removes closed ones, releases SNAT reservations, and
//! counts active flows per listener and backend for `/metrics`.
//!
//! The XDP program records what this needs in each conntrack entry (`last_seen_ns`, refreshed at
//! most once a second; `closed_ns`; the FIN/RST flags). The whole table is read with batched
//! lookups and the deletions are batched too, so a sweep of a million flows costs a few hundred
//! system calls.

use std::collections::{BTreeMap, HashMap};

use elb_common::{
    BACKEND_REMOVED, Backend, CLOSE_GRACE_NS, FLOW_F_EXPIRED, FLOW_F_REPLY, Flow, FlowKey,
    TIME_WAIT_HOLD_NS,
};

use crate::dataplane::{DataplaneError, Maps};

/// Current `CLOCK_MONOTONIC` time in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What one sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Conntrack entries read.
    pub entries: usize,
    /// Open flows (forward halves, not closed) per listener id.
    pub active_by_listener: BTreeMap<u32, u64>,
    /// Open flows per backend id.
    pub active_by_backend: BTreeMap<u32, u64>,
    /// Flows expired for idleness.
    pub expired_idle: u64,
    /// Forward halves of closed flows removed.
    pub removed_closed: u64,
    /// Flows of removed backends cut.
    pub removed_backend_gone: u64,
    /// SNAT reservations released (reverse halves deleted).
    pub released: u64,
    /// Duration of the sweep.
    pub duration: std::time::Duration,
}

/// What to do with one entry.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Delete this entry.
    Delete,
    /// Delete this forward entry and mark its reverse half expired (reserving the tuple).
    Expire,
}

fn verdict(
    flow: &Flow,
    now: u64,
    idle_timeout_ns: Option<u64>,
    backend: Option<&Backend>,
) -> (Verdict, Reason) {
    let reply = flow.flags & FLOW_F_REPLY != 0;
    let idle_ns = now.saturating_sub(flow.last_seen_ns);
    // A listener deleted meanwhile: fall back to the longest ELB idle timeout.
    let idle_limit = idle_timeout_ns.unwrap_or(3600 * 1_000_000_000);
    let backend_gone = match backend {
        Some(b) => b.generation != flow.backend_gen || b.state == BACKEND_REMOVED || b.state == 0,
        None => true,
    };
    if reply {
        // Reverse halves hold the SNAT tuple: released only once the backend cannot hold it in
        // TIME_WAIT any more.
        let closed_for = if flow.closed_ns != 0 {
            now.saturating_sub(flow.closed_ns)
        } else {
            0
        };
        if flow.closed_ns != 0 && closed_for > TIME_WAIT_HOLD_NS {
            return (Verdict::Delete, Reason::Released);
        }
        // An orphan whose forward half vanished (LRU eviction) without a close.
        if flow.closed_ns == 0 && idle_ns > idle_limit.saturating_add(TIME_WAIT_HOLD_NS) {
            return (Verdict::Delete, Reason::Released);
        }
        return (Verdict::Keep, Reason::None);
    }
    if flow.closed_ns != 0 {
        if now.saturating_sub(flow.closed_ns) > CLOSE_GRACE_NS {
            return (Verdict::Delete, Reason::Closed);
        }
        return (Verdict::Keep, Reason::None);
    }
    if backend_gone {
        return (Verdict::Expire, Reason::BackendGone);
    }
    if idle_ns > idle_limit {
        return (Verdict::Expire, Reason::Idle);
    }
    (Verdict::Keep, Reason::Active)
}

#[derive(Debug, PartialEq, Eq)]
enum Reason {
    None,
    Active,
    Idle,
    Closed,
    BackendGone,
    Released,
}

/// Runs one sweep over `maps` at monotonic time `now`.
pub fn sweep(maps: &mut Maps, now: u64) -> Result<SweepReport, DataplaneError> {
    let started = std::time::Instant::now();
    let idle: HashMap<u32, u64> = maps
        .listeners()?
        .into_iter()
        .map(|(_, l)| (l.id, u64::from(l.idle_timeout_s) * 1_000_000_000))
        .collect();
    let backends: HashMap<u32, Backend> = maps.backends()?.into_iter().collect();
    let flows = maps.flows()?;
    let mut report = SweepReport {
        entries: flows.len(),
        ..SweepReport::default()
    };
    let mut delete: Vec<FlowKey> = Vec::new();
    // Forward halves to delete, with the creation time seen: a client may reuse its port and
    // open a new flow on the same key between the read and the delete (see below).
    let mut delete_forward: Vec<(FlowKey, u64)> = Vec::new();
    let mut expire: Vec<(FlowKey, Flow)> = Vec::new();
    for (key, flow) in &flows {
        let (v, reason) = verdict(
            flow,
            now,
            idle.get(&flow.listener_id).copied(),
            backends.get(&flow.backend_id),
        );
        match reason {
            Reason::Active => {
                *report
                    .active_by_listener
                    .entry(flow.listener_id)
                    .or_default() += 1;
                *report.active_by_backend.entry(flow.backend_id).or_default() += 1;
            }
            Reason::Idle => report.expired_idle += 1,
            Reason::Closed => report.removed_closed += 1,
            Reason::BackendGone => report.removed_backend_gone += 1,
            Reason::Released => report.released += 1,
            Reason::None => {}
        }
        let forward = flow.flags & FLOW_F_REPLY == 0;
        match v {
            Verdict::Keep => {}
            Verdict::Delete if forward => delete_forward.push((*key, flow.created_ns)),
            Verdict::Delete => delete.push(*key),
            Verdict::Expire => {
                delete_forward.push((*key, flow.created_ns));
                expire.push((*key, *flow));
            }
        }
    }
    // Expire: the reverse half stays, marked, as the SNAT reservation (and so that the
    // backend's late packets are dropped rather than passed to the servo's own stack).
    for (_, flow) in &expire {
        let reverse = flow.partner_key(elb_common::PROTO_TCP);
        if let Some(mut r) = maps.flow(&reverse)? {
            r.flags |= FLOW_F_EXPIRED;
            if r.closed_ns == 0 {
                r.closed_ns = now;
            }
            maps.set_flow(reverse, r)?;
        }
    }
    // The table was read a while ago (a second per million flows): a forward key may hold a
    // new flow by now (the client reused its port), which must not be deleted. Checking each
    // key right before the batch delete narrows that window from the whole sweep to
    // microseconds. Reverse keys need no check: their tuple cannot be taken while they exist.
    for (key, created) in delete_forward {
        if maps.flow(&key)?.is_some_and(|f| f.created_ns == created) {
            delete.push(key);
        }
    }
    maps.remove_flows(&delete)?;
    report.duration = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use elb_common::BACKEND_ACTIVE;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn flow(reply: bool, last_seen: u64, closed: u64) -> Flow {
        Flow {
            flags: if reply { FLOW_F_REPLY } else { 0 },
            last_seen_ns: last_seen,
            closed_ns: closed,
            backend_gen: 1,
            ..Flow::default()
        }
    }

    fn live() -> Backend {
        Backend {
            state: BACKEND_ACTIVE,
            generation: 1,
            ..Backend::default()
        }
    }

    #[test]
    fn idle_forward_flows_expire_after_the_listener_timeout() {
        let now = 1000 * S;
        let f = flow(false, now - 59 * S, 0);
        assert_eq!(
            verdict(&f, now, Some(60 * S), Some(&live())).0,
            Verdict::Keep
        );
        let f = flow(false, now - 61 * S, 0);
        assert_eq!(
            verdict(&f, now, Some(60 * S), Some(&live())),
            (Verdict::Expire, Reason::Idle)
        );
    }

    #[test]
    fn closed_forward_halves_go_after_the_grace_reverse_after_time_wait() {
        let now = 1000 * S;
        let closed_at = now - 11 * S;
        assert_eq!(
            verdict(
                &flow(false, closed_at, closed_at),
                now,
                Some(60 * S),
                Some(&live())
            )
            .0,
            Verdict::Delete
        );
        assert_eq!(
            verdict(
                &flow(true, closed_at, closed_at),
                now,
                Some(60 * S),
                Some(&live())
            )
            .0,
            Verdict::Keep,
            "tuple still reserved"
        );
        let long_ago = now - 61 * S;
        assert_eq!(
            verdict(
                &flow(true, long_ago, long_ago),
                now,
                Some(60 * S),
                Some(&live())
            )
            .0,
            Verdict::Delete
        );
    }

    #[test]
    fn flows_of_removed_or_replaced_backends_are_cut() {
        let now = 1000 * S;
        let f = flow(false, now, 0);
        let removed = Backend {
            state: BACKEND_REMOVED,
            ..live()
        };
        assert_eq!(
            verdict(&f, now, Some(60 * S), Some(&removed)).0,
            Verdict::Expire
        );
        let reused = Backend {
            generation: 2,
            ..live()
        };
        assert_eq!(
            verdict(&f, now, Some(60 * S), Some(&reused)).0,
            Verdict::Expire
        );
    }

    #[test]
    fn orphan_reverse_halves_are_released_eventually() {
        let now = 10_000 * S;
        let f = flow(true, now - 30 * S, 0);
        assert_eq!(
            verdict(&f, now, Some(60 * S), Some(&live())).0,
            Verdict::Keep
        );
        let f = flow(true, now - 121 * S, 0);
        assert_eq!(
            verdict(&f, now, Some(60 * S), Some(&live())).0,
            Verdict::Delete
        );
    }
}
