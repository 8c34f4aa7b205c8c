//! A load balancer's health-check settings, as ConfigureHealthCheck takes them: ranges,
//! `Timeout < Interval`, and AWS's default.

use std::num::NonZeroU16;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Problem, Problems, target::HealthTarget};

/// Allowed Interval in seconds (ELB API model).
pub const INTERVAL_RANGE: RangeInclusive<u32> = 5..=300;
/// Allowed Timeout in seconds (ELB API model); it must also be below Interval.
pub const TIMEOUT_RANGE: RangeInclusive<u32> = 2..=60;
/// Allowed HealthyThreshold and UnhealthyThreshold (ELB API model).
pub const THRESHOLD_RANGE: RangeInclusive<u32> = 2..=10;

/// Health-check settings of one load balancer.
///
/// Serialized with ELB's member names (`Target`, `Interval`, `Timeout`, `UnhealthyThreshold`,
/// `HealthyThreshold`). Deserializing checks the target's grammar but not the ranges: call
/// [`HealthCheck::check`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// What to probe on each instance.
    pub target: HealthTarget,
    /// Seconds between the starts of two probes of one instance.
    pub interval: u32,
    /// Seconds one probe may take, connect to verdict.
    pub timeout: u32,
    /// Consecutive failures that take an InService instance out of service.
    pub unhealthy_threshold: u32,
    /// Consecutive passes that put an OutOfService instance in service.
    pub healthy_threshold: u32,
}

impl HealthCheck {
    /// AWS's default for a new load balancer: `TCP:<port>` of the first listener's instance
    /// port, Interval 30, Timeout 5, UnhealthyThreshold 2, HealthyThreshold 10.
    pub fn default_for_port(port: NonZeroU16) -> Self {
        Self {
            target: HealthTarget::tcp(port),
            interval: 30,
            timeout: 5,
            unhealthy_threshold: 2,
            healthy_threshold: 10,
        }
    }

    /// Every member against the ELB API ranges, and Timeout < Interval. Fields are named
    /// `HealthCheck.<Member>`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (field, value, range, unit) in [
            ("Interval", self.interval, INTERVAL_RANGE, " seconds"),
            ("Timeout", self.timeout, TIMEOUT_RANGE, " seconds"),
            (
                "UnhealthyThreshold",
                self.unhealthy_threshold,
                THRESHOLD_RANGE,
                "",
            ),
            (
                "HealthyThreshold",
                self.healthy_threshold,
                THRESHOLD_RANGE,
                "",
            ),
        ] {
            if !range.contains(&value) {
                out.push(Problem::invalid(
                    format!("HealthCheck.{field}"),
                    format!(
                        "HealthCheck {field} must be between {} and {}{unit} (got {value})",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        if self.timeout >= self.interval {
            out.push(Problem::invalid(
                "HealthCheck.Timeout",
                format!(
                    "HealthCheck Interval must be greater than the Timeout (got Interval {}, \
                     Timeout {}); raise Interval or lower Timeout",
                    self.interval, self.timeout
                ),
            ));
        }
        out
    }

    /// [`problems`](Self::problems) as a result.
    pub fn check(&self) -> Result<(), Problems> {
        Problems(self.problems()).into_result()
    }

    /// Interval as a [`Duration`].
    pub fn interval_duration(&self) -> Duration {
        Duration::from_secs(self.interval.into())
    }

    /// Timeout as a [`Duration`].
    pub fn timeout_duration(&self) -> Duration {
        Duration::from_secs(self.timeout.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(interval: u32, timeout: u32, unhealthy: u32, healthy: u32) -> HealthCheck {
        HealthCheck {
            target: "HTTP:80/".parse().unwrap(),
            interval,
            timeout,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        }
    }

    fn fields(cfg: &HealthCheck) -> Vec<String> {
        cfg.problems().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn default_is_the_aws_default() {
        let cfg = HealthCheck::default_for_port(NonZeroU16::new(8080).unwrap());
        assert_eq!(cfg.target.to_string(), "TCP:8080");
        assert_eq!(
            (
                cfg.interval,
                cfg.timeout,
                cfg.unhealthy_threshold,
                cfg.healthy_threshold
            ),
            (30, 5, 2, 10)
        );
        assert_eq!(cfg.check(), Ok(()));
        assert_eq!(cfg.interval_duration(), Duration::from_secs(30));
        assert_eq!(cfg.timeout_duration(), Duration::from_secs(5));
    }

    #[test]
    fn bounds_of_every_member() {
        assert_eq!(fields(&check(4, 2, 2, 2)), ["HealthCheck.Interval"]);
        assert!(check(5, 2, 2, 2).check().is_ok());
        assert!(check(300, 60, 2, 2).check().is_ok());
        assert_eq!(fields(&check(301, 5, 2, 2)), ["HealthCheck.Interval"]);
        assert_eq!(fields(&check(30, 1, 2, 2)), ["HealthCheck.Timeout"]);
        assert_eq!(fields(&check(300, 61, 2, 2)), ["HealthCheck.Timeout"]);
        assert_eq!(
            fields(&check(30, 5, 1, 2)),
            ["HealthCheck.UnhealthyThreshold"]
        );
        assert_eq!(
            fields(&check(30, 5, 11, 2)),
            ["HealthCheck.UnhealthyThreshold"]
        );
        assert_eq!(
            fields(&check(30, 5, 2, 1)),
            ["HealthCheck.HealthyThreshold"]
        );
        assert_eq!(
            fields(&check(30, 5, 2, 11)),
            ["HealthCheck.HealthyThreshold"]
        );
        assert!(check(30, 5, 10, 2).check().is_ok());
    }

    #[test]
    fn timeout_must_be_below_interval() {
        assert!(check(6, 5, 2, 2).check().is_ok());
        for (interval, timeout) in [(5, 5), (10, 30)] {
            let ps = check(interval, timeout, 2, 2).problems();
            let last = ps.last().unwrap();
            assert_eq!(last.field, "HealthCheck.Timeout");
            assert!(
                last.message
                    .starts_with("HealthCheck Interval must be greater than the Timeout"),
                "{last}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let err = check(3, 1, 0, 11).check().unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert_eq!(
            err.0[0].message,
            "HealthCheck Interval must be between 5 and 300 seconds (got 3)"
        );
        assert!(err.to_string().contains("HealthCheck.HealthyThreshold: HealthCheck HealthyThreshold must be between 2 and 10 (got 11)"));
    }

    #[test]
    fn serde_uses_elb_member_names() {
        let cfg = check(20, 3, 5, 4);
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Target": "HTTP:80/",
                "Interval": 20,
                "Timeout": 3,
                "UnhealthyThreshold": 5,
                "HealthyThreshold": 4,
            })
        );
        assert_eq!(serde_json::from_value::<HealthCheck>(json).unwrap(), cfg);

        let bad = serde_json::json!({
            "Target": "TCP:80/x", "Interval": 20, "Timeout": 3,
            "UnhealthyThreshold": 5, "HealthyThreshold": 4,
        });
        let err = serde_json::from_value::<HealthCheck>(bad).unwrap_err();
        assert!(err.to_string().contains("takes only a port"), "{err}");
    }
}
