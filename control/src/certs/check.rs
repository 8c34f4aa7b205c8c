//! What UploadServerCertificate checks before it stores anything: one PEM certificate, a PEM
//! chain of zero or more, an unencrypted PEM private key of a type a TLS server can use, and a
//! key that belongs to the certificate. IAM answers `MalformedCertificate` or
//! `KeyPairMismatch`; so does this.

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_cert::der::Decode as _;

/// A certificate accepted for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    /// Validity of the end-entity certificate, in milliseconds since the epoch.
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateProblem {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    KeyMismatch(String),
}

fn malformed(message: impl Into<String>) -> CertificateProblem {
    CertificateProblem::Malformed(message.into())
}

fn certificates(
    field: &str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, CertificateProblem> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(format!("Unable to parse {field}: {e}. Use PEM format.")))?;
    for (i, der) in certs.iter().enumerate() {
        x509_cert::Certificate::from_der(der).map_err(|e| {
            malformed(format!(
                "Unable to parse certificate {} of {field}: {e}",
                i + 1
            ))
        })?;
    }
    Ok(certs)
}

fn millis(time: &x509_cert::time::Time) -> i64 {
    i64::try_from(time.to_unix_duration().as_millis()).unwrap_or(i64::MAX)
}

/// Checks an upload; `now_ms` decides whether the certificate has expired.
pub fn check(
    body: &str,
    private_key: &str,
    chain: Option<&str>,
    now_ms: i64,
) -> Result<CheckedCertificate, CertificateProblem> {
    let mut certs = certificates("the certificate body", body)?;
    match certs.len() {
        0 => {
            return Err(malformed(
                "Unable to parse the certificate body: it holds no PEM CERTIFICATE block",
            ));
        }
        1 => {}
        n => {
            return Err(malformed(format!(
                "The certificate body holds {n} certificates; give the server certificate in \
                 CertificateBody and the intermediates in CertificateChain"
            )));
        }
    }
    if let Some(chain) = chain.filter(|c| !c.trim().is_empty()) {
        let intermediates = certificates("the certificate chain", chain)?;
        if intermediates.is_empty() {
            return Err(malformed(
                "Unable to parse the certificate chain: it holds no PEM CERTIFICATE block",
            ));
        }
        certs.extend(intermediates);
    }
    if private_key.contains("ENCRYPTED") {
        return Err(malformed(
            "The private key is encrypted; upload it unencrypted (it is sealed at rest)",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key.as_bytes()).map_err(|e| {
        malformed(format!(
            "Unable to parse the private key: {e}. Use a PEM RSA, EC or PKCS#8 private key."
        ))
    })?;
    let signing_key = provider::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| malformed(format!("The private key cannot sign TLS handshakes: {e}")))?;
    let end_entity = x509_cert::Certificate::from_der(&certs[0])
        .map_err(|e| malformed(format!("Unable to parse the certificate body: {e}")))?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertificateProblem::KeyMismatch(
                "The private key does not match the public key of the certificate".into(),
            ));
        }
        Err(e) => {
            return Err(malformed(format!(
                "Cannot check that the private key matches the certificate: {e}"
            )));
        }
    }
    let validity = &end_entity.tbs_certificate.validity;
    let checked = CheckedCertificate {
        not_before_ms: millis(&validity.not_before),
        not_after_ms: millis(&validity.not_after),
    };
    if checked.not_after_ms <= now_ms {
        return Err(malformed(format!(
            "The certificate expired on {}",
            crate::timefmt::format_iso8601_millis(checked.not_after_ms)
        )));
    }
    Ok(checked)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate and its key for `name`, PEM.
    pub(crate) fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    const NOW: i64 = 1_780_000_000_000; // 2026-05-28

    #[test]
    fn a_matching_pair_is_accepted() {
        let (cert, key) = self_signed("www.example.test");
        let checked = check(&cert, &key, None, NOW).unwrap();
        assert!(checked.not_after_ms > checked.not_before_ms);
        // With an intermediate in the chain.
        let (ca, _) = self_signed("ca.example.test");
        check(&cert, &key, Some(&ca), NOW).unwrap();
    }

    #[test]
    fn problems_are_named() {
        let (cert, key) = self_signed("a.example.test");
        let (other_cert, other_key) = self_signed("b.example.test");
        assert!(matches!(
            check(&cert, &other_key, None, NOW),
            Err(CertificateProblem::KeyMismatch(_))
        ));
        for (body, key, chain) in [
            ("not a certificate", key.as_str(), None),
            ("", key.as_str(), None),
            (cert.as_str(), "not a key", None),
            (cert.as_str(), key.as_str(), Some("garbage")),
        ] {
            assert!(
                matches!(
                    check(body, key, chain, NOW),
                    Err(CertificateProblem::Malformed(_))
                ),
                "{body:.20} / {key:.20} / {chain:?}"
            );
        }
        let two = format!("{cert}{other_cert}");
        let Err(CertificateProblem::Malformed(m)) = check(&two, &key, None, NOW) else {
            panic!("two certificates in the body must be refused");
        };
        assert!(m.contains("2 certificates"), "{m}");
        let damaged = cert.replace("MII", "MIX");
        assert!(check(&damaged, &key, None, NOW).is_err());
        let Err(CertificateProblem::Malformed(m)) = check(&cert, &key, None, i64::MAX - 1) else {
            panic!("an expired certificate must be refused");
        };
        assert!(m.contains("expired"), "{m}");
    }
}
