//! A running listener: its sockets and accept loops, its current settings (replaced whole on a
//! configuration change, so a new certificate reaches the next connection while existing ones
//! keep theirs) and its backends.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{
    backends::Backends,
    config::{FrontendProtocol, ListenerConfig},
    io::{Activity, nodelay},
    observe::{Counter, ListenerStats, Observer, TlsInfo},
    tls,
    workers::Workers,
};

/// The engine's observer, shared by every listener (set with [`crate::Engine::set_observer`]).
pub(crate) type ObserverSlot = Arc<RwLock<Option<Arc<dyn Observer>>>>;

/// Listen backlog of each listener socket.
const BACKLOG: i32 = 4096;

/// A listener's settings, derived from its [`ListenerConfig`].
pub struct Settings {
    /// The configuration they were built from.
    pub config: ListenerConfig,
    /// TLS termination (HTTPS/SSL listeners).
    pub tls_acceptor: Option<TlsAcceptor>,
    /// TLS towards the backends (HTTPS/SSL instance protocol).
    pub backend_tls: Option<TlsConnector>,
    /// ConnectionSettings.IdleTimeout.
    pub idle_timeout: Duration,
    /// Session stickiness.
    pub stickiness: crate::config::Stickiness,
    /// Distinguishes settings: a pooled backend connection made under other settings (another
    /// backend protocol or authentication policy) is not reused.
    pub generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Validates `config` and builds what serving it needs (TLS configurations included).
    pub fn build(config: &ListenerConfig) -> Result<Self, String> {
        config.validate()?;
        let tls_acceptor = match &config.tls {
            Some(t) => Some(TlsAcceptor::from(tls::server_config(t)?)),
            None => None,
        };
        let backend_tls = config.backend_protocol.is_tls().then(|| {
            TlsConnector::from(tls::backend_client_config(&config.backend_authentication))
        });
        Ok(Self {
            config: config.clone(),
            tls_acceptor,
            backend_tls,
            idle_timeout: config.idle_timeout,
            stickiness: config.stickiness.clone(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// What every connection of a listener shares.
#[derive(Debug)]
pub struct ListenerShared {
    /// The listener's name.
    pub name: String,
    settings: RwLock<Arc<Settings>>,
    /// Its backends.
    pub backends: Backends,
    stop: watch::Sender<bool>,
    /// Its counters (see [`crate::observe`]).
    pub stats: ListenerStats,
    observer: ObserverSlot,
    open: AtomicUsize,
}

impl ListenerShared {
    /// The current settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().expect("settings lock").clone()
    }

    fn replace_settings(&self, settings: Settings) {
        *self.settings.write().expect("settings lock") = Arc::new(settings);
    }

    /// Resolves when the listener is removed or the engine stops.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Counts a request (HTTP) or a forwarded connection (SSL/TCP).
    pub fn count_request(&self) {
        self.stats.add(Counter::Requests, 1);
    }

    /// The observer, if it wants records of this listener's connections.
    pub fn observer(&self) -> Option<Arc<dyn Observer>> {
        let observer = self.observer.read().expect("observer lock").clone()?;
        observer.wants_records(&self.name).then_some(observer)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One listening address: a socket per worker (SO_REUSEPORT) and their accept loops.
#[derive(Debug)]
struct Acceptor {
    requested: SocketAddr,
    bound: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Acceptor {
    fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// A listener the engine runs.
#[derive(Debug)]
pub struct RunningListener {
    /// Shared with its connections.
    pub shared: Arc<ListenerShared>,
    acceptors: Vec<Acceptor>,
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// `n` sockets on `addr` (the first one resolves port 0 for the others).
fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind_one(bound)?);
    }
    Ok(all)
}

impl RunningListener {
    /// Binds every address of `settings` and starts accepting. Fails (binding nothing) if an
    /// address cannot be bound.
    pub fn start(
        settings: Settings,
        workers: &Workers,
        observer: ObserverSlot,
    ) -> Result<Self, (SocketAddr, io::Error)> {
        let shared = Arc::new(ListenerShared {
            name: settings.config.name.clone(),
            settings: RwLock::new(Arc::new(settings)),
            backends: Backends::new(workers.len()),
            stop: watch::channel(false).0,
            stats: ListenerStats::new(workers.len()),
            observer,
            open: AtomicUsize::new(0),
        });
        let mut me = Self {
            shared,
            acceptors: Vec::new(),
        };
        let addrs = me.shared.settings().config.bind.clone();
        for addr in addrs {
            if let Err(e) = me.add_acceptor(addr, workers) {
                me.stop();
                return Err((addr, e));
            }
        }
        Ok(me)
    }

    fn add_acceptor(&mut self, addr: SocketAddr, workers: &Workers) -> io::Result<()> {
        let sockets = bind_group(addr, workers.len())?;
        let bound = sockets[0].local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let tasks = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let (shared, stop_rx) = (self.shared.clone(), stop_rx.clone());
                // Registered with the worker's own I/O driver, inside its runtime.
                workers.handle(i).spawn(async move {
                    match TcpListener::from_std(socket) {
                        Ok(socket) => accept_loop(socket, shared, stop_rx).await,
                        Err(e) => {
                            tracing::error!(listener = %shared.name, error = %e, "cannot poll socket")
                        }
                    }
                })
            })
            .collect();
        self.acceptors.push(Acceptor {
            requested: addr,
            bound,
            stop,
            tasks,
        });
        Ok(())
    }

    /// The addresses it listens on (ports resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.acceptors.iter().map(|a| a.bound).collect()
    }

    /// Applies new settings: new connections use them at once; bind addresses are added and
    /// removed as they changed.
    pub fn update(
        &mut self,
        settings: Settings,
        workers: &Workers,
    ) -> Result<(), (SocketAddr, io::Error)> {
        let wanted = settings.config.bind.clone();
        let mut added = Vec::new();
        // An address matches an acceptor by what it was asked for or what it got (a listener
        // started on port 0 may be given its resolved port back).
        for addr in &wanted {
            if let Some(a) = self
                .acceptors
                .iter_mut()
                .find(|a| a.requested == *addr || a.bound == *addr)
            {
                a.requested = *addr;
            } else if let Err(e) = self.add_acceptor(*addr, workers) {
                // Leave the listener as it was.
                for a in added {
                    self.remove_acceptor(a);
                }
                return Err((*addr, e));
            } else {
                added.push(*addr);
            }
        }
        let gone: Vec<SocketAddr> = self
            .acceptors
            .iter()
            .map(|a| a.requested)
            .filter(|a| !wanted.contains(a))
            .collect();
        for addr in gone {
            self.remove_acceptor(addr);
        }
        self.shared.replace_settings(settings);
        Ok(())
    }

    fn remove_acceptor(&mut self, addr: SocketAddr) {
        if let Some(i) = self.acceptors.iter().position(|a| a.requested == addr) {
            self.acceptors.remove(i).stop();
        }
    }

    /// Stops accepting new connections.
    pub fn stop_accepting(&mut self) {
        for a in self.acceptors.drain(..) {
            a.stop();
        }
    }

    /// Stops accepting and ends every connection.
    pub fn stop(&mut self) {
        self.stop_accepting();
        self.shared.stop.send_replace(true);
        self.shared.backends.cut_all();
    }
}

async fn accept_loop(
    socket: TcpListener,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = socket.accept() => match r {
                Ok((stream, peer)) => {
                    nodelay(&stream);
                    tokio::spawn(connection(stream, peer, shared.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

struct OpenGuard(Arc<ListenerShared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<ListenerShared>) {
    shared.stats.add(Counter::Connections, 1);
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(shared.clone());
    let mut accepted = Accepted {
        at: tokio::time::Instant::now(),
        time: std::time::SystemTime::now(),
        observer: shared.observer(),
        tls: None,
    };
    let settings = shared.settings();
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let local_port = local.port();
    let activity = Activity::counting_for(shared.clone());
    let protocol = settings.config.protocol;
    let stream = if let Some(acceptor) = &settings.tls_acceptor {
        match tokio::time::timeout(settings.idle_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                if accepted.observer.is_some() {
                    accepted.tls = crate::observe::tls_info(tls.get_ref().1);
                }
                Either::Tls(Box::new(tls))
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, listener = %shared.name, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, listener = %shared.name, "TLS handshake timed out");
                return;
            }
        }
    } else {
        Either::Plain(stream)
    };
    drop(settings);
    match protocol {
        FrontendProtocol::Http | FrontendProtocol::Https => {
            let conn = crate::http::Connection {
                listener: shared,
                peer,
                local_port,
                https: protocol == FrontendProtocol::Https,
                activity,
                accepted,
            };
            match stream {
                Either::Plain(s) => crate::http::serve(s, conn).await,
                Either::Tls(s) => crate::http::serve(s, conn).await,
            }
        }
        FrontendProtocol::Tcp | FrontendProtocol::Ssl => match stream {
            Either::Plain(s) => {
                crate::stream::serve(s, peer, local, shared, activity, accepted).await
            }
            Either::Tls(s) => {
                crate::stream::serve(s, peer, local, shared, activity, accepted).await
            }
        },
    }
}

/// A client connection as it was accepted: when, and whether (and with which TLS parameters)
/// its requests are recorded.
#[derive(Debug)]
pub struct Accepted {
    /// When the connection was accepted (monotonic).
    pub at: tokio::time::Instant,
    /// The same, as wall-clock time (records carry it).
    pub time: std::time::SystemTime,
    /// Where its records go, if anywhere.
    pub observer: Option<Arc<dyn Observer>>,
    /// Its TLS parameters (HTTPS/SSL listeners, when recorded).
    pub tls: Option<TlsInfo>,
}

enum Either {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}
