//! Schedules probes for many instances on one tokio runtime and reports health transitions.
//!
//! Layout: one scheduler task owns a min-heap of next-due times; each due probe runs as its own
//! short task, and at most `max_concurrent_probes` of them probe at once (a semaphore). The
//! per-instance state lives in a registry behind a mutex that the handle reads synchronously,
//! so `snapshot`/`get` never wait for the scheduler. Nothing is kept per instance between
//! probes except a registry entry and one heap entry, so thousands of instances cost a few
//! hundred bytes each.
//!
//! Timing rules (ELB's): probes of one instance never overlap; the next probe is due one Interval
//! after the previous one was dispatched, or as soon as it finished if it ran longer. A new
//! instance's first probe waits a random jitter in `[0, Interval)` so a large registration does
//! not probe everything in the same instant.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{self, JoinSet};
use tokio::time::Instant;

use elb_contract::{HealthCheck, HealthTarget, Problems};

use super::latency::LatencyHistogram;
use super::probe::{NetworkProber, ProbeOutcome, Prober};
use super::state::InstanceHealth;

/// Tuning of a [`HealthChecker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckerOptions {
    /// Probes that may be connecting or waiting for an answer at the same time; due probes
    /// beyond it wait for a slot. Bounds sockets and TLS handshakes in flight.
    pub max_concurrent_probes: usize,
    /// Delay each new instance's first probe by a random fraction of its Interval. Turn off in
    /// tests that need the first probe immediately.
    pub first_probe_jitter: bool,
    /// Address probes are sent from (the servo's own address), or `None` for the routing
    /// default. Used by [`HealthChecker::spawn`] only.
    pub source_addr: Option<IpAddr>,
}

impl Default for HealthCheckerOptions {
    fn default() -> Self {
        Self {
            max_concurrent_probes: 256,
            first_probe_jitter: true,
            source_addr: None,
        }
    }
}

/// A change of one instance's reported health, sent once on the events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent<K> {
    /// The instance, as the caller named it in [`HealthChecker::upsert`].
    pub key: K,
    /// The address that was probed.
    pub ip: IpAddr,
    /// Health before the probe that caused the change.
    pub from: InstanceHealth,
    /// Health after it, including that probe as `last_probe`.
    pub to: InstanceHealth,
}

/// Why the checker refused a request.
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// The health check is outside ELB's ranges.
    #[error("health check for instance {key} rejected: {source}")]
    InvalidHealthCheck {
        /// The instance key.
        key: String,
        /// What is wrong with the check.
        #[source]
        source: Problems,
    },
    /// [`HealthChecker::shutdown`] was called, or the scheduler task is gone.
    #[error("the health checker has shut down; start a new one with HealthChecker::spawn")]
    ShutDown,
}

/// Handle to a running health checker; cheap to clone, all clones drive the same checker.
///
/// The scheduler task stops on [`shutdown`](Self::shutdown) or when every handle is dropped.
pub struct HealthChecker<K> {
    shared: Arc<Shared<K>>,
    commands: mpsc::UnboundedSender<Command>,
    stopped: watch::Receiver<bool>,
}

impl<K> Clone for HealthChecker<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            commands: self.commands.clone(),
            stopped: self.stopped.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for HealthChecker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("instances", &self.shared.registry().targets.len())
            .field("stopped", &*self.stopped.borrow())
            .finish()
    }
}

enum Command {
    /// Entry `id` is due at `at`; stale entries are skipped when popped.
    Schedule {
        id: u64,
        at: Instant,
    },
    Shutdown,
}

struct Shared<K> {
    registry: Mutex<Registry<K>>,
    latency: Arc<LatencyHistogram>,
    first_probe_jitter: bool,
}

struct Registry<K> {
    targets: HashMap<K, Tracked>,
    /// Heap entries and probe tasks carry an id rather than the key, so `K` needs no `Ord`, and
    /// a re-addressed or removed-and-re-added instance never receives a stale result.
    keys: HashMap<u64, K>,
    next_id: u64,
}

struct Tracked {
    id: u64,
    ip: IpAddr,
    cfg: HealthCheck,
    health: InstanceHealth,
    /// When the next probe is due; `None` while one is in flight.
    due: Option<Instant>,
    /// When the most recent probe was dispatched.
    last_start: Option<Instant>,
}

/// Everything a probe task needs, copied out so it runs without the registry lock.
struct ProbeJob<K> {
    id: u64,
    key: K,
    ip: IpAddr,
    target: HealthTarget,
    timeout: Duration,
}

impl<K> HealthChecker<K>
where
    K: Clone + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static,
{
    /// Starts a checker that probes over real sockets ([`NetworkProber`] from
    /// `options.source_addr`) and sends every transition on `events`.
    ///
    /// Panics outside a tokio runtime (it spawns the scheduler task). A full `events` channel holds back the next probe
    /// of the instance whose event is waiting (never other instances), so events of one instance
    /// stay in order and none is dropped.
    pub fn spawn(events: mpsc::Sender<HealthEvent<K>>, options: HealthCheckerOptions) -> Self {
        let prober = Arc::new(NetworkProber::new(options.source_addr));
        Self::spawn_with_prober(events, options, prober)
    }

    /// [`spawn`](Self::spawn) with another [`Prober`]; `options.source_addr` is then unused.
    pub fn spawn_with_prober(
        events: mpsc::Sender<HealthEvent<K>>,
        options: HealthCheckerOptions,
        prober: Arc<dyn Prober>,
    ) -> Self {
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry {
                targets: HashMap::new(),
                keys: HashMap::new(),
                next_id: 0,
            }),
            latency: Arc::new(LatencyHistogram::new()),
            first_probe_jitter: options.first_probe_jitter,
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (stopped_tx, stopped) = watch::channel(false);
        // Zero permits would park every probe forever.
        let permits = options
            .max_concurrent_probes
            .clamp(1, Semaphore::MAX_PERMITS);
        let scheduler = Scheduler {
            shared: shared.clone(),
            commands: command_rx,
            prober,
            events,
            permits: Arc::new(Semaphore::new(permits)),
        };
        tokio::spawn(async move {
            scheduler.run().await;
            stopped_tx.send_replace(true);
        });
        Self {
            shared,
            commands,
            stopped,
        }
    }

    /// Starts checking `key` at `ip` with `cfg`, or updates it; returns its health afterwards.
    ///
    /// - A new key starts as [`InstanceHealth::registering`].
    /// - Same address, changed config: state and streaks are kept and the new thresholds apply
    ///   from the next probe; a changed Interval reschedules the next probe from the last one.
    /// - Changed address: it is a different instance as far as health goes, so it restarts as
    ///   registering (no event is sent for that reset; the caller made it).
    pub fn upsert(
        &self,
        key: K,
        ip: IpAddr,
        cfg: HealthCheck,
    ) -> Result<InstanceHealth, CheckerError> {
        self.insert(key, ip, cfg, None)
    }

    /// [`upsert`](Self::upsert) that also sets the instance's health to `initial`, e.g. the state
    /// a restarted agent saved, so traffic is not withdrawn while thresholds are re-counted.
    pub fn upsert_with_state(
        &self,
        key: K,
        ip: IpAddr,
        cfg: HealthCheck,
        initial: InstanceHealth,
    ) -> Result<InstanceHealth, CheckerError> {
        self.insert(key, ip, cfg, Some(initial))
    }

    fn insert(
        &self,
        key: K,
        ip: IpAddr,
        cfg: HealthCheck,
        seed: Option<InstanceHealth>,
    ) -> Result<InstanceHealth, CheckerError> {
        cfg.check()
            .map_err(|source| CheckerError::InvalidHealthCheck {
                key: key.to_string(),
                source,
            })?;
        if self.commands.is_closed() {
            return Err(CheckerError::ShutDown);
        }
        let now = Instant::now();
        let mut registry = self.shared.registry();
        let (health, schedule) = match registry.targets.get_mut(&key) {
            Some(tracked) if tracked.ip == ip => {
                if let Some(seed) = seed {
                    tracked.health = seed;
                }
                let schedule = tracked.reconfigure(cfg, now);
                (tracked.health.clone(), schedule)
            }
            _ => {
                let id = registry.next_id;
                registry.next_id += 1;
                let at = now + self.shared.first_probe_delay(&cfg);
                let health = seed.unwrap_or_default();
                let tracked = Tracked {
                    id,
                    ip,
                    cfg,
                    health: health.clone(),
                    due: Some(at),
                    last_start: None,
                };
                if let Some(replaced) = registry.targets.insert(key.clone(), tracked) {
                    registry.keys.remove(&replaced.id);
                }
                tracing::debug!(key = ?key, %ip, "health check added");
                registry.keys.insert(id, key);
                (health, Some((id, at)))
            }
        };
        // Sent under the lock so a concurrent upsert of the same key cannot reorder schedules.
        if let Some((id, at)) = schedule {
            self.commands
                .send(Command::Schedule { id, at })
                .map_err(|_| CheckerError::ShutDown)?;
        }
        drop(registry);
        Ok(health)
    }

    /// Stops checking `key`; returns its last health. A probe in flight finishes unreported.
    pub fn remove(&self, key: &K) -> Option<InstanceHealth> {
        let mut registry = self.shared.registry();
        let tracked = registry.targets.remove(key)?;
        registry.keys.remove(&tracked.id);
        tracing::debug!(key = ?key, "health check removed");
        Some(tracked.health)
    }

    /// Health of every instance, in no particular order.
    pub fn snapshot(&self) -> Vec<(K, InstanceHealth)> {
        self.shared
            .registry()
            .targets
            .iter()
            .map(|(key, tracked)| (key.clone(), tracked.health.clone()))
            .collect()
    }

    /// Health of one instance.
    pub fn get(&self, key: &K) -> Option<InstanceHealth> {
        self.shared
            .registry()
            .targets
            .get(key)
            .map(|tracked| tracked.health.clone())
    }

    /// Number of instances being checked.
    pub fn len(&self) -> usize {
        self.shared.registry().targets.len()
    }

    /// Whether no instance is being checked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Latency of every probe this checker ran, for the agent's /metrics.
    pub fn latency_histogram(&self) -> Arc<LatencyHistogram> {
        self.shared.latency.clone()
    }

    /// Stops scheduling, abandons probes in flight (their results would have no reader) and
    /// returns once the scheduler task has exited. Later upserts fail with
    /// [`CheckerError::ShutDown`]; `snapshot` and `get` keep answering from the last state.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let mut stopped = self.stopped.clone();
        // An error means the scheduler task is already gone, which is what we wait for.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

impl<K> Shared<K> {
    fn registry(&self) -> MutexGuard<'_, Registry<K>> {
        // The lock is never held across an await or a call that can panic mid-update, so a
        // poisoned registry is still consistent.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn first_probe_delay(&self, cfg: &HealthCheck) -> Duration {
        let interval = cfg.interval_duration();
        if self.first_probe_jitter && !interval.is_zero() {
            rand::rng().random_range(Duration::ZERO..interval)
        } else {
            Duration::ZERO
        }
    }
}

impl Tracked {
    /// Applies a new config to a live instance; returns a new due time if it moved.
    fn reconfigure(&mut self, cfg: HealthCheck, now: Instant) -> Option<(u64, Instant)> {
        let interval_changed = self.cfg.interval != cfg.interval;
        self.cfg = cfg;
        let due = self.due?;
        if !interval_changed {
            return None;
        }
        let interval = self.cfg.interval_duration();
        let at = match self.last_start {
            Some(last) => (last + interval).max(now),
            // Still waiting for its first (jittered) probe: never later than one new Interval.
            None => due.min(now + interval),
        };
        (at != due).then(|| {
            self.due = Some(at);
            (self.id, at)
        })
    }
}

impl<K> Registry<K>
where
    K: Clone + Eq + Hash,
{
    /// Marks entry `id` in flight if it is really due at `at`; a heap entry left behind by a
    /// reschedule, removal or re-address is ignored here.
    fn start_probe(&mut self, id: u64, at: Instant, now: Instant) -> Option<ProbeJob<K>> {
        let key = self.keys.get(&id)?;
        let tracked = self.targets.get_mut(key)?;
        if tracked.due != Some(at) {
            return None;
        }
        tracked.due = None;
        tracked.last_start = Some(now);
        Some(ProbeJob {
            id,
            key: key.clone(),
            ip: tracked.ip,
            target: tracked.cfg.target.clone(),
            timeout: tracked.cfg.timeout_duration(),
        })
    }

    /// Counts a probe result; returns the event if the reported health changed.
    fn record(&mut self, job: &ProbeJob<K>, outcome: ProbeOutcome) -> Option<HealthEvent<K>> {
        let tracked = self.targets.get_mut(&job.key).filter(|t| t.id == job.id)?;
        let transition = tracked.health.record_probe(outcome, &tracked.cfg)?;
        Some(HealthEvent {
            key: job.key.clone(),
            ip: tracked.ip,
            from: transition.from,
            to: transition.to,
        })
    }

    /// After entry `id`'s probe task ended: when its next probe is due.
    fn finish_probe(&mut self, id: u64, now: Instant) -> Option<Instant> {
        let key = self.keys.get(&id)?;
        let tracked = self.targets.get_mut(key)?;
        if tracked.due.is_some() {
            return None;
        }
        let at = match tracked.last_start {
            Some(last) => (last + tracked.cfg.interval_duration()).max(now),
            None => now,
        };
        tracked.due = Some(at);
        Some(at)
    }
}

struct Scheduler<K> {
    shared: Arc<Shared<K>>,
    commands: mpsc::UnboundedReceiver<Command>,
    prober: Arc<dyn Prober>,
    events: mpsc::Sender<HealthEvent<K>>,
    permits: Arc<Semaphore>,
}

impl<K> Scheduler<K>
where
    K: Clone + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static,
{
    async fn run(mut self) {
        let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
        let mut probes = JoinSet::new();
        // Task id -> entry id, so even a probe task that panicked gets its instance rescheduled.
        let mut running: HashMap<task::Id, u64> = HashMap::new();
        loop {
            let next = due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                // Commands first: a Schedule must be in the heap before we decide what is due.
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Schedule { id, at }) => due.push(Reverse((at, id))),
                    Some(Command::Shutdown) | None => break,
                },
                Some(finished) = probes.join_next_with_id() => {
                    let task_id = match finished {
                        Ok((task_id, ())) => task_id,
                        Err(err) => {
                            tracing::warn!(error = %err, "health probe task failed");
                            err.id()
                        }
                    };
                    if let Some(id) = running.remove(&task_id) {
                        let next = self.shared.registry().finish_probe(id, Instant::now());
                        if let Some(at) = next {
                            due.push(Reverse((at, id)));
                        }
                    }
                }
                () = sleep_until(next) => {
                    let now = Instant::now();
                    while let Some(&Reverse((at, id))) = due.peek() {
                        if at > now {
                            break;
                        }
                        due.pop();
                        let job = self.shared.registry().start_probe(id, at, now);
                        if let Some(job) = job {
                            let handle = probes.spawn(probe_task(
                                job,
                                self.shared.clone(),
                                self.prober.clone(),
                                self.permits.clone(),
                                self.events.clone(),
                            ));
                            running.insert(handle.id(), id);
                        }
                    }
                }
            }
        }
        probes.shutdown().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn probe_task<K>(
    job: ProbeJob<K>,
    shared: Arc<Shared<K>>,
    prober: Arc<dyn Prober>,
    permits: Arc<Semaphore>,
    events: mpsc::Sender<HealthEvent<K>>,
) where
    K: Clone + Eq + Hash + fmt::Debug + fmt::Display,
{
    let Ok(permit) = permits.acquire_owned().await else {
        return;
    };
    let outcome = prober.probe(&job.target, job.ip, job.timeout).await;
    drop(permit);
    shared.latency.observe(outcome.latency);
    let event = shared.registry().record(&job, outcome);
    let Some(event) = event else {
        return;
    };
    tracing::info!(
        key = %event.key,
        ip = %event.ip,
        state = %event.to.state,
        reason = %event.to.reason_code,
        description = %event.to.description,
        from_state = %event.from.state,
        detail = event.to.last_probe.as_ref().map_or("", |p| p.detail.as_str()),
        "instance health changed"
    );
    // Waiting here (rather than dropping the event) holds back only this instance's next probe.
    if events.send(event).await.is_err() {
        tracing::debug!(key = ?job.key, "health event receiver is gone");
    }
}

#[cfg(test)]
mod tests;
