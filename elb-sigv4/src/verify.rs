//! The server half: verification of header-signed and presigned requests, what botocore's
//! `SigV4Auth` / `SigV4QueryAuth` produce.
//!
//! Verification is two-phase so that no secret is looked up before the request is known to be
//! well formed: [`parse`] extracts the credential scope and claimed signature, the caller finds
//! the secret for the access key, then [`PendingSignature::verify`] rebuilds the canonical
//! request and compares signatures in constant time.

use crate::canonical::{
    canonical_request, constant_time_eq, hex, hmac, query_pairs, signing_key, string_to_sign,
};
use crate::time::{format_amz_date, parse_amz_date};
use crate::{ALGORITHM, Request, SigV4Error};

/// Longest validity of a presigned URL AWS accepts (7 days).
pub const MAX_PRESIGN_EXPIRES: i64 = 604_800;

/// `AKID/20150830/us-east-1/service/aws4_request`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl CredentialScope {
    fn parse(text: &str) -> Result<Self, SigV4Error> {
        let parts: Vec<&str> = text.split('/').collect();
        let [akid, date, region, service, terminator] = parts[..] else {
            return Err(SigV4Error::Incomplete(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{text}'"
            )));
        };
        if terminator != "aws4_request" {
            return Err(SigV4Error::Mismatch(format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'"
            )));
        }
        if akid.is_empty() || region.is_empty() || service.is_empty() {
            return Err(SigV4Error::Incomplete(format!(
                "Incomplete credential '{text}'"
            )));
        }
        Ok(Self {
            access_key_id: akid.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        })
    }

    /// `20150830/us-east-1/service/aws4_request`.
    pub fn scope_string(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// How the signature travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureLocation {
    Header,
    /// Presigned URL with its `X-Amz-Expires`.
    Query {
        expires: i64,
    },
}

/// A parsed, not yet verified signature.
#[derive(Debug, Clone)]
pub struct PendingSignature {
    pub credential: CredentialScope,
    pub amz_date: String,
    /// `amz_date` in seconds since the epoch.
    pub timestamp: i64,
    pub signed_headers: Vec<String>,
    pub signature: String,
    pub location: SignatureLocation,
}

/// Finds and parses the request's signature, header form first.
pub fn parse(req: &Request<'_>) -> Result<PendingSignature, SigV4Error> {
    if let Some(auth) = req.header("authorization") {
        return parse_header(auth, req);
    }
    let pairs = query_pairs(req.raw_query)?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(algorithm) = get("X-Amz-Algorithm") {
        if algorithm != ALGORITHM {
            return Err(SigV4Error::Incomplete(format!(
                "Unsupported X-Amz-Algorithm '{algorithm}'; only {ALGORITHM} is accepted"
            )));
        }
        let need = |name: &str| {
            get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                SigV4Error::Incomplete(format!("Presigned request is missing {name}"))
            })
        };
        let credential = CredentialScope::parse(need("X-Amz-Credential")?)?;
        let amz_date = need("X-Amz-Date")?.to_string();
        let expires: i64 = need("X-Amz-Expires")?
            .parse()
            .ok()
            .filter(|e| (1..=MAX_PRESIGN_EXPIRES).contains(e))
            .ok_or_else(|| {
                SigV4Error::Incomplete(format!(
                    "X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds"
                ))
            })?;
        let signed_headers = split_signed_headers(need("X-Amz-SignedHeaders")?)?;
        let signature = need("X-Amz-Signature")?.to_string();
        return finish(
            credential,
            amz_date,
            signed_headers,
            signature,
            SignatureLocation::Query { expires },
        );
    }
    if get("Signature").is_some() || get("SignatureVersion").is_some() {
        return Err(SigV4Error::Incomplete(
            "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported".into(),
        ));
    }
    Err(SigV4Error::Missing)
}

fn parse_header(auth: &str, req: &Request<'_>) -> Result<PendingSignature, SigV4Error> {
    let Some(rest) = auth.strip_prefix(ALGORITHM) else {
        return Err(SigV4Error::Incomplete(
            "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported".into(),
        ));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {
                return Err(SigV4Error::Incomplete(format!(
                    "Authorization header element '{part}' is not of the form key=value"
                )));
            }
        }
    }
    let missing = |what: &str| {
        SigV4Error::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={auth}"
        ))
    };
    let credential = CredentialScope::parse(credential.ok_or_else(|| missing("Credential"))?)?;
    let signed_headers = split_signed_headers(signed.ok_or_else(|| missing("SignedHeaders"))?)?;
    let signature = signature.ok_or_else(|| missing("Signature"))?.to_string();
    let amz_date = req.header("x-amz-date").ok_or_else(|| {
        SigV4Error::Incomplete(
            "Authorization header requires existence of the 'X-Amz-Date' header".into(),
        )
    })?;
    if !signed_headers.iter().any(|h| h == "x-amz-date") {
        return Err(SigV4Error::Mismatch(
            "The X-Amz-Date header must be signed".into(),
        ));
    }
    finish(
        credential,
        amz_date.to_string(),
        signed_headers,
        signature,
        SignatureLocation::Header,
    )
}

fn split_signed_headers(text: &str) -> Result<Vec<String>, SigV4Error> {
    let names: Vec<String> = text.split(';').map(str::to_string).collect();
    if names
        .iter()
        .any(|n| n.is_empty() || n.chars().any(|c| c.is_ascii_uppercase()))
    {
        return Err(SigV4Error::Incomplete(format!(
            "Malformed SignedHeaders '{text}'"
        )));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(SigV4Error::Mismatch(
            "The Host header must be signed".into(),
        ));
    }
    Ok(names)
}

fn finish(
    credential: CredentialScope,
    amz_date: String,
    signed_headers: Vec<String>,
    signature: String,
    location: SignatureLocation,
) -> Result<PendingSignature, SigV4Error> {
    let timestamp = parse_amz_date(&amz_date).ok_or_else(|| {
        SigV4Error::Incomplete(format!(
            "X-Amz-Date '{amz_date}' must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z'"
        ))
    })?;
    if !amz_date.starts_with(&credential.date) || credential.date.len() != 8 {
        return Err(SigV4Error::Mismatch(format!(
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date: '{}' vs '{amz_date}'",
            credential.date
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4Error::Incomplete(
            "Signature must be 64 hexadecimal digits".into(),
        ));
    }
    Ok(PendingSignature {
        credential,
        amz_date,
        timestamp,
        signed_headers,
        signature,
        location,
    })
}

impl PendingSignature {
    /// Checks the request time against `now` (seconds): within `max_skew` for signed headers,
    /// within the declared lifetime for presigned URLs.
    pub fn check_time(&self, now: i64, max_skew: i64) -> Result<(), SigV4Error> {
        let earliest = self.timestamp - max_skew;
        let latest = match self.location {
            SignatureLocation::Header => self.timestamp + max_skew,
            SignatureLocation::Query { expires } => self.timestamp + expires,
        };
        if now < earliest {
            return Err(SigV4Error::Expired(format!(
                "Request is not yet valid: signed at {} but the server time is {}",
                self.amz_date,
                format_amz_date(now)
            )));
        }
        if now > latest {
            return Err(SigV4Error::Expired(format!(
                "Request has expired: signed at {}, valid until {}, server time {}",
                self.amz_date,
                format_amz_date(latest),
                format_amz_date(now)
            )));
        }
        Ok(())
    }

    /// Recomputes the signature with `secret`, for the credential scope the request names, and
    /// compares it with the one sent.
    pub fn verify(&self, req: &Request<'_>, secret: &str) -> Result<(), SigV4Error> {
        let exclude = match self.location {
            SignatureLocation::Header => None,
            SignatureLocation::Query { .. } => Some("X-Amz-Signature"),
        };
        let canonical = canonical_request(req, &self.signed_headers, exclude)?;
        let to_sign = string_to_sign(&self.amz_date, &self.credential.scope_string(), &canonical);
        let key = signing_key(
            secret,
            &self.credential.date,
            &self.credential.region,
            &self.credential.service,
        );
        let expected = hex(&hmac(&key, to_sign.as_bytes()));
        if constant_time_eq(
            expected.as_bytes(),
            self.signature.to_ascii_lowercase().as_bytes(),
        ) {
            Ok(())
        } else {
            Err(SigV4Error::Mismatch(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method."
                    .into(),
            ))
        }
    }
}
