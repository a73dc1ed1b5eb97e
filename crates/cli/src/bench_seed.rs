//! `calbridge bench-seed` (hidden): fills a database with deterministic benchmark events through the store
//! and prints, as one JSON line, an `events:read` key for them and what was written.

use std::path::PathBuf;

use calbridge_server::benchseed::{SeedOptions, seed};
use calbridge_server::bootstrap;

#[derive(Debug, clap::Args)]
pub struct BenchSeedArgs {
    /// `sqlite://PATH` or `postgres://…` (default from the configuration).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Number of event series.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Generator seed (the same seed writes the same events).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Series per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Name of the tenant to create for them.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
}

#[allow(clippy::print_stdout)]
pub fn run(config_file: Option<&PathBuf>, args: BenchSeedArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(config_file, None, args.database_url.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let store = bootstrap::open_store(&config).await?;
        let options = SeedOptions {
            events: args.events,
            seed: args.seed,
            batch: args.batch,
        };
        let report = seed(store, &args.tenant, &options).await?;
        println!(
            "{}",
            serde_json::json!({
                "token": report.token,
                "tenant": report.tenant.to_string(),
                "calendars": report.calendars.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "series": report.series,
                "recurring": report.recurring,
                "occurrences": report.occurrences,
                "seconds": (report.seconds * 10.0).round() / 10.0,
                "store_seconds": (report.store_seconds * 10.0).round() / 10.0,
            })
        );
        anyhow::Ok(())
    })
}
