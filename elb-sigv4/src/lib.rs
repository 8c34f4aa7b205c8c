//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): the signer and the verifier, in one place.
//!
//! Control verifies every ELB API request with it ([`parse`], then
//! [`PendingSignature::verify`]), its EC2 inventory client and the `eulb` CLI sign with it
//! ([`Signer`]). Both directions build the same canonical request ([`canonical_request`]),
//! string to sign ([`string_to_sign`]) and signing key ([`signing_key`]), so a request signed
//! here verifies here by construction, and AWS's published test vectors pin both.
//!
//! - [`encoding`]: SigV4's percent-encoding rules (encode unreserved-only, strict decode).
//! - [`time`]: `X-Amz-Date` (`20150830T123600Z`) and the civil-date arithmetic behind it.

pub mod encoding;
pub mod time;

mod canonical;
mod sign;
mod verify;

pub use canonical::{
    canonical_query, canonical_request, constant_time_eq, hex, hmac, normalize_path, sha256_hex,
    signing_key, string_to_sign,
};
pub use sign::Signer;
pub use verify::{
    CredentialScope, MAX_PRESIGN_EXPIRES, PendingSignature, SignatureLocation, parse,
};

/// The only algorithm SigV4 defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as it goes on the wire (percent-encoded; `""` is `/`).
    pub raw_path: &'a str,
    /// The query string as it goes on the wire, without `?`.
    pub raw_query: &'a str,
    /// Header names (any case) with their values, in order.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a signature was not made or not accepted; each maps to one AWS error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    /// No signature at all: `MissingAuthenticationToken`.
    #[error("Request is missing Authentication Token")]
    Missing,
    /// Signature present but not well formed: `IncompleteSignature`.
    #[error("{0}")]
    Incomplete(String),
    /// Well formed but wrong: `SignatureDoesNotMatch`.
    #[error("{0}")]
    Mismatch(String),
    /// Outside its validity window: `RequestExpired`.
    #[error("{0}")]
    Expired(String),
}

#[cfg(test)]
mod tests;
