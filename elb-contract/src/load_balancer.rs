//! One load balancer as a servo serves it, and [`LoadBalancer::validate`]: the rules of the
//! ELB model over it, the one check control runs before it accepts a change or sends a
//! document and servos run on every load balancer they get (from control or from a file).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::security_group::{self, Ipv4Cidr, SecurityGroup};
use crate::serving::{BackendServerPolicies, ListenerPolicies, ServerCertificate};
use crate::{
    AccessLog, Attributes, HealthCheck, Instance, Listener, Problem, Problems, listeners_problems,
};

/// Longest load balancer name on a servo. Control names them `<name>-<account id>` (46
/// characters at most), which keeps names of different accounts apart on one servo.
pub const MAX_SERVO_NAME_LEN: usize = 64;

/// ELB's name grammar: 1 to `max_len` letters, digits and hyphens, not starting or ending with
/// a hyphen.
pub fn name_ok(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A load balancer as a servo serves it.
///
/// The members use the ELB API's names: the same shape arrives as JSON from control and as
/// TOML from a standalone servo's file. `Instances`, `HealthCheck` and `Attributes` may be left
/// out of a file (ELB's defaults); control always writes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// The name, unique on a servo.
    pub load_balancer_name: String,
    /// The addresses the servo serves it on (addresses of the servo host).
    pub vips: Vec<Ipv4Addr>,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Registered instances.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// The health check (default: ELB's `TCP:<first InstancePort>`, 30, 5, 2, 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Attributes.
    #[serde(default)]
    pub attributes: Attributes,
    /// The policies in effect (those the listeners and back-end ports name, and the
    /// public-key policies those name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// Policies of listeners, by LoadBalancerPort.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_policies: Vec<ListenerPolicies>,
    /// Policies of back-end ports, by InstancePort.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_server_policies: Vec<BackendServerPolicies>,
    /// Certificates (with keys) of the HTTPS/SSL listeners, for the servos that serve them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<ServerCertificate>,
    /// The security groups whose ingress rules say who may connect; absent: everyone
    /// ([`security_group`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<SecurityGroup>>,
    /// The AccessLog attribute, present while access logs are enabled (left out otherwise, so
    /// that servos without access logs read documents as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

impl LoadBalancer {
    /// The health check in effect.
    pub fn health_check(&self) -> HealthCheck {
        self.health_check.clone().unwrap_or_else(|| {
            let port = self.listeners.first().map_or(80, |l| l.instance_port);
            HealthCheck::default_for_port(NonZeroU16::new(port).unwrap_or(NonZeroU16::MIN))
        })
    }

    /// Who may open connections to the listener on `port`: `None` for everyone (no security
    /// groups), otherwise the source blocks its groups admit ([`security_group::allowed_sources`]).
    pub fn allowed_sources(&self, port: u16) -> Option<Vec<Ipv4Cidr>> {
        security_group::allowed_sources(self.security_groups.as_deref(), port)
    }

    /// Every rule of the ELB model this load balancer breaks, each with its field:
    /// the name, the listeners (ports, protocol pairing, certificates, one per port, back-end
    /// security per instance port), the health check (target, ranges, Timeout < Interval), the
    /// attributes' ranges, the policies ([`LoadBalancer::policy_problems`]), the security groups
    /// (ids, rules, limits), access logging (the attribute's rules; every listener logs: the
    /// engine's per request, the XDP program's per connection from its flow events), and the
    /// instances (ids present and unique; the
    /// state of every instance the servo does not check itself).
    pub fn validate(&self) -> Result<(), Problems> {
        let mut out = Vec::new();
        if !name_ok(&self.load_balancer_name, MAX_SERVO_NAME_LEN) {
            out.push(Problem::invalid(
                "LoadBalancerName",
                format!(
                    "'{}' must have 1 to {MAX_SERVO_NAME_LEN} letters, digits and hyphens, not \
                     starting or ending with a hyphen",
                    crate::printable(&self.load_balancer_name)
                ),
            ));
        }
        out.extend(listeners_problems(&self.listeners));
        out.extend(self.policy_problems());
        out.extend(self.health_check().problems());
        out.extend(self.attributes.problems());
        if let Some(groups) = &self.security_groups {
            out.extend(security_group::groups_problems(groups));
        }
        if let Some(log) = &self.access_log {
            out.extend(log.problems());
        }
        let mut ids = BTreeSet::new();
        for (n, i) in self.instances.iter().enumerate() {
            let at = format!("Instances[{n}]");
            if i.instance_id.is_empty() {
                out.push(Problem::invalid(
                    format!("{at}.InstanceId"),
                    "InstanceId cannot be empty",
                ));
            } else if !ids.insert(i.instance_id.as_str()) {
                out.push(Problem::invalid(
                    format!("{at}.InstanceId"),
                    format!("instance {} is registered twice", i.instance_id),
                ));
            }
            if !i.health_check && i.health.is_none() {
                out.push(Problem::invalid(
                    format!("{at}.Health"),
                    format!(
                        "instance {} is checked elsewhere (HealthCheck false) and needs the Health \
                         its own zone reported",
                        i.instance_id
                    ),
                ));
            }
        }
        Problems(out).into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceHealth, ProblemKind};

    fn web() -> LoadBalancer {
        serde_json::from_value(serde_json::json!({
            "LoadBalancerName": "web-123456789012",
            "Vips": ["198.18.0.1"],
            "Listeners": [{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
            "Instances": [
                {"InstanceId": "i-1", "Address": "198.19.0.11", "Zone": "a"},
                {"InstanceId": "i-2", "Address": "198.19.0.12", "Zone": "b", "HealthCheck": false,
                 "Health": {"State": "InService", "ReasonCode": "N/A", "Description": "N/A"}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_a_valid_load_balancer() {
        let lb = web();
        assert!(lb.validate().is_ok());
        assert_eq!(lb.health_check().target.to_string(), "TCP:8080");
        assert_eq!(lb.attributes, Attributes::default());
        assert_eq!(lb.instances[1].health, Some(InstanceHealth::in_service()));
    }

    #[test]
    fn every_problem_is_named() {
        let mut lb = web();
        lb.load_balancer_name = "-bad".into();
        lb.listeners.push(lb.listeners[0].clone());
        lb.listeners[0].instance_protocol = crate::Protocol::Tcp;
        lb.attributes.connection_settings.idle_timeout = 0;
        lb.health_check = Some(HealthCheck {
            timeout: 30,
            ..lb.health_check()
        });
        lb.instances[1].health = None;
        lb.instances.push(lb.instances[0].clone());
        let err = lb.validate().unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "LoadBalancerName",
                "Listeners[0].InstanceProtocol",
                "Listeners[1].LoadBalancerPort",
                "HealthCheck.Timeout",
                "Attributes.ConnectionSettings.IdleTimeout",
                "Instances[1].Health",
                "Instances[2].InstanceId",
            ],
            "{err}"
        );
        assert_eq!(err.0[2].kind, ProblemKind::DuplicateListener);
    }

    #[test]
    fn access_logs_on_any_listener() {
        let mut lb = web();
        lb.access_log = Some(
            serde_json::from_value(serde_json::json!({
                "S3BucketName": "logs", "EmitInterval": 5, "AccountId": "123456789012"
            }))
            .unwrap(),
        );
        // XDP listeners log from the dataplane's flow events, the engine's per request.
        assert!(lb.validate().is_ok());
        lb.listeners[0].instance_protocol = crate::Protocol::Https;
        assert!(lb.validate().is_ok());
        let v = serde_json::to_value(&lb).unwrap();
        assert_eq!(v["AccessLog"]["S3BucketName"], "logs");
        lb.access_log.as_mut().unwrap().emit_interval = 10;
        assert_eq!(
            lb.validate().unwrap_err().0[0].field,
            "Attributes.AccessLog.EmitInterval"
        );
        lb.access_log = None;
        assert!(
            serde_json::to_value(&lb)
                .unwrap()
                .get("AccessLog")
                .is_none()
        );
    }

    #[test]
    fn names() {
        assert!(name_ok("web-1", 32) && name_ok(&"x".repeat(32), 32));
        for bad in ["", "-a", "a-", "a_b", "a.b"] {
            assert!(!name_ok(bad, 32), "{bad}");
        }
        assert!(!name_ok(&"x".repeat(33), 32));
    }

    #[test]
    fn unknown_members_are_refused() {
        let mut v = serde_json::to_value(web()).unwrap();
        v["Weight"] = 3.into();
        assert!(serde_json::from_value::<LoadBalancer>(v).is_err());
    }
}
