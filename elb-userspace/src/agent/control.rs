//! The servo's side of the control protocol (HTTP + JSON under `/servo/v1/`).
//!
//! - register (zone, the addresses it can serve as VIPs, capacity), then heartbeat;
//! - long-poll the configuration (`GET /servo/v1/config?since=V&wait=S`): a change made through
//!   the API reaches the servo as soon as control commits it, with no busy polling;
//! - report instance health transitions (and a full report periodically, so a restarted control
//!   service learns the current states), and the load balancers the servo refuses, with why;
//! - send, with every heartbeat, the metrics of each load balancer it serves
//!   ([`super::observe`]).
//!
//! The document is read one load balancer at a time ([`decode_document`]): one this servo
//! cannot decode is refused alone.
//!
//! Nothing in the dataplane waits on control: the last configuration received is kept in a state
//! file, an agent restarted while control is down starts from it, and forwarding and health
//! checking go on while control is unreachable; the client retries with backoff and
//! resynchronises when control returns.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use elb_contract::{
    InstanceState,
    wire::{
        ConfigDocument, HealthReport, Heartbeat, HeartbeatReply, InstanceReport,
        LoadBalancerMetrics, Refusal, RefusalReport, Registration,
    },
};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{ConfigUpdate, ControlVersion, metrics::StatusView, reconcile::InstanceKey};
use crate::config::{Received, ServoConfig};

/// Credentials of a servo, as printed by `elb-control admin servo create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Credentials {
    /// Servo id.
    pub servo_id: String,
    /// Shared secret.
    pub secret: String,
    /// Zone (informational; the servo's configuration decides).
    #[serde(default)]
    pub zone: Option<String>,
    /// SHA-256 (hex) of control's TLS certificate: with an `https://` control URL the servo
    /// accepts only that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_certificate_sha256: Option<String>,
}

impl Credentials {
    /// Reads a credentials file (JSON).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
    }
}

/// The HTTP client for control at `url`: over TLS (`https://`) it accepts only the certificate
/// `credentials` pin; over plain HTTP control sends no certificate keys (the servo refuses
/// HTTPS and SSL load balancers, saying why).
pub fn http_client(url: &str, credentials: &Credentials) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder();
    if url.starts_with("https://") {
        let pin = credentials
            .control_certificate_sha256
            .as_deref()
            .ok_or_else(|| {
                "an https:// control URL needs ControlCertificateSha256 in the credentials file \
                 (written by `elb-control admin servo create` when control has a TLS certificate)"
                    .to_string()
            })?;
        let pin = pin_bytes(pin).ok_or_else(|| {
            format!("ControlCertificateSha256 {pin:?} must be 64 hex digits (a SHA-256)")
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                sha256: pin,
                signatures: elb_engine::tls::BackendVerifier::new(Vec::new()),
            }))
            .with_no_client_auth();
        builder
            .use_preconfigured_tls(config)
            .build()
            .map_err(|e| format!("TLS client: {e}"))
    } else if url.starts_with("http://") {
        warn!(control = %url, "control is reached over plain HTTP: certificate keys are not delivered, so HTTPS and SSL load balancers are refused (use control's TLS listener with https://)");
        builder.build().map_err(|e| format!("HTTP client: {e}"))
    } else {
        Err(format!(
            "control URL {url:?} must start with https:// or http://"
        ))
    }
}

fn pin_bytes(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Accepts exactly control's certificate (by its SHA-256), whatever name or address it is
/// reached by; the handshake signatures are checked against its key.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    /// Signature checks (the engine's verifier without keys accepts any certificate itself).
    signatures: elb_engine::tls::BackendVerifier,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// How to reach control.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// Base URL, e.g. `https://10.0.0.2:8774` (control's TLS listener).
    pub url: String,
    /// The client for it ([`http_client`]).
    pub http: reqwest::Client,
    /// The servo's credentials.
    pub credentials: Credentials,
    /// Where the last configuration received is kept.
    pub state_file: PathBuf,
    /// Long-poll wait in seconds.
    pub long_poll_secs: u64,
}

/// The configuration document as received: each load balancer kept as JSON until it is
/// decoded on its own.
pub type RawDocument = ConfigDocument<serde_json::Value>;

/// The load balancers of a document, each decoded on its own.
pub fn decode_document(doc: &RawDocument) -> Vec<Received> {
    doc.load_balancers
        .iter()
        .enumerate()
        .map(|(i, v)| Received::decode(v.clone(), i))
        .collect()
}

/// Reads the configuration saved by the last run, if any.
pub fn load_state(path: &Path) -> Option<RawDocument> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(reply) => Some(reply),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "ignoring an unreadable saved configuration");
            None
        }
    }
}

fn save_state(path: &Path, reply: &RawDocument) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        // It holds the private keys of the servo's HTTPS/SSL listeners: owner only.
        let _ = std::fs::remove_file(&tmp);
        {
            use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(reply).unwrap_or_default())?;
        }
        // Rename is atomic: a crash leaves the old file or the new one, never half of one.
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        warn!(file = %path.display(), error = %e, "could not save the configuration");
    }
}

struct Client {
    http: reqwest::Client,
    opts: ControlOptions,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}/servo/v1/{path}", self.opts.url.trim_end_matches('/'))
    }

    fn auth(&self) -> String {
        format!(
            "Bearer {}:{}",
            self.opts.credentials.servo_id, self.opts.credentials.secret
        )
    }

    async fn post<T: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, String> {
        let resp = self
            .http
            .post(self.url(path))
            .header("Authorization", self.auth())
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("{path}: HTTP {status}: {text}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("{path}: bad answer: {e}"))
    }

    async fn register(&self, local: &ServoConfig) -> Result<u64, String> {
        let reply: HeartbeatReply = self
            .post(
                "register",
                &Registration {
                    servo_id: self.opts.credentials.servo_id.clone(),
                    zone: local.zone.clone().unwrap_or_default(),
                    public_addresses: local.public_addresses.clone(),
                    private_addresses: local.private_addresses.clone(),
                    capacity: local.capacity,
                },
            )
            .await?;
        Ok(reply.heartbeat_interval.max(1))
    }

    async fn config(&self, since: Option<u64>) -> Result<RawDocument, String> {
        let mut req = self
            .http
            .get(self.url("config"))
            .header("Authorization", self.auth())
            .query(&[("wait", self.opts.long_poll_secs)])
            .timeout(Duration::from_secs(self.opts.long_poll_secs + 10));
        if let Some(v) = since {
            req = req.query(&[("since", v)]);
        }
        let resp = req.send().await.map_err(|e| format!("config: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("config: HTTP {status}: {text}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("config: bad answer: {e}"))
    }
}

/// A long-poll in flight.
type PendingPoll<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<RawDocument, String>> + Send + 'a>>;

/// The dataplane figures a heartbeat carries (control shows them in `admin servo list`).
fn counters_of(
    status: &StatusView,
    maps: Option<&crate::dataplane::Maps>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    out.insert(
        "LoadBalancers",
        status
            .instances
            .iter()
            .map(|i| &i.load_balancer_name)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as f64,
    );
    out.insert("Listeners", status.listeners.len() as f64);
    out.insert(
        "BackendsActive",
        status
            .backends
            .iter()
            .filter(|b| b.state == "active")
            .count() as f64,
    );
    out.insert(
        "InstancesInService",
        status
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::InService)
            .count() as f64,
    );
    if let Some(c) = maps.and_then(|m| m.counters().ok()) {
        for (name, value) in [
            ("Packets", c.rx_packets),
            ("NewFlows", c.new_flows),
            ("SnatRetries", c.snat_retries),
            ("SnatFailures", c.snat_failures),
            ("ResetsNoBackend", c.rst_no_backend),
            ("DropsNoFlow", c.drop_no_flow + c.rst_no_flow),
        ] {
            out.insert(name, value as f64);
        }
    }
    out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Resolves once `stop` is set (the guard `wait_for` returns is not `Send`; this drops it).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn reports(status: &StatusView) -> Vec<InstanceReport> {
    status
        .instances
        .iter()
        .filter(|i| i.checked_here)
        .map(|i| InstanceReport {
            load_balancer_name: i.load_balancer_name.clone(),
            instance_id: i.instance_id.clone(),
            state: i.state,
            reason_code: Some(i.reason_code),
            description: Some(i.description.clone()),
        })
        .collect()
}

/// What the agent publishes for the control client to report.
#[derive(Debug)]
pub struct Reports {
    /// The status after every change (health, refusals, counters).
    pub status: watch::Receiver<StatusView>,
    /// The metrics per load balancer, refreshed every second.
    pub metrics: watch::Receiver<Vec<LoadBalancerMetrics>>,
}

/// Runs the control client until `stop` fires: registers, heart-beats (with the metrics),
/// long-polls the configuration into `updates`, and reports health from the status.
pub async fn run(
    local: ServoConfig,
    opts: ControlOptions,
    start_version: Option<u64>,
    updates: mpsc::Sender<ConfigUpdate>,
    published: Reports,
    mut stop: watch::Receiver<bool>,
) {
    let Reports {
        mut status,
        metrics,
    } = published;
    let client = Client {
        http: opts.http.clone(),
        opts: opts.clone(),
    };
    let servo = opts.credentials.servo_id.clone();
    let mut since = start_version;
    let mut backoff = Duration::from_millis(200);
    let mut heartbeat = Duration::from_secs(2);
    let mut registered = false;
    let mut reported: BTreeMap<InstanceKey, InstanceReport> = BTreeMap::new();
    // The refusals control knows of; `None` after a registration (sent again then).
    let mut reported_refusals: Option<Vec<Refusal>> = None;
    let mut last_full_report = tokio::time::Instant::now();
    let mut next_heartbeat = tokio::time::Instant::now();
    let mut poll: Option<PendingPoll<'_>> = None;
    let mut maps: Option<crate::dataplane::Maps> = None;
    loop {
        if !registered {
            match client.register(&local).await {
                Ok(interval) => {
                    heartbeat = Duration::from_secs(interval);
                    registered = true;
                    backoff = Duration::from_millis(200);
                    reported.clear();
                    reported_refusals = None;
                    info!(servo = %servo, control = %opts.url, heartbeat_s = interval, "registered with control");
                }
                Err(e) => {
                    warn!(servo = %servo, error = %e, retry_in_ms = backoff.as_millis() as u64, "control unreachable; forwarding continues with the last configuration");
                    tokio::select! {
                        () = stopped(&mut stop) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if poll.is_none() {
            poll = Some(Box::pin(client.config(since)));
        }
        tokio::select! {
            () = stopped(&mut stop) => return,
            result = poll.as_mut().expect("set above") => {
                poll = None;
                match result {
                    Ok(reply) => {
                        if since != Some(reply.version) {
                            let origin = if reply.request_ids.is_empty() {
                                format!("control version {}", reply.version)
                            } else {
                                format!("control version {} request_ids={}", reply.version, reply.request_ids.join(","))
                            };
                            save_state(&opts.state_file, &reply);
                            let update = ConfigUpdate {
                                settings: local.clone(),
                                load_balancers: Some(decode_document(&reply)),
                                origin,
                                control: Some(ControlVersion {
                                    version: reply.version,
                                    request_ids: reply.request_ids.clone(),
                                }),
                            };
                            if updates.send(update).await.is_err() {
                                return;
                            }
                            since = Some(reply.version);
                        }
                        heartbeat = Duration::from_secs(reply.heartbeat_interval.max(1));
                    }
                    Err(e) => {
                        warn!(error = %e, "configuration long-poll failed; retrying");
                        registered = false;
                    }
                }
            }
            () = tokio::time::sleep_until(next_heartbeat) => {
                if maps.is_none() {
                    maps = crate::dataplane::Maps::open(&local.pin_root).ok();
                }
                let counters = counters_of(&status.borrow(), maps.as_ref());
                let beat = Heartbeat {
                    servo_id: servo.clone(),
                    counters: Some(counters),
                    metrics: Some(metrics.borrow().clone()),
                };
                match client.post::<_, HeartbeatReply>("heartbeat", &beat).await {
                    Ok(r) => heartbeat = Duration::from_secs(r.heartbeat_interval.max(1)),
                    Err(e) => {
                        warn!(error = %e, "heartbeat failed");
                        registered = false;
                    }
                }
                next_heartbeat = tokio::time::Instant::now() + heartbeat;
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        // Refusals: the whole set whenever it changes, and after each registration.
        let (refused, version, request_ids) = {
            let s = status.borrow();
            (s.refused.clone(), s.control_version, s.request_ids.clone())
        };
        if registered && reported_refusals.as_ref() != Some(&refused) {
            let body = RefusalReport {
                servo_id: servo.clone(),
                version,
                request_ids,
                load_balancers: refused.clone(),
            };
            match client.post::<_, serde_json::Value>("refusals", &body).await {
                Ok(_) => reported_refusals = Some(refused),
                Err(e) => warn!(error = %e, "reporting refused load balancers failed; will retry"),
            }
        }
        // Health: send what changed since the last report, everything every 30 s.
        let current = reports(&status.borrow());
        let full = last_full_report.elapsed() > Duration::from_secs(30);
        let changed: Vec<InstanceReport> = current
            .iter()
            .filter(|r| {
                full || reported.get(&InstanceKey::new(&r.load_balancer_name, &r.instance_id))
                    != Some(*r)
            })
            .cloned()
            .collect();
        if registered && !changed.is_empty() {
            let body = HealthReport {
                servo_id: servo.clone(),
                instances: changed.clone(),
            };
            match client.post::<_, serde_json::Value>("health", &body).await {
                Ok(answer) => {
                    debug!(reports = changed.len(), ?answer, "health reported");
                    for r in changed {
                        reported.insert(InstanceKey::new(&r.load_balancer_name, &r.instance_id), r);
                    }
                    if full {
                        last_full_report = tokio::time::Instant::now();
                    }
                }
                Err(e) => warn!(error = %e, "health report failed; will retry"),
            }
        }
    }
}
