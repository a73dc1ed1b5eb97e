//! The bridge between the API's event shapes (JSON or iCalendar) and the model: builds an [`EventSeries`]
//! from a request, and has the model compute what the store keeps for it (`calbridge_model::stored`, the
//! same code sync writes with), answering its refusals as API errors.

use calbridge_engine::Storable;
use calbridge_model::datetime::{CalDateTime, DateOrPeriod, TzId};
use calbridge_model::event::{EventStatus, Transparency};
use calbridge_model::rrule::RRule;
use calbridge_model::stored::{self, PrepareError};
use calbridge_model::tz::TzResolver;
use calbridge_model::{Calendar, Event, EventEnd, EventSeries, Limits, Prop, ical};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;

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

/// Everything the store keeps for a calendar holding one series; `floating` is the calendar's zone.
pub fn prepare(calendar: &Calendar, floating: &jiff::tz::TimeZone) -> Result<Storable, ApiError> {
    // The API refuses a master without DTSTART even when it is cancelled (a cancelled master expands to
    // nothing, so the model would store it, as sync does with whatever a provider holds): an event a
    // client writes must say when it is.
    if calendar
        .series()
        .first()
        .and_then(EventSeries::master)
        .is_some_and(|m| m.dtstart.is_none())
    {
        return Err(invalid("invalid_event", "the event has no DTSTART"));
    }
    stored::prepare(calendar, floating, Timestamp::now())
        .map(Storable::from)
        .map_err(|e| match e {
            PrepareError::NoEvent => invalid("no_event", e.to_string()),
            PrepareError::NotUtf8 => ApiError::bad_request("invalid_icalendar", e.to_string()),
            PrepareError::NotExpandable(_) => invalid("invalid_recurrence", e.to_string()),
            PrepareError::OutOfRange(_) | PrepareError::Json(_) => ApiError::internal(e),
        })
}
