//! `calbridge ics …`: work on iCalendar files directly.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use calbridge_model::datetime::TzId;
use calbridge_model::expand::{ExpandOptions, OccurrenceTime, Window};
use calbridge_model::occurrences::{
    SeriesOccurrence, calendar_resolver, parse_bound, series_occurrences,
};
use calbridge_model::tz::TzResolver;
use calbridge_model::{Limits, ical};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum IcsCommand {
    /// Validate an iCalendar file: print a summary, or the error with its line number (exit code 1).
    Check {
        /// The file to read.
        file: PathBuf,
    },
    /// Print the occurrences whose start lies in [FROM, TO), one per line:
    /// UID<TAB>RECURRENCE-ID<TAB>start<TAB>end, sorted by start then UID. Times are RFC 3339 UTC,
    /// all-day dates YYYY-MM-DD. RECURRENCE-ID is the instance's original start in the same form
    /// (empty for a non-recurring event).
    Expand {
        /// iCalendar files (several VCALENDARs per file are fine).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Window start: RFC 3339 (2024-01-01T00:00:00Z), or a date / local date-time read in --tz.
        #[arg(long)]
        from: String,
        /// Window end (exclusive), same forms as --from.
        #[arg(long)]
        to: String,
        /// Zone for floating times and all-day dates (IANA or Windows name).
        #[arg(long, default_value = "UTC")]
        tz: String,
    },
}

pub fn run(command: IcsCommand) -> anyhow::Result<()> {
    match command {
        IcsCommand::Check { file } => check(&file),
        IcsCommand::Expand {
            files,
            from,
            to,
            tz,
        } => expand(&files, &from, &to, &tz),
    }
}

fn position(o: &SeriesOccurrence, zone: &jiff::tz::TimeZone) -> jiff::Timestamp {
    match o.start {
        OccurrenceTime::At(ts) => ts,
        OccurrenceTime::Date(d) => zone
            .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible()
            .unwrap_or(jiff::Timestamp::MIN),
    }
}

fn expand(files: &[PathBuf], from: &str, to: &str, tz: &str) -> anyhow::Result<()> {
    let floating = TzResolver::default()
        .resolve(&TzId::parse(tz)?)
        .with_context(|| format!("--tz {tz}"))?
        .zone;
    let window = Window {
        from: parse_bound(from, &floating).context("--from")?,
        to: parse_bound(to, &floating).context("--to")?,
    };
    anyhow::ensure!(window.from <= window.to, "--from must not be after --to");
    let options = ExpandOptions {
        floating_zone: floating.clone(),
        ..ExpandOptions::default()
    };
    let mut out: Vec<SeriesOccurrence> = Vec::new();
    let mut failures = 0usize;
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let calendars = calbridge_model::ical::parse_all(&bytes, &calbridge_model::Limits::DEFAULT)
            .with_context(|| format!("{}", file.display()))?;
        for calendar in &calendars {
            let (resolver, tz_errors) = calendar_resolver(calendar);
            for e in tz_errors {
                eprintln!("warning: {}: {e}", file.display());
            }
            for series in calendar.series() {
                let result = series_occurrences(series, &resolver, window, &options)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>());
                match result {
                    Ok(occurrences) => out.extend(occurrences),
                    Err(e) => {
                        failures += 1;
                        eprintln!("error: {}: {e}", file.display());
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| {
        position(a, &floating)
            .cmp(&position(b, &floating))
            .then_with(|| a.uid.cmp(&b.uid))
            .then_with(|| a.recurrence_id.cmp(&b.recurrence_id))
    });
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for o in &out {
        writeln!(
            w,
            "{}\t{}\t{}\t{}",
            o.uid,
            o.recurrence_id.map(|r| r.to_rfc3339()).unwrap_or_default(),
            o.start.to_rfc3339(),
            o.end.to_rfc3339()
        )?;
    }
    w.flush()?;
    anyhow::ensure!(failures == 0, "{failures} series could not be expanded");
    Ok(())
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
    // Valid syntax can still name a zone nobody defines; expansion would fail on it later, so it is
    // reported here as a warning (the file itself is well-formed, so the exit code stays 0).
    let mut warnings = Vec::new();
    for calendar in &calendars {
        let (resolver, vtimezone_errors) = calendar_resolver(calendar);
        warnings.extend(vtimezone_errors.iter().map(ToString::to_string));
        for tzid in calendar.tzids_used() {
            let resolved = TzId::parse(&tzid)
                .map_err(|e| e.to_string())
                .and_then(|id| resolver.resolve(&id).map_err(|e| e.to_string()));
            if let Err(why) = resolved {
                warnings.push(why);
            }
        }
    }
    let mut err = std::io::stderr().lock();
    for warning in &warnings {
        writeln!(err, "{}: warning: {warning}", file.display())?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: ok: {} calendar(s), {} series, {} override(s), {} time zone(s), {} other component(s), {} warning(s)",
        file.display(),
        calendars.len(),
        series,
        overrides,
        timezones,
        others,
        warnings.len()
    )?;
    Ok(())
}
