//! RSA server keys signed through OpenSSL's libcrypto.
//!
//! A full TLS 1.2 handshake costs the server one private-key signature, and with an RSA-2048
//! certificate (what IAM server certificates usually hold) that signature is most of the
//! handshake's CPU. On this project's machines OpenSSL 3 signs RSA-2048 about twice as fast as
//! ring (3,900 against 1,850 PSS signatures per second per core, measured with both in one
//! process), so the engine would otherwise do half the handshakes HAProxy does. rustls remains
//! the TLS implementation; only the RSA private-key operation is delegated, through rustls'
//! `SigningKey` interface. ECDSA keys stay with ring, which is as fast as OpenSSL for P-256.

use std::sync::Arc;

use openssl::{
    hash::MessageDigest,
    pkey::{Id, PKey, Private},
    rsa::Padding,
    sign::RsaPssSaltlen,
};
use rustls::{
    SignatureAlgorithm, SignatureScheme,
    pki_types::SubjectPublicKeyInfoDer,
    sign::{Signer, SigningKey},
};

/// Schemes in the order the server prefers them (PSS first, as rustls' own RSA keys do).
const SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// An RSA private key held by OpenSSL.
#[derive(Debug)]
pub struct RsaKey {
    key: Arc<PKey<Private>>,
    spki: Vec<u8>,
}

impl RsaKey {
    /// Loads `pem` if it is an RSA private key (PKCS#8 or PKCS#1); `Ok(None)` for other kinds.
    pub fn from_pem(pem: &[u8]) -> Result<Option<Self>, String> {
        let key = PKey::private_key_from_pem(pem)
            .map_err(|e| format!("private key is not a valid PEM key: {e}"))?;
        if key.id() != Id::RSA {
            return Ok(None);
        }
        let spki = key
            .public_key_to_der()
            .map_err(|e| format!("deriving the RSA public key: {e}"))?;
        Ok(Some(Self {
            key: Arc::new(key),
            spki,
        }))
    }
}

impl SigningKey for RsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        SCHEMES
            .iter()
            .find(|s| offered.contains(s))
            .map(|s| -> Box<dyn Signer> {
                Box::new(RsaSigner {
                    key: self.key.clone(),
                    scheme: *s,
                })
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct RsaSigner {
    key: Arc<PKey<Private>>,
    scheme: SignatureScheme,
}

impl Signer for RsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let (digest, pss) = match self.scheme {
            SignatureScheme::RSA_PSS_SHA256 => (MessageDigest::sha256(), true),
            SignatureScheme::RSA_PSS_SHA384 => (MessageDigest::sha384(), true),
            SignatureScheme::RSA_PSS_SHA512 => (MessageDigest::sha512(), true),
            SignatureScheme::RSA_PKCS1_SHA256 => (MessageDigest::sha256(), false),
            SignatureScheme::RSA_PKCS1_SHA384 => (MessageDigest::sha384(), false),
            _ => (MessageDigest::sha512(), false),
        };
        let fail =
            |e: openssl::error::ErrorStack| rustls::Error::General(format!("RSA signature: {e}"));
        let mut signer = openssl::sign::Signer::new(digest, &self.key).map_err(fail)?;
        if pss {
            signer.set_rsa_padding(Padding::PKCS1_PSS).map_err(fail)?;
            signer
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .map_err(fail)?;
            signer.set_rsa_mgf1_md(digest).map_err(fail)?;
        } else {
            signer.set_rsa_padding(Padding::PKCS1).map_err(fail)?;
        }
        signer.update(message).map_err(fail)?;
        signer.sign_to_vec().map_err(fail)
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scheme's signature verifies with ring's verifier (what clients do).
    #[test]
    fn signatures_verify() {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pem = PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let key = RsaKey::from_pem(&pem).unwrap().unwrap();
        let spki = key.public_key().unwrap().to_vec();
        // ring wants the bare RSAPublicKey, which is the SPKI's BIT STRING contents.
        let public = PKey::public_key_from_der(&spki).unwrap().rsa().unwrap();
        let bare = public.public_key_to_der_pkcs1().unwrap();
        for scheme in SCHEMES {
            let signer = key.choose_scheme(&[scheme]).unwrap();
            let sig = signer.sign(b"message").unwrap();
            let alg: &dyn ring::signature::VerificationAlgorithm = match scheme {
                SignatureScheme::RSA_PSS_SHA256 => &ring::signature::RSA_PSS_2048_8192_SHA256,
                SignatureScheme::RSA_PSS_SHA384 => &ring::signature::RSA_PSS_2048_8192_SHA384,
                SignatureScheme::RSA_PSS_SHA512 => &ring::signature::RSA_PSS_2048_8192_SHA512,
                SignatureScheme::RSA_PKCS1_SHA256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            };
            ring::signature::UnparsedPublicKey::new(alg, &bare)
                .verify(b"message", &sig)
                .unwrap_or_else(|_| panic!("{scheme:?} signature does not verify"));
        }
        // The server prefers PSS.
        let chosen = key
            .choose_scheme(&[
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PSS_SHA256,
            ])
            .unwrap();
        assert_eq!(chosen.scheme(), SignatureScheme::RSA_PSS_SHA256);
        // Not RSA: left to ring.
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let ec_pem = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        assert!(RsaKey::from_pem(&ec_pem).unwrap().is_none());
    }
}
