//! Local servers for probe and checker tests: plain HTTP, TLS (self-signed), silent, closed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How [`HttpServer`] answers each connection.
#[derive(Debug, Clone, Copy)]
pub enum HttpServerBehaviour {
    /// Reads the request; `/health` gets 200, `/error` 500, anything else 404.
    Route,
    /// Writes these bytes as soon as the connection is accepted, then closes without reading.
    AnswerImmediately(&'static str),
}

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<String>>,
    peers: Mutex<Vec<IpAddr>>,
}

/// A plain HTTP server on 127.0.0.1; stops when dropped.
pub struct HttpServer {
    port: u16,
    seen: Arc<Seen>,
    accept_loop: JoinHandle<()>,
}

impl HttpServer {
    /// Starts on an ephemeral port.
    pub async fn start(behaviour: HttpServerBehaviour) -> Self {
        Self::start_on(0, behaviour).await
    }

    /// Starts on `port` (0 for ephemeral); SO_REUSEADDR lets a test restart on the same port.
    pub async fn start_on(port: u16, behaviour: HttpServerBehaviour) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(SocketAddr::new(LOCALHOST, port)).unwrap();
        let listener = socket.listen(128).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let accept_loop = tokio::spawn(accept_plain(listener, behaviour, seen.clone()));
        Self {
            port,
            seen,
            accept_loop,
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// Client addresses of the connections accepted so far.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.seen.peers.lock().unwrap().clone()
    }

    /// Stops listening; returns once the port is closed, so the next connect is refused.
    pub async fn stop(mut self) {
        self.accept_loop.abort();
        // Awaiting the aborted task means its future, and so the listener, has been dropped.
        let _cancelled = (&mut self.accept_loop).await;
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_plain(listener: TcpListener, behaviour: HttpServerBehaviour, seen: Arc<Seen>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        seen.peers.lock().unwrap().push(peer.ip());
        tokio::spawn(serve(stream, behaviour, seen.clone()));
    }
}

async fn serve<S>(mut stream: S, behaviour: HttpServerBehaviour, seen: Arc<Seen>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match behaviour {
        HttpServerBehaviour::AnswerImmediately(bytes) => {
            let _ = stream.write_all(bytes.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        HttpServerBehaviour::Route => {
            let status = match read_head(&mut stream).await {
                Head::Request(head) => {
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    seen.requests.lock().unwrap().push(head);
                    match path.as_str() {
                        "/health" => "200 OK",
                        "/error" => "500 Internal Server Error",
                        _ => "404 Not Found",
                    }
                }
                // Like real servers, answer a TLS ClientHello on a plain port with a 400.
                Head::NotHttp => "400 Bad Request",
                Head::Closed => return,
            };
            let response =
                format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

enum Head {
    Request(String),
    NotHttp,
    Closed,
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Head {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        // Every HTTP method is upper-case ASCII; a TLS record starts with a binary type byte.
        if !head[0].is_ascii_uppercase() {
            return Head::NotHttp;
        }
    }
    String::from_utf8(head).map_or(Head::NotHttp, Head::Request)
}

/// An HTTPS server ([`HttpServerBehaviour::Route`] over TLS) with a fresh self-signed certificate
/// for `localhost`, which matches neither the address probed nor any trust root.
pub struct TlsServer {
    port: u16,
    seen: Arc<Seen>,
    accept_loop: JoinHandle<()>,
}

impl TlsServer {
    /// TLS 1.2 and 1.3.
    pub fn all_versions() -> &'static [&'static SupportedProtocolVersion] {
        rustls::ALL_VERSIONS
    }

    /// Starts on an ephemeral port offering only `versions`.
    pub async fn start(versions: &[&'static SupportedProtocolVersion]) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
                .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let accept_loop = tokio::spawn(accept_tls(listener, acceptor, seen.clone()));
        Self {
            port,
            seen,
            accept_loop,
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Request heads received over TLS so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.requests.lock().unwrap().clone()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_tls(listener: TcpListener, acceptor: TlsAcceptor, seen: Arc<Seen>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                serve(tls, HttpServerBehaviour::Route, seen).await;
            }
        });
    }
}

/// A port that accepts connections and never sends a byte; returns the port.
pub async fn silent_server() -> u16 {
    let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held: Vec<TcpStream> = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}

/// A port nothing listens on (bound, then released), so a connect is refused.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    listener.local_addr().unwrap().port()
}
