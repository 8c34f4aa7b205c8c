//! The metrics history the console plots: per load balancer, one value per metric every
//! [`STEP`] (10 s), kept in memory for [`KEEP`] steps (a little over an hour).
//!
//! Every step the sampler asks [`current_readings`] for what control knows now: cumulative
//! counters and gauges, each from a source (a servo, or control itself). Counters become
//! per-step increases per source (a counter that goes down was reset: its new value is the
//! increase; a source's first reading only sets its baseline), summed over sources; gauges are
//! summed as they are. Each control replica keeps its own history from the shared store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::model::{InstanceState, LbKey};
use crate::server::AppState;
use crate::store::{StoreError, servo_lb_name};

/// Resolution of the history.
pub const STEP: Duration = Duration::from_secs(10);
/// Steps kept: 61 minutes, so that a full hour is always there.
pub const KEEP: usize = 366;
/// Steps returned to the console: the last hour.
pub const WINDOW: usize = 360;

const STEP_MS: i64 = 10_000;

/// Counter (cumulative, plotted as the increase per step) or gauge (plotted as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A metric the console knows how to plot.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// AWS/ELB-style name.
    pub name: &'static str,
    /// Title of its plot.
    pub label: &'static str,
    pub unit: &'static str,
    pub kind: Kind,
}

/// Every metric of the history, in plot order.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "NewConnectionCount",
        label: "New connections",
        unit: "Count",
        kind: Kind::Counter,
    },
    MetricDef {
        name: "ProcessedBytes",
        label: "Bytes processed",
        unit: "Bytes",
        kind: Kind::Counter,
    },
    MetricDef {
        name: "ProcessedPackets",
        label: "Packets processed",
        unit: "Count",
        kind: Kind::Counter,
    },
    MetricDef {
        name: "HealthyHostCount",
        label: "Healthy instances",
        unit: "Count",
        kind: Kind::Gauge,
    },
    MetricDef {
        name: "UnHealthyHostCount",
        label: "Unhealthy instances",
        unit: "Count",
        kind: Kind::Gauge,
    },
];

fn metric_index(name: &str) -> Option<usize> {
    METRICS.iter().position(|m| m.name == name)
}

/// One value known now.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub lb: LbKey,
    /// Where the value comes from (a servo id, `control`): counters are differenced per source.
    pub source: String,
    /// One of [`METRICS`]' names.
    pub metric: &'static str,
    pub value: f64,
}

/// What the plots say about where their data comes from (shown under them).
pub const SOURCE_NOTE: &str = "New connections and packets are the dataplane counters that the \
servos serving this load balancer report with their heartbeats; they cover everything those \
servos forward (per-load-balancer counters come with the servos' metrics reports). Bytes are \
not reported yet. Instance counts are from the health that servos report.";

/// The one place the history reads from: what control knows now. Today these are the
/// servo-wide counters of each heartbeat (`NewFlows`, `Packets`), attributed to every load
/// balancer assigned to that servo, and the instance health in the store. Point this at
/// per-load-balancer metrics when control aggregates them.
pub async fn current_readings(state: &AppState) -> Result<Vec<Reading>, StoreError> {
    let store = state.store();
    let mut readings = Vec::new();
    // (region, servo-side name) -> key: servos know load balancers as `<name>-<account>`.
    let mut by_servo_name: HashMap<(String, String), LbKey> = HashMap::new();
    for region in &state.config().regions {
        let mut after: Option<(String, String)> = None;
        loop {
            let page = store
                .list_lbs(
                    region,
                    None,
                    after.as_ref().map(|(a, n)| (a.as_str(), n.as_str())),
                    400,
                )
                .await?;
            for lb in &page.items {
                let healthy = lb
                    .instances
                    .iter()
                    .filter(|i| i.health.state == InstanceState::InService)
                    .count();
                for (metric, value) in [
                    ("HealthyHostCount", healthy),
                    ("UnHealthyHostCount", lb.instances.len() - healthy),
                ] {
                    readings.push(Reading {
                        lb: lb.key.clone(),
                        source: "control".into(),
                        metric,
                        value: value as f64,
                    });
                }
                by_servo_name.insert(
                    (
                        region.clone(),
                        servo_lb_name(&lb.key.name, &lb.key.account_id),
                    ),
                    lb.key.clone(),
                );
            }
            match (page.more, page.items.last()) {
                (true, Some(last)) => {
                    after = Some((last.key.account_id.clone(), last.key.name.clone()));
                }
                _ => break,
            }
        }
    }
    let zone_region: HashMap<String, String> = store
        .list_zones()
        .await?
        .into_iter()
        .map(|z| (z.name, z.region))
        .collect();
    for info in store.list_servos(state.config().servo.timeout_ms()).await? {
        let Some(counters) = info.servo.counters.as_deref() else {
            continue;
        };
        let Ok(counters) = serde_json::from_str::<BTreeMap<String, f64>>(counters) else {
            tracing::debug!(servo = %info.servo.id, "unreadable counters in the store");
            continue;
        };
        let Some(region) = zone_region.get(&info.servo.zone) else {
            continue;
        };
        for assigned in &info.load_balancers {
            let servo_name = &assigned.name;
            let Some(key) = by_servo_name.get(&(region.clone(), servo_name.clone())) else {
                continue;
            };
            for (metric, counter) in [
                ("NewConnectionCount", "NewFlows"),
                ("ProcessedPackets", "Packets"),
            ] {
                if let Some(value) = counters.get(counter) {
                    readings.push(Reading {
                        lb: key.clone(),
                        source: info.servo.id.clone(),
                        metric,
                        value: *value,
                    });
                }
            }
        }
    }
    Ok(readings)
}

/// One step of one load balancer.
#[derive(Debug, Clone)]
struct Slot {
    /// Start of the step, milliseconds since the epoch (a multiple of [`STEP`]).
    at: i64,
    values: Vec<Option<f64>>,
}

/// The history of every load balancer.
#[derive(Debug, Default)]
pub struct MetricsHistory {
    inner: Mutex<HistoryInner>,
}

#[derive(Debug, Default)]
struct HistoryInner {
    lbs: HashMap<LbKey, VecDeque<Slot>>,
    /// Last cumulative value per (load balancer, metric, source).
    last: HashMap<(LbKey, usize, String), f64>,
}

/// The series of one load balancer over the last hour, as the console receives it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryView {
    pub load_balancer_name: String,
    /// Seconds per point.
    pub period: u64,
    /// Start of each step, seconds since the epoch, oldest first: the last hour.
    pub timestamps: Vec<i64>,
    pub metrics: Vec<SeriesView>,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SeriesView {
    pub name: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    /// `Sum` per step for counters, `Average` (the sampled value) for gauges.
    pub statistic: &'static str,
    /// One per timestamp; `null` where nothing was reported.
    pub values: Vec<Option<f64>>,
}

/// The start of the step that contains `at_ms`.
pub fn step_start(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(STEP_MS)
}

impl MetricsHistory {
    /// Adds the readings taken at `at_ms` as the step that starts at `step_start(at_ms)`.
    pub fn record(&self, at_ms: i64, readings: &[Reading]) {
        let at = step_start(at_ms);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut steps: HashMap<LbKey, Vec<Option<f64>>> = HashMap::new();
        let mut seen: HashSet<(LbKey, usize, String)> = HashSet::new();
        for r in readings {
            let Some(m) = metric_index(r.metric) else {
                continue;
            };
            let contribution = match METRICS[m].kind {
                Kind::Gauge => Some(r.value),
                Kind::Counter => {
                    let key = (r.lb.clone(), m, r.source.clone());
                    let before = inner.last.insert(key.clone(), r.value);
                    seen.insert(key);
                    before.map(|b| if r.value >= b { r.value - b } else { r.value })
                }
            };
            let values = steps
                .entry(r.lb.clone())
                .or_insert_with(|| vec![None; METRICS.len()]);
            if let Some(v) = contribution {
                values[m] = Some(values[m].unwrap_or(0.0) + v);
            }
        }
        // Sources that stopped reporting start from a new baseline when they come back.
        inner.last.retain(|k, _| seen.contains(k));
        for (lb, values) in steps {
            let series = inner.lbs.entry(lb).or_default();
            match series.back_mut() {
                Some(last) if last.at == at => last.values = values,
                _ => series.push_back(Slot { at, values }),
            }
        }
        let oldest = at - STEP_MS * (KEEP as i64 - 1);
        inner.lbs.retain(|_, series| {
            while series.front().is_some_and(|s| s.at < oldest) {
                series.pop_front();
            }
            !series.is_empty()
        });
    }

    /// The last hour of `lb` up to the step containing `now_ms`.
    pub fn view(&self, lb: &LbKey, now_ms: i64) -> HistoryView {
        let end = step_start(now_ms);
        let start = end - STEP_MS * (WINDOW as i64 - 1);
        let timestamps: Vec<i64> = (0..WINDOW as i64)
            .map(|i| (start + i * STEP_MS) / 1000)
            .collect();
        let mut columns = vec![vec![None; WINDOW]; METRICS.len()];
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = inner.lbs.get(lb) {
            for slot in series.iter().filter(|s| s.at >= start && s.at <= end) {
                let i = usize::try_from((slot.at - start) / STEP_MS).unwrap_or(0);
                for (m, v) in slot.values.iter().enumerate() {
                    columns[m][i] = *v;
                }
            }
        }
        HistoryView {
            load_balancer_name: lb.name.clone(),
            period: STEP.as_secs(),
            timestamps,
            metrics: METRICS
                .iter()
                .zip(columns)
                .map(|(def, values)| SeriesView {
                    name: def.name,
                    label: def.label,
                    unit: def.unit,
                    statistic: match def.kind {
                        Kind::Counter => "Sum",
                        Kind::Gauge => "Average",
                    },
                    values,
                })
                .collect(),
            note: SOURCE_NOTE,
        }
    }

    /// How many load balancers have a history (for tests and logs).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lbs
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Samples [`current_readings`] at every step boundary until shutdown.
pub async fn run_sampler(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    loop {
        let now = crate::timefmt::now_millis();
        // Just past the next boundary, so that the step's readings land in it.
        let wait = STEP_MS - now.rem_euclid(STEP_MS) + 50;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(10_000))) => {}
            () = crate::server::until_true(&mut shutdown) => return,
        }
        match current_readings(&state).await {
            Ok(readings) => state
                .console()
                .metrics
                .record(crate::timefmt::now_millis(), &readings),
            Err(e) => tracing::warn!(error = %e, "console metrics: cannot read the current values"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> LbKey {
        LbKey {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            name: name.into(),
        }
    }

    fn reading(lb: &str, source: &str, metric: &'static str, value: f64) -> Reading {
        Reading {
            lb: key(lb),
            source: source.into(),
            metric,
            value,
        }
    }

    fn series(view: &HistoryView, name: &str) -> Vec<Option<f64>> {
        view.metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .values
            .clone()
    }

    #[test]
    fn counters_become_increases_per_source_and_survive_resets() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        let step = |i: i64| t0 + i * STEP_MS;
        // First readings only set baselines.
        h.record(
            step(0),
            &[
                reading("web", "s1", "NewConnectionCount", 100.0),
                reading("web", "s2", "NewConnectionCount", 50.0),
                reading("web", "control", "HealthyHostCount", 2.0),
            ],
        );
        h.record(
            step(1),
            &[
                reading("web", "s1", "NewConnectionCount", 130.0),
                reading("web", "s2", "NewConnectionCount", 55.0),
                reading("web", "control", "HealthyHostCount", 1.0),
            ],
        );
        // s2 restarted: its counter went down, the new value is the increase.
        h.record(
            step(2),
            &[
                reading("web", "s1", "NewConnectionCount", 130.0),
                reading("web", "s2", "NewConnectionCount", 4.0),
            ],
        );
        let v = h.view(&key("web"), step(2));
        let conns = series(&v, "NewConnectionCount");
        assert_eq!(conns.len(), WINDOW);
        assert_eq!(&conns[WINDOW - 3..], &[None, Some(35.0), Some(4.0)]);
        let healthy = series(&v, "HealthyHostCount");
        assert_eq!(&healthy[WINDOW - 3..], &[Some(2.0), Some(1.0), None]);
        assert_eq!(series(&v, "ProcessedBytes"), vec![None; WINDOW]);
        assert_eq!(v.timestamps.last(), Some(&(step_start(step(2)) / 1000)));
        assert_eq!(v.period, 10);
        // Other load balancers have no history.
        assert!(
            h.view(&key("other"), step(2))
                .metrics
                .iter()
                .all(|m| m.values.iter().all(Option::is_none))
        );
    }

    #[test]
    fn a_source_that_leaves_starts_over_from_a_baseline() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        h.record(t0, &[reading("web", "s1", "NewConnectionCount", 10.0)]);
        h.record(t0 + STEP_MS, &[]);
        h.record(
            t0 + 2 * STEP_MS,
            &[reading("web", "s1", "NewConnectionCount", 500.0)],
        );
        let v = h.view(&key("web"), t0 + 2 * STEP_MS);
        assert_eq!(series(&v, "NewConnectionCount")[WINDOW - 1], None);
    }

    #[test]
    fn history_is_bounded_to_a_little_over_an_hour() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        for i in 0..(KEEP as i64 + 50) {
            h.record(
                t0 + i * STEP_MS,
                &[reading("web", "control", "HealthyHostCount", i as f64)],
            );
        }
        let inner = h.inner.lock().unwrap();
        assert_eq!(inner.lbs[&key("web")].len(), KEEP);
        drop(inner);
        let now = t0 + (KEEP as i64 + 49) * STEP_MS;
        let v = h.view(&key("web"), now);
        let healthy = series(&v, "HealthyHostCount");
        assert!(healthy.iter().all(Option::is_some), "a full hour is kept");
        assert_eq!(healthy[WINDOW - 1], Some((KEEP + 49) as f64));
        // A load balancer that stops appearing is forgotten once its hour has passed.
        for i in 0..KEEP as i64 {
            h.record(now + (i + 1) * STEP_MS, &[]);
        }
        assert!(h.is_empty());
    }

    #[test]
    fn two_samples_in_one_step_keep_the_last() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        h.record(t0, &[reading("web", "control", "HealthyHostCount", 1.0)]);
        h.record(
            t0 + 5,
            &[reading("web", "control", "HealthyHostCount", 2.0)],
        );
        let v = h.view(&key("web"), t0);
        assert_eq!(series(&v, "HealthyHostCount")[WINDOW - 1], Some(2.0));
    }
}
