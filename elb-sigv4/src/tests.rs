//! Vectors from AWS's published SigV4 test suite (`aws-sig-v4-test-suite`: get-vanilla,
//! post-vanilla, post-x-www-form-urlencoded, get-vanilla-query-order-key-case) and the
//! signing-key example of the SigV4 documentation, checked through both the signer and the
//! verifier; then round trips, tampering, clock skew, malformed signatures and presigned URLs.
//! Credentials and times are the suite's: AKIDEXAMPLE /
//! wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1, service "service".

use super::*;
use crate::encoding::uri_encode;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20150830T123600Z";
const SUITE_SCOPE: &str = "20150830/us-east-1/service/aws4_request";
const SIGNER: Signer<'static> = Signer {
    access_key_id: "AKIDEXAMPLE",
    secret_access_key: SECRET,
    region: "us-east-1",
    service: "service",
};

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn req<'a>(
    method: &'a str,
    query: &'a str,
    headers: &'a [(String, String)],
    body: &'a [u8],
) -> Request<'a> {
    Request {
        method,
        raw_path: "/",
        raw_query: query,
        headers,
        body,
    }
}

/// The suite's canonical request and signature, computed with the shared primitives.
fn suite_signature(req: &Request<'_>, signed: &[&str]) -> (String, String) {
    let signed: Vec<String> = signed.iter().map(|s| s.to_string()).collect();
    let canonical = canonical_request(req, &signed, None).unwrap();
    let to_sign = string_to_sign(DATE, SUITE_SCOPE, &canonical);
    let key = signing_key(SECRET, "20150830", "us-east-1", "service");
    (canonical, hex(&hmac(&key, to_sign.as_bytes())))
}

/// Signs with [`Signer`], checks the expected signature, then verifies the result with the
/// verifier (and refuses it with another secret).
fn sign_and_verify(req: &Request<'_>, expected_signature: &str) -> String {
    let auth = SIGNER.authorization(req).unwrap();
    assert!(
        auth.ends_with(&format!("Signature={expected_signature}")),
        "{auth}"
    );
    let mut headers = req.headers.to_vec();
    headers.push(("Authorization".into(), auth.clone()));
    let signed = Request {
        headers: &headers,
        ..*req
    };
    let pending = parse(&signed).unwrap();
    assert_eq!(pending.credential.scope_string(), SUITE_SCOPE);
    pending.verify(&signed, SECRET).unwrap();
    assert!(matches!(
        pending.verify(&signed, "not-the-secret"),
        Err(SigV4Error::Mismatch(_))
    ));
    auth
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
    let r = req("GET", "", &headers, b"");
    let (canonical, sig) = suite_signature(&r, &["host", "x-amz-date"]);
    assert_eq!(
        canonical,
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let expected = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    assert_eq!(sig, expected);
    // Header names in any case sign the same.
    let headers = h(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)]);
    sign_and_verify(&req("GET", "", &headers, b""), expected);
}

#[test]
fn post_vanilla() {
    let headers = h(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)]);
    let r = req("POST", "", &headers, b"");
    let expected = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
    assert_eq!(suite_signature(&r, &["host", "x-amz-date"]).1, expected);
    let auth = sign_and_verify(&r, expected);
    assert!(auth.contains("SignedHeaders=host;x-amz-date, "), "{auth}");
}

#[test]
fn get_vanilla_query_order_key_case() {
    let headers = h(&[("host", "example.amazonaws.com"), ("x-amz-date", DATE)]);
    let r = req("GET", "Param2=value2&Param1=value1", &headers, b"");
    let (canonical, sig) = suite_signature(&r, &["host", "x-amz-date"]);
    assert!(canonical.contains("\nParam1=value1&Param2=value2\n"));
    let expected = "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500";
    assert_eq!(sig, expected);
    sign_and_verify(&r, expected);
}

#[test]
fn post_x_www_form_urlencoded() {
    let headers = h(&[
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", DATE),
    ]);
    let r = req("POST", "", &headers, b"Param1=value1");
    let (canonical, sig) = suite_signature(&r, &["content-type", "host", "x-amz-date"]);
    assert_eq!(
        canonical,
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\n\
         host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         content-type;host;x-amz-date\n\
         9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
    let expected = "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a";
    assert_eq!(sig, expected);
    assert_eq!(
        sign_and_verify(&r, expected),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, \
         Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
    );
}

#[test]
fn signer_needs_host_and_date() {
    let headers = h(&[("host", "h")]);
    assert!(matches!(
        SIGNER.authorization(&req("POST", "", &headers, b"")),
        Err(SigV4Error::Incomplete(_))
    ));
    let headers = h(&[("x-amz-date", DATE)]);
    assert!(matches!(
        SIGNER.authorization(&req("POST", "", &headers, b"")),
        Err(SigV4Error::Incomplete(_))
    ));
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
    let signer = Signer {
        service: "elasticloadbalancing",
        ..SIGNER
    };
    let auth = signer
        .authorization(&req("POST", "", &headers, body))
        .unwrap();
    headers.push(("authorization".into(), auth));
    headers
}

#[test]
fn header_signature_round_trip_and_tamper() {
    let body = b"Action=DescribeLoadBalancers&Version=2012-06-01";
    let headers = signed_request_headers(body, DATE);
    let r = req("POST", "", &headers, body);
    let pending = parse(&r).unwrap();
    assert_eq!(pending.credential.access_key_id, "AKIDEXAMPLE");
    assert_eq!(pending.credential.service, "elasticloadbalancing");
    assert_eq!(pending.location, SignatureLocation::Header);
    pending.verify(&r, SECRET).unwrap();
    assert!(matches!(
        pending.verify(&r, "wrong"),
        Err(SigV4Error::Mismatch(_))
    ));
    let tampered = Request {
        body: b"Action=DeleteLoadBalancer&Version=2012-06-01",
        ..r
    };
    assert!(matches!(
        pending.verify(&tampered, SECRET),
        Err(SigV4Error::Mismatch(_))
    ));
}

#[test]
fn clock_skew_and_expiry() {
    let headers = signed_request_headers(b"", DATE);
    let pending = parse(&req("POST", "", &headers, b"")).unwrap();
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
    let r = req("GET", "Action=X", &headers, b"");
    assert_eq!(parse(&r).unwrap_err(), SigV4Error::Missing);
    let headers = h(&[("host", "h"), ("authorization", "AWS AKID:sig")]);
    let r = Request {
        headers: &headers,
        ..r
    };
    assert!(matches!(parse(&r), Err(SigV4Error::Incomplete(_))));
    let headers = h(&[
        ("host", "h"),
        ("x-amz-date", DATE),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/svc, SignedHeaders=host;x-amz-date, Signature=00",
        ),
    ]);
    let r = Request {
        headers: &headers,
        ..r
    };
    assert!(matches!(parse(&r), Err(SigV4Error::Incomplete(_))));
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
    let r = Request {
        headers: &headers,
        ..r
    };
    assert!(matches!(parse(&r), Err(SigV4Error::Mismatch(_))));
    // SigV2 is named as unsupported.
    let headers = h(&[("host", "h")]);
    let r = req(
        "GET",
        "Action=X&SignatureVersion=2&Signature=abc",
        &headers,
        b"",
    );
    assert!(matches!(parse(&r), Err(SigV4Error::Incomplete(m)) if m.contains("Version 4")));
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
    let unsigned = req("GET", &base, &headers, b"");
    let canonical = canonical_request(&unsigned, &["host".to_string()], None).unwrap();
    let key = signing_key(SECRET, "20150830", "us-east-1", "elasticloadbalancing");
    let sig = hex(&hmac(
        &key,
        string_to_sign(DATE, scope, &canonical).as_bytes(),
    ));
    let query = format!("{base}&X-Amz-Signature={sig}");
    let r = Request {
        raw_query: &query,
        ..unsigned
    };
    let pending = parse(&r).unwrap();
    assert_eq!(pending.location, SignatureLocation::Query { expires: 300 });
    pending.verify(&r, SECRET).unwrap();
    assert!(pending.check_time(pending.timestamp + 299, 900).is_ok());
    assert!(matches!(
        pending.check_time(pending.timestamp + 301, 900),
        Err(SigV4Error::Expired(_))
    ));
    let tampered_query = query.replace("DescribeLoadBalancers", "DeleteLoadBalancer");
    let tampered = Request {
        raw_query: &tampered_query,
        ..r
    };
    assert!(matches!(
        parse(&tampered).unwrap().verify(&tampered, SECRET),
        Err(SigV4Error::Mismatch(_))
    ));
}
