//! The servo agent (`elb-servo run`) end to end: real nginx backends, real health checks with
//! ELB thresholds, draining, idle timeouts, reloads, a kill -9 restart, /metrics.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use elb_common::{FlowKey, PROTO_TCP};
use elb_contract::{InstanceState, ReasonCode};
use tests::{
    agent::{Agent, FAST_HTTP_CHECK, metric, servo_section, web_lb},
    http::{Connection, write_pattern_file},
    netns::{bin, wait_for},
    topo::{CLIENT, Topology, VIP},
};

const ALL_IN: [(&str, &str); 3] = [
    ("i-1", "InService"),
    ("i-2", "InService"),
    ("i-3", "InService"),
];

fn topology() -> Topology {
    let mut topo = Topology::build(3).expect("topology");
    topo.start_nginx(1).expect("nginx");
    topo
}

fn start(topo: &Topology, attributes: &str) -> Agent {
    let cfg = servo_section(topo) + &web_lb(topo, FAST_HTTP_CHECK, attributes);
    Agent::start(topo, &cfg).expect("starting the agent")
}

/// Sends `n` requests on new connections to `addr`; counts answers per backend name.
fn spread(topo: &Topology, addr: SocketAddr, n: u32) -> BTreeMap<String, u32> {
    topo.client.run(|| {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let r = Connection::open(addr, Duration::from_secs(5))
                .and_then(|mut c| c.get("/name", false));
            *counts
                .entry(
                    r.map(|r| r.text())
                        .unwrap_or_else(|e| format!("error: {e}")),
                )
                .or_default() += 1;
        }
        counts
    })
}

fn even(counts: &BTreeMap<String, u32>, names: &[&str], each: u32) -> bool {
    counts.len() == names.len() && names.iter().all(|n| counts.get(*n) == Some(&each))
}

#[test]
fn stopped_backend_goes_out_of_service_and_comes_back() {
    let mut topo = topology();
    let agent = start(&topo, "");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let counts = spread(&topo, topo.vip(), 30);
    assert!(even(&counts, &["b1", "b2", "b3"], 10), "{counts:?}");

    topo.nginx[1].stop();
    let stopped = Instant::now();
    agent
        .wait_states("web", &[("i-2", "OutOfService")], Duration::from_secs(30))
        .unwrap();
    let health = agent.health().unwrap();
    let i2 = health.iter().find(|v| v.instance_id == "i-2").unwrap();
    assert_eq!(i2.reason_code, ReasonCode::Instance);
    assert!(
        i2.description.contains("UnhealthyThreshold"),
        "{}",
        i2.description
    );
    println!(
        "i-2 OutOfService {:.1?} after its server stopped",
        stopped.elapsed()
    );
    thread::sleep(Duration::from_secs(6));
    let log = agent.log_text();
    let logged = log
        .lines()
        .filter(|l| {
            l.contains("instance health changed")
                && l.contains("key=web/i-2")
                && l.contains(" state=OutOfService")
        })
        .count();
    assert_eq!(
        logged, 1,
        "the transition is logged once, even as failures go on:\n{log}"
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(4),
        "needs UnhealthyThreshold (2) failures at a 5 s interval"
    );
    let counts = spread(&topo, topo.vip(), 30);
    assert!(
        even(&counts, &["b1", "b3"], 15),
        "new connections avoid i-2, the others share evenly: {counts:?}"
    );

    topo.nginx[1].restart().unwrap();
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let counts = spread(&topo, topo.vip(), 30);
    assert!(even(&counts, &["b1", "b2", "b3"], 10), "{counts:?}");
}

#[test]
fn http_target_answering_500_is_out_of_service_while_tcp_target_is_in() {
    let topo = topology();
    let http_check = r#"{ Target = "HTTP:80/fail", Interval = 5, Timeout = 2, UnhealthyThreshold = 2, HealthyThreshold = 2 }"#;
    let tcp_check = r#"{ Target = "TCP:80", Interval = 5, Timeout = 2, UnhealthyThreshold = 2, HealthyThreshold = 2 }"#;
    let tcp_lb = web_lb(&topo, tcp_check, "")
        .replace("LoadBalancerName = \"web\"", "LoadBalancerName = \"tcp\"")
        .replace("LoadBalancerPort = 80", "LoadBalancerPort = 8080")
        .replace("Protocol = \"HTTP\"", "Protocol = \"TCP\"");
    let cfg = servo_section(&topo) + &web_lb(&topo, http_check, "") + &tcp_lb;
    let agent = Agent::start(&topo, &cfg).unwrap();
    agent
        .wait_states("tcp", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    wait_for(Duration::from_secs(30), "web instances failed", || {
        let h = agent.health().ok()?;
        h.iter()
            .filter(|v| v.load_balancer_name == "web")
            .all(|v| {
                v.state == InstanceState::OutOfService && v.reason_code == ReasonCode::Instance
            })
            .then_some(())
    })
    .unwrap();
    // The same backends serve through the TCP listener and not through the HTTP one.
    let counts = spread(&topo, SocketAddr::from((VIP, 8080)), 9);
    assert!(even(&counts, &["b1", "b2", "b3"], 3), "{counts:?}");
    let refused = spread(&topo, topo.vip(), 3);
    assert!(
        refused.keys().all(|k| k.starts_with("error")),
        "no backend in service on :80: {refused:?}"
    );
}

fn keep_alive_backend(topo: &Topology) -> (Connection, String) {
    topo.client.run(|| {
        let mut conn = Connection::open(topo.vip(), Duration::from_secs(5)).unwrap();
        let name = conn.get("/name", true).unwrap().text();
        (conn, name)
    })
}

fn without_instance(topo: &Topology, name: &str, attributes: &str) -> String {
    let instance = format!("i-{}", &name[1..]);
    let lb = web_lb(topo, FAST_HTTP_CHECK, attributes);
    let kept: Vec<&str> = lb
        .lines()
        .filter(|l| !l.contains(&format!("\"{instance}\"")))
        .collect();
    servo_section(topo) + &kept.join("\n")
}

#[test]
fn draining_keeps_open_connections_until_the_timeout() {
    let topo = topology();
    let attrs = "ConnectionDraining = { Enabled = true, Timeout = 6 }";
    let agent = start(&topo, attrs);
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let (mut conn, pinned) = keep_alive_backend(&topo);

    agent
        .reload(&without_instance(&topo, &pinned, attrs))
        .unwrap();
    let deregistered = Instant::now();
    wait_for(Duration::from_secs(10), "the reload", || {
        agent
            .log_text()
            .contains("configuration accepted")
            .then_some(())
    })
    .unwrap();
    let counts = spread(&topo, topo.vip(), 20);
    assert!(
        !counts.contains_key(&pinned),
        "no new connection to the draining {pinned}: {counts:?}"
    );
    assert_eq!(counts.values().sum::<u32>(), 20);
    assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    // Inside the drain window the open connection works.
    while deregistered.elapsed() < Duration::from_secs(4) {
        let r = topo.client.run(|| conn.get("/name", true));
        assert_eq!(
            r.unwrap().text(),
            pinned,
            "open connection works while draining"
        );
        thread::sleep(Duration::from_millis(500));
    }
    // After the timeout it is cut.
    thread::sleep(Duration::from_secs(4));
    let after = topo.client.run(|| conn.get("/name", true));
    assert!(after.is_err(), "cut after the drain timeout: {after:?}");
}

#[test]
fn without_draining_deregistration_cuts_at_once() {
    let topo = topology();
    let agent = start(&topo, "ConnectionDraining = { Enabled = false }");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let (mut conn, pinned) = keep_alive_backend(&topo);
    agent.reload(&without_instance(&topo, &pinned, "")).unwrap();
    wait_for(Duration::from_secs(10), "the reload", || {
        agent
            .log_text()
            .contains("configuration accepted")
            .then_some(())
    })
    .unwrap();
    let after = topo.client.run(|| conn.get("/name", true));
    assert!(after.is_err(), "cut at once: {after:?}");
    let counts = spread(&topo, topo.vip(), 10);
    assert!(!counts.contains_key(&pinned), "{counts:?}");
}

#[test]
fn idle_flow_disappears_after_the_idle_timeout() {
    let topo = topology();
    let agent = start(&topo, "ConnectionSettings = { IdleTimeout = 2 }");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let (mut conn, _) = keep_alive_backend(&topo);
    let local = conn.local_addr().unwrap();
    let key = FlowKey {
        src: CLIENT.octets(),
        dst: VIP.octets(),
        sport: local.port(),
        dport: 80,
        proto: PROTO_TCP,
        _pad: 0,
        _pad1: 0,
    };
    let maps = topo.maps().unwrap();
    assert!(
        maps.flow(&key).unwrap().is_some(),
        "the flow exists while in use"
    );
    let idle_since = Instant::now();
    wait_for(Duration::from_secs(10), "the idle flow to be swept", || {
        maps.flow(&key).ok()?.is_none().then_some(())
    })
    .unwrap();
    let gone_after = idle_since.elapsed();
    println!("idle flow removed {gone_after:.1?} after its last packet (IdleTimeout 2 s)");
    assert!(
        gone_after >= Duration::from_millis(1500),
        "not before the idle timeout"
    );
    let after = topo.client.run(|| conn.get("/name", true));
    assert!(after.is_err(), "the expired connection is reset: {after:?}");
    assert!(maps.counters().unwrap().rst_no_flow >= 1);
}

#[test]
fn kill_9_and_restart_keep_a_download_and_a_keep_alive_session() {
    let topo = topology();
    let dir = tests::netns::tempdir("restart").unwrap();
    let file = dir.path().join("80m.bin");
    let expected = write_pattern_file(&file, 80 << 20).unwrap();
    for n in &topo.nginx {
        std::fs::create_dir_all(n.www().join("slow")).unwrap();
        std::os::unix::fs::symlink(&file, n.www().join("slow/80m.bin")).unwrap();
    }
    let mut agent = start(&topo, "");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let (mut session, session_backend) = keep_alive_backend(&topo);
    let flows_before = topo.maps().unwrap().counters().unwrap().new_flows;

    let received = AtomicU64::new(0);
    let vip = topo.vip();
    let result = thread::scope(|s| {
        let download = s.spawn(|| {
            topo.client.run(|| {
                let mut conn = Connection::open(vip, Duration::from_secs(10)).unwrap();
                conn.get_sha256("/slow/80m.bin", |got| {
                    received.store(got, Ordering::Relaxed)
                })
            })
        });
        wait_for(Duration::from_secs(10), "download under way", || {
            (received.load(Ordering::Relaxed) > 5 << 20).then_some(())
        })
        .unwrap();
        agent.kill9();
        thread::sleep(Duration::from_millis(500));
        agent.restart().unwrap();
        assert!(
            received.load(Ordering::Relaxed) < 80 << 20,
            "restart happened mid-download"
        );
        download.join().unwrap()
    });
    let (status, len, digest) = result.expect("download survives kill -9 and restart");
    assert_eq!((status, len, digest), (200, 80 << 20, expected));
    for _ in 0..5 {
        let r = topo
            .client
            .run(|| session.get("/name", true))
            .expect("keep-alive session survives");
        assert_eq!(r.text(), session_backend, "not re-routed");
    }
    assert_eq!(
        topo.maps().unwrap().counters().unwrap().new_flows,
        flows_before + 1,
        "only the download was a new flow"
    );
    assert!(agent.log_text().contains("adopted pinned dataplane state"));
    // Health is re-derived: the instances stay in service.
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
}

#[test]
fn sighup_adds_a_listener_and_refuses_an_invalid_load_balancer_alone() {
    let topo = topology();
    let agent = start(&topo, "");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let base = servo_section(&topo) + &web_lb(&topo, FAST_HTTP_CHECK, "");
    let with_8080 = base.replace(
        "Listeners = [{ Protocol = \"HTTP\", LoadBalancerPort = 80, InstancePort = 80 }]",
        "Listeners = [{ Protocol = \"HTTP\", LoadBalancerPort = 80, InstancePort = 80 }, { Protocol = \"HTTP\", LoadBalancerPort = 8080, InstancePort = 80 }]",
    );
    agent.reload(&with_8080).unwrap();
    let on_8080 = wait_for(Duration::from_secs(10), "listener 8080", || {
        let c = spread(&topo, SocketAddr::from((VIP, 8080)), 3);
        even(&c, &["b1", "b2", "b3"], 1).then_some(c)
    });
    assert!(on_8080.is_ok(), "{on_8080:?}");

    // `web` breaks a rule (Timeout above Interval) in the same file that adds load balancer
    // `tcp` on 9000: `tcp` is served, `web` refused and kept at the version accepted before.
    let tcp_check = r#"{ Target = "TCP:80", Interval = 5, Timeout = 2, UnhealthyThreshold = 2, HealthyThreshold = 2 }"#;
    let tcp_lb = web_lb(&topo, tcp_check, "")
        .replace("LoadBalancerName = \"web\"", "LoadBalancerName = \"tcp\"")
        .replace("LoadBalancerPort = 80", "LoadBalancerPort = 9000")
        .replace("Protocol = \"HTTP\"", "Protocol = \"TCP\"");
    let invalid =
        with_8080.replace("Interval = 5, Timeout = 2", "Interval = 5, Timeout = 9") + &tcp_lb;
    agent.reload(&invalid).unwrap();
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        agent
            .log_text()
            .contains("load balancer refused")
            .then_some(())
    })
    .unwrap();
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("load balancer refused")
            && l.contains("HealthCheck.Timeout")
            && l.contains("the version accepted before stays in service")),
        "the log says which and why: {log}"
    );
    agent
        .wait_states("tcp", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let counts = spread(&topo, SocketAddr::from((VIP, 9000)), 3);
    assert!(
        even(&counts, &["b1", "b2", "b3"], 1),
        "the valid one is served: {counts:?}"
    );
    let counts = spread(&topo, SocketAddr::from((VIP, 8080)), 3);
    assert!(
        even(&counts, &["b1", "b2", "b3"], 1),
        "the refused one keeps its running config: {counts:?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&tests::agent::get(topo.servo.name(), "/status").unwrap()).unwrap();
    assert_eq!(status["Refused"][0]["LoadBalancerName"], "web", "{status}");
    assert_eq!(status["Refused"][0]["ServingPrevious"], true, "{status}");
}

#[test]
fn metrics_match_the_requests_sent() {
    let topo = topology();
    let agent = start(&topo, "");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    let counts = spread(&topo, topo.vip(), 30);
    assert!(even(&counts, &["b1", "b2", "b3"], 10), "{counts:?}");
    let m = agent.metrics().unwrap();
    for i in 1..=3 {
        let inst = format!("instance=\"i-{i}\"");
        assert_eq!(
            metric(&m, "elb_backend_new_flows_total", &[&inst]),
            10.0,
            "{inst}\n{m}"
        );
        assert!(
            metric(
                &m,
                "elb_backend_packets_total",
                &[&inst, "direction=\"in\""]
            ) >= 50.0,
            "SYN, ACKs, request, FIN per connection"
        );
        assert_eq!(metric(&m, "elb_instance_in_service", &[&inst]), 1.0);
    }
    assert_eq!(
        metric(
            &m,
            "elb_listener_new_flows_total",
            &["listener=\"198.18.0.1:80\""]
        ),
        30.0
    );
    assert_eq!(
        metric(&m, "elb_xdp_packets_total", &["decision=\"new_flows\""]),
        30.0
    );
    assert_eq!(metric(&m, "elb_snat_failures_total", &[]), 0.0);
    assert!(
        metric(&m, "elb_health_check_latency_seconds_count", &[]) >= 6.0,
        "{m}"
    );
    assert!(m.contains("# TYPE elb_backend_active_flows gauge"));
}

#[test]
fn sigterm_leaves_the_dataplane_running_and_detach_removes_it() {
    let topo = topology();
    let mut agent = start(&topo, "");
    agent
        .wait_states("web", &ALL_IN, Duration::from_secs(30))
        .unwrap();
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    let counts = spread(&topo, topo.vip(), 6);
    assert!(
        even(&counts, &["b1", "b2", "b3"], 2),
        "still forwarding without the agent: {counts:?}"
    );

    let out = std::process::Command::new(bin("elb-servo"))
        .args(["--netns", topo.servo.name(), "--pin-root"])
        .arg(&topo.pin_root)
        .args(["detach", "--purge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = spread(&topo, topo.vip(), 1);
    assert!(
        counts.keys().all(|k| k.starts_with("error")),
        "detached: the servo's own stack refuses :80: {counts:?}"
    );
}
