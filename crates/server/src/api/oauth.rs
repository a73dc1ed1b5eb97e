//! OAuth 2.0 sign-in for Microsoft and Google connections (DESIGN §4, §4.1): `authorize` (API key) sends
//! the person to the provider with PKCE S256 and a one-time `state`; the provider sends the browser back
//! to `callback` (no API key: the `state` is the credential), which exchanges the code, seals the tokens,
//! activates the connection and links its remote calendars.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use calbridge_providers::http::{Budget, BudgetConfig, Credentials, Secret};
use calbridge_providers::oauth::{OAuthProvider, TokenSet};
use calbridge_providers::{CalendarProvider, ProviderError};
use calbridge_store::crypto::Purpose;
use calbridge_store::{
    Connection, ConnectionId, ConnectionStatus, NewAuditEntry, NewLink, NewOAuthState, TenantId,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::connections::{ConnectionView, full_view};
use super::{CommonErrors, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, ConnectionsManage};
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::syncing::{self, OAuthTokens, SyncContext, SyncServiceError};

/// How long a sign-in may take between authorize and callback.
pub const STATE_LIFETIME_SECS: i64 = 600;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(callback))
}

fn provider_of(name: &str) -> Option<OAuthProvider> {
    match name {
        "microsoft" => Some(OAuthProvider::Microsoft),
        "google" => Some(OAuthProvider::Google),
        _ => None,
    }
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

fn service_error(e: SyncServiceError) -> ApiError {
    match e {
        e @ SyncServiceError::NotConfigured(_) => {
            ApiError::unprocessable("provider_not_configured", e.to_string())
        }
        SyncServiceError::Store(e) => store_error("connection", e),
        other => ApiError::internal(other),
    }
}

/// Starts a sign-in for `connection`: stores the hashed state with the sealed PKCE verifier and
/// returns the provider's authorize URL. Used by `authorize` and by connection creation.
pub async fn begin(
    ctx: &SyncContext,
    tenant: TenantId,
    connection: &Connection,
) -> Result<url::Url, ApiError> {
    let Some(kind) = syncing::oauth_provider(connection.provider) else {
        return Err(ApiError::unprocessable(
            "not_an_oauth_connection",
            "only microsoft and google connections sign in with OAuth",
        ));
    };
    let credentials = syncing::open(&ctx.master_key, connection).map_err(ApiError::internal)?;
    let access = credentials
        .oauth
        .as_ref()
        .map(|o| o.access)
        .unwrap_or(calbridge_providers::oauth::Access::ReadWrite);
    let config = ctx
        .providers
        .oauth_config(kind, access)
        .map_err(service_error)?;
    let request = config.authorization_request(None);
    let verifier = ctx
        .master_key
        .seal(
            Purpose::OAuthVerifier,
            request.pkce_verifier.expose().as_bytes(),
        )
        .map_err(ApiError::internal)?;
    let expires_at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(STATE_LIFETIME_SECS))
        .map_err(ApiError::internal)?;
    ctx.store
        .put_oauth_state(
            tenant,
            NewOAuthState {
                state_hash: state_hash(&request.state),
                connection_id: connection.id,
                provider: syncing::oauth_name(kind).to_owned(),
                verifier,
                expires_at,
            },
        )
        .await
        .map_err(|e| store_error("connection", e))?;
    // Housekeeping: abandoned sign-ins do not pile up.
    if let Err(e) = ctx.store.purge_oauth_states(jiff::Timestamp::now()).await {
        tracing::warn!(error = %e, "could not purge expired OAuth states");
    }
    Ok(request.url)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// The Microsoft or Google connection to sign in (created with `POST /v1/calendar/connections`).
    pub connection_id: String,
}

/// Start (or restart, for `needs_reauth`) the OAuth sign-in of a connection: answers 302 to the
/// provider's consent page with PKCE (S256) and a one-time `state` valid for 10 minutes.
#[utoipa::path(get, path = "/v1/calendar/oauth/{provider}/authorize", tag = "connections",
    security(("api_key" = [])),
    params(("provider" = String, Path, description = "`microsoft` or `google`"), AuthorizeQuery),
    responses((status = 302, description = "To the provider's consent page (Location)"), CommonErrors))]
pub async fn authorize(
    auth: Authorized<ConnectionsManage>,
    State(state): State<AppState>,
    Path(provider): Path<String>,
    QueryParams(query): QueryParams<AuthorizeQuery>,
) -> Result<Response, ApiError> {
    let tenant = auth.principal().tenant;
    let id: ConnectionId = parse_id(&query.connection_id, "connection")?;
    // The tenant check comes first: another tenant's connection is simply not found.
    let connection = state
        .store
        .get_connection(tenant, id)
        .await
        .map_err(|e| store_error("connection", e))?;
    let kind = provider_of(&provider).ok_or_else(|| {
        ApiError::NotFound(format!(
            "OAuth provider `{provider}` (use microsoft or google)"
        ))
    })?;
    if syncing::oauth_provider(connection.provider) != Some(kind) {
        return Err(ApiError::unprocessable(
            "provider_mismatch",
            format!(
                "connection {id} is a {} connection, not {provider}",
                connection.provider
            ),
        ));
    }
    let ctx = super::sync::context(&state)?;
    let url = begin(&ctx, tenant, &connection).await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, url.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the person declined (`access_denied`) or the request failed.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

fn bad_state(detail: &str) -> ApiError {
    ApiError::bad_request("invalid_oauth_state", detail.to_owned())
}

/// Where the provider sends the person's browser after consent. Takes no API key: the one-time `state`
/// names the pending sign-in. 400 `invalid_oauth_state`: unknown, expired or already used state;
/// 400 `oauth_access_denied`: the person declined (the connection still needs authorization);
/// 400 `missing_code`; 404: unknown provider; 503: the provider's token endpoint failed. Exchanges the code (with the PKCE verifier), seals the tokens, activates
/// the connection and links its remote calendars. Unknown, expired or reused states change nothing.
#[utoipa::path(get, path = "/v1/calendar/oauth/{provider}/callback", tag = "connections",
    params(("provider" = String, Path, description = "`microsoft` or `google`"), CallbackQuery),
    responses(
        (status = 200, body = ConnectionView, description = "Signed in; the connection is active"),
        CommonErrors,
    ))]
pub async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    QueryParams(query): QueryParams<CallbackQuery>,
) -> Result<Response, ApiError> {
    let kind = provider_of(&provider).ok_or_else(|| {
        ApiError::NotFound(format!(
            "OAuth provider `{provider}` (use microsoft or google)"
        ))
    })?;
    let Some(given_state) = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Err(bad_state(
            "the callback carries no state; start the sign-in again from the application",
        ));
    };
    // Single use: the pending sign-in is removed by this read, whatever happens next.
    let pending = state
        .store
        .take_oauth_state(&state_hash(given_state))
        .await
        .map_err(ApiError::internal)?;
    let Some(pending) = pending else {
        return Err(bad_state(
            "this sign-in link is unknown or was already used; start the sign-in again from the application",
        ));
    };
    if pending.expires_at < jiff::Timestamp::now() {
        return Err(bad_state(
            "this sign-in took longer than 10 minutes and expired; start it again from the application",
        ));
    }
    if pending.provider != syncing::oauth_name(kind) {
        return Err(bad_state(
            "this state belongs to another provider's sign-in; start the sign-in again",
        ));
    }
    let tenant = pending.tenant_id;
    let store = state.store.as_ref();
    let connection = store
        .get_connection(tenant, pending.connection_id)
        .await
        .map_err(|e| store_error("connection", e))?;

    if let Some(error) = query.error.as_deref() {
        let description = query
            .error_description
            .as_deref()
            .map(|d| d.chars().take(300).collect::<String>())
            .unwrap_or_default();
        let reason = if error == "access_denied" {
            format!(
                "the person declined access at {} ({description}); start the sign-in again to connect",
                display(kind)
            )
        } else {
            format!(
                "{} refused the sign-in ({}: {description}); start it again",
                display(kind),
                error.chars().take(100).collect::<String>()
            )
        };
        // A connection that never had a grant stays needs_auth; one that had stays needs_reauth.
        let status = if connection.status == ConnectionStatus::NeedsAuth {
            ConnectionStatus::NeedsAuth
        } else {
            ConnectionStatus::NeedsReauth
        };
        store
            .set_connection_status(tenant, connection.id, status, Some(&reason))
            .await
            .map_err(ApiError::internal)?;
        audit_system(
            &state,
            tenant,
            "connection.oauth_denied",
            connection.id,
            error,
        )
        .await;
        return Err(ApiError::bad_request("oauth_access_denied", reason));
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(ApiError::bad_request(
            "missing_code",
            "the callback carries neither a code nor an error; start the sign-in again",
        ));
    };

    let ctx = super::sync::context(&state)?;
    let mut credentials =
        syncing::open(&ctx.master_key, &connection).map_err(ApiError::internal)?;
    let mut tokens = credentials
        .oauth
        .clone()
        .unwrap_or_else(|| OAuthTokens::new(calbridge_providers::oauth::Access::ReadWrite));
    let config = ctx
        .providers
        .oauth_config(kind, tokens.access)
        .map_err(service_error)?;
    let verifier = ctx
        .master_key
        .open(Purpose::OAuthVerifier, &pending.verifier)
        .map_err(ApiError::internal)?;
    let verifier = Secret::new(String::from_utf8(verifier).map_err(ApiError::internal)?);
    let endpoint = ctx.http.endpoint(
        "oauth",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );
    let granted: TokenSet = match config.exchange_code(&endpoint, code, &verifier).await {
        Ok(t) => t,
        Err(ProviderError::NeedsReauthorization { detail }) => {
            return Err(ApiError::bad_request(
                "oauth_code_rejected",
                format!(
                    "{} did not accept the sign-in code ({detail}); start the sign-in again",
                    display(kind)
                ),
            ));
        }
        Err(e) => {
            return Err(ApiError::Unavailable(format!(
                "{}'s token endpoint failed: {e}; try the sign-in again later",
                display(kind)
            )));
        }
    };
    tokens.apply(&granted);
    let wanted = tokens.remote_calendars.take();
    credentials.oauth = Some(tokens);
    let sealed = syncing::seal(&ctx.master_key, &credentials).map_err(ApiError::internal)?;
    store
        .set_connection_credentials(tenant, connection.id, Some(sealed))
        .await
        .map_err(ApiError::internal)?;
    let connection = store
        .set_connection_status(tenant, connection.id, ConnectionStatus::Active, None)
        .await
        .map_err(ApiError::internal)?;

    // Link the remote calendars (all that hold events, or those the create request named); a
    // re-authorization keeps the links it has.
    let existing = store
        .list_links(tenant, connection.id)
        .await
        .map_err(ApiError::internal)?;
    let provider = syncing::open_provider(&ctx, &connection)
        .await
        .map_err(ApiError::internal)?;
    let connection = link_calendars(
        &state,
        tenant,
        connection,
        provider.as_ref(),
        wanted.as_deref(),
        &existing,
    )
    .await?;
    let links = store
        .list_links(tenant, connection.id)
        .await
        .map_err(ApiError::internal)?;
    for link in &links {
        if let Err(e) =
            crate::realtime::push::enqueue_link_sync(store, tenant, link.id, "oauth.authorized")
                .await
        {
            tracing::warn!(link = %link.id, error = %e, "could not schedule the first sync");
        }
    }
    audit_system(&state, tenant, "connection.authorized", connection.id, "").await;
    let shown = full_view(&state, connection, links).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(shown)).into_response())
}

/// Creates a link per remote calendar not linked yet (filtered by `wanted`: ids or href suffixes).
/// A listing that fails leaves the connection with the diagnosis as its status.
pub async fn link_calendars(
    state: &AppState,
    tenant: TenantId,
    connection: Connection,
    remote: &dyn CalendarProvider,
    wanted: Option<&[String]>,
    existing: &[calbridge_store::Link],
) -> Result<Connection, ApiError> {
    use calbridge_providers::{Diagnosis, DiagnosisKind};
    match remote.list_calendars().await {
        Ok(calendars) => {
            for calendar in calendars.into_iter().filter(|c| c.holds_events()) {
                let id = calendar.id.as_str();
                if wanted.is_some_and(|w| !w.iter().any(|x| x == id || id.ends_with(x.as_str()))) {
                    continue;
                }
                if existing.iter().any(|l| l.remote_calendar_id == id) {
                    continue;
                }
                state
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
            }
            Ok(connection)
        }
        Err(e) => {
            // A refused grant already moved the connection to needs_reauth.
            let current = state
                .store
                .get_connection(tenant, connection.id)
                .await
                .map_err(ApiError::internal)?;
            if current.status == ConnectionStatus::NeedsReauth {
                return Ok(current);
            }
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
                .map_err(ApiError::internal)
        }
    }
}

fn display(kind: OAuthProvider) -> &'static str {
    match kind {
        OAuthProvider::Microsoft => "Microsoft",
        OAuthProvider::Google => "Google",
    }
}

async fn audit_system(
    state: &AppState,
    tenant: TenantId,
    action: &str,
    id: ConnectionId,
    detail: &str,
) {
    let entry = NewAuditEntry {
        actor: "oauth:callback".into(),
        action: action.to_owned(),
        subject: id.to_string(),
        details_json: serde_json::json!({"detail": detail}).to_string(),
    };
    if let Err(e) = state.store.append_audit(tenant, entry).await {
        tracing::error!(connection = %id, error = %e, "could not audit an OAuth callback");
    }
}
