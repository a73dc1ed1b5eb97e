//! From the typed model to occurrences: an [`EventSeries`] (master + overrides) of a [`Calendar`] expanded
//! into a window, with the calendar's VTIMEZONEs feeding the zone resolver.

use crate::calendar::{Calendar, EventSeries};
use crate::component::Component;
use crate::datetime::{CalDateTime, DateTimeError, TzId};
use crate::event::{Event, EventEnd, EventStatus};
use crate::expand::{
    ExpandError, ExpandOptions, Occurrence, OccurrenceTime, OverrideInput, SeriesEnd, SeriesInput,
    Window, expand,
};
use crate::rrule::{RRule, RRuleError};
use crate::tz::{Observance, ObservanceKind, TzResolver, VTimezone};

/// Why a series could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OccurrenceError {
    #[error("event `{uid}` has no DTSTART")]
    MissingStart { uid: String },
    #[error("event `{uid}`: {source}")]
    Rule { uid: String, source: RRuleError },
    #[error("event `{uid}`: {source}")]
    Expand { uid: String, source: ExpandError },
    #[error("VTIMEZONE `{tzid}`: {why}")]
    VTimezone { tzid: String, why: String },
}

/// One occurrence of a series, ready to print or store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesOccurrence {
    pub uid: String,
    pub recurrence_id: Option<OccurrenceTime>,
    pub start: OccurrenceTime,
    pub end: OccurrenceTime,
    pub is_override: bool,
}

/// A resolver for one calendar: its VTIMEZONEs, plus the errors of those it could not read (those TZIDs
/// then fail only where they are used).
pub fn calendar_resolver(calendar: &Calendar) -> (TzResolver, Vec<OccurrenceError>) {
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for component in calendar.timezones() {
        match vtimezone_from_component(component) {
            Ok(def) => defs.push(def),
            Err(e) => errors.push(e),
        }
    }
    (TzResolver::new(defs), errors)
}

/// Reads a VTIMEZONE component into the resolver's input.
pub fn vtimezone_from_component(component: &Component) -> Result<VTimezone, OccurrenceError> {
    let raw_tzid = component
        .property("TZID")
        .map(|p| p.value.as_str())
        .unwrap_or("");
    let bad = |why: String| OccurrenceError::VTimezone {
        tzid: raw_tzid.to_string(),
        why,
    };
    let tzid = TzId::parse(raw_tzid).map_err(|e| bad(e.to_string()))?;
    let mut observances = Vec::new();
    for sub in &component.components {
        let kind = match sub.name.as_str() {
            "STANDARD" => ObservanceKind::Standard,
            "DAYLIGHT" => ObservanceKind::Daylight,
            _ => continue,
        };
        let local = |value: &str| -> Result<jiff::civil::DateTime, OccurrenceError> {
            match CalDateTime::parse(value, None, None).map_err(|e| bad(e.to_string()))? {
                CalDateTime::Floating(dt) => Ok(dt),
                CalDateTime::Date(d) => Ok(d.to_datetime(jiff::civil::Time::midnight())),
                other => Err(bad(format!(
                    "observance onset {} must be a local time",
                    other.to_ical()
                ))),
            }
        };
        let dtstart = local(
            &sub.property("DTSTART")
                .ok_or_else(|| bad(format!("{} without DTSTART", sub.name)))?
                .value,
        )?;
        let offset = |name: &str| {
            sub.property(name)
                .and_then(|p| VTimezone::parse_offset(&p.value))
                .ok_or_else(|| bad(format!("{} without a valid {name}", sub.name)))
        };
        let rrule = match sub.property("RRULE") {
            Some(p) => Some(RRule::parse(&p.value).map_err(|e| bad(e.to_string()))?),
            None => None,
        };
        let mut rdates = Vec::new();
        for p in sub.properties_named("RDATE") {
            for v in p.value.split(',').filter(|v| !v.trim().is_empty()) {
                let v = v.split('/').next().unwrap_or(v);
                rdates.push(local(v)?);
            }
        }
        observances.push(Observance {
            kind,
            dtstart,
            offset_from: offset("TZOFFSETFROM")?,
            offset_to: offset("TZOFFSETTO")?,
            rrule,
            rdates,
            name: sub.property("TZNAME").map(|p| p.value.clone()),
        });
    }
    Ok(VTimezone { tzid, observances })
}

fn series_end(end: Option<&EventEnd>) -> Option<SeriesEnd> {
    end.map(|e| match e {
        EventEnd::End(p) => SeriesEnd::End(p.value.clone()),
        EventEnd::Duration(p) => SeriesEnd::Duration(p.value),
    })
}

fn is_cancelled(event: &Event) -> bool {
    event
        .status
        .as_ref()
        .is_some_and(|s| s.value == EventStatus::Cancelled)
}

fn rules_named(event: &Event, name: &str) -> Result<Vec<RRule>, OccurrenceError> {
    let rule_err = |source| OccurrenceError::Rule {
        uid: event.uid.clone(),
        source,
    };
    let mut texts: Vec<&str> = Vec::new();
    if name == "RRULE"
        && let Some(r) = &event.rrule
    {
        texts.push(&r.value);
    }
    texts.extend(
        event
            .other
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str()),
    );
    texts
        .into_iter()
        .map(|t| RRule::parse(t).map_err(rule_err))
        .collect()
}

/// The expansion input of a series with a master event.
pub fn series_input(series: &EventSeries) -> Result<Option<SeriesInput>, OccurrenceError> {
    let Some(master) = series.master() else {
        return Ok(None);
    };
    let dtstart = master
        .dtstart
        .as_ref()
        .ok_or_else(|| OccurrenceError::MissingStart {
            uid: series.uid().to_string(),
        })?
        .value
        .clone();
    let mut overrides = Vec::new();
    for o in series.overrides() {
        let Some(rid) = &o.recurrence_id else {
            continue;
        };
        overrides.push(OverrideInput {
            recurrence_id: rid.value.clone(),
            this_and_future: rid.this_and_future,
            start: o
                .dtstart
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_else(|| rid.value.clone()),
            end: series_end(o.end.as_ref()),
            cancelled: is_cancelled(o),
        });
    }
    Ok(Some(SeriesInput {
        uid: series.uid().to_string(),
        dtstart,
        end: series_end(master.end.as_ref()),
        rrules: rules_named(master, "RRULE")?,
        exrules: rules_named(master, "EXRULE")?,
        rdates: master.rdate_values().cloned().collect(),
        exdates: master.exdate_values().map(|e| e.start().clone()).collect(),
        overrides,
    }))
}

/// Every occurrence of `series` whose start is in `window`, lazily and in order of start. A cancelled
/// master yields nothing. Overrides without a master (an invitation to one instance) are occurrences
/// of their own.
pub fn series_occurrences<'a>(
    series: &'a EventSeries,
    resolver: &'a TzResolver,
    window: Window,
    options: &'a ExpandOptions,
) -> Result<Box<dyn Iterator<Item = Result<SeriesOccurrence, OccurrenceError>> + 'a>, OccurrenceError>
{
    let uid = series.uid().to_string();
    if series.master().is_some_and(is_cancelled) {
        return Ok(Box::new(std::iter::empty()));
    }
    match series_input(series)? {
        Some(input) => {
            let wrap = {
                let uid = uid.clone();
                move |source| OccurrenceError::Expand {
                    uid: uid.clone(),
                    source,
                }
            };
            let iter = expand(&input, resolver, window, options).map_err(&wrap)?;
            Ok(Box::new(iter.map(move |r| {
                r.map(|o: Occurrence| SeriesOccurrence {
                    uid: uid.clone(),
                    recurrence_id: o.recurrence_id,
                    start: o.start,
                    end: o.end,
                    is_override: o.is_override,
                })
                .map_err(&wrap)
            })))
        }
        None => {
            let mut out = Vec::new();
            for o in series.overrides() {
                if is_cancelled(o) {
                    continue;
                }
                let Some(rid) = &o.recurrence_id else {
                    continue;
                };
                let start = o
                    .dtstart
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_else(|| rid.value.clone());
                let single = SeriesInput::single(uid.clone(), start, series_end(o.end.as_ref()));
                let wrap = |source| OccurrenceError::Expand {
                    uid: uid.clone(),
                    source,
                };
                let rid_key = rid_key(&rid.value, &single, resolver, options).map_err(wrap)?;
                for occ in expand(&single, resolver, window, options).map_err(wrap)? {
                    let occ = occ.map_err(wrap)?;
                    out.push(SeriesOccurrence {
                        uid: uid.clone(),
                        recurrence_id: Some(rid_key),
                        start: occ.start,
                        end: occ.end,
                        is_override: true,
                    });
                }
            }
            out.sort_by_key(|o| o.start);
            Ok(Box::new(out.into_iter().map(Ok)))
        }
    }
}

/// The key of a RECURRENCE-ID in the frame of the event it belongs to.
fn rid_key(
    rid: &CalDateTime,
    event: &SeriesInput,
    resolver: &TzResolver,
    options: &ExpandOptions,
) -> Result<OccurrenceTime, ExpandError> {
    let probe = SeriesInput::single(String::new(), rid.clone(), None);
    let all_day = event.dtstart.is_all_day();
    let wide = Window {
        from: jiff::Timestamp::MIN,
        to: jiff::Timestamp::MAX,
    };
    match expand(&probe, resolver, wide, options)?.next() {
        Some(Ok(o)) => Ok(match (all_day, o.start) {
            (true, OccurrenceTime::At(ts)) => {
                OccurrenceTime::Date(options.floating_zone.to_datetime(ts).date())
            }
            (_, other) => other,
        }),
        Some(Err(e)) => Err(e),
        None => Err(ExpandError::OutOfRange(rid.to_ical())),
    }
}

/// Reads a window bound the CLI way: RFC 3339 with offset, a local date-time, or a date (midnight), the
/// last two in `zone`.
pub fn parse_bound(raw: &str, zone: &jiff::tz::TimeZone) -> Result<jiff::Timestamp, DateTimeError> {
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    if let Ok(dt) = raw.parse::<jiff::civil::DateTime>() {
        return zone
            .to_ambiguous_timestamp(dt)
            .compatible()
            .map_err(|_| DateTimeError::InvalidDateTime(raw.to_string()));
    }
    if let Ok(d) = raw.parse::<jiff::civil::Date>() {
        return zone
            .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible()
            .map_err(|_| DateTimeError::InvalidDate(raw.to_string()));
    }
    // iCalendar forms too, since people paste them.
    match CalDateTime::parse(raw, None, None) {
        Ok(CalDateTime::Utc(ts)) => Ok(ts),
        Ok(CalDateTime::Floating(dt)) => zone
            .to_ambiguous_timestamp(dt)
            .compatible()
            .map_err(|_| DateTimeError::InvalidDateTime(raw.to_string())),
        Ok(CalDateTime::Date(d)) => zone
            .to_ambiguous_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .compatible()
            .map_err(|_| DateTimeError::InvalidDate(raw.to_string())),
        _ => Err(DateTimeError::InvalidDateTime(raw.to_string())),
    }
}
