#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! OAuth (code + PKCE, refresh rotation, invalid_grant, expiry), throttling and every fault mode.

mod common;

use std::time::{Duration, Instant};

use calbridge_emulators::{EmulatorConfig, Fault, FaultRule, FaultScope, Flavor, pkce_challenge};
use common::{Api, json_of};
use serde_json::json;

const VERIFIER: &str = "M25iVXpKU3puUjFaYWg3T1NDTDQtcW1ROUY5YXlwalNoc0hhakxifmZHag";

fn code_from(location: &str) -> (String, Option<String>) {
    let url = url::Url::parse(location).unwrap();
    let code = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    (code, state)
}

async fn authorize(api: &Api, path: &str, extra: &str) -> String {
    let url = format!(
        "{path}?client_id=app-1&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_mode=query&scope=offline_access%20Calendars.ReadWrite&state=12345&code_challenge={}&code_challenge_method=S256{extra}",
        pkce_challenge(VERIFIER)
    );
    let r = api.http.get(api.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://localhost/cb?"), "{location}");
    let (code, state) = code_from(&location);
    assert_eq!(state.as_deref(), Some("12345"));
    code
}

async fn token(api: &Api, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    json_of(
        api.http
            .post(api.url(path))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn microsoft_code_pkce_refresh_rotation_and_errors() {
    let api = Api::start(Flavor::Microsoft, EmulatorConfig::default()).await;
    let token_path = "/common/oauth2/v2.0/token";
    let code = authorize(&api, "/common/oauth2/v2.0/authorize", "").await;
    // Wrong verifier: invalid_grant with the identity platform's error shape; the code is spent.
    let (status, err) = token(
        &api,
        token_path,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "app-1"),
            ("code", &code),
            ("redirect_uri", "http://localhost/cb"),
            ("code_verifier", "wrong"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS")
    );
    assert!(
        err["error_codes"][0].is_number()
            && err["trace_id"].is_string()
            && err["correlation_id"].is_string()
            && err["timestamp"].is_string()
    );

    let code = authorize(&api, "/common/oauth2/v2.0/authorize", "").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "app-1"),
        ("code", code.as_str()),
        ("redirect_uri", "http://localhost/cb"),
        ("code_verifier", VERIFIER),
    ];
    let (status, tokens) = token(&api, token_path, &form).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3599);
    assert_eq!(tokens["scope"], "offline_access Calendars.ReadWrite");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        api.http
            .get(api.url("/v1.0/me/calendars"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A code works once.
    let (status, err) = token(&api, token_path, &form).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (status, rotated) = token(
        &api,
        token_path,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "app-1"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let new_refresh = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh);
    let (status, err) = token(
        &api,
        token_path,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "app-1"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "the rotated-out refresh token is dead"
    );
    let (status, err) = token(&api, token_path, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Access token expiry: 401 InvalidAuthenticationToken; a refresh brings access back.
    api.emu.expire_tokens();
    let (status, err) = json_of(
        api.http
            .get(api.url("/v1.0/me/calendars"))
            .bearer_auth(rotated["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "InvalidAuthenticationToken");
    let (_, again) = token(
        &api,
        token_path,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "app-1"),
            ("refresh_token", new_refresh),
        ],
    )
    .await;
    assert_eq!(
        api.http
            .get(api.url("/v1.0/me/calendars"))
            .bearer_auth(again["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api.http
            .get(api.url("/v1.0/me/calendars"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn access_tokens_expire_by_lifetime() {
    let config = EmulatorConfig {
        access_token_lifetime_secs: 1,
        ..EmulatorConfig::default()
    };
    let api = Api::start(Flavor::Google, config).await;
    assert_eq!(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, err) = json_of(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["errors"][0]["reason"], "authError");
    assert_eq!(err["error"]["errors"][0]["location"], "Authorization");
}

#[tokio::test]
async fn google_code_pkce_and_refresh() {
    let api = Api::start(Flavor::Google, EmulatorConfig::default()).await;
    let code = authorize(
        &api,
        "/o/oauth2/v2/auth",
        "&access_type=offline&prompt=consent",
    )
    .await;
    let (status, tokens) = token(
        &api,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "app-1"),
            ("code", &code),
            ("redirect_uri", "http://localhost/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["expires_in"], 3599);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, _) = token(
        &api,
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "app-1"),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (status, err) = token(
        &api,
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "app-1"),
            ("refresh_token", "revoked"),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Without access_type=offline there is no refresh token.
    let code = authorize(&api, "/o/oauth2/v2/auth", "").await;
    let (_, tokens) = token(
        &api,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "app-1"),
            ("code", &code),
            ("redirect_uri", "http://localhost/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert!(tokens.get("refresh_token").is_none());
}

#[tokio::test]
async fn graph_budget_gives_429_with_retry_after() {
    let config = EmulatorConfig {
        requests_per_window: 3,
        window_secs: 60,
        ..EmulatorConfig::default()
    };
    let api = Api::start(Flavor::Microsoft, config).await;
    for _ in 0..3 {
        assert_eq!(
            api.get("/v1.0/me/calendars").send().await.unwrap().status(),
            200
        );
    }
    let r = api.get("/v1.0/me/calendars").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: f64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0.0 && retry <= 60.0);
    let (_, body) = json_of(r).await;
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["message"], "Please retry again later.");
    assert_eq!(body["error"]["innerError"]["status"], "429");
    // Inside a batch the throttled item carries its own 429 and Retry-After.
    api.emu.reset_throttling();
    let batch = json!({"requests": (0..4).map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me/calendars"})).collect::<Vec<_>>()});
    let (status, body) = json_of(api.post("/v1.0/$batch", &batch).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let throttled: Vec<_> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 429)
        .collect();
    assert_eq!(throttled.len(), 2, "{body}");
    assert!(throttled[0]["headers"]["Retry-After"].is_string());
    assert_eq!(
        api.emu.counters().with_status(429),
        1,
        "the outer 429 is counted; inner ones live in the batch body"
    );
}

#[tokio::test]
async fn graph_caps_concurrent_requests_per_mailbox() {
    let config = EmulatorConfig {
        max_concurrent_per_mailbox: 1,
        ..EmulatorConfig::default()
    };
    let api = Api::start(Flavor::Microsoft, config).await;
    api.emu
        .add_fault(FaultRule {
            path_contains: Some("/me/calendars".into()),
            method: None,
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::Latency { ms: 400 },
        })
        .unwrap();
    let slow = api.get("/v1.0/me/calendars").send();
    let quick = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.get("/v1.0/me/calendar").send().await.unwrap()
    };
    let (slow, quick) = tokio::join!(slow, quick);
    assert_eq!(slow.unwrap().status(), 200);
    assert_eq!(quick.status(), 429);
}

#[tokio::test]
async fn google_rate_limit_as_403_and_429() {
    let config = EmulatorConfig {
        requests_per_window: 1,
        window_secs: 60,
        ..EmulatorConfig::default()
    };
    let api = Api::start(Flavor::Google, config).await;
    assert_eq!(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, err) = json_of(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        err["error"]["errors"][0],
        json!({"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"})
    );
    api.emu.reset_throttling();
    api.emu
        .add_fault(FaultRule {
            path_contains: None,
            method: None,
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::Throttle {
                retry_after_secs: 1.0,
                status: Some(429),
            },
        })
        .unwrap();
    let (status, err) = json_of(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["code"], 429);
    assert_eq!(err["error"]["errors"][0]["reason"], "rateLimitExceeded");
}

#[tokio::test]
async fn each_fault_mode() {
    let api = Api::start(Flavor::Microsoft, EmulatorConfig::default()).await;
    let path = "/v1.0/me/calendars";

    // Latency.
    api.emu
        .add_fault(FaultRule {
            path_contains: Some(path.into()),
            method: Some("GET".into()),
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::Latency { ms: 250 },
        })
        .unwrap();
    let t = Instant::now();
    assert_eq!(api.get(path).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(250));

    // 5xx with the provider's error body.
    api.emu
        .add_fault(FaultRule {
            path_contains: None,
            method: None,
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::ServerError { status: 503 },
        })
        .unwrap();
    let (status, err) = json_of(api.get(path).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert!(err["error"]["code"].is_string());

    // A burst of 429s, then service resumes.
    api.emu
        .add_fault(FaultRule {
            path_contains: None,
            method: None,
            times: Some(2),
            scope: FaultScope::Request,
            fault: Fault::Throttle {
                retry_after_secs: 2.128,
                status: None,
            },
        })
        .unwrap();
    for _ in 0..2 {
        let r = api.get(path).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2.128");
    }
    assert_eq!(api.get(path).send().await.unwrap().status(), 200);

    // Connection reset: no HTTP answer at all.
    api.emu
        .add_fault(FaultRule {
            path_contains: None,
            method: None,
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::ConnectionReset,
        })
        .unwrap();
    let outcome = match api.get(path).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(outcome, "a reset connection yields no complete answer");
    // The broken connection may sit in the client's pool; a fresh client sees the rule used up.
    let fresh = reqwest::Client::new();
    assert_eq!(
        fresh
            .get(api.url(path))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the rule was used up"
    );

    // Truncated body: the headers promise more than arrives.
    api.emu
        .add_fault(FaultRule {
            path_contains: None,
            method: None,
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::TruncatedBody,
        })
        .unwrap();
    let r = fresh
        .get(api.url(path))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "the body is cut short");

    // Token expiry.
    let api = Api {
        http: reqwest::Client::new(),
        ..api
    };
    api.emu
        .add_fault(FaultRule {
            path_contains: None,
            method: None,
            times: Some(1),
            scope: FaultScope::Request,
            fault: Fault::TokenExpiry,
        })
        .unwrap();
    assert_eq!(api.get(path).send().await.unwrap().status(), 401);
    assert_eq!(
        api.get(path).send().await.unwrap().status(),
        401,
        "the token stays expired"
    );

    let counters = api.emu.counters();
    assert_eq!(counters.with_status(503), 1);
    assert_eq!(counters.with_status(429), 2);
    assert_eq!(counters.with_status(0), 1, "resets are counted as status 0");
    assert_eq!(counters.with_status(401), 2);
    assert!(counters.for_endpoint("GET /v1.0/me/calendars") >= 10);
}

#[tokio::test]
async fn faults_over_the_control_api() {
    let api = Api::start(Flavor::Google, EmulatorConfig::default()).await;
    let base = api.emu.base_url().to_string();
    let rule = json!({"path_contains": "calendarList", "times": 1, "fault": {"kind": "server_error", "status": 500}});
    assert_eq!(
        api.http
            .post(format!("{base}/_control/faults"))
            .json(&rule)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, err) = json_of(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(err["error"]["errors"][0]["reason"], "backendError");
    assert_eq!(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let bad = json!({"fault": {"kind": "explode"}});
    assert_eq!(
        api.http
            .post(format!("{base}/_control/faults"))
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

/// `batch_item` rules reach the requests inside a `$batch`: the batch still answers 200 and the
/// faulted item carries its own status, error body and (throttled) `Retry-After`, as Graph reports a
/// per-request failure; a dependent of the failed item gets 424; the other items run. Rules of one
/// scope never touch requests of the other, and faults with no inner form are refused.
#[tokio::test]
async fn graph_faults_inside_a_batch_answer_as_inner_responses() {
    let api = Api::start(Flavor::Microsoft, EmulatorConfig::default()).await;
    let base = api.emu.base_url().to_string();
    // Over the control API: every inner `/me/calendars` fails with 500.
    let rule = json!({"scope": "batch_item", "path_contains": "/me/calendars", "fault": {"kind": "server_error", "status": 500}});
    let r = api
        .http
        .post(format!("{base}/_control/faults"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Through the Rust API: the first inner `/me/events` is throttled.
    api.emu
        .add_fault(FaultRule {
            path_contains: Some("/me/events".into()),
            method: Some("GET".into()),
            times: Some(1),
            scope: FaultScope::BatchItem,
            fault: Fault::Throttle {
                retry_after_secs: 0.5,
                status: None,
            },
        })
        .unwrap();
    // A top-level rule on the same path leaves batch items alone.
    api.emu
        .add_fault(FaultRule {
            path_contains: Some("/me/calendar/".into()),
            method: None,
            times: None,
            scope: FaultScope::Request,
            fault: Fault::ServerError { status: 503 },
        })
        .unwrap();
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/me/calendars"},
        {"id": "2", "method": "GET", "url": "/me/events?$top=5"},
        {"id": "3", "method": "GET", "url": "/me/calendar/events"},
        {"id": "4", "method": "GET", "url": "/me/calendar", "dependsOn": ["1"]},
        {"id": "5", "method": "GET", "url": "/me/events"},
    ]});
    let (status, body) = json_of(api.post("/v1.0/$batch", &batch).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let failed = by_id("1");
    assert_eq!(failed["status"], 500, "{failed}");
    assert_eq!(failed["body"]["error"]["code"], "serviceNotAvailable");
    let throttled = by_id("2");
    assert_eq!(throttled["status"], 429, "{throttled}");
    assert_eq!(throttled["headers"]["Retry-After"], "0.5");
    assert_eq!(throttled["body"]["error"]["code"], "TooManyRequests");
    assert_eq!(by_id("3")["status"], 200, "a top-level rule");
    assert_eq!(by_id("4")["status"], 424, "depends on the failed item");
    assert_eq!(by_id("5")["status"], 200, "the throttle rule was used up");
    // The inner rule does not touch the same path requested on its own; the top-level one does.
    assert_eq!(
        api.get("/v1.0/me/calendars").send().await.unwrap().status(),
        200
    );
    assert_eq!(
        api.get("/v1.0/me/calendar/events")
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let left = api.emu.faults();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|r| r.times.is_none()));
    api.emu.clear_faults();
    let (status, body) = json_of(api.post("/v1.0/$batch", &batch).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 200),
        "{body}"
    );

    // An inner item has no connection to reset nor a body of its own to cut short.
    let reset = FaultRule {
        path_contains: None,
        method: None,
        times: None,
        scope: FaultScope::BatchItem,
        fault: Fault::ConnectionReset,
    };
    assert!(api.emu.add_fault(reset).is_err());
    let truncated = json!({"scope": "batch_item", "fault": {"kind": "truncated_body"}});
    let r = api
        .http
        .post(format!("{base}/_control/faults"))
        .json(&truncated)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(api.emu.faults().is_empty());
}
