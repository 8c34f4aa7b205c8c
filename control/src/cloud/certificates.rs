//! Certificates held by the cloud: IAM server certificates (`--iam-endpoint`) and ACM
//! certificates (`--acm-endpoint`), and where a servo's private key for each comes from.
//!
//! A servo terminates TLS, so it needs the private key, and a listener is accepted only when
//! control can give it one:
//! - **control's own IAM** (`UploadServerCertificate` on control's endpoint): control holds the
//!   key (sealed). Always available, the default without a cloud.
//! - **ACM, exportable certificates** (private-CA certificates, and certificates requested with
//!   `Export=ENABLED`): `ExportCertificate` with a one-time random passphrase; control decrypts
//!   the PKCS#8 key (PBES2) and checks it against the certificate.
//! - **IAM of the cloud, and ACM certificates that cannot be exported** (imported ones): the
//!   cloud never gives the key out (IAM's `GetServerCertificate` returns no key; ACM keeps the
//!   key of imported certificates). Such a certificate is served with the key uploaded for the
//!   same certificate to control's own IAM endpoint by the same account; without one the
//!   listener is refused, saying so.
//!
//! Cloud certificates are those of the cloud account control's credentials belong to; any of
//! control's accounts may name them (as with the cloud's instances and security groups).

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::{Body, CloudConfig, CloudError, SignedClient, TtlCache, child, child_text};
use crate::certs::CertificateMaterial;
use crate::config::ConfigError;
use crate::error::{ApiError, ErrorCode};
use crate::server::AppState;
use crate::validate::printable;

/// The cloud's certificate services.
#[derive(Debug)]
pub struct CertificateSources {
    iam: Option<SignedClient>,
    iam_region: String,
    acm: Option<SignedClient>,
    /// Certificates (body, chain) and ACM descriptions, by ARN.
    bodies: TtlCache<Option<CloudCertificate>>,
    /// Exported key material, by ARN.
    exported: TtlCache<CertificateMaterial>,
}

/// A certificate the cloud holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudCertificate {
    pub body: String,
    pub chain: Option<String>,
    /// ACM only: `ISSUED`, `PENDING_VALIDATION`, ...; IAM certificates are usable as they are.
    pub status: Option<String>,
    /// Whether the cloud gives out its private key (ACM `ExportCertificate`).
    pub exportable: bool,
}

/// Which service an ARN names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArnService {
    Iam,
    Acm,
}

/// `arn:<partition>:iam::<account>:server-certificate/...` or
/// `arn:<partition>:acm:<region>:<account>:certificate/<id>`: the service, region and account.
pub fn parse_arn(arn: &str) -> Option<(ArnService, &str, &str)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "iam", "", account, resource] if resource.starts_with("server-certificate/") => {
            Some((ArnService::Iam, "", account))
        }
        ["arn", _, "acm", region, account, resource] if resource.starts_with("certificate/") => {
            Some((ArnService::Acm, region, account))
        }
        _ => None,
    }
}

/// The DER of the first certificate of a PEM text, to compare certificates.
fn first_der(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.as_ref().to_vec())
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` (PKCS#8, PBES2) with `passphrase`; returns the key as
/// an unencrypted PKCS#8 PEM.
pub fn decrypt_private_key(pem: &str, passphrase: &[u8]) -> Result<String, String> {
    use pkcs8::EncryptedPrivateKeyInfo;
    use pkcs8::der::pem::{self, LineEnding};
    let (label, der) =
        pem::decode_vec(pem.trim().as_bytes()).map_err(|e| format!("not a PEM key: {e}"))?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(format!("a PEM {label}, not an ENCRYPTED PRIVATE KEY"));
    }
    let encrypted = EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| format!("not an encrypted PKCS#8 key: {e}"))?;
    let document = encrypted
        .decrypt(passphrase)
        .map_err(|e| format!("cannot decrypt the key: {e}"))?;
    document
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| format!("cannot encode the key: {e}"))
}

impl CertificateSources {
    pub fn new(config: &CloudConfig) -> Result<Self, ConfigError> {
        let iam = match &config.iam_endpoint {
            Some(url) => Some(SignedClient::new(
                "--iam-endpoint",
                url,
                "IAM",
                "iam",
                config,
            )?),
            None => None,
        };
        let acm = match &config.acm_endpoint {
            Some(url) => Some(SignedClient::new(
                "--acm-endpoint",
                url,
                "ACM",
                "acm",
                config,
            )?),
            None => None,
        };
        Ok(Self {
            iam,
            iam_region: config.iam_region.clone(),
            acm,
            bodies: TtlCache::new(config.cache_ttl),
            exported: TtlCache::new(config.cache_ttl),
        })
    }

    /// Whether certificates of `service` are looked up in the cloud.
    pub fn has(&self, service: ArnService) -> bool {
        match service {
            ArnService::Iam => self.iam.is_some(),
            ArnService::Acm => self.acm.is_some(),
        }
    }

    /// The certificate `arn` names, if the cloud has it.
    pub async fn certificate(&self, arn: &str) -> Result<Option<CloudCertificate>, CloudError> {
        if let Some(hit) = self.bodies.get(arn) {
            return Ok(hit);
        }
        let found = match parse_arn(arn) {
            Some((ArnService::Iam, _, _)) => self.iam_certificate(arn).await?,
            Some((ArnService::Acm, region, _)) => self.acm_certificate(region, arn).await?,
            None => None,
        };
        self.bodies.put(arn.to_string(), found.clone());
        Ok(found)
    }

    async fn iam_certificate(&self, arn: &str) -> Result<Option<CloudCertificate>, CloudError> {
        let Some(iam) = &self.iam else {
            return Ok(None);
        };
        let action = "GetServerCertificate";
        // The name is the last path segment of the ARN's resource.
        let name = arn.rsplit('/').next().unwrap_or("");
        let body = elb_sigv4::encoding::form_encode([
            ("Action", action),
            ("Version", "2010-05-08"),
            ("ServerCertificateName", name),
        ]);
        let text = match iam.send(&self.iam_region, action, Body::Form(&body)).await {
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
            other => other?,
        };
        let doc =
            roxmltree::Document::parse(&text).map_err(|e| iam.unreadable(action, e.to_string()))?;
        let Some(cert) = doc
            .descendants()
            .find(|n| n.tag_name().name() == "ServerCertificate")
        else {
            return Err(iam.unreadable(action, "no ServerCertificate element"));
        };
        let same_arn = child(cert, "ServerCertificateMetadata")
            .and_then(|m| child_text(m, "Arn"))
            .is_some_and(|a| a == arn);
        if !same_arn {
            // The same name under another path, or another account: not this ARN.
            return Ok(None);
        }
        let Some(body) = child_text(cert, "CertificateBody") else {
            return Err(iam.unreadable(action, "no CertificateBody"));
        };
        Ok(Some(CloudCertificate {
            body: body.to_string(),
            chain: child_text(cert, "CertificateChain")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            status: None,
            exportable: false,
        }))
    }

    async fn acm_call(
        &self,
        region: &str,
        action: &str,
        body: serde_json::Value,
    ) -> Result<Option<serde_json::Value>, CloudError> {
        let Some(acm) = &self.acm else {
            return Ok(None);
        };
        let target = format!("CertificateManager.{action}");
        let text = match acm
            .send(
                region,
                action,
                Body::Json {
                    target: &target,
                    body: &body.to_string(),
                },
            )
            .await
        {
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
            other => other?,
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| acm.unreadable(action, e.to_string()))
    }

    async fn acm_certificate(
        &self,
        region: &str,
        arn: &str,
    ) -> Result<Option<CloudCertificate>, CloudError> {
        let request = serde_json::json!({"CertificateArn": arn});
        let Some(described) = self
            .acm_call(region, "DescribeCertificate", request.clone())
            .await?
        else {
            return Ok(None);
        };
        let d = &described["Certificate"];
        let status = d["Status"].as_str().unwrap_or("").to_string();
        let exportable = d["Type"].as_str() == Some("PRIVATE")
            || d["Options"]["Export"].as_str() == Some("ENABLED");
        if status != "ISSUED" {
            // Nothing to read yet (GetCertificate refuses certificates that are not issued).
            return Ok(Some(CloudCertificate {
                body: String::new(),
                chain: None,
                status: Some(status),
                exportable,
            }));
        }
        let Some(got) = self.acm_call(region, "GetCertificate", request).await? else {
            return Ok(None);
        };
        Ok(Some(CloudCertificate {
            body: got["Certificate"].as_str().unwrap_or("").to_string(),
            chain: got["CertificateChain"]
                .as_str()
                .filter(|c| !c.trim().is_empty())
                .map(str::to_string),
            status: Some(status),
            exportable,
        }))
    }

    /// Exports an exportable ACM certificate with its key, decrypted and checked.
    pub async fn export(&self, arn: &str) -> Result<Option<CertificateMaterial>, ExportError> {
        if let Some(hit) = self.exported.get(arn) {
            return Ok(Some(hit));
        }
        let Some((ArnService::Acm, region, _)) = parse_arn(arn) else {
            return Ok(None);
        };
        let mut passphrase = [0u8; 32];
        crate::store::fill_random(&mut passphrase);
        let encoded = base64::engine::general_purpose::STANDARD.encode(passphrase);
        let request = serde_json::json!({"CertificateArn": arn, "Passphrase": encoded});
        let Some(exported) = self.acm_call(region, "ExportCertificate", request).await? else {
            return Ok(None);
        };
        let field = |name: &str| exported[name].as_str().unwrap_or("").to_string();
        let body = field("Certificate");
        let chain = field("CertificateChain");
        let key_pem =
            decrypt_private_key(&field("PrivateKey"), &passphrase).map_err(ExportError::Key)?;
        let chain = (!chain.trim().is_empty()).then_some(chain);
        crate::certs::check(
            &body,
            &key_pem,
            chain.as_deref(),
            crate::timefmt::now_millis(),
        )
        .map_err(|e| ExportError::Key(e.to_string()))?;
        let mut chain_pem = body.trim_end().to_string();
        chain_pem.push('\n');
        if let Some(chain) = &chain {
            chain_pem.push_str(chain.trim_end());
            chain_pem.push('\n');
        }
        let material = CertificateMaterial { chain_pem, key_pem };
        self.exported.put(arn.to_string(), material.clone());
        Ok(Some(material))
    }
}

/// Why an export gave no usable key.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("the exported private key is unusable: {0}")]
    Key(String),
}

fn not_found(arn: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::CertificateNotFound,
        format!("The specified SSL certificate '{}' {why}", printable(arn)),
    )
}

/// The certificate of control's own IAM store, of `account_id`, that is the same certificate
/// as `body` (the key a cloud certificate is served with when the cloud keeps its key).
async fn uploaded_copy(
    state: &AppState,
    account_id: &str,
    body: &str,
) -> Result<Option<String>, ApiError> {
    let Some(der) = first_der(body) else {
        return Ok(None);
    };
    let own = state
        .store()
        .list_server_certificates(account_id, "/")
        .await?;
    Ok(own
        .into_iter()
        .find(|c| first_der(&c.body).as_deref() == Some(der.as_slice()))
        .map(|c| c.arn))
}

/// Where the key of a cloud certificate comes from, checked for a listener of `account_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyFrom {
    /// ACM exports it.
    Export,
    /// Control's own IAM holds the same certificate with its key, under this ARN.
    Uploaded(String),
}

async fn key_source(state: &AppState, account_id: &str, arn: &str) -> Result<KeyFrom, ApiError> {
    let sources = state.certificate_sources();
    let service = parse_arn(arn).map(|(s, _, _)| s);
    let Some(cert) = sources.certificate(arn).await? else {
        return Err(not_found(arn, "does not exist in the cloud"));
    };
    if let Some(status) = cert.status.as_deref().filter(|s| *s != "ISSUED") {
        return Err(ApiError::invalid_config(format!(
            "The ACM certificate {} is {status}; a listener can use it once it is ISSUED",
            printable(arn)
        )));
    }
    if cert.exportable {
        return Ok(KeyFrom::Export);
    }
    if let Some(own) = uploaded_copy(state, account_id, &cert.body).await? {
        return Ok(KeyFrom::Uploaded(own));
    }
    let why = match service {
        Some(ArnService::Iam) => {
            "the cloud's IAM never gives out a server certificate's private key \
             (GetServerCertificate returns none)"
        }
        _ => {
            "ACM does not export this certificate's private key (it was imported, or requested \
              without Export=ENABLED)"
        }
    };
    Err(ApiError::invalid_config(format!(
        "No load balancer node could terminate TLS with {}: {why}. Upload the same certificate \
         with its private key to this service's IAM endpoint (aws iam upload-server-certificate \
         --endpoint-url <this service>), then use either ARN{}",
        printable(arn),
        if service == Some(ArnService::Acm) {
            ", or request the certificate from ACM with Export=ENABLED"
        } else {
            ""
        }
    )))
}

/// Checks a listener's certificate that is not in control's own store: it must exist in the
/// cloud and a servo must be able to get its key. Control's own ARNs are the caller's
/// business ([`crate::certs::require_listener_certificate`]).
pub async fn require(state: &AppState, account_id: &str, arn: &str) -> Result<(), ApiError> {
    let Some((service, _, _)) = parse_arn(arn) else {
        return Err(not_found(arn, "does not exist"));
    };
    if !state.certificate_sources().has(service) {
        let what = match service {
            ArnService::Iam => {
                "does not exist: upload it with `aws iam upload-server-certificate` to this service"
            }
            ArnService::Acm => {
                "is an ACM certificate, and this service has no ACM endpoint (--acm-endpoint): \
                 upload the certificate with `aws iam upload-server-certificate` and use its ARN"
            }
        };
        return Err(not_found(arn, what));
    }
    match key_source(state, account_id, arn).await? {
        KeyFrom::Export => {
            // Exported now, so a certificate whose key cannot be used is refused here rather
            // than on the servos.
            state
                .certificate_sources()
                .export(arn)
                .await
                .map_err(|e| match e {
                    ExportError::Cloud(c) => ApiError::from(c),
                    ExportError::Key(why) => ApiError::invalid_config(format!(
                        "The ACM certificate {} cannot be served: {why}",
                        printable(arn)
                    )),
                })?
                .ok_or_else(|| not_found(arn, "does not exist in the cloud"))?;
            Ok(())
        }
        KeyFrom::Uploaded(_) => Ok(()),
    }
}

/// The chain and key a servo serves a cloud certificate with, for a listener of
/// `account_id`; `None` when the certificate is gone or its key is no longer available.
pub async fn material(
    state: &AppState,
    account_id: &str,
    arn: &str,
) -> Result<Option<CertificateMaterial>, ApiError> {
    let sources = state.certificate_sources();
    match key_source(state, account_id, arn).await {
        Ok(KeyFrom::Export) => match sources.export(arn).await {
            Ok(m) => Ok(m),
            Err(ExportError::Cloud(c)) => Err(c.into()),
            Err(ExportError::Key(why)) => {
                tracing::error!(certificate = %arn, %why, "exported certificate unusable");
                Ok(None)
            }
        },
        Ok(KeyFrom::Uploaded(own)) => {
            let Some(mut m) = crate::certs::stored_material(state, account_id, &own).await? else {
                return Ok(None);
            };
            // The cloud's chain if it has one (it is the certificate's registered chain).
            if let Some(cert) = sources.certificate(arn).await?
                && let Some(chain) = cert.chain
            {
                m.chain_pem = format!("{}\n{}\n", cert.body.trim_end(), chain.trim_end());
            }
            Ok(Some(m))
        }
        Err(e) if e.code == ErrorCode::ServiceUnavailable => Err(e),
        Err(e) => {
            tracing::warn!(certificate = %arn, error = %e.message, "certificate cannot be served");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns() {
        assert_eq!(
            parse_arn("arn:aws:iam::123456789012:server-certificate/web/site"),
            Some((ArnService::Iam, "", "123456789012"))
        );
        assert_eq!(
            parse_arn("arn:aws:acm:eu-west-1:123456789012:certificate/abc-1"),
            Some((ArnService::Acm, "eu-west-1", "123456789012"))
        );
        assert_eq!(parse_arn("arn:aws:iam::1:user/x"), None);
        assert_eq!(parse_arn("nonsense"), None);
    }

    #[test]
    fn encrypted_keys_are_decrypted() {
        // An EC key encrypted by openssl with PBES2 (PBKDF2-SHA256, AES-256-CBC), as
        // ExportCertificate returns it.
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let enc = dir.path().join("enc.pem");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ]);
        run(&[
            "pkcs8",
            "-topk8",
            "-in",
            key.to_str().unwrap(),
            "-out",
            enc.to_str().unwrap(),
            "-v2",
            "aes-256-cbc",
            "-v2prf",
            "hmacWithSHA256",
            "-passout",
            "pass:s3cret-passphrase",
        ]);
        let encrypted = std::fs::read_to_string(&enc).unwrap();
        assert!(encrypted.contains("ENCRYPTED PRIVATE KEY"));
        let clear = decrypt_private_key(&encrypted, b"s3cret-passphrase").unwrap();
        let original = std::fs::read_to_string(&key).unwrap();
        assert_eq!(
            clear.trim(),
            original.trim(),
            "the same PKCS#8 key comes back"
        );
        assert!(decrypt_private_key(&encrypted, b"wrong").is_err());
        assert!(decrypt_private_key("junk", b"x").is_err());
    }
}
