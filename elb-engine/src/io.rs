//! Connection activity: the idle timeout (ConnectionSettings.IdleTimeout) closes a connection on
//! which no data went either way for that long.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use crate::{listener::ListenerShared, observe::Counter};

/// Counts progress on a client connection. The watchdog samples the count instead of reading the
/// clock on every read and write. Bytes each way are counted for the connection (SSL/TCP access
/// log records) and for its listener (`ProcessedBytes`).
#[derive(Debug, Default)]
pub struct Activity {
    progress: AtomicU64,
    /// Requests waiting for a backend's response headers: the connection is quiet, but the wait
    /// has its own timeout (504).
    waiting: AtomicUsize,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    listener: Option<Arc<ListenerShared>>,
}

impl Activity {
    /// A new counter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A new counter whose bytes also count for `listener`.
    pub fn counting_for(listener: Arc<ListenerShared>) -> Arc<Self> {
        Arc::new(Self {
            listener: Some(listener),
            ..Self::default()
        })
    }

    fn touch(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    fn moved(&self, n: usize, inbound: bool) {
        self.touch();
        let n = n as u64;
        let (mine, theirs) = if inbound {
            (&self.bytes_in, Counter::BytesIn)
        } else {
            (&self.bytes_out, Counter::BytesOut)
        };
        mine.fetch_add(n, Ordering::Relaxed);
        if let Some(l) = &self.listener {
            l.stats.add(theirs, n);
        }
    }

    /// Bytes read from and written to the client so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Marks a wait for a backend until the guard drops.
    pub fn waiting(self: &Arc<Self>) -> WaitGuard {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitGuard(self.clone())
    }

    /// Returns once nothing moved for `timeout` (checked every quarter of it, so it fires between
    /// 1 and 1.25 times `timeout` after the last byte).
    pub async fn idle(&self, timeout: Duration) {
        let tick = (timeout / 4).max(Duration::from_millis(10));
        let mut seen = self.progress.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = self.progress.load(Ordering::Relaxed);
            if now != seen || self.waiting.load(Ordering::Relaxed) > 0 {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= timeout {
                return;
            }
        }
    }
}

/// See [`Activity::waiting`].
#[derive(Debug)]
pub struct WaitGuard(Arc<Activity>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that reports its progress to an [`Activity`].
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            self.activity.moved(n, true);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.moved(n, false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.moved(n, false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sets TCP_NODELAY (requests and responses are small and latency-bound) and logs nothing on
/// failure: it is an optimisation.
pub fn nodelay(stream: &tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}
