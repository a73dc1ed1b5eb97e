//! Delta / sync pages served per second by the emulators for a 100,000-event mailbox, over loopback HTTP,
//! beside the same pages served as pre-rendered bytes by a bare axum route (the HTTP + JSON floor).
//!
//! Run: `cargo bench -p calbridge-emulators --bench delta` (or `scripts/bench-emulator.sh`).
//! `EMU_BENCH_EVENTS` overrides the mailbox size.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use calbridge_emulators::{Action, Emulator, EmulatorConfig, Flavor, SeedSpec};
use serde_json::{Value, json};

fn config() -> EmulatorConfig {
    EmulatorConfig {
        requests_per_window: u32::MAX,
        max_concurrent_per_mailbox: 64,
        ..EmulatorConfig::default()
    }
}

struct Round {
    pages: usize,
    items: usize,
    bytes: usize,
    elapsed: Duration,
    last_body: Option<bytes_holder::Holder>,
    next: String,
}

mod bytes_holder {
    #[derive(Clone)]
    pub struct Holder(pub Vec<u8>);
}

async fn graph_round(http: &reqwest::Client, token: &str, first: &str, page: usize) -> Round {
    let mut url = first.to_string();
    let (mut pages, mut items, mut bytes) = (0, 0, 0);
    let mut sample = None;
    let t = Instant::now();
    loop {
        let body = http
            .get(&url)
            .bearer_auth(token)
            .header("Prefer", format!("odata.maxpagesize={page}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        pages += 1;
        bytes += body.len();
        let n = v["value"].as_array().unwrap().len();
        items += n;
        if n == page && sample.is_none() {
            sample = Some(bytes_holder::Holder(body.to_vec()));
        }
        if let Some(next) = v.get("@odata.nextLink") {
            url = next.as_str().unwrap().to_string();
        } else {
            return Round {
                pages,
                items,
                bytes,
                elapsed: t.elapsed(),
                last_body: sample,
                next: v["@odata.deltaLink"].as_str().unwrap().to_string(),
            };
        }
    }
}

async fn google_round(http: &reqwest::Client, token: &str, base: &str, query: &str) -> Round {
    let (mut pages, mut items, mut bytes) = (0, 0, 0);
    let mut page_token: Option<String> = None;
    let t = Instant::now();
    loop {
        let url = match &page_token {
            Some(p) => format!("{base}?{query}&pageToken={p}"),
            None => format!("{base}?{query}"),
        };
        let body = http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        pages += 1;
        bytes += body.len();
        items += v["items"].as_array().unwrap().len();
        if let Some(p) = v.get("nextPageToken") {
            page_token = Some(p.as_str().unwrap().to_string());
        } else {
            return Round {
                pages,
                items,
                bytes,
                elapsed: t.elapsed(),
                last_body: None,
                next: v["nextSyncToken"].as_str().unwrap().to_string(),
            };
        }
    }
}

/// The floor: the same page bytes from a route that does nothing but hand them out.
async fn floor(http: &reqwest::Client, page: Vec<u8>, requests: usize) -> Duration {
    let page = axum::body::Bytes::from(page);
    let app = Router::new().route(
        "/page",
        get(move || {
            let page = page.clone();
            async move { ([("content-type", "application/json")], page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/page");
    let t = Instant::now();
    for _ in 0..requests {
        let body = http
            .get(&url)
            .bearer_auth("x")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let _: Value = serde_json::from_slice(&body).unwrap();
    }
    t.elapsed()
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("EMU_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let http = reqwest::Client::new();
    println!(
        "# emulator delta benchmark: 1 calendar x {events} events (seeded mix), loopback HTTP, one client"
    );

    // ---------------- Graph
    let graph = Emulator::start(Flavor::Microsoft, config()).await.unwrap();
    let t = Instant::now();
    let created = graph
        .seed(&SeedSpec {
            events_per_calendar: events,
            seed: 1,
            ..SeedSpec::default()
        })
        .await
        .unwrap();
    println!(
        "graph seed: {created} events (+exceptions) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let token = graph.token(None).unwrap();
    let window = "startDateTime=2025-01-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z";
    let first = format!("{}/v1.0/me/calendarView/delta?{window}", graph.base_url());
    for page in [100, 1000] {
        let r = graph_round(&http, &token, &first, page).await;
        println!(
            "graph round 1 (full), maxpagesize={page}: {} pages, {} items, {:.1} MB in {:.2} s = {:.0} pages/s, {:.0} events/s",
            r.pages,
            r.items,
            r.bytes as f64 / 1e6,
            r.elapsed.as_secs_f64(),
            per_sec(r.pages, r.elapsed),
            per_sec(r.items, r.elapsed)
        );
        if page == 100 {
            let sample = r.last_body.clone().unwrap().0;
            let n = 500;
            let d = floor(&http, sample, n).await;
            let emu_rate = per_sec(r.pages, r.elapsed);
            let floor_rate = per_sec(n, d);
            println!(
                "  floor: same 100-event page as static bytes from bare axum: {floor_rate:.0} pages/s -> emulator/floor = {:.2}",
                emu_rate / floor_rate
            );
        }
        // Incremental: 1,000 edits spread over the mailbox, then the next round.
        let ids: Vec<String> = {
            let list: Value = http
                .get(format!("{}/v1.0/me/events?$top=1000", graph.base_url()))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            list["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect()
        };
        for id in &ids {
            graph
                .act(Action::Edit {
                    user: None,
                    calendar: None,
                    event_id: id.clone(),
                    changes: json!({"subject": format!("edited {page}")}),
                })
                .await
                .unwrap();
        }
        let inc = graph_round(&http, &token, &r.next, page).await;
        println!(
            "graph round 2 ({} edits), maxpagesize={page}: {} pages, {} items in {:.3} s = {:.0} pages/s",
            ids.len(),
            inc.pages,
            inc.items,
            inc.elapsed.as_secs_f64(),
            per_sec(inc.pages, inc.elapsed)
        );
        // Empty round on the full mailbox: cost is O(changes) = O(1).
        let n = 500;
        let t = Instant::now();
        for _ in 0..n {
            let _ = graph_round(&http, &token, &inc.next, page).await;
        }
        println!(
            "graph empty delta round on {events} events: {:.0} rounds/s ({:.3} ms each)",
            per_sec(n, t.elapsed()),
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
    graph.stop().await;

    // ---------------- Google
    let google = Emulator::start(Flavor::Google, config()).await.unwrap();
    let t = Instant::now();
    let created = google
        .seed(&SeedSpec {
            events_per_calendar: events,
            seed: 1,
            ..SeedSpec::default()
        })
        .await
        .unwrap();
    println!(
        "google seed: {created} events in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let token = google.token(None).unwrap();
    let base = format!("{}/calendar/v3/calendars/primary/events", google.base_url());
    let r = google_round(&http, &token, &base, "maxResults=250").await;
    println!(
        "google full sync, maxResults=250: {} pages, {} items, {:.1} MB in {:.2} s = {:.0} pages/s, {:.0} events/s",
        r.pages,
        r.items,
        r.bytes as f64 / 1e6,
        r.elapsed.as_secs_f64(),
        per_sec(r.pages, r.elapsed),
        per_sec(r.items, r.elapsed)
    );
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        let _ = google_round(
            &http,
            &token,
            &base,
            &format!("maxResults=250&syncToken={}", r.next),
        )
        .await;
    }
    println!(
        "google empty incremental sync on {events} events: {:.0} rounds/s",
        per_sec(n, t.elapsed())
    );
    google.stop().await;
}
