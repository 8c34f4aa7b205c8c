//! The servo's configuration: its own settings (interfaces, SNAT, metrics) and the load
//! balancers it serves.
//!
//! Load balancers are the contract's [`LoadBalancer`] (ELB API member names), the same type
//! control sends as JSON and a standalone servo reads from TOML. Each one is read on its own
//! ([`Received`]): one that cannot be decoded is refused alone, as one that breaks a rule or a
//! servo limit is (see [`crate::agent::admission`]). Servo-local settings are snake_case.

use std::{net::Ipv4Addr, path::Path};

use elb_contract::LoadBalancer;
use serde::{Deserialize, Serialize};

/// Why a configuration file could not be used at all. The message says what is wrong and
/// where.
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
    /// The file is not valid TOML, or its servo settings are not valid for this model.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column where TOML gives them).
        message: String,
    },
    /// A servo setting breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// A load balancer as it arrived (from a file or from control), before the servo admits it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a document holds a few load balancers, decoded once; boxing buys nothing"
)]
pub enum Received {
    /// Decoded into the contract's type.
    Decoded(LoadBalancer),
    /// Not decodable (a member this servo does not know, a value of the wrong type...).
    Undecodable {
        /// Its `LoadBalancerName` if it has a readable one, else a placeholder naming its place.
        name: String,
        /// The decoder's message.
        error: String,
    },
}

impl Received {
    /// Decodes one load balancer from any self-describing value (JSON or TOML), keeping the
    /// decoder's message if that fails.
    pub fn decode<'de, D>(value: D, position: usize) -> Self
    where
        D: serde::Deserializer<'de> + Clone,
        D::Error: std::fmt::Display,
    {
        #[derive(Deserialize)]
        struct NameOnly {
            #[serde(rename = "LoadBalancerName")]
            name: String,
        }
        match LoadBalancer::deserialize(value.clone()) {
            Ok(lb) => Self::Decoded(lb),
            Err(e) => Self::Undecodable {
                name: NameOnly::deserialize(value)
                    .map(|n| n.name)
                    .unwrap_or_else(|_| format!("LoadBalancers[{position}]")),
                error: e.to_string(),
            },
        }
    }

    /// The load balancer's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Decoded(lb) => &lb.load_balancer_name,
            Self::Undecodable { name, .. } => name,
        }
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

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
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

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
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

fn default_state_dir() -> String {
    "/var/lib/elb-servo".to_string()
}

fn default_spool_dir() -> String {
    "/var/lib/elb-servo/access-logs".to_string()
}

fn default_max_spool_bytes() -> u64 {
    1 << 30
}

/// Where access logs go (`[access_logs]`): without it, a load balancer with access logs enabled
/// is refused (its logs would go nowhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// The S3-compatible endpoint and its credentials (`[access_logs.s3]`).
    pub s3: elb_s3::S3Settings,
    /// Where lines wait for their upload (`open/` files being written, `ready/` finished ones).
    #[serde(default = "default_spool_dir")]
    pub spool_dir: String,
    /// Most bytes the spool holds; past it new lines are dropped and counted.
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: u64,
    /// The address in the log files' names (AWS: the load balancer node's); default: the first
    /// of `public_addresses`, `private_addresses`, the SNAT addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address: Option<Ipv4Addr>,
}

/// The servo's configuration: its own settings, and the load balancers it serves (each one
/// admitted: valid and within the servo's limits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServoConfig {
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// This servo's availability zone (see [`elb_contract::zone`]). Unset: every instance is
    /// local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// SNAT addresses per egress interface.
    #[serde(default)]
    pub snat: Vec<SnatConfig>,
    /// SNAT port range, reserved from the kernel's ephemeral ports. Listener ports may lie in
    /// it: a client's SYN to a listener is never taken for a reply to a SNAT port.
    #[serde(default)]
    pub snat_ports: PortRange,
    /// Conntrack entries (two per flow); applies when the maps are created.
    #[serde(default = "default_conntrack")]
    pub conntrack_entries: u32,
    /// Pin root on bpffs.
    #[serde(default = "default_pin_root")]
    pub pin_root: String,
    /// Address of the agent's HTTP endpoint (`/metrics`, `/status`, `/health`). When it is a
    /// VIP (or the unspecified address), its port is reserved there: a listener on it is
    /// refused.
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
    /// Where the agent keeps what it serves from control, so a restart while control is
    /// unreachable starts from it.
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Access logs: the S3-compatible endpoint, the spool (applies at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logs: Option<AccessLogConfig>,
    /// The load balancers served.
    #[serde(default, rename = "LoadBalancers")]
    pub load_balancers: Vec<LoadBalancer>,
}

/// A configuration file: the servo's settings, and its load balancers as read (each decoded
/// on its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    /// The settings (without load balancers).
    pub settings: ServoConfig,
    /// The load balancers of the file.
    pub load_balancers: Vec<Received>,
}

impl ConfigFile {
    /// Reads a TOML file. The servo settings must be valid; load balancers are decoded one by
    /// one and judged later.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text (see [`load`](Self::load)).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: String::new(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        let lbs = match table.remove("LoadBalancers") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(_) => {
                return Err(parse_error(
                    "LoadBalancers must be an array of tables ([[LoadBalancers]])".into(),
                ));
            }
        };
        let settings = ServoConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_error(e.to_string()))?;
        settings.validate()?;
        let load_balancers = lbs
            .into_iter()
            .enumerate()
            .map(|(i, v)| Received::decode(v, i))
            .collect();
        Ok(Self {
            settings,
            load_balancers,
        })
    }
}

impl ServoConfig {
    /// Checks the servo's own settings (load balancers are judged one by one on admission).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.interfaces.is_empty() {
            return invalid("interfaces: at least one interface is needed".into());
        }
        for s in &self.snat {
            if !self.interfaces.contains(&s.interface) {
                return invalid(format!(
                    "snat: interface {} is not in interfaces",
                    s.interface
                ));
            }
            if s.addresses.is_empty() || s.addresses.len() > elb_common::MAX_SNAT_ADDRS {
                return invalid(format!(
                    "snat: interface {} needs 1 to {} addresses",
                    s.interface,
                    elb_common::MAX_SNAT_ADDRS
                ));
            }
        }
        if self.metrics_listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(format!(
                "metrics_listen {:?} is not an address:port",
                self.metrics_listen
            ));
        }
        if let Some(a) = &self.access_logs {
            let e = &a.s3.endpoint;
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return invalid(format!(
                    "access_logs.s3.endpoint {e:?} must start with http:// or https://"
                ));
            }
            if a.spool_dir.is_empty() {
                return invalid("access_logs.spool_dir must not be empty".into());
            }
        }
        Ok(())
    }

    /// The address access log files are named after (see [`AccessLogConfig::node_address`]).
    pub fn node_address(&self) -> Ipv4Addr {
        self.access_logs
            .as_ref()
            .and_then(|a| a.node_address)
            .or_else(|| self.public_addresses.first().copied())
            .or_else(|| self.private_addresses.first().copied())
            .or_else(|| {
                self.snat
                    .iter()
                    .flat_map(|s| s.addresses.first())
                    .next()
                    .copied()
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The same settings without load balancers.
    pub fn settings_only(&self) -> Self {
        Self {
            load_balancers: Vec::new(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use elb_contract::Protocol;

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

[[LoadBalancers]]
LoadBalancerName = "newer"
Vips = ["198.18.0.1"]
Listeners = [{ Protocol = "TCP", LoadBalancerPort = 81, InstancePort = 81, Weight = 3 }]
"#;

    fn decoded(f: &ConfigFile, i: usize) -> &LoadBalancer {
        match &f.load_balancers[i] {
            Received::Decoded(lb) => lb,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn example_parses_with_elb_names_and_defaults() {
        let f = ConfigFile::parse(EXAMPLE).unwrap();
        let lb = decoded(&f, 0);
        assert_eq!(
            lb.listeners[0].instance_protocol,
            Protocol::Http,
            "InstanceProtocol defaults to Protocol"
        );
        assert_eq!(lb.health_check().target.to_string(), "HTTP:8080/health");
        assert!(lb.attributes.connection_draining.enabled);
        assert_eq!(
            f.settings.conntrack_entries,
            elb_common::DEFAULT_CONNTRACK_ENTRIES
        );
        assert_eq!(f.settings.metrics_listen, "127.0.0.1:9400");
        assert!(lb.instances[0].health_check);
        assert!(lb.validate().is_ok());
    }

    #[test]
    fn an_undecodable_load_balancer_is_kept_apart_with_its_name() {
        let f = ConfigFile::parse(EXAMPLE).unwrap();
        match &f.load_balancers[1] {
            Received::Undecodable { name, error } => {
                assert_eq!(name, "newer");
                assert!(error.contains("Weight"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        let f = ConfigFile::parse("interfaces = [\"e\"]\n[[LoadBalancers]]\nVips = 3").unwrap();
        assert_eq!(f.load_balancers[0].name(), "LoadBalancers[0]");
    }

    #[test]
    fn servo_settings_are_checked() {
        for (text, needle) in [
            ("interfaces = []", "at least one interface"),
            (
                "interfaces = [\"a\"]\n[[snat]]\ninterface = \"b\"\naddresses = [\"198.19.0.1\"]",
                "not in interfaces",
            ),
            (
                "interfaces = [\"a\"]\nmetrics_listen = \"nowhere\"",
                "metrics_listen",
            ),
            ("interfaces = [\"a\"]\nbogus = 1", "bogus"),
            ("interfaces = [\"a\"]\nsnat_ports = \"9-3\"", "port range"),
            ("interfaces = [\"eth0\"\nzone = 3", "line"),
            (
                "interfaces = [\"a\"]\n[access_logs.s3]\nendpoint = \"s3.local\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"",
                "http://",
            ),
        ] {
            let err = ConfigFile::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn packaged_example_is_valid() {
        let f =
            ConfigFile::parse(include_str!("../../packaging/servo/servo.toml.example")).unwrap();
        assert_eq!(decoded(&f, 0).listeners.len(), 2);
        assert!(decoded(&f, 0).validate().is_ok());
    }

    #[test]
    fn bad_file_reports_where() {
        let path = std::env::temp_dir().join(format!("elb-config-test-{}", std::process::id()));
        std::fs::write(&path, "interfaces = [\"eth0\"\nzone = 3").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            err.contains("line") && err.contains("elb-config-test"),
            "{err}"
        );
    }
}
