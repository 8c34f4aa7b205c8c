//! The engine end to end on loopback: real clients (curl, rustls), real HTTP/HTTPS/TCP backends,
//! a test CA.

mod support;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use elb_engine::{
    Backend, BackendAuthentication, BackendProtocol, BackendState, Engine, FrontendProtocol,
    Stickiness, policy,
};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A custom policy: TLS 1.2 and `ciphers`, the client's order.
fn custom_policy(ciphers: &[&str]) -> policy::ResolvedPolicy {
    let mut attributes = vec![("Protocol-TLSv1.2", "true")];
    attributes.extend(ciphers.iter().map(|c| (*c, "true")));
    policy::resolve_attributes(&attributes, policy::Mode::Strict).unwrap()
}

fn tally(bodies: &[String]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for b in bodies {
        *t.entry(b.clone()).or_default() += 1;
    }
    t
}

async fn three_backends(tls: Option<&Leaf>) -> Vec<HttpBackend> {
    let mut v = Vec::new();
    for i in 1..=3u8 {
        v.push(HttpBackend::start(&format!("b{i}"), [127, 0, 0, 10 + i], tls).await);
    }
    v
}

fn addrs(backends: &[HttpBackend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_terminates_spreads_and_forwards_the_client() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME);
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        Some(tls_settings(&leaf)),
    );
    let (engine, vip) = serve_with(2, &mut config, &addrs(&backends));
    let cacert = pki.ca_file.display().to_string();
    let url = https_url(vip, "/");
    let client = format!(
        "{}.{}.{}.{}",
        CLIENT_IP[0], CLIENT_IP[1], CLIENT_IP[2], CLIENT_IP[3]
    );

    let mut bodies = Vec::new();
    for _ in 0..9 {
        let r = curl(&[
            "--cacert",
            &cacert,
            "--resolve",
            &resolve(vip),
            "--interface",
            &client,
            &url,
        ])
        .await;
        assert!(r.ok && r.status == 200, "{r:?}");
        bodies.push(r.body);
    }
    assert_eq!(
        tally(&bodies),
        BTreeMap::from([("b1".into(), 3), ("b2".into(), 3), ("b3".into(), 3)]),
        "round robin over three backends"
    );
    for b in &backends {
        for seen in b.seen() {
            assert_eq!(seen.headers["x-forwarded-for"], client.as_str());
            assert_eq!(seen.headers["x-forwarded-proto"], "https");
            assert_eq!(
                seen.headers["x-forwarded-port"],
                vip.port().to_string().as_str()
            );
        }
    }

    // An existing X-Forwarded-For gets the client appended.
    let r = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve(vip),
        "--interface",
        &client,
        "-H",
        "X-Forwarded-For: 203.0.113.7",
        &https_url(vip, "/xff"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen: Vec<Seen> = backends
        .iter()
        .flat_map(|b| b.seen())
        .filter(|s| s.path == "/xff")
        .collect();
    assert_eq!(
        seen[0].headers["x-forwarded-for"],
        format!("203.0.113.7, {client}").as_str()
    );

    // The name is verified: a client asking for another name refuses the certificate.
    let other = format!("other.test:{}:{}", vip.port(), vip.ip());
    let r = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &other,
        &format!("https://other.test:{}/", vip.port()),
    ])
    .await;
    assert!(
        !r.ok,
        "a certificate for another name must be refused: {r:?}"
    );

    // Keep-alive on the client side: two requests on one connection; and towards the backends:
    // fewer backend connections than requests.
    let before = engine.status()[0].connections;
    let r = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve(vip),
        &https_url(vip, "/a"),
        &https_url(vip, "/b"),
    ])
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(engine.status()[0].connections, before + 1);
    let requests: usize = backends.iter().map(|b| b.seen().len()).sum();
    let conns: usize = backends
        .iter()
        .map(|b| b.connections.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(requests, 12);
    // One idle-connection pool per backend and worker.
    assert!(
        conns <= 3 * 2,
        "{conns} backend connections for {requests} requests"
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

/// The certificate a new TLS connection to `vip` gets.
async fn served_cert(pki: &Pki, vip: SocketAddr) -> Vec<u8> {
    let tls = tls_connect(&pki.client(None), vip).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn get_on(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> String {
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {NAME}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_reaches_new_connections_within_a_second() {
    let pki = Pki::new();
    let (first, second) = (pki.leaf(NAME), pki.leaf(NAME));
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        Some(tls_settings(&first)),
    );
    let (engine, vip) = serve(&mut config, &addrs(&backends));
    assert_eq!(served_cert(&pki, vip).await, first.der);
    let mut old = tls_connect(&pki.client(None), vip).await.unwrap();
    assert!(get_on(&mut old).await.starts_with("HTTP/1.1 200"));

    // Same bind address (port now fixed): the listener is updated in place, not rebound.
    config.bind = vec![vip];
    config.tls = Some(tls_settings(&second));
    let t0 = std::time::Instant::now();
    engine.apply(vec![config]).unwrap();
    loop {
        if served_cert(&pki, vip).await == second.der {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still the old certificate after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection opened before keeps its session and still works.
    assert_eq!(
        old.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        first.der
    );
    assert!(get_on(&mut old).await.starts_with("HTTP/1.1 200"));
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssl_listener_reaches_plain_tcp_backends_per_connection() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME);
    let e1 = EchoBackend::start("e1", [127, 0, 0, 21]).await;
    let e2 = EchoBackend::start("e2", [127, 0, 0, 22]).await;
    let mut config = listener(
        "smtp:465",
        FrontendProtocol::Ssl,
        BackendProtocol::Tcp,
        Some(tls_settings(&leaf)),
    );
    let (engine, vip) = serve(&mut config, &[e1.addr, e2.addr]);
    let connector = pki.client(None);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut tls = tls_connect(&connector, vip).await.unwrap();
        // Two exchanges on one connection stay on one backend.
        let mut first = String::new();
        for word in ["hello", "again"] {
            tls.write_all(word.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 64];
            let n = tls.read(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (who, what) = text.split_once(':').unwrap();
            assert_eq!(what, word);
            if first.is_empty() {
                first = who.to_string();
            } else {
                assert_eq!(who, first);
            }
        }
        answers.push(first);
    }
    assert_eq!(
        tally(&answers),
        BTreeMap::from([("e1".into(), 2), ("e2".into(), 2)])
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssl_listener_sends_a_proxy_header_when_asked() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME);
    let e1 = EchoBackend::start("e1", [127, 0, 0, 23]).await;
    let mut config = listener(
        "smtp:465",
        FrontendProtocol::Ssl,
        BackendProtocol::Tcp,
        Some(tls_settings(&leaf)),
    );
    config.proxy_protocol = true;
    let (engine, vip) = serve(&mut config, &[e1.addr]);
    let connector = pki.client(None);
    let mut tls = tls_connect(&connector, vip).await.unwrap();
    let client = tls.get_ref().0.local_addr().unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut seen = String::new();
    while !seen.contains("hello") {
        let mut buf = vec![0u8; 256];
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let text = seen.replace("e1:", "");
    let header = format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        vip.ip(),
        client.port(),
        vip.port()
    );
    assert_eq!(text, format!("{header}hello"));
    engine.shutdown(Duration::from_secs(1)).await;
}

/// GETs `url` through curl with the cookie jar `jar`; returns the body.
async fn jar_get(jar: &str, url: &str) -> CurlOut {
    let r = curl(&["-b", jar, "-c", jar, url]).await;
    assert!(r.ok, "{r:?}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_cookie_stickiness_binds_clients_and_moves_them_off_a_leaving_backend() {
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    config.stickiness = Stickiness::LbCookie {
        expiration: Some(Duration::from_secs(60)),
    };
    let (engine, vip) = serve(&mut config, &addrs(&backends));
    let url = format!("http://{vip}/");
    let dir = tempfile::tempdir().unwrap();
    let jar_a = dir.path().join("a").display().to_string();
    let jar_b = dir.path().join("b").display().to_string();

    let first = jar_get(&jar_a, &url).await;
    assert!(
        first.headers.contains("AWSELB=") && first.headers.contains("MAX-AGE=60"),
        "{}",
        first.headers
    );
    let home = first.body.clone();
    for _ in 0..19 {
        let r = jar_get(&jar_a, &url).await;
        assert_eq!(
            r.body, home,
            "a client with the cookie stays on its backend"
        );
        assert!(
            !r.headers.contains("AWSELB="),
            "the cookie is not refreshed"
        );
    }
    let other = jar_get(&jar_b, &url).await.body;
    assert_ne!(other, home, "another client lands elsewhere");

    // The first client's backend leaves (OutOfService with draining): it moves, and stays.
    let mut list = in_service(&addrs(&backends));
    let i = backends.iter().position(|b| b.name == home).unwrap();
    list[i].state = BackendState::Draining;
    engine.update_backends("web:80", &list).unwrap();
    let moved = jar_get(&jar_a, &url).await;
    assert_ne!(moved.body, home);
    assert!(
        moved.headers.contains("AWSELB="),
        "a new binding gets a new cookie"
    );
    for _ in 0..5 {
        assert_eq!(jar_get(&jar_a, &url).await.body, moved.body);
    }
    // Without stickiness, the cookie means nothing: round robin again.
    let mut plain = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    plain.bind = vec![vip];
    engine.apply(vec![plain]).unwrap();
    let spread: Vec<String> = futures_bodies(&jar_a, &url, 4).await;
    assert!(tally(&spread).len() >= 2, "{spread:?}");
    engine.shutdown(Duration::from_secs(1)).await;
}

async fn futures_bodies(jar: &str, url: &str, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(jar_get(jar, url).await.body);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_cookie_stickiness_follows_the_applications_cookie() {
    let backends = three_backends(None).await;
    let mut config = listener(
        "app:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    config.stickiness = Stickiness::AppCookie {
        cookie_name: "SESSIONID".into(),
    };
    let (engine, vip) = serve(&mut config, &addrs(&backends));
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("jar").display().to_string();

    // No application cookie in the response: no stickiness cookie.
    let plain = jar_get(&jar, &format!("http://{vip}/")).await;
    assert!(!plain.headers.contains("AWSELB"), "{}", plain.headers);
    // The application sets its cookie: the engine adds AWSELB with the same lifetime.
    let login = jar_get(&jar, &format!("http://{vip}/login")).await;
    assert!(
        login.headers.contains("AWSELB=") && login.headers.contains("Max-Age=600"),
        "{}",
        login.headers
    );
    let home = login.body.clone();
    for _ in 0..10 {
        assert_eq!(jar_get(&jar, &format!("http://{vip}/")).await.body, home);
    }
    // AWSELB without the application's cookie binds nothing: requests are balanced.
    let sticky = login
        .headers
        .lines()
        .find_map(|l| l.split("AWSELB=").nth(1))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let mut spread = Vec::new();
    for _ in 0..3 {
        let r = curl(&["-b", &format!("AWSELB={sticky}"), &format!("http://{vip}/")]).await;
        spread.push(r.body);
    }
    assert_eq!(tally(&spread).len(), 3, "{spread:?}");
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_negotiation_policy_decides_the_handshake() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME); // ECDSA P-256 key
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        Some(tls_settings(&leaf)),
    );
    let (engine, vip) = serve(&mut config, &addrs(&backends));
    let cacert = pki.ca_file.display().to_string();
    let client_needs = |cipher: &'static str| {
        let (cacert, r, url) = (cacert.clone(), resolve(vip), https_url(vip, "/"));
        async move {
            curl(&[
                "--cacert",
                &cacert,
                "--resolve",
                &r,
                "--tls-max",
                "1.2",
                "--ciphers",
                cipher,
                &url,
            ])
            .await
        }
    };
    assert_eq!(
        client_needs("ECDHE-ECDSA-AES128-GCM-SHA256").await.status,
        200
    );

    // A custom policy without the client's only cipher: the handshake fails.
    let narrow = custom_policy(&["ECDHE-ECDSA-AES256-GCM-SHA384"]);
    config.tls.as_mut().unwrap().policy = narrow;
    engine.apply(vec![config.clone()]).unwrap();
    let r = client_needs("ECDHE-ECDSA-AES128-GCM-SHA256").await;
    assert!(!r.ok && r.status == 0, "handshake must fail: {r:?}");
    assert_eq!(
        client_needs("ECDHE-ECDSA-AES256-GCM-SHA384").await.status,
        200
    );

    // Server order: with the predefined policy (Server-Defined-Cipher-Order) the server's first
    // choice wins over the client's; without it, the client's.
    let client_prefers_256 = pki.client(Some(&[0xC02C, 0xC02B]));
    let suite = |c: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        u16::from(c.get_ref().1.negotiated_cipher_suite().unwrap().suite())
    };
    let client_order = custom_policy(&[
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ]);
    config.tls.as_mut().unwrap().policy = client_order;
    engine.apply(vec![config.clone()]).unwrap();
    let c = tls_connect(&client_prefers_256, vip).await.unwrap();
    assert_eq!(suite(&c), 0xC02C, "client order");

    // Restoring the predefined policy: the first client works again, server order applies.
    config.tls = Some(tls_settings(&leaf));
    engine.apply(vec![config.clone()]).unwrap();
    assert_eq!(
        client_needs("ECDHE-ECDSA-AES128-GCM-SHA256").await.status,
        200
    );
    let c = tls_connect(&client_prefers_256, vip).await.unwrap();
    assert_eq!(suite(&c), 0xC02B, "server order");

    // A policy that offers nothing for the certificate's key is refused with a clear error, and
    // the listener keeps serving with what it had.
    let rsa_only = custom_policy(&["ECDHE-RSA-AES128-GCM-SHA256"]);
    config.tls.as_mut().unwrap().policy = rsa_only;
    let err = engine.apply(vec![config]).unwrap_err().to_string();
    assert!(
        err.contains("no cipher for a certificate with an Ecdsa key"),
        "{err}"
    );
    assert_eq!(
        client_needs("ECDHE-ECDSA-AES128-GCM-SHA256").await.status,
        200
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_in_service_instance_is_503() {
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    let (engine, vip) = serve(&mut config, &[]);
    let url = format!("http://{vip}/");
    assert_eq!(curl(&[&url]).await.status, 503, "no backend at all");
    let mut list = in_service(&addrs(&backends));
    for b in &mut list {
        b.state = BackendState::Draining;
    }
    engine.update_backends("web:80", &list).unwrap();
    assert_eq!(curl(&[&url]).await.status, 503, "all draining");
    list[1].state = BackendState::InService;
    engine.update_backends("web:80", &list).unwrap();
    let r = curl(&[&url]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "b2"));
    assert!(matches!(
        engine.update_backends("nope", &list),
        Err(elb_engine::EngineError::UnknownListener(_))
    ));
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified_only_with_a_key_policy() {
    let pki = Pki::new();
    let backend_leaf = pki.leaf("backend.test");
    let stranger = pki.leaf("backend.test");
    let backend = HttpBackend::start("secure", [127, 0, 0, 31], Some(&backend_leaf)).await;
    let mut config = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Https,
        None,
    );
    let (engine, vip) = serve(&mut config, &[backend.addr]);
    let url = format!("http://{vip}/");
    let r = curl(&[&url]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "secure"),
        "not verified: any key"
    );

    config.backend_authentication = BackendAuthentication {
        public_keys: vec![backend_leaf.spki.clone()],
    };
    engine.apply(vec![config.clone()]).unwrap();
    let r = curl(&[&url]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "secure"),
        "the right key"
    );

    config.backend_authentication = BackendAuthentication {
        public_keys: vec![stranger.spki.clone()],
    };
    engine.apply(vec![config]).unwrap();
    let r = curl(&[&url]).await;
    assert_eq!(
        r.status, 503,
        "a backend with another key is refused: {r:?}"
    );
    assert_eq!(backend.seen().len(), 2, "nothing reached the backend");
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_finishes_in_flight_requests_then_cuts() {
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    config.draining_timeout = Some(Duration::from_secs(5));
    let all = in_service(&addrs(&backends));
    let (engine, vip) = serve(&mut config, &addrs(&backends));

    // A slow request on b1 (the first in rotation); b1 starts draining meanwhile.
    let slow = tokio::spawn(curl_owned(format!("http://{vip}/slow")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut list = all.clone();
    list[0].state = BackendState::Draining;
    engine.update_backends("web:80", &list).unwrap();
    for _ in 0..4 {
        assert_ne!(curl(&[&format!("http://{vip}/")]).await.body, "b1");
    }
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "b1"),
        "in flight finishes"
    );

    // With a short draining timeout, what is still in flight at the deadline is cut.
    config.draining_timeout = Some(Duration::from_millis(300));
    engine.apply(vec![config]).unwrap();
    engine.update_backends("web:80", &all).unwrap();
    let slow = tokio::spawn(curl_owned(format!("http://{vip}/slow")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy: Vec<Backend> = engine.status()[0]
        .backends
        .iter()
        .filter(|b| b.active > 0)
        .map(|b| Backend {
            instance_id: b.instance_id.clone(),
            addr: b.addr,
            state: BackendState::Draining,
        })
        .collect();
    assert_eq!(busy.len(), 1);
    let list: Vec<Backend> = all
        .iter()
        .map(|b| {
            busy.iter()
                .find(|d| d.instance_id == b.instance_id)
                .cloned()
                .unwrap_or_else(|| b.clone())
        })
        .collect();
    engine.update_backends("web:80", &list).unwrap();
    let r = slow.await.unwrap();
    assert!(
        r.status != 200 || !r.ok,
        "cut at the draining timeout: {r:?}"
    );

    // Removal (no longer listed) cuts at once.
    engine.update_backends("web:80", &all).unwrap();
    let slow = tokio::spawn(curl_owned(format!("http://{vip}/slow")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    engine.update_backends("web:80", &[]).unwrap();
    let r = slow.await.unwrap();
    assert!(!r.ok || r.status != 200, "{r:?}");
    assert!(t0.elapsed() < Duration::from_millis(1000));
    engine.shutdown(Duration::from_secs(1)).await;
}

async fn curl_owned(url: String) -> CurlOut {
    curl(&[&url]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:80",
        FrontendProtocol::Http,
        BackendProtocol::Http,
        None,
    );
    config.idle_timeout = Duration::from_secs(1);
    let (engine, vip) = serve(&mut config, &addrs(&backends));
    let mut s = tokio::net::TcpStream::connect(vip).await.unwrap();
    assert!(get_on(&mut s).await.starts_with("HTTP/1.1 200"));
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the engine closes the idle connection");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2000),
        "closed after {waited:?}"
    );
    // A busy connection is not idle: requests every 400 ms for 2 s keep it open.
    let mut s = tokio::net::TcpStream::connect(vip).await.unwrap();
    for _ in 0..5 {
        assert!(get_on(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_listeners_are_refused_and_others_still_applied() {
    let pki = Pki::new();
    let leaf = pki.leaf(NAME);
    let engine = Engine::new().unwrap();
    let good = listener("ok:80", FrontendProtocol::Http, BackendProtocol::Http, None);
    let no_cert = listener(
        "a:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        None,
    );
    let mut bad_key = listener(
        "b:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        Some(tls_settings(&leaf)),
    );
    bad_key.tls.as_mut().unwrap().private_key_pem = pki.leaf(NAME).key_pem;
    let pairing = listener("c:80", FrontendProtocol::Http, BackendProtocol::Tcp, None);
    let err = engine
        .apply(vec![good, no_cert, bad_key, pairing])
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(
        text.contains("Https listener without a certificate"),
        "{text}"
    );
    assert!(text.contains("do not go together"), "{text}");
    assert!(text.contains("cannot forward to Tcp backends"), "{text}");
    assert_eq!(engine.status().len(), 1);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_certificates_are_served() {
    let pki = Pki::new();
    let leaf = pki.leaf_rsa(NAME);
    let backends = three_backends(None).await;
    let mut config = listener(
        "web:443",
        FrontendProtocol::Https,
        BackendProtocol::Http,
        Some(tls_settings(&leaf)),
    );
    let (engine, vip) = serve(&mut config, &addrs(&backends));
    let cacert = pki.ca_file.display().to_string();
    for cipher in ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"] {
        let r = curl(&[
            "--cacert",
            &cacert,
            "--resolve",
            &resolve(vip),
            "--tls-max",
            "1.2",
            "--ciphers",
            cipher,
            &https_url(vip, "/"),
        ])
        .await;
        assert_eq!(r.status, 200, "{cipher}: {r:?}");
    }
    // An ECDSA-only policy cannot serve an RSA certificate.
    config.tls.as_mut().unwrap().policy = custom_policy(&["ECDHE-ECDSA-AES128-GCM-SHA256"]);
    let err = engine.apply(vec![config]).unwrap_err().to_string();
    assert!(err.contains("Rsa key"), "{err}");
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_without_disturbing_the_others() {
    let backends = three_backends(None).await;
    let mut a = listener("a:80", FrontendProtocol::Http, BackendProtocol::Http, None);
    let (engine, vip_a) = serve(&mut a, &addrs(&backends));
    let mut open = tokio::net::TcpStream::connect(vip_a).await.unwrap();
    assert!(get_on(&mut open).await.starts_with("HTTP/1.1 200"));

    let b = listener("b:80", FrontendProtocol::Http, BackendProtocol::Http, None);
    engine.apply(vec![a.clone(), b]).unwrap();
    engine
        .update_backends("b:80", &in_service(&addrs(&backends)))
        .unwrap();
    let vip_b = engine.local_addrs("b:80").unwrap()[0];
    assert_ne!(vip_a, vip_b);
    assert_eq!(curl(&[&format!("http://{vip_b}/")]).await.status, 200);
    assert!(get_on(&mut open).await.starts_with("HTTP/1.1 200"));

    engine.apply(vec![a]).unwrap();
    let r = curl(&[&format!("http://{vip_b}/")]).await;
    assert!(!r.ok, "a removed listener no longer accepts: {r:?}");
    assert_eq!(engine.status().len(), 1);
    // The connection opened on the other listener before all this still works.
    assert!(get_on(&mut open).await.starts_with("HTTP/1.1 200"));
    engine.shutdown(Duration::from_secs(1)).await;
}
