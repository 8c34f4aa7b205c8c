//! The dataplane's flow events, turned into access log lines: one per TCP connection the XDP
//! program forwarded for a load balancer with access logs (its listeners carry
//! `LISTENER_F_EVENTS`, see [`listener_flags`]).
//!
//! Starts come from the `flow_events` ring buffer (the program writes one when a client
//! completes its handshake); ends come from the same ring (a closed flow retired by a new
//! connection on the same client port) and from the sweep (closed, idle, backend gone), with
//! both halves' packet and byte counts. [`FlowLog`] pairs each end with its start (by slot and
//! identity) and writes the line with [`AccessLogs::record`] for the load balancer of the flow's
//! listener.
//!
//! Bounded: the ring is [`EVENT_RING_BYTES`] (the program counts what does not fit in
//! `events_dropped`), and the starts waiting for their end are at most [`MAX_OPEN`] (past it a
//! start is not kept and its end logs without the handshake time, counted in
//! [`FlowLogStats::starts_unpaired`]).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use elb_common::{
    EVENT_RING_BYTES, FLOW_END_REFUSED, FLOW_EVENT_END, FLOW_EVENT_START, FlowEvent,
    LISTENER_F_EVENTS,
};
use elb_contract::LoadBalancer;
use tokio::{io::unix::AsyncFd, sync::watch};
use tracing::{info, warn};

use crate::{
    accesslog::{AccessLogEntry, AccessLogs, FlowRecord},
    dataplane::{self, clock},
};

/// Most starts kept while their flows are open (about as many flows as the default flow
/// table holds).
pub const MAX_OPEN: usize = 1 << 19;

/// `LISTENER_F_EVENTS` for the listeners of a load balancer with access logs.
pub fn listener_flags(lb: &LoadBalancer) -> u32 {
    if lb.access_log.is_some() {
        LISTENER_F_EVENTS
    } else {
        0
    }
}

/// The program's clock (jiffies, low 32 bits) against the wall clock, read once for a batch of
/// events.
#[derive(Clone, Copy, Debug)]
pub struct JiffyClock {
    /// The kernel's HZ.
    pub hz: u32,
    /// jiffies (low 32 bits) at `wall`.
    pub jiffies: u32,
    /// The wall clock at `jiffies`.
    pub wall: SystemTime,
}

impl JiffyClock {
    /// Now.
    pub fn now() -> std::io::Result<Self> {
        Ok(Self {
            hz: clock::hz()?,
            jiffies: clock::jiffies()? as u32,
            wall: SystemTime::now(),
        })
    }

    /// Wall time of jiffies `j` (in the past or the near future).
    pub fn wall_of(&self, j: u32) -> SystemTime {
        let behind = i64::from(self.jiffies.wrapping_sub(j) as i32);
        let d = Duration::from_nanos(behind.unsigned_abs() * 1_000_000_000 / u64::from(self.hz));
        if behind >= 0 {
            self.wall - d
        } else {
            self.wall + d
        }
    }

    /// The time from jiffies `from` to `to` (zero if `to` is earlier).
    pub fn between(&self, from: u32, to: u32) -> Duration {
        let d = (to.wrapping_sub(from) as i32).max(0) as u64;
        Duration::from_nanos(d * 1_000_000_000 / u64::from(self.hz))
    }
}

fn socket(addr: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(addr), port))
}

/// The access log record of a flow from its end (and its start, if it was seen): AWS's TCP
/// line. The connection's time is the client's SYN; the backend time is the handshake (the
/// client's SYN to its ACK of the backend's SYN-ACK, which the program forwards as they come:
/// XDP adds no request time); a refused flow has no backend.
pub fn flow_record(start: Option<&FlowEvent>, end: &FlowEvent, clock: &JiffyClock) -> FlowRecord {
    let refused = end.reason == FLOW_END_REFUSED;
    FlowRecord {
        started: clock.wall_of(end.created),
        client: socket(end.key.src, end.key.sport),
        backend: (!refused).then(|| socket(end.nat.dst, end.nat.dport)),
        to_backend: (!refused).then_some(Duration::ZERO),
        backend_connect: start
            .filter(|_| !refused)
            .map(|s| clock.between(s.created, s.time)),
        bytes_from_client: end.bytes_in,
        bytes_to_client: end.bytes_out,
    }
}

/// Counters of the flow log, for `/metrics`.
#[derive(Debug, Default)]
pub struct FlowLogStats {
    /// Start events read.
    pub starts: AtomicU64,
    /// End events handled (from the ring and the sweep).
    pub ends: AtomicU64,
    /// Lines recorded.
    pub lines: AtomicU64,
    /// Ends without their start (the agent restarted, or more than [`MAX_OPEN`] were open).
    pub starts_unpaired: AtomicU64,
}

/// Pairs starts with ends and writes the lines (see the module documentation).
#[derive(Debug)]
pub struct FlowLog {
    logs: Arc<AccessLogs>,
    open: Mutex<HashMap<(u32, u32), FlowEvent>>,
    /// Listener id -> the load balancer it belongs to (the reconciler's view).
    listeners: Mutex<HashMap<u32, String>>,
    stats: FlowLogStats,
}

impl FlowLog {
    /// A flow log writing into `logs`.
    pub fn new(logs: Arc<AccessLogs>) -> Arc<Self> {
        Arc::new(Self {
            logs,
            open: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            stats: FlowLogStats::default(),
        })
    }

    /// Its counters.
    pub fn stats(&self) -> &FlowLogStats {
        &self.stats
    }

    /// Sets which load balancer each listener id belongs to (after every change).
    pub fn set_listeners(&self, listeners: HashMap<u32, String>) {
        *self.listeners.lock().expect("flow log lock") = listeners;
    }

    /// Handles events read at `clock`.
    pub fn handle(&self, events: &[FlowEvent], clock: &JiffyClock) {
        for e in events {
            match e.kind {
                FLOW_EVENT_START => {
                    self.stats.starts.fetch_add(1, Ordering::Relaxed);
                    let mut open = self.open.lock().expect("flow log lock");
                    if open.len() < MAX_OPEN {
                        open.insert((e.index, e.ident), *e);
                    }
                }
                FLOW_EVENT_END => self.end(e, clock),
                _ => {}
            }
        }
    }

    fn end(&self, end: &FlowEvent, clock: &JiffyClock) {
        self.stats.ends.fetch_add(1, Ordering::Relaxed);
        let start = self
            .open
            .lock()
            .expect("flow log lock")
            .remove(&(end.index, end.ident));
        if start.is_none() {
            self.stats.starts_unpaired.fetch_add(1, Ordering::Relaxed);
        }
        let lb = self
            .listeners
            .lock()
            .expect("flow log lock")
            .get(&u32::from(end.listener_id))
            .cloned();
        let Some(lb) = lb else {
            return;
        };
        if !self.logs.is_logging(&lb) {
            return;
        }
        let record = flow_record(start.as_ref(), end, clock);
        self.logs.record(&lb, &AccessLogEntry::from(record));
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the `flow_events` ring under `pin_root` until `shutdown`.
    pub async fn read_ring(
        self: Arc<Self>,
        pin_root: PathBuf,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let ring = match dataplane::flow_events(&pin_root) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "access logs of XDP listeners disabled: cannot open the flow event ring");
                return;
            }
        };
        // SAFETY: the ring buffer owns its descriptor and keeps it open (and the same) for as long
        // as the AsyncFd holds it.
        let mut ring = match unsafe { AsyncFd::register(ring) } {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "access logs of XDP listeners disabled: cannot poll the flow event ring");
                return;
            }
        };
        info!(bytes = EVENT_RING_BYTES, "reading flow events");
        let mut batch = Vec::new();
        loop {
            let mut guard = tokio::select! {
                () = super::control::stopped(&mut shutdown) => return,
                g = ring.readable_mut() => match g {
                    Ok(g) => g,
                    Err(e) => {
                        warn!(error = %e, "polling the flow event ring failed");
                        return;
                    }
                },
            };
            while let Some(item) = guard.get_inner_mut().next() {
                if let Some(e) = dataplane::parse_flow_event(&item) {
                    batch.push(e);
                }
            }
            guard.clear_ready();
            if batch.is_empty() {
                continue;
            }
            match JiffyClock::now() {
                Ok(clock) => self.handle(&batch, &clock),
                Err(e) => warn!(error = %e, "reading the kernel's jiffies"),
            }
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use elb_common::{FLOW_END_FIN, FlowKey, NatTuple, PROTO_TCP};

    use super::*;

    fn event(kind: u8, created: u32, time: u32) -> FlowEvent {
        FlowEvent {
            kind,
            ident: 9,
            index: 4,
            key: FlowKey {
                src: [198, 18, 1, 2],
                dst: [198, 18, 0, 1],
                sport: 40000,
                dport: 80,
                proto: PROTO_TCP,
                _pad: 0,
                _pad1: 0,
            },
            nat: NatTuple {
                src: [198, 19, 0, 1],
                dst: [198, 19, 0, 11],
                sport: 40000,
                dport: 8080,
            },
            created,
            time,
            ..FlowEvent::default()
        }
    }

    #[test]
    fn an_end_with_its_start_is_a_tcp_record_with_the_handshake_time() {
        let clock = JiffyClock {
            hz: 1000,
            jiffies: 10_000,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        };
        let start = event(FLOW_EVENT_START, 5_000, 5_003);
        let end = FlowEvent {
            reason: FLOW_END_FIN,
            bytes_in: 82,
            bytes_out: 305,
            ..event(FLOW_EVENT_END, 5_000, 9_000)
        };
        let r = flow_record(Some(&start), &end, &clock);
        assert_eq!(r.started, SystemTime::UNIX_EPOCH + Duration::from_secs(995));
        assert_eq!(r.client, "198.18.1.2:40000".parse().unwrap());
        assert_eq!(r.backend, Some("198.19.0.11:8080".parse().unwrap()));
        assert_eq!(r.backend_connect, Some(Duration::from_millis(3)));
        assert_eq!((r.bytes_from_client, r.bytes_to_client), (82, 305));
        // Without its start (an agent restart): no handshake time.
        assert_eq!(flow_record(None, &end, &clock).backend_connect, None);
        // Refused: no backend.
        let refused = FlowEvent {
            reason: FLOW_END_REFUSED,
            ..end
        };
        assert_eq!(flow_record(Some(&start), &refused, &clock).backend, None);
    }

    #[test]
    fn jiffies_wrap() {
        let clock = JiffyClock {
            hz: 250,
            jiffies: 100,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        };
        // 156 jiffies before, across the wrap.
        assert_eq!(
            clock.wall_of(u32::MAX - 55),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) - Duration::from_millis(624)
        );
        assert_eq!(
            clock.between(u32::MAX - 55, 100),
            Duration::from_millis(624)
        );
        assert_eq!(clock.between(100, 90), Duration::ZERO);
    }
}
