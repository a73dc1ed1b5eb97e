//! The change stream beyond event writes: conflict detected / resolved, connection status and finished
//! sync runs reach a WebSocket client (real server, real Radicale), a client resuming with `since` gets
//! exactly what it missed, and a `since` older than the retention window (pruned by the server's own
//! periodic task) starts with a `stream.reset` message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use calbridge_server::config::HumanDuration;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::{Backend, TestServer, json_of, lan_config, sync_and_wait, test_config};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer, query: &str) -> Socket {
    let url = format!("ws://{}/v1/calendar/stream{query}", server.addr);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.admin).parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a stream message within 15 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Reads messages until one satisfies `done`; returns all read, in order.
async fn read_until(socket: &mut Socket, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = next_message(socket).await;
        let stop = done(&message);
        seen.push(message);
        if stop {
            return seen;
        }
    }
}

/// Nothing more arrives within `wait`.
async fn quiet(socket: &mut Socket, wait: Duration) -> bool {
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Text(_)))) => return false,
            Ok(_) => {}
        }
    }
}

fn kind(m: &Value) -> &str {
    m["type"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_runs_and_connection_status_reach_the_stream() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let calendar_url = radicale
        .work_calendar(&[("review", "Review", "20261125T090000Z")])
        .await;
    let raw = radicale.raw();
    let item_url = format!("{calendar_url}review.ics");

    let server = TestServer::start_with(Backend::Sqlite, lan_config())
        .await
        .unwrap();
    let mut socket = connect(&server, "").await;

    // A connection refused by the server: created active, then marked needs_reauth → one status message.
    let bad = server
        .admin_post(
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Wrong",
                   "credentials": {"url": radicale.base(), "username": support::USER, "password": "nope"}}),
        )
        .await;
    assert_eq!(bad["status"], "needs_reauth");
    let status = next_message(&mut socket).await;
    assert_eq!(kind(&status), "connection.status", "{status}");
    assert_eq!(status["subject_id"], bad["id"]);
    assert_eq!(status["calendar_id"], bad["calendar_id"]);
    assert_eq!(
        (
            status["data"]["status"].as_str(),
            status["data"]["previous"].as_str()
        ),
        (Some("needs_reauth"), Some("active"))
    );
    let first_seq = status["seq"].as_i64().unwrap();

    let connection = server
        .admin_post(
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Radicale",
                   "credentials": {"url": radicale.base(), "username": support::USER, "password": support::PASSWORD},
                   "sync": {"conflict_resolution": "ask"}}),
        )
        .await;
    assert_eq!(connection["status"], "active", "{connection}");
    let id = connection["id"].as_str().unwrap().to_owned();
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();

    // The first sync imports the event; the stream says so, and that the run finished.
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let seen = read_until(&mut socket, |m| {
        kind(m) == "sync.finished" && m["subject_id"] == run["id"]
    })
    .await;
    assert!(seen.iter().any(|m| kind(m) == "event.created"), "{seen:?}");
    let finished = seen.last().unwrap();
    assert_eq!(finished["data"]["status"], "succeeded");
    assert_eq!(finished["data"]["connection_id"], id.as_str());
    assert_eq!(finished["calendar_id"], calendar.as_str());
    let event_id = seen.iter().find(|m| kind(m) == "event.created").unwrap()["subject_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Both sides edit the same field under `ask`: the next sync records a conflict, and says so.
    let local = server
        .client
        .put(server.url(&format!("/v1/calendar/events/{event_id}")))
        .bearer_auth(&server.admin)
        .json(&json!({"summary": "Local review", "start": "2026-11-25T09:00:00Z", "end": "2026-11-25T10:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert!(local.status().is_success());
    let remote = raw
        .put(
            &item_url,
            &support::event("review", "Remote review", "20261125T090000Z"),
        )
        .await;
    assert!(remote.status().is_success());
    let run = sync_and_wait(&server, &id).await;
    assert_ne!(run["status"], "failed", "{run}");
    let seen = read_until(&mut socket, |m| {
        kind(m) == "sync.finished" && m["subject_id"] == run["id"]
    })
    .await;
    let detected: Vec<&Value> = seen
        .iter()
        .filter(|m| kind(m) == "conflict.detected")
        .collect();
    assert_eq!(detected.len(), 1, "{seen:?}");
    let detected = detected[0];
    assert_eq!(detected["data"]["kind"], "update");
    assert_eq!(detected["data"]["event_uid"], "review");
    assert_eq!(detected["data"]["connection_id"], id.as_str());
    assert_eq!(detected["calendar_id"], calendar.as_str());
    let conflict = detected["subject_id"].as_str().unwrap().to_owned();
    let listed = server
        .admin_get(&format!("/v1/calendar/conflicts/{conflict}"))
        .await;
    assert_eq!(listed["id"], conflict.as_str());

    // Resolving it announces the resolution.
    let resolved = server
        .post_json(
            &server.admin,
            &format!("/v1/calendar/conflicts/{conflict}/resolve"),
            json!({"option": "keep_local"}),
        )
        .await;
    assert!(
        resolved.status().is_success(),
        "{}",
        resolved.text().await.unwrap()
    );
    let seen = read_until(&mut socket, |m| kind(m) == "conflict.resolved").await;
    let message = seen.last().unwrap();
    assert_eq!(message["subject_id"], conflict.as_str());
    assert_eq!(message["data"]["resolution"]["option"], "keep_local");
    assert!(
        message["data"]["resolved_by"]
            .as_str()
            .unwrap()
            .starts_with("key:")
    );
    let last_live = message["seq"].as_i64().unwrap();
    socket.close(None).await.unwrap();

    // A client that saw only the first message resumes with its seq and receives exactly the rest, in
    // order, then nothing more.
    let mut live_seqs = Vec::new();
    let mut replay = connect(&server, &format!("?since={first_seq}")).await;
    loop {
        let message = next_message(&mut replay).await;
        let seq = message["seq"].as_i64().unwrap();
        live_seqs.push(seq);
        if seq == last_live {
            break;
        }
    }
    assert!(live_seqs.windows(2).all(|w| w[0] < w[1]), "{live_seqs:?}");
    assert!(live_seqs[0] > first_seq);
    let stored = server
        .store
        .list_changes(
            calbridge_server::bootstrap::tenant_by_name_or_id(
                server.store.as_ref(),
                calbridge_server::bootstrap::DEFAULT_TENANT,
            )
            .await
            .unwrap()
            .id,
            first_seq,
            None,
            1000,
        )
        .await
        .unwrap();
    let stored_seqs: Vec<i64> = stored
        .iter()
        .map(|c| c.seq)
        .filter(|s| *s <= last_live)
        .collect();
    assert_eq!(live_seqs, stored_seqs, "replay differs from the stream");
    assert!(quiet(&mut replay, Duration::from_millis(500)).await);
}

async fn expired_since_story(backend: Backend) {
    let mut config = test_config();
    config.stream.retention = HumanDuration(jiff::SignedDuration::from_millis(800));
    config.stream.prune_interval = HumanDuration(jiff::SignedDuration::from_millis(200));
    let Some(server) = TestServer::start_with(backend, config).await else {
        return;
    };
    let calendar = server
        .admin_post("/v1/calendar/calendars", json!({"name": "Short memory"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = |summary: &str| json!({"calendar_id": calendar, "summary": summary, "start": "2026-03-10T09:00:00Z"});
    let response = server
        .post_json(&server.admin, "/v1/calendar/events", event("Forgotten"))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let tenant = calbridge_server::bootstrap::tenant_by_name_or_id(
        server.store.as_ref(),
        calbridge_server::bootstrap::DEFAULT_TENANT,
    )
    .await
    .unwrap()
    .id;
    // The server's own periodic task removes the entry once it is older than the retention.
    let mut floor = 0;
    for _ in 0..100 {
        floor = server.store.change_stream_floor(tenant).await.unwrap();
        if floor > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(floor > 0, "the pruning task never ran");
    assert!(
        server
            .store
            .list_changes(tenant, 0, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Resuming from before the floor: a reset first, then live messages after it.
    let mut socket = connect(&server, "?since=0").await;
    let reset = next_message(&mut socket).await;
    assert_eq!(kind(&reset), "stream.reset", "{reset}");
    assert_eq!(reset["data"]["reason"], "since_expired");
    assert_eq!(reset["data"]["since"], 0);
    assert_eq!(reset["data"]["purged_through"], floor);
    let reset_seq = reset["seq"].as_i64().unwrap();
    assert!(reset_seq >= floor);
    let response = server
        .post_json(&server.admin, "/v1/calendar/events", event("Fresh"))
        .await;
    let fresh = json_of(response).await;
    let live = next_message(&mut socket).await;
    assert_eq!(
        (kind(&live), live["subject_id"].clone()),
        ("event.created", fresh["id"].clone())
    );
    assert!(live["seq"].as_i64().unwrap() > reset_seq);
    socket.close(None).await.unwrap();

    // Resuming at the floor (nothing missed) gets no reset: the first message is the next change.
    let mut socket = connect(&server, &format!("?since={}", live["seq"])).await;
    let response = server
        .post_json(&server.admin, "/v1/calendar/events", event("Next"))
        .await;
    let next = json_of(response).await;
    let message = next_message(&mut socket).await;
    assert_eq!(
        (kind(&message), message["subject_id"].clone()),
        ("event.created", next["id"].clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_since_gets_a_reset_sqlite() {
    expired_since_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_since_gets_a_reset_postgres() {
    expired_since_story(Backend::Postgres).await;
}
