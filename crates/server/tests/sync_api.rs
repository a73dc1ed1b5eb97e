//! The connections, sync and conflicts API end to end: the real server on port 0 with a fresh SQLite
//! database, and a real Radicale as the CalDAV provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

use common::{Backend, TestServer, json_of, lan_config, sync_and_wait};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn events(server: &TestServer, calendar: &str) -> Vec<Value> {
    let page = server.admin_get(&format!("/v1/calendar/events?start=2026-11-01T00:00:00Z&end=2027-01-01T00:00:00Z&calendar_id={calendar}")).await;
    page["items"].as_array().unwrap().clone()
}

/// The id of the event with `uid` among `events`.
fn id_of(events: &[Value], uid: &str) -> String {
    events.iter().find(|e| e["uid"] == uid).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// 09:00 UTC on `day` of November 2026, as iCalendar writes it.
fn november(day: u32) -> String {
    format!("202611{day:02}T090000Z")
}

/// A new Radicale calendar `name` holding one event per `(uid, day)`, each at 09:00 on a day of its
/// own (no time conflicts), titled with its UID; answers the calendar's URL.
async fn calendar_with_events(
    radicale: &support::Radicale,
    name: &str,
    cases: &[(&str, u32)],
) -> String {
    let raw = radicale.raw();
    let calendar_url = radicale.calendar_url(name);
    raw.mkcalendar(&calendar_url, name).await;
    for (uid, day) in cases {
        let put = raw
            .put(
                &format!("{calendar_url}{uid}.ics"),
                &support::event(uid, uid, &november(*day)),
            )
            .await;
        assert!(put.status().is_success());
    }
    calendar_url
}

/// A CalDAV connection to Radicale at `url` that asks on conflicts, synced once:
/// (connection id, local calendar id).
async fn asking_connection(server: &TestServer, url: &str) -> (String, String) {
    let created = server
        .admin_post(
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Radicale",
                   "credentials": {"url": url, "username": support::USER, "password": support::PASSWORD},
                   "sync": {"conflict_resolution": "ask"}}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let calendar = created["calendar_id"].as_str().unwrap().to_owned();
    assert_eq!(sync_and_wait(server, &id).await["status"], "succeeded");
    (id, calendar)
}

/// The local event `event` retitled `summary`, still at 09:00–10:00 on `day` of November 2026.
async fn retitle_locally(server: &TestServer, event: &str, summary: &str, day: u32) {
    let local = server
        .client
        .put(server.url(&format!("/v1/calendar/events/{event}")))
        .bearer_auth(&server.admin)
        .json(&json!({"summary": summary,
                      "start": format!("2026-11-{day}T09:00:00Z"),
                      "end": format!("2026-11-{day}T10:00:00Z")}))
        .send()
        .await
        .unwrap();
    assert!(local.status().is_success());
}

/// How many `conflict.resolved` entries the audit log holds.
async fn resolutions_audited(server: &TestServer) -> usize {
    let audit = server.admin_get("/v1/calendar/audit").await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "conflict.resolved")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caldav_connection_syncs_diagnoses_and_records_conflicts() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let calendar_url = radicale
        .work_calendar(&[
            ("standup-1", "Standup 1", "20261125T090000Z"),
            ("standup-2", "Standup 2", "20261125T090000Z"),
            ("standup-3", "Standup 3", "20261125T090000Z"),
        ])
        .await;
    let raw = radicale.raw();
    let item_url = |n: u32| format!("{calendar_url}standup-{n}.ics");

    let server = TestServer::start_with(Backend::Sqlite, lan_config())
        .await
        .unwrap();

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
    let shown = server
        .admin_get(&format!("/v1/calendar/connections/{id}"))
        .await;
    assert!(!shown.to_string().contains(support::PASSWORD));

    let diagnosis = server
        .admin_post(&format!("/v1/calendar/connections/{id}/test"), json!({}))
        .await;
    assert_eq!(diagnosis["kind"], "ok", "{diagnosis}");

    // A wrong password: kept, marked as needing new credentials, and diagnosed as such.
    let bad = server
        .admin_post(
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Wrong",
                   "credentials": {"url": radicale.base(), "username": support::USER, "password": "nope"}}),
        )
        .await;
    assert_eq!(bad["status"], "needs_reauth", "{bad}");
    let bad_id = bad["id"].as_str().unwrap();
    let bad_diagnosis = server
        .admin_post(
            &format!("/v1/calendar/connections/{bad_id}/test"),
            json!({}),
        )
        .await;
    assert_eq!(bad_diagnosis["kind"], "invalid_credentials");

    // Microsoft without an OAuth client configured by the operator: a clear 422.
    let microsoft = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": "microsoft", "name": "M"}),
        )
        .await;
    assert_eq!(microsoft.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(microsoft).await["code"], "provider_not_configured");

    // The first sync imports Radicale's event.
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["requests"].as_i64().unwrap() >= 1, "{run}");
    assert!(run["finished_at"].is_string());
    let listed = events(&server, &calendar).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let event_of = |uid: &str| -> String {
        listed.iter().find(|e| e["uid"] == uid).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(listed.iter().any(|e| e["summary"] == "Standup 1"));

    // Requests and bytes are measured on the wire: at least a listing, three items and their bodies.
    assert!(run["bytes"].as_i64().unwrap() > 3 * 150, "{run}");
    assert_eq!(run["counts"]["create_local"], 3, "{run}");

    // The runs list shows it, and only it: one request is one run holding its links' totals (no
    // second row per link counting the same work again).
    let runs = server.admin_get("/v1/calendar/sync/runs").await;
    let items = runs["items"].as_array().unwrap();
    assert!(items.iter().any(|r| r["id"] == run["id"]));
    let imports: i64 = items
        .iter()
        .filter_map(|r| r["counts"]["create_local"].as_i64())
        .sum();
    assert_eq!(imports, 3, "{runs}");
    assert_eq!(
        items
            .iter()
            .filter(|r| r["connection_id"] == id.as_str())
            .count(),
        1,
        "{runs}"
    );

    // The same field changed on both sides under `ask`: an update conflict per event, nothing overwritten.
    for n in 1..=3 {
        let event_id = event_of(&format!("standup-{n}"));
        let local = server
            .client
            .put(server.url(&format!("/v1/calendar/events/{event_id}")))
            .bearer_auth(&server.admin)
            .json(&json!({"summary": format!("Local {n}"), "start": "2026-11-25T09:00:00Z", "end": "2026-11-25T10:00:00Z"}))
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
                &item_url(n),
                &support::event(
                    &format!("standup-{n}"),
                    &format!("Remote {n}"),
                    "20261125T090000Z",
                ),
            )
            .await;
        assert!(remote.status().is_success());
    }
    let run = sync_and_wait(&server, &id).await;
    assert_ne!(run["status"], "failed", "{run}");
    let conflicts = server.admin_get("/v1/calendar/conflicts?kind=update").await;
    let items = conflicts["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{conflicts}");
    // The three events now share one hour: time conflicts, one per pair, that only `keep_both` resolves.
    let time = server.admin_get("/v1/calendar/conflicts?kind=time").await;
    let time = time["items"].as_array().unwrap().clone();
    assert_eq!(time.len(), 3, "{time:?}");
    assert!(time.iter().all(|c| c["options"] == json!(["keep_both"])));
    let time_id = time[0]["id"].as_str().unwrap().to_owned();
    let refused = server
        .post_json(
            &server.admin,
            &format!("/v1/calendar/conflicts/{time_id}/resolve"),
            json!({"option": "keep_local"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(refused).await["code"], "option_not_applicable");
    let accepted = server
        .post_json(
            &server.admin,
            &format!("/v1/calendar/conflicts/{time_id}/resolve"),
            json!({"option": "keep_both"}),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(json_of(accepted).await["state"], "resolved");
    for conflict in &items {
        assert_eq!(conflict["kind"], "update");
        assert_eq!(conflict["connection_id"], id.as_str());
        let options = conflict["options"].as_array().unwrap();
        assert!(
            options.contains(&json!("keep_local")) && options.contains(&json!("keep_remote")),
            "{conflict}"
        );
    }
    let conflict_of = |uid: &str| -> String {
        items.iter().find(|c| c["event_uid"] == uid).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let one = server
        .admin_get(&format!(
            "/v1/calendar/conflicts/{}",
            conflict_of("standup-1")
        ))
        .await;
    assert_eq!(one["event_uid"], "standup-1");
    // Filters.
    let by_kind = server
        .admin_get("/v1/calendar/conflicts?kind=deletion")
        .await;
    assert!(by_kind["items"].as_array().unwrap().is_empty());
    let bad_filter = server
        .get(&server.admin, "/v1/calendar/conflicts?kind=nonsense")
        .await;
    assert_eq!(bad_filter.status(), StatusCode::BAD_REQUEST);
    // Nothing was overwritten: each side keeps its own edit.
    let summary_of = |uid: &'static str| {
        let server = &server;
        let calendar = &calendar;
        async move {
            events(server, calendar)
                .await
                .into_iter()
                .find(|e| e["uid"] == uid)
                .unwrap()["summary"]
                .clone()
        }
    };
    assert_eq!(summary_of("standup-1").await, "Local 1");
    let remote_text = |n: u32| {
        let raw = &raw;
        let url = item_url(n);
        async move {
            raw.request("GET", &url, &[], None)
                .await
                .text()
                .await
                .unwrap()
        }
    };
    assert!(remote_text(1).await.contains("Remote 1"));

    let resolve = |conflict: String, option: &'static str| {
        let server = &server;
        async move {
            server
                .post_json(
                    &server.admin,
                    &format!("/v1/calendar/conflicts/{conflict}/resolve"),
                    json!({"option": option}),
                )
                .await
        }
    };
    // An option the conflict does not offer.
    let refused = resolve(conflict_of("standup-1"), "restore").await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // keep_local: Radicale takes the local version.
    let done = resolve(conflict_of("standup-1"), "keep_local").await;
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "{}",
        done.text().await.unwrap()
    );
    assert!(remote_text(1).await.contains("Local 1"));
    assert_eq!(summary_of("standup-1").await, "Local 1");
    // keep_remote: the local event takes Radicale's version.
    let done = resolve(conflict_of("standup-2"), "keep_remote").await;
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "{}",
        done.text().await.unwrap()
    );
    assert_eq!(json_of(done).await["state"], "resolved");
    assert_eq!(summary_of("standup-2").await, "Remote 2");
    assert!(remote_text(2).await.contains("Remote 2"));
    // Resolving twice is refused.
    assert_eq!(
        resolve(conflict_of("standup-2"), "keep_remote")
            .await
            .status(),
        StatusCode::CONFLICT
    );
    // Stale: Radicale's item edited after the conflict was recorded → 409, nothing overwritten.
    let again = raw
        .put(
            &item_url(3),
            &support::event("standup-3", "Remote 3 again", "20261125T090000Z"),
        )
        .await;
    assert!(again.status().is_success());
    let stale = resolve(conflict_of("standup-3"), "keep_local").await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(stale).await["code"], "conflict_changed");
    assert!(remote_text(3).await.contains("Remote 3 again"));
    assert_eq!(summary_of("standup-3").await, "Local 3");
    // The resolutions are in the audit log.
    let audit = server.admin_get("/v1/calendar/audit").await;
    let resolved = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "conflict.resolved")
        .count();
    assert_eq!(resolved, 3, "{audit}");
    // The next sync settles quietly: no new conflict for the resolved events, both sides agree.
    let run = sync_and_wait(&server, &id).await;
    assert_ne!(run["status"], "failed", "{run}");
    let open = server.admin_get("/v1/calendar/conflicts?kind=update").await;
    let open_uids: Vec<&str> = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["event_uid"].as_str().unwrap())
        .collect();
    assert!(
        !open_uids.contains(&"standup-1") && !open_uids.contains(&"standup-2"),
        "{open}"
    );
    assert_eq!(summary_of("standup-1").await, "Local 1");
    assert_eq!(summary_of("standup-2").await, "Remote 2");
    assert!(remote_text(1).await.contains("Local 1"));
    assert!(remote_text(2).await.contains("Remote 2"));
    // The stale conflict was superseded by that sync and recorded again with both sides' versions of
    // now; a merged version decided field by field resolves it on both systems.
    let again = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["event_uid"] == "standup-3" && c["kind"] == "update")
        .unwrap_or_else(|| panic!("{open}"))
        .clone();
    // Every conflicting field is decided: the title by hand, anything else from the local side.
    let mut decisions = serde_json::Map::new();
    for field in again["fields"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        if field != "master/SUMMARY" {
            decisions.insert(field.to_owned(), json!({"from": "local"}));
        }
    }
    decisions.insert("summary".into(), json!("Merged 3"));
    let again = again["id"].as_str().unwrap().to_owned();
    let missing = server
        .post_json(
            &server.admin,
            &format!("/v1/calendar/conflicts/{again}/resolve"),
            json!({"option": "merge"}),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(missing).await["code"], "merged_required");
    let merged = server
        .post_json(
            &server.admin,
            &format!("/v1/calendar/conflicts/{again}/resolve"),
            json!({"option": "merge", "merged": decisions}),
        )
        .await;
    assert_eq!(
        merged.status(),
        StatusCode::OK,
        "{}",
        merged.text().await.unwrap()
    );
    assert_eq!(summary_of("standup-3").await, "Merged 3");
    assert!(remote_text(3).await.contains("SUMMARY:Merged 3"));

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
    assert_eq!(events(&server, &calendar).await.len(), 3);
}

/// A conflict whose connection was deleted: options that need the provider answer 409
/// `connection_deleted` (problem+json, saying what still applies) and change nothing; `keep_local` and
/// `delete_everywhere` apply to the local data alone. Before, every option answered 500.
async fn resolving_after_the_connection_is_deleted(backend: Backend) {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let cases = [("u-1", 25), ("u-2", 26), ("d-remote", 27), ("d-local", 28)];
    let calendar_url = calendar_with_events(&radicale, "gone", &cases).await;
    let item_url = |uid: &str| format!("{calendar_url}{uid}.ics");
    let Some(server) = TestServer::start_with(backend, lan_config()).await else {
        return;
    };
    let (id, calendar) = asking_connection(&server, &radicale.base()).await;
    let listed = events(&server, &calendar).await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    let event_id = |uid: &str| id_of(&listed, uid);
    // Update conflicts (both sides edited the title), a deletion conflict each way.
    for (uid, day) in cases {
        let edit_locally = uid != "d-local";
        let edit_remotely = uid != "d-remote";
        if edit_locally {
            retitle_locally(&server, &event_id(uid), &format!("{uid} local"), day).await;
        } else {
            let deleted = server
                .client
                .delete(server.url(&format!("/v1/calendar/events/{}", event_id(uid))))
                .bearer_auth(&server.admin)
                .send()
                .await
                .unwrap();
            assert!(deleted.status().is_success());
        }
        let remote = if edit_remotely {
            raw.put(
                &item_url(uid),
                &support::event(uid, &format!("{uid} remote"), &november(day)),
            )
            .await
        } else {
            raw.request("DELETE", &item_url(uid), &[], None).await
        };
        assert!(remote.status().is_success());
    }
    let run = sync_and_wait(&server, &id).await;
    assert_ne!(run["status"], "failed", "{run}");
    let conflicts = server.admin_get("/v1/calendar/conflicts").await;
    let conflicts = conflicts["items"].as_array().unwrap().clone();
    assert_eq!(conflicts.len(), 4, "{conflicts:?}");
    let conflict_of = |uid: &str| -> Value {
        conflicts
            .iter()
            .find(|c| c["event_uid"] == uid)
            .unwrap_or_else(|| panic!("no conflict for {uid}: {conflicts:?}"))
            .clone()
    };

    // The connection goes (its links, mappings and cursors with it); the conflicts and events stay.
    let gone = server
        .client
        .delete(server.url(&format!("/v1/calendar/connections/{id}")))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);

    let resolve = |uid: &str, body: Value| {
        let server = &server;
        let conflict = conflict_of(uid)["id"].as_str().unwrap().to_owned();
        async move {
            server
                .post_json(
                    &server.admin,
                    &format!("/v1/calendar/conflicts/{conflict}/resolve"),
                    body,
                )
                .await
        }
    };
    let refused = |uid: &'static str, body: Value, still: &'static [&'static str]| {
        let resolve = &resolve;
        async move {
            let answer = resolve(uid, body.clone()).await;
            assert_eq!(answer.status(), StatusCode::CONFLICT, "{uid} {body}");
            assert_eq!(
                answer.headers()["content-type"],
                "application/problem+json",
                "{uid} {body}"
            );
            let problem = json_of(answer).await;
            assert_eq!(problem["code"], "connection_deleted", "{problem}");
            assert_eq!(problem["status"], 409);
            assert_eq!(problem["type"], "about:blank");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("connection was deleted"), "{detail}");
            for option in still {
                assert!(detail.contains(option), "{detail} should name {option}");
            }
        }
    };
    // Options that need the provider's version or a provider write.
    refused("u-1", json!({"option": "keep_remote"}), &["keep_local"]).await;
    refused("u-1", json!({"option": "keep_both"}), &["keep_local"]).await;
    refused(
        "u-1",
        json!({"option": "merge", "merged": {"summary": "Both"}}),
        &["keep_local"],
    )
    .await;
    refused(
        "d-remote",
        json!({"option": "restore"}),
        &["delete_everywhere"],
    )
    .await;
    refused(
        "d-local",
        json!({"option": "restore"}),
        &["delete_everywhere"],
    )
    .await;
    // Options the conflict never offered are still 422.
    let not_offered = resolve("u-1", json!({"option": "restore"})).await;
    assert_eq!(not_offered.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing was lost: every conflict is open with both versions, every local event as it was.
    for (uid, _) in cases {
        let conflict = conflict_of(uid);
        let stored = server
            .admin_get(&format!(
                "/v1/calendar/conflicts/{}",
                conflict["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(stored["state"], "open", "{stored}");
        assert_eq!(stored["local"], conflict["local"], "{uid}");
        assert_eq!(stored["remote"], conflict["remote"], "{uid}");
        assert!(stored["connection_id"].is_null(), "{stored}");
    }
    let summaries = |events: Vec<Value>| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["uid"].as_str().unwrap().to_owned(),
                    e["summary"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let before = vec![
        ("d-remote".to_owned(), "d-remote local".to_owned()),
        ("u-1".to_owned(), "u-1 local".to_owned()),
        ("u-2".to_owned(), "u-2 local".to_owned()),
    ];
    assert_eq!(summaries(events(&server, &calendar).await), before);

    // What touches only local data applies: keep_local keeps the local version as it is...
    let kept = resolve("u-1", json!({"option": "keep_local"})).await;
    assert_eq!(kept.status(), StatusCode::OK);
    let kept = json_of(kept).await;
    assert_eq!(kept["state"], "resolved", "{kept}");
    assert_eq!(kept["resolution"]["remote_gone"], "connection", "{kept}");
    assert_eq!(kept["resolution"]["steps"], json!([]), "{kept}");
    // ...delete_everywhere deletes the local event of one deleted remotely...
    let deleted = resolve("d-remote", json!({"option": "delete_everywhere"})).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        json_of(deleted).await["resolution"]["steps"],
        json!(["delete_local"])
    );
    // ...and closes the one deleted locally (deleted everywhere that is left).
    let closed = resolve("d-local", json!({"option": "delete_everywhere"})).await;
    assert_eq!(closed.status(), StatusCode::OK);
    assert_eq!(
        summaries(events(&server, &calendar).await),
        before
            .into_iter()
            .filter(|(uid, _)| uid != "d-remote")
            .collect::<Vec<_>>()
    );
    // Resolving again is 409 `already_resolved` (problem+json), not a 500 nor the generic `conflict`.
    let twice = resolve("u-1", json!({"option": "keep_local"})).await;
    assert_eq!(twice.status(), StatusCode::CONFLICT);
    assert_eq!(twice.headers()["content-type"], "application/problem+json");
    assert_eq!(json_of(twice).await["code"], "already_resolved");
    assert_eq!(resolutions_audited(&server).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_after_the_connection_is_deleted_sqlite() {
    resolving_after_the_connection_is_deleted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_after_the_connection_is_deleted_postgres() {
    resolving_after_the_connection_is_deleted(Backend::Postgres).await;
}

/// A resolution in progress, as the API shows it and answers another decision (DESIGN: a person is
/// told, two decisions never write one event). Radicale sits behind a proxy that refuses the
/// resolutions' PUTs, so a `keep_both` stops after saving its copy and a `merge` after its local
/// write: both stay in progress. `resolving` shows the decision (option, who, since, `merged`, and
/// `resumed_at` once the same decision was sent again); another option is 409
/// `resolution_in_progress` naming it, also when decided long ago but resumed a moment ago; the same
/// decision again finishes it.
/// Once the decision is older than `resume_resolutions_after` (aged here in the store), another
/// option replaces a `keep_both` that wrote nothing (its saved copy goes), and a `merge` that wrote
/// a side answers `conflict_changed`, while the merge itself, sent again, finishes. Syncs after it
/// leave each event once on both sides.
async fn a_resolution_in_progress(backend: Backend) {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let cases = [("resumed", 24), ("replaced", 25), ("written", 26)];
    let calendar_url = calendar_with_events(&radicale, "busy", &cases).await;
    let item_url = |uid: &str| format!("{calendar_url}{uid}.ics");
    let proxy = common::proxy::Proxy::to(&radicale.base()).await;
    let Some(server) = TestServer::start_with(backend, lan_config()).await else {
        return;
    };
    let (id, calendar) = asking_connection(&server, &proxy.url).await;
    let listed = events(&server, &calendar).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (uid, day) in cases {
        retitle_locally(&server, &id_of(&listed, uid), &format!("{uid} local"), day).await;
        let remote = raw
            .put(
                &item_url(uid),
                &support::event(uid, &format!("{uid} remote"), &november(day)),
            )
            .await;
        assert!(remote.status().is_success());
    }
    assert_ne!(sync_and_wait(&server, &id).await["status"], "failed");
    let open = server.admin_get("/v1/calendar/conflicts?kind=update").await;
    let open = open["items"].as_array().unwrap().clone();
    assert_eq!(open.len(), 3, "{open:?}");
    // Nothing is in progress yet.
    assert!(open.iter().all(|c| c["resolving"].is_null()), "{open:?}");
    let conflict = |uid: &str| -> String {
        open.iter().find(|c| c["event_uid"] == uid).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let resolve = |uid: &str, body: Value| {
        let server = &server;
        let path = format!("/v1/calendar/conflicts/{}/resolve", conflict(uid));
        async move { server.post_json(&server.admin, &path, body).await }
    };
    let shown = |uid: &str| {
        let server = &server;
        let path = format!("/v1/calendar/conflicts/{}", conflict(uid));
        async move { server.admin_get(&path).await }
    };
    let in_progress = |answer: reqwest::Response, pending: &'static str| async move {
        assert_eq!(answer.status(), StatusCode::CONFLICT);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        let problem = json_of(answer).await;
        assert_eq!(problem["code"], "resolution_in_progress", "{problem}");
        assert_eq!(problem["status"], 409);
        let detail = problem["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(&format!("`{pending}`")), "{detail}");
        detail
    };
    let summaries = || async {
        let mut out: Vec<String> = events(&server, &calendar)
            .await
            .iter()
            .map(|e| e["summary"].as_str().unwrap().to_owned())
            .collect();
        out.sort();
        out
    };

    // The provider refuses writes: each resolution stops after its first write and stays in progress.
    proxy.refuse(Some("PUT"));
    for (uid, body) in [
        ("resumed", json!({"option": "keep_both"})),
        ("replaced", json!({"option": "keep_both"})),
        (
            "written",
            json!({"option": "merge", "merged": {"summary": "written merged"}}),
        ),
    ] {
        let stopped = resolve(uid, body).await;
        assert_eq!(stopped.status(), StatusCode::SERVICE_UNAVAILABLE, "{uid}");
    }
    let resumed = shown("resumed").await;
    assert_eq!(resumed["state"], "open");
    let pending = &resumed["resolving"];
    assert_eq!(pending["option"], "keep_both", "{resumed}");
    assert!(pending["merged"].is_null(), "{resumed}");
    let decided_by = pending["decided_by"].as_str().unwrap().to_owned();
    assert!(decided_by.starts_with("key:"), "{pending}");
    let since: jiff::Timestamp = pending["since"].as_str().unwrap().parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(since) < jiff::SignedDuration::from_mins(1));
    assert!(pending["resumed_at"].is_null(), "{pending}");
    let written = shown("written").await;
    assert_eq!(
        written["resolving"]["merged"],
        json!({"summary": "written merged"}),
        "{written}"
    );
    // The same decision sent again while the provider still refuses: taken up again, stopped again.
    // `since` stays when it was decided; `resumed_at` says it (re)started later.
    let written_since = written["resolving"]["since"].as_str().unwrap().to_owned();
    let retried = resolve(
        "written",
        json!({"option": "merge", "merged": {"summary": "written merged"}}),
    )
    .await;
    assert_eq!(retried.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retried = shown("written").await;
    let pending = &retried["resolving"];
    assert_eq!(pending["since"], written_since.as_str(), "{pending}");
    let resumed_at: jiff::Timestamp = pending["resumed_at"].as_str().unwrap().parse().unwrap();
    assert!(resumed_at > written_since.parse().unwrap(), "{pending}");
    // The list shows it too.
    let listed = server.admin_get("/v1/calendar/conflicts?kind=update").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["resolving"].is_object()),
        "{listed}"
    );
    // The saved copies and the local merge are there (nothing reached the provider).
    assert_eq!(
        summaries().await,
        [
            "replaced local",
            "replaced remote",
            "resumed local",
            "resumed remote",
            "written merged"
        ]
    );

    // Another option, or a merge with another body, is refused, naming the pending decision.
    let detail = in_progress(
        resolve("resumed", json!({"option": "keep_local"})).await,
        "keep_both",
    )
    .await;
    assert!(detail.contains(&decided_by), "{detail}");
    in_progress(
        resolve(
            "resumed",
            json!({"option": "merge", "merged": {"summary": "x"}}),
        )
        .await,
        "keep_both",
    )
    .await;
    in_progress(
        resolve(
            "written",
            json!({"option": "merge", "merged": {"summary": "other"}}),
        )
        .await,
        "merge",
    )
    .await;
    in_progress(
        resolve("written", json!({"option": "keep_remote"})).await,
        "merge",
    )
    .await;

    // The same decision again finishes it, as decided.
    proxy.refuse(None);
    let finished = resolve("resumed", json!({"option": "keep_both"})).await;
    assert_eq!(finished.status(), StatusCode::OK);
    let finished = json_of(finished).await;
    assert_eq!(finished["state"], "resolved", "{finished}");
    assert!(finished["resolving"].is_null(), "{finished}");
    assert_eq!(finished["resolved_by"], decided_by.as_str());
    assert_eq!(finished["resolution"]["interrupted"]["how"], "resumed");
    let remote = raw.request("GET", &item_url("resumed"), &[], None).await;
    assert!(remote.text().await.unwrap().contains("resumed local"));

    // Older than `resume_resolutions_after`, the decision has stopped.
    let tenant =
        calbridge_server::bootstrap::tenant_by_name_or_id(server.store.as_ref(), "default")
            .await
            .unwrap()
            .id;
    let age = |uid: &str, field: &'static str| {
        let store = server.store.clone();
        let id: calbridge_store::ConflictId = conflict(uid).parse().unwrap();
        async move {
            let c = store.get_conflict(tenant, id).await.unwrap();
            let mut record: Value =
                serde_json::from_str(c.resolving_json.as_deref().unwrap()).unwrap();
            let old = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(11);
            record[field] = json!(old.to_string());
            store
                .set_conflict_resolving(tenant, id, Some(&record.to_string()))
                .await
                .unwrap();
        }
    };
    age("replaced", "started_at").await;
    age("written", "started_at").await;
    // Decided long ago but taken up again a moment ago: it may be running, so another decision
    // still waits (what `resumed_at` tells a person reading `since`).
    in_progress(
        resolve("written", json!({"option": "keep_remote"})).await,
        "merge",
    )
    .await;
    let aged = shown("written").await;
    assert_eq!(
        aged["resolving"]["resumed_at"],
        json!(resumed_at.to_string())
    );
    age("written", "resumed_at").await;
    // A `keep_both` that wrote only its local copy is replaced: the copy goes, the new decision
    // applies, and the resolution names what it replaced.
    let replaced = resolve("replaced", json!({"option": "keep_local"})).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced = json_of(replaced).await;
    assert_eq!(replaced["state"], "resolved", "{replaced}");
    assert_eq!(replaced["resolution"]["option"], "keep_local");
    assert_eq!(
        replaced["resolution"]["replaced"]["option"], "keep_both",
        "{replaced}"
    );
    assert_eq!(
        replaced["resolution"]["replaced"]["decided_by"],
        decided_by.as_str()
    );
    let remote = raw.request("GET", &item_url("replaced"), &[], None).await;
    assert!(remote.text().await.unwrap().contains("replaced local"));
    // A `merge` that wrote the local side: that side is not what the conflict recorded any more.
    let changed = resolve("written", json!({"option": "keep_remote"})).await;
    assert_eq!(changed.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(changed).await["code"], "conflict_changed");
    // Its own decision, sent again, finishes it.
    let merged = resolve(
        "written",
        json!({"option": "merge", "merged": {"summary": "written merged"}}),
    )
    .await;
    assert_eq!(merged.status(), StatusCode::OK);
    let merged = json_of(merged).await;
    assert_eq!(merged["state"], "resolved", "{merged}");
    assert_eq!(merged["resolution"]["option"], "merge", "{merged}");
    assert_eq!(merged["resolution"]["interrupted"]["how"], "resumed");
    assert_eq!(merged["resolved_by"], decided_by.as_str());
    assert!(
        server.admin_get("/v1/calendar/conflicts?kind=update").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_ne!(sync_and_wait(&server, &id).await["status"], "failed");
    assert_eq!(
        summaries().await,
        [
            "replaced local",
            "resumed local",
            "resumed remote",
            "written merged"
        ]
    );
    let remote = raw.request("GET", &item_url("written"), &[], None).await;
    assert!(remote.text().await.unwrap().contains("written merged"));
    assert_eq!(resolutions_audited(&server).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_in_progress_sqlite() {
    a_resolution_in_progress(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_in_progress_postgres() {
    a_resolution_in_progress(Backend::Postgres).await;
}

/// `sync.local_create_chunk` is the chunk of the engine behind the API's sync: a first sync of six
/// events with chunks of 3 writes each chunk's 3 write-ahead rows before its series (a trigger records,
/// at each series insert, the write-ahead rows not holding a series yet). With the engine's default
/// (250) all six were pending at every insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_import_chunk_reaches_the_engine() {
    use sqlx::Connection as _;
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let cases = [
        ("chunk-1", 2),
        ("chunk-2", 3),
        ("chunk-3", 4),
        ("chunk-4", 5),
        ("chunk-5", 6),
        ("chunk-6", 9),
    ];
    let url = calendar_with_events(&radicale, "chunked", &cases).await;
    let mut config = lan_config();
    config.sync.local_create_chunk = 3;
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .unwrap();
    let mut db = sqlx::SqliteConnection::connect(server.config.database.url.expose())
        .await
        .unwrap();
    for statement in [
        "CREATE TABLE probe (uid TEXT, pending BIGINT)",
        "CREATE TRIGGER probe AFTER INSERT ON series BEGIN INSERT INTO probe VALUES (NEW.uid, \
         (SELECT COUNT(*) FROM item_mappings WHERE series_id IS NULL AND write_ahead)); END",
    ] {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }

    let (_, calendar) = asking_connection(&server, &url).await;
    let pending: Vec<i64> = sqlx::query_scalar("SELECT pending FROM probe ORDER BY rowid")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(pending, vec![3; 6], "pending write-ahead rows per insert");
    assert_eq!(events(&server, &calendar).await.len(), 6);
}
