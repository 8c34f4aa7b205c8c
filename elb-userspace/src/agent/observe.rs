//! What the servo tells about the traffic it serves: metrics per load balancer and listener
//! (sent to control with every heartbeat) and access logs (to S3-compatible storage).
//!
//! **Metrics.** Every second [`Observe::collect`] reads, per load balancer it serves:
//! - for listeners the XDP program forwards: the per-listener stats map (new flows, packets and
//!   bytes each way) and the active flows the last sweep counted;
//! - for listeners the engine serves (see [`Observe::attach_engine`]): the engine's counters
//!   (requests, HTTP codes by class, latency, backend connection errors, surge queue and
//!   spillover);
//! - the health engine's healthy and unhealthy counts of the instances this servo checks.
//!
//! Counters are reported cumulative since the agent started (`Since`), kept monotonic across
//! listener slots that come and go: each source (an XDP listener slot, an engine listener) is
//! differenced against its last reading, and a slot this agent adopted from a previous run
//! (pinned maps) starts from its value at the first reading, so traffic counted by the previous
//! agent is not counted again. Control aggregates the reports ([`elb_contract::wire`]).
//!
//! **Access logs.** With `[access_logs]` in the configuration the agent opens the spool
//! ([`AccessLogs`]), runs its upload task, keeps the destinations in line with the load
//! balancers it serves ([`Observe::apply_config`]), and hands the engine an observer that turns
//! its records into lines. `SIGUSR1` finishes the open files at once (they are uploaded right
//! away); at shutdown the open files are finished and uploaded once, and what fails stays in the
//! spool for the next start. Listeners the XDP program forwards get their lines from the
//! dataplane's flow events ([`super::events`]), which call [`AccessLogs::record`] with
//! [`crate::accesslog::FlowRecord`]s and the load balancer of the flow's listener.
//!
//! Everything here is bounded: the accumulators hold one entry per listener served, the engine
//! observer writes synchronously into the spool's buffer (no queue), and the spool drops (and
//! counts) lines past `max_spool_bytes`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use elb_common::TrafficStats;
use elb_contract::{
    InstanceState, Protocol,
    wire::{ListenerMetrics, LoadBalancerMetrics},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use super::{metrics::StatusView, sweep::SweepReport};
use crate::{
    accesslog::{AccessLogSettings, AccessLogs, LogDestination, S3Writer, SpoolError},
    config::ServoConfig,
    dataplane::Maps,
};

/// The name the agent gives the engine listener of `lb`'s LoadBalancerPort `port`; records and
/// counters of engine listeners are attributed through it ([`load_balancer_of`]).
pub fn engine_listener_name(lb: &str, port: u16) -> String {
    format!("{lb}:{port}")
}

/// The load balancer and port of an engine listener named by [`engine_listener_name`] (load
/// balancer names have no `:`).
pub fn load_balancer_of(listener: &str) -> Option<(&str, u16)> {
    let (lb, port) = listener.rsplit_once(':')?;
    Some((lb, port.parse().ok()?))
}

/// Each listener's readings by (load balancer, port): where from, the counts, and a gauge.
type Readings = HashMap<(String, u16), Vec<(Source, Counts, u64)>>;

/// The counters of one listener, in the order of [`ListenerMetrics`]' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    new_connections: u64,
    requests: u64,
    bytes: u64,
    packets: u64,
    backend_errors: u64,
    spillover: u64,
    elb_4xx: u64,
    elb_5xx: u64,
    backend_2xx: u64,
    backend_3xx: u64,
    backend_4xx: u64,
    backend_5xx: u64,
    latency_micros: u64,
    latency_count: u64,
}

impl Counts {
    fn fields(&self) -> [u64; 14] {
        [
            self.new_connections,
            self.requests,
            self.bytes,
            self.packets,
            self.backend_errors,
            self.spillover,
            self.elb_4xx,
            self.elb_5xx,
            self.backend_2xx,
            self.backend_3xx,
            self.backend_4xx,
            self.backend_5xx,
            self.latency_micros,
            self.latency_count,
        ]
    }

    fn from_fields(f: [u64; 14]) -> Self {
        Self {
            new_connections: f[0],
            requests: f[1],
            bytes: f[2],
            packets: f[3],
            backend_errors: f[4],
            spillover: f[5],
            elb_4xx: f[6],
            elb_5xx: f[7],
            backend_2xx: f[8],
            backend_3xx: f[9],
            backend_4xx: f[10],
            backend_5xx: f[11],
            latency_micros: f[12],
            latency_count: f[13],
        }
    }

    /// What happened between `last` and `self` (a source whose counters went down was reset:
    /// all of its value is new).
    fn since(&self, last: &Self) -> Self {
        let (now, before) = (self.fields(), last.fields());
        if now.iter().zip(&before).any(|(n, b)| n < b) {
            return *self;
        }
        Self::from_fields(std::array::from_fn(|i| now[i] - before[i]))
    }

    fn add(&mut self, other: &Self) {
        let (a, b) = (self.fields(), other.fields());
        *self = Self::from_fields(std::array::from_fn(|i| a[i].saturating_add(b[i])));
    }

    fn of_xdp(s: &TrafficStats) -> Self {
        Self {
            new_connections: s.new_flows,
            requests: s.new_flows,
            bytes: s.bytes_in + s.bytes_out,
            packets: s.packets_in + s.packets_out,
            ..Self::default()
        }
    }

    fn of_engine(s: &elb_engine::StatsSnapshot) -> Self {
        Self {
            new_connections: s.connections,
            requests: s.requests,
            bytes: s.bytes_in + s.bytes_out,
            packets: 0,
            backend_errors: s.backend_connection_errors,
            spillover: s.spillover,
            elb_4xx: s.elb_4xx,
            elb_5xx: s.elb_5xx,
            backend_2xx: s.backend_2xx,
            backend_3xx: s.backend_3xx,
            backend_4xx: s.backend_4xx,
            backend_5xx: s.backend_5xx,
            latency_micros: u64::try_from(s.latency_sum.as_micros()).unwrap_or(u64::MAX),
            latency_count: s.latency_count,
        }
    }
}

/// Where a listener's counters come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    /// An XDP listener slot (one per VIP).
    Xdp(u32),
    /// The engine's listener.
    Engine,
}

/// One listener's totals and the last reading of each of its sources.
#[derive(Debug, Default)]
struct ListenerTotals {
    total: Counts,
    last: BTreeMap<Source, Counts>,
    xdp: bool,
    engine: bool,
}

/// The load balancers served, as the collector needs them.
#[derive(Debug, Default, Clone)]
struct Served {
    /// Load balancer -> its listeners (port, protocol).
    lbs: BTreeMap<String, Vec<(u16, Protocol)>>,
}

#[derive(Debug, Default)]
struct MetricsState {
    served: Served,
    /// XDP listener ids found in the pinned maps at start: their stats include traffic of the
    /// previous agent.
    adopted: BTreeSet<u32>,
    totals: HashMap<(String, u16), ListenerTotals>,
}

/// The servo's metrics and access logs (see the module documentation); shared by the agent's
/// tasks.
#[derive(Debug)]
pub struct Observe {
    since_ms: u64,
    access_logs: Option<Arc<AccessLogs>>,
    access_log_settings: Option<AccessLogSettings>,
    engine: Mutex<Option<elb_engine::Engine>>,
    state: Mutex<MetricsState>,
}

/// Gives the engine's records to the access logs.
#[derive(Debug)]
struct EngineLogs(Arc<AccessLogs>);

impl elb_engine::Observer for EngineLogs {
    fn wants_records(&self, listener: &str) -> bool {
        load_balancer_of(listener).is_some_and(|(lb, _)| self.0.is_logging(lb))
    }

    fn record(&self, listener: &str, record: elb_engine::RequestRecord) {
        if let Some((lb, _)) = load_balancer_of(listener) {
            self.0.record(lb, &record);
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// Where each load balancer of `cfg` that logs sends its logs.
pub fn destinations(cfg: &ServoConfig) -> HashMap<String, LogDestination> {
    cfg.load_balancers
        .iter()
        .filter_map(|lb| {
            let log = lb.access_log.as_ref()?;
            Some((
                lb.load_balancer_name.clone(),
                LogDestination {
                    account_id: log.account_id.clone(),
                    region: log.region.clone(),
                    load_balancer: log
                        .load_balancer_name
                        .clone()
                        .unwrap_or_else(|| lb.load_balancer_name.clone()),
                    bucket: log.s3_bucket_name.clone(),
                    prefix: log.key_prefix().to_string(),
                    emit_interval_minutes: log.emit_interval,
                },
            ))
        })
        .collect()
}

impl Observe {
    /// Starts counting now; opens the access log spool when `cfg` has `[access_logs]`.
    /// `adopted` are the XDP listener ids found in the pinned maps.
    pub fn start(cfg: &ServoConfig, adopted: BTreeSet<u32>) -> Result<Arc<Self>, SpoolError> {
        let settings = cfg.access_logs.as_ref().map(|a| AccessLogSettings {
            s3: a.s3.clone(),
            spool_dir: PathBuf::from(&a.spool_dir),
            max_spool_bytes: a.max_spool_bytes,
            node_address: cfg.node_address(),
        });
        let access_logs = settings.clone().map(AccessLogs::open).transpose()?;
        let me = Arc::new(Self {
            since_ms: now_ms(),
            access_logs,
            access_log_settings: settings,
            engine: Mutex::new(None),
            state: Mutex::new(MetricsState {
                adopted,
                ..MetricsState::default()
            }),
        });
        me.apply_config(cfg);
        Ok(me)
    }

    /// The access logs, when the servo has an endpoint for them.
    pub fn access_logs(&self) -> Option<&Arc<AccessLogs>> {
        self.access_logs.as_ref()
    }

    /// Follows a new configuration: which load balancers log where, which listeners to count.
    pub fn apply_config(&self, cfg: &ServoConfig) {
        if let Some(logs) = &self.access_logs {
            logs.set_destinations(destinations(cfg));
        }
        let served = Served {
            lbs: cfg
                .load_balancers
                .iter()
                .map(|lb| {
                    (
                        lb.load_balancer_name.clone(),
                        lb.listeners
                            .iter()
                            .map(|l| (l.load_balancer_port, l.protocol))
                            .collect(),
                    )
                })
                .collect(),
        };
        let mut state = self.state.lock().expect("observe lock");
        state.totals.retain(|(lb, port), _| {
            served
                .lbs
                .get(lb)
                .is_some_and(|ls| ls.iter().any(|(p, _)| p == port))
        });
        state.served = served;
    }

    /// Counts the engine's listeners from now on, and (with access logs) has it record every
    /// request or connection of the load balancers that log. The agent names engine listeners
    /// with [`engine_listener_name`].
    pub fn attach_engine(&self, engine: &elb_engine::Engine) {
        if let Some(logs) = &self.access_logs {
            engine.set_observer(Some(Arc::new(EngineLogs(logs.clone()))));
        }
        *self.engine.lock().expect("engine lock") = Some(engine.clone());
    }

    /// Reads every source and returns the report of each load balancer served.
    pub fn collect(
        &self,
        status: &StatusView,
        maps: &Maps,
        sweep: &SweepReport,
    ) -> Vec<LoadBalancerMetrics> {
        let engine = self
            .engine
            .lock()
            .expect("engine lock")
            .as_ref()
            .map(elb_engine::Engine::status)
            .unwrap_or_default();
        let mut guard = self.state.lock().expect("observe lock");
        let state = &mut *guard;
        let mut readings: Readings = HashMap::new();
        for l in &status.listeners {
            let Some(port) = l
                .endpoint
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
            else {
                continue;
            };
            let Ok(stats) = maps.listener_stats(l.id) else {
                continue;
            };
            let active = sweep.active_by_listener.get(&l.id).copied().unwrap_or(0);
            readings
                .entry((l.load_balancer_name.clone(), port))
                .or_default()
                .push((Source::Xdp(l.id), Counts::of_xdp(&stats), active));
        }
        let mut surge: HashMap<(String, u16), u64> = HashMap::new();
        for e in &engine {
            let Some((lb, port)) = load_balancer_of(&e.name) else {
                continue;
            };
            let key = (lb.to_string(), port);
            *surge.entry(key.clone()).or_default() += e.stats.surge_queue;
            readings.entry(key).or_default().push((
                Source::Engine,
                Counts::of_engine(&e.stats),
                e.open_connections as u64,
            ));
        }
        let served = state.served.clone();
        let mut out = Vec::with_capacity(served.lbs.len());
        for (lb, listeners) in &served.lbs {
            let (mut healthy, mut unhealthy) = (0, 0);
            for i in status
                .instances
                .iter()
                .filter(|i| i.checked_here && &i.load_balancer_name == lb)
            {
                if i.state == InstanceState::InService {
                    healthy += 1;
                } else {
                    unhealthy += 1;
                }
            }
            let mut report = LoadBalancerMetrics {
                load_balancer_name: lb.clone(),
                since: self.since_ms,
                healthy_host_count: healthy,
                un_healthy_host_count: unhealthy,
                listeners: Vec::new(),
            };
            for (port, protocol) in listeners {
                let key = (lb.clone(), *port);
                let fresh = readings.remove(&key).unwrap_or_default();
                let mut active = 0;
                let mut seen = BTreeSet::new();
                let mut delta = Counts::default();
                let mut xdp = false;
                let mut in_engine = false;
                let mut lasts = state
                    .totals
                    .get_mut(&key)
                    .map(|t| std::mem::take(&mut t.last))
                    .unwrap_or_default();
                for (source, now, open) in fresh {
                    active += open;
                    match source {
                        Source::Xdp(_) => xdp = true,
                        Source::Engine => in_engine = true,
                    }
                    let last = lasts.get(&source).copied().unwrap_or_else(|| match source {
                        // Stats of a slot adopted at start predate this agent (once: a slot
                        // this agent creates later starts from zero).
                        Source::Xdp(id) if state.adopted.remove(&id) => now,
                        _ => Counts::default(),
                    });
                    delta.add(&now.since(&last));
                    lasts.insert(source.clone(), now);
                    seen.insert(source);
                }
                lasts.retain(|s, _| seen.contains(s));
                let totals = state.totals.entry(key.clone()).or_default();
                totals.last = lasts;
                totals.total.add(&delta);
                totals.xdp |= xdp;
                totals.engine |= in_engine;
                let t = totals.total;
                let http = protocol.is_http_family() && totals.engine;
                let engine_only = |v: u64| totals.engine.then_some(v);
                let http_only = |v: u64| http.then_some(v);
                report.listeners.push(ListenerMetrics {
                    protocol: Some(*protocol),
                    load_balancer_port: *port,
                    new_connection_count: t.new_connections,
                    request_count: t.requests,
                    processed_bytes: t.bytes,
                    processed_packets: totals.xdp.then_some(t.packets),
                    backend_connection_errors: engine_only(t.backend_errors),
                    spillover_count: engine_only(t.spillover),
                    http_code_elb_4xx: http_only(t.elb_4xx),
                    http_code_elb_5xx: http_only(t.elb_5xx),
                    http_code_backend_2xx: http_only(t.backend_2xx),
                    http_code_backend_3xx: http_only(t.backend_3xx),
                    http_code_backend_4xx: http_only(t.backend_4xx),
                    http_code_backend_5xx: http_only(t.backend_5xx),
                    latency_sum: totals
                        .engine
                        .then(|| Duration::from_micros(t.latency_micros).as_secs_f64()),
                    latency_count: engine_only(t.latency_count),
                    active_connection_count: active,
                    surge_queue_length: totals
                        .engine
                        .then(|| surge.get(&key).copied().unwrap_or(0)),
                });
            }
            out.push(report);
        }
        out
    }

    /// The access logs' counters in the Prometheus text format (empty without access logs).
    pub fn render_prometheus(&self) -> String {
        let Some(logs) = &self.access_logs else {
            return String::new();
        };
        let s = logs.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "elb_access_log_lines_total",
                "counter",
                "Access log lines written to the spool.",
                load(&s.lines),
            ),
            (
                "elb_access_log_dropped_lines_total",
                "counter",
                "Access log lines dropped: spool full (max_spool_bytes) or not writable.",
                load(&s.dropped_lines),
            ),
            (
                "elb_access_log_spool_bytes",
                "gauge",
                "Bytes of access logs waiting in the spool.",
                load(&s.spool_bytes),
            ),
            (
                "elb_access_log_files_uploaded_total",
                "counter",
                "Access log files delivered.",
                load(&s.files_uploaded),
            ),
            (
                "elb_access_log_upload_failures_total",
                "counter",
                "Access log uploads that failed (retried).",
                load(&s.upload_failures),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }

    /// Starts the access log upload task (with access logs) and the task that finishes open
    /// files on each message of `flush` (SIGUSR1). The handle ends after the last upload
    /// attempt at shutdown.
    pub fn spawn_access_logs(
        &self,
        flush: Option<mpsc::Receiver<()>>,
        shutdown: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        let (logs, settings) = (self.access_logs.clone()?, self.access_log_settings.clone()?);
        if let Some(mut flush) = flush {
            let logs = logs.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = super::control::stopped(&mut stop) => break,
                        got = flush.recv() => {
                            if got.is_none() {
                                break;
                            }
                            info!("SIGUSR1: finishing the open access log files");
                            logs.finish_all();
                        }
                    }
                }
            });
        }
        info!(spool = %settings.spool_dir.display(), endpoint = %settings.s3.endpoint, "access logs: spool open, uploading");
        Some(tokio::spawn(logs.run(S3Writer::new(settings.s3), shutdown)))
    }
}

/// Collects the metrics every `interval` and publishes them on `tx` (the control client sends
/// the latest with each heartbeat) until `shutdown`.
pub(super) async fn run_metrics(
    observe: Arc<Observe>,
    shared: Arc<super::Shared>,
    pin_root: PathBuf,
    tx: watch::Sender<Vec<LoadBalancerMetrics>>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let maps = match Maps::open(&pin_root) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "metrics per load balancer disabled: cannot open the maps");
            return;
        }
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = super::control::stopped(&mut shutdown) => return,
            _ = ticker.tick() => {}
        }
        let status = shared.status.lock().expect("status lock").clone();
        let sweep = shared.sweep.lock().expect("sweep lock").clone();
        let report = observe.collect(&status, &maps, &sweep);
        tx.send_replace(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_listener_names_round_trip() {
        let name = engine_listener_name("web-123456789012", 443);
        assert_eq!(load_balancer_of(&name), Some(("web-123456789012", 443)));
        assert_eq!(load_balancer_of("nope"), None);
    }

    #[test]
    fn counts_are_differenced_and_resets_are_new_values() {
        let a = Counts {
            requests: 10,
            bytes: 100,
            ..Counts::default()
        };
        let b = Counts {
            requests: 15,
            bytes: 180,
            ..Counts::default()
        };
        assert_eq!(
            b.since(&a),
            Counts {
                requests: 5,
                bytes: 80,
                ..Counts::default()
            }
        );
        let reset = Counts {
            requests: 2,
            bytes: 500,
            ..Counts::default()
        };
        assert_eq!(reset.since(&b), reset);
    }
}
