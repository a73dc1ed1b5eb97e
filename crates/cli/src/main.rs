//! The `calbridge` binary: parses the command line and hands each command to the crate that owns it.
//! Each command group lives in its own module here and holds no logic of its own.

mod emulator;
mod ics;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Work on iCalendar files: validate, expand occurrences.
    Ics {
        #[command(subcommand)]
        command: ics::IcsCommand,
    },
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
        Some(command) => match command {
            Command::Ics { command } => ics::run(command),
            Command::Emulator(args) => {
                tokio::runtime::Runtime::new()?.block_on(emulator::run(args))
            }
        },
    }
}
