//! The engine's threads: one single-threaded tokio runtime per worker, each with its own accept
//! loop on every listener address (SO_REUSEPORT) and its own idle backend connections.
//!
//! A connection, its requests and the backend connections they use all live on one thread, so a
//! request crosses no thread: measured with wrk over TLS on the 2-vCPU benchmark machine, a
//! work-stealing runtime with two workers served 17-19k keep-alive requests per second where one
//! thread served 27k (the hand-offs between the client's task and the backend connection's task
//! went through other threads). The kernel spreads new connections over the workers, so
//! handshakes still use every core.

use std::{cell::Cell, io, thread};

use tokio::{runtime::Handle, sync::oneshot};

thread_local! {
    /// This thread's worker index (`usize::MAX` outside the engine's threads).
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The index of the worker running the caller, if it runs on one.
pub fn current() -> Option<usize> {
    let w = WORKER.with(Cell::get);
    (w != usize::MAX).then_some(w)
}

/// The engine's worker threads; stopped when dropped.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers (at least one). Threads inherit the caller's network namespace.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut me = Self {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n.max(1) {
            let (stop, stopped) = oneshot::channel::<()>();
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let thread = thread::Builder::new()
                .name(format!("elb-engine-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(i));
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| io::Error::other("engine worker thread died at start"))??;
            me.handles.push(handle);
            me.stops.push(stop);
            me.threads.push(thread);
        }
        Ok(me)
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none (never: `start` makes at least one).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Worker `i`'s runtime.
    pub fn handle(&self, i: usize) -> &Handle {
        &self.handles[i % self.handles.len()]
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        // A worker cannot wait for itself; the others end at once (their tasks are dropped).
        if current().is_none() {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}
