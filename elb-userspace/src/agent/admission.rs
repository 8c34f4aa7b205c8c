//! Admission: which of the load balancers a servo gets (from control or its file) it serves.
//!
//! Each load balancer is judged on its own, so one the servo cannot serve never blocks the
//! others:
//! - it must decode, and pass the contract's [`LoadBalancer::validate`] (the ELB model's rules,
//!   the same check control runs);
//! - it must fit this servo: at least one VIP, no listener on the port of the servo's own
//!   metrics endpoint on that address, an S3 endpoint (`[access_logs]`) if it has access logs
//!   enabled, at most [`MAX_SET_BACKENDS`] instances, and room in the
//!   maps ([`MAX_LISTENERS`] listeners, [`MAX_BACKENDS`] backends, the security groups' allow
//!   list entries over all load balancers);
//! - the listeners the userspace engine serves must build: the document carries each HTTPS/SSL
//!   listener's certificate and key, they load, policies resolve ([`super::l7::check`]);
//! - its `(VIP, port)` endpoints must be free: the first load balancer to claim one keeps it.
//!
//! A refused load balancer that the servo served before keeps its last accepted version (a
//! change the servo cannot apply does not take down what works); otherwise it is not served.
//! Every refusal carries its reason, for the log and for control.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use elb_common::{MAX_BACKENDS, MAX_LISTENERS, MAX_SET_BACKENDS};
use elb_contract::{LoadBalancer, wire::Refusal};

use super::security_groups;
use crate::config::{Received, ServoConfig};

/// What the servo serves, and what it refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The load balancers to serve, in the order received.
    pub served: Vec<LoadBalancer>,
    /// The load balancers refused, with why, by name.
    pub refused: Vec<Refusal>,
}

/// The servo's own limits and reservations for one load balancer.
fn limits(settings: &ServoConfig, lb: &LoadBalancer) -> Vec<String> {
    let mut out = Vec::new();
    if lb.vips.is_empty() {
        out.push("Vips must list at least one address of this servo".to_string());
    }
    if let Ok(metrics) = settings.metrics_listen.parse::<SocketAddr>() {
        for l in &lb.listeners {
            let clash = lb.vips.iter().find(|vip| {
                metrics.port() == l.load_balancer_port
                    && (metrics.ip().is_unspecified()
                        || metrics.ip() == std::net::IpAddr::V4(**vip))
            });
            if let Some(vip) = clash {
                out.push(format!(
                    "LoadBalancerPort {} on VIP {vip} is this servo's own metrics endpoint \
                     (metrics_listen {}); the servo reserves that port",
                    l.load_balancer_port, settings.metrics_listen
                ));
            }
        }
    }
    if lb.access_log.is_some() && settings.access_logs.is_none() {
        out.push(
            "access logs are enabled but this servo has nowhere to send them (no [access_logs] \
             in its configuration)"
                .to_string(),
        );
    }
    if lb.instances.len() > MAX_SET_BACKENDS {
        out.push(format!(
            "{} instances are registered; a servo's backend sets hold at most {MAX_SET_BACKENDS}",
            lb.instances.len()
        ));
    }
    out
}

/// The endpoints and map slots taken so far.
#[derive(Default)]
struct Room {
    endpoints: BTreeMap<(Ipv4Addr, u16), String>,
    listeners: usize,
    backends: usize,
    allow_entries: usize,
}

impl Room {
    fn needs(lb: &LoadBalancer) -> (usize, usize) {
        let listeners = lb.vips.len() * lb.listeners.len();
        (listeners, listeners * lb.instances.len())
    }

    /// Why `lb` does not fit beside what was taken, if it does not.
    fn misfit(&self, lb: &LoadBalancer) -> Option<String> {
        for vip in &lb.vips {
            for l in &lb.listeners {
                if let Some(other) = self.endpoints.get(&(*vip, l.load_balancer_port)) {
                    return Some(format!(
                        "{vip}:{} is already served by load balancer {other}",
                        l.load_balancer_port
                    ));
                }
            }
        }
        let (listeners, backends) = Self::needs(lb);
        if self.listeners + listeners > MAX_LISTENERS as usize {
            return Some(format!(
                "the servo's listener map is full ({} of {MAX_LISTENERS} taken, {listeners} needed)",
                self.listeners
            ));
        }
        if self.backends + backends > MAX_BACKENDS as usize {
            return Some(format!(
                "the servo's backend map is full ({} of {MAX_BACKENDS} taken, {backends} needed)",
                self.backends
            ));
        }
        let allow = security_groups::entries(lb).len();
        if self.allow_entries + allow > security_groups::CAPACITY {
            return Some(format!(
                "the servo's security group allow lists are full ({} of {} entries taken, {allow} needed)",
                self.allow_entries,
                security_groups::CAPACITY
            ));
        }
        None
    }

    fn take(&mut self, lb: &LoadBalancer) {
        for vip in &lb.vips {
            for l in &lb.listeners {
                self.endpoints
                    .insert((*vip, l.load_balancer_port), lb.load_balancer_name.clone());
            }
        }
        let (listeners, backends) = Self::needs(lb);
        self.listeners += listeners;
        self.backends += backends;
        self.allow_entries += security_groups::entries(lb).len();
    }
}

/// Judges `received` one by one; `previous` is what the servo serves now (the fallback of a
/// refused load balancer).
pub fn admit(
    settings: &ServoConfig,
    received: &[Received],
    previous: &[LoadBalancer],
) -> Admission {
    let mut room = Room::default();
    let mut names = BTreeSet::new();
    let mut served: Vec<(usize, LoadBalancer)> = Vec::new();
    let mut refused: Vec<(usize, String)> = Vec::new();
    for (i, r) in received.iter().enumerate() {
        if !names.insert(r.name()) {
            refused.push((i, format!("load balancer {} is defined twice", r.name())));
            continue;
        }
        let lb = match r {
            Received::Decoded(lb) => lb,
            Received::Undecodable { error, .. } => {
                refused.push((i, format!("the configuration cannot be decoded: {error}")));
                continue;
            }
        };
        let mut reasons: Vec<String> = match lb.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
        };
        reasons.extend(limits(settings, lb));
        if reasons.is_empty()
            && let Err(why) = super::l7::check(lb)
        {
            reasons.push(why);
        }
        if reasons.is_empty()
            && let Some(why) = room.misfit(lb)
        {
            reasons.push(why);
        }
        if reasons.is_empty() {
            room.take(lb);
            served.push((i, lb.clone()));
        } else {
            refused.push((i, reasons.join("; ")));
        }
    }
    // Refused load balancers keep the version served before, if it still fits beside the
    // accepted ones.
    let mut out = Admission::default();
    for (i, reason) in refused {
        let name = received[i].name();
        let kept = previous
            .iter()
            .find(|p| p.load_balancer_name == name)
            .filter(|p| room.misfit(p).is_none())
            .filter(|_| !served.iter().any(|(_, s)| s.load_balancer_name == name));
        if let Some(p) = kept {
            room.take(p);
            served.push((i, p.clone()));
        }
        out.refused.push(Refusal {
            load_balancer_name: name.to_string(),
            reason,
            serving_previous: kept.is_some(),
        });
    }
    served.sort_by_key(|(i, _)| *i);
    out.served = served.into_iter().map(|(_, lb)| lb).collect();
    out.refused.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServoConfig {
        serde_json::from_value(
            serde_json::json!({"interfaces": ["eth0"], "metrics_listen": "0.0.0.0:9400"}),
        )
        .unwrap()
    }

    fn lb(name: &str, vip: &str, port: u16) -> LoadBalancer {
        serde_json::from_value(serde_json::json!({
            "LoadBalancerName": name,
            "Vips": [vip],
            "Listeners": [{"Protocol": "TCP", "LoadBalancerPort": port, "InstancePort": 80}],
            "Instances": [{"InstanceId": "i-1", "Address": "198.19.0.11"}],
        }))
        .unwrap()
    }

    fn names(lbs: &[LoadBalancer]) -> Vec<&str> {
        lbs.iter().map(|l| l.load_balancer_name.as_str()).collect()
    }

    #[test]
    fn each_load_balancer_is_judged_alone() {
        let mut bad_hc = lb("bad", "198.18.0.1", 81);
        bad_hc.health_check = Some(elb_contract::HealthCheck {
            timeout: 40,
            ..bad_hc.health_check()
        });
        let received = vec![
            Received::Decoded(lb("one", "198.18.0.1", 80)),
            Received::Decoded(bad_hc),
            Received::Undecodable {
                name: "newer".into(),
                error: "unknown field `Weight`".into(),
            },
            Received::Decoded(lb("metrics", "198.18.0.2", 9400)),
            Received::Decoded(lb("clash", "198.18.0.1", 80)),
            Received::Decoded(lb("two", "198.18.0.1", 30000)),
            Received::Decoded(lb("one", "198.18.0.3", 1)),
        ];
        let a = admit(&settings(), &received, &[]);
        assert_eq!(names(&a.served), ["one", "two"]);
        let why: BTreeMap<&str, &str> = a
            .refused
            .iter()
            .map(|r| (r.load_balancer_name.as_str(), r.reason.as_str()))
            .collect();
        assert!(why["bad"].contains("HealthCheck.Timeout"), "{why:?}");
        assert!(
            why["newer"].contains("cannot be decoded: unknown field `Weight`"),
            "{why:?}"
        );
        assert!(why["metrics"].contains("metrics endpoint"), "{why:?}");
        assert!(why["clash"].contains("198.18.0.1:80 is already served by load balancer one"));
        assert!(why["one"].contains("defined twice"));
        assert!(a.refused.iter().all(|r| !r.serving_previous));
    }

    #[test]
    fn a_refused_change_keeps_the_version_served_before() {
        let before = lb("web", "198.18.0.1", 80);
        let mut changed = before.clone();
        changed.listeners[0].load_balancer_port = 9400;
        let a = admit(
            &settings(),
            &[Received::Decoded(changed)],
            std::slice::from_ref(&before),
        );
        assert_eq!(a.served, [before]);
        assert!(a.refused[0].serving_previous);
        // Never served before: not served at all.
        let a = admit(
            &settings(),
            &[Received::Decoded(lb("x", "198.18.0.1", 9400))],
            &[],
        );
        assert!(a.served.is_empty() && !a.refused[0].serving_previous);
    }

    #[test]
    fn access_logs_need_an_endpoint_on_the_servo() {
        let mut logged = lb("logged", "198.18.0.1", 443);
        logged.listeners[0].instance_protocol = elb_contract::Protocol::Ssl;
        logged.access_log = Some(
            serde_json::from_value(
                serde_json::json!({"S3BucketName": "logs", "AccountId": "123456789012"}),
            )
            .unwrap(),
        );
        let received = [Received::Decoded(logged)];
        let a = admit(&settings(), &received, &[]);
        assert!(
            a.refused[0].reason.contains("no [access_logs]"),
            "{:?}",
            a.refused
        );
        let mut with_s3 = settings();
        with_s3.access_logs = Some(
            serde_json::from_value(serde_json::json!({"s3": {
                "endpoint": "http://127.0.0.1:9", "access_key_id": "k", "secret_access_key": "s"
            }}))
            .unwrap(),
        );
        assert_eq!(names(&admit(&with_s3, &received, &[]).served), ["logged"]);
    }

    #[test]
    fn servo_limits() {
        let mut big = lb("big", "198.18.0.1", 80);
        big.instances = (0..=MAX_SET_BACKENDS)
            .map(|n| elb_contract::Instance {
                instance_id: format!("i-{n}"),
                address: Ipv4Addr::from(0xC613_0000 + n as u32),
                zone: None,
                health_check: true,
                health: None,
            })
            .collect();
        let mut novip = lb("novip", "198.18.0.1", 81);
        novip.vips.clear();
        let a = admit(
            &settings(),
            &[Received::Decoded(big), Received::Decoded(novip)],
            &[],
        );
        assert!(a.served.is_empty());
        assert!(
            a.refused[0].reason.contains("at most 1024"),
            "{:?}",
            a.refused
        );
        assert!(a.refused[1].reason.contains("Vips"), "{:?}", a.refused);
        // A metrics endpoint on loopback reserves nothing on VIPs.
        let mut local = settings();
        local.metrics_listen = "127.0.0.1:9400".into();
        let a = admit(
            &local,
            &[Received::Decoded(lb("m", "198.18.0.1", 9400))],
            &[],
        );
        assert_eq!(names(&a.served), ["m"]);
    }
}
