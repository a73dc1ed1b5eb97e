//! The `calbridge` binary: parses the command line and hands each command to the crate that owns it.
//! Each command group lives in its own module here and holds no logic of its own.

use clap::{CommandFactory, Parser, Subcommand};

mod emulator;

#[derive(Debug, Parser)]
#[command(
    name = "calbridge",
    version,
    about = "Self-hosted calendar integration: keeps an application's calendars in step with Microsoft 365, Google, CalDAV and ICS feeds"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Microsoft Graph or Google Calendar emulator (tests, demo, benchmarks).
    Emulator(emulator::EmulatorArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
        Some(Command::Emulator(args)) => {
            tokio::runtime::Runtime::new()?.block_on(emulator::run(args))
        }
    }
}
