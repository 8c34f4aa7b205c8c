//! Metrics per load balancer, from what servos report.
//!
//! Every servo sends, with each heartbeat, what it saw of each load balancer it serves
//! ([`elb_contract::wire::LoadBalancerMetrics`]: cumulative counters per listener since a
//! `Since` time, gauges now); control keeps the last report of each servo in the shared store
//! (`servos.metrics`). Every [`STEP`] (10 s, on the wall-clock boundary) each replica's sampler
//! reads those reports ([`current_reports`]) and its [`Aggregator`]:
//! - turns each source's cumulative counters (a servo, a load balancer, a listener, a `Since`)
//!   into increases: a counter that went down was reset (its value is the increase); a source
//!   seen for the first time counts whole when its `Since` is after this process started (a new
//!   listener, a restarted servo) and only sets a baseline otherwise (this process restarted:
//!   the servo's totals are old news);
//! - adds the increases to totals per (load balancer, zone), which `GET /metrics` on
//!   `--metrics-listen` exposes ([`render_prometheus`]);
//! - sums each load balancer's step over its zones for the console's history.
//!
//! Gauges come from live servos only: connection and surge-queue gauges are summed over the
//! servos of a zone; host counts are the largest any servo of the zone reports (each servo of a
//! zone checks the same instances). Latency is AWS's average: the increase of the latency sum
//! over the increase of the timed requests.
//!
//! With several control replicas, each aggregates the same reports from the shared store: any
//! replica answers `/metrics` and the console with the same increases (its totals start when it
//! starts, which Prometheus' `rate()` handles like any counter reset).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use elb_contract::wire::{ListenerMetrics, LoadBalancerMetrics};
use serde::Serialize;

use crate::model::LbKey;
use crate::server::AppState;
use crate::store::StoreError;

/// Resolution of the history and period of the sampler.
pub const STEP: Duration = Duration::from_secs(10);
const STEP_MS: i64 = 10_000;
/// A source or a series not seen for this long is forgotten.
const FORGET_MS: i64 = 61 * 60 * 1000;

/// What servos report cumulatively, per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    NewConnectionCount,
    RequestCount,
    ProcessedBytes,
    ProcessedPackets,
    BackendConnectionErrors,
    SpilloverCount,
    HttpCodeElb4xx,
    HttpCodeElb5xx,
    HttpCodeBackend2xx,
    HttpCodeBackend3xx,
    HttpCodeBackend4xx,
    HttpCodeBackend5xx,
    /// Seconds.
    LatencySum,
    LatencyCount,
}

/// Every counter, in the order of [`Totals::counters`].
pub const COUNTERS: [Counter; 14] = [
    Counter::NewConnectionCount,
    Counter::RequestCount,
    Counter::ProcessedBytes,
    Counter::ProcessedPackets,
    Counter::BackendConnectionErrors,
    Counter::SpilloverCount,
    Counter::HttpCodeElb4xx,
    Counter::HttpCodeElb5xx,
    Counter::HttpCodeBackend2xx,
    Counter::HttpCodeBackend3xx,
    Counter::HttpCodeBackend4xx,
    Counter::HttpCodeBackend5xx,
    Counter::LatencySum,
    Counter::LatencyCount,
];

impl Counter {
    /// The AWS/ELB name (or this service's, for connections, bytes and packets).
    pub fn name(self) -> &'static str {
        match self {
            Self::NewConnectionCount => "NewConnectionCount",
            Self::RequestCount => "RequestCount",
            Self::ProcessedBytes => "ProcessedBytes",
            Self::ProcessedPackets => "ProcessedPackets",
            Self::BackendConnectionErrors => "BackendConnectionErrors",
            Self::SpilloverCount => "SpilloverCount",
            Self::HttpCodeElb4xx => "HTTPCode_ELB_4XX",
            Self::HttpCodeElb5xx => "HTTPCode_ELB_5XX",
            Self::HttpCodeBackend2xx => "HTTPCode_Backend_2XX",
            Self::HttpCodeBackend3xx => "HTTPCode_Backend_3XX",
            Self::HttpCodeBackend4xx => "HTTPCode_Backend_4XX",
            Self::HttpCodeBackend5xx => "HTTPCode_Backend_5XX",
            Self::LatencySum => "LatencySum",
            Self::LatencyCount => "LatencyCount",
        }
    }

    /// The Prometheus metric it is exposed as.
    pub fn prometheus(self) -> &'static str {
        match self {
            Self::NewConnectionCount => "aws_elb_new_connection_count_total",
            Self::RequestCount => "aws_elb_request_count_total",
            Self::ProcessedBytes => "aws_elb_processed_bytes_total",
            Self::ProcessedPackets => "aws_elb_processed_packets_total",
            Self::BackendConnectionErrors => "aws_elb_backend_connection_errors_total",
            Self::SpilloverCount => "aws_elb_spillover_count_total",
            Self::HttpCodeElb4xx => "aws_elb_httpcode_elb_4xx_total",
            Self::HttpCodeElb5xx => "aws_elb_httpcode_elb_5xx_total",
            Self::HttpCodeBackend2xx => "aws_elb_httpcode_backend_2xx_total",
            Self::HttpCodeBackend3xx => "aws_elb_httpcode_backend_3xx_total",
            Self::HttpCodeBackend4xx => "aws_elb_httpcode_backend_4xx_total",
            Self::HttpCodeBackend5xx => "aws_elb_httpcode_backend_5xx_total",
            Self::LatencySum => "aws_elb_latency_seconds_sum",
            Self::LatencyCount => "aws_elb_latency_seconds_count",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::NewConnectionCount => "Client connections accepted (NewConnectionCount).",
            Self::RequestCount => {
                "Requests (HTTP/HTTPS) or connections (TCP/SSL) sent to instances (RequestCount)."
            }
            Self::ProcessedBytes => "Bytes both ways on the client side (ProcessedBytes).",
            Self::ProcessedPackets => {
                "Packets both ways, XDP-forwarded listeners (ProcessedPackets)."
            }
            Self::BackendConnectionErrors => {
                "Connections to instances that failed (BackendConnectionErrors)."
            }
            Self::SpilloverCount => {
                "Requests or connections refused because the surge queue was full (SpilloverCount)."
            }
            Self::HttpCodeElb4xx => "4XX responses of the load balancer itself (HTTPCode_ELB_4XX).",
            Self::HttpCodeElb5xx => "5XX responses of the load balancer itself (HTTPCode_ELB_5XX).",
            Self::HttpCodeBackend2xx => "2XX responses of instances (HTTPCode_Backend_2XX).",
            Self::HttpCodeBackend3xx => "3XX responses of instances (HTTPCode_Backend_3XX).",
            Self::HttpCodeBackend4xx => "4XX responses of instances (HTTPCode_Backend_4XX).",
            Self::HttpCodeBackend5xx => "5XX responses of instances (HTTPCode_Backend_5XX).",
            Self::LatencySum | Self::LatencyCount => {
                "Latency: HTTP request sent to response headers, TCP/SSL connection to the instance (Latency)."
            }
        }
    }

    fn of(self, l: &ListenerMetrics) -> Option<f64> {
        let v = match self {
            Self::NewConnectionCount => Some(l.new_connection_count),
            Self::RequestCount => Some(l.request_count),
            Self::ProcessedBytes => Some(l.processed_bytes),
            Self::ProcessedPackets => l.processed_packets,
            Self::BackendConnectionErrors => l.backend_connection_errors,
            Self::SpilloverCount => l.spillover_count,
            Self::HttpCodeElb4xx => l.http_code_elb_4xx,
            Self::HttpCodeElb5xx => l.http_code_elb_5xx,
            Self::HttpCodeBackend2xx => l.http_code_backend_2xx,
            Self::HttpCodeBackend3xx => l.http_code_backend_3xx,
            Self::HttpCodeBackend4xx => l.http_code_backend_4xx,
            Self::HttpCodeBackend5xx => l.http_code_backend_5xx,
            Self::LatencySum => return l.latency_sum,
            Self::LatencyCount => l.latency_count,
        };
        v.map(|v| v as f64)
    }

    fn index(self) -> usize {
        COUNTERS.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// What servos report as values now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    ActiveConnectionCount,
    SurgeQueueLength,
    HealthyHostCount,
    UnHealthyHostCount,
}

/// Every gauge, in the order of [`Totals::gauges`].
pub const GAUGES: [Gauge; 4] = [
    Gauge::ActiveConnectionCount,
    Gauge::SurgeQueueLength,
    Gauge::HealthyHostCount,
    Gauge::UnHealthyHostCount,
];

impl Gauge {
    pub fn name(self) -> &'static str {
        match self {
            Self::ActiveConnectionCount => "ActiveConnectionCount",
            Self::SurgeQueueLength => "SurgeQueueLength",
            Self::HealthyHostCount => "HealthyHostCount",
            Self::UnHealthyHostCount => "UnHealthyHostCount",
        }
    }

    pub fn prometheus(self) -> &'static str {
        match self {
            Self::ActiveConnectionCount => "aws_elb_active_connection_count",
            Self::SurgeQueueLength => "aws_elb_surge_queue_length",
            Self::HealthyHostCount => "aws_elb_healthy_host_count",
            Self::UnHealthyHostCount => "aws_elb_un_healthy_host_count",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::ActiveConnectionCount => "Client connections open (ActiveConnectionCount).",
            Self::SurgeQueueLength => {
                "Requests or connections waiting for a connection to an instance (SurgeQueueLength)."
            }
            Self::HealthyHostCount => "InService instances (HealthyHostCount).",
            Self::UnHealthyHostCount => "OutOfService instances (UnHealthyHostCount).",
        }
    }

    /// Host counts: every servo of a zone checks the same instances, so the zone's value is
    /// the largest any of them reports; the others add up.
    fn largest_in_zone(self) -> bool {
        matches!(self, Self::HealthyHostCount | Self::UnHealthyHostCount)
    }

    fn index(self) -> usize {
        GAUGES.iter().position(|g| *g == self).unwrap_or(0)
    }
}

/// How a plotted value is made from the aggregated ones.
#[derive(Debug, Clone, Copy)]
pub enum Derive {
    /// The increase over the step.
    Increase(Counter),
    /// The value at the step.
    Value(Gauge),
    /// One increase over another (Latency: seconds over requests timed).
    Ratio(Counter, Counter),
}

/// A metric the console plots.
#[derive(Debug, Clone, Copy)]
pub struct Plotted {
    /// AWS/ELB name.
    pub name: &'static str,
    /// Title of its plot.
    pub label: &'static str,
    pub unit: &'static str,
    pub derive: Derive,
}

impl Plotted {
    /// CloudWatch's statistic for it: `Sum` per step for counters, `Average` otherwise.
    pub fn statistic(&self) -> &'static str {
        match self.derive {
            Derive::Increase(_) => "Sum",
            _ => "Average",
        }
    }
}

/// Every plotted metric, in plot order.
pub const PLOTTED: &[Plotted] = &[
    Plotted {
        name: "RequestCount",
        label: "Requests",
        unit: "Count",
        derive: Derive::Increase(Counter::RequestCount),
    },
    Plotted {
        name: "NewConnectionCount",
        label: "New connections",
        unit: "Count",
        derive: Derive::Increase(Counter::NewConnectionCount),
    },
    Plotted {
        name: "ActiveConnectionCount",
        label: "Active connections",
        unit: "Count",
        derive: Derive::Value(Gauge::ActiveConnectionCount),
    },
    Plotted {
        name: "Latency",
        label: "Latency",
        unit: "Seconds",
        derive: Derive::Ratio(Counter::LatencySum, Counter::LatencyCount),
    },
    Plotted {
        name: "HealthyHostCount",
        label: "Healthy instances",
        unit: "Count",
        derive: Derive::Value(Gauge::HealthyHostCount),
    },
    Plotted {
        name: "UnHealthyHostCount",
        label: "Unhealthy instances",
        unit: "Count",
        derive: Derive::Value(Gauge::UnHealthyHostCount),
    },
    Plotted {
        name: "ProcessedBytes",
        label: "Bytes processed",
        unit: "Bytes",
        derive: Derive::Increase(Counter::ProcessedBytes),
    },
    Plotted {
        name: "ProcessedPackets",
        label: "Packets processed",
        unit: "Count",
        derive: Derive::Increase(Counter::ProcessedPackets),
    },
    Plotted {
        name: "HTTPCode_Backend_2XX",
        label: "Instance 2XX responses",
        unit: "Count",
        derive: Derive::Increase(Counter::HttpCodeBackend2xx),
    },
    Plotted {
        name: "HTTPCode_Backend_3XX",
        label: "Instance 3XX responses",
        unit: "Count",
        derive: Derive::Increase(Counter::HttpCodeBackend3xx),
    },
    Plotted {
        name: "HTTPCode_Backend_4XX",
        label: "Instance 4XX responses",
        unit: "Count",
        derive: Derive::Increase(Counter::HttpCodeBackend4xx),
    },
    Plotted {
        name: "HTTPCode_Backend_5XX",
        label: "Instance 5XX responses",
        unit: "Count",
        derive: Derive::Increase(Counter::HttpCodeBackend5xx),
    },
    Plotted {
        name: "HTTPCode_ELB_4XX",
        label: "Load balancer 4XX responses",
        unit: "Count",
        derive: Derive::Increase(Counter::HttpCodeElb4xx),
    },
    Plotted {
        name: "HTTPCode_ELB_5XX",
        label: "Load balancer 5XX responses",
        unit: "Count",
        derive: Derive::Increase(Counter::HttpCodeElb5xx),
    },
    Plotted {
        name: "BackendConnectionErrors",
        label: "Instance connection errors",
        unit: "Count",
        derive: Derive::Increase(Counter::BackendConnectionErrors),
    },
    Plotted {
        name: "SurgeQueueLength",
        label: "Surge queue length",
        unit: "Count",
        derive: Derive::Value(Gauge::SurgeQueueLength),
    },
    Plotted {
        name: "SpilloverCount",
        label: "Spillover",
        unit: "Count",
        derive: Derive::Increase(Counter::SpilloverCount),
    },
];

/// One servo's last report.
#[derive(Debug, Clone, PartialEq)]
pub struct ServoReport {
    pub servo_id: String,
    pub zone: String,
    pub region: String,
    pub live: bool,
    pub load_balancers: Vec<LoadBalancerMetrics>,
}

/// What every servo last reported, from the shared store: the one input of the metrics.
pub async fn current_reports(state: &AppState) -> Result<Vec<ServoReport>, StoreError> {
    let store = state.store();
    let regions: HashMap<String, String> = store
        .list_zones()
        .await?
        .into_iter()
        .map(|z| (z.name, z.region))
        .collect();
    let mut out = Vec::new();
    for row in store
        .servo_metrics(state.config().servo.timeout_ms())
        .await?
    {
        let Some(region) = regions.get(&row.zone) else {
            continue;
        };
        match serde_json::from_str::<Vec<LoadBalancerMetrics>>(&row.metrics) {
            Ok(load_balancers) => out.push(ServoReport {
                servo_id: row.servo_id,
                zone: row.zone,
                region: region.clone(),
                live: row.live,
                load_balancers,
            }),
            Err(e) => {
                tracing::debug!(servo = %row.servo_id, error = %e, "unreadable metrics in the store")
            }
        }
    }
    Ok(out)
}

/// The load balancer a servo-side name `<name>-<account>` stands for, in `region`.
fn lb_key(servo_name: &str, region: &str) -> Option<LbKey> {
    let (name, account) = servo_name.rsplit_once('-')?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()).then(
        || LbKey {
            account_id: account.to_string(),
            region: region.to_string(),
            name: name.to_string(),
        },
    )
}

/// A source of cumulative counters: one listener of one load balancer on one servo, counted
/// since `since`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    servo: String,
    load_balancer: String,
    port: u16,
    since: u64,
}

/// The totals of one load balancer in one zone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Sums of the increases, by [`COUNTERS`]; `None`: never reported.
    pub counters: [Option<f64>; COUNTERS.len()],
    /// Values at the last step, by [`GAUGES`]; `None`: no live servo reports it.
    pub gauges: [Option<f64>; GAUGES.len()],
    #[serde(skip)]
    updated_ms: i64,
}

/// One step of one load balancer in one zone: increases and values.
#[derive(Debug, Clone, Default)]
struct StepValues {
    increases: [Option<f64>; COUNTERS.len()],
    gauges: [Option<f64>; GAUGES.len()],
}

fn add(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.unwrap_or(0.0) + v);
}

impl StepValues {
    fn merge_zone(&mut self, other: &StepValues) {
        for (a, b) in self.increases.iter_mut().zip(&other.increases) {
            if let Some(b) = b {
                add(a, *b);
            }
        }
        for (a, b) in self.gauges.iter_mut().zip(&other.gauges) {
            if let Some(b) = b {
                add(a, *b);
            }
        }
    }

    fn plotted(&self) -> Vec<Option<f64>> {
        PLOTTED
            .iter()
            .map(|p| match p.derive {
                Derive::Increase(c) => self.increases[c.index()],
                Derive::Value(g) => self.gauges[g.index()],
                Derive::Ratio(sum, count) => {
                    match (self.increases[sum.index()], self.increases[count.index()]) {
                        (Some(s), Some(n)) if n > 0.0 => Some(s / n),
                        _ => None,
                    }
                }
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Last cumulative values per source, and when the source was last seen.
    last: HashMap<SourceKey, ([Option<f64>; COUNTERS.len()], i64)>,
    totals: BTreeMap<(LbKey, String), Totals>,
}

/// The aggregation of the servos' reports (see the module documentation); one per replica.
#[derive(Debug)]
pub struct Aggregator {
    started_ms: i64,
    inner: Mutex<Inner>,
}

impl Aggregator {
    /// An aggregator in a process that started at `started_ms` (sources counted since before
    /// then only set baselines).
    pub fn new(started_ms: i64) -> Self {
        Self {
            started_ms,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes the reports read at `at_ms`: updates the totals and returns each load balancer's
    /// step (summed over its zones), one value per [`PLOTTED`] metric.
    pub fn sample(&self, at_ms: i64, reports: &[ServoReport]) -> BTreeMap<LbKey, Vec<Option<f64>>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut steps: BTreeMap<(LbKey, String), StepValues> = BTreeMap::new();
        for report in reports {
            for lbm in &report.load_balancers {
                let Some(key) = lb_key(&lbm.load_balancer_name, &report.region) else {
                    continue;
                };
                let step = steps.entry((key, report.zone.clone())).or_default();
                let counted_whole = i64::try_from(lbm.since).unwrap_or(i64::MAX) >= self.started_ms;
                for l in &lbm.listeners {
                    let source = SourceKey {
                        servo: report.servo_id.clone(),
                        load_balancer: lbm.load_balancer_name.clone(),
                        port: l.load_balancer_port,
                        since: lbm.since,
                    };
                    let now: [Option<f64>; COUNTERS.len()] = COUNTERS.map(|c| c.of(l));
                    let before = inner.last.get(&source).map(|(v, _)| *v);
                    for (i, value) in now.iter().enumerate() {
                        let Some(value) = *value else { continue };
                        let increase = match before.and_then(|b| b[i]) {
                            Some(b) if value >= b => value - b,
                            // Went down: reset, all of it is new.
                            Some(_) => value,
                            None if before.is_some() || counted_whole => value,
                            // First sight of a source older than this process: a baseline,
                            // and no value for the step (its increase is unknown).
                            None => continue,
                        };
                        add(&mut step.increases[i], increase);
                    }
                    inner.last.insert(source, (now, at_ms));
                    if report.live {
                        add(
                            &mut step.gauges[Gauge::ActiveConnectionCount.index()],
                            l.active_connection_count as f64,
                        );
                        if let Some(q) = l.surge_queue_length {
                            add(&mut step.gauges[Gauge::SurgeQueueLength.index()], q as f64);
                        }
                    }
                }
                if report.live {
                    for (g, v) in [
                        (Gauge::HealthyHostCount, lbm.healthy_host_count),
                        (Gauge::UnHealthyHostCount, lbm.un_healthy_host_count),
                    ] {
                        debug_assert!(g.largest_in_zone());
                        let slot = &mut step.gauges[g.index()];
                        *slot = Some(slot.unwrap_or(0.0).max(v as f64));
                    }
                }
            }
        }
        inner.last.retain(|_, (_, seen)| at_ms - *seen < FORGET_MS);
        for totals in inner.totals.values_mut() {
            totals.gauges = Default::default();
        }
        let mut by_lb: BTreeMap<LbKey, StepValues> = BTreeMap::new();
        for ((lb, zone), step) in steps {
            let totals = inner.totals.entry((lb.clone(), zone)).or_default();
            for (t, i) in totals.counters.iter_mut().zip(&step.increases) {
                if let Some(i) = i {
                    add(t, *i);
                }
            }
            totals.gauges = step.gauges;
            totals.updated_ms = at_ms;
            by_lb.entry(lb).or_default().merge_zone(&step);
        }
        inner.totals.retain(|_, t| at_ms - t.updated_ms < FORGET_MS);
        by_lb.into_iter().map(|(lb, s)| (lb, s.plotted())).collect()
    }

    /// The totals of every (load balancer, zone).
    pub fn totals(&self) -> BTreeMap<(LbKey, String), Totals> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .totals
            .clone()
    }
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The totals in the Prometheus text format: one series per (load balancer, account, zone)
/// and metric that was ever reported there.
pub fn render_prometheus(totals: &BTreeMap<(LbKey, String), Totals>) -> String {
    let mut out = String::with_capacity(4096);
    let labels = |lb: &LbKey, zone: &str| {
        format!(
            "load_balancer=\"{}\",account=\"{}\",zone=\"{}\"",
            label(&lb.name),
            label(&lb.account_id),
            label(zone)
        )
    };
    for c in COUNTERS {
        let series: Vec<String> = totals
            .iter()
            .filter_map(|((lb, zone), t)| {
                t.counters[c.index()]
                    .map(|v| format!("{}{{{}}} {v}", c.prometheus(), labels(lb, zone)))
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        match c {
            Counter::LatencySum => {
                let _ = writeln!(
                    out,
                    "# HELP aws_elb_latency_seconds {}\n# TYPE aws_elb_latency_seconds summary",
                    c.help()
                );
            }
            Counter::LatencyCount => {}
            _ => {
                let _ = writeln!(
                    out,
                    "# HELP {0} {1}\n# TYPE {0} counter",
                    c.prometheus(),
                    c.help()
                );
            }
        }
        for s in series {
            let _ = writeln!(out, "{s}");
        }
    }
    for g in GAUGES {
        let series: Vec<String> = totals
            .iter()
            .filter_map(|((lb, zone), t)| {
                t.gauges[g.index()]
                    .map(|v| format!("{}{{{}}} {v}", g.prometheus(), labels(lb, zone)))
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "# HELP {0} {1}\n# TYPE {0} gauge",
            g.prometheus(),
            g.help()
        );
        for s in series {
            let _ = writeln!(out, "{s}");
        }
    }
    out
}

/// The start of the step that contains `at_ms`.
pub fn step_start(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(STEP_MS)
}

/// Every [`STEP`] (just past the wall-clock boundary) reads the servos' reports, aggregates
/// them and records the step in the console's history, until shutdown.
pub async fn run_sampler(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    loop {
        let now = crate::timefmt::now_millis();
        let wait = STEP_MS - now.rem_euclid(STEP_MS) + 50;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(10_000))) => {}
            () = crate::server::until_true(&mut shutdown) => return,
        }
        match current_reports(&state).await {
            Ok(reports) => {
                let at = crate::timefmt::now_millis();
                let step = state.metrics().sample(at, &reports);
                state.console().metrics.record(at, step);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the servos' reports"),
        }
    }
}

/// Serves `GET /metrics` (the totals in the Prometheus text format) on `listener` until
/// shutdown.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) {
    async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render_prometheus(&state.metrics().totals()),
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "see /metrics\n") })
        .with_state(state.clone());
    let mut shutdown = state.shutdown_signal();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { crate::server::until_true(&mut shutdown).await })
        .await
    {
        tracing::error!(error = %e, "the metrics endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "111122223333";

    fn listener(port: u16, requests: u64, active: u64) -> ListenerMetrics {
        ListenerMetrics {
            protocol: Some(elb_contract::Protocol::Http),
            load_balancer_port: port,
            new_connection_count: requests,
            request_count: requests,
            processed_bytes: requests * 100,
            processed_packets: Some(requests * 10),
            active_connection_count: active,
            ..ListenerMetrics::default()
        }
    }

    fn report(
        servo: &str,
        zone: &str,
        since: u64,
        healthy: u64,
        listeners: Vec<ListenerMetrics>,
    ) -> ServoReport {
        ServoReport {
            servo_id: servo.into(),
            zone: zone.into(),
            region: "us-east-1".into(),
            live: true,
            load_balancers: vec![LoadBalancerMetrics {
                load_balancer_name: format!("web-{ACCOUNT}"),
                since,
                healthy_host_count: healthy,
                un_healthy_host_count: 0,
                listeners,
            }],
        }
    }

    fn key() -> LbKey {
        LbKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            name: "web".into(),
        }
    }

    fn plotted(step: &BTreeMap<LbKey, Vec<Option<f64>>>, name: &str) -> Option<f64> {
        let i = PLOTTED.iter().position(|p| p.name == name).unwrap();
        step.get(&key())?[i]
    }

    #[test]
    fn increases_per_source_zone_totals_and_baselines() {
        let started = 1_000_000;
        let agg = Aggregator::new(started);
        // s1 started before this process: its first report is a baseline. s2 started after:
        // counted whole.
        let step = agg.sample(
            started + 10_000,
            &[
                report("s1", "a", 500, 2, vec![listener(80, 40, 3)]),
                report("s2", "b", 2_000_000, 1, vec![listener(80, 5, 1)]),
            ],
        );
        assert_eq!(plotted(&step, "RequestCount"), Some(5.0));
        assert_eq!(
            agg.totals()[&(key(), "a".into())].counters[Counter::RequestCount.index()],
            None,
            "a baseline has no increase"
        );
        assert_eq!(plotted(&step, "ActiveConnectionCount"), Some(4.0));
        assert_eq!(plotted(&step, "HealthyHostCount"), Some(3.0));
        assert_eq!(plotted(&step, "Latency"), None);
        let step = agg.sample(
            started + 20_000,
            &[
                report("s1", "a", 500, 2, vec![listener(80, 70, 0)]),
                // s2 restarted: a new Since, counted whole.
                report("s2", "b", 2_500_000, 1, vec![listener(80, 2, 0)]),
            ],
        );
        assert_eq!(plotted(&step, "RequestCount"), Some(32.0));
        assert_eq!(plotted(&step, "ProcessedBytes"), Some(3200.0));
        let totals = agg.totals();
        assert_eq!(
            totals[&(key(), "a".into())].counters[Counter::RequestCount.index()],
            Some(30.0)
        );
        assert_eq!(
            totals[&(key(), "b".into())].counters[Counter::RequestCount.index()],
            Some(7.0)
        );
        assert_eq!(
            totals[&(key(), "b".into())].counters[Counter::HttpCodeBackend2xx.index()],
            None,
            "never reported"
        );
        let text = render_prometheus(&totals);
        assert!(
            text.contains(&format!(
                "aws_elb_request_count_total{{load_balancer=\"web\",account=\"{ACCOUNT}\",zone=\"a\"}} 30"
            )),
            "{text}"
        );
        assert!(text.contains("# TYPE aws_elb_healthy_host_count gauge"));
        assert!(!text.contains("httpcode"), "{text}");
    }

    #[test]
    fn host_counts_are_the_largest_in_a_zone_and_latency_an_average() {
        let agg = Aggregator::new(0);
        let mut l = listener(443, 0, 0);
        l.latency_sum = Some(0.5);
        l.latency_count = Some(10);
        l.http_code_backend_2xx = Some(10);
        agg.sample(
            10_000,
            &[
                report("s1", "a", 1, 2, vec![l.clone()]),
                report("s2", "a", 1, 2, vec![l.clone()]),
            ],
        );
        l.latency_sum = Some(0.9);
        l.latency_count = Some(12);
        let mut dead = report("s2", "a", 1, 5, vec![l.clone()]);
        dead.live = false;
        let step = agg.sample(20_000, &[report("s1", "a", 1, 2, vec![l.clone()]), dead]);
        assert_eq!(
            plotted(&step, "HealthyHostCount"),
            Some(2.0),
            "dead servos' gauges are out"
        );
        // (0.4 + 0.4) seconds over (2 + 2) requests.
        assert!((plotted(&step, "Latency").unwrap() - 0.2).abs() < 1e-9);
        let text = render_prometheus(&agg.totals());
        assert!(
            text.contains("# TYPE aws_elb_latency_seconds summary"),
            "{text}"
        );
        assert!(text.contains("aws_elb_latency_seconds_count{"), "{text}");
    }

    #[test]
    fn servo_names_map_back_to_load_balancers() {
        assert_eq!(
            lb_key(&format!("web-app-{ACCOUNT}"), "r").unwrap().name,
            "web-app"
        );
        assert!(lb_key("web", "r").is_none());
        assert!(lb_key("web-12", "r").is_none());
    }
}
