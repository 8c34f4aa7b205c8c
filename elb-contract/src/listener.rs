//! Listeners: `Protocol:LoadBalancerPort -> InstanceProtocol:InstancePort`, and the rules
//! that pair their two sides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Problem, ProblemKind, Protocol};

/// One listener.
///
/// `InstanceProtocol` may be left out where it is read (it defaults to `Protocol`, as in the
/// API); it is always written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", from = "ListenerFields")]
pub struct Listener {
    /// Front-end protocol.
    pub protocol: Protocol,
    /// Front-end port (any of 1-65535; the servo serves every one, including ports in its SNAT
    /// range).
    pub load_balancer_port: u16,
    /// Back-end protocol.
    pub instance_protocol: Protocol,
    /// Back-end port.
    pub instance_port: u16,
    /// Certificate of an HTTPS or SSL front end (IAM server certificate or ACM ARN).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "SSLCertificateId"
    )]
    pub ssl_certificate_id: Option<String>,
}

/// The listener as read, before `InstanceProtocol` is defaulted.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ListenerFields {
    protocol: Protocol,
    load_balancer_port: u16,
    #[serde(default)]
    instance_protocol: Option<Protocol>,
    instance_port: u16,
    #[serde(default, rename = "SSLCertificateId")]
    ssl_certificate_id: Option<String>,
}

impl From<ListenerFields> for Listener {
    fn from(f: ListenerFields) -> Self {
        Self {
            protocol: f.protocol,
            load_balancer_port: f.load_balancer_port,
            instance_protocol: f.instance_protocol.unwrap_or(f.protocol),
            instance_port: f.instance_port,
            ssl_certificate_id: f.ssl_certificate_id,
        }
    }
}

impl Listener {
    /// Same port, protocols, instance port and certificate: creating it again is a no-op;
    /// another listener on the same port is a `DuplicateListener`.
    pub fn same_definition(&self, other: &Listener) -> bool {
        self == other
    }

    /// Whether the XDP program forwards this listener (per connection, full NAT), rather than
    /// the servo's userspace engine: no TLS on either side, and no HTTP semantics needed (TCP to
    /// TCP; HTTP to HTTP unless `sticky`, a stickiness policy on it, hands it to the engine).
    pub fn forwarded_in_xdp(&self, sticky: bool) -> bool {
        use Protocol::{Http, Tcp};
        match (self.protocol, self.instance_protocol) {
            (Tcp, Tcp) => true,
            (Http, Http) => !sticky,
            _ => false,
        }
    }

    /// The rules of one listener; fields are named `{at}.<Member>`.
    ///
    /// - ports are 1-65535;
    /// - HTTP/HTTPS front ends pair with HTTP/HTTPS back ends, TCP/SSL with TCP/SSL;
    /// - HTTPS and SSL front ends need a certificate, HTTP and TCP take none.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let port = self.load_balancer_port;
        if port == 0 {
            out.push(Problem::invalid(
                format!("{at}.LoadBalancerPort"),
                "LoadBalancerPort must be between 1 and 65535",
            ));
        }
        if self.instance_port == 0 {
            out.push(Problem::invalid(
                format!("{at}.InstancePort"),
                "InstancePort must be between 1 and 65535",
            ));
        }
        if self.protocol.is_http_family() != self.instance_protocol.is_http_family() {
            out.push(Problem::invalid(
                format!("{at}.InstanceProtocol"),
                format!(
                    "Listener on port {port}: front-end protocol {} cannot forward to back-end \
                     protocol {} (HTTP/HTTPS pair with HTTP/HTTPS, TCP/SSL with TCP/SSL)",
                    self.protocol, self.instance_protocol
                ),
            ));
        }
        match (&self.ssl_certificate_id, self.protocol.is_secure()) {
            (None, true) => out.push(Problem::invalid(
                format!("{at}.SSLCertificateId"),
                format!(
                    "Listener on port {port}: SSLCertificateId is required for HTTPS or SSL protocol"
                ),
            )),
            (Some(_), false) => out.push(Problem::invalid(
                format!("{at}.SSLCertificateId"),
                format!(
                    "Listener on port {port}: SSLCertificateId is only valid with HTTPS or SSL"
                ),
            )),
            _ => {}
        }
        out
    }
}

/// The rules of a load balancer's listeners together, fields named `Listeners[i]`:
/// each listener's own rules, one listener per LoadBalancerPort, and listeners forwarding to
/// one instance port agree on whether the back end is encrypted (one connection pool per
/// back-end port).
pub fn listeners_problems(listeners: &[Listener]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut by_port: BTreeMap<u16, usize> = BTreeMap::new();
    let mut secure_by_instance_port: BTreeMap<u16, (usize, bool)> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("Listeners[{i}]");
        out.extend(l.problems(&at));
        if let Some(first) = by_port.insert(l.load_balancer_port, i) {
            out.push(Problem {
                field: format!("{at}.LoadBalancerPort"),
                kind: ProblemKind::DuplicateListener,
                message: format!(
                    "LoadBalancerPort {} is also used by Listeners[{first}]",
                    l.load_balancer_port
                ),
            });
        }
        let secure = l.instance_protocol.is_secure();
        match secure_by_instance_port.get(&l.instance_port) {
            Some(&(first, other)) if other != secure => out.push(Problem::conflict(
                format!("{at}.InstanceProtocol"),
                format!(
                    "Listeners forwarding to instance port {} must all use a secure (HTTPS/SSL) \
                     or all a plain (HTTP/TCP) instance protocol (Listeners[{first}] does not agree)",
                    l.instance_port
                ),
            )),
            Some(_) => {}
            None => {
                secure_by_instance_port.insert(l.instance_port, (i, secure));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(p: Protocol, port: u16, ip: Protocol, iport: u16) -> Listener {
        Listener {
            protocol: p,
            load_balancer_port: port,
            instance_protocol: ip,
            instance_port: iport,
            ssl_certificate_id: p
                .is_secure()
                .then(|| "arn:aws:iam::1:server-certificate/x".into()),
        }
    }

    fn fields(ps: &[Problem]) -> Vec<&str> {
        ps.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn pairing_ports_and_certificates() {
        use Protocol::*;
        for (front, back, ok) in [
            (Http, Http, true),
            (Http, Https, true),
            (Https, Http, true),
            (Tcp, Ssl, true),
            (Ssl, Tcp, true),
            (Http, Tcp, false),
            (Tcp, Http, false),
            (Ssl, Https, false),
        ] {
            let l = listener(front, 80, back, 8080);
            assert_eq!(l.problems("L").is_empty(), ok, "{front} -> {back}");
        }
        let mut l = listener(Tcp, 0, Tcp, 0);
        assert_eq!(
            fields(&l.problems("L")),
            ["L.LoadBalancerPort", "L.InstancePort"]
        );
        l = listener(Https, 443, Http, 80);
        l.ssl_certificate_id = None;
        assert_eq!(fields(&l.problems("L")), ["L.SSLCertificateId"]);
        l = listener(Tcp, 30000, Tcp, 80);
        l.ssl_certificate_id = Some("arn".into());
        assert_eq!(fields(&l.problems("L")), ["L.SSLCertificateId"]);
        // Every port ELB allows is a valid LoadBalancerPort, SNAT-range ports included.
        for port in [25, 80, 443, 465, 587, 1024, 30000, 65535] {
            assert!(
                listener(Tcp, port, Tcp, 80).problems("L").is_empty(),
                "{port}"
            );
        }
    }

    #[test]
    fn listener_sets() {
        use Protocol::*;
        let set = [
            listener(Http, 80, Http, 8080),
            listener(Tcp, 80, Tcp, 8081),
            listener(Ssl, 443, Ssl, 8080),
        ];
        let ps = listeners_problems(&set);
        assert_eq!(ps.len(), 2, "{ps:?}");
        assert_eq!(ps[0].kind, ProblemKind::DuplicateListener);
        assert_eq!(ps[0].field, "Listeners[1].LoadBalancerPort");
        assert_eq!(ps[1].kind, ProblemKind::Conflict);
        assert!(ps[1].message.contains("instance port 8080"), "{}", ps[1]);
        assert!(listeners_problems(&set[..1]).is_empty());
    }

    #[test]
    fn instance_protocol_defaults_to_protocol() {
        let l: Listener = serde_json::from_str(
            r#"{"Protocol": "tcp", "LoadBalancerPort": 25, "InstancePort": 2525}"#,
        )
        .unwrap();
        assert_eq!(l.instance_protocol, Protocol::Tcp);
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({"Protocol": "TCP", "LoadBalancerPort": 25, "InstanceProtocol": "TCP", "InstancePort": 2525})
        );
        assert!(
            serde_json::from_str::<Listener>(
                r#"{"Protocol": "TCP", "LoadBalancerPort": 1, "InstancePort": 1, "Weight": 2}"#
            )
            .is_err()
        );
        assert!(
            listener(Protocol::Http, 80, Protocol::Http, 80).same_definition(&listener(
                Protocol::Http,
                80,
                Protocol::Http,
                80
            ))
        );
    }
}
