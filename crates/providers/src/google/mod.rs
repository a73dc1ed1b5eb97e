//! Google Calendar API v3: `events.list` with `syncToken` (410 → full read), `pageToken` paging,
//! cancelled items as deletions or removed occurrences, series reassembled from masters and their
//! modified instances, client-chosen ids from the `CreateKey`, `If-Match` writes, `freeBusy.query`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use calbridge_model::datetime::CalDateTime;
use calbridge_model::mapping::google::GoogleRecurrence;
use calbridge_model::occurrences::series_input;
use calbridge_model::{Event, EventEnd};
use http::Method;
use http::header::{CONTENT_TYPE, IF_MATCH};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use url::Url;

use crate::content::ItemContent;
use crate::error::ProviderError;
use crate::graph::convert::{escape, zone_of};
use crate::http::rest::{self, Next};
use crate::http::{Budget, BudgetConfig, Credentials, Endpoint, HttpClient, Request, Response};
use crate::oauth::{Access, TokenSource};
use crate::provider::{CalendarProvider, Diagnosis, HeldVersions, ProviderKind};
use crate::series_etag;
use crate::types::{
    BusyKind, BusyPeriod, CalendarId, Capabilities, ChangeSet, CreateKey, Cursor, Etag,
    FullListingReason, KnownVersions, ReadItem, RemoteCalendar, RemoteId, RemoteItem, WatchChannel,
    WatchRequest, Window, Written,
};

#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// `https://www.googleapis.com/calendar/v3/` (or an emulator).
    pub api_base: Url,
    pub access: Access,
    /// `maxResults` per `events.list` page.
    pub page_size: u32,
    /// Where `read` looks for a series' modified instances.
    pub read_window: Option<Window>,
}

impl GoogleConfig {
    pub fn new(api_base: Url, access: Access) -> Self {
        let mut api_base = api_base;
        if !api_base.path().ends_with('/') {
            let path = format!("{}/", api_base.path());
            api_base.set_path(&path);
        }
        Self {
            api_base,
            access,
            page_size: 250,
            read_window: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GoogleProvider {
    endpoint: Endpoint,
    tokens: Arc<dyn TokenSource>,
    config: GoogleConfig,
}

fn seg(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn parse_json(response: &Response) -> Result<Value, ProviderError> {
    serde_json::from_slice(&response.body)
        .map_err(|e| ProviderError::protocol(format!("Google answered invalid JSON: {e}")))
}

fn reason(body: &Value) -> String {
    body.get("error")
        .and_then(|e| e.get("errors"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|e| s(e, "reason"))
        .unwrap_or_default()
        .to_owned()
}

fn rfc3339(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Google's errors with their meaning; rate limits come as 403 or 429.
fn google_error(response: &Response) -> ProviderError {
    let status = response.status.as_u16();
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    match (status, reason(&body).as_str()) {
        (403 | 429, "rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded") | (429, _) => {
            ProviderError::RateLimited {
                retry_after: response.retry_after(),
            }
        }
        (412, _) => ProviderError::PreconditionFailed,
        (410, "fullSyncRequired") => ProviderError::CursorInvalid,
        _ => response.error(),
    }
}

fn is_rate_limit(response: &Response) -> bool {
    matches!(response.status.as_u16(), 403 | 429)
        && matches!(google_error(response), ProviderError::RateLimited { .. })
}

/// `{date}` or `{dateTime, timeZone?}` → an instant (dates at UTC midnight) and whether all-day.
fn event_instant(v: &Value) -> Result<(Timestamp, bool), ProviderError> {
    if let Some(date) = s(v, "date") {
        let d: jiff::civil::Date = date
            .parse()
            .map_err(|e| ProviderError::protocol(format!("date {date}: {e}")))?;
        let ts = d
            .to_zoned(TimeZone::UTC)
            .map_err(|e| ProviderError::protocol(e.to_string()))?
            .timestamp();
        return Ok((ts, true));
    }
    let dt = s(v, "dateTime")
        .ok_or_else(|| ProviderError::protocol("EventDateTime without date or dateTime"))?;
    if let Ok(ts) = dt.parse::<Timestamp>() {
        return Ok((ts, false));
    }
    let civil: jiff::civil::DateTime = dt
        .parse()
        .map_err(|e| ProviderError::protocol(format!("dateTime {dt}: {e}")))?;
    let zone = zone_of(s(v, "timeZone"))
        .map(|(_, z)| z)
        .unwrap_or(TimeZone::UTC);
    let ts = zone
        .to_ambiguous_timestamp(civil)
        .compatible()
        .map_err(|e| ProviderError::protocol(e.to_string()))?;
    Ok((ts, false))
}

fn date_value(v: &Value) -> Option<String> {
    s(v, "date").map(|d| d.replace('-', ""))
}

fn time_line(
    name: &str,
    v: &Value,
    zone: Option<&(String, TimeZone)>,
) -> Result<String, ProviderError> {
    if let Some(date) = date_value(v) {
        return Ok(format!("{name};VALUE=DATE:{date}"));
    }
    let (ts, _) = event_instant(v)?;
    let own = zone_of(s(v, "timeZone"));
    Ok(match own.as_ref().or(zone) {
        Some((iana, tz)) => format!(
            "{name};TZID={iana}:{}",
            ts.to_zoned(tz.clone()).datetime().strftime("%Y%m%dT%H%M%S")
        ),
        None => format!("{name}:{}", ts.strftime("%Y%m%dT%H%M%SZ")),
    })
}

fn vevent(
    ev: &Value,
    uid: &str,
    series_zone: Option<&(String, TimeZone)>,
    recurrence: bool,
) -> Result<String, ProviderError> {
    let mut lines = vec!["BEGIN:VEVENT".to_owned(), format!("UID:{}", escape(uid))];
    let updated = s(ev, "updated")
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or_else(Timestamp::now);
    lines.push(format!("DTSTAMP:{}", updated.strftime("%Y%m%dT%H%M%SZ")));
    let start = ev
        .get("start")
        .ok_or_else(|| ProviderError::protocol("event without start"))?;
    lines.push(time_line("DTSTART", start, series_zone)?);
    if let Some(end) = ev.get("end") {
        lines.push(time_line("DTEND", end, series_zone)?);
    }
    if let Some(original) = ev.get("originalStartTime") {
        lines.push(time_line("RECURRENCE-ID", original, series_zone)?);
    }
    for (key, name) in [
        ("summary", "SUMMARY"),
        ("description", "DESCRIPTION"),
        ("location", "LOCATION"),
    ] {
        if let Some(text) = s(ev, key).filter(|t| !t.is_empty()) {
            lines.push(format!("{name}:{}", escape(text)));
        }
    }
    match s(ev, "status") {
        Some("tentative") => lines.push("STATUS:TENTATIVE".into()),
        Some("cancelled") => lines.push("STATUS:CANCELLED".into()),
        _ => {}
    }
    if s(ev, "transparency") == Some("transparent") {
        lines.push("TRANSP:TRANSPARENT".into());
    }
    match s(ev, "visibility") {
        Some("private") => lines.push("CLASS:PRIVATE".into()),
        Some("confidential") => lines.push("CLASS:CONFIDENTIAL".into()),
        Some("public") => lines.push("CLASS:PUBLIC".into()),
        _ => {}
    }
    if let Some(seq) = ev.get("sequence").and_then(Value::as_u64) {
        lines.push(format!("SEQUENCE:{seq}"));
    }
    if let Some(email) = ev.get("organizer").and_then(|o| s(o, "email")) {
        lines.push(format!("ORGANIZER:mailto:{email}"));
    }
    for a in ev
        .get("attendees")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(email) = s(a, "email") else { continue };
        let role = if a.get("optional").and_then(Value::as_bool) == Some(true) {
            "OPT-PARTICIPANT"
        } else {
            "REQ-PARTICIPANT"
        };
        let partstat = match s(a, "responseStatus") {
            Some("accepted") => "ACCEPTED",
            Some("declined") => "DECLINED",
            Some("tentative") => "TENTATIVE",
            _ => "NEEDS-ACTION",
        };
        lines.push(format!(
            "ATTENDEE;ROLE={role};PARTSTAT={partstat}:mailto:{email}"
        ));
    }
    if recurrence {
        // Google's recurrence[] is RFC 5545 text without DTSTART: the lines go in as they are.
        for line in ev
            .get("recurrence")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(line) = line.as_str() {
                let upper = line.to_ascii_uppercase();
                if ["RRULE", "EXRULE", "RDATE", "EXDATE"]
                    .iter()
                    .any(|p| upper.starts_with(p))
                    && !line.contains(['\r', '\n'])
                {
                    lines.push(line.to_owned());
                }
            }
        }
    }
    lines.push("END:VEVENT".into());
    Ok(lines.join("\r\n"))
}

/// The UID calbridge wrote, kept in a private extended property because `events.insert` may
/// replace `iCalUID` with its own.
fn our_uid(event: &Value) -> Option<&str> {
    event
        .get("extendedProperties")
        .and_then(|e| e.get("private"))
        .and_then(|p| s(p, UID_PROPERTY))
}

const UID_PROPERTY: &str = "calbridgeUid";

/// A master (or single event), its modified instances and its cancelled instances' original starts.
fn to_ical(
    master: &Value,
    exceptions: &[&Value],
    cancelled: &[&Value],
) -> Result<ItemContent, ProviderError> {
    let uid = our_uid(master)
        .or_else(|| s(master, "iCalUID"))
        .or_else(|| s(master, "id"))
        .ok_or_else(|| ProviderError::protocol("event without id"))?;
    let zone = master
        .get("start")
        .and_then(|st| zone_of(s(st, "timeZone")));
    let mut block = vevent(master, uid, zone.as_ref(), true)?;
    let mut exdates = Vec::new();
    for c in cancelled {
        if let Some(original) = c.get("originalStartTime") {
            exdates.push(time_line("EXDATE", original, zone.as_ref())?);
        }
    }
    if !exdates.is_empty() {
        block = block.replacen(
            "END:VEVENT",
            &format!("{}\r\nEND:VEVENT", exdates.join("\r\n")),
            1,
        );
    }
    let mut text =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge//google//EN\r\n");
    text.push_str(&block);
    text.push_str("\r\n");
    for e in exceptions {
        text.push_str(&vevent(e, uid, zone.as_ref(), false)?);
        text.push_str("\r\n");
    }
    text.push_str("END:VCALENDAR\r\n");
    ItemContent::parse(text)
}

fn event_date_time(value: &CalDateTime) -> Result<Value, ProviderError> {
    Ok(match value {
        CalDateTime::Date(d) => json!({"date": d.to_string()}),
        CalDateTime::Utc(ts) => json!({"dateTime": rfc3339(*ts), "timeZone": "UTC"}),
        CalDateTime::Floating(dt) => {
            json!({"dateTime": dt.strftime("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
        }
        CalDateTime::Zoned { local, tzid } => {
            let (iana, _) = zone_of(Some(tzid.as_str()))
                .ok_or_else(|| ProviderError::invalid(format!("time zone {tzid:?} is unknown")))?;
            json!({"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": iana})
        }
    })
}

fn event_fields(event: &Event) -> Result<Map<String, Value>, ProviderError> {
    let mut out = Map::new();
    let start = event
        .dtstart
        .as_ref()
        .ok_or_else(|| ProviderError::invalid("event without DTSTART"))?;
    out.insert("start".into(), event_date_time(&start.value)?);
    let end = match &event.end {
        Some(EventEnd::End(end)) => event_date_time(&end.value)?,
        Some(EventEnd::Duration(d)) => match &start.value {
            CalDateTime::Date(date) => {
                let end = date
                    .checked_add(jiff::Span::new().days(d.value.nominal_days().max(1)))
                    .unwrap_or(*date);
                json!({"date": end.to_string()})
            }
            other => {
                let mut j = event_date_time(other)?;
                let (ts, _) = event_instant(&j)?;
                let end = ts
                    .checked_add(jiff::SignedDuration::from_secs(
                        d.value.nominal_days() * 86_400 + d.value.exact_seconds(),
                    ))
                    .map_err(|e| ProviderError::invalid(e.to_string()))?;
                j = json!({"dateTime": rfc3339(end), "timeZone": s(&j, "timeZone").unwrap_or("UTC")});
                j
            }
        },
        None => match &start.value {
            CalDateTime::Date(date) => {
                json!({"date": date.checked_add(jiff::Span::new().days(1)).unwrap_or(*date).to_string()})
            }
            other => event_date_time(other)?,
        },
    };
    out.insert("end".into(), end);
    out.insert(
        "summary".into(),
        json!(
            event
                .summary
                .as_ref()
                .map(|p| p.value.as_str())
                .unwrap_or("")
        ),
    );
    out.insert(
        "description".into(),
        json!(
            event
                .description
                .as_ref()
                .map(|p| p.value.as_str())
                .unwrap_or("")
        ),
    );
    out.insert(
        "location".into(),
        json!(
            event
                .location
                .as_ref()
                .map(|p| p.value.as_str())
                .unwrap_or("")
        ),
    );
    let transparent = event
        .transparency
        .as_ref()
        .is_some_and(|t| t.value.as_str().eq_ignore_ascii_case("TRANSPARENT"));
    out.insert(
        "transparency".into(),
        json!(if transparent { "transparent" } else { "opaque" }),
    );
    let visibility = match event
        .class
        .as_ref()
        .map(|c| c.value.as_str().to_ascii_uppercase())
    {
        Some(c) if c == "PRIVATE" => "private",
        Some(c) if c == "CONFIDENTIAL" => "confidential",
        Some(c) if c == "PUBLIC" => "public",
        _ => "default",
    };
    out.insert("visibility".into(), json!(visibility));
    if event
        .status
        .as_ref()
        .is_some_and(|status| status.value.as_str().eq_ignore_ascii_case("TENTATIVE"))
    {
        out.insert("status".into(), json!("tentative"));
    }
    Ok(out)
}

fn master_body(content: &ItemContent) -> Result<Map<String, Value>, ProviderError> {
    let series =
        content.calendar().series().first().ok_or_else(|| {
            ProviderError::invalid("only events can be written to Google Calendar")
        })?;
    let master = series.master().ok_or_else(|| {
        ProviderError::invalid("a series without its master cannot be written to Google Calendar")
    })?;
    let mut body = event_fields(master)?;
    body.insert("iCalUID".into(), json!(series.uid()));
    body.insert(
        "extendedProperties".into(),
        json!({"private": {UID_PROPERTY: series.uid()}}),
    );
    if master.rrule.is_some() || master.rdates.iter().any(|r| !r.value.is_empty()) {
        let input = series_input(series)
            .map_err(|e| ProviderError::invalid(format!("recurrence: {e}")))?
            .ok_or_else(|| ProviderError::invalid("recurrence without a master"))?;
        let lines = GoogleRecurrence::from_series(&input).to_lines();
        body.insert("recurrence".into(), json!(lines));
        // Google expands recurring events in the start's zone, which must be named.
        if let Some(start) = body.get_mut("start").and_then(Value::as_object_mut) {
            start.entry("timeZone").or_insert(json!("UTC"));
        }
    }
    Ok(body)
}

fn instant_of(value: &CalDateTime) -> Option<Timestamp> {
    match value {
        CalDateTime::Utc(ts) => Some(*ts),
        CalDateTime::Date(d) => d.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp()),
        CalDateTime::Floating(dt) => TimeZone::UTC.to_ambiguous_timestamp(*dt).compatible().ok(),
        CalDateTime::Zoned { local, tzid } => {
            let (_, zone) = zone_of(Some(tzid.as_str()))?;
            zone.to_ambiguous_timestamp(*local).compatible().ok()
        }
    }
}

/// Whether an instance differs from what the master alone would make of it (then it is an override).
fn is_modified_instance(master: &Value, instance: &Value) -> bool {
    if s(instance, "status") == Some("cancelled") {
        return false;
    }
    for key in [
        "summary",
        "description",
        "location",
        "transparency",
        "visibility",
        "status",
        "colorId",
    ] {
        if instance.get(key) != master.get(key) {
            return true;
        }
    }
    let start = instance.get("start").and_then(|v| event_instant(v).ok());
    let original = instance
        .get("originalStartTime")
        .and_then(|v| event_instant(v).ok());
    if start.is_none() || start != original {
        return true;
    }
    let length = |v: &Value| -> Option<jiff::SignedDuration> {
        let (a, _) = event_instant(v.get("start")?).ok()?;
        let (b, _) = event_instant(v.get("end")?).ok()?;
        Some(b.duration_since(a))
    };
    length(instance) != length(master)
}

impl GoogleProvider {
    pub fn new(http: &HttpClient, config: GoogleConfig, tokens: Arc<dyn TokenSource>) -> Self {
        let budget = Budget::new(BudgetConfig {
            concurrency: 4,
            rate: None,
        });
        Self {
            endpoint: http.endpoint("google", Credentials::None, budget),
            tokens,
            config,
        }
    }

    fn url(&self, tail: &str) -> Result<Url, ProviderError> {
        self.config
            .api_base
            .join(tail)
            .map_err(|e| ProviderError::invalid(format!("Google URL: {e}")))
    }

    fn events_url(&self, calendar: &CalendarId) -> Result<Url, ProviderError> {
        self.url(&format!("calendars/{}/events", seg(calendar.as_str())))
    }

    fn event_url(&self, calendar: &CalendarId, id: &str) -> Result<Url, ProviderError> {
        self.url(&format!(
            "calendars/{}/events/{}",
            seg(calendar.as_str()),
            seg(id)
        ))
    }

    fn writable(&self) -> Result<(), ProviderError> {
        match self.config.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(ProviderError::ReadOnly),
        }
    }

    /// Sends with the bearer token (one refresh on 401). Google's 403 rate limits are retried like
    /// 429s, with backoff, since Google promises no `Retry-After`.
    async fn send(&self, request: Request) -> Result<Response, ProviderError> {
        rest::send_with_bearer(&self.endpoint, self.tokens.as_ref(), request, |response| {
            response.status.as_u16() == 403 && is_rate_limit(response)
        })
        .await
    }

    async fn get_json(&self, url: Url) -> Result<Value, ProviderError> {
        let response = self.send(Request::new(Method::GET, url)).await?;
        if !response.status.is_success() {
            return Err(google_error(&response));
        }
        parse_json(&response)
    }

    /// Every page of a listing at `url`, following `nextPageToken`; `end` reads what the last page
    /// carries.
    async fn pages<E: Send>(
        &self,
        url: Url,
        end: impl Fn(&Value) -> Result<E, ProviderError> + Sync,
    ) -> Result<(Vec<Value>, E), ProviderError> {
        let (url, end) = (&url, &end);
        rest::all_pages(None, move |page_token: Option<String>| async move {
            let mut url = url.clone();
            if let Some(token) = &page_token {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let page = self.get_json(url).await?;
            let items = page
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let next = match s(&page, "nextPageToken") {
                Some(next) => Next::Page(Some(next.to_owned())),
                None => Next::End(end(&page)?),
            };
            Ok((items, next))
        })
        .await
    }

    /// One listing: every page until `nextSyncToken`.
    async fn list_round(
        &self,
        calendar: &CalendarId,
        sync_token: Option<&str>,
        window: &Window,
    ) -> Result<(Vec<Value>, String), ProviderError> {
        let mut url = self.events_url(calendar)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("maxResults", &self.config.page_size.to_string());
            q.append_pair("showDeleted", "true");
            match sync_token {
                Some(token) => {
                    q.append_pair("syncToken", token);
                }
                None => {
                    q.append_pair("timeMin", &rfc3339(window.start()));
                    q.append_pair("timeMax", &rfc3339(window.end()));
                }
            }
        }
        self.pages(url, |last| {
            s(last, "nextSyncToken")
                .map(str::to_owned)
                .ok_or_else(|| ProviderError::protocol("last page without nextSyncToken"))
        })
        .await
    }

    /// Every instance of a series in `window`, cancelled ones included.
    async fn instances(
        &self,
        calendar: &CalendarId,
        id: &str,
        window: &Window,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut url = self.url(&format!(
            "calendars/{}/events/{}/instances",
            seg(calendar.as_str()),
            seg(id)
        ))?;
        url.query_pairs_mut()
            .append_pair("showDeleted", "true")
            .append_pair("maxResults", "2500")
            .append_pair("timeMin", &rfc3339(window.start()))
            .append_pair("timeMax", &rfc3339(window.end()));
        let (instances, ()) = self.pages(url, |_| Ok(())).await?;
        Ok(instances)
    }

    /// Reads one series by master id: the master, then (if recurring) its instances in `window`.
    async fn read_series(
        &self,
        calendar: &CalendarId,
        id: &str,
        window: &Window,
    ) -> Result<Option<RemoteItem>, ProviderError> {
        let response = self
            .send(Request::new(Method::GET, self.event_url(calendar, id)?))
            .await?;
        if response.status.as_u16() == 404 || response.status.as_u16() == 410 {
            return Ok(None);
        }
        if !response.status.is_success() {
            return Err(google_error(&response));
        }
        let master = parse_json(&response)?;
        if s(&master, "status") == Some("cancelled") {
            return Ok(None);
        }
        let instances = if master.get("recurrence").is_some() {
            self.instances(calendar, id, window).await?
        } else {
            Vec::new()
        };
        let exceptions: Vec<&Value> = instances
            .iter()
            .filter(|i| is_modified_instance(&master, i))
            .collect();
        let cancelled: Vec<&Value> = instances
            .iter()
            .filter(|i| s(i, "status") == Some("cancelled"))
            .collect();
        self.item(&master, &exceptions, &cancelled).map(Some)
    }

    fn item(
        &self,
        master: &Value,
        exceptions: &[&Value],
        cancelled: &[&Value],
    ) -> Result<RemoteItem, ProviderError> {
        let id = s(master, "id").ok_or_else(|| ProviderError::protocol("event without id"))?;
        let etag =
            s(master, "etag").ok_or_else(|| ProviderError::protocol("event without etag"))?;
        let content = to_ical(master, exceptions, cancelled)?;
        let etag = if exceptions.is_empty() && cancelled.is_empty() {
            etag.to_owned()
        } else {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for e in exceptions.iter().chain(cancelled) {
                h.update(s(e, "id").unwrap_or("").as_bytes());
                h.update(s(e, "etag").unwrap_or("").as_bytes());
                h.update(b"\n");
            }
            series_etag::with_exceptions(etag, h)
        };
        Ok(RemoteItem {
            id: RemoteId::parse(id)?,
            etag: Etag::parse(etag)?,
            content,
        })
    }

    fn read_window(&self) -> Result<Window, ProviderError> {
        if let Some(w) = self.config.read_window {
            return Ok(w);
        }
        let now = Timestamp::now();
        Window::parse(
            now.checked_sub(jiff::SignedDuration::from_hours(24 * 366))
                .unwrap_or(now),
            now.checked_add(jiff::SignedDuration::from_hours(24 * 731))
                .unwrap_or(now),
        )
    }

    /// Writes a series' overrides and cancelled occurrences onto its instances.
    async fn write_overrides(
        &self,
        calendar: &CalendarId,
        master_id: &str,
        content: &ItemContent,
    ) -> Result<(), ProviderError> {
        let Some(series) = content.calendar().series().first() else {
            return Ok(());
        };
        let exdates: Vec<Timestamp> = series
            .master()
            .map(|m| {
                m.exdate_values()
                    .filter_map(|v| match v {
                        calbridge_model::datetime::DateOrPeriod::At(at) => instant_of(at),
                        calbridge_model::datetime::DateOrPeriod::Period(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let overrides: Vec<(Timestamp, &Event)> = series
            .overrides()
            .iter()
            .filter_map(|o| Some((instant_of(&o.recurrence_id.as_ref()?.value)?, o)))
            .collect();
        if overrides.is_empty() {
            return Ok(());
        }
        let min = overrides
            .iter()
            .map(|(t, _)| *t)
            .min()
            .unwrap_or_else(Timestamp::now);
        let max = overrides
            .iter()
            .map(|(t, _)| *t)
            .max()
            .unwrap_or_else(Timestamp::now);
        let day = jiff::SignedDuration::from_hours(24);
        let window = Window::parse(
            min.checked_sub(day).unwrap_or(min),
            max.checked_add(day).unwrap_or(max),
        )?;
        let instances = self.instances(calendar, master_id, &window).await?;
        let by_start: BTreeMap<Timestamp, String> = instances
            .iter()
            .filter_map(|i| {
                Some((
                    event_instant(i.get("originalStartTime")?).ok()?.0,
                    s(i, "id")?.to_owned(),
                ))
            })
            .collect();
        for (at, over) in overrides {
            if exdates.contains(&at) {
                continue;
            }
            let Some(instance) = by_start.get(&at) else {
                return Err(ProviderError::Rejected {
                    status: 400,
                    detail: format!("the series has no occurrence at {at} to override"),
                });
            };
            let cancelled = over
                .status
                .as_ref()
                .is_some_and(|s| s.value.as_str().eq_ignore_ascii_case("CANCELLED"));
            let url = self.event_url(calendar, instance)?;
            let request = if cancelled {
                Request::new(Method::DELETE, url)
            } else {
                Request::new(Method::PATCH, url)
                    .header(CONTENT_TYPE, "application/json")?
                    .body(
                        serde_json::to_vec(&Value::Object(event_fields(over)?))
                            .map_err(|e| ProviderError::invalid(e.to_string()))?,
                    )
                    .idempotent(true)
            };
            let response = self.send(request).await?;
            if !response.status.is_success() && !matches!(response.status.as_u16(), 404 | 410) {
                return Err(google_error(&response));
            }
        }
        Ok(())
    }
}

impl GoogleProvider {
    async fn post_json(&self, url: Url, body: &Value) -> Result<Response, ProviderError> {
        let request = Request::new(Method::POST, url)
            .header(CONTENT_TYPE, "application/json")?
            .body(serde_json::to_vec(body).map_err(|e| ProviderError::invalid(e.to_string()))?);
        self.send(request).await
    }
}

#[async_trait]
impl CalendarProvider for GoogleProvider {
    /// `events.watch`: a `web_hook` channel with our id, token and expiry (ms since the epoch).
    async fn watch(
        &self,
        calendar: &CalendarId,
        request: &WatchRequest,
    ) -> Result<WatchChannel, ProviderError> {
        let body = json!({
            "id": request.id,
            "type": "web_hook",
            "address": request.notification_url.as_str(),
            "token": request.secret,
            "expiration": request.expires_at.as_millisecond().to_string(),
        });
        let url = self.url(&format!(
            "calendars/{}/events/watch",
            seg(calendar.as_str())
        ))?;
        let response = self.post_json(url, &body).await?;
        if !response.status.is_success() {
            return Err(google_error(&response));
        }
        let answer = parse_json(&response)?;
        let id = s(&answer, "id").unwrap_or(&request.id).to_owned();
        let resource_id = s(&answer, "resourceId")
            .ok_or_else(|| ProviderError::protocol("watch answer without a resourceId"))?
            .to_owned();
        let expiration = answer
            .get("expiration")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
            })
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            // Google sets no expiry only when none was asked for; ours was.
            .unwrap_or(request.expires_at);
        Ok(WatchChannel {
            id,
            resource_id: Some(resource_id),
            expires_at: expiration,
        })
    }

    /// Channels cannot be extended: open a new one, then stop the old (notifications from both during
    /// the overlap are harmless).
    async fn renew_watch(
        &self,
        calendar: &CalendarId,
        channel: &WatchChannel,
        request: &WatchRequest,
    ) -> Result<WatchChannel, ProviderError> {
        let fresh = self.watch(calendar, request).await?;
        if let Err(e) = self.stop_watch(channel).await {
            tracing::warn!(channel = %channel.id, error = %e, "old Google channel not stopped; it expires on its own");
        }
        Ok(fresh)
    }

    /// `channels.stop`; 404 means already gone.
    async fn stop_watch(&self, channel: &WatchChannel) -> Result<(), ProviderError> {
        let body = json!({"id": channel.id, "resourceId": channel.resource_id.as_deref().unwrap_or_default()});
        let response = self.post_json(self.url("channels/stop")?, &body).await?;
        match response.status.as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(google_error(&response)),
        }
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Google
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writable: self.config.access == Access::ReadWrite,
            free_busy: true,
            incremental: true,
            windowed_reads: true,
            max_batch: 50,
        }
    }

    async fn test_connection(&self) -> Diagnosis {
        match self.list_calendars().await {
            Ok(calendars) => Diagnosis::ok(calendars),
            Err(e) => Diagnosis::from_error(&e),
        }
    }

    async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError> {
        let (calendars, ()) = self
            .pages(self.url("users/me/calendarList")?, |_| Ok(()))
            .await?;
        let mut out = Vec::new();
        for c in &calendars {
            let Some(id) = s(c, "id").and_then(|i| CalendarId::parse(i).ok()) else {
                continue;
            };
            let role = s(c, "accessRole").unwrap_or("reader");
            out.push(RemoteCalendar {
                id,
                name: s(c, "summaryOverride")
                    .or_else(|| s(c, "summary"))
                    .unwrap_or("")
                    .to_owned(),
                description: s(c, "description").map(str::to_owned),
                color: s(c, "backgroundColor").map(str::to_owned),
                time_zone: s(c, "timeZone").map(str::to_owned),
                components: vec!["VEVENT".into()],
                read_only: self.config.access == Access::ReadOnly
                    || !matches!(role, "writer" | "owner"),
                change_tag: s(c, "etag").map(str::to_owned),
            });
        }
        Ok(out)
    }

    async fn changes(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
        window: &Window,
        held: &dyn HeldVersions,
    ) -> Result<ChangeSet, ProviderError> {
        let (items, token, full) = match cursor {
            Some(c) => match self.list_round(calendar, Some(c.as_str()), window).await {
                Ok((items, token)) => (items, token, None),
                Err(ProviderError::CursorInvalid) => {
                    let (items, token) = self.list_round(calendar, None, window).await?;
                    (items, token, Some(FullListingReason::CursorInvalid))
                }
                Err(e) => return Err(e),
            },
            None => {
                let (items, token) = self.list_round(calendar, None, window).await?;
                (items, token, Some(FullListingReason::NoCursor))
            }
        };
        let mut set = ChangeSet {
            cursor: Some(Cursor::parse(token)?),
            full_listing: full,
            ..ChangeSet::default()
        };
        let by_id: HashMap<&str, &Value> = items
            .iter()
            .filter_map(|i| Some((s(i, "id")?, i)))
            .collect();
        // Group by series: masters and singles by id; instances under recurringEventId.
        let mut order: Vec<String> = Vec::new();
        let mut members: HashMap<String, Vec<&Value>> = HashMap::new();
        for item in &items {
            let Some(id) = s(item, "id") else { continue };
            let series = s(item, "recurringEventId").unwrap_or(id).to_owned();
            if !members.contains_key(&series) {
                order.push(series.clone());
            }
            members.entry(series).or_default().push(item);
        }
        // The versions held: of every item for a full listing, else of the series this round names.
        let known: Cow<'_, KnownVersions> = match full {
            Some(_) => held.all().await?,
            None => {
                let named = order
                    .iter()
                    .map(|id| RemoteId::parse(id.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Cow::Owned(held.of(&named).await?)
            }
        };
        let mut present = HashSet::new();
        for series_id in order {
            let remote = RemoteId::parse(series_id.clone())?;
            let master = by_id.get(series_id.as_str()).copied();
            if master.is_some_and(|m| s(m, "status") == Some("cancelled")) {
                // A cancelled master or single event is a deletion (Google keeps no other meaning).
                if full.is_none() || known.contains_key(&remote) {
                    set.deletions.push(remote);
                }
                continue;
            }
            let group = members.remove(&series_id).unwrap_or_default();
            let outcome = match (full, master) {
                // A full listing holds the master with its modified and cancelled instances.
                (Some(_), Some(master)) => {
                    let exceptions: Vec<&Value> = group
                        .iter()
                        .copied()
                        .filter(|i| {
                            s(i, "recurringEventId").is_some()
                                && s(i, "status") != Some("cancelled")
                        })
                        .collect();
                    let cancelled: Vec<&Value> = group
                        .iter()
                        .copied()
                        .filter(|i| {
                            s(i, "recurringEventId").is_some()
                                && s(i, "status") == Some("cancelled")
                        })
                        .collect();
                    self.item(master, &exceptions, &cancelled).map(Some)
                }
                // Incremental, or instances whose master is outside the listing: read the series.
                _ => self.read_series(calendar, &series_id, window).await,
            };
            match outcome {
                Ok(Some(item)) => {
                    present.insert(item.id.clone());
                    if full.is_some() && known.get(&item.id) == Some(&item.etag) {
                        set.unchanged.push(item.id);
                    } else {
                        set.upserts.push(item);
                    }
                }
                Ok(None) => {
                    if known.contains_key(&remote) {
                        set.deletions.push(remote);
                    }
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => set.failures.push((remote, e.to_string())),
            }
        }
        if full.is_some() {
            for id in known.keys() {
                if !present.contains(id) && !set.deletions.contains(id) {
                    set.deletions.push(id.clone());
                }
            }
        }
        Ok(set)
    }

    async fn read(
        &self,
        calendar: &CalendarId,
        ids: &[RemoteId],
    ) -> Result<Vec<ReadItem>, ProviderError> {
        let window = self.read_window()?;
        let mut out = Vec::new();
        for id in ids {
            out.push(
                match self.read_series(calendar, id.as_str(), &window).await {
                    Ok(Some(item)) => ReadItem::Found(item),
                    Ok(None) => ReadItem::Missing(id.clone()),
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => ReadItem::Failed(id.clone(), e.to_string()),
                },
            );
        }
        Ok(out)
    }

    async fn create(
        &self,
        calendar: &CalendarId,
        key: &CreateKey,
        content: &ItemContent,
    ) -> Result<Written, ProviderError> {
        self.writable()?;
        let mut body = master_body(content)?;
        body.insert("id".into(), json!(key.as_str()));
        // The client-chosen id makes a repeated insert a 409 instead of a duplicate.
        let request = Request::new(Method::POST, self.events_url(calendar)?)
            .header(CONTENT_TYPE, "application/json")?
            .body(
                serde_json::to_vec(&Value::Object(body))
                    .map_err(|e| ProviderError::invalid(e.to_string()))?,
            )
            .idempotent(true);
        let response = self.send(request).await?;
        let (event, already_existed) = match response.status.as_u16() {
            200..=299 => (parse_json(&response)?, false),
            409 => {
                let existing = self
                    .get_json(self.event_url(calendar, key.as_str())?)
                    .await?;
                let ours = (our_uid(&existing) == content.uid()
                    || s(&existing, "iCalUID") == content.uid())
                    && s(&existing, "status") != Some("cancelled");
                if !ours {
                    return Err(ProviderError::Conflict {
                        detail: format!("event id {} is taken by another event", key.as_str()),
                    });
                }
                (existing, true)
            }
            _ => return Err(google_error(&response)),
        };
        let id = s(&event, "id")
            .ok_or_else(|| ProviderError::protocol("created event without id"))?
            .to_owned();
        self.write_overrides(calendar, &id, content).await?;
        let has_overrides = content
            .calendar()
            .series()
            .first()
            .is_some_and(|s| !s.overrides().is_empty());
        let etag = if has_overrides || already_existed {
            None
        } else {
            s(&event, "etag").map(Etag::parse).transpose()?
        };
        Ok(Written {
            id: RemoteId::parse(id)?,
            etag,
            already_existed,
        })
    }

    async fn update(
        &self,
        calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
        content: &ItemContent,
    ) -> Result<Written, ProviderError> {
        self.writable()?;
        let mut body = master_body(content)?;
        body.remove("iCalUID");
        let master_etag = series_etag::master(if_match);
        let request = Request::new(Method::PUT, self.event_url(calendar, id.as_str())?)
            .header(CONTENT_TYPE, "application/json")?
            .header(IF_MATCH, master_etag)?
            .body(
                serde_json::to_vec(&Value::Object(body))
                    .map_err(|e| ProviderError::invalid(e.to_string()))?,
            );
        let response = self.send(request).await?;
        if !response.status.is_success() {
            return Err(google_error(&response));
        }
        let event = parse_json(&response)?;
        self.write_overrides(calendar, id.as_str(), content).await?;
        let has_overrides = content
            .calendar()
            .series()
            .first()
            .is_some_and(|s| !s.overrides().is_empty());
        let etag = if has_overrides {
            None
        } else {
            s(&event, "etag").map(Etag::parse).transpose()?
        };
        Ok(Written {
            id: id.clone(),
            etag,
            already_existed: false,
        })
    }

    async fn delete(
        &self,
        calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
    ) -> Result<(), ProviderError> {
        self.writable()?;
        let master_etag = series_etag::master(if_match);
        let request = Request::new(Method::DELETE, self.event_url(calendar, id.as_str())?)
            .header(IF_MATCH, master_etag)?;
        let response = self.send(request).await?;
        match response.status.as_u16() {
            200..=299 => Ok(()),
            404 | 410 => Err(ProviderError::NotFound {
                what: id.to_string(),
            }),
            _ => Err(google_error(&response)),
        }
    }

    async fn free_busy(
        &self,
        calendar: &CalendarId,
        window: &Window,
    ) -> Result<Vec<BusyPeriod>, ProviderError> {
        let body = json!({
            "timeMin": rfc3339(window.start()),
            "timeMax": rfc3339(window.end()),
            "items": [{"id": calendar.as_str()}],
        });
        let request = Request::new(Method::POST, self.url("freeBusy")?)
            .header(CONTENT_TYPE, "application/json")?
            .body(serde_json::to_vec(&body).map_err(|e| ProviderError::invalid(e.to_string()))?)
            .idempotent(true);
        let response = self.send(request).await?;
        if !response.status.is_success() {
            return Err(google_error(&response));
        }
        let answer = parse_json(&response)?;
        let entry = answer
            .get("calendars")
            .and_then(|c| c.get(calendar.as_str()))
            .ok_or_else(|| ProviderError::protocol("freeBusy answer without the calendar"))?;
        if let Some(error) = entry
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return Err(ProviderError::protocol(format!("freeBusy: {error}")));
        }
        let mut out = Vec::new();
        for period in entry
            .get("busy")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(start), Some(end)) = (s(period, "start"), s(period, "end")) else {
                continue;
            };
            let start: Timestamp = start
                .parse()
                .map_err(|e| ProviderError::protocol(format!("busy start: {e}")))?;
            let end: Timestamp = end
                .parse()
                .map_err(|e| ProviderError::protocol(format!("busy end: {e}")))?;
            out.push(BusyPeriod {
                start,
                end,
                kind: BusyKind::Busy,
            });
        }
        Ok(out)
    }
}
