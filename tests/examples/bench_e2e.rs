//! Runs the end-to-end benchmark section (XDP vs HAProxy vs nftables) and prints its JSON.
//!
//! `bench_e2e [tiny|quick|full]...` (default: `tiny quick`). Needs root and the release
//! binaries (`ELB_BIN_DIR` or next to this example).
use std::time::Instant;

use tests::bench::{Mode, e2e, report::Results};

fn main() -> anyhow::Result<()> {
    let mut modes: Vec<String> = std::env::args().skip(1).collect();
    if modes.is_empty() {
        modes = vec!["tiny".into(), "quick".into()];
    }
    for m in modes {
        let mode = match m.as_str() {
            "tiny" => Mode::Tiny,
            "quick" => Mode::Quick,
            "full" => Mode::Full,
            other => anyhow::bail!("unknown mode {other:?} (tiny, quick, full)"),
        };
        let mut results = Results::default();
        let start = Instant::now();
        e2e::run(mode, &mut results)?;
        let secs = start.elapsed().as_secs_f64();
        println!("== {m} ({secs:.1} s)");
        println!("{}", serde_json::to_string_pretty(&results.to_json())?);
    }
    Ok(())
}
