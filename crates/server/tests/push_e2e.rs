//! Provider push end to end (see `push_rig`): Graph subscription renewal under a fast clock, and an edit
//! made in the Graph emulator reaching a WebSocket client; forged and replayed notifications change
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod push_rig;

use std::time::{Duration, Instant};

use calbridge_emulators::{Action, Flavor};
use calbridge_server::config::HumanDuration;
use common::Backend;
use push_rig::{graph_event, local_summary, next_message, rig, rig_on, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_subscription_lifecycle_under_a_fast_clock() {
    // Seconds instead of days: a 4 s subscription renewed 2 s before it expires.
    let rig = rig(Flavor::Microsoft, |c| {
        c.push.microsoft_lifetime = HumanDuration::from_secs(4);
        c.push.renew_before = HumanDuration::from_secs(2);
        c.push.retry = HumanDuration::from_secs(1);
    })
    .await;
    let connection = rig.connect().await;
    let id = connection["id"].as_str().unwrap().to_owned();
    rig.wait_watches(|live| live.len() == 1).await;
    let (first_id, first_expiry) = rig.emu.live_watches()[0].clone();

    // Past the first expiry, the same subscription is still alive: it was PATCHed in time.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let live = rig.emu.live_watches();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].0, first_id);
    assert!(live[0].1 > first_expiry, "{live:?} vs {first_expiry}");
    let patches = rig.emu.counters().for_endpoint("PATCH /v1.0/subscriptions");
    assert!(
        patches >= 2,
        "{patches} renewals in 5.5 s of a 4 s lifetime"
    );
    let view: Value = rig
        .server
        .get(&rig.server.admin, &format!("/v1/calendar/connections/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["push"]["mode"], "notifications", "{view}");

    // Graph removes the subscription: the server opens a new one.
    assert_eq!(
        rig.emu
            .lifecycle(&first_id, "subscriptionRemoved")
            .await
            .unwrap(),
        202
    );
    rig.wait_watches(|live| live.len() == 1 && live[0].0 != first_id)
        .await;

    // Deleting the connection deletes its subscription at Graph.
    let deleted = rig
        .server
        .client
        .delete(rig.server.url(&format!("/v1/calendar/connections/{id}")))
        .bearer_auth(&rig.server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(rig.emu.live_watches().is_empty());
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_channel_is_replaced_before_expiry_under_a_fast_clock() {
    let rig = rig(Flavor::Google, |c| {
        c.push.google_lifetime = HumanDuration::from_secs(4);
        c.push.renew_before = HumanDuration::from_secs(2);
        c.push.retry = HumanDuration::from_secs(1);
    })
    .await;
    let connection = rig.connect().await;
    let id = connection["id"].as_str().unwrap().to_owned();
    rig.wait_watches(|live| live.len() == 1).await;
    let (first_id, _) = rig.emu.live_watches()[0].clone();
    // Google channels cannot be extended: past the first expiry a new channel is open, the old stopped.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let live = rig.emu.live_watches();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0].0, first_id);
    let counters = rig.emu.counters();
    assert!(counters.for_endpoint("/watch") >= 3, "{counters:?}");
    assert!(counters.for_endpoint("channels/stop") >= 2, "{counters:?}");
    // The server knows the new channel (its messages are accepted) and not the old one.
    let store = &rig.server.store;
    assert!(
        store
            .find_push_channel("google", &live[0].0)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_push_channel("google", &first_id)
            .await
            .unwrap()
            .is_none()
    );
    let deleted = rig
        .server
        .client
        .delete(rig.server.url(&format!("/v1/calendar/connections/{id}")))
        .bearer_auth(&rig.server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(rig.emu.live_watches().is_empty());
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_graph_reaches_a_websocket_client_and_forgeries_change_nothing() {
    graph_edit_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_graph_reaches_a_websocket_client_on_postgres() {
    // Absent PostgreSQL fails under CALBRIDGE_REQUIRE_PEERS=1 (inside postgres_url), else skips.
    if common::postgres_url().is_none() {
        return;
    }
    graph_edit_story(Backend::Postgres).await;
}

async fn graph_edit_story(backend: Backend) {
    let rig = rig_on(backend, Flavor::Microsoft, |_| {}).await;
    let created = rig
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: graph_event("Standup"),
        })
        .await
        .unwrap();
    let remote_id = created["id"].as_str().unwrap().to_owned();
    let connection = rig.connect().await;
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();
    rig.wait_watches(|live| live.len() == 1).await;
    // The first sync imports the event.
    let started = Instant::now();
    while local_summary(&rig.server, &calendar).await != ["Standup"] {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never imported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut socket = stream(&rig.server, &calendar).await;
    // Let the import's own follow-up settle, then drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while next_message(&mut socket, Duration::from_millis(300))
        .await
        .is_some()
    {}

    // The edit in Graph → notification → sync of that link → the stream.
    let edited = Instant::now();
    rig.emu
        .act(Action::Edit {
            user: None,
            calendar: None,
            event_id: remote_id.clone(),
            changes: json!({"subject": "Standup (moved)"}),
        })
        .await
        .unwrap();
    let message = next_message(&mut socket, Duration::from_secs(10))
        .await
        .expect("an event message after the edit");
    eprintln!("edit → WebSocket: {:?}", edited.elapsed());
    assert_eq!(message["type"], "event.updated", "{message}");
    assert_eq!(message["calendar_id"], calendar.as_str());
    assert_eq!(
        local_summary(&rig.server, &calendar).await,
        ["Standup (moved)"]
    );
    let genuine = rig
        .recorder
        .bodies
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the notification went through the pass-through");
    let genuine_json: Value = serde_json::from_slice(&genuine).unwrap();
    assert_eq!(
        genuine_json["value"][0]["resourceData"]["id"],
        remote_id.as_str()
    );

    let hook = rig.server.url("/v1/calendar/notifications/microsoft");
    let http = reqwest::Client::new();
    // A forgery: the real subscription id with a guessed clientState.
    let mut forged = genuine_json.clone();
    forged["value"][0]["clientState"] = json!("guessed");
    let answer = http.post(&hook).json(&forged).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // A replay of the genuine one: accepted (it is genuine), and the sync it causes finds nothing.
    let answer = http
        .post(&hook)
        .header("content-type", "application/json")
        .body(genuine)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let after = next_message(&mut socket, Duration::from_secs(3)).await;
    assert!(
        after.is_none(),
        "forged/replayed notifications changed something: {after:?}"
    );
    assert_eq!(
        local_summary(&rig.server, &calendar).await,
        ["Standup (moved)"]
    );
    // A burst: 20 edits in a row → 20 notifications; they coalesce into the link's one job, so far
    // fewer runs than notifications (without coalescing every notification would be a run).
    let connection_id: calbridge_store::ConnectionId =
        connection["id"].as_str().unwrap().parse().unwrap();
    let tenant = rig.server.store.list_tenants().await.unwrap()[0].id;
    let runs = |store: std::sync::Arc<dyn calbridge_store::Store>| async move {
        store
            .list_sync_runs(tenant, Some(connection_id), 1000)
            .await
            .unwrap()
            .len()
    };
    let before = runs(rig.server.store.clone()).await;
    for n in 0..20 {
        rig.emu
            .act(Action::Edit {
                user: None,
                calendar: None,
                event_id: remote_id.clone(),
                changes: json!({"subject": format!("Burst {n}")}),
            })
            .await
            .unwrap();
    }
    let started = Instant::now();
    while local_summary(&rig.server, &calendar).await != ["Burst 19"] {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the burst never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let burst_runs = runs(rig.server.store.clone()).await - before;
    eprintln!("20 notifications → {burst_runs} sync runs");
    assert!(
        (1..=10).contains(&burst_runs),
        "20 notifications made {burst_runs} runs"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_google_reaches_a_websocket_client_and_duplicates_change_nothing() {
    let rig = rig(Flavor::Google, |_| {}).await;
    let day = push_rig::day(2);
    let created = rig
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: json!({"summary": "Review",
                "start": {"dateTime": format!("{day}T09:00:00Z")},
                "end": {"dateTime": format!("{day}T10:00:00Z")}}),
        })
        .await
        .unwrap();
    let remote_id = created["id"].as_str().unwrap().to_owned();
    let connection = rig.connect().await;
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();
    rig.wait_watches(|live| live.len() == 1).await;
    let started = Instant::now();
    while local_summary(&rig.server, &calendar).await != ["Review"] {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never imported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut socket = stream(&rig.server, &calendar).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while next_message(&mut socket, Duration::from_millis(300))
        .await
        .is_some()
    {}

    let edited = Instant::now();
    rig.emu
        .act(Action::Edit {
            user: None,
            calendar: None,
            event_id: remote_id,
            changes: json!({"summary": "Review (moved)"}),
        })
        .await
        .unwrap();
    let message = next_message(&mut socket, Duration::from_secs(10))
        .await
        .expect("an event message after the edit");
    eprintln!("edit → WebSocket: {:?}", edited.elapsed());
    assert_eq!(message["type"], "event.updated", "{message}");
    assert_eq!(
        local_summary(&rig.server, &calendar).await,
        ["Review (moved)"]
    );

    // The `exists` message that carried the edit, sent again (a Google retry): dropped by its number.
    let genuine = rig
        .recorder
        .goog_headers
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|h| {
            h.iter()
                .any(|(n, v)| n == "x-goog-resource-state" && v == "exists")
        })
        .cloned()
        .expect("an exists message went through the pass-through");
    let hook = rig.server.url("/v1/calendar/notifications/google");
    let http = reqwest::Client::new();
    let mut replay = http.post(&hook);
    for (name, value) in &genuine {
        replay = replay.header(name.as_str(), value.as_str());
    }
    let answer = replay.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let jobs = rig
        .server
        .store
        .lease_next(
            "test-peek",
            &[calbridge_server::scheduler::JOB_KIND],
            Duration::from_secs(1),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(
        jobs.is_none(),
        "a duplicate message enqueued a sync: {jobs:?}"
    );
    // A forged token is refused.
    let mut forged = http.post(&hook);
    for (name, value) in &genuine {
        let value = if name == "x-goog-channel-token" {
            "guessed"
        } else {
            value.as_str()
        };
        let value = if name == "x-goog-message-number" {
            "999999"
        } else {
            value
        };
        forged = forged.header(name.as_str(), value);
    }
    assert_eq!(
        forged.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let after = next_message(&mut socket, Duration::from_secs(2)).await;
    assert!(
        after.is_none(),
        "duplicate/forged messages changed something: {after:?}"
    );
    rig.finish().await;
}
