//! The prelude of the Graph and Google connector stories (`graph_story.rs`, `google_story.rs`): an
//! HTTP client with quick retries for loopback, the stories' sync window, and the emulator acting
//! as the person who uses the provider's own app. Kept apart from `mod.rs`, which the CalDAV tests
//! of other crates include without the emulators.
#![allow(dead_code)]

use std::time::Duration;

use calbridge_emulators::{Action, Emulator};
use calbridge_providers::http::{AddressPolicy, HttpClient, HttpConfig, RetryPolicy};
use calbridge_providers::{CalendarId, CalendarProvider, ChangeSet, KnownVersions, Window};
use serde_json::Value;

pub fn client() -> HttpClient {
    HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap()
}

pub fn window() -> Window {
    Window::parse(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2026-12-31T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

/// The versions a caller holds after applying `set`.
pub fn known_of(set: &ChangeSet) -> KnownVersions {
    set.upserts
        .iter()
        .map(|i| (i.id.clone(), i.etag.clone()))
        .collect()
}

/// The account's first calendar (the default one).
pub async fn first_calendar(p: &dyn CalendarProvider) -> CalendarId {
    p.list_calendars().await.unwrap().remove(0).id
}

/// Every request the emulator answered since its counters were last reset.
pub fn total_requests(emu: &Emulator) -> u64 {
    emu.counters()
        .requests
        .values()
        .flat_map(|m| m.values())
        .sum()
}

/// Creates an event as the person would (in the default calendar when `calendar` is `None`).
pub async fn create(emu: &Emulator, calendar: Option<&str>, event: Value) -> String {
    let created = emu
        .act(Action::Create {
            user: None,
            calendar: calendar.map(str::to_owned),
            event,
        })
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_owned()
}

pub async fn edit(emu: &Emulator, id: &str, changes: Value) {
    emu.act(Action::Edit {
        user: None,
        calendar: None,
        event_id: id.to_owned(),
        changes,
    })
    .await
    .unwrap();
}

pub async fn delete(emu: &Emulator, id: &str) {
    emu.act(Action::Delete {
        user: None,
        calendar: None,
        event_id: id.to_owned(),
    })
    .await
    .unwrap();
}

/// The instance ids the emulator lists at `path` (a series' `/instances`, below the emulator's base
/// URL): Graph answers them in `value`, Google in `items`.
pub async fn instance_ids(emu: &Emulator, path: &str) -> Vec<String> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}{path}", emu.base_url()))
        .bearer_auth(emu.token(None).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body.get("value")
        .or_else(|| body.get("items"))
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}
