//! HTTP and HTTPS listeners: HTTP/1.1 with keep-alive on both sides (hyper), per-request round
//! robin over InService backends, X-Forwarded-For/-Proto/-Port, LB and application cookie
//! stickiness, 503 when no backend is InService.

use std::{
    convert::Infallible,
    error::Error as StdError,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Request, Response, StatusCode, Version,
    header::{self, HeaderName},
};
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::{
    backends::{ActiveGuard, BackendEntry},
    config::Stickiness,
    io::{Activity, TrackedIo},
    listener::{Accepted, ListenerShared, Settings},
    observe::{Counter, Observer, RequestLine, RequestRecord},
    stream::connect_backend,
};

/// The engine's stickiness cookie, as ELB names it.
pub const STICKY_COOKIE: &str = "AWSELB";
/// Most idle keep-alive connections kept per backend.
const POOL_MAX: usize = 512;

/// A request body on its way to a backend, its bytes counted when the request is recorded.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    counted: Option<Arc<AtomicU64>>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(counted), Poll::Ready(Some(Ok(frame)))) = (&this.counted, &r)
            && let Some(data) = frame.data_ref()
        {
            counted.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The record of a request (when its listener is observed), completed when the response body
/// is done: sent bytes, then handed to the observer.
struct PendingRecord {
    observer: Arc<dyn Observer>,
    listener: Arc<ListenerShared>,
    record: RequestRecord,
    received: Arc<AtomicU64>,
    sent: u64,
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        let mut record = std::mem::replace(&mut self.record, empty_record());
        record.received_bytes = self.received.load(Ordering::Relaxed);
        record.sent_bytes = self.sent;
        self.observer.record(&self.listener.name, record);
    }
}

fn empty_record() -> RequestRecord {
    RequestRecord {
        time: std::time::UNIX_EPOCH,
        client: SocketAddr::from(([0, 0, 0, 0], 0)),
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
        tls: None,
    }
}

/// An idle keep-alive connection to a backend.
#[derive(Debug)]
pub struct PooledConnection {
    sender: SendRequest<RequestBody>,
    idle_since: Instant,
    /// [`Settings::generation`] it was made under.
    generation: u64,
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// A backend connection to return to its pool.
struct Reuse {
    sender: SendRequest<RequestBody>,
    backend: Arc<BackendEntry>,
    generation: u64,
}

/// What goes to the client: a backend's body (its connection returns to the pool when the body
/// ends), or nothing (the engine's own error responses).
pub struct ResponseBody {
    inner: Option<Incoming>,
    /// Returned to the backend's pool once the body has been read to its end.
    reuse: Option<Reuse>,
    cut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _active: Option<ActiveGuard>,
    /// Handed to the observer when the body is dropped (sent or abandoned).
    log: Option<PendingRecord>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    fn empty() -> Self {
        Self {
            inner: None,
            reuse: None,
            cut: None,
            _active: None,
            log: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(cut) = this.cut.as_mut()
            && cut.as_mut().poll(cx).is_ready()
        {
            this.inner = None;
            this.reuse = None;
            return Poll::Ready(Some(Err("backend removed or drained".into())));
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                if let Some(r) = this.reuse.take() {
                    return_to_pool(&r.backend, r.sender, r.generation);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                this.reuse = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(log), Some(data)) = (this.log.as_mut(), frame.data_ref()) {
                    log.sent += data.len() as u64;
                }
                // hyper stops polling a body whose length is reached: hand the connection back
                // now rather than on an end-of-stream poll that may never come.
                if this.inner.as_ref().is_some_and(Body::is_end_stream)
                    && let Some(r) = this.reuse.take()
                {
                    return_to_pool(&r.backend, r.sender, r.generation);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

fn return_to_pool(backend: &BackendEntry, sender: SendRequest<RequestBody>, generation: u64) {
    if !backend.in_service() || sender.is_closed() {
        return;
    }
    let mut pool = backend.local_pool().lock().expect("pool lock");
    if pool.len() < POOL_MAX {
        pool.push(PooledConnection {
            sender,
            idle_since: Instant::now(),
            generation,
        });
    }
}

/// A pooled connection that is still open, younger than the idle timeout and made under the
/// current settings, if any.
fn from_pool(backend: &BackendEntry, settings: &Settings) -> Option<SendRequest<RequestBody>> {
    let mut pool = backend.local_pool().lock().expect("pool lock");
    while let Some(c) = pool.pop() {
        if !c.sender.is_closed()
            && c.idle_since.elapsed() < settings.idle_timeout
            && c.generation == settings.generation
        {
            return Some(c.sender);
        }
    }
    None
}

/// Opens a connection to `backend` (TLS when the listener's backends speak HTTPS) and starts
/// its HTTP/1.1 client; the connection ends when the backend is cut. The request waits in the
/// listener's surge queue meanwhile.
async fn connect(
    backend: &Arc<BackendEntry>,
    settings: &Settings,
    listener: &ListenerShared,
) -> Result<SendRequest<RequestBody>, Failure> {
    let queued = listener
        .stats
        .enter_surge_queue()
        .ok_or(Failure::Spillover)?;
    let connected = connect_backend(backend, settings).await;
    drop(queued);
    let stream = connected.map_err(|e| {
        listener.stats.add(Counter::BackendConnectionErrors, 1);
        tracing::debug!(backend = %backend.addr, error = %e, "backend connection failed");
        Failure::Connect
    })?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, RequestBody>(TokioIo::new(stream))
        .await
        .map_err(|_| {
            listener.stats.add(Counter::BackendConnectionErrors, 1);
            Failure::Connect
        })?;
    let cut = backend.cut_signal();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn => {}
            () = cut => {}
        }
    });
    Ok(sender)
}

/// Why a request got no backend response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No InService backend, or it could not be reached: 503.
    Unavailable,
    Connect,
    /// The surge queue is full: 503.
    Spillover,
    /// The backend failed mid-exchange: 502.
    Bad,
    /// No response headers within the idle timeout: 504.
    Timeout,
}

impl Failure {
    fn status(self) -> StatusCode {
        match self {
            Self::Unavailable | Self::Connect | Self::Spillover => StatusCode::SERVICE_UNAVAILABLE,
            Self::Bad => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// Per-connection context of an HTTP/HTTPS listener.
#[derive(Debug)]
pub struct Connection {
    /// The listener.
    pub listener: Arc<ListenerShared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The port the client connected to (X-Forwarded-Port).
    pub local_port: u16,
    /// Whether the client spoke TLS (X-Forwarded-Proto).
    pub https: bool,
    /// The connection's activity (idle timeout).
    pub activity: Arc<Activity>,
    /// When it was accepted, and whether its requests are recorded.
    pub accepted: Accepted,
}

/// Serves one client connection until it closes, goes idle, or its listener goes away.
pub async fn serve<IO>(io: IO, conn: Connection)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let activity = conn.activity.clone();
    let idle_timeout = conn.listener.settings().idle_timeout;
    let stop = conn.listener.stopped();
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(handle(req, &conn).await) }
        })
    };
    let serve = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(TrackedIo::new(io, activity.clone())), service);
    tokio::select! {
        r = serve => {
            if let Err(e) = r {
                // hyper answers a request it cannot parse with a 4XX itself.
                if e.is_parse() || e.is_parse_too_large() {
                    conn.listener.stats.status(400, false);
                }
                tracing::debug!(peer = %conn.peer, error = %e, "client connection ended");
            }
        }
        () = activity.idle(idle_timeout) => {
            tracing::debug!(peer = %conn.peer, "idle timeout: closing the client connection");
        }
        () = stop => {}
    }
}

/// The client's `AWSELB` cookie and whether it carries the application cookie `app`.
fn request_cookies(headers: &HeaderMap, app: Option<&str>) -> (Option<String>, bool) {
    let mut sticky = None;
    let mut has_app = false;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((name, val)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == STICKY_COOKIE {
                sticky = Some(val.trim_matches('"').to_string());
            } else if Some(name) == app {
                has_app = true;
            }
        }
    }
    (sticky, has_app)
}

/// The lifetime attributes (`Expires`, `Max-Age`) and flags (`Secure`, `HttpOnly`) of the
/// application cookie `name` if the response sets it. Following ELB, a Set-Cookie with a trailing
/// semicolon is ignored.
fn app_cookie_set(headers: &HeaderMap, name: &str) -> Option<Vec<String>> {
    for value in headers.get_all(header::SET_COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let text = text.trim();
        if text.ends_with(';') {
            continue;
        }
        let mut parts = text.split(';');
        let Some((cookie, _)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            continue;
        };
        if cookie.trim() != name {
            continue;
        }
        let attrs = parts
            .map(str::trim)
            .filter(|a| {
                let key = a
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                matches!(key.as_str(), "expires" | "max-age" | "secure" | "httponly")
            })
            .map(str::to_string)
            .collect();
        return Some(attrs);
    }
    None
}

/// Headers that belong to one connection, not to the message (RFC 9110 7.6.1), plus those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

fn x_forwarded(headers: &mut HeaderMap, conn: &Connection) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFPORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    let client = conn.peer.ip().to_string();
    // ELB appends the client's address to what the request already carries.
    let existing: Vec<&str> = headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let xff = if existing.is_empty() {
        client
    } else {
        format!("{}, {client}", existing.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(&XFF, v);
    }
    headers.insert(
        &XFP,
        HeaderValue::from_static(if conn.https { "https" } else { "http" }),
    );
    headers.insert(&XFPORT, HeaderValue::from(conn.local_port));
}

/// The engine's own answer (no backend response): counted as `HTTPCode_ELB_*`, recorded with no
/// backend status.
fn status_response(
    status: StatusCode,
    conn: &Connection,
    log: Option<PendingRecord>,
) -> Response<ResponseBody> {
    conn.listener.stats.status(status.as_u16(), false);
    let mut body = ResponseBody::empty();
    body.log = log.map(|mut l| {
        l.record.elb_status = Some(status.as_u16());
        l
    });
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// The request line as ELB's access log shows it: the scheme of the listener, the host the
/// client named (without its port) and the port it connected to.
fn request_line(req: &Request<Incoming>, conn: &Connection) -> RequestLine {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("-");
    let host = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or_default()),
        None => host.split(':').next().unwrap_or_default().to_string(),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    RequestLine {
        method: req.method().to_string(),
        url: format!(
            "{}://{host}:{}{path}",
            if conn.https { "https" } else { "http" },
            conn.local_port
        ),
        version: format!("{:?}", req.version()),
    }
}

/// A new record of `req` if its connection is observed, and the counter of its body bytes.
fn start_record(
    req: &Request<Incoming>,
    conn: &Connection,
) -> Option<(PendingRecord, Arc<AtomicU64>)> {
    let observer = conn.accepted.observer.clone()?;
    let received = Arc::new(AtomicU64::new(0));
    let record = RequestRecord {
        time: std::time::SystemTime::now(),
        client: conn.peer,
        request: Some(request_line(req, conn)),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        tls: conn.accepted.tls.clone(),
        ..empty_record()
    };
    Some((
        PendingRecord {
            observer,
            listener: conn.listener.clone(),
            record,
            received: received.clone(),
            sent: 0,
        },
        received,
    ))
}

async fn handle(req: Request<Incoming>, conn: &Connection) -> Response<ResponseBody> {
    let received_at = Instant::now();
    let (mut log, counted) = match start_record(&req, conn) {
        Some((log, counted)) => (Some(log), Some(counted)),
        None => (None, None),
    };
    let settings = conn.listener.settings();
    let backends = &conn.listener.backends;
    let app_cookie = match &settings.stickiness {
        Stickiness::AppCookie { cookie_name } => Some(cookie_name.as_str()),
        _ => None,
    };
    let (sticky, has_app) = if settings.stickiness == Stickiness::None {
        (None, false)
    } else {
        request_cookies(req.headers(), app_cookie)
    };
    // A sticky request goes to its instance while that is InService; an application cookie
    // binds only while the client still carries the application's own cookie.
    let bound = match (&settings.stickiness, &sticky) {
        (Stickiness::LbCookie { .. }, Some(v)) => backends.by_cookie(v),
        (Stickiness::AppCookie { .. }, Some(v)) if has_app => backends.by_cookie(v),
        _ => None,
    };
    let Some(backend) = bound.clone().or_else(|| backends.next()) else {
        return status_response(Failure::Unavailable.status(), conn, log);
    };
    conn.listener.count_request();

    let (mut parts, body) = req.into_parts();
    let body = RequestBody {
        inner: body,
        counted,
    };
    strip_hop_by_hop(&mut parts.headers);
    x_forwarded(&mut parts.headers, conn);
    parts.version = Version::HTTP_11;
    let active = backend.track();

    let result = {
        let _waiting = conn.activity.waiting();
        tokio::time::timeout(
            settings.idle_timeout,
            exchange(&backend, &settings, &conn.listener, parts, body),
        )
        .await
        .unwrap_or(Err(Failure::Timeout))
    };
    let (response, sender, sent_at) = match result {
        Ok(r) => r,
        Err(f) => {
            tracing::debug!(backend = %backend.addr, failure = ?f, "request failed");
            return status_response(f.status(), conn, log);
        }
    };
    let headers_at = Instant::now();
    conn.listener.stats.latency(headers_at - sent_at);
    let code = response.status().as_u16();
    conn.listener.stats.status(code, true);

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    match &settings.stickiness {
        Stickiness::LbCookie { expiration } => {
            // Set when the client was not (or no longer) bound to this instance; ELB does not
            // refresh an existing cookie's expiry.
            if bound.is_none() || sticky.as_deref() != Some(backend.cookie.as_str()) {
                let mut v = format!("{STICKY_COOKIE}={};PATH=/", backend.cookie);
                if let Some(e) = expiration {
                    v.push_str(&format!(";MAX-AGE={}", e.as_secs()));
                }
                if let Ok(v) = HeaderValue::from_str(&v) {
                    parts.headers.append(header::SET_COOKIE, v);
                }
            }
        }
        Stickiness::AppCookie { cookie_name } => {
            if let Some(attrs) = app_cookie_set(&parts.headers, cookie_name) {
                let mut v = format!("{STICKY_COOKIE}={};PATH=/", backend.cookie);
                for a in attrs {
                    v.push(';');
                    v.push_str(&a);
                }
                if let Ok(v) = HeaderValue::from_str(&v) {
                    parts.headers.append(header::SET_COOKIE, v);
                }
            }
        }
        Stickiness::None => {}
    }
    if let Some(l) = &mut log {
        let r = &mut l.record;
        r.backend = Some(backend.addr);
        r.request_processing = Some(sent_at.saturating_duration_since(received_at));
        r.backend_processing = Some(headers_at - sent_at);
        r.response_processing = Some(headers_at.elapsed());
        r.elb_status = Some(code);
        r.backend_status = Some(code);
    }
    let body = if body.is_end_stream() {
        return_to_pool(&backend, sender, settings.generation);
        ResponseBody {
            log,
            ..ResponseBody::empty()
        }
    } else {
        ResponseBody {
            inner: Some(body),
            reuse: Some(Reuse {
                sender,
                backend: backend.clone(),
                generation: settings.generation,
            }),
            cut: Some(Box::pin(backend.cut_signal())),
            _active: Some(active),
            log,
        }
    };
    Response::from_parts(parts, body)
}

/// A backend's response headers, the connection to return to the pool, and when the request
/// went out.
type Exchanged = (Response<Incoming>, SendRequest<RequestBody>, Instant);

/// Sends the request to `backend` on a pooled connection (or a new one) and waits for the
/// response headers. A request that a reused connection could not even send (the backend closed
/// it meanwhile: the keep-alive race) is sent again on a new connection.
async fn exchange(
    backend: &Arc<BackendEntry>,
    settings: &Settings,
    listener: &ListenerShared,
    parts: http::request::Parts,
    body: RequestBody,
) -> Result<Exchanged, Failure> {
    let cut = backend.cut_signal();
    let work = async {
        let mut request = Request::from_parts(parts, body);
        if let Some(mut sender) = from_pool(backend, settings)
            && sender.ready().await.is_ok()
        {
            let sent_at = Instant::now();
            match sender.try_send_request(request).await {
                Ok(resp) => return Ok((resp, sender, sent_at)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        tracing::debug!(
                            backend = %backend.addr,
                            error = %e.error(),
                            "backend exchange failed"
                        );
                        return Err(Failure::Bad);
                    }
                },
            }
        }
        let mut sender = connect(backend, settings, listener).await?;
        let sent_at = Instant::now();
        let resp = sender.send_request(request).await.map_err(|e| {
            tracing::debug!(backend = %backend.addr, error = %e, "backend exchange failed");
            Failure::Bad
        })?;
        Ok((resp, sender, sent_at))
    };
    tokio::select! {
        r = work => r,
        () = cut => Err(Failure::Bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; AWSELB=ABC"));
        h.append(header::COOKIE, HeaderValue::from_static("SESSION=x"));
        assert_eq!(
            request_cookies(&h, Some("SESSION")),
            (Some("ABC".into()), true)
        );
        assert_eq!(
            request_cookies(&h, Some("OTHER")),
            (Some("ABC".into()), false)
        );
        assert_eq!(request_cookies(&HeaderMap::new(), None), (None, false));
    }

    #[test]
    fn application_cookie_lifetime_is_copied() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("other=1; Max-Age=5"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("SESSION=abc; Path=/x; Max-Age=300; HttpOnly; Domain=a.b"),
        );
        assert_eq!(
            app_cookie_set(&h, "SESSION"),
            Some(vec!["Max-Age=300".to_string(), "HttpOnly".to_string()])
        );
        assert_eq!(app_cookie_set(&h, "NONE"), None);
        let mut trailing = HeaderMap::new();
        trailing.append(
            header::SET_COOKIE,
            HeaderValue::from_static("SESSION=abc; Path=/;"),
        );
        assert_eq!(app_cookie_set(&trailing, "SESSION"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }
}
