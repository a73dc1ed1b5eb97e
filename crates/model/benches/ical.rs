//! iCalendar parse and write throughput over one file (see `scripts/bench-ical.sh`, which generates the
//! input and measures python `icalendar` on the same file beside it).
//!
//! usage: cargo bench -p calbridge-model --bench ical -- FILE [ROUNDS]
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use calbridge_model::{ical, normalized_hash};

fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        last = Some(value);
    }
    match last {
        Some(value) => (best, value),
        None => (best, f()),
    }
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(path) = args.first() else {
        return Err("usage: ical FILE [ROUNDS]".into());
    };
    let rounds: usize = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let input = std::fs::read(path)?;
    let size = input.len();

    let (parse_time, parsed) = best(rounds, || ical::parse(&input));
    let calendar = parsed?;
    let (untouched_time, untouched) = best(rounds, || ical::write(&calendar));
    assert_eq!(untouched, input, "untouched output differs from the input");
    let detached = calendar.clone().without_sources();
    let (write_time, written) = best(rounds, || ical::write(&detached));
    let (hash_time, _) = best(rounds, || {
        calendar
            .series()
            .iter()
            .map(normalized_hash)
            .collect::<Vec<_>>()
    });

    println!("file_bytes={size}");
    println!("series={}", calendar.series().len());
    println!("parse_mb_s={:.1}", mb_per_s(size, parse_time));
    println!(
        "write_serialize_mb_s={:.1}",
        mb_per_s(written.len(), write_time)
    );
    println!("write_untouched_mb_s={:.1}", mb_per_s(size, untouched_time));
    println!(
        "hash_series_per_s={:.0}",
        calendar.series().len() as f64 / hash_time.as_secs_f64()
    );
    Ok(())
}
