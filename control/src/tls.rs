//! Control's own TLS listener (`--tls-listen`): the same routes as the plain listener (ELB and
//! IAM APIs, servo protocol, console), over TLS with control's certificate. Servos pin that
//! certificate (its SHA-256, written into their credentials file by `elb-control admin servo
//! create`), and certificate private keys reach servos only over this listener: requests that
//! came through it carry [`SecureTransport`].
//!
//! The certificate and key are PEM files: given by the operator (`--tls-cert`, `--tls-key`; the
//! same pair on every PostgreSQL replica), or, by default next to an SQLite database, generated
//! on first use (a self-signed ECDSA P-256 certificate, key file mode 0600).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Marks a request that arrived over control's TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecureTransport;

/// Longest TLS handshake a client gets.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once.
const MAX_PENDING_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the certificate {cert} and the key {key} do not form a TLS identity: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "only one of the certificate ({cert}) and its key ({key}) exists: give both or neither"
    )]
    HalfPair { cert: PathBuf, key: PathBuf },
    #[error("generating control's certificate: {0}")]
    Generate(String),
}

/// Where control's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate (and chain).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Next to an SQLite database `PATH`: `PATH.tls.crt` and `PATH.tls.key`.
    pub fn beside(db_path: &str) -> Self {
        Self {
            cert: PathBuf::from(format!("{db_path}.tls.crt")),
            key: PathBuf::from(format!("{db_path}.tls.key")),
        }
    }
}

/// Control's TLS identity.
#[derive(Debug, Clone)]
pub struct ControlTls {
    /// The server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate (DER), lower-case hex: what servos pin.
    pub sha256: String,
}

/// SHA-256 of a DER certificate, lower-case hex.
pub fn certificate_sha256(der: &[u8]) -> String {
    elb_sigv4::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to a new file `path` with `mode`; false if it already exists.
fn create_file(path: &Path, contents: &[u8], mode: u32) -> Result<bool, TlsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let werr = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(contents)
                .and_then(|()| f.sync_all())
                .map_err(werr)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(werr(e)),
    }
}

/// Creates a self-signed certificate and key at `files` unless both exist.
fn generate(files: &TlsFiles) -> Result<(), TlsError> {
    match (files.cert.exists(), files.key.exists()) {
        (true, true) => return Ok(()),
        (false, false) => {}
        _ => {
            return Err(TlsError::HalfPair {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec!["elb-control".to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "elb-control");
    // Servos pin the certificate itself, so its lifetime is the deployment's.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    // The key first (0600): a certificate never exists without its key.
    if create_file(&files.key, key.serialize_pem().as_bytes(), 0o600)? {
        create_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(cert = %files.cert.display(), key = %files.key.display(), "created control's TLS certificate");
    } else {
        // Another process is creating the pair: wait for its certificate.
        for _ in 0..50 {
            if files.cert.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The certificate chain at `path`.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// SHA-256 of the certificate at `files`, generating the pair first when `create` and it does
/// not exist (what `admin servo create` writes into a servo's credentials).
pub fn pin(files: &TlsFiles, create: bool) -> Result<String, TlsError> {
    if create {
        generate(files)?;
    }
    Ok(certificate_sha256(&certificates(&files.cert)?[0]))
}

/// Loads control's identity from `files`, generating it first when `create` and it does not
/// exist.
pub fn load(files: &TlsFiles, create: bool) -> Result<ControlTls, TlsError> {
    if create {
        generate(files)?;
    }
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let sha256 = certificate_sha256(&chain[0]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Generate(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(ControlTls {
        config: Arc::new(config),
        sha256,
    })
}

/// A TLS listener for `axum::serve`: a task accepts connections and runs their handshakes
/// concurrently (a slow client never holds up the others); finished ones are handed over.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves handshakes on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        let accept_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().acquire_owned().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::beside(dir.path().join("c.db").to_str().unwrap());
        let first = load(&files, true).unwrap();
        let again = load(&files, true).unwrap();
        assert_eq!(first.sha256, again.sha256);
        assert_eq!(pin(&files, false).unwrap(), first.sha256);
        assert_eq!(first.sha256.len(), 64);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&files.cert).unwrap();
        assert!(matches!(load(&files, true), Err(TlsError::HalfPair { .. })));
        assert!(matches!(load(&files, false), Err(TlsError::Read { .. })));
    }
}
