//! The servo protocol's messages (HTTP + JSON under `/servo/v1/`, `Authorization: Bearer
//! <ServoId>:<Secret>`):
//!
//! | Request | Body | Answer |
//! |---|---|---|
//! | `POST register` | [`Registration`] | [`HeartbeatReply`] |
//! | `POST heartbeat` | [`Heartbeat`] (with [`LoadBalancerMetrics`]) | [`HeartbeatReply`] |
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

use crate::{InstanceState, LoadBalancer, Protocol, ReasonCode};

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
    /// What the servo saw of each load balancer it serves (a control that does not know the
    /// member ignores it; a servo that does not send it reports nothing per load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<LoadBalancerMetrics>>,
}

/// What a servo saw of one load balancer, sent with every heartbeat.
///
/// Counters are cumulative since `Since` (the servo's agent started counting then; a new
/// `Since` means they started again from zero). Gauges are values now. A member left out was
/// not measured (HTTP codes of TCP listeners, latency of the XDP path...), which is not the
/// same as zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancerMetrics {
    /// The load balancer's name on the servo.
    pub load_balancer_name: String,
    /// Milliseconds since the Unix epoch when the counters started.
    pub since: u64,
    /// Instances this servo checks that are InService (gauge).
    pub healthy_host_count: u64,
    /// Instances this servo checks that are OutOfService (gauge).
    pub un_healthy_host_count: u64,
    /// Per listener.
    #[serde(default)]
    pub listeners: Vec<ListenerMetrics>,
}

/// What a servo saw of one listener (see [`LoadBalancerMetrics`]). Names are AWS/ELB's where
/// AWS has one; `NewConnectionCount`, `ActiveConnectionCount`, `ProcessedBytes` and
/// `ProcessedPackets` are this service's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListenerMetrics {
    /// Front-end protocol.
    pub protocol: Option<Protocol>,
    /// Front-end port.
    pub load_balancer_port: u16,
    /// Client connections accepted (counter).
    pub new_connection_count: u64,
    /// Requests (HTTP/HTTPS) or connections (TCP/SSL) sent to instances (counter).
    pub request_count: u64,
    /// Bytes both ways on the client side (counter; IP bytes on the XDP path).
    pub processed_bytes: u64,
    /// Packets both ways (counter; the XDP path only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_packets: Option<u64>,
    /// Connections to instances that failed (counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_connection_errors: Option<u64>,
    /// Requests or connections refused because the surge queue was full (counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spillover_count: Option<u64>,
    /// Responses the load balancer itself gave with a 4XX / 5XX code (counters).
    #[serde(
        rename = "HTTPCode_ELB_4XX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_code_elb_4xx: Option<u64>,
    /// See `HTTPCode_ELB_4XX`.
    #[serde(
        rename = "HTTPCode_ELB_5XX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_code_elb_5xx: Option<u64>,
    /// Instance responses by class (counters).
    #[serde(
        rename = "HTTPCode_Backend_2XX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_code_backend_2xx: Option<u64>,
    /// See `HTTPCode_Backend_2XX`.
    #[serde(
        rename = "HTTPCode_Backend_3XX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_code_backend_3xx: Option<u64>,
    /// See `HTTPCode_Backend_2XX`.
    #[serde(
        rename = "HTTPCode_Backend_4XX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_code_backend_4xx: Option<u64>,
    /// See `HTTPCode_Backend_2XX`.
    #[serde(
        rename = "HTTPCode_Backend_5XX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_code_backend_5xx: Option<u64>,
    /// Sum of AWS's Latency over the requests (HTTP: request sent to response headers; TCP/SSL:
    /// connection to the instance established), in seconds (counter), and how many were timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_sum: Option<f64>,
    /// See `LatencySum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_count: Option<u64>,
    /// Client connections open now (gauge).
    pub active_connection_count: u64,
    /// Requests or connections waiting for a connection to an instance now (gauge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_queue_length: Option<u64>,
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
    fn metrics_use_aws_names_and_leave_out_what_was_not_measured() {
        let m = LoadBalancerMetrics {
            load_balancer_name: "web-123456789012".into(),
            since: 1_700_000_000_000,
            healthy_host_count: 2,
            un_healthy_host_count: 0,
            listeners: vec![ListenerMetrics {
                protocol: Some(Protocol::Https),
                load_balancer_port: 443,
                new_connection_count: 3,
                request_count: 9,
                processed_bytes: 4096,
                http_code_elb_5xx: Some(1),
                http_code_backend_2xx: Some(8),
                latency_sum: Some(0.25),
                latency_count: Some(8),
                active_connection_count: 1,
                ..ListenerMetrics::default()
            }],
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v["Listeners"][0],
            serde_json::json!({"Protocol": "HTTPS", "LoadBalancerPort": 443,
                "NewConnectionCount": 3, "RequestCount": 9, "ProcessedBytes": 4096,
                "HTTPCode_ELB_5XX": 1, "HTTPCode_Backend_2XX": 8, "LatencySum": 0.25,
                "LatencyCount": 8, "ActiveConnectionCount": 1})
        );
        assert_eq!(v["HealthyHostCount"], 2);
        assert_eq!(serde_json::from_value::<LoadBalancerMetrics>(v).unwrap(), m);
    }

    #[test]
    fn a_document_reads_per_load_balancer() {
        let text = r#"{"Version": 3, "LoadBalancers": [{"LoadBalancerName": "a"}, 7],
                       "RequestIds": ["r"], "HeartbeatInterval": 2}"#;
        let raw: ConfigDocument<serde_json::Value> = serde_json::from_str(text).unwrap();
        let beat: Heartbeat = serde_json::from_str(r#"{"ServoId": "s", "Newer": 1}"#).unwrap();
        assert_eq!(beat.metrics, None);
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
