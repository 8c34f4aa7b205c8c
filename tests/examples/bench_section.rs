//! Runs one bench section: `cargo run --release -p tests --example bench_section <per_packet|mpps|scale> [tiny|quick|full]`.
fn main() -> anyhow::Result<()> {
    use tests::bench::{Mode, mpps, per_packet, report::Results};
    let section = std::env::args().nth(1).unwrap_or_default();
    let mode = match std::env::args().nth(2).as_deref() {
        Some("full") => Mode::Full,
        Some("quick") => Mode::Quick,
        _ => Mode::Tiny,
    };
    let mut r = Results::default();
    match section.as_str() {
        "per_packet" => per_packet::run(mode, &mut r)?,
        "mpps" => mpps::run(mode, &mut r)?,
        "scale" => tests::bench::scale::run(mode, &mut r)?,
        "control" => tests::bench::control::run(mode, &mut r)?,
        other => anyhow::bail!("unknown section {other:?}"),
    }
    println!("{}", serde_json::to_string_pretty(&r.to_json())?);
    Ok(())
}
