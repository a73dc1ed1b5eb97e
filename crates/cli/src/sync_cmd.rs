//! `calbridge sync` and `calbridge conflicts …`: the API's own code run against the server's database
//! (no sync logic here), with a progress bar and a summary.

use std::path::PathBuf;

use anyhow::Context as _;
use calbridge_server::api::conflicts::{ConflictQuery, ResolvingView, conflict_view, resolve};
use calbridge_server::api::sync::{context, run_view};
use calbridge_server::{bootstrap, syncing};

use crate::admin::state_and_tenant;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Only this connection (default: every active connection of the tenant).
    #[arg(long)]
    pub connection: Option<String>,
    /// A full reconciliation instead of an incremental sync.
    #[arg(long)]
    pub full: bool,
    /// Tenant name or id.
    #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
    pub tenant: String,
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConflictsCommand {
    /// Open conflicts (or `--state resolved|all`), one per line: id, kind, state, event UID, detected
    /// at, options, and `resolving:<option>` while a resolution is in progress (`-` otherwise; `show`
    /// says who decided it and since when).
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// One conflict with both versions, the base and the options, as JSON (a resolution in progress
    /// is also said in a line on stderr).
    Show {
        id: String,
        #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Apply an option (keep_local, keep_remote, keep_both, merge, delete_everywhere, restore) to both
    /// systems.
    Resolve {
        id: String,
        #[arg(long)]
        option: String,
        /// For `merge`: the merged fields as JSON, e.g. `{"summary": "Title", "start": {"from": "remote"}}`.
        #[arg(long)]
        merged: Option<String>,
        #[arg(long, default_value = bootstrap::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        database_url: Option<String>,
    },
}

struct Bar(ProgressBar);

impl syncing::Progress for Bar {
    fn links_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn link_done(&self, connection: &str, remote: &str, status: &str) {
        self.0
            .println(format!("{status:>9}  {connection}  {remote}"));
        self.0.inc(1);
    }
}

#[allow(clippy::print_stdout)]
pub fn sync(config_file: Option<&PathBuf>, args: SyncArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (state, tenant) =
            state_and_tenant(config_file, args.database_url.as_deref(), &args.tenant).await?;
        let connection = match &args.connection {
            Some(id) => Some(
                id.parse()
                    .with_context(|| format!("`{id}` is not a connection id"))?,
            ),
            None => None,
        };
        let ctx = context(&state).map_err(|e| anyhow::anyhow!("{e}"))?;
        let run = syncing::start_run(ctx.store.as_ref(), tenant.id, connection, args.full).await?;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} links {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let progress = Bar(bar.clone());
        let done =
            syncing::run_sync(&ctx, tenant.id, run.id, connection, args.full, &progress).await?;
        bar.finish_and_clear();
        let view = run_view(done);
        println!("run {}  {}", view.id, view.status);
        if let Some(counts) = view.counts.as_object() {
            for (action, n) in counts {
                println!("  {action:<16} {n}");
            }
        }
        println!("  requests         {}", view.requests);
        if let Some(ms) = view.duration_ms {
            println!("  duration         {ms} ms");
        }
        for error in view.errors.as_array().into_iter().flatten() {
            println!("  error: {error}");
        }
        if view.status == "failed" {
            anyhow::bail!("the sync failed");
        }
        Ok(())
    })
}

#[allow(clippy::print_stdout)]
pub fn conflicts(config_file: Option<&PathBuf>, command: ConflictsCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match command {
            ConflictsCommand::List {
                state: filter_state,
                kind,
                connection,
                tenant,
                database_url,
            } => {
                let (state, tenant) =
                    state_and_tenant(config_file, database_url.as_deref(), &tenant).await?;
                let filter = ConflictQuery {
                    state: filter_state,
                    kind,
                    connection_id: connection,
                }
                .filter()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                for c in state.store.list_conflicts(tenant.id, &filter).await? {
                    let view = conflict_view(c);
                    // A last column, so the others keep their places for scripts.
                    let resolving = view
                        .resolving
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |r| format!("resolving:{}", r.option));
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{resolving}",
                        view.id,
                        view.kind,
                        view.state,
                        view.event_uid,
                        view.detected_at,
                        view.options
                    );
                }
            }
            ConflictsCommand::Show {
                id,
                tenant,
                database_url,
            } => {
                let (state, tenant) =
                    state_and_tenant(config_file, database_url.as_deref(), &tenant).await?;
                let id = id
                    .parse()
                    .with_context(|| format!("`{id}` is not a conflict id"))?;
                let view = conflict_view(state.store.get_conflict(tenant.id, id).await?);
                // Said to the person on stderr: stdout stays one JSON document for scripts.
                if let Some(r) = &view.resolving {
                    eprintln!("{}", in_progress_line(r));
                }
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            ConflictsCommand::Resolve {
                id,
                option,
                merged,
                tenant,
                database_url,
            } => {
                let merged: Option<serde_json::Value> = merged
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .context("--merged is not JSON")?;
                let (state, tenant) =
                    state_and_tenant(config_file, database_url.as_deref(), &tenant).await?;
                let id = id
                    .parse()
                    .with_context(|| format!("`{id}` is not a conflict id"))?;
                let resolved = resolve(&state, tenant.id, "cli", id, &option, merged.as_ref())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("resolved {} with {option}", resolved.id);
            }
        }
        Ok(())
    })
}

/// `resolution in progress: keep_local by key:admin, since 2026-…` (with the `merged` body of a merge,
/// and `, resumed 2026-…` when a retry or a sync took it up again: that, not `since`, tells whether it
/// may be running now).
fn in_progress_line(r: &ResolvingView) -> String {
    let merged = r
        .merged
        .as_ref()
        .map(|m| format!(" (merged: {m})"))
        .unwrap_or_default();
    let resumed = r
        .resumed_at
        .as_ref()
        .map(|at| format!(", resumed {at}"))
        .unwrap_or_default();
    format!(
        "resolution in progress: {}{merged} by {}, since {}{resumed}",
        r.option, r.decided_by, r.since
    )
}
