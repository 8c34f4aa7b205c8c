//! Servo authentication: `Authorization: Bearer <ServoId>:<Secret>`, checked against the
//! stored SHA-256 of the secret, as an axum extractor. A handler that takes an
//! [`AuthenticatedServo`] runs only for a known servo presenting its secret.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{Refused, ServoError};
use crate::server::AppState;
use crate::store::ServoRecord;

/// The hex SHA-256 of a servo secret, the form it is stored in.
pub fn secret_hash(secret: &str) -> String {
    elb_sigv4::sha256_hex(secret.as_bytes())
}

/// The servo that signed the request.
#[derive(Debug, Clone)]
pub struct AuthenticatedServo(pub ServoRecord);

impl AuthenticatedServo {
    /// The body's ServoId must be the authenticated servo: a servo acts only as itself.
    pub fn must_be(&self, claimed: &str) -> Result<(), ServoError> {
        if claimed == self.0.id {
            Ok(())
        } else {
            Err(ServoError::Forbidden(format!(
                "servo {} cannot act as servo {}",
                self.0.id,
                crate::validate::printable(claimed)
            )))
        }
    }
}

async fn authenticate(state: &AppState, parts: &Parts) -> Result<ServoRecord, ServoError> {
    const MALFORMED: &str = "Authorization must be 'Bearer <ServoId>:<Secret>'";
    const INVALID: &str = "invalid servo credentials";
    let value = parts
        .headers
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

impl FromRequestParts<AppState> for AuthenticatedServo {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, parts)
            .await
            .map(AuthenticatedServo)
            .map_err(|error| Refused {
                error,
                path: parts.uri.path().to_string(),
            })
    }
}
