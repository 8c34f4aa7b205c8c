//! The whole service end to end: control (API, DNS, assignment, health relay) and servos in two
//! zones, driven with awscli, resolved through control's DNS.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tests::{
    netns::wait_for,
    system::{ServoSpec, System, SystemSpec},
};

const WEB: [&str; 3] = ["web1", "web2", "web3"];

const HTTP_80: &str = "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80";

/// Creates load balancer `name` with `listener` in `zones` and a fast health check on
/// `target` (every 5 s, two results to change state), and registers `instances`; returns its
/// DNS name.
fn make_lb(
    sys: &System,
    name: &str,
    listener: &str,
    zones: &[&str],
    target: &str,
    instances: &[&str],
) -> anyhow::Result<String> {
    let mut create = vec![
        "create-load-balancer",
        "--load-balancer-name",
        name,
        "--listeners",
        listener,
        "--availability-zones",
    ];
    create.extend(zones);
    let created = sys.aws(&create)?;
    let check =
        format!("Target={target},Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2");
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        name,
        "--health-check",
        &check,
    ])?;
    let mut register = vec![
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        name,
        "--instances",
    ];
    register.extend(instances);
    sys.aws(&register)?;
    Ok(created["DNSName"].as_str().unwrap_or_default().to_string())
}

/// Creates load balancer `web` with an HTTP:80 health check, an 80->80 listener, three instances
/// in two zones and cross-zone load balancing, through awscli; waits for InService with the
/// `instance-in-service` waiter.
fn create_poc_lb(sys: &System) -> anyhow::Result<String> {
    let dns = make_lb(
        sys,
        "web",
        HTTP_80,
        &["zone-a", "zone-b"],
        "HTTP:80/name",
        &["i-web1", "i-web2", "i-web3"],
    )?;
    sys.aws(&[
        "modify-load-balancer-attributes",
        "--load-balancer-name",
        "web",
        "--load-balancer-attributes",
        "CrossZoneLoadBalancing={Enabled=true}",
    ])?;
    sys.aws(&["wait", "instance-in-service", "--load-balancer-name", "web"])?;
    Ok(dns)
}

#[test]
fn poc_round_robin_through_dns_failure_and_recovery() {
    let mut sys = System::start(SystemSpec::poc()).expect("starting the system");
    let dns = create_poc_lb(&sys).unwrap();
    assert_eq!(dns, sys.dns_name("web"));

    let answer = sys.resolve(&dns).unwrap();
    let mut vips = answer.addrs.clone();
    vips.sort();
    assert_eq!(
        vips,
        [sys.servos[0].vip, sys.servos[1].vip],
        "one VIP per zone's servo"
    );
    assert_eq!(answer.ttl, 5);

    let counts = sys.spread_by_name(&dns, 80, 30).unwrap();
    System::check_even(&counts, &WEB, 10).unwrap();

    sys.web[1].stop();
    sys.wait_health(
        "web",
        &[("i-web2", "OutOfService")],
        Duration::from_secs(30),
    )
    .unwrap();
    let health = sys
        .aws(&["describe-instance-health", "--load-balancer-name", "web"])
        .unwrap();
    let web2 = health["InstanceStates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["InstanceId"] == "i-web2")
        .unwrap()
        .clone();
    assert_eq!(web2["ReasonCode"], "Instance", "{web2}");
    // Both servos drop it: servo-b only hears about it through control (zone-a's servo checks it).
    wait_for(
        Duration::from_secs(10),
        "both servos to stop using web2",
        || {
            let c = sys.spread_by_name(&dns, 80, 12).ok()?;
            (!c.contains_key("web2") && c.values().sum::<u32>() == 12).then_some(())
        },
    )
    .unwrap();
    let counts = sys.spread_by_name(&dns, 80, 30).unwrap();
    System::check_balanced(&counts, &["web1", "web3"], 15, 2).unwrap();

    sys.web[1].restart().unwrap();
    sys.wait_health(
        "web",
        &[
            ("i-web1", "InService"),
            ("i-web2", "InService"),
            ("i-web3", "InService"),
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "web2 back on both servos", || {
        let c = sys.spread_by_name(&dns, 80, 30).ok()?;
        System::check_balanced(&c, &WEB, 10, 2).ok()
    })
    .unwrap();

    // Servos report their dataplane counters with their heartbeats.
    let listed = wait_for(
        Duration::from_secs(10),
        "counters in `admin servo list`",
        || {
            let list: serde_json::Value =
                serde_json::from_str(&sys.admin(&["servo", "list"]).ok()?).ok()?;
            let servos = list.as_array()?.clone();
            servos
                .iter()
                .all(|s| s["Counters"]["NewFlows"].as_f64().unwrap_or(0.0) > 0.0)
                .then_some(servos)
        },
    )
    .unwrap();
    for s in &listed {
        assert_eq!(s["Counters"]["Listeners"], 1.0, "{s}");
        assert!(s["Live"].as_bool().unwrap());
    }

    // One grep follows a change: the request id of RegisterInstances is in control's log, in
    // each servo's log line that applied it, and in the health transitions it caused.
    let control_log = sys.controls[0].log_text();
    let register_line = control_log
        .lines()
        .find(|l| l.contains("RegisterInstancesWithLoadBalancer"))
        .expect("control logs the API call");
    let request_id = register_line
        .split("request_id=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .expect("request id in the log line")
        .to_string();
    for servo in &sys.servos {
        let log = servo.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains(&request_id) && l.contains("configuration accepted")),
            "{} applied {request_id}:\n{log}",
            servo.id
        );
    }
    let servo_a = sys.servos[0].log_text();
    assert!(
        servo_a.lines().any(|l| l.contains(&request_id)
            && l.contains("dataplane updated")
            && l.contains("health")),
        "servo-a's health transition names {request_id}:\n{servo_a}"
    );
}

#[test]
fn config_changes_reach_the_dataplane_within_a_second() {
    let sys = System::start(SystemSpec::poc()).expect("starting the system");
    create_poc_lb(&sys).unwrap();
    let vip = sys.servos[0].vip;

    // New listener: from the API call returning to the first connection served on it.
    sys.aws(&[
        "create-load-balancer-listeners",
        "--load-balancer-name",
        "web",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=8080,InstanceProtocol=HTTP,InstancePort=80",
    ])
    .unwrap();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(5), "listener 8080 to serve", || {
        sys.get_name(SocketAddr::from((vip, 8080))).ok()
    })
    .unwrap();
    let listener_ms = t0.elapsed().as_millis();

    // Deregistered instance: from the call returning to the dataplane taking it out.
    sys.aws(&[
        "deregister-instances-from-load-balancer",
        "--load-balancer-name",
        "web",
        "--instances",
        "i-web3",
    ])
    .unwrap();
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "web3 to leave servo-a's backend set",
        || {
            let status = sys.servos[0].status().ok()?;
            let active = status["Backends"]
                .as_array()?
                .iter()
                .any(|b| b["InstanceId"] == "i-web3" && b["State"] == "active");
            (!active).then_some(())
        },
    )
    .unwrap();
    let deregister_ms = t0.elapsed().as_millis();

    // Registered instance: from the call returning to the servo checking it (it takes traffic
    // once it passes HealthyThreshold checks).
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "web",
        "--instances",
        "i-web3",
    ])
    .unwrap();
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "web3 back in servo-b's dataplane",
        || {
            let status = sys.servos[1].status().ok()?;
            status["Backends"]
                .as_array()?
                .iter()
                .any(|b| b["InstanceId"] == "i-web3")
                .then_some(())
        },
    )
    .unwrap();
    let register_ms = t0.elapsed().as_millis();
    println!(
        "propagation: new listener {listener_ms} ms, deregistration {deregister_ms} ms, registration {register_ms} ms"
    );
    for (what, ms) in [
        ("listener", listener_ms),
        ("deregistration", deregister_ms),
        ("registration", register_ms),
    ] {
        assert!(ms < 1000, "{what} took {ms} ms");
    }
}

fn zone_a_pair() -> SystemSpec {
    let mut spec = SystemSpec::poc();
    spec.servos = vec![
        ServoSpec::new("servo-a1", "zone-a"),
        ServoSpec::new("servo-a2", "zone-a"),
    ];
    spec.web.truncate(2);
    spec
}

fn create_zone_a_lb(sys: &System) -> String {
    let dns = make_lb(
        sys,
        "web",
        HTTP_80,
        &["zone-a"],
        "HTTP:80/name",
        &["i-web1", "i-web2"],
    )
    .unwrap();
    sys.wait_health(
        "web",
        &[("i-web1", "InService"), ("i-web2", "InService")],
        Duration::from_secs(40),
    )
    .unwrap();
    dns
}

/// Checks the load balancer at `dns` serves web1 and web2 evenly through its one servo, powers
/// that servo's host off, and waits until DNS answers with the other servo. Returns (the dead
/// servo, the other, how long DNS took).
fn fail_serving_servo(sys: &mut System, dns: &str) -> (usize, usize, Duration) {
    let answer = sys.resolve(dns).unwrap();
    let first = sys.servo_of(answer.addrs[0]).unwrap();
    let other = 1 - first;
    System::check_even(
        &sys.spread_by_name(dns, 80, 10).unwrap(),
        &["web1", "web2"],
        5,
    )
    .unwrap();
    let ns = &sys.servo_ns[first];
    let died = Instant::now();
    sys.servos[first].power_off(ns).unwrap();
    wait_for(
        Duration::from_secs(20),
        "DNS to answer with the other servo",
        || {
            let a = sys.resolve(dns).ok()?;
            (a.addrs == [sys.servos[other].vip]).then_some(())
        },
    )
    .unwrap();
    (first, other, died.elapsed())
}

#[test]
fn servo_failover_moves_the_load_balancer_and_dns_follows() {
    let mut sys = System::start(zone_a_pair()).expect("starting the system");
    let dns = create_zone_a_lb(&sys);
    let answer = sys.resolve(&dns).unwrap();
    assert_eq!(answer.addrs.len(), 1, "one servo per zone: {answer:?}");
    let (first, other, moved) = fail_serving_servo(&mut sys, &dns);
    println!(
        "DNS moved to {} {moved:.1?} after {} died (heartbeat timeout 4 s)",
        sys.servos[other].id, sys.servos[first].id
    );
    // A client that re-resolves keeps working once the other servo's checks pass.
    sys.wait_health(
        "web",
        &[("i-web1", "InService"), ("i-web2", "InService")],
        Duration::from_secs(30),
    )
    .unwrap();
    let counts = wait_for(
        Duration::from_secs(30),
        "traffic through the other servo",
        || {
            let c = sys.spread_by_name(&dns, 80, 10).ok()?;
            System::check_even(&c, &["web1", "web2"], 5)
                .ok()
                .map(|()| c)
        },
    )
    .unwrap();
    println!("after failover: {counts:?}");
}

#[test]
fn traffic_flows_while_control_is_down_and_changes_arrive_after_it_returns() {
    let mut sys = System::start(SystemSpec::poc()).expect("starting the system");
    let dns = create_poc_lb(&sys).unwrap();
    let vips = sys.resolve(&dns).unwrap().addrs;

    sys.controls[0].kill9();
    // Both servos keep forwarding with their last configuration (to every VIP they serve).
    for vip in &vips {
        let counts: Vec<String> = (0..6)
            .map(|_| sys.get_name(SocketAddr::from((*vip, 80))).unwrap())
            .collect();
        assert_eq!(counts.len(), 6);
        assert!(
            counts.iter().all(|n| WEB.contains(&n.as_str())),
            "{counts:?}"
        );
    }
    // A servo agent restarted meanwhile starts from the configuration it saved.
    sys.servos[0].kill9();
    sys.servos[0].start().unwrap();
    assert!(
        sys.servos[0]
            .log_text()
            .contains("starting from the configuration last received from control")
    );
    let served = sys
        .get_name(SocketAddr::from((sys.servos[0].vip, 80)))
        .unwrap();
    assert!(WEB.contains(&served.as_str()), "{served}");

    sys.controls[0].restart().unwrap();
    sys.aws(&[
        "create-load-balancer-listeners",
        "--load-balancer-name",
        "web",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=8080,InstanceProtocol=HTTP,InstancePort=80",
    ])
    .unwrap();
    for servo in [sys.servos[0].vip, sys.servos[1].vip] {
        wait_for(
            Duration::from_secs(15),
            "the change made after control returned",
            || sys.get_name(SocketAddr::from((servo, 8080))).ok(),
        )
        .unwrap();
    }
}

#[test]
fn two_control_replicas_on_postgresql_reach_each_others_servos() {
    let mut spec = SystemSpec::poc();
    spec.replicas = 2;
    spec.postgres = true;
    let sys = System::start(spec).expect("starting the system");
    // servo-a talks to replica 0, servo-b to replica 1; the API calls go to replica 0.
    create_poc_lb(&sys).unwrap();
    sys.aws(&[
        "create-load-balancer-listeners",
        "--load-balancer-name",
        "web",
        "--listeners",
        "Protocol=TCP,LoadBalancerPort=9000,InstanceProtocol=TCP,InstancePort=80",
    ])
    .unwrap();
    let t0 = Instant::now();
    let vip_b = sys.servos[1].vip;
    wait_for(
        Duration::from_secs(5),
        "servo-b (on replica 1) to serve the new listener",
        || sys.get_name(SocketAddr::from((vip_b, 9000))).ok(),
    )
    .unwrap();
    println!(
        "change through replica 0 served by replica 1's servo after {:.0?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(sys.servos[1].log_text().contains("registered with control"));
}

/// `n` requests to `addr` on new connections; counts per backend name (errors included).
fn spread_at(sys: &System, addr: SocketAddr, n: u32) -> std::collections::BTreeMap<String, u32> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let who = sys.get_name(addr).unwrap_or_else(|e| format!("error: {e}"));
        *counts.entry(who).or_default() += 1;
    }
    counts
}

fn tcp_lb(sys: &System, name: &str, port: u16, zones: &[&str], instances: &[&str]) {
    let listener =
        format!("Protocol=TCP,LoadBalancerPort={port},InstanceProtocol=TCP,InstancePort=80");
    make_lb(sys, name, &listener, zones, "TCP:80", instances).unwrap();
}

#[test]
fn a_refused_load_balancer_or_a_snat_range_port_never_blocks_the_others() {
    // servo-a serves its metrics on every address, so it reserves port 9400 on its VIP:
    // a servo-side reason to refuse a load balancer control accepted.
    let mut spec = SystemSpec::poc();
    spec.servos[0].metrics_listen = Some("0.0.0.0:9400".into());
    let sys = System::start(spec).expect("starting the system");
    create_poc_lb(&sys).unwrap();
    let vip_a = sys.servos[0].vip;

    // A TCP listener on 30000, inside the servo's SNAT port range (20000-59999), on the same
    // servo and VIP as `web`: served end to end.
    tcp_lb(&sys, "snat", 30000, &["zone-a"], &["i-web1", "i-web2"]);
    sys.wait_health(
        "snat",
        &[("i-web1", "InService"), ("i-web2", "InService")],
        Duration::from_secs(30),
    )
    .unwrap();
    let counts = wait_for(Duration::from_secs(10), "port 30000 to serve", || {
        let c = spread_at(&sys, SocketAddr::from((vip_a, 30000)), 10);
        System::check_even(&c, &["web1", "web2"], 5)
            .ok()
            .map(|()| c)
    })
    .unwrap();
    println!("VIP:30000 {counts:?}");

    // A load balancer servo-a cannot serve: a listener on its metrics port.
    tcp_lb(&sys, "reserved", 9400, &["zone-a"], &["i-web1"]);
    let refused = wait_for(
        Duration::from_secs(10),
        "the refusal in `admin servo list`",
        || {
            let list = sys.servo_list().ok()?;
            let r = list["servo-a"]["Refused"].as_array()?.first()?.clone();
            Some(r)
        },
    )
    .unwrap();
    assert_eq!(
        refused["LoadBalancerName"],
        format!("reserved-{}", sys.account.id)
    );
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("LoadBalancerPort 9400") && reason.contains("metrics"),
        "{reason}"
    );
    // DescribeInstanceHealth says the zone's servo cannot serve it, and why.
    let health = sys
        .aws(&[
            "describe-instance-health",
            "--load-balancer-name",
            "reserved",
        ])
        .unwrap();
    let state = &health["InstanceStates"][0];
    assert_eq!(state["State"], "OutOfService", "{health}");
    let description = state["Description"].as_str().unwrap();
    assert!(
        description.contains("servo-a") && description.contains("metrics"),
        "{description}"
    );
    // Control's log names the refusal with the request that made it (CreateLoadBalancer).
    let log = sys.controls[0].log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refuses load balancer reserved-"))
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    let request_id = line
        .split("request_ids=[\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no request id in {line}"));
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("request_id={request_id}"))
                && l.contains("CreateLoadBalancer")),
        "{request_id} is not a CreateLoadBalancer:\n{log}"
    );
    assert!(
        sys.servos[0].log_text().contains("load balancer refused"),
        "the servo logs it too"
    );

    // The others keep receiving changes: a new listener of `web`, a deregistration of `snat`.
    sys.aws(&[
        "create-load-balancer-listeners",
        "--load-balancer-name",
        "web",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=8080,InstanceProtocol=HTTP,InstancePort=80",
    ])
    .unwrap();
    wait_for(Duration::from_secs(5), "listener 8080 on servo-a", || {
        sys.get_name(SocketAddr::from((vip_a, 8080))).ok()
    })
    .unwrap();
    sys.aws(&[
        "deregister-instances-from-load-balancer",
        "--load-balancer-name",
        "snat",
        "--instances",
        "i-web2",
    ])
    .unwrap();
    wait_for(Duration::from_secs(10), "port 30000 on web1 alone", || {
        let c = spread_at(&sys, SocketAddr::from((vip_a, 30000)), 4);
        (c.get("web1") == Some(&4)).then_some(())
    })
    .unwrap();
    // And the agent's own endpoint on the VIP still answers: nothing took its port.
    assert!(tests::agent::get(&sys.servos[0].ns, "/status").is_ok());
}

#[test]
fn cross_zone_off_with_instances_in_one_zone_only_every_answer_serves() {
    let sys = System::start(SystemSpec::poc()).expect("starting the system");
    // Cross-zone load balancing stays off (the default); both instances are in zone-a.
    let dns = make_lb(
        &sys,
        "web",
        HTTP_80,
        &["zone-a", "zone-b"],
        "HTTP:80/name",
        &["i-web1", "i-web2"],
    )
    .unwrap();
    sys.aws(&["wait", "instance-in-service", "--load-balancer-name", "web"])
        .unwrap();
    let mut vips = sys.resolve(&dns).unwrap().addrs;
    vips.sort();
    assert_eq!(
        vips,
        [sys.servos[0].vip, sys.servos[1].vip],
        "both zones in DNS"
    );
    // Every address DNS gives serves: zone-b's servo forwards to zone-a's instances.
    for vip in &vips {
        let counts = wait_for(Duration::from_secs(10), "both VIPs serving", || {
            let c = spread_at(&sys, SocketAddr::from((*vip, 80)), 10);
            System::check_even(&c, &["web1", "web2"], 5)
                .ok()
                .map(|()| c)
        })
        .unwrap();
        println!("{vip}: {counts:?}");
    }
    let counts = sys.spread_by_name(&dns, 80, 30).unwrap();
    assert!(
        counts.keys().all(|k| k == "web1" || k == "web2") && counts.values().sum::<u32>() == 30,
        "every request through the DNS name succeeds: {counts:?}"
    );
    // Once zone-b has an instance in service, its servo keeps to it.
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "web",
        "--instances",
        "i-web3",
    ])
    .unwrap();
    sys.wait_health("web", &[("i-web3", "InService")], Duration::from_secs(30))
        .unwrap();
    wait_for(Duration::from_secs(10), "zone-b on web3 alone", || {
        let c = spread_at(&sys, SocketAddr::from((sys.servos[1].vip, 80)), 6);
        (c.get("web3") == Some(&6)).then_some(())
    })
    .unwrap();
    let c = spread_at(&sys, SocketAddr::from((sys.servos[0].vip, 80)), 10);
    System::check_even(&c, &["web1", "web2"], 5).unwrap();
}

#[test]
fn failover_with_slow_health_checks_carries_health_over() {
    let mut sys = System::start(zone_a_pair()).expect("starting the system");
    let dns = create_zone_a_lb(&sys);
    // AWS's slow defaults from now on: a cold start would take HealthyThreshold x Interval
    // (10 x 30 s) before any instance is in service again.
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "web",
        "--health-check",
        "Target=HTTP:80/name,Interval=30,Timeout=5,UnhealthyThreshold=2,HealthyThreshold=10",
    ])
    .unwrap();
    let (_, other, moved) = fail_serving_servo(&mut sys, &dns);
    // DNS moves when control assigns the load balancer to the standby, which applies the
    // assignment a few milliseconds later (its long poll): it must be serving within a second
    // of DNS moving, and from then on every request succeeds: it started from the health
    // control held (InService), not from "registration in progress".
    let vip = SocketAddr::from((sys.servos[other].vip, 80));
    let taking_over = Instant::now();
    wait_for(Duration::from_secs(1), "the standby serving", || {
        sys.get_name(vip).ok()
    })
    .unwrap();
    println!(
        "standby serving {:.1?} after DNS moved",
        taking_over.elapsed()
    );
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        match sys.get_name(vip) {
            Ok(who) => *counts.entry(who).or_insert(0u32) += 1,
            Err(e) => failures.push(format!("{:.1?}: {e}", started.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("DNS moved {moved:.1?} after the servo died; then {counts:?}");
    assert!(
        failures.is_empty(),
        "requests failed after the take-over: {failures:?}"
    );
    assert!(
        counts.contains_key("web1") && counts.contains_key("web2"),
        "{counts:?}"
    );
    let health = sys
        .aws(&["describe-instance-health", "--load-balancer-name", "web"])
        .unwrap();
    for s in health["InstanceStates"].as_array().unwrap() {
        assert_eq!(s["State"], "InService", "{health}");
    }
    let standby = sys.servos[other].log_text();
    assert!(
        !standby.contains("instance health changed"),
        "the standby never went through registration:\n{standby}"
    );
}

/// Metrics per load balancer from servo reports to control: traffic through a real servo to
/// two load balancers, read back from control's Prometheus endpoint (per load balancer and
/// zone, exact connection counts) and from the console's history.
#[test]
fn metrics_per_load_balancer_reach_prometheus_and_the_console() {
    let sys = System::start(SystemSpec::poc()).expect("starting the system");
    make_lb(
        &sys,
        "web",
        HTTP_80,
        &["zone-a", "zone-b"],
        "HTTP:80/name",
        &["i-web1", "i-web2", "i-web3"],
    )
    .unwrap();
    make_lb(
        &sys,
        "other",
        "Protocol=TCP,LoadBalancerPort=81,InstanceProtocol=TCP,InstancePort=80",
        &["zone-a"],
        "TCP:80",
        &["i-web1"],
    )
    .unwrap();
    sys.wait_health(
        "web",
        &[
            ("i-web1", "InService"),
            ("i-web2", "InService"),
            ("i-web3", "InService"),
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    sys.wait_health("other", &[("i-web1", "InService")], Duration::from_secs(60))
        .unwrap();
    // Through zone-a's servo only: 40 connections to web, 10 to other.
    let vip = sys.servos[0].vip;
    for _ in 0..40 {
        sys.get_name(SocketAddr::from((vip, 80))).unwrap();
    }
    for _ in 0..10 {
        assert_eq!(sys.get_name(SocketAddr::from((vip, 81))).unwrap(), "web1");
    }
    let metric = |name: &str, lb: &str, zone: &str| sys.control_metric(0, name, lb, zone);
    let got = wait_for(Duration::from_secs(60), "control's totals", || {
        let web = metric("aws_elb_new_connection_count_total", "web", "zone-a")?;
        let other = metric("aws_elb_new_connection_count_total", "other", "zone-a")?;
        (web >= 40.0 && other >= 10.0).then_some((web, other))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", sys.control_metrics(0).unwrap_or_default()));
    assert_eq!(
        got,
        (40.0, 10.0),
        "exact connection counts per load balancer"
    );
    let text = sys.control_metrics(0).unwrap();
    assert_eq!(
        metric("aws_elb_request_count_total", "web", "zone-a"),
        Some(40.0)
    );
    assert_eq!(
        metric("aws_elb_new_connection_count_total", "web", "zone-b"),
        Some(0.0),
        "zone-b's servo forwarded nothing: {text}"
    );
    assert!(metric("aws_elb_processed_bytes_total", "web", "zone-a").unwrap() > 40.0 * 100.0);
    // Packets: at least a SYN, a request, an ACK and a FIN each way per connection.
    assert!(metric("aws_elb_processed_packets_total", "web", "zone-a").unwrap() >= 40.0 * 4.0);
    // Each zone's servo counts the instances it checks.
    assert_eq!(
        metric("aws_elb_healthy_host_count", "web", "zone-a"),
        Some(2.0)
    );
    assert_eq!(
        metric("aws_elb_healthy_host_count", "web", "zone-b"),
        Some(1.0)
    );
    assert_eq!(
        metric("aws_elb_un_healthy_host_count", "web", "zone-a"),
        Some(0.0)
    );
    assert!(metric("aws_elb_active_connection_count", "web", "zone-a").is_some());
    // XDP listeners measure no HTTP codes or latency: those series are absent, not zero.
    assert!(
        !text.contains("aws_elb_httpcode_backend_2xx_total{load_balancer=\"web\""),
        "{text}"
    );

    // The console's history: the same connections, as increases per 10-second step.
    let total = |history: &serde_json::Value, name: &str| -> f64 {
        history["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == name)
            .unwrap()["Values"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .sum()
    };
    let sums = wait_for(Duration::from_secs(30), "the console's history", || {
        let web = sys.console_get("/metrics?LoadBalancerName=web").ok()?;
        let other = sys.console_get("/metrics?LoadBalancerName=other").ok()?;
        let sums = (
            total(&web, "NewConnectionCount"),
            total(&other, "NewConnectionCount"),
            total(&web, "RequestCount"),
        );
        (sums.0 >= 40.0 && sums.1 >= 10.0).then_some(sums)
    })
    .unwrap();
    assert_eq!(sums, (40.0, 10.0, 40.0));
}
