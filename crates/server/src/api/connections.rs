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
use crate::syncing::{self, OAuthTokens, StoredCredentials, SyncServiceError};
use calbridge_providers::oauth::Access;

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
    /// How remote changes reach calbridge: push notifications or polling, and why.
    pub push: PushView,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Microsoft/Google connections just created without a grant: where to send the person to consent
    /// (valid 10 minutes, once; `GET /v1/calendar/oauth/{provider}/authorize` makes a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
}

/// How a connection learns about remote changes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushView {
    /// `notifications` (a provider push channel per link is open) or `polling`.
    pub mode: String,
    /// A sentence saying why, and how often a polled connection is read.
    pub detail: String,
    /// The soonest expiry of the open channels (they are renewed before it).
    pub expires_at: Option<String>,
}

async fn push_view(
    state: &AppState,
    connection: &Connection,
    links: &[Link],
) -> Result<PushView, ApiError> {
    use crate::realtime::channels;
    let frequency = crate::scheduler::frequency_of(
        &connection.sync_options_json,
        state.config.sync.frequency.0,
    );
    if !channels::pushes(connection.provider) {
        let every = crate::config::HumanDuration(frequency.min(state.config.sync.poll_interval.0));
        return Ok(PushView {
            mode: "polling".into(),
            detail: format!(
                "{} has no push notifications; one cheap change check every {every}, a sync when it sees a change",
                connection.provider
            ),
            expires_at: None,
        });
    }
    let mut open = Vec::new();
    for link in links {
        open.extend(
            state
                .store
                .list_push_channels(connection.tenant_id, link.id)
                .await
                .map_err(ApiError::internal)?,
        );
    }
    let every = crate::config::HumanDuration(frequency);
    let (mode, detail) = if state.config.server.public_url.is_none() {
        (
            "polling",
            format!(
                "no public URL is configured (server.public_url), so the provider cannot reach this server; polled every {every}"
            ),
        )
    } else if !links.is_empty() && open.len() >= links.len() {
        (
            "notifications",
            "a push channel is open for every linked calendar".to_owned(),
        )
    } else {
        (
            "polling",
            format!(
                "push channels are being opened ({} of {} so far); polled every {every} meanwhile",
                open.len(),
                links.len()
            ),
        )
    };
    Ok(PushView {
        mode: mode.into(),
        detail,
        expires_at: open
            .iter()
            .map(|c| c.expires_at)
            .min()
            .map(|t| t.to_string()),
    })
}

pub async fn full_view(
    state: &AppState,
    connection: Connection,
    links: Vec<Link>,
) -> Result<ConnectionView, ApiError> {
    let push = push_view(state, &connection, &links).await?;
    Ok(view(connection, links, push))
}

fn view(connection: Connection, links: Vec<Link>, push: PushView) -> ConnectionView {
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
        push,
        version: connection.version,
        created_at: connection.created_at.to_string(),
        updated_at: connection.updated_at.to_string(),
        authorize_url: None,
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionList {
    pub items: Vec<ConnectionView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsInput {
    /// CalDAV server (root, principal, home or calendar) or ICS feed address (caldav, ics).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Microsoft/Google, for an application that obtained the grant itself: a refresh token issued
    /// to this server's OAuth client (and optionally a current access token with its expiry).
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    /// RFC 3339; when the access token expires.
    #[serde(default)]
    pub expires_at: Option<String>,
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
    /// Microsoft/Google: `read_write` (default) or `read_only` (least privilege: `Calendars.Read`,
    /// `calendar.readonly`; the connection then only imports).
    #[serde(default)]
    pub access: Option<String>,
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
        e @ SyncServiceError::NotConfigured(_) => {
            ApiError::unprocessable("provider_not_configured", e.to_string())
        }
        e @ SyncServiceError::NotAuthorized { .. } => {
            ApiError::unprocessable("connection_not_authorized", e.to_string())
        }
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

/// The local calendar a new connection keeps in step: the one named, or a new one named after it.
async fn local_calendar(
    state: &AppState,
    tenant: calbridge_store::TenantId,
    given: Option<String>,
    name: &str,
) -> Result<CalendarId, ApiError> {
    Ok(match given {
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
                        name: name.to_owned(),
                        time_zone: "UTC".into(),
                        owner: None,
                    },
                )
                .await
                .map_err(|e| store_error("calendar", e))?
                .id
        }
    })
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
        items.push(full_view(&state, c, links).await?);
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
    let name = validate_name(&input.name)?;
    let mut sync_json = validate_sync(input.sync)?;
    let ctx = super::sync::context(&state)?;
    // What to store, and (CalDAV/ICS) the provider, checked before anything is written.
    let (credentials, remote, status) = match syncing::oauth_provider(provider) {
        None => {
            if input.access.is_some() {
                return Err(ApiError::unprocessable(
                    "invalid_access",
                    "access applies to microsoft and google connections only",
                ));
            }
            let url = input
                .credentials
                .as_ref()
                .and_then(|c| c.url.as_deref())
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty());
            let (Some(url), Some(credentials)) = (url, input.credentials) else {
                return Err(ApiError::unprocessable(
                    "missing_credentials",
                    "credentials.url is required for caldav and ics connections",
                ));
            };
            let credentials = StoredCredentials {
                url,
                username: credentials.username,
                password: credentials.password,
                oauth: None,
            };
            // Refuses malformed URLs before anything is stored.
            let remote =
                syncing::provider_for(&ctx.http, provider, &credentials).map_err(service_error)?;
            (credentials, Some(remote), ConnectionStatus::Active)
        }
        Some(kind) => {
            let access = match input.access.as_deref() {
                None | Some("read_write") => Access::ReadWrite,
                Some("read_only") => Access::ReadOnly,
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "invalid_access",
                        "access must be read_write or read_only",
                    ));
                }
            };
            if access == Access::ReadOnly {
                let direction = SyncOptions::parse(&sync_json)
                    .map(|o| o.direction)
                    .map_err(|e| ApiError::unprocessable("invalid_sync_options", e.to_string()))?;
                let asked = serde_json::from_str::<serde_json::Value>(&sync_json)
                    .ok()
                    .and_then(|v| v.get("direction").cloned());
                if asked.is_some() && direction != calbridge_sync::Direction::Import {
                    return Err(ApiError::unprocessable(
                        "read_only_direction",
                        "a read_only connection can only import: use sync.direction = import, or access = read_write",
                    ));
                }
                sync_json = syncing::force_import(&sync_json);
            }
            // The operator's OAuth client must exist before a connection can use it.
            ctx.providers
                .oauth_config(kind, access)
                .map_err(service_error)?;
            let mut tokens = OAuthTokens::new(access);
            let Some(given) = input.credentials else {
                // The usual way: the person signs in through authorize_url (DESIGN §4.1).
                tokens.remote_calendars = input.remote_calendars.clone();
                let credentials = StoredCredentials {
                    oauth: Some(tokens),
                    ..StoredCredentials::default()
                };
                let calendar_id = local_calendar(&state, tenant, input.calendar_id, &name).await?;
                let sealed =
                    syncing::seal(&state.master_key, &credentials).map_err(ApiError::internal)?;
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
                            status: ConnectionStatus::NeedsAuth,
                        },
                    )
                    .await
                    .map_err(|e| store_error("connection", e))?;
                let url = super::oauth::begin(&ctx, tenant, &connection).await?;
                audit(
                    &state,
                    principal,
                    "connection.created",
                    connection.id,
                    serde_json::json!({"provider": provider.as_str(), "links": 0}),
                )
                .await?;
                let mut shown = full_view(&state, connection, Vec::new()).await?;
                shown.authorize_url = Some(url.to_string());
                return Ok((StatusCode::CREATED, Json(shown)).into_response());
            };
            if given.url.is_some() || given.username.is_some() || given.password.is_some() {
                return Err(ApiError::unprocessable(
                    "invalid_credentials",
                    "microsoft and google connections take OAuth tokens, not a URL or password",
                ));
            }
            tokens.refresh_token = given.refresh_token.filter(|t| !t.is_empty());
            tokens.access_token = given.access_token.filter(|t| !t.is_empty());
            tokens.expires_at = match given.expires_at.as_deref() {
                None => None,
                Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|_| {
                    ApiError::unprocessable(
                        "invalid_credentials",
                        "credentials.expires_at must be an RFC 3339 time",
                    )
                })?),
            };
            if !tokens.is_authorized() {
                return Err(ApiError::unprocessable(
                    "missing_credentials",
                    "credentials.refresh_token is required for microsoft and google connections",
                ));
            }
            let credentials = StoredCredentials {
                oauth: Some(tokens),
                ..StoredCredentials::default()
            };
            (credentials, None, ConnectionStatus::Active)
        }
    };

    let calendar_id = local_calendar(&state, tenant, input.calendar_id, &name).await?;
    let sealed = syncing::seal(&state.master_key, &credentials).map_err(ApiError::internal)?;
    let remote = remote.ok_or(());
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
                status,
            },
        )
        .await
        .map_err(|e| store_error("connection", e))?;

    let remote = match remote {
        Ok(remote) => remote,
        Err(()) => syncing::open_provider(&ctx, &connection)
            .await
            .map_err(service_error)?,
    };
    let mut links = Vec::new();
    let listed = remote.list_calendars().await;
    // A refused grant already moved the connection to needs_reauth: read it back.
    let connection = state
        .store
        .get_connection(tenant, connection.id)
        .await
        .map_err(ApiError::internal)?;
    let connection = match listed {
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
    if crate::realtime::channels::pushes(connection.provider)
        && state.config.server.public_url.is_some()
    {
        // Open each link's push channel now rather than at the scheduler's next look.
        for link in &links {
            crate::realtime::channels::enqueue(
                state.store.as_ref(),
                tenant,
                link.id,
                jiff::Timestamp::now(),
            )
            .await
            .map_err(ApiError::internal)?;
        }
        state.realtime.wake_workers();
    }
    Ok((
        StatusCode::CREATED,
        Json(full_view(&state, connection, links).await?),
    )
        .into_response())
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
    Ok(Json(full_view(&state, connection, links).await?))
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
    Ok(Json(full_view(&state, updated, links).await?))
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
    // The links' channel rows, and the credentials to stop them, go with the connection.
    if let Ok(ctx) = crate::api::sync::context(&state) {
        crate::realtime::channels::stop_connection(&ctx, &connection).await;
    }
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
    let ctx = super::sync::context(&state)?;
    let mut keep_status = false;
    let diagnosis = match syncing::open_provider(&ctx, &connection).await {
        Ok(provider) => provider.test_connection().await,
        Err(SyncServiceError::Provider(e)) => Diagnosis::from_error(&e),
        Err(e @ SyncServiceError::NotAuthorized { .. }) => {
            // Nothing to test with until the person signs in; the status already says so.
            keep_status = true;
            Diagnosis {
                kind: DiagnosisKind::InvalidCredentials,
                message: e.to_string(),
                calendars: Vec::new(),
            }
        }
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
    if connection.status != ConnectionStatus::Paused && !keep_status {
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
