//! The whole service end to end: control (API, DNS, assignment, health relay) and servos in two
//! zones, driven with awscli, resolved through control's DNS.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tests::{
    netns::wait_for,
    system::{System, SystemSpec},
};

const WEB: [&str; 3] = ["web1", "web2", "web3"];

/// Creates load balancer `web` with an HTTP:80 health check, an 80->80 listener, three instances
/// in two zones and cross-zone load balancing, through awscli; waits for InService with the
/// `instance-in-service` waiter.
fn create_poc_lb(sys: &System) -> anyhow::Result<String> {
    let created = sys.aws(&[
        "create-load-balancer",
        "--load-balancer-name",
        "web",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80",
        "--availability-zones",
        "zone-a",
        "zone-b",
    ])?;
    let dns = created["DNSName"].as_str().unwrap_or_default().to_string();
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "web",
        "--health-check",
        "Target=HTTP:80/name,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2",
    ])?;
    sys.aws(&[
        "modify-load-balancer-attributes",
        "--load-balancer-name",
        "web",
        "--load-balancer-attributes",
        "CrossZoneLoadBalancing={Enabled=true}",
    ])?;
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "web",
        "--instances",
        "i-web1",
        "i-web2",
        "i-web3",
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
