//! TLS termination: the engine (`elb-engine`) against HAProxy, each terminating the same RSA-2048
//! certificate with the same protocol and ciphers (ELBSecurityPolicy-2016-08 as the engine offers
//! it: TLS 1.2, four ECDHE AEAD suites, server order) on the same topology as the e2e section:
//!
//! ```text
//!  client ns (load) --- servo ns (engine | HAProxy on VIP:443) --- switch --- 3 backend ns (nginx)
//! ```
//! Each balancer gets fresh namespaces. Two measurements per balancer:
//! - handshakes per second: a rustls client (no session resumption, so every connection is a
//!   full handshake) opens connections, sends one request with `Connection: close`, reads the
//!   response and closes, from many concurrent tasks;
//! - keep-alive requests per second over TLS: wrk (OpenSSL) with persistent connections.
//!
//! Keys: `tls.handshakes_per_s`, `tls.haproxy_handshakes_per_s`, `tls.requests_per_s`,
//! `tls.haproxy_requests_per_s`, their ratios `tls.handshakes_vs_haproxy` and
//! `tls.requests_vs_haproxy`, and errors of each run.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use elb_engine::{
    Backend, BackendAuthentication, BackendProtocol, BackendState, Engine, FrontendProtocol,
    ListenerConfig, Stickiness, TlsSettings, policy,
};
use rustls::{crypto::ring, pki_types::ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    Mode,
    e2e::{WrkArgs, spawn_haproxy, which, wrk},
    median, progress,
    report::Results,
};
use crate::{
    netns::{Netns, Proc, tempdir},
    topo::{Topology, VIP, backend_addr},
};

/// Backends (nginx, one worker each), as in the e2e section.
const BACKENDS: usize = 3;
/// The TLS port.
const PORT: u16 = 443;
/// The name in the certificate.
const CERT_NAME: &str = "bench.elb.test";
/// Where clients connect.
const VIP_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(VIP), PORT);
/// The policy both balancers apply.
const POLICY: &str = policy::DEFAULT_POLICY;
/// Client ephemeral ports.
const CLIENT_PORTS: &str = "10000 65000";

/// The two balancers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terminator {
    Engine,
    Haproxy,
}

impl Terminator {
    fn name(self) -> &'static str {
        match self {
            Self::Engine => "engine",
            Self::Haproxy => "haproxy",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Alternating rounds per terminator (the medians are reported).
    rounds: usize,
    secs: u32,
    /// Concurrent handshaking clients.
    handshake_conns: usize,
    /// Client runtime threads for the handshake load.
    client_threads: usize,
    wrk_threads: u32,
    wrk_conns: u32,
    warmup_secs: u32,
}

impl Plan {
    fn for_mode(mode: Mode) -> Self {
        mode.pick(
            Self {
                rounds: 3,
                secs: 10,
                handshake_conns: 64,
                client_threads: 2,
                wrk_threads: 2,
                wrk_conns: 64,
                warmup_secs: 2,
            },
            Self {
                rounds: 2,
                secs: 4,
                handshake_conns: 64,
                client_threads: 2,
                wrk_threads: 2,
                wrk_conns: 64,
                warmup_secs: 1,
            },
            Self {
                rounds: 1,
                secs: 1,
                handshake_conns: 4,
                client_threads: 1,
                wrk_threads: 1,
                wrk_conns: 4,
                warmup_secs: 0,
            },
        )
    }
}

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    crate::netns::require_root();
    for tool in ["wrk", "haproxy", "nginx", "openssl"] {
        which(tool)
            .with_context(|| format!("{tool} is not installed (cargo xtask setup installs it)"))?;
    }
    let plan = Plan::for_mode(mode);
    let dir = tempdir("tls-bench")?;
    let cert = Certificate::generate(dir.path())?;
    // Both run side by side in their own namespaces and are measured in alternating rounds, so
    // that other work on the shared machine weighs on both alike; each number is the median.
    let mut setups = Vec::new();
    for t in [Terminator::Engine, Terminator::Haproxy] {
        setups
            .push(Setup::start(t, plan, &cert).with_context(|| format!("starting {}", t.name()))?);
    }
    let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(), Vec::new()];
    for _ in 0..plan.rounds {
        for (i, setup) in setups.iter_mut().enumerate() {
            let m = setup
                .round(plan)
                .with_context(|| format!("TLS benchmark of {}", setup.t.name()))?;
            rounds[i].push(m);
        }
    }
    drop(setups);
    for (t, rounds) in [Terminator::Engine, Terminator::Haproxy]
        .into_iter()
        .zip(&rounds)
    {
        let m = combine(rounds);
        let prefix = match t {
            Terminator::Engine => "tls.",
            Terminator::Haproxy => "tls.haproxy_",
        };
        results.set(format!("{prefix}handshakes_per_s"), m.handshakes_per_s);
        results.set(
            format!("{prefix}handshake_errors"),
            m.handshake_errors as f64,
        );
        results.set(format!("{prefix}requests_per_s"), m.requests_per_s);
        results.set(format!("{prefix}request_errors"), m.request_errors as f64);
        results.set(format!("{prefix}p50_ms"), m.p50_ms);
        results.set(format!("{prefix}p99_ms"), m.p99_ms);
        progress(format!(
            "tls {}: {:.0} handshakes/s ({} errors), {:.0} keep-alive requests/s ({} errors, p50 \
             {:.2} ms, p99 {:.2} ms); medians of {} rounds: handshakes {:?}, requests {:?}",
            t.name(),
            m.handshakes_per_s,
            m.handshake_errors,
            m.requests_per_s,
            m.request_errors,
            m.p50_ms,
            m.p99_ms,
            rounds.len(),
            rounds
                .iter()
                .map(|r| r.handshakes_per_s.round())
                .collect::<Vec<_>>(),
            rounds
                .iter()
                .map(|r| r.requests_per_s.round())
                .collect::<Vec<_>>(),
        ));
    }
    for (ratio, ours, theirs) in [
        (
            "tls.handshakes_vs_haproxy",
            "tls.handshakes_per_s",
            "tls.haproxy_handshakes_per_s",
        ),
        (
            "tls.requests_vs_haproxy",
            "tls.requests_per_s",
            "tls.haproxy_requests_per_s",
        ),
    ] {
        if let (Some(a), Some(b)) = (results.get(ours), results.get(theirs))
            && b > 0.0
        {
            results.set(ratio, a / b);
        }
    }
    results.note("tls", note(plan));
    Ok(())
}

fn note(plan: Plan) -> String {
    format!(
        "Same topology as e2e (client -> servo -> switch -> 3 nginx backends), one set of fresh \
         namespaces per terminator, both up at once and measured in {r} alternating rounds \
         (medians reported). Certificate: self-signed RSA-2048 for {CERT_NAME}, the same PEM files for \
         both. Protocol and ciphers: {POLICY} as the engine offers it (TLS 1.2; \
         ECDHE-ECDSA/RSA-AES128/256-GCM; server order); HAProxy 2.6 is given the same \
         (ssl-min-ver/ssl-max-ver TLSv1.2, the same cipher list), mode http, option forwardfor, \
         balance roundrobin, nbthread 2, keep-alive to the backends (http-reuse safe). The \
         engine: elb-engine in-process in the servo namespace with 2 worker threads, HTTPS \
         listener VIP:443 -> HTTP:80 (X-Forwarded-For/-Proto/-Port added, round robin). \
         Handshakes: a rustls client on {ct} thread(s), {hc} concurrent connections, each a full \
         handshake (no resumption, X25519), one GET with Connection: close, {s} s. Requests: wrk \
         -t{wt} -c{wc} -d{s}s --latency over TLS, keep-alive. Everything shares the 2 vCPUs.",
        r = plan.rounds,
        ct = plan.client_threads,
        hc = plan.handshake_conns,
        s = plan.secs,
        wt = plan.wrk_threads,
        wc = plan.wrk_conns,
    )
}

/// The benchmark's certificate: RSA-2048, made by openssl (rcgen cannot make RSA keys).
struct Certificate {
    cert_pem: String,
    key_pem: String,
    /// Certificate and key in one file, as HAProxy's `crt` takes them.
    combined: std::path::PathBuf,
}

impl Certificate {
    fn generate(dir: &Path) -> anyhow::Result<Self> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={CERT_NAME}")])
            .args(["-addext", &format!("subjectAltName=DNS:{CERT_NAME}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .context("running openssl")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert_pem = fs::read_to_string(&cert)?;
        let key_pem = fs::read_to_string(&key)?;
        let combined = dir.join("combined.pem");
        fs::write(&combined, format!("{cert_pem}{key_pem}"))?;
        Ok(Self {
            cert_pem,
            key_pem,
            combined,
        })
    }
}

struct Measured {
    handshakes_per_s: f64,
    handshake_errors: u64,
    requests_per_s: f64,
    request_errors: u64,
    p50_ms: f64,
    p99_ms: f64,
}

enum Running {
    Engine(EngineThread),
    Haproxy { proc: Proc, _dir: tempfile::TempDir },
}

/// One terminator running in its own fresh namespaces. Fields drop in order: the terminator
/// first, then the topology.
struct Setup {
    t: Terminator,
    running: Running,
    topo: Topology,
}

impl Setup {
    fn start(t: Terminator, plan: Plan, cert: &Certificate) -> anyhow::Result<Self> {
        progress(format!("tls {}: building fresh namespaces", t.name()));
        let mut topo = Topology::build(BACKENDS)?;
        for ns in [&topo.client, &topo.servo] {
            ns.sysctl("net.ipv4.ip_local_port_range", CLIENT_PORTS)?;
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }
        topo.start_nginx(1)?;
        let running = match t {
            Terminator::Engine => Running::Engine(EngineThread::start(&topo.servo, cert)?),
            Terminator::Haproxy => {
                let (proc, dir) = start_haproxy(&topo, cert)?;
                Running::Haproxy { proc, _dir: dir }
            }
        };
        let setup = Self { t, running, topo };
        // Every backend answers through the terminator before anything is measured.
        let first = handshake_load(
            &setup.client(),
            VIP_PORT,
            1,
            1,
            1,
            Some(BACKENDS as u64 * 2),
        )?;
        anyhow::ensure!(
            first.ok >= BACKENDS as u64,
            "only {} of {} requests through {} succeeded",
            first.ok,
            BACKENDS * 2,
            t.name()
        );
        if plan.warmup_secs > 0 {
            handshake_load(
                &setup.client(),
                VIP_PORT,
                plan.handshake_conns,
                plan.client_threads,
                plan.warmup_secs,
                None,
            )?;
        }
        Ok(setup)
    }

    fn client(&self) -> String {
        self.topo.client.name().to_string()
    }

    /// One handshake run and one keep-alive run.
    fn round(&mut self, plan: Plan) -> anyhow::Result<Measured> {
        let name = self.t.name();
        progress(format!(
            "tls {name}: full handshakes ({} s, {} connections)",
            plan.secs, plan.handshake_conns
        ));
        let hs = handshake_load(
            &self.client(),
            VIP_PORT,
            plan.handshake_conns,
            plan.client_threads,
            plan.secs,
            None,
        )?;
        check_alive(&mut self.running)?;
        thread::sleep(Duration::from_millis(500));
        progress(format!(
            "tls {name}: keep-alive requests ({} s, wrk -c{})",
            plan.secs, plan.wrk_conns
        ));
        let url = format!("https://{VIP}:{PORT}/name");
        let rps = wrk(
            &self.client(),
            &WrkArgs {
                threads: plan.wrk_threads,
                conns: plan.wrk_conns,
                secs: plan.secs,
                close: false,
                latency: true,
                url: &url,
            },
        )?;
        check_alive(&mut self.running)?;
        thread::sleep(Duration::from_millis(500));
        Ok(Measured {
            handshakes_per_s: hs.ok as f64 / hs.elapsed.as_secs_f64(),
            handshake_errors: hs.errors,
            requests_per_s: rps.rps,
            request_errors: rps.errors(),
            p50_ms: rps.p50_ms,
            p99_ms: rps.p99_ms,
        })
    }
}

/// The medians of several rounds (errors summed).
fn combine(rounds: &[Measured]) -> Measured {
    let med = |f: fn(&Measured) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    Measured {
        handshakes_per_s: med(|m| m.handshakes_per_s),
        handshake_errors: rounds.iter().map(|m| m.handshake_errors).sum(),
        requests_per_s: med(|m| m.requests_per_s),
        request_errors: rounds.iter().map(|m| m.request_errors).sum(),
        p50_ms: med(|m| m.p50_ms),
        p99_ms: med(|m| m.p99_ms),
    }
}

fn check_alive(running: &mut Running) -> anyhow::Result<()> {
    match running {
        Running::Haproxy { proc, .. } => {
            if !proc.is_running() {
                bail!("haproxy exited during the benchmark");
            }
        }
        Running::Engine(e) => {
            if e.thread.as_ref().is_none_or(|t| t.is_finished()) {
                bail!("the engine's thread ended during the benchmark");
            }
        }
    }
    Ok(())
}

// ----- the engine --------------------------------------------------------------------------------

/// The engine on its own runtime in the servo namespace; stopped on drop.
struct EngineThread {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EngineThread {
    fn start(servo: &Netns, cert: &Certificate) -> anyhow::Result<Self> {
        let ns = servo.name().to_string();
        let listener = ListenerConfig {
            name: "bench:443".into(),
            bind: vec![VIP_PORT],
            protocol: FrontendProtocol::Https,
            backend_protocol: BackendProtocol::Http,
            tls: Some(TlsSettings {
                certificate_chain_pem: cert.cert_pem.clone(),
                private_key_pem: cert.key_pem.clone(),
                policy: policy::resolve_predefined(POLICY)?,
            }),
            backend_authentication: BackendAuthentication::default(),
            stickiness: Stickiness::None,
            idle_timeout: Duration::from_secs(60),
            draining_timeout: None,
            proxy_protocol: false,
        };
        let backends: Vec<Backend> = (0..BACKENDS)
            .map(|i| Backend {
                instance_id: format!("i-{}", i + 1),
                addr: SocketAddr::from((backend_addr(i), 80)),
                state: BackendState::InService,
            })
            .collect();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let workers: usize = std::env::var("ELB_ENGINE_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        let thread = thread::Builder::new()
            .name("tls-bench-engine".into())
            .spawn(move || {
                let started = (|| -> Result<Engine, String> {
                    // The engine's worker threads inherit this thread's network namespace.
                    elb_userspace::dataplane::enter_netns(&ns).map_err(|e| e.to_string())?;
                    let engine = Engine::with_workers(workers).map_err(|e| e.to_string())?;
                    engine.apply(vec![listener]).map_err(|e| e.to_string())?;
                    engine
                        .update_backends("bench:443", &backends)
                        .map_err(|e| e.to_string())?;
                    Ok(engine)
                })();
                let engine = match started {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let _ = stop_rx.recv();
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(engine.shutdown(Duration::from_millis(200)));
                }
            })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Self {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => bail!("the engine did not start: {e}"),
            Err(_) => bail!("the engine did not start within 10 s"),
        }
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----- HAProxy -----------------------------------------------------------------------------------

fn start_haproxy(topo: &Topology, cert: &Certificate) -> anyhow::Result<(Proc, tempfile::TempDir)> {
    let dir = tempdir("haproxy-tls")?;
    let resolved = policy::resolve_predefined(POLICY)?;
    let ciphers: Vec<&str> = resolved.ciphers.iter().map(|c| c.name.as_str()).collect();
    let mut cfg = format!(
        "global
    nbthread 2
    maxconn 8000
    tune.maxaccept 64

defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    maxconn 8000

frontend bench
    bind {VIP}:{PORT} ssl crt {crt} ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2 ciphers {ciphers}
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Port {PORT}
    default_backend web

backend web
    balance roundrobin
    http-reuse safe
",
        crt = cert.combined.display(),
        ciphers = ciphers.join(":"),
    );
    for i in 0..BACKENDS {
        let _ = writeln!(cfg, "    server b{} {}:80", i + 1, backend_addr(i));
    }
    spawn_haproxy(topo, dir, &cfg, PORT)
}

// ----- the handshake load generator --------------------------------------------------------------

struct LoadResult {
    ok: u64,
    errors: u64,
    elapsed: Duration,
}

/// Full TLS handshakes, each followed by one `Connection: close` request, from `conns`
/// concurrent tasks for `secs` seconds (or until `limit` requests), run in namespace `ns`.
fn handshake_load(
    ns: &str,
    vip: SocketAddr,
    conns: usize,
    threads: usize,
    secs: u32,
    limit: Option<u64>,
) -> anyhow::Result<LoadResult> {
    Netns::run_named(ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let connector = tokio_rustls::TlsConnector::from(client_config());
            let ok = Arc::new(AtomicU64::new(0));
            let errors = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let deadline = started + Duration::from_secs(secs.into());
            let mut tasks = Vec::new();
            for _ in 0..conns {
                let (connector, ok, errors) = (connector.clone(), ok.clone(), errors.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline
                        && limit.is_none_or(|l| {
                            ok.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) < l
                        })
                    {
                        match tokio::time::timeout(
                            Duration::from_secs(10),
                            one_request(&connector, vip),
                        )
                        .await
                        {
                            Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                            _ => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            Ok(LoadResult {
                ok: ok.load(Ordering::Relaxed),
                errors: errors.load(Ordering::Relaxed),
                elapsed: started.elapsed(),
            })
        })
    })
}

async fn one_request(
    connector: &tokio_rustls::TlsConnector,
    vip: SocketAddr,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(vip).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::try_from(CERT_NAME)?, tcp)
        .await?;
    tls.write_all(
        format!("GET /name HTTP/1.1\r\nHost: {CERT_NAME}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::with_capacity(512);
    // Servers may close without close_notify after Connection: close; what was read counts.
    let _ = tls.read_to_end(&mut response).await;
    anyhow::ensure!(
        response.starts_with(b"HTTP/1.1 200"),
        "unexpected response: {:?}",
        String::from_utf8_lossy(&response[..response.len().min(64)])
    );
    Ok(())
}

/// TLS 1.2 client without resumption (every connection a full handshake) that accepts the
/// self-signed certificate but still checks the handshake signature against it.
fn client_config() -> Arc<rustls::ClientConfig> {
    let verifier = elb_engine::tls::BackendVerifier::new(Vec::new());
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("ring supports TLS 1.2")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}
