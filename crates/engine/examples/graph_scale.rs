//! Emulator scale benchmark: the engine's `sync_link` against a Microsoft Graph mailbox served by the
//! project's Graph emulator (in process, loopback HTTP), the local side a SQLite store.
//!
//! For each size (default 1,000 and 100,000 events; `CALBRIDGE_BENCH_GRAPH_SIZES=1000,100000`):
//! initial sync (time, events/s, requests, bytes), a no-op sync (requests: the target is one per linked
//! calendar), and an incremental sync after 10 edits made in the mailbox. The incremental time at the
//! largest size over the smallest is the "cost follows the changes" ratio (target ≤ 1.5).
//!
//! The mailboxes keep one density: 1,000 events over ±180 days (about 11 busy occurrences a day), and
//! a larger one over a proportionally longer span (100,000 over ±49 years), so the sizes differ in
//! size only. With `CALBRIDGE_BENCH_GRAPH_SPREAD=fixed` every size is packed into ±180 days instead:
//! 100,000 events are then 100 times as dense, and an edited event overlaps 100 times as many others,
//! which the time-conflict detection must look at (cost that follows the density, not the size).
//!
//! Run: `scripts/bench-graph-scale.sh` (= `cargo run --release -p calbridge-engine --example graph_scale`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use calbridge_emulators::{Action, Emulator, EmulatorConfig, Flavor, SeedSpec};
use calbridge_engine::{EngineConfig, LinkSync, RunReport, sync_link};
use calbridge_providers::graph::{GraphConfig, GraphProvider};
use calbridge_providers::http::{AddressPolicy, HttpClient, HttpConfig, Secret};
use calbridge_providers::oauth::{Access, StaticToken};

use calbridge_store::{
    ConnectionStatus, LinkId, NewCalendar, NewConnection, NewLink, Provider, Store, TenantId,
};
use jiff::Timestamp;

struct Setup {
    emulator: Emulator,
    store: Arc<dyn Store>,
    tenant: TenantId,
    connection: calbridge_store::ConnectionId,
    link: LinkId,
    provider: GraphProvider,
    _dir: tempfile::TempDir,
}

/// Half the span the seeded events start in, in days: constant density unless told otherwise.
fn spread_days(events: usize) -> u32 {
    let fixed = std::env::var("CALBRIDGE_BENCH_GRAPH_SPREAD").is_ok_and(|v| v == "fixed");
    if fixed {
        180
    } else {
        u32::try_from((180 * events / 1000).max(180)).unwrap()
    }
}

async fn setup(events: usize) -> Setup {
    let emulator = Emulator::start(
        Flavor::Microsoft,
        EmulatorConfig {
            requests_per_window: u32::MAX,
            max_concurrent_per_mailbox: 64,
            access_token_lifetime_secs: 24 * 3600,
            ..EmulatorConfig::default()
        },
    )
    .await
    .unwrap();
    let today = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let t = Instant::now();
    let spread = spread_days(events);
    emulator
        .seed(&SeedSpec {
            events_per_calendar: events,
            anchor: today,
            spread_days: spread,
            ..SeedSpec::default()
        })
        .await
        .unwrap();
    println!(
        "  seeded {events} events over ±{spread} days ({:.1} series a day) in the emulator in {:.1} s (not measured)",
        events as f64 / (2.0 * f64::from(spread)),
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = calbridge_store::open(&url).await.unwrap();
    let tenant = store.create_tenant("bench").await.unwrap().id;
    let calendar = store
        .create_calendar(
            tenant,
            NewCalendar {
                name: "Work".into(),
                time_zone: "UTC".into(),
                owner: None,
            },
        )
        .await
        .unwrap();
    // The seeded events lie within ±`spread` days of today: a range of whole years a little wider
    // takes them all.
    let years = spread / 365 + 1;
    let range = format!(r#"{{"range":{{"past":"P{years}Y","future":"P{years}Y"}}}}"#);
    let connection = store
        .create_connection(
            tenant,
            NewConnection {
                provider: Provider::Microsoft,
                name: "graph".into(),
                calendar_id: calendar.id,
                credentials: None,
                sync_options_json: range,
                status: ConnectionStatus::Active,
            },
        )
        .await
        .unwrap();
    let remote_calendar = emulator.calendars(None).unwrap().remove(0);
    let link = store
        .create_link(
            tenant,
            NewLink {
                connection_id: connection.id,
                remote_calendar_id: remote_calendar,
                remote_name: Some("Calendar".into()),
            },
        )
        .await
        .unwrap();
    let http = HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        request_timeout: Duration::from_secs(600),
        ..HttpConfig::default()
    })
    .unwrap();
    let token = emulator.token(None).unwrap();
    let base = url::Url::parse(&format!("{}/v1.0/", emulator.base_url())).unwrap();
    let provider = GraphProvider::new(
        &http,
        GraphConfig::new(base, Access::ReadWrite),
        Arc::new(StaticToken(Secret::new(token))),
    );
    Setup {
        emulator,
        store,
        tenant,
        connection: connection.id,
        link: link.id,
        provider,
        _dir: dir,
    }
}

impl Setup {
    async fn sync(&self) -> (RunReport, Duration) {
        let connection = self
            .store
            .get_connection(self.tenant, self.connection)
            .await
            .unwrap();
        let link = self.store.get_link(self.tenant, self.link).await.unwrap();
        let config = EngineConfig::default();
        let t = Instant::now();
        let report = sync_link(LinkSync {
            store: self.store.as_ref(),
            provider: &self.provider,
            tenant: self.tenant,
            connection: &connection,
            link: &link,
            config: &config,
            now: Timestamp::now(),
            full: false,
            run: None,
        })
        .await
        .unwrap();
        let took = t.elapsed();
        assert!(
            report.errors.is_empty(),
            "errors: {:?}",
            &report.errors[..report.errors.len().min(5)]
        );
        (report, took)
    }

    /// Ten edits in the mailbox, as a person makes them in Outlook (subjects of ten linked events).
    async fn edit_ten(&self, round: usize) {
        let mappings = self
            .store
            .list_mappings(self.tenant, self.link)
            .await
            .unwrap();
        let step = (mappings.len() / 10).max(1);
        for (n, m) in mappings.iter().step_by(step).take(10).enumerate() {
            self.emulator
                .act(Action::Edit {
                    user: None,
                    calendar: None,
                    event_id: m.remote_id.clone(),
                    changes: serde_json::json!({ "subject": format!("Edited {round}.{n}") }),
                })
                .await
                .unwrap();
        }
    }
}

fn counts(report: &RunReport) -> String {
    report
        .counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("CALBRIDGE_BENCH_GRAPH_SIZES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let mut incremental = Vec::new();
    for &size in &sizes {
        println!("== {size} events");
        let s = setup(size).await;
        let (initial, took) = s.sync().await;
        let local = s.store.list_mappings(s.tenant, s.link).await.unwrap().len();
        println!(
            "  initial sync: {:.2} s, {local} series linked, {:.0} series/s, {} requests, {:.1} MB ({})",
            took.as_secs_f64(),
            local as f64 / took.as_secs_f64(),
            initial.requests,
            initial.bytes as f64 / 1e6,
            counts(&initial)
        );
        let (noop, took) = s.sync().await;
        println!(
            "  no-op sync: {:.1} ms, {} requests, {} bytes ({})",
            took.as_secs_f64() * 1e3,
            noop.requests,
            noop.bytes,
            counts(&noop)
        );
        let mut best = Duration::MAX;
        // More rounds (`CALBRIDGE_BENCH_GRAPH_ROUNDS`) leave time to attach a profiler.
        let rounds: usize = std::env::var("CALBRIDGE_BENCH_GRAPH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        for round in 0..rounds {
            s.edit_ten(round).await;
            let (report, took) = s.sync().await;
            println!(
                "  incremental sync after 10 edits (round {round}): {:.1} ms, {} requests, {} bytes ({})",
                took.as_secs_f64() * 1e3,
                report.requests,
                report.bytes,
                counts(&report)
            );
            assert_eq!(
                report.counts.get("update_local").copied().unwrap_or(0),
                10,
                "ten edits come in as ten local updates"
            );
            best = best.min(took);
        }
        println!(
            "  incremental best of {rounds}: {:.1} ms",
            best.as_secs_f64() * 1e3
        );
        incremental.push((size, best));
        s.emulator.stop().await;
    }
    if let (Some((small, a)), Some((large, b))) = (incremental.first(), incremental.last())
        && small != large
    {
        println!(
            "incremental {large} vs {small} events: {:.2}x (target <= 1.5)",
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}
