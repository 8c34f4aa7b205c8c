//! `cargo xtask bench`: every measurement, side by side with its baseline from the same run.
//! Writes `<out>/latest.json`, `<out>/summary.md` and SVG charts.

use std::{path::PathBuf, time::Instant};

use clap::Parser;
use tests::bench::{
    Mode, control, e2e, flood, mpps, per_packet, progress, render, report::Results, scale, tls,
};

#[derive(Parser)]
struct Args {
    /// The same keys in under five minutes (fewer rounds, shorter runs).
    #[arg(long, conflicts_with = "tiny")]
    quick: bool,
    /// A few hundred packets and connections: proves the harness works (cargo xtask test).
    #[arg(long)]
    tiny: bool,
    /// Output directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Run only these sections (per_packet, mpps, scale, flood, control, e2e, tls), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Start from the existing `<out>/latest.json` and replace only what this run measures.
    #[arg(long)]
    merge: bool,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!(
        "Machine: {cores} vCPU ({cpu}), {mem} GiB, Linux {}; veth pairs between network namespaces.",
        kernel.trim()
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mode, name) = if args.tiny {
        (Mode::Tiny, "tiny")
    } else if args.quick {
        (Mode::Quick, "quick")
    } else {
        (Mode::Full, "full")
    };
    let started = Instant::now();
    let mut results = if args.merge {
        let text = std::fs::read_to_string(args.out.join("latest.json"))?;
        Results::from_json(&serde_json::from_str(&text)?)
    } else {
        Results::default()
    };
    type Section = fn(Mode, &mut Results) -> anyhow::Result<()>;
    let sections: [(&str, Section); 7] = [
        ("per_packet", per_packet::run),
        ("mpps", mpps::run),
        ("scale", scale::run),
        ("flood", flood::run),
        ("control", control::run),
        ("e2e", e2e::run),
        ("tls", tls::run),
    ];
    let mut failed = Vec::new();
    let ran = args.only.is_empty()
        || sections
            .iter()
            .any(|(n, _)| args.only.iter().any(|o| o == n));
    for (name, run) in sections {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        progress(format!("section {name} ({:.0?} so far)", started.elapsed()));
        if let Err(e) = run(mode, &mut results) {
            progress(format!("section {name} FAILED: {e:#}"));
            results.note(format!("{name}.error"), format!("{e:#}"));
            failed.push(name);
        }
    }
    if ran {
        results.set("meta.duration_s", started.elapsed().as_secs_f64());
    }
    std::fs::create_dir_all(&args.out)?;
    let json = serde_json::to_string_pretty(&results.to_json())?;
    std::fs::write(args.out.join("latest.json"), json + "\n")?;
    std::fs::write(
        args.out.join("summary.md"),
        render::summary(&results, &machine(), name),
    )?;
    render::charts(&results, &args.out)?;
    progress(format!(
        "wrote {}/latest.json, summary.md and charts in {:.0?}",
        args.out.display(),
        started.elapsed()
    ));
    if !failed.is_empty() {
        anyhow::bail!("sections failed: {}", failed.join(", "));
    }
    Ok(())
}
