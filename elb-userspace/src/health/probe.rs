//! One health probe of one instance: connect, TLS for SSL/HTTPS, `GET` for HTTP/HTTPS, all
//! bounded by the check's Timeout.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use elb_contract::{HealthTarget, Protocol};

/// A status line longer than this is not HTTP; stop reading instead of buffering a stream.
const MAX_STATUS_LINE: usize = 4096;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeOutcome {
    /// Whether the probe counts as a pass for the thresholds.
    pub passed: bool,
    /// From the start of the connect to the verdict (the timeout, for a probe that timed out).
    pub latency: Duration,
    /// Why it failed ("connect refused", "timeout after 5s", "HTTP 500", "TLS handshake failed:
    /// ..."), or what passed ("connected", "TLS handshake completed", "HTTP 200").
    pub detail: String,
}

/// The future a [`Prober`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>>;

/// Something that can probe an instance.
///
/// [`NetworkProber`] is the real one; the checker takes any implementation so its scheduling can
/// be tested under paused time with scripted results, and so an agent could probe through another
/// path (e.g. from inside a network namespace).
pub trait Prober: Send + Sync + 'static {
    /// Probes `target` on `ip` (at the target's port); the whole probe must end within `timeout`.
    fn probe<'a>(
        &'a self,
        target: &'a HealthTarget,
        ip: IpAddr,
        timeout: Duration,
    ) -> ProbeFuture<'a>;
}

/// Probes over real sockets, optionally from a fixed source address.
///
/// Certificates are never verified, as in ELB: backends commonly use self-signed certificates, and
/// the question is whether the service answers, not who it is. The server must still prove it
/// holds the key of the certificate it sends (handshake signatures are checked), otherwise no
/// handshake has really completed. rustls speaks TLS 1.2 and 1.3 only, so a backend limited to
/// TLS 1.0/1.1 fails SSL and HTTPS checks where ELB would pass it.
#[derive(Clone)]
pub struct NetworkProber {
    source: Option<IpAddr>,
    tls: TlsConnector,
}

impl fmt::Debug for NetworkProber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkProber")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a probe failed; its `Display` becomes [`ProbeOutcome::detail`].
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("source address {source_ip} cannot reach {addr}: address families differ")]
    FamilyMismatch { source_ip: IpAddr, addr: SocketAddr },
    #[error("cannot bind source address {source_ip}: {err}")]
    Bind {
        source_ip: IpAddr,
        #[source]
        err: io::Error,
    },
    #[error("connect refused")]
    ConnectRefused,
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("sending the HTTP request failed: {0}")]
    Send(#[source] io::Error),
    #[error("reading the HTTP response failed: {0}")]
    Read(#[source] io::Error),
    #[error("connection closed before the HTTP status line")]
    ClosedBeforeStatus,
    #[error("HTTP status line longer than {MAX_STATUS_LINE} bytes")]
    StatusLineTooLong,
    #[error("malformed HTTP status line {0:?}")]
    MalformedStatusLine(String),
    #[error("HTTP {0}")]
    Status(u16),
}

impl Default for NetworkProber {
    fn default() -> Self {
        Self::new(None)
    }
}

impl NetworkProber {
    /// A prober whose connections come from `source` (port chosen by the kernel), or from
    /// whatever address routing picks when `None`.
    pub fn new(source: Option<IpAddr>) -> Self {
        Self {
            source,
            tls: TlsConnector::from(Arc::new(tls_client_config())),
        }
    }

    /// The source address probes bind to, if any.
    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }

    /// Probes `target` on `ip` at the target's port.
    pub async fn run(&self, target: &HealthTarget, ip: IpAddr, timeout: Duration) -> ProbeOutcome {
        let addr = SocketAddr::new(ip, target.port());
        let started = Instant::now();
        let verdict = tokio::time::timeout(timeout, self.exchange(target, addr)).await;
        let latency = started.elapsed();
        match verdict {
            Ok(Ok(detail)) => ProbeOutcome {
                passed: true,
                latency,
                detail: detail.to_owned(),
            },
            Ok(Err(failure)) => ProbeOutcome {
                passed: false,
                latency,
                detail: failure.to_string(),
            },
            Err(_elapsed) => ProbeOutcome {
                passed: false,
                latency,
                detail: format!("timeout after {}", DisplayDuration(timeout)),
            },
        }
    }

    async fn exchange(
        &self,
        target: &HealthTarget,
        addr: SocketAddr,
    ) -> Result<&'static str, ProbeFailure> {
        let tcp = self.connect(addr).await?;
        match target.protocol() {
            Protocol::Tcp => Ok("connected"),
            Protocol::Ssl => {
                self.handshake(tcp, addr.ip()).await?;
                Ok("TLS handshake completed")
            }
            Protocol::Http => http_get(tcp, target, addr).await,
            Protocol::Https => {
                let tls = self.handshake(tcp, addr.ip()).await?;
                http_get(tls, target, addr).await
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, ProbeFailure> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(ProbeFailure::Connect)?;
        if let Some(source_ip) = self.source {
            if source_ip.is_ipv4() != addr.is_ipv4() {
                return Err(ProbeFailure::FamilyMismatch { source_ip, addr });
            }
            socket
                .bind(SocketAddr::new(source_ip, 0))
                .map_err(|err| ProbeFailure::Bind { source_ip, err })?;
        }
        socket.connect(addr).await.map_err(|err| {
            if err.kind() == io::ErrorKind::ConnectionRefused {
                ProbeFailure::ConnectRefused
            } else {
                ProbeFailure::Connect(err)
            }
        })
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        ip: IpAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeFailure> {
        // An IP server name keeps rustls from sending SNI (a backend has no name to offer).
        self.tls
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await
            .map_err(ProbeFailure::Tls)
    }
}

impl Prober for NetworkProber {
    fn probe<'a>(
        &'a self,
        target: &'a HealthTarget,
        ip: IpAddr,
        timeout: Duration,
    ) -> ProbeFuture<'a> {
        Box::pin(self.run(target, ip, timeout))
    }
}

/// Sends `GET <path>` and passes only on status 200, without reading headers or body.
async fn http_get<S>(
    mut stream: S,
    target: &HealthTarget,
    addr: SocketAddr,
) -> Result<&'static str, ProbeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = http_request(target, addr);
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        // tokio-rustls buffers written records until flushed.
        stream.flush().await
    }
    .await;
    // A server may answer and close before reading the request, so a failed write is only
    // reported when no status line arrived either.
    let status_line = match (read_status_line(&mut stream).await, sent) {
        (Ok(line), _) => line,
        (Err(_), Err(send_err)) => return Err(ProbeFailure::Send(send_err)),
        (Err(read_err), Ok(())) => return Err(read_err),
    };
    match parse_status_code(&status_line)? {
        200 => Ok("HTTP 200"),
        code => Err(ProbeFailure::Status(code)),
    }
}

fn http_request(target: &HealthTarget, addr: SocketAddr) -> String {
    let path = target.path().unwrap_or("/");
    let default_port = match target.protocol() {
        Protocol::Https => 443,
        _ => 80,
    };
    // RFC 9110 7.2: Host carries the port unless it is the scheme's default; SocketAddr's
    // Display already brackets IPv6.
    let host = if addr.port() == default_port {
        match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    } else {
        addr.to_string()
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: elb-servo-health-check/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

async fn read_status_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, ProbeFailure> {
    let mut line = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() > MAX_STATUS_LINE {
            return Err(ProbeFailure::StatusLineTooLong);
        }
        let n = stream.read(&mut chunk).await.map_err(ProbeFailure::Read)?;
        if n == 0 {
            if line.is_empty() {
                return Err(ProbeFailure::ClosedBeforeStatus);
            }
            break;
        }
        line.extend_from_slice(&chunk[..n]);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn parse_status_code(line: &str) -> Result<u16, ProbeFailure> {
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if version.starts_with("HTTP/")
        && code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && let Ok(code) = code.parse()
    {
        return Ok(code);
    }
    let shown: String = line.chars().take(80).collect();
    Err(ProbeFailure::MalformedStatusLine(shown))
}

fn tls_client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Any certificate for any name (as ELB), the handshake signatures still checked against
    // the certificate's key: the engine's backend verifier without keys.
    let verifier = elb_engine::tls::BackendVerifier::new(Vec::new());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.enable_sni = false;
    // Every probe should exercise a full handshake, as a new client would; a resumed session
    // would not notice a replaced or broken certificate/key pair.
    config.resumption = Resumption::disabled();
    config
}

/// `5s` for whole seconds (every configured Timeout), `250ms` otherwise.
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::health::test_support::{
        HttpServer, HttpServerBehaviour, TlsServer, closed_port, silent_server,
    };

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const TIMEOUT: Duration = Duration::from_secs(2);

    fn target(text: &str) -> HealthTarget {
        text.parse().unwrap()
    }

    async fn probe(text: &str) -> ProbeOutcome {
        NetworkProber::default()
            .run(&target(text), LOCALHOST, TIMEOUT)
            .await
    }

    fn assert_failed(outcome: &ProbeOutcome, detail_prefix: &str) {
        assert!(!outcome.passed, "{outcome:?}");
        assert!(
            outcome.detail.starts_with(detail_prefix),
            "detail {:?} should start with {detail_prefix:?}",
            outcome.detail
        );
    }

    #[tokio::test]
    async fn tcp_passes_when_connect_completes() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let outcome = probe(&format!("TCP:{}", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.detail, "connected");
        assert!(outcome.latency < TIMEOUT);
    }

    #[tokio::test]
    async fn tcp_fails_when_refused() {
        let port = closed_port().await;
        let outcome = probe(&format!("TCP:{port}")).await;
        assert_failed(&outcome, "connect refused");
        assert_eq!(outcome.detail, "connect refused");
    }

    #[tokio::test]
    async fn http_passes_on_200_and_sends_a_proper_request() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let outcome = probe(&format!("HTTP:{}/health", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.detail, "HTTP 200");

        let request = server.requests().pop().expect("one request");
        assert!(
            request.starts_with("GET /health HTTP/1.1\r\n"),
            "{request:?}"
        );
        assert!(
            request.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", server.port())),
            "{request:?}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request:?}");
        assert!(request.ends_with("\r\n\r\n"), "{request:?}");
    }

    #[tokio::test]
    async fn http_fails_on_500() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let outcome = probe(&format!("HTTP:{}/error", server.port())).await;
        assert_failed(&outcome, "HTTP 500");
        assert_eq!(outcome.detail, "HTTP 500");
    }

    #[tokio::test]
    async fn http_fails_on_a_path_mismatch() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let outcome = probe(&format!("HTTP:{}/healthz", server.port())).await;
        assert_eq!(outcome.detail, "HTTP 404");
        assert!(!outcome.passed);
    }

    #[tokio::test]
    async fn http_fails_by_timeout_when_the_server_never_answers() {
        let port = silent_server().await;
        let timeout = Duration::from_millis(300);
        let outcome = NetworkProber::default()
            .run(&target(&format!("HTTP:{port}/")), LOCALHOST, timeout)
            .await;
        assert_failed(&outcome, "timeout after 300ms");
        assert!(outcome.latency >= timeout, "{outcome:?}");
        assert!(outcome.latency < Duration::from_secs(2), "{outcome:?}");
    }

    #[test]
    fn timeout_detail_uses_whole_seconds_for_configured_timeouts() {
        assert_eq!(DisplayDuration(Duration::from_secs(5)).to_string(), "5s");
        assert_eq!(
            DisplayDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }

    #[tokio::test]
    async fn http_tolerates_a_server_that_answers_and_closes_without_reading() {
        let server = HttpServer::start(HttpServerBehaviour::AnswerImmediately(
            "HTTP/1.0 200 OK\r\n",
        ))
        .await;
        let outcome = probe(&format!("HTTP:{}/", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
    }

    #[tokio::test]
    async fn http_status_line_without_newline_before_close_still_counts() {
        let server =
            HttpServer::start(HttpServerBehaviour::AnswerImmediately("HTTP/1.1 200 OK")).await;
        let outcome = probe(&format!("HTTP:{}/", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
    }

    #[tokio::test]
    async fn http_fails_on_a_server_that_closes_without_answering() {
        let server = HttpServer::start(HttpServerBehaviour::AnswerImmediately("")).await;
        let outcome = probe(&format!("HTTP:{}/", server.port())).await;
        assert_failed(&outcome, "connection closed before the HTTP status line");
    }

    #[tokio::test]
    async fn http_fails_on_a_non_http_answer() {
        let server = HttpServer::start(HttpServerBehaviour::AnswerImmediately(
            "SSH-2.0-OpenSSH_9.2\r\n",
        ))
        .await;
        let outcome = probe(&format!("HTTP:{}/", server.port())).await;
        assert_failed(&outcome, "malformed HTTP status line \"SSH-2.0");
    }

    #[tokio::test]
    async fn http_only_200_passes() {
        for (status, passed) in [
            ("HTTP/1.1 200 OK\r\n", true),
            ("HTTP/1.1 204 No Content\r\n", false),
            ("HTTP/1.1 301 Moved Permanently\r\n", false),
            ("HTTP/1.1 2000 OK\r\n", false),
        ] {
            let server = HttpServer::start(HttpServerBehaviour::AnswerImmediately(status)).await;
            let outcome = probe(&format!("HTTP:{}/", server.port())).await;
            assert_eq!(outcome.passed, passed, "{status:?}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn https_passes_with_a_self_signed_certificate() {
        let server = TlsServer::start(TlsServer::all_versions()).await;
        let outcome = probe(&format!("HTTPS:{}/health", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.detail, "HTTP 200");
        let request = server.requests().pop().expect("one request over TLS");
        assert!(
            request.starts_with("GET /health HTTP/1.1\r\n"),
            "{request:?}"
        );
    }

    #[tokio::test]
    async fn https_fails_on_404() {
        let server = TlsServer::start(TlsServer::all_versions()).await;
        let outcome = probe(&format!("HTTPS:{}/nope", server.port())).await;
        assert_failed(&outcome, "HTTP 404");
    }

    #[tokio::test]
    async fn ssl_passes_when_the_handshake_completes() {
        let server = TlsServer::start(TlsServer::all_versions()).await;
        let outcome = probe(&format!("SSL:{}", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.detail, "TLS handshake completed");
    }

    #[tokio::test]
    async fn ssl_passes_against_a_tls12_only_server() {
        let server = TlsServer::start(&[&rustls::version::TLS12]).await;
        let outcome = probe(&format!("SSL:{}", server.port())).await;
        assert!(outcome.passed, "{outcome:?}");
    }

    #[tokio::test]
    async fn ssl_fails_against_a_plain_tcp_server() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let outcome = probe(&format!("SSL:{}", server.port())).await;
        assert_failed(&outcome, "TLS handshake failed: ");
    }

    #[tokio::test]
    async fn https_fails_against_a_plain_http_server() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let outcome = probe(&format!("HTTPS:{}/health", server.port())).await;
        assert_failed(&outcome, "TLS handshake failed: ");
    }

    #[tokio::test]
    async fn probes_come_from_the_source_address() {
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        // All of 127/8 is local on Linux, so a second loopback address shows the bind took effect.
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let outcome = NetworkProber::new(Some(source))
            .run(
                &target(&format!("HTTP:{}/health", server.port())),
                LOCALHOST,
                TIMEOUT,
            )
            .await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(server.peers(), vec![source]);
    }

    #[tokio::test]
    async fn source_address_of_the_wrong_family_fails_with_a_reason() {
        let outcome = NetworkProber::new(Some("::1".parse().unwrap()))
            .run(&target("TCP:80"), LOCALHOST, TIMEOUT)
            .await;
        assert_failed(&outcome, "source address ::1 cannot reach 127.0.0.1:80");
    }

    #[test]
    fn host_header_omits_default_ports_and_brackets_ipv6() {
        let v6: IpAddr = "::1".parse().unwrap();
        let cases = [
            ("HTTP:80/", LOCALHOST, "Host: 127.0.0.1\r\n"),
            ("HTTP:8080/", LOCALHOST, "Host: 127.0.0.1:8080\r\n"),
            ("HTTPS:443/", LOCALHOST, "Host: 127.0.0.1\r\n"),
            ("HTTPS:80/", LOCALHOST, "Host: 127.0.0.1:80\r\n"),
            ("HTTP:80/", v6, "Host: [::1]\r\n"),
            ("HTTP:81/", v6, "Host: [::1]:81\r\n"),
        ];
        for (text, ip, host) in cases {
            let t = target(text);
            let request = http_request(&t, SocketAddr::new(ip, t.port()));
            assert!(request.contains(host), "{text}: {request:?}");
        }
    }
}
