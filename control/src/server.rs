//! The HTTP front of the Query API: `app(state)` is the axum router, `run` serves it on a
//! listener until `shutdown` resolves. Each request gets a RequestId that appears in its log
//! line, its response and (for errors) its ErrorResponse, and is recorded with the config
//! version its writes make. The servo protocol ([`crate::servo_api`]) shares the listener
//! under `/servo/v1/`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::api::{self, Action, Caller, Ctx};
use crate::certs::{self, IamAction, seal::Sealer};
use crate::config::ServiceConfig;
use crate::error::{ApiError, ErrorCode, RequestFailure, xml_response};
use crate::iam::PolicyDocument;
use crate::inventory::Inventory;
use crate::query::Params;
use crate::store::{ChangeOrigin, Principal, Store, with_origin};
use elb_sigv4::SigV4Error;

/// The API version this service implements.
pub const API_VERSION: &str = "2012-06-01";
/// The SigV4 service name of the ELB API.
const SIGNING_SERVICE: &str = "elasticloadbalancing";

/// Shared state of the service; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<AppInner>,
}

#[derive(Debug)]
struct AppInner {
    config: ServiceConfig,
    store: Store,
    inventory: Inventory,
    /// Wakes the assignment task early (a servo registered or came back).
    assign_wake: Arc<Notify>,
    /// Turns true when the server starts shutting down, so long-polls answer at once.
    shutdown: watch::Sender<bool>,
    /// The key that seals certificate private keys, read from `config.key_file` on first use.
    sealer: std::sync::OnceLock<Sealer>,
    /// The web console's in-memory state (metrics history).
    console: crate::console::Console,
    /// The cloud's IAM and ACM certificates, when configured.
    certificate_sources: crate::cloud::certificates::CertificateSources,
    /// The S3-compatible endpoint of access logs, if configured.
    s3: Option<elb_s3::S3Writer>,
    /// The metrics of every load balancer, aggregated from the servos' reports.
    metrics: crate::metrics::Aggregator,
}

impl AppState {
    /// The state of a service with `config` (validated: see [`ServiceConfig::validate`]).
    pub fn new(config: ServiceConfig, store: Store, inventory: Inventory) -> Self {
        let certificate_sources = crate::cloud::certificates::CertificateSources::new(
            &config.cloud,
        )
        .unwrap_or_else(|e| {
            // Only an invalid configuration fails here, and `validate` refuses those first.
            tracing::error!(error = %e, "cloud certificate endpoints disabled");
            crate::cloud::certificates::CertificateSources::new(&Default::default())
                .expect("no endpoints, nothing to fail")
        });
        let s3 = config.s3.clone().map(elb_s3::S3Writer::new);
        Self {
            inner: Arc::new(AppInner {
                certificate_sources,
                s3,
                metrics: crate::metrics::Aggregator::new(crate::timefmt::now_millis()),
                config,
                store,
                inventory,
                assign_wake: Arc::new(Notify::new()),
                shutdown: watch::Sender::new(false),
                sealer: std::sync::OnceLock::new(),
                console: crate::console::Console::default(),
            }),
        }
    }

    /// What the assignment task waits on besides its ticker.
    pub fn assignment_wake(&self) -> Arc<Notify> {
        self.inner.assign_wake.clone()
    }

    pub fn wake_assignment(&self) {
        self.inner.assign_wake.notify_one();
    }

    /// Turns true when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Ends long-polls and tells background tasks to stop.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// The cloud's certificate services.
    pub fn certificate_sources(&self) -> &crate::cloud::certificates::CertificateSources {
        &self.inner.certificate_sources
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inner.inventory
    }

    /// The sealer of certificate private keys (loads or creates the key file once).
    pub fn sealer(&self) -> Result<&Sealer, ApiError> {
        if let Some(sealer) = self.inner.sealer.get() {
            return Ok(sealer);
        }
        let Some(path) = &self.inner.config.key_file else {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "This control service has no key file to seal certificate private keys: its \
                 administrator must start it with --key-file",
            ));
        };
        let sealer = Sealer::load_or_create(path).map_err(|e| {
            tracing::error!(error = %e, "cannot load the key file for certificate private keys");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "This control service cannot read its key file for certificate private keys; \
                 its administrator must check the log",
            )
        })?;
        Ok(self.inner.sealer.get_or_init(|| sealer))
    }

    pub fn console(&self) -> &crate::console::Console {
        &self.inner.console
    }

    /// The access logs' S3-compatible endpoint, if this service has one.
    pub fn s3(&self) -> Option<&elb_s3::S3Writer> {
        self.inner.s3.as_ref()
    }

    /// The metrics of every load balancer (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::Aggregator {
        &self.inner.metrics
    }
}

/// The router: the Query API answers on `/` (GET with a query string, or POST with a form),
/// readiness on `/health`, the servo protocol under `/servo/v1/`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", any(handle))
        .route("/health", get(health))
        .nest("/servo/v1", crate::servo_api::router())
        .merge(crate::console::router())
        .fallback(not_found)
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (long-polls answer at once).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = state.clone();
    tokio::spawn(crate::console::run_background(state.clone()));
    let shutdown = async move {
        shutdown.await;
        stopping.begin_shutdown();
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `app(state)` over TLS on `listener` (requests carry [`crate::tls::SecureTransport`])
/// until the state's shutdown begins, then lets in-flight requests finish.
pub async fn run_tls(listener: crate::tls::TlsListener, state: AppState) -> std::io::Result<()> {
    let mut stop = state.shutdown_signal();
    let app = app(state).layer(axum::Extension(crate::tls::SecureTransport));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { until_true(&mut stop).await })
        .await
}

/// A random version-4 UUID, the RequestId format of AWS.
pub(crate) fn new_request_id() -> String {
    let mut b = [0u8; 16];
    crate::store::fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = elb_sigv4::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Readiness ([`crate::readiness::status`]) as JSON: 200 when every zone has a live servo
/// with room, 503 when one has not (the body says which), 500 when the database does not
/// answer.
async fn health(State(state): State<AppState>) -> Response {
    match crate::readiness::status(state.store(), state.config().servo.timeout_ms()).await {
        Ok(status) => {
            let code = if status.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            crate::servo_api::json_response(code, &status)
        }
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            crate::servo_api::json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &elb_contract::wire::ErrorBody {
                    error: "the database does not answer".into(),
                },
            )
        }
    }
}

async fn not_found() -> Response {
    let id = new_request_id();
    ApiError::new(
        ErrorCode::NotFound,
        "Not found: the Query API is served at /",
    )
    .into_response_with_id(&id)
}

/// What the log line of a request records.
#[derive(Default)]
struct Outcome {
    action: Option<&'static str>,
    account: Option<String>,
    user: Option<String>,
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = new_request_id();
    let started = Instant::now();
    let mut outcome = Outcome::default();
    // Everything logged while the request is processed (inventory calls, store warnings)
    // carries its request id through this span.
    let span = tracing::info_span!("request", request_id = %request_id);
    // Writes made by the request record its id with their config version, for the servos.
    let result = with_origin(
        ChangeOrigin::Request(request_id.clone()),
        process(
            &state,
            &request_id,
            &method,
            &uri,
            &headers,
            body,
            &mut outcome,
        )
        .instrument(span),
    )
    .await;
    finish(request_id, started, &outcome, result)
}

/// Runs one Query API request for a caller authenticated by other means than a signature (the
/// console's session): the same action parsing, dispatch and IAM evaluation as a signed
/// request, with its own RequestId, change origin and log line.
pub async fn handle_authenticated(
    state: &AppState,
    caller: &Caller,
    region: &str,
    params: &Params,
) -> Response {
    let request_id = new_request_id();
    let started = Instant::now();
    let mut outcome = Outcome {
        account: Some(caller.account_id.clone()),
        user: Some(caller.user_name.clone()),
        ..Outcome::default()
    };
    let span = tracing::info_span!("request", request_id = %request_id);
    let result = with_origin(
        ChangeOrigin::Request(request_id.clone()),
        execute(
            state,
            &request_id,
            caller,
            region,
            Service::Elb,
            params,
            &mut outcome,
        )
        .instrument(span),
    )
    .await;
    finish(request_id, started, &outcome, result)
}

/// Logs the request's outcome and renders its response.
fn finish(
    request_id: String,
    started: Instant,
    outcome: &Outcome,
    result: Result<String, ApiError>,
) -> Response {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let action = outcome.action.unwrap_or("-");
    let account = outcome.account.as_deref().unwrap_or("-");
    let user = outcome.user.as_deref().unwrap_or("-");
    match result {
        Ok(body) => {
            tracing::info!(request_id = %request_id, action, account, user, status = 200, elapsed_ms, "request");
            xml_response(StatusCode::OK, &request_id, body)
        }
        Err(error) => {
            let status = error.code.status().as_u16();
            let code = error.code.as_str();
            match &error.cause {
                Some(cause) => tracing::error!(
                    request_id = %request_id, action, account, user, status, code, elapsed_ms,
                    cause = %cause, "request failed"
                ),
                None => tracing::info!(
                    request_id = %request_id, action, account, user, status, code, elapsed_ms,
                    message = %error.message, "request refused"
                ),
            }
            RequestFailure { request_id, error }.into_response()
        }
    }
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::RequestEntityTooLarge,
            format!("The request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes fails either on the limit or on a broken connection.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        ApiError::new(
            ErrorCode::MalformedQueryString,
            "The request body could not be read",
        )
    })
}

async fn process(
    state: &AppState,
    request_id: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    outcome: &mut Outcome,
) -> Result<String, ApiError> {
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "Use GET or POST",
        ));
    }
    let body = read_body(body, headers, state.config().max_body_bytes).await?;
    let raw_query = uri.query().unwrap_or("");
    let mut params = Params::from_urlencoded(raw_query.as_bytes())?;
    if method == Method::POST {
        params.extend_from_urlencoded(&body)?;
    } else if !body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MalformedQueryString,
            "GET requests carry their parameters in the query string",
        ));
    }

    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = elb_sigv4::Request {
        method: method.as_str(),
        raw_path: uri.path(),
        raw_query,
        headers: &header_list,
        body: &body,
    };
    let (caller, region, service) = authenticate(state, &signed).await?;
    outcome.account = Some(caller.account_id.clone());
    outcome.user = Some(caller.user_name.clone());
    execute(
        state, request_id, &caller, &region, service, &params, outcome,
    )
    .await
}

/// Checks `Action` and `Version` and runs the action for an authenticated caller.
async fn execute(
    state: &AppState,
    request_id: &str,
    caller: &Caller,
    region: &str,
    service: Service,
    params: &Params,
    outcome: &mut Outcome,
) -> Result<String, ApiError> {
    let action_name = params
        .get("Action")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingAction,
                "The request must contain the parameter Action",
            )
        })?;
    let version = params
        .get("Version")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::missing("Version"))?;
    let api_version = match service {
        Service::Elb => API_VERSION,
        Service::Iam => certs::API_VERSION,
    };
    if version != api_version {
        return Err(ApiError::new(
            ErrorCode::NoSuchVersion,
            format!(
                "Version {} is not supported by this service; use {api_version}",
                crate::validate::printable(version)
            ),
        ));
    }
    let invalid_action = || {
        ApiError::new(
            ErrorCode::InvalidAction,
            format!(
                "The action {} is not valid for this web service",
                crate::validate::printable(action_name)
            ),
        )
    };
    if service == Service::Iam {
        let action = IamAction::parse(action_name).ok_or_else(invalid_action)?;
        outcome.action = Some(action.as_str());
        return certs::dispatch(state, caller, action, request_id, params).await;
    }
    let action = Action::parse(action_name).ok_or_else(invalid_action)?;
    outcome.action = Some(action.as_str());
    let ctx = Ctx {
        state,
        caller,
        region,
        action,
        request_id,
        params,
    };
    api::dispatch(&ctx).await
}

/// The APIs served on `/`, told apart by the service of the request's SigV4 credential scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Elastic Load Balancing 2012-06-01.
    Elb,
    /// IAM 2010-05-08 (server certificates only).
    Iam,
}

fn sig_error(e: SigV4Error) -> ApiError {
    match e {
        SigV4Error::Missing => ApiError::new(ErrorCode::MissingAuthenticationToken, e.to_string()),
        SigV4Error::Incomplete(m) => ApiError::new(ErrorCode::IncompleteSignature, m),
        SigV4Error::Mismatch(m) => ApiError::new(ErrorCode::SignatureDoesNotMatch, m),
        SigV4Error::Expired(m) => ApiError::new(ErrorCode::RequestExpired, m),
    }
}

/// Verifies the SigV4 signature and returns the caller, the region it addressed and the
/// service it signed for.
async fn authenticate(
    state: &AppState,
    req: &elb_sigv4::Request<'_>,
) -> Result<(Caller, String, Service), ApiError> {
    let pending = elb_sigv4::parse(req).map_err(sig_error)?;
    let scope = &pending.credential;
    let service = match scope.service.as_str() {
        SIGNING_SERVICE => Service::Elb,
        certs::SIGNING_SERVICE => Service::Iam,
        other => {
            return Err(sig_error(SigV4Error::Mismatch(format!(
                "Credential should be scoped to correct service: '{SIGNING_SERVICE}' or '{}', not '{}'",
                certs::SIGNING_SERVICE,
                crate::validate::printable(other)
            ))));
        }
    };
    let now = elb_sigv4::time::now_secs();
    let skew = i64::try_from(state.config().max_clock_skew.as_secs()).unwrap_or(900);
    pending.check_time(now, skew).map_err(sig_error)?;
    let has_token = req.headers.iter().any(|(n, _)| n == "x-amz-security-token")
        || req.raw_query.contains("X-Amz-Security-Token=");
    if has_token {
        return Err(ApiError::new(
            ErrorCode::InvalidClientTokenId,
            "Temporary credentials (security tokens) are not supported by this service",
        ));
    }
    let principal = state
        .store()
        .principal(&scope.access_key_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidClientTokenId,
                "The security token included in the request is invalid.",
            )
        })?;
    pending.verify(req, &principal.secret).map_err(sig_error)?;
    let region = addressed_region(state.config(), &scope.region).ok_or_else(|| {
        ApiError::new(
            ErrorCode::SignatureDoesNotMatch,
            format!(
                "Credential should be scoped to a valid region, not '{}'. This endpoint serves: {}",
                crate::validate::printable(&scope.region),
                state.config().regions.join(", ")
            ),
        )
    })?;
    Ok((caller_of(state, principal).await?, region, service))
}

/// The caller an authenticated principal acts as, with its current policies.
pub async fn caller_of(state: &AppState, principal: Principal) -> Result<Caller, ApiError> {
    let mut policies = Vec::new();
    if !principal.is_root {
        for p in state
            .store()
            .user_policies(&principal.account_id, Some(&principal.user_name))
            .await?
        {
            match PolicyDocument::parse(&p.document) {
                Ok(doc) => policies.push(doc),
                // Stored documents were validated; one that no longer parses grants nothing.
                Err(e) => {
                    tracing::warn!(user = %principal.user_name, policy = %p.name, error = %e, "ignoring unparseable policy")
                }
            }
        }
    }
    let caller = Caller {
        account_id: principal.account_id,
        user_name: principal.user_name,
        access_key_id: principal.access_key_id,
        is_root: principal.is_root,
        is_admin: principal.account_is_admin,
        policies,
    };
    Ok(caller)
}

/// The region a request whose credential scope names `scope_region` addresses: that region if
/// this endpoint serves it; this endpoint's first region for euca2ools' placeholder. euca2ools
/// 3.x, given its endpoint with `-U` or `AWS_ELB_URL` and no region from a configuration file,
/// signs for `undefined-<pid>` (its `add_fake_region_name`), which Eucalyptus accepts since it
/// does not check the scope's region. The signature has been verified for the scope as sent,
/// so the placeholder changes which region is addressed, never who is authenticated.
fn addressed_region(config: &ServiceConfig, scope_region: &str) -> Option<String> {
    if config.serves_region(scope_region) {
        return Some(scope_region.to_string());
    }
    let placeholder = scope_region
        .strip_prefix("undefined-")
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    placeholder
        .then(|| config.regions.first().cloned())
        .flatten()
}

/// Waits for SIGINT or SIGTERM (whichever comes first) and logs which.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Returns once `flag` is true (never if its sender is gone).
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; it is dropped here, inside.
    if flag.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How often a server re-reads the config version committed by other processes.
pub const VERSION_POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euca2ools_placeholder_region_addresses_the_first_region() {
        let config = ServiceConfig {
            regions: vec!["eu-west-1".into(), "us-east-1".into()],
            ..ServiceConfig::default()
        };
        assert_eq!(
            addressed_region(&config, "us-east-1").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            addressed_region(&config, "undefined-4242").as_deref(),
            Some("eu-west-1")
        );
        for refused in [
            "ap-south-1",
            "undefined-",
            "undefined-12a",
            "undefined",
            "xundefined-1",
        ] {
            assert_eq!(addressed_region(&config, refused), None, "{refused}");
        }
    }
}
