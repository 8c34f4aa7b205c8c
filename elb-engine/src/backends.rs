//! A listener's backends as the health engine reports them: round robin over the InService ones,
//! stickiness lookups, draining deadlines and cutting connections of backends that leave.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::config::{Backend, BackendState};

const IN_SERVICE: u8 = 0;
const DRAINING: u8 = 1;
const REMOVED: u8 = 2;

/// The `AWSELB` cookie value that names an instance: the same on every servo (it depends only on
/// the instance id), and it does not reveal the id.
pub fn cookie_value(instance_id: &str) -> String {
    let digest = Sha256::digest(instance_id.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02X}")).collect()
}

/// One backend of a listener.
#[derive(Debug)]
pub struct BackendEntry {
    /// Instance id.
    pub instance_id: String,
    /// Address and port.
    pub addr: SocketAddr,
    /// Its `AWSELB` cookie value.
    pub cookie: String,
    state: AtomicU8,
    /// Draining episodes, so a stale deadline does not cut a backend that came back.
    drain_epoch: AtomicU64,
    cut: watch::Sender<bool>,
    /// Connections (stream listeners) or requests (HTTP listeners) in flight.
    active: AtomicUsize,
    /// Idle keep-alive connections to this backend (HTTP listeners), one pool per engine worker:
    /// a connection is reused on the thread that drives it.
    pool: Box<[Mutex<Vec<crate::http::PooledConnection>>]>,
}

impl BackendEntry {
    fn new(b: &Backend, workers: usize) -> Self {
        Self {
            instance_id: b.instance_id.clone(),
            addr: b.addr,
            cookie: cookie_value(&b.instance_id),
            state: AtomicU8::new(IN_SERVICE),
            drain_epoch: AtomicU64::new(0),
            cut: watch::channel(false).0,
            active: AtomicUsize::new(0),
            pool: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        }
    }

    /// The backend's state (`None`: removed).
    pub fn state(&self) -> Option<BackendState> {
        match self.state.load(Ordering::Relaxed) {
            IN_SERVICE => Some(BackendState::InService),
            DRAINING => Some(BackendState::Draining),
            _ => None,
        }
    }

    /// Whether it takes new work.
    pub fn in_service(&self) -> bool {
        self.state.load(Ordering::Relaxed) == IN_SERVICE
    }

    /// Work in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts work in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Resolves when the backend's work must stop (removed, or its draining timeout passed).
    pub fn cut_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.cut.subscribe();
        async move {
            // The sender lives as long as the entry, which the caller holds.
            let _ = rx.wait_for(|cut| *cut).await;
        }
    }

    fn cut_now(&self) {
        self.cut.send_replace(true);
        self.clear_pool();
    }

    /// Closes idle keep-alive connections.
    pub fn clear_pool(&self) {
        for p in &self.pool {
            p.lock().expect("pool lock").clear();
        }
    }

    /// The idle connections of the calling worker.
    pub(crate) fn local_pool(&self) -> &Mutex<Vec<crate::http::PooledConnection>> {
        let i = crate::workers::current().unwrap_or(0);
        &self.pool[i % self.pool.len()]
    }
}

/// See [`BackendEntry::track`].
#[derive(Debug)]
pub struct ActiveGuard(Arc<BackendEntry>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct BackendSet {
    all: Vec<Arc<BackendEntry>>,
    in_service: Vec<Arc<BackendEntry>>,
    by_cookie: HashMap<String, Arc<BackendEntry>>,
}

/// A listener's backends.
#[derive(Debug)]
pub struct Backends {
    set: RwLock<Arc<BackendSet>>,
    cursor: AtomicUsize,
    workers: usize,
}

impl Backends {
    /// No backends yet; `workers` idle-connection pools per backend.
    pub fn new(workers: usize) -> Self {
        Self {
            set: RwLock::default(),
            cursor: AtomicUsize::new(0),
            workers,
        }
    }

    fn current(&self) -> Arc<BackendSet> {
        self.set.read().expect("backend set lock").clone()
    }

    /// The next InService backend, round robin.
    pub fn next(&self) -> Option<Arc<BackendEntry>> {
        let set = self.current();
        if set.in_service.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % set.in_service.len();
        Some(set.in_service[i].clone())
    }

    /// The InService backend an `AWSELB` cookie names.
    pub fn by_cookie(&self, value: &str) -> Option<Arc<BackendEntry>> {
        self.current()
            .by_cookie
            .get(value)
            .filter(|b| b.in_service())
            .cloned()
    }

    /// Every backend (InService and draining).
    pub fn all(&self) -> Vec<Arc<BackendEntry>> {
        self.current().all.clone()
    }

    /// Replaces the backends. Known ones (same instance and address) keep their connections;
    /// draining ones stop getting work and are cut after `draining_timeout`; missing ones are
    /// cut now. Draining deadlines run on `timers`.
    pub fn update(
        &self,
        list: &[Backend],
        draining_timeout: Option<Duration>,
        timers: &tokio::runtime::Handle,
    ) {
        let mut guard = self.set.write().expect("backend set lock");
        let old = guard.clone();
        let mut next = BackendSet::default();
        for b in list {
            let entry = old
                .all
                .iter()
                .find(|e| e.instance_id == b.instance_id && e.addr == b.addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(BackendEntry::new(b, self.workers)));
            if next.all.iter().any(|e| Arc::ptr_eq(e, &entry)) {
                continue; // listed twice
            }
            match b.state {
                BackendState::InService => {
                    entry.state.store(IN_SERVICE, Ordering::Relaxed);
                    entry.drain_epoch.fetch_add(1, Ordering::Relaxed);
                    next.in_service.push(entry.clone());
                    next.by_cookie.insert(entry.cookie.clone(), entry.clone());
                }
                BackendState::Draining => {
                    let was = entry.state.swap(DRAINING, Ordering::Relaxed);
                    if was != DRAINING {
                        entry.clear_pool();
                        let epoch = entry.drain_epoch.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(timeout) = draining_timeout {
                            let e = entry.clone();
                            timers.spawn(async move {
                                tokio::time::sleep(timeout).await;
                                if e.state.load(Ordering::Relaxed) == DRAINING
                                    && e.drain_epoch.load(Ordering::Relaxed) == epoch
                                {
                                    tracing::info!(
                                        instance = %e.instance_id,
                                        backend = %e.addr,
                                        active = e.active(),
                                        "draining timeout: cutting what is left"
                                    );
                                    e.cut_now();
                                }
                            });
                        }
                    }
                }
            }
            next.all.push(entry);
        }
        for e in &old.all {
            if !next.all.iter().any(|n| Arc::ptr_eq(n, e)) {
                e.state.store(REMOVED, Ordering::Relaxed);
                e.cut_now();
            }
        }
        *guard = Arc::new(next);
    }

    /// Cuts every backend's work (listener removed or engine stopped).
    pub fn cut_all(&self) {
        for e in &self.current().all {
            e.cut_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, port: u16, state: BackendState) -> Backend {
        Backend {
            instance_id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            state,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_draining_and_removal() {
        let set = Backends::new(1);
        let rt = tokio::runtime::Handle::current();
        assert!(set.next().is_none());
        set.update(
            &[
                b("i-1", 1, BackendState::InService),
                b("i-2", 2, BackendState::InService),
                b("i-3", 3, BackendState::InService),
            ],
            Some(Duration::from_secs(10)),
            &rt,
        );
        let picks: Vec<String> = (0..6)
            .map(|_| set.next().unwrap().instance_id.clone())
            .collect();
        assert_eq!(picks, ["i-1", "i-2", "i-3", "i-1", "i-2", "i-3"]);
        let one = set.by_cookie(&cookie_value("i-1")).unwrap();
        assert_eq!(one.instance_id, "i-1");
        let cut_one = one.cut_signal();
        let two = set.by_cookie(&cookie_value("i-2")).unwrap();
        let cut_two = two.cut_signal();

        // i-1 drains (cut after 10 s), i-2 is removed (cut now).
        set.update(
            &[
                b("i-1", 1, BackendState::Draining),
                b("i-3", 3, BackendState::InService),
            ],
            Some(Duration::from_secs(10)),
            &rt,
        );
        assert!(set.by_cookie(&cookie_value("i-1")).is_none());
        assert_eq!(one.state(), Some(BackendState::Draining));
        assert_eq!(two.state(), None);
        tokio::time::timeout(Duration::from_millis(1), cut_two)
            .await
            .expect("a removed backend is cut at once");
        let mut cut_one = Box::pin(cut_one);
        assert!(
            tokio::time::timeout(Duration::from_secs(9), &mut cut_one)
                .await
                .is_err(),
            "a draining backend is not cut before its timeout"
        );
        tokio::time::timeout(Duration::from_secs(2), cut_one)
            .await
            .expect("cut at the draining timeout");
        assert_eq!(set.next().unwrap().instance_id, "i-3");
        assert_eq!(set.next().unwrap().instance_id, "i-3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_back_in_service_is_not_cut_by_its_old_deadline() {
        let set = Backends::new(1);
        let rt = tokio::runtime::Handle::current();
        set.update(
            &[b("i-1", 1, BackendState::Draining)],
            Some(Duration::from_secs(5)),
            &rt,
        );
        let e = set.all()[0].clone();
        let cut = e.cut_signal();
        set.update(
            &[b("i-1", 1, BackendState::InService)],
            Some(Duration::from_secs(5)),
            &rt,
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(20), cut)
                .await
                .is_err()
        );
        assert!(Arc::ptr_eq(&e, &set.next().unwrap()));
    }

    #[test]
    fn cookie_values_are_stable_and_distinct() {
        assert_eq!(cookie_value("i-1"), cookie_value("i-1"));
        assert_ne!(cookie_value("i-1"), cookie_value("i-2"));
        assert_eq!(cookie_value("i-1").len(), 32);
    }
}
