//! `/metrics` in the Prometheus text format.

use std::fmt::Write as _;

use elb_common::Counters;
use elb_contract::{InstanceState, ReasonCode, wire::Refusal};
use serde::Serialize;

use super::sweep::SweepReport;
use crate::{dataplane::Maps, health::LatencySnapshot};

/// One listener as the agent reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ListenerView {
    /// Load balancer.
    pub load_balancer_name: String,
    /// `vip:port`.
    pub endpoint: String,
    /// Listener id in the dataplane.
    pub id: u32,
    /// Back-end port.
    pub instance_port: u16,
}

/// One backend as the agent reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct BackendView {
    /// Load balancer.
    pub load_balancer_name: String,
    /// Instance id.
    pub instance_id: String,
    /// Its listener's `vip:port`.
    pub listener: String,
    /// `ip:port`.
    pub backend: String,
    /// Backend id in the dataplane.
    pub id: u32,
    /// `active`, `draining` or `removed`.
    pub state: String,
}

/// One instance's health as the agent reports it (what DescribeInstanceHealth shows).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceView {
    /// Load balancer.
    pub load_balancer_name: String,
    /// Instance id.
    pub instance_id: String,
    /// InService or OutOfService.
    pub state: InstanceState,
    /// ELB, Instance or N/A.
    pub reason_code: ReasonCode,
    /// ELB's description text.
    pub description: String,
    /// Whether this servo probes it (false: state given by control).
    pub checked_here: bool,
}

impl InstanceView {
    /// The DescribeInstanceHealth triple.
    pub fn health(&self) -> elb_contract::InstanceHealth {
        elb_contract::InstanceHealth {
            state: self.state,
            reason_code: self.reason_code,
            description: self.description.clone(),
        }
    }
}

/// Everything `/status`, `/health` and `/metrics` show besides the live map counters.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusView {
    /// Listeners.
    pub listeners: Vec<ListenerView>,
    /// Backends.
    pub backends: Vec<BackendView>,
    /// Instances.
    pub instances: Vec<InstanceView>,
    /// Version of the configuration applied (increments on each change the agent applies).
    pub config_version: u64,
    /// The load balancers the servo refuses, with why.
    pub refused: Vec<Refusal>,
    /// The control version the configuration comes from (control mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_version: Option<u64>,
    /// The request ids that came with that version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(
    status: &StatusView,
    maps: &Maps,
    sweep: &SweepReport,
    latency: &LatencySnapshot,
) -> String {
    let mut out = String::with_capacity(8192);
    let counters = maps.counters().unwrap_or_default();

    out.push_str("# HELP elb_xdp_packets_total Packets by the XDP program's decision (see README, Counters).\n");
    out.push_str("# TYPE elb_xdp_packets_total counter\n");
    for ((name, value), help) in Counters::NAMES
        .iter()
        .zip(counters.values())
        .zip(Counters::HELP)
    {
        let _ = help;
        let _ = writeln!(out, "elb_xdp_packets_total{{decision=\"{name}\"}} {value}");
    }
    for (name, help, value) in [
        (
            "elb_snat_retries_total",
            "SNAT ports tried and found taken.",
            counters.snat_retries,
        ),
        (
            "elb_snat_failures_total",
            "New connections refused because no SNAT tuple was free.",
            counters.snat_failures,
        ),
        (
            "elb_new_flows_total",
            "Flows created by the XDP program.",
            counters.new_flows,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }

    let mut families: Vec<(&str, &str, &str, String)> = Vec::new();
    let mut add = |name: &'static str, kind: &'static str, help: &'static str, line: String| {
        families.push((name, kind, help, line));
    };
    for l in &status.listeners {
        let labels = format!(
            "load_balancer=\"{}\",listener=\"{}\"",
            esc(&l.load_balancer_name),
            l.endpoint
        );
        let s = maps.listener_stats(l.id).unwrap_or_default();
        add(
            "elb_listener_packets_total",
            "counter",
            "Packets through a listener.",
            format!("{{{labels},direction=\"in\"}} {}", s.packets_in),
        );
        add(
            "elb_listener_packets_total",
            "counter",
            "",
            format!("{{{labels},direction=\"out\"}} {}", s.packets_out),
        );
        add(
            "elb_listener_bytes_total",
            "counter",
            "IP bytes through a listener.",
            format!("{{{labels},direction=\"in\"}} {}", s.bytes_in),
        );
        add(
            "elb_listener_bytes_total",
            "counter",
            "",
            format!("{{{labels},direction=\"out\"}} {}", s.bytes_out),
        );
        add(
            "elb_listener_new_flows_total",
            "counter",
            "Connections accepted by a listener.",
            format!("{{{labels}}} {}", s.new_flows),
        );
        let active = sweep.active_by_listener.get(&l.id).copied().unwrap_or(0);
        add(
            "elb_listener_active_flows",
            "gauge",
            "Open connections of a listener (as of the last sweep).",
            format!("{{{labels}}} {active}"),
        );
    }
    for b in &status.backends {
        let labels = format!(
            "load_balancer=\"{}\",listener=\"{}\",instance=\"{}\",backend=\"{}\"",
            esc(&b.load_balancer_name),
            b.listener,
            esc(&b.instance_id),
            b.backend
        );
        let s = maps.backend_stats(b.id).unwrap_or_default();
        add(
            "elb_backend_packets_total",
            "counter",
            "Packets to and from a backend.",
            format!("{{{labels},direction=\"in\"}} {}", s.packets_in),
        );
        add(
            "elb_backend_packets_total",
            "counter",
            "",
            format!("{{{labels},direction=\"out\"}} {}", s.packets_out),
        );
        add(
            "elb_backend_bytes_total",
            "counter",
            "IP bytes to and from a backend.",
            format!("{{{labels},direction=\"in\"}} {}", s.bytes_in),
        );
        add(
            "elb_backend_bytes_total",
            "counter",
            "",
            format!("{{{labels},direction=\"out\"}} {}", s.bytes_out),
        );
        add(
            "elb_backend_new_flows_total",
            "counter",
            "Connections given to a backend.",
            format!("{{{labels}}} {}", s.new_flows),
        );
        let active = sweep.active_by_backend.get(&b.id).copied().unwrap_or(0);
        add(
            "elb_backend_active_flows",
            "gauge",
            "Open connections of a backend (as of the last sweep).",
            format!("{{{labels}}} {active}"),
        );
        add(
            "elb_backend_state",
            "gauge",
            "1 for the backend's state: active, draining or removed.",
            format!("{{{labels},state=\"{}\"}} 1", b.state),
        );
    }
    for i in &status.instances {
        let labels = format!(
            "load_balancer=\"{}\",instance=\"{}\",reason_code=\"{}\"",
            esc(&i.load_balancer_name),
            esc(&i.instance_id),
            i.reason_code
        );
        let v = u8::from(i.state == InstanceState::InService);
        add(
            "elb_instance_in_service",
            "gauge",
            "1 if the instance is InService, 0 if OutOfService.",
            format!("{{{labels}}} {v}"),
        );
    }
    for r in &status.refused {
        add(
            "elb_load_balancer_refused",
            "gauge",
            "1 for a load balancer the servo refuses (serving_previous: it keeps the last version it accepted).",
            format!(
                "{{load_balancer=\"{}\",serving_previous=\"{}\"}} 1",
                esc(&r.load_balancer_name),
                r.serving_previous
            ),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, kind, help, line) in &families {
        if seen.insert(*name) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        let _ = writeln!(out, "{name}{line}");
    }

    let _ = writeln!(
        out,
        "# HELP elb_conntrack_entries Conntrack entries (two per flow) at the last sweep.\n# TYPE elb_conntrack_entries gauge\nelb_conntrack_entries {}",
        sweep.entries
    );
    let _ = writeln!(
        out,
        "# HELP elb_sweep_duration_seconds Duration of the last flow sweep.\n# TYPE elb_sweep_duration_seconds gauge\nelb_sweep_duration_seconds {:.6}",
        sweep.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP elb_config_version Configuration version applied.\n# TYPE elb_config_version gauge\nelb_config_version {}",
        status.config_version
    );
    out.push_str(&latency.render_prometheus(
        "elb_health_check_latency_seconds",
        "Latency of health-check probes (connect, TLS handshake, HTTP status line).",
    ));
    out
}
