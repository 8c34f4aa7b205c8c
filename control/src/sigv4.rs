//! AWS Signature Version 4 verification (header and presigned-query forms), the server half of
//! what botocore's `SigV4Auth` / `SigV4QueryAuth` do.
//!
//! Verification is two-phase so that no secret is looked up before the request is known to be
//! well formed: [`parse`] extracts the credential scope and claimed signature, the caller finds
//! the secret for the access key, then [`PendingSignature::verify`] rebuilds the canonical
//! request and compares signatures in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::query::percent_decode;
use crate::timefmt;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Longest validity of a presigned URL AWS accepts (7 days).
pub const MAX_PRESIGN_EXPIRES: i64 = 604_800;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was not accepted; each maps to one AWS error code.
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

/// The parts of an HTTP request that the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    /// The path as it arrived on the wire (still percent-encoded).
    pub raw_path: &'a str,
    /// The query string as it arrived, without `?`.
    pub raw_query: &'a str,
    /// Header names in lower case with their values, in arrival order.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

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

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Decoded query parameters (for reading X-Amz-* values; `+` is not a space here).
fn query_pairs(raw_query: &str) -> Result<Vec<(String, String)>, SigV4Error> {
    let mut out = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k.as_bytes(), false)
            .map_err(|_| SigV4Error::Incomplete("Malformed query string".into()))?;
        let v = percent_decode(v.as_bytes(), false)
            .map_err(|_| SigV4Error::Incomplete("Malformed query string".into()))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Finds and parses the request's signature, header form first.
pub fn parse(req: &SignedParts<'_>) -> Result<PendingSignature, SigV4Error> {
    if let Some(auth) = header(req.headers, "authorization") {
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

fn parse_header(auth: &str, req: &SignedParts<'_>) -> Result<PendingSignature, SigV4Error> {
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
    let amz_date = header(req.headers, "x-amz-date").ok_or_else(|| {
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
    let timestamp = timefmt::parse_amz_date(&amz_date).ok_or_else(|| {
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
                timefmt::format_amz_date(now)
            )));
        }
        if now > latest {
            return Err(SigV4Error::Expired(format!(
                "Request has expired: signed at {}, valid until {}, server time {}",
                self.amz_date,
                timefmt::format_amz_date(latest),
                timefmt::format_amz_date(now)
            )));
        }
        Ok(())
    }

    /// Recomputes the signature with `secret` and compares it with the one sent.
    pub fn verify(&self, req: &SignedParts<'_>, secret: &str) -> Result<(), SigV4Error> {
        let expected = self.expected_signature(req, secret)?;
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

    fn expected_signature(
        &self,
        req: &SignedParts<'_>,
        secret: &str,
    ) -> Result<String, SigV4Error> {
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
        Ok(hex(&hmac(&key, to_sign.as_bytes())))
    }
}

/// SigV4's URI encoding: unreserved characters stay, everything else is `%XX` (upper case).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RFC 3986 dot-segment removal, plus the collapsing of empty segments AWS services expect
/// (the same normalisation botocore applies before signing).
pub fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::new();
    if path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    if out.is_empty() { "/".into() } else { out }
}

/// The canonical query string: every parameter decoded, re-encoded with [`uri_encode`], and
/// sorted by name then value. `exclude` drops the presigned signature itself.
pub fn canonical_query(raw_query: &str, exclude: Option<&str>) -> Result<String, SigV4Error> {
    let mut pairs: Vec<(String, String)> = query_pairs(raw_query)?
        .into_iter()
        .filter(|(k, _)| Some(k.as_str()) != exclude)
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&"))
}

fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request of SigV4 (method, URI, query, headers, signed header list, payload hash).
pub fn canonical_request(
    req: &SignedParts<'_>,
    signed_headers: &[String],
    exclude_query: Option<&str>,
) -> Result<String, SigV4Error> {
    let path = percent_decode(req.raw_path.as_bytes(), false)
        .map_err(|_| SigV4Error::Incomplete("Malformed request path".into()))?;
    let uri = uri_encode(&normalize_path(&path), true);
    let query = canonical_query(req.raw_query, exclude_query)?;
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::Mismatch(format!(
                "The header '{name}' is listed in SignedHeaders but is not present"
            )));
        }
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    let payload = hex(&Sha256::digest(req.body));
    Ok(format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{payload}",
        req.method,
        signed_headers.join(";")
    ))
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hashed = hex(&Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hashed}")
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Signs a request the way a client does (used by the EC2 inventory client and by tests):
/// returns the `Authorization` header value for the given headers, which must include
/// `host` and `x-amz-date`.
pub fn sign_headers(
    req: &SignedParts<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<String, SigV4Error> {
    let amz_date = header(req.headers, "x-amz-date")
        .ok_or_else(|| SigV4Error::Incomplete("x-amz-date header required".into()))?;
    let mut signed: Vec<String> = req.headers.iter().map(|(n, _)| n.clone()).collect();
    signed.sort();
    signed.dedup();
    let scope = CredentialScope {
        access_key_id: access_key_id.to_string(),
        date: amz_date.get(..8).unwrap_or_default().to_string(),
        region: region.to_string(),
        service: service.to_string(),
    };
    let canonical = canonical_request(req, &signed, None)?;
    let to_sign = string_to_sign(amz_date, &scope.scope_string(), &canonical);
    let key = signing_key(secret, &scope.date, region, service);
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={}",
        scope.scope_string(),
        signed.join(";"),
        hex(&hmac(&key, to_sign.as_bytes()))
    ))
}

#[cfg(test)]
mod tests {
    //! Vectors from AWS's published SigV4 test suite (`aws-sig-v4-test-suite`: get-vanilla,
    //! post-vanilla, post-x-www-form-urlencoded, get-vanilla-query-order-key-case) and the
    //! signing-key example of the SigV4 documentation. Credentials and times are the suite's:
    //! AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1,
    //! service "service".
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn suite_signature(req: &SignedParts<'_>, signed: &[&str]) -> (String, String) {
        let signed: Vec<String> = signed.iter().map(|s| s.to_string()).collect();
        let canonical = canonical_request(req, &signed, None).unwrap();
        let to_sign = string_to_sign(DATE, "20150830/us-east-1/service/aws4_request", &canonical);
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        (canonical, hex(&hmac(&key, to_sign.as_bytes())))
    }

    #[test]
    fn signing_key_documentation_example() {
        // From the SigV4 documentation's "deriving the signing key" example.
        let key = signing_key(SECRET, "20120215", "us-east-1", "iam");
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn get_vanilla() {
        let headers = h(&[("host", "example.amazonaws.com"), ("x-amz-date", DATE)]);
        let req = SignedParts {
            method: "GET",
            raw_path: "/",
            raw_query: "",
            headers: &headers,
            body: b"",
        };
        let (canonical, sig) = suite_signature(&req, &["host", "x-amz-date"]);
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sig,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_vanilla() {
        let headers = h(&[("host", "example.amazonaws.com"), ("x-amz-date", DATE)]);
        let req = SignedParts {
            method: "POST",
            raw_path: "/",
            raw_query: "",
            headers: &headers,
            body: b"",
        };
        let (_, sig) = suite_signature(&req, &["host", "x-amz-date"]);
        assert_eq!(
            sig,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let headers = h(&[("host", "example.amazonaws.com"), ("x-amz-date", DATE)]);
        let req = SignedParts {
            method: "GET",
            raw_path: "/",
            raw_query: "Param2=value2&Param1=value1",
            headers: &headers,
            body: b"",
        };
        let (canonical, sig) = suite_signature(&req, &["host", "x-amz-date"]);
        assert!(canonical.contains("\nParam1=value1&Param2=value2\n"));
        assert_eq!(
            sig,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let headers = h(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "example.amazonaws.com"),
            ("x-amz-date", DATE),
        ]);
        let req = SignedParts {
            method: "POST",
            raw_path: "/",
            raw_query: "",
            headers: &headers,
            body: b"Param1=value1",
        };
        let (_, sig) = suite_signature(&req, &["content-type", "host", "x-amz-date"]);
        assert_eq!(
            sig,
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn path_normalisation() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("//example//"), "/example/");
        assert_eq!(normalize_path("/example/.."), "/");
        assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
        assert_eq!(uri_encode("/a b/ü", true), "/a%20b/%C3%BC");
        assert_eq!(uri_encode("a/b~", false), "a%2Fb~");
    }

    fn signed_request_headers(body: &[u8], date: &str) -> Vec<(String, String)> {
        let mut headers = h(&[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("host", "127.0.0.1:8080"),
            ("x-amz-date", date),
        ]);
        let req = SignedParts {
            method: "POST",
            raw_path: "/",
            raw_query: "",
            headers: &headers,
            body,
        };
        let auth = sign_headers(
            &req,
            "AKIDEXAMPLE",
            SECRET,
            "us-east-1",
            "elasticloadbalancing",
        )
        .unwrap();
        headers.push(("authorization".into(), auth));
        headers
    }

    #[test]
    fn header_signature_round_trip_and_tamper() {
        let body = b"Action=DescribeLoadBalancers&Version=2012-06-01";
        let headers = signed_request_headers(body, DATE);
        let req = SignedParts {
            method: "POST",
            raw_path: "/",
            raw_query: "",
            headers: &headers,
            body,
        };
        let pending = parse(&req).unwrap();
        assert_eq!(pending.credential.access_key_id, "AKIDEXAMPLE");
        assert_eq!(pending.credential.service, "elasticloadbalancing");
        pending.verify(&req, SECRET).unwrap();
        assert!(matches!(
            pending.verify(&req, "wrong"),
            Err(SigV4Error::Mismatch(_))
        ));
        let tampered = SignedParts {
            body: b"Action=DeleteLoadBalancer&Version=2012-06-01",
            ..req
        };
        assert!(matches!(
            pending.verify(&tampered, SECRET),
            Err(SigV4Error::Mismatch(_))
        ));
    }

    #[test]
    fn clock_skew_and_expiry() {
        let body = b"";
        let headers = signed_request_headers(body, DATE);
        let req = SignedParts {
            method: "POST",
            raw_path: "/",
            raw_query: "",
            headers: &headers,
            body,
        };
        let pending = parse(&req).unwrap();
        let t = pending.timestamp;
        assert!(pending.check_time(t + 899, 900).is_ok());
        assert!(pending.check_time(t - 899, 900).is_ok());
        assert!(matches!(
            pending.check_time(t + 901, 900),
            Err(SigV4Error::Expired(_))
        ));
        assert!(matches!(
            pending.check_time(t - 901, 900),
            Err(SigV4Error::Expired(_))
        ));
    }

    #[test]
    fn missing_and_malformed_signatures() {
        let headers = h(&[("host", "h")]);
        let req = SignedParts {
            method: "GET",
            raw_path: "/",
            raw_query: "Action=X",
            headers: &headers,
            body: b"",
        };
        assert_eq!(parse(&req).unwrap_err(), SigV4Error::Missing);
        let headers = h(&[("host", "h"), ("authorization", "AWS AKID:sig")]);
        let req = SignedParts {
            headers: &headers,
            ..req
        };
        assert!(matches!(parse(&req), Err(SigV4Error::Incomplete(_))));
        let headers = h(&[
            ("host", "h"),
            ("x-amz-date", DATE),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/svc, SignedHeaders=host;x-amz-date, Signature=00",
            ),
        ]);
        let req = SignedParts {
            headers: &headers,
            ..req
        };
        assert!(matches!(parse(&req), Err(SigV4Error::Incomplete(_))));
        // Scope date that disagrees with X-Amz-Date.
        let sig = "0".repeat(64);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20150831/us-east-1/svc/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
        );
        let headers = h(&[
            ("host", "h"),
            ("x-amz-date", DATE),
            ("authorization", &auth),
        ]);
        let req = SignedParts {
            headers: &headers,
            ..req
        };
        assert!(matches!(parse(&req), Err(SigV4Error::Mismatch(_))));
    }

    #[test]
    fn presigned_query() {
        // Build a presigned URL by hand, then verify it.
        let scope = "20150830/us-east-1/elasticloadbalancing/aws4_request";
        let base = format!(
            "Action=DescribeLoadBalancers&Version=2012-06-01&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential={}&X-Amz-Date={DATE}&X-Amz-Expires=300&X-Amz-SignedHeaders=host",
            uri_encode(&format!("AKIDEXAMPLE/{scope}"), false)
        );
        let headers = h(&[("host", "127.0.0.1:8080")]);
        let unsigned = SignedParts {
            method: "GET",
            raw_path: "/",
            raw_query: &base,
            headers: &headers,
            body: b"",
        };
        let canonical = canonical_request(&unsigned, &["host".to_string()], None).unwrap();
        let key = signing_key(SECRET, "20150830", "us-east-1", "elasticloadbalancing");
        let sig = hex(&hmac(
            &key,
            string_to_sign(DATE, scope, &canonical).as_bytes(),
        ));
        let query = format!("{base}&X-Amz-Signature={sig}");
        let req = SignedParts {
            raw_query: &query,
            ..unsigned
        };
        let pending = parse(&req).unwrap();
        assert_eq!(pending.location, SignatureLocation::Query { expires: 300 });
        pending.verify(&req, SECRET).unwrap();
        assert!(pending.check_time(pending.timestamp + 299, 900).is_ok());
        assert!(matches!(
            pending.check_time(pending.timestamp + 301, 900),
            Err(SigV4Error::Expired(_))
        ));
        let tampered_query = query.replace("DescribeLoadBalancers", "DeleteLoadBalancer");
        let tampered = SignedParts {
            raw_query: &tampered_query,
            ..req
        };
        assert!(matches!(
            parse(&tampered).unwrap().verify(&tampered, SECRET),
            Err(SigV4Error::Mismatch(_))
        ));
    }
}
