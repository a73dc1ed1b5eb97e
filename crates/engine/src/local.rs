//! The local side of a link: a stored series read into the model, and a model series turned into what the
//! store keeps (iCalendar text, the API's JSON view, the normalized hash, occurrence rows).
//!
//! The JSON view and the occurrence row data use the same keys as the server's event API, so a series
//! written by sync reads back through the API exactly like one written by a client.

use calbridge_model::datetime::CalDateTime;
use calbridge_model::expand::{ExpandOptions, OccurrenceTime, Window};
use calbridge_model::occurrences::{calendar_resolver, series_occurrences};
use calbridge_model::{Calendar, EventEnd, EventSeries, ical, normalized_hash};
use calbridge_store::{NewOccurrence, OccurrenceSet, Series};
use calbridge_sync::{ItemState, Span};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::EngineError;

const PRODID: &str = "-//calbridge//calbridge//EN";
/// How far ahead the occurrence index of an endless series reaches (the server's horizon too).
const INDEX_HORIZON_DAYS: i64 = 2 * 366;
/// Most occurrence rows one series may put in the index.
const MAX_ROWS_PER_SERIES: usize = 20_000;
/// Occurrences walked to find where a bounded series ends; past this its span is open-ended, which only
/// makes it take part in more windows (never fewer).
const SPAN_SCAN_LIMIT: usize = 5_000;

/// A series with the calendar it came in (whose VTIMEZONEs its times may need).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub calendar: Calendar,
    pub series: EventSeries,
}

impl Parsed {
    pub fn from_ical(text: &str) -> Result<Self, EngineError> {
        let calendar = ical::parse(text.as_bytes())
            .map_err(|e| EngineError::Content(format!("stored iCalendar does not parse: {e}")))?;
        Self::from_calendar(calendar)
    }

    pub fn from_calendar(calendar: Calendar) -> Result<Self, EngineError> {
        let series =
            calendar.series().first().cloned().ok_or_else(|| {
                EngineError::Content("the calendar object holds no VEVENT".into())
            })?;
        Ok(Self { calendar, series })
    }

    pub fn from_stored(series: &Series) -> Result<Self, EngineError> {
        Self::from_ical(&series.ical)
    }

    /// What the plan sees of this series.
    pub fn state(&self, floating: &TimeZone) -> ItemState {
        ItemState {
            snapshot: calbridge_sync::series::snapshot(&self.series),
            span: span_of(&self.calendar, &self.series, floating),
            modified: modified_of(&self.series),
        }
    }
}

/// A calendar holding `series` and every VTIMEZONE of the given calendars it may refer to.
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

/// A copy of `series` under another UID (`keep_both`: the losing version becomes an event of its own).
pub fn with_uid(series: &EventSeries, uid: &str) -> Result<EventSeries, EngineError> {
    let mut out = EventSeries::new(uid);
    if let Some(master) = series.master() {
        let mut master = master.clone();
        master.uid = uid.to_owned();
        out.set_master(Some(master))
            .map_err(|e| EngineError::Content(e.to_string()))?;
    }
    for event in series.overrides() {
        let mut event = event.clone();
        event.uid = uid.to_owned();
        out.insert_override(event)
            .map_err(|e| EngineError::Content(e.to_string()))?;
    }
    Ok(out)
}

/// Everything the store keeps for a series.
#[derive(Debug, Clone)]
pub struct Storable {
    pub uid: String,
    pub ical: String,
    pub model_json: String,
    pub hash: String,
    pub occurrences: OccurrenceSet,
}

pub fn storable(calendar: &Calendar, floating: &TimeZone) -> Result<Storable, EngineError> {
    let series = calendar
        .series()
        .first()
        .ok_or_else(|| EngineError::Content("the calendar object holds no VEVENT".into()))?;
    let ical = String::from_utf8(ical::write(calendar))
        .map_err(|_| EngineError::Content("iCalendar is not UTF-8".into()))?;
    Ok(Storable {
        uid: series.uid().to_owned(),
        ical,
        model_json: fields_json(series).to_string(),
        hash: normalized_hash(series).to_string(),
        occurrences: occurrence_rows(calendar, series, floating)?,
    })
}

/// When the series was last modified, for `newest_wins` (LAST-MODIFIED of the master, else the newest
/// of any component).
fn modified_of(series: &EventSeries) -> Option<Timestamp> {
    series
        .events()
        .filter_map(|e| e.last_modified.as_ref())
        .filter_map(|p| match &p.value {
            CalDateTime::Utc(ts) => Some(*ts),
            _ => None,
        })
        .max()
}

/// Where the series sits in time: first start to last end, `None` end when it never ends or is too long
/// to walk; `None` altogether when it cannot be expanded (the plan then treats it as inside the window).
pub fn span_of(calendar: &Calendar, series: &EventSeries, floating: &TimeZone) -> Option<Span> {
    let (resolver, _unreadable) = calendar_resolver(calendar);
    let options = ExpandOptions {
        floating_zone: floating.clone(),
        ..ExpandOptions::default()
    };
    let window = Window {
        from: Timestamp::MIN,
        to: Timestamp::MAX,
    };
    let iter = series_occurrences(series, &resolver, window, &options).ok()?;
    let mut start: Option<Timestamp> = None;
    let mut end: Option<Timestamp> = None;
    for (n, occurrence) in iter.enumerate() {
        if n >= SPAN_SCAN_LIMIT {
            return start.map(|s| Span::new(s, None));
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
            e.checked_add(jiff::SignedDuration::from_secs(1))
                .unwrap_or(e)
        } else {
            e
        }
    });
    Some(Span::new(start, end))
}

fn to_ts(point: OccurrenceTime, floating: &TimeZone) -> Result<Timestamp, EngineError> {
    match point {
        OccurrenceTime::At(ts) => Ok(ts),
        OccurrenceTime::Date(d) => floating
            .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible()
            .map_err(|e| EngineError::Content(e.to_string())),
    }
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

/// The API's JSON view of a series (its master, or its first override without one).
fn fields_json(series: &EventSeries) -> serde_json::Value {
    let event = series.master().or_else(|| series.overrides().first());
    let start = event.and_then(|e| e.dtstart.as_ref()).map(|p| &p.value);
    let end = event.and_then(|e| match &e.end {
        Some(EventEnd::End(p)) => Some(point_text(&p.value)),
        _ => None,
    });
    serde_json::json!({
        "uid": series.uid(),
        "summary": event.and_then(|e| e.summary.as_ref()).map(|p| p.value.clone()),
        "description": event.and_then(|e| e.description.as_ref()).map(|p| p.value.clone()),
        "location": event.and_then(|e| e.location.as_ref()).map(|p| p.value.clone()),
        "start": start.map(point_text),
        "end": end,
        "all_day": start.is_some_and(CalDateTime::is_all_day),
        "time_zone": start.and_then(zone_label),
        "status": event.and_then(|e| e.status.as_ref()).map(|p| p.value.as_str().to_ascii_lowercase()),
        "transparency": event.and_then(|e| e.transparency.as_ref()).map(|p| p.value.as_str().to_ascii_lowercase()),
        "rrule": event.and_then(|e| e.rrule.as_ref()).map(|p| p.value.clone()),
        "exdates": event.map(|e| e.exdate_values().map(|d| point_text(d.start())).collect::<Vec<_>>()).unwrap_or_default(),
        "overrides": series.overrides().len(),
    })
}

/// Overrides by the instant (or date) their RECURRENCE-ID names. Same rule as the server's
/// `series::override_fields` (this module is the engine's copy of the server's series code).
fn override_events<'a>(
    series: &'a EventSeries,
    resolver: &calbridge_model::tz::TzResolver,
    floating: &TimeZone,
) -> std::collections::HashMap<OccurrenceTime, &'a calbridge_model::Event> {
    let mut map = std::collections::HashMap::new();
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

fn occurrence_rows(
    calendar: &Calendar,
    series: &EventSeries,
    floating: &TimeZone,
) -> Result<OccurrenceSet, EngineError> {
    let (resolver, _unreadable) = calendar_resolver(calendar);
    let options = ExpandOptions {
        floating_zone: floating.clone(),
        ..ExpandOptions::default()
    };
    let horizon = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * INDEX_HORIZON_DAYS))
        .map_err(|e| EngineError::Content(e.to_string()))?;
    let window = Window {
        from: Timestamp::MIN,
        to: horizon,
    };
    let iter = series_occurrences(series, &resolver, window, &options)
        .map_err(|e| EngineError::Content(format!("the event cannot be expanded: {e}")))?;
    let master = series.master();
    let overrides = override_events(series, &resolver, floating);
    let mut rows = Vec::new();
    let mut recurring = false;
    let mut cut_short = false;
    for occurrence in iter {
        let occurrence = occurrence
            .map_err(|e| EngineError::Content(format!("the event cannot be expanded: {e}")))?;
        if rows.len() >= MAX_ROWS_PER_SERIES {
            cut_short = true;
            break;
        }
        recurring |= occurrence.recurrence_id.is_some();
        // An occurrence an override replaces shows the override's fields (as the API's own writes do).
        let event = occurrence
            .recurrence_id
            .and_then(|rid| overrides.get(&rid).copied())
            .or(master)
            .or_else(|| series.overrides().first());
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
            start: to_ts(occurrence.start, floating)?,
            end: to_ts(occurrence.end, floating)?,
            all_day: matches!(occurrence.start, OccurrenceTime::Date(_)),
            data: Some(data.to_string()),
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
    Ok(OccurrenceSet {
        rows,
        expanded_until,
    })
}
