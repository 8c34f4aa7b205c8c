//! Debug aid: builds the standard topology with the dataplane loaded and holds it.
fn main() -> anyhow::Result<()> {
    let mut topo = tests::topo::Topology::build(3)?;
    topo.start_nginx(1)?;
    topo.load()?;
    topo.configure_listener()?;
    println!(
        "client={} servo={} switch={} pin={}",
        topo.client.name(),
        topo.servo.name(),
        topo.switch.name(),
        topo.pin_root.display()
    );
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    std::thread::sleep(std::time::Duration::from_secs(secs));
    Ok(())
}
