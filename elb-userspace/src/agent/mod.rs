//! The servo agent: loads and attaches the dataplane, health-checks the backends the ELB way,
//! keeps the maps in line with the configuration and the health, sweeps flows, and serves
//! `/metrics`, `/status` and `/health`.
//!
//! One task owns the reconciler and takes, in order, configuration updates, health events and
//! draining deadlines; the sweep and the HTTP endpoint run beside it with their own map handles.

pub mod control;
pub mod metrics;
pub mod reconcile;
pub mod sweep;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::header, response::IntoResponse, routing::get};
use elb_common::{Config, ListenerKey, PROTO_TCP};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use self::{
    metrics::{BackendView, InstanceView, ListenerView, StatusView},
    reconcile::{InstanceKey, Reconciler, state_name, zone_eligible},
    sweep::SweepReport,
};
use crate::{
    config::{ConfigError, ServoConfig},
    dataplane::{self, AttachMode, Dataplane, DataplaneError, LoadOptions, Maps},
    health::{HealthChecker, HealthCheckerOptions, HealthEvent, InstanceHealth, LatencyHistogram},
};

/// What can stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The dataplane could not be loaded, attached or written.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP endpoint could not bind.
    #[error("binding {addr} for /metrics: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A new configuration for the running agent.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    /// The configuration (already validated by the sender).
    pub config: ServoConfig,
    /// Where it came from, for the log line that applies it (`SIGHUP`, a request id...).
    pub origin: String,
    /// Only the servo's own settings changed (a SIGHUP in control mode): keep the load
    /// balancers the agent runs now.
    pub local_only: bool,
}

/// Channels the agent reports on.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Receives the status after every change (the control client reports health from it).
    pub status: Option<watch::Sender<StatusView>>,
}

/// Options of [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Drop pinned state first (established flows are lost).
    pub reset: bool,
    /// How often the flow sweep runs.
    pub sweep_interval: Option<Duration>,
}

/// State shared with the HTTP endpoint.
pub struct Shared {
    status: Mutex<StatusView>,
    sweep: Mutex<SweepReport>,
    maps: Mutex<Maps>,
    latency: Arc<LatencyHistogram>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The agent's HTTP API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .route("/health", get(health_handler))
        .with_state(shared)
}

async fn metrics_handler(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let status = s.status.lock().expect("status lock").clone();
    let sweep = s.sweep.lock().expect("sweep lock").clone();
    let latency = s.latency.snapshot();
    let body = {
        let maps = s.maps.lock().expect("maps lock");
        metrics::render(&status, &maps, &sweep, &latency)
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn status_handler(State(s): State<Arc<Shared>>) -> Json<StatusView> {
    Json(s.status.lock().expect("status lock").clone())
}

async fn health_handler(State(s): State<Arc<Shared>>) -> Json<Vec<InstanceView>> {
    Json(s.status.lock().expect("status lock").instances.clone())
}

/// Attaches interfaces and writes the servo-wide settings (SNAT range and addresses); detaches
/// interfaces that `old` had and `new` does not.
fn apply_servo_settings(
    dp: &mut Dataplane,
    maps: &mut Maps,
    old: Option<&ServoConfig>,
    new: &ServoConfig,
) -> Result<(), DataplaneError> {
    let names: Vec<&str> = new.interfaces.iter().map(String::as_str).collect();
    dataplane::apply_sysctls(&names, (new.snat_ports.min, new.snat_ports.max))?;
    maps.set_config(Config::with_snat_ports(
        new.snat_ports.min,
        new.snat_ports.max,
    ))?;
    let mode = if new.generic_xdp {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let attached: BTreeSet<String> = old
        .map(|o| o.interfaces.iter().cloned().collect())
        .unwrap_or_default();
    for iface in &new.interfaces {
        if old.is_none() || !attached.contains(iface) {
            dp.attach(iface, mode)?;
            info!(interface = %iface, "XDP program attached");
        }
    }
    if let Some(old) = old {
        for iface in old
            .interfaces
            .iter()
            .filter(|i| !new.interfaces.contains(i))
        {
            dataplane::detach(dp.pin_root(), iface)?;
            info!(interface = %iface, "XDP program detached");
        }
        for s in old
            .snat
            .iter()
            .filter(|s| !new.snat.iter().any(|n| n.interface == s.interface))
        {
            if let Ok(index) = dataplane::ifindex(&s.interface) {
                maps.remove_snat_addrs(index)?;
            }
        }
    }
    for s in &new.snat {
        maps.set_snat_addrs(dataplane::ifindex(&s.interface)?, &s.addresses)?;
    }
    Ok(())
}

/// Instances this servo probes, with the address and check to use.
fn probed_instances(
    cfg: &ServoConfig,
) -> BTreeMap<InstanceKey, (Ipv4Addr, crate::health::HealthCheck)> {
    let mut out = BTreeMap::new();
    for lb in &cfg.load_balancers {
        let cross = lb.attributes.cross_zone_load_balancing.enabled;
        for i in &lb.instances {
            if i.health_check && zone_eligible(cfg.zone.as_deref(), i.zone.as_deref(), cross) {
                out.insert(
                    (lb.load_balancer_name.clone(), i.instance_id.clone()),
                    (i.address, lb.health_check()),
                );
            }
        }
    }
    out
}

/// Starts, updates and stops health checks to match `cfg`. Instances whose backends are already
/// active in the dataplane (an agent restart) start InService, so their traffic continues while
/// the thresholds are counted again.
fn sync_health(
    checker: &HealthChecker<InstanceKey>,
    cfg: &ServoConfig,
    health: &mut BTreeMap<InstanceKey, InstanceHealth>,
    already_active: &BTreeSet<(Ipv4Addr, u16, Ipv4Addr, u16)>,
) {
    let wanted = probed_instances(cfg);
    let stale: Vec<InstanceKey> = health
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in stale {
        checker.remove(&key);
        health.remove(&key);
    }
    for (key, (addr, hc)) in wanted {
        let known = health.contains_key(&key);
        let active_before = !known
            && cfg
                .load_balancers
                .iter()
                .filter(|lb| lb.load_balancer_name == key.0)
                .any(|lb| {
                    lb.vips.iter().any(|vip| {
                        lb.listeners.iter().any(|l| {
                            already_active.contains(&(
                                *vip,
                                l.load_balancer_port,
                                addr,
                                l.instance_port,
                            ))
                        })
                    })
                });
        let result = if active_before {
            checker.upsert_with_state(
                key.clone(),
                IpAddr::V4(addr),
                hc,
                InstanceHealth::in_service(),
            )
        } else {
            checker.upsert(key.clone(), IpAddr::V4(addr), hc)
        };
        match result {
            Ok(h) => {
                health.insert(key, h);
            }
            Err(e) => error!(error = %e, "health check not started"),
        }
    }
}

fn build_status(
    cfg: &ServoConfig,
    reconciler: &Reconciler<Maps>,
    health: &BTreeMap<InstanceKey, InstanceHealth>,
    version: u64,
) -> StatusView {
    let endpoint = |k: &ListenerKey| format!("{}:{}", Ipv4Addr::from(k.vip), k.port);
    let by_id: BTreeMap<u32, (&ListenerKey, &reconcile::ListenerSlot)> = reconciler
        .listeners()
        .iter()
        .map(|(k, s)| (s.id, (k, s)))
        .collect();
    let listeners = reconciler
        .listeners()
        .iter()
        .map(|(k, s)| ListenerView {
            load_balancer_name: s.lb.clone(),
            endpoint: endpoint(k),
            id: s.id,
            instance_port: s.instance_port,
        })
        .collect();
    let backends = reconciler
        .backends()
        .values()
        .map(|b| BackendView {
            load_balancer_name: b.instance.0.clone(),
            instance_id: b.instance.1.clone(),
            listener: by_id
                .get(&b.listener_id)
                .map(|(k, _)| endpoint(k))
                .unwrap_or_default(),
            backend: format!("{}:{}", b.addr, b.port),
            id: b.id,
            state: state_name(b.state).to_string(),
        })
        .collect();
    let mut instances = Vec::new();
    for lb in &cfg.load_balancers {
        for i in &lb.instances {
            let key = (lb.load_balancer_name.clone(), i.instance_id.clone());
            let view = match health.get(&key) {
                Some(h) => InstanceView {
                    load_balancer_name: key.0.clone(),
                    instance_id: key.1.clone(),
                    state: h.state.as_str().to_string(),
                    reason_code: h.reason_code.as_str().to_string(),
                    description: h.description.to_string(),
                    checked_here: true,
                },
                None => {
                    let given = i.state.clone().unwrap_or_else(|| "OutOfService".into());
                    let (reason, description) = if i.health_check {
                        // Probed only by its own zone's servos (cross-zone is off).
                        (
                            "ELB",
                            "Instance is in the EC2 Availability Zone for which LoadBalancer is not configured to route traffic to.",
                        )
                    } else if given == "InService" {
                        ("N/A", "N/A")
                    } else {
                        ("Instance", crate::health::DESCRIPTION_FAILED)
                    };
                    InstanceView {
                        load_balancer_name: key.0.clone(),
                        instance_id: key.1.clone(),
                        state: if i.health_check {
                            "OutOfService".into()
                        } else {
                            given
                        },
                        reason_code: reason.into(),
                        description: description.into(),
                        checked_here: false,
                    }
                }
            };
            instances.push(view);
        }
    }
    StatusView {
        listeners,
        backends,
        instances,
        config_version: version,
    }
}

/// Runs the agent until `shutdown` fires. `updates` delivers new configurations (SIGHUP
/// reloads, control pushes). The dataplane keeps forwarding after this returns.
pub async fn run(
    initial: ServoConfig,
    mut updates: mpsc::Receiver<ConfigUpdate>,
    options: RunOptions,
    hooks: Hooks,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    initial.validate()?;
    let pin_root = PathBuf::from(&initial.pin_root);
    let mut dp = Dataplane::load(&LoadOptions {
        pin_root: pin_root.clone(),
        conntrack_entries: initial.conntrack_entries,
        reset: options.reset,
    })?;
    let mut maps = dp.maps()?;
    apply_servo_settings(&mut dp, &mut maps, None, &initial)?;

    // Adopt what a previous agent left: same ids, same generations, flows untouched.
    let listeners = maps.listeners()?;
    let backends = maps.backends()?;
    let sets = listeners
        .iter()
        .map(|(_, l)| Ok((l.id, maps.backend_set(l.id)?)))
        .collect::<Result<Vec<_>, DataplaneError>>()?;
    let adopted = !listeners.is_empty();
    let mut reconciler = Reconciler::adopt(maps, listeners, backends, sets);
    let id_to_key: BTreeMap<u32, ListenerKey> = reconciler
        .listeners()
        .iter()
        .map(|(k, s)| (s.id, *k))
        .collect();
    let already_active: BTreeSet<(Ipv4Addr, u16, Ipv4Addr, u16)> = reconciler
        .active_addresses()
        .into_iter()
        .filter_map(|(lid, addr, port)| {
            id_to_key
                .get(&lid)
                .map(|k| (Ipv4Addr::from(k.vip), k.port, addr, port))
        })
        .collect();
    if adopted {
        info!(
            listeners = reconciler.listeners().len(),
            backends = reconciler.backends().len(),
            active = already_active.len(),
            "adopted pinned dataplane state"
        );
    }

    let (events_tx, mut events) = mpsc::channel::<HealthEvent<InstanceKey>>(1024);
    let checker = HealthChecker::spawn(
        events_tx,
        HealthCheckerOptions {
            source_addr: initial.health_check_source.map(IpAddr::V4),
            ..HealthCheckerOptions::default()
        },
    );
    let mut health = BTreeMap::new();
    sync_health(&checker, &initial, &mut health, &already_active);

    let shared = Arc::new(Shared {
        status: Mutex::new(StatusView::default()),
        sweep: Mutex::new(SweepReport::default()),
        maps: Mutex::new(Maps::open(&pin_root)?),
        latency: checker.latency_histogram(),
    });
    let listener = tokio::net::TcpListener::bind(&initial.metrics_listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: initial.metrics_listen.clone(),
            source,
        })?;
    let bound: SocketAddr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: initial.metrics_listen.clone(),
        source,
    })?;
    info!(address = %bound, "serving /metrics, /status and /health");
    let mut http_shutdown = shutdown.clone();
    let http = tokio::spawn(
        axum::serve(listener, router(shared.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    let sweeper = {
        let shared = shared.clone();
        let mut maps = Maps::open(&pin_root)?;
        let interval = options.sweep_interval.unwrap_or(Duration::from_secs(1));
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut pause = interval;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(pause) => {}
                }
                let result =
                    tokio::task::block_in_place(|| sweep::sweep(&mut maps, sweep::monotonic_ns()));
                match result {
                    Ok(report) => {
                        if report.expired_idle + report.removed_backend_gone > 0 {
                            info!(
                                idle = report.expired_idle,
                                backend_gone = report.removed_backend_gone,
                                closed = report.removed_closed,
                                released = report.released,
                                entries = report.entries,
                                duration_ms = report.duration.as_millis() as u64,
                                "flows expired"
                            );
                        }
                        // A sweep reads the whole table (about 1.3 s per million flows here):
                        // keep it under a fifth of one core.
                        pause = interval.max(report.duration * 4);
                        *shared.sweep.lock().expect("sweep lock") = report;
                    }
                    Err(e) => warn!(error = %e, "flow sweep failed"),
                }
            }
        })
    };

    let mut cfg = initial;
    let mut version = 1u64;
    let mut introduced: BTreeMap<InstanceKey, String> = BTreeMap::new();
    let apply = |cfg: &ServoConfig,
                 reconciler: &mut Reconciler<Maps>,
                 health: &BTreeMap<InstanceKey, InstanceHealth>,
                 version: u64,
                 origin: &str| {
        match reconciler.apply(cfg, health, Instant::now()) {
            Ok(changes) => {
                if !changes.is_empty() {
                    info!(
                        origin,
                        listeners_added = ?changes.listeners_added,
                        listeners_removed = ?changes.listeners_removed,
                        backends = ?changes.backends,
                        sets_written = changes.sets_written,
                        "dataplane updated"
                    );
                }
            }
            Err(e) => {
                error!(origin, error = %e, "applying the configuration to the dataplane failed; will retry")
            }
        }
        let status = build_status(cfg, reconciler, health, version);
        if let Some(tx) = &hooks.status {
            tx.send_replace(status.clone());
        }
        *shared.status.lock().expect("status lock") = status;
    };
    apply(&cfg, &mut reconciler, &health, version, "start");

    loop {
        let deadline = reconciler
            .next_deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            Some(event) = events.recv() => {
                // The change that introduced the instance, so one grep follows an API call to
                // the health transitions it causes.
                let origin = match introduced.get(&event.key) {
                    Some(by) => format!("health {}/{} (registered by {by})", event.key.0, event.key.1),
                    None => format!("health {}/{}", event.key.0, event.key.1),
                };
                health.insert(event.key, event.to);
                apply(&cfg, &mut reconciler, &health, version, &origin);
            }
            Some(update) = updates.recv() => {
                let mut new = update.config;
                if update.local_only {
                    new.load_balancers = cfg.load_balancers.clone();
                }
                if new == cfg {
                    // Control bumps its version for every change anywhere; most are not ours.
                    tracing::debug!(origin = %update.origin, "configuration unchanged");
                    continue;
                }
                if let Err(e) = new.validate() {
                    error!(origin = %update.origin, error = %e, "configuration rejected; keeping the running one");
                    continue;
                }
                if new.pin_root != cfg.pin_root || new.conntrack_entries != cfg.conntrack_entries || new.metrics_listen != cfg.metrics_listen {
                    warn!(origin = %update.origin, "pin_root, conntrack_entries and metrics_listen change only on restart");
                }
                let mut maps = match Maps::open(&pin_root) {
                    Ok(m) => m,
                    Err(e) => { error!(error = %e, "opening maps"); continue; }
                };
                if let Err(e) = apply_servo_settings(&mut dp, &mut maps, Some(&cfg), &new) {
                    error!(origin = %update.origin, error = %e, "applying servo settings failed; keeping the running configuration");
                    continue;
                }
                version += 1;
                info!(origin = %update.origin, load_balancers = new.load_balancers.len(), "configuration accepted");
                for lb in &new.load_balancers {
                    for i in &lb.instances {
                        let key = (lb.load_balancer_name.clone(), i.instance_id.clone());
                        if !health.contains_key(&key) {
                            introduced.insert(key, update.origin.clone());
                        }
                    }
                }
                cfg = new;
                sync_health(&checker, &cfg, &mut health, &BTreeSet::new());
                introduced.retain(|k, _| health.contains_key(k));
                apply(&cfg, &mut reconciler, &health, version, &update.origin);
            }
            () = tokio::time::sleep_until(deadline) => {
                apply(&cfg, &mut reconciler, &health, version, "timer");
            }
        }
    }

    checker.shutdown().await;
    let _ = sweeper.await;
    let _ = http.await;
    info!(
        pin_root = %pin_root.display(),
        "agent stopped; the dataplane keeps forwarding with the last configuration (`elb-servo detach` removes it)"
    );
    Ok(())
}

/// Convenience for tests and tools: the listener key of `vip:port`.
pub fn listener_key(vip: Ipv4Addr, port: u16) -> ListenerKey {
    ListenerKey {
        vip: vip.octets(),
        port,
        proto: PROTO_TCP,
        _pad: 0,
    }
}
