//! The web console, served under `/console/` on the API listener.
//!
//! The page is static HTML, CSS and JavaScript embedded in the binary; its script is a Query API
//! client that authenticates with a session instead of a signature. Every load balancer action
//! goes through [`crate::server::handle_authenticated`]: the same dispatcher, IAM evaluation,
//! RequestIds and log lines as a SigV4 request, answered with the same XML.
//!
//! Routes (JSON is PascalCase like the servo protocol; errors are `{"Error": {"Code",
//! "Message"}}`, except `/query`, which answers like the Query API):
//! - `GET /console/`, `GET /console/assets/<file>`: the page.
//! - `GET /console/api/info`: regions served (before sign-in).
//! - `POST /console/api/session` `{AccessKeyId, SecretAccessKey, Region?}`: sign in; sets the
//!   session cookie, answers the session with its `CsrfToken`.
//! - `GET /console/api/session`: the current session (401 without one).
//! - `DELETE /console/api/session`: sign out (CSRF).
//! - `POST /console/api/query`: a Query API request (form body: `Action`, `Version`, ...) (CSRF).
//! - `GET /console/api/metrics?LoadBalancerName=N`: the last hour of the load balancer's
//!   metrics (authorised as `DescribeLoadBalancers` on it).
//! - `GET /console/api/admin`: servos, zones, readiness, capacity (administrators).

pub mod admin;
pub mod metrics;
pub mod session;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::api::{Action, Caller, Ctx};
use crate::error::{ApiError, ErrorCode};
use crate::query::Params;
use crate::server::AppState;
use crate::store::StoreError;
use session::Session;

/// The console's in-memory state, kept in [`AppState`].
#[derive(Debug, Default)]
pub struct Console {
    pub metrics: metrics::MetricsHistory,
}

/// Background work of the console: the metrics sampler and the removal of stale sessions.
pub async fn run_background(state: AppState) {
    let sweeper = {
        let state = state.clone();
        async move {
            let mut shutdown = state.shutdown_signal();
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = crate::server::until_true(&mut shutdown) => return,
                }
                match session::delete_stale(state.store(), crate::timefmt::now_millis()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(sessions = n, "console: removed stale sessions"),
                    Err(e) => tracing::warn!(error = %e, "console: cannot remove stale sessions"),
                }
            }
        }
    };
    tokio::join!(crate::metrics::run_sampler(state), sweeper);
}

/// A static file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console-assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console-assets/app.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console-assets/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console-assets/vendor/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../console-assets/vendor/uPlot.LICENSE"),
    },
];

const INDEX: &[u8] = include_bytes!("../../console-assets/index.html");

/// The console's routes (full paths; merged into the API router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(to_index))
        .route("/console/", get(index))
        .route("/console/assets/{file}", get(asset))
        .route("/console/api/info", get(info))
        .route(
            "/console/api/session",
            get(session_get).post(sign_in).delete(sign_out),
        )
        .route("/console/api/query", axum::routing::post(query))
        .route("/console/api/metrics", get(metrics_history))
        .route("/console/api/admin", get(admin_overview))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers every console response carries: the page loads only its own files, cannot be
/// framed, and nothing is cached that belongs to a session.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `/console` -> `/console/` (the page's relative links need the slash).
pub async fn to_index() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, "/console/")],
    )
        .into_response()
}

fn static_response(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on each load: a new control version serves new files at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    static_response("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => static_response(a.content_type, a.body),
        None => ConsoleError::new(StatusCode::NOT_FOUND, "NotFound", "No such console file")
            .into_response(),
    }
}

/// A console failure outside the Query API, rendered as JSON.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ConsoleError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "NotSignedIn", message)
    }

    fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "console request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "An internal error has occurred. Please try again later.",
        )
    }
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        if let Some(cause) = &e.cause {
            tracing::error!(cause = %cause, code = e.code.as_str(), "console request failed");
        }
        Self {
            status: e.code.status(),
            code: e.code.as_str(),
            message: e.message,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &serde_json::json!({"Error": {"Code": self.code, "Message": self.message}}),
        )
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ConsoleError::internal(e).into_response(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Info {
    regions: Vec<String>,
    api_version: &'static str,
}

async fn info(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &Info {
            regions: state.config().regions.clone(),
            api_version: crate::server::API_VERSION,
        },
    )
}

/// The session as the page sees it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionView {
    account_id: String,
    user_name: String,
    access_key_id: String,
    /// Member of an administrator account: the page shows servos and zones.
    admin: bool,
    region: String,
    /// Zones of the region, for the create form.
    zones: Vec<String>,
    /// Milliseconds since the epoch when the session ends without activity.
    ends_at: i64,
    csrf_token: String,
}

async fn session_view(
    state: &AppState,
    caller: &Caller,
    session: &Session,
    token: &str,
) -> Result<SessionView, ConsoleError> {
    let zones = state
        .store()
        .list_zones()
        .await?
        .into_iter()
        .filter(|z| z.region == session.region)
        .map(|z| z.name)
        .collect();
    Ok(SessionView {
        account_id: caller.account_id.clone(),
        user_name: caller.user_name.clone(),
        access_key_id: caller.access_key_id.clone(),
        admin: caller.is_admin,
        region: session.region.clone(),
        zones,
        ends_at: session.ends_at(),
        csrf_token: session::csrf_token(token),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignIn {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    region: Option<String>,
}

/// The same answer for an unknown key and a wrong secret: which one it was is not told.
fn bad_credentials() -> ConsoleError {
    ConsoleError::new(
        StatusCode::FORBIDDEN,
        "InvalidClientTokenId",
        "The access key ID or secret access key is not valid.",
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
}

async fn read_limited(state: &AppState, body: Body) -> Result<Bytes, ConsoleError> {
    axum::body::to_bytes(body, state.config().max_body_bytes)
        .await
        .map_err(|_| {
            ConsoleError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "The request body exceeds the limit of {} bytes",
                    state.config().max_body_bytes
                ),
            )
        })
}

async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match sign_in_inner(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn sign_in_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ConsoleError> {
    // A cross-site form cannot send JSON without a preflight, and a cross-site script is
    // named by its Origin: neither can sign a browser in to someone else's account.
    if !is_json(headers) {
        return Err(ConsoleError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Sign in with a JSON body (Content-Type: application/json)",
        ));
    }
    if !session::origin_is_same(headers) {
        return Err(cross_site());
    }
    let body = read_limited(state, body).await?;
    let req: SignIn = serde_json::from_slice(&body).map_err(|e| {
        ConsoleError::new(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("Expected {{\"AccessKeyId\", \"SecretAccessKey\", \"Region\"}}: {e}"),
        )
    })?;
    let region = match req.region.filter(|r| !r.is_empty()) {
        Some(r) if state.config().serves_region(&r) => r,
        Some(r) => {
            return Err(ConsoleError::new(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                format!(
                    "Region {} is not served here; use one of: {}",
                    crate::validate::printable(&r),
                    state.config().regions.join(", ")
                ),
            ));
        }
        None => state.config().regions[0].clone(),
    };
    let principal = state.store().principal(req.access_key_id.trim()).await?;
    let Some(principal) =
        principal.filter(|p| session::same_secret(&p.secret, &req.secret_access_key))
    else {
        tracing::info!(
            access_key_id = %crate::validate::printable(&req.access_key_id),
            "console sign-in refused"
        );
        return Err(bad_credentials());
    };
    let access_key_id = principal.access_key_id.clone();
    let caller = crate::server::caller_of(state, principal).await?;
    let token = session::new_token();
    let stored = session::create(
        state.store(),
        &token,
        &access_key_id,
        &region,
        crate::timefmt::now_millis(),
    )
    .await?;
    tracing::info!(account = %caller.account_id, user = %caller.user_name, access_key_id = %access_key_id, %region, "console sign-in");
    let view = session_view(state, &caller, &stored, &token).await?;
    let mut response = json_response(StatusCode::OK, &view);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&token));
    Ok(response)
}

fn cross_site() -> ConsoleError {
    ConsoleError::new(
        StatusCode::FORBIDDEN,
        "CrossSiteRequest",
        "Requests to the console must come from the console's own pages",
    )
}

/// An authenticated console request: the caller as the API sees it.
struct Authed {
    caller: Caller,
    session: Session,
    token: String,
}

/// Checks the session cookie (and, for state-changing requests, the origin and CSRF token)
/// and loads the caller with its current policies.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Authed, ConsoleError> {
    let token = session::cookie_token(headers)
        .ok_or_else(|| ConsoleError::unauthenticated("Sign in to use the console"))?;
    let mut stored = session::find(state.store(), &token)
        .await?
        .ok_or_else(|| ConsoleError::unauthenticated("Your session is not valid; sign in again"))?;
    let now = crate::timefmt::now_millis();
    // A region this server no longer serves (after a restart with other --region flags)
    // ends the session like an expiry.
    if !stored.is_valid_at(now) || !state.config().serves_region(&stored.region) {
        session::delete(state.store(), &stored.token_hash).await?;
        return Err(ConsoleError::unauthenticated(
            "Your session has expired; sign in again",
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        if !session::origin_is_same(headers) {
            return Err(cross_site());
        }
        let sent = headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !session::same_secret(sent, &session::csrf_token(&token)) {
            return Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "InvalidCsrfToken",
                "The request's X-CSRF-Token is missing or wrong; reload the console",
            ));
        }
    }
    let Some(principal) = state.store().principal(&stored.access_key_id).await? else {
        session::delete(state.store(), &stored.token_hash).await?;
        return Err(ConsoleError::unauthenticated(
            "The access key of this session is no longer active; sign in again",
        ));
    };
    let caller = crate::server::caller_of(state, principal).await?;
    session::touch(state.store(), &mut stored, now).await?;
    Ok(Authed {
        caller,
        session: stored,
        token,
    })
}

async fn session_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        let a = authenticate(&state, &headers, &Method::GET).await?;
        let view = session_view(&state, &a.caller, &a.session, &a.token).await?;
        Ok::<_, ConsoleError>(json_response(StatusCode::OK, &view))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        let a = authenticate(&state, &headers, &Method::DELETE).await?;
        session::delete(state.store(), &a.session.token_hash).await?;
        tracing::info!(account = %a.caller.account_id, user = %a.caller.user_name, "console sign-out");
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, session::clear_cookie());
        Ok::<_, ConsoleError>(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A Query API request on behalf of the session's user.
async fn query(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let authed = match authenticate(&state, &headers, &Method::POST).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let params = async {
        let body = read_limited(&state, body).await?;
        Params::from_urlencoded(&body).map_err(ConsoleError::from)
    }
    .await;
    match params {
        Ok(params) => {
            crate::server::handle_authenticated(
                &state,
                &authed.caller,
                &authed.session.region,
                &params,
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

/// `Ctx` for the checks of a console read that is not a Query API action.
fn read_ctx<'a>(
    state: &'a AppState,
    authed: &'a Authed,
    params: &'a Params,
    request_id: &'a str,
) -> Ctx<'a> {
    Ctx {
        state,
        caller: &authed.caller,
        region: &authed.session.region,
        action: Action::DescribeLoadBalancers,
        request_id,
        params,
    }
}

async fn metrics_history(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let result = async {
        let authed = authenticate(&state, &headers, &Method::GET).await?;
        let params = Params::from_urlencoded(uri.query().unwrap_or("").as_bytes())?;
        let request_id = crate::server::new_request_id();
        let ctx = read_ctx(&state, &authed, &params, &request_id);
        // The same rule as describing the load balancer: `lb_name` checks the name and
        // authorises DescribeLoadBalancers on it.
        let name = ctx.lb_name()?;
        let key = ctx.key(name);
        if state.store().get_lb(&key).await?.is_none() {
            return Err(ApiError::lb_not_found(name).into());
        }
        let view = state
            .console()
            .metrics
            .view(&key, crate::timefmt::now_millis());
        Ok::<_, ConsoleError>(json_response(StatusCode::OK, &view))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn admin_overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        let authed = authenticate(&state, &headers, &Method::GET).await?;
        let params = Params::default();
        let request_id = crate::server::new_request_id();
        let ctx = read_ctx(&state, &authed, &params, &request_id);
        // Administrators are the members of admin accounts who may describe load balancers
        // (those who can see every account's with `verbose`).
        if !authed.caller.is_admin {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                "Servos and zones are shown to administrator accounts only",
            )
            .into());
        }
        ctx.authorize_any()?;
        let overview = admin::overview(&state).await?;
        Ok::<_, ConsoleError>(json_response(StatusCode::OK, &overview))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
