//! Real time end to end: provider notifications from the real Graph and Google emulators into the real
//! server (handshake, forged and replayed notifications, coalescing), and the WebSocket change stream
//! (live, replay with `since`, calendar filter, and fan-out between two nodes sharing one PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use calbridge_emulators::{Action, Emulator, EmulatorConfig, Flavor};
use calbridge_server::realtime::push::{SYNC_LINK_JOB, secret_digest};
use calbridge_store::{LinkId, NewConnection, NewLink, NewPushChannel, Store, TenantId};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::{Backend, TestServer};

async fn default_tenant(server: &TestServer) -> TenantId {
    calbridge_server::bootstrap::tenant_by_name_or_id(
        server.store.as_ref(),
        calbridge_server::bootstrap::DEFAULT_TENANT,
    )
    .await
    .unwrap()
    .id
}

async fn create_calendar(server: &TestServer, name: &str) -> String {
    let response = server
        .post_json(
            &server.admin,
            "/v1/calendar/calendars",
            json!({"name": name, "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A linked calendar as the connectors will leave it: a connection and one link.
async fn make_link(server: &TestServer, provider: &str) -> (TenantId, LinkId) {
    let tenant = default_tenant(server).await;
    let calendar = create_calendar(server, provider).await;
    let connection = server
        .store
        .create_connection(
            tenant,
            NewConnection {
                provider: calbridge_store::Provider::parse(provider).unwrap(),
                name: provider.to_owned(),
                calendar_id: calendar.parse().unwrap(),
                credentials: None,
                sync_options_json: "{}".to_owned(),
                status: calbridge_store::ConnectionStatus::Active,
            },
        )
        .await
        .unwrap();
    let link = server
        .store
        .create_link(
            tenant,
            NewLink {
                connection_id: connection.id,
                remote_calendar_id: "primary".to_owned(),
                remote_name: None,
            },
        )
        .await
        .unwrap();
    (tenant, link.id)
}

/// Leases every due sync job (and completes it), returning the links they were for.
async fn drain_sync_jobs(store: &dyn Store) -> Vec<String> {
    let mut links = Vec::new();
    while let Some(lease) = store
        .lease_next(
            "test",
            &[SYNC_LINK_JOB],
            Duration::from_secs(30),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap()
    {
        let payload: Value = serde_json::from_str(&lease.job.payload_json).unwrap();
        links.push(payload["link"].as_str().unwrap().to_owned());
        store
            .complete_job(&lease, None, jiff::Timestamp::now())
            .await
            .unwrap();
    }
    links
}

/// Waits (bounded) until at least one sync job is due, then drains.
async fn wait_sync_jobs(store: &dyn Store) -> Vec<String> {
    for _ in 0..100 {
        let links = drain_sync_jobs(store).await;
        if !links.is_empty() {
            return links;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

fn notification(subscription: &str, client_state: &str) -> Value {
    json!({"value": [{
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "clientState": client_state,
        "changeType": "updated",
        "resource": "Users/x/Events/y",
        "tenantId": "t",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "y"},
    }]})
}

async fn run_graph_story(server: &TestServer) {
    let (tenant, link) = make_link(server, "microsoft").await;
    let emu = Emulator::start(Flavor::Microsoft, EmulatorConfig::default())
        .await
        .unwrap();
    let token = emu.token(None).unwrap();
    let http = reqwest::Client::new();
    let hook = server.url("/v1/calendar/notifications/microsoft");
    let client_state = "s3cret client state, chosen per link";
    let expiration = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    // The emulator validates both URLs with a real handshake; 201 means our endpoint echoed correctly.
    let created = http
        .post(format!("{}/v1.0/subscriptions", emu.base_url()))
        .bearer_auth(&token)
        .json(&json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": hook,
            "lifecycleNotificationUrl": hook,
            "resource": "/me/events",
            "expirationDateTime": expiration.to_string(),
            "clientState": client_state,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let subscription: Value = created.json().await.unwrap();
    let sub_id = subscription["id"].as_str().unwrap().to_owned();
    server
        .store
        .put_push_channel(
            tenant,
            NewPushChannel {
                provider: "microsoft".into(),
                id: sub_id.clone(),
                link_id: link,
                secret_hash: secret_digest(client_state),
                resource_id: None,
                expires_at: expiration,
            },
        )
        .await
        .unwrap();

    // An edit in the emulator → a real notification → one sync job for exactly that link.
    emu.act(Action::Create {
        user: None,
        calendar: None,
        event: json!({
            "subject": "Standup",
            "start": {"dateTime": "2026-03-10T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-10T09:15:00", "timeZone": "UTC"},
        }),
    })
    .await
    .unwrap();
    assert_eq!(
        wait_sync_jobs(server.store.as_ref()).await,
        vec![link.to_string()]
    );

    // Forged: a wrong clientState, an unknown subscription. Refused, nothing enqueued.
    for body in [
        notification(&sub_id, "guess"),
        notification(&sub_id, ""),
        notification("00000000-0000-0000-0000-000000000000", client_state),
    ] {
        let answer = http.post(&hook).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let malformed = http.post(&hook).body("{\"nope\": 1}").send().await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(drain_sync_jobs(server.store.as_ref()).await.is_empty());

    // A burst (or a replay of one notification 25 times) leaves exactly one pending job for the link.
    for _ in 0..25 {
        let answer = http
            .post(&hook)
            .json(&notification(&sub_id, client_state))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    assert_eq!(
        drain_sync_jobs(server.store.as_ref()).await,
        vec![link.to_string()]
    );

    // Lifecycle: `missed` resyncs; `reauthorizationRequired` asks for channel work, not a sync.
    let lifecycle = |event: &str| {
        json!({"value": [{"subscriptionId": sub_id, "clientState": client_state,
            "lifecycleEvent": event, "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z", "tenantId": "t"}]})
    };
    let answer = http
        .post(&hook)
        .json(&lifecycle("missed"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    assert_eq!(
        drain_sync_jobs(server.store.as_ref()).await,
        vec![link.to_string()]
    );
    let answer = http
        .post(&hook)
        .json(&lifecycle("reauthorizationRequired"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    assert!(drain_sync_jobs(server.store.as_ref()).await.is_empty());
    let renew = server
        .store
        .lease_next(
            "test",
            &[calbridge_server::realtime::push::CHANNEL_JOB],
            Duration::from_secs(30),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap()
        .expect("a channel job for the reauthorization");
    // The link's channel job runs now, and the channel is marked due, so the job renews it.
    let payload: Value = serde_json::from_str(&renew.job.payload_json).unwrap();
    assert_eq!(renew.job.key, link.to_string());
    assert_eq!(payload["link"], link.to_string());
    let channel = server
        .store
        .find_push_channel("microsoft", &sub_id)
        .await
        .unwrap()
        .unwrap();
    assert!(channel.expires_at <= jiff::Timestamp::now());
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_handshake_verified_forged_and_burst_notifications_sqlite() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    run_graph_story(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_handshake_verified_forged_and_burst_notifications_postgres() {
    let Some(server) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    run_graph_story(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_token_is_echoed_url_decoded_as_text() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let answer = reqwest::Client::new()
        .post(server.url(
            "/v1/calendar/notifications/microsoft?validationToken=Validation%3A%20Testing%20client%20application%20reachability",
        ))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        answer.text().await.unwrap(),
        "Validation: Testing client application reachability"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_channel_messages_verified_and_duplicates_ignored() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let (tenant, link) = make_link(&server, "google").await;
    let emu = Emulator::start(Flavor::Google, EmulatorConfig::default())
        .await
        .unwrap();
    let token = emu.token(None).unwrap();
    let http = reqwest::Client::new();
    let hook = server.url("/v1/calendar/notifications/google");
    let channel_id = uuid::Uuid::new_v4().to_string();
    let channel_token = "per-channel token we chose";
    let watched: Value = http
        .post(format!(
            "{}/calendar/v3/calendars/primary/events/watch",
            emu.base_url()
        ))
        .bearer_auth(&token)
        .json(
            &json!({"id": channel_id, "type": "web_hook", "address": hook, "token": channel_token}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resource_id = watched["resourceId"].as_str().unwrap().to_owned();
    server
        .store
        .put_push_channel(
            tenant,
            NewPushChannel {
                provider: "google".into(),
                id: channel_id.clone(),
                link_id: link,
                secret_hash: secret_digest(channel_token),
                resource_id: Some(resource_id.clone()),
                expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
            },
        )
        .await
        .unwrap();
    emu.act(Action::Create {
        user: None,
        calendar: None,
        event: json!({"summary": "Review", "start": {"dateTime": "2026-03-10T09:00:00Z"},
            "end": {"dateTime": "2026-03-10T10:00:00Z"}}),
    })
    .await
    .unwrap();
    assert_eq!(
        wait_sync_jobs(server.store.as_ref()).await,
        vec![link.to_string()]
    );

    let send = |number: i64, token: &str, resource: &str, state: &str| {
        http.post(&hook)
            .header("x-goog-channel-id", &channel_id)
            .header("x-goog-channel-token", token)
            .header("x-goog-resource-id", resource)
            .header("x-goog-resource-state", state)
            .header("x-goog-message-number", number.to_string())
            .header("x-goog-resource-uri", "https://example.invalid/events")
            .send()
    };
    // Forged: wrong token, wrong resource id. Refused, nothing enqueued, and the numbers they carried do
    // not poison the duplicate check.
    let answer = send(1_000_000, "guess", &resource_id, "exists")
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let answer = send(1_000_000, channel_token, "other-resource", "exists")
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(drain_sync_jobs(server.store.as_ref()).await.is_empty());

    // A new message number is accepted; the same number again (a retry or replay) is ignored.
    let answer = send(500_000, channel_token, &resource_id, "exists")
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(drain_sync_jobs(server.store.as_ref()).await.len(), 1);
    for number in [500_000, 499_999] {
        let answer = send(number, channel_token, &resource_id, "exists")
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    assert!(drain_sync_jobs(server.store.as_ref()).await.is_empty());
    // `sync` confirms the channel and has nothing to read.
    let answer = send(500_001, channel_token, &resource_id, "sync")
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(drain_sync_jobs(server.store.as_ref()).await.is_empty());
    let missing = http.post(&hook).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    emu.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer, key: &str, query: &str) -> Socket {
    let url = format!("ws://{}/v1/calendar/stream{query}", server.addr);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a stream message within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn create_event(server: &TestServer, calendar: &str, summary: &str) -> Value {
    let response = server
        .post_json(
            &server.admin,
            "/v1/calendar/events",
            json!({"calendar_id": calendar, "summary": summary,
                "start": "2026-03-10T09:00:00Z", "end": "2026-03-10T10:00:00Z"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

both_backends! {
    async fn websocket_live_then_replay_with_since(server) {
        let calendar = create_calendar(&server, "Team").await;
        let other = create_calendar(&server, "Other").await;
        let mut socket = connect(&server, &server.admin, &format!("?calendar_id={calendar}")).await;
        let made = create_event(&server, &calendar, "Live one").await;
        let live = next_message(&mut socket).await;
        assert_eq!(live["type"], "event.created");
        assert_eq!(live["subject_id"], made["id"]);
        assert_eq!(live["calendar_id"], calendar.as_str());
        let seq = live["seq"].as_i64().unwrap();
        socket.close(None).await.unwrap();

        // While disconnected: two events here, one in another calendar (filtered out), a deletion.
        let second = create_event(&server, &calendar, "Second").await;
        create_event(&server, &other, "Elsewhere").await;
        let third = create_event(&server, &calendar, "Third").await;
        let deleted = server
            .client
            .delete(server.url(&format!("/v1/calendar/events/{}", made["id"].as_str().unwrap())))
            .bearer_auth(&server.admin)
            .send()
            .await
            .unwrap();
        assert!(deleted.status().is_success());

        // The browser form of authentication, resuming after the last seq seen.
        let url = format!(
            "ws://{}/v1/calendar/stream?since={seq}&calendar_id={calendar}&access_token={}",
            server.addr, server.admin
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut replayed = Vec::new();
        for _ in 0..3 {
            replayed.push(next_message(&mut socket).await);
        }
        let kinds: Vec<_> = replayed.iter().map(|m| (m["type"].as_str().unwrap().to_owned(), m["subject_id"].clone())).collect();
        assert_eq!(kinds, vec![
            ("event.created".to_owned(), second["id"].clone()),
            ("event.created".to_owned(), third["id"].clone()),
            ("event.deleted".to_owned(), made["id"].clone()),
        ]);
        let seqs: Vec<i64> = replayed.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > seq, "{seqs:?}");
        // And live again after the replay, with no duplicate of what was replayed.
        let fourth = create_event(&server, &calendar, "Fourth").await;
        let live = next_message(&mut socket).await;
        assert_eq!(live["subject_id"], fourth["id"]);
        assert!(live["seq"].as_i64().unwrap() > *seqs.last().unwrap());
        socket.close(None).await.unwrap();
    }

    async fn websocket_refuses_bad_keys_and_other_tenants(server) {
        let url = format!("ws://{}/v1/calendar/stream?access_token=cbk_nope", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("expected 401, got {other:?}"),
        }
        let url = format!("ws://{}/v1/calendar/stream", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("expected 401, got {other:?}"),
        }
        // A key of another tenant sees none of this tenant's changes, and cannot name its calendar.
        let calendar = create_calendar(&server, "Mine").await;
        let tenant = server.store.create_tenant("other").await.unwrap();
        let (_, other_key) = calbridge_server::api::keys::make_key(
            server.store.as_ref(),
            tenant.id,
            "other",
            &[calbridge_server::keys::Scope::EventsRead],
        )
        .await
        .unwrap();
        let url = format!("ws://{}/v1/calendar/stream?calendar_id={calendar}&access_token={other_key}", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 404)
            }
            other => panic!("expected 404, got {other:?}"),
        }
        let mut theirs = connect(&server, &other_key, "?since=0").await;
        create_event(&server, &calendar, "Private").await;
        let quiet = tokio::time::timeout(Duration::from_millis(2500), theirs.next()).await;
        assert!(quiet.is_err(), "another tenant's stream must stay silent: {quiet:?}");
    }
}

/// Two server instances on two ports sharing one fresh PostgreSQL database: a write through node A reaches
/// a WebSocket client on node B through LISTEN/NOTIFY. Node B's idle rescan is set to an hour, so only the
/// notification can deliver the message in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_fan_out_changes() {
    let Some(node_a) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config();
    config.database.url =
        calbridge_server::config::DatabaseUrl::parse(node_a.config.database.url.expose()).unwrap();
    config.secrets.master_key_file = Some(dir.path().join("master.key"));
    calbridge_store::crypto::MasterKey::create_file(&dir.path().join("master.key")).unwrap();
    let master = calbridge_server::bootstrap::master_key(&config).unwrap();
    let store_b = calbridge_server::bootstrap::open_store(&config)
        .await
        .unwrap();
    let mut state = calbridge_server::AppState::new(config, store_b, master.key);
    state.realtime = Arc::new(
        calbridge_server::realtime::Hub::new(node_a.config.database.url.expose())
            .with_rescan(Duration::from_secs(3600)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr_b = listener.local_addr().unwrap();
    let (stop_b, stopped) = tokio::sync::oneshot::channel::<()>();
    let node_b = tokio::spawn(calbridge_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let calendar = create_calendar(&node_a, "Shared").await;
    let url = format!(
        "ws://{addr_b}/v1/calendar/stream?access_token={}",
        node_a.admin
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Let node B's LISTEN connection come up (it rings once when it does).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..3 {
        let made = create_event(&node_a, &calendar, &format!("From A {n}")).await;
        let message = next_message(&mut socket).await;
        assert_eq!(message["subject_id"], made["id"]);
        assert_eq!(message["type"], "event.created");
    }
    socket.close(None).await.unwrap();
    let _ = stop_b.send(());
    node_b.await.unwrap().unwrap();
}
