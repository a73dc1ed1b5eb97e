//! Connections to providers (DESIGN §4.1): create (credentials sealed under the master key, one link per
//! selected remote calendar), read, update, delete, and "Test Connection".

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use calbridge_engine::SyncOptions;
use calbridge_providers::{Diagnosis, DiagnosisKind};
use calbridge_store::{
    CalendarId, Connection, ConnectionId, ConnectionStatus, ConnectionUpdate, Link, NewCalendar,
    NewConnection, NewLink, Provider,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, audit, if_match, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, ConnectionsManage};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::syncing::{self, StoredCredentials, SyncServiceError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(
            get_connection,
            update_connection,
            delete_connection
        ))
        .routes(routes!(test_connection))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkView {
    pub id: String,
    pub remote_calendar_id: String,
    pub remote_name: Option<String>,
    /// `active`, `suspect` (stopped by the deletion guard) or `error`.
    pub status: String,
    pub status_reason: Option<String>,
    pub last_full_sync_at: Option<String>,
}

impl From<Link> for LinkView {
    fn from(l: Link) -> Self {
        Self {
            id: l.id.to_string(),
            remote_calendar_id: l.remote_calendar_id,
            remote_name: l.remote_name,
            status: l.status.to_string(),
            status_reason: l.status_reason,
            last_full_sync_at: l.last_full_sync_at.map(|t| t.to_string()),
        }
    }
}

/// A connection as the API shows it; credentials are never shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub provider: String,
    pub name: String,
    pub calendar_id: String,
    /// `active`, `needs_auth`, `needs_reauth`, `error` or `paused`.
    pub status: String,
    pub status_reason: Option<String>,
    /// The connection's sync options (DESIGN §3).
    #[schema(value_type = Object)]
    pub sync: serde_json::Value,
    pub links: Vec<LinkView>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

fn view(connection: Connection, links: Vec<Link>) -> ConnectionView {
    ConnectionView {
        id: connection.id.to_string(),
        provider: connection.provider.to_string(),
        name: connection.name,
        calendar_id: connection.calendar_id.to_string(),
        status: connection.status.to_string(),
        status_reason: connection.status_reason,
        sync: serde_json::from_str(&connection.sync_options_json)
            .unwrap_or(serde_json::Value::Null),
        links: links.into_iter().map(LinkView::from).collect(),
        version: connection.version,
        created_at: connection.created_at.to_string(),
        updated_at: connection.updated_at.to_string(),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionList {
    pub items: Vec<ConnectionView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsInput {
    /// CalDAV server (root, principal, home or calendar) or ICS feed address.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    /// `caldav`, `ics`, `microsoft` or `google`.
    pub provider: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The local calendar to keep in step; a new one is made when absent.
    #[serde(default)]
    pub calendar_id: Option<String>,
    #[serde(default)]
    pub credentials: Option<CredentialsInput>,
    /// Remote calendar ids or hrefs to link; all of them when absent.
    #[serde(default)]
    pub remote_calendars: Option<Vec<String>>,
    /// Sync options (DESIGN §3); absent keys take the defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub sync: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub sync: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiagnosisView {
    /// `ok`, `invalid_credentials`, `missing_permission`, `unreachable`, `tls_failure`, `timeout`,
    /// `service_down`, `rate_limited`, `not_a_calendar_server`, `not_found`, `blocked`, `invalid_configuration`.
    pub kind: String,
    pub message: String,
    /// Remote calendars seen when the test succeeded.
    pub calendars: Vec<String>,
}

fn diagnosis_view(d: &Diagnosis) -> DiagnosisView {
    DiagnosisView {
        kind: serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        message: d.message.clone(),
        calendars: d
            .calendars
            .iter()
            .map(|c| c.id.as_str().to_owned())
            .collect(),
    }
}

fn validate_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "name must be 1 to 200 characters",
        ));
    }
    Ok(name)
}

fn validate_sync(sync: Option<serde_json::Value>) -> Result<String, ApiError> {
    let value = sync.unwrap_or_else(|| serde_json::json!({}));
    if !value.is_object() {
        return Err(ApiError::unprocessable(
            "invalid_sync_options",
            "sync must be an object",
        ));
    }
    let json = value.to_string();
    SyncOptions::parse(&json)
        .map_err(|e| ApiError::unprocessable("invalid_sync_options", e.to_string()))?;
    if let Some(frequency) = value.get("frequency") {
        let ok = frequency
            .as_str()
            .is_some_and(|f| crate::config::HumanDuration::parse(f).is_ok());
        if !ok {
            return Err(ApiError::unprocessable(
                "invalid_sync_options",
                "sync.frequency must be a duration such as `15m` or `PT15M`",
            ));
        }
    }
    Ok(json)
}

fn service_error(e: SyncServiceError) -> ApiError {
    match e {
        SyncServiceError::Store(e) => store_error("connection", e),
        SyncServiceError::Unsupported(p) => ApiError::unprocessable(
            "provider_not_supported",
            format!("the `{p}` provider is not supported by this server yet; use caldav or ics"),
        ),
        SyncServiceError::Provider(e) => {
            ApiError::unprocessable("invalid_credentials", Diagnosis::from_error(&e).message)
        }
        other => ApiError::internal(other),
    }
}

async fn find(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    id: &str,
) -> Result<Connection, ApiError> {
    let id: ConnectionId = parse_id(id, "connection")?;
    state
        .store
        .get_connection(tenant, id)
        .await
        .map_err(|e| store_error("connection", e))
}

/// List the tenant's connections.
#[utoipa::path(get, path = "/v1/calendar/connections", tag = "connections",
    security(("api_key" = [])),
    responses((status = 200, body = ConnectionList), CommonErrors))]
pub async fn list_connections(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
) -> Result<Json<ConnectionList>, ApiError> {
    let tenant = auth.principal().tenant;
    let connections = state
        .store
        .list_connections(tenant)
        .await
        .map_err(ApiError::internal)?;
    let mut items = Vec::with_capacity(connections.len());
    for c in connections {
        let links = state
            .store
            .list_links(tenant, c.id)
            .await
            .map_err(ApiError::internal)?;
        items.push(view(c, links));
    }
    Ok(Json(ConnectionList { items }))
}

/// Create a connection: its credentials are sealed at rest, and one link is made per selected remote
/// calendar. When the provider cannot be reached the connection is kept with status `error`.
#[utoipa::path(post, path = "/v1/calendar/connections", tag = "connections",
    security(("api_key" = [])),
    request_body = ConnectionInput,
    responses((status = 201, body = ConnectionView), CommonErrors))]
pub async fn create_connection(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<ConnectionInput>,
) -> Result<Response, ApiError> {
    let principal = auth.principal();
    let tenant = principal.tenant;
    let provider = Provider::parse(&input.provider).map_err(|_| {
        ApiError::unprocessable(
            "invalid_provider",
            "provider must be caldav, ics, microsoft or google",
        )
    })?;
    if matches!(provider, Provider::Microsoft | Provider::Google) {
        return Err(service_error(SyncServiceError::Unsupported(
            provider.as_str(),
        )));
    }
    let name = validate_name(&input.name)?;
    let sync_json = validate_sync(input.sync)?;
    let Some(credentials) = input.credentials else {
        return Err(ApiError::unprocessable(
            "missing_credentials",
            "credentials.url is required for caldav and ics connections",
        ));
    };
    let credentials = StoredCredentials {
        url: credentials.url.trim().to_owned(),
        username: credentials.username,
        password: credentials.password,
    };
    let http = syncing::http_client(&state.config).map_err(ApiError::internal)?;
    // Refuses malformed URLs before anything is stored.
    let remote = syncing::provider_for(&http, provider, &credentials).map_err(service_error)?;

    let calendar_id = match input.calendar_id {
        Some(id) => {
            let id: CalendarId = parse_id(&id, "calendar")?;
            state
                .store
                .get_calendar(tenant, id)
                .await
                .map_err(|e| store_error("calendar", e))?
                .id
        }
        None => {
            state
                .store
                .create_calendar(
                    tenant,
                    NewCalendar {
                        name: name.clone(),
                        time_zone: "UTC".into(),
                        owner: None,
                    },
                )
                .await
                .map_err(|e| store_error("calendar", e))?
                .id
        }
    };
    let sealed = syncing::seal(&state.master_key, &credentials).map_err(ApiError::internal)?;
    let connection = state
        .store
        .create_connection(
            tenant,
            NewConnection {
                provider,
                name,
                calendar_id,
                credentials: Some(sealed),
                sync_options_json: sync_json,
                status: ConnectionStatus::Active,
            },
        )
        .await
        .map_err(|e| store_error("connection", e))?;

    let mut links = Vec::new();
    let connection = match remote.list_calendars().await {
        Ok(calendars) => {
            let wanted = input.remote_calendars.as_deref();
            for calendar in calendars.into_iter().filter(|c| c.holds_events()) {
                let id = calendar.id.as_str();
                if wanted.is_some_and(|w| !w.iter().any(|x| x == id || id.ends_with(x.as_str()))) {
                    continue;
                }
                let link = state
                    .store
                    .create_link(
                        tenant,
                        NewLink {
                            connection_id: connection.id,
                            remote_calendar_id: id.to_owned(),
                            remote_name: Some(calendar.name.clone()),
                        },
                    )
                    .await
                    .map_err(|e| store_error("link", e))?;
                links.push(link);
            }
            connection
        }
        Err(e) => {
            let diagnosis = Diagnosis::from_error(&e);
            let status = if diagnosis.kind == DiagnosisKind::InvalidCredentials {
                ConnectionStatus::NeedsReauth
            } else {
                ConnectionStatus::Error
            };
            state
                .store
                .set_connection_status(tenant, connection.id, status, Some(&diagnosis.message))
                .await
                .map_err(ApiError::internal)?
        }
    };
    audit(
        &state,
        principal,
        "connection.created",
        connection.id,
        serde_json::json!({"provider": provider.as_str(), "links": links.len()}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(connection, links))).into_response())
}

/// One connection with its links.
#[utoipa::path(get, path = "/v1/calendar/connections/{id}", tag = "connections",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Connection id")),
    responses((status = 200, body = ConnectionView), CommonErrors))]
pub async fn get_connection(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let tenant = auth.principal().tenant;
    let connection = find(&state, tenant, &id).await?;
    let links = state
        .store
        .list_links(tenant, connection.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(view(connection, links)))
}

/// Rename a connection or change its sync options (`If-Match` optional).
#[utoipa::path(patch, path = "/v1/calendar/connections/{id}", tag = "connections",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Connection id")),
    request_body = ConnectionPatch,
    responses((status = 200, body = ConnectionView), CommonErrors))]
pub async fn update_connection(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<ConnectionPatch>,
) -> Result<Json<ConnectionView>, ApiError> {
    let principal = auth.principal();
    let tenant = principal.tenant;
    let connection = find(&state, tenant, &id).await?;
    let expected = if_match(&headers)?;
    let name = match patch.name {
        Some(name) => validate_name(&name)?,
        None => connection.name.clone(),
    };
    let sync_options_json = match patch.sync {
        Some(sync) => validate_sync(Some(sync))?,
        None => connection.sync_options_json.clone(),
    };
    let updated = state
        .store
        .update_connection(
            tenant,
            connection.id,
            expected,
            ConnectionUpdate {
                name,
                sync_options_json,
            },
        )
        .await
        .map_err(|e| store_error("connection", e))?;
    audit(
        &state,
        principal,
        "connection.updated",
        updated.id,
        serde_json::json!({}),
    )
    .await?;
    let links = state
        .store
        .list_links(tenant, updated.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(view(updated, links)))
}

/// Delete a connection and its links (local events stay).
#[utoipa::path(delete, path = "/v1/calendar/connections/{id}", tag = "connections",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Connection id")),
    responses((status = 204, description = "Deleted"), CommonErrors))]
pub async fn delete_connection(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let principal = auth.principal();
    let tenant = principal.tenant;
    let connection = find(&state, tenant, &id).await?;
    state
        .store
        .delete_connection(tenant, connection.id)
        .await
        .map_err(|e| store_error("connection", e))?;
    audit(
        &state,
        principal,
        "connection.deleted",
        connection.id,
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// "Test Connection": reaches the provider with the stored credentials and says what is wrong, if
/// anything. The connection's status follows the diagnosis.
#[utoipa::path(post, path = "/v1/calendar/connections/{id}/test", tag = "connections",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Connection id")),
    responses((status = 200, body = DiagnosisView), CommonErrors))]
pub async fn test_connection(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DiagnosisView>, ApiError> {
    let principal = auth.principal();
    let tenant = principal.tenant;
    let connection = find(&state, tenant, &id).await?;
    let http = syncing::http_client(&state.config).map_err(ApiError::internal)?;
    let diagnosis = match syncing::open(&state.master_key, &connection)
        .and_then(|c| syncing::provider_for(&http, connection.provider, &c))
    {
        Ok(provider) => provider.test_connection().await,
        Err(SyncServiceError::Provider(e)) => Diagnosis::from_error(&e),
        Err(e) => return Err(service_error(e)),
    };
    let (status, reason) = match diagnosis.kind {
        DiagnosisKind::Ok => (ConnectionStatus::Active, None),
        DiagnosisKind::InvalidCredentials => (
            ConnectionStatus::NeedsReauth,
            Some(diagnosis.message.as_str()),
        ),
        _ => (ConnectionStatus::Error, Some(diagnosis.message.as_str())),
    };
    if connection.status != ConnectionStatus::Paused {
        state
            .store
            .set_connection_status(tenant, connection.id, status, reason)
            .await
            .map_err(ApiError::internal)?;
    }
    let view = diagnosis_view(&diagnosis);
    audit(
        &state,
        principal,
        "connection.tested",
        connection.id,
        serde_json::json!({"kind": view.kind}),
    )
    .await?;
    Ok(Json(view))
}
