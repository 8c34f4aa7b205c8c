//! `cargo xtask demo`: the proof of concept, on one machine, in network namespaces.
//!
//! A control service (SQLite), a servo in each of two zones, three nginx web servers. The load
//! balancer is created with the euca2ools-style `eulb-*` commands; requests go through the load
//! balancer's DNS name, resolved by control's DNS. One web server is stopped and brought back.
//! With `--once` every step is checked and the exit status says whether all passed; without it
//! the system stays up for exploration until Ctrl-C.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use tests::system::{System, SystemSpec};

#[derive(Parser)]
struct Args {
    /// Run the checks and exit (status 0 only if they all pass) instead of staying up.
    #[arg(long)]
    once: bool,
}

fn step(n: u32, text: &str) {
    println!("\n== {n}. {text}");
}

fn show(cmd: &str, out: &str) {
    println!("$ {cmd}");
    for line in out.lines() {
        println!("  {line}");
    }
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

/// Polls `eulb-describe-instance-health` until every instance has `want` (or, for a single
/// instance, that one), printing progress.
fn wait_health(sys: &System, want: &[(&str, &str)], timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let out = sys.eulb("describe-instance-health", &["web"])?;
        let done = want.iter().all(|(id, state)| {
            out.lines()
                .any(|l| l.contains(id) && l.split_whitespace().nth(2) == Some(*state))
        });
        let summary: Vec<String> = out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (_, id, state) = (f.next()?, f.next()?, f.next()?);
                Some(format!("{id} {state}"))
            })
            .collect();
        let summary = summary.join(", ");
        if summary != last {
            println!("  [{:>4.1}s] {summary}", started.elapsed().as_secs_f64());
            last = summary;
        }
        if done {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("instances did not reach {want:?} within {timeout:?}: {out}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn requests(sys: &System, dns: &str, n: u32) -> anyhow::Result<BTreeMap<String, u32>> {
    let counts = sys.spread_by_name(dns, 80, n)?;
    println!("  {n} requests through http://{dns}/ (resolved through control's DNS each time):");
    for (name, count) in &counts {
        println!("    {name}: {count}");
    }
    Ok(counts)
}

fn run(once: bool) -> anyhow::Result<()> {
    step(
        1,
        "Starting the system: control (SQLite), servo-a in zone-a, servo-b in zone-b, web1 and web2 in zone-a, web3 in zone-b",
    );
    let mut sys = System::start(SystemSpec::poc())?;
    println!("  control API http://198.18.0.5:8773, DNS 198.18.0.5:53 (domain elb.local)");
    for s in &sys.servos {
        println!(
            "  {} ({}) registered, serving VIP address {}",
            s.id, s.zone, s.vip
        );
    }
    println!(
        "  account {} created with `elb-control admin account create`",
        sys.account.id
    );

    step(2, "Creating load balancer `web` with the eulb-* commands");
    let out = sys.eulb(
        "create-lb",
        &[
            "web",
            "-l",
            "lb-port=80, protocol=HTTP, instance-port=80",
            "-z",
            "zone-a,zone-b",
        ],
    )?;
    show(
        "eulb-create-lb web -l \"lb-port=80, protocol=HTTP, instance-port=80\" -z zone-a,zone-b",
        &out,
    );
    let dns = out
        .split_whitespace()
        .nth(1)
        .context("DNS_NAME line")?
        .to_string();
    let out = sys.eulb(
        "configure-healthcheck",
        &[
            "web",
            "-t",
            "HTTP:80/name",
            "-i",
            "5",
            "--timeout",
            "2",
            "--healthy-threshold",
            "2",
            "--unhealthy-threshold",
            "2",
        ],
    )?;
    show(
        "eulb-configure-healthcheck web -t HTTP:80/name -i 5 --timeout 2 --healthy-threshold 2 --unhealthy-threshold 2",
        &out,
    );
    sys.eulb(
        "modify-lb-attributes",
        &["web", "--cross-zone-load-balancing", "true"],
    )?;
    show(
        "eulb-modify-lb-attributes web --cross-zone-load-balancing true",
        "",
    );
    let out = sys.eulb(
        "register-instances-with-lb",
        &["web", "--instances", "i-web1,i-web2,i-web3"],
    )?;
    show(
        "eulb-register-instances-with-lb web --instances i-web1,i-web2,i-web3",
        &out,
    );

    step(
        3,
        "Waiting for the servos' health checks (HTTP:80/name, 2 passes at a 5 s interval)",
    );
    let all_in = [
        ("i-web1", "InService"),
        ("i-web2", "InService"),
        ("i-web3", "InService"),
    ];
    wait_health(&sys, &all_in, Duration::from_secs(60))?;

    step(
        4,
        "Resolving the load balancer's DNS name through control's DNS",
    );
    let answer = sys.resolve(&dns)?;
    println!(
        "  {dns} -> {:?} (TTL {} s; one VIP per zone's servo, rotated per query)",
        answer.addrs, answer.ttl
    );
    if answer.addrs.len() != 2 {
        bail!("expected two VIPs, got {answer:?}");
    }

    step(5, "Round-robin over the three web servers");
    let counts = requests(&sys, &dns, 30)?;
    System::check_balanced(&counts, &["web1", "web2", "web3"], 10, 2)?;
    println!(
        "  Each servo sends new connections to the next web server in turn (cross-zone is on)."
    );

    step(
        6,
        "Stopping web2: its servo's checks fail, it goes OutOfService, traffic moves to the others",
    );
    sys.web[1].stop();
    wait_health(&sys, &[("i-web2", "OutOfService")], Duration::from_secs(60))?;
    let out = sys.eulb("describe-instance-health", &["web", "--show-long"])?;
    show("eulb-describe-instance-health web --show-long", &out);
    // servo-b learns web2's state from control (zone-a's servo checks it): give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    let counts = requests(&sys, &dns, 30)?;
    System::check_balanced(&counts, &["web1", "web3"], 15, 2)?;
    println!("  (Each servo keeps its own rotation, so the total can be off by one per servo.)");

    step(7, "Bringing web2 back");
    sys.web[1].restart()?;
    wait_health(&sys, &all_in, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));
    let counts = requests(&sys, &dns, 30)?;
    System::check_balanced(&counts, &["web1", "web2", "web3"], 10, 2)?;

    println!("\nAll checks passed.");
    if !once {
        println!("\nThe system stays up. Try (as root):");
        println!(
            "  ip netns exec {} curl -s http://{}/name",
            sys.client.name(),
            sys.servos[0].vip
        );
        println!(
            "  ip netns exec {} curl -s http://{}/metrics | grep elb_backend",
            sys.servo_ns[0].name(),
            tests::agent::API
        );
        println!("  elb-control admin --db {} servo list", sys.db);
        println!(
            "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_ELB_URL={} \\",
            sys.account.access_key, sys.account.secret, sys.controls[0].url
        );
        println!(
            "    ip netns exec {} target/release/eulb-describe-lbs --show-long",
            sys.client.name()
        );
        println!("  logs: {}", sys.dir.path().display());
        println!("Press Ctrl-C to tear everything down.");
        wait_for_ctrl_c();
        println!("Cleaning up.");
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args.once) {
        eprintln!("\nDEMO FAILED: {e:#}");
        std::process::exit(1);
    }
}
