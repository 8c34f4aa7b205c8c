//! Probe: does BPF_PROG_TEST_RUN with repeat re-run on the original frame or on the output?
use aya::programs::{TestRun as _, TestRunOptions};
use tests::{fixture::*, packet::*};
fn main() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let mut t = Tcp::new((client(0), 40000), (VIP, 80), TCP_SYN);
    t.src_mac = CLIENT_MAC;
    let frame = t.frame();
    let out = fx.run(fx.cl, &frame)?; // create the flow
    println!("first: action {}", out.action);
    let ack = Tcp::new((client(0), 40000), (VIP, 80), TCP_ACK).frame();
    let prog = fx.dp_program();
    let cl = fx.cl;
    let before = fx.counters();
    fx.ns.run(|| {
        let mut buf = vec![0u8; 256];
        let ctx = xdp_md(ack.len() as u32, cl);
        let mut o = TestRunOptions::new();
        o.data_in = Some(&ack);
        o.data_out = Some(&mut buf);
        o.ctx_in = Some(&ctx);
        o.repeat = 5;
        let r = prog.test_run(o).unwrap();
        println!(
            "repeat 5: action {} duration {:?}",
            r.return_value, r.duration
        );
    });
    let after = fx.counters();
    println!(
        "fwd_redirect +{} pass_not_ours +{} rx +{}",
        after.fwd_redirect - before.fwd_redirect,
        after.pass_not_ours - before.pass_not_ours,
        after.rx_packets - before.rx_packets
    );
    Ok(())
}
