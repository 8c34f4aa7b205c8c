//! Probe latency as a Prometheus-style histogram, updated lock-free by concurrent probes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the finite buckets, in seconds: 1 ms (a local TCP connect) to 10 s (a little
/// above a typical Timeout); anything slower lands in `+Inf`.
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram of probe latencies with cumulative buckets, sum and count.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`. Cumulating at read time keeps
    /// `observe` to a single increment.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A point-in-time copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations <= bound)`, cumulative, ending with `+Inf`
    /// (`f64::INFINITY`) whose count equals `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one probe latency.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let slot = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Copies the current values. Under concurrent `observe` the sum may lag the buckets by an
    /// observation; `count` is derived from the buckets so `+Inf` always equals it.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = 0;
        let bounds = LATENCY_BUCKETS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        LatencySnapshot {
            buckets,
            sum_seconds: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
            count: cumulative,
        }
    }
}

impl LatencySnapshot {
    /// Renders the histogram in the Prometheus text exposition format under metric `name`.
    pub fn render_prometheus(&self, name: &str, help: &str) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for &(bound, count) in &self.buckets {
            if bound.is_infinite() {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
            } else {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count {}", self.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_at(snapshot: &LatencySnapshot, bound: f64) -> u64 {
        snapshot
            .buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map(|&(_, c)| c)
            .unwrap()
    }

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // exactly on a bound: counts in that bucket
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(5));
        h.observe(Duration::from_secs(11));
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(count_at(&s, 0.001), 2);
        assert_eq!(count_at(&s, 0.025), 2);
        assert_eq!(count_at(&s, 0.05), 3);
        assert_eq!(count_at(&s, 5.0), 4);
        assert_eq!(count_at(&s, 10.0), 4);
        assert_eq!(count_at(&s, f64::INFINITY), 5);
        assert!((s.sum_seconds - 16.0315).abs() < 1e-9, "{}", s.sum_seconds);
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn renders_prometheus_text() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_millis(2));
        let text = h
            .snapshot()
            .render_prometheus("elb_health_probe_seconds", "Health probe latency.");
        assert!(text.starts_with(
            "# HELP elb_health_probe_seconds Health probe latency.\n\
             # TYPE elb_health_probe_seconds histogram\n"
        ));
        assert!(text.contains("elb_health_probe_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("elb_health_probe_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("elb_health_probe_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("elb_health_probe_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("elb_health_probe_seconds_sum 0.002\n"));
        assert!(text.ends_with("elb_health_probe_seconds_count 1\n"));
    }
}
