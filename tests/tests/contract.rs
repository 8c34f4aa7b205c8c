//! The contract between control and servos, both sides' real code: control's configuration
//! document (built from its model by `control::servo_api::views`) goes through JSON into the
//! servo's decoding and admission (`elb_userspace::agent`), and comes out as the same
//! load balancers, every field intact. A load balancer the servo cannot decode is refused
//! alone.

use std::num::NonZeroU16;

use control::model::{
    AccessLog, Attributes, InstanceHealth, LbKey, Listener, LoadBalancer, Protocol,
    RegisteredInstance, Scheme, Tag, ZoneService,
};
use control::servo_api::views;
use control::store::{ServoConfigData, ServoLb};
use elb_contract::{ConnectionDraining, ConnectionSettings, CrossZone, HealthCheck};
use elb_userspace::{
    agent::{admission, control::RawDocument, control::decode_document},
    config::{ConfigFile, Received},
};

const CERT: &str = "arn:aws:iam::123456789012:server-certificate/web";

fn listener(p: Protocol, port: u16, ip: Protocol, iport: u16, policies: &[&str]) -> Listener {
    Listener {
        def: elb_contract::Listener {
            protocol: p,
            load_balancer_port: port,
            instance_protocol: ip,
            instance_port: iport,
            ssl_certificate_id: p.is_secure().then(|| CERT.to_string()),
        },
        policy_names: policies.iter().map(|n| n.to_string()).collect(),
    }
}

fn policy(name: &str, type_name: &str, attributes: &[(&str, &str)]) -> control::model::Policy {
    control::model::Policy {
        name: name.into(),
        type_name: type_name.into(),
        attributes: attributes
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

/// The certificate with its key, as control would send it over TLS.
fn certificates() -> views::Certificates {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["web.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    [(
        CERT.to_string(),
        elb_contract::ServerCertificate {
            certificate_id: CERT.into(),
            certificate_chain: cert.pem(),
            private_key: key.serialize_pem(),
        },
    )]
    .into()
}

fn instance(id: &str, address: &str, zone: &str, health: InstanceHealth) -> RegisteredInstance {
    RegisteredInstance {
        instance_id: id.into(),
        address: address.into(),
        zone: zone.into(),
        health,
    }
}

/// A load balancer using every part of the model a servo is told about.
fn web() -> LoadBalancer {
    LoadBalancer {
        id: "lb-1".into(),
        key: LbKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            name: "web".into(),
        },
        dns_name: "web-123456789012.lb.elb.local".into(),
        scheme: Scheme::InternetFacing,
        vpc_id: None,
        created_at: 1,
        listeners: vec![
            listener(Protocol::Http, 80, Protocol::Http, 8080, &["sticky"]),
            listener(Protocol::Https, 443, Protocol::Http, 8080, &["tls12"]),
            listener(Protocol::Ssl, 465, Protocol::Tcp, 4650, &[]),
            listener(Protocol::Tcp, 30000, Protocol::Tcp, 3000, &[]),
        ],
        zones: vec!["zone-a".into(), "zone-b".into()],
        subnets: vec![],
        security_groups: vec![],
        instances: vec![
            instance(
                "i-a1",
                "198.19.0.11",
                "zone-a",
                InstanceHealth::in_service(),
            ),
            instance("i-a2", "198.19.0.12", "zone-a", InstanceHealth::failed()),
            instance(
                "i-b1",
                "198.19.0.13",
                "zone-b",
                InstanceHealth::in_service(),
            ),
            instance(
                "i-b2",
                "198.19.0.14",
                "zone-b",
                InstanceHealth::registering(),
            ),
            // Not sent: its zone is not enabled, and an IPv6 address the dataplane cannot use.
            instance(
                "i-c1",
                "198.19.0.15",
                "zone-c",
                InstanceHealth::in_service(),
            ),
            instance(
                "i-a3",
                "2001:db8::1",
                "zone-a",
                InstanceHealth::registering(),
            ),
        ],
        health_check: HealthCheck {
            target: "HTTPS:8443/health?deep=1".parse().unwrap(),
            interval: 10,
            timeout: 4,
            unhealthy_threshold: 3,
            healthy_threshold: 5,
        },
        attributes: Attributes {
            servo: elb_contract::Attributes {
                connection_draining: ConnectionDraining {
                    enabled: true,
                    timeout: 45,
                },
                connection_settings: ConnectionSettings { idle_timeout: 120 },
                cross_zone_load_balancing: CrossZone { enabled: true },
            },
            access_log: AccessLog {
                enabled: false,
                s3_bucket_name: None,
                emit_interval: 60,
                s3_bucket_prefix: None,
            },
            additional: vec![],
        },
        policies: vec![
            policy(
                "sticky",
                "LBCookieStickinessPolicyType",
                &[("CookieExpirationPeriod", "60")],
            ),
            policy(
                "tls12",
                "SSLNegotiationPolicyType",
                &[(
                    "Reference-Security-Policy",
                    "ELBSecurityPolicy-TLS-1-2-2017-01",
                )],
            ),
            policy(
                "proxy",
                "ProxyProtocolPolicyType",
                &[("ProxyProtocol", "true")],
            ),
            policy(
                "unused",
                "ProxyProtocolPolicyType",
                &[("ProxyProtocol", "true")],
            ),
        ],
        backend_policies: vec![(3000, vec!["proxy".into()])],
        tags: vec![Tag {
            key: "env".into(),
            value: "prod".into(),
        }],
    }
}

fn data(lbs: Vec<LoadBalancer>) -> ServoConfigData {
    ServoConfigData {
        version: 42,
        lbs: lbs
            .into_iter()
            .enumerate()
            .map(|(i, lb)| ServoLb {
                lb,
                vip: std::net::Ipv4Addr::new(198, 18, 0, 11 + i as u8),
                assigned_at: i as i64,
                service: [("zone-b".to_string(), ZoneService::Serving)].into(),
            })
            .collect(),
        request_ids: vec!["91f28b17-0000-4000-8000-000000000001".into()],
        security_groups: Default::default(),
    }
}

fn servo_settings() -> elb_userspace::config::ServoConfig {
    ConfigFile::parse("interfaces = [\"p0\", \"b0\"]\nzone = \"zone-a\"")
        .unwrap()
        .settings
}

#[test]
fn controls_document_round_trips_into_the_servos_types() {
    let doc = views::document("zone-a", &data(vec![web()]), 2, &certificates());
    assert_eq!(doc.load_balancers.len(), 1);
    let sent = &doc.load_balancers[0];
    let policies: Vec<&str> = sent.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        policies,
        ["sticky", "tls12", "proxy"],
        "the policies in effect"
    );
    assert_eq!(sent.certificates.len(), 1);
    let engine: Vec<u16> = sent
        .listeners
        .iter()
        .filter(|l| sent.served_by_engine(l))
        .map(|l| l.load_balancer_port)
        .collect();
    assert_eq!(engine, [80, 443, 465], "sticky HTTP, HTTPS and SSL");
    assert!(sent.proxy_protocol(3000) && !sent.proxy_protocol(8080));
    let ids: Vec<(&str, bool)> = sent
        .instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i.health_check))
        .collect();
    assert_eq!(
        ids,
        [
            ("i-a1", true),
            ("i-a2", true),
            ("i-b1", false),
            ("i-b2", false)
        ]
    );
    assert_eq!(sent.listeners.len(), 4);
    assert_eq!(
        sent.health_check,
        Some(web().health_check),
        "the target keeps its path and query"
    );

    // Over the wire, decoded the way the servo does, one load balancer at a time.
    let json = serde_json::to_vec(&doc).unwrap();
    let raw: RawDocument = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        (raw.version, raw.request_ids.clone()),
        (42, doc.request_ids.clone())
    );
    let received = decode_document(&raw);
    assert_eq!(received, vec![Received::Decoded(sent.clone())]);
    let admitted = admission::admit(&servo_settings(), &received, &[]);
    assert!(admitted.refused.is_empty(), "{:?}", admitted.refused);
    assert_eq!(admitted.served, doc.load_balancers, "every field intact");
    let warm = admitted.served[0].instances[0].health.clone();
    assert_eq!(
        warm,
        Some(InstanceHealth::in_service()),
        "own zone: the state to start from"
    );
}

#[test]
fn a_load_balancer_the_servo_cannot_decode_is_refused_alone() {
    let mut other = web();
    other.id = "lb-2".into();
    other.key.name = "api".into();
    let doc = views::document("zone-a", &data(vec![web(), other]), 2, &certificates());
    let mut value = serde_json::to_value(&doc).unwrap();
    // What a newer control might send: a member this servo does not know.
    value["LoadBalancers"][0]["Listeners"][0]["Weight"] = 3.into();
    let raw: RawDocument = serde_json::from_value(value).unwrap();
    let admitted = admission::admit(&servo_settings(), &decode_document(&raw), &[]);
    let served: Vec<&str> = admitted
        .served
        .iter()
        .map(|l| l.load_balancer_name.as_str())
        .collect();
    assert_eq!(served, ["web-123456789012"]);
    assert_eq!(admitted.refused.len(), 1);
    assert_eq!(admitted.refused[0].load_balancer_name, "api-123456789012");
    assert!(
        admitted.refused[0]
            .reason
            .contains("cannot be decoded: unknown field `Weight`"),
        "{:?}",
        admitted.refused
    );
    // The default health check of a load balancer created without one is the contract's.
    assert_eq!(
        HealthCheck::default_for_port(NonZeroU16::new(8080).unwrap())
            .target
            .to_string(),
        "TCP:8080"
    );
}

#[test]
fn without_keys_a_servo_refuses_https_and_ssl_listeners_saying_why() {
    // What control sends a servo connected over plain HTTP: no certificate keys.
    let doc = views::document("zone-a", &data(vec![web()]), 2, &views::Certificates::new());
    assert!(doc.load_balancers[0].certificates.is_empty());
    let raw: RawDocument = serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
    let admitted = admission::admit(&servo_settings(), &decode_document(&raw), &[]);
    assert!(admitted.served.is_empty());
    let reason = &admitted.refused[0].reason;
    assert!(
        reason.contains("carries no key") && reason.contains("--control https://"),
        "{reason}"
    );
}

#[test]
fn security_groups_travel_with_their_rules_and_become_allow_lists() {
    use elb_contract::security_group::{IngressRule, Ipv4Cidr};
    let mut guarded = web();
    guarded.security_groups = vec!["sg-1".into(), "sg-gone".into()];
    let mut d = data(vec![guarded]);
    let cidr = |c: &str| c.parse::<Ipv4Cidr>().unwrap();
    d.security_groups.insert(
        "sg-1".into(),
        vec![
            IngressRule::tcp(80, 80, cidr("198.18.1.0/24")),
            IngressRule::tcp(443, 465, cidr("10.0.0.0/8")),
        ],
    );
    let doc = views::document("zone-a", &d, 2, &certificates());
    let sent = &doc.load_balancers[0];
    let groups = sent.security_groups.as_ref().expect("groups sent");
    assert_eq!(groups.len(), 2);
    assert!(
        groups[1].ingress.is_empty(),
        "a group control holds no rules for admits no one"
    );

    let raw: RawDocument = serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
    let admitted = admission::admit(&servo_settings(), &decode_document(&raw), &[]);
    assert!(admitted.refused.is_empty(), "{:?}", admitted.refused);
    assert_eq!(&admitted.served[0], sent, "rules intact");
    // The servo's allow lists: per VIP and listener port, from the contract's rule.
    let entries: Vec<String> = elb_userspace::agent::security_groups::entries(&admitted.served[0])
        .iter()
        .map(|e| format!("{}:{} {}", e.vip, e.port, e.block))
        .collect();
    assert_eq!(
        entries,
        [
            "198.18.0.11:80 198.18.1.0/24",
            "198.18.0.11:443 10.0.0.0/8",
            "198.18.0.11:465 10.0.0.0/8",
        ],
        "port 30000 (another listener) is admitted by no rule: no entry, nobody"
    );
    // A load balancer without groups is sent without the member: open, as before.
    let open = views::document("zone-a", &data(vec![web()]), 2, &certificates());
    assert!(open.load_balancers[0].security_groups.is_none());
    assert!(
        !serde_json::to_string(&open)
            .unwrap()
            .contains("SecurityGroups")
    );
}
