//! Microsoft Graph v1.0 (Outlook calendar): calendars, events, calendarView (+ delta), instances, responses
//! to invitations, getSchedule, subscriptions and JSON batching.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::cursor::Cursor;
use crate::notify::Subscription;
use crate::server::{
    Fault, FaultScope, Flavor, Reply, ReplyBody, Req, Shared, fault_server_error, lock,
};
use crate::store::{ChangeType, Kind, Mailbox, StoredEvent, instance_id};

const CONTEXT_EVENTS: &str = "https://graph.microsoft.com/v1.0/$metadata#Collection(event)";
const NEVER: &str = "0001-01-01T00:00:00Z";

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let request_id = uuid::Uuid::new_v4().to_string();
    Reply::json(
        status,
        json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }}),
    )
    .header("request-id", request_id)
}

pub(crate) fn throttled(retry_after: f64) -> Reply {
    let request_id = uuid::Uuid::new_v4().to_string();
    Reply::json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                "message": "Please retry after",
                "request-id": request_id,
                "status": "429",
            },
            "message": "Please retry again later."
        }}),
    )
    .header("Retry-After", format_retry_after(retry_after))
}

fn format_retry_after(secs: f64) -> String {
    let s = format!("{secs:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn not_found() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn invalid(message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "ErrorInvalidParameter", message)
}

fn sync_state_not_found(location: Option<String>) -> Reply {
    let reply = error(
        StatusCode::GONE,
        "SyncStateNotFound",
        "The sync state generation is not found; the delta token is expired or invalid. Restart the sync without a token.",
    );
    match location {
        Some(l) => reply.header("Location", l),
        None => reply,
    }
}

/// `2017-04-15T03:00:50.7579581Z`: UTC with seven fractional digits, as Graph writes instants.
pub(crate) fn format_instant(ts: Timestamp) -> String {
    format!("{}Z", format_civil(ts.to_zoned(TimeZone::UTC).datetime()))
}

/// `2017-04-15T11:00:00.0000000`: a wall-clock time with seven fractional digits (dateTimeTimeZone).
pub(crate) fn format_civil(dt: DateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 100
    )
}

/// Resolves a zone name as Graph accepts it: "UTC", a Windows name, or an IANA name.
pub(crate) fn resolve_zone(name: &str) -> Option<TimeZone> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("UTC") || name == "tzone://Microsoft/Utc" {
        return Some(TimeZone::UTC);
    }
    if let Some(iana) = crate::zones::windows_to_iana(name) {
        return TimeZone::get(iana).ok();
    }
    TimeZone::get(name).ok()
}

/// The name Graph reports for an IANA zone (Windows name when one is known).
pub(crate) fn graph_zone_name(iana: &str) -> String {
    if iana == "UTC" {
        return "UTC".into();
    }
    crate::zones::iana_to_windows(iana)
        .map(str::to_string)
        .unwrap_or_else(|| iana.to_string())
}

/// A request's instant (`startDateTime` ...): an offset in the value is honoured, none means UTC.
pub(crate) fn parse_instant(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    let dt = s.parse::<DateTime>().ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

pub(crate) fn change_key(id: &str, seq: u64) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = digest[..8].to_vec();
    bytes.extend_from_slice(&seq.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn etag(id: &str, seq: u64) -> String {
    format!("W/\"{}\"", change_key(id, seq))
}

/// The current `@odata.etag` of an event (for notifications).
pub(crate) fn etag_of(
    app: &Arc<Shared>,
    mailbox: usize,
    calendar: &str,
    event_id: &str,
) -> Option<String> {
    let store = app.read();
    let ev = store
        .mailboxes
        .get(mailbox)?
        .calendar(calendar)?
        .events
        .get(event_id)?;
    Some(etag(&ev.id, ev.seq))
}

/// The output zone chosen by `Prefer: outlook.timezone` (default UTC).
#[derive(Debug, Clone)]
/// Output preferences: `Prefer: outlook.timezone` (default UTC) and `outlook.body-content-type`.
struct OutZone {
    label: String,
    zone: TimeZone,
    applied: bool,
    /// `Some("text")` / `Some("html")` when the body content type was asked for.
    body_type: Option<&'static str>,
}

fn out_zone(req: &Req) -> OutZone {
    let mut out = OutZone {
        label: "UTC".into(),
        zone: TimeZone::UTC,
        applied: false,
        body_type: None,
    };
    for pref in req.header_values("prefer") {
        if let Some(rest) = pref.strip_prefix("outlook.timezone=") {
            let name = rest.trim().trim_matches('"');
            if let Some(zone) = resolve_zone(name) {
                out.label = name.to_string();
                out.zone = zone;
                out.applied = true;
            }
        } else if let Some(rest) = pref.strip_prefix("outlook.body-content-type=") {
            match rest.trim().trim_matches('"').to_ascii_lowercase().as_str() {
                "text" => out.body_type = Some("text"),
                "html" => out.body_type = Some("html"),
                _ => {}
            }
        }
    }
    out
}

fn with_preferences(mut reply: Reply, zone: &OutZone) -> Reply {
    if zone.applied {
        reply = reply.header(
            "Preference-Applied",
            format!("outlook.timezone=\"{}\"", zone.label),
        );
    }
    if let Some(kind) = zone.body_type {
        reply = reply.header(
            "Preference-Applied",
            format!("outlook.body-content-type=\"{kind}\""),
        );
    }
    reply
}

/// The body in the content type the client asked for (HTML is reduced to its text).
fn body_as(body: &Value, kind: Option<&str>) -> Value {
    match kind {
        Some("text") if body.get("contentType").and_then(Value::as_str) == Some("html") => {
            json!({"contentType": "text", "content": body_preview_full(body)})
        }
        _ => body.clone(),
    }
}

fn date_time_zone(ts: Timestamp, all_day: bool, zone: &OutZone) -> Value {
    // All-day events come back midnight to midnight whatever zone was asked for; only the label follows the
    // request ([obs] graph-docs #1802/#6003).
    let civil = if all_day {
        ts.to_zoned(TimeZone::UTC).datetime()
    } else {
        ts.to_zoned(zone.zone.clone()).datetime()
    };
    json!({"dateTime": format_civil(civil), "timeZone": zone.label})
}

fn ical_uid(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digest = Sha256::digest(id.as_bytes());
    let mut out = String::with_capacity(88);
    out.push_str("040000008200E00074C5B7101A82E00800000000");
    for b in &digest[..24] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

fn web_link(id: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("https://outlook.office365.com/owa/?itemid={encoded}&exvsurl=1&path=/calendar/item")
}

/// The full event as Graph returns it.
fn render(ev: &StoredEvent, zone: &OutZone) -> Value {
    let kind = match ev.kind {
        Kind::Single => "singleInstance",
        Kind::Master => "seriesMaster",
        Kind::Exception => "exception",
    };
    render_view(
        &View {
            event: ev,
            id: &ev.id,
            kind,
            start: ev.start,
            end: ev.end,
            master_id: ev.master_id.as_deref(),
            original_start: ev.original_start,
        },
        zone,
    )
}

/// What distinguishes one rendered instance from the stored record it is drawn from (a generated occurrence
/// borrows its master's body and version instead of cloning them).
struct View<'a> {
    event: &'a StoredEvent,
    id: &'a str,
    kind: &'static str,
    start: Timestamp,
    end: Timestamp,
    master_id: Option<&'a str>,
    original_start: Option<Timestamp>,
}

fn render_view(view: &View<'_>, zone: &OutZone) -> Value {
    let ev = view.event;
    let mut out = Map::new();
    let key = change_key(&ev.id, ev.seq);
    out.insert("@odata.etag".into(), Value::String(format!("W/\"{key}\"")));
    out.insert("id".into(), Value::String(view.id.to_string()));
    out.insert(
        "createdDateTime".into(),
        Value::String(format_instant(ev.created)),
    );
    out.insert(
        "lastModifiedDateTime".into(),
        Value::String(format_instant(ev.modified)),
    );
    out.insert("changeKey".into(), Value::String(key));
    for (k, v) in &ev.body {
        match k.as_str() {
            "recurrence" => {}
            "body" => {
                out.insert(k.clone(), body_as(v, zone.body_type));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let recurrence = if view.kind == "seriesMaster" {
        ev.body.get("recurrence").cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    out.insert("type".into(), Value::String(view.kind.into()));
    out.insert("recurrence".into(), recurrence);
    out.insert(
        "seriesMasterId".into(),
        view.master_id
            .map(|m| Value::String(m.to_string()))
            .unwrap_or(Value::Null),
    );
    if let Some(original) = view.original_start {
        out.insert(
            "originalStart".into(),
            Value::String(format_instant(original)),
        );
    }
    out.insert("iCalUId".into(), Value::String(ical_uid(view.id)));
    out.insert("webLink".into(), Value::String(web_link(view.id)));
    out.insert("isAllDay".into(), Value::Bool(ev.all_day));
    out.insert("start".into(), date_time_zone(view.start, ev.all_day, zone));
    out.insert("end".into(), date_time_zone(view.end, ev.all_day, zone));
    Value::Object(out)
}

/// A generated (unmodified) occurrence of a series. It carries the master's version: the doc's
/// `/instances` example shows one etag for the whole series.
fn render_occurrence(master: &StoredEvent, original_start: Timestamp, zone: &OutZone) -> Value {
    let id = instance_id(&master.id, original_start, master.all_day);
    let length = master.end.duration_since(master.start);
    render_view(
        &View {
            event: master,
            id: &id,
            kind: "occurrence",
            start: original_start,
            end: original_start.checked_add(length).unwrap_or(original_start),
            master_id: Some(&master.id),
            original_start: Some(original_start),
        },
        zone,
    )
}

fn removed(id: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}})
}

/// Instances of a calendar in a window: singles, live exceptions and generated occurrences (never masters),
/// ordered by start.
fn instances_in(
    cal: &crate::store::Calendar,
    from: Timestamp,
    to: Timestamp,
    only_master: Option<&str>,
) -> Vec<(Timestamp, InstanceRef)> {
    let mut out = Vec::new();
    // One series: its master and its indexed exceptions only (a scan of the calendar per request made
    // reading a 100,000-event mailbox's series quadratic).
    let candidates: Box<dyn Iterator<Item = &crate::store::StoredEvent>> = match only_master {
        Some(m) => Box::new(
            cal.events.get(m).into_iter().chain(
                cal.exceptions
                    .get(m)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| cal.events.get(id)),
            ),
        ),
        None => Box::new(cal.events.values()),
    };
    for ev in candidates {
        if ev.deleted {
            continue;
        }
        if let Some(m) = only_master
            && ev.master_id.as_deref() != Some(m)
            && ev.id != m
        {
            continue;
        }
        match ev.kind {
            Kind::Single if only_master.is_none() => {
                if ev.overlaps(Some(from), Some(to)) {
                    out.push((ev.start, InstanceRef::Stored(ev.id.clone())));
                }
            }
            Kind::Single => {}
            Kind::Exception => {
                if ev.overlaps(Some(from), Some(to)) {
                    out.push((ev.start, InstanceRef::Stored(ev.id.clone())));
                }
            }
            Kind::Master => {
                for start in generated(cal, ev, Some(from), Some(to)) {
                    out.push((start, InstanceRef::Occurrence(ev.id.clone(), start)));
                }
            }
        }
    }
    out.sort_by_key(|a| a.0);
    out
}

/// Generated occurrences of a master in a window, minus those that have a stored exception.
fn generated(
    cal: &crate::store::Calendar,
    master: &StoredEvent,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<Timestamp> {
    let length = master.end.duration_since(master.start);
    let padded_from = from.and_then(|f| f.checked_sub(length).ok());
    let exceptions = cal.exceptions.get(&master.id);
    crate::series::occurrences(master, padded_from.or(from), to)
        .into_iter()
        .filter(|start| {
            let end = start.checked_add(length).unwrap_or(*start);
            from.is_none_or(|f| end > f) && to.is_none_or(|t| *start < t)
        })
        .filter(|start| {
            let id = instance_id(&master.id, *start, master.all_day);
            !exceptions.is_some_and(|set| set.contains(&id))
        })
        .collect()
}

#[derive(Debug, Clone)]
enum InstanceRef {
    Stored(String),
    Occurrence(String, Timestamp),
}

fn render_ref(cal: &crate::store::Calendar, r: &InstanceRef, zone: &OutZone) -> Option<Value> {
    match r {
        InstanceRef::Stored(id) => cal.events.get(id).map(|e| render(e, zone)),
        InstanceRef::Occurrence(master, start) => cal
            .events
            .get(master)
            .map(|m| render_occurrence(m, *start, zone)),
    }
}

/// Where a request's path points.
#[derive(Debug)]
enum Target {
    Calendars,
    Calendar(Option<String>),
    Events(Option<String>),
    Event(String, Option<String>),
    CalendarView(Option<String>),
    Delta(Option<String>),
    GetSchedule,
}

pub(crate) async fn dispatch(app: &Arc<Shared>, mailbox: usize, req: Req) -> Reply {
    let path = req.path.clone();
    let Some(rest) = path.strip_prefix("/v1.0") else {
        return error(StatusCode::NOT_FOUND, "BadRequest", "Invalid version.");
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["$batch"] if req.method == Method::POST => {
            return Box::pin(batch(app, mailbox, &req)).await;
        }
        ["subscriptions", ..] => return subscriptions(app, mailbox, &req, &segments[1..]).await,
        _ => {}
    }
    let (user_ok, rest) = match segments.as_slice() {
        ["me", rest @ ..] => (true, rest),
        ["users", user, rest @ ..] => {
            let store = app.read();
            (store.mailbox_index(user) == Some(mailbox), rest)
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Resource not found for the segment.",
            );
        }
    };
    if !user_ok {
        return error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    let (calendar, tail): (Option<String>, &[&str]) = match rest {
        ["calendar", tail @ ..] => (None, tail),
        ["calendars", id, tail @ ..] => (Some((*id).to_string()), tail),
        ["calendarGroups", _group, "calendars", id, tail @ ..] => (Some((*id).to_string()), tail),
        ["calendars"] => {
            return if req.method == Method::GET {
                list_calendars(app, mailbox, &req)
            } else {
                method_not_allowed()
            };
        }
        other => (None, other),
    };
    let scoped = matches!(
        rest.first(),
        Some(&"calendar") | Some(&"calendars") | Some(&"calendarGroups")
    );
    let target = match tail {
        [] if scoped => Target::Calendar(calendar),
        ["events"] => Target::Events(calendar),
        ["events", id] => Target::Event((*id).to_string(), None),
        ["events", id, action] => Target::Event((*id).to_string(), Some((*action).to_string())),
        ["calendarView"] => Target::CalendarView(calendar),
        ["calendarView", "delta"] => Target::Delta(calendar),
        ["getSchedule"] => Target::GetSchedule,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Resource not found for the segment.",
            );
        }
    };
    let _ = Target::Calendars;
    let zone = out_zone(&req);
    let reply = match (target, &req.method) {
        (Target::Calendar(cal), &Method::GET) => get_calendar(app, mailbox, cal.as_deref()),
        (Target::Events(cal), &Method::GET) => {
            list_events(app, mailbox, cal.as_deref(), &req, &zone)
        }
        (Target::Events(cal), &Method::POST) => {
            create_event(app, mailbox, cal.as_deref(), &req, &zone)
        }
        (Target::Event(id, None), &Method::GET) => get_event(app, mailbox, &id, &zone),
        (Target::Event(id, None), &Method::PATCH) => update_event(app, mailbox, &id, &req, &zone),
        (Target::Event(id, None), &Method::DELETE) => delete_event(app, mailbox, &id, &req, false),
        (Target::Event(id, Some(a)), &Method::GET) if a == "instances" => {
            instances(app, mailbox, &id, &req, &zone)
        }
        (Target::Event(id, Some(a)), &Method::POST) => respond(app, mailbox, &id, &a, &req),
        (Target::CalendarView(cal), &Method::GET) => {
            calendar_view(app, mailbox, cal.as_deref(), &req, &zone)
        }
        (Target::Delta(cal), &Method::GET) => delta(app, mailbox, cal.as_deref(), &req, &zone),
        (Target::GetSchedule, &Method::POST) => get_schedule(app, &req, &zone),
        _ => method_not_allowed(),
    };
    with_preferences(reply, &zone)
}

fn method_not_allowed() -> Reply {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "ErrorInvalidRequest",
        "The OData request is not supported.",
    )
}

fn calendar_json(mb: &Mailbox, cal: &crate::store::Calendar, default: bool) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(cal.id.clone()));
    for (k, v) in &cal.meta {
        out.insert(k.clone(), v.clone());
    }
    out.insert("isDefaultCalendar".into(), Value::Bool(default));
    out.insert("isRemovable".into(), Value::Bool(!default));
    out.insert(
        "owner".into(),
        json!({"name": mb.name, "address": mb.address}),
    );
    Value::Object(out)
}

fn list_calendars(app: &Arc<Shared>, mailbox: usize, _req: &Req) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let value: Vec<Value> = mb
        .calendars
        .iter()
        .enumerate()
        .map(|(i, c)| calendar_json(mb, c, i == 0))
        .collect();
    Reply::json(
        StatusCode::OK,
        json!({"@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#users('{}')/calendars", mb.user_id), "value": value}),
    )
}

fn resolve_calendar(mb: &Mailbox, calendar: Option<&str>) -> Option<String> {
    match calendar {
        Some(id) => mb.calendar(id).map(|c| c.id.clone()),
        None => mb.default_calendar_id(),
    }
}

fn get_calendar(app: &Arc<Shared>, mailbox: usize, calendar: Option<&str>) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(id) = resolve_calendar(mb, calendar) else {
        return not_found();
    };
    let default = mb.default_calendar_id().as_deref() == Some(id.as_str());
    match mb.calendar(&id) {
        Some(cal) => Reply::json(StatusCode::OK, calendar_json(mb, cal, default)),
        None => not_found(),
    }
}

fn page_params(app: &Arc<Shared>, req: &Req) -> Result<(usize, usize), Reply> {
    let top = match req.q("$top") {
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid("Invalid $top value."))?,
        None => app.config.list_page_size,
    };
    let skip = match req.q("$skip") {
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| invalid("Invalid $skip value."))?,
        None => 0,
    };
    Ok((top.clamp(1, 1000), skip))
}

fn next_link(app: &Arc<Shared>, req: &Req, skip: usize) -> String {
    // OData system options keep their literal `$` in Graph's links (`...?$skip=10`).
    let enc = |s: &str| -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace("%24", "$")
    };
    let mut pairs: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k != "$skip")
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    pairs.push(format!("$skip={skip}"));
    format!("{}{}?{}", app.base(), req.path, pairs.join("&"))
}

fn paged(
    app: &Arc<Shared>,
    req: &Req,
    context: String,
    items: Vec<Value>,
    skip: usize,
    top: usize,
    more: bool,
) -> Reply {
    let mut body = json!({"@odata.context": context, "value": items});
    if more {
        body["@odata.nextLink"] = Value::String(next_link(app, req, skip + top));
    }
    Reply::json(StatusCode::OK, body)
}

fn list_events(
    app: &Arc<Shared>,
    mailbox: usize,
    calendar: Option<&str>,
    req: &Req,
    zone: &OutZone,
) -> Reply {
    let (top, skip) = match page_params(app, req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, calendar).and_then(|id| mb.calendar(&id)) else {
        return not_found();
    };
    // /events lists single instances and series masters, never occurrences [doc].
    let mut events: Vec<&StoredEvent> = cal
        .events
        .values()
        .filter(|e| !e.deleted && e.kind != Kind::Exception)
        .collect();
    events.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let more = events.len() > skip + top;
    let items = events
        .iter()
        .skip(skip)
        .take(top)
        .map(|e| render(e, zone))
        .collect();
    paged(
        app,
        req,
        format!(
            "https://graph.microsoft.com/v1.0/$metadata#users('{}')/events",
            mb.user_id
        ),
        items,
        skip,
        top,
        more,
    )
}

fn window(req: &Req) -> Result<(Timestamp, Timestamp), Reply> {
    let missing = || {
        invalid(
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )
    };
    let start = req.q("startDateTime").ok_or_else(missing)?;
    let end = req.q("endDateTime").ok_or_else(missing)?;
    let start = parse_instant(start)
        .ok_or_else(|| invalid("The value of StartDateTime is not a valid DateTime."))?;
    let end = parse_instant(end)
        .ok_or_else(|| invalid("The value of EndDateTime is not a valid DateTime."))?;
    Ok((start, end))
}

fn calendar_view(
    app: &Arc<Shared>,
    mailbox: usize,
    calendar: Option<&str>,
    req: &Req,
    zone: &OutZone,
) -> Reply {
    let (from, to) = match window(req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (top, skip) = match page_params(app, req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, calendar).and_then(|id| mb.calendar(&id)) else {
        return not_found();
    };
    let all = instances_in(cal, from, to, None);
    let more = all.len() > skip + top;
    let items = all
        .iter()
        .skip(skip)
        .take(top)
        .filter_map(|(_, r)| render_ref(cal, r, zone))
        .collect();
    paged(
        app,
        req,
        format!(
            "https://graph.microsoft.com/v1.0/$metadata#users('{}')/calendarView",
            mb.user_id
        ),
        items,
        skip,
        top,
        more,
    )
}

fn instances(app: &Arc<Shared>, mailbox: usize, id: &str, req: &Req, zone: &OutZone) -> Reply {
    let (from, to) = match window(req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (top, skip) = match page_params(app, req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some((ci, master)) = mb.find_event(id) else {
        return not_found();
    };
    if master.deleted || master.kind != Kind::Master {
        return not_found();
    }
    let cal = &mb.calendars[ci];
    let all = instances_in(cal, from, to, Some(id));
    let more = all.len() > skip + top;
    let items = all
        .iter()
        .skip(skip)
        .take(top)
        .filter_map(|(_, r)| render_ref(cal, r, zone))
        .collect();
    paged(
        app,
        req,
        format!(
            "https://graph.microsoft.com/v1.0/$metadata#users('{}')/events('{id}')/instances",
            mb.user_id
        ),
        items,
        skip,
        top,
        more,
    )
}

fn get_event(app: &Arc<Shared>, mailbox: usize, id: &str, zone: &OutZone) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    if let Some((_, ev)) = mb.find_event(id) {
        return if ev.deleted {
            not_found()
        } else {
            Reply::json(StatusCode::OK, with_context(render(ev, zone), mb))
        };
    }
    if let Some((ci, master, start)) = occurrence_of(mb, id) {
        let _ = ci;
        return Reply::json(
            StatusCode::OK,
            with_context(render_occurrence(master, start, zone), mb),
        );
    }
    not_found()
}

fn with_context(mut v: Value, mb: &Mailbox) -> Value {
    if let Value::Object(map) = &mut v {
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            Value::String(format!(
                "https://graph.microsoft.com/v1.0/$metadata#users('{}')/events/$entity",
                mb.user_id
            )),
        );
        out.append(map);
        return Value::Object(out);
    }
    v
}

/// An id of a generated occurrence: `{masterId}_{YYYYMMDDTHHMMSSZ}` of a live master.
fn occurrence_of<'a>(mb: &'a Mailbox, id: &str) -> Option<(usize, &'a StoredEvent, Timestamp)> {
    let (master_id, stamp) = id.rsplit_once('_')?;
    let (ci, master) = mb.find_event(master_id)?;
    if master.deleted || master.kind != Kind::Master {
        return None;
    }
    let start = parse_instance_stamp(stamp, master)?;
    Some((ci, master, start))
}

pub(crate) fn parse_instance_stamp(stamp: &str, master: &StoredEvent) -> Option<Timestamp> {
    if master.all_day {
        let date = jiff::civil::Date::strptime("%Y%m%d", stamp).ok()?;
        return date.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    let dt = DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// Parses `{dateTime, timeZone}`; returns the instant and the IANA zone name.
fn parse_dtz(v: &Value) -> Result<(Timestamp, String, DateTime), Reply> {
    let dt_s = v
        .get("dateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("dateTime is required."))?;
    let tz_name = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    let zone = resolve_zone(tz_name).ok_or_else(|| {
        error(StatusCode::BAD_REQUEST, "TimeZoneNotSupportedException", &format!("A valid TimeZone value must be specified. The following TimeZone value is not supported: '{tz_name}'."))
    })?;
    let civil = dt_s
        .trim_end_matches('Z')
        .parse::<DateTime>()
        .map_err(|_| invalid("The dateTime value is not a valid DateTime."))?;
    let ts = civil
        .to_zoned(zone.clone())
        .map_err(|_| invalid("The dateTime value is not valid in its time zone."))?
        .timestamp();
    let iana = zone.iana_name().unwrap_or("UTC").to_string();
    Ok((ts, iana, civil))
}

/// Recomputes the indexed fields of an event from its Graph body.
fn apply_times(ev: &mut StoredEvent) -> Result<(), Reply> {
    let start = ev
        .body
        .get("start")
        .ok_or_else(|| invalid("The event start is required."))?;
    let end = ev
        .body
        .get("end")
        .ok_or_else(|| invalid("The event end is required."))?;
    let (start_ts, zone, start_civil) = parse_dtz(start)?;
    let (end_ts, _, end_civil) = parse_dtz(end)?;
    let all_day = ev
        .body
        .get("isAllDay")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if all_day {
        let midnight = |d: &DateTime| {
            d.hour() == 0 && d.minute() == 0 && d.second() == 0 && d.subsec_nanosecond() == 0
        };
        if !midnight(&start_civil)
            || !midnight(&end_civil)
            || end_civil.date() <= start_civil.date()
        {
            return Err(invalid(
                "Your request can't be completed. If the event is an all-day event, start and end must be specified as midnight and the end must be after the start.",
            ));
        }
        // All-day dates are floating; the emulator places them on the UTC calendar for windowing.
        ev.start = start_civil
            .date()
            .to_zoned(TimeZone::UTC)
            .map_err(|_| invalid("bad date"))?
            .timestamp();
        ev.end = end_civil
            .date()
            .to_zoned(TimeZone::UTC)
            .map_err(|_| invalid("bad date"))?
            .timestamp();
    } else {
        if end_ts < start_ts {
            return Err(invalid("The end of the event must be after its start."));
        }
        ev.start = start_ts;
        ev.end = end_ts;
    }
    ev.all_day = all_day;
    ev.zone = zone;
    let original_tz = |v: &Value| {
        v.get("timeZone")
            .and_then(Value::as_str)
            .unwrap_or("UTC")
            .to_string()
    };
    let (s_tz, e_tz) = (original_tz(start), original_tz(end));
    ev.body
        .insert("originalStartTimeZone".into(), Value::String(s_tz));
    ev.body
        .insert("originalEndTimeZone".into(), Value::String(e_tz));
    Ok(())
}

fn default_body(mb: &Mailbox) -> Map<String, Value> {
    let v = json!({
        "categories": [],
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": true,
        "hasAttachments": false,
        "subject": "",
        "bodyPreview": "",
        "importance": "normal",
        "sensitivity": "normal",
        "isCancelled": false,
        "isDraft": false,
        "isOrganizer": true,
        "responseRequested": true,
        "hideAttendees": false,
        "allowNewTimeProposals": true,
        "showAs": "busy",
        "onlineMeetingUrl": null,
        "isOnlineMeeting": false,
        "onlineMeetingProvider": "unknown",
        "onlineMeeting": null,
        "responseStatus": {"response": "organizer", "time": NEVER},
        "body": {"contentType": "html", "content": ""},
        "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}},
        "locations": [],
        "attendees": [],
        "organizer": {"emailAddress": {"name": mb.name, "address": mb.address}},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The text of an HTML body, whitespace collapsed.
fn body_preview_full(body: &Value) -> String {
    let content = body
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut text = String::new();
    let mut in_tag = false;
    for ch in content.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn body_preview(body: &Value) -> String {
    body_preview_full(body).chars().take(255).collect()
}

/// Applies client-writable fields of a create/PATCH body onto a stored body.
fn merge_fields(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), Reply> {
    const READ_ONLY: &[&str] = &[
        "id",
        "changeKey",
        "@odata.etag",
        "createdDateTime",
        "lastModifiedDateTime",
        "type",
        "seriesMasterId",
        "iCalUId",
        "webLink",
        "originalStart",
        "@odata.context",
        "isOrganizer",
        "responseStatus",
    ];
    for (k, v) in patch {
        if READ_ONLY.contains(&k.as_str()) || k.starts_with("@odata") {
            continue;
        }
        match k.as_str() {
            "body" => {
                let content_type = v
                    .get("contentType")
                    .and_then(Value::as_str)
                    .unwrap_or("html")
                    .to_ascii_lowercase();
                let content = v
                    .get("content")
                    .cloned()
                    .unwrap_or(Value::String(String::new()));
                let body = json!({"contentType": content_type, "content": content});
                target.insert("bodyPreview".into(), Value::String(body_preview(&body)));
                target.insert("body".into(), body);
            }
            "location" => {
                let mut loc = json!({"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}});
                if let (Value::Object(l), Value::Object(p)) = (&mut loc, v) {
                    for (lk, lv) in p {
                        l.insert(lk.clone(), lv.clone());
                    }
                }
                let display = loc
                    .get("displayName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                target.insert("location".into(), loc);
                // Updating location replaces locations [doc].
                let locations = if display.is_empty() {
                    json!([])
                } else {
                    json!([{"displayName": display, "locationType": "default", "uniqueIdType": "unknown"}])
                };
                target.insert("locations".into(), locations);
            }
            "attendees" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| invalid("attendees must be an array."))?;
                if list.len() > 500 {
                    return Err(invalid("An event can have at most 500 attendees."));
                }
                let attendees: Vec<Value> = list
                    .iter()
                    .map(|a| {
                        let mut a = a.clone();
                        if a.get("status").is_none() {
                            a["status"] = json!({"response": "none", "time": NEVER});
                        }
                        if a.get("type").is_none() {
                            a["type"] = json!("required");
                        }
                        a
                    })
                    .collect();
                target.insert("attendees".into(), Value::Array(attendees));
            }
            "recurrence" => {
                if !v.is_null() {
                    target.insert("recurrence".into(), normalise_recurrence(v)?);
                } else {
                    target.insert("recurrence".into(), Value::Null);
                }
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

/// Echoes a patternedRecurrence with the defaults Graph fills in and lower-cased day names [doc example].
fn normalise_recurrence(v: &Value) -> Result<Value, Reply> {
    let pattern = v
        .get("pattern")
        .ok_or_else(|| invalid("recurrence.pattern is required."))?;
    let range = v
        .get("range")
        .ok_or_else(|| invalid("recurrence.range is required."))?;
    let kind = pattern
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("recurrence.pattern.type is required."))?;
    if ![
        "daily",
        "weekly",
        "absoluteMonthly",
        "relativeMonthly",
        "absoluteYearly",
        "relativeYearly",
    ]
    .contains(&kind)
    {
        return Err(invalid("recurrence.pattern.type is not valid."));
    }
    let lower = |x: Option<&Value>| -> Value {
        x.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| Value::String(s.to_ascii_lowercase()))
                    .collect()
            })
            .map(Value::Array)
            .unwrap_or(json!([]))
    };
    let mut p = json!({
        "type": kind,
        "interval": pattern.get("interval").and_then(Value::as_u64).unwrap_or(1),
        "month": pattern.get("month").and_then(Value::as_u64).unwrap_or(0),
        "dayOfMonth": pattern.get("dayOfMonth").and_then(Value::as_u64).unwrap_or(0),
        "firstDayOfWeek": pattern.get("firstDayOfWeek").and_then(Value::as_str).unwrap_or("sunday").to_ascii_lowercase(),
        "index": pattern.get("index").and_then(Value::as_str).unwrap_or("first").to_ascii_lowercase(),
    });
    if ["weekly", "relativeMonthly", "relativeYearly"].contains(&kind) {
        p["daysOfWeek"] = lower(pattern.get("daysOfWeek"));
    }
    let range_type = range.get("type").and_then(Value::as_str).unwrap_or("noEnd");
    if !["endDate", "noEnd", "numbered"].contains(&range_type) {
        return Err(invalid("recurrence.range.type is not valid."));
    }
    let start_date = range
        .get("startDate")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("recurrence.range.startDate is required."))?;
    let r = json!({
        "type": range_type,
        "startDate": start_date,
        "endDate": range.get("endDate").and_then(Value::as_str).unwrap_or("0001-01-01"),
        "recurrenceTimeZone": range.get("recurrenceTimeZone").and_then(Value::as_str).unwrap_or("UTC"),
        "numberOfOccurrences": range.get("numberOfOccurrences").and_then(Value::as_u64).unwrap_or(0),
    });
    if range_type == "numbered" && r["numberOfOccurrences"] == json!(0) {
        return Err(invalid(
            "recurrence.range.numberOfOccurrences must be greater than 0.",
        ));
    }
    Ok(json!({"pattern": p, "range": r}))
}

fn check_recurrence(ev: &StoredEvent) -> Result<(), Reply> {
    match ev.body.get("recurrence") {
        Some(r) if !r.is_null() => crate::series::check_graph_pattern(r, ev.all_day)
            .map_err(|e| invalid(&format!("The recurrence pattern is not valid: {e}"))),
        _ => Ok(()),
    }
}

fn new_id(store: &mut crate::store::Store) -> String {
    format!("AAMkAG{}AAA=", store.next_hex_id())
}

fn create_event(
    app: &Arc<Shared>,
    mailbox: usize,
    calendar: Option<&str>,
    req: &Req,
    zone: &OutZone,
) -> Reply {
    let input = match req.json() {
        Ok(Value::Object(m)) => m,
        Ok(_) => return invalid("The request body must be a JSON object."),
        Err(e) => return error(StatusCode::BAD_REQUEST, "RequestBodyRead", &e),
    };
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal_id) = resolve_calendar(mb, calendar) else {
        return not_found();
    };
    let transaction = input
        .get("transactionId")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(tx) = &transaction
        && let Some(existing) = mb
            .calendar(&cal_id)
            .and_then(|c| c.transactions.get(tx))
            .and_then(|id| mb.calendar(&cal_id)?.events.get(id))
    {
        // A retried create with the same transactionId returns the event the first attempt made [doc].
        return Reply::json(
            StatusCode::CREATED,
            with_context(render(existing, zone), mb),
        );
    }
    let mut body = default_body(mb);
    if let Err(r) = merge_fields(&mut body, &input) {
        return r;
    }
    if !input.contains_key("body") {
        body.insert("bodyPreview".into(), Value::String(String::new()));
    }
    let now = Timestamp::now();
    let kind = if body.get("recurrence").is_some_and(|r| !r.is_null()) {
        Kind::Master
    } else {
        Kind::Single
    };
    let id = new_id(&mut store);
    let mut ev = StoredEvent {
        id: id.clone(),
        body,
        start: now,
        end: now,
        all_day: false,
        zone: "UTC".into(),
        kind,
        master_id: None,
        original_start: None,
        deleted: false,
        seq: 0,
        created: now,
        modified: now,
    };
    if let Err(r) = apply_times(&mut ev) {
        return r;
    }
    if let Err(r) = check_recurrence(&ev) {
        return r;
    }
    if store
        .put(mailbox, &cal_id, ev, ChangeType::Created)
        .is_none()
    {
        return not_found();
    }
    let Some(mb) = store.mailboxes.get_mut(mailbox) else {
        return not_found();
    };
    let Some(cal) = mb.calendar_mut(&cal_id) else {
        return not_found();
    };
    if let Some(tx) = transaction {
        cal.transactions.insert(tx, id.clone());
    }
    let Some(ev) = cal.events.get(&id) else {
        return not_found();
    };
    let out = render(ev, zone);
    Reply::json(StatusCode::CREATED, with_context(out, mb))
}

fn check_if_match(req: &Req, current: &str) -> Result<(), Reply> {
    if let Some(expected) = req.header("if-match") {
        let expected = expected.trim();
        if expected != "*"
            && expected != current
            && expected.trim_start_matches("W/") != current.trim_start_matches("W/")
        {
            return Err(error(
                StatusCode::PRECONDITION_FAILED,
                "ErrorIrresolvableConflict",
                "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
            ));
        }
    }
    Ok(())
}

/// Finds a stored event or materialises an occurrence as an exception (unsaved), with its calendar.
fn editable(mb: &Mailbox, id: &str) -> Option<(String, StoredEvent, bool)> {
    if let Some((ci, ev)) = mb.find_event(id) {
        if ev.deleted {
            return None;
        }
        return Some((mb.calendars[ci].id.clone(), ev.clone(), false));
    }
    let (ci, master, start) = occurrence_of(mb, id)?;
    let length = master.end.duration_since(master.start);
    let mut body = master.body.clone();
    body.insert("recurrence".into(), Value::Null);
    let ev = StoredEvent {
        id: id.to_string(),
        body,
        start,
        end: start.checked_add(length).unwrap_or(start),
        all_day: master.all_day,
        zone: master.zone.clone(),
        kind: Kind::Exception,
        master_id: Some(master.id.clone()),
        original_start: Some(start),
        deleted: false,
        seq: master.seq,
        created: master.created,
        modified: master.modified,
    };
    Some((mb.calendars[ci].id.clone(), ev, true))
}

/// Writes the occurrence's start/end into its body so that a materialised exception renders its own times.
fn pin_times(ev: &mut StoredEvent) {
    let zone = TimeZone::get(&ev.zone).unwrap_or(TimeZone::UTC);
    let label = graph_zone_name(&ev.zone);
    let civil = |ts: Timestamp| {
        if ev.all_day {
            ts.to_zoned(TimeZone::UTC).datetime()
        } else {
            ts.to_zoned(zone.clone()).datetime()
        }
    };
    ev.body.insert(
        "start".into(),
        json!({"dateTime": format_civil(civil(ev.start)), "timeZone": label}),
    );
    ev.body.insert(
        "end".into(),
        json!({"dateTime": format_civil(civil(ev.end)), "timeZone": label}),
    );
}

fn update_event(app: &Arc<Shared>, mailbox: usize, id: &str, req: &Req, zone: &OutZone) -> Reply {
    let patch = match req.json() {
        Ok(Value::Object(m)) => m,
        Ok(_) => return invalid("The request body must be a JSON object."),
        Err(e) => return error(StatusCode::BAD_REQUEST, "RequestBodyRead", &e),
    };
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some((cal_id, mut ev, materialised)) = editable(mb, id) else {
        return not_found();
    };
    if let Err(r) = check_if_match(req, &etag(&ev.id, ev.seq)) {
        return r;
    }
    if materialised {
        pin_times(&mut ev);
    }
    if ev.kind != Kind::Master
        && patch.get("recurrence").is_some_and(|r| !r.is_null())
        && ev.kind == Kind::Exception
    {
        return invalid("An occurrence of a series cannot carry a recurrence.");
    }
    if let Err(r) = merge_fields(&mut ev.body, &patch) {
        return r;
    }
    if let Err(r) = apply_times(&mut ev) {
        return r;
    }
    if let Err(r) = check_recurrence(&ev) {
        return r;
    }
    if ev.kind == Kind::Exception
        && let (Some(master_id), Some(original)) = (ev.master_id.clone(), ev.original_start)
        && let Some((_, master)) = mb.find_event(&master_id)
    {
        // A moved occurrence may not land on or past the day of an adjacent occurrence [doc event-update].
        let zone = TimeZone::get(&master.zone).unwrap_or(TimeZone::UTC);
        let day = |t: Timestamp| t.to_zoned(zone.clone()).date();
        let (before, after) = crate::series::neighbours(master, original);
        let crosses = before.is_some_and(|b| day(ev.start) <= day(b))
            || after.is_some_and(|a| day(ev.start) >= day(a));
        if crosses {
            return error(
                StatusCode::BAD_REQUEST,
                "ErrorOccurrenceCrossingBoundary",
                "Modified occurrence is crossing or overlapping adjacent occurrence.",
            );
        }
    }
    if ev.kind == Kind::Single && ev.body.get("recurrence").is_some_and(|r| !r.is_null()) {
        ev.kind = Kind::Master;
    } else if ev.kind == Kind::Master && ev.body.get("recurrence").is_none_or(Value::is_null) {
        ev.kind = Kind::Single;
    }
    ev.modified = Timestamp::now();
    // Editing one occurrence is an update of the series as far as subscribers are concerned.
    if store
        .put(mailbox, &cal_id, ev, ChangeType::Updated)
        .is_none()
    {
        return not_found();
    }
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    match mb.calendar(&cal_id).and_then(|c| c.events.get(id)) {
        Some(ev) => Reply::json(StatusCode::OK, with_context(render(ev, zone), mb)),
        None => not_found(),
    }
}

fn delete_event(app: &Arc<Shared>, mailbox: usize, id: &str, req: &Req, accepted: bool) -> Reply {
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some((cal_id, mut ev, _)) = editable(mb, id) else {
        return not_found();
    };
    if let Err(r) = check_if_match(req, &etag(&ev.id, ev.seq)) {
        return r;
    }
    let exceptions: Vec<StoredEvent> = if ev.kind == Kind::Master {
        mb.calendar(&cal_id)
            .and_then(|c| {
                c.exceptions.get(&ev.id).map(|set| {
                    set.iter()
                        .filter_map(|x| c.events.get(x).cloned())
                        .collect()
                })
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    ev.deleted = true;
    ev.modified = Timestamp::now();
    if store
        .put(mailbox, &cal_id, ev, ChangeType::Deleted)
        .is_none()
    {
        return not_found();
    }
    // Deleting a master deletes the series, its exceptions included.
    for mut ex in exceptions.into_iter().filter(|e| !e.deleted) {
        ex.deleted = true;
        let _ = store.put(mailbox, &cal_id, ex, ChangeType::Deleted);
    }
    Reply::empty(if accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NO_CONTENT
    })
}

fn respond(app: &Arc<Shared>, mailbox: usize, id: &str, action: &str, req: &Req) -> Reply {
    let response = match action {
        "accept" => "accepted",
        "decline" => "declined",
        "tentativelyAccept" => "tentativelyAccepted",
        "cancel" => return delete_event(app, mailbox, id, req, true),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Resource not found for the segment.",
            );
        }
    };
    let input = match req.json() {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "RequestBodyRead", &e),
    };
    let send_response = input
        .get("sendResponse")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let proposal = input.get("proposedNewTime").filter(|v| !v.is_null());
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some((cal_id, mut ev, materialised)) = editable(mb, id) else {
        return not_found();
    };
    if let Err(r) = check_if_match(req, &etag(&ev.id, ev.seq)) {
        return r;
    }
    if ev
        .body
        .get("isOrganizer")
        .and_then(Value::as_bool)
        .unwrap_or(true)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "Your request can't be completed. You can't respond to this meeting because you're the meeting organizer.",
        );
    }
    if proposal.is_some() {
        if action == "accept" {
            return invalid("proposedNewTime is only valid for tentativelyAccept and decline.");
        }
        if !send_response
            || ev
                .body
                .get("allowNewTimeProposals")
                .and_then(Value::as_bool)
                == Some(false)
        {
            return error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRequest",
                "Your request can't be completed. New time proposals are not allowed for this meeting.",
            );
        }
    }
    if materialised {
        pin_times(&mut ev);
    }
    let now = Timestamp::now();
    ev.body.insert(
        "responseStatus".into(),
        json!({"response": response, "time": format_instant(now)}),
    );
    let me = mb.address.clone();
    if let Some(Value::Array(attendees)) = ev.body.get_mut("attendees") {
        for a in attendees.iter_mut() {
            let address = a
                .pointer("/emailAddress/address")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if address.eq_ignore_ascii_case(&me) {
                a["status"] = json!({"response": response, "time": format_instant(now)});
            }
        }
    }
    ev.modified = now;
    if store
        .put(mailbox, &cal_id, ev, ChangeType::Updated)
        .is_none()
    {
        return not_found();
    }
    Reply::empty(StatusCode::ACCEPTED)
}

// ---------------------------------------------------------------------------------------------------------
// calendarView delta

fn prefer_page_size(req: &Req) -> Option<usize> {
    req.header_values("prefer")
        .iter()
        .find_map(|p| {
            p.strip_prefix("odata.maxpagesize=")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .filter(|n| *n > 0)
}

fn delta(
    app: &Arc<Shared>,
    mailbox: usize,
    calendar: Option<&str>,
    req: &Req,
    zone: &OutZone,
) -> Reply {
    let link_base = format!("{}{}", app.base(), req.path);
    let token = req.q("$skiptoken").or_else(|| req.q("$deltatoken"));
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let restart_location = |c: &Cursor| {
        let fmt = |s: Option<i64>| {
            s.and_then(|s| Timestamp::from_second(s).ok())
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        format!(
            "{link_base}?startDateTime={}&endDateTime={}",
            fmt(c.ws),
            fmt(c.we)
        )
    };
    let cursor = match token {
        Some(t) => {
            let Some(c) = Cursor::decode(t) else {
                return sync_state_not_found(None);
            };
            let cal_ok = mb
                .calendar(&c.c)
                .is_some_and(|cal| c.from >= cal.floor || c.from == 0);
            if c.m != mailbox || c.ep != mb.epoch || !cal_ok {
                return sync_state_not_found(Some(restart_location(&c)));
            }
            let mut c = c;
            if req.q("$deltatoken").is_some() {
                // A new round: everything after the previous round's snapshot, up to now.
                c.upto = store.seq;
                c.after = c.from;
            }
            if let Some(ps) = prefer_page_size(req) {
                c.ps = ps;
            }
            c
        }
        None => {
            let (from, to) = match window(req) {
                Ok(w) => w,
                Err(r) => return r,
            };
            let Some(cal_id) = resolve_calendar(mb, calendar) else {
                return not_found();
            };
            Cursor {
                m: mailbox,
                c: cal_id,
                ws: Some(from.as_second()),
                we: Some(to.as_second()),
                from: 0,
                after: 0,
                upto: store.seq,
                ps: prefer_page_size(req).unwrap_or(app.config.delta_page_size),
                ep: mb.epoch,
                f: 0,
                off: None,
                part: None,
            }
        }
    };
    let Some(cal) = mb.calendar(&cursor.c) else {
        return sync_state_not_found(None);
    };
    let ws = cursor.ws.and_then(|s| Timestamp::from_second(s).ok());
    let we = cursor.we.and_then(|s| Timestamp::from_second(s).ok());
    let initial = cursor.from == 0;
    let mut items = Vec::new();
    let mut last = cursor.after;
    let mut exhausted = true;
    let mut part = None;
    let span = if cursor.after < cursor.upto {
        cal.log.range(cursor.after + 1..=cursor.upto)
    } else {
        cal.log.range(0..0)
    };
    // A series contributes one item per instance; a page may end inside it (`part` = entry and items
    // already served), so maxpagesize is a hard limit.
    'entries: for (&seq, id) in span {
        let Some(ev) = cal.events.get(id) else {
            last = seq;
            continue;
        };
        let skip = match cursor.part {
            Some((partial, served)) if partial == seq => served,
            _ => 0,
        };
        for (k, item) in delta_items(cal, ev, initial, ws, we)
            .into_iter()
            .enumerate()
            .skip(skip)
        {
            if items.len() >= cursor.ps {
                exhausted = false;
                part = Some((seq, k));
                break 'entries;
            }
            items.push(match item {
                DeltaItem::Full(e) => render(e, zone),
                DeltaItem::Occurrence(m, start) => render_occurrence(m, start, zone),
                DeltaItem::Removed(id) => removed(&id),
            });
        }
        last = seq;
    }
    for item in &mut items {
        if item.get("@removed").is_none() {
            item["@odata.type"] = json!("#microsoft.graph.event");
        }
    }
    let mut body = json!({"@odata.context": CONTEXT_EVENTS, "value": items});
    if exhausted {
        let next = Cursor {
            from: cursor.upto,
            after: cursor.upto,
            part: None,
            ..cursor.clone()
        };
        body["@odata.deltaLink"] =
            Value::String(format!("{link_base}?$deltatoken={}", next.encode()));
    } else {
        let next = Cursor {
            after: last,
            part,
            ..cursor.clone()
        };
        body["@odata.nextLink"] =
            Value::String(format!("{link_base}?$skiptoken={}", next.encode()));
    }
    let mut reply =
        Reply::json(StatusCode::OK, body).header("Preference-Applied", "odata.track-changes");
    if let Some(ps) = prefer_page_size(req) {
        reply = reply.header("Preference-Applied", format!("odata.maxpagesize={ps}"));
    }
    reply
}

enum DeltaItem<'a> {
    Full(&'a StoredEvent),
    Occurrence(&'a StoredEvent, Timestamp),
    Removed(String),
}

/// What one change-log entry contributes to a delta round.
fn delta_items<'a>(
    cal: &crate::store::Calendar,
    ev: &'a StoredEvent,
    initial: bool,
    ws: Option<Timestamp>,
    we: Option<Timestamp>,
) -> Vec<DeltaItem<'a>> {
    match ev.kind {
        Kind::Single | Kind::Exception => {
            if !ev.deleted && ev.overlaps(ws, we) {
                vec![DeltaItem::Full(ev)]
            } else if !initial {
                // Deleted, or changed outside the window: reported as removed [doc].
                vec![DeltaItem::Removed(ev.id.clone())]
            } else {
                Vec::new()
            }
        }
        Kind::Master => {
            let starts = generated(cal, ev, ws, we);
            if ev.deleted {
                if initial {
                    return Vec::new();
                }
                let mut out: Vec<DeltaItem<'a>> = starts
                    .iter()
                    .map(|s| DeltaItem::Removed(instance_id(&ev.id, *s, ev.all_day)))
                    .collect();
                out.push(DeltaItem::Removed(ev.id.clone()));
                out
            } else if starts.is_empty() {
                if initial {
                    Vec::new()
                } else {
                    vec![DeltaItem::Removed(ev.id.clone())]
                }
            } else {
                starts
                    .into_iter()
                    .map(|s| DeltaItem::Occurrence(ev, s))
                    .collect()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// getSchedule

fn get_schedule(app: &Arc<Shared>, req: &Req, zone: &OutZone) -> Reply {
    let input = match req.json() {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "RequestBodyRead", &e),
    };
    // The concept page's example capitalises the keys and sends the interval as a string.
    let get = |k: &str| -> Option<&Value> {
        input.as_object().and_then(|m| {
            m.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        })
    };
    let Some(schedules) = get("schedules").and_then(Value::as_array) else {
        return invalid("schedules is required.");
    };
    if schedules.is_empty() || schedules.len() > 20 {
        return invalid("schedules must hold between 1 and 20 entries.");
    }
    let (Some(start), Some(end)) = (get("startTime"), get("endTime")) else {
        return invalid("startTime and endTime are required.");
    };
    let (from, to) = match (parse_dtz(start), parse_dtz(end)) {
        (Ok(s), Ok(e)) => (s.0, e.0),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if to <= from || to.duration_since(from) >= SignedDuration::from_hours(24 * 42) {
        return invalid("The requested time window must be positive and shorter than 42 days.");
    }
    let interval = get("availabilityViewInterval")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(30);
    if !(5..=1440).contains(&interval) {
        return invalid("availabilityViewInterval must be between 5 and 1440.");
    }
    let store = app.read();
    let mut value = Vec::new();
    for schedule in schedules.iter().filter_map(Value::as_str) {
        let Some(mb) = store
            .mailbox_index(schedule)
            .and_then(|i| store.mailboxes.get(i))
        else {
            value.push(json!({
                "scheduleId": schedule,
                "availabilityView": "",
                "scheduleItems": [],
                "error": {"message": "The specified mailbox could not be found.", "responseCode": "ErrorMailboxNotFound"},
            }));
            continue;
        };
        let mut busy: Vec<(Timestamp, Timestamp, Value)> = Vec::new();
        for cal in &mb.calendars {
            for (_, r) in instances_in(cal, from, to, None) {
                let Some(ev) = render_ref(cal, &r, zone) else {
                    continue;
                };
                let status = ev
                    .get("showAs")
                    .and_then(Value::as_str)
                    .unwrap_or("busy")
                    .to_string();
                if status == "free" || ev.get("isCancelled").and_then(Value::as_bool) == Some(true)
                {
                    continue;
                }
                let (s, e) = match (&r, cal_times(cal, &r)) {
                    (_, Some(t)) => t,
                    _ => continue,
                };
                let private = ev.get("sensitivity").and_then(Value::as_str) == Some("private");
                let mut item = json!({
                    "isPrivate": private,
                    "status": status,
                    "start": date_time_zone(s, false, zone),
                    "end": date_time_zone(e, false, zone),
                });
                if !private {
                    item["subject"] = ev.get("subject").cloned().unwrap_or(Value::Null);
                    item["location"] = ev
                        .pointer("/location/displayName")
                        .cloned()
                        .unwrap_or(json!(""));
                }
                busy.push((s, e, item));
            }
        }
        busy.sort_by_key(|a| a.0);
        let step = SignedDuration::from_mins(interval);
        let mut view = String::new();
        let mut slot = from;
        while slot < to {
            let slot_end = slot.checked_add(step).unwrap_or(to).min(to);
            let digit = busy
                .iter()
                .filter(|(s, e, _)| *s < slot_end && *e > slot)
                .map(|(_, _, item)| match item["status"].as_str() {
                    Some("tentative") => 1,
                    Some("oof") => 3,
                    Some("workingElsewhere") => 4,
                    Some("busy") => 2,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            view.push(char::from(b'0' + digit));
            slot = slot_end;
        }
        value.push(json!({
            "scheduleId": schedule,
            "availabilityView": view,
            "scheduleItems": busy.into_iter().map(|(_, _, i)| i).collect::<Vec<_>>(),
            "workingHours": {
                "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "startTime": "08:00:00.0000000",
                "endTime": "17:00:00.0000000",
                "timeZone": {"name": zone.label},
            },
        }));
    }
    Reply::json(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)", "value": value}),
    )
}

fn cal_times(cal: &crate::store::Calendar, r: &InstanceRef) -> Option<(Timestamp, Timestamp)> {
    match r {
        InstanceRef::Stored(id) => cal.events.get(id).map(|e| (e.start, e.end)),
        InstanceRef::Occurrence(m, s) => cal.events.get(m).map(|m| {
            (
                *s,
                s.checked_add(m.end.duration_since(m.start)).unwrap_or(*s),
            )
        }),
    }
}

// ---------------------------------------------------------------------------------------------------------
// subscriptions

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
        "id": s.id,
        "resource": s.resource,
        "applicationId": s.application_id,
        "changeType": s.change_types.join(","),
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": format_instant(s.expiration),
        "creatorId": s.creator_id,
        "includeResourceData": false,
        "latestSupportedTlsVersion": s.tls,
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationQueryOptions": null,
        "notificationContentType": null,
        "notificationUrlAppId": null,
    })
}

fn subscription_error(message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "ValidationError", message)
}

fn check_expiration(app: &Arc<Shared>, value: Option<&Value>) -> Result<Timestamp, Reply> {
    let raw = value
        .and_then(Value::as_str)
        .ok_or_else(|| subscription_error("expirationDateTime is required."))?;
    let ts = parse_instant(raw)
        .ok_or_else(|| subscription_error("expirationDateTime is not a valid DateTimeOffset."))?;
    let now = Timestamp::now();
    if ts <= now {
        return Err(subscription_error(
            "Subscription expiration can only be in the future.",
        ));
    }
    let max = SignedDuration::from_mins(app.config.max_subscription_minutes);
    if ts.duration_since(now) > max {
        return Err(subscription_error(&format!(
            "Subscription expiration can only be {} minutes in the future.",
            app.config.max_subscription_minutes
        )));
    }
    Ok(ts)
}

fn subscription_resource(mb: &Mailbox, resource: &str) -> Option<Option<String>> {
    let r = resource.trim_start_matches('/');
    let segments: Vec<&str> = r.split('/').collect();
    let (user_ok, rest) = match segments.as_slice() {
        ["me", rest @ ..] => (true, rest),
        [u, user, rest @ ..] if u.eq_ignore_ascii_case("users") => (
            user.eq_ignore_ascii_case(&mb.user_id) || user.eq_ignore_ascii_case(&mb.address),
            rest,
        ),
        _ => return None,
    };
    if !user_ok {
        return None;
    }
    match rest {
        [e] if e.eq_ignore_ascii_case("events") => Some(None),
        ["calendar", e] if e.eq_ignore_ascii_case("events") => Some(mb.default_calendar_id()),
        ["calendars", id, e] if e.eq_ignore_ascii_case("events") => {
            let id = id.trim_start_matches("('").trim_end_matches("')");
            mb.calendar(id).map(|c| Some(c.id.clone()))
        }
        _ => None,
    }
}

async fn subscriptions(app: &Arc<Shared>, mailbox: usize, req: &Req, rest: &[&str]) -> Reply {
    match (rest, &req.method) {
        ([], &Method::POST) => create_subscription(app, mailbox, req).await,
        ([], &Method::GET) => {
            let registry = lock(&app.subscriptions);
            let value: Vec<Value> = registry
                .subscriptions
                .values()
                .filter(|s| s.mailbox == mailbox && s.expiration > Timestamp::now())
                .map(subscription_json)
                .collect();
            Reply::json(
                StatusCode::OK,
                json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions", "value": value}),
            )
        }
        ([id], &Method::GET) => match lock(&app.subscriptions)
            .subscriptions
            .get(*id)
            .filter(|s| s.mailbox == mailbox)
        {
            Some(s) => Reply::json(StatusCode::OK, subscription_json(s)),
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The object was not found.",
            ),
        },
        ([id], &Method::PATCH) => {
            let input = match req.json() {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, "RequestBodyRead", &e),
            };
            let expiration = match check_expiration(app, input.get("expirationDateTime")) {
                Ok(t) => t,
                Err(r) => return r,
            };
            let mut registry = lock(&app.subscriptions);
            match registry
                .subscriptions
                .get_mut(*id)
                .filter(|s| s.mailbox == mailbox)
            {
                Some(s) => {
                    s.expiration = expiration;
                    Reply::json(StatusCode::OK, subscription_json(s))
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The object was not found.",
                ),
            }
        }
        ([id], &Method::DELETE) => {
            let mut registry = lock(&app.subscriptions);
            let known = registry
                .subscriptions
                .get(*id)
                .is_some_and(|s| s.mailbox == mailbox);
            if known {
                registry.subscriptions.remove(*id);
                Reply::empty(StatusCode::NO_CONTENT)
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The object was not found.",
                )
            }
        }
        ([id, "reauthorize"], &Method::POST) => {
            if lock(&app.subscriptions)
                .subscriptions
                .get(*id)
                .is_some_and(|s| s.mailbox == mailbox)
            {
                Reply::empty(StatusCode::OK)
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The object was not found.",
                )
            }
        }
        _ => method_not_allowed(),
    }
}

async fn create_subscription(app: &Arc<Shared>, mailbox: usize, req: &Req) -> Reply {
    let input = match req.json() {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "RequestBodyRead", &e),
    };
    let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(change_type) = text("changeType") else {
        return subscription_error("changeType is required.");
    };
    let change_types: Vec<String> = change_type
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if change_types
        .iter()
        .any(|t| !["created", "updated", "deleted"].contains(&t.as_str()))
    {
        return subscription_error(
            "changeType must be a combination of created, updated and deleted.",
        );
    }
    let Some(notification_url) = text("notificationUrl") else {
        return subscription_error("notificationUrl is required.");
    };
    let Some(resource) = text("resource") else {
        return subscription_error("resource is required.");
    };
    let lifecycle_url = text("lifecycleNotificationUrl");
    let client_state = text("clientState");
    if client_state
        .as_ref()
        .is_some_and(|c| c.chars().count() > 128)
    {
        return subscription_error("clientState must be at most 128 characters.");
    }
    for url in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
        let ok = url::Url::parse(url).is_ok_and(|u| {
            u.scheme() == "https" || (!app.config.require_https_webhooks && u.scheme() == "http")
        });
        if !ok {
            return subscription_error("The notification URL must be an absolute https URL.");
        }
    }
    let expiration = match check_expiration(app, input.get("expirationDateTime")) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (calendar, user_id) = {
        let store = app.read();
        let Some(mb) = store.mailboxes.get(mailbox) else {
            return not_found();
        };
        match subscription_resource(mb, &resource) {
            Some(c) => (c, mb.user_id.clone()),
            None => {
                return subscription_error(
                    "The resource is not supported or does not belong to the signed-in user.",
                );
            }
        }
    };
    if let Err(message) = crate::notify::validate(app, &notification_url).await {
        return subscription_error(&message);
    }
    if let Some(url) = &lifecycle_url
        && let Err(message) = crate::notify::validate(app, url).await
    {
        return subscription_error(&message);
    }
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        mailbox,
        resource,
        calendar,
        change_types,
        notification_url,
        lifecycle_url,
        client_state,
        expiration,
        application_id: "24d3b144-21ae-4080-943f-7067b395b913".into(),
        creator_id: user_id,
        tls: text("latestSupportedTlsVersion").unwrap_or_else(|| "v1_2".into()),
    };
    let body = subscription_json(&sub);
    lock(&app.subscriptions)
        .subscriptions
        .insert(sub.id.clone(), sub);
    Reply::json(StatusCode::CREATED, body)
}

// ---------------------------------------------------------------------------------------------------------
// JSON batching

async fn batch(app: &Arc<Shared>, mailbox: usize, req: &Req) -> Reply {
    let input = match req.json() {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let Some(requests) = input.get("requests").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid batch payload format.",
        );
    };
    if requests.is_empty() || requests.len() > 20 {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid batch payload format: a batch holds between 1 and 20 requests.",
        );
    }
    let mut ids = Vec::new();
    for r in requests {
        let Some(id) = r.get("id").and_then(Value::as_str) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Every batch request needs an id.",
            );
        };
        if ids.contains(&id) {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Batch request ids must be unique.",
            );
        }
        let deps = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if deps
            .iter()
            .any(|d| !d.as_str().is_some_and(|d| ids.contains(&d)))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "dependsOn must name requests that come earlier in the batch.",
            );
        }
        if r.get("body").is_some_and(|b| !b.is_null())
            && !r
                .get("headers")
                .and_then(Value::as_object)
                .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "A batch request with a body needs a Content-Type header.",
            );
        }
        ids.push(id);
    }
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::new();
    for r in requests {
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let deps: Vec<String> = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if deps
            .iter()
            .any(|d| statuses.get(d).is_none_or(|s| !(200..300).contains(s)))
        {
            statuses.insert(id.clone(), 424);
            responses.push(json!({"id": id, "status": 424, "body": {"error": {"code": "FailedDependency", "message": "The request could not be performed because a request it depends on failed."}}}));
            continue;
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .unwrap_or(Method::GET);
        let url = r.get("url").and_then(Value::as_str).unwrap_or_default();
        let url = url
            .strip_prefix("https://graph.microsoft.com")
            .unwrap_or(url);
        let url = url.strip_prefix("/v1.0").unwrap_or(url);
        let path = format!("/v1.0/{}", url.trim_start_matches('/'));
        let mut headers = HeaderMap::new();
        if let Some(h) = r.get("headers").and_then(Value::as_object) {
            for (k, v) in h {
                if let (Ok(name), Some(Ok(value))) = (
                    http::HeaderName::try_from(k.as_str()),
                    v.as_str().map(http::HeaderValue::try_from),
                ) {
                    headers.append(name, value);
                }
            }
        }
        for k in ["prefer"] {
            if !headers.contains_key(k) {
                for v in req.headers.get_all(k) {
                    headers.append(k, v.clone());
                }
            }
        }
        let body = match r.get("body") {
            Some(b) if !b.is_null() => serde_json::to_vec(b).unwrap_or_default().into(),
            _ => Default::default(),
        };
        let inner = Req::new(method, &path, headers, body);
        let reply = if path.starts_with("/v1.0/$batch") {
            error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Batches cannot be nested.",
            )
        } else if let Some(reply) = batch_item_fault(app, &inner).await {
            reply
        } else {
            match app.admit_inner(mailbox) {
                Ok(()) => Box::pin(dispatch(app, mailbox, inner)).await,
                Err(wait) => throttled(wait),
            }
        };
        statuses.insert(id.clone(), reply.status.as_u16());
        let mut item = json!({"id": id, "status": reply.status.as_u16()});
        if !reply.headers.is_empty() {
            let mut h = Map::new();
            for (k, v) in &reply.headers {
                h.insert(k.clone(), Value::String(v.clone()));
            }
            item["headers"] = Value::Object(h);
        }
        item["body"] = match reply.body {
            ReplyBody::Json(v) => v,
            ReplyBody::Text(t) => Value::String(t),
            ReplyBody::Empty => Value::Null,
        };
        responses.push(item);
    }
    Reply::json(StatusCode::OK, json!({"responses": responses}))
}

/// Applies the `batch_item` fault rules matching one request of a batch: a delay, expired tokens, or
/// the inner answer Graph gives a failed request (its status and error body; a throttle carries its
/// own `Retry-After`), which then stands in for the request (it is not run and uses no budget, as a
/// top-level fault).
async fn batch_item_fault(app: &Arc<Shared>, inner: &Req) -> Option<Reply> {
    let mut latency = std::time::Duration::ZERO;
    let mut answer = None;
    for fault in app.take_faults(FaultScope::BatchItem, &inner.method, &inner.path) {
        match fault {
            Fault::Latency { ms } => latency += std::time::Duration::from_millis(ms),
            Fault::TokenExpiry => app.expire_tokens(),
            Fault::ServerError { status } => {
                answer.get_or_insert_with(|| fault_server_error(Flavor::Microsoft, status));
            }
            Fault::Throttle {
                retry_after_secs, ..
            } => {
                answer.get_or_insert_with(|| throttled(retry_after_secs));
            }
            // Refused when the rule was added (`FaultRule::check`).
            Fault::ConnectionReset | Fault::TruncatedBody => {}
        }
    }
    tokio::time::sleep(latency).await;
    answer
}
