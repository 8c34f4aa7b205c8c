//! A whole control server, as `elb-control serve` runs it: the store, the Query API and servo
//! protocol listener, the DNS server, the assignment task and the version followers.
//! [`Service::start`] binds everything (so the caller learns the addresses), [`Service::run`]
//! serves until `shutdown` and then stops every part in order. Tests start it in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::assign::{self, AssignmentSettings};
use crate::cloud::ec2::Ec2Cloud;
use crate::config::{ConfigError, ServiceConfig};
use crate::dns::{DnsServer, DnsSettings, Resolver};
use crate::inventory::Inventory;
use crate::server::{self, AppState};
use crate::store::{Store, StoreError};

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Database URL (`sqlite:PATH` or `postgres://...`).
    pub db: String,
    /// API address (port 0 picks one).
    pub listen: String,
    /// TLS address and control's identity, if everything is also served over TLS.
    pub tls: Option<(String, crate::tls::ControlTls)>,
    /// The service's settings.
    pub config: ServiceConfig,
    /// DNS address (UDP and TCP) for load balancer names, if DNS is served.
    pub dns_listen: Option<String>,
    /// TTL of the A records.
    pub dns_ttl: u32,
    /// Address of the Prometheus endpoint (`GET /metrics`), if served.
    pub metrics_listen: Option<String>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve DNS on {addr}: {source}")]
    Dns {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the API: {0}")]
    Serve(#[source] std::io::Error),
}

/// A started service.
#[derive(Debug)]
pub struct Service {
    store: Store,
    state: AppState,
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<(TcpListener, crate::tls::ControlTls)>,
    dns: Option<DnsServer>,
    metrics: Option<(TcpListener, SocketAddr)>,
}

impl Service {
    /// Opens the store, binds the API (and DNS) listeners.
    pub async fn start(options: ServeOptions) -> Result<Self, ServiceError> {
        let config = options.config;
        config.validate()?;
        let store = Store::open(&options.db).await?;
        let inventory = match Ec2Cloud::new(&config.cloud)? {
            Some(ec2) => Inventory::Cloud(Arc::new(ec2)),
            None => Inventory::BuiltIn(store.clone()),
        };
        let listener =
            TcpListener::bind(&options.listen)
                .await
                .map_err(|source| ServiceError::Listen {
                    addr: options.listen.clone(),
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServiceError::Listen {
                addr: options.listen.clone(),
                source,
            })?;
        let tls = match options.tls {
            None => None,
            Some((tls_addr, identity)) => {
                let l =
                    TcpListener::bind(&tls_addr)
                        .await
                        .map_err(|source| ServiceError::Listen {
                            addr: tls_addr.clone(),
                            source,
                        })?;
                Some((l, identity))
            }
        };
        let dns = match &options.dns_listen {
            None => None,
            Some(dns_addr) => {
                let resolver = Resolver::new(
                    store.clone(),
                    DnsSettings {
                        zone: config.dns_zone(),
                        ttl: options.dns_ttl,
                        servo_timeout_ms: config.servo.timeout_ms(),
                        lookup_timeout: Duration::from_secs(2),
                    },
                );
                let server = DnsServer::start(dns_addr, Arc::new(resolver))
                    .await
                    .map_err(|source| ServiceError::Dns {
                        addr: dns_addr.clone(),
                        source,
                    })?;
                tracing::info!(addr = %server.addr, zone = %config.dns_zone(), ttl = options.dns_ttl, "serving DNS for load balancer names");
                Some(server)
            }
        };
        let metrics = match &options.metrics_listen {
            None => None,
            Some(m) => {
                let error = |source| ServiceError::Metrics {
                    addr: m.clone(),
                    source,
                };
                let listener = TcpListener::bind(m).await.map_err(error)?;
                let addr = listener.local_addr().map_err(error)?;
                tracing::info!(%addr, "serving the load balancers' metrics at /metrics");
                Some((listener, addr))
            }
        };
        let state = AppState::new(config, store.clone(), inventory);
        Ok(Self {
            store,
            state,
            listener,
            addr,
            tls,
            dns,
            metrics,
        })
    }

    /// The TLS address and the SHA-256 of control's certificate, if TLS is served.
    pub fn tls_addr(&self) -> Option<(SocketAddr, &str)> {
        let (l, identity) = self.tls.as_ref()?;
        Some((l.local_addr().ok()?, identity.sha256.as_str()))
    }

    /// The API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The DNS address, if DNS is served.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|d| d.addr)
    }

    /// The Prometheus endpoint's address, if metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// The shared state (tests drive the router or the store with it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish, stops DNS and
    /// the assignment task (after its pass) and closes the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let Self {
            store,
            state,
            listener,
            tls,
            dns,
            metrics,
            ..
        } = self;
        let tls_server = match tls {
            None => None,
            Some((l, identity)) => {
                let l = crate::tls::TlsListener::new(l, identity.config)
                    .map_err(ServiceError::Serve)?;
                Some(tokio::spawn(server::run_tls(l, state.clone())))
            }
        };
        let metrics = metrics
            .map(|(listener, _)| tokio::spawn(crate::metrics::serve(listener, state.clone())));
        let poller = tokio::spawn(store.clone().poll_version(server::VERSION_POLL));
        let notifications = tokio::spawn(store.clone().follow_notifications());
        let assigner = tokio::spawn(assign::run(
            store.clone(),
            AssignmentSettings {
                servos_per_zone: state.config().servo.servos_per_zone,
                servo_timeout: state.config().servo.timeout,
            },
            state.assignment_wake(),
            state.shutdown_signal(),
        ));
        let refresher = match state.inventory() {
            Inventory::Cloud(ec2) => Some(tokio::spawn(crate::cloud::refresh::run(
                store.clone(),
                ec2.clone(),
                state.config().cloud.refresh,
                state.shutdown_signal(),
            ))),
            Inventory::BuiltIn(_) => None,
        };
        let served = server::run(listener, state.clone(), shutdown).await;
        state.begin_shutdown();
        if let Some(t) = tls_server
            && let Ok(Err(e)) = t.await
        {
            tracing::warn!(error = %e, "the TLS listener ended with an error");
        }
        if let Some(dns) = dns {
            dns.shutdown().await;
        }
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // The assignment task finishes its pass (a transaction) before it stops.
        if let Err(e) = assigner.await {
            tracing::warn!(error = %e, "the assignment task ended abnormally");
        }
        if let Some(refresher) = refresher {
            let _ = refresher.await;
        }
        poller.abort();
        notifications.abort();
        store.close().await;
        tracing::info!("stopped");
        served.map_err(ServiceError::Serve)
    }
}
