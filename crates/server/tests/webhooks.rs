//! Outbound webhooks end to end: the real server on port 0 delivers to a real axum receiver on 127.0.0.1
//! (the operator allows private networks here, explicitly). Signatures are checked by independent
//! implementations (the `hmac` crate used directly, and Python's `hmac` module); retries, backoff,
//! Retry-After, auto-disable with its reason, re-enable, the delivery log, secrets shown once, tenant
//! isolation and the address guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use calbridge_server::config::HumanDuration;
use calbridge_server::keys::Scope;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use common::{Backend, TestServer};

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
    at: Instant,
}

/// What the receiver answers next: a queue of (status, Retry-After) consumed one per request, then
/// `default`.
#[derive(Default)]
struct Script {
    queue: Vec<(u16, Option<&'static str>)>,
    default: u16,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    addr: SocketAddr,
}

impl Receiver {
    async fn start(default: u16) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script {
            queue: Vec::new(),
            default,
        }));
        let state = (Arc::clone(&got), Arc::clone(&script));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { got, script, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn answer(&self, default: u16, queue: Vec<(u16, Option<&'static str>)>) {
        let mut script = self.script.lock().unwrap();
        script.default = default;
        script.queue = queue;
    }

    /// Waits (bounded) until at least `n` requests arrived.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type ReceiverState = (Arc<Mutex<Vec<Received>>>, Arc<Mutex<Script>>);

async fn receive(
    State((got, script)): State<ReceiverState>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    got.lock().unwrap().push(Received {
        headers,
        body,
        at: Instant::now(),
    });
    let (status, retry_after) = {
        let mut script = script.lock().unwrap();
        if script.queue.is_empty() {
            (script.default, None)
        } else {
            script.queue.remove(0)
        }
    };
    let status = AxumStatus::from_u16(status).unwrap();
    match retry_after {
        Some(value) => (status, [("retry-after", value)], "try later").into_response(),
        None => (status, "answer").into_response(),
    }
}

fn fast_config() -> calbridge_server::Config {
    let mut config = common::test_config();
    // Tests deliver to 127.0.0.1: the operator's explicit permission.
    config.network.allow_private_networks = true;
    config.webhooks.retry_base = HumanDuration(jiff::SignedDuration::from_millis(100));
    config.webhooks.retry_max = HumanDuration(jiff::SignedDuration::from_secs(5));
    config.webhooks.poll_interval = HumanDuration(jiff::SignedDuration::from_millis(100));
    config.webhooks.timeout = HumanDuration::from_secs(3);
    config.webhooks.disable_after = 6;
    config
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The receiver's check, written from the documented rule with the `hmac` crate directly.
fn verify(secret: &str, r: &Received) -> bool {
    let timestamp = header(r, "calbridge-timestamp");
    let signature = header(r, "calbridge-signature");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", r.body).as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    expected == signature
}

/// The same check by Python's standard library, a second independent implementation.
fn verify_with_python(secret: &str, r: &Received) -> bool {
    let python = match std::env::var("CALBRIDGE_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ if std::env::var("CALBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") => {
            panic!("CALBRIDGE_PYTHON is not set and CALBRIDGE_REQUIRE_PEERS=1")
        }
        _ => {
            eprintln!("notice: CALBRIDGE_PYTHON not set; skipping the Python signature check");
            return verify(secret, r);
        }
    };
    let script = r#"
import hmac, hashlib, sys
secret, timestamp, signature, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.stdin.buffer.read()
expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
print("ok" if hmac.compare_digest(expected, signature) else "bad")
"#;
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(header(r, "calbridge-timestamp"))
        .arg(header(r, "calbridge-signature"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(r.body.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn create_calendar(server: &TestServer, key: &str, name: &str) -> String {
    let response = server
        .post_json(key, "/v1/calendar/calendars", json!({"name": name}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response).await["id"].as_str().unwrap().to_owned()
}

async fn create_event(server: &TestServer, key: &str, calendar: &str, summary: &str) -> String {
    let response = server
        .post_json(
            key,
            "/v1/calendar/events",
            json!({"calendar_id": calendar, "summary": summary, "start": "2026-03-02T10:00:00Z"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response).await["id"].as_str().unwrap().to_owned()
}

async fn patch(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server
        .client
        .patch(server.url(path))
        .bearer_auth(&server.admin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn signed_delivery_story(server: TestServer) {
    let receiver = Receiver::start(200).await;
    let calendar = create_calendar(&server, &server.admin, "hooked").await;
    let other_calendar = create_calendar(&server, &server.admin, "elsewhere").await;
    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/webhooks",
            json!({"url": receiver.url(), "events": ["event.*"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = json_of(created).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40);
    assert_eq!(created["enabled"], true);
    // A second webhook filtered to another calendar must not see this calendar's messages.
    let filtered = server
        .post_json(
            &server.admin,
            "/v1/calendar/webhooks",
            json!({"url": receiver.url(), "calendar_id": other_calendar, "events": ["*"]}),
        )
        .await;
    assert_eq!(filtered.status(), StatusCode::CREATED);
    let filtered_id = json_of(filtered).await["id"].as_str().unwrap().to_owned();

    // The secret is never read back.
    for path in [
        "/v1/calendar/webhooks".to_owned(),
        format!("/v1/calendar/webhooks/{id}"),
    ] {
        let response = server.get(&server.admin, &path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        assert!(!text.contains(&secret), "{path} shows the secret");
        assert!(!text.contains("\"secret\""), "{path} has a secret field");
    }

    // Another tenant's writes never reach this tenant's webhook.
    let b_key = server.key(Some("tenant-b"), &Scope::ALL).await;
    let b_calendar = create_calendar(&server, &b_key, "B's").await;
    create_event(&server, &b_key, &b_calendar, "B's private").await;

    let event = create_event(&server, &server.admin, &calendar, "Board meeting").await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "one delivery of one message");
    let first = &got[0];
    let body: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["type"], "event.created");
    assert_eq!(body["subject_id"], event.as_str());
    assert_eq!(body["calendar_id"], calendar.as_str());
    let seq = body["seq"].as_i64().unwrap();
    assert_eq!(header(first, "calbridge-webhook-id"), format!("{id}.{seq}"));
    assert_eq!(header(first, "calbridge-event"), "event.created");
    assert_eq!(header(first, "calbridge-attempt"), "1");
    assert_eq!(header(first, "content-type"), "application/json");
    let timestamp: i64 = header(first, "calbridge-timestamp").parse().unwrap();
    assert!((jiff::Timestamp::now().as_second() - timestamp).abs() < 60);
    assert!(
        verify(&secret, first),
        "hmac crate: signature does not verify"
    );
    assert!(
        verify_with_python(&secret, first),
        "python hmac: signature does not verify"
    );
    assert!(!verify("whsec_wrong", first), "any secret verifies");
    let mut forged = first.clone();
    forged.body = forged.body.replace("event.created", "event.deleted");
    assert!(!verify(&secret, &forged), "a changed body verifies");

    // The delivery log shows the attempt.
    let log = json_of(
        server
            .get(
                &server.admin,
                &format!("/v1/calendar/webhooks/{id}/deliveries"),
            )
            .await,
    )
    .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (
            items[0]["status"].as_str(),
            items[0]["response_status"].as_i64(),
            items[0]["attempt"].as_i64(),
            items[0]["seq"].as_i64()
        ),
        (Some("delivered"), Some(200), Some(1), Some(seq))
    );
    assert!(items[0]["latency_ms"].as_i64().unwrap() >= 0);

    // Rotation: the new secret is shown once and signs what follows; the old one no longer verifies.
    let rotated = server
        .post_json(
            &server.admin,
            &format!("/v1/calendar/webhooks/{id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let new_secret = json_of(rotated).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_secret, secret);
    let update = server
        .client
        .put(server.url(&format!("/v1/calendar/events/{event}")))
        .bearer_auth(&server.admin)
        .json(&json!({"summary": "Board meeting (moved)", "start": "2026-03-02T11:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), StatusCode::OK);
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    let second = &got[1];
    let body: Value = serde_json::from_str(&second.body).unwrap();
    assert_eq!(body["type"], "event.updated");
    assert!(body["seq"].as_i64().unwrap() > seq);
    assert!(verify(&new_secret, second));
    assert!(!verify(&secret, second));

    // Nothing was delivered for B's event, nor to the webhook filtered to the other calendar.
    assert!(got.iter().all(|r| !r.body.contains(&b_calendar)));
    let filtered_log = json_of(
        server
            .get(
                &server.admin,
                &format!("/v1/calendar/webhooks/{filtered_id}/deliveries"),
            )
            .await,
    )
    .await;
    assert_eq!(filtered_log["items"].as_array().unwrap().len(), 0);
    // …and B cannot see or touch A's webhook.
    assert_eq!(
        server
            .get(&b_key, &format!("/v1/calendar/webhooks/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .get(&b_key, &format!("/v1/calendar/webhooks/{id}/deliveries"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let b_list = json_of(server.get(&b_key, "/v1/calendar/webhooks").await).await;
    assert_eq!(b_list["items"].as_array().unwrap().len(), 0);
}

async fn failing_receiver_story(server: TestServer) {
    let receiver = Receiver::start(500).await;
    let calendar = create_calendar(&server, &server.admin, "hooked").await;
    let created = json_of(
        server
            .post_json(
                &server.admin,
                "/v1/calendar/webhooks",
                json!({"url": receiver.url()}),
            )
            .await,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    create_event(&server, &server.admin, &calendar, "Never acknowledged").await;

    // disable_after = 6: six attempts, then the webhook is disabled with the reason.
    let got = receiver.wait_for(6, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 6, "six attempts");
    let deadline = Instant::now() + Duration::from_secs(5);
    let webhook = loop {
        let w = json_of(
            server
                .get(&server.admin, &format!("/v1/calendar/webhooks/{id}"))
                .await,
        )
        .await;
        if w["enabled"] == false || Instant::now() > deadline {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(webhook["enabled"], false);
    let reason = webhook["disabled_reason"].as_str().unwrap();
    assert!(
        reason.contains("6 consecutive") && reason.contains("HTTP 500"),
        "{reason}"
    );
    assert_eq!(webhook["consecutive_failures"], 6);
    // The same message each time, signed each time, numbered 1..6.
    let ids: Vec<&str> = got
        .iter()
        .map(|r| header(r, "calbridge-webhook-id"))
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    for (n, r) in got.iter().enumerate() {
        assert_eq!(header(r, "calbridge-attempt"), (n + 1).to_string());
        assert!(verify(&secret, r));
    }
    // Backoff: every wait at least the floor of its step (base 100 ms doubling, a quarter of the cap
    // at least), and the waits grow: the fifth is longer than the first could ever be.
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let cap = Duration::from_millis(100 * (1 << i));
        assert!(
            *gap >= cap / 4,
            "gap {i} = {gap:?} shorter than {:?}",
            cap / 4
        );
    }
    assert!(gaps[4] > gaps[0], "waits do not grow: {gaps:?}");
    // Nothing more arrives once disabled.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 6);

    let log = json_of(
        server
            .get(
                &server.admin,
                &format!("/v1/calendar/webhooks/{id}/deliveries"),
            )
            .await,
    )
    .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    let attempts: Vec<i64> = items
        .iter()
        .map(|i| i["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [6, 5, 4, 3, 2, 1], "newest first");
    assert!(items.iter().all(|i| i["status"] == "failed"
        && i["response_status"] == 500
        && i["error"].as_str().unwrap().contains("HTTP 500")
        && i["latency_ms"].as_i64().is_some()));

    // Re-enabled while the receiver throttles once (429, Retry-After: 1), then accepts: the same message
    // comes again no sooner than the Retry-After, and the streak is cleared.
    receiver.answer(200, vec![(429, Some("1"))]);
    let enabled = patch(
        &server,
        &format!("/v1/calendar/webhooks/{id}"),
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(enabled.status(), StatusCode::OK);
    let enabled = json_of(enabled).await;
    assert_eq!(
        (
            enabled["enabled"].as_bool(),
            enabled["disabled_reason"].as_str()
        ),
        (Some(true), None)
    );
    let got = receiver.wait_for(8, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 8);
    assert_eq!(header(&got[6], "calbridge-webhook-id"), ids[0]);
    assert_eq!(header(&got[7], "calbridge-webhook-id"), ids[0]);
    assert_eq!(
        header(&got[6], "calbridge-attempt"),
        "1",
        "the streak starts again"
    );
    let throttled_wait = got[7].at - got[6].at;
    assert!(
        throttled_wait >= Duration::from_millis(1000),
        "Retry-After not honoured: {throttled_wait:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let w = json_of(
            server
                .get(&server.admin, &format!("/v1/calendar/webhooks/{id}"))
                .await,
        )
        .await;
        if w["consecutive_failures"] == 0 || Instant::now() > deadline {
            assert_eq!(w["consecutive_failures"], 0);
            assert_eq!(w["enabled"], true);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refusals_story(backend: Backend) {
    // The default configuration: private networks are not allowed.
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    for (url, code) in [
        ("http://127.0.0.1:9/hook", "url_not_allowed"),
        ("http://localhost:9/hook", "url_not_allowed"),
        ("http://10.1.2.3/hook", "url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", "url_not_allowed"),
        ("http://[::1]:9/hook", "url_not_allowed"),
        ("ftp://example.com/hook", "invalid_url"),
        ("not a url", "invalid_url"),
    ] {
        let response = server
            .post_json(&server.admin, "/v1/calendar/webhooks", json!({"url": url}))
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(json_of(response).await["code"], code, "{url}");
    }
    let response = server
        .post_json(
            &server.admin,
            "/v1/calendar/webhooks",
            json!({"url": "https://93.184.215.14/hook", "events": ["event.exploded"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(response).await["code"], "invalid_events");
    // Nothing was stored.
    let list = json_of(server.get(&server.admin, "/v1/calendar/webhooks").await).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // A key without connections:manage may not manage webhooks.
    let reader = server.key(None, &[Scope::EventsRead, Scope::Admin]).await;
    assert_eq!(
        server.get(&reader, "/v1/calendar/webhooks").await.status(),
        StatusCode::FORBIDDEN
    );
}

macro_rules! fast_both {
    ($($name:ident => $story:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = TestServer::start_with(Backend::Sqlite, fast_config()).await.unwrap();
                    $story(server).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn private_targets_and_bad_input_are_refused() {
                refusals_story(Backend::Sqlite).await;
            }
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = TestServer::start_with(Backend::Postgres, fast_config()).await else { return };
                    $story(server).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn private_targets_and_bad_input_are_refused() {
                refusals_story(Backend::Postgres).await;
            }
        }
    };
}

fast_both! {
    deliveries_are_signed_logged_and_isolated => signed_delivery_story,
    failing_receiver_backs_off_is_disabled_and_resumes => failing_receiver_story,
}

/// Two nodes on one PostgreSQL database, both running the delivery worker: every message reaches the
/// receiver once and in order (the per-webhook job lease lets one node at a time deliver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_deliver_each_message_once_in_order() {
    let Some(node_a) = TestServer::start_with(Backend::Postgres, fast_config()).await else {
        return;
    };
    // Node B: the same database and master key, its own process-level state and workers.
    let config = node_a.config.clone();
    let master = calbridge_server::bootstrap::master_key(&config).unwrap();
    let store_b = calbridge_server::bootstrap::open_store(&config)
        .await
        .unwrap();
    let state = calbridge_server::AppState::new(config, store_b, master.key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr_b = listener.local_addr().unwrap();
    let (stop_b, stopped) = tokio::sync::oneshot::channel::<()>();
    let node_b = tokio::spawn(calbridge_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let receiver = Receiver::start(200).await;
    let calendar = create_calendar(&node_a, &node_a.admin, "shared").await;
    let created = node_a
        .post_json(
            &node_a.admin,
            "/v1/calendar/webhooks",
            json!({"url": receiver.url()}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let secret = json_of(created).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::new();
    let total = 12;
    for n in 0..total {
        // Alternate the node that takes the write (and rings its own bell).
        let base = if n % 2 == 0 {
            node_a.base.clone()
        } else {
            format!("http://{addr_b}")
        };
        let response = client
            .post(format!("{base}/v1/calendar/events"))
            .bearer_auth(&node_a.admin)
            .json(&json!({"calendar_id": calendar, "summary": format!("E{n}"), "start": "2026-03-02T10:00:00Z"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let got = receiver.wait_for(total, Duration::from_secs(20)).await;
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got_all = receiver.received();
    assert_eq!(got.len(), total);
    assert_eq!(got_all.len(), total, "a message was delivered twice");
    let seqs: Vec<i64> = got_all
        .iter()
        .map(|r| {
            assert!(verify(&secret, r));
            serde_json::from_str::<Value>(&r.body).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    let _ = stop_b.send(());
    node_b.await.unwrap().unwrap();
}
