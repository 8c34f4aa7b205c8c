//! Access log delivery to a real S3-compatible endpoint (moto's server): AWS's key layout and
//! line format, an endpoint outage that delays delivery and loses nothing (also across an
//! agent restart), files left open by a crash, and the bounded spool.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use elb_userspace::accesslog::{
    AccessLogEntry, AccessLogSettings, AccessLogs, LogDestination, S3Settings, S3Writer,
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
        client: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 40000 + i),
        backend: Some(SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 11), 80)),
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
