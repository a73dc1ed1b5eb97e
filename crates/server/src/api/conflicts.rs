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
use crate::auth::{Authorized, EventsRead};
use crate::error::ApiError;
use crate::extract::QueryParams;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conflicts))
        .routes(routes!(get_conflict))
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
