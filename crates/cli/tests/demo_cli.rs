//! `calbridge demo` as a newcomer runs it: the real binary starts the service and both emulators, connects
//! them through OAuth, syncs, and leaves one conflict open; the test then uses the printed key and
//! resolves that conflict through the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_calbridge");

/// Stops the demo even when an assertion fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_comes_up_connected_with_a_conflict_to_resolve() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--events", "25"])
        .env_remove("CALBRIDGE_CONFIG")
        .env("CALBRIDGE_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);

    // The summary line arrives once set-up is done; the demo promises "within a minute".
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(json) = line.strip_prefix("DEMO_SUMMARY ") {
                let _ = tx.send(json.to_string());
            }
        }
    });
    let summary: Value = serde_json::from_str(
        &rx.recv_timeout(Duration::from_secs(120))
            .expect("the demo printed no summary within two minutes"),
    )
    .unwrap();
    let setup_time = started.elapsed();
    eprintln!("demo set up in {setup_time:?}");

    let api = summary["api"].as_str().unwrap().to_string();
    let key = summary["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("cbk_"), "an API key: {key}");
    let connections = summary["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2);
    let providers: Vec<&str> = connections
        .iter()
        .map(|c| c["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["microsoft", "google"]);
    for c in connections {
        assert_eq!(c["status"], "active", "{c}");
    }
    assert!(
        summary["events_in_window"].as_u64().unwrap() >= 25,
        "events from both emulators were imported: {summary}"
    );

    let http = reqwest::Client::new();
    // Events from both providers are in calbridge.
    for calendar in summary["calendars"].as_array().unwrap() {
        let id = calendar["id"].as_str().unwrap();
        let now = jiff::Timestamp::now();
        let day = jiff::SignedDuration::from_hours(24);
        let page: Value = http
            .get(format!(
                "{api}/v1/calendar/events?calendar_id={id}&start={}&end={}",
                now - day * 90,
                now + day * 90
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !page["items"].as_array().unwrap().is_empty(),
            "calendar {id} has synced events"
        );
    }

    // The open conflict is an update conflict on the event both sides changed.
    let conflicts: Value = http
        .get(format!("{api}/v1/calendar/conflicts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = conflicts["items"].as_array().unwrap();
    let updates: Vec<&Value> = items.iter().filter(|c| c["kind"] == "update").collect();
    assert_eq!(updates.len(), 1, "{conflicts}");
    let conflict = updates[0];
    assert_eq!(conflict["id"], summary["open_conflict"]["id"]);
    assert_eq!(
        items.len() as u64 - 1,
        summary["other_open_conflicts"].as_u64().unwrap()
    );
    assert!(
        items
            .iter()
            .all(|c| c["kind"] == "update" || c["kind"] == "time"),
        "{conflicts}"
    );
    assert!(
        conflict["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.ends_with("SUMMARY"))),
        "{conflict}"
    );
    let id = conflict["id"].as_str().unwrap();

    // Resolving it applies the local version to Outlook and closes it.
    let resolved = http
        .post(format!("{api}/v1/calendar/conflicts/{id}/resolve"))
        .bearer_auth(&key)
        .json(&json!({"option": "keep_local"}))
        .send()
        .await
        .unwrap();
    let status = resolved.status();
    let body = resolved.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    let open: Value = http
        .get(format!("{api}/v1/calendar/conflicts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let open_items = open["items"].as_array().unwrap();
    assert_eq!(open_items.len(), items.len() - 1, "{open}");
    assert!(open_items.iter().all(|c| c["id"] != id), "{open}");
    drop(running);
}
