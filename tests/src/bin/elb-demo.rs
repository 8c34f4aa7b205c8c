//! `cargo xtask demo`: the dataplane on its own, in network namespaces.
//!
//! Builds a client, a servo with the XDP program, and three nginx backends that answer with
//! their name; sends 300 requests on new connections through the VIP and prints how many each
//! backend served. With `--once` it exits 0 only if the split is exactly even; otherwise it stays
//! up for exploration until Ctrl-C, then removes everything it created.

use std::{collections::BTreeMap, time::Duration};

use anyhow::ensure;
use clap::Parser;
use tests::{http::Connection, topo::Topology};

#[derive(Parser)]
struct Args {
    /// Run the checks and exit instead of staying up.
    #[arg(long)]
    once: bool,
}

fn wait_for_ctrl_c() {
    // SAFETY: plain signal-mask calls on this thread; the signals are then taken by sigwait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&raw const set, &raw mut sig);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "Building the topology: a client, a servo running the XDP load balancer, three web servers..."
    );
    let mut topo = Topology::build(3)?;
    topo.start_nginx(1)?;
    println!(
        "Loading the XDP program on the servo (elb-servo load) and configuring listener {} with 3 backends",
        topo.vip()
    );
    topo.load()?;
    topo.configure_listener()?;

    let vip = topo.vip();
    println!("Sending 300 requests, each on a new connection, from the client to {vip} ...");
    let counts = topo
        .client
        .run(|| -> anyhow::Result<BTreeMap<String, u32>> {
            let mut counts = BTreeMap::new();
            for _ in 0..300 {
                let r = Connection::open(vip, Duration::from_secs(5))?.get("/name", false)?;
                *counts.entry(r.text()).or_default() += 1;
            }
            Ok(counts)
        })?;
    for (name, n) in &counts {
        println!("  backend {name} served {n} requests");
    }
    let even = counts.len() == 3 && counts.values().all(|&n| n == 100);
    println!(
        "{}",
        if even {
            "Round-robin split is exact: 100/100/100."
        } else {
            "Split is NOT even!"
        }
    );
    let c = topo.maps()?.counters()?;
    println!(
        "Dataplane counters: new_flows={} fwd_redirect={} pass_no_neigh={}",
        c.new_flows, c.fwd_redirect, c.pass_no_neigh
    );

    if !args.once {
        println!();
        println!("The topology stays up. Try:");
        println!(
            "  ip netns exec {} curl http://{}/name",
            topo.client.name(),
            topo.vip().ip()
        );
        println!(
            "  bpftool map dump pinned {}/counters",
            topo.pin_root.display()
        );
        println!("  elb-servo --pin-root {} status", topo.pin_root.display());
        println!("Press Ctrl-C to tear it down.");
        wait_for_ctrl_c();
        println!("Cleaning up.");
    }
    ensure!(
        even,
        "round-robin split was {counts:?}, expected 100/100/100"
    );
    Ok(())
}
