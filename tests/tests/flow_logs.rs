//! Access logs of a TCP listener the XDP program forwards, end to end: the real agent in the
//! servo namespace of the standard topology, nginx backends, moto's S3 server in the servo
//! namespace. 100 connections through the listener are 100 lines in the bucket under AWS's key
//! layout, each with the client's address and port, the backend, the bytes each way and the
//! timings; the dataplane dropped no event.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use tests::{
    agent::{Agent, metric, servo_section},
    moto::{ACCESS_KEY, Moto, SECRET_KEY},
    netns::wait_for,
    topo::{CLIENT, Topology, VIP, backend_addr},
};

const ACCOUNT: &str = "123456789012";
/// moto's port on the servo namespace's loopback (a fresh namespace: nothing else there).
const MOTO_PORT: u16 = 9500;
const REQUEST: &[u8] = b"GET /name HTTP/1.0\r\nHost: web\r\n\r\n";

#[test]
fn tcp_connections_are_logged_one_line_each() {
    let mut topo = Topology::build(2).unwrap();
    topo.start_nginx(1).unwrap();
    let moto = Moto::start_in(Some(topo.servo.name()), MOTO_PORT).unwrap();
    moto.create_bucket("elb-logs").unwrap();
    let spool = tests::netns::tempdir("spool").unwrap();
    let config = format!(
        r#"{servo}
[access_logs]
spool_dir = "{spool}"
node_address = "{VIP}"
[access_logs.s3]
endpoint = "http://127.0.0.1:{MOTO_PORT}"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"

[[LoadBalancers]]
LoadBalancerName = "web"
Vips = ["{VIP}"]
Listeners = [{{ Protocol = "TCP", LoadBalancerPort = 80, InstanceProtocol = "TCP", InstancePort = 80 }}]
Instances = [
  {{ InstanceId = "i-1", Address = "{b1}" }},
  {{ InstanceId = "i-2", Address = "{b2}" }},
]
HealthCheck = {{ Target = "TCP:80", Interval = 5, Timeout = 2, UnhealthyThreshold = 2, HealthyThreshold = 2 }}
[LoadBalancers.AccessLog]
S3BucketName = "elb-logs"
S3BucketPrefix = "tcp"
EmitInterval = 60
AccountId = "{ACCOUNT}"
LoadBalancerName = "web"
"#,
        servo = servo_section(&topo),
        spool = spool.path().display(),
        b1 = backend_addr(0),
        b2 = backend_addr(1),
    );
    let agent = Agent::start(&topo, &config).unwrap();
    agent
        .wait_states(
            "web",
            &[("i-1", "InService"), ("i-2", "InService")],
            Duration::from_secs(30),
        )
        .unwrap();

    // 100 connections, each one request and the whole response (the backend closes first).
    let vip = SocketAddr::from((VIP, 80));
    let seen: Vec<(SocketAddr, usize)> = topo.client.run(|| {
        (0..100)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(REQUEST).unwrap();
                let mut body = Vec::new();
                s.read_to_end(&mut body).unwrap();
                assert!(body.starts_with(b"HTTP/1.1 200"), "{body:?}");
                (s.local_addr().unwrap(), body.len())
            })
            .collect()
    });

    // Closed flows end at the sweep after the close grace; then SIGUSR1 finishes the file.
    wait_for(Duration::from_secs(60), "100 flow log lines", || {
        let m = agent.metrics().ok()?;
        (metric(&m, "elb_flow_log_lines_total", &[]) >= 100.0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", agent.metrics().unwrap_or_default()));
    agent.signal(libc::SIGUSR1);
    let lines: Vec<(String, String)> = wait_for(Duration::from_secs(60), "the log file", || {
        let keys = moto.keys("elb-logs").ok()?;
        let mut lines = Vec::new();
        for k in keys {
            let body = moto.object("elb-logs", &k).ok()?;
            lines.extend(body.lines().map(|l| (k.clone(), l.to_string())));
        }
        (lines.len() >= 100).then_some(lines)
    })
    .unwrap();
    assert_eq!(lines.len(), 100, "one line per connection");

    let backends = [
        format!("{}:80", backend_addr(0)),
        format!("{}:80", backend_addr(1)),
    ];
    let mut clients = Vec::new();
    for (key, line) in &lines {
        let rest = key
            .strip_prefix(&format!(
                "tcp/AWSLogs/{ACCOUNT}/elasticloadbalancing/us-east-1/"
            ))
            .unwrap_or_else(|| panic!("key layout: {key}"));
        let (date, name) = rest.rsplit_once('/').unwrap();
        assert_eq!(date.len(), "yyyy/mm/dd".len(), "{key}");
        assert!(
            name.starts_with(&format!("{ACCOUNT}_elasticloadbalancing_us-east-1_web_"))
                && name.contains(&format!("Z_{VIP}_"))
                && name.ends_with(".log"),
            "{key}"
        );
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[1], "web", "{line}");
        assert!(f[2].starts_with(&format!("{CLIENT}:")), "client: {line}");
        assert!(backends.contains(&f[3].to_string()), "backend: {line}");
        for t in &f[4..7] {
            let secs: f64 = t.parse().unwrap_or_else(|_| panic!("timing {t}: {line}"));
            assert!((0.0..5.0).contains(&secs), "timing {t}: {line}");
        }
        assert_eq!((f[7], f[8]), ("-", "-"), "no status codes: {line}");
        let client: SocketAddr = f[2].parse().unwrap();
        let (_, got) = seen
            .iter()
            .find(|(a, _)| *a == client)
            .unwrap_or_else(|| panic!("a connection from {client}: {line}"));
        assert_eq!(
            f[9],
            REQUEST.len().to_string(),
            "bytes from the client: {line}"
        );
        assert_eq!(f[10], got.to_string(), "bytes to the client: {line}");
        assert!(line.ends_with("\"- - - \" \"-\" - -"), "{line}");
        clients.push(client);
    }
    clients.sort();
    clients.dedup();
    assert_eq!(clients.len(), 100, "every connection once");
    let m = agent.metrics().unwrap();
    assert_eq!(
        metric(
            &m,
            "elb_xdp_packets_total",
            &["decision=\"events_dropped\""]
        ),
        0.0
    );
    assert_eq!(metric(&m, "elb_flow_event_starts_total", &[]), 100.0);
    assert_eq!(metric(&m, "elb_flow_event_unpaired_total", &[]), 0.0);
}
