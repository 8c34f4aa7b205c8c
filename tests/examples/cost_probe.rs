//! Probe: where does the time go? (repeat=1 per call, averaged)
use tests::{bench::per_packet::*, fixture::*, packet::*};
fn main() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    prepare(&fx)?;
    let cycles = cycles(&fx, 45000)?;
    let ours = fx.dp_program();
    let floor_ebpf = elb_userspace::dataplane::load_aux_program("elb_floor")?;
    let floor: &aya::programs::Xdp = floor_ebpf.program("elb_floor").unwrap().try_into()?;
    let stray = Tcp::new((client(1), 50000), (BENCH_VIP, 22), TCP_ACK).frame();
    let mut arp = stray.clone();
    arp[12] = 0x08;
    arp[13] = 0x06;
    let n = 2000;
    let avg = |prog: &aya::programs::Xdp, iface: u32, frame: &dyn Fn(u32) -> Vec<u8>| -> f64 {
        let mut sum = 0.0;
        for i in 0..n {
            sum += time(&fx, prog, iface, &frame(i), 1).unwrap().0;
        }
        sum / n as f64
    };
    for round in 0..3 {
        let f = avg(floor, fx.cl, &|_| cycles.established.clone());
        let a = avg(ours, fx.cl, &|_| arp.clone());
        let s = avg(ours, fx.cl, &|_| stray.clone());
        let e = avg(ours, fx.cl, &|_| cycles.established.clone());
        let nf = avg(ours, fx.cl, &|i| {
            let mut t = Tcp::new(
                (client((i % 19) as u8), 1024 + (i / 19 + round * 200) as u16),
                (BENCH_VIP, 80),
                TCP_SYN,
            );
            t.src_mac = CLIENT_MAC;
            t.frame()
        });
        // SYN to a listener whose set is empty: set lookup + RST construction, no conntrack insert
        println!(
            "round {round} per call: floor {f:.0} arp {a:.0} stray {s:.0} established {e:.0} new-flow {nf:.0}"
        );
    }
    let c = fx.counters();
    println!(
        "new_flows {} snat_retries {} fwd_redirect {} rx {}",
        c.new_flows, c.snat_retries, c.fwd_redirect, c.rx_packets
    );
    Ok(())
}
