//! The connections, sync and conflicts API end to end: the real server on port 0 with a fresh SQLite
//! database, and a real Radicale as the CalDAV provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{Backend, TestServer, test_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

async fn server_for_lan() -> TestServer {
    let mut config = test_config();
    // Radicale listens on loopback; the operator allows private networks here.
    config.network.allow_private_networks = true;
    TestServer::start_with(Backend::Sqlite, config)
        .await
        .unwrap()
}

/// Starts a sync and polls its run until it is no longer running.
async fn sync_and_wait(server: &TestServer, connection: &str) -> Value {
    let started = server
        .post_json(
            &server.admin,
            "/v1/calendar/sync",
            json!({"connection_id": connection}),
        )
        .await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let run_id = json_of(started).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..300 {
        let run = json_of(
            server
                .get(&server.admin, &format!("/v1/calendar/sync/runs/{run_id}"))
                .await,
        )
        .await;
        if run["status"] != "running" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run_id} still running after 30 s");
}

async fn events(server: &TestServer, calendar: &str) -> Vec<Value> {
    let page = json_of(
        server
            .get(
                &server.admin,
                &format!("/v1/calendar/events?start=2026-11-01T00:00:00Z&end=2027-01-01T00:00:00Z&calendar_id={calendar}"),
            )
            .await,
    )
    .await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caldav_connection_syncs_diagnoses_and_records_conflicts() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let calendar_url = radicale.calendar_url("work");
    raw.mkcalendar(&calendar_url, "Work").await;
    let item_url = format!("{calendar_url}standup.ics");
    let put = raw
        .put(
            &item_url,
            &support::event("standup-1", "Standup", "20261125T090000Z"),
        )
        .await;
    assert!(put.status().is_success());

    let server = server_for_lan().await;

    // A connection with the right password: active, one link per remote calendar.
    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Radicale",
                   "credentials": {"url": radicale.base(), "username": support::USER, "password": support::PASSWORD},
                   "sync": {"frequency": "15m", "conflict_resolution": "ask"}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let connection = json_of(created).await;
    assert_eq!(connection["status"], "active", "{connection}");
    let links = connection["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{connection}");
    assert!(
        links[0]["remote_calendar_id"]
            .as_str()
            .unwrap()
            .contains("work")
    );
    let id = connection["id"].as_str().unwrap().to_owned();
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();
    // The password is never shown.
    let shown = json_of(
        server
            .get(&server.admin, &format!("/v1/calendar/connections/{id}"))
            .await,
    )
    .await;
    assert!(!shown.to_string().contains(support::PASSWORD));

    let diagnosis = json_of(
        server
            .post_json(
                &server.admin,
                &format!("/v1/calendar/connections/{id}/test"),
                json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(diagnosis["kind"], "ok", "{diagnosis}");

    // A wrong password: kept, marked as needing new credentials, and diagnosed as such.
    let bad = json_of(
        server
            .post_json(
                &server.admin,
                "/v1/calendar/connections",
                json!({"provider": "caldav", "name": "Wrong",
                       "credentials": {"url": radicale.base(), "username": support::USER, "password": "nope"}}),
            )
            .await,
    )
    .await;
    assert_eq!(bad["status"], "needs_reauth", "{bad}");
    let bad_id = bad["id"].as_str().unwrap();
    let bad_diagnosis = json_of(
        server
            .post_json(
                &server.admin,
                &format!("/v1/calendar/connections/{bad_id}/test"),
                json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(bad_diagnosis["kind"], "invalid_credentials");

    // Microsoft without the connectors: a clear 422.
    let microsoft = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": "microsoft", "name": "M"}),
        )
        .await;
    assert_eq!(microsoft.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(microsoft).await["code"], "provider_not_supported");

    // The first sync imports Radicale's event.
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["requests"].as_i64().unwrap() >= 1, "{run}");
    assert!(run["finished_at"].is_string());
    let listed = events(&server, &calendar).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["summary"], "Standup");
    assert_eq!(listed[0]["uid"], "standup-1");
    let event_id = listed[0]["id"].as_str().unwrap().to_owned();

    // The runs list shows it.
    let runs = json_of(server.get(&server.admin, "/v1/calendar/sync/runs").await).await;
    assert!(
        runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == run["id"])
    );

    // The same field changed on both sides under `ask`: an update conflict, nothing overwritten.
    let local = server
        .client
        .put(server.url(&format!("/v1/calendar/events/{event_id}")))
        .bearer_auth(&server.admin)
        .json(&json!({"summary": "Standup (local)", "start": "2026-11-25T09:00:00Z", "end": "2026-11-25T10:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert!(
        local.status().is_success(),
        "{}",
        local.text().await.unwrap()
    );
    let remote = raw
        .put(
            &item_url,
            &support::event("standup-1", "Standup (remote)", "20261125T090000Z"),
        )
        .await;
    assert!(remote.status().is_success());
    let run = sync_and_wait(&server, &id).await;
    assert_ne!(run["status"], "failed", "{run}");
    let conflicts = json_of(server.get(&server.admin, "/v1/calendar/conflicts").await).await;
    let items = conflicts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{conflicts}");
    let conflict = &items[0];
    assert_eq!(conflict["kind"], "update");
    assert_eq!(conflict["event_uid"], "standup-1");
    assert_eq!(conflict["connection_id"], id.as_str());
    assert!(
        !conflict["options"].as_array().unwrap().is_empty(),
        "{conflict}"
    );
    let one = json_of(
        server
            .get(
                &server.admin,
                &format!(
                    "/v1/calendar/conflicts/{}",
                    conflict["id"].as_str().unwrap()
                ),
            )
            .await,
    )
    .await;
    assert_eq!(one["id"], conflict["id"]);
    // Filters.
    let by_kind = json_of(
        server
            .get(&server.admin, "/v1/calendar/conflicts?kind=deletion")
            .await,
    )
    .await;
    assert!(by_kind["items"].as_array().unwrap().is_empty());
    let bad_filter = server
        .get(&server.admin, "/v1/calendar/conflicts?kind=nonsense")
        .await;
    assert_eq!(bad_filter.status(), StatusCode::BAD_REQUEST);
    // Nothing was overwritten: each side keeps its own edit.
    let listed = events(&server, &calendar).await;
    assert_eq!(listed[0]["summary"], "Standup (local)");
    let remote_now = raw
        .request("GET", &item_url, &[], None)
        .await
        .text()
        .await
        .unwrap();
    assert!(remote_now.contains("Standup (remote)"));

    // Another tenant sees none of it.
    let stranger = server
        .key(Some("tenant-b"), &calbridge_server::keys::Scope::ALL)
        .await;
    let theirs = json_of(server.get(&stranger, "/v1/calendar/conflicts").await).await;
    assert!(theirs["items"].as_array().unwrap().is_empty());
    let not_theirs = server
        .post_json(&stranger, "/v1/calendar/sync", json!({"connection_id": id}))
        .await;
    assert_eq!(not_theirs.status(), StatusCode::NOT_FOUND);
    let theirs = json_of(server.get(&stranger, "/v1/calendar/connections").await).await;
    assert!(theirs["items"].as_array().unwrap().is_empty());

    // Deleting the connection keeps the local events.
    let gone = server
        .client
        .delete(server.url(&format!("/v1/calendar/connections/{id}")))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    assert_eq!(events(&server, &calendar).await.len(), 1);
}
