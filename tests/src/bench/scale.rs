//! Scale limits (filled in below).
use super::{Mode, report::Results};

/// Runs the section.
pub fn run(_mode: Mode, _results: &mut Results) -> anyhow::Result<()> {
    Ok(())
}
