//! The one error type of the API, answered as RFC 9457 `application/problem+json` with a stable `code`
//! that scripts can match on and a `detail` sentence a person can act on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` plus `code` is enough to dispatch on.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Stable machine-readable code, e.g. `etag_mismatch`.
    pub code: String,
    /// What happened and what to do about it.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("this API key lacks the `{0}` scope; create a key with that scope")]
    MissingScope(&'static str),
    #[error("{0} not found")]
    NotFound(String),
    /// The request is malformed; `code` names which rule it broke.
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error(
        "the resource changed since you read it (current ETag {current}); fetch it again, reapply your change and send the new ETag in If-Match"
    )]
    PreconditionFailed { current: String },
    #[error("{0}")]
    Conflict(String),
    /// A conflict's side changed again after it was recorded: nothing was overwritten.
    #[error("{0}")]
    ConflictChanged(String),
    /// The resource's state forbids the request; `code` says which state (`connection_deleted`).
    #[error("{detail}")]
    StateConflict { code: &'static str, detail: String },
    #[error(
        "this endpoint does not support that method; the Allow header and /v1/openapi.json list what it does"
    )]
    MethodNotAllowed,
    #[error(
        "request body larger than the limit of {limit} bytes; split the request or raise limits.max_body_bytes"
    )]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("rate limit exceeded for this API key; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "the request took longer than {0} s and was abandoned; narrow it (a smaller window or page) and retry"
    )]
    Timeout(u64),
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on our side; the cause goes to the log, never to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            detail: detail.into(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::MissingScope(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::Conflict(_) | Self::ConflictChanged(_) | Self::StateConflict { .. } => {
                StatusCode::CONFLICT
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::MissingScope(_) => "missing_scope",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::StateConflict { code, .. } => code,
            Self::PreconditionFailed { .. } => "etag_mismatch",
            Self::Conflict(_) => "conflict",
            Self::ConflictChanged(_) => "conflict_changed",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::NotAcceptable(_) => "not_acceptable",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            code: self.code().into(),
            detail: match self {
                Self::Internal(_) => {
                    "an internal error occurred; it has been logged with this request's x-request-id".into()
                }
                other => other.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let problem = self.to_problem();
        let status = self.status();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Self::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// Turn axum's own JSON / query / path rejections into problems with a clear message.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        match rejection {
            R::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            R::JsonSyntaxError(e) => Self::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            R::JsonDataError(e) => Self::unprocessable("invalid_body", e.body_text()),
            R::BytesRejection(e) => body_rejection(e.status(), e.body_text()),
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        body_rejection(rejection.status(), rejection.body_text())
    }
}

fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit: 0 }
    } else {
        ApiError::bad_request("invalid_body", text)
    }
}
