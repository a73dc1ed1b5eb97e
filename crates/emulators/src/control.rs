//! The control API (`/_control/...` over HTTP, and the same operations as methods on [`Emulator`]): seed a
//! mailbox deterministically, act as the person who owns it, inject faults, read counters, expire tokens and
//! sync state, fire lifecycle events.
//!
//! "Acting as a user" goes through the same handlers as API requests, so change logs, delta tokens and
//! notifications see exactly what they would see when someone edits a calendar in Outlook or Google.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::server::{
    Emulator, EmulatorError, FaultRule, Flavor, Reply, ReplyBody, Req, Shared, bad_control, lock,
};
use crate::store::{ChangeType, Store, instance_id};

/// What `seed` generates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedSpec {
    /// Mailbox (user id or address); the first one by default.
    pub user: Option<String>,
    /// Calendars to fill (created as needed; the default calendar counts as the first).
    pub calendars: usize,
    /// Events per calendar (series count as one event).
    pub events_per_calendar: usize,
    pub seed: u64,
    /// Events are spread over ±`spread_days` around this date.
    pub anchor: String,
    /// Half the span the events start in, in days (180 by default). A larger mailbox spread wider keeps
    /// its density: 1,000 events over ±180 days and 100,000 over ±18,000 are equally busy days.
    pub spread_days: u32,
}

impl Default for SeedSpec {
    fn default() -> Self {
        Self {
            user: None,
            calendars: 1,
            events_per_calendar: 50,
            seed: 1,
            anchor: "2026-01-05".into(),
            spread_days: 180,
        }
    }
}

/// Something a person does in Outlook or Google Calendar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create an event from a provider-native body (Graph event / Google event JSON).
    Create {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        calendar: Option<String>,
        event: Value,
    },
    /// Change fields of an event or of one occurrence (instance id), provider-native JSON.
    Edit {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        calendar: Option<String>,
        event_id: String,
        changes: Value,
    },
    /// Drag an event or one occurrence by some minutes.
    Move {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        calendar: Option<String>,
        event_id: String,
        minutes: i64,
    },
    /// Delete an event, a whole series, or one occurrence (instance id).
    Delete {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        calendar: Option<String>,
        event_id: String,
    },
    /// Receive an invitation: the event becomes a meeting organised by someone else.
    Invite {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        calendar: Option<String>,
        event_id: String,
        organizer: String,
    },
    /// Answer an invitation: `accepted`, `tentative` or `declined`.
    Respond {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        calendar: Option<String>,
        event_id: String,
        response: String,
    },
}

/// Requests served, by endpoint label and status (0 = connection reset), plus webhook deliveries by the
/// receiver's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub notifications: BTreeMap<u16, u64>,
}

impl Counters {
    /// Total requests answered with `status` across endpoints.
    pub fn with_status(&self, status: u16) -> u64 {
        self.requests.values().filter_map(|m| m.get(&status)).sum()
    }
    /// Total requests whose endpoint label contains `needle`.
    pub fn for_endpoint(&self, needle: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.contains(needle))
            .flat_map(|(_, m)| m.values())
            .sum()
    }
}

/// Adds a calendar to a mailbox with the provider's id scheme and metadata; returns its id.
pub(crate) fn add_calendar(
    store: &mut Store,
    flavor: Flavor,
    mailbox: usize,
    name: Option<&str>,
) -> Option<String> {
    let hex = store.next_hex_id();
    let mb = store.mailboxes.get_mut(mailbox)?;
    let n = mb.calendars.len();
    let (id, meta) = match flavor {
        Flavor::Microsoft => {
            let name = name.map(str::to_string).unwrap_or_else(|| {
                if n == 0 {
                    "Calendar".into()
                } else {
                    format!("Calendar {}", n + 1)
                }
            });
            let id = format!("AAMkAG{hex}AAAAAAEGAAA=");
            let meta = json!({
                "name": name,
                "color": "auto",
                "hexColor": "",
                "changeKey": crate::graph::change_key(&id, 1),
                "canShare": true,
                "canViewPrivateItems": true,
                "canEdit": true,
                "isTallyingResponses": true,
                "allowedOnlineMeetingProviders": ["teamsForBusiness"],
                "defaultOnlineMeetingProvider": "teamsForBusiness",
            });
            (id, meta)
        }
        Flavor::Google => {
            let id = if n == 0 {
                mb.address.clone()
            } else {
                format!("{hex}@group.calendar.google.com")
            };
            let summary = name.map(str::to_string).unwrap_or_else(|| {
                if n == 0 {
                    mb.address.clone()
                } else {
                    format!("Calendar {}", n + 1)
                }
            });
            let meta = json!({
                "etag": format!("\"{}\"", 1_600_000_000_000_000u64 + n as u64),
                "summary": summary,
                "timeZone": "UTC",
                "colorId": "14",
                "backgroundColor": "#9fe1e7",
                "foregroundColor": "#000000",
                "selected": true,
                "accessRole": "owner",
                "defaultReminders": [{"method": "popup", "minutes": 10}],
                "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
                "owner": mb.address,
            });
            (id, meta)
        }
    };
    let meta = match meta {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    mb.calendars
        .push(crate::store::Calendar::new(id.clone(), meta));
    Some(id)
}

const ZONES: &[&str] = &[
    "America/Los_Angeles",
    "Europe/Berlin",
    "Asia/Kolkata",
    "UTC",
    "America/New_York",
    "Australia/Sydney",
    "Europe/London",
];
const PEOPLE: &[(&str, &str)] = &[
    ("Megan Bowen", "meganb@contoso.example"),
    ("Alex Wilber", "alexw@contoso.example"),
    ("Lynne Robbins", "lynner@contoso.example"),
    ("Isaiah Langer", "isaiahl@fabrikam.example"),
    ("Johanna Lorenz", "johannal@fabrikam.example"),
    ("Nestor Wilke", "nestorw@contoso.example"),
    ("Pradeep Gupta", "pradeepg@fabrikam.example"),
    ("Grady Archie", "gradya@contoso.example"),
];
const TOPICS: &[&str] = &[
    "Planning",
    "1:1",
    "Design review",
    "Standup",
    "Budget",
    "Offsite",
    "Customer call",
    "Retro",
    "Lunch",
    "Hiring loop",
    "Board prep",
    "Training",
];
const WORDS: &[&str] = &[
    "agenda",
    "notes",
    "follow-up",
    "roadmap",
    "quarter",
    "metrics",
    "draft",
    "proposal",
    "timeline",
    "owners",
    "risks",
    "decisions",
];

#[derive(Debug, Clone)]
struct Generated {
    subject: String,
    description: String,
    location: Option<String>,
    zone: &'static str,
    start: DateTime,
    minutes: i64,
    all_day_days: Option<i64>,
    recurrence: Option<(bool, i64)>,
    attendees: Vec<(&'static str, &'static str)>,
    show_as: &'static str,
    invitation: Option<&'static str>,
    exception_at: Option<i64>,
    cancelled_at: Option<i64>,
}

fn generate_one(rng: &mut StdRng, anchor: Date, spread_days: u32, index: usize) -> Generated {
    let roll = rng.random_range(0..100);
    let zone = ZONES[rng.random_range(0..ZONES.len())];
    let spread = i64::from(spread_days.max(1));
    let day = anchor
        .checked_add(rng.random_range(-spread..spread).days())
        .unwrap_or(anchor);
    let hour = rng.random_range(7..19);
    let minute = [0, 15, 30, 45][rng.random_range(0..4)];
    let start = day.at(hour, minute, 0, 0);
    let topic = TOPICS[rng.random_range(0..TOPICS.len())];
    let long = rng.random_range(0..100) < 10;
    let words = if long {
        rng.random_range(400..1000)
    } else {
        rng.random_range(0..25)
    };
    let description = (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ");
    let attendees = if rng.random_range(0..100) < 35 {
        let n = rng.random_range(1..=6);
        (0..n)
            .map(|_| PEOPLE[rng.random_range(0..PEOPLE.len())])
            .collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    let mut attendees_dedup = Vec::new();
    for a in attendees {
        if !attendees_dedup.contains(&a) {
            attendees_dedup.push(a);
        }
    }
    let show_as = match rng.random_range(0..100) {
        0..10 => "tentative",
        10..15 => "free",
        15..18 => "oof",
        _ => "busy",
    };
    let (all_day_days, recurrence) = match roll {
        0..12 => (
            None,
            Some((rng.random_range(0..4) != 0, rng.random_range(8i64..40))),
        ),
        12..22 => (Some(rng.random_range(1i64..4)), None),
        _ => (None, None),
    };
    let exception_at = recurrence
        .filter(|_| rng.random_range(0..100) < 40)
        .map(|_| 2);
    let cancelled_at = recurrence
        .filter(|_| rng.random_range(0..100) < 30)
        .map(|_| 4);
    let invitation = if !attendees_dedup.is_empty() && rng.random_range(0..100) < 25 {
        Some(PEOPLE[rng.random_range(0..PEOPLE.len())].1)
    } else {
        None
    };
    Generated {
        subject: format!("{topic} #{index}"),
        description,
        location: (rng.random_range(0..2) == 0)
            .then(|| format!("Room {}", rng.random_range(100..500))),
        zone,
        start,
        minutes: [30, 45, 60, 90, 120][rng.random_range(0..5)],
        all_day_days,
        recurrence,
        attendees: attendees_dedup,
        show_as,
        invitation,
        exception_at,
        cancelled_at,
    }
}

fn civil_s(dt: DateTime) -> String {
    dt.strftime("%Y-%m-%dT%H:%M:%S").to_string()
}

fn weekday_name(d: Date) -> &'static str {
    match d.weekday() {
        jiff::civil::Weekday::Monday => "monday",
        jiff::civil::Weekday::Tuesday => "tuesday",
        jiff::civil::Weekday::Wednesday => "wednesday",
        jiff::civil::Weekday::Thursday => "thursday",
        jiff::civil::Weekday::Friday => "friday",
        jiff::civil::Weekday::Saturday => "saturday",
        jiff::civil::Weekday::Sunday => "sunday",
    }
}

fn graph_body(g: &Generated) -> Value {
    let zone_label = crate::graph::graph_zone_name(g.zone);
    let (start, end, label, all_day) = match g.all_day_days {
        Some(days) => {
            let s = g.start.date().at(0, 0, 0, 0);
            let e = s.checked_add(days.days()).unwrap_or(s);
            (s, e, zone_label.clone(), true)
        }
        None => (
            g.start,
            g.start.checked_add(g.minutes.minutes()).unwrap_or(g.start),
            zone_label.clone(),
            false,
        ),
    };
    let mut body = json!({
        "subject": g.subject,
        "body": {"contentType": "html", "content": format!("<html><body><p>{}</p></body></html>", g.description)},
        "start": {"dateTime": civil_s(start), "timeZone": label},
        "end": {"dateTime": civil_s(end), "timeZone": label},
        "isAllDay": all_day,
        "showAs": g.show_as,
        "attendees": g.attendees.iter().map(|(n, a)| json!({"emailAddress": {"name": n, "address": a}, "type": "required"})).collect::<Vec<_>>(),
    });
    if let Some(loc) = &g.location {
        body["location"] = json!({"displayName": loc});
    }
    if let Some((weekly, count)) = g.recurrence {
        let pattern = if weekly {
            json!({"type": "weekly", "interval": 1, "daysOfWeek": [weekday_name(start.date())]})
        } else {
            json!({"type": "daily", "interval": 1})
        };
        body["recurrence"] = json!({"pattern": pattern, "range": {"type": "numbered", "startDate": start.date().to_string(), "numberOfOccurrences": count, "recurrenceTimeZone": label}});
    }
    body
}

fn google_body(g: &Generated) -> Value {
    let mut body = json!({
        "summary": g.subject,
        "description": g.description,
        "transparency": if g.show_as == "free" { "transparent" } else { "opaque" },
        "attendees": g.attendees.iter().map(|(n, a)| json!({"email": a, "displayName": n, "responseStatus": "needsAction"})).collect::<Vec<_>>(),
    });
    match g.all_day_days {
        Some(days) => {
            body["start"] = json!({"date": g.start.date().to_string()});
            body["end"] = json!({"date": g.start.date().checked_add(days.days()).unwrap_or(g.start.date()).to_string()});
        }
        None => {
            let end = g.start.checked_add(g.minutes.minutes()).unwrap_or(g.start);
            body["start"] = json!({"dateTime": civil_s(g.start), "timeZone": g.zone});
            body["end"] = json!({"dateTime": civil_s(end), "timeZone": g.zone});
        }
    }
    if let Some(loc) = &g.location {
        body["location"] = json!(loc);
    }
    if let Some((weekly, count)) = g.recurrence {
        body["recurrence"] = json!([format!(
            "RRULE:FREQ={};COUNT={count}",
            if weekly { "WEEKLY" } else { "DAILY" }
        )]);
    }
    body
}

/// Original start (UTC) of the k-th instance of a generated DAILY/WEEKLY series.
fn kth_start(g: &Generated, k: i64) -> Option<Timestamp> {
    let (weekly, _) = g.recurrence?;
    let days = if weekly { 7 * k } else { k };
    let local = g.start.checked_add(days.days()).ok()?;
    let zone = TimeZone::get(g.zone).ok()?;
    local.to_zoned(zone).ok().map(|z| z.timestamp())
}

impl Emulator {
    fn mailbox_of(&self, user: Option<&str>) -> Result<usize, EmulatorError> {
        match user {
            None => Ok(0),
            Some(u) => self
                .shared
                .read()
                .mailbox_index(u)
                .ok_or_else(|| EmulatorError::Control(format!("no mailbox {u}"))),
        }
    }

    /// Mints an access token for a mailbox (the first by default) without the OAuth dance.
    pub fn token(&self, user: Option<&str>) -> Result<String, EmulatorError> {
        Ok(self.shared.mint_token(self.mailbox_of(user)?))
    }

    /// Ids of a mailbox's calendars, default first.
    pub fn calendars(&self, user: Option<&str>) -> Result<Vec<String>, EmulatorError> {
        let m = self.mailbox_of(user)?;
        Ok(self
            .shared
            .read()
            .mailboxes
            .get(m)
            .map(|mb| mb.calendars.iter().map(|c| c.id.clone()).collect())
            .unwrap_or_default())
    }

    /// Adds a calendar; returns its id.
    pub fn add_calendar(&self, user: Option<&str>, name: &str) -> Result<String, EmulatorError> {
        let m = self.mailbox_of(user)?;
        let mut store = self.shared.write();
        add_calendar(&mut store, self.shared.flavor, m, Some(name))
            .ok_or_else(|| EmulatorError::Control("no such mailbox".into()))
    }

    /// Live (non-deleted) stored records across a mailbox's calendars (series count once, plus exceptions).
    pub fn live_events(&self, user: Option<&str>) -> Result<usize, EmulatorError> {
        let m = self.mailbox_of(user)?;
        Ok(self
            .shared
            .read()
            .mailboxes
            .get(m)
            .map(|mb| mb.calendars.iter().map(|c| c.live_count()).sum())
            .unwrap_or(0))
    }

    pub async fn seed(&self, spec: &SeedSpec) -> Result<usize, EmulatorError> {
        seed(&self.shared, spec).await
    }

    pub async fn act(&self, action: Action) -> Result<Value, EmulatorError> {
        act(&self.shared, action).await
    }

    /// Adds a fault rule; a rule that cannot be applied as asked is refused (see [`FaultRule::check`]).
    pub fn add_fault(&self, rule: FaultRule) -> Result<(), EmulatorError> {
        rule.check()?;
        lock(&self.shared.faults).push(rule);
        Ok(())
    }

    /// The rules still in force, each with the `times` it has left.
    pub fn faults(&self) -> Vec<FaultRule> {
        lock(&self.shared.faults).clone()
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    pub fn counters(&self) -> Counters {
        counters(&self.shared)
    }

    pub fn reset_counters(&self) {
        lock(&self.shared.counters).clear();
        lock(&self.shared.subscriptions).delivered.clear();
    }

    /// Every access token issued so far stops working (401); refresh tokens still work.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    /// The person withdraws consent: every refresh token issued so far is refused with
    /// `invalid_grant` (issued access tokens keep working until they expire, as with both providers).
    pub fn revoke_grants(&self) {
        lock(&self.shared.auth).refresh.clear();
    }

    /// Every delta / sync token of the mailbox is answered with 410 from now on.
    pub fn invalidate_sync_state(&self, user: Option<&str>) -> Result<(), EmulatorError> {
        let m = self.mailbox_of(user)?;
        if let Some(mb) = self.shared.write().mailboxes.get_mut(m) {
            mb.epoch += 1;
        }
        Ok(())
    }

    /// Purges tombstones; tokens issued before are answered with 410.
    pub fn compact(&self, user: Option<&str>) -> Result<(), EmulatorError> {
        let m = self.mailbox_of(user)?;
        self.shared.write().compact(m);
        Ok(())
    }

    /// Sends a Graph lifecycle event (`reauthorizationRequired`, `missed`, `subscriptionRemoved`); returns the
    /// receiver's status.
    pub async fn lifecycle(
        &self,
        subscription_id: &str,
        event: &str,
    ) -> Result<u16, EmulatorError> {
        crate::notify::lifecycle(&self.shared, subscription_id, event)
            .await
            .map_err(EmulatorError::Control)
    }

    /// Ids of the active Graph subscriptions / Google channels.
    pub fn subscriptions(&self) -> Vec<String> {
        let registry = lock(&self.shared.subscriptions);
        registry
            .subscriptions
            .keys()
            .chain(registry.channels.keys())
            .cloned()
            .collect()
    }

    /// The unexpired Graph subscriptions / Google channels with their expiry, soonest first.
    pub fn live_watches(&self) -> Vec<(String, jiff::Timestamp)> {
        let now = jiff::Timestamp::now();
        let registry = lock(&self.shared.subscriptions);
        let mut out: Vec<(String, jiff::Timestamp)> = registry
            .subscriptions
            .values()
            .map(|s| (s.id.clone(), s.expiration))
            .chain(registry.channels.values().filter_map(|c| {
                jiff::Timestamp::from_millisecond(c.expiration)
                    .ok()
                    .map(|t| (c.id.clone(), t))
            }))
            .filter(|(_, t)| *t > now)
            .collect();
        out.sort_by_key(|(_, t)| *t);
        out
    }

    pub fn reset_throttling(&self) {
        self.shared.reset_budgets();
    }
}

fn counters(app: &Shared) -> Counters {
    Counters {
        requests: lock(&app.counters).clone(),
        notifications: lock(&app.subscriptions).delivered.clone(),
    }
}

async fn call(
    app: &Arc<Shared>,
    mailbox: usize,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let bytes = body
        .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()))
        .unwrap_or_default();
    crate::server::dispatch(app, mailbox, Req::new(method, path, headers, bytes)).await
}

fn reply_json(reply: Reply) -> Result<Value, EmulatorError> {
    let body = match reply.body {
        ReplyBody::Json(v) => v,
        ReplyBody::Text(t) => Value::String(t),
        ReplyBody::Empty => Value::Null,
    };
    if reply.status.is_success() {
        Ok(body)
    } else {
        Err(EmulatorError::Control(format!("{}: {body}", reply.status)))
    }
}

fn calendar_id(
    app: &Shared,
    mailbox: usize,
    calendar: Option<&str>,
) -> Result<String, EmulatorError> {
    let store = app.read();
    let mb = store
        .mailboxes
        .get(mailbox)
        .ok_or_else(|| EmulatorError::Control("no such mailbox".into()))?;
    match calendar {
        Some(c) => mb
            .calendar(c)
            .map(|c| c.id.clone())
            .ok_or_else(|| EmulatorError::Control(format!("no calendar {c}"))),
        None => mb
            .default_calendar_id()
            .ok_or_else(|| EmulatorError::Control("mailbox has no calendar".into())),
    }
}

fn events_path(flavor: Flavor, calendar: &str) -> String {
    match flavor {
        Flavor::Microsoft => format!("/v1.0/me/calendars/{calendar}/events"),
        Flavor::Google => format!("/calendar/v3/calendars/{calendar}/events"),
    }
}

fn event_path(flavor: Flavor, calendar: &str, id: &str) -> String {
    match flavor {
        Flavor::Microsoft => format!("/v1.0/me/events/{id}"),
        Flavor::Google => format!("/calendar/v3/calendars/{calendar}/events/{id}"),
    }
}

fn mailbox_for(app: &Shared, user: Option<&str>) -> Result<usize, EmulatorError> {
    match user {
        None => Ok(0),
        Some(u) => app
            .read()
            .mailbox_index(u)
            .ok_or_else(|| EmulatorError::Control(format!("no mailbox {u}"))),
    }
}

pub(crate) async fn act(app: &Arc<Shared>, action: Action) -> Result<Value, EmulatorError> {
    let flavor = app.flavor;
    match action {
        Action::Create {
            user,
            calendar,
            event,
        } => {
            let m = mailbox_for(app, user.as_deref())?;
            let cal = calendar_id(app, m, calendar.as_deref())?;
            reply_json(
                call(
                    app,
                    m,
                    Method::POST,
                    &events_path(flavor, &cal),
                    Some(&event),
                )
                .await,
            )
        }
        Action::Edit {
            user,
            calendar,
            event_id,
            changes,
        } => {
            let m = mailbox_for(app, user.as_deref())?;
            let cal = calendar_id(app, m, calendar.as_deref())?;
            reply_json(
                call(
                    app,
                    m,
                    Method::PATCH,
                    &event_path(flavor, &cal, &event_id),
                    Some(&changes),
                )
                .await,
            )
        }
        Action::Move {
            user,
            calendar,
            event_id,
            minutes,
        } => {
            let m = mailbox_for(app, user.as_deref())?;
            let cal = calendar_id(app, m, calendar.as_deref())?;
            let current = reply_json(
                call(
                    app,
                    m,
                    Method::GET,
                    &event_path(flavor, &cal, &event_id),
                    None,
                )
                .await,
            )?;
            let shift = |v: &Value| -> Option<Value> {
                match flavor {
                    Flavor::Microsoft => {
                        let dt = v.get("dateTime")?.as_str()?.parse::<DateTime>().ok()?;
                        let moved = dt.checked_add(minutes.minutes()).ok()?;
                        Some(
                            json!({"dateTime": civil_s(moved), "timeZone": v.get("timeZone")?.clone()}),
                        )
                    }
                    Flavor::Google => {
                        if let Some(d) = v.get("date").and_then(Value::as_str) {
                            let date = d
                                .parse::<Date>()
                                .ok()?
                                .checked_add((minutes / 1440).days())
                                .ok()?;
                            return Some(json!({"date": date.to_string()}));
                        }
                        let ts = v.get("dateTime")?.as_str()?.parse::<Timestamp>().ok()?;
                        let moved = ts.checked_add(SignedDuration::from_mins(minutes)).ok()?;
                        let mut out = json!({"dateTime": moved.to_string()});
                        if let Some(z) = v.get("timeZone") {
                            out["timeZone"] = z.clone();
                        }
                        Some(out)
                    }
                }
            };
            let (Some(start), Some(end)) = (
                current.get("start").and_then(shift),
                current.get("end").and_then(shift),
            ) else {
                return Err(EmulatorError::Control(
                    "event has no movable start/end".into(),
                ));
            };
            let changes = json!({"start": start, "end": end});
            reply_json(
                call(
                    app,
                    m,
                    Method::PATCH,
                    &event_path(flavor, &cal, &event_id),
                    Some(&changes),
                )
                .await,
            )
        }
        Action::Delete {
            user,
            calendar,
            event_id,
        } => {
            let m = mailbox_for(app, user.as_deref())?;
            let cal = calendar_id(app, m, calendar.as_deref())?;
            reply_json(
                call(
                    app,
                    m,
                    Method::DELETE,
                    &event_path(flavor, &cal, &event_id),
                    None,
                )
                .await,
            )
        }
        Action::Invite {
            user,
            calendar,
            event_id,
            organizer,
        } => {
            let m = mailbox_for(app, user.as_deref())?;
            let cal = calendar_id(app, m, calendar.as_deref())?;
            invite(app, m, &cal, &event_id, &organizer)?;
            crate::notify::flush(app);
            Ok(Value::Null)
        }
        Action::Respond {
            user,
            calendar,
            event_id,
            response,
        } => {
            let m = mailbox_for(app, user.as_deref())?;
            let cal = calendar_id(app, m, calendar.as_deref())?;
            match flavor {
                Flavor::Microsoft => {
                    let verb = match response.as_str() {
                        "accepted" | "accept" => "accept",
                        "declined" | "decline" => "decline",
                        "tentative" | "tentativelyAccepted" | "tentativelyAccept" => {
                            "tentativelyAccept"
                        }
                        other => {
                            return Err(EmulatorError::Control(format!(
                                "unknown response {other}"
                            )));
                        }
                    };
                    let path = format!("/v1.0/me/events/{event_id}/{verb}");
                    reply_json(
                        call(
                            app,
                            m,
                            Method::POST,
                            &path,
                            Some(&json!({"comment": "", "sendResponse": true})),
                        )
                        .await,
                    )
                }
                Flavor::Google => {
                    let status = match response.as_str() {
                        "accepted" | "accept" => "accepted",
                        "declined" | "decline" => "declined",
                        "tentative" | "tentativelyAccept" => "tentative",
                        other => {
                            return Err(EmulatorError::Control(format!(
                                "unknown response {other}"
                            )));
                        }
                    };
                    let current = reply_json(
                        call(
                            app,
                            m,
                            Method::GET,
                            &event_path(flavor, &cal, &event_id),
                            None,
                        )
                        .await,
                    )?;
                    let mut attendees = current
                        .get("attendees")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for a in &mut attendees {
                        if a.get("self").and_then(Value::as_bool) == Some(true) {
                            a["responseStatus"] = json!(status);
                        }
                    }
                    reply_json(
                        call(
                            app,
                            m,
                            Method::PATCH,
                            &event_path(flavor, &cal, &event_id),
                            Some(&json!({"attendees": attendees})),
                        )
                        .await,
                    )
                }
            }
        }
    }
}

/// Turns an event into an invitation from `organizer` (the mailbox owner becomes an attendee who has not
/// answered yet).
fn invite(
    app: &Arc<Shared>,
    mailbox: usize,
    calendar: &str,
    event_id: &str,
    organizer: &str,
) -> Result<(), EmulatorError> {
    let mut store = app.write();
    let mb = store
        .mailboxes
        .get(mailbox)
        .ok_or_else(|| EmulatorError::Control("no such mailbox".into()))?;
    let (me, my_name) = (mb.address.clone(), mb.name.clone());
    let mut ev = mb
        .calendar(calendar)
        .and_then(|c| c.events.get(event_id))
        .filter(|e| !e.deleted)
        .cloned()
        .ok_or_else(|| EmulatorError::Control(format!("no event {event_id}")))?;
    let organizer_name = PEOPLE
        .iter()
        .find(|(_, a)| *a == organizer)
        .map(|(n, _)| *n)
        .unwrap_or(organizer);
    match app.flavor {
        Flavor::Microsoft => {
            ev.body.insert("isOrganizer".into(), json!(false));
            ev.body.insert(
                "organizer".into(),
                json!({"emailAddress": {"name": organizer_name, "address": organizer}}),
            );
            ev.body.insert(
                "responseStatus".into(),
                json!({"response": "notResponded", "time": "0001-01-01T00:00:00Z"}),
            );
            let mut attendees = ev
                .body
                .get("attendees")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !attendees.iter().any(|a| {
                a.pointer("/emailAddress/address").and_then(Value::as_str) == Some(me.as_str())
            }) {
                attendees.push(json!({"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}, "emailAddress": {"name": my_name, "address": me}}));
            }
            ev.body.insert("attendees".into(), Value::Array(attendees));
        }
        Flavor::Google => {
            ev.body.insert(
                "organizer".into(),
                json!({"email": organizer, "displayName": organizer_name}),
            );
            let mut attendees = ev
                .body
                .get("attendees")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            attendees.retain(|a| a.get("email").and_then(Value::as_str) != Some(me.as_str()));
            attendees.push(json!({"email": me, "displayName": my_name, "self": true, "responseStatus": "needsAction"}));
            attendees.push(json!({"email": organizer, "displayName": organizer_name, "organizer": true, "responseStatus": "accepted"}));
            ev.body.insert("attendees".into(), Value::Array(attendees));
        }
    }
    ev.modified = Timestamp::now();
    store
        .put(mailbox, calendar, ev, ChangeType::Updated)
        .ok_or_else(|| EmulatorError::Control("no such calendar".into()))
}

pub(crate) async fn seed(app: &Arc<Shared>, spec: &SeedSpec) -> Result<usize, EmulatorError> {
    let flavor = app.flavor;
    let mailbox = mailbox_for(app, spec.user.as_deref())?;
    let anchor = spec
        .anchor
        .parse::<Date>()
        .map_err(|e| EmulatorError::Control(format!("bad anchor date: {e}")))?;
    let calendars = {
        let mut store = app.write();
        store.id_seed = spec.seed;
        let existing = store
            .mailboxes
            .get(mailbox)
            .map(|m| m.calendars.len())
            .unwrap_or(0);
        for i in existing..spec.calendars.max(1) {
            add_calendar(
                &mut store,
                flavor,
                mailbox,
                Some(&format!("Calendar {}", i + 1)),
            );
        }
        store
            .mailboxes
            .get(mailbox)
            .map(|m| {
                m.calendars
                    .iter()
                    .take(spec.calendars.max(1))
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut created = 0;
    for cal in &calendars {
        for i in 0..spec.events_per_calendar {
            let g = generate_one(&mut rng, anchor, spec.spread_days, i);
            let body = match flavor {
                Flavor::Microsoft => graph_body(&g),
                Flavor::Google => google_body(&g),
            };
            let reply = call_quiet(
                app,
                mailbox,
                Method::POST,
                &events_path(flavor, cal),
                Some(&body),
            )
            .await;
            let Ok(made) = reply_json(reply) else {
                continue;
            };
            created += 1;
            let Some(id) = made.get("id").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if let Some(k) = g.exception_at
                && let Some(original) = kth_start(&g, k)
            {
                let instance = instance_id(&id, original, false);
                let moved_start = original
                    .checked_add(SignedDuration::from_hours(1))
                    .unwrap_or(original);
                let moved_end = moved_start
                    .checked_add(SignedDuration::from_mins(g.minutes))
                    .unwrap_or(moved_start);
                let changes = match flavor {
                    Flavor::Microsoft => json!({
                        "subject": format!("{} (moved)", g.subject),
                        "start": {"dateTime": crate::graph::format_civil(moved_start.to_zoned(TimeZone::UTC).datetime()), "timeZone": "UTC"},
                        "end": {"dateTime": crate::graph::format_civil(moved_end.to_zoned(TimeZone::UTC).datetime()), "timeZone": "UTC"},
                    }),
                    Flavor::Google => json!({
                        "summary": format!("{} (moved)", g.subject),
                        "start": {"dateTime": moved_start.to_string(), "timeZone": g.zone},
                        "end": {"dateTime": moved_end.to_string(), "timeZone": g.zone},
                    }),
                };
                let _ = call_quiet(
                    app,
                    mailbox,
                    Method::PATCH,
                    &event_path(flavor, cal, &instance),
                    Some(&changes),
                )
                .await;
            }
            if let Some(k) = g.cancelled_at
                && let Some(original) = kth_start(&g, k)
            {
                let instance = instance_id(&id, original, false);
                let _ = call_quiet(
                    app,
                    mailbox,
                    Method::DELETE,
                    &event_path(flavor, cal, &instance),
                    None,
                )
                .await;
            }
            if let Some(organizer) = g.invitation {
                let _ = invite(app, mailbox, cal, &id, organizer);
            }
        }
    }
    app.write().pending.clear();
    Ok(created)
}

/// Dispatches without notifying anybody (seeding is not something a person did).
async fn call_quiet(
    app: &Arc<Shared>,
    mailbox: usize,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let bytes = body
        .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()))
        .unwrap_or_default();
    let req = Req::new(method, path, headers, bytes);
    let reply = match app.flavor {
        Flavor::Microsoft => crate::graph::dispatch(app, mailbox, req).await,
        Flavor::Google => crate::google::dispatch(app, mailbox, req).await,
    };
    app.write().pending.clear();
    reply
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct UserArg {
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LifecycleArg {
    #[serde(rename = "subscriptionId")]
    subscription_id: String,
    event: String,
}

pub(crate) async fn http_entry(
    State(app): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches("/_control/").to_string();
    let json_body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad_control(format!("invalid JSON: {e}")).into_response(),
        }
    };
    let user_arg: UserArg = serde_json::from_value(json_body.clone()).unwrap_or_default();
    let user = user_arg.user.as_deref();
    let mailbox = match user {
        None => Some(0),
        Some(u) => app.read().mailbox_index(u),
    };
    let Some(mailbox) = mailbox else {
        return bad_control("unknown user").into_response();
    };
    let ok = |v: Value| Reply::json(StatusCode::OK, v).into_response();
    match (method, path.as_str()) {
        (Method::GET, "counters") => ok(serde_json::to_value(counters(&app)).unwrap_or_default()),
        (Method::DELETE, "counters") => {
            lock(&app.counters).clear();
            lock(&app.subscriptions).delivered.clear();
            ok(json!({}))
        }
        (Method::GET, "faults") => {
            ok(serde_json::to_value(lock(&app.faults).clone()).unwrap_or_default())
        }
        (Method::POST, "faults") => match serde_json::from_value::<FaultRule>(json_body) {
            Ok(rule) => match rule.check() {
                Ok(()) => {
                    lock(&app.faults).push(rule);
                    ok(json!({}))
                }
                Err(e) => bad_control(format!("invalid fault rule: {e}")).into_response(),
            },
            Err(e) => bad_control(format!("invalid fault rule: {e}")).into_response(),
        },
        (Method::DELETE, "faults") => {
            lock(&app.faults).clear();
            ok(json!({}))
        }
        (Method::POST, "seed") => match serde_json::from_value::<SeedSpec>(json_body) {
            Ok(spec) => match seed(&app, &spec).await {
                Ok(n) => ok(json!({"created": n})),
                Err(e) => bad_control(e.to_string()).into_response(),
            },
            Err(e) => bad_control(format!("invalid seed spec: {e}")).into_response(),
        },
        (Method::POST, "act") => match serde_json::from_value::<Action>(json_body) {
            Ok(action) => match act(&app, action).await {
                Ok(v) => ok(json!({"result": v})),
                Err(e) => bad_control(e.to_string()).into_response(),
            },
            Err(e) => bad_control(format!("invalid action: {e}")).into_response(),
        },
        (Method::POST, "token") => {
            ok(json!({"access_token": app.mint_token(mailbox), "token_type": "Bearer"}))
        }
        (Method::POST, "expire-tokens") => {
            app.expire_tokens();
            ok(json!({}))
        }
        (Method::POST, "invalidate-sync") => {
            if let Some(mb) = app.write().mailboxes.get_mut(mailbox) {
                mb.epoch += 1;
            }
            ok(json!({}))
        }
        (Method::POST, "compact") => {
            app.write().compact(mailbox);
            ok(json!({}))
        }
        (Method::POST, "reset-throttle") => {
            app.reset_budgets();
            ok(json!({}))
        }
        (Method::POST, "lifecycle") => match serde_json::from_value::<LifecycleArg>(json_body) {
            Ok(arg) => match crate::notify::lifecycle(&app, &arg.subscription_id, &arg.event).await
            {
                Ok(status) => ok(json!({"receiverStatus": status})),
                Err(e) => bad_control(e).into_response(),
            },
            Err(e) => bad_control(format!("invalid lifecycle request: {e}")).into_response(),
        },
        (Method::GET, "state") => {
            let store = app.read();
            let mailboxes: Vec<Value> = store
                .mailboxes
                .iter()
                .map(|mb| json!({
                    "userId": mb.user_id,
                    "address": mb.address,
                    "epoch": mb.epoch,
                    "calendars": mb.calendars.iter().map(|c| json!({"id": c.id, "liveEvents": c.live_count(), "logEntries": c.log.len()})).collect::<Vec<_>>(),
                }))
                .collect();
            let registry = lock(&app.subscriptions);
            ok(
                json!({"flavor": app.flavor, "sequence": store.seq, "mailboxes": mailboxes,
                      "subscriptions": registry.subscriptions.len(), "channels": registry.channels.len()}),
            )
        }
        _ => Reply::json(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown control endpoint"}),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_mixed() {
        let anchor = Date::constant(2026, 1, 5);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..400)
                .map(|i| generate_one(&mut rng, anchor, 180, i))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        let b = run(7);
        assert_eq!(
            a.iter()
                .map(|g| (g.subject.clone(), g.start))
                .collect::<Vec<_>>(),
            b.iter()
                .map(|g| (g.subject.clone(), g.start))
                .collect::<Vec<_>>()
        );
        assert!(a.iter().any(|g| g.recurrence.is_some()));
        assert!(a.iter().any(|g| g.exception_at.is_some()));
        assert!(a.iter().any(|g| g.all_day_days.is_some()));
        assert!(a.iter().any(|g| !g.attendees.is_empty()));
        assert!(a.iter().any(|g| g.description.len() > 2000));
        let zones: std::collections::BTreeSet<_> = a.iter().map(|g| g.zone).collect();
        assert!(zones.len() >= 5);
    }
}
