//! The engine's runtime configuration: what the agent hands it for each listener it serves.
//!
//! These are the engine's own input types, independent of the API model: the agent maps the
//! contract's listeners, policies, certificates and attributes to them.

use std::{fmt, net::SocketAddr, time::Duration};

use crate::policy::ResolvedPolicy;

/// The protocol clients speak to a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrontendProtocol {
    /// HTTP, served with HTTP semantics (X-Forwarded-*, stickiness, 503).
    Http,
    /// HTTPS: TLS termination, then HTTP semantics.
    Https,
    /// TCP: bytes copied both ways (the engine serves it only when the backend needs TLS).
    Tcp,
    /// SSL: TLS termination, then bytes copied both ways.
    Ssl,
}

impl FrontendProtocol {
    /// Whether the engine speaks HTTP on it (per-request balancing).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }

    /// Whether clients speak TLS to it.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Ssl)
    }
}

/// The protocol the engine speaks to the backends (the listener's InstanceProtocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
    /// Plain TCP.
    Tcp,
    /// TLS, bytes copied.
    Ssl,
}

impl BackendProtocol {
    /// Whether the engine speaks TLS to the backends.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Ssl)
    }
}

/// The listener's server certificate and negotiation policy.
#[derive(Clone)]
pub struct TlsSettings {
    /// PEM: the certificate, then its chain (as `UploadServerCertificate` takes them joined).
    pub certificate_chain_pem: String,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
    /// The SSL negotiation policy, resolved (see [`crate::policy`]).
    pub policy: ResolvedPolicy,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("TlsSettings")
            .field("certificate_chain_pem", &self.certificate_chain_pem.len())
            .field("private_key_pem", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.certificate_chain_pem == other.certificate_chain_pem
            && self.private_key_pem == other.private_key_pem
            && self.policy == other.policy
    }
}

/// Session stickiness of an HTTP/HTTPS listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stickiness {
    /// Every request is balanced on its own.
    #[default]
    None,
    /// `LBCookieStickinessPolicyType`: the engine's `AWSELB` cookie binds a client to an instance;
    /// `expiration` is CookieExpirationPeriod (`None`: a session cookie).
    LbCookie {
        /// Cookie lifetime.
        expiration: Option<Duration>,
    },
    /// `AppCookieStickinessPolicyType`: the `AWSELB` cookie is issued when the application sets
    /// `cookie_name`, follows its lifetime, and binds only requests that carry both.
    AppCookie {
        /// The application's cookie.
        cookie_name: String,
    },
}

/// Verification of HTTPS/SSL backends (`BackendServerAuthenticationPolicyType`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendAuthentication {
    /// DER SubjectPublicKeyInfo of each `PublicKeyPolicyType` key. Empty: the backend's
    /// certificate is not verified (as ELB does without the policy); otherwise the backend's
    /// certificate key must be one of these.
    pub public_keys: Vec<Vec<u8>>,
}

/// One listener the engine serves.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name chosen by the agent (`<load balancer>:<port>` for instance); the key of
    /// [`crate::Engine::update_backends`].
    pub name: String,
    /// Addresses to listen on (VIP:LoadBalancerPort; port 0 picks a free port).
    pub bind: Vec<SocketAddr>,
    /// Client side.
    pub protocol: FrontendProtocol,
    /// Backend side.
    pub backend_protocol: BackendProtocol,
    /// Certificate and policy: required for HTTPS/SSL listeners, refused for the others.
    pub tls: Option<TlsSettings>,
    /// Backend verification (HTTPS/SSL backends only).
    pub backend_authentication: BackendAuthentication,
    /// HTTP/HTTPS listeners only.
    pub stickiness: Stickiness,
    /// ConnectionSettings.IdleTimeout: a connection with no data either way for this long is
    /// closed; a backend that sends no response headers for this long gets the client a 504.
    pub idle_timeout: Duration,
    /// ConnectionDraining.Timeout when draining is enabled: work in flight on a draining backend
    /// is cut after this long. `None`: it continues until the backend is removed.
    pub draining_timeout: Option<Duration>,
    /// `ProxyProtocolPolicyType` on the instance port: each backend connection starts with a
    /// PROXY protocol v1 header (SSL/TCP listeners only: HTTP ones share backend connections
    /// between clients and send X-Forwarded-For).
    pub proxy_protocol: bool,
}

impl ListenerConfig {
    /// Checks the rules the engine relies on; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("listener name is empty".into());
        }
        if self.bind.is_empty() {
            return Err("no bind address".into());
        }
        if self.idle_timeout.is_zero() {
            return Err("idle timeout must be at least 1 s".into());
        }
        match (self.protocol.is_tls(), &self.tls) {
            (true, None) => {
                return Err(format!(
                    "{:?} listener without a certificate",
                    self.protocol
                ));
            }
            (false, Some(_)) => {
                return Err(format!(
                    "{:?} listener with a certificate (only HTTPS and SSL listeners take one)",
                    self.protocol
                ));
            }
            _ => {}
        }
        let pairs = matches!(
            (self.protocol, self.backend_protocol),
            (
                FrontendProtocol::Http | FrontendProtocol::Https,
                BackendProtocol::Http | BackendProtocol::Https
            ) | (
                FrontendProtocol::Tcp | FrontendProtocol::Ssl,
                BackendProtocol::Tcp | BackendProtocol::Ssl
            )
        );
        if !pairs {
            return Err(format!(
                "{:?} listener cannot forward to {:?} backends",
                self.protocol, self.backend_protocol
            ));
        }
        if !self.protocol.is_http() && self.stickiness != Stickiness::None {
            return Err("stickiness needs an HTTP or HTTPS listener".into());
        }
        if let Stickiness::AppCookie { cookie_name } = &self.stickiness
            && (cookie_name.is_empty()
                || !cookie_name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)))
        {
            return Err(format!("invalid application cookie name {cookie_name:?}"));
        }
        if self.proxy_protocol && self.protocol.is_http() {
            return Err(
                "PROXY protocol needs an SSL or TCP listener (HTTP listeners send X-Forwarded-For)"
                    .into(),
            );
        }
        if !self.backend_protocol.is_tls() && !self.backend_authentication.public_keys.is_empty() {
            return Err("backend authentication needs HTTPS or SSL backends".into());
        }
        Ok(())
    }
}

/// Whether a backend takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Registered and InService: gets new requests and connections.
    InService,
    /// Leaving (deregistered or OutOfService with connection draining): no new work; what is in
    /// flight continues up to the listener's draining timeout.
    Draining,
}

/// A backend of a listener, as the agent's health engine sees it. A backend that the agent
/// stops listing is removed: its connections are cut at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The instance id (the `AWSELB` cookie identifies instances by it).
    pub instance_id: String,
    /// Instance address and InstancePort.
    pub addr: SocketAddr,
    /// Whether it takes new work.
    pub state: BackendState,
}
