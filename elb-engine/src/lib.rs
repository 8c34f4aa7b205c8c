//! The servo's userspace engine: what L4 forwarding in XDP cannot do.
//!
//! - HTTPS and SSL listeners: TLS termination with the listener's certificate and SSL negotiation
//!   policy (rustls), re-encryption to HTTPS/SSL backends, with the backend's key verified when a
//!   `BackendServerAuthenticationPolicy` is set.
//! - HTTP semantics for HTTPS listeners and for HTTP listeners that need them: X-Forwarded-For,
//!   -Proto and -Port on every request, LB and application cookie stickiness (`AWSELB`), 503 when
//!   no instance is InService, per-request round robin, keep-alive on both sides.
//! - SSL (and TCP, when the backends need TLS) listeners: per-connection round robin, bytes
//!   copied both ways.
//!
//! The agent drives it: [`Engine::apply`] with the listeners to serve (added, changed and removed
//! in place: a replaced certificate reaches the next connection, existing ones keep theirs),
//! [`Engine::update_backends`] from its one health engine, [`Engine::shutdown`] at the end. The
//! XDP program hands these listeners' packets to the local stack, where the engine's sockets on
//! VIP:port receive them.
//!
//! ```no_run
//! use std::time::Duration;
//! use elb_engine::{policy, *};
//!
//! # async fn agent(chain_pem: String, key_pem: String) -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new()?; // one worker thread per CPU, in the caller's network namespace
//! engine.apply(vec![ListenerConfig {
//!     name: "web-123456789012:443".into(),
//!     bind: vec!["198.18.0.1:443".parse()?],
//!     protocol: FrontendProtocol::Https,
//!     backend_protocol: BackendProtocol::Http,
//!     tls: Some(TlsSettings {
//!         certificate_chain_pem: chain_pem,
//!         private_key_pem: key_pem,
//!         policy: policy::resolve(policy::PolicySpec::Predefined(policy::DEFAULT_POLICY))?,
//!     }),
//!     backend_authentication: BackendAuthentication::default(),
//!     stickiness: Stickiness::LbCookie { expiration: Some(Duration::from_secs(300)) },
//!     idle_timeout: Duration::from_secs(60),
//!     draining_timeout: Some(Duration::from_secs(300)),
//!     proxy_protocol: false,
//! }])?;
//! // From the health engine, on every change:
//! engine.update_backends(
//!     "web-123456789012:443",
//!     &[Backend {
//!         instance_id: "i-0a1b2c3d".into(),
//!         addr: "10.0.1.11:80".parse()?,
//!         state: BackendState::InService,
//!     }],
//! )?;
//! // At exit:
//! engine.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

pub mod backends;
pub mod config;
pub mod http;
pub mod io;
pub mod listener;
pub mod observe;
/// The SSL negotiation policy table (the contract's: control refuses at the API what the engine
/// cannot offer).
pub use elb_contract::ssl_policy as policy;
pub mod rsa;
pub mod stream;
pub mod tls;
pub mod workers;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use config::{
    Backend, BackendAuthentication, BackendProtocol, BackendState, FrontendProtocol,
    ListenerConfig, Stickiness, TlsSettings,
};
use listener::{ObserverSlot, RunningListener, Settings};
pub use observe::{Observer, RequestRecord, StatsSnapshot};

/// What went wrong with one listener.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid (the reason says what to change).
    #[error("listener {listener}: {reason}")]
    Invalid {
        /// The listener.
        listener: String,
        /// What is wrong.
        reason: String,
    },
    /// A bind address could not be bound.
    #[error("listener {listener}: cannot listen on {addr}: {source}")]
    Bind {
        /// The listener.
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The name appears twice in one configuration.
    #[error("listener {0} is configured twice")]
    Duplicate(String),
    /// No listener of that name runs.
    #[error("no listener named {0}")]
    UnknownListener(String),
    /// The engine's worker threads could not be started.
    #[error("cannot start the engine's worker threads: {0}")]
    Start(#[source] std::io::Error),
}

/// Listeners [`Engine::apply`] could not apply. Every other listener was applied; one that
/// failed keeps its previous configuration if it had one.
#[derive(Debug, thiserror::Error)]
#[error("{} listener(s) not applied: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ApplyError(pub Vec<EngineError>);

/// A backend as the engine sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    /// Instance id.
    pub instance_id: String,
    /// Address.
    pub addr: SocketAddr,
    /// InService or Draining.
    pub state: BackendState,
    /// Requests (HTTP) or connections (SSL/TCP) in flight to it.
    pub active: usize,
}

/// A listener as the engine runs it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    /// Name.
    pub name: String,
    /// Addresses it listens on.
    pub addrs: Vec<SocketAddr>,
    /// Client connections accepted.
    pub connections: u64,
    /// Client connections open.
    pub open_connections: usize,
    /// Requests (HTTP) or connections forwarded (SSL/TCP).
    pub requests: u64,
    /// Its backends.
    pub backends: Vec<BackendStatus>,
    /// Its counters and gauges (AWS/ELB's metrics; see [`observe`]).
    pub stats: StatsSnapshot,
}

/// The engine: a set of listeners, each with its backends, served by worker threads of its own
/// (see [`workers`]). Cheap to clone (a handle); the workers stop with the last handle.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    listeners: Mutex<HashMap<String, RunningListener>>,
    workers: workers::Workers,
    observer: ObserverSlot,
}

impl Engine {
    /// An engine with no listener and one worker per CPU. Its threads inherit the caller's
    /// network namespace.
    pub fn new() -> std::io::Result<Self> {
        Self::with_workers(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// An engine with `workers` worker threads (at least one).
    pub fn with_workers(workers: usize) -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                listeners: Mutex::new(HashMap::new()),
                workers: workers::Workers::start(workers)?,
                observer: ObserverSlot::default(),
            }),
        })
    }

    /// Sets (or, with `None`, removes) the observer that receives a record of every request
    /// (HTTP/HTTPS) or connection (SSL/TCP) of the listeners it wants records of; connections
    /// accepted from now on use it. See [`observe`].
    pub fn set_observer(&self, observer: Option<Arc<dyn Observer>>) {
        *self.inner.observer.write().expect("observer lock") = observer;
    }

    /// Makes the engine serve exactly `listeners`: new ones are bound and started, changed ones
    /// updated in place (certificate, policy, stickiness, timeouts apply to the next connection
    /// or request; bind addresses are added and removed), missing ones stopped (their
    /// connections end).
    pub fn apply(&self, listeners: Vec<ListenerConfig>) -> Result<(), ApplyError> {
        let mut failures = Vec::new();
        let workers = &self.inner.workers;
        let mut running = self.inner.listeners.lock().expect("listeners lock");
        let mut wanted: Vec<String> = Vec::new();
        for config in listeners {
            if wanted.contains(&config.name) {
                failures.push(EngineError::Duplicate(config.name.clone()));
                continue;
            }
            wanted.push(config.name.clone());
            let name = config.name.clone();
            if running
                .get(&name)
                .is_some_and(|r| r.shared.settings().config == config)
            {
                continue;
            }
            let settings = match Settings::build(&config) {
                Ok(s) => s,
                Err(reason) => {
                    failures.push(EngineError::Invalid {
                        listener: name,
                        reason,
                    });
                    continue;
                }
            };
            let result = match running.get_mut(&name) {
                Some(r) => r.update(settings, workers),
                None => RunningListener::start(settings, workers, self.inner.observer.clone()).map(|r| {
                    tracing::info!(listener = %name, addrs = ?r.local_addrs(), "listener started");
                    running.insert(name.clone(), r);
                }),
            };
            if let Err((addr, source)) = result {
                failures.push(EngineError::Bind {
                    listener: name,
                    addr,
                    source,
                });
            }
        }
        let gone: Vec<String> = running
            .keys()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut r) = running.remove(&name) {
                r.stop();
                tracing::info!(listener = %name, "listener stopped");
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ApplyError(failures))
        }
    }

    /// Replaces a listener's backends with what the health engine says now: InService ones get
    /// new work, Draining ones finish what they have (up to the listener's draining timeout),
    /// and backends no longer listed are cut at once.
    pub fn update_backends(&self, listener: &str, backends: &[Backend]) -> Result<(), EngineError> {
        let running = self.inner.listeners.lock().expect("listeners lock");
        let r = running
            .get(listener)
            .ok_or_else(|| EngineError::UnknownListener(listener.to_string()))?;
        let draining = r.shared.settings().config.draining_timeout;
        r.shared
            .backends
            .update(backends, draining, self.inner.workers.handle(0));
        Ok(())
    }

    /// The addresses a listener listens on (with the ports the system chose for port 0).
    pub fn local_addrs(&self, listener: &str) -> Option<Vec<SocketAddr>> {
        let running = self.inner.listeners.lock().expect("listeners lock");
        running.get(listener).map(RunningListener::local_addrs)
    }

    /// Every listener's state.
    pub fn status(&self) -> Vec<ListenerStatus> {
        let running = self.inner.listeners.lock().expect("listeners lock");
        let mut out: Vec<ListenerStatus> = running
            .values()
            .map(|r| {
                let stats = r.shared.stats.snapshot();
                ListenerStatus {
                    name: r.shared.name.clone(),
                    addrs: r.local_addrs(),
                    connections: stats.connections,
                    open_connections: r.shared.open_connections(),
                    requests: stats.requests,
                    backends: r
                        .shared
                        .backends
                        .all()
                        .iter()
                        .filter_map(|b| {
                            Some(BackendStatus {
                                instance_id: b.instance_id.clone(),
                                addr: b.addr,
                                state: b.state()?,
                                active: b.active(),
                            })
                        })
                        .collect(),
                    stats,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Stops accepting, lets open connections finish for up to `grace`, then ends the rest and
    /// removes every listener.
    pub async fn shutdown(&self, grace: Duration) {
        let shared: Vec<_> = {
            let mut running = self.inner.listeners.lock().expect("listeners lock");
            for r in running.values_mut() {
                r.stop_accepting();
            }
            running.values().map(|r| r.shared.clone()).collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        while shared.iter().any(|s| s.open_connections() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut running = self.inner.listeners.lock().expect("listeners lock");
        for (_, mut r) in running.drain() {
            r.stop();
        }
    }
}

/// Serves `listeners` until `shutdown` resolves, then stops gracefully (open connections get
/// `grace` to finish). Backends are fed through the returned handle's
/// [`Engine::update_backends`] by calling `with_engine` once the listeners run.
pub async fn run(
    listeners: Vec<ListenerConfig>,
    with_engine: impl FnOnce(&Engine),
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ApplyError> {
    let engine = Engine::new().map_err(|e| ApplyError(vec![EngineError::Start(e)]))?;
    engine.apply(listeners)?;
    with_engine(&engine);
    shutdown.await;
    engine.shutdown(grace).await;
    Ok(())
}
