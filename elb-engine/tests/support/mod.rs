//! Test support: a test CA, real HTTP/HTTPS backends that record what they receive, a TCP echo
//! backend, curl and a rustls client. Everything listens on loopback addresses.

#![allow(dead_code)] // each test file uses a part

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use elb_engine::{
    BackendAuthentication, BackendProtocol, Engine, FrontendProtocol, ListenerConfig, Stickiness,
    TlsSettings, policy,
};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// A test certificate authority.
pub struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// The CA certificate file (for curl --cacert).
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A leaf certificate issued by the test CA.
pub struct Leaf {
    /// Certificate then CA (PEM).
    pub chain_pem: String,
    /// Private key (PEM).
    pub key_pem: String,
    /// The leaf certificate (DER).
    pub der: Vec<u8>,
    /// Its public key (DER SubjectPublicKeyInfo).
    pub spki: Vec<u8>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "elb engine test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Self {
            ca_cert,
            ca_key,
            ca_file,
            _dir: dir,
        }
    }

    /// A certificate for `name` with an ECDSA P-256 key (each call a new key and serial).
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_with(name, rcgen::KeyPair::generate().unwrap())
    }

    /// A certificate for `name` with an RSA-2048 key (what IAM certificates usually hold).
    pub fn leaf_rsa(&self, name: &str) -> Leaf {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pem = openssl::pkey::PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let key = rcgen::KeyPair::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
        self.leaf_with(name, key)
    }

    fn leaf_with(&self, name: &str, key: rcgen::KeyPair) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.ca_cert.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            spki: key.public_key_der(),
        }
    }

    /// A rustls client trusting the CA, without session resumption, offering `suites` (IANA
    /// codes, in order) over TLS 1.2, or rustls' defaults.
    pub fn client(&self, suites: Option<&[u16]>) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_cert.pem().as_bytes()).unwrap())
            .unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(codes) = suites {
            provider.cipher_suites = codes
                .iter()
                .map(|c| {
                    *rustls::crypto::ring::ALL_CIPHER_SUITES
                        .iter()
                        .find(|s| u16::from(s.suite()) == *c)
                        .unwrap()
                })
                .collect();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// The name the test certificates are issued for.
pub const NAME: &str = "www.example.test";

/// Connects a TLS client to `addr` for [`NAME`].
pub async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
}

/// One request as a backend received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
}

/// A real HTTP (or HTTPS) server on loopback that answers its name and records requests.
/// `/login` sets the application cookie `SESSIONID`; `/slow` answers after 1.5 s.
pub struct HttpBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted (keep-alive from the engine keeps this below the requests).
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    req: Request<Incoming>,
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: req.headers().clone(),
    });
    let mut resp = Response::builder();
    if path == "/login" {
        resp = resp.header(
            "set-cookie",
            format!("SESSIONID={name}-session; Max-Age=600; HttpOnly"),
        );
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    Ok(resp.body(Full::new(Bytes::from(name))).unwrap())
}

impl HttpBackend {
    /// Starts a backend on `ip` (any free port); HTTPS when `tls` is given.
    pub async fn start(name: &str, ip: [u8; 4], tls: Option<&Leaf>) -> Self {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let acceptor = tls.map(|leaf| {
            let chain = CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let task = {
            let (name, seen, connections) = (name.to_string(), seen.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::Relaxed);
                    let (name, seen, acceptor) = (name.clone(), seen.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            respond(req, name.clone(), seen.clone())
                        });
                        let builder = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(a) => {
                                if let Ok(tls) = a.accept(stream).await {
                                    let _ =
                                        builder.serve_connection(TokioIo::new(tls), service).await;
                                }
                            }
                            None => {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    });
                }
            })
        };
        Self {
            name: name.to_string(),
            addr,
            seen,
            connections,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A TCP server on loopback that answers every chunk with `<name>:<chunk>`.
pub struct EchoBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoBackend {
    pub async fn start(name: &str, ip: [u8; 4]) -> Self {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let mut out = format!("{name}:").into_bytes();
                                out.extend_from_slice(&buf[..n]);
                                if s.write_all(&out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

/// A listener configuration on 127.0.0.2 (any port) with defaults: round robin, 60 s idle
/// timeout, no draining.
pub fn listener(
    name: &str,
    protocol: FrontendProtocol,
    backend_protocol: BackendProtocol,
    tls: Option<TlsSettings>,
) -> ListenerConfig {
    ListenerConfig {
        name: name.into(),
        bind: vec![SocketAddr::from(([127, 0, 0, 2], 0))],
        protocol,
        backend_protocol,
        tls,
        backend_authentication: BackendAuthentication::default(),
        stickiness: Stickiness::None,
        idle_timeout: Duration::from_secs(60),
        draining_timeout: None,
        proxy_protocol: false,
    }
}

/// An engine (one worker per CPU) serving `config` with `backends` InService. `config.bind` is
/// set to the address it got, so that applying `config` again updates the listener in place.
pub fn serve(config: &mut ListenerConfig, backends: &[SocketAddr]) -> (Engine, SocketAddr) {
    serve_with(0, config, backends)
}

/// [`serve`] with `workers` worker threads (0: one per CPU).
pub fn serve_with(
    workers: usize,
    config: &mut ListenerConfig,
    backends: &[SocketAddr],
) -> (Engine, SocketAddr) {
    let engine = if workers == 0 {
        Engine::new()
    } else {
        Engine::with_workers(workers)
    }
    .unwrap();
    engine.apply(vec![config.clone()]).unwrap();
    engine
        .update_backends(&config.name, &in_service(backends))
        .unwrap();
    let vip = engine.local_addrs(&config.name).unwrap()[0];
    config.bind = vec![vip];
    (engine, vip)
}

/// TLS settings with `leaf` and the default policy.
pub fn tls_settings(leaf: &Leaf) -> TlsSettings {
    TlsSettings {
        certificate_chain_pem: leaf.chain_pem.clone(),
        private_key_pem: leaf.key_pem.clone(),
        policy: policy::resolve_predefined(policy::DEFAULT_POLICY).unwrap(),
    }
}

/// In-service backends for `update_backends`, named i-1, i-2...
pub fn in_service(addrs: &[SocketAddr]) -> Vec<elb_engine::Backend> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| elb_engine::Backend {
            instance_id: format!("i-{}", i + 1),
            addr: *a,
            state: elb_engine::BackendState::InService,
        })
        .collect()
}

/// What curl got.
#[derive(Debug)]
pub struct CurlOut {
    pub ok: bool,
    pub status: u16,
    pub body: String,
    pub headers: String,
    pub stderr: String,
}

/// Runs curl with `args` (a new process, so a new connection), printing the status code last.
pub async fn curl(args: &[&str]) -> CurlOut {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .await
        .expect("curl runs (Debian package curl)");
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    CurlOut {
        ok: out.status.success(),
        status,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
        headers,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `--resolve` argument sending [`NAME`] to `addr`.
pub fn resolve(addr: SocketAddr) -> String {
    format!("{NAME}:{}:{}", addr.port(), addr.ip())
}

/// The URL of [`NAME`] on `addr`'s port.
pub fn https_url(addr: SocketAddr, path: &str) -> String {
    format!("https://{NAME}:{}{path}", addr.port())
}

/// A loopback address of its own for each role, so the client's address is distinct.
pub const CLIENT_IP: [u8; 4] = [127, 0, 0, 7];

pub fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}
