//! Cheap polling of CalDAV (and ICS) links: the scheduler probes a link every `sync.poll_interval` with
//! one request and syncs only when the probe sees a change. Real server, real SQLite, real Radicale,
//! reached through a counting pass-through proxy so the test sees every request the server makes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use calbridge_server::bootstrap;
use calbridge_server::config::HumanDuration;
use calbridge_server::scheduler::{Scheduler, SchedulerConfig};
use common::proxy::Seen;
use common::{Backend, TestServer, lan_config, node_sync_context};
use serde_json::{Value, json};

async fn event_summaries(server: &TestServer, calendar: &str) -> Vec<String> {
    let page: Value = server
        .get(
            &server.admin,
            &format!("/v1/calendar/events?start=2026-11-01T00:00:00Z&end=2027-01-01T00:00:00Z&calendar_id={calendar}"),
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caldav_link_is_probed_cheaply_and_synced_on_change() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let calendar_url = radicale.calendar_url("work");
    raw.mkcalendar(&calendar_url, "Work").await;
    let put = raw
        .put(
            &format!("{calendar_url}a.ics"),
            &support::event("a@t", "Alpha", "20261125T090000Z"),
        )
        .await;
    assert!(put.status().is_success());
    let proxy = common::proxy::Proxy::to(&radicale.base()).await;
    let (proxied, seen) = (proxy.url.clone(), proxy.seen.clone());

    let mut config = lan_config();
    config.sync.poll_interval = HumanDuration::from_secs(1);
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .unwrap();
    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": "caldav", "name": "Radicale",
                   "credentials": {"url": proxied, "username": support::USER, "password": support::PASSWORD},
                   "sync": {"frequency": "1h"}}),
        )
        .await;
    let connection: Value = created.json().await.unwrap();
    assert_eq!(connection["status"], "active", "{connection}");
    assert_eq!(connection["push"]["mode"], "polling", "{connection}");
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();

    let ctx = node_sync_context(&server.config).await;
    let mut sc = SchedulerConfig::from_config(&server.config, "poller".into());
    sc.tick = Duration::from_millis(100);
    sc.concurrency = 1;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Scheduler::new(ctx, sc).run(stop_rx));

    // The first sync imports the event.
    let started = Instant::now();
    while event_summaries(&server, &calendar).await != ["Alpha"] {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never imported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the sync after the import settle (it sees its own writes as local changes once).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Quiet collection: only one Depth-0 PROPFIND per poll.
    seen.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let quiet: Vec<Seen> = seen.lock().unwrap().clone();
    assert!(
        (3..=6).contains(&quiet.len()),
        "{} requests in 4.2 s at a 1 s poll interval: {quiet:?}",
        quiet.len()
    );
    assert!(
        quiet.iter().all(|(m, d, _)| m == "PROPFIND" && d == "0"),
        "an unchanged collection cost more than one probe per poll: {quiet:?}"
    );

    // An item written on Radicale directly shows up within the poll interval (plus a sync).
    let put = raw
        .put(
            &format!("{calendar_url}b.ics"),
            &support::event("b@t", "Bravo", "20261126T090000Z"),
        )
        .await;
    assert!(put.status().is_success());
    let written = Instant::now();
    loop {
        let mut summaries = event_summaries(&server, &calendar).await;
        summaries.sort();
        if summaries == ["Alpha", "Bravo"] {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "not picked up within 5 s: {summaries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let latency = written.elapsed();
    eprintln!("picked up after {latency:?}");
    assert!(
        seen.lock().unwrap().iter().any(|(m, _, _)| m == "REPORT"),
        "the change was read with a sync"
    );

    // Quiet again after that activity: within a few polls (a sync or two re-arm the date's gate)
    // each poll is one PROPFIND of the collection date again, not of the token, which Radicale
    // computes from the whole collection (before, a link stayed on the token after any change).
    tokio::time::sleep(Duration::from_millis(5000)).await;
    seen.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let settled: Vec<Seen> = seen.lock().unwrap().clone();
    assert!(
        (2..=5).contains(&settled.len())
            && settled
                .iter()
                .all(|(m, d, asks)| m == "PROPFIND" && d == "0" && asks == "getlastmodified"),
        "quiet polls after a change: {settled:?}"
    );

    // A link whose time-conflict detection failed is synced at its next poll although the probe
    // finds the collection quiet, and the run that redoes the detection clears the mark.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let tenant = bootstrap::tenant_by_name_or_id(server.store.as_ref(), bootstrap::DEFAULT_TENANT)
        .await
        .unwrap()
        .id;
    let connection_id = connection["id"].as_str().unwrap().parse().unwrap();
    let link = server
        .store
        .list_links(tenant, connection_id)
        .await
        .unwrap()
        .remove(0);
    let failed = server
        .store
        .create_sync_run(tenant, Some(connection_id), false)
        .await
        .unwrap();
    server
        .store
        .set_time_detection_due(
            tenant,
            link.id,
            calbridge_store::TimeDetectionMark {
                run: failed.id,
                seen: None,
            },
        )
        .await
        .unwrap();
    let marked = Instant::now();
    while server
        .store
        .get_link(tenant, link.id)
        .await
        .unwrap()
        .time_detection_due
        .is_some()
    {
        assert!(
            marked.elapsed() < Duration::from_secs(5),
            "a quiet probe skipped a link whose time detection is due"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}
