//! A series as the store keeps it: its iCalendar text, its JSON view (the event API's fields), its
//! normalized hash, its span in time, and its occurrence index rows with the per-occurrence fields a window
//! listing shows. The server's events API and the sync engine both write series through [`prepare`], so a
//! series written by sync reads back through the API exactly like one written by a client.
//!
//! Pure like the rest of the crate: the index horizon is measured from a `now` the caller hands in.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, EventSeries};
use crate::datetime::CalDateTime;
use crate::event::{Event, EventEnd};
use crate::expand::{ExpandOptions, OccurrenceTime, Window};
use crate::occurrences::{OccurrenceError, calendar_resolver, series_occurrences};
use crate::tz::TzResolver;
use crate::{ical, normalized_hash};

/// The PRODID of every calendar object calbridge writes itself.
pub const PRODID: &str = "-//calbridge//calbridge//EN";
/// How far ahead of `now` the occurrence index of an endless series reaches; later windows are filled in
/// when the index is extended (the scheduler's job).
pub const INDEX_HORIZON_DAYS: i64 = 2 * 366;
/// Most occurrence rows one series may put in the index; past this the index stops early (and records
/// where), so one hostile RRULE cannot fill the database. A property of the index, not an API limit: a
/// series synced in from a provider is bounded the same way as one written through the API.
pub const MAX_ROWS_PER_SERIES: usize = 20_000;
/// Occurrences walked to find where a bounded series ends; past this its span is open-ended, which only
/// makes it take part in more windows (never fewer).
const SPAN_SCAN_LIMIT: usize = 5_000;

/// Why a series cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The calendar object holds no series.
    #[error("the iCalendar object holds no VEVENT")]
    NoEvent,
    /// Writing the calendar back produced bytes that are not UTF-8 (the store keeps text).
    #[error("iCalendar must be UTF-8")]
    NotUtf8,
    /// The series' recurrence (or a time zone it names) cannot be expanded into occurrences.
    #[error("the event cannot be expanded: {0}")]
    NotExpandable(#[source] OccurrenceError),
    /// A time of the series, or the index horizon, falls outside the representable range.
    #[error(transparent)]
    OutOfRange(#[from] jiff::Error),
    /// The JSON view or an occurrence's fields could not be written.
    #[error("the event's JSON view cannot be written: {0}")]
    Json(#[from] serde_json::Error),
}

/// An event (series master) as the API shows it.
// Field order is the order of the stored JSON (`series.model`) and of the API's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "utoipa",
    derive(utoipa::ToSchema),
    schema(as = EventFields)
)]
pub struct SeriesFields {
    pub uid: String,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub all_day: bool,
    /// The zone of `start`/`end` as written (`UTC` for UTC times; absent for floating and all-day).
    pub time_zone: Option<String>,
    pub status: Option<String>,
    pub transparency: Option<String>,
    pub rrule: Option<String>,
    pub exdates: Vec<String>,
    /// How many single occurrences are changed by overrides (see the iCalendar form for them).
    pub overrides: usize,
}

/// The fields of one occurrence that the index keeps in its `data` column, for window listings.
///
/// Declared in alphabetical order: that is the order rows have always been written in (as a sorted JSON
/// map), so rows written before and after this type existed are byte for byte alike. Every field is
/// optional, so a row that lacks one (or an older row) still reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OccurrenceFields {
    /// The exclusive end date of an all-day occurrence.
    pub end_date: Option<String>,
    pub location: Option<String>,
    /// The start date of an all-day occurrence.
    pub start_date: Option<String>,
    pub status: Option<String>,
    pub summary: Option<String>,
    pub time_zone: Option<String>,
    pub transparency: Option<String>,
    pub uid: Option<String>,
}

/// One occurrence index row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    /// `None` for a non-recurring event; otherwise the RECURRENCE-ID (RFC 3339 UTC, or a date).
    pub recurrence_id: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub all_day: bool,
    /// [`OccurrenceFields`] as JSON.
    pub data: String,
}

/// Everything the store keeps for a calendar object holding one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSeries {
    pub uid: String,
    /// The calendar object as written back (original bytes where untouched).
    pub ical: String,
    /// [`SeriesFields`] as JSON.
    pub model_json: String,
    /// The normalized hash ([`crate::ContentHash`] in hex).
    pub hash: String,
    pub rows: Vec<IndexRow>,
    /// How far the rows reach when they stop before the series ends (endless or cut short); `None` when
    /// they are complete.
    pub expanded_until: Option<Timestamp>,
}

/// Where a series sits in time: from its first start to its last end (`None`: never ends, or too long to
/// walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesSpan {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

/// A calendar holding `series` and every VTIMEZONE of the given calendars it may refer to (each TZID once,
/// the first definition wins).
pub fn calendar_with(series: EventSeries, zones_from: &[&Calendar]) -> Calendar {
    let mut calendar = Calendar::new(PRODID);
    for source in zones_from {
        for zone in source.timezones() {
            let tzid = zone.property("TZID").map(|p| p.value.clone());
            let known = tzid
                .as_deref()
                .is_some_and(|id| calendar.timezone(id).is_some());
            if !known {
                calendar.timezones_mut().push(zone.clone());
            }
        }
    }
    calendar.insert_series(series);
    calendar
}

/// Everything the store keeps for the (first) series of `calendar`. `floating` is the zone floating times
/// and all-day dates are placed in (the local calendar's zone); `now` anchors the index horizon of endless
/// series.
pub fn prepare(
    calendar: &Calendar,
    floating: &TimeZone,
    now: Timestamp,
) -> Result<StoredSeries, PrepareError> {
    let series = calendar.series().first().ok_or(PrepareError::NoEvent)?;
    let ical = String::from_utf8(ical::write(calendar)).map_err(|_| PrepareError::NotUtf8)?;
    let model_json = serde_json::to_string(&fields_of(series))?;
    let (rows, expanded_until) = index_rows(calendar, series, floating, now)?;
    Ok(StoredSeries {
        uid: series.uid().to_owned(),
        ical,
        model_json,
        hash: normalized_hash(series).to_string(),
        rows,
        expanded_until,
    })
}

/// The JSON view of a series: its master, or its first override when it has no master.
pub fn fields_of(series: &EventSeries) -> SeriesFields {
    let event = series.master().or_else(|| series.overrides().first());
    let start = event.and_then(|e| e.dtstart.as_ref()).map(|p| &p.value);
    let end = event.and_then(|e| match &e.end {
        Some(EventEnd::End(p)) => Some(point_text(&p.value)),
        _ => None,
    });
    let shown = Shown::of(event);
    SeriesFields {
        uid: series.uid().to_owned(),
        summary: shown.summary,
        description: event
            .and_then(|e| e.description.as_ref())
            .map(|p| p.value.clone()),
        location: shown.location,
        start: start.map(point_text),
        end,
        all_day: start.is_some_and(CalDateTime::is_all_day),
        time_zone: start.and_then(zone_label),
        status: shown.status,
        transparency: shown.transparency,
        rrule: event
            .and_then(|e| e.rrule.as_ref())
            .map(|p| p.value.clone()),
        exdates: event
            .map(|e| e.exdate_values().map(|d| point_text(d.start())).collect())
            .unwrap_or_default(),
        overrides: series.overrides().len(),
    }
}

/// What both the series view and an occurrence's row show of an event (the master, or the override that
/// replaces the occurrence): its text fields and its STATUS and TRANSP keywords in lower case.
struct Shown {
    summary: Option<String>,
    location: Option<String>,
    status: Option<String>,
    transparency: Option<String>,
}

impl Shown {
    fn of(event: Option<&Event>) -> Self {
        Self {
            summary: event
                .and_then(|e| e.summary.as_ref())
                .map(|p| p.value.clone()),
            location: event
                .and_then(|e| e.location.as_ref())
                .map(|p| p.value.clone()),
            status: event
                .and_then(|e| e.status.as_ref())
                .map(|p| p.value.as_str().to_ascii_lowercase()),
            transparency: event
                .and_then(|e| e.transparency.as_ref())
                .map(|p| p.value.as_str().to_ascii_lowercase()),
        }
    }
}

/// Where the series sits in time: first start to last end, `None` end when it never ends or is too long
/// to walk; `None` altogether when it cannot be expanded (a caller then treats it as inside any window).
pub fn span(calendar: &Calendar, series: &EventSeries, floating: &TimeZone) -> Option<SeriesSpan> {
    let (resolver, _unreadable) = calendar_resolver(calendar);
    let options = expand_options(floating);
    let window = Window {
        from: Timestamp::MIN,
        to: Timestamp::MAX,
    };
    let iter = series_occurrences(series, &resolver, window, &options).ok()?;
    let mut start: Option<Timestamp> = None;
    let mut end: Option<Timestamp> = None;
    for (n, occurrence) in iter.enumerate() {
        if n >= SPAN_SCAN_LIMIT {
            return start.map(|start| SeriesSpan { start, end: None });
        }
        let occurrence = occurrence.ok()?;
        let s = to_ts(occurrence.start, floating).ok()?;
        let e = to_ts(occurrence.end, floating).ok()?.max(s);
        start = Some(start.map_or(s, |v| v.min(s)));
        end = Some(end.map_or(e, |v| v.max(e)));
    }
    // An instant event (end == start) still has to meet a window that starts at it.
    let start = start?;
    let end = end.map(|e| {
        if e == start {
            e.checked_add(SignedDuration::from_secs(1)).unwrap_or(e)
        } else {
            e
        }
    });
    Some(SeriesSpan { start, end })
}

fn expand_options(floating: &TimeZone) -> ExpandOptions {
    ExpandOptions {
        floating_zone: floating.clone(),
        ..ExpandOptions::default()
    }
}

/// The occurrence rows of a series up to `now` + [`INDEX_HORIZON_DAYS`], each with the fields a window
/// listing shows (an occurrence an override replaces shows the override's), and how far they reach.
fn index_rows(
    calendar: &Calendar,
    series: &EventSeries,
    floating: &TimeZone,
    now: Timestamp,
) -> Result<(Vec<IndexRow>, Option<Timestamp>), PrepareError> {
    let (resolver, _unreadable) = calendar_resolver(calendar);
    let options = expand_options(floating);
    let horizon = now.checked_add(SignedDuration::from_hours(24 * INDEX_HORIZON_DAYS))?;
    let window = Window {
        from: Timestamp::MIN,
        to: horizon,
    };
    let overrides = override_events(series, &resolver, floating);
    let master = series.master();
    let iter = series_occurrences(series, &resolver, window, &options)
        .map_err(PrepareError::NotExpandable)?;
    let mut rows = Vec::new();
    let mut recurring = false;
    let mut cut_short = false;
    for occurrence in iter {
        let occurrence = occurrence.map_err(PrepareError::NotExpandable)?;
        if rows.len() >= MAX_ROWS_PER_SERIES {
            cut_short = true;
            break;
        }
        recurring |= occurrence.recurrence_id.is_some();
        let event = occurrence
            .recurrence_id
            .and_then(|rid| overrides.get(&rid).copied())
            .or(master)
            .or_else(|| series.overrides().first());
        let date = |point: OccurrenceTime| match point {
            OccurrenceTime::Date(d) => Some(d.to_string()),
            OccurrenceTime::At(_) => None,
        };
        let shown = Shown::of(event);
        let data = OccurrenceFields {
            end_date: date(occurrence.end),
            location: shown.location,
            start_date: date(occurrence.start),
            status: shown.status,
            summary: shown.summary,
            time_zone: event
                .and_then(|e| e.dtstart.as_ref())
                .and_then(|p| zone_label(&p.value)),
            transparency: shown.transparency,
            uid: Some(series.uid().to_owned()),
        };
        rows.push(IndexRow {
            recurrence_id: occurrence.recurrence_id.map(|r| r.to_rfc3339()),
            start: to_ts(occurrence.start, floating)?,
            end: to_ts(occurrence.end, floating)?,
            all_day: matches!(occurrence.start, OccurrenceTime::Date(_)),
            data: serde_json::to_string(&data)?,
        });
    }
    let endless = master.is_some_and(|m| {
        m.rrule.as_ref().is_some_and(|r| {
            let rule = r.value.to_ascii_uppercase();
            !rule.contains("COUNT=") && !rule.contains("UNTIL=")
        })
    });
    let expanded_until = if cut_short {
        rows.last().map(|r| r.start)
    } else if recurring && endless {
        Some(horizon)
    } else {
        None
    };
    Ok((rows, expanded_until))
}

/// An occurrence's start or end as an instant: dates are midnight in the floating zone.
fn to_ts(point: OccurrenceTime, floating: &TimeZone) -> Result<Timestamp, jiff::Error> {
    match point {
        OccurrenceTime::At(ts) => Ok(ts),
        OccurrenceTime::Date(d) => floating
            .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible(),
    }
}

/// The overrides of a series keyed by the instant (or date) their RECURRENCE-ID names, which is how the
/// expansion names the occurrence each replaces.
fn override_events<'a>(
    series: &'a EventSeries,
    resolver: &TzResolver,
    floating: &TimeZone,
) -> HashMap<OccurrenceTime, &'a Event> {
    let mut map = HashMap::new();
    for event in series.overrides() {
        let Some(rid) = &event.recurrence_id else {
            continue;
        };
        let key = match &rid.value {
            CalDateTime::Date(d) => Some(OccurrenceTime::Date(*d)),
            CalDateTime::Utc(ts) => Some(OccurrenceTime::At(*ts)),
            CalDateTime::Floating(local) => floating
                .to_ambiguous_timestamp(*local)
                .compatible()
                .ok()
                .map(OccurrenceTime::At),
            CalDateTime::Zoned { local, tzid } => resolver
                .resolve(tzid)
                .ok()
                .and_then(|z| z.zone.to_ambiguous_timestamp(*local).compatible().ok())
                .map(OccurrenceTime::At),
        };
        if let Some(key) = key {
            map.insert(key, event);
        }
    }
    map
}

/// The zone a time is written in: its TZID, `UTC`, or none (floating and all-day).
fn zone_label(point: &CalDateTime) -> Option<String> {
    match point {
        CalDateTime::Zoned { tzid, .. } => Some(tzid.as_str().to_owned()),
        CalDateTime::Utc(_) => Some("UTC".to_owned()),
        CalDateTime::Date(_) | CalDateTime::Floating(_) => None,
    }
}

/// A time as the API writes it: a date, a wall-clock time without offset, or RFC 3339 UTC.
fn point_text(point: &CalDateTime) -> String {
    match point {
        CalDateTime::Date(d) => d.to_string(),
        CalDateTime::Floating(dt) | CalDateTime::Zoned { local: dt, .. } => {
            dt.strftime("%Y-%m-%dT%H:%M:%S").to_string()
        }
        CalDateTime::Utc(ts) => OccurrenceTime::At(*ts).to_rfc3339(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calendar(body: &str) -> Calendar {
        let text = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{body}END:VCALENDAR\r\n"
        );
        ical::parse(text.as_bytes()).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn fields(row: &IndexRow) -> OccurrenceFields {
        serde_json::from_str(&row.data).unwrap()
    }

    const WEEKLY: &str = "BEGIN:VEVENT\r\nUID:weekly@test\r\nDTSTAMP:20260101T000000Z\r\n\
        DTSTART;TZID=Europe/Berlin:20260312T100000\r\nDTEND;TZID=Europe/Berlin:20260312T110000\r\n\
        SUMMARY:Standup\r\nLOCATION:Room 1\r\nRRULE:FREQ=WEEKLY;COUNT=5\r\n\
        EXDATE;TZID=Europe/Berlin:20260319T100000\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:weekly@test\r\nDTSTAMP:20260101T000000Z\r\n\
        RECURRENCE-ID;TZID=Europe/Berlin:20260402T100000\r\n\
        DTSTART;TZID=Europe/Berlin:20260402T140000\r\nDTEND;TZID=Europe/Berlin:20260402T150000\r\n\
        SUMMARY:Standup (moved)\r\nSTATUS:TENTATIVE\r\nEND:VEVENT\r\n";

    #[test]
    fn a_weekly_series_across_a_dst_change_keeps_its_wall_clock_with_its_override_and_exdate() {
        let cal = calendar(WEEKLY);
        let stored = prepare(&cal, &TimeZone::UTC, at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(stored.uid, "weekly@test");
        assert_eq!(stored.hash, normalized_hash(&cal.series()[0]).to_string());
        // COUNT=5 names Mar 12, 19 (excluded), 26, Apr 2 (moved) and 9; Berlin leaves CET on Mar 29.
        let got: Vec<_> = stored
            .rows
            .iter()
            .map(|r| (r.recurrence_id.as_deref(), r.start, r.end, r.all_day))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Some("2026-03-12T09:00:00Z"),
                    at("2026-03-12T09:00:00Z"),
                    at("2026-03-12T10:00:00Z"),
                    false
                ),
                (
                    Some("2026-03-26T09:00:00Z"),
                    at("2026-03-26T09:00:00Z"),
                    at("2026-03-26T10:00:00Z"),
                    false
                ),
                (
                    Some("2026-04-02T08:00:00Z"),
                    at("2026-04-02T12:00:00Z"),
                    at("2026-04-02T13:00:00Z"),
                    false
                ),
                (
                    Some("2026-04-09T08:00:00Z"),
                    at("2026-04-09T08:00:00Z"),
                    at("2026-04-09T09:00:00Z"),
                    false
                ),
            ]
        );
        assert_eq!(
            stored.expanded_until, None,
            "a counted series is indexed to its end"
        );
        // The stored bytes of a row: keys in the order rows have always been written in.
        assert_eq!(
            stored.rows[0].data,
            r#"{"end_date":null,"location":"Room 1","start_date":null,"status":null,"summary":"Standup","time_zone":"Europe/Berlin","transparency":null,"uid":"weekly@test"}"#
        );
        // The moved occurrence shows its override's fields, not the master's.
        assert_eq!(
            fields(&stored.rows[2]),
            OccurrenceFields {
                summary: Some("Standup (moved)".into()),
                status: Some("tentative".into()),
                time_zone: Some("Europe/Berlin".into()),
                uid: Some("weekly@test".into()),
                ..OccurrenceFields::default()
            }
        );
        assert_eq!(fields(&stored.rows[3]).summary.as_deref(), Some("Standup"));

        let view: SeriesFields = serde_json::from_str(&stored.model_json).unwrap();
        assert_eq!(
            view,
            SeriesFields {
                uid: "weekly@test".into(),
                summary: Some("Standup".into()),
                description: None,
                location: Some("Room 1".into()),
                start: Some("2026-03-12T10:00:00".into()),
                end: Some("2026-03-12T11:00:00".into()),
                all_day: false,
                time_zone: Some("Europe/Berlin".into()),
                status: None,
                transparency: None,
                rrule: Some("FREQ=WEEKLY;COUNT=5".into()),
                exdates: vec!["2026-03-19T10:00:00".into()],
                overrides: 1,
            }
        );
        assert!(
            stored
                .model_json
                .starts_with(r#"{"uid":"weekly@test","summary":"Standup","description":null,"#)
        );

        let span = span(&cal, &cal.series()[0], &TimeZone::UTC).unwrap();
        assert_eq!(
            span,
            SeriesSpan {
                start: at("2026-03-12T09:00:00Z"),
                end: Some(at("2026-04-09T09:00:00Z")),
            }
        );
    }

    #[test]
    fn an_endless_series_is_indexed_to_the_horizon_and_its_span_never_ends() {
        let cal = calendar(
            "BEGIN:VEVENT\r\nUID:daily@test\r\nDTSTART:20260101T090000Z\r\nDURATION:PT1H\r\n\
             RRULE:FREQ=DAILY\r\nEND:VEVENT\r\n",
        );
        let now = at("2026-01-01T00:00:00Z");
        let stored = prepare(&cal, &TimeZone::UTC, now).unwrap();
        let horizon = at("2028-01-03T00:00:00Z");
        assert_eq!(
            stored.expanded_until,
            Some(horizon),
            "now + {INDEX_HORIZON_DAYS} days"
        );
        // Every day from 2026-01-01 to 2028-01-02 (the 2028-01-03 occurrence starts after the horizon).
        assert_eq!(stored.rows.len(), 732);
        assert_eq!(stored.rows[0].start, at("2026-01-01T09:00:00Z"));
        assert_eq!(stored.rows[731].start, at("2028-01-02T09:00:00Z"));

        assert_eq!(
            span(&cal, &cal.series()[0], &TimeZone::UTC),
            Some(SeriesSpan {
                start: at("2026-01-01T09:00:00Z"),
                end: None,
            })
        );
    }

    #[test]
    fn an_endless_series_that_outruns_the_row_limit_is_cut_where_it_stopped() {
        let cal = calendar(
            "BEGIN:VEVENT\r\nUID:minutely@test\r\nDTSTART:20260101T000000Z\r\n\
             RRULE:FREQ=MINUTELY\r\nEND:VEVENT\r\n",
        );
        let stored = prepare(&cal, &TimeZone::UTC, at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(stored.rows.len(), MAX_ROWS_PER_SERIES);
        let last = at("2026-01-01T00:00:00Z")
            .checked_add(SignedDuration::from_mins(19_999))
            .unwrap();
        assert_eq!(stored.rows[MAX_ROWS_PER_SERIES - 1].start, last);
        assert_eq!(stored.expanded_until, Some(last));
    }

    #[test]
    fn all_day_occurrences_sit_at_midnight_of_the_floating_zone() {
        let cal = calendar(
            "BEGIN:VEVENT\r\nUID:days@test\r\nDTSTART;VALUE=DATE:20260301\r\n\
             RRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:Fair\r\nEND:VEVENT\r\n",
        );
        let new_york = TimeZone::get("America/New_York").unwrap();
        let stored = prepare(&cal, &new_york, at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(stored.rows.len(), 3);
        let first = &stored.rows[0];
        assert_eq!(first.recurrence_id.as_deref(), Some("2026-03-01"));
        assert!(first.all_day);
        assert_eq!(
            (first.start, first.end),
            (at("2026-03-01T05:00:00Z"), at("2026-03-02T05:00:00Z"))
        );
        let data = fields(first);
        assert_eq!(data.start_date.as_deref(), Some("2026-03-01"));
        assert_eq!(data.end_date.as_deref(), Some("2026-03-02"));
        assert_eq!(data.time_zone, None);
        let view: SeriesFields = serde_json::from_str(&stored.model_json).unwrap();
        assert!(view.all_day);
        assert_eq!(view.start.as_deref(), Some("2026-03-01"));
        assert_eq!(
            span(&cal, &cal.series()[0], &new_york),
            Some(SeriesSpan {
                start: at("2026-03-01T05:00:00Z"),
                end: Some(at("2026-03-04T05:00:00Z")),
            })
        );
    }

    #[test]
    fn an_instant_event_spans_one_second() {
        let cal = calendar(
            "BEGIN:VEVENT\r\nUID:instant@test\r\nDTSTART:20260501T120000Z\r\nEND:VEVENT\r\n",
        );
        let stored = prepare(&cal, &TimeZone::UTC, at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(stored.rows.len(), 1);
        assert_eq!(stored.rows[0].recurrence_id, None);
        assert_eq!(stored.rows[0].start, stored.rows[0].end);
        assert_eq!(
            span(&cal, &cal.series()[0], &TimeZone::UTC),
            Some(SeriesSpan {
                start: at("2026-05-01T12:00:00Z"),
                end: Some(at("2026-05-01T12:00:01Z")),
            })
        );
    }

    #[test]
    fn what_cannot_be_stored_says_why() {
        let empty = calendar("");
        assert!(matches!(
            prepare(&empty, &TimeZone::UTC, Timestamp::UNIX_EPOCH),
            Err(PrepareError::NoEvent)
        ));
        let no_start = calendar("BEGIN:VEVENT\r\nUID:nostart@test\r\nSUMMARY:x\r\nEND:VEVENT\r\n");
        let err = prepare(&no_start, &TimeZone::UTC, Timestamp::UNIX_EPOCH).unwrap_err();
        assert!(
            matches!(err, PrepareError::NotExpandable(OccurrenceError::MissingStart { ref uid }) if uid == "nostart@test"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the event cannot be expanded: event `nostart@test` has no DTSTART"
        );
        assert_eq!(span(&no_start, &no_start.series()[0], &TimeZone::UTC), None);
    }

    #[test]
    fn calendar_with_carries_each_time_zone_once() {
        let zone = "BEGIN:VTIMEZONE\r\nTZID:Custom\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n\
                    TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";
        let a = calendar(zone);
        let b = calendar(zone);
        let cal = calendar_with(EventSeries::new("x@test"), &[&a, &b]);
        assert_eq!(cal.timezones().len(), 1);
        assert_eq!(cal.series().len(), 1);
        assert_eq!(cal.series()[0].uid(), "x@test");
    }
}
