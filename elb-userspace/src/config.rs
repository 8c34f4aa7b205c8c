//! The servo's configuration: its own settings (interfaces, SNAT, metrics) and the load
//! balancers it serves.
//!
//! The load-balancer part uses the ELB API's names (`LoadBalancerName`, `Listeners`,
//! `HealthCheck`, `Attributes`...) because it is the same model the control service sends a
//! servo as JSON; a standalone servo reads it from a TOML file. Servo-local settings are
//! snake_case.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    num::NonZeroU16,
    path::Path,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::health::HealthCheck;

/// Why a configuration was rejected. The message says what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this model.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value breaks an ELB rule or a servo limit.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// A listener protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Protocol {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Ssl,
    /// HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Protocol {
    /// The ELB spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Ssl => "SSL",
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
        }
    }

    /// HTTP and HTTPS are layer 7, TCP and SSL layer 4 (ELB pairs front and back end by layer).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Self::Tcp),
            "SSL" => Ok(Self::Ssl),
            "HTTP" => Ok(Self::Http),
            "HTTPS" => Ok(Self::Https),
            _ => Err(format!(
                "protocol {s:?} is not one of HTTP, HTTPS, TCP, SSL"
            )),
        }
    }
}

impl TryFrom<String> for Protocol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> Self {
        p.as_str().to_string()
    }
}

/// A listener: `Protocol:LoadBalancerPort -> InstanceProtocol:InstancePort`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// Front-end protocol.
    pub protocol: Protocol,
    /// Front-end port.
    pub load_balancer_port: u16,
    /// Back-end protocol (defaults to `Protocol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_protocol: Option<Protocol>,
    /// Back-end port.
    pub instance_port: u16,
    /// Certificate for HTTPS/SSL front ends (kept for the model; the XDP dataplane forwards the
    /// TLS stream untouched to the instance).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "SSLCertificateId"
    )]
    pub ssl_certificate_id: Option<String>,
}

impl ListenerConfig {
    /// The back-end protocol, defaulted as ELB does.
    pub fn instance_protocol(&self) -> Protocol {
        self.instance_protocol.unwrap_or(self.protocol)
    }
}

/// An instance registered with a load balancer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance id, e.g. `i-0123abcd`.
    pub instance_id: String,
    /// The instance's address.
    pub address: Ipv4Addr,
    /// Its availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whether this servo health-checks the instance (true) or takes `State` as given (false:
    /// instances of other zones, checked by their own zone's servos; Eucalyptus'
    /// `ReportHealthCheck`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub health_check: bool,
    /// For instances this servo does not check: `InService` or `OutOfService`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// ConnectionDraining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectionDraining {
    /// Whether deregistered / unhealthy instances keep their connections for `Timeout`.
    pub enabled: bool,
    /// Seconds (1-3600).
    #[serde(default = "default_drain_timeout")]
    pub timeout: u32,
}

fn default_drain_timeout() -> u32 {
    300
}

impl Default for ConnectionDraining {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: 300,
        }
    }
}

/// ConnectionSettings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Seconds a connection may stay idle (1-3600).
    pub idle_timeout: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self { idle_timeout: 60 }
    }
}

/// CrossZoneLoadBalancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CrossZone {
    /// Whether this servo also sends traffic to InService instances of other zones.
    pub enabled: bool,
}

/// The load balancer attributes the servo acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Attributes {
    /// ConnectionDraining.
    #[serde(default)]
    pub connection_draining: ConnectionDraining,
    /// ConnectionSettings.
    #[serde(default)]
    pub connection_settings: ConnectionSettings,
    /// CrossZoneLoadBalancing.
    #[serde(default)]
    pub cross_zone_load_balancing: CrossZone,
}

/// One load balancer as this servo serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// The load balancer's name (unique on this servo).
    pub load_balancer_name: String,
    /// The addresses this servo serves the load balancer on (its VIPs; they must be
    /// addresses of this host so that it answers ARP for them).
    pub vips: Vec<Ipv4Addr>,
    /// Listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Registered instances.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// The health check (default: ELB's `TCP:<first InstancePort>`, 30, 5, 2, 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Attributes.
    #[serde(default)]
    pub attributes: Attributes,
}

impl LoadBalancerConfig {
    /// The health check in effect.
    pub fn health_check(&self) -> HealthCheck {
        self.health_check.clone().unwrap_or_else(|| {
            let port = self.listeners.first().map_or(80, |l| l.instance_port);
            HealthCheck::default_for_port(NonZeroU16::new(port).unwrap_or(NonZeroU16::MIN))
        })
    }
}

/// SNAT source addresses of one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatConfig {
    /// Interface name.
    pub interface: String,
    /// Up to 8 addresses of that interface; flows leaving through it are sourced from them.
    pub addresses: Vec<Ipv4Addr>,
}

/// A port range `MIN-MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port.
    pub max: u16,
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("port range {s:?} is not MIN-MAX"))?;
        let min: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("port range {s:?}: bad MIN"))?;
        let max: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("port range {s:?}: bad MAX"))?;
        if min == 0 || min > max {
            return Err(format!("port range {s:?} is empty or starts at 0"));
        }
        Ok(Self { min, max })
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> Self {
        format!("{}-{}", r.min, r.max)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            min: 20000,
            max: 59999,
        }
    }
}

fn default_pin_root() -> String {
    crate::dataplane::DEFAULT_PIN_ROOT.to_string()
}

fn default_metrics() -> String {
    "127.0.0.1:9400".to_string()
}

fn default_conntrack() -> u32 {
    elb_common::DEFAULT_CONNTRACK_ENTRIES
}

/// The whole servo configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServoConfig {
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// This servo's availability zone (instances of other zones get traffic only with
    /// cross-zone load balancing). Unset: every instance is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// SNAT addresses per egress interface.
    #[serde(default)]
    pub snat: Vec<SnatConfig>,
    /// SNAT port range, reserved from the kernel's ephemeral ports.
    #[serde(default)]
    pub snat_ports: PortRange,
    /// Conntrack entries (two per flow); applies when the maps are created.
    #[serde(default = "default_conntrack")]
    pub conntrack_entries: u32,
    /// Pin root on bpffs.
    #[serde(default = "default_pin_root")]
    pub pin_root: String,
    /// Address of the agent's HTTP endpoint (`/metrics`, `/status`, `/health`).
    #[serde(default = "default_metrics")]
    pub metrics_listen: String,
    /// Attach in generic (skb) mode instead of native XDP.
    #[serde(default)]
    pub generic_xdp: bool,
    /// Source address of health checks (default: the routing table's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_source: Option<Ipv4Addr>,
    /// Addresses this servo offers control as VIPs of internet-facing load balancers
    /// (control mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_addresses: Vec<Ipv4Addr>,
    /// Addresses this servo offers control as VIPs of internal load balancers (control mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_addresses: Vec<Ipv4Addr>,
    /// Most load balancers control may assign to this servo (control mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Where the agent keeps the last configuration received from control, so a restart while
    /// control is unreachable starts from it.
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// The load balancers (standalone mode; in control mode they come from control).
    #[serde(default, rename = "LoadBalancers")]
    pub load_balancers: Vec<LoadBalancerConfig>,
}

fn default_state_dir() -> String {
    "/var/lib/elb-servo".to_string()
}

impl ServoConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ELB's rules and the servo's limits. The first violation is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(invalid("interfaces: at least one interface is needed"));
        }
        for s in &self.snat {
            if !self.interfaces.contains(&s.interface) {
                return Err(invalid(format!(
                    "snat: interface {} is not in interfaces",
                    s.interface
                )));
            }
            if s.addresses.is_empty() || s.addresses.len() > elb_common::MAX_SNAT_ADDRS {
                return Err(invalid(format!(
                    "snat: interface {} needs 1 to {} addresses",
                    s.interface,
                    elb_common::MAX_SNAT_ADDRS
                )));
            }
        }
        validate_load_balancers(&self.load_balancers, self.snat_ports)
    }
}

/// Validates the load-balancer part (shared by the file and by control's pushes).
pub fn validate_load_balancers(
    lbs: &[LoadBalancerConfig],
    snat: PortRange,
) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut endpoints: BTreeMap<(Ipv4Addr, u16), &str> = BTreeMap::new();
    for lb in lbs {
        let name = lb.load_balancer_name.as_str();
        if !names.insert(name) {
            return Err(invalid(format!("load balancer {name} is defined twice")));
        }
        validate_name(name)?;
        if lb.vips.is_empty() {
            return Err(invalid(format!(
                "{name}: Vips must list at least one address"
            )));
        }
        if lb.listeners.is_empty() {
            return Err(invalid(format!("{name}: Listeners cannot be empty")));
        }
        let mut ports = BTreeSet::new();
        for l in &lb.listeners {
            let at = format!("{name}: listener {}:{}", l.protocol, l.load_balancer_port);
            if l.load_balancer_port == 0 || l.instance_port == 0 {
                return Err(invalid(format!("{at}: ports must be 1-65535")));
            }
            if !ports.insert(l.load_balancer_port) {
                return Err(invalid(format!("{at}: LoadBalancerPort used twice")));
            }
            if l.protocol.is_http() != l.instance_protocol().is_http() {
                return Err(invalid(format!(
                    "{at}: InstanceProtocol {} does not match {} (HTTP/HTTPS pair with HTTP/HTTPS, TCP/SSL with TCP/SSL)",
                    l.instance_protocol(),
                    l.protocol
                )));
            }
            if (snat.min..=snat.max).contains(&l.load_balancer_port) {
                return Err(invalid(format!(
                    "{at}: LoadBalancerPort lies in the SNAT port range {}-{}",
                    snat.min, snat.max
                )));
            }
            for vip in &lb.vips {
                if let Some(other) = endpoints.insert((*vip, l.load_balancer_port), name) {
                    return Err(invalid(format!(
                        "{at}: {vip}:{} is already served by load balancer {other}",
                        l.load_balancer_port
                    )));
                }
            }
        }
        lb.health_check()
            .validate()
            .map_err(|e| invalid(format!("{name}: HealthCheck: {e}")))?;
        let a = lb.attributes;
        if !(1..=3600).contains(&a.connection_settings.idle_timeout) {
            return Err(invalid(format!(
                "{name}: ConnectionSettings.IdleTimeout must be 1-3600"
            )));
        }
        if !(1..=3600).contains(&a.connection_draining.timeout) {
            return Err(invalid(format!(
                "{name}: ConnectionDraining.Timeout must be 1-3600"
            )));
        }
        let mut ids = BTreeSet::new();
        for i in &lb.instances {
            if !ids.insert(i.instance_id.as_str()) {
                return Err(invalid(format!(
                    "{name}: instance {} registered twice",
                    i.instance_id
                )));
            }
            if i.instance_id.is_empty() {
                return Err(invalid(format!(
                    "{name}: an instance has an empty InstanceId"
                )));
            }
            if let Some(state) = &i.state
                && state != "InService"
                && state != "OutOfService"
            {
                return Err(invalid(format!(
                    "{name}: instance {}: State must be InService or OutOfService",
                    i.instance_id
                )));
            }
        }
        if lb.instances.len() > elb_common::MAX_SET_BACKENDS {
            return Err(invalid(format!(
                "{name}: at most {} instances per load balancer",
                elb_common::MAX_SET_BACKENDS
            )));
        }
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), ConfigError> {
    // ELB names are 1-32 characters; control sends `<name>-<account id>` (46 at most), which
    // keeps names unique across accounts on one servo.
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "load balancer name {name:?}: 1-64 letters, digits and hyphens, not starting or ending with a hyphen"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
interfaces = ["eth0", "eth1"]
zone = "zone-a"
snat_ports = "20000-59999"

[[snat]]
interface = "eth1"
addresses = ["198.19.0.1"]

[[LoadBalancers]]
LoadBalancerName = "web"
Vips = ["198.18.0.1"]
Listeners = [{ Protocol = "HTTP", LoadBalancerPort = 80, InstancePort = 8080 }]
Instances = [
  { InstanceId = "i-1", Address = "198.19.0.11", Zone = "zone-a" },
  { InstanceId = "i-2", Address = "198.19.0.12", Zone = "zone-b" },
]
HealthCheck = { Target = "HTTP:8080/health", Interval = 10, Timeout = 5, UnhealthyThreshold = 2, HealthyThreshold = 3 }

[LoadBalancers.Attributes]
ConnectionDraining = { Enabled = true, Timeout = 30 }
ConnectionSettings = { IdleTimeout = 120 }
CrossZoneLoadBalancing = { Enabled = true }
"#;

    fn example() -> ServoConfig {
        let cfg: ServoConfig = toml::from_str(EXAMPLE).unwrap();
        cfg.validate().unwrap();
        cfg
    }

    #[test]
    fn example_parses_with_elb_names_and_defaults() {
        let cfg = example();
        let lb = &cfg.load_balancers[0];
        assert_eq!(
            lb.listeners[0].instance_protocol(),
            Protocol::Http,
            "InstanceProtocol defaults to Protocol"
        );
        assert_eq!(lb.health_check().target.to_string(), "HTTP:8080/health");
        assert!(lb.attributes.connection_draining.enabled);
        assert_eq!(cfg.conntrack_entries, elb_common::DEFAULT_CONNTRACK_ENTRIES);
        assert_eq!(cfg.metrics_listen, "127.0.0.1:9400");
        assert!(lb.instances[0].health_check);
    }

    #[test]
    fn json_round_trip_matches_the_control_model() {
        let cfg = example();
        let json = serde_json::to_string(&cfg.load_balancers).unwrap();
        assert!(json.contains("\"LoadBalancerName\":\"web\""));
        assert!(json.contains("\"InstancePort\":8080"));
        let back: Vec<LoadBalancerConfig> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg.load_balancers);
    }

    #[test]
    fn default_health_check_is_elbs() {
        let mut cfg = example();
        cfg.load_balancers[0].health_check = None;
        let hc = cfg.load_balancers[0].health_check();
        assert_eq!(hc.target.to_string(), "TCP:8080");
        assert_eq!(
            (
                hc.interval,
                hc.timeout,
                hc.unhealthy_threshold,
                hc.healthy_threshold
            ),
            (30, 5, 2, 10)
        );
    }

    fn rejects(edit: impl FnOnce(&mut ServoConfig), needle: &str) {
        let mut cfg = example();
        edit(&mut cfg);
        let err = cfg.validate().expect_err("must be rejected").to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }

    #[test]
    fn elb_rules_are_enforced() {
        rejects(
            |c| c.load_balancers[0].health_check.as_mut().unwrap().timeout = 10,
            "Timeout",
        );
        rejects(
            |c| c.load_balancers[0].health_check.as_mut().unwrap().interval = 4,
            "Interval",
        );
        rejects(
            |c| {
                c.load_balancers[0]
                    .health_check
                    .as_mut()
                    .unwrap()
                    .healthy_threshold = 11
            },
            "HealthyThreshold",
        );
        rejects(
            |c| c.load_balancers[0].listeners[0].instance_protocol = Some(Protocol::Tcp),
            "does not match",
        );
        rejects(
            |c| c.load_balancers[0].listeners.clear(),
            "Listeners cannot be empty",
        );
        rejects(
            |c| c.load_balancers[0].load_balancer_name = "-bad".into(),
            "hyphen",
        );
        rejects(
            |c| c.load_balancers[0].load_balancer_name = "a".repeat(65),
            "1-64",
        );
        rejects(
            |c| {
                c.load_balancers[0]
                    .attributes
                    .connection_settings
                    .idle_timeout = 0
            },
            "IdleTimeout",
        );
        rejects(
            |c| c.load_balancers[0].attributes.connection_draining.timeout = 4000,
            "ConnectionDraining",
        );
        rejects(
            |c| c.load_balancers[0].listeners[0].load_balancer_port = 30000,
            "SNAT port range",
        );
        rejects(
            |c| {
                let i = c.load_balancers[0].instances[0].clone();
                c.load_balancers[0].instances.push(i)
            },
            "registered twice",
        );
        rejects(
            |c| {
                let lb = c.load_balancers[0].clone();
                c.load_balancers.push(lb)
            },
            "defined twice",
        );
        rejects(|c| c.snat[0].interface = "eth9".into(), "not in interfaces");
        rejects(|c| c.interfaces.clear(), "at least one interface");
        rejects(
            |c| c.load_balancers[0].instances[0].state = Some("Maybe".into()),
            "State must be",
        );
    }

    #[test]
    fn two_load_balancers_cannot_share_an_endpoint() {
        rejects(
            |c| {
                let mut lb = c.load_balancers[0].clone();
                lb.load_balancer_name = "other".into();
                c.load_balancers.push(lb);
            },
            "already served by load balancer web",
        );
    }

    #[test]
    fn packaged_example_is_valid() {
        let cfg: ServoConfig =
            toml::from_str(include_str!("../../packaging/servo/servo.toml.example")).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.load_balancers[0].listeners.len(), 2);
    }

    #[test]
    fn bad_toml_reports_where() {
        let dir = std::env::temp_dir().join(format!("elb-config-test-{}", std::process::id()));
        std::fs::write(&dir, "interfaces = [\"eth0\"\nzone = 3").unwrap();
        let err = ServoConfig::load(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(err.contains("line"), "{err}");
        let err = toml::from_str::<ServoConfig>("interfaces = [\"eth0\"]\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        assert!("FTP".parse::<Protocol>().is_err());
        assert!(PortRange::try_from("9-3".to_string()).is_err());
    }
}
