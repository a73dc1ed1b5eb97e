//! Test peers: a real Radicale started on a free loopback port, and helpers around it.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::http::{
    AddressPolicy, Budget, BudgetConfig, Credentials, HttpClient, HttpConfig, RetryPolicy, Secret,
};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";

/// The python with Radicale installed, or `None` (and a notice) when the peer is missing and the
/// run does not require peers. With `CALBRIDGE_REQUIRE_PEERS=1` a missing peer fails the test.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let required = std::env::var("CALBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    let candidate = std::env::var_os("CALBRIDGE_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
            local.exists().then_some(local)
        });
    let works = candidate.as_ref().is_some_and(|python| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if works {
        return candidate;
    }
    assert!(
        !required,
        "CALBRIDGE_REQUIRE_PEERS=1 but no python with {module} (set CALBRIDGE_PYTHON; scripts/setup-peers.sh installs it)"
    );
    eprintln!(
        "NOTICE: skipping: no python with {module} (set CALBRIDGE_PYTHON or run scripts/setup-peers.sh)"
    );
    None
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running Radicale with its own storage and users; killed on drop.
pub struct Radicale {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Radicale {
    pub fn start() -> Option<Self> {
        Self::start_with("")
    }

    /// Started with `extra` appended to its config (whole sections, e.g. `[reporting]\n...`).
    pub fn start_with(extra: &str) -> Option<Self> {
        let python = python_with("radicale")?;
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let users = dir.path().join("users");
            std::fs::write(&users, format!("{USER}:{PASSWORD}\nbob:builder\n")).unwrap();
            let config = dir.path().join("config");
            std::fs::write(
                &config,
                format!(
                    "[server]\nhosts = 127.0.0.1:{port}\n\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\ndelay = 0\n\n[rights]\ntype = owner_only\n\n[storage]\nfilesystem_folder = {}\n\n[logging]\nlevel = warning\n{extra}",
                    users.display(),
                    dir.path().join("collections").display()
                ),
            )
            .unwrap();
            let mut child = Command::new(&python)
                .args(["-m", "radicale", "--config", config.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start radicale");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Self {
                        child,
                        port,
                        _dir: dir,
                    });
                }
                if child.try_wait().unwrap().is_some() {
                    break; // port taken meanwhile, or a config error: try again
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Radicale did not start");
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn calendar_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{USER}/{name}/", self.port)
    }

    /// A CalDAV provider on this server as its user.
    pub fn provider(&self) -> CaldavProvider {
        caldav(&self.base(), password(USER, PASSWORD))
    }

    /// The folder Radicale keeps the user's calendar `name` in (one `.ics` file per item), for
    /// tests that play a writer going around the server.
    pub fn calendar_folder(&self, name: &str) -> PathBuf {
        self._dir
            .path()
            .join("collections/collection-root")
            .join(USER)
            .join(name)
    }

    /// A plain client acting as "another calendar app" on the same account.
    pub fn raw(&self) -> RawClient {
        RawClient {
            inner: reqwest::Client::new(),
            auth: Some((USER, PASSWORD)),
        }
    }

    /// Creates the user's calendar `work` (shown as "Work") holding `events`, each `(uid, summary,
    /// start)` an hour long at `{uid}.ics`, the way another calendar app would; answers its URL.
    pub async fn work_calendar(&self, events: &[(&str, &str, &str)]) -> String {
        let raw = self.raw();
        let url = self.calendar_url("work");
        raw.mkcalendar(&url, "Work").await;
        for (uid, summary, start) in events {
            let put = raw
                .put(&format!("{url}{uid}.ics"), &event(uid, summary, start))
                .await;
            assert!(put.status().is_success(), "PUT {uid}: {}", put.status());
        }
        url
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct RawClient {
    inner: reqwest::Client,
    auth: Option<(&'static str, &'static str)>,
}

impl RawClient {
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> reqwest::Response {
        let mut builder = self
            .inner
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some((user, password)) = self.auth {
            builder = builder.basic_auth(user, Some(password));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        builder.send().await.unwrap()
    }

    pub async fn mkcalendar(&self, url: &str, name: &str) {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>{name}</D:displayname><C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
        );
        let response = self
            .request(
                "MKCALENDAR",
                url,
                &[("Content-Type", "application/xml")],
                Some(body),
            )
            .await;
        assert_eq!(response.status().as_u16(), 201, "MKCALENDAR {url}");
    }

    pub async fn put(&self, url: &str, ics: &str) -> reqwest::Response {
        self.request(
            "PUT",
            url,
            &[("Content-Type", "text/calendar")],
            Some(ics.to_owned()),
        )
        .await
    }
}

pub fn event(uid: &str, summary: &str, start: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge tests//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDURATION:PT1H\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

pub fn http_client() -> HttpClient {
    HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap()
}

pub fn password(user: &str, password: &str) -> Credentials {
    Credentials::Password {
        username: user.to_owned(),
        password: Secret::new(password),
    }
}

pub fn budget() -> std::sync::Arc<Budget> {
    Budget::new(BudgetConfig::default())
}

/// A CalDAV provider at `url` with `credentials`, on the tests' client and a budget of its own.
pub fn caldav(url: &str, credentials: Credentials) -> CaldavProvider {
    CaldavProvider::new(&http_client(), url, credentials, budget()).unwrap()
}

/// A running Xandikos (no authentication; it serves one user at /user/); killed on drop.
pub struct Xandikos {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Xandikos {
    pub fn start() -> Option<Self> {
        let python = python_with("xandikos")?;
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut child = Command::new(&python)
                .args([
                    "-m",
                    "xandikos",
                    "serve",
                    "--defaults",
                    "--no-detect-systemd",
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-d",
                ])
                .arg(dir.path().join("data"))
                .arg("--state-dir")
                .arg(dir.path().join("state"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start xandikos");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Self {
                        child,
                        port,
                        _dir: dir,
                    });
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Xandikos did not start");
    }
}

impl Drop for Xandikos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One CalDAV server under test; the conformance story runs against each.
pub enum Peer {
    Radicale(Radicale),
    Xandikos(Xandikos),
}

impl Peer {
    pub fn radicale() -> Option<Self> {
        Radicale::start().map(Self::Radicale)
    }

    pub fn xandikos() -> Option<Self> {
        Xandikos::start().map(Self::Xandikos)
    }

    pub fn is_radicale(&self) -> bool {
        matches!(self, Self::Radicale(_))
    }

    pub fn base(&self) -> String {
        let port = match self {
            Self::Radicale(r) => r.port,
            Self::Xandikos(x) => x.port,
        };
        format!("http://127.0.0.1:{port}/")
    }

    /// The path of a calendar collection named `name` on this server.
    pub fn calendar_path(&self, name: &str) -> String {
        match self {
            Self::Radicale(_) => format!("/{USER}/{name}/"),
            Self::Xandikos(_) => format!("/user/calendars/{name}/"),
        }
    }

    pub fn calendar_url(&self, name: &str) -> String {
        format!(
            "{}{}",
            self.base().trim_end_matches('/'),
            self.calendar_path(name)
        )
    }

    pub fn credentials(&self) -> Credentials {
        match self {
            Self::Radicale(_) => password(USER, PASSWORD),
            Self::Xandikos(_) => Credentials::None,
        }
    }

    /// A CalDAV provider on this server as its user.
    pub fn provider(&self) -> CaldavProvider {
        caldav(&self.base(), self.credentials())
    }

    pub fn has_auth(&self) -> bool {
        self.is_radicale()
    }

    pub fn raw(&self) -> RawClient {
        match self {
            Self::Radicale(r) => r.raw(),
            Self::Xandikos(_) => RawClient {
                inner: reqwest::Client::new(),
                auth: None,
            },
        }
    }
}
