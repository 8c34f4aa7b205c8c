//! ELB health checks: the threshold state machine, probes and the scheduler. The settings
//! and targets they run ([`elb_contract::HealthCheck`], [`elb_contract::HealthTarget`]) and
//! the states they report are the contract's.
//!
//! - [`InstanceHealth`] counts consecutive passes and failures into InService/OutOfService with
//!   ELB's ReasonCode and Description.
//! - [`NetworkProber`] runs one probe; [`HealthChecker`] schedules probes for thousands of
//!   instances and sends each [`HealthEvent`] once.

mod checker;
mod latency;
mod probe;
mod state;
#[cfg(test)]
mod test_support;

pub use checker::{CheckerError, HealthChecker, HealthCheckerOptions, HealthEvent};
pub use latency::{LATENCY_BUCKETS_SECONDS, LatencyHistogram, LatencySnapshot};
pub use probe::{NetworkProber, ProbeFuture, ProbeOutcome, Prober};
pub use state::{InstanceHealth, Transition};
