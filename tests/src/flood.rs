//! A spoofed SYN flood against a servo running the shipped example configuration, with
//! legitimate clients before, during and after it (the namespaced test `tests/flood.rs` and the
//! benchmark's `flood` section both run this).
//!
//! ```text
//!  client ns: flood generator (live frames, spoofed 198.18.128.0/17) + legitimate clients
//!     c0 (elb_sink_spoofed: drops what the servo sends to spoofed addresses)
//!  servo ns: elb-servo run, packaging/servo/servo.toml.example adapted to the namespaces
//!  2 backends: nginx
//! ```
//! The generator sends frames out of `c0` as fast as the machine allows (one CPU), for the
//! flood's duration. Meanwhile `established` keep-alive connections, opened before the flood,
//! send requests back to back; `legit` new connections are made (each: connect, GET, close) at
//! an even pace over the flood; and `after` more once it is over.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions};
use elb_common::{Counters, FlowKey, GEN_FRAME_LEN, GenTemplate};

use crate::{
    agent::{API, Agent},
    fixture::xdp_md,
    http::Connection,
    netns::Netns,
    packet::{TCP_SYN, Tcp},
    progs,
    topo::{CLIENT, SNAT, Topology, VIP, backend_addr},
};

/// How big a flood and how many clients.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// How long the flood lasts.
    pub flood: Duration,
    /// Keep-alive connections opened before the flood, carrying requests throughout.
    pub established: usize,
    /// New connections made during the flood.
    pub legit: usize,
    /// New connections made after it.
    pub after: usize,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Frames the generator sent, and for how long.
    pub syns_sent: u64,
    pub flood_secs: f64,
    /// SYNs the servo absorbed per second (answered with a cookie, or given state).
    pub syns_absorbed_per_s: f64,
    /// Established connections that never failed, of `Plan::established`.
    pub established_ok: usize,
    /// Requests they carried during the flood.
    pub established_requests: u64,
    /// New connections that got their answer during / after the flood.
    pub legit_ok: usize,
    /// The servo's flow halves of the connections that failed (diagnostics).
    pub stuck: Vec<String>,
    pub after_ok: usize,
    /// Median and slowest successful new connection during the flood, ms.
    pub legit_p50_ms: f64,
    pub legit_max_ms: f64,
    /// The XDP program's counters over the flood.
    pub counters: Counters,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
    /// What the agent logged about expiring flows, and its warnings.
    pub agent_log: String,
}

/// The shipped example configuration, adapted to the topology: its interfaces, SNAT address,
/// VIP and instances are the namespaces' (the example's one SNAT address stays one), every
/// listener's instance port is nginx's 80, and the health check is made fast (the flood does
/// not touch health checks; the example's 3 x 10 s would only slow the start).
pub fn example_config(topo: &Topology, example: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(example)
        .with_context(|| format!("reading {}", example.display()))?;
    let mut cfg: toml::Table = toml::from_str(&text)?;
    cfg.insert("interfaces".into(), toml::Value::try_from(["s0", "s1"])?);
    cfg.insert(
        "pin_root".into(),
        topo.pin_root.display().to_string().into(),
    );
    cfg.insert("metrics_listen".into(), API.into());
    let snat = cfg
        .get_mut("snat")
        .and_then(|s| s.as_array_mut())
        .context("the example has no [[snat]]")?;
    ensure!(snat.len() == 1, "the example has one [[snat]] section");
    let addresses = snat[0]
        .get("addresses")
        .and_then(|a| a.as_array())
        .map_or(0, Vec::len);
    let s = snat[0].as_table_mut().context("[[snat]]")?;
    s.insert("interface".into(), "s1".into());
    let ours: Vec<String> = (0..addresses)
        .map(|i| std::net::Ipv4Addr::from(u32::from(SNAT) + i as u32).to_string())
        .collect();
    s.insert("addresses".into(), toml::Value::try_from(ours)?);
    let zone = cfg.get("zone").and_then(|z| z.as_str()).map(str::to_string);
    let lbs = cfg
        .get_mut("LoadBalancers")
        .and_then(|l| l.as_array_mut())
        .context("the example has no [[LoadBalancers]]")?;
    let lb = lbs[0].as_table_mut().context("[[LoadBalancers]]")?;
    lb.insert("Vips".into(), toml::Value::try_from([VIP.to_string()])?);
    let instances = lb
        .get("Instances")
        .and_then(|i| i.as_array())
        .context("Instances")?
        .len();
    let mut list = Vec::new();
    for i in 0..instances.min(topo.backends.len()) {
        let mut t = toml::Table::new();
        t.insert("InstanceId".into(), format!("i-{}", i + 1).into());
        t.insert("Address".into(), backend_addr(i).to_string().into());
        if let Some(z) = &zone {
            t.insert("Zone".into(), z.clone().into());
        }
        list.push(toml::Value::Table(t));
    }
    lb.insert("Instances".into(), toml::Value::Array(list));
    for l in lb
        .get_mut("Listeners")
        .and_then(|l| l.as_array_mut())
        .context("Listeners")?
    {
        l.as_table_mut()
            .context("listener")?
            .insert("InstancePort".into(), 80.into());
    }
    let mut hc = toml::Table::new();
    hc.insert("Target".into(), "HTTP:80/name".into());
    hc.insert("Interval".into(), 5.into());
    hc.insert("Timeout".into(), 2.into());
    hc.insert("UnhealthyThreshold".into(), 2.into());
    hc.insert("HealthyThreshold".into(), 2.into());
    lb.insert("HealthCheck".into(), toml::Value::Table(hc));
    Ok(toml::to_string(&cfg)?)
}

/// The shipped example's path in this checkout.
pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/servo/servo.toml.example")
}

/// One new connection: connect, GET /name, read the answer. Returns its duration.
///
/// The timeout (20 s) lets a client whose SYN or first segment the flooded link kept dropping
/// retransmit once more after the 10 s flood (Linux retransmits a SYN after 1, 3, 7 and 15 s);
/// Linux's own default gives up on a connect only after 127 s.
fn one_request(vip: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = Connection::open(vip, Duration::from_secs(20))?;
    let port = conn.local_addr()?.port();
    let r = conn
        .get("/name", false)
        .with_context(|| format!("client port {port}"))?;
    ensure!(r.status == 200, "HTTP {}", r.status);
    Ok(started.elapsed())
}

/// Sends spoofed SYNs out of `c0` until `stop`; returns how many.
fn generate(
    client: &Netns,
    c0_mac: [u8; 6],
    s0_mac: [u8; 6],
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut ebpf = progs::load(&[progs::GEN_SYN])?;
    let mut syn = Tcp::new((CLIENT, 1024), (VIP, 80), TCP_SYN);
    syn.src_mac = c0_mac;
    syn.dst_mac = s0_mac;
    let frame = syn.frame();
    let mut t = GenTemplate {
        frame: [0; GEN_FRAME_LEN],
        _pad: [0; 2],
    };
    t.frame.copy_from_slice(&frame);
    let mut map: aya::maps::Array<_, GenTemplate> = ebpf
        .map_mut("gen_template")
        .context("gen_template map")?
        .try_into()?;
    map.set(0, t, 0)?;
    let generator = progs::program(&ebpf, progs::GEN_SYN)?;
    let c0 = client.ifindex("c0")?;
    client.run(|| {
        let mut sent = 0u64;
        let ctx = xdp_md(frame.len() as u32, c0);
        while !stop.load(Ordering::Relaxed) {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&frame);
            opts.ctx_in = Some(&ctx);
            opts.repeat = 200_000;
            opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
            generator.test_run(opts).context("live-frames test run")?;
            sent += 200_000;
        }
        Ok(sent)
    })
}

/// Runs the scenario on a fresh topology.
pub fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let mut topo = Topology::build(2)?;
    topo.start_nginx(1)?;
    let config = example_config(&topo, &example_path())?;
    let agent = Agent::start(&topo, &config)?;
    agent
        .wait_states(
            "web",
            &[("i-1", "InService"), ("i-2", "InService")],
            Duration::from_secs(30),
        )
        .with_context(|| format!("agent log:\n{}", agent.log_text()))?;
    // The servo answers spoofed SYNs towards addresses that do not exist: drop those at the
    // client's side (its kernel would spend the CPU the measurement needs).
    let dir = PathBuf::from(format!("{}-sink", topo.pin_root.display()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sink = dir.join("sink");
    progs::pin(progs::SINK_SPOOFED, &sink)?;
    let result = scenario(&topo, &sink, plan).map(|mut o| {
        o.agent_log = agent
            .log_text()
            .lines()
            .filter(|l| l.contains("flows expired") || l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n");
        o
    });
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn scenario(topo: &Topology, sink: &Path, plan: Plan) -> anyhow::Result<Outcome> {
    topo.replace_peer_program(&topo.client, "c0", sink)?;
    let vip = topo.vip();
    let maps = topo.maps()?;
    let failures = Mutex::new(Vec::<String>::new());
    let fail = |what: String| {
        let mut f = failures.lock().expect("failures");
        if f.len() < 50 {
            f.push(what);
        }
    };

    // Keep-alive connections, opened before the flood.
    let mut conns: Vec<Connection> = topo.client.run(|| {
        (0..plan.established)
            .map(|_| {
                let mut c = Connection::open(vip, Duration::from_secs(10))?;
                let r = c.get("/name", true)?;
                ensure!(r.status == 200, "HTTP {}", r.status);
                Ok(c)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;

    let before = maps.counters()?;
    let stop = AtomicBool::new(false);
    let flood_over = AtomicBool::new(false);
    let requests = AtomicU64::new(0);
    let (c0_mac, s0_mac) = (topo.client.mac("c0")?, topo.servo.mac("s0")?);
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let (sent, est_ok, legit) = thread::scope(|s| {
        let generator = s.spawn(|| generate(&topo.client, c0_mac, s0_mac, &stop));
        // Established connections: requests back to back, in a few threads.
        let workers = 8.min(plan.established.max(1));
        let per = plan.established.div_ceil(workers);
        let mut est_handles = Vec::new();
        for chunk in conns.chunks_mut(per.max(1)) {
            let (requests, flood_over, fail) = (&requests, &flood_over, &fail);
            est_handles.push(s.spawn(move || {
                let mut ok = vec![true; chunk.len()];
                while !flood_over.load(Ordering::Relaxed) {
                    for (i, c) in chunk.iter_mut().enumerate() {
                        if !ok[i] {
                            continue;
                        }
                        match c.get("/name", true) {
                            Ok(r) if r.status == 200 => {
                                requests.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                ok[i] = false;
                                fail(format!("established connection: HTTP {}", r.status));
                            }
                            Err(e) => {
                                ok[i] = false;
                                fail(format!("established connection: {e:#}"));
                            }
                        }
                    }
                }
                ok.iter().filter(|o| **o).count()
            }));
        }
        // New connections at an even pace during the flood.
        let legit_threads = 25.min(plan.legit.max(1));
        let interval = plan.flood.mul_f64(0.8) / (plan.legit.max(1) as u32);
        let mut legit_handles = Vec::new();
        for t in 0..legit_threads {
            let fail = &fail;
            let client = topo.client.name().to_string();
            legit_handles.push(s.spawn(move || {
                Netns::run_named(&client, || {
                    let mut times = Vec::new();
                    let mut n = t;
                    while n < plan.legit {
                        let due = plan.flood.mul_f64(0.1) + interval * n as u32;
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            thread::sleep(wait);
                        }
                        match one_request(vip) {
                            Ok(d) => times.push(d),
                            Err(e) => fail(format!("new connection during the flood: {e:#}")),
                        }
                        n += legit_threads;
                    }
                    times
                })
            }));
        }
        // The flood lasts its planned time, whatever the clients are waiting for: a client
        // whose packets the saturated link lost gets in with a retransmission after it.
        if let Some(rest) = plan.flood.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
        stop.store(true, Ordering::Relaxed);
        let sent = generator.join().expect("generator thread");
        outcome.flood_secs = started.elapsed().as_secs_f64();
        let mut legit_times = Vec::new();
        for h in legit_handles {
            legit_times.extend(h.join().expect("legit client thread"));
        }
        // Let the established connections run a little past the flood, then stop them.
        thread::sleep(Duration::from_millis(500));
        flood_over.store(true, Ordering::Relaxed);
        let est_ok: usize = est_handles
            .into_iter()
            .map(|h| h.join().expect("established thread"))
            .sum();
        (sent, est_ok, legit_times)
    });
    let sent = sent?;
    let after_counters = maps.counters()?;
    // After the flood.
    let after_ok = topo.client.run(|| {
        (0..plan.after)
            .filter(|_| match one_request(vip) {
                Ok(_) => true,
                Err(e) => {
                    fail(format!("new connection after the flood: {e:#}"));
                    false
                }
            })
            .count()
    });
    let c = after_counters.since(&before);
    let mut times: Vec<f64> = legit.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    times.sort_by(f64::total_cmp);
    outcome.syns_sent = sent;
    outcome.syns_absorbed_per_s =
        (c.syncookies_sent + c.new_flows) as f64 / outcome.flood_secs.max(1e-9);
    outcome.established_ok = est_ok;
    outcome.established_requests = requests.load(Ordering::Relaxed);
    outcome.legit_ok = legit.len();
    outcome.after_ok = after_ok;
    outcome.legit_p50_ms = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    outcome.legit_max_ms = times.last().copied().unwrap_or(f64::NAN);
    outcome.counters = c;
    outcome.failures = failures.into_inner().unwrap_or_default();
    // What the servo holds for the connections that failed.
    for f in &outcome.failures {
        let Some(port) = f
            .split("client port ")
            .nth(1)
            .and_then(|p| p.split(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let key = FlowKey {
            src: CLIENT.octets(),
            dst: VIP.octets(),
            sport: port,
            dport: 80,
            proto: elb_common::PROTO_TCP,
            ..FlowKey::default()
        };
        let forward = maps.flow(&key)?;
        let reverse = match &forward {
            Some(f) => maps.flow(&f.partner_key())?,
            None => None,
        };
        outcome.stuck.push(format!(
            "port {port}: forward {forward:?} reverse {reverse:?}"
        ));
    }
    Ok(outcome)
}
