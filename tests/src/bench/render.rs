//! The markdown summary and the SVG charts, from the results.

use std::{fmt::Write as _, path::Path};

use plotters::prelude::*;

use super::report::Results;

/// A target from the benchmark issue: the key, how it compares, and the bound.
struct Target {
    key: &'static str,
    what: &'static str,
    at_most: Option<f64>,
    at_least: Option<f64>,
}

const TARGETS: &[Target] = &[
    Target {
        key: "per_packet.established_ratio",
        what: "established vs floor",
        at_most: Some(2.5),
        at_least: None,
    },
    Target {
        key: "per_packet.reply_ratio",
        what: "reply vs floor",
        at_most: Some(2.5),
        at_least: None,
    },
    Target {
        key: "per_packet.proxy_established_vs_established",
        what: "PROXY protocol flow, established, vs plain established",
        at_most: Some(1.2),
        at_least: None,
    },
    Target {
        key: "per_packet.new_flow_ratio",
        what: "new flow vs floor",
        at_most: Some(10.0),
        at_least: None,
    },
    Target {
        key: "mpps.established_vs_floor",
        what: "established packet rate vs floor",
        at_most: None,
        at_least: Some(0.8),
    },
    Target {
        key: "flood.established_survived",
        what: "established connections surviving a SYN flood (fraction)",
        at_most: None,
        at_least: Some(1.0),
    },
    Target {
        key: "flood.legit_success",
        what: "new connections served during a SYN flood (fraction)",
        at_most: None,
        at_least: Some(0.99),
    },
    Target {
        key: "ratios.cps_vs_haproxy",
        what: "connections/s vs HAProxy",
        at_most: None,
        at_least: Some(2.5),
    },
    Target {
        key: "ratios.cpu_vs_haproxy",
        what: "CPU per connection vs HAProxy",
        at_most: Some(0.4),
        at_least: None,
    },
    Target {
        key: "ratios.cps_vs_nftables",
        what: "connections/s vs nftables",
        at_most: None,
        at_least: Some(1.15),
    },
    Target {
        key: "ratios.cpu_vs_nftables",
        what: "CPU per connection vs nftables",
        at_most: Some(0.85),
        at_least: None,
    },
    Target {
        key: "ratios.rps_vs_nftables",
        what: "keep-alive requests/s vs nftables",
        at_most: None,
        at_least: Some(1.0),
    },
    Target {
        key: "scale.established_1m_ratio",
        what: "established cost, 1M flows vs empty",
        at_most: Some(1.25),
        at_least: None,
    },
    Target {
        key: "scale.apply_10k_backends_ms",
        what: "apply 1,000 listeners / 10,000 backends (ms)",
        at_most: Some(1000.0),
        at_least: None,
    },
    Target {
        key: "control.propagation_ms",
        what: "API call to dataplane (ms)",
        at_most: Some(100.0),
        at_least: None,
    },
    Target {
        key: "tls.handshakes_vs_haproxy",
        what: "TLS handshakes/s vs HAProxy",
        at_most: None,
        at_least: Some(1.0),
    },
    Target {
        key: "tls.requests_vs_haproxy",
        what: "HTTPS keep-alive requests/s vs HAProxy",
        at_most: None,
        at_least: Some(1.0),
    },
];

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

/// The markdown summary.
pub fn summary(r: &Results, machine: &str, mode: &str) -> String {
    let mut out = String::new();
    let g = |k: &str| r.get(k);
    let _ = writeln!(out, "# Benchmark results ({mode})\n\n{machine}\n");
    let _ = writeln!(
        out,
        "## Targets\n\n| Measure | Value | Target | Met | Off by |\n|---|---|---|---|---|"
    );
    for t in TARGETS {
        let v = g(t.key);
        let (target, met, bound) = match (t.at_most, t.at_least, v) {
            (Some(m), _, Some(v)) => (format!("<= {m}"), v <= m, m),
            (_, Some(m), Some(v)) => (format!(">= {m}"), v >= m, m),
            (Some(m), _, None) => (format!("<= {m}"), false, m),
            (_, Some(m), None) => (format!(">= {m}"), false, m),
            _ => (String::new(), false, f64::NAN),
        };
        // How far from the target, as a factor.
        let gap = match v {
            Some(v) if !met && t.at_most.is_some() => format!("{:.2}x over", v / bound),
            Some(v) if !met => format!("{:.2}x short", bound / v),
            _ => String::new(),
        };
        let verdict = if v.is_none() {
            "not measured"
        } else if met {
            "yes"
        } else {
            "**no**"
        };
        let _ = writeln!(
            out,
            "| {} (`{}`) | {} | {target} | {verdict} | {gap} |",
            t.what,
            t.key,
            fmt(v)
        );
    }
    let _ = writeln!(
        out,
        "\n## Per-packet cost (BPF_PROG_TEST_RUN, median ns)\n\n| floor | established | reply | new flow |\n|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| {} | {} ({}x) | {} ({}x) | {} ({}x) |",
        fmt(g("per_packet.floor_ns")),
        fmt(g("per_packet.established_ns")),
        fmt(g("per_packet.established_ratio")),
        fmt(g("per_packet.reply_ns")),
        fmt(g("per_packet.reply_ratio")),
        fmt(g("per_packet.new_flow_ns")),
        fmt(g("per_packet.new_flow_ratio")),
    );
    let _ = writeln!(
        out,
        "\nSecurity groups: a new flow with the check {} ns against {} ns without (median of the rounds' differences {} ns: below what a new flow varies between rounds); a SYN the allow list refuses: {} ns.",
        fmt(g("per_packet.new_flow_sg_ns")),
        fmt(g("per_packet.new_flow_ns")),
        fmt(g("per_packet.sg_check_ns")),
        fmt(g("per_packet.syn_sg_denied_ns")),
    );
    let _ = writeln!(
        out,
        "\nWhat a new flow cannot avoid: the floor plus one read of the slot its SYN hashes to, in a table of the flow table's size that no packet writes, {} ns ({}x the floor); a new flow is {}x that ({}x for XDP_TX).",
        fmt(g("per_packet.floor_cold_read_ns")),
        fmt(g("per_packet.floor_cold_read_ratio")),
        fmt(g("per_packet.new_flow_vs_cold_read")),
        fmt(g("per_packet.new_flow_tx_vs_cold_read")),
    );
    let _ = writeln!(
        out,
        "\nNew flows on two CPUs at once (half the flows each, one listener): {} ns per flow on each CPU, {}x a new flow on one CPU.",
        fmt(g("per_packet.new_flow_2cpu_ns")),
        fmt(g("per_packet.new_flow_2cpu_vs_new_flow")),
    );
    let _ = writeln!(
        out,
        "\n## Packet rate through a servo (Mpps)\n\n| floor (XDP_TX) | floor redirected | established flow | SYN flood (new flows) |\n|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} |",
        fmt(g("mpps.floor")),
        fmt(g("mpps.floor_redirect")),
        fmt(g("mpps.xdp_established")),
        fmt(g("mpps.xdp_syn"))
    );
    let _ = writeln!(
        out,
        "\nAn established flow is forwarded out of the other interface: {}x the XDP_TX floor, {}x the floor redirected the same way.",
        fmt(g("mpps.established_vs_floor")),
        fmt(g("mpps.established_vs_floor_redirect")),
    );
    let _ = writeln!(
        out,
        "\n## End to end (3 nginx backends, wrk from a client namespace; medians of {} round(s))\n\n| balancer | conn/s (slowest-fastest round) | CPU s / 10k conn | keep-alive req/s | p50 ms | p99 ms | Gbit/s |\n|---|---|---|---|---|---|---|",
        g("e2e.rounds").map_or(1, |v| v as usize),
    );
    for lb in ["xdp", "haproxy", "nftables"] {
        let k = |m: &str| g(&format!("e2e.{lb}.{m}"));
        let _ = writeln!(
            out,
            "| {lb} | {} ({}-{}) | {} | {} | {} | {} | {} |",
            fmt(k("cps")),
            fmt(k("cps_min").or(k("cps"))),
            fmt(k("cps_max").or(k("cps"))),
            fmt(k("cpu_s_per_10k_conn")),
            fmt(k("rps")),
            fmt(k("p50_ms")),
            fmt(k("p99_ms")),
            fmt(k("gbps"))
        );
    }
    let _ = writeln!(
        out,
        "\nRatios (same run; the median of the rounds' ratios): conn/s {}x HAProxy, {}x nftables; CPU per connection {}x HAProxy, {}x nftables; keep-alive req/s {}x nftables.",
        fmt(g("ratios.cps_vs_haproxy")),
        fmt(g("ratios.cps_vs_nftables")),
        fmt(g("ratios.cpu_vs_haproxy")),
        fmt(g("ratios.cpu_vs_nftables")),
        fmt(g("ratios.rps_vs_nftables")),
    );
    let _ = writeln!(
        out,
        "\n## TLS termination (elb-engine vs HAProxy, RSA-2048, TLS 1.2)\n\n| terminator | full handshakes/s | keep-alive requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|"
    );
    for (name, prefix) in [("elb-engine", "tls."), ("HAProxy", "tls.haproxy_")] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            fmt(g(&format!("{prefix}handshakes_per_s"))),
            fmt(g(&format!("{prefix}requests_per_s"))),
            fmt(g(&format!("{prefix}p50_ms"))),
            fmt(g(&format!("{prefix}p99_ms"))),
        );
    }
    let _ = writeln!(out, "\n## Scale\n\n| measure | value |\n|---|---|");
    for (k, label) in [
        (
            "scale.conntrack_1m_bytes",
            "conntrack memory for 1M flows (bytes)",
        ),
        (
            "scale.established_empty_ns",
            "established cost, empty table (ns)",
        ),
        ("scale.established_1m_ns", "established cost, 1M flows (ns)"),
        ("scale.sweep_1m_ms", "idle sweep of 1M flows (ms)"),
        (
            "scale.apply_10k_backends_ms",
            "apply 1,000 listeners / 10,000 backends (ms)",
        ),
        ("scale.reapply_unchanged_ms", "re-apply unchanged (ms)"),
        ("scale.maps_bytes_without_conntrack", "other maps (bytes)"),
        ("control.create_p50_ms", "CreateLoadBalancer p50 (ms)"),
        ("control.create_p99_ms", "CreateLoadBalancer p99 (ms)"),
        ("control.describe_p50_ms", "DescribeLoadBalancers p50 (ms)"),
        ("control.describe_p99_ms", "DescribeLoadBalancers p99 (ms)"),
        (
            "control.propagation_ms",
            "API call to dataplane, median (ms)",
        ),
    ] {
        let _ = writeln!(out, "| {label} | {} |", fmt(g(k)));
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for (section, note) in &r.notes {
            let _ = writeln!(out, "- **{section}**: {note}");
        }
    }
    out
}

fn bars(path: &Path, title: &str, unit: &str, items: &[(String, f64)]) -> anyhow::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (720, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = items
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let labels: Vec<String> = items.iter().map(|(l, _)| l.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0u32..items.len() as u32).into_segmented(), 0.0..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(RGBColor(52, 101, 164).filled())
            .margin(24)
            .data(items.iter().enumerate().map(|(i, (_, v))| (i as u32, *v))),
    )?;
    chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!("{v:.1}"),
            (SegmentValue::CenterOf(i as u32), *v + max * 0.02),
            ("sans-serif", 14),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Writes the charts next to the JSON.
pub fn charts(r: &Results, dir: &Path) -> anyhow::Result<()> {
    let pick = |pairs: &[(&str, &str)]| -> Vec<(String, f64)> {
        pairs
            .iter()
            .filter_map(|(label, key)| r.get(key).map(|v| (label.to_string(), v)))
            .collect()
    };
    bars(
        &dir.join("per_packet.svg"),
        "Per-packet cost (BPF_PROG_TEST_RUN, median)",
        "ns per packet",
        &pick(&[
            ("floor", "per_packet.floor_ns"),
            ("established", "per_packet.established_ns"),
            ("reply", "per_packet.reply_ns"),
            ("new flow", "per_packet.new_flow_ns"),
        ]),
    )?;
    bars(
        &dir.join("mpps.svg"),
        "Packet rate through a servo",
        "Mpps",
        &pick(&[
            ("floor", "mpps.floor"),
            ("established", "mpps.xdp_established"),
            ("SYN flood", "mpps.xdp_syn"),
        ]),
    )?;
    bars(
        &dir.join("e2e_cps.svg"),
        "New connections per second (wrk, Connection: close)",
        "connections/s",
        &pick(&[
            ("XDP (ours)", "e2e.xdp.cps"),
            ("HAProxy", "e2e.haproxy.cps"),
            ("nftables", "e2e.nftables.cps"),
        ]),
    )?;
    bars(
        &dir.join("e2e_cpu.svg"),
        "Whole-machine CPU per 10,000 connections",
        "CPU seconds",
        &pick(&[
            ("XDP (ours)", "e2e.xdp.cpu_s_per_10k_conn"),
            ("HAProxy", "e2e.haproxy.cpu_s_per_10k_conn"),
            ("nftables", "e2e.nftables.cpu_s_per_10k_conn"),
        ]),
    )?;
    bars(
        &dir.join("e2e_rps.svg"),
        "Keep-alive requests per second",
        "requests/s",
        &pick(&[
            ("XDP (ours)", "e2e.xdp.rps"),
            ("HAProxy", "e2e.haproxy.rps"),
            ("nftables", "e2e.nftables.rps"),
        ]),
    )?;
    Ok(())
}
