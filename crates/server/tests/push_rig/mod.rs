//! The push rig shared by the push end-to-end test and the propagation benchmark: the Graph emulator,
//! a recording pass-through standing for the public URL (so a genuine notification can be replayed),
//! the real server on port 0 (SQLite) and a scheduler beside it, rung like `calbridge serve` does; a
//! Microsoft connection is made through the emulator's real OAuth flow.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use calbridge_emulators::{Emulator, EmulatorConfig, Flavor};
use calbridge_providers::http::{
    AddressPolicy, Budget, BudgetConfig, Credentials, HttpClient, HttpConfig,
};
use calbridge_providers::oauth::{Access, OAuthConfig};
use calbridge_server::scheduler::{Scheduler, SchedulerConfig};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{Backend, TestServer, lan_config, node_sync_context};

const CLIENT_ID: &str = "calbridge-test-client";

/// Consents in the emulator like a browser would and exchanges the code: a refresh token.
async fn refresh_token_from(emu: &Emulator) -> String {
    let base = url::Url::parse(emu.base_url()).unwrap();
    let redirect = url::Url::parse("https://app.example.org/oauth/callback").unwrap();
    let oauth = match emu.flavor() {
        Flavor::Microsoft => OAuthConfig::microsoft(
            &base,
            "common",
            CLIENT_ID,
            None,
            redirect,
            Access::ReadWrite,
        )
        .unwrap(),
        Flavor::Google => {
            OAuthConfig::google(&base, &base, CLIENT_ID, None, redirect, Access::ReadWrite).unwrap()
        }
    };
    let request = oauth.authorization_request(None);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = browser.get(request.url.clone()).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    let location = url::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let http = HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let endpoint = http.endpoint(
        "oauth",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );
    let tokens = oauth
        .exchange_code(&endpoint, &code, &request.pkce_verifier)
        .await
        .unwrap();
    tokens.refresh_token.unwrap().expose().to_owned()
}

/// One Google message's `X-Goog-*` headers.
pub type Headers = Vec<(String, String)>;

/// Forwards everything to the server and keeps the notifications (not handshakes): Graph's bodies, and
/// Google's `X-Goog-*` headers (its messages have no body).
#[derive(Clone)]
pub struct Recorder {
    upstream: Arc<Mutex<String>>,
    client: reqwest::Client,
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    pub goog_headers: Arc<Mutex<Vec<Headers>>>,
}

async fn forward(State(rec): State<Recorder>, request: Request) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path_and_query().unwrap().as_str().to_owned();
    let goog: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-goog-"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    if !goog.is_empty() {
        rec.goog_headers.lock().unwrap().push(goog.clone());
    } else if !path.contains("validationToken") {
        rec.bodies.lock().unwrap().push(body.to_vec());
    }
    let url = format!("{}{path}", rec.upstream.lock().unwrap());
    let mut out = rec.client.post(url).body(body.to_vec());
    if let Some(ct) = parts.headers.get("content-type") {
        out = out.header("content-type", ct.as_bytes());
    }
    for (name, value) in &goog {
        out = out.header(name.as_str(), value.as_str());
    }
    let answer = out.send().await.unwrap();
    let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let ct = answer
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = answer.bytes().await.unwrap().to_vec();
    let mut response = (status, text).into_response();
    if let Some(ct) = ct {
        response
            .headers_mut()
            .insert("content-type", ct.parse().unwrap());
    }
    response
}

pub struct Rig {
    pub emu: Emulator,
    pub server: TestServer,
    pub recorder: Recorder,
    stop: tokio::sync::watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
}

/// Emulator, recording pass-through, server (whose public URL is the pass-through), scheduler.
pub async fn rig(flavor: Flavor, tune: impl FnOnce(&mut calbridge_server::Config)) -> Rig {
    rig_on(Backend::Sqlite, flavor, tune).await
}

/// The rig on a backend of choice (PostgreSQL: a fresh database, dropped after).
pub async fn rig_on(
    backend: Backend,
    flavor: Flavor,
    tune: impl FnOnce(&mut calbridge_server::Config),
) -> Rig {
    let emu = Emulator::start(flavor, EmulatorConfig::default())
        .await
        .unwrap();
    let recorder = Recorder {
        upstream: Arc::default(),
        client: reqwest::Client::new(),
        bodies: Arc::default(),
        goog_headers: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(recorder.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = lan_config();
    config.server.public_url = Some(public);
    let settings = match flavor {
        Flavor::Microsoft => &mut config.providers.microsoft,
        Flavor::Google => &mut config.providers.google,
    };
    settings.client_id = Some(CLIENT_ID.into());
    settings.authority_url = Some(emu.base_url().to_owned());
    settings.graph_url = Some(match flavor {
        Flavor::Microsoft => format!("{}/v1.0", emu.base_url()),
        Flavor::Google => format!("{}/calendar/v3", emu.base_url()),
    });
    tune(&mut config);
    let server = TestServer::start_with(backend, config).await.unwrap();
    *recorder.upstream.lock().unwrap() = server.base.clone();

    let ctx = node_sync_context(&server.config).await;
    let mut sc = SchedulerConfig::from_config(&server.config, "node".into());
    sc.tick = Duration::from_millis(100);
    sc.concurrency = 2;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(
        Scheduler::new(ctx, sc)
            .with_hub(server.hub.clone())
            .run(stop_rx),
    );
    Rig {
        emu,
        server,
        recorder,
        stop,
        scheduler,
    }
}

impl Rig {
    pub async fn connect(&self) -> Value {
        let created = self
            .server
            .post_json(
                &self.server.admin,
                "/v1/calendar/connections",
                json!({"provider": match self.emu.flavor() {
                           Flavor::Microsoft => "microsoft",
                           Flavor::Google => "google",
                       }, "name": "Cloud",
                       "credentials": {"refresh_token": refresh_token_from(&self.emu).await},
                       "sync": {"direction": "bidirectional"}}),
            )
            .await;
        let status = created.status();
        let connection: Value = created.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{connection}");
        assert_eq!(connection["status"], "active", "{connection}");
        connection
    }

    pub async fn wait_watches(&self, what: impl Fn(&[(String, jiff::Timestamp)]) -> bool) {
        let started = Instant::now();
        loop {
            let live = self.emu.live_watches();
            if what(&live) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "emulator subscriptions never got there: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn finish(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.scheduler)
            .await
            .unwrap()
            .unwrap();
        self.emu.stop().await;
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn stream(server: &TestServer, calendar: &str) -> Socket {
    let url = format!(
        "ws://{}/v1/calendar/stream?calendar_id={calendar}",
        server.addr
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.admin).parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next event message within `wait`, if any.
pub async fn next_message(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??;
        if let Ok(Message::Text(text)) = message {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            // Only event messages matter here (run and connection messages may come too).
            if value["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("event."))
            {
                return Some(value);
            }
        }
    }
}

/// A day `days` from today (UTC), inside the default sync window.
pub fn day(days: i64) -> String {
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(days))
        .unwrap();
    date.to_string()
}

/// A Graph event body on `day(2)`.
pub fn graph_event(subject: &str) -> Value {
    json!({"subject": subject,
        "start": {"dateTime": format!("{}T09:00:00", day(2)), "timeZone": "UTC"},
        "end": {"dateTime": format!("{}T09:15:00", day(2)), "timeZone": "UTC"}})
}

pub async fn local_summary(server: &TestServer, calendar: &str) -> Vec<String> {
    let page: Value = server
        .get(
            &server.admin,
            &format!(
                "/v1/calendar/events?start={}T00:00:00Z&end={}T00:00:00Z&calendar_id={calendar}",
                day(-30),
                day(60)
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default().to_owned())
        .collect()
}
