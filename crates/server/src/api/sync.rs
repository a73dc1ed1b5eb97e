//! Forcing a sync (answered at once with a run id; the run proceeds in the background through the engine)
//! and the system log of sync runs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use calbridge_store::{ConnectionId, SyncRun, SyncRunId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, ConnectionsManage, EventsRead};
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::syncing::{self, SyncContext};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_sync))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

/// The shared sync context for this server's state.
pub fn context(state: &AppState) -> Result<SyncContext, ApiError> {
    Ok(SyncContext {
        store: state.store.clone(),
        master_key: state.master_key.clone(),
        http: syncing::http_client(&state.config).map_err(ApiError::internal)?,
        engine: state.config.sync.engine(),
        providers: syncing::ProviderSettings::from_config(&state.config),
    })
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// One connection; every active connection of the tenant when absent.
    #[serde(default)]
    pub connection_id: Option<String>,
    /// A full reconciliation (both sides listed completely) instead of an incremental sync.
    #[serde(default)]
    pub full: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncStarted {
    pub run_id: String,
}

/// One sync run: the system log's entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub connection_id: Option<String>,
    pub full: bool,
    /// `running`, `succeeded`, `failed` or `partial`.
    pub status: String,
    /// Executed actions by kind (`create_local`, `update_remote`…) and `conflicts`.
    #[schema(value_type = Object)]
    pub counts: serde_json::Value,
    /// HTTP requests made to the providers (retries and redirects included).
    pub requests: i64,
    /// Bytes sent to and received from the providers (headers and decoded bodies).
    pub bytes: i64,
    /// Each failing item or link with its cause.
    #[schema(value_type = Vec<Object>)]
    pub errors: serde_json::Value,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

pub fn run_view(run: SyncRun) -> RunView {
    RunView {
        id: run.id.to_string(),
        connection_id: run.connection_id.map(|c| c.to_string()),
        full: run.full,
        status: run.status.to_string(),
        counts: serde_json::from_str(&run.counts_json).unwrap_or(serde_json::json!({})),
        requests: run.requests,
        bytes: run.bytes,
        errors: serde_json::from_str(&run.errors_json).unwrap_or(serde_json::json!([])),
        started_at: run.started_at.to_string(),
        finished_at: run.finished_at.map(|t| t.to_string()),
        duration_ms: run
            .finished_at
            .map(|f| f.duration_since(run.started_at).as_millis() as i64),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this connection's runs.
    pub connection_id: Option<String>,
    /// At most this many, newest first (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Force a sync now. Answers at once with the run's id; poll `GET …/sync/runs/{id}`.
#[utoipa::path(post, path = "/v1/calendar/sync", tag = "sync",
    security(("api_key" = [])),
    request_body = SyncRequest,
    responses((status = 202, body = SyncStarted), CommonErrors))]
pub async fn start_sync(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SyncRequest>,
) -> Result<Response, ApiError> {
    let tenant = auth.principal().tenant;
    let connection: Option<ConnectionId> = match &request.connection_id {
        Some(id) => Some(parse_id(id, "connection")?),
        None => None,
    };
    let ctx = context(&state)?;
    let run = syncing::start_run(ctx.store.as_ref(), tenant, connection, request.full)
        .await
        .map_err(|e| match e {
            syncing::SyncServiceError::Store(e) => store_error("connection", e),
            other => ApiError::internal(other),
        })?;
    let run_id = run.id;
    let full = request.full;
    let hub = std::sync::Arc::clone(&state.realtime);
    tokio::spawn(async move {
        if let Err(e) = syncing::run_sync(&ctx, tenant, run_id, connection, full, &()).await {
            tracing::warn!(run = %run_id, error = %e, "sync run failed");
            syncing::fail_run(ctx.store.as_ref(), tenant, run_id, &e.to_string()).await;
        }
        // The run appended to the change stream (imports, conflicts, `sync.finished`): wake the streams
        // and the webhook planner now rather than at their next rescan.
        hub.ring().await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncStarted {
            run_id: run_id.to_string(),
        }),
    )
        .into_response())
}

/// The system log: sync runs, newest first.
#[utoipa::path(get, path = "/v1/calendar/sync/runs", tag = "sync",
    security(("api_key" = [])),
    params(RunsQuery),
    responses((status = 200, body = RunList), CommonErrors))]
pub async fn list_runs(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let tenant = auth.principal().tenant;
    let connection: Option<ConnectionId> = match &query.connection_id {
        Some(id) => Some(parse_id(id, "connection")?),
        None => None,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let runs = state
        .store
        .list_sync_runs(tenant, connection, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(RunList {
        items: runs.into_iter().map(run_view).collect(),
    }))
}

/// One sync run.
#[utoipa::path(get, path = "/v1/calendar/sync/runs/{id}", tag = "sync",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunView), CommonErrors))]
pub async fn get_run(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let tenant = auth.principal().tenant;
    let id: SyncRunId = parse_id(&id, "sync run")?;
    let run = state
        .store
        .get_sync_run(tenant, id)
        .await
        .map_err(|e| store_error("sync run", e))?;
    Ok(Json(run_view(run)))
}
