//! Registered instances and their health: DescribeInstanceHealth's states, reason codes and
//! descriptions (ELB's texts where ELB has one), and the instance as a servo gets it.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Description of an instance that has not yet passed HealthyThreshold checks since it was
/// registered.
pub const DESCRIPTION_REGISTERING: &str = "Instance registration is still in progress.";
/// Description of an instance taken out of service by its health checks.
pub const DESCRIPTION_FAILED: &str =
    "Instance has failed at least the UnhealthyThreshold number of health checks consecutively.";
/// Description of an instance in a zone the load balancer does not route to.
pub const DESCRIPTION_ZONE_NOT_ENABLED: &str = "Instance is in the EC2 Availability Zone for which LoadBalancer is not configured to route traffic to.";
/// Description of a named instance that is not registered.
pub const DESCRIPTION_NOT_REGISTERED: &str =
    "Instance is not currently registered with the LoadBalancer.";
/// ReasonCode and Description of an instance in service.
pub const NOT_APPLICABLE: &str = "N/A";

/// DescribeInstanceHealth `State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Receives new connections.
    InService,
    /// Receives no new connections.
    OutOfService,
    /// Nobody can tell (control's to say, never a servo's).
    Unknown,
}

impl InstanceState {
    /// The name as ELB spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InService => "InService",
            Self::OutOfService => "OutOfService",
            Self::Unknown => "Unknown",
        }
    }

    /// The state of that name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::InService, Self::OutOfService, Self::Unknown]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DescribeInstanceHealth `ReasonCode`: who is responsible for the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    /// The load balancer (registration in progress, no node serving the zone...).
    #[serde(rename = "ELB")]
    Elb,
    /// The instance (failed health checks).
    Instance,
    /// Nothing to explain: the instance is in service.
    #[serde(rename = "N/A")]
    NotApplicable,
}

impl ReasonCode {
    /// The code as ELB spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elb => "ELB",
            Self::Instance => "Instance",
            Self::NotApplicable => NOT_APPLICABLE,
        }
    }

    /// The code of that spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Elb, Self::Instance, Self::NotApplicable]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What DescribeInstanceHealth says about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InstanceHealth {
    /// InService, OutOfService or Unknown.
    pub state: InstanceState,
    /// Who is responsible for `state`.
    pub reason_code: ReasonCode,
    /// ELB's explanation.
    pub description: String,
}

impl InstanceHealth {
    fn of(state: InstanceState, reason_code: ReasonCode, description: impl Into<String>) -> Self {
        Self {
            state,
            reason_code,
            description: description.into(),
        }
    }

    /// Registered, not yet through HealthyThreshold checks.
    pub fn registering() -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            DESCRIPTION_REGISTERING,
        )
    }

    /// In service.
    pub fn in_service() -> Self {
        Self::of(
            InstanceState::InService,
            ReasonCode::NotApplicable,
            NOT_APPLICABLE,
        )
    }

    /// Taken out of service by its health checks.
    pub fn failed() -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Instance,
            DESCRIPTION_FAILED,
        )
    }

    /// In a zone the load balancer does not route to.
    pub fn zone_not_enabled() -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            DESCRIPTION_ZONE_NOT_ENABLED,
        )
    }

    /// Named in DescribeInstanceHealth but not registered.
    pub fn not_registered() -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            DESCRIPTION_NOT_REGISTERED,
        )
    }

    /// The instance's zone has no live load balancer node (servo): nothing checks it and
    /// nothing in that zone forwards to it.
    pub fn no_live_servo(zone: &str) -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            format!(
                "No load balancer node is running in Availability Zone {zone}: the instance is not \
                 health-checked and gets no traffic through that zone until one is."
            ),
        )
    }

    /// The zone's live load balancer nodes have no room (capacity or a free address for the
    /// load balancer's ports) for this load balancer.
    pub fn unassigned(zone: &str) -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            format!(
                "No load balancer node in Availability Zone {zone} serves this load balancer: \
                 the live nodes there have no free address for its ports or are at capacity."
            ),
        )
    }

    /// The zone's load balancer node refused this load balancer's configuration.
    pub fn refused(servo: &str, zone: &str, reason: &str) -> Self {
        Self::of(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            format!(
                "Load balancer node {servo} in Availability Zone {zone} cannot serve this load \
                 balancer: {reason}"
            ),
        )
    }

    /// Whether new connections may go to the instance.
    pub fn is_in_service(&self) -> bool {
        self.state == InstanceState::InService
    }
}

/// An instance registered with a load balancer, as a servo gets it.
///
/// `HealthCheck` says who checks it: `true` (the default) this servo; `false` the servos of
/// its own zone, and `Health` is then the state they reported (control relays it). For an
/// instance this servo checks, `Health` is the state control holds (reported by the servo that
/// checked it before); a servo that takes the instance over starts from it (warm failover).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Instance {
    /// Instance id, e.g. `i-0123abcd`.
    pub instance_id: String,
    /// The instance's address.
    pub address: Ipv4Addr,
    /// Its availability zone (standalone servos may leave it out: every instance is local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whether this servo health-checks the instance.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub health_check: bool,
    /// The health control holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<InstanceHealth>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings() {
        assert_eq!(
            serde_json::to_value(InstanceHealth::in_service()).unwrap(),
            serde_json::json!({"State": "InService", "ReasonCode": "N/A", "Description": "N/A"})
        );
        assert_eq!(
            serde_json::to_value(InstanceHealth::registering()).unwrap()["ReasonCode"],
            "ELB"
        );
        for s in ["InService", "OutOfService", "Unknown"] {
            assert_eq!(InstanceState::parse(s).unwrap().as_str(), s);
        }
        for c in ["ELB", "Instance", "N/A"] {
            assert_eq!(ReasonCode::parse(c).unwrap().as_str(), c);
        }
        assert!(serde_json::from_str::<InstanceState>("\"Maybe\"").is_err());
        let i: Instance =
            serde_json::from_str(r#"{"InstanceId": "i-1", "Address": "198.19.0.1"}"#).unwrap();
        assert!(i.health_check && i.health.is_none() && i.zone.is_none());
        assert_eq!(
            serde_json::to_value(&i).unwrap(),
            serde_json::json!({"InstanceId": "i-1", "Address": "198.19.0.1"})
        );
        assert!(
            InstanceHealth::refused("s1", "z", "why")
                .description
                .ends_with(": why")
        );
    }
}
