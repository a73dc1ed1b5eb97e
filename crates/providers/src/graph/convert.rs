//! Graph event JSON ↔ one iCalendar series (see docs/architecture/providers.md for what cannot
//! round-trip). Times are asked for in UTC and written back in the event's own zone
//! (`originalStartTimeZone`, a Windows name, converted to IANA through the model), so recurring
//! series expand on their wall clock.

use calbridge_model::datetime::CalDateTime;
use calbridge_model::mapping::graph::{self as gmap, PatternedRecurrence};
use calbridge_model::rrule::RRule;
use calbridge_model::tz::{iana_to_windows, windows_to_iana};
use calbridge_model::{Event, EventEnd, EventSeries};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde_json::{Map, Value, json};

use crate::content::ItemContent;
use crate::error::ProviderError;

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// iCalendar TEXT escaping (RFC 5545 §3.3.11).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The zone an event was created in: a Windows name (or an IANA name Graph accepts) → IANA.
pub(crate) fn zone_of(name: Option<&str>) -> Option<(String, TimeZone)> {
    let name = name?.trim();
    if name.is_empty() || name.eq_ignore_ascii_case("UTC") || name.starts_with("tzone://") {
        return None;
    }
    let iana = windows_to_iana(name)
        .map(str::to_owned)
        .unwrap_or_else(|| name.to_owned());
    let zone = jiff::tz::db().get(&iana).ok()?;
    Some((iana, zone))
}

fn parse_graph_instant(v: &Value) -> Result<Timestamp, ProviderError> {
    let dt = s(v, "dateTime")
        .ok_or_else(|| ProviderError::protocol("dateTimeTimeZone without dateTime"))?;
    let tz = s(v, "timeZone").unwrap_or("UTC");
    let civil: DateTime = dt
        .trim_end_matches('Z')
        .parse()
        .map_err(|e| ProviderError::protocol(format!("dateTime {dt}: {e}")))?;
    let zone = zone_of(Some(tz)).map(|(_, z)| z).unwrap_or(TimeZone::UTC);
    zone.to_ambiguous_timestamp(civil)
        .compatible()
        .map_err(|e| ProviderError::protocol(format!("dateTime {dt}: {e}")))
}

fn ical_date(v: &Value) -> Result<String, ProviderError> {
    let dt = s(v, "dateTime")
        .ok_or_else(|| ProviderError::protocol("all-day event without dateTime"))?;
    let date = dt
        .get(..10)
        .ok_or_else(|| ProviderError::protocol("short dateTime"))?;
    Ok(date.replace('-', ""))
}

fn stamp(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// `DTSTART`-style property text for an instant in the series' zone.
fn timed(name: &str, ts: Timestamp, zone: &Option<(String, TimeZone)>) -> String {
    match zone {
        Some((iana, tz)) => format!(
            "{name};TZID={iana}:{}",
            ts.to_zoned(tz.clone()).datetime().strftime("%Y%m%dT%H%M%S")
        ),
        None => format!("{name}:{}", stamp(ts)),
    }
}

/// The VEVENT lines of one Graph event (master, single instance or exception).
fn vevent(
    ev: &Value,
    uid: &str,
    master_zone: Option<&(String, TimeZone)>,
) -> Result<String, ProviderError> {
    let mut lines = vec!["BEGIN:VEVENT".to_owned(), format!("UID:{}", escape(uid))];
    let modified = s(ev, "lastModifiedDateTime").and_then(|t| t.parse::<Timestamp>().ok());
    lines.push(format!(
        "DTSTAMP:{}",
        stamp(modified.unwrap_or_else(Timestamp::now))
    ));
    let all_day = ev.get("isAllDay").and_then(Value::as_bool).unwrap_or(false);
    let start_v = ev
        .get("start")
        .ok_or_else(|| ProviderError::protocol("event without start"))?;
    let end_v = ev
        .get("end")
        .ok_or_else(|| ProviderError::protocol("event without end"))?;
    let zone = zone_of(s(ev, "originalStartTimeZone"));
    let end_zone = zone_of(s(ev, "originalEndTimeZone")).or_else(|| zone.clone());
    if all_day {
        lines.push(format!("DTSTART;VALUE=DATE:{}", ical_date(start_v)?));
        lines.push(format!("DTEND;VALUE=DATE:{}", ical_date(end_v)?));
    } else {
        lines.push(timed("DTSTART", parse_graph_instant(start_v)?, &zone));
        lines.push(timed("DTEND", parse_graph_instant(end_v)?, &end_zone));
    }
    if let Some(original) = s(ev, "originalStart") {
        let ts: Timestamp = original
            .parse()
            .map_err(|e| ProviderError::protocol(format!("originalStart {original}: {e}")))?;
        if all_day {
            let tz = master_zone.map(|(_, z)| z.clone()).unwrap_or(TimeZone::UTC);
            lines.push(format!(
                "RECURRENCE-ID;VALUE=DATE:{}",
                ts.to_zoned(tz).date().strftime("%Y%m%d")
            ));
        } else {
            lines.push(timed("RECURRENCE-ID", ts, &master_zone.cloned()));
        }
    }
    if let Some(subject) = s(ev, "subject").filter(|t| !t.is_empty()) {
        lines.push(format!("SUMMARY:{}", escape(subject)));
    }
    if let Some(body) = ev.get("body") {
        let content = s(body, "content").unwrap_or("");
        if !content.is_empty() {
            if s(body, "contentType").is_some_and(|t| t.eq_ignore_ascii_case("html")) {
                lines.push(format!("X-ALT-DESC;FMTTYPE=text/html:{}", escape(content)));
                if let Some(preview) = s(ev, "bodyPreview").filter(|p| !p.is_empty()) {
                    lines.push(format!("DESCRIPTION:{}", escape(preview)));
                }
            } else {
                lines.push(format!("DESCRIPTION:{}", escape(content)));
            }
        }
    }
    if let Some(location) = ev
        .get("location")
        .and_then(|l| s(l, "displayName"))
        .filter(|l| !l.is_empty())
    {
        lines.push(format!("LOCATION:{}", escape(location)));
    }
    if ev.get("isCancelled").and_then(Value::as_bool) == Some(true) {
        lines.push("STATUS:CANCELLED".into());
    }
    match s(ev, "showAs") {
        Some("free") => lines.push("TRANSP:TRANSPARENT".into()),
        Some(other @ ("tentative" | "oof" | "workingElsewhere")) => {
            lines.push(format!(
                "X-MICROSOFT-CDO-BUSYSTATUS:{}",
                other.to_ascii_uppercase()
            ));
        }
        _ => {}
    }
    match s(ev, "sensitivity") {
        Some("private") | Some("personal") => lines.push("CLASS:PRIVATE".into()),
        Some("confidential") => lines.push("CLASS:CONFIDENTIAL".into()),
        _ => {}
    }
    if let Some(categories) = ev.get("categories").and_then(Value::as_array) {
        let names: Vec<String> = categories
            .iter()
            .filter_map(Value::as_str)
            .map(escape)
            .collect();
        if !names.is_empty() {
            lines.push(format!("CATEGORIES:{}", names.join(",")));
        }
    }
    if let Some(address) = ev
        .get("organizer")
        .and_then(|o| o.get("emailAddress"))
        .and_then(|e| s(e, "address"))
        .filter(|a| !a.is_empty())
    {
        lines.push(format!("ORGANIZER:mailto:{address}"));
    }
    if let Some(attendees) = ev.get("attendees").and_then(Value::as_array) {
        for a in attendees {
            let Some(address) = a.get("emailAddress").and_then(|e| s(e, "address")) else {
                continue;
            };
            let role = match s(a, "type") {
                Some("optional") => "OPT-PARTICIPANT",
                Some("resource") => "NON-PARTICIPANT",
                _ => "REQ-PARTICIPANT",
            };
            let partstat = match a.get("status").and_then(|st| s(st, "response")) {
                Some("accepted") | Some("organizer") => "ACCEPTED",
                Some("declined") => "DECLINED",
                Some("tentativelyAccepted") => "TENTATIVE",
                _ => "NEEDS-ACTION",
            };
            lines.push(format!(
                "ATTENDEE;ROLE={role};PARTSTAT={partstat}:mailto:{address}"
            ));
        }
    }
    if let Some(rec) = ev.get("recurrence").filter(|r| !r.is_null()) {
        let pattern: PatternedRecurrence = serde_json::from_value(rec.clone())
            .map_err(|e| ProviderError::protocol(format!("recurrence: {e}")))?;
        let rec_zone = zone_of(pattern.range.recurrence_time_zone.as_deref())
            .or_else(|| zone.clone())
            .map(|(_, z)| z)
            .unwrap_or(TimeZone::UTC);
        let rule = gmap::to_rrule(&pattern, &rec_zone, all_day)
            .map_err(|e| ProviderError::protocol(e.to_string()))?;
        lines.push(format!("RRULE:{rule}"));
    }
    lines.push("END:VEVENT".into());
    Ok(lines.join("\r\n"))
}

/// One series: a master (or single event) plus its exceptions, and the occurrences known cancelled.
pub(crate) fn to_ical(
    master: &Value,
    exceptions: &[Value],
    cancelled: &[Timestamp],
) -> Result<ItemContent, ProviderError> {
    let uid = s(master, "iCalUId")
        .or_else(|| s(master, "id"))
        .ok_or_else(|| ProviderError::protocol("event without id"))?
        .to_owned();
    let zone = zone_of(s(master, "originalStartTimeZone"));
    let all_day = master
        .get("isAllDay")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut text =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge//graph//EN\r\n");
    let mut master_block = vevent(master, &uid, zone.as_ref())?;
    if !cancelled.is_empty() {
        let values: Vec<String> = cancelled
            .iter()
            .map(|ts| match (&zone, all_day) {
                (_, true) => ts
                    .to_zoned(TimeZone::UTC)
                    .date()
                    .strftime("%Y%m%d")
                    .to_string(),
                (Some((_, tz)), false) => ts
                    .to_zoned(tz.clone())
                    .datetime()
                    .strftime("%Y%m%dT%H%M%S")
                    .to_string(),
                (None, false) => stamp(*ts),
            })
            .collect();
        let prefix = match (&zone, all_day) {
            (_, true) => "EXDATE;VALUE=DATE".to_owned(),
            (Some((iana, _)), false) => format!("EXDATE;TZID={iana}"),
            (None, false) => "EXDATE".to_owned(),
        };
        let line = format!("{prefix}:{}\r\nEND:VEVENT", values.join(","));
        master_block = master_block.replacen("END:VEVENT", &line, 1);
    }
    text.push_str(&master_block);
    text.push_str("\r\n");
    for exception in exceptions {
        text.push_str(&vevent(exception, &uid, zone.as_ref())?);
        text.push_str("\r\n");
    }
    text.push_str("END:VCALENDAR\r\n");
    ItemContent::parse(text)
}

fn instant_of(value: &CalDateTime, series_zone: &TimeZone) -> Option<Timestamp> {
    match value {
        CalDateTime::Utc(ts) => Some(*ts),
        CalDateTime::Date(d) => d.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp()),
        CalDateTime::Floating(dt) => series_zone.to_ambiguous_timestamp(*dt).compatible().ok(),
        CalDateTime::Zoned { local, tzid } => {
            let zone = zone_of(Some(tzid.as_str())).map(|(_, z)| z)?;
            zone.to_ambiguous_timestamp(*local).compatible().ok()
        }
    }
}

/// The original start of an override, as an instant (to find its Graph instance).
pub(crate) fn recurrence_instant(event: &Event) -> Option<Timestamp> {
    let rid = event.recurrence_id.as_ref()?;
    instant_of(&rid.value, &TimeZone::UTC)
}

fn date_time_zone(value: &CalDateTime) -> Result<(Value, bool, Option<String>), ProviderError> {
    let fmt = |dt: DateTime| dt.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(match value {
        CalDateTime::Date(d) => (
            json!({"dateTime": format!("{}T00:00:00", d), "timeZone": "UTC"}),
            true,
            None,
        ),
        CalDateTime::Utc(ts) => (
            json!({"dateTime": fmt(ts.to_zoned(TimeZone::UTC).datetime()), "timeZone": "UTC"}),
            false,
            None,
        ),
        // Graph has no floating time: it is pinned to UTC (documented decision).
        CalDateTime::Floating(dt) => (
            json!({"dateTime": fmt(*dt), "timeZone": "UTC"}),
            false,
            None,
        ),
        CalDateTime::Zoned { local, tzid } => {
            let name = tzid.as_str();
            let (iana, _) = zone_of(Some(name))
                .ok_or_else(|| ProviderError::invalid(format!("time zone {name} is unknown")))?;
            let windows = iana_to_windows(&iana)
                .map(str::to_owned)
                .unwrap_or(iana.clone());
            (
                json!({"dateTime": fmt(*local), "timeZone": windows}),
                false,
                Some(iana),
            )
        }
    })
}

/// The Graph fields of one VEVENT (no recurrence, no ids).
pub(crate) fn event_fields(event: &Event) -> Result<Map<String, Value>, ProviderError> {
    let mut out = Map::new();
    let start = event
        .dtstart
        .as_ref()
        .ok_or_else(|| ProviderError::invalid("event without DTSTART"))?;
    let (start_json, all_day, _) = date_time_zone(&start.value)?;
    let end_json = match &event.end {
        Some(EventEnd::End(end)) => date_time_zone(&end.value)?.0,
        Some(EventEnd::Duration(d)) => {
            let value = &start.value;
            match value {
                CalDateTime::Date(date) => {
                    let days = d.value.nominal_days().max(1);
                    let end = date.checked_add(days.days()).unwrap_or(*date);
                    date_time_zone(&CalDateTime::Date(end))?.0
                }
                other => {
                    let mut j = date_time_zone(other)?.0;
                    let civil: DateTime = s(&j, "dateTime")
                        .unwrap_or("")
                        .parse()
                        .map_err(|_| ProviderError::invalid("DTSTART"))?;
                    let end = civil
                        .checked_add(d.value.nominal_days().days())
                        .and_then(|c| {
                            c.checked_add(jiff::SignedDuration::from_secs(d.value.exact_seconds()))
                        })
                        .map_err(|e| ProviderError::invalid(format!("DURATION: {e}")))?;
                    j["dateTime"] = json!(end.strftime("%Y-%m-%dT%H:%M:%S").to_string());
                    j
                }
            }
        }
        None => match &start.value {
            CalDateTime::Date(date) => {
                date_time_zone(&CalDateTime::Date(
                    date.checked_add(1.day()).unwrap_or(*date),
                ))?
                .0
            }
            other => date_time_zone(other)?.0,
        },
    };
    out.insert("start".into(), start_json);
    out.insert("end".into(), end_json);
    out.insert("isAllDay".into(), json!(all_day));
    out.insert(
        "subject".into(),
        json!(
            event
                .summary
                .as_ref()
                .map(|p| p.value.as_str())
                .unwrap_or("")
        ),
    );
    out.insert(
        "body".into(),
        json!({"contentType": "text", "content": event.description.as_ref().map(|p| p.value.as_str()).unwrap_or("")}),
    );
    out.insert(
        "location".into(),
        json!({"displayName": event.location.as_ref().map(|p| p.value.as_str()).unwrap_or("")}),
    );
    let transparent = event
        .transparency
        .as_ref()
        .is_some_and(|t| t.value.as_str().eq_ignore_ascii_case("TRANSPARENT"));
    let busy_status = event
        .other
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case("X-MICROSOFT-CDO-BUSYSTATUS"))
        .map(|p| p.value.to_ascii_lowercase());
    let show_as = match (transparent, busy_status.as_deref()) {
        (true, _) => "free",
        (false, Some("tentative")) => "tentative",
        (false, Some("oof")) => "oof",
        (false, Some("workingelsewhere")) => "workingElsewhere",
        _ => "busy",
    };
    out.insert("showAs".into(), json!(show_as));
    let sensitivity = match event
        .class
        .as_ref()
        .map(|c| c.value.as_str().to_ascii_uppercase())
    {
        Some(c) if c == "PRIVATE" => "private",
        Some(c) if c == "CONFIDENTIAL" => "confidential",
        _ => "normal",
    };
    out.insert("sensitivity".into(), json!(sensitivity));
    let categories: Vec<&str> = event.category_names().collect();
    out.insert("categories".into(), json!(categories));
    Ok(out)
}

/// The Graph body of a series master (or single event): its fields plus `recurrence`.
pub(crate) fn master_body(series: &EventSeries) -> Result<Map<String, Value>, ProviderError> {
    let master = series.master().ok_or_else(|| {
        ProviderError::invalid("a series without its master cannot be written to Graph")
    })?;
    let mut body = event_fields(master)?;
    if let Some(rrule) = &master.rrule {
        let rule = RRule::parse(&rrule.value)
            .map_err(|e| ProviderError::invalid(format!("RRULE: {e}")))?;
        let start = master
            .dtstart
            .as_ref()
            .map(|p| p.value.clone())
            .ok_or_else(|| ProviderError::invalid("no DTSTART"))?;
        let (zone, windows) = match &start {
            CalDateTime::Zoned { tzid, .. } => {
                let (iana, tz) = zone_of(Some(tzid.as_str()))
                    .ok_or_else(|| ProviderError::invalid("unknown TZID"))?;
                (tz, iana_to_windows(&iana).map(str::to_owned))
            }
            _ => (TimeZone::UTC, Some("UTC".to_owned())),
        };
        let pattern = gmap::from_rrule(&rule, &start, &zone, windows.as_deref()).map_err(|e| {
            ProviderError::Unsupported {
                what: format!(
                    "this recurrence in Microsoft Graph ({e}); write the series as single events"
                ),
            }
        })?;
        body.insert(
            "recurrence".into(),
            serde_json::to_value(pattern).map_err(|e| ProviderError::invalid(e.to_string()))?,
        );
    }
    Ok(body)
}

/// EXDATE instants of the master (cancelled occurrences to delete on Graph).
pub(crate) fn exdate_instants(series: &EventSeries) -> Vec<Timestamp> {
    let Some(master) = series.master() else {
        return Vec::new();
    };
    master
        .exdate_values()
        .filter_map(|v| match v {
            calbridge_model::datetime::DateOrPeriod::At(at) => instant_of(at, &TimeZone::UTC),
            calbridge_model::datetime::DateOrPeriod::Period(_) => None,
        })
        .collect()
}
