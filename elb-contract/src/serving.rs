//! What a servo needs beyond listeners and instances to serve a load balancer: the policies in
//! effect on its listeners and back-end ports, and the certificates of its HTTPS/SSL
//! listeners; and the product rule that decides which listeners XDP forwards at L4 and which
//! the servo's userspace engine serves ([`LoadBalancer::served_by_engine`]).
//!
//! - XDP (per-connection round robin at L4): TCP listeners to TCP back ends, and HTTP
//!   listeners to HTTP back ends without a stickiness policy. A `ProxyProtocolPolicyType` on
//!   the instance port makes XDP send the backend a PROXY v1 header.
//! - The engine (what L4 cannot do): HTTPS and SSL listeners (TLS termination), listeners
//!   whose instance protocol is HTTPS or SSL (TLS to the backend), and HTTP listeners with a
//!   stickiness policy (cookies need HTTP).
//!
//! [`LoadBalancer::policy_problems`] is part of [`LoadBalancer::validate`]: control refuses at
//! the API what breaks these rules, and servos refuse a load balancer that does.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::{
    self, APP_COOKIE, BACKEND_AUTH, LB_COOKIE, PROXY_PROTOCOL, PUBLIC_KEY, Policy, SSL_NEGOTIATION,
};
use crate::{Listener, LoadBalancer, Problem, Protocol, ssl_policy};

/// The policies of one listener (SetLoadBalancerPoliciesOfListener).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ListenerPolicies {
    /// The listener's LoadBalancerPort.
    pub load_balancer_port: u16,
    /// Names of policies of [`LoadBalancer::policies`].
    pub policy_names: Vec<String>,
}

/// The policies of one back-end port (SetLoadBalancerPoliciesForBackendServer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BackendServerPolicies {
    /// The InstancePort.
    pub instance_port: u16,
    /// Names of policies of [`LoadBalancer::policies`].
    pub policy_names: Vec<String>,
}

/// A server certificate with its private key, as a servo that serves a listener naming it
/// needs it. Control sends it only over the servo protocol's TLS listener; its `Debug` never
/// shows the key.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServerCertificate {
    /// The ARN listeners name as `SSLCertificateId`.
    pub certificate_id: String,
    /// PEM: the certificate, then its chain.
    pub certificate_chain: String,
    /// PEM: the private key.
    pub private_key: String,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("certificate_id", &self.certificate_id)
            .field("certificate_chain", &self.certificate_chain.len())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Session stickiness of a listener, from its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stickiness {
    /// `LBCookieStickinessPolicyType`: `CookieExpirationPeriod` seconds (`None`: a session
    /// cookie).
    LbCookie {
        /// Cookie lifetime in seconds.
        expiration_secs: Option<u64>,
    },
    /// `AppCookieStickinessPolicyType`: follow the application's cookie.
    AppCookie {
        /// The application's cookie.
        cookie_name: String,
    },
}

/// Decodes standard base64 (with or without padding; ASCII whitespace ignored), the form of
/// `PublicKeyPolicyType`'s `PublicKey` (a DER SubjectPublicKeyInfo without PEM armour).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut padding = 0usize;
    for b in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => return None,
        };
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last group (at most 4 bits).
    (padding <= 2 && bits < 6 && acc == 0 && !out.is_empty()).then_some(out)
}

fn attribute_true(p: &Policy, name: &str) -> bool {
    p.attribute(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl LoadBalancer {
    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    fn named<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = &'a Policy> + 'a {
        names.iter().filter_map(|n| self.policy(n))
    }

    /// The policies of the listener on `port`.
    pub fn listener_policies(&self, port: u16) -> Vec<&Policy> {
        self.listener_policies
            .iter()
            .filter(|l| l.load_balancer_port == port)
            .flat_map(|l| self.named(&l.policy_names))
            .collect()
    }

    /// The policies of back-end port `instance_port`.
    pub fn backend_policies(&self, instance_port: u16) -> Vec<&Policy> {
        self.backend_server_policies
            .iter()
            .filter(|b| b.instance_port == instance_port)
            .flat_map(|b| self.named(&b.policy_names))
            .collect()
    }

    /// The listener's stickiness (its LB or application cookie policy).
    pub fn stickiness(&self, port: u16) -> Option<Stickiness> {
        self.listener_policies(port)
            .into_iter()
            .find_map(|p| match p.type_name.as_str() {
                LB_COOKIE => Some(Stickiness::LbCookie {
                    expiration_secs: p
                        .attribute("CookieExpirationPeriod")
                        .and_then(|v| v.parse().ok()),
                }),
                APP_COOKIE => Some(Stickiness::AppCookie {
                    cookie_name: p.attribute("CookieName").unwrap_or_default().to_string(),
                }),
                _ => None,
            })
    }

    /// The listener's SSL negotiation policy as [`ssl_policy::resolve`] takes it
    /// ([`ssl_policy::DEFAULT_POLICY`] when it has none, as ELB does).
    pub fn ssl_negotiation(&self, port: u16) -> ssl_policy::PolicySpec<'_> {
        self.listener_policies(port)
            .into_iter()
            .find(|p| p.type_name == SSL_NEGOTIATION)
            .map_or(
                ssl_policy::PolicySpec::Predefined(ssl_policy::DEFAULT_POLICY),
                |p| policy::ssl_spec(&p.attributes),
            )
    }

    /// Whether back-end port `instance_port` gets a PROXY protocol v1 header
    /// (`ProxyProtocolPolicyType` with `ProxyProtocol=true`).
    pub fn proxy_protocol(&self, instance_port: u16) -> bool {
        self.backend_policies(instance_port)
            .into_iter()
            .any(|p| p.type_name == PROXY_PROTOCOL && attribute_true(p, "ProxyProtocol"))
    }

    /// The public keys (DER SubjectPublicKeyInfo) a backend on `instance_port` must present
    /// (`BackendServerAuthenticationPolicyType` -> `PublicKeyPolicyType`); empty: not verified.
    pub fn backend_public_keys(&self, instance_port: u16) -> Vec<Vec<u8>> {
        self.backend_policies(instance_port)
            .into_iter()
            .filter(|p| p.type_name == BACKEND_AUTH)
            .flat_map(|p| {
                p.attributes
                    .iter()
                    .filter(|(n, _)| n == "PublicKeyPolicyName")
                    .filter_map(|(_, v)| self.policy(v))
            })
            .filter_map(|k| k.attribute("PublicKey").and_then(base64_decode))
            .collect()
    }

    /// The certificate `arn` with its key, if the document carries it.
    pub fn certificate(&self, arn: &str) -> Option<&ServerCertificate> {
        self.certificates.iter().find(|c| c.certificate_id == arn)
    }

    /// Whether the servo's userspace engine serves `listener` (otherwise XDP forwards it at
    /// L4): HTTPS and SSL listeners, HTTPS/SSL back ends, HTTP listeners with stickiness.
    pub fn served_by_engine(&self, listener: &Listener) -> bool {
        !listener.forwarded_in_xdp(self.stickiness(listener.load_balancer_port).is_some())
    }

    /// The rules of the policies in effect, each problem with its field: every name given to a
    /// listener or back-end port exists, once; each type goes where ELB allows it (one
    /// stickiness and one SSL negotiation policy per listener); their attributes are usable
    /// (an SSL negotiation policy resolves to something the servos offer, keys decode, a
    /// back-end authentication policy names public-key policies); and a PROXY protocol header
    /// is asked only where it can be sent (not to back ends of HTTP listeners the engine
    /// serves, which carry the client's address in X-Forwarded-For).
    pub fn policy_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut names = BTreeSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("Policies[{i}]");
            if !names.insert(p.name.as_str()) {
                out.push(Problem::invalid(
                    format!("{at}.PolicyName"),
                    format!("policy {} is given twice", p.name),
                ));
            }
            out.extend(self.attribute_problems(p, &at));
        }
        let missing = |field: String, names: &[String], out: &mut Vec<Problem>| {
            for n in names.iter().filter(|n| self.policy(n).is_none()) {
                out.push(Problem::conflict(
                    field.clone(),
                    format!("policy {n} is not among the load balancer's Policies"),
                ));
            }
        };
        for (i, lp) in self.listener_policies.iter().enumerate() {
            let at = format!("ListenerPolicies[{i}]");
            let port = lp.load_balancer_port;
            missing(format!("{at}.PolicyNames"), &lp.policy_names, &mut out);
            let Some(listener) = self.listeners.iter().find(|l| l.load_balancer_port == port)
            else {
                out.push(Problem::conflict(
                    format!("{at}.LoadBalancerPort"),
                    format!("no listener on port {port}"),
                ));
                continue;
            };
            let mut families = Vec::new();
            for p in self.named(&lp.policy_names) {
                if let Err(mut problem) = policy::check_listener_policy(p, listener.protocol) {
                    problem.field = format!("{at}.PolicyNames");
                    out.push(problem);
                }
                if let Some(family) = policy::policy_family(&p.type_name) {
                    if families.contains(&family) {
                        out.push(Problem::conflict(
                            format!("{at}.PolicyNames"),
                            format!(
                                "the listener on port {port} has more than one {family} policy"
                            ),
                        ));
                    }
                    families.push(family);
                }
            }
        }
        for (i, bp) in self.backend_server_policies.iter().enumerate() {
            let at = format!("BackendServerPolicies[{i}]");
            let port = bp.instance_port;
            missing(format!("{at}.PolicyNames"), &bp.policy_names, &mut out);
            let protocols: Vec<Protocol> = self
                .listeners
                .iter()
                .filter(|l| l.instance_port == port)
                .map(|l| l.instance_protocol)
                .collect();
            if protocols.is_empty() {
                out.push(Problem::conflict(
                    format!("{at}.InstancePort"),
                    format!("no listener forwards to instance port {port}"),
                ));
                continue;
            }
            for p in self.named(&bp.policy_names) {
                if let Err(mut problem) = policy::check_backend_policy(p, &protocols) {
                    problem.field = format!("{at}.PolicyNames");
                    out.push(problem);
                }
            }
            if self.proxy_protocol(port) {
                let http_engine = self.listeners.iter().find(|l| {
                    l.instance_port == port
                        && l.protocol.is_http_family()
                        && self.served_by_engine(l)
                });
                if let Some(l) = http_engine {
                    out.push(Problem::conflict(
                        format!("{at}.PolicyNames"),
                        format!(
                            "ProxyProtocol cannot be enabled on instance port {port}: the {} \
                             listener on port {} forwards to it with HTTP semantics (TLS \
                             termination or stickiness), where requests from many clients share \
                             back-end connections and carry the client's address in \
                             X-Forwarded-For",
                            l.protocol, l.load_balancer_port
                        ),
                    ));
                }
            }
        }
        out
    }

    /// Whether policy `p`'s attributes can be acted on.
    fn attribute_problems(&self, p: &Policy, at: &str) -> Vec<Problem> {
        let field = format!("{at}.PolicyAttributes");
        let mut out = Vec::new();
        match p.type_name.as_str() {
            LB_COOKIE => {
                if let Some(v) = p.attribute("CookieExpirationPeriod")
                    && v.parse::<u64>().is_err()
                {
                    out.push(Problem::invalid(
                        field,
                        format!("CookieExpirationPeriod must be a number of seconds, not {v:?}"),
                    ));
                }
            }
            APP_COOKIE => {
                let ok = p.attribute("CookieName").is_some_and(|c| {
                    !c.is_empty()
                        && c.bytes()
                            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
                });
                if !ok {
                    out.push(Problem::invalid(
                        field,
                        "CookieName must be a cookie name (visible ASCII without separators)",
                    ));
                }
            }
            SSL_NEGOTIATION => {
                if let Err(e) = ssl_policy::resolve(policy::ssl_spec(&p.attributes)) {
                    out.push(Problem::conflict(
                        field,
                        format!("SSL negotiation policy {}: {e}", p.name),
                    ));
                }
            }
            PROXY_PROTOCOL => {
                let ok = p.attribute("ProxyProtocol").is_some_and(|v| {
                    v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
                });
                if !ok {
                    out.push(Problem::invalid(
                        field,
                        "ProxyProtocol must be true or false",
                    ));
                }
            }
            PUBLIC_KEY => {
                if p.attribute("PublicKey").and_then(base64_decode).is_none() {
                    out.push(Problem::invalid(
                        field,
                        format!(
                            "PublicKey of policy {} must be a base64-encoded DER public key",
                            p.name
                        ),
                    ));
                }
            }
            BACKEND_AUTH => {
                let keys: Vec<&str> = p
                    .attributes
                    .iter()
                    .filter(|(n, _)| n == "PublicKeyPolicyName")
                    .map(|(_, v)| v.as_str())
                    .collect();
                if keys.is_empty() {
                    out.push(Problem::invalid(
                        field.clone(),
                        "a back-end authentication policy names at least one PublicKeyPolicyName",
                    ));
                }
                for k in keys {
                    if self.policy(k).is_none_or(|kp| kp.type_name != PUBLIC_KEY) {
                        out.push(Problem::conflict(
                            field.clone(),
                            format!("PublicKeyPolicyName {k} must name a {PUBLIC_KEY} policy"),
                        ));
                    }
                }
            }
            other => out.push(Problem::invalid(
                format!("{at}.PolicyTypeName"),
                format!("unknown policy type {other}"),
            )),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert_eq!(base64_decode("TQ").unwrap(), b"M");
        assert_eq!(base64_decode("TW\nFu").unwrap(), b"Man");
        for bad in ["", "T", "TR==", "TQ=x", "T*Fu", "TQ==="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }
}
