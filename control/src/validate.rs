//! Checks of the API's inputs that are about the Query API itself (names, ids, tags,
//! certificates of the caller's account), each answering with the code AWS uses for it. The
//! rules of the ELB model (listeners, health checks, attributes, policies) are the contract's
//! ([`elb_contract`]); [`check_rules`] runs them on a whole load balancer before a change is
//! accepted and maps what they find to error codes.

use std::collections::BTreeSet;

pub use elb_contract::printable;
use elb_contract::{HealthTarget, Problem, ProblemKind, Problems, free_text_ok, name_ok};

use crate::error::{ApiError, ErrorCode};
use crate::model::{Listener, LoadBalancer, Protocol, Tag};
use crate::query::{Member, parse_int};

/// Longest load balancer name the API accepts.
const MAX_LB_NAME_LEN: usize = 32;

/// The error a broken rule of the ELB model answers with: `DuplicateListener`,
/// `InvalidConfigurationRequest` for conflicts, `ValidationError` otherwise.
pub fn problem_error(p: &Problem) -> ApiError {
    let code = match p.kind {
        ProblemKind::Invalid => ErrorCode::ValidationError,
        ProblemKind::DuplicateListener => ErrorCode::DuplicateListener,
        ProblemKind::Conflict => ErrorCode::InvalidConfigurationRequest,
    };
    ApiError::new(code, p.message.clone())
}

/// Every problem found, in one error whose code is the first problem's.
pub fn problems_error(ps: &Problems) -> ApiError {
    match ps.0.as_slice() {
        [] => ApiError::validation("invalid configuration"),
        [one] => problem_error(one),
        [first, ..] => {
            let mut e = problem_error(first);
            e.message =
                ps.0.iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
            e
        }
    }
}

/// The contract's check of the load balancer as servos would get it: what control runs
/// before it accepts any change to a load balancer.
pub fn check_rules(lb: &LoadBalancer) -> Result<(), ApiError> {
    crate::servo_api::views::rules_view(lb)
        .validate()
        .map_err(|p| problems_error(&p))
}

/// A load balancer name: 1-32 alphanumerics or hyphens, not starting or ending with a hyphen.
/// `verbose` is reserved (DescribeLoadBalancers uses it as the administrators' switch).
pub fn lb_name(name: &str) -> Result<(), ApiError> {
    if !name_ok(name, MAX_LB_NAME_LEN) {
        return Err(ApiError::validation(format!(
            "LoadBalancerName '{}' is invalid: it must have 1 to 32 characters, only \
             alphanumerics and hyphens, and must not begin or end with a hyphen",
            printable(name)
        )));
    }
    if name == "verbose" {
        return Err(ApiError::validation(
            "LoadBalancerName 'verbose' is reserved",
        ));
    }
    Ok(())
}

/// A name used to look an existing load balancer up: anything that could never have been
/// created is simply not found; only absurd lengths are a validation error.
pub fn lb_name_lookup(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::validation(
            "LoadBalancerName must have 1 to 255 characters",
        ));
    }
    Ok(())
}

/// Free-form values (cookie names, bucket prefixes...): bounded, no control characters.
pub fn free_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if !free_text_ok(value, max) {
        return Err(ApiError::validation(format!(
            "{field} must have at most {max} characters and no control characters"
        )));
    }
    Ok(())
}

pub fn policy_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(ApiError::validation(format!(
            "PolicyName '{}' is invalid: 1 to 255 characters from letters, digits, '-', '_' and '.'",
            printable(name)
        )));
    }
    Ok(())
}

/// Zone names as admins define them, e.g. `us-east-1a`.
pub fn zone_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(ApiError::validation(format!(
            "Invalid Availability Zone '{}'",
            printable(name)
        )));
    }
    Ok(())
}

fn prefixed_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

pub fn security_group_id(id: &str) -> Result<(), ApiError> {
    if !prefixed_id(id, "sg-") {
        return Err(ApiError::new(
            ErrorCode::InvalidSecurityGroup,
            format!("Invalid security group id '{}'", printable(id)),
        ));
    }
    Ok(())
}

pub fn is_subnet_id(id: &str) -> bool {
    prefixed_id(id, "subnet-")
}

pub fn is_instance_id(id: &str) -> bool {
    prefixed_id(id, "i-")
}

/// A port of a listener (LoadBalancerPort / InstancePort).
fn port(field: &str, text: Option<&String>) -> Result<u16, ApiError> {
    let text = text.ok_or_else(|| ApiError::missing(field))?;
    let value = parse_int(field, text, 1, 65535)?;
    u16::try_from(value).map_err(|_| ApiError::validation(format!("{field} must be 1-65535")))
}

fn protocol(field: &str, text: &str) -> Result<Protocol, ApiError> {
    Protocol::parse(text).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "{field} '{}' is not supported: use HTTP, HTTPS, TCP or SSL",
                printable(text)
            ),
        )
    })
}

/// Accepts IAM server-certificate and ACM certificate ARNs of the caller's account.
pub fn certificate_arn(arn: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = match parts[..] {
        ["arn", partition, "iam", "", account, resource] => {
            !partition.is_empty()
                && !account.is_empty()
                && resource
                    .strip_prefix("server-certificate/")
                    .is_some_and(|r| !r.is_empty())
        }
        ["arn", partition, "acm", region, account, resource] => {
            !partition.is_empty()
                && !region.is_empty()
                && !account.is_empty()
                && resource
                    .strip_prefix("certificate/")
                    .is_some_and(|r| !r.is_empty())
        }
        _ => false,
    };
    if !ok || arn.len() > 2048 || arn.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::CertificateNotFound,
            format!(
                "The specified SSL certificate '{}' does not exist",
                printable(arn)
            ),
        ));
    }
    Ok(())
}

pub const LISTENER_FIELDS: &[&str] = &[
    "Protocol",
    "LoadBalancerPort",
    "InstanceProtocol",
    "InstancePort",
    "SSLCertificateId",
];

/// Parses and checks the listeners of CreateLoadBalancer / CreateLoadBalancerListeners.
/// Listeners repeated identically within the request collapse into one; the same port with a
/// different definition is a DuplicateListener.
pub fn listeners(members: &[Member], lb: &str) -> Result<Vec<Listener>, ApiError> {
    let mut out: Vec<Listener> = Vec::with_capacity(members.len());
    for (n, m) in members.iter().enumerate() {
        let proto = protocol(
            "Protocol",
            m.get("Protocol")
                .ok_or_else(|| ApiError::missing("Listeners.member.N.Protocol"))?,
        )?;
        let lb_port = port("LoadBalancerPort", m.get("LoadBalancerPort"))?;
        let instance_port = port("InstancePort", m.get("InstancePort"))?;
        let instance_protocol = match m.get("InstanceProtocol").filter(|p| !p.is_empty()) {
            Some(p) => protocol("InstanceProtocol", p)?,
            None => proto,
        };
        let cert = m.get("SSLCertificateId").filter(|c| !c.is_empty()).cloned();
        let listener = Listener::new(elb_contract::Listener {
            protocol: proto,
            load_balancer_port: lb_port,
            instance_protocol,
            instance_port,
            ssl_certificate_id: cert,
        });
        if let Some(p) = listener
            .problems(&format!("Listeners.member.{}", n + 1))
            .first()
        {
            return Err(problem_error(p));
        }
        if let Some(arn) = &listener.ssl_certificate_id {
            certificate_arn(arn)?;
        }
        match out.iter().find(|l| l.load_balancer_port == lb_port) {
            Some(existing) if existing.same_definition(&listener) => {}
            Some(_) => return Err(duplicate_listener(lb, lb_port)),
            None => out.push(listener),
        }
    }
    Ok(out)
}

pub fn duplicate_listener(lb: &str, port: u16) -> ApiError {
    ApiError::new(
        ErrorCode::DuplicateListener,
        format!(
            "A listener already exists for {lb} with LoadBalancerPort {port}, but with a \
             different InstancePort, Protocol, or SSLCertificateId"
        ),
    )
}

/// Parses a health check target (`TCP:80`, `SSL:443`, `HTTP:80/path`, `HTTPS:443/path`).
pub fn health_check_target(target: &str) -> Result<HealthTarget, ApiError> {
    target
        .parse()
        .map_err(|e: elb_contract::TargetError| ApiError::validation(e.to_string()))
}

fn tag_text_ok(text: &str) -> bool {
    // The model's pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$: letters, separators, numbers and a
    // few punctuation marks.
    text.chars().all(|c| {
        c.is_alphabetic()
            || c.is_numeric()
            || (c.is_whitespace() && !c.is_control())
            || "_.:/=+-@".contains(c)
    })
}

pub fn tag_key(key: &str) -> Result<(), ApiError> {
    let len = key.chars().count();
    if !(1..=128).contains(&len) || !tag_text_ok(key) {
        return Err(ApiError::validation(format!(
            "Tag key '{}' is invalid: 1 to 128 letters, digits, spaces and _.:/=+-@",
            printable(key)
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(ApiError::validation(
            "Tag keys starting with 'aws:' are reserved",
        ));
    }
    Ok(())
}

pub fn tag_value(value: &str) -> Result<(), ApiError> {
    if value.chars().count() > 256 || !tag_text_ok(value) {
        return Err(ApiError::validation(
            "Tag value is invalid: at most 256 letters, digits, spaces and _.:/=+-@",
        ));
    }
    Ok(())
}

/// Tags of AddTags / CreateLoadBalancer: keys checked, values checked, no key twice.
pub fn tags(members: &[Member]) -> Result<Vec<Tag>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let key = m
            .get("Key")
            .ok_or_else(|| ApiError::missing("Tags.member.N.Key"))?;
        tag_key(key)?;
        let value = m.get("Value").cloned().unwrap_or_default();
        tag_value(&value)?;
        if !seen.insert(key.clone()) {
            return Err(ApiError::new(
                ErrorCode::DuplicateTagKeys,
                format!(
                    "Tag key '{}' appears more than once in the request",
                    printable(key)
                ),
            ));
        }
        out.push(Tag {
            key: key.clone(),
            value,
        });
    }
    Ok(out)
}

/// Keys and values of AdditionalAttributes: `^[a-zA-Z0-9.]+$`, at most 256 characters.
pub fn additional_attribute_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.is_empty()
        || text.len() > 256
        || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    {
        return Err(ApiError::validation(format!(
            "{field} '{}' must match ^[a-zA-Z0-9.]+$ and have at most 256 characters",
            printable(text)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pairs: &[(&str, &str)]) -> Member {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn load_balancer_names() {
        for ok in ["a", "web-1", "A1-b2", &"x".repeat(32)] {
            assert!(lb_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-web",
            "web-",
            "web_1",
            "web.1",
            "wéb",
            &"x".repeat(33),
            "verbose",
            "a b",
        ] {
            assert_eq!(
                lb_name(bad).unwrap_err().code,
                ErrorCode::ValidationError,
                "{bad}"
            );
        }
    }

    #[test]
    fn listener_rules() {
        let ok = listeners(
            &[member(&[
                ("Protocol", "http"),
                ("LoadBalancerPort", "80"),
                ("InstancePort", "8080"),
            ])],
            "lb",
        )
        .unwrap();
        assert_eq!(ok[0].protocol, Protocol::Http);
        assert_eq!(
            ok[0].instance_protocol,
            Protocol::Http,
            "InstanceProtocol defaults from Protocol"
        );

        let err = |pairs: &[(&str, &str)]| listeners(&[member(pairs)], "lb").unwrap_err().code;
        assert_eq!(
            err(&[
                ("Protocol", "FTP"),
                ("LoadBalancerPort", "21"),
                ("InstancePort", "21")
            ]),
            ErrorCode::UnsupportedProtocol
        );
        assert_eq!(
            err(&[
                ("Protocol", "HTTP"),
                ("LoadBalancerPort", "0"),
                ("InstancePort", "80")
            ]),
            ErrorCode::ValidationError
        );
        assert_eq!(
            err(&[
                ("Protocol", "HTTP"),
                ("LoadBalancerPort", "80"),
                ("InstancePort", "65536")
            ]),
            ErrorCode::ValidationError
        );
        assert_eq!(
            err(&[("Protocol", "HTTP"), ("LoadBalancerPort", "80")]),
            ErrorCode::MissingParameter
        );
        assert_eq!(
            err(&[
                ("Protocol", "HTTP"),
                ("LoadBalancerPort", "80"),
                ("InstancePort", "80"),
                ("InstanceProtocol", "TCP")
            ]),
            ErrorCode::ValidationError
        );
        assert_eq!(
            err(&[
                ("Protocol", "HTTPS"),
                ("LoadBalancerPort", "443"),
                ("InstancePort", "80"),
                ("InstanceProtocol", "HTTP")
            ]),
            ErrorCode::ValidationError
        );
        assert_eq!(
            err(&[
                ("Protocol", "HTTPS"),
                ("LoadBalancerPort", "443"),
                ("InstancePort", "80"),
                ("InstanceProtocol", "HTTP"),
                // Not a certificate ARN (an account's ownership is the store's question).
                ("SSLCertificateId", "arn:aws:iam::999999999999:user/x")
            ]),
            ErrorCode::CertificateNotFound
        );
        let https = listeners(
            &[member(&[
                ("Protocol", "HTTPS"),
                ("LoadBalancerPort", "443"),
                ("InstancePort", "80"),
                ("InstanceProtocol", "HTTP"),
                (
                    "SSLCertificateId",
                    "arn:aws:iam::123456789012:server-certificate/web",
                ),
            ])],
            "lb",
        );
        assert!(https.is_ok());
    }

    #[test]
    fn duplicate_listeners_in_one_request() {
        let a = member(&[
            ("Protocol", "TCP"),
            ("LoadBalancerPort", "80"),
            ("InstancePort", "80"),
        ]);
        let same = member(&[
            ("Protocol", "tcp"),
            ("LoadBalancerPort", "80"),
            ("InstancePort", "80"),
        ]);
        let other = member(&[
            ("Protocol", "TCP"),
            ("LoadBalancerPort", "80"),
            ("InstancePort", "81"),
        ]);
        assert_eq!(listeners(&[a.clone(), same], "lb").unwrap().len(), 1);
        assert_eq!(
            listeners(&[a, other], "lb").unwrap_err().code,
            ErrorCode::DuplicateListener
        );
    }

    #[test]
    fn health_check_targets() {
        let canonical = |t: &str| health_check_target(t).unwrap().to_string();
        assert_eq!(canonical("tcp:80"), "TCP:80");
        assert_eq!(canonical("HTTP:8080/health?x=1"), "HTTP:8080/health?x=1");
        assert_eq!(canonical("https:443/"), "HTTPS:443/");
        for bad in [
            "",
            "TCP",
            "TCP:",
            "UDP:53",
            "TCP:0",
            "TCP:65536",
            "TCP:80/x",
            "HTTP:80",
            "HTTP:/x",
            "HTTP:8a/",
            "HTTP:80/a b",
            &format!("HTTP:80/{}", "a".repeat(1030)),
        ] {
            assert_eq!(
                health_check_target(bad).unwrap_err().code,
                ErrorCode::ValidationError,
                "{bad}"
            );
        }
    }

    #[test]
    fn rule_problems_map_to_elb_codes() {
        let dup = Problem {
            field: "Listeners[1].LoadBalancerPort".into(),
            kind: ProblemKind::DuplicateListener,
            message: "twice".into(),
        };
        assert_eq!(problem_error(&dup).code, ErrorCode::DuplicateListener);
        let conflict = Problem::conflict("f", "clash");
        assert_eq!(
            problem_error(&conflict).code,
            ErrorCode::InvalidConfigurationRequest
        );
        let both = Problems(vec![Problem::invalid("a", "one"), conflict]);
        let e = problems_error(&both);
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert_eq!(e.message, "one; clash");
    }

    #[test]
    fn tag_rules() {
        assert!(
            tags(&[
                member(&[("Key", "env"), ("Value", "prod 1")]),
                member(&[("Key", "é:x")])
            ])
            .is_ok()
        );
        assert_eq!(
            tags(&[member(&[("Key", "a")]), member(&[("Key", "a")])])
                .unwrap_err()
                .code,
            ErrorCode::DuplicateTagKeys
        );
        for bad in ["", "aws:x", "a*b", &"k".repeat(129), "a\u{7}"] {
            assert!(tag_key(bad).is_err(), "{bad:?}");
        }
        assert!(tag_value("").is_ok());
        assert!(tag_value(&"v".repeat(257)).is_err());
        assert!(tag_value("a%b").is_err());
    }

    #[test]
    fn certificates_and_ids() {
        assert!(certificate_arn("arn:aws:acm:us-east-1:123456789012:certificate/abc").is_ok());
        assert!(certificate_arn("arn:aws:acm:us-east-1:123456789012:certificate/").is_err());
        assert!(certificate_arn("not-an-arn").is_err());
        assert!(security_group_id("sg-0abc").is_ok());
        assert_eq!(
            security_group_id("group").unwrap_err().code,
            ErrorCode::InvalidSecurityGroup
        );
        assert!(is_subnet_id("subnet-12ab"));
        assert!(!is_subnet_id("subnet-"));
        assert!(is_instance_id("i-0123"));
        assert!(additional_attribute_text("Key", "elb.http.desyncmitigationmode").is_ok());
        assert!(additional_attribute_text("Key", "a_b").is_err());
    }
}
