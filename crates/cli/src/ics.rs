//! `calbridge ics …`: work on iCalendar files directly.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use calbridge_model::{Limits, ical};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum IcsCommand {
    /// Validate an iCalendar file: print a summary, or the error with its line number (exit code 1).
    Check {
        /// The file to read.
        file: PathBuf,
    },
}

pub fn run(command: IcsCommand) -> anyhow::Result<()> {
    match command {
        IcsCommand::Check { file } => check(&file),
    }
}

fn check(file: &PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let calendars = match ical::parse_all(&bytes, &Limits::DEFAULT) {
        Ok(calendars) => calendars,
        Err(error) => {
            // The error is the command's answer, not a failure of the tool: print it like a compiler
            // diagnostic (FILE:LINE: message) and exit 1, without anyhow's backtrace.
            writeln!(
                std::io::stderr().lock(),
                "{}:{}: error: {}",
                file.display(),
                error.line,
                error.kind
            )?;
            std::process::exit(1);
        }
    };
    let series: usize = calendars.iter().map(|c| c.series().len()).sum();
    let overrides: usize = calendars.iter().map(|c| c.override_count()).sum();
    let timezones: usize = calendars.iter().map(|c| c.timezones().len()).sum();
    let others: usize = calendars.iter().map(|c| c.other_components().len()).sum();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: ok: {} calendar(s), {} series, {} override(s), {} time zone(s), {} other component(s)",
        file.display(),
        calendars.len(),
        series,
        overrides,
        timezones,
        others
    )?;
    Ok(())
}
