//! Security groups as servos enforce them: the ingress rules of a load balancer's groups, and
//! the one rule that turns them into per-listener allow lists ([`allowed_sources`]).
//!
//! A load balancer either has no security groups (`None`: every client may connect, the
//! built-in inventory's load balancers without groups) or a list of groups (`Some`, possibly
//! empty: a client may open a connection to a listener only when some ingress rule of some
//! group admits TCP to the listener's port from the client's address). Only IPv4 CIDR rules
//! travel: servos serve IPv4, and rules that name other groups or prefix lists are resolved
//! (or left out) by control before it sends them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Problem, printable};

/// Most security groups on one load balancer (AWS's limit).
pub const MAX_SECURITY_GROUPS: usize = 5;
/// Most ingress rules (one CIDR each) over all groups of one load balancer.
pub const MAX_INGRESS_RULES: usize = 1000;

/// An IPv4 CIDR block (`198.18.1.0/24`), held with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

/// Why a CIDR block does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IPv4 CIDR block (a.b.c.d/n with n from 0 to 32)")]
pub struct BadCidr(pub String);

impl Ipv4Cidr {
    /// The block of `addr` with `prefix_len` bits (at most 32); host bits are cleared.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then(|| Self {
            network: Ipv4Addr::from(u32::from(addr) & Self::mask(prefix_len)),
            prefix_len,
        })
    }

    fn mask(prefix_len: u8) -> u32 {
        match prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n)),
        }
    }

    /// The first address of the block.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// How many leading bits are fixed.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `addr` lies in the block.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask(self.prefix_len) == u32::from(self.network)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(printable(text));
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = len.parse().map_err(|_| bad())?;
        Self::new(addr, len).ok_or_else(bad)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One ingress rule: a protocol, a port range and one source block, as EC2 states rules
/// (`IpProtocol`, `FromPort`, `ToPort`, `CidrIp`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp`, a protocol number, or `-1` (every protocol, every port).
    pub ip_protocol: String,
    /// First port (TCP and UDP; ICMP type); absent with `-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i32>,
    /// Last port (TCP and UDP; ICMP code); absent with `-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i32>,
    /// The source addresses it admits.
    pub cidr_ip: Ipv4Cidr,
}

/// The protocol an [`IngressRule`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleProtocol {
    /// `-1`: everything.
    All,
    /// TCP (`tcp` or `6`).
    Tcp,
    /// UDP (`udp` or `17`).
    Udp,
    /// ICMP (`icmp` or `1`).
    Icmp,
    /// Any other protocol number.
    Other,
}

fn rule_protocol(text: &str) -> Option<RuleProtocol> {
    match text.to_ascii_lowercase().as_str() {
        "-1" | "all" => Some(RuleProtocol::All),
        "tcp" | "6" => Some(RuleProtocol::Tcp),
        "udp" | "17" => Some(RuleProtocol::Udp),
        "icmp" | "1" => Some(RuleProtocol::Icmp),
        n => n.parse::<u8>().ok().map(|_| RuleProtocol::Other),
    }
}

impl IngressRule {
    /// A TCP rule for `from..=to` from `cidr`.
    pub fn tcp(from: u16, to: u16, cidr: Ipv4Cidr) -> Self {
        Self {
            ip_protocol: "tcp".into(),
            from_port: Some(i32::from(from)),
            to_port: Some(i32::from(to)),
            cidr_ip: cidr,
        }
    }

    /// Whether the rule admits TCP connections to `port`.
    pub fn admits_tcp(&self, port: u16) -> bool {
        match rule_protocol(&self.ip_protocol) {
            Some(RuleProtocol::All) => true,
            Some(RuleProtocol::Tcp) => match (self.from_port, self.to_port) {
                (Some(from), Some(to)) => (from..=to).contains(&i32::from(port)),
                _ => false,
            },
            _ => false,
        }
    }

    /// The rule's problems; fields are named `{at}.<Member>`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let Some(protocol) = rule_protocol(&self.ip_protocol) else {
            out.push(Problem::invalid(
                format!("{at}.IpProtocol"),
                format!(
                    "'{}' is not a protocol: tcp, udp, icmp, a number from 0 to 255, or -1 (all)",
                    printable(&self.ip_protocol)
                ),
            ));
            return out;
        };
        let range = match protocol {
            RuleProtocol::Tcp | RuleProtocol::Udp => Some(0..=65535),
            RuleProtocol::Icmp => Some(-1..=255),
            RuleProtocol::All | RuleProtocol::Other => None,
        };
        match (range, self.from_port, self.to_port) {
            (None, _, _) => {}
            (Some(range), Some(from), Some(to)) => {
                for (name, value) in [("FromPort", from), ("ToPort", to)] {
                    if !range.contains(&value) {
                        out.push(Problem::invalid(
                            format!("{at}.{name}"),
                            format!(
                                "{name} {value} is outside {}-{} for protocol {}",
                                range.start(),
                                range.end(),
                                self.ip_protocol
                            ),
                        ));
                    }
                }
                if protocol != RuleProtocol::Icmp && from > to {
                    out.push(Problem::invalid(
                        format!("{at}.FromPort"),
                        format!("FromPort {from} is above ToPort {to}"),
                    ));
                }
            }
            (Some(_), _, _) => out.push(Problem::invalid(
                format!("{at}.FromPort"),
                format!("protocol {} needs FromPort and ToPort", self.ip_protocol),
            )),
        }
        out
    }
}

impl fmt::Display for IngressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from_port, self.to_port) {
            (Some(from), Some(to)) if from == to => {
                write!(f, "{} {from} from {}", self.ip_protocol, self.cidr_ip)
            }
            (Some(from), Some(to)) => {
                write!(f, "{} {from}-{to} from {}", self.ip_protocol, self.cidr_ip)
            }
            _ => write!(f, "{} from {}", self.ip_protocol, self.cidr_ip),
        }
    }
}

/// One security group with its ingress rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecurityGroup {
    /// `sg-...`.
    pub group_id: String,
    /// Ingress rules.
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
}

/// EC2's group id grammar: `sg-` and 1 to 32 letters or digits.
pub fn group_id_ok(id: &str) -> bool {
    id.strip_prefix("sg-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The problems of a load balancer's groups; fields are `SecurityGroups[n]...`.
pub fn groups_problems(groups: &[SecurityGroup]) -> Vec<Problem> {
    let mut out = Vec::new();
    if groups.len() > MAX_SECURITY_GROUPS {
        out.push(Problem::invalid(
            "SecurityGroups",
            format!(
                "{} security groups; at most {MAX_SECURITY_GROUPS} apply to a load balancer",
                groups.len()
            ),
        ));
    }
    let mut ids = BTreeSet::new();
    let mut rules = 0;
    for (n, g) in groups.iter().enumerate() {
        let at = format!("SecurityGroups[{n}]");
        if !group_id_ok(&g.group_id) {
            out.push(Problem::invalid(
                format!("{at}.GroupId"),
                format!(
                    "'{}' is not a security group id (sg- and letters or digits)",
                    printable(&g.group_id)
                ),
            ));
        } else if !ids.insert(g.group_id.as_str()) {
            out.push(Problem::invalid(
                format!("{at}.GroupId"),
                format!("security group {} is listed twice", g.group_id),
            ));
        }
        for (k, r) in g.ingress.iter().enumerate() {
            out.extend(r.problems(&format!("{at}.Ingress[{k}]")));
        }
        rules += g.ingress.len();
    }
    if rules > MAX_INGRESS_RULES {
        out.push(Problem::invalid(
            "SecurityGroups",
            format!("{rules} ingress rules; at most {MAX_INGRESS_RULES} apply to a load balancer"),
        ));
    }
    out
}

/// The sources that may open connections to a listener on `port`: `None` without security
/// groups (everyone), otherwise the blocks of every rule that admits TCP to `port`, sorted and
/// without duplicates (empty: no one).
pub fn allowed_sources(groups: Option<&[SecurityGroup]>, port: u16) -> Option<Vec<Ipv4Cidr>> {
    let groups = groups?;
    let set: BTreeSet<Ipv4Cidr> = groups
        .iter()
        .flat_map(|g| &g.ingress)
        .filter(|r| r.admits_tcp(port))
        .map(|r| r.cidr_ip)
        .collect();
    Some(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_blocks() {
        let c = cidr("198.18.1.77/24");
        assert_eq!(c.to_string(), "198.18.1.0/24");
        assert!(c.contains("198.18.1.200".parse().unwrap()));
        assert!(!c.contains("198.18.2.1".parse().unwrap()));
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(cidr("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert_eq!(cidr("10.1.2.3/32").network(), Ipv4Addr::new(10, 1, 2, 3));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "::/0",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "10.0.0.0/008",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"198.18.1.0/24\"");
        assert_eq!(serde_json::from_str::<Ipv4Cidr>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Ipv4Cidr>("\"x\"").is_err());
    }

    #[test]
    fn rules_admit_tcp_ports() {
        let web = IngressRule::tcp(80, 443, cidr("198.18.1.0/24"));
        assert!(web.admits_tcp(80) && web.admits_tcp(443) && !web.admits_tcp(444));
        let all = IngressRule {
            ip_protocol: "-1".into(),
            from_port: None,
            to_port: None,
            cidr_ip: cidr("10.0.0.0/8"),
        };
        assert!(all.admits_tcp(1) && all.admits_tcp(65535));
        let udp = IngressRule {
            ip_protocol: "udp".into(),
            ..IngressRule::tcp(0, 65535, cidr("10.0.0.0/8"))
        };
        assert!(!udp.admits_tcp(80));
        let numbered = IngressRule {
            ip_protocol: "6".into(),
            ..web.clone()
        };
        assert!(numbered.admits_tcp(80));
        assert_eq!(web.to_string(), "tcp 80-443 from 198.18.1.0/24");
    }

    #[test]
    fn allow_lists_per_port() {
        let groups = vec![
            SecurityGroup {
                group_id: "sg-1".into(),
                ingress: vec![
                    IngressRule::tcp(80, 80, cidr("198.18.1.0/24")),
                    IngressRule::tcp(443, 443, cidr("198.18.2.0/24")),
                ],
            },
            SecurityGroup {
                group_id: "sg-2".into(),
                ingress: vec![IngressRule::tcp(0, 65535, cidr("198.18.1.0/24"))],
            },
        ];
        assert_eq!(allowed_sources(None, 80), None, "no groups: open");
        assert_eq!(
            allowed_sources(Some(&groups), 80),
            Some(vec![cidr("198.18.1.0/24")])
        );
        assert_eq!(
            allowed_sources(Some(&groups), 443),
            Some(vec![cidr("198.18.1.0/24"), cidr("198.18.2.0/24")])
        );
        assert_eq!(
            allowed_sources(Some(&[]), 80),
            Some(vec![]),
            "groups without rules: closed"
        );
    }

    #[test]
    fn problems_are_named() {
        let groups = vec![
            SecurityGroup {
                group_id: "sg-1".into(),
                ingress: vec![
                    IngressRule::tcp(90, 80, cidr("10.0.0.0/8")),
                    IngressRule {
                        ip_protocol: "gre?".into(),
                        ..IngressRule::tcp(1, 1, cidr("10.0.0.0/8"))
                    },
                    IngressRule {
                        from_port: None,
                        ..IngressRule::tcp(1, 1, cidr("10.0.0.0/8"))
                    },
                    IngressRule {
                        to_port: Some(70000),
                        ..IngressRule::tcp(1, 1, cidr("10.0.0.0/8"))
                    },
                ],
            },
            SecurityGroup {
                group_id: "sg-1".into(),
                ingress: vec![],
            },
            SecurityGroup {
                group_id: "default".into(),
                ingress: vec![],
            },
        ];
        let fields: Vec<String> = groups_problems(&groups)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "SecurityGroups[0].Ingress[0].FromPort",
                "SecurityGroups[0].Ingress[1].IpProtocol",
                "SecurityGroups[0].Ingress[2].FromPort",
                "SecurityGroups[0].Ingress[3].ToPort",
                "SecurityGroups[1].GroupId",
                "SecurityGroups[2].GroupId",
            ]
        );
        let many: Vec<SecurityGroup> = (0..6)
            .map(|i| SecurityGroup {
                group_id: format!("sg-{i}"),
                ingress: vec![],
            })
            .collect();
        assert_eq!(groups_problems(&many)[0].field, "SecurityGroups");
        assert!(group_id_ok("sg-0a1b2c") && !group_id_ok("sg-") && !group_id_ok("sg-a_b"));
    }
}
