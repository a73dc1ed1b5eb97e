//! Conflicts the sync recorded (DESIGN §4.1 shape): both versions, the common ancestor, the differing
//! fields and the resolution options that apply.

use axum::Json;
use axum::extract::{Path, State};
use calbridge_store::{Conflict, ConflictFilter, ConflictId, ConflictKind, ConflictState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, ConflictsResolve, EventsRead};
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::syncing;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conflicts))
        .routes(routes!(get_conflict))
        .routes(routes!(resolve_conflict))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictView {
    pub id: String,
    /// `update`, `deletion`, `time` or `identity`.
    pub kind: String,
    /// `open` or `resolved`.
    pub state: String,
    pub event_uid: String,
    pub connection_id: Option<String>,
    pub link_id: Option<String>,
    pub series_id: Option<String>,
    /// The local version (null when deleted locally).
    #[schema(value_type = Object)]
    pub local: serde_json::Value,
    /// The remote version (null when deleted remotely).
    #[schema(value_type = Object)]
    pub remote: serde_json::Value,
    /// The version both sides last agreed on.
    #[schema(value_type = Object)]
    pub base: serde_json::Value,
    /// The fields that differ.
    #[schema(value_type = Vec<Object>)]
    pub fields: serde_json::Value,
    /// The resolution options that apply.
    #[schema(value_type = Vec<String>)]
    pub options: serde_json::Value,
    pub detected_at: String,
    pub resolved_at: Option<String>,
    #[schema(value_type = Object)]
    pub resolution: serde_json::Value,
    pub resolved_by: Option<String>,
}

fn json_or_null(text: Option<&str>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null)
}

pub fn conflict_view(c: Conflict) -> ConflictView {
    ConflictView {
        id: c.id.to_string(),
        kind: c.kind.to_string(),
        state: c.state.to_string(),
        event_uid: c.event_uid,
        connection_id: c.connection_id.map(|x| x.to_string()),
        link_id: c.link_id.map(|x| x.to_string()),
        series_id: c.series_id.map(|x| x.to_string()),
        local: json_or_null(c.local_json.as_deref()),
        remote: json_or_null(c.remote_json.as_deref()),
        base: json_or_null(c.base_json.as_deref()),
        fields: json_or_null(Some(&c.fields_json)),
        options: json_or_null(Some(&c.options_json)),
        detected_at: c.detected_at.to_string(),
        resolved_at: c.resolved_at.map(|t| t.to_string()),
        resolution: json_or_null(c.resolution_json.as_deref()),
        resolved_by: c.resolved_by,
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictList {
    pub items: Vec<ConflictView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    /// `open` (default), `resolved` or `all`.
    pub state: Option<String>,
    /// `update`, `deletion`, `time` or `identity`.
    pub kind: Option<String>,
    /// Only this connection's conflicts.
    pub connection_id: Option<String>,
}

impl ConflictQuery {
    pub fn filter(&self) -> Result<ConflictFilter, ApiError> {
        let state = match self.state.as_deref() {
            None | Some("open") => Some(ConflictState::Open),
            Some("all") => None,
            Some(other) => Some(ConflictState::parse(other).map_err(|_| {
                ApiError::bad_request("invalid_query", "state must be open, resolved or all")
            })?),
        };
        let kind = match self.kind.as_deref() {
            None => None,
            Some(k) => Some(ConflictKind::parse(k).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "kind must be update, deletion, time or identity",
                )
            })?),
        };
        let connection_id = match self.connection_id.as_deref() {
            None => None,
            Some(id) => Some(id.parse().map_err(|_| {
                ApiError::bad_request("invalid_query", "connection_id is not a connection id")
            })?),
        };
        Ok(ConflictFilter {
            state,
            connection_id,
            kind,
        })
    }
}

/// Conflicts, unresolved ones by default.
#[utoipa::path(get, path = "/v1/calendar/conflicts", tag = "conflicts",
    security(("api_key" = [])),
    params(ConflictQuery),
    responses((status = 200, body = ConflictList), CommonErrors))]
pub async fn list_conflicts(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ConflictQuery>,
) -> Result<Json<ConflictList>, ApiError> {
    let tenant = auth.principal().tenant;
    let filter = query.filter()?;
    let conflicts = state
        .store
        .list_conflicts(tenant, &filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ConflictList {
        items: conflicts.into_iter().map(conflict_view).collect(),
    }))
}

/// One conflict.
#[utoipa::path(get, path = "/v1/calendar/conflicts/{id}", tag = "conflicts",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Conflict id")),
    responses((status = 200, body = ConflictView), CommonErrors))]
pub async fn get_conflict(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConflictView>, ApiError> {
    let tenant = auth.principal().tenant;
    let id: ConflictId = parse_id(&id, "conflict")?;
    let conflict = state
        .store
        .get_conflict(tenant, id)
        .await
        .map_err(|e| store_error("conflict", e))?;
    Ok(Json(conflict_view(conflict)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveInput {
    /// `keep_local`, `keep_remote`, `keep_both`, `merge`, `delete_everywhere` or `restore`; it must be one
    /// of the conflict's `options`.
    pub option: String,
    /// The merged version, for `merge`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub merged: Option<serde_json::Value>,
}

/// The side of a conflict as the engine stored it.
#[derive(Debug, Deserialize)]
struct StoredSide {
    id: Option<String>,
    version: Option<String>,
    state: Option<serde_json::Value>,
}

fn side(json: Option<&str>) -> Option<StoredSide> {
    json.and_then(|j| serde_json::from_str(j).ok())
}

fn changed(what: &str) -> ApiError {
    ApiError::ConflictChanged(format!(
        "the {what} version changed again after this conflict was recorded; nothing was overwritten. Sync again and resolve the conflict it records"
    ))
}

fn unsupported(option: &str) -> ApiError {
    ApiError::unprocessable(
        "option_not_supported",
        format!("`{option}` cannot be applied by this server yet; keep_local and keep_remote can"),
    )
}

/// Apply a resolution to both systems: the local series and the provider's item are written
/// conditionally (the provider with `If-Match`), then read back. When either side changed after the
/// conflict was recorded the answer is 409 `conflict_changed` and nothing is written.
#[utoipa::path(post, path = "/v1/calendar/conflicts/{id}/resolve", tag = "conflicts",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Conflict id")),
    request_body = ResolveInput,
    responses((status = 200, body = ConflictView), CommonErrors))]
pub async fn resolve_conflict(
    auth: Authorized<ConflictsResolve>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<ResolveInput>,
) -> Result<Json<ConflictView>, ApiError> {
    let principal = auth.principal();
    let id: ConflictId = parse_id(&id, "conflict")?;
    let resolved = resolve(
        &state,
        principal.tenant,
        &principal.actor(),
        id,
        &input.option,
    )
    .await?;
    Ok(Json(conflict_view(resolved)))
}

/// Applies `option` to a conflict (the API's and the CLI's one implementation); see [`resolve_conflict`].
pub async fn resolve(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    actor: &str,
    id: ConflictId,
    option: &str,
) -> Result<Conflict, ApiError> {
    use calbridge_providers::{CalendarId as RemoteCalendarId, ItemContent, ReadItem, RemoteId};

    let input = ResolveInput {
        option: option.to_owned(),
        merged: None,
    };
    let conflict = state
        .store
        .get_conflict(tenant, id)
        .await
        .map_err(|e| store_error("conflict", e))?;
    if conflict.state != ConflictState::Open {
        return Err(ApiError::Conflict(
            "this conflict is already resolved".into(),
        ));
    }
    let options: Vec<String> = serde_json::from_str(&conflict.options_json).unwrap_or_default();
    if !options.iter().any(|o| o == &input.option) {
        return Err(ApiError::unprocessable(
            "option_not_applicable",
            format!(
                "`{}` does not apply to this conflict; it offers {options:?}",
                input.option
            ),
        ));
    }
    if !matches!(input.option.as_str(), "keep_local" | "keep_remote") {
        return Err(unsupported(&input.option));
    }
    let (Some(connection_id), Some(link_id), Some(series_id)) =
        (conflict.connection_id, conflict.link_id, conflict.series_id)
    else {
        return Err(unsupported(&input.option));
    };
    let local_side = side(conflict.local_json.as_deref());
    let remote_side = side(conflict.remote_json.as_deref());
    let (Some(local_side), Some(remote_side)) = (local_side, remote_side) else {
        return Err(unsupported(&input.option));
    };
    let (Some(remote_id), Some(remote_version)) = (remote_side.id, remote_side.version) else {
        return Err(unsupported(&input.option));
    };

    let store = state.store.as_ref();
    let connection = store
        .get_connection(tenant, connection_id)
        .await
        .map_err(|e| store_error("connection", e))?;
    let link = store
        .get_link(tenant, link_id)
        .await
        .map_err(|e| store_error("link", e))?;
    let calendar = store
        .get_calendar(tenant, connection.calendar_id)
        .await
        .map_err(|e| store_error("calendar", e))?;
    let floating = jiff::tz::TimeZone::get(&calendar.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let http = syncing::http_client(&state.config).map_err(ApiError::internal)?;
    let provider = syncing::open(&state.master_key, &connection)
        .and_then(|c| syncing::provider_for(&http, connection.provider, &c))
        .map_err(ApiError::internal)?;
    let remote_calendar =
        RemoteCalendarId::parse(link.remote_calendar_id.clone()).map_err(ApiError::internal)?;
    let remote_id = RemoteId::parse(remote_id).map_err(ApiError::internal)?;
    let unavailable = |e: calbridge_providers::ProviderError| {
        ApiError::Unavailable(format!("the provider could not be reached: {e}"))
    };

    // Both sides must still be what the conflict recorded.
    let read_remote = |provider: std::sync::Arc<dyn calbridge_providers::CalendarProvider>| {
        let remote_calendar = remote_calendar.clone();
        let remote_id = remote_id.clone();
        async move {
            let items = provider.read(&remote_calendar, &[remote_id]).await?;
            Ok::<_, calbridge_providers::ProviderError>(items.into_iter().next())
        }
    };
    let current_remote = match read_remote(provider.clone()).await.map_err(unavailable)? {
        Some(ReadItem::Found(item)) => item,
        _ => return Err(changed("remote")),
    };
    if current_remote.etag.as_str() != remote_version {
        return Err(changed("remote"));
    }
    let series = store
        .get_series(tenant, series_id)
        .await
        .map_err(|e| store_error("event", e))?;
    if series.deleted_at.is_some() {
        return Err(changed("local"));
    }
    let parsed = calbridge_engine::Parsed::from_stored(&series).map_err(ApiError::internal)?;
    let local_now = serde_json::to_value(parsed.state(&floating)).map_err(ApiError::internal)?;
    if local_side.state.as_ref() != Some(&local_now) {
        return Err(changed("local"));
    }

    let confirmation = match input.option.as_str() {
        "keep_local" => {
            let content = ItemContent::parse(series.ical.clone()).map_err(ApiError::internal)?;
            let written = provider
                .update(&remote_calendar, &remote_id, &current_remote.etag, &content)
                .await
                .map_err(|e| match e {
                    calbridge_providers::ProviderError::PreconditionFailed => changed("remote"),
                    other => unavailable(other),
                })?;
            // Read back: the provider now holds the local version.
            let back = match read_remote(provider.clone()).await.map_err(unavailable)? {
                Some(ReadItem::Found(item)) => item,
                _ => return Err(ApiError::internal("the written item is gone on read-back")),
            };
            let back_state =
                calbridge_engine::Parsed::from_calendar(back.content.calendar().clone())
                    .map_err(ApiError::internal)?
                    .state(&floating);
            if back_state.snapshot != parsed.state(&floating).snapshot {
                return Err(ApiError::internal(
                    "read-back differs from what was written",
                ));
            }
            serde_json::json!({"remote_etag": written.etag.map(|e| e.as_str().to_owned())})
        }
        _ => {
            // keep_remote: the local series takes the provider's version.
            let remote_parsed =
                calbridge_engine::Parsed::from_calendar(current_remote.content.calendar().clone())
                    .map_err(ApiError::internal)?;
            let storable = calbridge_engine::storable(&remote_parsed.calendar, &floating)
                .map_err(ApiError::internal)?;
            let updated = store
                .update_series(
                    tenant,
                    series.id,
                    series.version,
                    calbridge_store::SeriesUpdate {
                        ical: storable.ical,
                        model_json: storable.model_json,
                        hash: storable.hash.clone(),
                        occurrences: storable.occurrences,
                    },
                )
                .await
                .map_err(|e| match e {
                    calbridge_store::StoreError::PreconditionFailed { .. } => changed("local"),
                    other => ApiError::internal(other),
                })?;
            let back = store
                .get_series(tenant, updated.id)
                .await
                .map_err(ApiError::internal)?;
            if back.hash != storable.hash {
                return Err(ApiError::internal(
                    "read-back differs from what was written",
                ));
            }
            serde_json::json!({"local_version": back.version})
        }
    };

    let resolution = serde_json::json!({"option": input.option, "confirmed": confirmation});
    let resolved = store
        .resolve_conflict(
            tenant,
            conflict.id,
            &resolution.to_string(),
            actor,
            jiff::Timestamp::now(),
        )
        .await
        .map_err(|e| store_error("conflict", e))?;
    store
        .append_audit(
            tenant,
            calbridge_store::NewAuditEntry {
                actor: actor.to_owned(),
                action: "conflict.resolved".into(),
                subject: conflict.id.to_string(),
                details_json: serde_json::json!({"option": input.option, "event_uid": conflict.event_uid, "confirmed": confirmation}).to_string(),
            },
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(resolved)
}
