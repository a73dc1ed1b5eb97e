//! Push channels (Graph subscriptions, Google watch channels) against the emulators, with a real
//! receiver on loopback; cheap change probes (CalDAV sync-token/ctag, ICS conditional GET) against
//! real Radicale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use calbridge_emulators::{Action, Emulator, EmulatorConfig, Flavor};
use calbridge_providers::google::{GoogleConfig, GoogleProvider};
use calbridge_providers::graph::{GraphConfig, GraphProvider};
use calbridge_providers::http::Secret;
use calbridge_providers::http::{Traffic, metered};
use calbridge_providers::ics::IcsProvider;
use calbridge_providers::oauth::{Access, StaticToken};
use calbridge_providers::{
    CalendarId, CalendarProvider, Cursor, KnownVersions, Probe, ProviderError, WatchRequest, Window,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use support::{PASSWORD, Peer, USER, budget, event, http_client, password};

/// A webhook receiver: answers Graph's validation handshake, records everything else.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

async fn hook(
    State(seen): State<Received>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if let Some(token) = query.get("validationToken") {
        return ([("content-type", "text/plain")], token.clone()).into_response();
    }
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.0.lock().unwrap().push((headers, value));
    axum::http::StatusCode::ACCEPTED.into_response()
}

async fn receiver() -> (url::Url, Received) {
    let seen = Received::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        url::Url::parse(&format!("http://{addr}/hook")).unwrap(),
        seen,
    )
}

async fn wait_for(seen: &Received, what: impl Fn(&[(HeaderMap, Value)]) -> bool) {
    for _ in 0..100 {
        if what(&seen.0.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the receiver never saw it: {:?}", seen.0.lock().unwrap());
}

fn request(id: &str, url: &url::Url, minutes: i64) -> WatchRequest {
    WatchRequest {
        id: id.into(),
        secret: format!("secret-{id}"),
        notification_url: url.clone(),
        lifecycle_url: Some(url.clone()),
        expires_at: Timestamp::now() + SignedDuration::from_mins(minutes),
    }
}

fn single(subject: &str) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": "2026-03-02T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-03-02T10:00:00", "timeZone": "UTC"},
    })
}

#[tokio::test]
async fn graph_subscription_is_created_notifies_renews_and_is_deleted() {
    let emu = Emulator::start(Flavor::Microsoft, EmulatorConfig::default())
        .await
        .unwrap();
    let base = url::Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
    let provider = GraphProvider::new(
        &http_client(),
        GraphConfig::new(base, Access::ReadWrite),
        Arc::new(StaticToken(Secret::new(emu.token(None).unwrap()))),
    );
    let calendar = provider.list_calendars().await.unwrap().remove(0).id;
    let (url, seen) = receiver().await;

    let channel = provider
        .watch(&calendar, &request("a", &url, 60))
        .await
        .unwrap();
    let live = emu.live_watches();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, channel.id);
    let asked = Timestamp::now() + SignedDuration::from_mins(60);
    assert!((asked - channel.expires_at).get_seconds().abs() < 10);

    // A change in the calendar reaches the receiver with our clientState and the subscription id.
    emu.act(Action::Create {
        user: None,
        calendar: Some(calendar.as_str().to_owned()),
        event: single("Standup"),
    })
    .await
    .unwrap();
    wait_for(&seen, |s| {
        s.iter().any(|(_, v)| {
            v["value"][0]["subscriptionId"] == channel.id.as_str()
                && v["value"][0]["clientState"] == "secret-a"
                && v["value"][0]["changeType"] == "created"
        })
    })
    .await;

    // Renewal is a PATCH of the same subscription to the new expiry.
    let renewed = provider
        .renew_watch(&calendar, &channel, &request("a", &url, 120))
        .await
        .unwrap();
    assert_eq!(renewed.id, channel.id);
    assert!(renewed.expires_at > channel.expires_at + SignedDuration::from_mins(50));
    assert_eq!(emu.live_watches()[0].1, renewed.expires_at);
    assert_eq!(emu.counters().for_endpoint("PATCH /v1.0/subscriptions"), 1);

    // More than Graph's maximum lifetime is refused, not silently shortened.
    let too_long = provider
        .renew_watch(&calendar, &channel, &request("a", &url, 5000))
        .await;
    assert!(too_long.is_err(), "{too_long:?}");

    provider.stop_watch(&renewed).await.unwrap();
    assert!(emu.live_watches().is_empty());
    // Stopping again is fine; renewing a deleted subscription says NotFound (→ recreate).
    provider.stop_watch(&renewed).await.unwrap();
    let gone = provider
        .renew_watch(&calendar, &renewed, &request("a", &url, 60))
        .await;
    assert!(
        matches!(gone, Err(ProviderError::NotFound { .. })),
        "{gone:?}"
    );
}

#[tokio::test]
async fn graph_subscription_fails_when_the_receiver_does_not_answer_the_handshake() {
    let emu = Emulator::start(Flavor::Microsoft, EmulatorConfig::default())
        .await
        .unwrap();
    let base = url::Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
    let provider = GraphProvider::new(
        &http_client(),
        GraphConfig::new(base, Access::ReadWrite),
        Arc::new(StaticToken(Secret::new(emu.token(None).unwrap()))),
    );
    let calendar = provider.list_calendars().await.unwrap().remove(0).id;
    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = url::Url::parse(&format!("http://{closed}/hook")).unwrap();
    let result = provider.watch(&calendar, &request("x", &url, 60)).await;
    assert!(result.is_err(), "{result:?}");
    assert!(emu.live_watches().is_empty());
}

#[tokio::test]
async fn google_channel_is_opened_notifies_renews_by_replacement_and_stops() {
    let emu = Emulator::start(Flavor::Google, EmulatorConfig::default())
        .await
        .unwrap();
    let base = url::Url::parse(&format!("{}/calendar/v3/", emu.base_url())).unwrap();
    let provider = GoogleProvider::new(
        &http_client(),
        GoogleConfig::new(base, Access::ReadWrite),
        Arc::new(StaticToken(Secret::new(emu.token(None).unwrap()))),
    );
    let calendar = provider.list_calendars().await.unwrap().remove(0).id;
    let (url, seen) = receiver().await;

    let channel = provider
        .watch(&calendar, &request("chan-1", &url, 60))
        .await
        .unwrap();
    assert_eq!(channel.id, "chan-1");
    let resource = channel.resource_id.clone().unwrap();
    let header = |h: &HeaderMap, n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
    // The channel opens with a `sync` message carrying our token.
    wait_for(&seen, |s| {
        s.iter().any(|(h, _)| {
            header(h, "x-goog-resource-state") == "sync"
                && header(h, "x-goog-channel-token") == "secret-chan-1"
                && header(h, "x-goog-resource-id") == resource
        })
    })
    .await;
    emu.act(Action::Create {
        user: None,
        calendar: Some(calendar.as_str().to_owned()),
        event: json!({"summary": "Review",
            "start": {"dateTime": "2026-03-02T09:00:00Z"}, "end": {"dateTime": "2026-03-02T10:00:00Z"}}),
    })
    .await
    .unwrap();
    wait_for(&seen, |s| {
        s.iter().any(|(h, _)| {
            header(h, "x-goog-resource-state") == "exists"
                && header(h, "x-goog-channel-id") == "chan-1"
        })
    })
    .await;

    // Renewal opens a new channel and stops the old one.
    let renewed = provider
        .renew_watch(&calendar, &channel, &request("chan-2", &url, 120))
        .await
        .unwrap();
    assert_eq!(renewed.id, "chan-2");
    let live: Vec<String> = emu.live_watches().into_iter().map(|(id, _)| id).collect();
    assert_eq!(live, vec!["chan-2".to_owned()]);

    provider.stop_watch(&renewed).await.unwrap();
    assert!(emu.live_watches().is_empty());
    provider.stop_watch(&renewed).await.unwrap();
}

fn window() -> Window {
    Window::parse(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

/// The scheduler's probe on Radicale asks its collection date, never the token (which costs what a
/// listing costs). A cursor that cannot gate (its date had not settled, or the last listing found
/// changes and did not ask the date) answers "unknown", so a sync lists and re-arms the gate: a quiet
/// link does not keep paying for the token on every poll after some activity.
#[tokio::test]
async fn caldav_probe_asks_radicale_its_date_and_hands_an_unsettled_cursor_to_a_sync() {
    let Some(peer) = Peer::radicale() else { return };
    let raw = peer.raw();
    raw.mkcalendar(&peer.calendar_url("probe"), "probe").await;
    let provider = peer.provider();
    let calendar = CalendarId::parse(peer.calendar_path("probe")).unwrap();
    let probe = |cursor: Option<Cursor>| {
        let provider = &provider;
        let calendar = &calendar;
        async move {
            let traffic = Traffic::new();
            let answer = metered(traffic.clone(), provider.probe(calendar, cursor.as_ref()))
                .await
                .unwrap();
            (answer, traffic.requests())
        }
    };
    let list = |cursor: Option<Cursor>| {
        let provider = &provider;
        let calendar = &calendar;
        async move {
            provider
                .changes(calendar, cursor.as_ref(), &window(), &KnownVersions::new())
                .await
                .unwrap()
        }
    };
    assert_eq!(probe(None).await, (Probe::Changed, 0));
    // The first listing did not ask the date (the server was not known yet): no request, a sync
    // lists and takes the date.
    let first = list(None).await;
    assert_eq!(probe(first.cursor.clone()).await, (Probe::Unknown, 0));
    // The calendar was made in the second the next listing reads its date: not settled.
    let unsettled = list(first.cursor.clone()).await;
    assert_eq!(probe(unsettled.cursor.clone()).await, (Probe::Unknown, 1));
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let armed = list(unsettled.cursor.clone()).await;
    assert_eq!(probe(armed.cursor.clone()).await, (Probe::Unchanged, 1));

    let put = raw
        .put(
            &format!("{}p1.ics", peer.calendar_url("probe")),
            &event("p1@t", "Planning", "20260310T100000Z"),
        )
        .await;
    assert!(put.status().is_success());
    assert_eq!(probe(armed.cursor.clone()).await, (Probe::Changed, 1));
    let busy = list(armed.cursor.clone()).await;
    assert_eq!(busy.upserts.len(), 1);
    // Busy: no request at all, the sync's listing is the question.
    assert_eq!(probe(busy.cursor.clone()).await, (Probe::Unknown, 0));
    let quiet = list(busy.cursor.clone()).await;
    assert!(quiet.upserts.is_empty() && quiet.deletions.is_empty());
    // That listing did not ask the date (the collection was busy): the next one does.
    assert_eq!(probe(quiet.cursor.clone()).await, (Probe::Unknown, 0));
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let rearmed = list(quiet.cursor.clone()).await;
    assert_eq!(probe(rearmed.cursor.clone()).await, (Probe::Unchanged, 1));
}

/// Radicale's collection date moves with every member, so once it has settled a no-op read is one
/// `PROPFIND` of that date and no listing; a change made through the server, even within the second
/// of the last listing, is still found.
#[tokio::test]
async fn radicale_no_op_reads_only_the_collection_date_once_it_settled() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let url = radicale
        .work_calendar(&[
            ("g1", "One", "20260310T100000Z"),
            ("g2", "Two", "20260311T100000Z"),
            ("g3", "Three", "20260312T100000Z"),
        ])
        .await;
    let provider = radicale.provider();
    let calendar = CalendarId::parse(format!("/{USER}/work/")).unwrap();
    let read = |cursor: Option<Cursor>| {
        let provider = &provider;
        let calendar = &calendar;
        async move {
            let traffic = Traffic::new();
            let set = metered(
                traffic.clone(),
                provider.changes(calendar, cursor.as_ref(), &window(), &KnownVersions::new()),
            )
            .await
            .unwrap();
            (set, traffic.requests())
        }
    };
    let (first, _) = read(None).await;
    assert_eq!(first.upserts.len(), 3);
    // The first listing did not ask the date (the server was not known yet), so the next read
    // takes it before listing again, and records a date that has settled by then.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (second, _) = read(first.cursor.clone()).await;
    assert!(second.upserts.is_empty() && second.deletions.is_empty());
    let settled = second.cursor.clone().unwrap();

    // A writer going around the server that puts the old file times back is not seen: proof that
    // no listing was sent (Radicale's REPORT hashes every item and would name it).
    let folder = radicale.calendar_folder("work");
    let file = folder.join("g1.ics");
    let file_time = std::fs::metadata(&file).unwrap().modified().unwrap();
    let folder_time = std::fs::metadata(&folder).unwrap().modified().unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, original.replace("SUMMARY:One", "SUMMARY:Sneaky")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(file_time)
        .unwrap();
    std::fs::File::open(&folder)
        .unwrap()
        .set_modified(folder_time)
        .unwrap();
    let (no_op, requests) = read(Some(settled.clone())).await;
    assert_eq!(requests, 1, "one PROPFIND of the collection date");
    assert!(no_op.upserts.is_empty() && no_op.deletions.is_empty());
    assert_eq!(no_op.cursor.as_ref(), Some(&settled));
    assert_eq!(
        provider.probe(&calendar, Some(&settled)).await.unwrap(),
        Probe::Unchanged
    );
    std::fs::write(&file, original).unwrap();

    // Changes through the server move the date: an edit and a deletion are found.
    let raw = radicale.raw();
    assert!(
        raw.put(
            &format!("{url}g1.ics"),
            &event("g1", "One, moved", "20260310T110000Z")
        )
        .await
        .status()
        .is_success()
    );
    assert!(
        raw.request("DELETE", &format!("{url}g2.ics"), &[], None)
            .await
            .status()
            .is_success()
    );
    assert_eq!(
        provider.probe(&calendar, Some(&settled)).await.unwrap(),
        Probe::Changed
    );
    let (changed, _) = read(Some(settled)).await;
    let names = |set: &calbridge_providers::ChangeSet| {
        let mut ids: Vec<String> = set
            .upserts
            .iter()
            .map(|i| i.id.as_str().rsplit('/').next().unwrap().to_owned())
            .chain(
                set.deletions
                    .iter()
                    .map(|id| format!("-{}", id.as_str().rsplit('/').next().unwrap())),
            )
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(names(&changed), ["-g2.ics", "g1.ics"]);

    // A change in the same second as that listing cannot move the date past what the cursor
    // records; the date had not settled, so the next read lists and finds it.
    assert!(
        raw.put(
            &format!("{url}g3.ics"),
            &event("g3", "Three, moved", "20260312T110000Z")
        )
        .await
        .status()
        .is_success()
    );
    let (same_second, requests) = read(changed.cursor.clone()).await;
    assert_eq!(names(&same_second), ["g3.ics"]);
    // The collection was busy (the last read found changes): no date read, only the REPORT, which
    // carries g3's data.
    assert_eq!(requests, 1);

    // Quiet again: the first listing that finds nothing hands the link back to the gate, the next
    // read takes the date before listing, and once that date has settled a read is the date alone.
    let (quiet, requests) = read(same_second.cursor.clone()).await;
    assert!(quiet.upserts.is_empty() && quiet.deletions.is_empty());
    assert_eq!(requests, 1, "the REPORT alone");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (armed, requests) = read(quiet.cursor.clone()).await;
    assert!(armed.upserts.is_empty() && armed.deletions.is_empty());
    assert_eq!(requests, 2, "the date, then the REPORT");
    let (gated, requests) = read(armed.cursor.clone()).await;
    assert!(gated.upserts.is_empty() && gated.deletions.is_empty());
    assert_eq!(requests, 1, "the date alone");
    assert_eq!(gated.cursor, armed.cursor);
}

#[tokio::test]
async fn ics_probe_compares_validators_even_without_304() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let cal = radicale.calendar_url("feed");
    raw.mkcalendar(&cal, "Feed").await;
    raw.put(
        &format!("{cal}f1.ics"),
        &event("f1@t", "One", "20260310T100000Z"),
    )
    .await;
    let provider =
        IcsProvider::new(&http_client(), &cal, password(USER, PASSWORD), budget()).unwrap();
    let calendar = provider.calendar_id().unwrap();
    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let cursor = first.cursor.unwrap();
    assert_eq!(
        provider.probe(&calendar, Some(&cursor)).await.unwrap(),
        Probe::Unchanged
    );
    raw.put(
        &format!("{cal}f2.ics"),
        &event("f2@t", "Two", "20260311T100000Z"),
    )
    .await;
    assert_eq!(
        provider.probe(&calendar, Some(&cursor)).await.unwrap(),
        Probe::Changed
    );
}
