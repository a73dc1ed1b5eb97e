//! Outbound webhooks (`/v1/calendar/webhooks`): the application registers a URL and the message types it
//! wants; calbridge POSTs every matching change-stream message there, signed (see [`crate::webhooks`]).
//! The signing secret is generated here, shown once (on create and on rotation) and stored sealed under
//! the master key; reads never return it. Scope: `connections:manage` (integration set-up, like
//! connections; `admin` stays away from calendar data by design).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use calbridge_store::crypto::Purpose;
use calbridge_store::{CalendarId, Delivery, NewWebhook, Webhook, WebhookId, WebhookUpdate};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, audit, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, ConnectionsManage};
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::webhooks::{EVENT_TYPES, new_secret, valid_event_pattern};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
}

/// A webhook as the API shows it; the secret is never part of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// Message types delivered: exact types, `prefix.*` or `*`.
    pub events: Vec<String>,
    /// Only messages of this calendar (messages without a calendar are then not delivered).
    pub calendar_id: Option<String>,
    pub enabled: bool,
    /// Why the webhook was disabled (after repeated failures, or by an update).
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    /// The change-stream seq up to which messages are settled.
    pub delivered_seq: i64,
    /// While backing off after a failure: no attempt before this time.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn view(w: Webhook) -> WebhookView {
    WebhookView {
        id: w.id.to_string(),
        url: w.url,
        events: serde_json::from_str(&w.events_json).unwrap_or_default(),
        calendar_id: w.calendar_id.map(|c| c.to_string()),
        enabled: w.enabled,
        disabled_reason: w.disabled_reason,
        consecutive_failures: w.consecutive_failures,
        delivered_seq: w.delivered_seq,
        next_attempt_at: w.retry_at.map(|t| t.to_string()),
        created_at: w.created_at.to_string(),
        updated_at: w.updated_at.to_string(),
    }
}

/// A webhook with its signing secret: answered once, on create and on rotation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The HMAC-SHA256 key (its UTF-8 bytes) for `Calbridge-Signature`. Shown only now; store it.
    pub secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where to POST messages (http or https; private addresses only when the operator allows them).
    pub url: String,
    /// Message types: `event.created`, `event.updated`, `event.deleted`, `conflict.detected`,
    /// `conflict.resolved`, `connection.status`, `sync.finished`, a `prefix.*` or `*` (default).
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Only messages of this calendar.
    #[serde(default)]
    pub calendar_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// A calendar id, or `null` to deliver every calendar's messages.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub calendar_id: Option<serde_json::Value>,
    /// `true` re-enables a disabled webhook (its failure streak starts again from zero; delivery resumes
    /// with the first message not yet delivered, if still within the stream's retention).
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// The change-stream seq of the message.
    pub seq: Option<i64>,
    /// The message type.
    pub event: String,
    /// 1 for the first attempt at this message, counting up while it keeps failing.
    pub attempt: i64,
    /// `delivered` or `failed`.
    pub status: String,
    /// The receiver's HTTP status, when it answered.
    pub response_status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: Option<i64>,
    pub at: String,
}

fn delivery_view(d: Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id.to_string(),
        seq: d.change_seq,
        event: d.event,
        attempt: d.attempt,
        status: d.status,
        response_status: d.response_status,
        error: d.error,
        latency_ms: d.latency_ms,
        at: d.at.to_string(),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<DeliveryView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// At most this many entries (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Checks the URL's form and, for the addresses it names or resolves to now, the address policy.
/// (Delivery checks again on every attempt, on the addresses it connects to.)
async fn validate_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    let parsed = url::Url::parse(url).map_err(|e| {
        ApiError::unprocessable("invalid_url", format!("url is not an absolute URL: {e}"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::unprocessable(
            "invalid_url",
            "url must be an http or https URL with a host",
        ));
    }
    let policy = crate::syncing::address_policy(state.config.network.allow_private_networks);
    let refused = |detail: String| {
        ApiError::unprocessable(
            "url_not_allowed",
            format!(
                "{detail}; webhooks may only target public addresses unless the operator sets network.allow_private_networks"
            ),
        )
    };
    policy
        .check_url(&parsed)
        .map_err(|e| refused(e.to_string()))?;
    if let Some(url::Host::Domain(host)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(443);
        // A name that does not resolve (yet, or within 2 s) is accepted; delivery checks the addresses it
        // connects to on every attempt anyway.
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::lookup_host((host, port)),
        )
        .await;
        if let Ok(Ok(addresses)) = lookup {
            for address in addresses {
                policy
                    .check_ip(address.ip())
                    .map_err(|detail| refused(format!("{host} resolves to {detail}")))?;
            }
        }
    }
    Ok(url.to_owned())
}

fn validate_events(events: Option<Vec<String>>) -> Result<String, ApiError> {
    let events = events.unwrap_or_else(|| vec!["*".to_owned()]);
    if events.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_events",
            "events must name at least one message type (or `*`)",
        ));
    }
    if let Some(bad) = events.iter().find(|e| !valid_event_pattern(e)) {
        return Err(ApiError::unprocessable(
            "invalid_events",
            format!(
                "`{bad}` is not a message type; use one of {}, a `prefix.*` or `*`",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    serde_json::to_string(&events).map_err(ApiError::internal)
}

async fn calendar(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    id: &str,
) -> Result<CalendarId, ApiError> {
    let id: CalendarId = parse_id(id, "calendar")?;
    Ok(state
        .store
        .get_calendar(tenant, id)
        .await
        .map_err(|e| store_error("calendar", e))?
        .id)
}

async fn find(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    id: &str,
) -> Result<Webhook, ApiError> {
    let id: WebhookId = parse_id(id, "webhook")?;
    state
        .store
        .get_webhook(tenant, id)
        .await
        .map_err(|e| store_error("webhook", e))
}

/// List the tenant's webhooks (never their secrets).
#[utoipa::path(get, path = "/v1/calendar/webhooks", tag = "webhooks",
    security(("api_key" = [])),
    responses((status = 200, body = WebhookList), CommonErrors))]
pub async fn list_webhooks(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
) -> Result<Json<WebhookList>, ApiError> {
    let items = state
        .store
        .list_webhooks(auth.principal().tenant)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(view)
        .collect();
    Ok(Json(WebhookList { items }))
}

/// Register a webhook. The answer carries the signing `secret`, shown this once. Messages committed from
/// now on are delivered.
#[utoipa::path(post, path = "/v1/calendar/webhooks", tag = "webhooks",
    security(("api_key" = [])),
    request_body = WebhookInput,
    responses((status = 201, body = WebhookWithSecret), CommonErrors))]
pub async fn create_webhook(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<WebhookInput>,
) -> Result<Response, ApiError> {
    let principal = auth.principal();
    let tenant = principal.tenant;
    let url = validate_url(&state, &input.url).await?;
    let events_json = validate_events(input.events)?;
    let calendar_id = match &input.calendar_id {
        Some(id) => Some(calendar(&state, tenant, id).await?),
        None => None,
    };
    let secret = new_secret();
    let sealed = state
        .master_key
        .seal(Purpose::WebhookSecret, secret.as_bytes())
        .map_err(ApiError::internal)?;
    let webhook = state
        .store
        .create_webhook(
            tenant,
            NewWebhook {
                url,
                secret: sealed,
                events_json,
                calendar_id,
            },
        )
        .await
        .map_err(|e| store_error("webhook", e))?;
    audit(
        &state,
        principal,
        "webhook.created",
        webhook.id,
        serde_json::json!({"url": webhook.url}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookWithSecret {
            webhook: view(webhook),
            secret,
        }),
    )
        .into_response())
}

/// One webhook (never its secret).
#[utoipa::path(get, path = "/v1/calendar/webhooks/{id}", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), CommonErrors))]
pub async fn get_webhook(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(view(
        find(&state, auth.principal().tenant, &id).await?,
    )))
}

/// Change a webhook's URL, message types or calendar, or enable/disable it (`enabled: true` re-enables
/// one disabled after failures).
#[utoipa::path(patch, path = "/v1/calendar/webhooks/{id}", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    request_body = WebhookPatch,
    responses((status = 200, body = WebhookView), CommonErrors))]
pub async fn update_webhook(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Result<Json<WebhookView>, ApiError> {
    let principal = auth.principal();
    let tenant = principal.tenant;
    let webhook = find(&state, tenant, &id).await?;
    let url = match &patch.url {
        Some(url) => Some(validate_url(&state, url).await?),
        None => None,
    };
    let events_json = match patch.events {
        Some(events) => Some(validate_events(Some(events))?),
        None => None,
    };
    let calendar_id = match &patch.calendar_id {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(id)) => Some(Some(calendar(&state, tenant, id).await?)),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_calendar_id",
                "calendar_id must be a calendar id or null",
            ));
        }
    };
    let mut updated = state
        .store
        .update_webhook(
            tenant,
            webhook.id,
            WebhookUpdate {
                url,
                events_json,
                calendar_id,
                secret: None,
            },
        )
        .await
        .map_err(|e| store_error("webhook", e))?;
    if let Some(enabled) = patch.enabled
        && enabled != updated.enabled
    {
        let reason = format!("disabled by {}", principal.actor());
        updated = state
            .store
            .set_webhook_enabled(tenant, webhook.id, enabled, Some(&reason))
            .await
            .map_err(|e| store_error("webhook", e))?;
    }
    audit(
        &state,
        principal,
        "webhook.updated",
        updated.id,
        serde_json::json!({"url": updated.url, "enabled": updated.enabled}),
    )
    .await?;
    Ok(Json(view(updated)))
}

/// Delete a webhook and its delivery log.
#[utoipa::path(delete, path = "/v1/calendar/webhooks/{id}", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), CommonErrors))]
pub async fn delete_webhook(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let principal = auth.principal();
    let webhook = find(&state, principal.tenant, &id).await?;
    state
        .store
        .delete_webhook(principal.tenant, webhook.id)
        .await
        .map_err(|e| store_error("webhook", e))?;
    audit(
        &state,
        principal,
        "webhook.deleted",
        webhook.id,
        serde_json::json!({"url": webhook.url}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the signing secret; the new one is in the answer, shown this once. Deliveries from now on
/// are signed with it.
#[utoipa::path(post, path = "/v1/calendar/webhooks/{id}/rotate-secret", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookWithSecret), CommonErrors))]
pub async fn rotate_secret(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    let principal = auth.principal();
    let webhook = find(&state, principal.tenant, &id).await?;
    let secret = new_secret();
    let sealed = state
        .master_key
        .seal(Purpose::WebhookSecret, secret.as_bytes())
        .map_err(ApiError::internal)?;
    let updated = state
        .store
        .update_webhook(
            principal.tenant,
            webhook.id,
            WebhookUpdate {
                secret: Some(sealed),
                ..WebhookUpdate::default()
            },
        )
        .await
        .map_err(|e| store_error("webhook", e))?;
    audit(
        &state,
        principal,
        "webhook.secret_rotated",
        updated.id,
        serde_json::json!({}),
    )
    .await?;
    Ok(Json(WebhookWithSecret {
        webhook: view(updated),
        secret,
    }))
}

/// The delivery log of a webhook, newest first: one entry per attempt with status, latency and error.
#[utoipa::path(get, path = "/v1/calendar/webhooks/{id}/deliveries", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id"), DeliveryQuery),
    responses((status = 200, body = DeliveryList), CommonErrors))]
pub async fn list_deliveries(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let tenant = auth.principal().tenant;
    let webhook = find(&state, tenant, &id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .store
        .list_deliveries(tenant, webhook.id, limit)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(delivery_view)
        .collect();
    Ok(Json(DeliveryList { items }))
}
