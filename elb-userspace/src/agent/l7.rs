//! The agent's side of the userspace engine ([`elb_engine`]): which listeners it serves, what
//! the XDP program does with each listener's packets, and keeping the engine in line with the
//! configuration and the health engine.
//!
//! The split is the contract's ([`LoadBalancer::served_by_engine`]): HTTPS and SSL listeners,
//! HTTPS/SSL back ends and HTTP listeners with stickiness run in the engine on VIP:port, and
//! the XDP program hands their packets to the local stack ([`LISTENER_F_LOCAL`]); the others
//! stay in XDP, with a PROXY v1 header for the back ends that ask for one
//! ([`LISTENER_F_PROXY_V1`]).
//!
//! Backends come from the reconciler's states, so the engine follows the same health engine,
//! zone rule and draining deadlines as XDP: ACTIVE is InService, DRAINING is Draining, REMOVED
//! is left out (the engine cuts it).

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use elb_common::{BACKEND_ACTIVE, BACKEND_DRAINING, LISTENER_F_LOCAL, LISTENER_F_PROXY_V1};
use elb_contract::{
    Listener, LoadBalancer, Protocol, Stickiness as ContractStickiness, wire::Refusal,
};
use elb_engine::{
    Backend, BackendAuthentication, BackendProtocol, BackendState, Engine, FrontendProtocol,
    ListenerConfig, Stickiness, TlsSettings, policy,
};
use tracing::{error, info};

use super::reconcile::{MapWriter, Reconciler};
use crate::config::ServoConfig;

/// The XDP listener flags of `listener` of `lb`.
pub fn listener_flags(lb: &LoadBalancer, listener: &Listener) -> u32 {
    if lb.served_by_engine(listener) {
        LISTENER_F_LOCAL
    } else if lb.proxy_protocol(listener.instance_port) {
        LISTENER_F_PROXY_V1
    } else {
        0
    }
}

/// The engine's name of a listener.
fn listener_name(lb: &LoadBalancer, port: u16) -> String {
    super::observe::engine_listener_name(&lb.load_balancer_name, port)
}

fn frontend(p: Protocol) -> FrontendProtocol {
    match p {
        Protocol::Http => FrontendProtocol::Http,
        Protocol::Https => FrontendProtocol::Https,
        Protocol::Tcp => FrontendProtocol::Tcp,
        Protocol::Ssl => FrontendProtocol::Ssl,
    }
}

fn backend(p: Protocol) -> BackendProtocol {
    match p {
        Protocol::Http => BackendProtocol::Http,
        Protocol::Https => BackendProtocol::Https,
        Protocol::Tcp => BackendProtocol::Tcp,
        Protocol::Ssl => BackendProtocol::Ssl,
    }
}

/// The engine listeners of `lb`, or why one cannot be built (a certificate the document does
/// not carry, a policy that does not resolve).
pub fn listener_configs(lb: &LoadBalancer) -> Result<Vec<ListenerConfig>, String> {
    let attrs = &lb.attributes;
    let mut out = Vec::new();
    for l in lb.listeners.iter().filter(|l| lb.served_by_engine(l)) {
        let port = l.load_balancer_port;
        let tls = if l.protocol.is_secure() {
            let arn = l.ssl_certificate_id.as_deref().unwrap_or_default();
            let cert = lb.certificate(arn).ok_or_else(|| {
                format!(
                    "the {} listener on port {port} needs certificate {arn}, and the configuration \
                     carries no key for it (control sends certificate keys only to servos \
                     connected to its TLS listener: run the servo with --control https://... and \
                     credentials that pin control's certificate)",
                    l.protocol
                )
            })?;
            let resolved = policy::resolve(lb.ssl_negotiation(port))
                .map_err(|e| format!("listener on port {port}: SSL negotiation policy: {e}"))?;
            Some(TlsSettings {
                certificate_chain_pem: cert.certificate_chain.clone(),
                private_key_pem: cert.private_key.clone(),
                policy: resolved,
            })
        } else {
            None
        };
        let stickiness = match lb.stickiness(port) {
            Some(ContractStickiness::LbCookie { expiration_secs }) => Stickiness::LbCookie {
                expiration: expiration_secs.filter(|s| *s > 0).map(Duration::from_secs),
            },
            Some(ContractStickiness::AppCookie { cookie_name }) => {
                Stickiness::AppCookie { cookie_name }
            }
            None => Stickiness::None,
        };
        let public_keys = if l.instance_protocol.is_secure() {
            lb.backend_public_keys(l.instance_port)
        } else {
            Vec::new()
        };
        out.push(ListenerConfig {
            name: listener_name(lb, port),
            bind: lb
                .vips
                .iter()
                .map(|vip| SocketAddr::V4(SocketAddrV4::new(*vip, port)))
                .collect(),
            protocol: frontend(l.protocol),
            backend_protocol: backend(l.instance_protocol),
            tls,
            backend_authentication: BackendAuthentication { public_keys },
            stickiness,
            idle_timeout: Duration::from_secs(u64::from(
                attrs.connection_settings.idle_timeout.max(1),
            )),
            draining_timeout: attrs
                .connection_draining
                .enabled
                .then(|| Duration::from_secs(u64::from(attrs.connection_draining.timeout))),
            proxy_protocol: !l.protocol.is_http_family() && lb.proxy_protocol(l.instance_port),
        });
    }
    Ok(out)
}

/// Whether the engine can serve `lb` as given: its listeners build, certificates and keys load,
/// policies resolve. Admission refuses a load balancer that fails, with the reason.
pub fn check(lb: &LoadBalancer) -> Result<(), String> {
    for config in listener_configs(lb)? {
        elb_engine::listener::Settings::build(&config).map_err(|e| {
            format!(
                "listener on port {}: {e}",
                config.bind.first().map_or(0, SocketAddr::port)
            )
        })?;
    }
    Ok(())
}

/// The engine as the agent runs it.
#[derive(Debug, Default)]
pub struct L7 {
    engine: Option<Engine>,
    /// What was applied last (the engine compares too; this skips building when nothing changed).
    applied: Vec<ListenerConfig>,
    /// Backends last given to each listener.
    backends: BTreeMap<String, Vec<Backend>>,
    /// Load balancers the engine could not serve (a bind failed), with why.
    failures: BTreeMap<String, String>,
    /// Counts the engine's listeners and records their access logs, once the engine starts.
    observe: Option<std::sync::Arc<super::observe::Observe>>,
}

impl L7 {
    /// An engine driver whose engine, once started, reports to `observe`.
    pub fn observed_by(observe: std::sync::Arc<super::observe::Observe>) -> Self {
        Self {
            observe: Some(observe),
            ..Self::default()
        }
    }

    /// Load balancers the engine could not serve, as refusals.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.failures
            .iter()
            .map(|(lb, reason)| Refusal {
                load_balancer_name: lb.clone(),
                reason: reason.clone(),
                serving_previous: false,
            })
            .collect()
    }

    /// Brings the engine in line with `cfg` (its listeners) and the reconciler's backend states.
    pub fn sync<W: MapWriter>(&mut self, cfg: &ServoConfig, reconciler: &Reconciler<W>) {
        let mut wanted = Vec::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for lb in &cfg.load_balancers {
            match listener_configs(lb) {
                Ok(configs) => {
                    for c in configs {
                        owner.insert(c.name.clone(), lb.load_balancer_name.clone());
                        wanted.push(c);
                    }
                }
                // Admission checked it; a failure here is a bug, not a user error.
                Err(e) => {
                    error!(load_balancer = %lb.load_balancer_name, error = %e, "engine listeners not built")
                }
            }
        }
        if wanted != self.applied {
            if self.engine.is_none() && !wanted.is_empty() {
                match Engine::new() {
                    Ok(e) => {
                        info!("userspace engine started (HTTPS/SSL listeners, HTTP stickiness)");
                        if let Some(o) = &self.observe {
                            o.attach_engine(&e);
                        }
                        self.engine = Some(e);
                    }
                    Err(e) => {
                        error!(error = %e, "cannot start the userspace engine");
                        return;
                    }
                }
            }
            if let Some(engine) = &self.engine {
                self.failures.clear();
                if let Err(failed) = engine.apply(wanted.clone()) {
                    for e in failed.0 {
                        let name = match &e {
                            elb_engine::EngineError::Invalid { listener, .. }
                            | elb_engine::EngineError::Bind { listener, .. } => listener.clone(),
                            elb_engine::EngineError::Duplicate(l)
                            | elb_engine::EngineError::UnknownListener(l) => l.clone(),
                            elb_engine::EngineError::Start(_) => String::new(),
                        };
                        let lb = owner.get(&name).cloned().unwrap_or(name);
                        error!(load_balancer = %lb, error = %e, "the engine cannot serve a listener");
                        self.failures
                            .entry(lb)
                            .and_modify(|r| {
                                r.push_str("; ");
                                r.push_str(&e.to_string());
                            })
                            .or_insert_with(|| format!("the servo's engine cannot serve it: {e}"));
                    }
                }
                let names: Vec<&String> = wanted.iter().map(|c| &c.name).collect();
                self.backends.retain(|n, _| names.contains(&n));
                if !wanted.is_empty() {
                    info!(listeners = ?names, "engine listeners applied");
                }
            }
            self.applied = wanted;
        }
        let Some(engine) = &self.engine else {
            return;
        };
        for lb in &cfg.load_balancers {
            for l in lb.listeners.iter().filter(|l| lb.served_by_engine(l)) {
                let name = listener_name(lb, l.load_balancer_port);
                let backends = backends_of(reconciler, lb, l.load_balancer_port);
                if self.backends.get(&name) != Some(&backends) {
                    match engine.update_backends(&name, &backends) {
                        Ok(()) => {
                            self.backends.insert(name, backends);
                        }
                        Err(e) => {
                            tracing::debug!(listener = %name, error = %e, "backends not given")
                        }
                    }
                }
            }
        }
    }
}

/// The backends of the listener on `port` of `lb`, from the reconciler's states (the backends of
/// its first VIP: every VIP of a load balancer has the same instances in the same states).
fn backends_of<W: MapWriter>(
    reconciler: &Reconciler<W>,
    lb: &LoadBalancer,
    port: u16,
) -> Vec<Backend> {
    let Some(vip) = lb.vips.first() else {
        return Vec::new();
    };
    let key = elb_common::ListenerKey {
        vip: vip.octets(),
        port,
        proto: elb_common::PROTO_TCP,
        _pad: 0,
    };
    let Some(slot) = reconciler.listeners().get(&key) else {
        return Vec::new();
    };
    let mut out: Vec<Backend> = reconciler
        .backends()
        .values()
        .filter(|b| b.listener_id == slot.id && b.instance.load_balancer == lb.load_balancer_name)
        .filter_map(|b| {
            let state = match b.state {
                BACKEND_ACTIVE => BackendState::InService,
                BACKEND_DRAINING => BackendState::Draining,
                _ => return None,
            };
            Some(Backend {
                instance_id: b.instance.instance_id.clone(),
                addr: SocketAddr::V4(SocketAddrV4::new(b.addr, b.port)),
                state,
            })
        })
        .collect();
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(listeners: serde_json::Value, extra: serde_json::Value) -> LoadBalancer {
        let mut v = serde_json::json!({
            "LoadBalancerName": "web-1",
            "Vips": ["198.18.0.1"],
            "Listeners": listeners,
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let lb: LoadBalancer = serde_json::from_value(v).unwrap();
        lb.validate().unwrap();
        lb
    }

    #[test]
    fn which_listeners_the_engine_serves_and_their_flags() {
        let lb = lb(
            serde_json::json!([
                {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80},
                {"Protocol": "HTTP", "LoadBalancerPort": 81, "InstancePort": 80},
                {"Protocol": "TCP", "LoadBalancerPort": 25, "InstancePort": 2525},
                {"Protocol": "TCP", "LoadBalancerPort": 26, "InstanceProtocol": "SSL", "InstancePort": 2626},
                {"Protocol": "HTTP", "LoadBalancerPort": 82, "InstanceProtocol": "HTTPS", "InstancePort": 443}
            ]),
            serde_json::json!({
                "Policies": [
                    {"PolicyName": "sticky", "PolicyTypeName": "LBCookieStickinessPolicyType",
                     "PolicyAttributes": [{"AttributeName": "CookieExpirationPeriod", "AttributeValue": "60"}]},
                    {"PolicyName": "proxy", "PolicyTypeName": "ProxyProtocolPolicyType",
                     "PolicyAttributes": [{"AttributeName": "ProxyProtocol", "AttributeValue": "true"}]}
                ],
                "ListenerPolicies": [{"LoadBalancerPort": 81, "PolicyNames": ["sticky"]}],
                "BackendServerPolicies": [{"InstancePort": 2525, "PolicyNames": ["proxy"]}]
            }),
        );
        let flags: Vec<u32> = lb
            .listeners
            .iter()
            .map(|l| listener_flags(&lb, l))
            .collect();
        assert_eq!(
            flags,
            [
                0,
                LISTENER_F_LOCAL,
                LISTENER_F_PROXY_V1,
                LISTENER_F_LOCAL,
                LISTENER_F_LOCAL
            ]
        );
        let configs = listener_configs(&lb).unwrap();
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web-1:81", "web-1:26", "web-1:82"]);
        assert_eq!(
            configs[0].stickiness,
            Stickiness::LbCookie {
                expiration: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(
            configs[0].bind,
            ["198.18.0.1:81".parse::<SocketAddr>().unwrap()]
        );
        assert!(check(&lb).is_ok());
    }

    #[test]
    fn a_certificate_the_document_does_not_carry_is_a_refusal() {
        let lb = lb(
            serde_json::json!([{"Protocol": "HTTPS", "LoadBalancerPort": 443, "InstancePort": 80,
                                 "InstanceProtocol": "HTTP",
                                 "SSLCertificateId": "arn:aws:iam::1:server-certificate/x"}]),
            serde_json::json!({}),
        );
        let why = check(&lb).unwrap_err();
        assert!(why.contains("carries no key"), "{why}");
        let mut bad = lb.clone();
        bad.certificates.push(elb_contract::ServerCertificate {
            certificate_id: "arn:aws:iam::1:server-certificate/x".into(),
            certificate_chain: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                .into(),
            private_key: "nonsense".into(),
        });
        let why = check(&bad).unwrap_err();
        assert!(why.starts_with("listener on port 443"), "{why}");
    }
}
