//! The six ELB policy types and the sample policies (`ELBSecurityPolicy-*`, `ELBSample-*`),
//! the checks CreateLoadBalancerPolicy applies to attributes against their type, and where
//! each type may be set.

use serde::{Deserialize, Serialize};

use crate::{Problem, Protocol, free_text_ok, printable, ssl_policy};

/// A named policy of a load balancer (stickiness, SSL negotiation, proxy protocol, ...).
///
/// On the wire (servo protocol, a servo's file) it has the API's shape: `PolicyName`,
/// `PolicyTypeName`, `PolicyAttributes` (`[{AttributeName, AttributeValue}]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "PolicyFields", from = "PolicyFields")]
pub struct Policy {
    /// PolicyName.
    pub name: String,
    /// PolicyTypeName.
    pub type_name: String,
    /// (AttributeName, AttributeValue) in the order given.
    pub attributes: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PolicyFields {
    policy_name: String,
    policy_type_name: String,
    #[serde(default)]
    policy_attributes: Vec<AttributeFields>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AttributeFields {
    attribute_name: String,
    attribute_value: String,
}

impl From<Policy> for PolicyFields {
    fn from(p: Policy) -> Self {
        Self {
            policy_name: p.name,
            policy_type_name: p.type_name,
            policy_attributes: p
                .attributes
                .into_iter()
                .map(|(attribute_name, attribute_value)| AttributeFields {
                    attribute_name,
                    attribute_value,
                })
                .collect(),
        }
    }
}

impl From<PolicyFields> for Policy {
    fn from(f: PolicyFields) -> Self {
        Self {
            name: f.policy_name,
            type_name: f.policy_type_name,
            attributes: f
                .policy_attributes
                .into_iter()
                .map(|a| (a.attribute_name, a.attribute_value))
                .collect(),
        }
    }
}

impl Policy {
    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub const APP_COOKIE: &str = "AppCookieStickinessPolicyType";
pub const LB_COOKIE: &str = "LBCookieStickinessPolicyType";
pub const SSL_NEGOTIATION: &str = "SSLNegotiationPolicyType";
pub const BACKEND_AUTH: &str = "BackendServerAuthenticationPolicyType";
pub const PUBLIC_KEY: &str = "PublicKeyPolicyType";
pub const PROXY_PROTOCOL: &str = "ProxyProtocolPolicyType";

/// One attribute a policy type accepts.
#[derive(Debug, Clone, Copy)]
pub struct AttributeType {
    pub name: &'static str,
    /// `String`, `Long`, `Boolean` or `PolicyName`.
    pub kind: &'static str,
    pub description: &'static str,
    pub default: Option<&'static str>,
    /// `ONE`, `ZERO_OR_ONE`, `ZERO_OR_MORE` or `ONE_OR_MORE`.
    pub cardinality: &'static str,
}

#[derive(Debug, Clone)]
pub struct PolicyType {
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: Vec<AttributeType>,
}

/// Longest policy attribute value.
pub const MAX_ATTRIBUTE_VALUE: usize = 4096;

/// The six types, as DescribeLoadBalancerPolicyTypes lists them.
pub fn all() -> Vec<PolicyType> {
    let mut ssl_attrs = vec![
        AttributeType {
            name: ssl_policy::REFERENCE_ATTRIBUTE,
            kind: "String",
            description: "Name of a predefined security policy (ELBSecurityPolicy-*) whose settings this policy takes.",
            default: None,
            cardinality: "ZERO_OR_ONE",
        },
        AttributeType {
            name: ssl_policy::SERVER_ORDER_ATTRIBUTE,
            kind: "Boolean",
            description: "Use the server's cipher order instead of the client's.",
            default: Some("false"),
            cardinality: "ZERO_OR_ONE",
        },
    ];
    let names = ssl_policy::Protocol::ALL
        .iter()
        .map(|p| (p.attribute(), "Enable this protocol."))
        .chain(
            ssl_policy::CIPHERS
                .iter()
                .map(|c| (c.name, "Enable this cipher.")),
        );
    for (name, description) in names {
        ssl_attrs.push(AttributeType {
            name,
            kind: "Boolean",
            description,
            default: Some("false"),
            cardinality: "ZERO_OR_ONE",
        });
    }
    vec![
        PolicyType {
            name: APP_COOKIE,
            description: "Stickiness policy with session lifetimes controlled by the lifetime of the application-generated cookie. This policy can be associated only with HTTP/HTTPS listeners.",
            attributes: vec![AttributeType {
                name: "CookieName",
                kind: "String",
                description: "Name of the application cookie used for stickiness.",
                default: None,
                cardinality: "ONE",
            }],
        },
        PolicyType {
            name: LB_COOKIE,
            description: "Stickiness policy with session lifetimes controlled by the browser (user-agent) or a specified expiration period. This policy can be associated only with HTTP/HTTPS listeners.",
            attributes: vec![AttributeType {
                name: "CookieExpirationPeriod",
                kind: "Long",
                description: "The time period, in seconds, after which the cookie should be considered stale. Not specifying this parameter indicates that the stickiness session will last for the duration of the browser session.",
                default: Some(""),
                cardinality: "ZERO_OR_ONE",
            }],
        },
        PolicyType {
            name: SSL_NEGOTIATION,
            description: "Listener policy that defines the ciphers and protocols that will be accepted by the load balancer. This policy can be associated only with HTTPS/SSL listeners.",
            attributes: ssl_attrs,
        },
        PolicyType {
            name: BACKEND_AUTH,
            description: "Policy that controls authentication to back-end server(s) and contains one or more policies, such as an instance of a PublicKeyPolicyType. This policy can be associated only with back-end servers that are using HTTPS/SSL.",
            attributes: vec![AttributeType {
                name: "PublicKeyPolicyName",
                kind: "PolicyName",
                description: "A list of PublicKeyPolicyType policy names that the back-end server certificate is checked against.",
                default: None,
                cardinality: "ONE_OR_MORE",
            }],
        },
        PolicyType {
            name: PUBLIC_KEY,
            description: "Policy containing a list of public keys to accept when authenticating the back-end server(s). This policy cannot be applied directly to back-end servers or listeners but must be part of a BackendServerAuthenticationPolicyType.",
            attributes: vec![AttributeType {
                name: "PublicKey",
                kind: "String",
                description: "A public key, base64-encoded without the PEM armour.",
                default: None,
                cardinality: "ONE",
            }],
        },
        PolicyType {
            name: PROXY_PROTOCOL,
            description: "Policy that controls whether to include the IP address and port of the originating request for TCP messages. This policy operates on TCP listeners only.",
            attributes: vec![AttributeType {
                name: "ProxyProtocol",
                kind: "Boolean",
                description: "Enable proxy protocol (version 1) towards the back-end servers.",
                default: None,
                cardinality: "ONE",
            }],
        },
    ]
}

pub fn find(name: &str) -> Option<PolicyType> {
    all().into_iter().find(|t| t.name == name)
}

/// Sample policies: what DescribeLoadBalancerPolicies returns without a load balancer name:
/// every predefined `ELBSecurityPolicy-*` with its attributes (from [`ssl_policy::PREDEFINED`]),
/// then the `ELBSample-*` policies.
pub fn samples() -> Vec<Policy> {
    let mut out: Vec<Policy> = ssl_policy::PREDEFINED
        .iter()
        .map(|p| Policy {
            name: p.name.into(),
            type_name: SSL_NEGOTIATION.into(),
            attributes: p.attributes(),
        })
        .collect();
    out.extend([
        Policy {
            name: "ELBSample-ELBDefaultCipherPolicy".into(),
            type_name: SSL_NEGOTIATION.into(),
            attributes: vec![(
                "Reference-Security-Policy".into(),
                ssl_policy::DEFAULT_POLICY.into(),
            )],
        },
        Policy {
            name: "ELBSample-AppCookieStickinessPolicy".into(),
            type_name: APP_COOKIE.into(),
            attributes: vec![("CookieName".into(), "ELBSampleCookie".into())],
        },
        Policy {
            name: "ELBSample-LBCookieStickinessPolicy".into(),
            type_name: LB_COOKIE.into(),
            attributes: vec![("CookieExpirationPeriod".into(), "300".into())],
        },
        Policy {
            name: "ELBSample-ProxyProtocolPolicy".into(),
            type_name: PROXY_PROTOCOL.into(),
            attributes: vec![("ProxyProtocol".into(), "true".into())],
        },
    ]);
    out
}

fn invalid(field: &str, message: String) -> Problem {
    Problem::conflict(field, message)
}

/// Checks `attributes` against `policy_type` (known names, value kinds, cardinalities) and
/// returns the attributes to store. A `Reference-Security-Policy` expands into the referenced
/// predefined policy's settings, as AWS does.
pub fn check_attributes(
    policy_type: &PolicyType,
    attributes: &[(String, String)],
    existing: &[Policy],
) -> Result<Vec<(String, String)>, Problem> {
    for (name, value) in attributes {
        let Some(spec) = policy_type.attributes.iter().find(|a| a.name == name) else {
            return Err(invalid(
                "PolicyAttributes",
                format!(
                    "Attribute '{}' is not valid for policy type {}",
                    printable(name),
                    policy_type.name
                ),
            ));
        };
        let ok = match spec.kind {
            "Boolean" => value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"),
            "Long" => value.parse::<i64>().is_ok_and(|v| v >= 0),
            "PolicyName" => existing
                .iter()
                .any(|p| p.name == *value && p.type_name == PUBLIC_KEY),
            _ => true,
        };
        if !ok {
            return Err(invalid(
                "PolicyAttributes",
                match spec.kind {
                    "PolicyName" => {
                        format!("{name} must name a {PUBLIC_KEY} policy of this load balancer")
                    }
                    kind => format!("Attribute {name} must be a {kind}"),
                },
            ));
        }
        if !free_text_ok(value, MAX_ATTRIBUTE_VALUE) {
            return Err(Problem::invalid(
                "PolicyAttributes",
                format!(
                    "{name} must have at most {MAX_ATTRIBUTE_VALUE} characters and no control characters"
                ),
            ));
        }
    }
    for spec in &policy_type.attributes {
        let count = attributes.iter().filter(|(n, _)| n == spec.name).count();
        let ok = match spec.cardinality {
            "ONE" => count == 1,
            "ZERO_OR_ONE" => count <= 1,
            "ONE_OR_MORE" => count >= 1,
            _ => true,
        };
        if !ok {
            return Err(invalid(
                "PolicyAttributes",
                format!(
                    "Policy type {} requires cardinality {} for attribute {}",
                    policy_type.name, spec.cardinality, spec.name
                ),
            ));
        }
    }
    if policy_type.name == SSL_NEGOTIATION {
        // What the servos cannot offer is refused here, with the reason and what can be.
        ssl_policy::resolve_attributes(attributes, ssl_policy::Mode::Strict)
            .map_err(|e| invalid("PolicyAttributes", e.to_string()))?;
        if let Some(reference) = reference_of(attributes) {
            // Stored expanded, as AWS shows it: the reference, then the predefined settings.
            let predefined = ssl_policy::predefined(reference).expect("resolved above");
            let mut expanded = vec![(
                ssl_policy::REFERENCE_ATTRIBUTE.to_string(),
                reference.to_string(),
            )];
            expanded.extend(predefined.attributes());
            return Ok(expanded);
        }
    }
    Ok(attributes.to_vec())
}

fn reference_of(attributes: &[(String, String)]) -> Option<&str> {
    attributes
        .iter()
        .find(|(n, _)| n == ssl_policy::REFERENCE_ATTRIBUTE)
        .map(|(_, v)| v.as_str())
}

/// How an `SSLNegotiationPolicyType` policy's attributes resolve: the predefined policy its
/// `Reference-Security-Policy` names (the expanded settings stored beside it are that
/// policy's), or its own settings (strictly: see [`ssl_policy::resolve`]).
pub fn ssl_spec(attributes: &[(String, String)]) -> ssl_policy::PolicySpec<'_> {
    match reference_of(attributes) {
        Some(reference) => ssl_policy::PolicySpec::Predefined(reference),
        None => ssl_policy::PolicySpec::Custom(attributes),
    }
}

/// Which policy types can be put on a listener of the given front-end protocol.
pub fn check_listener_policy(policy: &Policy, protocol: Protocol) -> Result<(), Problem> {
    let ok = match policy.type_name.as_str() {
        APP_COOKIE | LB_COOKIE => protocol.is_http_family(),
        SSL_NEGOTIATION => protocol.is_secure(),
        _ => false,
    };
    if !ok {
        return Err(invalid(
            "PolicyNames",
            format!(
                "{} policies cannot be set on a {protocol} listener",
                policy.type_name
            ),
        ));
    }
    Ok(())
}

/// Which policy types can be put on a back-end (instance) port.
pub fn check_backend_policy(
    policy: &Policy,
    instance_protocols: &[Protocol],
) -> Result<(), Problem> {
    let ok = match policy.type_name.as_str() {
        PROXY_PROTOCOL => true,
        BACKEND_AUTH => instance_protocols.iter().any(|p| p.is_secure()),
        _ => false,
    };
    if !ok {
        return Err(invalid(
            "PolicyNames",
            format!(
                "{} policies cannot be set on back-end servers{}",
                policy.type_name,
                if policy.type_name == BACKEND_AUTH {
                    " that do not use HTTPS or SSL"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// Stickiness and SSL negotiation policies are one-per-listener.
pub fn policy_family(type_name: &str) -> Option<&'static str> {
    match type_name {
        APP_COOKIE | LB_COOKIE => Some("stickiness"),
        SSL_NEGOTIATION => Some("SSL negotiation"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_types() {
        let names: Vec<_> = all().iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                APP_COOKIE,
                LB_COOKIE,
                SSL_NEGOTIATION,
                BACKEND_AUTH,
                PUBLIC_KEY,
                PROXY_PROTOCOL
            ]
        );
    }

    #[test]
    fn attribute_checks() {
        let proxy = find(PROXY_PROTOCOL).unwrap();
        let attrs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(check_attributes(&proxy, &attrs(&[("ProxyProtocol", "true")]), &[]).is_ok());
        assert!(check_attributes(&proxy, &attrs(&[("ProxyProtocol", "yes")]), &[]).is_err());
        assert!(
            check_attributes(&proxy, &attrs(&[]), &[]).is_err(),
            "cardinality ONE"
        );
        assert!(check_attributes(&proxy, &attrs(&[("Other", "1")]), &[]).is_err());
        let ssl = find(SSL_NEGOTIATION).unwrap();
        let expanded = check_attributes(
            &ssl,
            &attrs(&[("Reference-Security-Policy", "ELBSecurityPolicy-2016-08")]),
            &[],
        )
        .unwrap();
        assert!(expanded.contains(&("Protocol-TLSv1.2".into(), "true".into())));
        assert!(expanded.contains(&("Protocol-SSLv3".into(), "false".into())));
        let backend = find(BACKEND_AUTH).unwrap();
        assert!(check_attributes(&backend, &attrs(&[("PublicKeyPolicyName", "k")]), &[]).is_err());
        let key = Policy {
            name: "k".into(),
            type_name: PUBLIC_KEY.into(),
            attributes: vec![],
        };
        assert!(
            check_attributes(&backend, &attrs(&[("PublicKeyPolicyName", "k")]), &[key]).is_ok()
        );
    }

    #[test]
    fn placement_rules() {
        let sticky = Policy {
            name: "s".into(),
            type_name: LB_COOKIE.into(),
            attributes: vec![],
        };
        assert!(check_listener_policy(&sticky, Protocol::Http).is_ok());
        assert!(check_listener_policy(&sticky, Protocol::Tcp).is_err());
        let proxy = Policy {
            name: "p".into(),
            type_name: PROXY_PROTOCOL.into(),
            attributes: vec![],
        };
        assert!(check_listener_policy(&proxy, Protocol::Tcp).is_err());
        assert!(check_backend_policy(&proxy, &[Protocol::Tcp]).is_ok());
        let auth = Policy {
            name: "a".into(),
            type_name: BACKEND_AUTH.into(),
            attributes: vec![],
        };
        assert!(check_backend_policy(&auth, &[Protocol::Http]).is_err());
        assert!(check_backend_policy(&auth, &[Protocol::Https]).is_ok());
    }
}
