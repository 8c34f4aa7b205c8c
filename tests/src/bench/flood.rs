//! A spoofed SYN flood against a servo running the shipped example configuration (the scenario
//! of `tests::flood`, also run as the namespaced test `tests/flood.rs`): how many established
//! connections survive it, how many new connections get in during and after it, and how many
//! SYNs per second the servo absorbs.

use std::time::Duration;

use super::{Mode, median, progress, report::Results};
use crate::flood::{self, Plan};

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let plan = mode.pick(
        Plan {
            flood: Duration::from_secs(10),
            established: 200,
            legit: 1000,
            after: 300,
        },
        Plan {
            flood: Duration::from_secs(10),
            established: 200,
            legit: 1000,
            after: 300,
        },
        Plan {
            flood: Duration::from_secs(2),
            established: 10,
            legit: 20,
            after: 10,
        },
    );
    let rounds = mode.pick(3, 1, 1);
    let mut survived = Vec::new();
    let mut legit = Vec::new();
    let mut after = Vec::new();
    let mut absorbed = Vec::new();
    let mut generated = Vec::new();
    let mut p50 = Vec::new();
    let mut max = Vec::new();
    let mut requests = Vec::new();
    for round in 1..=rounds {
        let o = flood::run(plan)?;
        progress(format!(
            "  round {round}/{rounds}: {:.2} M SYN/s generated, {:.2} M/s absorbed; established \
             {}/{}, new during {}/{}, after {}/{}; new connection p50 {:.1} ms, max {:.0} ms",
            o.syns_sent as f64 / o.flood_secs / 1e6,
            o.syns_absorbed_per_s / 1e6,
            o.established_ok,
            plan.established,
            o.legit_ok,
            plan.legit,
            o.after_ok,
            plan.after,
            o.legit_p50_ms,
            o.legit_max_ms,
        ));
        for f in o.failures.iter().take(5) {
            progress(format!("    {f}"));
        }
        survived.push(o.established_ok as f64 / plan.established as f64);
        legit.push(o.legit_ok as f64 / plan.legit as f64);
        after.push(o.after_ok as f64 / plan.after as f64);
        absorbed.push(o.syns_absorbed_per_s / 1e6);
        generated.push(o.syns_sent as f64 / o.flood_secs / 1e6);
        p50.push(o.legit_p50_ms);
        max.push(o.legit_max_ms);
        requests.push(o.established_requests as f64 / o.flood_secs);
    }
    let worst = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    results.set("flood.established_survived", median(&mut survived.clone()));
    results.set("flood.established_survived_min", worst(&survived));
    results.set("flood.legit_success", median(&mut legit.clone()));
    results.set("flood.legit_success_min", worst(&legit));
    results.set("flood.after_success", median(&mut after.clone()));
    results.set("flood.syn_mpps", median(&mut absorbed));
    results.set("flood.generated_mpps", median(&mut generated));
    results.set("flood.legit_p50_ms", median(&mut p50));
    results.set("flood.legit_max_ms", median(&mut max));
    results.set("flood.established_rps", median(&mut requests));
    results.set("flood.seconds", plan.flood.as_secs_f64());
    results.note(
        "flood",
        format!(
            "{rounds} round(s) of a {} s spoofed SYN flood (one generator CPU, live frames, \
             32,766 source addresses) against the shipped example configuration; {} keep-alive \
             connections carrying requests throughout, {} new connections during the flood and \
             {} after; fractions are medians over rounds (`_min`: the worst round); syn_mpps: SYNs \
             the servo answered (cookie or new state) per second; generator and servo share the \
             2 vCPUs",
            plan.flood.as_secs(),
            plan.established,
            plan.legit,
            plan.after
        ),
    );
    Ok(())
}
