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

use calbridge_engine::{EngineConfig, LinkSync, RunError, RunStatus, sync_link};
use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::http::auth::{Credentials, Secret};
use calbridge_providers::http::budget::{Budget, BudgetConfig};
use calbridge_providers::http::ssrf::AddressPolicy;
use calbridge_providers::http::{HttpClient, HttpConfig};
use calbridge_providers::ics::IcsProvider;
use calbridge_providers::{CalendarProvider, ProviderError};
use calbridge_store::crypto::{MasterKey, Purpose};
use calbridge_store::{
    Connection, ConnectionId, ConnectionStatus, Provider, Store, StoreError, SyncRun, SyncRunId,
    SyncRunStatus, SyncRunUpdate, TenantId,
};
use serde::{Deserialize, Serialize};

use crate::Config;

/// What a connection's sealed credentials hold (DESIGN §4.1 `credentials`).
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct StoredCredentials {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
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
}

/// The outgoing HTTP client connections use; private networks only when the operator allows them.
/// `optimizations.batch_size` and `optimizations.cache_ttl` apply to every provider it serves.
pub fn http_client(config: &Config) -> Result<HttpClient, ProviderError> {
    let address_policy = if config.network.allow_private_networks {
        AddressPolicy {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: false,
        }
    } else {
        AddressPolicy::public_only()
    };
    HttpClient::new(HttpConfig {
        address_policy,
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

/// The provider of `kind` for these credentials.
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

/// Everything a sync needs besides the request.
#[derive(Clone)]
pub struct SyncContext {
    pub store: Arc<dyn Store>,
    pub master_key: Arc<MasterKey>,
    pub http: HttpClient,
    pub engine: EngineConfig,
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
/// with the totals. One failing link is reported and does not stop the others.
pub async fn run_sync(
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
        let provider = open(&ctx.master_key, connection)
            .and_then(|creds| provider_for(&ctx.http, connection.provider, &creds));
        for link in links {
            total_links += 1;
            let provider = match &provider {
                Ok(p) => Arc::clone(p),
                Err(e) => {
                    failed_links += 1;
                    errors.push(link_error(&link.remote_calendar_id, "setup", e.to_string()));
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
