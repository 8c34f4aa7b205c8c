//! The load balancer as the API and the store see it. Servo-facing views (a later issue) are
//! built from these same types.

use std::fmt;

/// Front-end and back-end protocols of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Tcp,
    Ssl,
}

impl Protocol {
    /// Case-insensitive, as the API accepts them.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "HTTP" => Some(Self::Http),
            "HTTPS" => Some(Self::Https),
            "TCP" => Some(Self::Tcp),
            "SSL" => Some(Self::Ssl),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Tcp => "TCP",
            Self::Ssl => "SSL",
        }
    }

    /// HTTP and HTTPS are layer 7; TCP and SSL layer 4. A listener's two sides must agree.
    pub fn is_http_family(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }

    /// Whether the protocol terminates TLS (and so needs a certificate on the front end).
    pub fn is_secure(self) -> bool {
        matches!(self, Self::Https | Self::Ssl)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One listener: `protocol:lb_port -> instance_protocol:instance_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub load_balancer_port: u16,
    pub instance_protocol: Protocol,
    pub instance_port: u16,
    pub ssl_certificate_id: Option<String>,
    /// Policies applied with SetLoadBalancerPoliciesOfListener, in the order given.
    pub policy_names: Vec<String>,
}

impl Listener {
    /// Same port, protocols, instance port and certificate (policies do not count): the test
    /// for "creating the same listener again is a no-op".
    pub fn same_definition(&self, other: &Listener) -> bool {
        self.protocol == other.protocol
            && self.load_balancer_port == other.load_balancer_port
            && self.instance_protocol == other.instance_protocol
            && self.instance_port == other.instance_port
            && self.ssl_certificate_id == other.ssl_certificate_id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    InternetFacing,
    Internal,
}

impl Scheme {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "internet-facing" => Some(Self::InternetFacing),
            "internal" => Some(Self::Internal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternetFacing => "internet-facing",
            Self::Internal => "internal",
        }
    }
}

/// Health check settings (ELB semantics: consecutive counts, Timeout < Interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub target: String,
    pub interval: u32,
    pub timeout: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl HealthCheck {
    /// AWS's default after CreateLoadBalancer: TCP to the first listener's instance port,
    /// every 30 s, 5 s timeout, 2 failures down, 10 successes up.
    pub fn default_for_port(instance_port: u16) -> Self {
        Self {
            target: format!("TCP:{instance_port}"),
            interval: 30,
            timeout: 5,
            unhealthy_threshold: 2,
            healthy_threshold: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub enabled: bool,
    pub s3_bucket_name: Option<String>,
    /// Minutes: 5 or 60.
    pub emit_interval: u32,
    pub s3_bucket_prefix: Option<String>,
}

/// LoadBalancerAttributes with AWS's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub cross_zone: bool,
    pub access_log: AccessLog,
    pub draining_enabled: bool,
    /// Seconds.
    pub draining_timeout: u32,
    /// Seconds.
    pub idle_timeout: u32,
    /// `AdditionalAttributes` (key, value), e.g. `elb.http.desyncmitigationmode`.
    pub additional: Vec<(String, String)>,
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            cross_zone: false,
            access_log: AccessLog {
                enabled: false,
                s3_bucket_name: None,
                emit_interval: 60,
                s3_bucket_prefix: None,
            },
            draining_enabled: false,
            draining_timeout: 300,
            idle_timeout: 60,
            additional: vec![("elb.http.desyncmitigationmode".into(), "defensive".into())],
        }
    }
}

/// A named policy of a load balancer (stickiness, SSL negotiation, proxy protocol, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub type_name: String,
    /// (AttributeName, AttributeValue) in the order given.
    pub attributes: Vec<(String, String)>,
}

impl Policy {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Instance states of DescribeInstanceHealth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    InService,
    OutOfService,
    Unknown,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InService => "InService",
            Self::OutOfService => "OutOfService",
            Self::Unknown => "Unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "InService" => Some(Self::InService),
            "OutOfService" => Some(Self::OutOfService),
            "Unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// The health of one registered instance as last reported (by a servo, or the initial state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceHealth {
    pub state: InstanceState,
    /// `ELB`, `Instance` or `N/A`.
    pub reason_code: String,
    pub description: String,
}

pub const REGISTRATION_IN_PROGRESS: &str = "Instance registration is still in progress.";
pub const ZONE_NOT_ENABLED: &str = "Instance is in the EC2 Availability Zone for which LoadBalancer is not configured to route traffic to.";
pub const NOT_REGISTERED: &str = "Instance is not currently registered with the LoadBalancer.";

impl InstanceHealth {
    /// Registered, not yet checked by any servo.
    pub fn registering() -> Self {
        Self {
            state: InstanceState::OutOfService,
            reason_code: "ELB".into(),
            description: REGISTRATION_IN_PROGRESS.into(),
        }
    }
}

/// An instance registered with a load balancer, with what the inventory said about it at
/// registration (servos need the address; the zone decides which servo checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredInstance {
    pub instance_id: String,
    pub address: String,
    pub zone: String,
    pub health: InstanceHealth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// Where a load balancer lives and what it is called: the identity API callers use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LbKey {
    pub account_id: String,
    pub region: String,
    pub name: String,
}

/// A load balancer with everything configured on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    /// Store-internal id (stable across renames of nothing; never shown to API callers).
    pub id: String,
    pub key: LbKey,
    pub dns_name: String,
    pub scheme: Scheme,
    pub vpc_id: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub listeners: Vec<Listener>,
    pub zones: Vec<String>,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub instances: Vec<RegisteredInstance>,
    pub health_check: HealthCheck,
    pub attributes: Attributes,
    pub policies: Vec<Policy>,
    /// (InstancePort, policy names) from SetLoadBalancerPoliciesForBackendServer.
    pub backend_policies: Vec<(u16, Vec<String>)>,
    pub tags: Vec<Tag>,
}

impl LoadBalancer {
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.load_balancer_port == port)
    }

    pub fn listener_mut(&mut self, port: u16) -> Option<&mut Listener> {
        self.listeners
            .iter_mut()
            .find(|l| l.load_balancer_port == port)
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    pub fn instance(&self, id: &str) -> Option<&RegisteredInstance> {
        self.instances.iter().find(|i| i.instance_id == id)
    }

    /// A VPC load balancer is placed by subnets; an EC2-Classic-style one by zones.
    pub fn in_vpc(&self) -> bool {
        self.vpc_id.is_some()
    }

    /// The health to report for a registered instance: its stored state, unless its zone is
    /// not (or no longer) enabled for this load balancer.
    pub fn effective_health(&self, instance: &RegisteredInstance) -> InstanceHealth {
        if self.zones.contains(&instance.zone) {
            instance.health.clone()
        } else {
            InstanceHealth {
                state: InstanceState::OutOfService,
                reason_code: "ELB".into(),
                description: ZONE_NOT_ENABLED.into(),
            }
        }
    }
}
