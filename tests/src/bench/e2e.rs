//! End to end over the same namespaced topology: our XDP load balancer, HAProxy and nftables NAT,
//! in turn, each in fresh namespaces, measured with wrk.
//!
//! ```text
//!  client ns (wrk) --- servo ns (LB under test) --- switch ns (bridge) --- 3 backend ns (nginx)
//! ```
//! Each balancer gets a freshly built [`Topology`]: the TIME_WAIT sockets one run leaves on the
//! backends would otherwise collide with the next run's NAT tuples (PAWS) and stall its SYNs.
//!
//! Per balancer, three wrk runs from the client namespace:
//! - new connections per second (`Connection: close`, so requests/s = connections/s), with the
//!   whole machine's CPU time from `/proc/stat` over the run;
//! - keep-alive requests per second and latency percentiles (`--latency`);
//! - bulk throughput: repeated downloads of a large file over two connections.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Mode, median, progress, report::Results};
use crate::{
    agent::{Agent, metric},
    http::get_once,
    netns::{Proc, tempdir},
    topo::{Topology, VIP, backend_addr},
};

/// Backends per topology.
const BACKENDS: usize = 3;
/// nginx worker processes per backend.
const NGINX_WORKERS: u32 = 1;
/// SNAT addresses the XDP servo gets on `s1` (198.19.0.1 is the topology's own).
const SNAT_ADDRS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(198, 19, 0, 1),
    Ipv4Addr::new(198, 19, 0, 2),
    Ipv4Addr::new(198, 19, 0, 3),
    Ipv4Addr::new(198, 19, 0, 4),
];
/// Size of the file the bulk run downloads (sparse: nothing is written to disk).
const BIG_FILE_BYTES: u64 = 256 << 20;
/// Flow table slots of the XDP servo (the default): two per flow, held about 70 s after a
/// close (10 s close grace, then the 60 s TIME_WAIT reservation of the SNAT tuple).
const CONNTRACK_ENTRIES: u32 = 1 << 20;
/// Client ephemeral ports (the same for every balancer).
const CLIENT_PORTS: &str = "10000 65000";

/// The balancers, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer {
    /// Our XDP dataplane driven by the real agent.
    Xdp,
    /// HAProxy `mode tcp` in the servo namespace.
    Haproxy,
    /// Kernel NAT (nftables `numgen` + `masquerade`) in the servo namespace.
    Nftables,
}

impl Balancer {
    /// Every balancer.
    pub const ALL: [Self; 3] = [Self::Xdp, Self::Haproxy, Self::Nftables];

    /// The key segment (`e2e.<name>.cps`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Haproxy => "haproxy",
            Self::Nftables => "nftables",
        }
    }
}

/// How long each wrk run lasts and how hard it pushes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Seconds per measured run.
    secs: u32,
    /// Seconds of new-connection warm-up before the first measured run (0: none).
    warmup_secs: u32,
    /// wrk threads and connections for the cps and rps runs.
    threads: u32,
    conns: u32,
    /// wrk threads and connections for the bulk run.
    bulk_threads: u32,
    bulk_conns: u32,
    /// Longest wait, before each measured run, for other work on the machine to stop.
    quiet_wait_secs: u32,
    /// Rounds of all three balancers (each round in a rotated order); medians are reported.
    rounds: usize,
}

impl Plan {
    fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Full => Self {
                secs: 10,
                warmup_secs: 2,
                threads: 2,
                conns: 64,
                bulk_threads: 1,
                bulk_conns: 2,
                quiet_wait_secs: 60,
                rounds: 3,
            },
            Mode::Quick => Self {
                secs: 4,
                warmup_secs: 1,
                threads: 2,
                conns: 64,
                bulk_threads: 1,
                bulk_conns: 2,
                quiet_wait_secs: 15,
                rounds: 1,
            },
            Mode::Tiny => Self {
                secs: 1,
                warmup_secs: 0,
                threads: 1,
                conns: 4,
                bulk_threads: 1,
                bulk_conns: 2,
                quiet_wait_secs: 0,
                rounds: 1,
            },
        }
    }
}

/// Measures the three balancers in turn, each in fresh namespaces, `plan.rounds` times (the
/// order rotated every round), and records the medians over the rounds as
/// `e2e.<lb>.{cps,cpu_s_per_10k_conn,rps,p50_ms,p99_ms,gbps}` (errors and SNAT failures
/// summed: `e2e.<lb>.cps_errors`, `e2e.xdp.snat_failures`), the slowest and fastest round's
/// `e2e.<lb>.cps_min`/`cps_max`, and `ratios.*` as the median of the rounds' ratios (balancers
/// compared within a round, minutes apart, not across a shared machine's quiet and busy spells).
///
/// The machine is shared: `cpu_s_per_10k_conn` is the whole machine's busy time minus what
/// processes outside this benchmark used meanwhile (identical to the raw value on an idle
/// machine); `e2e.<lb>.cpu_s_per_10k_conn_raw` is the whole machine's and
/// `e2e.<lb>.others_cpu_frac` the share of the machine other jobs took during the cps run,
/// `e2e.<lb>.steal_frac` the share the hypervisor gave to other guests.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    crate::netns::require_root();
    for tool in ["wrk", "haproxy", "nft", "nginx", "ethtool"] {
        which(tool)
            .with_context(|| format!("{tool} is not installed (cargo xtask setup installs it)"))?;
    }
    let plan = Plan::for_mode(mode);
    // rounds[r][i]: round r's measurement of Balancer::ALL[i].
    let mut rounds: Vec<[Option<Measured>; 3]> = Vec::new();
    for round in 0..plan.rounds {
        let mut this: [Option<Measured>; 3] = Default::default();
        for k in 0..Balancer::ALL.len() {
            let i = (k + round) % Balancer::ALL.len();
            let lb = Balancer::ALL[i];
            let m = measure(lb, plan).with_context(|| format!("e2e benchmark of {}", lb.name()))?;
            progress(format!(
                "e2e {} (round {}/{}): {:.0} conn/s ({} errors), {:.2} CPU-s/10k conn, {:.0} req/s \
                 keep-alive (p50 {:.2} ms, p99 {:.2} ms), {:.2} Gbit/s",
                lb.name(),
                round + 1,
                plan.rounds,
                m.cps.rps,
                m.cps.errors(),
                m.cpu_s_per_10k,
                m.rps.rps,
                m.rps.p50_ms,
                m.rps.p99_ms,
                m.gbps
            ));
            this[i] = Some(m);
        }
        rounds.push(this);
    }
    let all = |i: usize| rounds.iter().filter_map(move |r| r[i].as_ref());
    for (i, lb) in Balancer::ALL.iter().enumerate() {
        let key = |k: &str| format!("e2e.{}.{k}", lb.name());
        let med = |f: &dyn Fn(&Measured) -> f64| median(&mut all(i).map(f).collect::<Vec<_>>());
        let cps: Vec<f64> = all(i).map(|m| m.cps.rps).collect();
        results.set(key("cps"), med(&|m| m.cps.rps));
        results.set(
            key("cps_min"),
            cps.iter().copied().fold(f64::INFINITY, f64::min),
        );
        results.set(
            key("cps_max"),
            cps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        results.set(key("cpu_s_per_10k_conn"), med(&|m| m.cpu_s_per_10k));
        results.set(
            key("cps_errors"),
            all(i).map(|m| m.cps.errors() as f64).sum::<f64>(),
        );
        results.set(key("rps"), med(&|m| m.rps.rps));
        results.set(key("p50_ms"), med(&|m| m.rps.p50_ms));
        results.set(key("p99_ms"), med(&|m| m.rps.p99_ms));
        results.set(key("gbps"), med(&|m| m.gbps));
        results.set(key("cpu_s_per_10k_conn_raw"), med(&|m| m.cpu_s_per_10k_raw));
        results.set(key("others_cpu_frac"), med(&|m| m.others_cpu_frac));
        results.set(key("steal_frac"), med(&|m| m.steal_frac));
        let failures: Vec<f64> = all(i).filter_map(|m| m.snat_failures).collect();
        if !failures.is_empty() {
            results.set(key("snat_failures"), failures.iter().sum::<f64>());
        }
        progress(format!(
            "e2e {}: medians of {} round(s): {:.0} conn/s, {:.2} CPU-s/10k conn, {:.0} req/s keep-alive, {:.2} Gbit/s",
            lb.name(),
            plan.rounds,
            med(&|m| m.cps.rps),
            med(&|m| m.cpu_s_per_10k),
            med(&|m| m.rps.rps),
            med(&|m| m.gbps),
        ));
    }
    // Ratios within each round, then their median.
    let ratio = |results: &mut Results, key: &str, a: usize, b: usize, f: fn(&Measured) -> f64| {
        let mut per_round: Vec<f64> = rounds
            .iter()
            .filter_map(|r| Some((f(r[a].as_ref()?), f(r[b].as_ref()?))))
            .filter(|(_, d)| *d > 0.0)
            .map(|(n, d)| n / d)
            .collect();
        if !per_round.is_empty() {
            results.set(key, median(&mut per_round));
        }
    };
    let (xdp, haproxy, nftables) = (0, 1, 2);
    ratio(results, "ratios.cps_vs_haproxy", xdp, haproxy, |m| {
        m.cps.rps
    });
    ratio(results, "ratios.cps_vs_nftables", xdp, nftables, |m| {
        m.cps.rps
    });
    ratio(results, "ratios.cpu_vs_haproxy", xdp, haproxy, |m| {
        m.cpu_s_per_10k
    });
    ratio(results, "ratios.cpu_vs_nftables", xdp, nftables, |m| {
        m.cpu_s_per_10k
    });
    ratio(results, "ratios.rps_vs_nftables", xdp, nftables, |m| {
        m.rps.rps
    });
    results.set("e2e.rounds", plan.rounds as f64);
    results.note("e2e", note(plan));
    Ok(())
}

fn note(plan: Plan) -> String {
    let (t, c, d) = (plan.threads, plan.conns, plan.secs);
    let warmup = if plan.warmup_secs > 0 {
        format!(" after a {} s warm-up", plan.warmup_secs)
    } else {
        String::new()
    };
    let quiet = if plan.quiet_wait_secs > 0 {
        format!(
            "before each measured run the harness waits up to {} s for it to be under 15% busy, \
             and ",
            plan.quiet_wait_secs
        )
    } else {
        String::new()
    };
    let snat = SNAT_ADDRS.map(|a| a.to_string()).join(", ");
    format!(
        "{rounds} round(s) of the three balancers, in a rotated order each round: values are \
         medians over the rounds (cps_min/cps_max: the slowest and fastest round), errors and \
         SNAT failures summed, ratios the median of the rounds' ratios. \
         Namespaces client -> servo -> switch (bridge) -> 3 backends, built fresh for each \
         balancer (TIME_WAIT on the backends would otherwise collide with the next run's NAT \
         tuples). Backends: nginx, {NGINX_WORKERS} worker each, /name (a few bytes) and a {big} \
         MB sparse /big.bin. Client: wrk in the client namespace, ephemeral ports \
         {CLIENT_PORTS}, tcp_tw_reuse=1. cps: wrk -t{t} -c{c} -d{d}s -H 'Connection: \
         close'{warmup}; rps, p50, p99: wrk -t{t} -c{c} -d{d}s --latency (keep-alive); gbps: \
         wrk -t{bt} -c{bc} -d{d}s /big.bin (Transfer/sec). CPU: busy jiffies of the whole \
         machine (2 cores, /proc/stat user+nice+system+irq+softirq+steal) during the cps run, \
         per 10,000 connections. The machine is shared: {quiet}cpu_s_per_10k_conn subtracts the \
         CPU time of processes outside the benchmark (/proc/<pid>/stat of processes not \
         descended from the harness, kernel threads excluded); cpu_s_per_10k_conn_raw is the \
         whole machine, others_cpu_frac the others' share, steal_frac the hypervisor's steal. \
         xdp: elb-servo run with a standalone config (TCP listener VIP:80 -> port 80, health \
         check TCP:80 every 5 s, measured once all three are InService), SNAT addresses {snat} \
         on s1, conntrack_entries {CONNTRACK_ENTRIES} (the default). haproxy 2.6: mode tcp, balance roundrobin, nbthread \
         2, maxconn 8000, no logging. nftables: dnat to numgen inc mod 3 map + masquerade on \
         s1, ip_forward=1. Same topology for all three: client and backend veths with TX \
         checksum offload off (models a wire; needed by XDP), pass-through XDP on c0 and sw0 \
         (peers of the servo's veths; needed by XDP_TX/redirect, kept for HAProxy and nftables \
         too), bridge-nf-call-iptables=0 in the switch (a plain L2 switch). Only the servo \
         namespace differs: XDP on s0/s1 and the agent, or HAProxy, or the nft ruleset.",
        rounds = plan.rounds,
        big = BIG_FILE_BYTES >> 20,
        bt = plan.bulk_threads,
        bc = plan.bulk_conns,
    )
}

/// One balancer's numbers.
#[derive(Debug)]
struct Measured {
    cps: WrkStats,
    cpu_s_per_10k: f64,
    rps: WrkStats,
    gbps: f64,
    snat_failures: Option<f64>,
    cpu_s_per_10k_raw: f64,
    others_cpu_frac: f64,
    steal_frac: f64,
}

/// What the XDP program's counters say after a run.
struct XdpCounters {
    snat_failures: f64,
    /// Non-zero counters outside the normal forwarding path, by name.
    unusual: Vec<(String, f64)>,
}

/// A balancer under test, running in the servo namespace; stopped on drop.
enum Running {
    Xdp(Agent),
    Haproxy { proc: Proc, _dir: tempfile::TempDir },
    Nftables,
}

impl Running {
    /// For the XDP balancer: SNAT failures, and every counter outside the normal forwarding
    /// path that is not zero (what to look at when a number is off).
    fn xdp_counters(&self) -> anyhow::Result<Option<XdpCounters>> {
        let Self::Xdp(agent) = self else {
            return Ok(None);
        };
        let m = agent.metrics()?;
        let failures = metric(&m, "elb_snat_failures_total", &[]);
        let normal = [
            "rx_packets",
            "new_flows",
            "fwd_tx",
            "fwd_redirect",
            "pass_not_ipv4",
            "pass_not_tcp",
            "pass_not_ours",
        ];
        let mut unusual = Vec::new();
        for line in m.lines() {
            let Some(rest) = line.strip_prefix("elb_xdp_packets_total{decision=\"") else {
                continue;
            };
            let Some((name, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let value: f64 = value.trim().parse().unwrap_or(0.0);
            if value > 0.0 && !normal.contains(&name) {
                unusual.push((name.to_string(), value));
            }
        }
        Ok(Some(XdpCounters {
            snat_failures: failures,
            unusual,
        }))
    }

    /// Fails if a balancer process died during the run.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Self::Haproxy { proc, .. } = self
            && !proc.is_running()
        {
            bail!("haproxy exited during the benchmark");
        }
        Ok(())
    }
}

/// One balancer running in fresh namespaces with its backends. Fields drop in order: the
/// balancer first, then the topology (nginx, namespaces, pins).
pub struct Setup {
    running: Running,
    /// The namespaces and backends.
    pub topo: Topology,
    /// Which balancer runs in the servo namespace.
    pub lb: Balancer,
}

impl Setup {
    /// Builds fresh namespaces, starts nginx on the backends (with `/big.bin`) and `lb` in the
    /// servo namespace, and checks that every backend answers through it.
    pub fn start(lb: Balancer) -> anyhow::Result<Self> {
        progress(format!("e2e {}: building fresh namespaces", lb.name()));
        let mut topo = Topology::build(BACKENDS)?;
        // The load generator must not run out of ports: a wide range, and TIME_WAIT ports
        // reused for new connections (wrk sometimes closes first, mostly through HAProxy).
        topo.client
            .sysctl("net.ipv4.ip_local_port_range", CLIENT_PORTS)?;
        topo.client.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        // The switch is a plain L2 bridge: no IP netfilter on bridged frames (br_netfilter is
        // built into this kernel and on by default; it cost about 10% of the connection rate).
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            if topo.switch.sysctl(key, "0").is_err() {
                progress(format!(
                    "e2e {}: could not set {key}=0 in the switch",
                    lb.name()
                ));
            }
        }
        topo.start_nginx(NGINX_WORKERS)?;
        for nginx in &topo.nginx {
            let big = fs::File::create(nginx.www().join("big.bin"))?;
            big.set_len(BIG_FILE_BYTES)?;
        }
        progress(format!("e2e {}: starting the balancer", lb.name()));
        let running = match lb {
            Balancer::Xdp => Running::Xdp(start_xdp(&topo)?),
            Balancer::Haproxy => {
                let (proc, dir) = start_haproxy(&topo)?;
                Running::Haproxy { proc, _dir: dir }
            }
            Balancer::Nftables => {
                start_nftables(&topo)?;
                Running::Nftables
            }
        };
        let setup = Self { running, topo, lb };
        // Every backend answers through the balancer before anything is measured.
        let spread = check_spread(&setup.topo)?;
        progress(format!("e2e {}: first answers from {spread:?}", lb.name()));
        Ok(setup)
    }

    /// The agent, for the XDP balancer.
    pub fn agent(&self) -> Option<&Agent> {
        match &self.running {
            Running::Xdp(agent) => Some(agent),
            _ => None,
        }
    }
}

fn measure(lb: Balancer, plan: Plan) -> anyhow::Result<Measured> {
    let mut setup = Setup::start(lb)?;
    let Setup { running, topo, .. } = &mut setup;
    let client = topo.client.name().to_string();
    let name_url = format!("http://{VIP}/name");
    let big_url = format!("http://{VIP}/big.bin");

    if plan.warmup_secs > 0 {
        progress(format!(
            "e2e {}: warm-up ({} s)",
            lb.name(),
            plan.warmup_secs
        ));
        wrk(
            &client,
            &WrkArgs {
                threads: plan.threads,
                conns: plan.conns,
                secs: plan.warmup_secs,
                close: true,
                latency: false,
                url: &name_url,
            },
        )?;
        settle();
    }

    progress(format!(
        "e2e {}: new connections/s ({} s, -c{})",
        lb.name(),
        plan.secs,
        plan.conns
    ));
    wait_quiet(lb, plan)?;
    let cpu0 = CpuSample::take()?;
    let cps = wrk(
        &client,
        &WrkArgs {
            threads: plan.threads,
            conns: plan.conns,
            secs: plan.secs,
            close: true,
            latency: false,
            url: &name_url,
        },
    )?;
    let cpu = CpuSample::take()?.since(&cpu0);
    let per_10k = |cpu_s: f64| {
        if cps.requests > 0 {
            cpu_s * 10_000.0 / cps.requests as f64
        } else {
            f64::NAN
        }
    };
    let cpu_s_per_10k = per_10k(cpu.ours_s());
    let cpu_s_per_10k_raw = per_10k(cpu.machine_s);
    if cpu.steal_frac() > 0.05 {
        progress(format!(
            "e2e {}: WARNING: the hypervisor stole {:.0}% of the CPU time during the run",
            lb.name(),
            cpu.steal_frac() * 100.0
        ));
    }
    if cpu.others_frac() > QUIET {
        progress(format!(
            "e2e {}: WARNING: other jobs used {:.0}% of the machine during the run ({:.1} of \
             {:.1} CPU-s, subtracted)",
            lb.name(),
            cpu.others_frac() * 100.0,
            cpu.others_s,
            cpu.machine_s
        ));
    }
    running.check_alive()?;
    settle();
    wait_quiet(lb, plan)?;

    progress(format!(
        "e2e {}: keep-alive requests/s ({} s, -c{})",
        lb.name(),
        plan.secs,
        plan.conns
    ));
    let rps = wrk(
        &client,
        &WrkArgs {
            threads: plan.threads,
            conns: plan.conns,
            secs: plan.secs,
            close: false,
            latency: true,
            url: &name_url,
        },
    )?;
    running.check_alive()?;
    settle();
    wait_quiet(lb, plan)?;

    progress(format!(
        "e2e {}: bulk download ({} s, -c{})",
        lb.name(),
        plan.secs,
        plan.bulk_conns
    ));
    let bulk = wrk(
        &client,
        &WrkArgs {
            threads: plan.bulk_threads,
            conns: plan.bulk_conns,
            secs: plan.secs,
            close: false,
            latency: false,
            url: &big_url,
        },
    )?;
    running.check_alive()?;
    let gbps = bulk.bytes_per_s * 8.0 / 1e9;

    let mut snat_failures = None;
    if let Some(XdpCounters {
        snat_failures: failures,
        unusual,
    }) = running.xdp_counters()?
    {
        snat_failures = Some(failures);
        if failures > 0.0 {
            progress(format!(
                "e2e {}: WARNING: {failures} SYNs refused for lack of a SNAT tuple",
                lb.name()
            ));
        }
        if !unusual.is_empty() {
            progress(format!(
                "e2e {}: XDP counters off the fast path: {unusual:?}",
                lb.name()
            ));
        }
    }
    drop(setup);
    Ok(Measured {
        cps,
        cpu_s_per_10k,
        rps,
        gbps,
        snat_failures,
        cpu_s_per_10k_raw,
        others_cpu_frac: cpu.others_frac(),
        steal_frac: cpu.steal_frac(),
    })
}

/// A short pause between runs (lets closing connections finish).
fn settle() {
    thread::sleep(Duration::from_millis(500));
}

pub(super) fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()?;
    anyhow::ensure!(out.status.success(), "{tool} not found");
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// GETs `/name` on new connections until every backend answered; returns the names seen.
fn check_spread(topo: &Topology) -> anyhow::Result<Vec<String>> {
    let vip = topo.vip();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_err = String::new();
    while seen.len() < BACKENDS {
        if Instant::now() > deadline {
            bail!("only {seen:?} answered through the balancer ({last_err})");
        }
        match topo.client.run(|| get_once(vip, "/name")) {
            Ok(r) if r.status == 200 => {
                let name = r.text();
                if !seen.contains(&name) {
                    seen.push(name);
                }
            }
            Ok(r) => last_err = format!("HTTP {}", r.status),
            Err(e) => {
                last_err = format!("{e:#}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    seen.sort();
    Ok(seen)
}

// ----- the balancers ---------------------------------------------------------------------------

fn start_xdp(topo: &Topology) -> anyhow::Result<Agent> {
    for addr in &SNAT_ADDRS[1..] {
        topo.servo
            .ip(&["addr", "add", &format!("{addr}/24"), "dev", "s1"])?;
    }
    let snat = SNAT_ADDRS
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut cfg = format!(
        r#"interfaces = ["s0", "s1"]
pin_root = "{pin}"
metrics_listen = "{api}"
snat_ports = "20000-59999"
conntrack_entries = {CONNTRACK_ENTRIES}

[[snat]]
interface = "s1"
addresses = [{snat}]

[[snat]]
interface = "s0"
addresses = ["{VIP}"]

[[LoadBalancers]]
LoadBalancerName = "bench"
Vips = ["{VIP}"]
Listeners = [{{ Protocol = "TCP", LoadBalancerPort = 80, InstancePort = 80 }}]
Instances = [
"#,
        pin = topo.pin_root.display(),
        api = crate::agent::API,
    );
    for i in 0..BACKENDS {
        let _ = writeln!(
            cfg,
            "  {{ InstanceId = \"i-{}\", Address = \"{}\" }},",
            i + 1,
            backend_addr(i)
        );
    }
    cfg.push_str(
        "]\n\n[LoadBalancers.HealthCheck]\nTarget = \"TCP:80\"\nInterval = 5\nTimeout = 2\n\
         UnhealthyThreshold = 2\nHealthyThreshold = 2\n",
    );
    let agent = Agent::start(topo, &cfg)?;
    let want: Vec<(String, &str)> = (1..=BACKENDS)
        .map(|i| (format!("i-{i}"), "InService"))
        .collect();
    let want: Vec<(&str, &str)> = want.iter().map(|(i, s)| (i.as_str(), *s)).collect();
    progress("e2e xdp: waiting for the three instances to be InService");
    agent
        .wait_states("bench", &want, Duration::from_secs(30))
        .with_context(|| format!("agent log:\n{}", agent.log_text()))?;
    Ok(agent)
}

fn start_haproxy(topo: &Topology) -> anyhow::Result<(Proc, tempfile::TempDir)> {
    let dir = tempdir("haproxy")?;
    let mut cfg = format!(
        "global
    nbthread 2
    maxconn 8000
    tune.maxaccept 64

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    maxconn 8000

frontend bench
    bind {VIP}:80
    default_backend web

backend web
    balance roundrobin
"
    );
    for i in 0..BACKENDS {
        let _ = writeln!(cfg, "    server b{} {}:80", i + 1, backend_addr(i));
    }
    spawn_haproxy(topo, dir, &cfg, 80)
}

/// Runs HAProxy with `cfg` in the servo namespace (config and log in `dir`) and waits until it
/// listens on `port`.
pub(super) fn spawn_haproxy(
    topo: &Topology,
    dir: tempfile::TempDir,
    cfg: &str,
    port: u16,
) -> anyhow::Result<(Proc, tempfile::TempDir)> {
    let path = dir.path().join("haproxy.cfg");
    fs::write(&path, cfg)?;
    // Validate first: a config error then shows as such instead of as a dead process.
    topo.servo
        .exec(&["haproxy", "-c", "-q", "-f", &path.display().to_string()])?;
    let log = fs::File::create(dir.path().join("haproxy.log"))?;
    let mut cmd = topo.servo.command("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut proc = Proc::spawn(cmd, "haproxy")?;
    let servo = topo.servo.name().to_string();
    crate::netns::wait_for(Duration::from_secs(10), "haproxy listening", || {
        if !proc.is_running() {
            return Some(false);
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &servo, "ss", "-Hltn"])
            .arg(format!("sport = :{port}"))
            .output()
            .ok()?;
        (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(true)
    })?
    .then_some(())
    .with_context(|| {
        format!(
            "haproxy exited: {}",
            fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default()
        )
    })?;
    Ok((proc, dir))
}

fn start_nftables(topo: &Topology) -> anyhow::Result<()> {
    let map = (0..BACKENDS)
        .map(|i| format!("{i} : {}", backend_addr(i)))
        .collect::<Vec<_>>()
        .join(", ");
    let rules = format!(
        "table ip elbbench {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP} tcp dport 80 dnat to numgen inc mod {BACKENDS} map {{ {map} }}
    }}
    chain post {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"s1\" masquerade
    }}
}}
"
    );
    let dir = tempdir("nft")?;
    let path = dir.path().join("rules.nft");
    fs::write(&path, rules)?;
    topo.servo.sysctl("net.ipv4.ip_forward", "1")?;
    topo.servo
        .exec(&["nft", "-f", &path.display().to_string()])?;
    Ok(())
}

// ----- wrk --------------------------------------------------------------------------------------

pub(super) struct WrkArgs<'a> {
    pub(super) threads: u32,
    pub(super) conns: u32,
    pub(super) secs: u32,
    pub(super) close: bool,
    pub(super) latency: bool,
    pub(super) url: &'a str,
}

/// What a wrk run reported.
#[derive(Debug, Default, Clone)]
pub struct WrkStats {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Bytes read per second.
    pub bytes_per_s: f64,
    /// Socket errors: connect, read, write, timeout.
    pub socket_errors: [u64; 4],
    /// Responses other than 2xx/3xx.
    pub non_2xx: u64,
    /// Latency percentiles (with `--latency`), milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WrkStats {
    /// Socket errors, timeouts and non-2xx/3xx responses.
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non_2xx
    }
}

/// Runs wrk in `ns` (killed if it overruns or on error) and parses its report.
pub(super) fn wrk(ns: &str, a: &WrkArgs) -> anyhow::Result<WrkStats> {
    let dir = tempdir("wrk")?;
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "wrk"])
        .arg(format!("-t{}", a.threads))
        .arg(format!("-c{}", a.conns))
        .arg(format!("-d{}s", a.secs))
        .args(["--timeout", "10s"]);
    if a.close {
        cmd.args(["-H", "Connection: close"]);
    }
    if a.latency {
        cmd.arg("--latency");
    }
    cmd.arg(a.url)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?);
    let mut proc = Proc::spawn(cmd, "wrk")?;
    let status = proc.wait_timeout(Duration::from_secs(u64::from(a.secs) + 30))?;
    let out = fs::read_to_string(&out_path)?;
    if !status.success() {
        bail!(
            "wrk failed ({status}): {}{}",
            out,
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    parse_wrk(&out).with_context(|| format!("parsing wrk output:\n{out}"))
}

/// Parses wrk's text report.
pub fn parse_wrk(text: &str) -> anyhow::Result<WrkStats> {
    let mut s = WrkStats::default();
    let mut have_rps = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            s.rps = v.trim().parse()?;
            have_rps = true;
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            s.bytes_per_s = parse_size(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for (i, part) in v.split(',').enumerate().take(4) {
                s.socket_errors[i] = part
                    .split_whitespace()
                    .nth(1)
                    .context("socket errors")?
                    .parse()?;
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx = v.trim().parse()?;
        } else if line.contains(" requests in ") {
            s.requests = line
                .split_whitespace()
                .next()
                .context("requests")?
                .parse()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            s.p50_ms = parse_time_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            s.p99_ms = parse_time_ms(v.trim())?;
        }
    }
    anyhow::ensure!(have_rps, "no Requests/sec line");
    Ok(s)
}

/// `1.23GB` (wrk's binary units) -> bytes.
fn parse_size(v: &str) -> anyhow::Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse()?;
    let mult = match unit {
        "B" | "" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => bail!("unknown size unit {unit:?}"),
    };
    Ok(num * mult)
}

/// `812.00us`, `1.23ms`, `2.00s`, `1.00m` -> milliseconds.
fn parse_time_ms(v: &str) -> anyhow::Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse()?;
    Ok(match unit {
        "us" => num / 1000.0,
        "ms" => num,
        "s" => num * 1000.0,
        "m" => num * 60_000.0,
        "h" => num * 3_600_000.0,
        _ => bail!("unknown time unit {unit:?}"),
    })
}

// ----- CPU --------------------------------------------------------------------------------------

/// Jiffies per second as /proc/stat counts them (USER_HZ).
const USER_HZ: f64 = 100.0;

/// The machine counts as quiet below this busy fraction.
const QUIET: f64 = 0.15;

/// Waits up to the plan's limit for the machine to be quiet (other jobs share it and distort
/// every number, the CPU ones most).
fn wait_quiet(lb: Balancer, plan: Plan) -> anyhow::Result<()> {
    // Tiny runs only prove the harness works: no waiting.
    if plan.quiet_wait_secs == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(plan.quiet_wait_secs.into());
    let mut warned = false;
    loop {
        let busy = background_cpu(Duration::from_secs(1))?;
        if busy < QUIET {
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress(format!(
                "e2e {}: WARNING: the machine is {:.0}% busy with other work; measuring anyway \
                 (the numbers, CPU ones most, are distorted)",
                lb.name(),
                busy * 100.0
            ));
            return Ok(());
        }
        if !warned {
            progress(format!(
                "e2e {}: the machine is {:.0}% busy with other work; waiting up to {} s for it \
                 to calm down",
                lb.name(),
                busy * 100.0,
                plan.quiet_wait_secs
            ));
            warned = true;
        }
    }
}

/// Fraction of the whole machine busy over `sample` with no load of ours (0..1).
fn background_cpu(sample: Duration) -> anyhow::Result<f64> {
    let busy0 = cpu_jiffies()?.0;
    let t0 = Instant::now();
    thread::sleep(sample);
    let busy = (cpu_jiffies()?.0 - busy0) as f64 / USER_HZ;
    let cpus = thread::available_parallelism().map_or(1, usize::from) as f64;
    Ok(busy / (t0.elapsed().as_secs_f64() * cpus))
}

/// CPU time counters at one instant.
struct CpuSample {
    /// Busy jiffies of the whole machine.
    machine: u64,
    /// Steal jiffies.
    steal: u64,
    /// Clock ticks used by processes outside this benchmark (with their reaped children).
    others: u64,
    at: Instant,
}

impl CpuSample {
    fn take() -> anyhow::Result<Self> {
        let others = others_ticks()?;
        let (machine, steal) = cpu_jiffies()?;
        Ok(Self {
            machine,
            steal,
            others,
            at: Instant::now(),
        })
    }

    /// CPU time used between `start` and this sample.
    fn since(&self, start: &Self) -> CpuUse {
        CpuUse {
            machine_s: self.machine.saturating_sub(start.machine) as f64 / USER_HZ,
            steal_s: self.steal.saturating_sub(start.steal) as f64 / USER_HZ,
            others_s: self.others.saturating_sub(start.others) as f64 / USER_HZ,
            wall_s: self.at.duration_since(start.at).as_secs_f64(),
        }
    }
}

/// CPU time over an interval.
struct CpuUse {
    machine_s: f64,
    steal_s: f64,
    others_s: f64,
    wall_s: f64,
}

impl CpuUse {
    /// The benchmark's CPU seconds: the machine's minus the other processes'.
    fn ours_s(&self) -> f64 {
        (self.machine_s - self.others_s).max(0.0)
    }

    /// The share of the machine's capacity other processes used.
    fn others_frac(&self) -> f64 {
        self.others_s / self.capacity_s()
    }

    /// The share of the machine's capacity the hypervisor gave to other guests.
    fn steal_frac(&self) -> f64 {
        self.steal_s / self.capacity_s()
    }

    fn capacity_s(&self) -> f64 {
        let cpus = thread::available_parallelism().map_or(1, usize::from) as f64;
        (self.wall_s * cpus).max(1e-9)
    }
}

/// Clock ticks (utime + stime + cutime + cstime) of every process that is neither this process,
/// nor one of its descendants (wrk, nginx, HAProxy, the agent), nor a kernel thread (softirq
/// work on behalf of the benchmark). Summed over all processes, so a child that exits and is
/// reaped moves its time into its parent's cutime without being lost or counted twice.
fn others_ticks() -> anyhow::Result<u64> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    struct Entry {
        ppid: u32,
        kthread: bool,
        ticks: u64,
    }
    let mut procs = std::collections::HashMap::new();
    for dirent in fs::read_dir("/proc")? {
        let Ok(dirent) = dirent else { continue };
        let Some(pid) = dirent
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // The process may have exited since the listing: skip it.
        let Ok(stat) = fs::read_to_string(dirent.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 15 {
            continue;
        }
        let num = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        procs.insert(
            pid,
            Entry {
                ppid: num(1) as u32,
                kthread: num(6) & PF_KTHREAD != 0,
                ticks: num(11) + num(12) + num(13) + num(14),
            },
        );
    }
    let me = std::process::id();
    let ours = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match procs.get(&pid) {
                Some(e) if e.ppid != 0 && e.ppid != pid => pid = e.ppid,
                _ => return false,
            }
        }
        false
    };
    Ok(procs
        .iter()
        .filter(|(pid, e)| !e.kthread && !ours(**pid))
        .map(|(_, e)| e.ticks)
        .sum())
}

/// Jiffies of the whole machine: busy (user + nice + system + irq + softirq + steal) and, of
/// those, steal (time the hypervisor gave our virtual CPUs to someone else).
fn cpu_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(v.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal
    Ok((v[0] + v[1] + v[2] + v[5] + v[6] + v[7], v[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_reports() {
        let text = "Running 4s test @ http://198.18.0.1/name
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.27ms    2.69ms  40.27ms   75.53%
    Req/Sec     4.42k   458.89     5.55k    70.50%
  Latency Distribution
     50%  812.00us
     75%    8.50ms
     90%   10.58ms
     99%    1.34s
  88016 requests in 10.01s, 20.23MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:   8795.77
Transfer/sec:      1.50GB
";
        let s = parse_wrk(text).unwrap();
        assert_eq!(s.requests, 88016);
        assert!((s.rps - 8795.77).abs() < 1e-9);
        assert!((s.p50_ms - 0.812).abs() < 1e-9);
        assert!((s.p99_ms - 1340.0).abs() < 1e-9);
        assert_eq!(s.socket_errors, [1, 2, 3, 4]);
        assert_eq!(s.errors(), 15);
        assert!((s.bytes_per_s - 1.5 * 1024.0 * 1024.0 * 1024.0).abs() < 1.0);
    }
}
