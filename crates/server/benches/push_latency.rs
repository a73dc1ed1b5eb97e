//! Propagation latency of the push path: an edit made in the Graph emulator (its control API) →
//! Graph change notification → the server's endpoint → the link's `sync.link` job → an incremental sync
//! → the change stream → a WebSocket client. Measured from just before the edit to the WebSocket
//! message, one edit at a time, on loopback. Beside it, in the same run: the emulator's own edit time
//! (the `act` call), the floor under every figure.
//!
//! `scripts/bench-push-latency.sh` runs it (release build); `CALBRIDGE_BENCH_EDITS` sets the count
//! (default 1000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/push_rig/mod.rs"]
mod push_rig;

use std::time::{Duration, Instant};

use calbridge_emulators::{Action, Flavor};
use push_rig::{graph_event, local_summary, next_message, rig, stream};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let edits: usize = std::env::var("CALBRIDGE_BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let rig = rig(Flavor::Microsoft, |_| {}).await;
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
        while local_summary(&rig.server, &calendar).await != ["Standup"] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut socket = stream(&rig.server, &calendar).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        while next_message(&mut socket, Duration::from_millis(300))
            .await
            .is_some()
        {}
        println!("load before: {}", load());
        let mut total = Vec::with_capacity(edits);
        let mut edit_only = Vec::with_capacity(edits);
        let mut missed = 0usize;
        for n in 0..edits {
            let started = Instant::now();
            rig.emu
                .act(Action::Edit {
                    user: None,
                    calendar: None,
                    event_id: remote_id.clone(),
                    changes: json!({"subject": format!("Standup {n}")}),
                })
                .await
                .unwrap();
            edit_only.push(started.elapsed());
            match next_message(&mut socket, Duration::from_secs(10)).await {
                Some(_) => total.push(started.elapsed()),
                None => missed += 1,
            }
            // Anything a slower follow-up run still sends belongs to this edit, not the next.
            while next_message(&mut socket, Duration::from_millis(5))
                .await
                .is_some()
            {}
        }
        println!("load after: {}", load());
        total.sort();
        edit_only.sort();
        println!(
            "edits: {edits}, WebSocket messages: {}, missed: {missed}",
            total.len()
        );
        println!(
            "edit → WebSocket: p50 {}  p90 {}  p99 {}  max {}",
            ms(percentile(&total, 50.0)),
            ms(percentile(&total, 90.0)),
            ms(percentile(&total, 99.0)),
            ms(*total.last().unwrap())
        );
        println!(
            "emulator edit alone (act): p50 {}  p99 {}",
            ms(percentile(&edit_only, 50.0)),
            ms(percentile(&edit_only, 99.0))
        );
        let last = local_summary(&rig.server, &calendar).await;
        println!("final local summary: {last:?}");
        rig.finish().await;
    });
}
