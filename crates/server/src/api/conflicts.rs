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
    /// The resolution in progress on an open conflict: decided, begun (its first write may have been
    /// made) and not finished, because it is running right now or was interrupted (process killed,
    /// provider down). Null when none is, and on closed conflicts. Sending the same decision again
    /// finishes it; another decision is refused with 409 `resolution_in_progress` until it is older
    /// than the engine's `resume_resolutions_after` (10 minutes), after which a sync finishes it.
    pub resolving: Option<ResolvingView>,
}

/// A resolution in progress (see [`ConflictView::resolving`]).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResolvingView {
    /// The option decided: `keep_local`, `keep_remote`, `keep_both`, `merge`, `delete_everywhere` or
    /// `restore`.
    pub option: String,
    /// Who decided (the `resolved_by` the conflict gets, whoever finishes it).
    pub decided_by: String,
    /// When the resolution was decided and began (RFC 3339); unchanged when it is taken up again.
    pub since: String,
    /// When a retry of the same decision or a sync last took it up again (RFC 3339); null when
    /// nobody has. The later of `since` and this is when it last (re)started: until
    /// `resume_resolutions_after` (10 minutes) past that it may be running right now, after that it
    /// has stopped and waits for a sync or for a person to decide again.
    pub resumed_at: Option<String>,
    /// The `merged` body of a `merge`, as sent; null for the other options.
    #[schema(value_type = Option<Object>)]
    pub merged: Option<serde_json::Value>,
}

impl From<calbridge_engine::Resolving> for ResolvingView {
    fn from(r: calbridge_engine::Resolving) -> Self {
        Self {
            option: r.option_name(),
            decided_by: r.actor,
            since: r.started_at.to_string(),
            resumed_at: r.resumed_at.map(|t| t.to_string()),
            merged: r.merged,
        }
    }
}

fn json_or_null(text: Option<&str>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null)
}

pub fn conflict_view(c: Conflict) -> ConflictView {
    let resolving = calbridge_engine::Resolving::in_progress(&c).map(ResolvingView::from);
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
        resolving,
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
            link_id: None,
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
    /// For `merge`: each conflicting field decided, keyed by field name (`summary`, `description`,
    /// `location`, `status`, `transparency`, `start`, `end`, `rrule`) or by path as `fields` lists it
    /// (`master/SUMMARY`); the value is a new text (only for summary, description, location, comment,
    /// status, transparency, class), `null` to remove it, or `{"from": "local"}` / `{"from": "remote"}`.
    /// Fields changed on one side only merge as they are.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub merged: Option<serde_json::Value>,
}

/// Apply a resolution to both systems: `keep_local`, `keep_remote`, `keep_both` (the remote version
/// becomes a new event on both sides, linked), `merge` (the clean merge with each conflicting field
/// decided by `merged`), `delete_everywhere` and `restore` (deletion conflicts); for time conflicts
/// `keep_both` accepts the overlap. Writes are conditional (`If-Match` on the provider, the series
/// version locally) and read back; the conflict closes only then. When either side changed after the
/// conflict was recorded the answer is 409 `conflict_changed` and nothing is overwritten; an option the
/// conflict does not offer is 422 `option_not_applicable`; a conflict already closed (resolved by
/// someone else, by a sync finishing an interrupted resolution, or superseded) is 409
/// `already_resolved`. When the conflict's connection was deleted,
/// options that need the provider answer 409 `connection_deleted`; `keep_local` (the local version stays
/// as it is) and `delete_everywhere` (the local event of one deleted remotely goes; one deleted locally
/// stays deleted) still apply to the local data.
///
/// While a resolution is in progress (`resolving`), sending the same decision again finishes it;
/// another option (or a `merge` with another `merged`) answers 409 `resolution_in_progress` naming
/// the pending option, who decided it and since when, because it may still be running and two
/// decisions must not write one event. Once it is older than the engine's `resume_resolutions_after`
/// (10 minutes) it has stopped: a sync finishes it, and another decision is accepted first if it has
/// written nothing yet (its saved `keep_both` copy is removed; a side it wrote answers
/// `conflict_changed`). A pending `restore` is only ever finished.
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
        input.merged.as_ref(),
    )
    .await?;
    Ok(Json(conflict_view(resolved)))
}

fn failure(e: calbridge_engine::ResolveFailure) -> ApiError {
    use calbridge_engine::ResolveFailure as F;
    let detail = e.to_string();
    match e {
        F::Refused(_) => ApiError::unprocessable(e.code(), detail),
        F::Changed(_) => ApiError::ConflictChanged(detail),
        F::AlreadyResolved | F::RemoteGone { .. } | F::InProgress { .. } => {
            ApiError::StateConflict {
                code: e.code(),
                detail,
            }
        }
        F::Provider(_) => ApiError::Unavailable(detail),
        F::Store(calbridge_store::StoreError::NotFound { .. }) => {
            ApiError::NotFound("conflict".into())
        }
        other => ApiError::internal(other),
    }
}

/// Applies `option` to a conflict (the API's and the CLI's one implementation): opens the conflict's
/// provider when it needs one and hands over to the engine's resolution.
pub async fn resolve(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    actor: &str,
    id: ConflictId,
    option: &str,
    merged: Option<&serde_json::Value>,
) -> Result<Conflict, ApiError> {
    let conflict = state
        .store
        .get_conflict(tenant, id)
        .await
        .map_err(|e| store_error("conflict", e))?;
    let provider = match (
        calbridge_engine::needs_provider(&conflict),
        conflict.connection_id,
    ) {
        (true, Some(connection_id)) if conflict.state == ConflictState::Open => {
            let connection = match state.store.get_connection(tenant, connection_id).await {
                Ok(connection) => Some(connection),
                // Deleted since the conflict was read: the engine answers for a remote side that
                // is gone (`connection_deleted`, or the local-only options).
                Err(calbridge_store::StoreError::NotFound { .. }) => None,
                Err(e) => return Err(store_error("connection", e)),
            };
            let Some(connection) = connection else {
                return engine_resolve(state, tenant, actor, id, option, merged, None).await;
            };
            let ctx = super::sync::context(state)?;
            let provider =
                syncing::open_provider(&ctx, &connection)
                    .await
                    .map_err(|e| match e {
                        e @ syncing::SyncServiceError::NotAuthorized { .. } => {
                            ApiError::unprocessable("connection_not_authorized", e.to_string())
                        }
                        e => ApiError::internal(e),
                    })?;
            Some(provider)
        }
        _ => None,
    };
    engine_resolve(
        state,
        tenant,
        actor,
        id,
        option,
        merged,
        provider.as_deref(),
    )
    .await
}

async fn engine_resolve(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    actor: &str,
    id: ConflictId,
    option: &str,
    merged: Option<&serde_json::Value>,
    provider: Option<&dyn calbridge_providers::CalendarProvider>,
) -> Result<Conflict, ApiError> {
    let config = calbridge_engine::EngineConfig::default();
    calbridge_engine::resolve_conflict(calbridge_engine::Resolve {
        store: state.store.as_ref(),
        provider,
        tenant,
        conflict: id,
        option,
        merged,
        actor,
        config: &config,
        now: jiff::Timestamp::now(),
    })
    .await
    .map_err(failure)
}
