//! Crash test: the real `calbridge sync` killed with SIGKILL at random moments of a sync, again and
//! again, with edits on both sides between the crashes, then run to quiescence. Afterwards the local
//! store and Radicale hold exactly the events the test's own record says they should: the same UIDs,
//! each once, with the same content (normalized hash) on both sides. Nothing lost, nothing duplicated.
//!
//! Kill delays come from a seeded generator; the seed is printed (`CALBRIDGE_CRASH_SEED=<n>` replays
//! a run's choices; timing on a loaded machine still varies).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::{CalendarId, CalendarProvider, KnownVersions, Window};
use calbridge_store::{
    ConflictFilter, ConflictState, NewSeries, OccurrenceSet, SeriesUpdate, Store, SyncRunStatus,
};
use jiff::{Timestamp, ToSpan};

const BIN: &str = env!("CARGO_BIN_EXE_calbridge");
/// Kills that must land inside a running sync (the run's row was opened and never closed).
const LANDED_KILLS: usize = 20;
const MAX_ROUNDS: usize = 60;
const SEED_EACH_SIDE: usize = 100;

/// splitmix64: small, seedable, no dependency on a generator crate's API.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Created and changed only in the local store (by "the application").
    Local,
    /// Created and changed only on Radicale (by "another calendar app").
    Remote,
}

#[derive(Debug, Clone)]
struct Expected {
    owner: Owner,
    summary: String,
    location: String,
    day: i64,
}

fn ics(uid: &str, e: &Expected) -> String {
    let day = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(e.day.days())
        .unwrap();
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge crash test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{}T{:02}0000Z\r\nDURATION:PT1H\r\nSUMMARY:{}\r\nLOCATION:{}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        day.strftime("%Y%m%d"),
        8 + e.day % 9,
        e.summary,
        e.location
    )
}

/// UID, SUMMARY, LOCATION and the model's normalized hash of one iCalendar object holding one series.
fn digest(ical: &str) -> (String, String, String, String) {
    let calendar = calbridge_model::ical::parse(ical.as_bytes()).unwrap();
    assert_eq!(calendar.series().len(), 1, "one series per object: {ical}");
    let series = &calendar.series()[0];
    let prop = |name: &str| {
        ical.replace("\r\n ", "")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_owned))
            .unwrap_or_default()
    };
    (
        series.uid().to_owned(),
        prop("SUMMARY"),
        prop("LOCATION"),
        calbridge_model::normalized_hash(series).to_string(),
    )
}

struct World {
    radicale: support::Radicale,
    store: std::sync::Arc<dyn Store>,
    cli: common::CliDatabase,
    provider: CaldavProvider,
    _dir: tempfile::TempDir,
}

impl World {
    fn href(&self, uid: &str) -> String {
        format!("{}{uid}.ics", self.radicale.calendar_url("work"))
    }

    async fn remote_put(&self, uid: &str, e: &Expected) {
        let put = self.radicale.raw().put(&self.href(uid), &ics(uid, e)).await;
        assert!(put.status().is_success(), "PUT {uid}: {}", put.status());
    }

    async fn remote_delete(&self, uid: &str) {
        let deleted = self
            .radicale
            .raw()
            .request("DELETE", &self.href(uid), &[], None)
            .await;
        assert!(
            deleted.status().is_success(),
            "DELETE {uid}: {}",
            deleted.status()
        );
    }

    async fn local_create(&self, uid: &str, e: &Expected) {
        self.store
            .create_series(
                self.cli.tenant,
                NewSeries {
                    calendar_id: self.cli.calendar,
                    uid: uid.to_owned(),
                    ical: ics(uid, e),
                    model_json: "{}".into(),
                    hash: "test".into(),
                    occurrences: OccurrenceSet::default(),
                },
            )
            .await
            .unwrap();
    }

    async fn local_edit(&self, uid: &str, e: &Expected) {
        let series = self
            .store
            .get_series_by_uid(self.cli.tenant, self.cli.calendar, uid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("local {uid} is gone"));
        self.store
            .update_series(
                self.cli.tenant,
                series.id,
                series.version,
                SeriesUpdate {
                    ical: ics(uid, e),
                    model_json: "{}".into(),
                    hash: "test".into(),
                    occurrences: OccurrenceSet::default(),
                },
            )
            .await
            .unwrap();
    }

    async fn local_delete(&self, uid: &str) {
        let series = self
            .store
            .get_series_by_uid(self.cli.tenant, self.cli.calendar, uid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("local {uid} is gone"));
        self.store
            .delete_series(self.cli.tenant, series.id, series.version)
            .await
            .unwrap();
    }

    fn sync_command(&self) -> Command {
        let mut command = self.cli.command(
            BIN,
            &["sync", "--connection", &self.cli.connection.to_string()],
        );
        // The runs carry the staleness bound of the process that runs them: 3 s, as for `serve`.
        command
            .env("CALBRIDGE_SYNC__RUN_STALE_AFTER", "3s")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LOG");
        command
    }

    /// Runs left open (`running`): each is a sync a kill cut short.
    async fn open_runs(&self) -> usize {
        self.store
            .list_sync_runs(self.cli.tenant, Some(self.cli.connection), 500)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.status == SyncRunStatus::Running)
            .count()
    }

    /// UID → (summary, location, hash) per live local series; a UID twice is a failure.
    async fn local_items(&self) -> BTreeMap<String, (String, String, String)> {
        let mut out = BTreeMap::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_series(self.cli.tenant, self.cli.calendar, after, 500)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() == 500;
            for s in page {
                let (uid, summary, location, hash) = digest(&s.ical);
                assert_eq!(uid, s.uid);
                assert!(
                    out.insert(uid.clone(), (summary, location, hash)).is_none(),
                    "local {uid} is duplicated"
                );
            }
            if !full {
                break;
            }
        }
        out
    }

    /// The same for Radicale, read with a full listing.
    async fn remote_items(&self) -> BTreeMap<String, (String, String, String)> {
        let window = Window::parse(
            "2000-01-01T00:00:00Z".parse().unwrap(),
            "2100-01-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let calendar = CalendarId::parse(format!("/{}/work/", support::USER)).unwrap();
        let set = self
            .provider
            .changes(&calendar, None, &window, &KnownVersions::new())
            .await
            .unwrap();
        assert!(set.failures.is_empty(), "{:?}", set.failures);
        let mut out = BTreeMap::new();
        for item in set.upserts {
            let (uid, summary, location, hash) = digest(item.content.as_ical());
            assert!(
                out.insert(uid.clone(), (summary, location, hash)).is_none(),
                "remote {uid} is duplicated ({})",
                item.id.as_str()
            );
        }
        out
    }
}

async fn world() -> Option<World> {
    let radicale = support::Radicale::start()?;
    radicale
        .raw()
        .mkcalendar(&radicale.calendar_url("work"), "Work")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (cli, store) = common::CliDatabase::caldav(
        dir.path(),
        &radicale.base(),
        support::USER,
        support::PASSWORD,
    )
    .await;
    let provider = radicale.provider();
    Some(World {
        radicale,
        store,
        cli,
        provider,
        _dir: dir,
    })
}

/// Picks `n` distinct live UIDs owned by `owner`.
fn pick(
    rng: &mut Rng,
    expected: &BTreeMap<String, Expected>,
    owner: Owner,
    n: usize,
) -> Vec<String> {
    let mut candidates: Vec<&String> = expected
        .iter()
        .filter(|(_, e)| e.owner == owner)
        .map(|(uid, _)| uid)
        .collect();
    let mut out = Vec::new();
    while out.len() < n && !candidates.is_empty() {
        let i = rng.below(candidates.len() as u64) as usize;
        out.push(candidates.swap_remove(i).clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_random_points_converges_without_loss_or_duplicates() {
    let Some(w) = world().await else {
        return;
    };
    let seed = std::env::var("CALBRIDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (replay with CALBRIDGE_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut serial = 0usize;
    let mut new_event = |rng: &mut Rng, owner: Owner| {
        serial += 1;
        let tag = match owner {
            Owner::Local => "l",
            Owner::Remote => "r",
        };
        (
            format!("crash-{tag}{serial}"),
            Expected {
                owner,
                summary: format!("Event {tag}{serial}"),
                location: format!("Room {}", rng.below(50)),
                day: 1 + rng.below(60) as i64,
            },
        )
    };
    for _ in 0..SEED_EACH_SIDE {
        let (uid, e) = new_event(&mut rng, Owner::Remote);
        w.remote_put(&uid, &e).await;
        expected.insert(uid, e);
        let (uid, e) = new_event(&mut rng, Owner::Local);
        w.local_create(&uid, &e).await;
        expected.insert(uid, e);
    }
    eprintln!(
        "seeded {} events in {:?}",
        expected.len(),
        started.elapsed()
    );

    // Kill delays are drawn from [lo, hi) ms and adapt: a process that finished before its kill
    // lowers `hi` to its own duration, a kill that came before the run opened raises `lo`.
    let (mut lo, mut hi) = (0u64, 2500u64);
    let mut landed = 0usize;
    let mut finished_alone = 0usize;
    let mut round = 0usize;
    while landed < LANDED_KILLS {
        round += 1;
        assert!(
            round <= MAX_ROUNDS,
            "only {landed} kills landed inside a sync in {MAX_ROUNDS} rounds (seed {seed})"
        );
        if round > 1 {
            // Edits on both sides between crashes: creates, field edits, deletions.
            for owner in [Owner::Remote, Owner::Local] {
                for _ in 0..2 {
                    let (uid, e) = new_event(&mut rng, owner);
                    match owner {
                        Owner::Remote => w.remote_put(&uid, &e).await,
                        Owner::Local => w.local_create(&uid, &e).await,
                    }
                    expected.insert(uid, e);
                }
                for uid in pick(&mut rng, &expected, owner, 3) {
                    let e = expected.get_mut(&uid).unwrap();
                    e.summary = format!("{} r{round}", e.summary);
                    e.location = format!("Room {}", rng.below(50));
                    let e = e.clone();
                    match owner {
                        Owner::Remote => w.remote_put(&uid, &e).await,
                        Owner::Local => w.local_edit(&uid, &e).await,
                    }
                }
                for uid in pick(&mut rng, &expected, owner, 1) {
                    expected.remove(&uid);
                    match owner {
                        Owner::Remote => w.remote_delete(&uid).await,
                        Owner::Local => w.local_delete(&uid).await,
                    }
                }
            }
        }
        let open_before = w.open_runs().await;
        // Every fifth round runs to the end, so later kills also land in incremental syncs (with
        // committed cursors) and not only in a first sync that never finishes.
        let delay = if round % 5 == 1 {
            u64::MAX / 4
        } else {
            lo + rng.below(hi.saturating_sub(lo).max(1))
        };
        let mut child = w
            .sync_command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let deadline = spawned + Duration::from_millis(delay.min(120_000));
        let mut exited = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match exited {
            Some(status) => {
                let took = spawned.elapsed().as_millis() as u64;
                finished_alone += 1;
                assert!(
                    status.success(),
                    "round {round}: the sync failed (seed {seed})"
                );
                hi = (took * 9 / 10).max(lo + 20);
                eprintln!(
                    "round {round}: delay {delay} ms, finished alone after {took} ms ({status})"
                );
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let open_after = w.open_runs().await;
                if open_after > open_before {
                    landed += 1;
                    eprintln!("round {round}: killed after {delay} ms, inside a sync ({landed})");
                } else {
                    // Also seen when the kill came just after the run closed its row (a fast
                    // sync): `lo` stays in the lower half so the window never closes up on `hi`.
                    lo = (delay + 10).min(hi / 2);
                    eprintln!("round {round}: killed after {delay} ms, before the sync began");
                }
            }
        }
    }
    eprintln!(
        "{landed} kills inside a sync, {finished_alone} runs finished before their kill, {round} rounds, {:?}",
        started.elapsed()
    );

    // Each kill left its run `running` in the system log; the scheduler of `calbridge serve` closes
    // them as interrupted once their heartbeat is older than their bound (the killed processes'
    // `sync.run_stale_after`, 3 s here).
    let left = w.open_runs().await;
    assert!(left >= landed, "{left} runs left open by {landed} kills");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut serve = w
        .cli
        .command(BIN, &["serve", "--listen", "127.0.0.1:0"])
        .env("CALBRIDGE_SYNC__RUN_STALE_AFTER", "3s")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reap_deadline = Instant::now() + Duration::from_secs(60);
    while w.open_runs().await > 0 {
        assert!(
            Instant::now() < reap_deadline,
            "{} runs still running a minute after serve started (seed {seed})",
            w.open_runs().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(serve.wait().unwrap().success(), "serve stops cleanly");
    let runs = w
        .store
        .list_sync_runs(w.cli.tenant, Some(w.cli.connection), 500)
        .await
        .unwrap();
    let interrupted = runs
        .iter()
        .filter(|r| {
            r.status == SyncRunStatus::Failed && r.errors_json.contains("\"class\":\"interrupted\"")
        })
        .count();
    assert_eq!(interrupted, left, "every killed run closed as interrupted");
    assert!(runs.iter().all(|r| r.status != SyncRunStatus::Running));

    // Quiescence: complete runs until one succeeds with nothing to do.
    let mut settled = false;
    for attempt in 0..5 {
        let out = w.sync_command().output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("quiescence run {attempt}:\n{stdout}");
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !stdout.contains("succeeded") {
            continue;
        }
        let latest = w
            .store
            .list_sync_runs(w.cli.tenant, Some(w.cli.connection), 1)
            .await
            .unwrap();
        let counts: BTreeMap<String, u64> = serde_json::from_str(&latest[0].counts_json).unwrap();
        if counts.iter().all(|(k, n)| k == "duration_ms" || *n == 0) {
            settled = true;
            break;
        }
    }
    assert!(settled, "the sync did not settle (seed {seed})");

    let open = w
        .store
        .list_conflicts(
            w.cli.tenant,
            &ConflictFilter {
                state: Some(ConflictState::Open),
                connection_id: Some(w.cli.connection),
                link_id: None,
                kind: None,
            },
        )
        .await
        .unwrap();
    // Time conflicts (overlapping meetings of one owner) come from the random event times, not from
    // the crashes: only sync conflicts (update, deletion, identity) would mean a write was not recognised.
    let open: Vec<(String, String)> = open
        .iter()
        .filter(|c| c.kind != calbridge_store::ConflictKind::Time)
        .map(|c| (c.kind.as_str().to_owned(), c.event_uid.clone()))
        .collect();
    assert!(open.is_empty(), "open conflicts: {open:?} (seed {seed})");
    let local = w.local_items().await;
    let remote = w.remote_items().await;
    let want: BTreeMap<&String, (&str, &str)> = expected
        .iter()
        .map(|(uid, e)| (uid, (e.summary.as_str(), e.location.as_str())))
        .collect();
    for (side, items) in [("local", &local), ("remote", &remote)] {
        let got: BTreeMap<&String, (&str, &str)> = items
            .iter()
            .map(|(uid, (s, l, _))| (uid, (s.as_str(), l.as_str())))
            .collect();
        let missing: Vec<_> = want.keys().filter(|u| !got.contains_key(*u)).collect();
        let extra: Vec<_> = got.keys().filter(|u| !want.contains_key(*u)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{side}: missing {missing:?}, unexpected {extra:?} (seed {seed})"
        );
        assert_eq!(got, want, "{side} content differs (seed {seed})");
    }
    let local_hashes: BTreeMap<&String, &String> =
        local.iter().map(|(u, (_, _, h))| (u, h)).collect();
    let remote_hashes: BTreeMap<&String, &String> =
        remote.iter().map(|(u, (_, _, h))| (u, h)).collect();
    assert_eq!(
        local_hashes, remote_hashes,
        "content hashes differ (seed {seed})"
    );
    eprintln!(
        "converged: {} events on both sides in {:?}",
        local.len(),
        started.elapsed()
    );
}
