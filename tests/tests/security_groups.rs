//! Security groups end to end, in network namespaces: a load balancer whose security group
//! admits only 198.18.1.0/24. A client in that range is served; a client outside is not (its
//! SYN is dropped by the servo's XDP program, counted as `drop_sg_denied`, and never reaches
//! the backend); after the rule for the second client's range is authorized, it is served
//! within a second. Once with the built-in inventory (`elb-control admin security-group`),
//! once with moto's server as the EC2-compatible cloud (`AuthorizeSecurityGroupIngress` there,
//! noticed by control's refresher).
//!
//! The client namespace has two addresses on the public LAN: 198.18.0.2 (its own, outside the
//! group's range) and 198.18.1.2 (inside); the servo routes 198.18.1.0/24 on its public link.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tests::{
    agent,
    http::Connection,
    moto::{ACCESS_KEY, Moto, SECRET_KEY},
    netns::wait_for,
    system::{ServoSpec, System, SystemSpec, WebSpec},
};

const ADMITTED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn spec(zone: &str) -> SystemSpec {
    SystemSpec {
        servos: vec![ServoSpec::new("servo-a", zone)],
        web: vec![WebSpec {
            name: "web1".into(),
            zone: zone.into(),
        }],
        ..SystemSpec::poc()
    }
}

/// Gives the client its second address and the servo a route to it.
fn second_client_range(sys: &System) -> anyhow::Result<()> {
    sys.client
        .ip(&["addr", "add", &format!("{ADMITTED}/24"), "dev", "c0"])?;
    sys.servo_ns[0].ip(&["route", "add", "198.18.1.0/24", "dev", "p0"])?;
    Ok(())
}

/// One request from `src` to `dst` on a new connection: the backend's name, or an error
/// (a connection that is never answered times out after `timeout`).
fn get_from(
    sys: &System,
    src: Ipv4Addr,
    dst: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<String> {
    sys.client.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stream = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((src, 0)))?;
            let stream = tokio::time::timeout(timeout, socket.connect(dst))
                .await
                .context("connect timed out")??;
            anyhow::Ok(stream.into_std()?)
        })?;
        stream.set_nonblocking(false)?;
        Ok(Connection::from_stream(stream).get("/name", false)?.text())
    })
}

/// The servo's `drop_sg_denied` counter and the new flows its backends got.
fn counters(sys: &System) -> anyhow::Result<(f64, f64)> {
    let m = agent::get(&sys.servos[0].ns, "/metrics")?;
    Ok((
        agent::metric(
            &m,
            "elb_xdp_packets_total",
            &["decision=\"drop_sg_denied\""],
        ),
        agent::metric(&m, "elb_backend_new_flows_total", &[]),
    ))
}

/// The VIP of load balancer `name`, once control's DNS answers for it.
fn vip(sys: &System, name: &str) -> anyhow::Result<Ipv4Addr> {
    let dns = sys.dns_name(name);
    wait_for(Duration::from_secs(15), "the load balancer in DNS", || {
        sys.resolve(&dns).ok()?.addrs.first().copied()
    })
}

/// The scenario after the load balancer exists with its group admitting 198.18.1.0/24 only:
/// `authorize` opens the group to 198.18.0.0/24.
fn admitted_served_outside_dropped_then_authorized(
    sys: &System,
    name: &str,
    instance: &str,
    authorize: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let addr = SocketAddr::from((vip(sys, name)?, 80));
    // Health first: an InService backend, so a failure below is the group's doing.
    sys.wait_health(name, &[(instance, "InService")], Duration::from_secs(60))?;
    wait_for(
        Duration::from_secs(10),
        "the admitted client served",
        || get_from(sys, ADMITTED, addr, Duration::from_secs(1)).ok(),
    )?;
    assert_eq!(
        get_from(sys, ADMITTED, addr, Duration::from_secs(2))?.trim(),
        "web1"
    );

    let (denied_before, flows_before) = counters(sys)?;
    let refused = get_from(sys, OUTSIDE, addr, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "a client outside the group's range was served: {refused:?}"
    );
    let (denied_after, flows_after) = counters(sys)?;
    assert!(
        denied_after > denied_before,
        "drop_sg_denied counts the dropped SYNs ({denied_before} -> {denied_after})"
    );
    assert_eq!(
        flows_after, flows_before,
        "no SYN of the refused client reached a backend"
    );
    // The admitted client is still served.
    assert_eq!(
        get_from(sys, ADMITTED, addr, Duration::from_secs(2))?.trim(),
        "web1"
    );

    authorize()?;
    let t0 = Instant::now();
    let served = wait_for(Duration::from_secs(10), "the second client served", || {
        get_from(sys, OUTSIDE, addr, Duration::from_millis(200)).ok()
    })?;
    let took = t0.elapsed();
    eprintln!(
        "rule change to the second client served: {} ms",
        took.as_millis()
    );
    assert_eq!(served.trim(), "web1");
    assert!(
        took < Duration::from_secs(1),
        "the authorized range was served after {took:?}, not within a second"
    );
    Ok(())
}

#[test]
fn built_in_security_group_admits_its_range_and_follows_the_admin_command() {
    let sys = System::start(spec("zone-a")).unwrap();
    second_client_range(&sys).unwrap();
    sys.admin(&[
        "security-group",
        "create",
        "--id",
        "sg-0e2e1",
        "--name",
        "web",
    ])
    .unwrap();
    sys.admin(&[
        "security-group",
        "authorize",
        "--id",
        "sg-0e2e1",
        "--port",
        "80",
        "--cidr",
        "198.18.1.0/24",
    ])
    .unwrap();
    sys.aws(&[
        "create-load-balancer",
        "--load-balancer-name",
        "guarded",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80",
        "--availability-zones",
        "zone-a",
        "--security-groups",
        "sg-0e2e1",
    ])
    .unwrap();
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "guarded",
        "--health-check",
        "Target=HTTP:80/name,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2",
    ])
    .unwrap();
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "guarded",
        "--instances",
        "i-web1",
    ])
    .unwrap();
    // An open load balancer on the same servo: without security groups, everyone is served.
    sys.aws(&[
        "create-load-balancer",
        "--load-balancer-name",
        "open",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=8080,InstanceProtocol=HTTP,InstancePort=80",
        "--availability-zones",
        "zone-a",
    ])
    .unwrap();
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "open",
        "--health-check",
        "Target=HTTP:80/name,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2",
    ])
    .unwrap();
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "open",
        "--instances",
        "i-web1",
    ])
    .unwrap();

    admitted_served_outside_dropped_then_authorized(&sys, "guarded", "i-web1", || {
        sys.admin(&[
            "security-group",
            "authorize",
            "--id",
            "sg-0e2e1",
            "--port",
            "80",
            "--cidr",
            "198.18.0.0/24",
        ])?;
        Ok(())
    })
    .unwrap();

    let open = SocketAddr::from((vip(&sys, "open").unwrap(), 8080));
    sys.wait_health("open", &[("i-web1", "InService")], Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        get_from(&sys, OUTSIDE, open, Duration::from_secs(2))
            .unwrap()
            .trim(),
        "web1"
    );

    // Revoked: the range is refused again (new connections only).
    sys.admin(&[
        "security-group",
        "revoke",
        "--id",
        "sg-0e2e1",
        "--port",
        "80",
        "--cidr",
        "198.18.0.0/24",
    ])
    .unwrap();
    let guarded = SocketAddr::from((vip(&sys, "guarded").unwrap(), 80));
    wait_for(Duration::from_secs(5), "the revoked range refused", || {
        get_from(&sys, OUTSIDE, guarded, Duration::from_millis(300))
            .is_err()
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        get_from(&sys, ADMITTED, guarded, Duration::from_secs(2))
            .unwrap()
            .trim(),
        "web1"
    );
}

/// moto's port in the control namespace (fresh namespace: nothing else listens there).
const MOTO_PORT: u16 = 45123;

#[test]
fn cloud_security_group_admits_its_range_and_follows_the_cloud() {
    let moto_url = format!("http://127.0.0.1:{MOTO_PORT}");
    let mut spec = spec("us-east-1a");
    spec.control_args = [
        "--ec2-endpoint",
        &moto_url,
        "--cloud-access-key-id",
        ACCESS_KEY,
        "--cloud-secret-access-key",
        SECRET_KEY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sys = System::start(spec).unwrap();
    second_client_range(&sys).unwrap();
    let moto = Moto::start_in(Some(sys.ctl.name()), MOTO_PORT).unwrap();
    let ec2 = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["ec2"];
        full.extend_from_slice(args);
        full.extend(["--output", "json"]);
        serde_json::from_str(&moto.aws(&full).unwrap()).unwrap_or(serde_json::Value::Null)
    };
    // The instance: web1's address, in a subnet of the cloud in the servo's zone.
    let vpc = ec2(&["create-vpc", "--cidr-block", "198.19.0.0/16"])["Vpc"]["VpcId"]
        .as_str()
        .unwrap()
        .to_string();
    let subnet = ec2(&[
        "create-subnet",
        "--vpc-id",
        &vpc,
        "--cidr-block",
        "198.19.0.0/24",
        "--availability-zone",
        "us-east-1a",
    ])["Subnet"]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    let image = ec2(&["describe-images"])["Images"][0]["ImageId"]
        .as_str()
        .unwrap()
        .to_string();
    let instance = ec2(&[
        "run-instances",
        "--image-id",
        &image,
        "--count",
        "1",
        "--subnet-id",
        &subnet,
        "--private-ip-address",
        "198.19.0.11",
    ])["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    // The group, in the default VPC where a load balancer created with zones lives.
    let default_vpc = ec2(&["describe-vpcs", "--filters", "Name=is-default,Values=true"])["Vpcs"]
        [0]["VpcId"]
        .as_str()
        .unwrap()
        .to_string();
    let group = ec2(&[
        "create-security-group",
        "--group-name",
        "guarded",
        "--description",
        "web",
        "--vpc-id",
        &default_vpc,
    ])["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    ec2(&[
        "authorize-security-group-ingress",
        "--group-id",
        &group,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "198.18.1.0/24",
    ]);

    let created = sys
        .aws(&[
            "create-load-balancer",
            "--load-balancer-name",
            "guarded",
            "--listeners",
            "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80",
            "--availability-zones",
            "us-east-1a",
            "--security-groups",
            &group,
        ])
        .unwrap();
    assert!(created["DNSName"].is_string());
    let described = sys
        .aws(&[
            "describe-load-balancers",
            "--load-balancer-names",
            "guarded",
        ])
        .unwrap();
    assert_eq!(
        described["LoadBalancerDescriptions"][0]["VPCId"],
        default_vpc.as_str()
    );
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "guarded",
        "--health-check",
        "Target=HTTP:80/name,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2",
    ])
    .unwrap();
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "guarded",
        "--instances",
        &instance,
    ])
    .unwrap();

    admitted_served_outside_dropped_then_authorized(&sys, "guarded", &instance, || {
        moto.aws(&[
            "ec2",
            "authorize-security-group-ingress",
            "--group-id",
            &group,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "198.18.0.0/24",
        ])?;
        Ok(())
    })
    .unwrap();
    assert!(
        sys.controls[0]
            .log_text()
            .contains("security group rules changed in the cloud"),
        "control logs the change it noticed"
    );
}
