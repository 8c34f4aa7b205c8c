//! The servo protocol's messages (HTTP + JSON under `/servo/v1/`, `Authorization: Bearer
//! <ServoId>:<Secret>`):
//!
//! | Request | Body | Answer |
//! |---|---|---|
//! | `POST register` | [`Registration`] | [`HeartbeatReply`] |
//! | `POST heartbeat` | [`Heartbeat`] | [`HeartbeatReply`] |
//! | `GET config?since=V&wait=S` | | [`ConfigDocument`] |
//! | `POST health` | [`HealthReport`] | [`Accepted`] |
//! | `POST refusals` | [`RefusalReport`] | [`Accepted`] |
//!
//! Errors are [`ErrorBody`]. Optional members are left out, never `null`. Members a side does
//! not know are ignored in these messages (a newer servo still registers with an older
//! control, and the other way round); what describes a load balancer is read strictly, one
//! load balancer at a time (one a servo cannot read is refused alone).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{InstanceState, LoadBalancer, ReasonCode};

/// `POST register`: the servo's zone and what it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    /// Must be the authenticated servo.
    pub servo_id: String,
    /// Must be the zone the servo was created in.
    pub zone: String,
    /// Addresses it can serve internet-facing load balancers on.
    #[serde(default)]
    pub public_addresses: Vec<Ipv4Addr>,
    /// Addresses it can serve internal load balancers on.
    #[serde(default)]
    pub private_addresses: Vec<Ipv4Addr>,
    /// Most load balancers it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// `POST heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Heartbeat {
    /// Must be the authenticated servo.
    pub servo_id: String,
    /// Dataplane counters (name -> number), shown by `elb-control admin servo list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<BTreeMap<String, f64>>,
}

/// The answer to a registration or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HeartbeatReply {
    /// Seconds between heartbeats.
    pub heartbeat_interval: u64,
}

/// `GET config`: the load balancers assigned to the servo.
///
/// Generic over how a load balancer is held, so that a servo can read each one on its own
/// (`ConfigDocument<serde_json::Value>`): one it cannot decode, say a value a newer control
/// sends, is refused alone instead of costing the whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigDocument<L = LoadBalancer> {
    /// Configuration version (grows with every committed change anywhere).
    pub version: u64,
    /// The load balancers, by name.
    pub load_balancers: Vec<L>,
    /// Request ids of the API calls since the version the servo had.
    pub request_ids: Vec<String>,
    /// Seconds between heartbeats.
    pub heartbeat_interval: u64,
}

/// One instance's health in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceReport {
    /// The load balancer's name on the servo.
    pub load_balancer_name: String,
    /// The instance.
    pub instance_id: String,
    /// InService or OutOfService (Unknown is control's to say, and refused).
    pub state: InstanceState,
    /// Defaults from the state when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
    /// Defaults from the state when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `POST health`: health of instances of the servo's zone (changes, and everything every
/// 30 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthReport {
    /// Must be the authenticated servo.
    pub servo_id: String,
    /// The entries.
    #[serde(default)]
    pub instances: Vec<InstanceReport>,
}

/// A load balancer the servo does not serve as control sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Refusal {
    /// The load balancer's name on the servo.
    pub load_balancer_name: String,
    /// Why, in a sentence (the rule or the servo limit it breaks).
    pub reason: String,
    /// Whether the servo keeps serving the last configuration of it that it accepted.
    #[serde(default)]
    pub serving_previous: bool,
}

/// `POST refusals`: every load balancer the servo refuses now (an empty list clears them),
/// sent when the set changes and after each registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RefusalReport {
    /// Must be the authenticated servo.
    pub servo_id: String,
    /// The configuration version the refusals are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The request ids that came with that version.
    #[serde(default)]
    pub request_ids: Vec<String>,
    /// The refusals.
    #[serde(default)]
    pub load_balancers: Vec<Refusal>,
}

/// The answer to a report: entries stored, and entries skipped (instances or load balancers
/// no longer assigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Accepted {
    /// Entries stored.
    pub accepted: usize,
    /// Entries skipped.
    pub ignored: usize,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_per_load_balancer() {
        let text = r#"{"Version": 3, "LoadBalancers": [{"LoadBalancerName": "a"}, 7],
                       "RequestIds": ["r"], "HeartbeatInterval": 2}"#;
        let raw: ConfigDocument<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert_eq!(raw.load_balancers.len(), 2);
        assert!(serde_json::from_str::<ConfigDocument>(text).is_err());
        let report = RefusalReport {
            servo_id: "s".into(),
            version: None,
            request_ids: vec![],
            load_balancers: vec![],
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({"ServoId": "s", "RequestIds": [], "LoadBalancers": []})
        );
    }
}
