//! Benchmark data: a deterministic store of N event series written straight through the [`Store`] in large
//! transactions (`create_series_batch`), for the API benchmark (`scripts/bench-api.sh`) and anyone who wants
//! a big calendar to try queries on. Each series is iCalendar text put through exactly what the API's create
//! does ([`series::calendar_from_ical`] + [`series::prepare`]: model, normalized hash, expansion into
//! occurrence rows), so the rows are those a client writing the same events through the API would leave.
//!
//! The mix: a fifth of the series recur (weekly, bi-weekly, weekdays, monthly by weekday, yearly, some
//! endless), some of those with EXDATEs and moved-and-renamed overrides; the rest are single events of
//! 30–120 minutes, about one in twenty all-day; seven zones (among them Pacific/Auckland and
//! America/Sao_Paulo), spread over four calendars, starting in 2026.

use std::sync::Arc;
use std::time::Instant;

use calbridge_store::{CalendarId, NewCalendar, NewSeries, Store, StoreError, TenantId};
use jiff::civil::{Date, DateTime};

use crate::keys::Scope;
use crate::series;

#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Number of series (events) to write.
    pub events: usize,
    /// Seed of the generator: the same seed gives the same events.
    pub seed: u64,
    /// Series per transaction.
    pub batch: usize,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            events: 100_000,
            seed: 1,
            batch: 1000,
        }
    }
}

/// What was written, and how long it took.
#[derive(Debug)]
pub struct SeedReport {
    pub tenant: TenantId,
    pub calendars: Vec<CalendarId>,
    /// An `events:read` key of the tenant, shown once.
    pub token: String,
    pub series: usize,
    pub recurring: usize,
    pub occurrences: usize,
    /// Wall time of the whole run, and the part spent waiting on the store.
    pub seconds: f64,
    pub store_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("generated event {index} was refused: {detail}")]
    Prepare { index: usize, detail: String },
    #[error("the preparing thread stopped")]
    Stopped,
}

const ZONES: [&str; 7] = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "UTC",
    "America/Sao_Paulo",
    "Pacific/Auckland",
    "Europe/London",
];

/// A small deterministic generator (PCG-style LCG); the data must not change with a crate's version.
#[derive(Debug)]
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Self {
        let mut lcg = Self(seed ^ 0x9e37_79b9_7f4a_7c15);
        lcg.below(1);
        lcg
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn stamp(dt: DateTime) -> String {
    dt.strftime("%Y%m%dT%H%M%S").to_string()
}

const SUMMARIES: [&str; 8] = [
    "Team sync",
    "1:1",
    "Design review",
    "Customer call",
    "Lunch",
    "Planning, quarterly",
    "Dentist",
    "Standup",
];

/// The iCalendar text of series `index`, and whether it recurs.
pub fn generate(seed: u64, index: usize) -> (String, bool) {
    let mut rng = Lcg::new(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let uid = format!("bench-{seed}-{index}@calbridge.test");
    let zone = *rng.pick(&ZONES);
    let recurring = index.is_multiple_of(5);
    let day = Date::constant(2026, 1, 1)
        .checked_add(jiff::Span::new().days(rng.below(365) as i64))
        .unwrap_or(Date::constant(2026, 1, 1));
    let summary = format!("{} #{index}", rng.pick(&SUMMARIES));
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//calbridge//bench//EN".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{uid}"),
        "DTSTAMP:20260101T000000Z".to_owned(),
        format!("SUMMARY:{}", summary.replace(',', "\\,")),
    ];
    if rng.below(3) == 0 {
        lines.push(format!("LOCATION:Room {}", rng.below(40)));
    }
    let all_day = rng.below(20) == 0;
    let minutes = [30i64, 45, 60, 60, 90, 120][rng.below(6) as usize];
    let start = day.at(
        8 + rng.below(10) as i8,
        [0, 15, 30, 45][rng.below(4) as usize],
        0,
        0,
    );
    let end = start
        .checked_add(jiff::Span::new().minutes(minutes))
        .unwrap_or(start);
    if all_day {
        let next = day
            .checked_add(jiff::Span::new().days(1 + rng.below(3) as i64))
            .unwrap_or(day);
        lines.push(format!("DTSTART;VALUE=DATE:{}", day.strftime("%Y%m%d")));
        lines.push(format!("DTEND;VALUE=DATE:{}", next.strftime("%Y%m%d")));
    } else if zone == "UTC" {
        lines.push(format!("DTSTART:{}Z", stamp(start)));
        lines.push(format!("DTEND:{}Z", stamp(end)));
    } else {
        lines.push(format!("DTSTART;TZID={zone}:{}", stamp(start)));
        lines.push(format!("DTEND;TZID={zone}:{}", stamp(end)));
    }
    if rng.below(10) == 0 {
        lines.push("TRANSP:TRANSPARENT".to_owned());
    }
    let mut overrides = Vec::new();
    if recurring {
        let rule = match rng.below(8) {
            0 => "FREQ=WEEKLY;COUNT=26".to_owned(),
            1 => "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=20".to_owned(),
            2 => "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=15".to_owned(),
            3 => "FREQ=MONTHLY;BYDAY=2TU;COUNT=12".to_owned(),
            4 => "FREQ=WEEKLY;INTERVAL=2;UNTIL=20261231T235959Z".to_owned(),
            5 => "FREQ=YEARLY".to_owned(),
            6 => "FREQ=WEEKLY".to_owned(),
            _ => "FREQ=MONTHLY;COUNT=6".to_owned(),
        };
        lines.push(format!("RRULE:{rule}"));
        // Every third recurring series loses its second week and moves its third, renamed (only
        // rules that surely hold those instances; all-day series are left plain).
        let weekly_simple = rule.starts_with("FREQ=WEEKLY;COUNT") || rule == "FREQ=WEEKLY";
        if !all_day && weekly_simple && rng.below(3) == 0 {
            let week = |n: i64| {
                start
                    .checked_add(jiff::Span::new().weeks(n))
                    .unwrap_or(start)
            };
            let (removed, moved) = (week(1), week(2));
            let tz = |dt: DateTime| {
                if zone == "UTC" {
                    format!(":{}Z", stamp(dt))
                } else {
                    format!(";TZID={zone}:{}", stamp(dt))
                }
            };
            lines.push(format!("EXDATE{}", tz(removed)));
            let new_start = moved
                .checked_add(jiff::Span::new().hours(1))
                .unwrap_or(moved);
            let new_end = new_start
                .checked_add(jiff::Span::new().minutes(minutes))
                .unwrap_or(new_start);
            overrides.extend([
                "BEGIN:VEVENT".to_owned(),
                format!("UID:{uid}"),
                "DTSTAMP:20260101T000000Z".to_owned(),
                format!("RECURRENCE-ID{}", tz(moved)),
                format!("SUMMARY:{summary} (moved)"),
                format!("DTSTART{}", tz(new_start)),
                format!("DTEND{}", tz(new_end)),
                "END:VEVENT".to_owned(),
            ]);
        }
    }
    lines.push("END:VEVENT".to_owned());
    lines.extend(overrides);
    lines.push("END:VCALENDAR".to_owned());
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    (text, recurring)
}

/// Writes `options.events` series for a new tenant `name` (four calendars) and makes an `events:read`
/// key for it. Preparing (parse, expand) runs on a thread of its own, one batch ahead of the store.
pub async fn seed(
    store: Arc<dyn Store>,
    name: &str,
    options: &SeedOptions,
) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    let tenant = store.create_tenant(name).await?;
    let mut calendars = Vec::new();
    for (i, zone) in ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"]
        .iter()
        .enumerate()
    {
        let calendar = NewCalendar {
            name: format!("bench {i}"),
            time_zone: (*zone).to_owned(),
            owner: None,
        };
        calendars.push(store.create_calendar(tenant.id, calendar).await?.id);
    }
    let (_key, token) =
        crate::api::keys::make_key(store.as_ref(), tenant.id, "bench", &[Scope::EventsRead])
            .await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<NewSeries>, SeedError>>(2);
    let (events, seed, batch_size) = (options.events, options.seed, options.batch.max(1));
    let cals = calendars.clone();
    let producer = std::thread::spawn(move || {
        let zones: Vec<jiff::tz::TimeZone> =
            ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"]
                .iter()
                .map(|z| jiff::tz::TimeZone::get(z).unwrap_or(jiff::tz::TimeZone::UTC))
                .collect();
        let mut batch = Vec::with_capacity(batch_size);
        for index in 0..events {
            let (text, _) = generate(seed, index);
            let which = index % cals.len();
            let prepared = series::calendar_from_ical(text.as_bytes(), usize::MAX)
                .and_then(|calendar| series::prepare(&calendar, &zones[which]));
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.blocking_send(Err(SeedError::Prepare {
                        index,
                        detail: e.to_string(),
                    }));
                    return;
                }
            };
            batch.push(NewSeries {
                calendar_id: cals[which],
                uid: prepared.uid,
                ical: prepared.ical,
                model_json: prepared.model_json,
                hash: prepared.hash,
                occurrences: prepared.occurrences,
            });
            if batch.len() == batch_size
                && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });

    let mut report = SeedReport {
        tenant: tenant.id,
        calendars,
        token,
        series: 0,
        recurring: 0,
        occurrences: 0,
        seconds: 0.0,
        store_seconds: 0.0,
    };
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        report.series += batch.len();
        report.recurring += batch
            .iter()
            .filter(|s| s.occurrences.rows.iter().any(|r| r.recurrence_id.is_some()))
            .count();
        report.occurrences += batch
            .iter()
            .map(|s| s.occurrences.rows.len())
            .sum::<usize>();
        let writing = Instant::now();
        store.create_series_batch(tenant.id, batch).await?;
        report.store_seconds += writing.elapsed().as_secs_f64();
    }
    producer.join().map_err(|_| SeedError::Stopped)?;
    if report.series != events {
        return Err(SeedError::Stopped);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
