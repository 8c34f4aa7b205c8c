//! The contract between the control service and its servos, as `elb-common` is the contract
//! between the XDP program and userspace.
//!
//! - The ELB model's vocabulary and rules: [`Protocol`] and listener pairing ([`Listener`]),
//!   the health check with its ranges and default ([`HealthCheck`], [`HealthTarget`]), the
//!   attributes servos act on with their ranges ([`Attributes`]), instance states with ELB's
//!   reason codes and descriptions ([`InstanceHealth`]), the policy types ([`policy`]), the
//!   zone rule ([`zone`]), security groups and the allow lists they make
//!   ([`security_group`]), and access logging ([`AccessLog`]).
//! - The servo protocol's wire types ([`wire`]) and the load balancer a servo serves
//!   ([`LoadBalancer`]), with the one per-load-balancer check both sides run:
//!   [`LoadBalancer::validate`], which returns every [`Problem`] with the field that has it.
//!
//! Control maps problems to ELB error codes; servos refuse a load balancer that has any and
//! report why. Nothing here does I/O: the crate depends on serde and thiserror only.

mod access_log;
mod attributes;
mod health_check;
mod instance;
mod listener;
mod load_balancer;
pub mod policy;
mod problem;
mod protocol;
pub mod security_group;
mod serving;
pub mod ssl_policy;
mod target;
pub mod wire;
pub mod zone;

pub use access_log::{
    AccessLog, DEFAULT_EMIT_INTERVAL, EMIT_INTERVALS, MAX_PREFIX_LEN, bucket_name_ok,
};
pub use attributes::{
    Attributes, ConnectionDraining, ConnectionSettings, CrossZone, DEFAULT_DRAINING_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DRAINING_TIMEOUT_RANGE, IDLE_TIMEOUT_RANGE,
};
pub use health_check::{HealthCheck, INTERVAL_RANGE, THRESHOLD_RANGE, TIMEOUT_RANGE};
pub use instance::{
    DESCRIPTION_FAILED, DESCRIPTION_NOT_REGISTERED, DESCRIPTION_REGISTERING,
    DESCRIPTION_ZONE_NOT_ENABLED, Instance, InstanceHealth, InstanceState, NOT_APPLICABLE,
    ReasonCode,
};
pub use listener::{Listener, listeners_problems};
pub use load_balancer::{LoadBalancer, MAX_SERVO_NAME_LEN, name_ok};
pub use problem::{Problem, ProblemKind, Problems, free_text_ok, printable};
pub use protocol::{Protocol, UnknownProtocol};
pub use serving::{
    BackendServerPolicies, ListenerPolicies, ServerCertificate, Stickiness, base64_decode,
};
pub use target::{HealthTarget, MAX_TARGET_LEN, TargetError};
