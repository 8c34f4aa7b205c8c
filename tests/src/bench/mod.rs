//! The benchmark harness behind `cargo xtask bench` (binary `elb-bench`).
//!
//! Every section measures our dataplane side by side with a reference measured in the same run
//! (the floor XDP program, HAProxy, nftables), because the machines here are noisy: ratios from
//! one run mean more than absolute numbers across runs.

pub mod control;
pub mod e2e;
pub mod flood;
pub mod mpps;
pub mod per_packet;
pub mod render;
pub mod report;
pub mod ring;
pub mod scale;
pub mod sg;
pub mod tls;

/// How much work a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything, as reported in the README.
    Full,
    /// The same keys in under five minutes.
    Quick,
    /// A few hundred packets and connections: proves the harness works (run by `cargo xtask test`).
    Tiny,
}

impl Mode {
    /// Picks the value for this mode.
    pub fn pick<T>(self, full: T, quick: T, tiny: T) -> T {
        match self {
            Self::Full => full,
            Self::Quick => quick,
            Self::Tiny => tiny,
        }
    }
}

/// Median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Prints a progress line (the harness runs for minutes; say what it is doing).
pub fn progress(msg: impl AsRef<str>) {
    use std::io::Write as _;
    let mut out = std::io::stderr();
    let _ = writeln!(out, "[bench] {}", msg.as_ref());
}
