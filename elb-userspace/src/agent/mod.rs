//! The servo agent: loads and attaches the dataplane, health-checks the backends the ELB way,
//! keeps the maps in line with the configuration and the health, sweeps flows, and serves
//! `/metrics`, `/status` and `/health`.
//!
//! One task owns the reconciler and takes, in order, configuration updates, health events and
//! draining deadlines; the sweep and the HTTP endpoint run beside it with their own map handles.
//! Every update goes through [`admission`]: each load balancer is served or refused on its own.
//! [`service`] wires it all (file, control client, saved state) for the `elb-servo run` binary.

pub mod admission;
pub mod control;
pub mod events;
pub mod l7;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod security_groups;
pub mod service;
pub mod sweep;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::header, response::IntoResponse, routing::get};
use elb_common::{Config, ListenerKey};
use elb_contract::wire::{LoadBalancerMetrics, Refusal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use self::{
    metrics::{BackendView, InstanceView, ListenerView, StatusView},
    observe::Observe,
    reconcile::{BackendAt, InstanceKey, Reconciler, state_name},
    sweep::SweepReport,
};
use crate::{
    config::{ConfigError, Received, ServoConfig},
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
    /// The access log spool could not be opened.
    #[error(transparent)]
    AccessLogs(#[from] crate::accesslog::SpoolError),
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

/// Where a configuration from control comes from: its version and the API calls behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlVersion {
    /// Control's configuration version.
    pub version: u64,
    /// Request ids of the API calls since the previous version the servo had.
    pub request_ids: Vec<String>,
}

/// A new configuration for the running agent.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    /// The servo's own settings (already validated by the sender; load balancers in it are
    /// ignored).
    pub settings: ServoConfig,
    /// The load balancers, each to be admitted or refused; `None` keeps the ones received
    /// last (a SIGHUP in control mode changes only the servo's own settings).
    pub load_balancers: Option<Vec<Received>>,
    /// Where it came from, for the log line that applies it (`SIGHUP`, a request id...).
    pub origin: String,
    /// The control version it comes from, if any.
    pub control: Option<ControlVersion>,
}

/// Channels the agent reports on and listens to.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Receives the status after every change (the control client reports health from it).
    pub status: Option<watch::Sender<StatusView>>,
    /// Receives the metrics per load balancer every second (the control client sends them
    /// with its heartbeats); see [`observe`].
    pub metrics: Option<watch::Sender<Vec<LoadBalancerMetrics>>>,
    /// Each message finishes the open access log files at once (SIGUSR1).
    pub flush_access_logs: Option<mpsc::Receiver<()>>,
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
struct Shared {
    status: Mutex<StatusView>,
    sweep: Mutex<SweepReport>,
    maps: Mutex<Maps>,
    latency: Arc<LatencyHistogram>,
    observe: Arc<Observe>,
    flow_log: Option<Arc<events::FlowLog>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The agent's HTTP API.
fn router(shared: Arc<Shared>) -> Router {
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
    let mut body = {
        let maps = s.maps.lock().expect("maps lock");
        metrics::render(&status, &maps, &sweep, &latency)
    };
    body.push_str(&s.observe.render_prometheus());
    if let Some(log) = &s.flow_log {
        body.push_str(&render_flow_log(log.stats()));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn render_flow_log(s: &events::FlowLogStats) -> String {
    use std::fmt::Write as _;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let mut out = String::new();
    for (name, help, value) in [
        (
            "elb_flow_event_starts_total",
            "Flow start events read from the dataplane's ring.",
            load(&s.starts),
        ),
        (
            "elb_flow_event_ends_total",
            "Flow end events handled (from the ring and the sweep).",
            load(&s.ends),
        ),
        (
            "elb_flow_log_lines_total",
            "Access log lines written for flows the XDP program forwarded.",
            load(&s.lines),
        ),
        (
            "elb_flow_event_unpaired_total",
            "Flow ends whose start was not seen (agent restart, or too many open flows).",
            load(&s.starts_unpaired),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
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

/// A backend active in the dataplane an agent adopts: `vip:port -> addr:instance_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ActiveBackend {
    vip: Ipv4Addr,
    port: u16,
    addr: Ipv4Addr,
    instance_port: u16,
}

/// An instance this servo probes.
struct Probed {
    address: Ipv4Addr,
    check: elb_contract::HealthCheck,
    /// The health control holds for it (the warm start of a servo taking it over).
    known: Option<elb_contract::InstanceHealth>,
}

/// Instances this servo probes: those it is told to check (its own zone's in control mode;
/// every one in a file without `HealthCheck = false`).
fn probed_instances(cfg: &ServoConfig) -> BTreeMap<InstanceKey, Probed> {
    let mut out = BTreeMap::new();
    for lb in &cfg.load_balancers {
        for i in lb.instances.iter().filter(|i| i.health_check) {
            out.insert(
                InstanceKey::new(&lb.load_balancer_name, &i.instance_id),
                Probed {
                    address: i.address,
                    check: lb.health_check(),
                    known: i.health.clone(),
                },
            );
        }
    }
    out
}

/// Starts, updates and stops health checks to match `cfg`. A new instance starts from, in
/// order: InService if its backend is already active in the dataplane (an agent restart, so
/// its traffic continues while the thresholds are counted again); the health control holds
/// (reported by the servo that checked it before: a take-over keeps serving what was in
/// service); registering.
fn sync_health(
    checker: &HealthChecker<InstanceKey>,
    cfg: &ServoConfig,
    health: &mut BTreeMap<InstanceKey, InstanceHealth>,
    already_active: &BTreeSet<ActiveBackend>,
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
    for (key, probed) in wanted {
        let seed = if health.contains_key(&key) {
            None
        } else {
            let active_before = cfg
                .load_balancers
                .iter()
                .filter(|lb| lb.load_balancer_name == key.load_balancer)
                .any(|lb| {
                    lb.vips.iter().any(|vip| {
                        lb.listeners.iter().any(|l| {
                            already_active.contains(&ActiveBackend {
                                vip: *vip,
                                port: l.load_balancer_port,
                                addr: probed.address,
                                instance_port: l.instance_port,
                            })
                        })
                    })
                });
            if active_before {
                Some(InstanceHealth::in_service())
            } else {
                probed.known.as_ref().map(InstanceHealth::seeded)
            }
        };
        let result = match seed {
            Some(seed) => checker.upsert_with_state(
                key.clone(),
                IpAddr::V4(probed.address),
                probed.check,
                seed,
            ),
            None => checker.upsert(key.clone(), IpAddr::V4(probed.address), probed.check),
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
    refused: &[Refusal],
    control: Option<&ControlVersion>,
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
            load_balancer_name: b.instance.load_balancer.clone(),
            instance_id: b.instance.instance_id.clone(),
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
            let key = InstanceKey::new(&lb.load_balancer_name, &i.instance_id);
            let (h, checked_here) = match health.get(&key) {
                Some(h) => (h.status(), true),
                None => (
                    i.health
                        .clone()
                        .unwrap_or_else(elb_contract::InstanceHealth::registering),
                    false,
                ),
            };
            instances.push(InstanceView {
                load_balancer_name: key.load_balancer,
                instance_id: key.instance_id,
                state: h.state,
                reason_code: h.reason_code,
                description: h.description,
                checked_here,
            });
        }
    }
    StatusView {
        listeners,
        backends,
        instances,
        config_version: version,
        refused: refused.to_vec(),
        control_version: control.map(|c| c.version),
        request_ids: control.map(|c| c.request_ids.clone()).unwrap_or_default(),
    }
}

/// Runs the agent until `shutdown` fires, starting with `initial`; `updates` delivers new
/// configurations (SIGHUP reloads, control pushes). The dataplane keeps forwarding after this
/// returns.
pub async fn run(
    initial: ConfigUpdate,
    mut updates: mpsc::Receiver<ConfigUpdate>,
    options: RunOptions,
    mut hooks: Hooks,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    initial.settings.validate()?;
    let settings = initial.settings.settings_only();
    let mut received = initial.load_balancers.clone().unwrap_or_default();
    let admission = admission::admit(&settings, &received, &[]);
    log_refusals(&admission.refused, &[], &initial.origin);
    let initial_cfg = ServoConfig {
        load_balancers: admission.served,
        ..settings
    };
    let mut refused = admission.refused;
    let mut control = initial.control.clone();
    let initial = initial_cfg;
    let pin_root = PathBuf::from(&initial.pin_root);
    let mut dp = Dataplane::load(&LoadOptions {
        pin_root: pin_root.clone(),
        conntrack_entries: initial.conntrack_entries,
        reset: options.reset,
    })?;
    let mut maps = dp.maps()?;
    apply_servo_settings(&mut dp, &mut maps, None, &initial)?;
    let mut allow_lists = security_groups::AllowLists::open(&pin_root)?;

    // Adopt what a previous agent left: same ids, same generations, flows untouched.
    let listeners = maps.listeners()?;
    let backends = maps.backends()?;
    let sets = listeners
        .iter()
        .map(|(_, l)| Ok((l.id, maps.backend_set(l.id)?)))
        .collect::<Result<Vec<_>, DataplaneError>>()?;
    let adopted = !listeners.is_empty();
    let mut reconciler = Reconciler::adopt(maps, listeners, backends, sets);
    let observe = Observe::start(
        &initial,
        reconciler.listeners().values().map(|s| s.id).collect(),
    )?;
    let access_logs = observe.spawn_access_logs(hooks.flush_access_logs.take(), shutdown.clone());
    // Access logs of the listeners the XDP program forwards: its flow events.
    let flow_log = observe
        .access_logs()
        .map(|logs| events::FlowLog::new(logs.clone()));
    let flow_reader = flow_log
        .clone()
        .map(|log| tokio::spawn(log.read_ring(pin_root.clone(), shutdown.clone())));
    let id_to_key: BTreeMap<u32, ListenerKey> = reconciler
        .listeners()
        .iter()
        .map(|(k, s)| (s.id, *k))
        .collect();
    let already_active: BTreeSet<ActiveBackend> = reconciler
        .active_addresses()
        .into_iter()
        .filter_map(|b: BackendAt| {
            id_to_key.get(&b.listener_id).map(|k| ActiveBackend {
                vip: Ipv4Addr::from(k.vip),
                port: k.port,
                addr: b.addr,
                instance_port: b.port,
            })
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
        observe: observe.clone(),
        flow_log: flow_log.clone(),
    });
    if let Some(tx) = hooks.metrics.take() {
        tokio::spawn(observe::run_metrics(
            observe.clone(),
            shared.clone(),
            pin_root.clone(),
            tx,
            Duration::from_secs(1),
            shutdown.clone(),
        ));
    }
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
                    Ok(mut report) => {
                        let ends = std::mem::take(&mut report.ends);
                        if let (Some(log), false) = (&shared.flow_log, ends.is_empty()) {
                            match events::JiffyClock::now() {
                                Ok(clock) => log.handle(&ends, &clock),
                                Err(e) => warn!(error = %e, "reading the kernel's jiffies"),
                            }
                        }
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
    let mut engine = l7::L7::observed_by(observe.clone());
    let apply = |cfg: &ServoConfig,
                 reconciler: &mut Reconciler<Maps>,
                 engine: &mut l7::L7,
                 health: &BTreeMap<InstanceKey, InstanceHealth>,
                 version: u64,
                 refused: &[Refusal],
                 control: Option<&ControlVersion>,
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
        engine.sync(cfg, reconciler);
        if let Some(log) = &flow_log {
            log.set_listeners(
                reconciler
                    .listeners()
                    .values()
                    .map(|s| (s.id, s.lb.clone()))
                    .collect(),
            );
        }
        let mut refused = refused.to_vec();
        refused.extend(engine.refusals());
        let status = build_status(cfg, reconciler, health, version, &refused, control);
        if let Some(tx) = &hooks.status {
            tx.send_replace(status.clone());
        }
        *shared.status.lock().expect("status lock") = status;
    };
    let allow = sync_allow_lists(&mut allow_lists, &cfg, "start", None);
    apply(
        &cfg,
        &mut reconciler,
        &mut engine,
        &health,
        version,
        &refused,
        control.as_ref(),
        "start",
    );
    sync_allow_lists(&mut allow_lists, &cfg, "start", Some(&allow));

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
                    Some(by) => format!("health {} (registered by {by})", event.key),
                    None => format!("health {}", event.key),
                };
                health.insert(event.key, event.to);
                apply(&cfg, &mut reconciler, &mut engine, &health, version, &refused, control.as_ref(), &origin);
            }
            Some(update) = updates.recv() => {
                let settings = update.settings.settings_only();
                if let Some(lbs) = update.load_balancers {
                    received = lbs;
                }
                let admission = admission::admit(&settings, &received, &cfg.load_balancers);
                log_refusals(&admission.refused, &refused, &update.origin);
                let new = ServoConfig { load_balancers: admission.served, ..settings };
                let refusals_changed = admission.refused != refused;
                refused = admission.refused;
                if update.control.is_some() {
                    control = update.control;
                }
                if new == cfg {
                    // Control bumps its version for every change anywhere; most are not ours.
                    tracing::debug!(origin = %update.origin, "configuration unchanged");
                    if refusals_changed {
                        apply(&cfg, &mut reconciler, &mut engine, &health, version, &refused, control.as_ref(), &update.origin);
                    }
                    continue;
                }
                if new.pin_root != cfg.pin_root || new.conntrack_entries != cfg.conntrack_entries || new.metrics_listen != cfg.metrics_listen || new.access_logs != cfg.access_logs {
                    warn!(origin = %update.origin, "pin_root, conntrack_entries, metrics_listen and access_logs change only on restart");
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
                info!(
                    origin = %update.origin,
                    load_balancers = new.load_balancers.len(),
                    refused = refused.len(),
                    "configuration accepted"
                );
                for lb in &new.load_balancers {
                    for i in &lb.instances {
                        let key = InstanceKey::new(&lb.load_balancer_name, &i.instance_id);
                        if !health.contains_key(&key) {
                            introduced.insert(key, update.origin.clone());
                        }
                    }
                }
                cfg = new;
                observe.apply_config(&cfg);
                sync_health(&checker, &cfg, &mut health, &BTreeSet::new());
                introduced.retain(|k, _| health.contains_key(k));
                let allow = sync_allow_lists(&mut allow_lists, &cfg, &update.origin, None);
                apply(&cfg, &mut reconciler, &mut engine, &health, version, &refused, control.as_ref(), &update.origin);
                sync_allow_lists(&mut allow_lists, &cfg, &update.origin, Some(&allow));
            }
            () = tokio::time::sleep_until(deadline) => {
                apply(&cfg, &mut reconciler, &mut engine, &health, version, &refused, control.as_ref(), "timer");
            }
        }
    }

    checker.shutdown().await;
    let _ = sweeper.await;
    let _ = http.await;
    if let Some(task) = flow_reader {
        let _ = task.await;
    }
    if let Some(task) = access_logs {
        // Finishes the open files and tries one last upload; what fails stays in the spool.
        let _ = task.await;
    }
    info!(
        pin_root = %pin_root.display(),
        "agent stopped; the dataplane keeps forwarding with the last configuration (`elb-servo detach` removes it)"
    );
    Ok(())
}

/// Brings the security groups' allow lists in line with `cfg` in two steps around the
/// reconciler's listener writes (see [`security_groups`]): first (`added` is `None`) the
/// entries `cfg` needs are written and the wanted set is returned; then (`added` is that set)
/// the entries it no longer needs are removed. A failure is logged; the next configuration
/// retries.
fn sync_allow_lists(
    lists: &mut security_groups::AllowLists,
    cfg: &ServoConfig,
    origin: &str,
    added: Option<&BTreeSet<security_groups::AllowEntry>>,
) -> BTreeSet<security_groups::AllowEntry> {
    let wanted = match added {
        Some(w) => w.clone(),
        None => security_groups::wanted(cfg),
    };
    let result = match added {
        None => lists.add_missing(&wanted).map(|n| ("added", n)),
        Some(_) => lists.remove_stale(&wanted).map(|n| ("removed", n)),
    };
    match result {
        Ok((_, 0)) => {}
        Ok((what, n)) => info!(
            origin,
            entries = lists.written().len(),
            "security group allow lists updated: {n} entries {what}"
        ),
        Err(e) => error!(origin, error = %e, "updating the security group allow lists failed"),
    }
    wanted
}

/// Logs each refusal that is new or has a new reason, once.
fn log_refusals(now: &[Refusal], before: &[Refusal], origin: &str) {
    for r in now.iter().filter(|r| !before.contains(r)) {
        error!(
            origin,
            load_balancer = %r.load_balancer_name,
            serving_previous = r.serving_previous,
            reason = %r.reason,
            "load balancer refused: {}{}",
            r.reason,
            if r.serving_previous { " (the version accepted before stays in service)" } else { "" }
        );
    }
    for r in before.iter().filter(|b| {
        !now.iter()
            .any(|n| n.load_balancer_name == b.load_balancer_name)
    }) {
        info!(origin, load_balancer = %r.load_balancer_name, "load balancer no longer refused");
    }
}
