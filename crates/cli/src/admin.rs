//! What the admin commands that work on the server's database (`sync`, `conflicts`, `connections`)
//! share: they start the way the server does, so they see the same store with the same keys.

use std::path::PathBuf;

use calbridge_server::{AppState, bootstrap};
use calbridge_store::Tenant;

/// The configuration (file, environment, `--database-url`), the unsealed master key and the opened
/// store as the server's state, and the tenant named on the command line (by name or id).
pub(crate) async fn state_and_tenant(
    config_file: Option<&PathBuf>,
    database_url: Option<&str>,
    tenant: &str,
) -> anyhow::Result<(AppState, Tenant)> {
    let config = crate::serve::load_config(config_file, None, database_url)?;
    let master = bootstrap::master_key(&config)?;
    let store = bootstrap::open_store(&config).await?;
    let state = AppState::new(config, store, master.key);
    let tenant = bootstrap::tenant_by_name_or_id(state.store.as_ref(), tenant).await?;
    Ok((state, tenant))
}
