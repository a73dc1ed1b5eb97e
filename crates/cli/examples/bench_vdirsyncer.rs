//! calbridge against vdirsyncer on the same Radicale calendar, with Radicale's own time to answer the
//! sync-collection REPORT measured beside them in the same run.
//!
//! For each size (default 1,000 and 10,000 events, `CALBRIDGE_BENCH_SIZES`): a fresh Radicale (the
//! project's test configuration: htpasswd users, owner-only rights, default storage and limits) with
//! one calendar, seeded by writing the items into its storage folder and warmed with one full REPORT
//! (Radicale builds its item cache; not measured). Then, each as a separate process as a person runs
//! it: initial import, no-op sync (median of 3), and an incremental sync after 10 edits and 5
//! deletions made on the server (median of 5 rounds on fresh items, `CALBRIDGE_BENCH_INCREMENTAL_ROUNDS`). calbridge syncs Radicale with its own SQLite store; vdirsyncer
//! (0.21, `scripts/requirements.txt`) syncs Radicale with a filesystem storage.
//!
//! Run: `scripts/bench-vdirsyncer.sh` (release build of `calbridge` and of this example).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::panic
)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{Timestamp, ToSpan};

// The CLI tests' set-up (a test-only module; the binary does not depend on it).
#[path = "../tests/common/mod.rs"]
mod common;

const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

struct Radicale {
    child: Child,
    port: u16,
    collections: PathBuf,
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_bin(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("CALBRIDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if name == "python" {
        return python;
    }
    python.parent().unwrap().join(name)
}

fn start_radicale(dir: &Path) -> Radicale {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let users = dir.join("users");
    std::fs::write(&users, format!("{USER}:{PASSWORD}\n")).unwrap();
    let collections = dir.join("collections");
    let config = dir.join("radicale.conf");
    std::fs::write(
        &config,
        format!(
            "[server]\nhosts = 127.0.0.1:{port}\n\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\ndelay = 0\n\n[rights]\ntype = owner_only\n\n[storage]\nfilesystem_folder = {}\n\n[logging]\nlevel = warning\n",
            users.display(),
            collections.display()
        ),
    )
    .unwrap();
    let child = Command::new(venv_bin("python"))
        .args(["-m", "radicale", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Radicale did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Radicale {
        child,
        port,
        collections,
    }
}

fn day(offset: i64) -> String {
    Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(offset.days())
        .unwrap()
        .strftime("%Y%m%d")
        .to_string()
}

fn event(n: usize, summary: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge bench//EN\r\nBEGIN:VEVENT\r\nUID:bench-{n}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{}T{:02}0000Z\r\nDURATION:PT1H\r\nSUMMARY:{summary}\r\nLOCATION:Room {}\r\nDESCRIPTION:Benchmark event number {n}\\, seeded for the comparison.\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        day(1 + (n % 80) as i64),
        8 + n % 9,
        n % 40
    )
}

struct Http {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    base: String,
}

impl Http {
    fn calendar(&self) -> String {
        format!("{}/{USER}/work/", self.base)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<String>,
        depth: Option<&str>,
    ) -> (u16, String) {
        let mut request = self
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .basic_auth(USER, Some(PASSWORD));
        if let Some(depth) = depth {
            request = request.header("Depth", depth);
        }
        if let Some(body) = body {
            let kind = if method == "PUT" {
                "text/calendar"
            } else {
                "application/xml; charset=utf-8"
            };
            request = request.header("Content-Type", kind).body(body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        })
    }

    /// The bare sync-collection REPORT (what Radicale alone needs); returns the new token.
    fn sync_collection(&self, token: Option<&str>) -> (String, usize) {
        let token = token.map_or("<D:sync-token/>".to_owned(), |t| {
            format!("<D:sync-token>{t}</D:sync-token>")
        });
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">{token}<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"#
        );
        let (status, text) = self.send("REPORT", &self.calendar(), Some(body), Some("1"));
        assert_eq!(status, 207, "{text}");
        let token = text
            .split("sync-token>")
            .nth(1)
            .and_then(|t| t.split("</").next())
            .unwrap()
            .to_owned();
        (token, text.matches("response>").count() / 2)
    }
}

fn timed(mut command: Command) -> Duration {
    let t = Instant::now();
    let out = command.output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The figures count only if calbridge ended with what the server holds: every event but the
/// deleted ones, each edit of every round applied.
fn check_calbridge(database: &common::CliDatabase, size: usize, rounds: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = database.open().await;
        let mut live = std::collections::HashMap::new();
        let mut after = None;
        loop {
            let page = store
                .list_series(database.tenant, database.calendar, after, 1_000)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for series in page {
                live.insert(series.uid.clone(), series.ical);
            }
        }
        assert_eq!(
            live.len(),
            size - 5 * rounds,
            "calbridge holds every event but the deleted"
        );
        for round in 0..rounds {
            for n in 0..10 {
                let k = n * (size / 10) + 3 * round;
                let ical = &live[&format!("bench-{k}")];
                assert!(
                    ical.contains(&format!("Edited {k} in round {round}")),
                    "calbridge missed the edit of bench-{k} in round {round}"
                );
            }
        }
        println!(
            "  calbridge holds {} events, every edit applied",
            live.len()
        );
    });
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Calbridge {
    bin: PathBuf,
    database: common::CliDatabase,
}

impl Calbridge {
    fn sync(&self) -> Command {
        let connection = self.database.connection.to_string();
        self.database
            .command(&self.bin, &["sync", "--connection", &connection])
    }
}

fn calbridge_setup(dir: &Path, port: u16) -> Calbridge {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(async {
        // The store closes here: only the calbridge processes hold the database while measured.
        let (database, _store) =
            common::CliDatabase::caldav(dir, &format!("http://127.0.0.1:{port}/"), USER, PASSWORD)
                .await;
        database
    });
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("calbridge");
    assert!(
        bin.exists(),
        "build the calbridge binary first ({})",
        bin.display()
    );
    Calbridge { bin, database }
}

fn vdirsyncer_setup(dir: &Path, port: u16) -> PathBuf {
    let local = dir.join("vdir-local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(dir.join("vdir-status")).unwrap();
    let config = dir.join("vdirsyncer.conf");
    std::fs::write(
        &config,
        format!(
            "[general]\nstatus_path = \"{}/\"\n\n[pair bench]\na = \"bench_remote\"\nb = \"bench_local\"\ncollections = null\nconflict_resolution = \"a wins\"\n\n[storage bench_remote]\ntype = \"caldav\"\nurl = \"http://127.0.0.1:{port}/{USER}/work/\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n\n[storage bench_local]\ntype = \"filesystem\"\npath = \"{}/\"\nfileext = \".ics\"\n",
            dir.join("vdir-status").display(),
            local.display()
        ),
    )
    .unwrap();
    config
}

fn vdirsyncer(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(venv_bin("vdirsyncer"));
    c.arg("-c").arg(config).args(args).stdin(Stdio::null());
    c
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CALBRIDGE_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let version = Command::new(venv_bin("vdirsyncer"))
        .arg("--version")
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&version.stdout).trim());
    for size in sizes {
        println!("== {size} events (load average {})", load());
        let dir = tempfile::tempdir().unwrap();
        let radicale = start_radicale(dir.path());
        let http = Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(1800))
                .build()
                .unwrap(),
            runtime: tokio::runtime::Runtime::new().unwrap(),
            base: format!("http://127.0.0.1:{}", radicale.port),
        };
        let mkcalendar = r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>Work</D:displayname><C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#;
        let (status, _) = http.send(
            "MKCALENDAR",
            &http.calendar(),
            Some(mkcalendar.into()),
            None,
        );
        assert_eq!(status, 201);
        let folder = radicale
            .collections
            .join(format!("collection-root/{USER}/work"));
        assert!(folder.is_dir(), "{}", folder.display());
        let t = Instant::now();
        for n in 0..size {
            std::fs::write(
                folder.join(format!("bench-{n}.ics")),
                event(n, &format!("Event {n}")),
            )
            .unwrap();
        }
        let (_, listed) = http.sync_collection(None);
        println!(
            "  seeded {size} items in the storage folder and warmed Radicale's cache in {:.1} s (not measured; {listed} listed)",
            t.elapsed().as_secs_f64()
        );

        let calbridge = calbridge_setup(dir.path(), radicale.port);
        let vconf = vdirsyncer_setup(dir.path(), radicale.port);
        timed(vdirsyncer(&vconf, &["discover"]));

        // Initial import.
        println!("  load before initial: {}", load());
        let v_initial = {
            let t = Instant::now();
            let out = vdirsyncer(&vconf, &["sync"]).output().unwrap();
            let took = t.elapsed();
            let ok = out.status.success();
            let files = std::fs::read_dir(dir.path().join("vdir-local"))
                .map(|d| d.count())
                .unwrap_or(0);
            if !ok {
                println!(
                    "  vdirsyncer initial import FAILED after {} ({files} items written): {}",
                    ms(took),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .rev()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
            (took, ok, files)
        };
        let c_initial = timed(calbridge.sync());
        println!(
            "  initial import: calbridge {} | vdirsyncer {} ({}, {} items)",
            ms(c_initial),
            ms(v_initial.0),
            if v_initial.1 { "ok" } else { "failed" },
            v_initial.2
        );
        if !v_initial.1 {
            // Retry until vdirsyncer has everything, so its no-op and incremental are comparable.
            for _ in 0..3 {
                if vdirsyncer(&vconf, &["sync"]).status().unwrap().success() {
                    break;
                }
            }
        }

        // No-op.
        let (token, _) = http.sync_collection(None);
        println!("  load before no-op: {}", load());
        let mut bare = Vec::new();
        let mut v = Vec::new();
        let mut c = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            http.sync_collection(Some(&token));
            bare.push(t.elapsed());
            v.push(timed(vdirsyncer(&vconf, &["sync"])));
            c.push(timed(calbridge.sync()));
        }
        let (bare, v, c) = (median(bare), median(v), median(c));
        println!(
            "  no-op (median of 3): calbridge {} | vdirsyncer {} | Radicale sync-collection REPORT {} -> vdirsyncer/calbridge {:.1}x, calbridge/Radicale {:.2}",
            ms(c),
            ms(v),
            ms(bare),
            v.as_secs_f64() / c.as_secs_f64(),
            c.as_secs_f64() / bare.as_secs_f64()
        );

        // Incremental: 10 edits and 5 deletions on the server, in several rounds (each on items no
        // earlier round touched), so each figure is a median: Radicale's own REPORT time alone varies
        // 2x between runs on a busy machine.
        let rounds: usize = std::env::var("CALBRIDGE_BENCH_INCREMENTAL_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5)
            .clamp(1, 30);
        println!("  load before incremental: {}", load());
        let (mut bare, mut v, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Edits hit n*(size/10) + 3r and deletions n*(size/5) + 1 + 3r: the two never meet (their
            // difference is a multiple of 100 plus 1 + 3(r' - r), never zero for r < 30).
            let (token, _) = http.sync_collection(None);
            for n in 0..10 {
                let k = n * (size / 10) + 3 * round;
                let url = format!("{}bench-{k}.ics", http.calendar());
                let (status, _) = http.send(
                    "PUT",
                    &url,
                    Some(event(k, &format!("Edited {k} in round {round}"))),
                    None,
                );
                assert!(status < 300, "{status}");
            }
            for n in 0..5 {
                let k = n * (size / 5) + 1 + 3 * round;
                let url = format!("{}bench-{k}.ics", http.calendar());
                let (status, _) = http.send("DELETE", &url, None, None);
                assert!(status < 300, "{status}");
            }
            // Radicale updates its cache for the changed items on the first request after the edits
            // (not measured), so no contender pays it for the others.
            http.sync_collection(Some(&token));
            let report = || {
                let t = Instant::now();
                http.sync_collection(Some(&token));
                t.elapsed()
            };
            // Radicale's own time is taken right before each contender, in the state that contender
            // meets: after vdirsyncer's run Radicale answers the same REPORT measurably slower (a
            // Python process that just served a full listing), and the one taken before vdirsyncer
            // alone made calbridge's ratio look worse than it is.
            let b_v = report();
            let vt = timed(vdirsyncer(&vconf, &["sync"]));
            let b = report();
            let ct = timed(calbridge.sync());
            println!(
                "    round {round}: calbridge {} | vdirsyncer {} | Radicale REPORT {} before vdirsyncer, {} before calbridge -> {:.1}x, {:.2}",
                ms(ct),
                ms(vt),
                ms(b_v),
                ms(b),
                vt.as_secs_f64() / ct.as_secs_f64(),
                ct.as_secs_f64() / b.as_secs_f64()
            );
            bare.push(b);
            v.push(vt);
            c.push(ct);
        }
        let (bare, v, c) = (median(bare), median(v), median(c));
        println!(
            "  incremental (10 edits + 5 deletions, median of {rounds}): calbridge {} | vdirsyncer {} | Radicale sync-collection REPORT {} -> vdirsyncer/calbridge {:.1}x, calbridge/Radicale {:.2}",
            ms(c),
            ms(v),
            ms(bare),
            v.as_secs_f64() / c.as_secs_f64(),
            c.as_secs_f64() / bare.as_secs_f64()
        );
        if let Ok(secs) = std::env::var("CALBRIDGE_BENCH_KEEP_SECS") {
            // Leaves Radicale and both stores up for profiling a run by hand.
            println!("  kept for {secs} s: {:?}", calbridge.sync());
            std::thread::sleep(Duration::from_secs(secs.parse().unwrap()));
        }
        check_calbridge(&calbridge.database, size, rounds);
        let files = std::fs::read_dir(dir.path().join("vdir-local"))
            .unwrap()
            .count();
        assert_eq!(
            files,
            size - 5 * rounds,
            "vdirsyncer holds every event but the deleted"
        );
        drop(radicale);
    }
}
