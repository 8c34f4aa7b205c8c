//! ELB health checks: targets, settings, the threshold state machine, probes and the scheduler.
//!
//! - [`HealthTarget`] parses `TCP:80`, `SSL:443`, `HTTP:80/path`, `HTTPS:443/path`.
//! - [`HealthCheck`] is ConfigureHealthCheck's five members with ELB's ranges.
//! - [`InstanceHealth`] counts consecutive passes and failures into InService/OutOfService with
//!   ELB's ReasonCode and Description.
//! - [`NetworkProber`] runs one probe; [`HealthChecker`] schedules probes for thousands of
//!   instances and sends each [`HealthEvent`] once.

mod checker;
mod config;
mod latency;
mod probe;
mod state;
mod target;
#[cfg(test)]
mod test_support;

pub use checker::{CheckerError, HealthChecker, HealthCheckerOptions, HealthEvent};
pub use config::{HealthCheck, HealthCheckError, INTERVAL_RANGE, THRESHOLD_RANGE, TIMEOUT_RANGE};
pub use latency::{LATENCY_BUCKETS_SECONDS, LatencyHistogram, LatencySnapshot};
pub use probe::{NetworkProber, ProbeFuture, ProbeOutcome, Prober};
pub use state::{
    DESCRIPTION_FAILED, DESCRIPTION_REGISTERING, InstanceHealth, InstanceState, NOT_APPLICABLE,
    ReasonCode, Transition,
};
pub use target::{HealthTarget, MAX_TARGET_LEN, TargetError, TargetProtocol};
