//! `GET /v1/calendar/stream`: the tenant's change stream over a WebSocket. Every message carries the
//! change-stream `seq`; a client that reconnects with `?since=<last seq>` first receives what it missed
//! (read from the store, within the stream's retention window), then live changes, with no gap and no
//! duplicate, because replay and live delivery are the same read: "entries after the last seq sent".
//!
//! Browsers cannot set headers on a WebSocket, so the key may also come as `?access_token=<key>`
//! (keep such URLs out of logs you share).

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::Response;
use calbridge_store::{CalendarId, Change, Store, TenantId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, parse_id};
use crate::AppState;
use crate::auth::{Authorized, EventsRead};
use crate::error::ApiError;
use crate::realtime::Hub;

/// Entries read from the store per round trip.
const BATCH: u32 = 500;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this sequence number (the `seq` of the last message received).
    pub since: Option<i64>,
    /// Only changes of this calendar.
    pub calendar_id: Option<String>,
    /// The API key, for clients that cannot send `Authorization` (browsers).
    pub access_token: Option<String>,
}

/// Live change stream (WebSocket). Messages are JSON: `{"seq", "type", "calendar_id", "subject_id",
/// "data", "at"}` with `type` one of `event.created`, `event.updated`, `event.deleted`,
/// `conflict.detected`, `conflict.resolved`, `connection.status`, `sync.finished`. A `since` older than
/// the retention window (`stream.retention`, 7 days by default) starts the stream with one
/// `stream.reset` message (`data.reason = "since_expired"`): re-read the state through the API, then keep
/// applying the messages that follow it.
#[utoipa::path(
    get,
    path = "/v1/calendar/stream",
    tag = "stream",
    params(StreamQuery),
    security(("api_key" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        CommonErrors,
    )
)]
async fn stream(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    // Taken as a Result so that authentication answers first (401/403/404 before any upgrade error).
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Authenticate through the same extractor as every other route, with the query token as a header.
    let mut auth_request = Request::builder().body(()).map_err(ApiError::internal)?;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        auth_request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.clone());
    } else if let Some(token) = &query.access_token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::Unauthenticated("invalid or revoked API key".into()))?;
        auth_request
            .headers_mut()
            .insert(header::AUTHORIZATION, value);
    }
    let (mut parts, ()) = auth_request.into_parts();
    let authorized = Authorized::<EventsRead>::from_request_parts(&mut parts, &state).await?;
    let tenant = authorized.principal().tenant;
    let calendar = match &query.calendar_id {
        Some(text) => {
            let id: CalendarId = parse_id(text, "calendar")?;
            // 404 for another tenant's calendar, like every other route.
            state
                .store
                .get_calendar(tenant, id)
                .await
                .map_err(|e| super::store_error("calendar", e))?;
            Some(id)
        }
        None => None,
    };
    // The starting point is fixed before the upgrade: a change committed after this answer is never missed.
    let head = state
        .store
        .latest_change_seq(tenant)
        .await
        .map_err(ApiError::internal)?;
    let mut reset = None;
    let start = match query.since {
        Some(seq) if seq >= 0 => {
            let floor = state
                .store
                .change_stream_floor(tenant)
                .await
                .map_err(ApiError::internal)?;
            if seq < floor {
                // Entries after `seq` may have been removed by retention: say so instead of a silent gap.
                reset = Some(reset_message(seq, floor, head));
                head
            } else {
                seq
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_since",
                "since must be a sequence number ≥ 0",
            ));
        }
        None => head,
    };
    // A plain HTTP request (no upgrade) gets a problem document like every other bad request.
    let ws = ws.map_err(|rejection| {
        ApiError::bad_request(
            "websocket_upgrade_required",
            format!(
                "this endpoint speaks WebSocket only: {}",
                rejection.body_text()
            ),
        )
    })?;
    let hub = Arc::clone(&state.realtime);
    hub.ensure_listening().await;
    let store = Arc::clone(&state.store);
    Ok(ws.on_upgrade(move |socket| run(socket, store, hub, tenant, calendar, start, reset)))
}

fn message(change: &Change) -> String {
    crate::realtime::message_json(change).to_string()
}

/// The first message of a stream whose `since` is older than the retention window: entries after it may
/// be gone, so the client must re-read its state through the API; the stream continues after `seq`.
fn reset_message(since: i64, floor: i64, head: i64) -> String {
    serde_json::json!({
        "seq": head,
        "type": "stream.reset",
        "calendar_id": null,
        "subject_id": null,
        "data": {
            "reason": "since_expired",
            "since": since,
            "purged_through": floor,
        },
        "at": jiff::Timestamp::now().to_string(),
    })
    .to_string()
}

async fn run(
    mut socket: WebSocket,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    tenant: TenantId,
    calendar: Option<CalendarId>,
    mut last: i64,
    reset: Option<String>,
) {
    if let Some(reset) = reset
        && socket.send(Message::Text(reset.into())).await.is_err()
    {
        return;
    }
    let mut bell = hub.subscribe();
    let mut rescan = tokio::time::interval(hub.rescan_interval());
    loop {
        // Drain everything after `last`; the first pass is the replay.
        loop {
            let batch = match store.list_changes(tenant, last, calendar, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "change stream read failed; closing the stream");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            };
            let full = batch.len() as u32 == BATCH;
            for change in &batch {
                if socket
                    .send(Message::Text(message(change).into()))
                    .await
                    .is_err()
                {
                    return;
                }
                last = change.seq;
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            changed = bell.changed() => if changed.is_err() { return; },
            _ = rescan.tick() => {}
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pings are answered by axum; anything else from the client is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}
