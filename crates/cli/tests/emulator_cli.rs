#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `calbridge emulator google|microsoft --listen 127.0.0.1:0` serves the API, the control API and prints a
//! working token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Running {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(provider: &str, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calbridge"))
        .args(["emulator", provider, "--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let (mut base, mut token) = (None, None);
    while base.is_none() || token.is_none() {
        let line = lines.next().expect("emulator exited early").unwrap();
        if let Some(rest) = line.split(" listening on ").nth(1) {
            base = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("token:") {
            token = Some(rest.trim().to_string());
        }
    }
    Running {
        child,
        base: base.unwrap(),
        token: token.unwrap(),
    }
}

/// One request on a throwaway current-thread runtime (the test itself is synchronous).
fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    })
}

#[test]
fn google_emulator_from_the_command_line() {
    let emu = start("google", &["--seed-events", "7", "--seed", "3"]);
    let (status, state) = get(&format!("{}/_control/state", emu.base), None);
    assert_eq!(status, 200);
    assert_eq!(state["flavor"], "google");
    assert!(
        state["mailboxes"][0]["calendars"][0]["liveEvents"]
            .as_u64()
            .unwrap()
            >= 7
    );
    let (status, list) = get(
        &format!("{}/calendar/v3/users/me/calendarList", emu.base),
        Some(&emu.token),
    );
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["primary"], true);
    let (status, _) = get(
        &format!("{}/calendar/v3/users/me/calendarList", emu.base),
        None,
    );
    assert_eq!(status, 401);
}

#[test]
fn microsoft_emulator_from_the_command_line() {
    let emu = start("microsoft", &[]);
    let (status, cals) = get(&format!("{}/v1.0/me/calendars", emu.base), Some(&emu.token));
    assert_eq!(status, 200);
    assert_eq!(cals["value"][0]["isDefaultCalendar"], true);
}
