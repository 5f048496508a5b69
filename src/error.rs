//! The one place where an error becomes an HTTP response.
//!
//! Every body is JSON: `{"error": code, "message": …, "field": …}`. Codes are
//! stable and meant for programs; messages are for people and never carry a
//! secret or an internal detail. Internal causes go to the log, tied to the
//! request id, and the client sees only that something failed.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// What a client is told to wait, in seconds, when the database is down.
pub(crate) const DATABASE_RETRY_AFTER: u64 = 5;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed; `field` names the culprit when known.
    Invalid { field: Option<String>, message: String },
    /// 401 `invalid_credentials`: deliberately the same for every reason a
    /// sign-in fails.
    InvalidCredentials,
    /// 401 with a specific code (`unauthorized`, `invalid_token`, `invalid_grant`).
    Unauthorized { code: &'static str, message: &'static str },
    /// 403.
    Forbidden { code: &'static str, message: String },
    /// 404.
    NotFound(&'static str),
    /// 405.
    MethodNotAllowed,
    /// 408: the request took longer than the service allows any request.
    RequestTimeout(std::time::Duration),
    /// 409.
    Conflict(String),
    /// 409 `email_domain_owned`: the address is in this domain, which
    /// another organization has verified.
    DomainOwned(String),
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 502: an upstream answered, but not with success.
    BadGateway { code: &'static str },
    /// 503: a dependency could not be reached (or the service is too busy);
    /// `Retry-After` says when to try again, in seconds.
    Unavailable { code: &'static str, retry_after: u64 },
    /// 429: too many attempts; `Retry-After` says when the limit lifts.
    TooManyRequests { retry_after: u64 },
    /// A refused single sign-on, with the status and code that say why.
    SignIn { status: StatusCode, code: &'static str, message: String },
    /// 403 `sso_required`: the organization signs in only through single
    /// sign-on, which starts at `sso_url`.
    SsoRequired { sso_url: String },
    /// 500: logged in full, reported to the client as nothing more than that.
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid { field: Some(field.to_owned()), message: message.into() }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

/// The error body, as documented in the OpenAPI description.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable, machine-readable code.
    pub error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `sso_required`: where the user's single sign-on starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sso_url: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message, field) = match self {
            Self::Invalid { field, message } => {
                (StatusCode::BAD_REQUEST, "invalid_request", Some(message), field)
            }
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials", None, None),
            Self::Unauthorized { code, message } => {
                (StatusCode::UNAUTHORIZED, code, Some(message.to_owned()), None)
            }
            Self::Forbidden { code, message } => (StatusCode::FORBIDDEN, code, Some(message), None),
            Self::NotFound(what) => {
                (StatusCode::NOT_FOUND, "not_found", Some(format!("{what} not found")), None)
            }
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                Some("method not allowed here".into()),
                None,
            ),
            Self::RequestTimeout(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                Some(format!("the request took longer than {} s", limit.as_secs())),
                None,
            ),
            Self::Conflict(message) => (StatusCode::CONFLICT, "conflict", Some(message), None),
            Self::DomainOwned(domain) => (
                StatusCode::CONFLICT,
                "email_domain_owned",
                Some(format!(
                    "the address is in {domain}, a domain another organization has verified; \
                     its users can only be created there"
                )),
                Some("email".to_owned()),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                Some("request body is too large".into()),
                None,
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("send the body as application/json".into()),
                None,
            ),
            Self::BadGateway { code } => (StatusCode::BAD_GATEWAY, code, None, None),
            Self::Unavailable { code, retry_after } => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(ErrorBody { error: code, message: None, field: None, sso_url: None }),
                )
                    .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                return response;
            }
            Self::TooManyRequests { retry_after } => {
                let body = ErrorBody {
                    error: "too_many_requests",
                    message: Some("too many attempts; try again later".into()),
                    field: None,
                    sso_url: None,
                };
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
                return response;
            }
            Self::SignIn { status, code, message } => (status, code, Some(message), None),
            Self::SsoRequired { sso_url } => {
                let body = ErrorBody {
                    error: "sso_required",
                    message: Some("this organization signs in through single sign-on".into()),
                    field: None,
                    sso_url: Some(sso_url),
                };
                return (StatusCode::FORBIDDEN, Json(body)).into_response();
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    Some("something went wrong".into()),
                    None,
                )
            }
        };
        let mut response = (status, Json(ErrorBody { error, message, field, sso_url: None })).into_response();
        if status == StatusCode::UNAUTHORIZED && error != "invalid_credentials" {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("resource"),
            StoreError::Conflict(what) => Self::Conflict(format!("{what} already exists")),
            StoreError::DomainOwned(domain) => Self::DomainOwned(domain),
            StoreError::VersionMismatch => {
                Self::Conflict("the resource was changed meanwhile; read it again".into())
            }
            StoreError::UnknownReference(what) => {
                Self::Invalid { field: None, message: format!("{what} does not exist") }
            }
            e if e.is_unavailable() => {
                tracing::warn!(cause = %e, "the database is unavailable");
                Self::Unavailable { code: "database_unavailable", retry_after: DATABASE_RETRY_AFTER }
            }
            other => Self::internal(other),
        }
    }
}

/// A connector's failure outside a sign-in's own verdict (hashing a new
/// password, say).
impl From<gatehouse_core::ConnectorError> for ApiError {
    fn from(e: gatehouse_core::ConnectorError) -> Self {
        match e {
            gatehouse_core::ConnectorError::Busy => Self::Unavailable { code: "busy", retry_after: 1 },
            other => Self::internal(other),
        }
    }
}

impl From<crate::keys::KeyError> for ApiError {
    fn from(e: crate::keys::KeyError) -> Self {
        Self::internal(e)
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        match e {
            PathRejection::FailedToDeserializePathParams(inner) => Self::Invalid {
                field: None,
                message: format!("invalid path parameter: {}", inner.body_text()),
            },
            other => Self::internal(other),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::Invalid { field: None, message: format!("invalid query: {}", e.body_text()) }
    }
}
