//! The audit log: every write to calendars, events and keys (and later conflicts and connections).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, store_error};
use crate::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::ApiError;
use crate::extract::QueryParams;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Position in the tenant's log; increases with every entry.
    pub seq: i64,
    /// Who: `key:<prefix>`, `system`, `sync:<connection>`.
    pub actor: String,
    /// What, dotted: `event.created`, `key.revoked`…
    pub action: String,
    /// The id of the object acted on.
    pub subject: String,
    pub details: serde_json::Value,
    pub at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The tenant's audit log, newest first.
#[utoipa::path(get, path = "/v1/calendar/audit", tag = "audit",
    security(("api_key" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), CommonErrors))]
pub async fn list_audit(
    auth: Authorized<Admin>,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 500",
        ));
    }
    let before = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(text.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor this endpoint returned",
            )
        })?),
    };
    let entries = state
        .store
        .list_audit(auth.principal().tenant, before, limit + 1)
        .await
        .map_err(|e| store_error("audit log", e))?;
    let more = entries.len() > limit as usize;
    let items: Vec<AuditEntryView> = entries
        .into_iter()
        .take(limit as usize)
        .map(|e| AuditEntryView {
            seq: e.seq,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            details: serde_json::from_str(&e.details_json).unwrap_or(serde_json::Value::Null),
            at: e.at.to_string(),
        })
        .collect();
    let next_cursor = if more {
        items.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}
