//! What servos are told: load balancers in the contract's types ([`elb_contract::LoadBalancer`]),
//! built from the store's model, and the configuration document of one servo.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use elb_contract::security_group::{IngressRule, SecurityGroup};
use elb_contract::wire::ConfigDocument;
use elb_contract::{BackendServerPolicies, Instance, ListenerPolicies, ServerCertificate, zone};

use crate::model::{LoadBalancer, Policy, RegisteredInstance};
use crate::store::{ServoConfigData, ServoLb, servo_lb_name};

fn listeners(lb: &LoadBalancer) -> Vec<elb_contract::Listener> {
    lb.listeners.iter().map(|l| l.def.clone()).collect()
}

/// Instances with an IPv4 address (the dataplane forwards IPv4; the inventory may hold
/// others).
fn ipv4_instances(lb: &LoadBalancer) -> impl Iterator<Item = (&RegisteredInstance, Ipv4Addr)> {
    lb.instances
        .iter()
        .filter_map(|i| i.address.parse::<Ipv4Addr>().ok().map(|a| (i, a)))
}

/// The policies in effect: those of listeners and back-end ports, and the public-key policies
/// their back-end authentication policies name (in the load balancer's order).
fn policies_in_effect(lb: &LoadBalancer) -> Vec<Policy> {
    let mut used: BTreeSet<&str> = lb
        .listeners
        .iter()
        .flat_map(|l| l.policy_names.iter())
        .chain(
            lb.backend_policies
                .iter()
                .flat_map(|(_, names)| names.iter()),
        )
        .map(String::as_str)
        .collect();
    let named: Vec<&str> = used
        .iter()
        .filter_map(|n| lb.policy(n))
        .filter(|p| p.type_name == elb_contract::policy::BACKEND_AUTH)
        .flat_map(|p| p.attributes.iter().map(|(_, v)| v.as_str()))
        .collect();
    used.extend(named);
    lb.policies
        .iter()
        .filter(|p| used.contains(p.name.as_str()))
        .cloned()
        .collect()
}

fn contract_lb(
    lb: &LoadBalancer,
    vips: Vec<Ipv4Addr>,
    instances: Vec<Instance>,
    security_groups: Option<Vec<SecurityGroup>>,
) -> elb_contract::LoadBalancer {
    elb_contract::LoadBalancer {
        load_balancer_name: servo_lb_name(&lb.key.name, &lb.key.account_id),
        vips,
        listeners: listeners(lb),
        instances,
        health_check: Some(lb.health_check.clone()),
        attributes: lb.attributes.servo,
        policies: policies_in_effect(lb),
        listener_policies: lb
            .listeners
            .iter()
            .filter(|l| !l.policy_names.is_empty())
            .map(|l| ListenerPolicies {
                load_balancer_port: l.load_balancer_port,
                policy_names: l.policy_names.clone(),
            })
            .collect(),
        backend_server_policies: lb
            .backend_policies
            .iter()
            .map(|(port, names)| BackendServerPolicies {
                instance_port: *port,
                policy_names: names.clone(),
            })
            .collect(),
        certificates: Vec::new(),
        security_groups,
        access_log: access_log(lb),
    }
}

/// The AccessLog attribute as servos act on it: present while enabled, with the names the
/// object keys need.
fn access_log(lb: &LoadBalancer) -> Option<elb_contract::AccessLog> {
    let a = &lb.attributes.access_log;
    a.enabled.then(|| elb_contract::AccessLog {
        s3_bucket_name: a.s3_bucket_name.clone().unwrap_or_default(),
        s3_bucket_prefix: a.s3_bucket_prefix.clone().unwrap_or_default(),
        emit_interval: a.emit_interval,
        account_id: lb.key.account_id.clone(),
        region: lb.key.region.clone(),
        load_balancer_name: Some(lb.key.name.clone()),
    })
}

/// The load balancer's security groups with their rules: `None` without groups (open to
/// everyone); a group control holds no rules for admits no one.
fn security_groups(
    lb: &LoadBalancer,
    rules: &BTreeMap<String, Vec<IngressRule>>,
) -> Option<Vec<SecurityGroup>> {
    if lb.security_groups.is_empty() {
        return None;
    }
    Some(
        lb.security_groups
            .iter()
            .map(|id| SecurityGroup {
                group_id: id.clone(),
                ingress: rules.get(id).cloned().unwrap_or_else(|| {
                    tracing::warn!(load_balancer = %lb.key.name, group = %id, "security group unknown: it admits no one");
                    Vec::new()
                }),
            })
            .collect(),
    )
}

/// The load balancer as the contract's rules see it (no VIP, every instance checked): what
/// [`crate::validate::check_rules`] validates before a change is accepted.
pub fn rules_view(lb: &LoadBalancer) -> elb_contract::LoadBalancer {
    let instances = ipv4_instances(lb)
        .map(|(i, address)| Instance {
            instance_id: i.instance_id.clone(),
            address,
            zone: Some(i.zone.clone()),
            health_check: true,
            health: None,
        })
        .collect();
    contract_lb(lb, Vec::new(), instances, None)
}

/// One load balancer as a servo of `zone` serves it: every instance of its enabled zones.
/// The servo checks its own zone's (with the state control holds, to start from when it
/// takes them over); the others come with the state control relays (see
/// [`elb_contract::zone`]), which says so when nothing serves their zone.
///
/// `certificates` holds the certificates (with keys) control may send this servo: those of the
/// load balancers assigned to it, and only over TLS (empty otherwise).
fn servo_lb(
    zone: &str,
    assigned: &ServoLb,
    certificates: &Certificates,
    rules: &BTreeMap<String, Vec<IngressRule>>,
) -> elb_contract::LoadBalancer {
    let lb = &assigned.lb;
    let instances = ipv4_instances(lb)
        .filter(|(i, _)| lb.zones.contains(&i.zone))
        .map(|(i, address)| {
            let here = zone::checked_by(Some(zone), Some(&i.zone));
            Instance {
                instance_id: i.instance_id.clone(),
                address,
                zone: Some(i.zone.clone()),
                health_check: here,
                health: Some(if here {
                    i.health.clone()
                } else {
                    lb.effective_health(i, &assigned.service)
                }),
            }
        })
        .collect();
    let mut view = contract_lb(
        lb,
        vec![assigned.vip],
        instances,
        security_groups(lb, rules),
    );
    let arns: BTreeSet<&str> = lb
        .listeners
        .iter()
        .filter_map(|l| l.ssl_certificate_id.as_deref())
        .collect();
    view.certificates = arns
        .into_iter()
        .filter_map(|arn| certificates.get(arn).cloned())
        .collect();
    view
}

/// Certificates with their keys, by ARN.
pub type Certificates = BTreeMap<String, ServerCertificate>;

/// The certificates the listeners of a servo's load balancers name: (account id, ARN).
pub fn certificate_arns(data: &ServoConfigData) -> BTreeSet<(String, String)> {
    data.lbs
        .iter()
        .flat_map(|l| {
            l.lb.listeners.iter().filter_map(|x| {
                x.ssl_certificate_id
                    .clone()
                    .map(|arn| (l.lb.key.account_id.clone(), arn))
            })
        })
        .collect()
}

/// The load balancers of a servo's configuration, by name.
///
/// Left out: load balancers without listeners (nothing to serve), one that breaks a rule of
/// the contract (stored before the rule existed; logged), and one whose (VIP, port) another
/// already has. The latter exists only for the moment between a CreateLoadBalancerListeners
/// and the assignment pass that moves the later load balancer to another VIP; the earlier
/// assignment keeps serving.
fn servo_view(
    zone: &str,
    data: &ServoConfigData,
    certificates: &Certificates,
) -> Vec<elb_contract::LoadBalancer> {
    let mut lbs: Vec<&ServoLb> = data
        .lbs
        .iter()
        .filter(|l| !l.lb.listeners.is_empty())
        .collect();
    lbs.sort_by(|a, b| (a.assigned_at, &a.lb.id).cmp(&(b.assigned_at, &b.lb.id)));
    let mut taken: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
    let mut out = Vec::new();
    for l in lbs {
        let view = servo_lb(zone, l, certificates, &data.security_groups);
        if let Err(problems) = view.validate() {
            tracing::error!(load_balancer = %view.load_balancer_name, %problems, "not sent to servos: it breaks the contract's rules");
            continue;
        }
        let endpoints: Vec<(Ipv4Addr, u16)> =
            l.lb.listeners
                .iter()
                .map(|x| (l.vip, x.load_balancer_port))
                .collect();
        if endpoints.iter().any(|e| taken.contains(e)) {
            tracing::debug!(load_balancer = %l.lb.key.name, vip = %l.vip, "left out until reassigned: a port of its VIP is taken");
            continue;
        }
        taken.extend(endpoints);
        out.push(view);
    }
    out.sort_by(|a, b| a.load_balancer_name.cmp(&b.load_balancer_name));
    out
}

/// The long-poll answer of a servo of `zone`.
pub fn document(
    zone: &str,
    data: &ServoConfigData,
    heartbeat_interval: u64,
    certificates: &Certificates,
) -> ConfigDocument {
    ConfigDocument {
        version: data.version,
        load_balancers: servo_view(zone, data, certificates),
        request_ids: data.request_ids.clone(),
        heartbeat_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Attributes, InstanceHealth, LbKey, Listener, Protocol, Scheme, ZoneService,
    };

    fn instance(id: &str, zone: &str, health: InstanceHealth) -> RegisteredInstance {
        RegisteredInstance {
            instance_id: id.into(),
            address: format!("198.19.0.{}", id.len()),
            zone: zone.into(),
            health,
        }
    }

    fn lb(name: &str, zones: &[&str], ports: &[u16]) -> LoadBalancer {
        LoadBalancer {
            id: format!("id-{name}"),
            key: LbKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                name: name.into(),
            },
            dns_name: String::new(),
            scheme: Scheme::InternetFacing,
            vpc_id: None,
            created_at: 0,
            listeners: ports
                .iter()
                .map(|p| {
                    Listener::new(elb_contract::Listener {
                        protocol: Protocol::Http,
                        load_balancer_port: *p,
                        instance_protocol: Protocol::Http,
                        instance_port: 8080,
                        ssl_certificate_id: None,
                    })
                })
                .collect(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            subnets: vec![],
            security_groups: vec![],
            instances: vec![],
            health_check: elb_contract::HealthCheck::default_for_port(
                std::num::NonZeroU16::new(8080).unwrap(),
            ),
            attributes: Attributes::default(),
            policies: vec![],
            backend_policies: vec![],
            tags: vec![],
        }
    }

    fn assigned(lb: LoadBalancer, vip: &str, at: i64) -> ServoLb {
        ServoLb {
            lb,
            vip: vip.parse().unwrap(),
            assigned_at: at,
            service: Default::default(),
        }
    }

    #[test]
    fn every_enabled_zone_is_sent_own_zone_checked_here() {
        let mut l = lb("web", &["a", "b"], &[80]);
        l.instances = vec![
            instance("i-1", "a", InstanceHealth::failed()),
            instance("i-22", "b", InstanceHealth::in_service()),
            instance("i-333", "c", InstanceHealth::in_service()),
        ];
        let mut s = assigned(l, "198.18.0.1", 1);
        let view = servo_lb("a", &s, &Certificates::new(), &BTreeMap::new());
        let got: Vec<(&str, bool, Option<&InstanceHealth>)> = view
            .instances
            .iter()
            .map(|i| (i.instance_id.as_str(), i.health_check, i.health.as_ref()))
            .collect();
        assert_eq!(
            got,
            [
                ("i-1", true, Some(&InstanceHealth::failed())),
                ("i-22", false, Some(&InstanceHealth::in_service())),
            ],
            "zone c is not enabled"
        );
        // Zone b has no live servo: its instance is not InService for the others.
        s.service.insert("b".into(), ZoneService::NoLiveServo);
        let view = servo_lb("a", &s, &Certificates::new(), &BTreeMap::new());
        assert_eq!(
            view.instances[1].health,
            Some(InstanceHealth::no_live_servo("b"))
        );
        // The servo of zone b itself starts from what was reported (a warm take-over).
        let view = servo_lb("b", &s, &Certificates::new(), &BTreeMap::new());
        assert_eq!(view.instances[1].health, Some(InstanceHealth::in_service()));
        assert!(view.instances[1].health_check);
    }

    #[test]
    fn document_shape_omits_absent_members() {
        let mut l = lb("web", &["a"], &[80]);
        l.instances = vec![instance("i-1", "a", InstanceHealth::registering())];
        let data = ServoConfigData {
            version: 7,
            lbs: vec![assigned(l, "198.18.0.1", 1)],
            request_ids: vec!["r1".into()],
            security_groups: BTreeMap::new(),
        };
        let json = serde_json::to_value(document("a", &data, 2, &Certificates::new())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Version": 7,
                "LoadBalancers": [{
                    "LoadBalancerName": "web-123456789012",
                    "Vips": ["198.18.0.1"],
                    "Listeners": [{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 8080}],
                    "Instances": [{"InstanceId": "i-1", "Address": "198.19.0.3", "Zone": "a",
                                   "Health": {"State": "OutOfService", "ReasonCode": "ELB", "Description": "Instance registration is still in progress."}}],
                    "HealthCheck": {"Target": "TCP:8080", "Interval": 30, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 10},
                    "Attributes": {"ConnectionDraining": {"Enabled": false, "Timeout": 300}, "ConnectionSettings": {"IdleTimeout": 60}, "CrossZoneLoadBalancing": {"Enabled": false}}
                }],
                "RequestIds": ["r1"],
                "HeartbeatInterval": 2
            })
        );
        // And it reads back into the contract's types.
        let back: ConfigDocument = serde_json::from_value(json).unwrap();
        assert_eq!(back, document("a", &data, 2, &Certificates::new()));
    }

    #[test]
    fn conflicting_invalid_and_listenerless_load_balancers_are_left_out() {
        let first = assigned(lb("a", &["z"], &[80]), "198.18.0.1", 1);
        let later = assigned(lb("b", &["z"], &[80, 81]), "198.18.0.1", 2);
        let empty = assigned(lb("c", &["z"], &[]), "198.18.0.2", 0);
        let mut broken = lb("d", &["z"], &[82]);
        broken.health_check.timeout = 40;
        let broken = assigned(broken, "198.18.0.3", 0);
        let data = ServoConfigData {
            version: 1,
            lbs: vec![later, empty, first, broken],
            request_ids: vec![],
            security_groups: BTreeMap::new(),
        };
        let names: Vec<String> = servo_view("z", &data, &Certificates::new())
            .into_iter()
            .map(|l| l.load_balancer_name)
            .collect();
        assert_eq!(names, vec!["a-123456789012"]);
    }
}
