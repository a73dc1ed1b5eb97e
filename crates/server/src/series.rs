//! The bridge between the API's event shapes (JSON or iCalendar) and the model: builds an [`EventSeries`]
//! from a request, and computes what the store keeps for it (iCalendar text, normalized hash, occurrence
//! rows with their per-occurrence summary).

use std::collections::HashMap;

use calbridge_model::datetime::{CalDateTime, DateOrPeriod, TzId};
use calbridge_model::event::{EventStatus, Transparency};
use calbridge_model::expand::{ExpandOptions, OccurrenceTime, Window};
use calbridge_model::occurrences::{calendar_resolver, series_occurrences};
use calbridge_model::rrule::RRule;
use calbridge_model::tz::TzResolver;
use calbridge_model::{
    Calendar, Event, EventEnd, EventSeries, Limits, Prop, ical, normalized_hash,
};
use calbridge_store::{NewOccurrence, OccurrenceSet};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

const PRODID: &str = "-//calbridge//calbridge//EN";

/// How far ahead the occurrence index of an endless series reaches; later windows are filled in when
/// the index is extended (the scheduler's job).
const INDEX_HORIZON_DAYS: i64 = 2 * 366;
/// Most occurrence rows one series may put in the index; past this the index stops early (and records
/// where), so one hostile RRULE cannot fill the database.
pub const MAX_ROWS_PER_SERIES: usize = 20_000;

/// An event as clients write it in JSON: the master of a series. Overrides of single occurrences are
/// written as iCalendar (`Content-Type: text/calendar`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// The local calendar; required on create, must match on update.
    pub calendar_id: Option<String>,
    /// Chosen by the server when absent.
    pub uid: Option<String>,
    #[schema(max_length = 1000)]
    pub summary: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    /// `2026-03-01T10:00:00` (wall time in `time_zone`), `2026-03-01T09:00:00Z` or with an offset, or a
    /// date `2026-03-01` for all-day events.
    #[schema(example = "2026-03-01T10:00:00")]
    pub start: String,
    /// Exclusive end, in the same form as `start`; defaults to `start` (an instant) or the next day.
    pub end: Option<String>,
    /// Inferred from `start` being a date when absent.
    pub all_day: Option<bool>,
    /// IANA (or Windows) zone of wall-clock `start`/`end`; without it they are floating.
    pub time_zone: Option<String>,
    /// `confirmed`, `tentative` or `cancelled`.
    pub status: Option<String>,
    /// `opaque` (blocks time) or `transparent`.
    pub transparency: Option<String>,
    /// An RFC 5545 RRULE value, e.g. `FREQ=WEEKLY;BYDAY=MO;COUNT=10`.
    pub rrule: Option<String>,
    /// Starts of occurrences removed from the series, in the form of `start`.
    #[serde(default)]
    pub exdates: Vec<String>,
}

/// An event (series master) as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventFields {
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

/// The result of turning a request into something storable.
#[derive(Debug)]
pub struct Prepared {
    pub uid: String,
    pub ical: String,
    pub model_json: String,
    pub hash: String,
    pub occurrences: OccurrenceSet,
}

fn invalid(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, detail)
}

/// A zone name from a client: IANA, an alias, or a Windows name.
pub fn resolve_zone(name: &str) -> Result<(jiff::tz::TimeZone, String), ApiError> {
    let unknown = || {
        invalid(
            "unknown_time_zone",
            format!("`{name}` is not a known time zone; use an IANA name such as Europe/Berlin"),
        )
    };
    let tzid = TzId::parse(name).map_err(|_| unknown())?;
    let resolved = TzResolver::default()
        .resolve(&tzid)
        .map_err(|_| unknown())?;
    let label = resolved.iana.clone().unwrap_or_else(|| name.to_owned());
    Ok((resolved.zone, label))
}

fn parse_point(
    raw: &str,
    all_day: bool,
    zone: Option<&TzId>,
    field: &str,
) -> Result<CalDateTime, ApiError> {
    let raw = raw.trim();
    let bad = |why: &str| {
        invalid(
            "invalid_time",
            format!(
                "{field} `{raw}` {why}; write 2026-03-01T10:00:00 (with time_zone), 2026-03-01T09:00:00Z or 2026-03-01 for all-day"
            ),
        )
    };
    if all_day {
        let date: Date = raw.parse().map_err(|_| bad("is not a date"))?;
        return Ok(CalDateTime::Date(date));
    }
    if let Ok(ts) = raw.parse::<Timestamp>() {
        return Ok(CalDateTime::Utc(ts));
    }
    let local: DateTime = raw.parse().map_err(|_| bad("is not a date-time"))?;
    Ok(match zone {
        Some(tzid) => CalDateTime::Zoned {
            local,
            tzid: tzid.clone(),
        },
        None => CalDateTime::Floating(local),
    })
}

/// Build the master event of a series from JSON, on top of `base` (the stored series on update, so
/// properties JSON does not carry — attendees, alarms, overrides — survive).
pub fn series_from_json(
    input: &EventInput,
    base: Option<EventSeries>,
    uid: String,
) -> Result<EventSeries, ApiError> {
    let all_day = input
        .all_day
        .unwrap_or_else(|| input.start.trim().len() == 10 && input.start.parse::<Date>().is_ok());
    let zone = match input.time_zone.as_deref().filter(|z| !z.is_empty()) {
        Some(name) if !all_day => {
            let (_, iana) = resolve_zone(name)?;
            Some(TzId::parse(&iana).map_err(|_| {
                invalid("unknown_time_zone", format!("`{name}` is not a time zone"))
            })?)
        }
        _ => None,
    };
    let start = parse_point(&input.start, all_day, zone.as_ref(), "start")?;
    let end = match &input.end {
        Some(raw) => parse_point(raw, all_day, zone.as_ref(), "end")?,
        None => match &start {
            CalDateTime::Date(d) => CalDateTime::Date(
                d.tomorrow()
                    .map_err(|_| invalid("invalid_time", "start is the last representable date"))?,
            ),
            other => other.clone(),
        },
    };
    if let (Some(s), Some(e)) = (comparable(&start), comparable(&end))
        && e < s
    {
        return Err(invalid("invalid_time", "end is before start"));
    }
    if input
        .summary
        .as_ref()
        .is_some_and(|s| s.chars().count() > 1000)
    {
        return Err(invalid(
            "invalid_summary",
            "summary must be at most 1000 characters",
        ));
    }
    let rrule = match input
        .rrule
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(text) => {
            let text = text.strip_prefix("RRULE:").unwrap_or(text);
            RRule::parse(text)
                .map_err(|e| invalid("invalid_rrule", format!("rrule `{text}`: {e}")))?;
            Some(Prop::new(text.to_owned()))
        }
        None => None,
    };
    let exdates = input
        .exdates
        .iter()
        .map(|raw| parse_point(raw, all_day, zone.as_ref(), "exdate").map(DateOrPeriod::At))
        .collect::<Result<Vec<_>, _>>()?;
    let status = match input.status.as_deref() {
        None => None,
        Some(s) => Some(Prop::new(match s.to_ascii_lowercase().as_str() {
            "confirmed" => EventStatus::Confirmed,
            "tentative" => EventStatus::Tentative,
            "cancelled" | "canceled" => EventStatus::Cancelled,
            _ => {
                return Err(invalid(
                    "invalid_status",
                    format!("status `{s}` is not confirmed, tentative or cancelled"),
                ));
            }
        })),
    };
    let transparency = match input.transparency.as_deref() {
        None => None,
        Some(t) => Some(Prop::new(match t.to_ascii_lowercase().as_str() {
            "opaque" => Transparency::Opaque,
            "transparent" => Transparency::Transparent,
            _ => {
                return Err(invalid(
                    "invalid_transparency",
                    format!("transparency `{t}` is not opaque or transparent"),
                ));
            }
        })),
    };

    let mut series = base.unwrap_or_else(|| EventSeries::new(uid.clone()));
    let mut master = series
        .master()
        .cloned()
        .unwrap_or_else(|| Event::new(uid.clone()));
    master.dtstamp = Some(Prop::new(CalDateTime::Utc(Timestamp::now())));
    master.dtstart = Some(Prop::new(start));
    master.end = Some(EventEnd::End(Prop::new(end)));
    master.summary = input.summary.clone().map(Prop::new);
    master.description = input.description.clone().map(Prop::new);
    master.location = input.location.clone().map(Prop::new);
    master.status = status;
    master.transparency = transparency;
    master.rrule = rrule;
    master.exdates = if exdates.is_empty() {
        Vec::new()
    } else {
        vec![Prop::new(exdates)]
    };
    master.sequence = Some(Prop::new(
        master
            .sequence
            .as_ref()
            .map_or(0, |s| s.value.saturating_add(1)),
    ));
    series
        .set_master(Some(master))
        .map_err(|e| invalid("invalid_event", e.to_string()))?;
    Ok(series)
}

/// A rough instant for ordering checks (floating and zoned read as UTC wall time: same zone both sides).
fn comparable(point: &CalDateTime) -> Option<DateTime> {
    match point {
        CalDateTime::Date(d) => Some(d.to_datetime(jiff::civil::Time::midnight())),
        CalDateTime::Floating(dt) => Some(*dt),
        CalDateTime::Zoned { local, .. } => Some(*local),
        CalDateTime::Utc(ts) => Some(jiff::tz::TimeZone::UTC.to_datetime(*ts)),
    }
}

/// Read an iCalendar body holding exactly one series (one UID: master and/or overrides).
pub fn calendar_from_ical(body: &[u8], max_bytes: usize) -> Result<Calendar, ApiError> {
    let limits = Limits {
        max_object_bytes: max_bytes,
        ..Limits::DEFAULT
    };
    let calendar = ical::parse_with_limits(body, &limits).map_err(|e| {
        ApiError::bad_request("invalid_icalendar", format!("invalid iCalendar: {e}"))
    })?;
    match calendar.series().len() {
        1 => Ok(calendar),
        0 => Err(invalid("no_event", "the iCalendar object holds no VEVENT")),
        n => Err(invalid(
            "several_events",
            format!("the iCalendar object holds {n} events (UIDs); send one series per request"),
        )),
    }
}

/// Wrap a series in a VCALENDAR of its own.
pub fn calendar_of(series: EventSeries) -> Calendar {
    let mut calendar = Calendar::new(PRODID);
    calendar.insert_series(series);
    calendar
}

/// Everything the store keeps for a calendar holding one series; `floating` is the calendar's zone.
pub fn prepare(calendar: &Calendar, floating: &jiff::tz::TimeZone) -> Result<Prepared, ApiError> {
    let series = calendar
        .series()
        .first()
        .ok_or_else(|| invalid("no_event", "the iCalendar object holds no VEVENT"))?;
    if series.master().is_some_and(|m| m.dtstart.is_none()) {
        return Err(invalid("invalid_event", "the event has no DTSTART"));
    }
    let ical = String::from_utf8(ical::write(calendar))
        .map_err(|_| ApiError::bad_request("invalid_icalendar", "iCalendar must be UTF-8"))?;
    let fields = fields_of(series);
    let occurrences = index_rows(calendar, series, floating)?;
    Ok(Prepared {
        uid: series.uid().to_owned(),
        ical,
        model_json: serde_json::to_string(&fields).map_err(ApiError::internal)?,
        hash: normalized_hash(series).to_string(),
        occurrences,
    })
}

/// The occurrence rows of a series, with the fields a window listing shows for each.
fn index_rows(
    calendar: &Calendar,
    series: &EventSeries,
    floating: &jiff::tz::TimeZone,
) -> Result<OccurrenceSet, ApiError> {
    let (resolver, _unreadable) = calendar_resolver(calendar);
    let options = ExpandOptions {
        floating_zone: floating.clone(),
        ..ExpandOptions::default()
    };
    let horizon = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * INDEX_HORIZON_DAYS))
        .map_err(ApiError::internal)?;
    let window = Window {
        from: Timestamp::MIN,
        to: horizon,
    };
    let not_expandable = |e: String| {
        invalid(
            "invalid_recurrence",
            format!("the event cannot be expanded: {e}"),
        )
    };
    let overrides = override_fields(series, &resolver, floating);
    let master = series.master();
    let iter = series_occurrences(series, &resolver, window, &options)
        .map_err(|e| not_expandable(e.to_string()))?;
    let mut rows = Vec::new();
    let mut recurring = false;
    let mut cut_short = false;
    for occurrence in iter {
        let occurrence = occurrence.map_err(|e| not_expandable(e.to_string()))?;
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
        let (start, end, all_day) = (
            to_ts(occurrence.start, floating)?,
            to_ts(occurrence.end, floating)?,
            matches!(occurrence.start, OccurrenceTime::Date(_)),
        );
        let data = serde_json::json!({
            "uid": series.uid(),
            "summary": event.and_then(|e| e.summary.as_ref()).map(|p| p.value.clone()),
            "location": event.and_then(|e| e.location.as_ref()).map(|p| p.value.clone()),
            "status": event.and_then(|e| e.status.as_ref()).map(|p| p.value.as_str().to_ascii_lowercase()),
            "transparency": event.and_then(|e| e.transparency.as_ref()).map(|p| p.value.as_str().to_ascii_lowercase()),
            "time_zone": event.and_then(|e| e.dtstart.as_ref()).and_then(|p| zone_label(&p.value)),
            "start_date": match occurrence.start { OccurrenceTime::Date(d) => Some(d.to_string()), OccurrenceTime::At(_) => None },
            "end_date": match occurrence.end { OccurrenceTime::Date(d) => Some(d.to_string()), OccurrenceTime::At(_) => None },
        });
        rows.push(NewOccurrence {
            recurrence_id: occurrence.recurrence_id.map(|r| r.to_rfc3339()),
            start,
            end,
            all_day,
            data: Some(data.to_string()),
        });
    }
    let endless = master.is_some_and(|m| {
        m.rrule.as_ref().is_some_and(|r| {
            !r.value.to_ascii_uppercase().contains("COUNT=")
                && !r.value.to_ascii_uppercase().contains("UNTIL=")
        })
    });
    let expanded_until = if cut_short {
        rows.last().map(|r| r.start)
    } else if recurring && endless {
        Some(horizon)
    } else {
        None
    };
    Ok(OccurrenceSet {
        rows,
        expanded_until,
    })
}

fn to_ts(point: OccurrenceTime, floating: &jiff::tz::TimeZone) -> Result<Timestamp, ApiError> {
    match point {
        OccurrenceTime::At(ts) => Ok(ts),
        OccurrenceTime::Date(d) => floating
            .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible()
            .map_err(ApiError::internal),
    }
}

/// The overrides of a series keyed by the instant (or date) of their RECURRENCE-ID.
fn override_fields<'a>(
    series: &'a EventSeries,
    resolver: &TzResolver,
    floating: &jiff::tz::TimeZone,
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

fn zone_label(point: &CalDateTime) -> Option<String> {
    match point {
        CalDateTime::Zoned { tzid, .. } => Some(tzid.as_str().to_owned()),
        CalDateTime::Utc(_) => Some("UTC".to_owned()),
        CalDateTime::Date(_) | CalDateTime::Floating(_) => None,
    }
}

fn point_text(point: &CalDateTime) -> String {
    match point {
        CalDateTime::Date(d) => d.to_string(),
        CalDateTime::Floating(dt) | CalDateTime::Zoned { local: dt, .. } => {
            dt.strftime("%Y-%m-%dT%H:%M:%S").to_string()
        }
        CalDateTime::Utc(ts) => OccurrenceTime::At(*ts).to_rfc3339(),
    }
}

/// The JSON view of a series' master (or of its first override when it has no master).
pub fn fields_of(series: &EventSeries) -> EventFields {
    let event = series.master().or_else(|| series.overrides().first());
    let start = event.and_then(|e| e.dtstart.as_ref()).map(|p| &p.value);
    let end = event.and_then(|e| match &e.end {
        Some(EventEnd::End(p)) => Some(point_text(&p.value)),
        _ => None,
    });
    EventFields {
        uid: series.uid().to_owned(),
        summary: event
            .and_then(|e| e.summary.as_ref())
            .map(|p| p.value.clone()),
        description: event
            .and_then(|e| e.description.as_ref())
            .map(|p| p.value.clone()),
        location: event
            .and_then(|e| e.location.as_ref())
            .map(|p| p.value.clone()),
        start: start.map(point_text),
        end,
        all_day: start.is_some_and(CalDateTime::is_all_day),
        time_zone: start.and_then(zone_label),
        status: event
            .and_then(|e| e.status.as_ref())
            .map(|p| p.value.as_str().to_ascii_lowercase()),
        transparency: event
            .and_then(|e| e.transparency.as_ref())
            .map(|p| p.value.as_str().to_ascii_lowercase()),
        rrule: event
            .and_then(|e| e.rrule.as_ref())
            .map(|p| p.value.clone()),
        exdates: event
            .map(|e| e.exdate_values().map(|d| point_text(d.start())).collect())
            .unwrap_or_default(),
        overrides: series.overrides().len(),
    }
}
