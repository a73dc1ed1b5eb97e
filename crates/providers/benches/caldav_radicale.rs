//! CalDAV reads against a real Radicale, beside Radicale's own time to answer the same
//! sync-collection request (a bare HTTP client sending the identical REPORT).
//!
//! `nice cargo bench -p calbridge-providers --bench caldav_radicale` (sizes: `CALBRIDGE_BENCH_SIZES=1000,10000`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::{CalendarId, CalendarProvider, ChangeSet, KnownVersions, Window};
use support::{PASSWORD, Radicale, USER, budget, http_client, password};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The REPORT Radicale answers, sent by a bare client: the floor any connector pays.
async fn raw_sync(client: &reqwest::Client, url: &str, token: Option<&str>) -> (Duration, String) {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:"><D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"#,
        token.unwrap_or("")
    );
    let started = Instant::now();
    let response = client
        .request(reqwest::Method::from_bytes(b"REPORT").unwrap(), url)
        .basic_auth(USER, Some(PASSWORD))
        .header("Depth", "0")
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 207);
    let text = response.text().await.unwrap();
    (started.elapsed(), text)
}

fn token_of(set: &ChangeSet) -> String {
    set.cursor
        .as_ref()
        .unwrap()
        .as_str()
        .strip_prefix("sync:")
        .unwrap()
        .to_owned()
}

fn known_of(set: &ChangeSet, known: &mut KnownVersions) {
    for id in &set.deletions {
        known.remove(id);
    }
    for item in &set.upserts {
        known.insert(item.id.clone(), item.etag.clone());
    }
}

fn event(i: usize, summary: &str) -> String {
    format!(
        "BEGIN:VEVENT\r\nUID:bench-{i}@t\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T{:02}{:02}00Z\r\nDURATION:PT30M\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\n",
        i % 24,
        i % 60
    )
}

fn calendar(body: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge bench//EN\r\n{body}END:VCALENDAR\r\n"
    )
}

async fn run(n: usize) {
    let radicale = Radicale::start().expect("the benchmark needs Radicale (CALBRIDGE_PYTHON)");
    let raw = radicale.raw();
    let url = radicale.calendar_url("bench");
    raw.mkcalendar(&url, "bench").await;
    let seeded = Instant::now();
    let response = raw
        .put(
            &url,
            &calendar(
                &(0..n)
                    .map(|i| event(i, &format!("Event {i}")))
                    .collect::<String>(),
            ),
        )
        .await;
    assert!(response.status().is_success());
    let seed_time = seeded.elapsed();
    let client = reqwest::Client::new();
    // Radicale builds its item cache on the first report after a bulk import; warm it for both.
    let (first_report, _) = raw_sync(&client, &url, None).await;

    let provider = CaldavProvider::new(
        &http_client(),
        &radicale.base(),
        password(USER, PASSWORD),
        budget(),
    )
    .unwrap();
    let cal = CalendarId::parse(format!("/{USER}/bench/")).unwrap();
    let window = Window::parse(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();

    let (peer_initial, _) = raw_sync(&client, &url, None).await;
    let started = Instant::now();
    let initial = provider
        .changes(&cal, None, &window, &KnownVersions::new())
        .await
        .unwrap();
    let ours_initial = started.elapsed();
    assert_eq!(initial.upserts.len(), n);
    let mut known = KnownVersions::new();
    known_of(&initial, &mut known);
    let cursor = initial.cursor.clone().unwrap();
    let token = token_of(&initial);

    let mut peer_noop = Vec::new();
    let mut ours_noop = Vec::new();
    for _ in 0..5 {
        peer_noop.push(raw_sync(&client, &url, Some(&token)).await.0);
        let started = Instant::now();
        let quiet = provider
            .changes(&cal, Some(&cursor), &window, &known)
            .await
            .unwrap();
        ours_noop.push(started.elapsed());
        assert!(quiet.upserts.is_empty() && quiet.deletions.is_empty());
    }

    // 10 edits and 5 deletions by another client.
    for i in 0..10 {
        let href = initial
            .upserts
            .iter()
            .find(|it| it.content.uid() == Some(&format!("bench-{i}@t")))
            .unwrap()
            .id
            .clone();
        let r = raw
            .put(
                &format!("http://127.0.0.1:{}{}", radicale.port, href.as_str()),
                &calendar(&event(i, &format!("Edited {i}"))),
            )
            .await;
        assert!(r.status().is_success());
    }
    for i in 10..15 {
        let href = initial
            .upserts
            .iter()
            .find(|it| it.content.uid() == Some(&format!("bench-{i}@t")))
            .unwrap()
            .id
            .clone();
        let r = raw
            .request(
                "DELETE",
                &format!("http://127.0.0.1:{}{}", radicale.port, href.as_str()),
                &[],
                None,
            )
            .await;
        assert!(r.status().is_success());
    }
    let (peer_incremental, _) = raw_sync(&client, &url, Some(&token)).await;
    let started = Instant::now();
    let changed = provider
        .changes(&cal, Some(&cursor), &window, &known)
        .await
        .unwrap();
    let ours_incremental = started.elapsed();
    assert_eq!((changed.upserts.len(), changed.deletions.len()), (10, 5));

    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
    println!(
        "| {n} | seed (one collection PUT) | {} ms | first REPORT after import: {} ms | |",
        ms(seed_time),
        ms(first_report)
    );
    println!(
        "| {n} | initial read (sync-collection + {} multigets + parse) | {} ms | bare sync-collection REPORT: {} ms | {} |",
        n.div_ceil(calbridge_providers::caldav::MULTIGET_BATCH),
        ms(ours_initial),
        ms(peer_initial),
        ratio(ours_initial, peer_initial)
    );
    let (ours, peer) = (median(ours_noop), median(peer_noop));
    println!(
        "| {n} | no-op read (median of 5) | {} ms | bare REPORT with token: {} ms | {} |",
        ms(ours),
        ms(peer),
        ratio(ours, peer)
    );
    println!(
        "| {n} | incremental: 10 edits + 5 deletions | {} ms | bare REPORT with token: {} ms | {} |",
        ms(ours_incremental),
        ms(peer_incremental),
        ratio(ours_incremental, peer_incremental)
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CALBRIDGE_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("| events | calbridge CalDAV connector | time | Radicale alone (same run) | ratio |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        runtime.block_on(run(n));
    }
}
