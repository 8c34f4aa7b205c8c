use elb_common::Counters;
use tests::{bench::per_packet::*, fixture::*};
fn main() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    prepare(&fx)?;
    let ours = fx.dp_program();
    for rep in [1u32, 2, 3, 4, 10] {
        let before = fx.counters();
        let (ns, action) = time(&fx, ours, fx.cl, &cycle_syn(rep as u16), rep)?;
        let after = fx.counters();
        let moved: Vec<String> = Counters::NAMES
            .iter()
            .zip(before.values().iter().zip(after.values()))
            .filter(|(_, (b, a))| *b != a)
            .map(|(n, (b, a))| format!("{n}+{}", a - b))
            .collect();
        println!("repeat {rep}: action {action} {ns}ns {moved:?}");
    }
    Ok(())
}
