//! What the sync API, the scheduler and the CLI share: opening a connection's provider from its sealed
//! credentials, and running the engine over a connection's links under one sync run.
//!
//! A run started here is the one run of the request the API (or the CLI) answers with: the engine
//! syncs each link under it without opening runs of its own, and the run holds the totals of every
//! link (counts by action, requests, bytes, each error naming its link). The scheduler's jobs sync one
//! link each and let the engine open that link's run. So each row of the system log is one sync that
//! was asked for, and no request is counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use calbridge_engine::{EngineConfig, LinkSync, RunError, RunStatus, SyncOptions, sync_link};
use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::google::{GoogleConfig, GoogleProvider};
use calbridge_providers::graph::{GraphConfig, GraphProvider};
use calbridge_providers::http::auth::{Credentials, Secret};
use calbridge_providers::http::budget::{Budget, BudgetConfig};
use calbridge_providers::http::ssrf::AddressPolicy;
use calbridge_providers::http::{HttpClient, HttpConfig};
use calbridge_providers::ics::IcsProvider;
use calbridge_providers::oauth::{
    Access, OAuthConfig, OAuthProvider, OAuthSession, TokenSet, TokenStore,
};
use calbridge_providers::{CalendarProvider, ProviderError};
use calbridge_store::crypto::{MasterKey, Purpose};
use calbridge_store::{
    Connection, ConnectionId, ConnectionStatus, NewAuditEntry, Provider, Store, StoreError,
    SyncRun, SyncRunId, SyncRunStatus, SyncRunUpdate, TenantId,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{Config, OAuthProviderConfig};

/// What a connection's sealed credentials hold (DESIGN §4.1 `credentials`): a URL with an optional
/// user name and password (CalDAV, ICS), or OAuth tokens (Microsoft, Google).
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct StoredCredentials {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthTokens>,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

/// A Microsoft or Google connection's grant: what it may do, and its tokens once the person consented
/// (absent while the connection is `needs_auth`).
#[derive(Clone, Serialize, Deserialize)]
pub struct OAuthTokens {
    pub access: Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scopes granted (as the token endpoint answered them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Until the first sign-in: the remote calendars the create request asked to link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_calendars: Option<Vec<String>>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("access", &self.access)
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl OAuthTokens {
    pub fn new(access: Access) -> Self {
        Self {
            access,
            access_token: None,
            expires_at: None,
            refresh_token: None,
            scopes: Vec::new(),
            remote_calendars: None,
        }
    }

    /// Whether the person consented (there is something to get an access token with).
    pub fn is_authorized(&self) -> bool {
        self.refresh_token.is_some() || self.access_token.is_some()
    }

    /// Takes a token set from the token endpoint.
    pub fn apply(&mut self, tokens: &TokenSet) {
        self.access_token = Some(tokens.access_token.expose().to_owned());
        self.expires_at = Some(tokens.expires_at);
        if let Some(refresh) = &tokens.refresh_token {
            self.refresh_token = Some(refresh.expose().to_owned());
        }
        if !tokens.scope.is_empty() {
            self.scopes = tokens.scope.clone();
        }
    }

    /// The set an [`OAuthSession`] starts from; without an access token it refreshes on first use.
    pub fn token_set(&self) -> TokenSet {
        TokenSet {
            access_token: Secret::new(self.access_token.clone().unwrap_or_default()),
            refresh_token: self.refresh_token.clone().map(Secret::new),
            expires_at: match (&self.access_token, self.expires_at) {
                (Some(_), Some(at)) => at,
                (Some(_), None) => Timestamp::MAX,
                (None, _) => Timestamp::MIN,
            },
            scope: self.scopes.clone(),
            refresh_token_rotated: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncServiceError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("provider `{0}` is not supported yet")]
    Unsupported(&'static str),
    /// The operator has not registered an OAuth client for this provider.
    #[error(
        "the `{0}` provider is not configured on this server: set providers.{0}.client_id (and client_secret)"
    )]
    NotConfigured(&'static str),
    /// The connection has no usable grant (`needs_auth`, `needs_reauth`).
    #[error(
        "the connection is `{status}`: sign in again through GET /v1/calendar/oauth/{provider}/authorize?connection_id={id}"
    )]
    NotAuthorized {
        status: ConnectionStatus,
        provider: &'static str,
        id: ConnectionId,
    },
}

/// Where outgoing requests (connections, webhooks) may go: public addresses, plus loopback and RFC 1918
/// when the operator allows private networks; never link-local (cloud metadata).
pub fn address_policy(allow_private_networks: bool) -> AddressPolicy {
    if allow_private_networks {
        AddressPolicy {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: false,
        }
    } else {
        AddressPolicy::public_only()
    }
}

/// The outgoing HTTP client connections use; private networks only when the operator allows them.
/// `optimizations.batch_size` and `optimizations.cache_ttl` apply to every provider it serves.
pub fn http_client(config: &Config) -> Result<HttpClient, ProviderError> {
    HttpClient::new(HttpConfig {
        address_policy: address_policy(config.network.allow_private_networks),
        batch_size: usize::try_from(config.optimizations.batch_size).ok(),
        cache_ttl: std::time::Duration::from_secs(config.optimizations.cache_ttl),
        ..HttpConfig::default()
    })
}

pub fn seal(
    key: &MasterKey,
    credentials: &StoredCredentials,
) -> Result<calbridge_store::crypto::Sealed, SyncServiceError> {
    let json = serde_json::to_vec(credentials)
        .map_err(|e| SyncServiceError::Credentials(e.to_string()))?;
    key.seal(Purpose::ConnectionCredentials, &json)
        .map_err(|e| SyncServiceError::Credentials(e.to_string()))
}

pub fn open(
    key: &MasterKey,
    connection: &Connection,
) -> Result<StoredCredentials, SyncServiceError> {
    let Some(sealed) = &connection.credentials else {
        return Err(SyncServiceError::Credentials(
            "the connection has no credentials".into(),
        ));
    };
    let bytes = key
        .open(Purpose::ConnectionCredentials, sealed)
        .map_err(|e| SyncServiceError::Credentials(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| SyncServiceError::Credentials(e.to_string()))
}

/// The CalDAV or ICS provider for these credentials (Microsoft and Google need the store for their
/// tokens: [`open_provider`]).
pub fn provider_for(
    http: &HttpClient,
    kind: Provider,
    credentials: &StoredCredentials,
) -> Result<Arc<dyn CalendarProvider>, SyncServiceError> {
    let auth = match (&credentials.username, &credentials.password) {
        (Some(username), Some(password)) => Credentials::Password {
            username: username.clone(),
            password: Secret::new(password.clone()),
        },
        _ => Credentials::None,
    };
    let budget = Budget::new(BudgetConfig::default());
    match kind {
        Provider::Caldav => Ok(Arc::new(CaldavProvider::new(
            http,
            &credentials.url,
            auth,
            budget,
        )?)),
        Provider::Ics => Ok(Arc::new(IcsProvider::new(
            http,
            &credentials.url,
            auth,
            budget,
        )?)),
        Provider::Microsoft => Err(SyncServiceError::Unsupported("microsoft")),
        Provider::Google => Err(SyncServiceError::Unsupported("google")),
    }
}

/// The operator's OAuth clients and where browsers reach this server (for redirect URIs).
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub microsoft: OAuthProviderConfig,
    pub google: OAuthProviderConfig,
    /// `server.public_url` (or `http://{listen}`), ending in `/`; `Err` holds why it is unusable.
    pub public_base: Result<Url, String>,
}

impl ProviderSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            microsoft: config.providers.microsoft.clone(),
            google: config.providers.google.clone(),
            public_base: config.server.public_base(),
        }
    }

    fn of(&self, provider: OAuthProvider) -> &OAuthProviderConfig {
        match provider {
            OAuthProvider::Microsoft => &self.microsoft,
            OAuthProvider::Google => &self.google,
        }
    }

    /// The callback this server registers with `provider`.
    pub fn redirect_uri(&self, provider: OAuthProvider) -> Result<Url, SyncServiceError> {
        let base = self
            .public_base
            .as_ref()
            .map_err(|e| SyncServiceError::Credentials(e.clone()))?;
        base.join(&format!(
            "v1/calendar/oauth/{}/callback",
            oauth_name(provider)
        ))
        .map_err(|e| SyncServiceError::Credentials(format!("redirect URI: {e}")))
    }

    /// The OAuth client for `provider` with least-privilege scopes for `access`.
    pub fn oauth_config(
        &self,
        provider: OAuthProvider,
        access: Access,
    ) -> Result<OAuthConfig, SyncServiceError> {
        let name = oauth_name(provider);
        let settings = self.of(provider);
        let client_id = settings
            .client_id
            .clone()
            .filter(|c| !c.trim().is_empty())
            .ok_or(SyncServiceError::NotConfigured(name))?;
        let secret = settings
            .client_secret
            .as_ref()
            .map(|s| Secret::new(s.expose()));
        let redirect = self.redirect_uri(provider)?;
        let parse = |what: &str, text: &str| {
            Url::parse(text.trim()).map_err(|e| {
                SyncServiceError::Credentials(format!("providers.{name}.{what} `{text}`: {e}"))
            })
        };
        let config = match provider {
            OAuthProvider::Microsoft => {
                let authority = parse(
                    "authority_url",
                    settings
                        .authority_url
                        .as_deref()
                        .unwrap_or("https://login.microsoftonline.com"),
                )?;
                let tenant = settings.tenant.as_deref().unwrap_or("common");
                OAuthConfig::microsoft(&authority, tenant, client_id, secret, redirect, access)?
            }
            OAuthProvider::Google => {
                let accounts = settings
                    .authority_url
                    .as_deref()
                    .unwrap_or("https://accounts.google.com");
                let token = settings
                    .token_url
                    .as_deref()
                    .or(settings.authority_url.as_deref())
                    .unwrap_or("https://oauth2.googleapis.com");
                OAuthConfig::google(
                    &parse("authority_url", accounts)?,
                    &parse("token_url", token)?,
                    client_id,
                    secret,
                    redirect,
                    access,
                )?
            }
        };
        Ok(config)
    }

    /// The API base: Graph (`https://graph.microsoft.com/v1.0`) or Google Calendar
    /// (`https://www.googleapis.com/calendar/v3`), unless configured (national clouds, emulators).
    pub fn api_base(&self, provider: OAuthProvider) -> Result<Url, SyncServiceError> {
        let name = oauth_name(provider);
        let default = match provider {
            OAuthProvider::Microsoft => "https://graph.microsoft.com/v1.0/",
            OAuthProvider::Google => "https://www.googleapis.com/calendar/v3/",
        };
        let text = self.of(provider).graph_url.as_deref().unwrap_or(default);
        Url::parse(text.trim()).map_err(|e| {
            SyncServiceError::Credentials(format!("providers.{name}.graph_url `{text}`: {e}"))
        })
    }
}

/// `microsoft` / `google` as in the routes and configuration.
pub fn oauth_name(provider: OAuthProvider) -> &'static str {
    match provider {
        OAuthProvider::Microsoft => "microsoft",
        OAuthProvider::Google => "google",
    }
}

/// The OAuth provider behind a connection's provider, if it has one.
pub fn oauth_provider(kind: Provider) -> Option<OAuthProvider> {
    match kind {
        Provider::Microsoft => Some(OAuthProvider::Microsoft),
        Provider::Google => Some(OAuthProvider::Google),
        Provider::Caldav | Provider::Ics => None,
    }
}

/// Whether the connection's credentials grant read access only (such connections only import).
pub fn is_read_only(credentials: &StoredCredentials) -> bool {
    credentials
        .oauth
        .as_ref()
        .is_some_and(|o| o.access == Access::ReadOnly)
}

/// The sync options with `direction` forced to `import` (read-only connections), in the same layout
/// (flat, or under `sync`) as stored.
pub fn force_import(sync_options_json: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(sync_options_json)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    let target = match value.get_mut("sync") {
        Some(nested) if nested.is_object() => nested,
        _ => &mut value,
    };
    if let Some(map) = target.as_object_mut() {
        map.insert("direction".into(), serde_json::json!("import"));
    }
    value.to_string()
}

/// The provider of a stored connection, whatever its kind. Microsoft and Google connections get a
/// token source over the connection's sealed credentials: refreshed before expiry, rotated refresh
/// tokens written back at once, `invalid_grant` → the connection becomes `needs_reauth`.
pub async fn open_provider(
    ctx: &SyncContext,
    connection: &Connection,
) -> Result<Arc<dyn CalendarProvider>, SyncServiceError> {
    let credentials = open(&ctx.master_key, connection)?;
    let Some(kind) = oauth_provider(connection.provider) else {
        return provider_for(&ctx.http, connection.provider, &credentials);
    };
    let not_authorized = || SyncServiceError::NotAuthorized {
        status: connection.status,
        provider: oauth_name(kind),
        id: connection.id,
    };
    if matches!(
        connection.status,
        ConnectionStatus::NeedsAuth | ConnectionStatus::NeedsReauth
    ) {
        return Err(not_authorized());
    }
    let Some(tokens) = credentials.oauth.filter(OAuthTokens::is_authorized) else {
        return Err(not_authorized());
    };
    let config = ctx.providers.oauth_config(kind, tokens.access)?;
    let token_http = ctx.http.endpoint(
        "oauth",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );
    let store = Arc::new(ConnectionTokens {
        store: Arc::clone(&ctx.store),
        key: Arc::clone(&ctx.master_key),
        tenant: connection.tenant_id,
        connection: connection.id,
        provider: oauth_name(kind),
    });
    let session =
        Arc::new(OAuthSession::new(config, token_http, tokens.token_set()).with_store(store));
    // Series exceptions are looked for in the sync window.
    let read_window = SyncOptions::parse(&connection.sync_options_json)
        .ok()
        .and_then(|o| o.window(Timestamp::now()).ok())
        .and_then(|w| calbridge_providers::Window::parse(w.start, w.end).ok());
    let base = ctx.providers.api_base(kind)?;
    Ok(match kind {
        OAuthProvider::Microsoft => {
            let mut config = GraphConfig::new(base, tokens.access);
            config.read_window = read_window;
            Arc::new(GraphProvider::new(&ctx.http, config, session))
        }
        OAuthProvider::Google => {
            let mut config = GoogleConfig::new(base, tokens.access);
            config.read_window = read_window;
            Arc::new(GoogleProvider::new(&ctx.http, config, session))
        }
    })
}

/// A connection's OAuth tokens in its sealed credentials, as an [`OAuthSession`] sees them.
#[derive(Debug)]
struct ConnectionTokens {
    store: Arc<dyn Store>,
    key: Arc<MasterKey>,
    tenant: TenantId,
    connection: ConnectionId,
    provider: &'static str,
}

fn store_failure(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::InvalidInput {
        detail: format!("the connection's tokens could not be stored: {e}"),
    }
}

#[async_trait]
impl TokenStore for ConnectionTokens {
    async fn save(&self, tokens: &TokenSet) -> Result<(), ProviderError> {
        let connection = self
            .store
            .get_connection(self.tenant, self.connection)
            .await
            .map_err(store_failure)?;
        let mut credentials = open(&self.key, &connection).map_err(store_failure)?;
        let oauth = credentials
            .oauth
            .get_or_insert_with(|| OAuthTokens::new(Access::ReadWrite));
        oauth.apply(tokens);
        let sealed = seal(&self.key, &credentials).map_err(store_failure)?;
        self.store
            .set_connection_credentials(self.tenant, self.connection, Some(sealed))
            .await
            .map_err(store_failure)?;
        tracing::debug!(connection = %self.connection, rotated = tokens.refresh_token_rotated, "OAuth tokens refreshed and stored");
        Ok(())
    }

    async fn load(&self) -> Result<Option<TokenSet>, ProviderError> {
        let connection = self
            .store
            .get_connection(self.tenant, self.connection)
            .await
            .map_err(store_failure)?;
        let credentials = open(&self.key, &connection).map_err(store_failure)?;
        Ok(credentials
            .oauth
            .filter(OAuthTokens::is_authorized)
            .map(|o| o.token_set()))
    }

    async fn revoked(&self, detail: &str) {
        let reason = format!(
            "{} refused the stored sign-in ({detail}); sign in again through GET /v1/calendar/oauth/{}/authorize?connection_id={}. Events already synced are kept.",
            display_name(self.provider),
            self.provider,
            self.connection
        );
        tracing::warn!(connection = %self.connection, "OAuth grant revoked; connection needs re-authorization");
        if let Err(e) = self
            .store
            .set_connection_status(
                self.tenant,
                self.connection,
                ConnectionStatus::NeedsReauth,
                Some(&reason),
            )
            .await
        {
            tracing::error!(connection = %self.connection, error = %e, "could not mark the connection needs_reauth");
            return;
        }
        let entry = NewAuditEntry {
            actor: "system".into(),
            action: "connection.needs_reauth".into(),
            subject: self.connection.to_string(),
            details_json: serde_json::json!({"provider": self.provider}).to_string(),
        };
        if let Err(e) = self.store.append_audit(self.tenant, entry).await {
            tracing::error!(connection = %self.connection, error = %e, "could not audit needs_reauth");
        }
    }
}

fn display_name(provider: &str) -> &'static str {
    match provider {
        "microsoft" => "Microsoft",
        _ => "Google",
    }
}

/// Everything a sync needs besides the request.
#[derive(Clone)]
pub struct SyncContext {
    pub store: Arc<dyn Store>,
    pub master_key: Arc<MasterKey>,
    pub http: HttpClient,
    pub engine: EngineConfig,
    pub providers: ProviderSettings,
}

impl std::fmt::Debug for SyncContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncContext").finish_non_exhaustive()
    }
}

/// Progress of a run, reported link by link (the CLI's progress bar).
pub trait Progress: Send + Sync {
    fn links_total(&self, _total: u64) {}
    fn link_done(&self, _connection: &str, _remote: &str, _status: &str) {}
}

impl Progress for () {}

/// Opens the request run that [`run_sync`] then fills in.
pub async fn start_run(
    store: &dyn Store,
    tenant: TenantId,
    connection: Option<ConnectionId>,
    full: bool,
) -> Result<SyncRun, SyncServiceError> {
    if let Some(id) = connection {
        // Tenant isolation: a connection of another tenant is simply not found.
        store.get_connection(tenant, id).await?;
    }
    Ok(store.create_sync_run(tenant, connection, full).await?)
}

/// Runs every active link of one connection (or of all the tenant's connections) and closes `run`
/// with the totals. One failing link is reported and does not stop the others. The run's heartbeat
/// beats meanwhile, so a process killed in the middle leaves a run the scheduler closes as
/// interrupted.
pub async fn run_sync(
    ctx: &SyncContext,
    tenant: TenantId,
    run: SyncRunId,
    connection: Option<ConnectionId>,
    full: bool,
    progress: &dyn Progress,
) -> Result<SyncRun, SyncServiceError> {
    calbridge_engine::beating(
        ctx.store.as_ref(),
        tenant,
        run,
        ctx.engine.heartbeat,
        run_links(ctx, tenant, run, connection, full, progress),
    )
    .await
}

async fn run_links(
    ctx: &SyncContext,
    tenant: TenantId,
    run: SyncRunId,
    connection: Option<ConnectionId>,
    full: bool,
    progress: &dyn Progress,
) -> Result<SyncRun, SyncServiceError> {
    let connections = match connection {
        Some(id) => vec![ctx.store.get_connection(tenant, id).await?],
        None => ctx
            .store
            .list_connections(tenant)
            .await?
            .into_iter()
            .filter(|c| c.status == ConnectionStatus::Active)
            .collect(),
    };
    let mut plan = Vec::new();
    for connection in connections {
        let links = ctx.store.list_links(tenant, connection.id).await?;
        plan.push((connection, links));
    }
    progress.links_total(plan.iter().map(|(_, l)| l.len() as u64).sum());

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: Vec<RunError> = Vec::new();
    let mut requests = 0_u64;
    let mut bytes = 0_u64;
    let mut failed_links = 0_usize;
    let mut partial_links = 0_usize;
    let mut total_links = 0_usize;
    for (connection, links) in &plan {
        let provider = open_provider(ctx, connection).await;
        if let (true, Err(e @ SyncServiceError::NotAuthorized { .. })) =
            (links.is_empty(), &provider)
        {
            // Not signed in yet, so nothing is linked: still say why nothing synced.
            total_links += 1;
            failed_links += 1;
            errors.push(link_error("connection", setup_class(e), e.to_string()));
            continue;
        }
        let connection = &effective_connection(&ctx.master_key, connection);
        for link in links {
            total_links += 1;
            let provider = match &provider {
                Ok(p) => Arc::clone(p),
                Err(e) => {
                    failed_links += 1;
                    errors.push(link_error(
                        &link.remote_calendar_id,
                        setup_class(e),
                        e.to_string(),
                    ));
                    progress.link_done(&connection.name, &link.remote_calendar_id, "failed");
                    continue;
                }
            };
            let outcome = sync_link(LinkSync {
                store: ctx.store.as_ref(),
                provider: provider.as_ref(),
                tenant,
                connection,
                link,
                config: &ctx.engine,
                now: jiff::Timestamp::now(),
                full,
                run: Some(run),
            })
            .await;
            let label = match outcome {
                Ok(report) => {
                    for (action, n) in report.counts {
                        *counts.entry(action).or_default() += n;
                    }
                    requests += report.requests;
                    bytes += report.bytes;
                    errors.extend(report.errors);
                    if let Some(reason) = report.suspect_reason {
                        errors.push(link_error(&link.remote_calendar_id, "suspect", reason));
                    }
                    match report.status {
                        RunStatus::Succeeded => "succeeded",
                        _ => {
                            partial_links += 1;
                            "partial"
                        }
                    }
                }
                Err(e) => {
                    failed_links += 1;
                    errors.push(link_error(
                        &link.remote_calendar_id,
                        "engine",
                        e.to_string(),
                    ));
                    "failed"
                }
            };
            progress.link_done(&connection.name, &link.remote_calendar_id, label);
        }
    }
    let status = if total_links > 0 && failed_links == total_links {
        SyncRunStatus::Failed
    } else if failed_links > 0 || partial_links > 0 {
        SyncRunStatus::Partial
    } else {
        SyncRunStatus::Succeeded
    };
    let update = SyncRunUpdate {
        status,
        counts_json: serde_json::to_string(&counts).unwrap_or_else(|_| "{}".into()),
        requests: i64::try_from(requests).unwrap_or(i64::MAX),
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        errors_json: serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into()),
        finished_at: Some(jiff::Timestamp::now()),
    };
    Ok(ctx.store.update_sync_run(tenant, run, update).await?)
}

/// The connection as the engine must see it: a read-only grant only imports, whatever the options say.
pub fn effective_connection(key: &MasterKey, connection: &Connection) -> Connection {
    let mut connection = connection.clone();
    if open(key, &connection).is_ok_and(|c| is_read_only(&c)) {
        connection.sync_options_json = force_import(&connection.sync_options_json);
    }
    connection
}

/// The run-log class of a provider that could not be opened.
pub fn setup_class(e: &SyncServiceError) -> &'static str {
    match e {
        SyncServiceError::NotAuthorized { status, .. }
            if *status == ConnectionStatus::NeedsAuth =>
        {
            "needs_auth"
        }
        SyncServiceError::NotAuthorized { .. } => "needs_reauth",
        SyncServiceError::NotConfigured(_) => "not_configured",
        _ => "setup",
    }
}

fn link_error(item: &str, class: &str, cause: String) -> RunError {
    RunError {
        item: item.to_owned(),
        action: "sync".into(),
        class: class.to_owned(),
        cause,
    }
}

/// Closes a run that could not be carried out at all.
pub async fn fail_run(store: &dyn Store, tenant: TenantId, run: SyncRunId, cause: &str) {
    let errors = vec![link_error("run", "setup", cause.to_owned())];
    let update = SyncRunUpdate {
        status: SyncRunStatus::Failed,
        counts_json: "{}".into(),
        requests: 0,
        bytes: 0,
        errors_json: serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into()),
        finished_at: Some(jiff::Timestamp::now()),
    };
    if let Err(e) = store.update_sync_run(tenant, run, update).await {
        tracing::error!(run = %run, error = %e, "could not close a failed sync run");
    }
}
