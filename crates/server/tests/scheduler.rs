//! The scheduler through the store's leased jobs: two schedulers (as two server processes would be, each
//! with its own connection pool) on one fresh PostgreSQL database and one Radicale link never run that
//! link at once, and keep syncing it at its frequency.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use calbridge_server::bootstrap;
use calbridge_server::scheduler::{Scheduler, SchedulerConfig, frequency_of, last_full_slot};
use common::{Backend, TestServer, lan_config, node_sync_context};
use jiff::SignedDuration;
use serde_json::json;

#[test]
fn frequency_and_full_slot() {
    let default = SignedDuration::from_secs(900);
    assert_eq!(
        frequency_of(r#"{"frequency":"5m"}"#, default),
        SignedDuration::from_secs(300)
    );
    assert_eq!(
        frequency_of(r#"{"sync":{"frequency":"1h"}}"#, default),
        SignedDuration::from_secs(3600)
    );
    assert_eq!(frequency_of(r#"{"frequency":"soon"}"#, default), default);
    assert_eq!(frequency_of("{}", default), default);
    let tz = jiff::tz::TimeZone::UTC;
    let at = jiff::civil::time(3, 0, 0, 0);
    let before: jiff::Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
    let after: jiff::Timestamp = "2026-11-21T04:00:00Z".parse().unwrap();
    assert_eq!(
        last_full_slot(before, at, &tz).unwrap().to_string(),
        "2026-11-20T03:00:00Z"
    );
    assert_eq!(
        last_full_slot(after, at, &tz).unwrap().to_string(),
        "2026-11-21T03:00:00Z"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_on_one_postgres_never_overlap_on_a_link() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let names: Vec<(String, String)> = (0..20)
        .map(|n| (format!("e{n}"), format!("E {n}")))
        .collect();
    let events: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|(uid, summary)| (uid.as_str(), summary.as_str(), "20261125T090000Z"))
        .collect();
    radicale.work_calendar(&events).await;
    let Some(server) = TestServer::start_with(Backend::Postgres, lan_config()).await else {
        return;
    };
    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Radicale",
                   "credentials": {"url": radicale.base(), "username": support::USER, "password": support::PASSWORD},
                   "sync": {"frequency": "1s"}}),
        )
        .await;
    let connection: serde_json::Value = created.json().await.unwrap();
    assert_eq!(connection["status"], "active", "{connection}");
    assert_eq!(connection["links"].as_array().unwrap().len(), 1);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for node in ["node-a", "node-b"] {
        // Each node opens its own pool on the same database.
        let ctx = node_sync_context(&server.config).await;
        let mut sc = SchedulerConfig::from_config(&server.config, node.to_owned());
        sc.tick = Duration::from_millis(100);
        sc.concurrency = 3;
        let scheduler = Scheduler::new(ctx, sc);
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(scheduler.run(stop)));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_tx.send(true).unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }

    let tenant = bootstrap::tenant_by_name_or_id(server.store.as_ref(), bootstrap::DEFAULT_TENANT)
        .await
        .unwrap();
    let connection_id = connection["id"].as_str().unwrap().parse().unwrap();
    let runs = server
        .store
        .list_sync_runs(tenant.id, Some(connection_id), 500)
        .await
        .unwrap();
    // At a 1 s frequency over 6 s: several runs, yet far fewer than two nodes × three workers racing.
    assert!(runs.len() >= 2, "only {} runs", runs.len());
    assert!(
        runs.len() <= 8,
        "{} runs: the link ran more often than its frequency",
        runs.len()
    );
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp)> = runs
        .iter()
        .map(|r| (r.started_at, r.finished_at.expect("every run finished")))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "runs overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        runs.iter().all(|r| r.status.as_str() == "succeeded"),
        "{runs:?}"
    );
    // The events arrived once each.
    let page: serde_json::Value = server
        .get(&server.admin, &format!("/v1/calendar/events?start=2026-11-01T00:00:00Z&end=2027-01-01T00:00:00Z&calendar_id={}", connection["calendar_id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
}

/// Runs left `running` by a dead process are closed as interrupted by the scheduler of another node on
/// the same PostgreSQL (at its start and periodically), while a run whose process still beats is never
/// closed, however long it takes, nor one whose node is configured with a longer bound than the
/// reaper's and has not been silent that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_closes_dead_runs_and_never_a_live_one() {
    let Some(server) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let tenant = bootstrap::tenant_by_name_or_id(server.store.as_ref(), bootstrap::DEFAULT_TENANT)
        .await
        .unwrap()
        .id;
    // Node A runs two syncs: one whose process dies at once (it never beats), one that keeps working
    // (beating) for longer than the threshold.
    let node_a = bootstrap::open_store(&server.config).await.unwrap();
    let dead = node_a.create_sync_run(tenant, None, false).await.unwrap();
    let live = node_a.create_sync_run(tenant, None, false).await.unwrap();
    // Node C (`sync.run_stale_after = 1h`) beats every 6 minutes: one beat, then silence throughout.
    let patient = node_a.create_sync_run(tenant, None, false).await.unwrap();
    assert!(
        node_a
            .touch_sync_run(
                tenant,
                patient.id,
                jiff::Timestamp::now(),
                Duration::from_secs(3600)
            )
            .await
            .unwrap()
    );

    // Node B: a scheduler (its own pool) with a 3 s threshold.
    let ctx = node_sync_context(&server.config).await;
    let mut sc = SchedulerConfig::from_config(&server.config, "node-b".into());
    sc.tick = Duration::from_millis(100);
    sc.run_stale_after = SignedDuration::from_secs(3);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Scheduler::new(ctx, sc).run(stop_rx));

    // A's long sync beats every half second for 7 s: more than twice the threshold.
    calbridge_engine::beating(
        node_a.as_ref(),
        tenant,
        live.id,
        calbridge_engine::Heartbeat {
            every: Duration::from_millis(500),
            stale_after: Duration::from_secs(3),
        },
        tokio::time::sleep(Duration::from_secs(7)),
    )
    .await;
    let run = |id| {
        let store = server.store.clone();
        async move { store.get_sync_run(tenant, id).await.unwrap() }
    };
    assert_eq!(
        run(live.id).await.status.as_str(),
        "running",
        "a live run was closed"
    );
    let closed = run(dead.id).await;
    assert_eq!(closed.status.as_str(), "failed", "{closed:?}");
    assert!(closed.finished_at.is_some());
    let errors: Vec<serde_json::Value> = serde_json::from_str(&closed.errors_json).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["class"], "interrupted");
    assert!(
        errors[0]["cause"]
            .as_str()
            .unwrap()
            .contains("no heartbeat for 3s"),
        "{errors:?}"
    );

    // Now A's process "dies" too (no more beats, the run never closed): B closes it within the
    // threshold and a reaping period.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if run(live.id).await.status.as_str() == "failed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run of the dead node stayed running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A's process was only paused: it resumes and reports success. The run stays closed as B left it
    // (B announced it); the report is kept beside the interruption.
    let reaped = run(live.id).await;
    let late = node_a
        .update_sync_run(
            tenant,
            live.id,
            calbridge_store::SyncRunUpdate {
                status: calbridge_store::SyncRunStatus::Succeeded,
                counts_json: r#"{"created":1}"#.into(),
                requests: 3,
                bytes: 4,
                errors_json: "[]".into(),
                finished_at: Some(jiff::Timestamp::now()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (late.status, late.finished_at),
        (reaped.status, reaped.finished_at)
    );
    assert_eq!((late.requests, late.bytes), (3, 4));
    let errors: Vec<serde_json::Value> = serde_json::from_str(&late.errors_json).unwrap();
    let classes: Vec<&str> = errors.iter().filter_map(|e| e["class"].as_str()).collect();
    assert_eq!(classes, ["interrupted", "late_report"], "{errors:?}");
    // C's run, silent for longer than B's 3 s (more than 10 s now) but not C's hour, is alive.
    assert_eq!(run(patient.id).await.status.as_str(), "running");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}
