//! The metrics history the console plots: per load balancer, one value per metric of
//! [`crate::metrics::PLOTTED`] every [`STEP`] (10 s), kept in memory for [`KEEP`] steps (a little
//! over an hour). The values come from the metrics sampler ([`crate::metrics::run_sampler`]):
//! increases per step for counters, values for gauges, AWS's average for Latency, aggregated
//! from what the servos serving the load balancer report. Each control replica keeps its own
//! history from the shared store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::metrics::PLOTTED;
pub use crate::metrics::{STEP, step_start};
use crate::model::LbKey;

/// Steps kept: 61 minutes, so that a full hour is always there.
pub const KEEP: usize = 366;
/// Steps returned to the console: the last hour.
pub const WINDOW: usize = 360;

const STEP_MS: i64 = 10_000;

/// What the plots say about where their data comes from (shown under them).
pub const SOURCE_NOTE: &str = "Reported by the servos serving this load balancer with their \
heartbeats, aggregated every 10 seconds: counters as the increase per point, gauges (active \
connections, healthy and unhealthy instances, surge queue) as their value, Latency as the \
average of the requests timed. HTTP codes, latency and surge queue come from listeners the \
servo's engine serves (HTTPS, SSL, sticky HTTP); packets from listeners forwarded in XDP.";

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

impl MetricsHistory {
    /// Adds the step that starts at `step_start(at_ms)`: per load balancer, one value per
    /// [`PLOTTED`] metric (the sampler's output).
    pub fn record(&self, at_ms: i64, steps: BTreeMap<LbKey, Vec<Option<f64>>>) {
        let at = step_start(at_ms);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut columns = vec![vec![None; WINDOW]; PLOTTED.len()];
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
            metrics: PLOTTED
                .iter()
                .zip(columns)
                .map(|(def, values)| SeriesView {
                    name: def.name,
                    label: def.label,
                    unit: def.unit,
                    statistic: def.statistic(),
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

    fn step(name: &str, metric: &str, value: f64) -> BTreeMap<LbKey, Vec<Option<f64>>> {
        let mut values = vec![None; PLOTTED.len()];
        values[PLOTTED.iter().position(|p| p.name == metric).unwrap()] = Some(value);
        BTreeMap::from([(key(name), values)])
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
    fn steps_land_in_the_window() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        h.record(t0, step("web", "NewConnectionCount", 35.0));
        h.record(t0 + 2 * STEP_MS, step("web", "NewConnectionCount", 4.0));
        let v = h.view(&key("web"), t0 + 2 * STEP_MS);
        let conns = series(&v, "NewConnectionCount");
        assert_eq!(conns.len(), WINDOW);
        assert_eq!(&conns[WINDOW - 3..], &[Some(35.0), None, Some(4.0)]);
        assert_eq!(series(&v, "ProcessedBytes"), vec![None; WINDOW]);
        assert_eq!(
            v.timestamps.last(),
            Some(&(step_start(t0 + 2 * STEP_MS) / 1000))
        );
        assert_eq!(v.period, 10);
        let stats: Vec<&str> = v.metrics.iter().map(|m| m.statistic).collect();
        assert_eq!(stats[0], "Sum");
        assert!(stats.contains(&"Average"));
        // Other load balancers have no history.
        assert!(
            h.view(&key("other"), t0)
                .metrics
                .iter()
                .all(|m| m.values.iter().all(Option::is_none))
        );
    }

    #[test]
    fn history_is_bounded_to_a_little_over_an_hour() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        for i in 0..(KEEP as i64 + 50) {
            h.record(t0 + i * STEP_MS, step("web", "HealthyHostCount", i as f64));
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
            h.record(now + (i + 1) * STEP_MS, BTreeMap::new());
        }
        assert!(h.is_empty());
    }

    #[test]
    fn two_samples_in_one_step_keep_the_last() {
        let h = MetricsHistory::default();
        let t0 = 1_700_000_000_000;
        h.record(t0, step("web", "HealthyHostCount", 1.0));
        h.record(t0 + 5, step("web", "HealthyHostCount", 2.0));
        let v = h.view(&key("web"), t0);
        assert_eq!(series(&v, "HealthyHostCount")[WINDOW - 1], Some(2.0));
    }
}
