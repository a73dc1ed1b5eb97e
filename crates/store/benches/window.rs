//! Window-query benchmark: a store of N event series (default 100,000; a fifth of them weekly recurring over
//! the rest of the year), one-month windows, first page of 100 and a full walk of a month, on SQLite and
//! PostgreSQL. Beside each, the peer: the plain overlap query (`start < end AND end > start`, same indexes)
//! that the bounded keyset query replaces, as a ratio.
//!
//! `cargo bench -p calbridge-store --bench window` (env: `CALBRIDGE_BENCH_SERIES`, `CALBRIDGE_TEST_POSTGRES_URL`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::Instant;

use calbridge_store::*;
use jiff::Timestamp;
use sqlx::{ConnectOptions, Executor, Row};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

fn ms(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap()
}

async fn populate(store: Arc<dyn Store>, n: usize, writers: usize) -> (TenantId, Vec<CalendarId>) {
    let tenant = store.create_tenant("bench").await.unwrap().id;
    let mut calendars = Vec::new();
    for i in 0..10 {
        let cal = NewCalendar {
            name: format!("cal {i}"),
            time_zone: "Europe/Berlin".into(),
            owner: None,
        };
        calendars.push(store.create_calendar(tenant, cal).await.unwrap().id);
    }
    let year = Timestamp::from_second(1_767_225_600)
        .unwrap()
        .as_millisecond(); // 2026-01-01
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        let calendars = calendars.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(w as u64 + 1);
            let mut batch = Vec::new();
            for i in (w..n).step_by(writers) {
                let start = year + rng.next(365 * 24) as i64 * HOUR;
                let length = (1 + rng.next(4) as i64) * HOUR / 2;
                let rows: Vec<NewOccurrence> = if i % 5 == 0 {
                    (0..)
                        .map(|k| start + k * 7 * DAY)
                        .take_while(|s| *s < year + 365 * DAY)
                        .enumerate()
                        .map(|(k, s)| NewOccurrence {
                            recurrence_id: Some(format!("{k:04}")),
                            start: ms(s),
                            end: ms(s + length),
                            all_day: false,
                            data: Some(format!(r#"{{"summary":"weekly {i}"}}"#)),
                        })
                        .collect()
                } else {
                    vec![NewOccurrence {
                        recurrence_id: None,
                        start: ms(start),
                        end: ms(start + length),
                        all_day: false,
                        data: Some(format!(r#"{{"summary":"event {i}"}}"#)),
                    }]
                };
                let series = NewSeries {
                    calendar_id: calendars[i % calendars.len()],
                    uid: format!("bench-{i}@calbridge"),
                    ical: format!("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:bench-{i}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"),
                    model_json: r#"{"summary":"x"}"#.into(),
                    hash: format!("{i:016x}"),
                    occurrences: OccurrenceSet { rows, expanded_until: Some(ms(year + 365 * DAY)) },
                };
                batch.push(series);
                if batch.len() == 250 {
                    store.create_series_batch(tenant, std::mem::take(&mut batch)).await.unwrap();
                }
            }
            store.create_series_batch(tenant, batch).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  populate: {n} series in {secs:.1} s ({:.0} series/s)",
        n as f64 / secs
    );
    (tenant, calendars)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn months() -> Vec<(Timestamp, Timestamp)> {
    (1..=12)
        .map(|m| {
            let start: Timestamp = format!("2026-{m:02}-01T00:00:00Z").parse().unwrap();
            let end: Timestamp = if m == 12 {
                "2027-01-01T00:00:00Z".parse().unwrap()
            } else {
                format!("2026-{:02}-01T00:00:00Z", m + 1).parse().unwrap()
            };
            (start, end)
        })
        .collect()
}

enum Raw {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

/// The peer: the plain overlap predicate, no lower bound on start, same ORDER BY and LIMIT.
async fn naive_page(
    raw: &Raw,
    tenant: TenantId,
    from: Timestamp,
    to: Timestamp,
    limit: i64,
) -> usize {
    let sql = "SELECT series_id, calendar_id, recurrence_id, start_utc, end_utc, all_day, data FROM occurrences \
               WHERE tenant_id = $1 AND start_utc < $3 AND end_utc > $2 \
               ORDER BY start_utc, series_id, recurrence_id LIMIT $4";
    let (from, to, tenant) = (
        from.as_millisecond(),
        to.as_millisecond(),
        tenant.to_string(),
    );
    match raw {
        Raw::Sqlite(s) => {
            let q = sqlx::query(sql)
                .bind(tenant)
                .bind(from)
                .bind(to)
                .bind(limit);
            q.fetch_all(s.pool())
                .await
                .unwrap()
                .iter()
                .filter(|r| !r.is_empty())
                .count()
        }
        Raw::Pg(p) => {
            let q = sqlx::query(sql)
                .bind(tenant)
                .bind(from)
                .bind(to)
                .bind(limit);
            q.fetch_all(p.pool())
                .await
                .unwrap()
                .iter()
                .filter(|r| !r.is_empty())
                .count()
        }
    }
}

async fn measure(name: &str, store: Arc<dyn Store>, raw: Raw, n: usize) {
    println!("## {name}");
    // SQLite has one writer at a time: more writing tasks would only queue for it.
    let writers = if store.backend() == "sqlite" { 1 } else { 4 };
    let (tenant, calendars) = populate(Arc::clone(&store), n, writers).await;
    if let Raw::Pg(p) = &raw {
        p.pool().execute("ANALYZE").await.unwrap();
    }
    let rounds = 100;
    let mut ours = Vec::new();
    let mut per_calendar = Vec::new();
    let mut peer = Vec::new();
    for round in 0..rounds {
        for (from, to) in months() {
            let query = OccurrenceQuery {
                start: from,
                end: to,
                calendar_id: None,
                after: None,
                limit: 100,
            };
            let t0 = Instant::now();
            let page = store.list_occurrences(tenant, &query).await.unwrap();
            ours.push(t0.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(page.items.len(), 100);

            let query = OccurrenceQuery {
                calendar_id: Some(calendars[round % calendars.len()]),
                ..query
            };
            let t0 = Instant::now();
            store.list_occurrences(tenant, &query).await.unwrap();
            per_calendar.push(t0.elapsed().as_secs_f64() * 1000.0);

            let t0 = Instant::now();
            assert_eq!(naive_page(&raw, tenant, from, to, 100).await, 100);
            peer.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let (p50, p99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    let (c50, c99) = (
        percentile(&mut per_calendar, 0.5),
        percentile(&mut per_calendar, 0.99),
    );
    let (n50, n99) = (percentile(&mut peer, 0.5), percentile(&mut peer, 0.99));
    println!(
        "  first page of 100, one-month window, {} queries:",
        ours.len()
    );
    println!("    bounded keyset query     p50 {p50:.2} ms  p99 {p99:.2} ms");
    println!("    same, one calendar       p50 {c50:.2} ms  p99 {c99:.2} ms");
    println!(
        "    peer: plain overlap      p50 {n50:.2} ms  p99 {n99:.2} ms  (peer/ours p50 = {:.1}x)",
        n50 / p50
    );

    // Walk a whole month (December: every weekly series has a row there) page by page.
    let (from, to) = months()[11];
    let t0 = Instant::now();
    let mut after = None;
    let mut rows = 0;
    let mut pages = 0;
    loop {
        let page = store
            .list_occurrences(
                tenant,
                &OccurrenceQuery {
                    start: from,
                    end: to,
                    calendar_id: None,
                    after,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        rows += page.items.len();
        pages += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let walk = t0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "  full walk of December: {rows} occurrences in {pages} pages, {walk:.0} ms ({:.2} ms/page)",
        walk / pages as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("CALBRIDGE_BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir =
        std::env::temp_dir().join(format!("calbridge-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let sqlite = SqliteStore::connect(&url).await.unwrap();
    sqlite.migrate().await.unwrap();
    measure("SQLite", Arc::new(sqlite.clone()), Raw::Sqlite(sqlite), n).await;
    std::fs::remove_dir_all(&dir).unwrap();

    let admin_url = std::env::var("CALBRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin: sqlx::postgres::PgConnectOptions = admin_url.parse().unwrap();
    let Ok(mut conn) = admin.connect().await else {
        println!("PostgreSQL at {admin_url} unreachable: skipped");
        return;
    };
    let name = format!("calbridge_bench_{}", uuid::Uuid::now_v7().simple());
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap();
    {
        let pg = PgStore::connect_with(admin.clone().database(&name))
            .await
            .unwrap();
        pg.migrate().await.unwrap();
        measure("PostgreSQL", Arc::new(pg.clone()), Raw::Pg(pg.clone()), n).await;
        pg.pool().close().await;
    }
    conn.execute(format!("DROP DATABASE \"{name}\" WITH (FORCE)").as_str())
        .await
        .unwrap();
}
