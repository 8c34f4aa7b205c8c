//! scratch (not committed): hold one e2e setup
use tests::bench::e2e::{Balancer, Setup};
fn main() -> anyhow::Result<()> {
    let lb = match std::env::args().nth(1).as_deref() {
        Some("haproxy") => Balancer::Haproxy,
        Some("nftables") => Balancer::Nftables,
        _ => Balancer::Xdp,
    };
    let secs: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let s = Setup::start(lb)?;
    println!(
        "client={} servo={} switch={} b1={}",
        s.topo.client.name(),
        s.topo.servo.name(),
        s.topo.switch.name(),
        s.topo.backends[0].name()
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let stop = std::path::Path::new("/tmp/e2e-hold-stop");
    let _ = std::fs::remove_file(stop);
    for _ in 0..secs {
        if stop.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    if let Some(a) = s.agent() {
        println!(
            "{}",
            a.metrics()?
                .lines()
                .filter(|l| l.contains("snat") || l.contains("decision"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
