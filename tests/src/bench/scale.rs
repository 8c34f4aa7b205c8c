//! Scale limits: a conntrack table with a million live flows (memory, per-packet cost on the
//! full table, sweep time), and a configuration of 1,000 listeners and 10,000 backends (map
//! memory, time to apply it).

use std::{collections::BTreeMap, net::Ipv4Addr, time::Instant};

use anyhow::ensure;
use elb_userspace::{
    agent::{
        reconcile::{InstanceKey, Reconciler},
        sweep,
    },
    config::ServoConfig,
    health::InstanceHealth,
};

use super::{
    Mode, median, per_packet, progress,
    report::Results,
    ring::{self, Ring},
};
use crate::fixture::{Fixture, VIP, XDP_REDIRECT};

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    conntrack(mode, results)?;
    config(mode, results)
}

fn conntrack(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let flows: u32 = mode.pick(1_000_000, 1_000_000, 10_000);
    let ring_flows: u32 = mode.pick(65_536, 65_536, 1_024);
    let repeat: u32 = mode.pick(1_000_000, 1_000_000, 1_000);
    let rounds = mode.pick(9, 5, 3);
    progress(format!(
        "scale: conntrack with {flows} live flows, established cost over {ring_flows} of them"
    ));
    // Two slots per flow, at under half occupancy.
    let slots = (4 * flows).next_power_of_two();
    let fx = Fixture::with_conntrack(slots)?;
    per_packet::prepare(&fx)?;
    let mut ring = Ring::with_table(fx.dp_program(), slots)?;
    // The timed flows first, alone in the table; then the rest of the million.
    per_packet::open_flows(&fx, &mut ring, VIP, 0, ring_flows)?;
    let (est, _) = per_packet::flow_frames(&fx, VIP)?;
    let time = |ring: &mut Ring| -> anyhow::Result<Vec<f64>> {
        ring.set_frames(&est)?;
        (0..rounds)
            .map(|_| {
                per_packet::checked(
                    &fx,
                    ring,
                    ring::UNDER_TEST,
                    fx.cl,
                    repeat,
                    &[XDP_REDIRECT],
                    &["fwd_redirect"],
                    &[],
                )
            })
            .collect()
    };
    let mut empty = time(&mut ring)?;
    let fill_started = Instant::now();
    // A million flows to three backends through 8 SNAT addresses use two thirds of the SNAT
    // tuples (the allocation retries, and refuses a few hundred), and at half occupancy a few
    // probe windows are full (those SYNs get a cookie instead).
    let before = fx.counters();
    let opened = per_packet::open_flows_allowing(
        &fx,
        &mut ring,
        VIP,
        1 << 27,
        flows - ring_flows,
        (flows - ring_flows) / 1000,
    )?;
    let after = fx.counters();
    per_packet::confirm_all(&fx)?;
    let fill = fill_started.elapsed();
    let mut maps = fx.maps()?;
    let entries = maps.flows()?.len();
    ensure!(
        entries as u64 == 2 * (opened + u64::from(ring_flows)),
        "conntrack holds {entries} entries after opening {} flows",
        opened + u64::from(ring_flows)
    );
    let memory: BTreeMap<&str, u64> = maps.memory().into_iter().collect();
    let conntrack_bytes = memory.get("conntrack").copied().unwrap_or(0);
    let mut full = time(&mut ring)?;

    // The agent's sweep over the full table (nothing to expire: the cost of reading it all).
    let mut sweeps = Vec::new();
    for _ in 0..mode.pick(5, 3, 2) {
        let report = sweep::sweep(&mut maps, sweep::monotonic_ns())?;
        ensure!(
            report.entries == entries && report.expired_idle == 0,
            "sweep saw {report:?}"
        );
        sweeps.push(report.duration.as_secs_f64() * 1e3);
    }
    let empty = median(&mut empty);
    let full = median(&mut full);
    let sweep_ms = median(&mut sweeps);
    progress(format!(
        "  {entries} entries ({:.0} MiB), established {empty:.0} ns with {ring_flows} flows / {full:.0} ns with {flows}, sweep {sweep_ms:.0} ms, {} new flows opened in {:.0} ms",
        conntrack_bytes as f64 / (1 << 20) as f64,
        flows - ring_flows,
        fill.as_secs_f64() * 1e3
    ));
    let scaled = |v: f64| v * 1_000_000.0 / f64::from(flows);
    results.set("scale.conntrack_flows", f64::from(flows));
    results.set("scale.opened_flows", opened as f64 + f64::from(ring_flows));
    results.set(
        "scale.snat_retries_per_flow",
        (after.snat_retries - before.snat_retries) as f64 / opened as f64,
    );
    results.set(
        "scale.snat_failures",
        (after.snat_failures - before.snat_failures) as f64,
    );
    results.set("scale.conntrack_1m_bytes", scaled(conntrack_bytes as f64));
    results.set("scale.established_empty_ns", empty);
    results.set("scale.established_1m_ns", full);
    results.set("scale.established_1m_ratio", full / empty);
    results.set("scale.sweep_1m_ms", scaled(sweep_ms));
    results.set(
        "scale.open_flows_per_s",
        f64::from(flows - ring_flows) / fill.as_secs_f64(),
    );
    results.note(
        "scale",
        format!(
            "conntrack of {slots} slots (128 bytes each); {flows} flows opened through the program (SYNs of distinct flows); established cost measured over a ring of the same \
             {ring_flows} distinct flows with only them in the table and with all {flows}; sweep = the agent's sweep over the whole memory-mapped table (1M values are per \
             million flows{})",
            if flows == 1_000_000 { "" } else { ", scaled from the measured size" }
        ),
    );
    Ok(())
}

fn config(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let (lbs, listeners_per_lb, instances_per_lb) =
        mode.pick((100, 10, 10), (100, 10, 10), (10, 2, 5));
    progress(format!(
        "scale: {} listeners, {} backends",
        lbs * listeners_per_lb,
        lbs * listeners_per_lb * instances_per_lb
    ));
    let fx = Fixture::new()?;
    let mut cfg: ServoConfig =
        serde_json::from_value(serde_json::json!({"interfaces": ["cl", "bk"]}))?;
    let mut health = BTreeMap::new();
    for l in 0..lbs {
        let name = format!("lb{l}");
        let vip = Ipv4Addr::new(198, 18, 1 + (l / 250) as u8, (l % 250) as u8 + 1);
        let listeners: Vec<serde_json::Value> = (0..listeners_per_lb)
            .map(|k| serde_json::json!({"Protocol": "TCP", "LoadBalancerPort": 1000 + k, "InstancePort": 8000 + k}))
            .collect();
        let mut lb: elb_contract::LoadBalancer = serde_json::from_value(
            serde_json::json!({"LoadBalancerName": name, "Vips": [vip.to_string()], "Listeners": listeners}),
        )?;
        for i in 0..instances_per_lb {
            let id = format!("i-{l}-{i}");
            lb.instances.push(elb_contract::Instance {
                instance_id: id.clone(),
                address: Ipv4Addr::new(
                    198,
                    19,
                    1 + (l / 250) as u8,
                    ((l * instances_per_lb + i) % 250) as u8 + 1,
                ),
                zone: None,
                health_check: true,
                health: None,
            });
            health.insert(InstanceKey::new(&name, &id), InstanceHealth::in_service());
        }
        cfg.load_balancers.push(lb);
    }
    cfg.validate()?;
    let mut reconciler = Reconciler::new(fx.maps()?);
    let started = Instant::now();
    let changes = reconciler.apply(&cfg, &health, Instant::now())?;
    let apply_ms = started.elapsed().as_secs_f64() * 1e3;
    let backends = reconciler.backends().len();
    ensure!(
        changes.listeners_added.len() == lbs * listeners_per_lb
            && backends == lbs * listeners_per_lb * instances_per_lb
    );
    // A second apply with nothing changed: what a reload of an unchanged file costs.
    let started = Instant::now();
    let again = reconciler.apply(&cfg, &health, Instant::now())?;
    let noop_ms = started.elapsed().as_secs_f64() * 1e3;
    ensure!(again.is_empty());
    let memory: u64 = fx
        .maps()?
        .memory()
        .iter()
        .filter(|(n, _)| *n != "conntrack")
        .map(|(_, b)| b)
        .sum();
    progress(format!(
        "  applied {backends} backends in {apply_ms:.0} ms (unchanged re-apply {noop_ms:.1} ms); maps other than conntrack {:.1} MiB",
        memory as f64 / (1 << 20) as f64
    ));
    results.set("scale.listeners", (lbs * listeners_per_lb) as f64);
    results.set("scale.backends", backends as f64);
    results.set("scale.apply_10k_backends_ms", apply_ms);
    results.set("scale.reapply_unchanged_ms", noop_ms);
    results.set("scale.maps_bytes_without_conntrack", memory as f64);
    Ok(())
}
