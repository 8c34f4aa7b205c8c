//! What the engine reports about what it serves: per-listener counters (requests, codes by
//! class, latency, bytes, backend connection errors) and one record per request (HTTPS) or per
//! connection (SSL) for the listeners an observer wants, with real clients and backends on
//! loopback.

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use elb_engine::{
    BackendProtocol, FrontendProtocol, Observer, RequestRecord, observe::RequestLine,
};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Keeps the records of the listeners it is told to watch.
#[derive(Debug, Default)]
struct Collect {
    watch: Vec<String>,
    records: Mutex<Vec<(String, RequestRecord)>>,
}

impl Observer for Collect {
    fn wants_records(&self, listener: &str) -> bool {
        self.watch.iter().any(|w| w == listener)
    }

    fn record(&self, listener: &str, record: RequestRecord) {
        self.records
            .lock()
            .unwrap()
            .push((listener.to_string(), record));
    }
}

impl Collect {
    fn take(&self) -> Vec<(String, RequestRecord)> {
        std::mem::take(&mut *self.records.lock().unwrap())
    }

    /// Records arrive when the response has been written: wait for `n`.
    async fn wait(&self, n: usize) -> Vec<(String, RequestRecord)> {
        for _ in 0..200 {
            if self.records.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.take()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_are_counted_and_recorded() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME);
    let b1 = HttpBackend::start("b1", [127, 0, 0, 31], None).await;
    let b2 = HttpBackend::start("b2", [127, 0, 0, 32], None).await;
    let mut config = listener(
        "web:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        Some(tls_settings(&leaf)),
    );
    let (engine, vip) = serve_with(2, &mut config, &[b1.addr, b2.addr]);
    let observer = Arc::new(Collect {
        watch: vec!["web:443".into()],
        ..Collect::default()
    });
    engine.set_observer(Some(observer.clone()));
    let cacert = pki.ca_file.display().to_string();
    let client = "127.0.0.7";
    let body = "x".repeat(1000);
    for _ in 0..6 {
        let r = curl(&[
            "--cacert",
            &cacert,
            "--resolve",
            &resolve(vip),
            "--interface",
            client,
            "-A",
            "elb-test/1.0",
            "--data-binary",
            &body,
            &https_url(vip, "/upload?x=1"),
        ])
        .await;
        assert_eq!((r.status, r.body.len()), (200, 2), "{r:?}");
    }
    let records = observer.wait(6).await;
    assert_eq!(records.len(), 6, "{records:?}");
    let mut backends = std::collections::BTreeSet::new();
    for (listener, r) in &records {
        assert_eq!(listener, "web:443");
        assert_eq!(r.client.ip().to_string(), client);
        backends.insert(r.backend.expect("a backend served it"));
        assert_eq!((r.elb_status, r.backend_status), (Some(200), Some(200)));
        assert_eq!((r.received_bytes, r.sent_bytes), (1000, 2), "{r:?}");
        assert_eq!(
            r.request,
            Some(RequestLine {
                method: "POST".into(),
                url: format!("https://{NAME}:{}/upload?x=1", vip.port()),
                version: "HTTP/1.1".into(),
            })
        );
        assert_eq!(r.user_agent.as_deref(), Some("elb-test/1.0"));
        let tls = r.tls.as_ref().expect("TLS parameters");
        assert_eq!(tls.protocol, "TLSv1.2");
        assert!(
            tls.cipher.starts_with("ECDHE-") && tls.cipher.contains("-GCM-"),
            "{tls:?}"
        );
        assert!(r.request_processing.is_some() && r.response_processing.is_some());
        assert!(r.backend_processing.unwrap() < Duration::from_secs(5));
    }
    assert_eq!(
        backends,
        [b1.addr, b2.addr].into_iter().collect(),
        "both backends served"
    );
    let s = engine.status()[0].stats.clone();
    assert_eq!(
        (s.connections, s.requests, s.backend_2xx, s.latency_count),
        (6, 6, 6, 6)
    );
    assert_eq!(
        (s.elb_5xx, s.backend_connection_errors, s.spillover),
        (0, 0, 0)
    );
    assert!(s.bytes_in >= 6000 && s.bytes_out >= 12, "{s:?}");
    assert_eq!(s.surge_queue, 0);

    // No InService backend: the engine answers 503 itself, recorded without a backend.
    engine.update_backends("web:443", &[]).unwrap();
    let r = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve(vip),
        &https_url(vip, "/"),
    ])
    .await;
    assert_eq!(r.status, 503);
    let records = observer.wait(1).await;
    assert_eq!(records.len(), 1);
    let r = &records[0].1;
    assert_eq!(
        (r.elb_status, r.backend_status, r.backend),
        (Some(503), None, None)
    );
    assert_eq!(r.backend_processing, None);

    // A backend that refuses connections: a backend connection error, 503.
    let closed = std::net::TcpListener::bind("127.0.0.33:0").unwrap();
    let dead: SocketAddr = closed.local_addr().unwrap();
    drop(closed);
    engine
        .update_backends("web:443", &in_service(&[dead]))
        .unwrap();
    let r = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve(vip),
        &https_url(vip, "/"),
    ])
    .await;
    assert_eq!(r.status, 503);
    // The record comes when the request's task ends, after its counters.
    assert_eq!(observer.wait(1).await.len(), 1);
    let s = engine.status()[0].stats.clone();
    assert_eq!((s.elb_5xx, s.backend_connection_errors), (2, 1), "{s:?}");

    // Without an observer nothing is recorded; the counters go on.
    engine.set_observer(None);
    engine
        .update_backends("web:443", &in_service(&[b1.addr]))
        .unwrap();
    let r = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve(vip),
        &https_url(vip, "/"),
    ])
    .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(observer.take().is_empty());
    assert_eq!(engine.status()[0].stats.backend_2xx, 7);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_connections_are_recorded_once_each_with_their_bytes() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME);
    let echo = EchoBackend::start("e1", [127, 0, 0, 34]).await;
    let mut config = listener(
        "mail:465",
        FrontendProtocol::Ssl,
        BackendProtocol::Tcp,
        Some(tls_settings(&leaf)),
    );
    let (engine, vip) = serve_with(2, &mut config, &[echo.addr]);
    let observer = Arc::new(Collect {
        watch: vec!["mail:465".into()],
        ..Collect::default()
    });
    engine.set_observer(Some(observer.clone()));
    let connector = pki.client(None);
    for _ in 0..3 {
        let mut tls = tls_connect(&connector, vip).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = tls.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"e1:hello");
        tls.shutdown().await.unwrap();
        // The engine sees the close and ends the connection.
        let _ = tls.read(&mut buf).await;
    }
    let records = observer.wait(3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for (_, r) in &records {
        assert_eq!(r.backend, Some(echo.addr));
        assert_eq!((r.received_bytes, r.sent_bytes), (5, 8), "{r:?}");
        assert_eq!((r.elb_status, r.request.as_ref()), (None, None));
        assert_eq!(r.tls.as_ref().unwrap().protocol, "TLSv1.2");
        assert!(r.backend_processing.is_some());
    }
    let s = engine.status()[0].stats.clone();
    assert_eq!((s.connections, s.requests, s.latency_count), (3, 3, 3));
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_engine_cannot_parse_is_an_elb_4xx() {
    let b1 = HttpBackend::start("b1", [127, 0, 0, 35], None).await;
    let mut config = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    let (engine, vip) = serve_with(1, &mut config, &[b1.addr]);
    let mut tcp = tokio::net::TcpStream::connect(vip).await.unwrap();
    tcp.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    // The connection's task counts the answer as it ends, which may be just after the client
    // saw the close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = engine.status()[0].stats.clone();
        if s.elb_4xx > 0 || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((s.elb_4xx, s.requests), (1, 0));
    engine.shutdown(Duration::from_secs(1)).await;
}
