//! The HTTP API. Each resource lives in its own module; [`routes`] registers every handler together with
//! its OpenAPI description, so the served document cannot drift from the router.

pub mod audit;
pub mod calendars;
pub mod conflicts;
pub mod connections;
pub mod events;
pub mod keys;
pub mod notifications;
pub mod oauth;
pub mod stream;
pub mod sync;
pub mod webhooks;

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::routing::get;
use calbridge_store::StoreError;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::app;
use crate::error::{ApiError, PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "calbridge",
        description = "Self-hosted calendar integration API. Authenticate with `Authorization: Bearer <api key>`. Errors are RFC 9457 problem documents with a stable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key made with `calbridge keys create` or POST /v1/calendar/keys",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every API route with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(calendars::routes())
        .merge(events::routes())
        .merge(keys::routes())
        .merge(audit::routes())
        .merge(stream::routes())
        .merge(notifications::routes())
        .merge(connections::routes())
        .merge(oauth::routes())
        .merge(sync::routes())
        .merge(conflicts::routes())
        .merge(webhooks::routes())
}

/// Operational endpoints at the root, outside the versioned API and without authentication.
pub fn ops_routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(app::healthz))
        .route("/readyz", get(app::readyz))
        .route("/metrics", get(app::metrics))
}

/// The error answers every authenticated endpoint may give, documented once.
#[derive(Debug)]
pub struct CommonErrors;

impl utoipa::IntoResponses for CommonErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        [
            (
                "400",
                "Malformed request (invalid JSON, query or iCalendar)",
            ),
            ("401", "Missing, malformed or revoked API key"),
            ("403", "The API key lacks the scope this endpoint needs"),
            ("404", "No such resource in this key's tenant"),
            (
                "406",
                "The Accept header asks for a format this endpoint cannot produce",
            ),
            (
                "409",
                "The request conflicts with stored data (e.g. a duplicate UID)",
            ),
            ("412", "If-Match does not match the current ETag"),
            ("413", "Request body over the size limit"),
            ("415", "Unsupported Content-Type"),
            ("422", "Well-formed but invalid request"),
            ("429", "Rate limit exceeded; see Retry-After"),
            (
                "503",
                "The request timed out or the database is unavailable",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Problem::schema()))
                        .build(),
                )
                .build();
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

/// A stored version as an HTTP entity tag.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version a client's `If-Match` requires: `None` when absent or `*` (any version).
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_if_match",
                format!("If-Match `{text}` is not an ETag this API issued (they look like \"3\")"),
            )
        })
}

/// Map a store failure onto the API's error kinds; `what` names the resource for 404s.
pub fn store_error(what: &str, error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound { .. } => ApiError::NotFound(what.to_owned()),
        StoreError::PreconditionFailed { current, .. } => ApiError::PreconditionFailed {
            current: current.map_or_else(|| "none".to_owned(), |v| format!("\"{v}\"")),
        },
        StoreError::Conflict(message) => ApiError::Conflict(message),
        StoreError::Invalid(message) => ApiError::bad_request("invalid_input", message),
        other => ApiError::internal(other),
    }
}

/// A path id: malformed ids are simply not found (they cannot name anything).
pub fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(what.to_owned()))
}

/// Record a write in the audit log. A write that happened must be audited: failure to append is an error.
pub async fn audit(
    state: &AppState,
    principal: &crate::auth::Principal,
    action: &str,
    subject: impl std::fmt::Display,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    state
        .store
        .append_audit(
            principal.tenant,
            calbridge_store::NewAuditEntry {
                actor: principal.actor(),
                action: action.to_owned(),
                subject: subject.to_string(),
                details_json: details.to_string(),
            },
        )
        .await
        .map(|_| ())
        .map_err(ApiError::internal)
}
