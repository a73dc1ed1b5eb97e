//! The binary as users run it: `config example` parses back; `serve` creates and migrates the embedded
//! database, writes the master key file with mode 0600, prints the bootstrap admin key on the first start
//! only, answers with it, and stops cleanly on SIGTERM; `keys create` makes a working key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_calbridge");

#[test]
fn config_example_parses_back_to_the_defaults() {
    let output = Command::new(BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("# "), "the example is commented");
    let parsed = calbridge_server::Config::from_toml(&text).unwrap();
    assert_eq!(parsed, calbridge_server::Config::default());
}

struct Running {
    child: Child,
    addr: String,
    stdout: Receiver<String>,
}

/// `serve` on a free port in `dir`, logging JSON lines to its piped stderr.
fn spawn_serve(dir: &std::path::Path) -> Child {
    Command::new(BIN)
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CALBRIDGE_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads log lines until one with `message`, and returns its fields.
fn wait_for_log(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    message: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "serve never logged {message:?}");
        let line = lines.next().expect("serve exited early").unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("log lines are JSON: {line}"));
        if value["fields"]["message"] == message {
            return value["fields"].clone();
        }
    }
}

/// Sends SIGTERM and expects a clean exit.
fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
}

fn start(dir: &std::path::Path) -> Running {
    let mut child = spawn_serve(dir);
    let (tx, stdout) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = wait_for_log(&mut lines, "calbridge is listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        addr,
        stdout,
    }
}

fn printed(running: &Running) -> String {
    std::thread::sleep(Duration::from_millis(100));
    running.stdout.try_iter().collect::<Vec<_>>().join("\n")
}

fn stop(mut running: Running) {
    terminate(&mut running.child);
}

fn get(addr: &str, path: &str, key: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn token_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("cbk_"))
        .map(str::to_owned)
}

#[test]
fn first_start_bootstraps_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path());
    let text = printed(&first);
    let token = token_in(&text).unwrap_or_else(|| panic!("no bootstrap key printed: {text}"));
    assert_eq!(get(&first.addr, "/v1/calendar/keys", &token), 200);
    assert!(dir.path().join("calbridge.db").exists());
    let key_file = dir.path().join("calbridge.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let key_bytes = std::fs::read(&key_file).unwrap();
    stop(first);

    let second = start(dir.path());
    let text = printed(&second);
    assert!(
        token_in(&text).is_none(),
        "the bootstrap key is printed only once: {text}"
    );
    assert_eq!(
        get(&second.addr, "/v1/calendar/keys", &token),
        200,
        "the key still works"
    );
    assert_eq!(
        std::fs::read(&key_file).unwrap(),
        key_bytes,
        "the master key is kept"
    );

    let made = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "keys",
            "create",
            "--tenant",
            "site-2",
            "--scopes",
            "events:read",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let reader = token_in(&String::from_utf8(made.stdout).unwrap()).unwrap();
    assert_eq!(get(&second.addr, "/v1/calendar/calendars", &reader), 200);
    assert_eq!(get(&second.addr, "/v1/calendar/keys", &reader), 403);
    let listed = Command::new(BIN)
        .current_dir(dir.path())
        .args(["keys", "list", "--tenant", "site-2"])
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let prefix = &reader[4..20];
    assert!(
        listed.contains(prefix) && listed.contains("active"),
        "{listed}"
    );
    assert!(
        !listed.contains(&reader[21..]),
        "listings never show secrets"
    );
    let revoked = Command::new(BIN)
        .current_dir(dir.path())
        .args(["keys", "revoke", "--tenant", "site-2", prefix])
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    // The running server saw no revocation: it holds once its key cache entry expires
    // (`server.api_key_cache_ttl`, 5 s by default).
    let revoked_at = std::time::Instant::now();
    while get(&second.addr, "/v1/calendar/calendars", &reader) != 401 {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(7),
            "a key revoked with the CLI still works after the cache TTL"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    stop(second);

    let rotated = Command::new(BIN)
        .current_dir(dir.path())
        .args(["keys", "rotate-master"])
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    assert_ne!(
        std::fs::read(&key_file).unwrap(),
        key_bytes,
        "the key file holds the new key"
    );
    assert!(!dir.path().join("calbridge.key.new").exists());
    let third = start(dir.path());
    assert_eq!(get(&third.addr, "/v1/calendar/keys", &token), 200);
    stop(third);
}

/// A SIGTERM that arrives while the service is still opening its store (its sync workers start before
/// the API) is a clean stop too, not a kill by the signal's default disposition.
#[test]
fn sigterm_while_starting_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_serve(dir.path());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Logged before the store is opened and migrated, long before the service polls anything.
    wait_for_log(&mut lines, "opening the store");
    std::thread::spawn(move || for _ in lines {});
    terminate(&mut child);
}
