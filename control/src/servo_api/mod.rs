//! The servo protocol: HTTP + JSON under `/servo/v1/`, on the same listener as the ELB API.
//! The messages are the contract's ([`elb_contract::wire`]).
//!
//! - `POST register` (zone, addresses the servo can serve as VIPs, capacity) and
//!   `POST heartbeat` keep the servo live (liveness is a database timestamp, so every control
//!   replica agrees);
//! - `GET config?since=V&wait=S` long-polls the configuration of the load balancers assigned
//!   to the servo; it returns as soon as the config version passes `since`;
//! - `POST health` stores the servo's health checks of instances in its own zone;
//! - `POST refusals` stores the load balancers the servo refuses, with why.
//!
//! [`auth`] authenticates (an extractor: `Authorization: Bearer <ServoId>:<Secret>`),
//! [`handlers`] answer, [`views`] build what servos are told. Errors are `{"Error": "..."}`
//! with 400/401/403/404/405/409/413/500; internal details are logged only.

pub mod auth;
mod handlers;
pub mod views;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use elb_contract::wire::ErrorBody;
use serde::Serialize;

pub use auth::secret_hash;
pub use handlers::MAX_WAIT;

use crate::server::AppState;
use crate::store::StoreError;

/// Largest request body (health reports of many instances).
const MAX_BODY: usize = 4 * 1024 * 1024;

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
    #[error(
        "no such servo protocol resource; see /servo/v1/register, heartbeat, config, health, refusals"
    )]
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

    /// Logs the failure: internal ones with their cause, refusals at info.
    fn log(&self, servo: Option<&str>, path: &str) {
        let status = self.status().as_u16();
        let servo = servo.unwrap_or("-");
        match self {
            Self::Internal(cause) => {
                tracing::error!(servo, path, status, cause = %cause, "servo request failed")
            }
            other => {
                tracing::info!(servo, path, status, message = %other, "servo request refused")
            }
        }
    }
}

impl IntoResponse for ServoError {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.status(),
            &ErrorBody {
                error: self.public_message(),
            },
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

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
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

/// A request an extractor refused, logged with its path when it is turned into the response.
#[derive(Debug)]
pub struct Refused {
    pub(crate) error: ServoError,
    pub(crate) path: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        self.error.log(None, &self.path);
        self.error.into_response()
    }
}

/// A JSON request body of at most [`MAX_BODY`] bytes.
pub struct ServoJson<T>(pub T);

impl<T, S> FromRequest<S> for ServoJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let path = req.uri().path().to_string();
        read_json(req.into_body())
            .await
            .map(ServoJson)
            .map_err(|error| Refused { error, path })
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ServoError> {
    {
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
}

/// The routes, to be nested under `/servo/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(handlers::register).fallback(wrong_method))
        .route(
            "/heartbeat",
            post(handlers::heartbeat).fallback(wrong_method),
        )
        .route("/config", get(handlers::config).fallback(wrong_method))
        .route("/health", post(handlers::health).fallback(wrong_method))
        .route("/refusals", post(handlers::refusals).fallback(wrong_method))
        .fallback(not_found)
}

async fn wrong_method() -> Response {
    ServoError::MethodNotAllowed.into_response()
}

async fn not_found() -> Response {
    ServoError::NotFound.into_response()
}
