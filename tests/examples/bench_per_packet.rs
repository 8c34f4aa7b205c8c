//! Runs the per-packet section alone: `cargo run --release -p tests --example bench_per_packet [tiny|quick|full]`.
fn main() -> anyhow::Result<()> {
    use tests::bench::{Mode, per_packet, report::Results};
    let mode = match std::env::args().nth(1).as_deref() {
        Some("full") => Mode::Full,
        Some("quick") => Mode::Quick,
        _ => Mode::Tiny,
    };
    let mut r = Results::default();
    per_packet::run(mode, &mut r)?;
    println!("{}", serde_json::to_string_pretty(&r.to_json())?);
    Ok(())
}
