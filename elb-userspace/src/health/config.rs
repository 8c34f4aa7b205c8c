//! A load balancer's health-check settings, as ConfigureHealthCheck takes them.

use std::num::NonZeroU16;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::target::HealthTarget;

/// Allowed Interval in seconds (ELB API model).
pub const INTERVAL_RANGE: RangeInclusive<u32> = 5..=300;
/// Allowed Timeout in seconds (ELB API model); it must also be below Interval.
pub const TIMEOUT_RANGE: RangeInclusive<u32> = 2..=60;
/// Allowed HealthyThreshold and UnhealthyThreshold (ELB API model).
pub const THRESHOLD_RANGE: RangeInclusive<u32> = 2..=10;

/// Health-check settings of one load balancer.
///
/// Serialized with ELB's member names (`Target`, `Interval`, `Timeout`, `UnhealthyThreshold`,
/// `HealthyThreshold`) so the same JSON/TOML shape is used by the API, the servo protocol and
/// standalone config files. Deserializing does not check ranges: call [`HealthCheck::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
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

/// Why a [`HealthCheck`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthCheckError {
    /// A numeric member is outside its API range.
    #[error("HealthCheck {field} must be between {min} and {max}{unit} (got {value})")]
    OutOfRange {
        /// ELB member name, e.g. `Interval`.
        field: &'static str,
        /// The rejected value.
        value: u32,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
        /// `" seconds"` for durations, empty for counts.
        unit: &'static str,
    },
    /// Timeout is not below Interval: the next probe would start while this one may still run.
    #[error(
        "HealthCheck Interval must be greater than the Timeout (got Interval {interval}, \
         Timeout {timeout}); raise Interval or lower Timeout"
    )]
    TimeoutNotBelowInterval {
        /// Interval in seconds.
        interval: u32,
        /// Timeout in seconds.
        timeout: u32,
    },
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

    /// Checks every member against the ELB API ranges and Timeout < Interval.
    pub fn validate(&self) -> Result<(), HealthCheckError> {
        check_range("Interval", self.interval, INTERVAL_RANGE, " seconds")?;
        check_range("Timeout", self.timeout, TIMEOUT_RANGE, " seconds")?;
        check_range(
            "UnhealthyThreshold",
            self.unhealthy_threshold,
            THRESHOLD_RANGE,
            "",
        )?;
        check_range(
            "HealthyThreshold",
            self.healthy_threshold,
            THRESHOLD_RANGE,
            "",
        )?;
        if self.timeout >= self.interval {
            return Err(HealthCheckError::TimeoutNotBelowInterval {
                interval: self.interval,
                timeout: self.timeout,
            });
        }
        Ok(())
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

fn check_range(
    field: &'static str,
    value: u32,
    range: RangeInclusive<u32>,
    unit: &'static str,
) -> Result<(), HealthCheckError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(HealthCheckError::OutOfRange {
            field,
            value,
            min: *range.start(),
            max: *range.end(),
            unit,
        })
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

    fn out_of_range(cfg: &HealthCheck) -> (&'static str, u32) {
        match cfg.validate() {
            Err(HealthCheckError::OutOfRange { field, value, .. }) => (field, value),
            other => panic!("expected OutOfRange for {cfg:?}, got {other:?}"),
        }
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
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.interval_duration(), Duration::from_secs(30));
        assert_eq!(cfg.timeout_duration(), Duration::from_secs(5));
    }

    #[test]
    fn interval_bounds() {
        assert_eq!(out_of_range(&check(4, 2, 2, 2)), ("Interval", 4));
        assert_eq!(check(5, 2, 2, 2).validate(), Ok(()));
        assert_eq!(check(300, 60, 2, 2).validate(), Ok(()));
        assert_eq!(out_of_range(&check(301, 5, 2, 2)), ("Interval", 301));
    }

    #[test]
    fn timeout_bounds() {
        assert_eq!(out_of_range(&check(30, 1, 2, 2)), ("Timeout", 1));
        assert_eq!(check(30, 2, 2, 2).validate(), Ok(()));
        assert_eq!(check(61, 60, 2, 2).validate(), Ok(()));
        assert_eq!(out_of_range(&check(300, 61, 2, 2)), ("Timeout", 61));
    }

    #[test]
    fn timeout_must_be_below_interval() {
        assert_eq!(check(6, 5, 2, 2).validate(), Ok(()));
        for (interval, timeout) in [(5, 5), (10, 30)] {
            let err = check(interval, timeout, 2, 2).validate().unwrap_err();
            assert_eq!(
                err,
                HealthCheckError::TimeoutNotBelowInterval { interval, timeout }
            );
            assert!(
                err.to_string()
                    .starts_with("HealthCheck Interval must be greater than the Timeout"),
                "{err}"
            );
        }
    }

    #[test]
    fn threshold_bounds() {
        assert_eq!(out_of_range(&check(30, 5, 1, 2)), ("UnhealthyThreshold", 1));
        assert_eq!(
            out_of_range(&check(30, 5, 11, 2)),
            ("UnhealthyThreshold", 11)
        );
        assert_eq!(out_of_range(&check(30, 5, 2, 1)), ("HealthyThreshold", 1));
        assert_eq!(out_of_range(&check(30, 5, 2, 11)), ("HealthyThreshold", 11));
        assert_eq!(check(30, 5, 2, 10).validate(), Ok(()));
        assert_eq!(check(30, 5, 10, 2).validate(), Ok(()));
    }

    #[test]
    fn range_error_names_the_field_and_range() {
        let err = check(3, 2, 2, 2).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "HealthCheck Interval must be between 5 and 300 seconds (got 3)"
        );
        let err = check(30, 5, 2, 0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "HealthCheck HealthyThreshold must be between 2 and 10 (got 0)"
        );
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
