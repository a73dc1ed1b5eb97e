//! Inbound provider notifications. Neither endpoint takes an API key (the providers cannot send one): a
//! notification is trusted only when it names a channel we created and carries that channel's secret.
//! Verified notifications are acknowledged at once and turned into coalescing jobs; the sync runs later.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::realtime::push;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(microsoft))
        .routes(routes!(google))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ValidationQuery {
    /// Sent by Graph when a subscription is created; echoed back as text.
    #[serde(rename = "validationToken")]
    pub validation_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GraphCollection {
    value: Vec<GraphNotification>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphNotification {
    subscription_id: String,
    client_state: Option<String>,
    lifecycle_event: Option<String>,
}

fn forged() -> ApiError {
    ApiError::Unauthenticated(
        "no notification names a known subscription with its clientState / channel token".into(),
    )
}

/// Microsoft Graph change and lifecycle notifications (and the subscription validation handshake).
#[utoipa::path(
    post,
    path = "/v1/calendar/notifications/microsoft",
    tag = "notifications",
    params(ValidationQuery),
    request_body(content = String, content_type = "application/json", description = "Graph notification collection `{\"value\": [...]}` (empty for the handshake)"),
    responses(
        (status = 200, description = "Validation handshake: the token, as text/plain"),
        (status = 202, description = "Accepted; the affected links will sync"),
        (status = 400, description = "Not a Graph notification collection"),
        (status = 401, description = "No notification carried a known subscription and its clientState"),
    )
)]
async fn microsoft(
    State(state): State<AppState>,
    Query(query): Query<ValidationQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(token) = query.validation_token {
        // The query extractor has already URL-decoded it, as Graph requires.
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            token,
        )
            .into_response());
    }
    let collection: GraphCollection = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_notification",
            format!("expected a Graph notification collection {{\"value\": [...]}}: {e}"),
        )
    })?;
    let store = state.store.as_ref();
    let mut accepted = 0usize;
    for notification in &collection.value {
        let channel = store
            .find_push_channel("microsoft", &notification.subscription_id)
            .await
            .map_err(ApiError::internal)?;
        let Some(channel) = channel else {
            tracing::warn!(subscription = %notification.subscription_id, "notification for an unknown subscription ignored");
            continue;
        };
        let presented = notification.client_state.as_deref().unwrap_or("");
        if !push::secret_matches(&channel, presented) {
            tracing::warn!(subscription = %channel.id, "notification with a wrong clientState ignored");
            continue;
        }
        accepted += 1;
        let result = match notification.lifecycle_event.as_deref() {
            None => {
                push::enqueue_link_sync(store, channel.tenant_id, channel.link_id, "notification")
                    .await
            }
            Some("missed") => {
                push::enqueue_link_sync(store, channel.tenant_id, channel.link_id, "missed").await
            }
            Some("reauthorizationRequired") => {
                push::enqueue_channel_work(store, &channel, "renew").await
            }
            Some("subscriptionRemoved") => {
                // Recreate, then resync what may have been missed while no subscription existed.
                push::enqueue_channel_work(store, &channel, "recreate")
                    .await
                    .map_err(ApiError::internal)?;
                push::enqueue_link_sync(
                    store,
                    channel.tenant_id,
                    channel.link_id,
                    "subscription_removed",
                )
                .await
            }
            Some(other) => {
                tracing::info!(
                    event = other,
                    "unknown lifecycle event; resyncing to be safe"
                );
                push::enqueue_link_sync(store, channel.tenant_id, channel.link_id, "lifecycle")
                    .await
            }
        };
        result.map_err(ApiError::internal)?;
    }
    if accepted == 0 && !collection.value.is_empty() {
        return Err(forged());
    }
    if accepted > 0 {
        state.realtime.wake_workers();
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

fn goog<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Google Calendar watch-channel messages (`sync`, `exists`, `not_exists`).
#[utoipa::path(
    post,
    path = "/v1/calendar/notifications/google",
    tag = "notifications",
    responses(
        (status = 200, description = "Accepted (or a duplicate, ignored)"),
        (status = 400, description = "Google channel headers missing or malformed"),
        (status = 401, description = "Unknown channel, wrong token or wrong resource id"),
    )
)]
async fn google(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let missing = |name: &str| {
        ApiError::bad_request(
            "invalid_notification",
            format!(
                "the {name} header is missing; this endpoint receives Google watch-channel messages"
            ),
        )
    };
    let channel_id =
        goog(&headers, "x-goog-channel-id").ok_or_else(|| missing("X-Goog-Channel-ID"))?;
    let resource_id =
        goog(&headers, "x-goog-resource-id").ok_or_else(|| missing("X-Goog-Resource-ID"))?;
    let resource_state =
        goog(&headers, "x-goog-resource-state").ok_or_else(|| missing("X-Goog-Resource-State"))?;
    let number: i64 = goog(&headers, "x-goog-message-number")
        .ok_or_else(|| missing("X-Goog-Message-Number"))?
        .trim()
        .parse()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_notification",
                "X-Goog-Message-Number is not a number",
            )
        })?;
    let token = goog(&headers, "x-goog-channel-token").unwrap_or("");
    let store = state.store.as_ref();
    let channel = store
        .find_push_channel("google", channel_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(forged)?;
    let resource_ok = channel.resource_id.as_deref().is_some_and(|r| {
        subtle::ConstantTimeEq::ct_eq(r.as_bytes(), resource_id.as_bytes()).into()
    });
    if !push::secret_matches(&channel, token) || !resource_ok {
        tracing::warn!(channel = %channel.id, "Google message with a wrong token or resource id ignored");
        return Err(forged());
    }
    if !store
        .accept_push_message("google", channel_id, number)
        .await
        .map_err(ApiError::internal)?
    {
        // A retry or replay of a message already handled: success, so Google stops resending it.
        return Ok(StatusCode::OK.into_response());
    }
    match resource_state {
        // `sync` only confirms the channel; there is nothing new to read.
        "sync" => {}
        _ => {
            push::enqueue_link_sync(store, channel.tenant_id, channel.link_id, "notification")
                .await
                .map_err(ApiError::internal)?;
            state.realtime.wake_workers();
        }
    }
    Ok(StatusCode::OK.into_response())
}
