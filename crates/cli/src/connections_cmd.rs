//! `calbridge connections list|show|test`: the admin tasks of the connections API for scripts, run
//! against the server's database with the API's own code (no logic here). Credentials never print.

use std::path::PathBuf;

use anyhow::Context as _;
use calbridge_providers::{Diagnosis, DiagnosisKind};
use calbridge_server::api::sync::context;
use calbridge_server::{bootstrap, syncing};

use crate::admin::state_and_tenant;

#[derive(Debug, clap::Subcommand)]
pub enum ConnectionsCommand {
    /// Every connection of the tenant, one per line: id, provider, status, links, name.
    List {
        #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// One connection with its links, as JSON (never its credentials).
    Show {
        id: String,
        #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// "Test Connection": reach the provider with the stored credentials and say what is wrong; exits 1
    /// unless the diagnosis is `ok`.
    Test {
        id: String,
        #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[allow(clippy::print_stdout)]
pub fn run(config_file: Option<&PathBuf>, command: ConnectionsCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match command {
            ConnectionsCommand::List {
                tenant,
                database_url,
            } => {
                let (state, tenant) =
                    state_and_tenant(config_file, database_url.as_deref(), &tenant).await?;
                for c in state.store.list_connections(tenant.id).await? {
                    let links = state.store.list_links(tenant.id, c.id).await?;
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        c.id,
                        c.provider.as_str(),
                        c.status.as_str(),
                        links.len(),
                        c.name
                    );
                }
            }
            ConnectionsCommand::Show {
                id,
                tenant,
                database_url,
            } => {
                let (state, tenant) =
                    state_and_tenant(config_file, database_url.as_deref(), &tenant).await?;
                let id = id
                    .parse()
                    .with_context(|| format!("`{id}` is not a connection id"))?;
                let connection = state.store.get_connection(tenant.id, id).await?;
                let links: Vec<serde_json::Value> = state
                    .store
                    .list_links(tenant.id, id)
                    .await?
                    .into_iter()
                    .map(|l| {
                        serde_json::json!({
                            "id": l.id,
                            "remote_calendar_id": l.remote_calendar_id,
                            "remote_name": l.remote_name,
                            "status": l.status,
                            "last_full_sync_at": l.last_full_sync_at,
                        })
                    })
                    .collect();
                // `Connection` never serializes its sealed credentials.
                let mut view = serde_json::to_value(&connection)?;
                view["links"] = serde_json::Value::Array(links);
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            ConnectionsCommand::Test {
                id,
                tenant,
                database_url,
            } => {
                let (state, tenant) =
                    state_and_tenant(config_file, database_url.as_deref(), &tenant).await?;
                let id = id
                    .parse()
                    .with_context(|| format!("`{id}` is not a connection id"))?;
                let connection = state.store.get_connection(tenant.id, id).await?;
                let ctx = context(&state).map_err(|e| anyhow::anyhow!("{e}"))?;
                let diagnosis = match syncing::open_provider(&ctx, &connection).await {
                    Ok(provider) => provider.test_connection().await,
                    Err(syncing::SyncServiceError::Provider(e)) => Diagnosis::from_error(&e),
                    Err(e) => anyhow::bail!("{e}"),
                };
                println!(
                    "{}\t{}",
                    serde_json::to_value(diagnosis.kind)?
                        .as_str()
                        .unwrap_or("unknown"),
                    diagnosis.message
                );
                for calendar in &diagnosis.calendars {
                    println!("  {}\t{}", calendar.id.as_str(), calendar.name);
                }
                if diagnosis.kind != DiagnosisKind::Ok {
                    anyhow::bail!("the connection test did not pass");
                }
            }
        }
        Ok(())
    })
}
