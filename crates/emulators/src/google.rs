//! Google Calendar API v3: calendarList, events (list/get/insert/patch/update/delete/instances) with sync
//! and page tokens, watch channels, channels.stop and freeBusy.query.

use std::sync::Arc;

use http::{Method, StatusCode};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::cursor::Cursor;
use crate::notify::Channel;
use crate::server::{Reply, Req, Shared, lock};
use crate::store::{Calendar, ChangeType, Kind, Mailbox, StoredEvent, instance_id};

const SINGLE_EVENTS: u32 = 1;
const SHOW_DELETED: u32 = 2;
const ORDER_BY_START: u32 = 4;

pub(crate) fn error(status: StatusCode, domain: &str, reason: &str, message: &str) -> Reply {
    error_at(status, domain, reason, message, None)
}

pub(crate) fn error_at(
    status: StatusCode,
    domain: &str,
    reason: &str,
    message: &str,
    location: Option<(&str, &str)>,
) -> Reply {
    let mut item = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((kind, at)) = location {
        item["locationType"] = json!(kind);
        item["location"] = json!(at);
    }
    Reply::json(
        status,
        json!({"error": {"errors": [item], "code": status.as_u16(), "message": message}}),
    )
}

fn not_found() -> Reply {
    error(StatusCode::NOT_FOUND, "global", "notFound", "Not Found")
}

fn bad_param(reason: &str, message: &str, param: &str) -> Reply {
    error_at(
        StatusCode::BAD_REQUEST,
        "global",
        reason,
        message,
        Some(("parameter", param)),
    )
}

/// RFC 3339 with milliseconds, as Google writes `created` / `updated`.
fn rfc3339(ts: Timestamp) -> String {
    let dt = ts.to_zoned(TimeZone::UTC).datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000_000
    )
}

fn etag(ev: &StoredEvent) -> String {
    format!("\"{}\"", 3_181_159_875_584_000u64 + ev.seq)
}

fn is_base32hex_id(id: &str) -> bool {
    (5..=1024).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// An instance's `originalStartTime` / a start as EventDateTime in the event's zone.
fn event_date_time(ts: Timestamp, all_day: bool, zone: &str) -> Value {
    if all_day {
        let d = ts.to_zoned(TimeZone::UTC).date();
        return json!({"date": d.to_string()});
    }
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let z = ts.to_zoned(tz);
    json!({"dateTime": z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(), "timeZone": zone})
}

fn render(ev: &StoredEvent, cal: &Calendar) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("calendar#event"));
    out.insert("etag".into(), json!(etag(ev)));
    out.insert("id".into(), json!(ev.id));
    if ev.deleted {
        out.insert("status".into(), json!("cancelled"));
        if let (Some(master), Some(original)) = (&ev.master_id, ev.original_start) {
            out.insert("recurringEventId".into(), json!(master));
            out.insert(
                "originalStartTime".into(),
                event_date_time(original, ev.all_day, &ev.zone),
            );
        }
        return Value::Object(out);
    }
    out.insert("status".into(), json!("confirmed"));
    out.insert(
        "htmlLink".into(),
        json!(format!(
            "https://www.google.com/calendar/event?eid={}",
            ev.id
        )),
    );
    out.insert("created".into(), json!(rfc3339(ev.created)));
    out.insert("updated".into(), json!(rfc3339(ev.modified)));
    let owner = cal.meta.get("owner").cloned().unwrap_or(json!(""));
    out.insert("creator".into(), json!({"email": owner, "self": true}));
    out.insert("organizer".into(), json!({"email": owner, "self": true}));
    out.insert(
        "iCalUID".into(),
        json!(format!(
            "{}@google.com",
            ev.master_id.as_deref().unwrap_or(&ev.id)
        )),
    );
    out.insert("sequence".into(), json!(0));
    out.insert("reminders".into(), json!({"useDefault": true}));
    out.insert("eventType".into(), json!("default"));
    for (k, v) in &ev.body {
        out.insert(k.clone(), v.clone());
    }
    if let (Some(master), Some(original)) = (&ev.master_id, ev.original_start) {
        out.insert("recurringEventId".into(), json!(master));
        out.insert(
            "originalStartTime".into(),
            event_date_time(original, ev.all_day, &ev.zone),
        );
        out.remove("recurrence");
    }
    Value::Object(out)
}

fn occurrence(master: &StoredEvent, start: Timestamp) -> StoredEvent {
    let length = master.end.duration_since(master.start);
    let end = start.checked_add(length).unwrap_or(start);
    let mut body = master.body.clone();
    body.remove("recurrence");
    body.insert(
        "start".into(),
        event_date_time(start, master.all_day, &master.zone),
    );
    body.insert(
        "end".into(),
        event_date_time(end, master.all_day, &master.zone),
    );
    StoredEvent {
        id: instance_id(&master.id, start, master.all_day),
        body,
        start,
        end,
        kind: Kind::Exception,
        master_id: Some(master.id.clone()),
        original_start: Some(start),
        ..master.clone()
    }
}

/// Generated occurrences of a master in a window, minus stored exceptions.
fn generated(
    cal: &Calendar,
    master: &StoredEvent,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<StoredEvent> {
    let exceptions = cal.exceptions.get(&master.id);
    crate::series::occurrences(master, from, to)
        .into_iter()
        .map(|s| occurrence(master, s))
        .filter(|o| o.overlaps(from, to))
        .filter(|o| !exceptions.is_some_and(|set| set.contains(&o.id)))
        .collect()
}

fn resolve_calendar<'a>(mb: &'a Mailbox, id: &str) -> Option<&'a Calendar> {
    if id == "primary" {
        mb.calendars.first()
    } else {
        mb.calendar(id)
    }
}

pub(crate) async fn dispatch(app: &Arc<Shared>, mailbox: usize, req: Req) -> Reply {
    let path = req.path.clone();
    let Some(rest) = path.strip_prefix("/calendar/v3") else {
        return not_found();
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (segments.as_slice(), &req.method) {
        (["users", "me", "calendarList"], &Method::GET) => calendar_list(app, mailbox, &req),
        (["users", "me", "calendarList", id], &Method::GET) => {
            calendar_list_entry(app, mailbox, id)
        }
        (["calendars", cid], &Method::GET) => get_calendar(app, mailbox, cid),
        (["calendars", cid, "events"], &Method::GET) => list_events(app, mailbox, cid, &req),
        (["calendars", cid, "events"], &Method::POST) => insert_event(app, mailbox, cid, &req),
        (["calendars", cid, "events", "watch"], &Method::POST) => watch(app, mailbox, cid, &req),
        (["calendars", cid, "events", eid], &Method::GET) => {
            get_event(app, mailbox, cid, eid, &req)
        }
        (["calendars", cid, "events", eid], &Method::PATCH) => {
            update_event(app, mailbox, cid, eid, &req, false)
        }
        (["calendars", cid, "events", eid], &Method::PUT) => {
            update_event(app, mailbox, cid, eid, &req, true)
        }
        (["calendars", cid, "events", eid], &Method::DELETE) => {
            delete_event(app, mailbox, cid, eid, &req)
        }
        (["calendars", cid, "events", eid, "instances"], &Method::GET) => {
            instances(app, mailbox, cid, eid, &req)
        }
        (["channels", "stop"], &Method::POST) => stop_channel(app, mailbox, &req),
        (["freeBusy"], &Method::POST) => free_busy(app, mailbox, &req),
        _ => not_found(),
    }
}

fn calendar_entry(cal: &Calendar, primary: bool) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("calendar#calendarListEntry"));
    out.insert("id".into(), json!(cal.id));
    for (k, v) in &cal.meta {
        if k != "owner" {
            out.insert(k.clone(), v.clone());
        }
    }
    if primary {
        out.insert("primary".into(), json!(true));
    }
    Value::Object(out)
}

fn calendar_list(app: &Arc<Shared>, mailbox: usize, _req: &Req) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let items: Vec<Value> = mb
        .calendars
        .iter()
        .enumerate()
        .map(|(i, c)| calendar_entry(c, i == 0))
        .collect();
    Reply::json(
        StatusCode::OK,
        json!({"kind": "calendar#calendarList", "etag": format!("\"p{}\"", store.seq), "nextSyncToken": format!("cl{}", store.seq), "items": items}),
    )
}

fn calendar_list_entry(app: &Arc<Shared>, mailbox: usize, id: &str) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    match resolve_calendar(mb, id) {
        Some(cal) => Reply::json(
            StatusCode::OK,
            calendar_entry(cal, mb.calendars.first().is_some_and(|c| c.id == cal.id)),
        ),
        None => not_found(),
    }
}

fn get_calendar(app: &Arc<Shared>, mailbox: usize, id: &str) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    match resolve_calendar(mb, id) {
        Some(cal) => Reply::json(
            StatusCode::OK,
            json!({"kind": "calendar#calendar", "etag": format!("\"c{}\"", cal.log.keys().next_back().copied().unwrap_or(0)), "id": cal.id,
                   "summary": cal.meta.get("summary"), "timeZone": cal.meta.get("timeZone")}),
        ),
        None => not_found(),
    }
}

fn parse_bool(req: &Req, name: &str) -> Result<bool, Reply> {
    match req.q(name) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(bad_param(
            "invalidParameter",
            &format!("Invalid boolean value for {name}."),
            name,
        )),
    }
}

fn parse_time_param(req: &Req, name: &str) -> Result<Option<Timestamp>, Reply> {
    match req.q(name) {
        None => Ok(None),
        // RFC 3339 with a mandatory offset.
        Some(v) => v.parse::<Timestamp>().map(Some).map_err(|_| {
            bad_param(
                "badRequest",
                &format!("Bad Request: {name} must be an RFC 3339 timestamp with an offset."),
                name,
            )
        }),
    }
}

/// Which items of one change-log entry a listing returns.
fn items_for(
    cal: &Calendar,
    ev: &StoredEvent,
    flags: u32,
    incremental: bool,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<Value> {
    let single = flags & SINGLE_EVENTS != 0;
    let show_deleted = flags & SHOW_DELETED != 0 || incremental;
    match ev.kind {
        Kind::Single => {
            if ev.deleted {
                if show_deleted {
                    vec![render(ev, cal)]
                } else {
                    Vec::new()
                }
            } else if incremental || ev.overlaps(from, to) {
                vec![render(ev, cal)]
            } else {
                Vec::new()
            }
        }
        Kind::Exception => {
            if ev.deleted {
                // Cancelled instances of a live series appear even without showDeleted when the series is not
                // expanded; expanded listings show them only with showDeleted [doc 2.5].
                let master_live = ev
                    .master_id
                    .as_ref()
                    .and_then(|m| cal.events.get(m))
                    .is_some_and(|m| !m.deleted);
                let wanted = show_deleted || (!single && master_live);
                if wanted && (incremental || ev.overlaps(from, to)) {
                    vec![render(ev, cal)]
                } else {
                    Vec::new()
                }
            } else if incremental || ev.overlaps(from, to) {
                vec![render(ev, cal)]
            } else {
                Vec::new()
            }
        }
        Kind::Master => {
            if ev.deleted {
                return if show_deleted {
                    vec![render(ev, cal)]
                } else {
                    Vec::new()
                };
            }
            if single {
                let (f, t) = if incremental {
                    (None, None)
                } else {
                    (from, to)
                };
                generated(cal, ev, f, t)
                    .iter()
                    .map(|o| render(o, cal))
                    .collect()
            } else if incremental || to.is_none_or(|t| ev.start < t) {
                vec![render(ev, cal)]
            } else {
                Vec::new()
            }
        }
    }
}

fn list_events(app: &Arc<Shared>, mailbox: usize, cid: &str, req: &Req) -> Reply {
    let sync_token = req.q("syncToken");
    if sync_token.is_some() {
        for forbidden in [
            "iCalUID",
            "orderBy",
            "privateExtendedProperty",
            "q",
            "sharedExtendedProperty",
            "timeMin",
            "timeMax",
            "updatedMin",
        ] {
            if req.q(forbidden).is_some() {
                return bad_param(
                    "invalid",
                    &format!("The parameter {forbidden} cannot be used together with syncToken."),
                    forbidden,
                );
            }
        }
    }
    let max_results = match req.q("maxResults") {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(2500),
            _ => return bad_param("invalid", "Invalid value for maxResults.", "maxResults"),
        },
        None => 250,
    };
    let (single, show_deleted) = match (
        parse_bool(req, "singleEvents"),
        parse_bool(req, "showDeleted"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let order_by_start = match req.q("orderBy") {
        None | Some("updated") => false,
        Some("startTime") if single => true,
        Some("startTime") => {
            return bad_param(
                "invalid",
                "The requested ordering is not available for the particular query.",
                "orderBy",
            );
        }
        Some(_) => return bad_param("invalid", "Invalid value for orderBy.", "orderBy"),
    };
    let (time_min, time_max) = match (
        parse_time_param(req, "timeMin"),
        parse_time_param(req, "timeMax"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let (Some(a), Some(b)) = (time_min, time_max)
        && b <= a
    {
        return error_at(
            StatusCode::BAD_REQUEST,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
            Some(("parameter", "timeMax")),
        );
    }
    let flags = u32::from(single) * SINGLE_EVENTS
        + u32::from(show_deleted) * SHOW_DELETED
        + u32::from(order_by_start) * ORDER_BY_START;
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, cid) else {
        return not_found();
    };
    let full_sync_required = || {
        error_at(
            StatusCode::GONE,
            "calendar",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
            Some(("parameter", "syncToken")),
        )
    };
    let valid = |c: &Cursor| {
        c.m == mailbox && c.c == cal.id && c.ep == mb.epoch && (c.from == 0 || c.from >= cal.floor)
    };
    let cursor = if let Some(page) = req.q("pageToken") {
        match Cursor::decode(page).filter(|c| valid(c)) {
            Some(c) => c,
            None if sync_token.is_some() => return full_sync_required(),
            None => return bad_param("invalid", "Invalid page token.", "pageToken"),
        }
    } else if let Some(token) = sync_token {
        match Cursor::decode(token).filter(|c| valid(c) && c.from > 0) {
            Some(c) => Cursor {
                after: c.from,
                upto: store.seq,
                ps: max_results,
                ..c
            },
            None => return full_sync_required(),
        }
    } else {
        Cursor {
            m: mailbox,
            c: cal.id.clone(),
            ws: time_min.map(|t| t.as_millisecond()),
            we: time_max.map(|t| t.as_millisecond()),
            from: 0,
            after: 0,
            upto: store.seq,
            ps: max_results,
            ep: mb.epoch,
            f: flags,
            off: if order_by_start { Some(0) } else { None },
            part: None,
        }
    };
    let from = cursor.ws.and_then(|m| Timestamp::from_millisecond(m).ok());
    let to = cursor.we.and_then(|m| Timestamp::from_millisecond(m).ok());
    let incremental = cursor.from > 0;
    let mut items = Vec::new();
    let mut next = None;
    if let Some(offset) = cursor.off {
        // orderBy=startTime: the listing is sorted, so pages are offsets into it.
        let mut all: Vec<(Timestamp, Value)> = Vec::new();
        for (_, id) in cal.log.range(..=cursor.upto) {
            if let Some(ev) = cal.events.get(id) {
                for item in items_for(cal, ev, cursor.f, false, from, to) {
                    let start = item_start(&item).unwrap_or(ev.start);
                    all.push((start, item));
                }
            }
        }
        all.sort_by_key(|a| a.0);
        let total = all.len();
        items.extend(all.into_iter().skip(offset).take(cursor.ps).map(|(_, v)| v));
        if offset + cursor.ps < total {
            next = Some(Cursor {
                off: Some(offset + cursor.ps),
                ..cursor.clone()
            });
        }
    } else {
        let mut last = cursor.after;
        let span = if cursor.after < cursor.upto {
            cal.log.range(cursor.after + 1..=cursor.upto)
        } else {
            cal.log.range(0..0)
        };
        // An expanded series may not fit one page: `part` remembers how much of its entry was served.
        'entries: for (&seq, id) in span {
            let Some(ev) = cal.events.get(id) else {
                last = seq;
                continue;
            };
            let skip = match cursor.part {
                Some((partial, served)) if partial == seq => served,
                _ => 0,
            };
            let entry = items_for(cal, ev, cursor.f, incremental, from, to);
            for (k, item) in entry.into_iter().enumerate().skip(skip) {
                if items.len() >= cursor.ps {
                    next = Some(Cursor {
                        after: last,
                        part: Some((seq, k)),
                        ..cursor.clone()
                    });
                    break 'entries;
                }
                items.push(item);
            }
            last = seq;
        }
    }
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"p{}\"", cursor.upto),
        "summary": cal.meta.get("summary"),
        "description": "",
        "updated": rfc3339(Timestamp::now()),
        "timeZone": cal.meta.get("timeZone"),
        "accessRole": "owner",
        "defaultReminders": cal.meta.get("defaultReminders").cloned().unwrap_or(json!([])),
        "items": items,
    });
    match next {
        Some(c) => body["nextPageToken"] = json!(c.encode()),
        None => {
            let sync = Cursor {
                from: cursor.upto.max(1),
                after: cursor.upto.max(1),
                off: None,
                part: None,
                ws: None,
                we: None,
                ..cursor
            };
            body["nextSyncToken"] = json!(sync.encode());
        }
    }
    Reply::json(StatusCode::OK, body)
}

fn item_start(item: &Value) -> Option<Timestamp> {
    let start = item
        .get("start")
        .or_else(|| item.get("originalStartTime"))?;
    if let Some(dt) = start.get("dateTime").and_then(Value::as_str) {
        return dt.parse().ok();
    }
    let d = start
        .get("date")
        .and_then(Value::as_str)?
        .parse::<Date>()
        .ok()?;
    d.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

fn get_event(app: &Arc<Shared>, mailbox: usize, cid: &str, eid: &str, req: &Req) -> Reply {
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, cid) else {
        return not_found();
    };
    let ev = match cal.events.get(eid) {
        Some(ev) => ev.clone(),
        None => match occurrence_of(cal, eid) {
            Some(o) => o,
            None => return not_found(),
        },
    };
    let tag = etag(&ev);
    if req.header("if-none-match").is_some_and(|v| v.trim() == tag) {
        return Reply::empty(StatusCode::NOT_MODIFIED).header("ETag", tag);
    }
    Reply::json(StatusCode::OK, render(&ev, cal)).header("ETag", tag)
}

fn occurrence_of(cal: &Calendar, eid: &str) -> Option<StoredEvent> {
    let (master_id, stamp) = eid.rsplit_once('_')?;
    let master = cal
        .events
        .get(master_id)
        .filter(|m| m.kind == Kind::Master && !m.deleted)?;
    let start = crate::graph::parse_instance_stamp(stamp, master)?;
    Some(occurrence(master, start))
}

/// Parses an EventDateTime: `{date}` (all-day) or `{dateTime, timeZone?}`; returns instant, all-day, zone.
fn parse_edt(
    v: Option<&Value>,
    which: &str,
    calendar_zone: &str,
) -> Result<(Timestamp, bool, String), Reply> {
    let v = v.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "global",
            "required",
            &format!("Missing {which} time."),
        )
    })?;
    let zone_name = v.get("timeZone").and_then(Value::as_str);
    if let Some(d) = v.get("date").and_then(Value::as_str) {
        let date = d.parse::<Date>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "global",
                "invalid",
                &format!("Invalid {which} date."),
            )
        })?;
        let ts = date
            .to_zoned(TimeZone::UTC)
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "global",
                    "invalid",
                    "Invalid date.",
                )
            })?
            .timestamp();
        return Ok((ts, true, zone_name.unwrap_or(calendar_zone).to_string()));
    }
    let dt = v.get("dateTime").and_then(Value::as_str).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "global",
            "required",
            &format!("Missing {which} time."),
        )
    })?;
    if let Some(name) = zone_name {
        let zone = TimeZone::get(name).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "global",
                "timeRangeEmpty",
                &format!("Invalid time zone definition for {which} time."),
            )
        })?;
        let ts = match dt.parse::<Timestamp>() {
            Ok(ts) => ts,
            Err(_) => dt
                .parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|c| c.to_zoned(zone).ok())
                .map(|z| z.timestamp())
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "global",
                        "invalid",
                        &format!("Invalid {which} time."),
                    )
                })?,
        };
        return Ok((ts, false, name.to_string()));
    }
    let ts = dt.parse::<Timestamp>().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "global",
            "invalid",
            &format!("Invalid {which} time: an offset or a timeZone is required."),
        )
    })?;
    Ok((ts, false, calendar_zone.to_string()))
}

fn apply_body(ev: &mut StoredEvent, calendar_zone: &str) -> Result<(), Reply> {
    let (start, all_day, zone) = parse_edt(ev.body.get("start"), "start", calendar_zone)?;
    let (end, end_all_day, _) = parse_edt(ev.body.get("end"), "end", calendar_zone)?;
    if all_day != end_all_day || end < start {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
        ));
    }
    let recurring = ev
        .body
        .get("recurrence")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if recurring {
        if !all_day
            && ev
                .body
                .get("start")
                .and_then(|s| s.get("timeZone"))
                .is_none()
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "global",
                "required",
                "Missing time zone definition for start time.",
            ));
        }
        let lines = ev
            .body
            .get("recurrence")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for line in &lines {
            let ok = line.as_str().is_some_and(|l| {
                ["RRULE:", "EXRULE:", "RDATE", "EXDATE"]
                    .iter()
                    .any(|p| l.starts_with(p))
            });
            if !ok {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "global",
                    "invalid",
                    "Invalid recurrence rule.",
                ));
            }
        }
    }
    if ev.kind != Kind::Exception {
        ev.kind = if recurring {
            Kind::Master
        } else {
            Kind::Single
        };
    }
    ev.start = start;
    ev.end = end;
    ev.all_day = all_day;
    ev.zone = zone;
    Ok(())
}

fn client_fields(input: &Map<String, Value>) -> Map<String, Value> {
    const COMPUTED: &[&str] = &[
        "kind",
        "etag",
        "id",
        "htmlLink",
        "created",
        "updated",
        "iCalUID",
        "recurringEventId",
        "originalStartTime",
        "creator",
        "organizer",
    ];
    input
        .iter()
        .filter(|(k, _)| !COMPUTED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn insert_event(app: &Arc<Shared>, mailbox: usize, cid: &str, req: &Req) -> Reply {
    let input = match req.json() {
        Ok(Value::Object(m)) => m,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "global",
                "parseError",
                "Parse Error",
            );
        }
    };
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, cid) else {
        return not_found();
    };
    let cal_id = cal.id.clone();
    let zone = cal
        .meta
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_string();
    let id = match input.get("id").and_then(Value::as_str) {
        Some(id) => {
            if !is_base32hex_id(id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "global",
                    "invalid",
                    "Invalid resource id value.",
                );
            }
            if cal.events.contains_key(id) {
                return error(
                    StatusCode::CONFLICT,
                    "global",
                    "duplicate",
                    "The requested identifier already exists.",
                );
            }
            id.to_string()
        }
        None => new_id(&mut store),
    };
    let now = Timestamp::now();
    let mut ev = StoredEvent {
        id: id.clone(),
        body: client_fields(&input),
        start: now,
        end: now,
        all_day: false,
        zone: zone.clone(),
        kind: Kind::Single,
        master_id: None,
        original_start: None,
        deleted: false,
        seq: 0,
        created: now,
        modified: now,
    };
    ev.body.remove("status");
    if let Err(r) = apply_body(&mut ev, &zone) {
        return r;
    }
    if store
        .put(mailbox, &cal_id, ev, ChangeType::Created)
        .is_none()
    {
        return not_found();
    }
    reply_event(&store, mailbox, &cal_id, &id)
}

fn reply_event(store: &crate::store::Store, mailbox: usize, cal_id: &str, id: &str) -> Reply {
    let Some(cal) = store
        .mailboxes
        .get(mailbox)
        .and_then(|m| m.calendar(cal_id))
    else {
        return not_found();
    };
    match cal.events.get(id) {
        Some(ev) => Reply::json(StatusCode::OK, render(ev, cal)).header("ETag", etag(ev)),
        None => not_found(),
    }
}

fn new_id(store: &mut crate::store::Store) -> String {
    // base32hex alphabet (a-v, 0-9): hex digits already are.
    store.next_hex_id()
}

fn check_if_match(req: &Req, ev: &StoredEvent) -> Result<(), Reply> {
    if let Some(expected) = req.header("if-match")
        && expected.trim() != "*"
        && expected.trim() != etag(ev)
    {
        return Err(error_at(
            StatusCode::PRECONDITION_FAILED,
            "global",
            "conditionNotMet",
            "Precondition Failed",
            Some(("header", "If-Match")),
        ));
    }
    Ok(())
}

fn update_event(
    app: &Arc<Shared>,
    mailbox: usize,
    cid: &str,
    eid: &str,
    req: &Req,
    replace: bool,
) -> Reply {
    let input = match req.json() {
        Ok(Value::Object(m)) => m,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "global",
                "parseError",
                "Parse Error",
            );
        }
    };
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, cid) else {
        return not_found();
    };
    let cal_id = cal.id.clone();
    let zone = cal
        .meta
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_string();
    let mut ev = match cal.events.get(eid) {
        Some(ev) => ev.clone(),
        None => match occurrence_of(cal, eid) {
            Some(o) => o,
            None => return not_found(),
        },
    };
    if let Err(r) = check_if_match(req, &ev) {
        return r;
    }
    let fields = client_fields(&input);
    if replace {
        let keep_times = ev.kind == Kind::Exception;
        let start = ev.body.get("start").cloned();
        let end = ev.body.get("end").cloned();
        ev.body = fields;
        if keep_times {
            if !ev.body.contains_key("start")
                && let Some(s) = start
            {
                ev.body.insert("start".into(), s);
            }
            if !ev.body.contains_key("end")
                && let Some(e) = end
            {
                ev.body.insert("end".into(), e);
            }
        }
    } else {
        for (k, v) in fields {
            ev.body.insert(k, v);
        }
    }
    // Setting status cancelled on an instance cancels it (the way Google clients delete one occurrence).
    let cancel = ev.body.get("status").and_then(Value::as_str) == Some("cancelled");
    ev.body.remove("status");
    if let Err(r) = apply_body(&mut ev, &zone) {
        return r;
    }
    if cancel {
        ev.deleted = true;
    }
    ev.modified = Timestamp::now();
    let id = ev.id.clone();
    if store
        .put(
            mailbox,
            &cal_id,
            ev,
            if cancel {
                ChangeType::Deleted
            } else {
                ChangeType::Updated
            },
        )
        .is_none()
    {
        return not_found();
    }
    reply_event(&store, mailbox, &cal_id, &id)
}

fn delete_event(app: &Arc<Shared>, mailbox: usize, cid: &str, eid: &str, req: &Req) -> Reply {
    let mut store = app.write();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, cid) else {
        return not_found();
    };
    let cal_id = cal.id.clone();
    let mut ev = match cal.events.get(eid) {
        Some(ev) => ev.clone(),
        None => match occurrence_of(cal, eid) {
            Some(o) => o,
            None => return not_found(),
        },
    };
    if ev.deleted {
        return error(
            StatusCode::GONE,
            "global",
            "deleted",
            "Resource has been deleted",
        );
    }
    if let Err(r) = check_if_match(req, &ev) {
        return r;
    }
    let exceptions: Vec<StoredEvent> = if ev.kind == Kind::Master {
        cal.exceptions
            .get(&ev.id)
            .map(|set| {
                set.iter()
                    .filter_map(|x| cal.events.get(x).cloned())
                    .collect()
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
    for mut ex in exceptions.into_iter().filter(|e| !e.deleted) {
        ex.deleted = true;
        let _ = store.put(mailbox, &cal_id, ex, ChangeType::Deleted);
    }
    Reply::empty(StatusCode::NO_CONTENT)
}

fn instances(app: &Arc<Shared>, mailbox: usize, cid: &str, eid: &str, req: &Req) -> Reply {
    let (time_min, time_max) = match (
        parse_time_param(req, "timeMin"),
        parse_time_param(req, "timeMax"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let show_deleted = match parse_bool(req, "showDeleted") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let store = app.read();
    let Some(mb) = store.mailboxes.get(mailbox) else {
        return not_found();
    };
    let Some(cal) = resolve_calendar(mb, cid) else {
        return not_found();
    };
    let Some(master) = cal.events.get(eid).filter(|m| m.kind == Kind::Master) else {
        return not_found();
    };
    if master.deleted {
        return error(
            StatusCode::GONE,
            "global",
            "deleted",
            "Resource has been deleted",
        );
    }
    let mut all: Vec<StoredEvent> = generated(cal, master, time_min, time_max);
    if let Some(set) = cal.exceptions.get(eid) {
        for ex in set.iter().filter_map(|x| cal.events.get(x)) {
            let in_window = ex.deleted
                && ex.original_start.is_some_and(|o| {
                    time_min.is_none_or(|f| o >= f) && time_max.is_none_or(|t| o < t)
                })
                || !ex.deleted && ex.overlaps(time_min, time_max);
            if in_window && (show_deleted || !ex.deleted) {
                all.push(ex.clone());
            }
        }
    }
    all.sort_by_key(|a| a.original_start);
    let items: Vec<Value> = all.iter().map(|e| render(e, cal)).collect();
    Reply::json(
        StatusCode::OK,
        json!({"kind": "calendar#events", "summary": cal.meta.get("summary"), "timeZone": cal.meta.get("timeZone"), "accessRole": "owner", "items": items}),
    )
}

fn watch(app: &Arc<Shared>, mailbox: usize, cid: &str, req: &Req) -> Reply {
    let input = match req.json() {
        Ok(Value::Object(m)) => m,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "global",
                "parseError",
                "Parse Error",
            );
        }
    };
    let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(id) = text("id").filter(|i| !i.is_empty() && i.len() <= 64) else {
        return error(
            StatusCode::BAD_REQUEST,
            "global",
            "required",
            "Required: a channel id of at most 64 characters.",
        );
    };
    if text("type").as_deref() != Some("web_hook") && text("type").as_deref() != Some("webhook") {
        return error(
            StatusCode::BAD_REQUEST,
            "push",
            "invalidChannelType",
            "Unsupported channel type.",
        );
    }
    let Some(address) = text("address") else {
        return error(
            StatusCode::BAD_REQUEST,
            "global",
            "required",
            "Required: address.",
        );
    };
    let scheme_ok = url::Url::parse(&address).is_ok_and(|u| {
        u.scheme() == "https" || (!app.config.require_https_webhooks && u.scheme() == "http")
    });
    if !scheme_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "push",
            "invalidAddress",
            "WebHook callback must be HTTPS.",
        );
    }
    let token = text("token");
    if token.as_ref().is_some_and(|t| t.len() > 256) {
        return error(
            StatusCode::BAD_REQUEST,
            "global",
            "invalid",
            "The channel token must be at most 256 characters.",
        );
    }
    let (cal_id, resource_uri) = {
        let store = app.read();
        let Some(mb) = store.mailboxes.get(mailbox) else {
            return not_found();
        };
        let Some(cal) = resolve_calendar(mb, cid) else {
            return not_found();
        };
        (
            cal.id.clone(),
            format!(
                "https://www.googleapis.com/calendar/v3/calendars/{}/events?alt=json",
                cal.id
            ),
        )
    };
    let now = Timestamp::now().as_millisecond();
    // Google's limit for events channels is not documented; a week is the commonly observed maximum [unv].
    let limit = now + 7 * 24 * 3600 * 1000;
    let expiration = input
        .get("expiration")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .map_or(limit, |e| e.min(limit));
    let channel = {
        let mut registry = lock(&app.subscriptions);
        if registry.channels.contains_key(&id) {
            return error(
                StatusCode::BAD_REQUEST,
                "push",
                "channelIdNotUnique",
                "Channel id not unique.",
            );
        }
        let channel = Channel {
            id: id.clone(),
            resource_id: crate::server::random_token(14).replace(['-', '_'], "x"),
            resource_uri,
            mailbox,
            calendar: cal_id,
            address,
            token,
            expiration,
            message_number: 1,
        };
        registry.channels.insert(id.clone(), channel.clone());
        channel
    };
    let app2 = Arc::clone(app);
    let sync_channel = channel.clone();
    tokio::spawn(async move { crate::notify::google_message(&app2, &sync_channel, "sync").await });
    let mut body = json!({
        "kind": "api#channel",
        "id": channel.id,
        "resourceId": channel.resource_id,
        "resourceUri": channel.resource_uri,
        "expiration": channel.expiration,
    });
    if let Some(t) = &channel.token {
        body["token"] = json!(t);
    }
    Reply::json(StatusCode::OK, body)
}

fn stop_channel(app: &Arc<Shared>, mailbox: usize, req: &Req) -> Reply {
    let input = match req.json() {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "global",
                "parseError",
                "Parse Error",
            );
        }
    };
    let id = input.get("id").and_then(Value::as_str).unwrap_or_default();
    let resource = input
        .get("resourceId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut registry = lock(&app.subscriptions);
    let known = registry
        .channels
        .get(id)
        .is_some_and(|c| c.resource_id == resource && c.mailbox == mailbox);
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            "global",
            "notFound",
            &format!("Channel '{id}' not found for project"),
        );
    }
    registry.channels.remove(id);
    Reply::empty(StatusCode::NO_CONTENT)
}

fn free_busy(app: &Arc<Shared>, mailbox: usize, req: &Req) -> Reply {
    let input = match req.json() {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "global",
                "parseError",
                "Parse Error",
            );
        }
    };
    let parse = |k: &str| {
        input
            .get(k)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok())
    };
    let (Some(from), Some(to)) = (parse("timeMin"), parse("timeMax")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "global",
            "required",
            "Missing timeMin or timeMax.",
        );
    };
    if to <= from {
        return error_at(
            StatusCode::BAD_REQUEST,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
            Some(("parameter", "timeMax")),
        );
    }
    let items = input
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let expansion_max = input
        .get("calendarExpansionMax")
        .and_then(Value::as_u64)
        .unwrap_or(50)
        .min(50) as usize;
    let store = app.read();
    let mut calendars = Map::new();
    for (i, item) in items.iter().enumerate() {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        if i >= expansion_max {
            calendars.insert(id.into(), json!({"busy": [], "errors": [{"domain": "calendar", "reason": "tooManyCalendarsRequested"}]}));
            continue;
        }
        let cal = store
            .mailboxes
            .get(mailbox)
            .and_then(|mb| resolve_calendar(mb, id))
            .or_else(|| {
                store
                    .mailbox_index(id)
                    .and_then(|m| store.mailboxes.get(m))
                    .and_then(|mb| mb.calendars.first())
            });
        let Some(cal) = cal else {
            calendars.insert(
                id.into(),
                json!({"busy": [], "errors": [{"domain": "global", "reason": "notFound"}]}),
            );
            continue;
        };
        let mut spans: Vec<(Timestamp, Timestamp)> = Vec::new();
        for ev in cal.events.values().filter(|e| !e.deleted) {
            let transparent =
                ev.body.get("transparency").and_then(Value::as_str) == Some("transparent");
            if transparent {
                continue;
            }
            match ev.kind {
                Kind::Single | Kind::Exception => {
                    if ev.overlaps(Some(from), Some(to)) {
                        spans.push((ev.start.max(from), ev.end.min(to)));
                    }
                }
                Kind::Master => {
                    for o in generated(cal, ev, Some(from), Some(to)) {
                        spans.push((o.start.max(from), o.end.min(to)));
                    }
                }
            }
        }
        spans.sort();
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let fmt = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let busy: Vec<Value> = merged
            .iter()
            .map(|(s, e)| json!({"start": fmt(*s), "end": fmt(*e)}))
            .collect();
        calendars.insert(id.into(), json!({"busy": busy}));
    }
    let _ = SignedDuration::ZERO;
    Reply::json(
        StatusCode::OK,
        json!({"kind": "calendar#freeBusy", "timeMin": input.get("timeMin"), "timeMax": input.get("timeMax"), "calendars": calendars}),
    )
}
