//! SSL and TCP listeners: per-connection round robin, bytes copied both ways; and the backend
//! connections both kinds of listener open (plain or TLS).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use crate::{
    backends::BackendEntry,
    io::{Activity, TrackedIo, nodelay},
    listener::{Accepted, ListenerShared, Settings},
    observe::{Counter, RequestRecord},
    tls::backend_server_name,
};

/// Longest wait for a backend's TCP (and TLS) handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a backend: plain, or TLS when the instance protocol is HTTPS/SSL.
#[derive(Debug)]
pub enum BackendStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to `backend`, with TLS when the listener's backends speak it (verifying the key when
/// a backend authentication policy is set).
pub async fn connect_backend(
    backend: &BackendEntry,
    settings: &Settings,
) -> io::Result<BackendStream> {
    let work = async {
        let tcp = TcpStream::connect(backend.addr).await?;
        nodelay(&tcp);
        match &settings.backend_tls {
            None => Ok(BackendStream::Plain(tcp)),
            Some(connector) => {
                let tls = connector
                    .connect(backend_server_name(backend.addr), tcp)
                    .await?;
                Ok(BackendStream::Tls(Box::new(tls)))
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "backend handshake timed out",
            ))
        })
}

/// The PROXY protocol v1 header ELB sends (`PROXY TCP4 <client> <listener address> <client
/// port> <listener port>\r\n`; `TCP6` for IPv6, `UNKNOWN` for a mixed pair).
pub fn proxy_v1_header(client: SocketAddr, local: SocketAddr) -> String {
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            c.ip(),
            l.ip(),
            c.port(),
            l.port()
        ),
        (SocketAddr::V6(c), SocketAddr::V6(l)) => format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            c.ip(),
            l.ip(),
            c.port(),
            l.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_string(),
    }
}

/// Serves one client connection of an SSL/TCP listener: the next InService backend (sent a
/// PROXY v1 header first when the listener asks for it), then bytes both ways until either side
/// closes, the connection idles out, or the backend is cut. The connection is recorded when
/// it ends (if its listener is observed).
pub async fn serve<IO>(
    client: IO,
    peer: SocketAddr,
    local: SocketAddr,
    listener: Arc<ListenerShared>,
    activity: Arc<Activity>,
    accepted: Accepted,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = listener.settings();
    let mut record = accepted.observer.as_ref().map(|_| RequestRecord {
        time: accepted.time,
        client: peer,
        backend: None,
        request_processing: None,
        backend_processing: None,
        response_processing: None,
        elb_status: None,
        backend_status: None,
        received_bytes: 0,
        sent_bytes: 0,
        request: None,
        user_agent: None,
        tls: accepted.tls.clone(),
    });
    let finish = |record: Option<RequestRecord>| {
        if let (Some(observer), Some(mut r)) = (&accepted.observer, record) {
            (r.received_bytes, r.sent_bytes) = activity.bytes();
            observer.record(&listener.name, r);
        }
    };
    let Some(backend) = listener.backends.next() else {
        tracing::debug!(%peer, listener = %listener.name, "no InService backend: closing");
        finish(record);
        return;
    };
    listener.count_request();
    let _active = backend.track();
    let cut = backend.cut_signal();
    let stop = listener.stopped();
    let Some(queued) = listener.stats.enter_surge_queue() else {
        tracing::debug!(%peer, listener = %listener.name, "surge queue full: closing");
        finish(record);
        return;
    };
    let connecting = tokio::time::Instant::now();
    let connected = connect_backend(&backend, &settings).await;
    drop(queued);
    let connect_time = connecting.elapsed();
    let mut server = match connected {
        Ok(s) => s,
        Err(e) => {
            listener.stats.add(Counter::BackendConnectionErrors, 1);
            tracing::debug!(%peer, backend = %backend.addr, error = %e, "backend unreachable");
            finish(record);
            return;
        }
    };
    if settings.config.proxy_protocol {
        use tokio::io::AsyncWriteExt as _;
        if let Err(e) = server
            .write_all(proxy_v1_header(peer, local).as_bytes())
            .await
        {
            tracing::debug!(%peer, backend = %backend.addr, error = %e, "backend closed before the PROXY header");
            finish(record);
            return;
        }
    }
    listener.stats.latency(connect_time);
    if let Some(r) = &mut record {
        r.backend = Some(backend.addr);
        r.request_processing = Some(connecting.duration_since(accepted.at));
        r.backend_processing = Some(connect_time);
        r.response_processing = Some(Duration::ZERO);
    }
    let mut client = TrackedIo::new(client, activity.clone());
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            if let Err(e) = r {
                tracing::debug!(%peer, backend = %backend.addr, error = %e, "connection ended");
            }
        }
        () = activity.idle(settings.idle_timeout) => {
            tracing::debug!(%peer, "idle timeout: closing");
        }
        () = cut => {
            tracing::debug!(%peer, backend = %backend.addr, "backend cut: closing");
        }
        () = stop => {}
    }
    finish(record);
}
