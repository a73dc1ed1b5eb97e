//! The `calbridge` binary: parses the command line and hands each command to the crate that owns it.
//! Each command group lives in its own module here and holds no logic of its own.

use clap::{CommandFactory, Parser, Subcommand};

mod admin;
mod bench_seed;
mod config_cmd;
mod connections_cmd;
mod demo;
mod emulator;
mod ics;
mod keys;
mod serve;
mod sync_cmd;

#[derive(Debug, Parser)]
#[command(
    name = "calbridge",
    version,
    about = "Self-hosted calendar integration: keeps an application's calendars in step with Microsoft 365, Google, CalDAV and ICS feeds"
)]
struct Cli {
    /// Configuration file (TOML); see `calbridge config example`.
    #[arg(long, global = true, env = "CALBRIDGE_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the sync workers.
    Serve(serve::ServeArgs),
    /// The service plus Microsoft and Google emulators, seeded, connected, synced, with a conflict to resolve.
    Demo(demo::DemoArgs),
    /// Bring the database schema up to date and exit.
    Migrate(serve::MigrateArgs),
    /// Manage API keys and the master key.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Work on iCalendar files: validate, expand occurrences.
    Ics {
        #[command(subcommand)]
        command: ics::IcsCommand,
    },
    /// Run a Microsoft Graph or Google Calendar emulator (tests, demo, benchmarks).
    Emulator(emulator::EmulatorArgs),
    /// One sync now, with a progress bar and a summary.
    Sync(sync_cmd::SyncArgs),
    /// List, show and test connections (the connections API's admin tasks, for scripts).
    #[command(subcommand)]
    Connections(connections_cmd::ConnectionsCommand),
    /// List, show and resolve sync conflicts.
    #[command(subcommand)]
    Conflicts(sync_cmd::ConflictsCommand),
    /// Fill a database with deterministic benchmark events (scripts/bench-api.sh).
    #[command(hide = true)]
    BenchSeed(bench_seed::BenchSeedArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The service logs at its configured level; a one-shot command (sync, conflicts, ...) keeps
    // stderr for its progress and errors and logs only when asked to with `RUST_LOG`.
    if std::env::var_os("RUST_LOG").is_some() {
        calbridge_server::telemetry::init_logging(&calbridge_server::config::LogConfig::default());
    }
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
        Some(command) => match command {
            Command::Serve(args) => serve::serve(cli.config.as_ref(), args),
            Command::Demo(args) => demo::run(cli.config.as_ref(), args),
            Command::Migrate(args) => serve::migrate(cli.config.as_ref(), args),
            Command::Keys(command) => keys::run(cli.config.as_ref(), command),
            Command::Sync(args) => sync_cmd::sync(cli.config.as_ref(), args),
            Command::Connections(command) => connections_cmd::run(cli.config.as_ref(), command),
            Command::Conflicts(command) => sync_cmd::conflicts(cli.config.as_ref(), command),
            Command::Config(command) => config_cmd::run(command),
            Command::BenchSeed(args) => bench_seed::run(cli.config.as_ref(), args),
            Command::Ics { command } => ics::run(command),
            Command::Emulator(args) => {
                tokio::runtime::Runtime::new()?.block_on(emulator::run(args))
            }
        },
    }
}
