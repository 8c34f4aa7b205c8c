//! What the engine tells the agent about the traffic it serves.
//!
//! - **Counters per listener** ([`ListenerStats`], read through [`crate::Engine::status`]):
//!   connections, requests, bytes, backend connection errors, surge queue and spillover, HTTP
//!   codes of the load balancer and of the backends by class, latency. Each worker thread counts
//!   in its own cache line (the engine runs a thread per core; a shared counter would bounce
//!   between them on every request), and a read sums the shards.
//! - **One record per request** (HTTP/HTTPS listeners) **or per connection** (SSL/TCP
//!   listeners), with the timings, codes, bytes, user agent and TLS parameters of an ELB access
//!   log line ([`RequestRecord`]), handed to the [`Observer`] set with
//!   [`crate::Engine::set_observer`], for the listeners it wants records of. The call is
//!   synchronous on the worker that served the request: the observer must not block (the agent's
//!   appends a line to a buffered file).

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, SystemTime},
};

/// Requests or connections that may wait for a connection to a backend at once, per listener
/// (AWS's surge queue); more are refused (503 for HTTP, closed for SSL/TCP) and counted as
/// spillover.
pub const MAX_SURGE_QUEUE: usize = 1024;

/// An HTTP request as the access log shows it: `GET https://host:443/path?q HTTP/1.1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// The method.
    pub method: String,
    /// `scheme://host:port/path?query` (the port the client connected to).
    pub url: String,
    /// `HTTP/1.1`.
    pub version: String,
}

/// The negotiated TLS parameters of a client connection, with ELB's (OpenSSL's) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: String,
    /// `TLSv1.2`.
    pub protocol: String,
}

/// One request (HTTP/HTTPS listeners) or connection (SSL/TCP listeners) the engine served, with
/// what an ELB access log line needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request (or connection) was received.
    pub time: SystemTime,
    /// The client.
    pub client: SocketAddr,
    /// The backend that served it; `None` when none was reached.
    pub backend: Option<SocketAddr>,
    /// HTTP: request received to request sent to the backend. SSL/TCP: connection accepted
    /// (TLS handshake included) to the connection to the backend started. `None` when no
    /// backend was reached (here and in the next two).
    pub request_processing: Option<Duration>,
    /// HTTP: request sent to response headers received. SSL/TCP: the time to connect to the
    /// backend.
    pub backend_processing: Option<Duration>,
    /// HTTP: response headers received to sent on. SSL/TCP: zero (bytes are copied as they come).
    pub response_processing: Option<Duration>,
    /// The status the client got (HTTP listeners).
    pub elb_status: Option<u16>,
    /// The status the backend gave (`None` when the engine answered itself).
    pub backend_status: Option<u16>,
    /// HTTP: request body bytes. SSL/TCP: every byte from the client.
    pub received_bytes: u64,
    /// HTTP: response body bytes. SSL/TCP: every byte to the client.
    pub sent_bytes: u64,
    /// HTTP listeners: the request line.
    pub request: Option<RequestLine>,
    /// HTTP listeners: the `User-Agent` header.
    pub user_agent: Option<String>,
    /// HTTPS/SSL listeners: the negotiated cipher and protocol.
    pub tls: Option<TlsInfo>,
}

/// Receives the engine's records (see the module documentation).
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// Whether connections of `listener` accepted from now on produce records (asked once per
    /// connection: records cost a few allocations per request).
    fn wants_records(&self, listener: &str) -> bool;
    /// One request or connection of `listener` is complete.
    fn record(&self, listener: &str, record: RequestRecord);
}

/// Indices of the counters of a [`ListenerStats`] shard.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub(crate) enum Counter {
    Connections,
    Requests,
    BytesIn,
    BytesOut,
    BackendConnectionErrors,
    Spillover,
    Elb4xx,
    Elb5xx,
    Backend2xx,
    Backend3xx,
    Backend4xx,
    Backend5xx,
    LatencyMicros,
    LatencyCount,
}

const COUNTERS: usize = Counter::LatencyCount as usize + 1;

/// One worker's counters, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard([AtomicU64; COUNTERS]);

/// A listener's counters, one shard per engine worker.
#[derive(Debug)]
pub struct ListenerStats {
    shards: Box<[Shard]>,
    /// Requests or connections waiting for a backend connection now.
    surge: AtomicUsize,
}

/// The counters of a listener, summed over the workers (cumulative since it started), and its
/// gauges now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests (HTTP) or connections (SSL/TCP) given to a backend.
    pub requests: u64,
    /// Bytes from clients (after TLS).
    pub bytes_in: u64,
    /// Bytes to clients (before TLS).
    pub bytes_out: u64,
    /// Connections to backends that failed.
    pub backend_connection_errors: u64,
    /// Requests or connections refused because the surge queue was full.
    pub spillover: u64,
    /// Responses the engine gave itself, by class (`HTTPCode_ELB_4XX`, `_5XX`).
    pub elb_4xx: u64,
    /// See `elb_4xx`.
    pub elb_5xx: u64,
    /// Backend responses by class (`HTTPCode_Backend_2XX` ... `_5XX`).
    pub backend_2xx: u64,
    /// See `backend_2xx`.
    pub backend_3xx: u64,
    /// See `backend_2xx`.
    pub backend_4xx: u64,
    /// See `backend_2xx`.
    pub backend_5xx: u64,
    /// Sum of AWS's Latency (HTTP: request sent to response headers; SSL/TCP: backend
    /// connection time) over `latency_count` requests or connections.
    pub latency_sum: Duration,
    /// See `latency_sum`.
    pub latency_count: u64,
    /// Requests or connections waiting for a backend connection now (`SurgeQueueLength`).
    pub surge_queue: u64,
}

impl ListenerStats {
    /// Counters for `workers` engine workers.
    pub fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
            surge: AtomicUsize::new(0),
        }
    }

    fn shard(&self) -> &Shard {
        let i = crate::workers::current().unwrap_or(0);
        &self.shards[i % self.shards.len()]
    }

    /// Adds `n` to a counter of the calling worker's shard.
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.shard().0[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn sum(&self, counter: Counter) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[counter as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a status code the client got: the engine's own (`from_backend` false) or a
    /// backend's, by class.
    pub(crate) fn status(&self, code: u16, from_backend: bool) {
        let counter = match (from_backend, code / 100) {
            (false, 4) => Counter::Elb4xx,
            (false, 5) => Counter::Elb5xx,
            (true, 2) => Counter::Backend2xx,
            (true, 3) => Counter::Backend3xx,
            (true, 4) => Counter::Backend4xx,
            (true, 5) => Counter::Backend5xx,
            _ => return,
        };
        self.add(counter, 1);
    }

    /// Counts one latency sample.
    pub(crate) fn latency(&self, d: Duration) {
        self.add(
            Counter::LatencyMicros,
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        );
        self.add(Counter::LatencyCount, 1);
    }

    /// Takes a place in the surge queue until the guard drops; `None` (counted as spillover)
    /// when it is full.
    pub(crate) fn enter_surge_queue(&self) -> Option<SurgeGuard<'_>> {
        let before = self.surge.fetch_add(1, Ordering::Relaxed);
        if before >= MAX_SURGE_QUEUE {
            self.surge.fetch_sub(1, Ordering::Relaxed);
            self.add(Counter::Spillover, 1);
            return None;
        }
        Some(SurgeGuard(self))
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.sum(Counter::Connections),
            requests: self.sum(Counter::Requests),
            bytes_in: self.sum(Counter::BytesIn),
            bytes_out: self.sum(Counter::BytesOut),
            backend_connection_errors: self.sum(Counter::BackendConnectionErrors),
            spillover: self.sum(Counter::Spillover),
            elb_4xx: self.sum(Counter::Elb4xx),
            elb_5xx: self.sum(Counter::Elb5xx),
            backend_2xx: self.sum(Counter::Backend2xx),
            backend_3xx: self.sum(Counter::Backend3xx),
            backend_4xx: self.sum(Counter::Backend4xx),
            backend_5xx: self.sum(Counter::Backend5xx),
            latency_sum: Duration::from_micros(self.sum(Counter::LatencyMicros)),
            latency_count: self.sum(Counter::LatencyCount),
            surge_queue: self.surge.load(Ordering::Relaxed) as u64,
        }
    }
}

/// A place in a listener's surge queue (see [`ListenerStats::enter_surge_queue`]).
#[derive(Debug)]
pub(crate) struct SurgeGuard<'a>(&'a ListenerStats);

impl Drop for SurgeGuard<'_> {
    fn drop(&mut self) {
        self.0.surge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The negotiated parameters of a server-side TLS connection, with ELB's names.
pub fn tls_info(conn: &rustls::ServerConnection) -> Option<TlsInfo> {
    let suite = conn.negotiated_cipher_suite()?;
    let code = u16::from(suite.suite());
    let cipher = crate::policy::CIPHERS
        .iter()
        .find(|c| c.iana == Some(code))
        .map_or_else(|| format!("{:?}", suite.suite()), |c| c.name.to_string());
    let protocol = match conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        other => format!("{other:?}"),
    };
    Some(TlsInfo { cipher, protocol })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_shards_and_the_surge_queue_is_bounded() {
        let stats = ListenerStats::new(3);
        stats.shards[0].0[Counter::Requests as usize].store(2, Ordering::Relaxed);
        stats.shards[2].0[Counter::Requests as usize].store(5, Ordering::Relaxed);
        stats.status(503, false);
        stats.status(404, true);
        stats.status(101, true);
        stats.latency(Duration::from_millis(3));
        let s = stats.snapshot();
        assert_eq!(
            (s.requests, s.elb_5xx, s.backend_4xx, s.backend_2xx),
            (7, 1, 1, 0)
        );
        assert_eq!(
            (s.latency_sum, s.latency_count),
            (Duration::from_millis(3), 1)
        );
        let held: Vec<_> = (0..MAX_SURGE_QUEUE)
            .map(|_| stats.enter_surge_queue().expect("room"))
            .collect();
        assert_eq!(stats.snapshot().surge_queue, MAX_SURGE_QUEUE as u64);
        assert!(stats.enter_surge_queue().is_none());
        assert_eq!(stats.snapshot().spillover, 1);
        drop(held);
        assert_eq!(stats.snapshot().surge_queue, 0);
        assert!(stats.enter_surge_queue().is_some());
    }
}
