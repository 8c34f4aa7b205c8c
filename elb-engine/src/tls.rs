//! TLS: the listener's server configuration (certificate, key, negotiation policy) and the client
//! configuration towards HTTPS/SSL backends (with or without public-key verification).

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, ServerConfig, SignatureAlgorithm, SignatureScheme,
    SupportedCipherSuite,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring},
    server::ServerSessionMemoryCache,
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _};

use crate::{
    config::{BackendAuthentication, TlsSettings},
    policy::{Authentication, Protocol},
};

/// TLS 1.2 session-id cache entries per listener (resumed handshakes skip the signature).
const SESSION_CACHE: usize = 16 * 1024;

/// The rustls suites (ring provider) with these IANA codes, in this order.
fn suites_for(codes: impl Iterator<Item = u16>) -> Vec<SupportedCipherSuite> {
    let all = ring::ALL_CIPHER_SUITES;
    codes
        .filter_map(|code| all.iter().find(|s| u16::from(s.suite()) == code).copied())
        .collect()
}

/// Builds the server configuration of an HTTPS/SSL listener. Errors say what is wrong with the
/// certificate, the key, or their combination with the policy.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(settings.certificate_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate chain is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(settings.private_key_pem.as_bytes())
        .map_err(|e| format!("private key is not a PEM PKCS#8, PKCS#1 or SEC1 key: {e}"))?;
    let policy = &settings.policy;
    let suites = suites_for(policy.ciphers.iter().map(|c| c.iana));
    if suites.len() != policy.ciphers.len() {
        return Err(format!(
            "the TLS library lacks suites the policy resolved to: {:?}",
            policy.ciphers
        ));
    }
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    });
    let certified = match crate::rsa::RsaKey::from_pem(settings.private_key_pem.as_bytes())? {
        // RSA keys sign through OpenSSL (see rsa.rs); the others through ring.
        Some(rsa) => {
            let c = CertifiedKey::new(chain, Arc::new(rsa));
            c.keys_match()
                .map_err(|e| format!("certificate and private key do not go together: {e}"))?;
            c
        }
        None => CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("certificate and private key do not go together: {e}"))?,
    };
    let key_kind = match certified.key.algorithm() {
        SignatureAlgorithm::RSA => Authentication::Rsa,
        SignatureAlgorithm::ECDSA => Authentication::Ecdsa,
        other => return Err(format!("unsupported certificate key algorithm {other:?}")),
    };
    if !policy.serves(key_kind) {
        return Err(format!(
            "the negotiation policy offers no cipher for a certificate with an {key_kind:?} key \
             (offered: {})",
            policy
                .ciphers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = policy
        .protocols
        .iter()
        .filter_map(|p| match p {
            Protocol::TlsV1_2 => Some(&rustls::version::TLS12),
            _ => None,
        })
        .collect();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("policy protocols: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCertificate(Arc::new(certified))));
    config.ignore_client_order = policy.server_order;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// The listener's one certificate, whatever the client asks for (ELB classic listeners have one
/// certificate; SNI plays no part).
#[derive(Debug)]
struct FixedCertificate(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Client configuration towards HTTPS/SSL backends: the backend's key is checked against
/// `auth`'s keys, or not at all when there are none (ELB does not verify backends otherwise).
pub fn backend_client_config(auth: &BackendAuthentication) -> Arc<ClientConfig> {
    let provider = Arc::new(ring::default_provider());
    let verifier = BackendVerifier::new(auth.public_keys.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // Backends are addressed by IP address; there is no name to send.
    config.enable_sni = false;
    Arc::new(config)
}

/// The name a backend connection is made for (its address: backends have no name here).
pub fn backend_server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// Verifies a backend's certificate key against a `BackendServerAuthenticationPolicy`'s public
/// keys (any key when there are none); names, dates and chains are not checked, as in ELB. The
/// handshake signature is always checked against the certificate's key, so a backend must hold
/// the private key of the certificate it presents.
#[derive(Debug)]
pub struct BackendVerifier {
    public_keys: Vec<Vec<u8>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl BackendVerifier {
    /// Accepts certificates whose key is one of `public_keys` (DER SubjectPublicKeyInfo), or any
    /// certificate when there are none.
    pub fn new(public_keys: Vec<Vec<u8>>) -> Self {
        Self {
            public_keys,
            algorithms: ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.public_keys.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        let spki = cert.subject_public_key_info();
        if self
            .public_keys
            .iter()
            .any(|k| k.as_slice() == spki.as_ref())
        {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
