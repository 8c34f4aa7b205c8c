//! The load balancer as the API and the store see it. The ELB vocabulary and its rules
//! (protocols, listeners, health checks, the attributes servos act on, instance health,
//! policies) are the contract's ([`elb_contract`]); this module adds what only control keeps
//! (names, placement, access logs, tags...).

use std::ops::{Deref, DerefMut};

pub use elb_contract::policy::Policy;
pub use elb_contract::{HealthCheck, InstanceHealth, InstanceState, Protocol, ReasonCode};

/// One listener (the contract's definition) with the policies applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `Protocol:LoadBalancerPort -> InstanceProtocol:InstancePort`, certificate.
    pub def: elb_contract::Listener,
    /// Policies applied with SetLoadBalancerPoliciesOfListener, in the order given.
    pub policy_names: Vec<String>,
}

impl Listener {
    /// A listener without policies.
    pub fn new(def: elb_contract::Listener) -> Self {
        Self {
            def,
            policy_names: Vec::new(),
        }
    }
}

impl Deref for Listener {
    type Target = elb_contract::Listener;
    fn deref(&self) -> &Self::Target {
        &self.def
    }
}

impl DerefMut for Listener {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.def
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
    /// What servos act on: ConnectionDraining, ConnectionSettings, CrossZoneLoadBalancing.
    pub servo: elb_contract::Attributes,
    pub access_log: AccessLog,
    /// `AdditionalAttributes` (key, value), e.g. `elb.http.desyncmitigationmode`.
    pub additional: Vec<(String, String)>,
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            servo: elb_contract::Attributes::default(),
            access_log: AccessLog {
                enabled: false,
                s3_bucket_name: None,
                emit_interval: elb_contract::DEFAULT_EMIT_INTERVAL,
                s3_bucket_prefix: None,
            },
            additional: vec![("elb.http.desyncmitigationmode".into(), "defensive".into())],
        }
    }
}

/// Whether a load balancer is served in one zone, as far as control knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneService {
    /// A live servo assigned to it serves it (its current or an earlier accepted version).
    Serving,
    /// The zone has live servos, none of them assigned to it (yet, or for lack of room).
    Unassigned,
    /// The zone has no live servo.
    NoLiveServo,
    /// Its live servos there refuse it.
    Refused { servo: String, reason: String },
}

/// Zone -> service, for one load balancer; zones left out count as served.
pub type ZoneServices = std::collections::BTreeMap<String, ZoneService>;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The health control holds for a registered instance, as DescribeInstanceHealth and
    /// servos see it: the state its zone's servo reported, unless the zone is not (or no
    /// longer) enabled, or nothing serves the load balancer there (`service`).
    pub fn effective_health(
        &self,
        instance: &RegisteredInstance,
        service: &ZoneServices,
    ) -> InstanceHealth {
        if !self.zones.contains(&instance.zone) {
            return InstanceHealth::zone_not_enabled();
        }
        let zone = instance.zone.as_str();
        match service.get(zone) {
            None | Some(ZoneService::Serving) => instance.health.clone(),
            Some(ZoneService::NoLiveServo) => InstanceHealth::no_live_servo(zone),
            Some(ZoneService::Refused { servo, reason }) => {
                InstanceHealth::refused(servo, zone, reason)
            }
            // A servo is on its way (a fresh assignment) or none has room: what was reported
            // stands, except a stale InService.
            Some(ZoneService::Unassigned) if instance.health.is_in_service() => {
                InstanceHealth::unassigned(zone)
            }
            Some(ZoneService::Unassigned) => instance.health.clone(),
        }
    }
}
