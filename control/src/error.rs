//! The one error type of the Query API. Every failure a client can see is an [`ApiError`]: a
//! wire code from botocore's model (or AWS's common errors), the HTTP status that goes with it,
//! and a message meant for the caller. Internal failures carry their cause for the log only;
//! the response says `InternalFailure` and nothing else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::xml;

/// Error codes as they appear in `ErrorResponse/Error/Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    // Modeled ELB errors (botocore service-2.json wire codes).
    LoadBalancerNotFound,
    DuplicateLoadBalancerName,
    TooManyLoadBalancers,
    InvalidInstance,
    InvalidConfigurationRequest,
    CertificateNotFound,
    DuplicateListener,
    ListenerNotFound,
    DuplicatePolicyName,
    PolicyNotFound,
    PolicyTypeNotFound,
    TooManyPolicies,
    DuplicateTagKeys,
    TooManyTags,
    InvalidSecurityGroup,
    InvalidSubnet,
    SubnetNotFound,
    InvalidScheme,
    LoadBalancerAttributeNotFound,
    UnsupportedProtocol,
    // IAM errors of the server-certificate actions (botocore's iam model).
    EntityAlreadyExists,
    NoSuchEntity,
    MalformedCertificate,
    KeyPairMismatch,
    DeleteConflict,
    LimitExceeded,
    // Common Query API errors.
    ValidationError,
    MissingParameter,
    InvalidParameterValue,
    MalformedQueryString,
    InvalidAction,
    MissingAction,
    NoSuchVersion,
    AccessDenied,
    IncompleteSignature,
    InvalidClientTokenId,
    MissingAuthenticationToken,
    SignatureDoesNotMatch,
    RequestExpired,
    RequestEntityTooLarge,
    NotFound,
    MethodNotAllowed,
    ServiceUnavailable,
    InternalFailure,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            LoadBalancerNotFound => "LoadBalancerNotFound",
            DuplicateLoadBalancerName => "DuplicateLoadBalancerName",
            TooManyLoadBalancers => "TooManyLoadBalancers",
            InvalidInstance => "InvalidInstance",
            InvalidConfigurationRequest => "InvalidConfigurationRequest",
            CertificateNotFound => "CertificateNotFound",
            DuplicateListener => "DuplicateListener",
            ListenerNotFound => "ListenerNotFound",
            DuplicatePolicyName => "DuplicatePolicyName",
            PolicyNotFound => "PolicyNotFound",
            PolicyTypeNotFound => "PolicyTypeNotFound",
            TooManyPolicies => "TooManyPolicies",
            DuplicateTagKeys => "DuplicateTagKeys",
            TooManyTags => "TooManyTags",
            InvalidSecurityGroup => "InvalidSecurityGroup",
            InvalidSubnet => "InvalidSubnet",
            SubnetNotFound => "SubnetNotFound",
            InvalidScheme => "InvalidScheme",
            LoadBalancerAttributeNotFound => "LoadBalancerAttributeNotFound",
            UnsupportedProtocol => "UnsupportedProtocol",
            EntityAlreadyExists => "EntityAlreadyExists",
            NoSuchEntity => "NoSuchEntity",
            MalformedCertificate => "MalformedCertificate",
            KeyPairMismatch => "KeyPairMismatch",
            DeleteConflict => "DeleteConflict",
            LimitExceeded => "LimitExceeded",
            ValidationError => "ValidationError",
            MissingParameter => "MissingParameter",
            InvalidParameterValue => "InvalidParameterValue",
            MalformedQueryString => "MalformedQueryString",
            InvalidAction => "InvalidAction",
            MissingAction => "MissingAction",
            NoSuchVersion => "NoSuchVersion",
            AccessDenied => "AccessDenied",
            IncompleteSignature => "IncompleteSignature",
            InvalidClientTokenId => "InvalidClientTokenId",
            MissingAuthenticationToken => "MissingAuthenticationToken",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            RequestExpired => "RequestExpired",
            RequestEntityTooLarge => "RequestEntityTooLarge",
            NotFound => "NotFound",
            MethodNotAllowed => "MethodNotAllowed",
            ServiceUnavailable => "ServiceUnavailable",
            InternalFailure => "InternalFailure",
        }
    }

    /// HTTP status: botocore's models for the modeled errors (ELB's are all 400 except
    /// InvalidConfigurationRequest's 409; IAM's as its model says), AWS's common-errors table
    /// for the rest.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidConfigurationRequest | EntityAlreadyExists | DeleteConflict | LimitExceeded => {
                StatusCode::CONFLICT
            }
            NoSuchEntity => StatusCode::NOT_FOUND,
            AccessDenied
            | InvalidClientTokenId
            | MissingAuthenticationToken
            | SignatureDoesNotMatch => StatusCode::FORBIDDEN,
            RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// `Sender` for client faults, `Receiver` for ours.
    pub fn fault(self) -> &'static str {
        if self.status().is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed request, as the client will see it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// What really went wrong, for internal failures: logged, never sent.
    #[source]
    pub cause: Option<BoxError>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfigurationRequest, message)
    }

    pub fn missing(parameter: &str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("The request must contain the parameter {parameter}"),
        )
    }

    pub fn lb_not_found(name: &str) -> Self {
        Self::new(
            ErrorCode::LoadBalancerNotFound,
            format!("There is no ACTIVE Load Balancer named '{name}'"),
        )
    }

    /// An internal failure: the cause goes to the log, the client gets `InternalFailure`.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self {
            code: ErrorCode::InternalFailure,
            message: "An internal error has occurred. Please try again later.".into(),
            cause: Some(cause.into()),
        }
    }

    /// The `ErrorResponse` document with this error and the request's id.
    pub fn into_response_with_id(self, request_id: &str) -> Response {
        let body = xml::error_document(
            self.code.fault(),
            self.code.as_str(),
            &self.message,
            request_id,
        );
        xml_response(self.code.status(), request_id, body)
    }
}

/// An error bound to the request it answers, so it can render itself as a response.
#[derive(Debug)]
pub struct RequestFailure {
    pub request_id: String,
    pub error: ApiError,
}

impl IntoResponse for RequestFailure {
    fn into_response(self) -> Response {
        self.error.into_response_with_id(&self.request_id)
    }
}

/// A `text/xml` response carrying the request id header AWS clients look for.
pub fn xml_response(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/xml"),
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_model() {
        assert_eq!(
            ErrorCode::InvalidConfigurationRequest.status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            ErrorCode::LoadBalancerNotFound.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ErrorCode::InvalidClientTokenId.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ErrorCode::InternalFailure.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(ErrorCode::InternalFailure.fault(), "Receiver");
        assert_eq!(ErrorCode::ValidationError.fault(), "Sender");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal("database password is hunter2");
        let body = xml::error_document(err.code.fault(), err.code.as_str(), &err.message, "r");
        assert!(body.contains("<Code>InternalFailure</Code>"));
        assert!(!body.contains("hunter2"));
    }
}
