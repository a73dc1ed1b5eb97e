//! Expansion throughput on an iCalendar file: parses it once, then expands every series in the window
//! (as `calbridge ics expand` does, without printing) three times and reports the best run.
//!
//! `cargo run --release -p calbridge-model --example expand_bench -- FILE FROM TO TZ`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use calbridge_model::datetime::TzId;
use calbridge_model::expand::{ExpandOptions, Window};
use calbridge_model::occurrences::{calendar_resolver, parse_bound, series_occurrences};
use calbridge_model::tz::TzResolver;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, from, to, tz] = args.as_slice() else {
        return Err("usage: expand_bench FILE FROM TO TZ".into());
    };
    let bytes = std::fs::read(file)?;
    let calendars = calbridge_model::ical::parse_all(&bytes, &calbridge_model::Limits::DEFAULT)?;
    let floating = TzResolver::default().resolve(&TzId::parse(tz)?)?.zone;
    let window = Window {
        from: parse_bound(from, &floating)?,
        to: parse_bound(to, &floating)?,
    };
    let options = ExpandOptions {
        floating_zone: floating,
        ..ExpandOptions::default()
    };
    let mut best = f64::MAX;
    let mut count = 0usize;
    let mut series_count = 0usize;
    for _ in 0..3 {
        let started = Instant::now();
        count = 0;
        series_count = 0;
        for calendar in &calendars {
            let (resolver, _) = calendar_resolver(calendar);
            for series in calendar.series() {
                series_count += 1;
                for occurrence in series_occurrences(series, &resolver, window, &options)? {
                    occurrence?;
                    count += 1;
                }
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("{{\"series\": {series_count}, \"occurrences\": {count}, \"seconds\": {best}}}");
    Ok(())
}
