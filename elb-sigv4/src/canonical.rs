//! The canonical request, the string to sign and the signing key: the parts of SigV4 that the
//! signer and the verifier share.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::encoding::{percent_decode, uri_encode};
use crate::{ALGORITHM, Request, SigV4Error};

/// Decoded query parameters in arrival order (`+` is not a space here).
pub(crate) fn query_pairs(raw_query: &str) -> Result<Vec<(String, String)>, SigV4Error> {
    let malformed = |_| SigV4Error::Incomplete("Malformed query string".into());
    let mut out = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((
            percent_decode(k.as_bytes(), false).map_err(malformed)?,
            percent_decode(v.as_bytes(), false).map_err(malformed)?,
        ));
    }
    Ok(out)
}

/// RFC 3986 dot-segment removal, plus the collapsing of empty segments AWS services expect
/// (the same normalisation botocore applies before signing).
pub fn normalize_path(path: &str) -> String {
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
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query string: every parameter decoded, re-encoded with [`uri_encode`], and
/// sorted by name then value. `exclude` drops a parameter (the presigned signature itself).
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

/// The canonical request of SigV4 (method, URI, query, headers, signed header list, payload
/// hash). `signed_headers` are lower-case names in sorted order; every one must be present
/// (several headers of one name are joined with `,`).
pub fn canonical_request(
    req: &Request<'_>,
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
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::Mismatch(format!(
                "The header '{name}' is listed in SignedHeaders but is not present"
            )));
        }
        let _ = writeln!(headers, "{name}:{}", values.join(","));
    }
    Ok(format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{}",
        req.method,
        signed_headers.join(";"),
        sha256_hex(req.body)
    ))
}

/// `AWS4-HMAC-SHA256 \n date \n scope \n hex(sha256(canonical request))`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// HMAC-SHA256.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Lower-case hex of the SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Equality whose time does not depend on where the inputs differ (for secrets and MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalisation() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("//example//"), "/example/");
        assert_eq!(normalize_path("/example/.."), "/");
        assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
        assert_eq!(normalize_path("/a/./b/../c//d"), "/a/c/d");
        assert_eq!(
            normalize_path("/services/LoadBalancing/"),
            "/services/LoadBalancing/"
        );
    }

    #[test]
    fn canonical_uri_encodes_each_segment_once() {
        let req = |path| Request {
            method: "GET",
            raw_path: path,
            raw_query: "",
            headers: &[],
            body: b"",
        };
        let uri = |path| {
            canonical_request(&req(path), &[], None)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(uri("/a%20b"), "/a%20b");
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/a/./b/../c//d"), "/a/c/d");
        assert!(matches!(
            canonical_request(&req("/%zz"), &[], None),
            Err(SigV4Error::Incomplete(_))
        ));
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
