//! The servo protocol: HTTP + JSON under `/servo/v1/`, on the same listener as the ELB API.
//!
//! - `POST register` (zone, addresses the servo can serve as VIPs, capacity) and
//!   `POST heartbeat` keep the servo live (liveness is a database timestamp, so every control
//!   replica agrees);
//! - `GET config?since=V&wait=S` long-polls the configuration of the load balancers assigned
//!   to the servo; it returns as soon as the config version passes `since`;
//! - `POST health` stores the servo's health checks of instances in its own zone.
//!
//! Every request carries `Authorization: Bearer <ServoId>:<Secret>`. Errors are
//! `{"Error": "..."}` with 400/401/403/404/405/409/413/500; internal details are logged only.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::model::{InstanceState, LoadBalancer, Protocol};
use crate::server::AppState;
use crate::store::{
    ChangeOrigin, HealthUpdate, ServoConfigData, ServoLb, ServoRecord, StoreError, servo_lb_name,
    with_origin,
};

/// Longest long-poll wait a servo may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Largest request body (health reports of many instances).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most request ids returned by one long-poll answer (the newest).
const MAX_REQUEST_IDS: usize = 1000;

/// A failed servo request.
#[derive(Debug, thiserror::Error)]
pub enum ServoError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no such servo protocol resource; see /servo/v1/register, heartbeat, config, health")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body exceeds {MAX_BODY} bytes")]
    TooLarge,
    /// The cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[from] StoreError),
}

impl ServoError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message the servo sees.
    fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "An internal error has occurred; retry later".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ServoError {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.status(),
            &serde_json::json!({ "Error": self.public_message() }),
        );
        if matches!(self, Self::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"elb-control servo\""),
            );
        }
        response
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a servo response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The routes, to be nested under `/servo/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register).fallback(wrong_method))
        .route("/heartbeat", post(heartbeat).fallback(wrong_method))
        .route("/config", get(config).fallback(wrong_method))
        .route("/health", post(health).fallback(wrong_method))
        .fallback(not_found)
}

async fn wrong_method() -> Response {
    ServoError::MethodNotAllowed.into_response()
}

async fn not_found() -> Response {
    ServoError::NotFound.into_response()
}

/// The hex SHA-256 of a servo secret, the form it is stored in.
pub fn secret_hash(secret: &str) -> String {
    elb_sigv4::sha256_hex(secret.as_bytes())
}

/// Checks `Authorization: Bearer <ServoId>:<Secret>` and returns the servo.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<ServoRecord, ServoError> {
    const MALFORMED: &str = "Authorization must be 'Bearer <ServoId>:<Secret>'";
    const INVALID: &str = "invalid servo credentials";
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ServoError::Unauthorized(
            "missing Authorization: Bearer <ServoId>:<Secret>",
        ))?
        .to_str()
        .map_err(|_| ServoError::Unauthorized(MALFORMED))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ServoError::Unauthorized(MALFORMED))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ServoError::Unauthorized(MALFORMED));
    }
    let (id, secret) = token
        .trim()
        .split_once(':')
        .ok_or(ServoError::Unauthorized(MALFORMED))?;
    let servo = state.store().servo(id).await?;
    let presented = secret_hash(secret);
    match servo {
        Some(servo)
            if elb_sigv4::constant_time_eq(presented.as_bytes(), servo.secret_hash.as_bytes()) =>
        {
            Ok(servo)
        }
        _ => Err(ServoError::Unauthorized(INVALID)),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ServoError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ServoError::TooLarge;
            }
            source = s.source();
        }
        ServoError::BadRequest("the request body could not be read".into())
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ServoError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The body's ServoId must be the authenticated servo: a servo acts only as itself.
fn same_servo(servo: &ServoRecord, claimed: &str) -> Result<(), ServoError> {
    if claimed == servo.id {
        Ok(())
    } else {
        Err(ServoError::Forbidden(format!(
            "servo {} cannot act as servo {}",
            servo.id,
            crate::validate::printable(claimed)
        )))
    }
}

/// Logs the outcome of a servo request and renders it. Heartbeats and quiet long-polls are
/// at debug level: at one per servo per second they would drown everything else.
fn finish(
    path: &str,
    servo: Option<&str>,
    started: Instant,
    result: Result<Response, ServoError>,
) -> Response {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let servo = servo.unwrap_or("-");
    match result {
        Ok(response) => {
            tracing::debug!(
                servo,
                path,
                status = response.status().as_u16(),
                elapsed_ms,
                "servo request"
            );
            response
        }
        Err(error) => {
            let status = error.status().as_u16();
            match &error {
                ServoError::Internal(cause) => {
                    tracing::error!(servo, path, status, elapsed_ms, cause = %cause, "servo request failed")
                }
                other => {
                    tracing::info!(servo, path, status, elapsed_ms, message = %other, "servo request refused")
                }
            }
            error.into_response()
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HeartbeatReply {
    heartbeat_interval: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterBody {
    servo_id: String,
    zone: String,
    #[serde(default)]
    public_addresses: Vec<String>,
    #[serde(default)]
    private_addresses: Vec<String>,
    #[serde(default)]
    capacity: Option<u64>,
}

/// Most addresses of one kind a servo may offer.
const MAX_ADDRESSES: usize = 256;

fn parse_addresses(field: &str, texts: &[String]) -> Result<Vec<Ipv4Addr>, ServoError> {
    if texts.len() > MAX_ADDRESSES {
        return Err(ServoError::BadRequest(format!(
            "{field}: at most {MAX_ADDRESSES} addresses"
        )));
    }
    let mut out: Vec<Ipv4Addr> = Vec::with_capacity(texts.len());
    for t in texts {
        // The dataplane serves IPv4 VIPs only.
        let ip: Ipv4Addr = t.parse().map_err(|_| {
            ServoError::BadRequest(format!(
                "{field}: '{}' is not an IPv4 address",
                crate::validate::printable(t)
            ))
        })?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(ServoError::BadRequest(format!(
                "{field}: {ip} cannot be a VIP"
            )));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

fn heartbeat_reply(state: &AppState) -> Response {
    json_response(
        StatusCode::OK,
        &HeartbeatReply {
            heartbeat_interval: state.config().servo.heartbeat.as_secs(),
        },
    )
}

async fn register(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let servo = match authenticate(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return finish("register", None, started, Err(e)),
    };
    let result = register_inner(&state, &servo, body).await;
    finish("register", Some(&servo.id), started, result)
}

async fn register_inner(
    state: &AppState,
    servo: &ServoRecord,
    body: Body,
) -> Result<Response, ServoError> {
    let req: RegisterBody = read_json(body).await?;
    same_servo(servo, &req.servo_id)?;
    if req.zone != servo.zone {
        return Err(ServoError::Forbidden(format!(
            "servo {} belongs to zone {}, not {}",
            servo.id,
            servo.zone,
            crate::validate::printable(&req.zone)
        )));
    }
    let public = parse_addresses("PublicAddresses", &req.public_addresses)?;
    let private = parse_addresses("PrivateAddresses", &req.private_addresses)?;
    if public.is_empty() && private.is_empty() {
        return Err(ServoError::BadRequest(
            "a servo must offer at least one address (PublicAddresses or PrivateAddresses)".into(),
        ));
    }
    let capacity = match req.capacity {
        None => None,
        Some(c) => Some(
            u32::try_from(c)
                .ok()
                .filter(|c| *c <= 1_000_000)
                .ok_or_else(|| ServoError::BadRequest("Capacity must be 0-1000000".into()))?,
        ),
    };
    let was_live = state
        .store()
        .register_servo(
            &servo.id,
            &public,
            &private,
            capacity,
            state.config().servo.timeout_ms(),
        )
        .await?;
    tracing::info!(
        servo = %servo.id, zone = %servo.zone, public = ?public, private = ?private, capacity = ?capacity,
        was_live, "servo registered"
    );
    // Addresses or capacity may have changed, or the servo is back: assign without waiting
    // for the next tick.
    state.wake_assignment();
    Ok(heartbeat_reply(state))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HeartbeatBody {
    servo_id: String,
    /// Dataplane counters (name -> number), shown by `admin servo list`.
    #[serde(default)]
    counters: Option<BTreeMap<String, f64>>,
}

async fn heartbeat(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let servo = match authenticate(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return finish("heartbeat", None, started, Err(e)),
    };
    let result = async {
        let req: HeartbeatBody = read_json(body).await?;
        same_servo(&servo, &req.servo_id)?;
        let counters = req
            .counters
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let was_live = state
            .store()
            .heartbeat(
                &servo.id,
                state.config().servo.timeout_ms(),
                counters.as_deref(),
            )
            .await?
            .ok_or_else(|| {
                ServoError::Conflict(format!(
                    "servo {} has not registered: POST /servo/v1/register first",
                    servo.id
                ))
            })?;
        if !was_live {
            tracing::info!(servo = %servo.id, zone = %servo.zone, "servo is live again");
            state.wake_assignment();
        }
        Ok(heartbeat_reply(&state))
    }
    .await;
    finish("heartbeat", Some(&servo.id), started, result)
}

/// `since` and `wait` from the query string; other parameters are ignored.
fn poll_params(uri: &Uri) -> Result<(Option<u64>, Duration), ServoError> {
    let mut since = None;
    let mut wait = Duration::ZERO;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value.parse::<u64>().map_err(|_| {
                ServoError::BadRequest(format!(
                    "{name} must be a non-negative integer, not '{}'",
                    crate::validate::printable(value)
                ))
            })
        };
        match name {
            "since" => since = Some(number()?),
            // Longer waits are cut to the maximum rather than refused.
            "wait" => wait = Duration::from_secs(number()?).min(MAX_WAIT),
            _ => {}
        }
    }
    Ok((since, wait))
}

async fn config(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let started = Instant::now();
    let servo = match authenticate(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return finish("config", None, started, Err(e)),
    };
    let result = config_inner(&state, &servo, &uri).await;
    finish("config", Some(&servo.id), started, result)
}

async fn config_inner(
    state: &AppState,
    servo: &ServoRecord,
    uri: &Uri,
) -> Result<Response, ServoError> {
    let (since, wait) = poll_params(uri)?;
    let store = state.store();
    // Subscribe before reading the database, so a commit in between is not missed.
    let mut versions = store.subscribe();
    // The database, not this process's last known version: the servo may have been told a
    // newer one by another replica.
    let current = store.refresh_version().await?;
    // Only an equal version waits. A `since` above the database's means the database was
    // replaced: answer at once so the servo resynchronises.
    if let Some(since) = since.filter(|s| *s == current && !wait.is_zero()) {
        let mut shutdown = state.shutdown_signal();
        tokio::select! {
            () = until_version_after(&mut versions, since) => {}
            () = tokio::time::sleep(wait) => {}
            // Long-polls must not hold up a graceful shutdown for a minute.
            () = crate::server::until_true(&mut shutdown) => {}
        }
    }
    let data = store
        .servo_config_data(&servo.id, since, MAX_REQUEST_IDS)
        .await?;
    let reply = ConfigReply {
        version: data.version,
        load_balancers: servo_view(&servo.zone, &data),
        request_ids: data.request_ids.clone(),
        heartbeat_interval: state.config().servo.heartbeat.as_secs(),
    };
    if since != Some(data.version) {
        tracing::info!(
            servo = %servo.id, version = data.version, request_ids = ?data.request_ids,
            since = ?since, load_balancers = reply.load_balancers.len(),
            "servo configuration served"
        );
    }
    Ok(json_response(StatusCode::OK, &reply))
}

/// Returns once the published version passes `since` (never if the store is gone).
async fn until_version_after(versions: &mut tokio::sync::watch::Receiver<u64>, since: u64) {
    // The guard `wait_for` returns is not Send; it is dropped here, inside.
    if versions.wait_for(|v| *v > since).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthBody {
    servo_id: String,
    #[serde(default)]
    instances: Vec<HealthEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    load_balancer_name: String,
    instance_id: String,
    state: String,
    #[serde(default)]
    reason_code: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthReply {
    accepted: usize,
    ignored: usize,
}

const UNHEALTHY: &str =
    "Instance has failed at least the UnhealthyThreshold number of health checks consecutively.";

fn text_field(
    field: &str,
    value: Option<String>,
    default: &str,
    max: usize,
) -> Result<String, ServoError> {
    let value = value.unwrap_or_else(|| default.to_string());
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ServoError::BadRequest(format!(
            "{field}: at most {max} printable characters"
        )));
    }
    Ok(value)
}

fn health_update(entry: HealthEntry) -> Result<HealthUpdate, ServoError> {
    // Eucalyptus accepts only these two from servos: Unknown is control's to say.
    let (state, reason, description) = match entry.state.as_str() {
        "InService" => (InstanceState::InService, "N/A", "N/A"),
        "OutOfService" => (InstanceState::OutOfService, "Instance", UNHEALTHY),
        other => {
            return Err(ServoError::BadRequest(format!(
                "State must be InService or OutOfService, not '{}'",
                crate::validate::printable(other)
            )));
        }
    };
    Ok(HealthUpdate {
        lb_name: entry.load_balancer_name,
        instance_id: entry.instance_id,
        state,
        reason_code: text_field("ReasonCode", entry.reason_code, reason, 64)?,
        description: text_field("Description", entry.description, description, 1024)?,
    })
}

async fn health(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let servo = match authenticate(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return finish("health", None, started, Err(e)),
    };
    let result = with_origin(
        ChangeOrigin::Servo(servo.id.clone()),
        health_inner(&state, &servo, body),
    )
    .await;
    finish("health", Some(&servo.id), started, result)
}

async fn health_inner(
    state: &AppState,
    servo: &ServoRecord,
    body: Body,
) -> Result<Response, ServoError> {
    let req: HealthBody = read_json(body).await?;
    same_servo(servo, &req.servo_id)?;
    let updates = req
        .instances
        .into_iter()
        .map(health_update)
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = state
        .store()
        .report_health(&servo.id, &servo.zone, &updates)
        .await?;
    for (lb, instance, from, to) in &outcome.changes {
        tracing::info!(
            servo = %servo.id, load_balancer = %lb, instance = %instance,
            from = from.as_str(), to = to.as_str(),
            "servo {} reports {instance} of {lb} {} (was {})", servo.id, to.as_str(), from.as_str()
        );
    }
    // Entries a servo has no right to make are skipped so that one stale entry does not cost
    // the valid ones; a report made only of such entries is refused outright.
    if outcome.accepted == 0 && outcome.refused > 0 {
        return Err(ServoError::Forbidden(format!(
            "servo {} may report only on instances in {} of load balancers assigned to it",
            servo.id, servo.zone
        )));
    }
    Ok(json_response(
        StatusCode::OK,
        &HealthReply {
            accepted: outcome.accepted,
            ignored: outcome.ignored,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The configuration document. Its shape is a contract with the servo, which parses it with
// `deny_unknown_fields`: optional members are omitted, never null.

/// The long-poll answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConfigReply {
    pub version: u64,
    pub load_balancers: Vec<LbView>,
    pub request_ids: Vec<String>,
    pub heartbeat_interval: u64,
}

/// One load balancer as a servo serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LbView {
    pub load_balancer_name: String,
    pub vips: Vec<String>,
    pub listeners: Vec<ListenerView>,
    pub instances: Vec<InstanceView>,
    pub health_check: HealthCheckView,
    pub attributes: AttributesView,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ListenerView {
    pub protocol: String,
    pub load_balancer_port: u16,
    pub instance_protocol: String,
    pub instance_port: u16,
    #[serde(
        rename = "SSLCertificateId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ssl_certificate_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InstanceView {
    pub instance_id: String,
    pub address: String,
    pub zone: String,
    /// `Some(false)` for instances another zone's servos check (Eucalyptus'
    /// ReportHealthCheck=false); omitted for the servo's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<bool>,
    /// The state reported by the instance's own zone, with `health_check: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HealthCheckView {
    pub target: String,
    pub interval: u32,
    pub timeout: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AttributesView {
    pub connection_draining: DrainingView,
    pub connection_settings: ConnectionSettingsView,
    pub cross_zone_load_balancing: CrossZoneView,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DrainingView {
    pub enabled: bool,
    pub timeout: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectionSettingsView {
    pub idle_timeout: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CrossZoneView {
    pub enabled: bool,
}

fn protocol_text(p: Protocol) -> String {
    p.as_str().to_string()
}

/// The instances a servo of `zone` gets for `lb`: its own zone's for it to check; other
/// enabled zones' with their reported state, only with cross-zone load balancing or when its
/// zone has none (Eucalyptus' rule). Instances of zones not enabled are never sent, and
/// non-IPv4 addresses are left out (the dataplane forwards IPv4; one such entry would make
/// the servo refuse the whole document).
fn instances_for(zone: &str, lb: &LoadBalancer) -> Vec<InstanceView> {
    let usable: Vec<_> = lb
        .instances
        .iter()
        .filter(|i| lb.zones.contains(&i.zone) && i.address.parse::<Ipv4Addr>().is_ok())
        .collect();
    let has_own = usable.iter().any(|i| i.zone == zone);
    let others = lb.attributes.cross_zone || !has_own;
    usable
        .into_iter()
        .filter(|i| i.zone == zone || others)
        .map(|i| {
            let own = i.zone == zone;
            InstanceView {
                instance_id: i.instance_id.clone(),
                address: i.address.clone(),
                zone: i.zone.clone(),
                health_check: (!own).then_some(false),
                state: (!own).then(|| {
                    match i.health.state {
                        InstanceState::InService => "InService",
                        _ => "OutOfService",
                    }
                    .to_string()
                }),
            }
        })
        .collect()
}

fn lb_view(zone: &str, assigned: &ServoLb) -> LbView {
    let lb = &assigned.lb;
    let a = &lb.attributes;
    let hc = &lb.health_check;
    LbView {
        load_balancer_name: servo_lb_name(&lb.key.name, &lb.key.account_id),
        vips: vec![assigned.vip.clone()],
        listeners: lb
            .listeners
            .iter()
            .map(|l| ListenerView {
                protocol: protocol_text(l.protocol),
                load_balancer_port: l.load_balancer_port,
                instance_protocol: protocol_text(l.instance_protocol),
                instance_port: l.instance_port,
                ssl_certificate_id: l.ssl_certificate_id.clone(),
            })
            .collect(),
        instances: instances_for(zone, lb),
        health_check: HealthCheckView {
            target: hc.target.clone(),
            interval: hc.interval,
            timeout: hc.timeout,
            unhealthy_threshold: hc.unhealthy_threshold,
            healthy_threshold: hc.healthy_threshold,
        },
        attributes: AttributesView {
            connection_draining: DrainingView {
                enabled: a.draining_enabled,
                timeout: a.draining_timeout,
            },
            connection_settings: ConnectionSettingsView {
                idle_timeout: a.idle_timeout,
            },
            cross_zone_load_balancing: CrossZoneView {
                enabled: a.cross_zone,
            },
        },
    }
}

/// The load balancers of a servo's configuration, by name.
///
/// Two are left out because the servo would refuse the whole document over them: load
/// balancers without listeners, and one whose (VIP, port) another already has. The latter
/// exists only for the moment between a CreateLoadBalancerListeners and the assignment pass
/// that moves the later load balancer to another VIP; the earlier assignment keeps serving.
pub fn servo_view(zone: &str, data: &ServoConfigData) -> Vec<LbView> {
    let mut lbs: Vec<&ServoLb> = data
        .lbs
        .iter()
        .filter(|l| !l.lb.listeners.is_empty())
        .collect();
    lbs.sort_by(|a, b| (a.assigned_at, &a.lb.id).cmp(&(b.assigned_at, &b.lb.id)));
    let mut taken: BTreeSet<(String, u16)> = BTreeSet::new();
    let mut out = Vec::new();
    for l in lbs {
        let endpoints: Vec<(String, u16)> =
            l.lb.listeners
                .iter()
                .map(|x| (l.vip.clone(), x.load_balancer_port))
                .collect();
        if endpoints.iter().any(|e| taken.contains(e)) {
            tracing::debug!(load_balancer = %l.lb.key.name, vip = %l.vip, "left out until reassigned: a port of its VIP is taken");
            continue;
        }
        taken.extend(endpoints);
        out.push(lb_view(zone, l));
    }
    out.sort_by(|a, b| a.load_balancer_name.cmp(&b.load_balancer_name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Attributes, HealthCheck, InstanceHealth, LbKey, Listener, RegisteredInstance, Scheme,
    };

    fn instance(id: &str, zone: &str, state: InstanceState) -> RegisteredInstance {
        RegisteredInstance {
            instance_id: id.into(),
            address: format!("198.19.0.{}", id.len()),
            zone: zone.into(),
            health: InstanceHealth {
                state,
                reason_code: "N/A".into(),
                description: "N/A".into(),
            },
        }
    }

    fn lb(name: &str, zones: &[&str], ports: &[u16]) -> LoadBalancer {
        LoadBalancer {
            id: format!("id-{name}"),
            key: LbKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                name: name.into(),
            },
            dns_name: String::new(),
            scheme: Scheme::InternetFacing,
            vpc_id: None,
            created_at: 0,
            listeners: ports
                .iter()
                .map(|p| Listener {
                    protocol: Protocol::Http,
                    load_balancer_port: *p,
                    instance_protocol: Protocol::Http,
                    instance_port: 8080,
                    ssl_certificate_id: None,
                    policy_names: vec![],
                })
                .collect(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            subnets: vec![],
            security_groups: vec![],
            instances: vec![],
            health_check: HealthCheck::default_for_port(8080),
            attributes: Attributes::default(),
            policies: vec![],
            backend_policies: vec![],
            tags: vec![],
        }
    }

    #[test]
    fn instances_follow_the_eucalyptus_rule() {
        let mut l = lb("web", &["a", "b"], &[80]);
        l.instances = vec![
            instance("i-1", "a", InstanceState::OutOfService),
            instance("i-22", "b", InstanceState::InService),
            instance("i-333", "c", InstanceState::InService),
        ];
        let ids = |v: &[InstanceView]| -> Vec<String> {
            v.iter().map(|i| i.instance_id.clone()).collect()
        };
        // Zone a has its own instance: only it, without HealthCheck/State.
        let a = instances_for("a", &l);
        assert_eq!(ids(&a), vec!["i-1"]);
        assert_eq!((a[0].health_check, a[0].state.as_deref()), (None, None));
        // Cross-zone: b's instance too, with its reported state; c is not enabled.
        l.attributes.cross_zone = true;
        let a = instances_for("a", &l);
        assert_eq!(ids(&a), vec!["i-1", "i-22"]);
        assert_eq!(a[1].health_check, Some(false));
        assert_eq!(a[1].state.as_deref(), Some("InService"));
        // A zone without instances of its own gets the others even without cross-zone.
        l.attributes.cross_zone = false;
        l.zones.push("d".into());
        let d = instances_for("d", &l);
        assert_eq!(ids(&d), vec!["i-1", "i-22"]);
        assert_eq!(d[0].state.as_deref(), Some("OutOfService"));
    }

    #[test]
    fn document_shape_omits_absent_members() {
        let mut l = lb("web", &["a"], &[80]);
        l.instances = vec![instance("i-1", "a", InstanceState::OutOfService)];
        let data = ServoConfigData {
            version: 7,
            lbs: vec![ServoLb {
                lb: l,
                vip: "198.18.0.1".into(),
                assigned_at: 1,
            }],
            request_ids: vec!["r1".into()],
        };
        let reply = ConfigReply {
            version: 7,
            load_balancers: servo_view("a", &data),
            request_ids: data.request_ids.clone(),
            heartbeat_interval: 2,
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Version": 7,
                "LoadBalancers": [{
                    "LoadBalancerName": "web-123456789012",
                    "Vips": ["198.18.0.1"],
                    "Listeners": [{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 8080}],
                    "Instances": [{"InstanceId": "i-1", "Address": "198.19.0.3", "Zone": "a"}],
                    "HealthCheck": {"Target": "TCP:8080", "Interval": 30, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 10},
                    "Attributes": {"ConnectionDraining": {"Enabled": false, "Timeout": 300}, "ConnectionSettings": {"IdleTimeout": 60}, "CrossZoneLoadBalancing": {"Enabled": false}}
                }],
                "RequestIds": ["r1"],
                "HeartbeatInterval": 2
            })
        );
        // And it reads back strictly.
        let back: ConfigReply = serde_json::from_value(json).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn conflicting_and_listenerless_load_balancers_are_left_out() {
        let first = ServoLb {
            lb: lb("a", &["z"], &[80]),
            vip: "198.18.0.1".into(),
            assigned_at: 1,
        };
        let later = ServoLb {
            lb: lb("b", &["z"], &[80, 81]),
            vip: "198.18.0.1".into(),
            assigned_at: 2,
        };
        let empty = ServoLb {
            lb: lb("c", &["z"], &[]),
            vip: "198.18.0.2".into(),
            assigned_at: 0,
        };
        let data = ServoConfigData {
            version: 1,
            lbs: vec![later, empty, first],
            request_ids: vec![],
        };
        let names: Vec<String> = servo_view("z", &data)
            .into_iter()
            .map(|l| l.load_balancer_name)
            .collect();
        assert_eq!(names, vec!["a-123456789012"]);
    }

    #[test]
    fn poll_parameters() {
        let uri: Uri = "/servo/v1/config?since=5&wait=600&x=1".parse().unwrap();
        assert_eq!(poll_params(&uri).unwrap(), (Some(5), MAX_WAIT));
        let uri: Uri = "/servo/v1/config".parse().unwrap();
        assert_eq!(poll_params(&uri).unwrap(), (None, Duration::ZERO));
        let uri: Uri = "/servo/v1/config?since=-1".parse().unwrap();
        assert!(poll_params(&uri).is_err());
    }

    #[test]
    fn health_entries_are_checked() {
        let entry = |state: &str| HealthEntry {
            load_balancer_name: "web-1".into(),
            instance_id: "i-1".into(),
            state: state.into(),
            reason_code: None,
            description: None,
        };
        let u = health_update(entry("OutOfService")).unwrap();
        assert_eq!(u.reason_code, "Instance");
        assert!(health_update(entry("Unknown")).is_err());
        let mut e = entry("InService");
        e.description = Some("x\ny".into());
        assert!(health_update(e).is_err());
    }
}
