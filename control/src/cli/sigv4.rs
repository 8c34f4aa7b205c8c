//! The client half of AWS Signature Version 4: signs a request with an `Authorization`
//! header, as botocore's `SigV4Auth` and euca2ools' `HmacV4Auth` do.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The request parts the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, percent-encoded as it goes on the wire (`/` if empty).
    pub path: &'a str,
    /// The query string without `?`, percent-encoded (empty for POST form requests).
    pub query: &'a str,
    /// Header names (any case) and values; all of them are signed.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Who signs, for which scope.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` if asked), upper
/// case hex: the encoding SigV4 canonicalisation and AWS form bodies use.
pub fn aws_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else if b == b'/' && keep_slash {
            out.push('/');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid ones are kept literally); `+` stays `+`.
fn percent_decode(text: &str) -> String {
    fn hex_digit(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical URI: dot segments and empty segments removed, each segment encoded once.
fn canonical_uri(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(
        &segments
            .iter()
            .map(|s| aws_encode(s, false))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if decoded.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                aws_encode(&percent_decode(k), false),
                aws_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request and the `;`-joined signed header names.
pub fn canonical_request(req: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in req.headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers.sort();
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers,
        signed,
        hex(&Sha256::digest(req.body))
    );
    (canonical, signed)
}

impl Signer<'_> {
    /// `kSigning` for a `YYYYMMDD` date.
    pub fn signing_key(&self, date: &str) -> Vec<u8> {
        let k_date = hmac_sha256(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac_sha256(&k_date, self.region.as_bytes());
        let k_service = hmac_sha256(&k_region, self.service.as_bytes());
        hmac_sha256(&k_service, b"aws4_request")
    }

    /// The `Authorization` header value for `req` signed at `amz_date` (`YYYYMMDDTHHMMSSZ`,
    /// which must also be the request's `X-Amz-Date` header).
    pub fn authorization(&self, req: &Request<'_>, amz_date: &str) -> String {
        let date = amz_date.get(..8).unwrap_or(amz_date);
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let (canonical, signed) = canonical_request(req);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex(&hmac_sha256(&self.signing_key(date), to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.access_key_id
        )
    }
}

#[cfg(test)]
mod tests {
    //! Vectors of AWS's published SigV4 test suite (`aws-sig-v4-test-suite`: credentials
    //! AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1,
    //! service "service") and the signing-key example of the SigV4 documentation.
    use super::*;

    const SIGNER: Signer<'static> = Signer {
        access_key_id: "AKIDEXAMPLE",
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
        service: "service",
    };
    const DATE: &str = "20150830T123600Z";

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn documentation_signing_key() {
        let signer = Signer {
            region: "us-east-1",
            service: "iam",
            ..SIGNER
        };
        assert_eq!(
            hex(&signer.signing_key("20120215")),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn suite_post_x_www_form_urlencoded() {
        let h = headers(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", DATE),
        ]);
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"Param1=value1",
        };
        let (canonical, signed) = canonical_request(&req);
        assert_eq!(
            canonical,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\n\
             host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(signed, "content-type;host;x-amz-date");
        assert_eq!(
            SIGNER.authorization(&req, DATE),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn suite_post_vanilla_and_get_vanilla() {
        let h = headers(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)]);
        let mut req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        assert!(SIGNER.authorization(&req, DATE).ends_with(
            "SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ));
        req.method = "GET";
        assert!(SIGNER.authorization(&req, DATE).ends_with(
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ));
    }

    #[test]
    fn suite_get_vanilla_query_order_key_case() {
        let h = headers(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)]);
        let req = Request {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &h,
            body: b"",
        };
        assert!(SIGNER.authorization(&req, DATE).ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ));
    }

    #[test]
    fn uri_and_encoding() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(
            canonical_uri("/services/LoadBalancing/"),
            "/services/LoadBalancing/"
        );
        assert_eq!(canonical_uri("/a/./b/../c//d"), "/a/c/d");
        assert_eq!(canonical_uri("/a%20b"), "/a%20b");
        assert_eq!(aws_encode("a b+c/é~", false), "a%20b%2Bc%2F%C3%A9~");
    }
}
