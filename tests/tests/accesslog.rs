//! Access log delivery to a real S3-compatible endpoint (moto's server): AWS's key layout and
//! line format, an endpoint outage that delays delivery and loses nothing (also across an
//! agent restart), files left open by a crash, and the bounded spool.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use elb_userspace::accesslog::{
    AccessLogEntry, AccessLogSettings, AccessLogs, FormatLine as _, LogDestination, S3Settings,
    S3Writer,
};
use tests::moto::{ACCESS_KEY, GatedProxy, Moto, SECRET_KEY};

const ACCOUNT: &str = "123456789012";
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

fn settings(endpoint: &str, spool: &std::path::Path, max: u64) -> AccessLogSettings {
    AccessLogSettings {
        s3: S3Settings {
            endpoint: endpoint.to_string(),
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
        },
        spool_dir: spool.to_path_buf(),
        max_spool_bytes: max,
        node_address: NODE,
    }
}

fn destination(bucket: &str, prefix: &str) -> HashMap<String, LogDestination> {
    HashMap::from([(
        format!("web-{ACCOUNT}"),
        LogDestination {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            load_balancer: "web".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            emit_interval_minutes: 5,
        },
    )])
}

fn connection(i: u16) -> AccessLogEntry {
    AccessLogEntry {
        time: SystemTime::now(),
        client: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 40000 + i).into(),
        backend: Some(SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 11), 80).into()),
        request_processing: Some(Duration::from_micros(50)),
        backend_processing: Some(Duration::from_micros(300)),
        response_processing: Some(Duration::ZERO),
        elb_status: None,
        backend_status: None,
        received_bytes: 100 + u64::from(i),
        sent_bytes: 1000 + u64::from(i),
        request: None,
        user_agent: None,
        tls: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every delivered line, by key.
fn delivered(moto: &Moto, bucket: &str) -> Vec<(String, Vec<String>)> {
    moto.keys(bucket)
        .expect("list")
        .into_iter()
        .map(|k| {
            let body = moto.object(bucket, &k).expect("get");
            (k, body.lines().map(str::to_string).collect())
        })
        .collect()
}

#[test]
fn lines_arrive_under_aws_key_layout() {
    let moto = Moto::start().expect("moto");
    moto.create_bucket("elb-logs").expect("bucket");
    let spool = tempfile::tempdir().unwrap();
    let logs = AccessLogs::open(settings(&moto.url, spool.path(), 1 << 20)).unwrap();
    logs.set_destinations(destination("elb-logs", "prod/web"));
    for i in 0..100 {
        logs.record(&format!("web-{ACCOUNT}"), &connection(i));
    }
    // A load balancer that does not log: nothing recorded.
    logs.record("other-123", &connection(0));
    logs.finish_all();
    let writer = S3Writer::new(settings(&moto.url, spool.path(), 0).s3);
    let rt = runtime();
    assert_eq!(rt.block_on(logs.upload_ready(&writer)), 0);

    let files = delivered(&moto, "elb-logs");
    assert_eq!(files.len(), 1, "{files:?}");
    let (key, lines) = &files[0];
    let pattern = format!("prod/web/AWSLogs/{ACCOUNT}/elasticloadbalancing/us-east-1/");
    assert!(key.starts_with(&pattern), "{key}");
    let name = key.rsplit('/').next().unwrap();
    assert!(
        name.starts_with(&format!("{ACCOUNT}_elasticloadbalancing_us-east-1_web_"))
            && name.contains(&format!("Z_{NODE}_"))
            && name.ends_with(".log"),
        "{name}"
    );
    assert_eq!(lines.len(), 100);
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[1], "web");
        assert_eq!(fields[2], format!("198.18.1.2:{}", 40000 + i));
        assert_eq!(fields[3], "198.19.0.11:80");
        assert_eq!(fields[9], (100 + i).to_string(), "received bytes: {line}");
        assert_eq!(fields[10], (1000 + i).to_string(), "sent bytes: {line}");
        assert!(line.ends_with("\"- - - \" \"-\" - -"), "{line}");
    }
    assert_eq!(logs.stats().lines.load(Ordering::Relaxed), 100);
    assert_eq!(logs.stats().files_uploaded.load(Ordering::Relaxed), 1);
    assert_eq!(logs.stats().spool_bytes.load(Ordering::Relaxed), 0);
}

#[test]
fn an_outage_delays_delivery_and_loses_nothing() {
    let moto = Moto::start().expect("moto");
    moto.create_bucket("logs").expect("bucket");
    let proxy = GatedProxy::start(format!("127.0.0.1:{}", moto.port).parse().unwrap()).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let rt = runtime();
    {
        let logs = AccessLogs::open(settings(&proxy.url(), spool.path(), 1 << 20)).unwrap();
        logs.set_destinations(destination("logs", ""));
        let writer = S3Writer::new(settings(&proxy.url(), spool.path(), 0).s3);
        proxy.close();
        for i in 0..60 {
            logs.record(&format!("web-{ACCOUNT}"), &connection(i));
        }
        logs.finish_all();
        // The endpoint is down: the file stays.
        assert_eq!(rt.block_on(logs.upload_ready(&writer)), 1);
        assert!(logs.stats().upload_failures.load(Ordering::Relaxed) >= 1);
        assert!(moto.keys("logs").unwrap().is_empty());
        // More lines while it is down, then the agent "restarts" (this collector goes away
        // with a file still open: a crash, flushed by its last tick).
        for i in 60..100 {
            logs.record(&format!("web-{ACCOUNT}"), &connection(i));
        }
        logs.tick();
    }
    // A new agent on the same spool, the endpoint back.
    proxy.reopen();
    let logs = AccessLogs::open(settings(&proxy.url(), spool.path(), 1 << 20)).unwrap();
    assert!(logs.stats().spool_bytes.load(Ordering::Relaxed) > 0);
    let writer = S3Writer::new(settings(&proxy.url(), spool.path(), 0).s3);
    assert_eq!(rt.block_on(logs.upload_ready(&writer)), 0);
    let files = delivered(&moto, "logs");
    assert_eq!(files.len(), 2, "{files:?}");
    let mut ports: Vec<u16> = files
        .iter()
        .flat_map(|(_, lines)| lines.iter())
        .map(|l| {
            l.split(' ')
                .nth(2)
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    ports.sort_unstable();
    assert_eq!(
        ports,
        (40000..40100).collect::<Vec<u16>>(),
        "every line exactly once"
    );
    for (key, _) in &files {
        assert!(
            key.starts_with(&format!("AWSLogs/{ACCOUNT}/elasticloadbalancing/")),
            "{key}"
        );
    }
}

#[test]
fn the_running_collector_retries_until_the_endpoint_returns() {
    let moto = Moto::start().expect("moto");
    moto.create_bucket("logs").expect("bucket");
    let proxy = GatedProxy::start(format!("127.0.0.1:{}", moto.port).parse().unwrap()).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let logs = AccessLogs::open(settings(&proxy.url(), spool.path(), 1 << 20)).unwrap();
    logs.set_destinations(destination("logs", ""));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = S3Writer::new(settings(&proxy.url(), spool.path(), 0).s3);
    let task = rt.spawn(Arc::clone(&logs).run(writer, stopped));
    proxy.close();
    for i in 0..30 {
        logs.record(&format!("web-{ACCOUNT}"), &connection(i));
    }
    logs.finish_all();
    std::thread::sleep(Duration::from_secs(3));
    assert!(moto.keys("logs").unwrap().is_empty());
    assert!(logs.stats().upload_failures.load(Ordering::Relaxed) >= 1);
    proxy.reopen();
    tests::netns::wait_for(Duration::from_secs(90), "delivery after the outage", || {
        (moto.keys("logs").ok()?.len() == 1).then_some(())
    })
    .unwrap();
    stop.send_replace(true);
    rt.block_on(task).unwrap();
    let files = delivered(&moto, "logs");
    assert_eq!(files[0].1.len(), 30);
}

#[test]
fn a_full_spool_refuses_lines_and_counts_them() {
    let spool = tempfile::tempdir().unwrap();
    let line_len = connection(0).format_line("web").len() as u64;
    let logs =
        AccessLogs::open(settings("http://127.0.0.1:9", spool.path(), line_len * 10)).unwrap();
    logs.set_destinations(destination("logs", ""));
    for i in 0..25 {
        logs.record(&format!("web-{ACCOUNT}"), &connection(i));
    }
    assert_eq!(logs.stats().lines.load(Ordering::Relaxed), 10);
    assert_eq!(logs.stats().dropped_lines.load(Ordering::Relaxed), 15);
}

/// A plain HTTP/1.1 backend on loopback: reads each request (headers and a Content-Length
/// body) and answers `hello` with keep-alive.
async fn hello_backend(ip: [u8; 4]) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::from(ip), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + length);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A self-signed certificate and its key (PEM), made by openssl.
fn certificate(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=web.test"])
        .args(["-addext", "subjectAltName=DNS:web.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

/// One HTTPS POST of 100 bytes through the engine, from 127.0.0.7; the status.
async fn post(vip: std::net::SocketAddr, i: usize) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-k", "--max-time", "10", "--interface", "127.0.0.7"])
        .args([
            "-A",
            "access-log-test/1.0",
            "--data-binary",
            &"x".repeat(100),
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{vip}/item/{i}?q=1"))
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of every object of `bucket`, checking AWS's key layout on the way.
fn delivered_lines(moto: &Moto, bucket: &str, prefix: &str) -> (usize, Vec<String>) {
    let files = delivered(moto, bucket);
    for (key, _) in &files {
        let rest = key
            .strip_prefix(&format!(
                "{prefix}/AWSLogs/{ACCOUNT}/elasticloadbalancing/us-east-1/"
            ))
            .unwrap_or_else(|| panic!("key layout: {key}"));
        let (date, name) = rest.rsplit_once('/').unwrap();
        assert_eq!(date.len(), "yyyy/mm/dd".len(), "{key}");
        assert!(
            name.starts_with(&format!("{ACCOUNT}_elasticloadbalancing_us-east-1_web_"))
                && name.contains(&format!("Z_{NODE}_"))
                && name.ends_with(".log"),
            "{key}"
        );
    }
    (
        files.len(),
        files.into_iter().flat_map(|(_, lines)| lines).collect(),
    )
}

/// The engine serving an HTTPS listener of a load balancer with access logs, wired the way
/// the agent wires it (its configuration, `Observe`, the engine observer, the upload task,
/// the SIGUSR1 flush): N requests are N lines under AWS's key layout with the client, the
/// backend, bytes, timings, codes, user agent and TLS; a bucket outage during an interval
/// delays the upload of the next file and loses no line.
#[test]
fn engine_requests_reach_the_bucket_through_an_outage() {
    use elb_userspace::agent::{admission, observe};
    let moto = Moto::start().expect("moto");
    moto.create_bucket("elb-logs").expect("bucket");
    let proxy = GatedProxy::start(format!("127.0.0.1:{}", moto.port).parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lb = format!("web-{ACCOUNT}");
    // The listener's certificate travels in the load balancer, as control sends it over TLS.
    let (cert, key) = certificate(dir.path());
    let config = format!(
        r#"interfaces = ["lo"]
[access_logs]
spool_dir = "{spool}"
node_address = "{NODE}"
[access_logs.s3]
endpoint = "{endpoint}"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"

[[LoadBalancers]]
LoadBalancerName = "{lb}"
Vips = ["127.0.0.2"]
Listeners = [{{ Protocol = "HTTPS", LoadBalancerPort = 443, InstanceProtocol = "HTTP", InstancePort = 80, SSLCertificateId = "arn:aws:iam::{ACCOUNT}:server-certificate/web" }}]
[[LoadBalancers.Certificates]]
CertificateId = "arn:aws:iam::{ACCOUNT}:server-certificate/web"
CertificateChain = '''
{cert}'''
PrivateKey = '''
{key}'''
[LoadBalancers.AccessLog]
S3BucketName = "elb-logs"
S3BucketPrefix = "prod/"
EmitInterval = 5
AccountId = "{ACCOUNT}"
LoadBalancerName = "web"
"#,
        spool = dir.path().join("spool").display(),
        endpoint = proxy.url(),
    );
    let file = elb_userspace::config::ConfigFile::parse(&config).unwrap();
    let admitted = admission::admit(&file.settings, &file.load_balancers, &[]);
    assert!(admitted.refused.is_empty(), "{:?}", admitted.refused);
    let cfg = elb_userspace::config::ServoConfig {
        load_balancers: admitted.served,
        ..file.settings
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (b1, _t1) = hello_backend([127, 0, 0, 41]).await;
        let (b2, _t2) = hello_backend([127, 0, 0, 42]).await;
        let engine = elb_engine::Engine::with_workers(2).unwrap();
        let name = observe::engine_listener_name(&lb, 443);
        engine
            .apply(vec![elb_engine::ListenerConfig {
                name: name.clone(),
                bind: vec!["127.0.0.2:0".parse().unwrap()],
                protocol: elb_engine::FrontendProtocol::Https,
                backend_protocol: elb_engine::BackendProtocol::Http,
                tls: Some(elb_engine::TlsSettings {
                    certificate_chain_pem: cert,
                    private_key_pem: key,
                    policy: elb_engine::policy::resolve_predefined(
                        elb_engine::policy::DEFAULT_POLICY,
                    )
                    .unwrap(),
                }),
                backend_authentication: Default::default(),
                stickiness: elb_engine::Stickiness::None,
                idle_timeout: Duration::from_secs(60),
                draining_timeout: None,
                proxy_protocol: false,
            }])
            .unwrap();
        let backends: Vec<elb_engine::Backend> = [b1, b2]
            .iter()
            .enumerate()
            .map(|(i, addr)| elb_engine::Backend {
                instance_id: format!("i-{i}"),
                addr: *addr,
                state: elb_engine::BackendState::InService,
            })
            .collect();
        engine.update_backends(&name, &backends).unwrap();
        let vip = engine.local_addrs(&name).unwrap()[0];

        let observed = observe::Observe::start(&cfg, Default::default()).unwrap();
        observed.attach_engine(&engine);
        let (flush, flushes) = tokio::sync::mpsc::channel(4);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let uploads = observed
            .spawn_access_logs(Some(flushes), stopped)
            .expect("access logs configured");
        let logs = observed.access_logs().unwrap().clone();

        for i in 0..20 {
            assert_eq!(post(vip, i).await, "200");
        }
        // SIGUSR1: the interval's file is finished now and delivered.
        flush.send(()).await.unwrap();
        let moto = &moto;
        tests::netns::wait_for(Duration::from_secs(30), "the first file", || {
            (moto.keys("elb-logs").ok()?.len() == 1).then_some(())
        })
        .unwrap();

        // The endpoint goes away; lines keep coming and the next file waits in the spool.
        proxy.close();
        for i in 20..30 {
            assert_eq!(post(vip, i).await, "200");
        }
        flush.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            moto.keys("elb-logs").unwrap().len(),
            1,
            "nothing new during the outage"
        );
        assert!(logs.stats().upload_failures.load(Ordering::Relaxed) >= 1);
        assert!(logs.stats().spool_bytes.load(Ordering::Relaxed) > 0);
        proxy.reopen();
        tests::netns::wait_for(Duration::from_secs(90), "the delayed file", || {
            (moto.keys("elb-logs").ok()?.len() == 2).then_some(())
        })
        .unwrap();
        stop.send_replace(true);
        uploads.await.unwrap();
        engine.shutdown(Duration::from_secs(1)).await;

        let (files, lines) = delivered_lines(moto, "elb-logs", "prod");
        assert_eq!(files, 2);
        assert_eq!(lines.len(), 30, "one line per request: {lines:#?}");
        let mut paths: Vec<String> = Vec::new();
        for line in &lines {
            let (head, quoted) = line.split_once(" \"").unwrap();
            let f: Vec<&str> = head.split(' ').collect();
            assert_eq!(f[1], "web", "{line}");
            assert!(f[2].starts_with("127.0.0.7:"), "client: {line}");
            assert!(
                f[3] == b1.to_string() || f[3] == b2.to_string(),
                "backend: {line}"
            );
            for t in &f[4..7] {
                let secs: f64 = t.parse().unwrap();
                assert!((0.0..5.0).contains(&secs), "timing {t}: {line}");
            }
            assert_eq!((f[7], f[8]), ("200", "200"), "codes: {line}");
            assert_eq!((f[9], f[10]), ("100", "5"), "bytes: {line}");
            let request = quoted.split('"').next().unwrap();
            let (method, rest) = request.split_once(' ').unwrap();
            let (url, version) = rest.rsplit_once(' ').unwrap();
            assert_eq!((method, version), ("POST", "HTTP/1.1"), "{line}");
            let path = url
                .strip_prefix(&format!("https://127.0.0.2:{}", vip.port()))
                .unwrap_or_else(|| panic!("url: {line}"));
            paths.push(path.to_string());
            assert!(
                line.contains("\"access-log-test/1.0\" ECDHE-ECDSA-AES"),
                "user agent and cipher: {line}"
            );
            assert!(line.ends_with(" TLSv1.2"), "{line}");
        }
        paths.sort();
        let mut want: Vec<String> = (0..30).map(|i| format!("/item/{i}?q=1")).collect();
        want.sort();
        assert_eq!(paths, want, "every request exactly once");
        let b1_lines = lines.iter().filter(|l| l.contains(&b1.to_string())).count();
        assert_eq!(b1_lines, 15, "round robin over two backends");
    });
}
