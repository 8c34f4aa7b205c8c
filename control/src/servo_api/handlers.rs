//! The servo protocol's handlers: register, heartbeat, the configuration long-poll, health
//! and refusal reports.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use elb_contract::wire::{
    Accepted, HealthReport, Heartbeat, HeartbeatReply, InstanceReport, RefusalReport, Registration,
};
use elb_contract::{InstanceHealth, InstanceState, ServerCertificate};

use super::auth::AuthenticatedServo;
use super::{ServoError, ServoJson, json_response, views};
use crate::server::AppState;
use crate::store::{ChangeOrigin, HealthUpdate, ServoConfigData, with_origin};
use crate::tls::SecureTransport;

/// Longest long-poll wait a servo may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most request ids returned by one long-poll answer (the newest).
const MAX_REQUEST_IDS: usize = 1000;
/// Most addresses of one kind a servo may offer.
const MAX_ADDRESSES: usize = 256;
/// Largest capacity a servo may announce.
const MAX_CAPACITY: u32 = 1_000_000;

/// Logs the outcome of a servo request and renders it. Heartbeats and quiet long-polls are
/// at debug level: at one per servo per second they would drown everything else.
fn finish(
    path: &str,
    servo: &AuthenticatedServo,
    started: Instant,
    result: Result<Response, ServoError>,
) -> Response {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(response) => {
            tracing::debug!(
                servo = %servo.0.id,
                path,
                status = response.status().as_u16(),
                elapsed_ms,
                "servo request"
            );
            response
        }
        Err(error) => {
            error.log(Some(&servo.0.id), path);
            axum::response::IntoResponse::into_response(error)
        }
    }
}

fn heartbeat_reply(state: &AppState) -> Response {
    json_response(
        StatusCode::OK,
        &HeartbeatReply {
            heartbeat_interval: state.config().servo.heartbeat.as_secs(),
        },
    )
}

fn check_addresses(field: &str, list: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>, ServoError> {
    if list.len() > MAX_ADDRESSES {
        return Err(ServoError::BadRequest(format!(
            "{field}: at most {MAX_ADDRESSES} addresses"
        )));
    }
    let mut out: Vec<Ipv4Addr> = Vec::with_capacity(list.len());
    for ip in list {
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(ServoError::BadRequest(format!(
                "{field}: {ip} cannot be a VIP"
            )));
        }
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    Ok(out)
}

pub(super) async fn register(
    State(state): State<AppState>,
    servo: AuthenticatedServo,
    ServoJson(req): ServoJson<Registration>,
) -> Response {
    let started = Instant::now();
    let result = register_inner(&state, &servo, req).await;
    finish("register", &servo, started, result)
}

async fn register_inner(
    state: &AppState,
    servo: &AuthenticatedServo,
    req: Registration,
) -> Result<Response, ServoError> {
    servo.must_be(&req.servo_id)?;
    let record = &servo.0;
    if req.zone != record.zone {
        return Err(ServoError::Forbidden(format!(
            "servo {} belongs to zone {}, not {}",
            record.id,
            record.zone,
            crate::validate::printable(&req.zone)
        )));
    }
    let public = check_addresses("PublicAddresses", &req.public_addresses)?;
    let private = check_addresses("PrivateAddresses", &req.private_addresses)?;
    if public.is_empty() && private.is_empty() {
        return Err(ServoError::BadRequest(
            "a servo must offer at least one address (PublicAddresses or PrivateAddresses)".into(),
        ));
    }
    if req.capacity.is_some_and(|c| c > MAX_CAPACITY) {
        return Err(ServoError::BadRequest(format!(
            "Capacity must be 0-{MAX_CAPACITY}"
        )));
    }
    let was_live = state
        .store()
        .register_servo(
            &record.id,
            &public,
            &private,
            req.capacity,
            state.config().servo.timeout_ms(),
        )
        .await?;
    tracing::info!(
        servo = %record.id, zone = %record.zone, public = ?public, private = ?private,
        capacity = ?req.capacity, was_live, "servo registered"
    );
    // Addresses or capacity may have changed, or the servo is back: assign without waiting
    // for the next tick.
    state.wake_assignment();
    Ok(heartbeat_reply(state))
}

pub(super) async fn heartbeat(
    State(state): State<AppState>,
    servo: AuthenticatedServo,
    ServoJson(req): ServoJson<Heartbeat>,
) -> Response {
    let started = Instant::now();
    let result = async {
        servo.must_be(&req.servo_id)?;
        let counters = req
            .counters
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default());
        let metrics = req.metrics.as_ref().map(|m| check_metrics(m)).transpose()?;
        let record = &servo.0;
        let was_live = state
            .store()
            .heartbeat(
                &record.id,
                state.config().servo.timeout_ms(),
                counters.as_deref(),
                metrics.as_deref(),
            )
            .await?
            .ok_or_else(|| {
                ServoError::Conflict(format!(
                    "servo {} has not registered: POST /servo/v1/register first",
                    record.id
                ))
            })?;
        if !was_live {
            tracing::info!(servo = %record.id, zone = %record.zone, "servo is live again");
            state.wake_assignment();
        }
        Ok(heartbeat_reply(&state))
    }
    .await;
    finish("heartbeat", &servo, started, result)
}

/// Most load balancers one heartbeat may report metrics of (a servo's capacity is bounded by
/// its listener map long before).
const MAX_METRICS_LBS: usize = 4096;
/// Most listeners per load balancer in a report (the API allows 100).
const MAX_METRICS_LISTENERS: usize = 128;

/// The metrics of a heartbeat, checked and serialised for the store.
fn check_metrics(
    metrics: &[elb_contract::wire::LoadBalancerMetrics],
) -> Result<String, ServoError> {
    if metrics.len() > MAX_METRICS_LBS {
        return Err(ServoError::BadRequest(format!(
            "Metrics: at most {MAX_METRICS_LBS} load balancers"
        )));
    }
    for m in metrics {
        if !elb_contract::name_ok(&m.load_balancer_name, elb_contract::MAX_SERVO_NAME_LEN) {
            return Err(ServoError::BadRequest(format!(
                "Metrics: '{}' is not a load balancer name",
                crate::validate::printable(&m.load_balancer_name)
            )));
        }
        if m.listeners.len() > MAX_METRICS_LISTENERS {
            return Err(ServoError::BadRequest(format!(
                "Metrics: at most {MAX_METRICS_LISTENERS} listeners per load balancer"
            )));
        }
        let bad_latency = m
            .listeners
            .iter()
            .any(|l| l.latency_sum.is_some_and(|v| !v.is_finite() || v < 0.0));
        if bad_latency {
            return Err(ServoError::BadRequest(
                "Metrics: LatencySum must be a non-negative number".into(),
            ));
        }
    }
    serde_json::to_string(metrics).map_err(|e| ServoError::BadRequest(format!("Metrics: {e}")))
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

pub(super) async fn config(
    State(state): State<AppState>,
    servo: AuthenticatedServo,
    secure: Option<Extension<SecureTransport>>,
    uri: Uri,
) -> Response {
    let started = Instant::now();
    let result = config_inner(&state, &servo, &uri, secure.is_some()).await;
    finish("config", &servo, started, result)
}

/// The certificates (with keys) of the servo's load balancers. One that cannot be opened is
/// left out (and logged): the servo refuses the load balancers that need it, the others are
/// served.
async fn certificates(
    state: &AppState,
    servo: &str,
    data: &ServoConfigData,
) -> views::Certificates {
    let mut out = views::Certificates::new();
    for (account_id, arn) in views::certificate_arns(data) {
        match crate::certs::material(state, &account_id, &arn).await {
            Ok(Some(m)) => {
                out.insert(
                    arn.clone(),
                    ServerCertificate {
                        certificate_id: arn,
                        certificate_chain: m.chain_pem,
                        private_key: m.key_pem,
                    },
                );
            }
            Ok(None) => {
                tracing::warn!(servo, certificate = %arn, "a listener names a certificate that no longer exists")
            }
            Err(e) => {
                tracing::error!(servo, certificate = %arn, error = %e.message, "cannot open a certificate for a servo")
            }
        }
    }
    out
}

async fn config_inner(
    state: &AppState,
    servo: &AuthenticatedServo,
    uri: &Uri,
    secure: bool,
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
    let record = &servo.0;
    let data = store
        .servo_config_data(
            &record.id,
            since,
            MAX_REQUEST_IDS,
            state.config().servo.timeout_ms(),
        )
        .await?;
    // Private keys travel only over TLS.
    let certificates = if secure {
        certificates(state, &record.id, &data).await
    } else {
        views::Certificates::new()
    };
    let doc = views::document(
        &record.zone,
        &data,
        state.config().servo.heartbeat.as_secs(),
        &certificates,
    );
    if since != Some(data.version) {
        tracing::info!(
            servo = %record.id, version = data.version, request_ids = ?data.request_ids,
            since = ?since, load_balancers = doc.load_balancers.len(),
            "servo configuration served"
        );
    }
    Ok(json_response(StatusCode::OK, &doc))
}

/// Returns once the published version passes `since` (never if the store is gone).
async fn until_version_after(versions: &mut tokio::sync::watch::Receiver<u64>, since: u64) {
    // The guard `wait_for` returns is not Send; it is dropped here, inside.
    if versions.wait_for(|v| *v > since).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn text_field(field: &str, value: String, max: usize) -> Result<String, ServoError> {
    if !elb_contract::free_text_ok(&value, max) {
        return Err(ServoError::BadRequest(format!(
            "{field}: at most {max} printable characters"
        )));
    }
    Ok(value)
}

fn health_update(entry: InstanceReport) -> Result<HealthUpdate, ServoError> {
    // Eucalyptus accepts only these two from servos: Unknown is control's to say.
    let default = match entry.state {
        InstanceState::InService => InstanceHealth::in_service(),
        InstanceState::OutOfService => InstanceHealth::failed(),
        InstanceState::Unknown => {
            return Err(ServoError::BadRequest(
                "State must be InService or OutOfService, not Unknown".into(),
            ));
        }
    };
    Ok(HealthUpdate {
        lb_name: entry.load_balancer_name,
        instance_id: entry.instance_id,
        health: InstanceHealth {
            state: entry.state,
            reason_code: entry.reason_code.unwrap_or(default.reason_code),
            description: text_field(
                "Description",
                entry.description.unwrap_or(default.description),
                1024,
            )?,
        },
    })
}

pub(super) async fn health(
    State(state): State<AppState>,
    servo: AuthenticatedServo,
    ServoJson(req): ServoJson<HealthReport>,
) -> Response {
    let started = Instant::now();
    let result = with_origin(
        ChangeOrigin::Servo(servo.0.id.clone()),
        health_inner(&state, &servo, req),
    )
    .await;
    finish("health", &servo, started, result)
}

async fn health_inner(
    state: &AppState,
    servo: &AuthenticatedServo,
    req: HealthReport,
) -> Result<Response, ServoError> {
    servo.must_be(&req.servo_id)?;
    let record = &servo.0;
    let updates = req
        .instances
        .into_iter()
        .map(health_update)
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = state
        .store()
        .report_health(&record.id, &record.zone, &updates)
        .await?;
    for c in &outcome.changes {
        tracing::info!(
            servo = %record.id, load_balancer = %c.lb, instance = %c.instance_id,
            from = c.from.as_str(), to = c.to.as_str(),
            "servo {} reports {} of {} {} (was {})", record.id, c.instance_id, c.lb, c.to, c.from
        );
    }
    // Entries a servo has no right to make are skipped so that one stale entry does not cost
    // the valid ones; a report made only of such entries is refused outright.
    if outcome.accepted == 0 && outcome.refused > 0 {
        return Err(ServoError::Forbidden(format!(
            "servo {} may report only on instances in {} of load balancers assigned to it",
            record.id, record.zone
        )));
    }
    Ok(json_response(
        StatusCode::OK,
        &Accepted {
            accepted: outcome.accepted,
            ignored: outcome.ignored,
        },
    ))
}

pub(super) async fn refusals(
    State(state): State<AppState>,
    servo: AuthenticatedServo,
    ServoJson(req): ServoJson<RefusalReport>,
) -> Response {
    let started = Instant::now();
    let result = refusals_inner(&state, &servo, req).await;
    finish("refusals", &servo, started, result)
}

async fn refusals_inner(
    state: &AppState,
    servo: &AuthenticatedServo,
    req: RefusalReport,
) -> Result<Response, ServoError> {
    servo.must_be(&req.servo_id)?;
    let record = &servo.0;
    let mut refusals = req.load_balancers;
    for r in &mut refusals {
        r.reason = text_field("Reason", std::mem::take(&mut r.reason), 4096)?;
    }
    let outcome = state
        .store()
        .replace_refusals(&record.id, &refusals, req.version)
        .await?;
    for r in &outcome.added {
        tracing::warn!(
            servo = %record.id, load_balancer = %r.load_balancer_name, version = ?req.version,
            request_ids = ?req.request_ids, serving_previous = r.serving_previous,
            "servo {} refuses load balancer {}: {}", record.id, r.load_balancer_name, r.reason
        );
    }
    for name in &outcome.cleared {
        tracing::info!(
            servo = %record.id, load_balancer = %name, version = ?req.version,
            request_ids = ?req.request_ids,
            "servo {} serves load balancer {name} again", record.id
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &Accepted {
            accepted: outcome.accepted,
            ignored: outcome.ignored,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let entry = |state: InstanceState| InstanceReport {
            load_balancer_name: "web-1".into(),
            instance_id: "i-1".into(),
            state,
            reason_code: None,
            description: None,
        };
        let u = health_update(entry(InstanceState::OutOfService)).unwrap();
        assert_eq!(u.health, InstanceHealth::failed());
        assert!(health_update(entry(InstanceState::Unknown)).is_err());
        let mut e = entry(InstanceState::InService);
        e.description = Some("x\ny".into());
        assert!(health_update(e).is_err());
    }
}
