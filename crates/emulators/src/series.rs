//! Expansion of recurring series into instance start times, for calendarView, `/instances` and Google's
//! `singleEvents=true`. The recurrence engine is `calbridge-model`'s (`expand`); this module only turns a
//! stored master into its `SeriesInput`.

use calbridge_model::datetime::{CalDateTime, DateOrPeriod, TzId, ValueType};
use calbridge_model::expand::{
    ExpandOptions, OccurrenceTime, SeriesEnd, SeriesInput, Window, expand,
};
use calbridge_model::mapping::graph::{PatternedRecurrence, to_rrule};
use calbridge_model::rrule::RRule;
use calbridge_model::tz::TzResolver;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::store::StoredEvent;

/// Instances generated for one request at most; a client listing an endless series pages through a bounded
/// horizon instead.
const MAX_INSTANCES: usize = 5_000;

/// How far past today an unbounded request (no window) expands an endless series ([unv]: Google's own
/// horizon is not documented).
const HORIZON_DAYS: i64 = 730;

/// Original start times of the master's generated instances that overlap `[from, to)`.
pub(crate) fn occurrences(
    master: &StoredEvent,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<Timestamp> {
    let Some(series) = series_input(master) else {
        return Vec::new();
    };
    let length = master.end.duration_since(master.start);
    let start = from
        .and_then(|f| f.checked_sub(length).ok())
        .unwrap_or(master.start);
    let end = to.unwrap_or_else(|| {
        master
            .start
            .max(Timestamp::now())
            .checked_add(SignedDuration::from_hours(24 * HORIZON_DAYS))
            .unwrap_or(Timestamp::MAX)
    });
    if end <= start {
        return Vec::new();
    }
    let Ok(iter) = expand(
        &series,
        &TzResolver::default(),
        Window {
            from: start,
            to: end,
        },
        &ExpandOptions::default(),
    ) else {
        return Vec::new();
    };
    iter.filter_map(Result::ok)
        .take(MAX_INSTANCES)
        .filter_map(|o| match o.recurrence_id.unwrap_or(o.start) {
            OccurrenceTime::At(ts) => Some(ts),
            OccurrenceTime::Date(d) => d.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp()),
        })
        .collect()
}

fn cal_time(ts: Timestamp, all_day: bool, zone: &str) -> Option<CalDateTime> {
    if all_day {
        return Some(CalDateTime::Date(ts.to_zoned(TimeZone::UTC).date()));
    }
    if zone == "UTC" {
        return Some(CalDateTime::Utc(ts));
    }
    let tz = TimeZone::get(zone).ok()?;
    Some(CalDateTime::Zoned {
        local: ts.to_zoned(tz).datetime(),
        tzid: TzId::parse(zone).ok()?,
    })
}

fn series_input(master: &StoredEvent) -> Option<SeriesInput> {
    let dtstart = cal_time(master.start, master.all_day, &master.zone)?;
    let end = cal_time(master.end, master.all_day, &master.zone).map(SeriesEnd::End);
    let mut series = SeriesInput::single(master.id.clone(), dtstart, end);
    match master.body.get("recurrence")? {
        // Google: RFC 5545 lines.
        Value::Array(lines) => {
            for line in lines.iter().filter_map(Value::as_str) {
                add_line(&mut series, line);
            }
        }
        // Graph: patternedRecurrence, mapped by the model's Graph mapping.
        Value::Object(_) => add_graph_pattern(&mut series, master)?,
        _ => return None,
    }
    series.is_recurring().then_some(series)
}

/// One `RRULE:` / `EXRULE:` / `RDATE...:` / `EXDATE...:` line; unreadable lines are ignored (Google rejects
/// them on write already).
fn add_line(series: &mut SeriesInput, line: &str) {
    let Some((head, values)) = line.split_once(':') else {
        return;
    };
    let mut parts = head.split(';');
    let name = parts.next().unwrap_or_default().to_ascii_uppercase();
    let mut tzid = None;
    let mut value_type = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            match k.to_ascii_uppercase().as_str() {
                "TZID" => tzid = Some(v.to_string()),
                "VALUE" => value_type = ValueType::parse(v).ok(),
                _ => {}
            }
        }
    }
    match name.as_str() {
        "RRULE" => series.rrules.extend(RRule::parse(values).ok()),
        "EXRULE" => series.exrules.extend(RRule::parse(values).ok()),
        "EXDATE" | "RDATE" => {
            for v in values.split(',') {
                if let Ok(at) = CalDateTime::parse(v, tzid.as_deref(), value_type) {
                    if name == "EXDATE" {
                        series.exdates.push(at);
                    } else {
                        series.rdates.push(DateOrPeriod::At(at));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Graph patternedRecurrence → RRULE through the model's mapping; the rule runs in `recurrenceTimeZone`
/// when given (for `endDate`), the event's zone otherwise.
fn add_graph_pattern(series: &mut SeriesInput, master: &StoredEvent) -> Option<()> {
    let rec: PatternedRecurrence =
        serde_json::from_value(master.body.get("recurrence")?.clone()).ok()?;
    let zone = rec
        .range
        .recurrence_time_zone
        .as_deref()
        .and_then(crate::graph::resolve_zone)
        .or_else(|| TimeZone::get(&master.zone).ok())
        .unwrap_or(TimeZone::UTC);
    series
        .rrules
        .push(to_rrule(&rec, &zone, master.all_day).ok()?);
    Some(())
}

/// Whether a (normalised) Graph recurrence maps to a rule; the reason when it does not.
pub(crate) fn check_graph_pattern(recurrence: &Value, all_day: bool) -> Result<(), String> {
    let rec: PatternedRecurrence =
        serde_json::from_value(recurrence.clone()).map_err(|e| e.to_string())?;
    to_rrule(&rec, &TimeZone::UTC, all_day)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The original starts of the occurrences just before and after `original` (for Graph's rule that a
/// moved occurrence may not cross its neighbours' days).
pub(crate) fn neighbours(
    master: &StoredEvent,
    original: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let span = SignedDuration::from_hours(24 * 400);
    let from = original.checked_sub(span).ok();
    let to = original.checked_add(span).ok();
    let all = occurrences(master, from, to);
    let before = all.iter().rev().find(|t| **t < original).copied();
    let after = all.iter().find(|t| **t > original).copied();
    (before, after)
}
