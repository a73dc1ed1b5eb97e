//! Start-up: open and migrate the store, find (or on first start create) the master key, and make the
//! bootstrap admin key the first time the service starts on an empty database.

use std::path::PathBuf;
use std::sync::Arc;

use calbridge_store::crypto::MasterKey;
use calbridge_store::{Store, StoreError, Tenant};

use crate::config::Config;
use crate::keys::Scope;

/// The tenant the bootstrap admin key belongs to.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the master key came from, so that `keys rotate-master` knows where the new one goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `secrets.master_key` (TOML or `CALBRIDGE_SECRETS__MASTER_KEY`).
    Inline,
    File(PathBuf),
}

#[derive(Debug)]
pub struct LoadedMasterKey {
    pub key: MasterKey,
    pub source: MasterKeySource,
    /// The key file was created just now (first start of the embedded default).
    pub created: bool,
}

/// The key file used when none is configured and the database is an embedded SQLite file: beside it.
pub fn default_key_file(config: &Config) -> Option<PathBuf> {
    let db = config.database.url.sqlite_path()?;
    Some(db.with_extension("key"))
}

/// Find the master key: inline, then the configured file, then (embedded SQLite only) the default file
/// beside the database, created with mode 0600 when absent.
pub fn master_key(config: &Config) -> Result<LoadedMasterKey, BootstrapError> {
    if let Some(inline) = &config.secrets.master_key {
        let key = MasterKey::parse(inline.expose())
            .map_err(|e| BootstrapError::MasterKey(format!("secrets.master_key: {e}")))?;
        return Ok(LoadedMasterKey {
            key,
            source: MasterKeySource::Inline,
            created: false,
        });
    }
    if let Some(path) = &config.secrets.master_key_file {
        let key = MasterKey::load_file(path).map_err(|e| {
            BootstrapError::MasterKey(format!("secrets.master_key_file {}: {e}", path.display()))
        })?;
        return Ok(LoadedMasterKey {
            key,
            source: MasterKeySource::File(path.clone()),
            created: false,
        });
    }
    match default_key_file(config) {
        Some(path) => {
            let (key, created) = MasterKey::load_or_create_file(&path)
                .map_err(|e| BootstrapError::MasterKey(format!("{}: {e}", path.display())))?;
            Ok(LoadedMasterKey {
                key,
                source: MasterKeySource::File(path),
                created,
            })
        }
        None => Err(BootstrapError::MasterKey(
            "no master key configured; set CALBRIDGE_SECRETS__MASTER_KEY (64 hex digits or base64 of 32 bytes) or secrets.master_key_file".into(),
        )),
    }
}

/// Open the configured database and bring its schema up to date.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, BootstrapError> {
    if let Some(path) = config.database.url.sqlite_path()
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        let _ = std::fs::create_dir_all(dir);
    }
    let url = sqlite_create_mode(config.database.url.expose());
    calbridge_store::open_with(
        &url,
        calbridge_store::PoolSize(config.database.max_connections),
    )
    .await
    .map_err(|source| BootstrapError::Database {
        url: config.database.url.redacted(),
        source,
    })
}

/// `sqlite://calbridge.db` must create the file on first start.
fn sqlite_create_mode(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// On an empty database (no tenant yet), create the default tenant and an admin key with every scope;
/// returns its token, which the caller prints once. Later starts return `None`.
pub async fn bootstrap_admin(
    store: &dyn Store,
) -> Result<Option<(Tenant, String)>, BootstrapError> {
    if !store.list_tenants().await?.is_empty() {
        return Ok(None);
    }
    let tenant = store.create_tenant(DEFAULT_TENANT).await?;
    let (_key, token) =
        crate::api::keys::make_key(store, tenant.id, "bootstrap admin", &Scope::ALL).await?;
    Ok(Some((tenant, token)))
}

/// Find a tenant by id or name, creating it by name when absent (for `calbridge keys create --tenant`).
pub async fn tenant_by_name_or_id(
    store: &dyn Store,
    name_or_id: &str,
) -> Result<Tenant, BootstrapError> {
    let tenants = store.list_tenants().await?;
    if let Some(found) = tenants
        .iter()
        .find(|t| t.id.to_string() == name_or_id || t.name == name_or_id)
    {
        return Ok(found.clone());
    }
    Ok(store.create_tenant(name_or_id).await?)
}
