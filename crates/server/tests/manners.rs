//! Production manners on the real server: graceful shutdown lets in-flight requests finish, per-key rate
//! limits answer 429 with Retry-After, slow requests time out with a problem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use calbridge_server::config::HumanDuration;
use calbridge_server::keys::Scope;
use common::{Backend, TestServer, test_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A JSON body that arrives in pieces over `total`, so the request is in flight that long.
fn trickle(body: String, total: Duration) -> reqwest::Body {
    let pieces: Vec<Vec<u8>> = body.into_bytes().chunks(4).map(<[u8]>::to_vec).collect();
    let pause = total / pieces.len() as u32;
    let stream = futures::stream::unfold(pieces.into_iter(), move |mut rest| async move {
        let piece = rest.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<_, std::io::Error>(piece), rest))
    });
    reqwest::Body::wrap_stream(stream)
}

async fn graceful_shutdown(backend: Backend) {
    let Some(mut server) = TestServer::start(backend).await else {
        return;
    };
    let url = server.url("/v1/calendar/calendars");
    let admin = server.admin.clone();
    let client = server.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(admin)
            .header("content-type", "application/json")
            .body(trickle(
                json!({"name": "finished during shutdown"}).to_string(),
                Duration::from_millis(1500),
            ))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.stop().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "shutdown waited for the request"
    );
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "the in-flight request completed"
    );
    // It was stored, and the server no longer accepts connections.
    let calendars = server.store.list_calendars(
        calbridge_server::bootstrap::tenant_by_name_or_id(server.store.as_ref(), "default")
            .await
            .unwrap()
            .id,
    );
    assert_eq!(calendars.await.unwrap().len(), 1);
    assert!(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sqlite() {
    graceful_shutdown(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_postgres() {
    graceful_shutdown(Backend::Postgres).await;
}

async fn rate_limits(backend: Backend) {
    let mut config = test_config();
    config.rate_limit.enabled = true;
    config.rate_limit.requests_per_second = 0.5;
    config.rate_limit.burst = 3;
    let Some(server) = TestServer::start_with(backend, config).await else {
        return;
    };
    let key = server.key(None, &[Scope::EventsRead]).await;
    for _ in 0..3 {
        assert_eq!(
            server.get(&key, "/v1/calendar/calendars").await.status(),
            StatusCode::OK
        );
    }
    let limited = server.get(&key, "/v1/calendar/calendars").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    let other = server.key(None, &[Scope::EventsRead]).await;
    assert_eq!(
        server.get(&other, "/v1/calendar/calendars").await.status(),
        StatusCode::OK,
        "buckets are per key"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        server.get(&key, "/v1/calendar/calendars").await.status(),
        StatusCode::OK,
        "the bucket refills"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_sqlite() {
    rate_limits(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_postgres() {
    rate_limits(Backend::Postgres).await;
}

async fn slow_requests_time_out(backend: Backend) {
    let mut config = test_config();
    config.limits.request_timeout = HumanDuration::from_secs(1);
    let Some(server) = TestServer::start_with(backend, config).await else {
        return;
    };
    let response = server
        .client
        .post(server.url("/v1/calendar/calendars"))
        .bearer_auth(&server.admin)
        .header("content-type", "application/json")
        .body(trickle(
            json!({"name": "too slow"}).to_string(),
            Duration::from_millis(3000),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "timeout");
    assert_eq!(
        server.get(&server.admin, "/healthz").await.status(),
        StatusCode::OK
    );
    let list: Value = server
        .get(&server.admin, "/v1/calendar/calendars")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "the abandoned request stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_sqlite() {
    slow_requests_time_out(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_postgres() {
    slow_requests_time_out(Backend::Postgres).await;
}

/// API keys are cached for `server.api_key_cache_ttl`: the secret is still checked on every request, a
/// revocation through this server's API holds at once (even with a long TTL), and one made elsewhere
/// (another node, `calbridge keys revoke`: straight in the store) holds once the TTL has passed.
async fn key_cache_keeps_revocation(backend: Backend) {
    let mut config = test_config();
    config.server.api_key_cache_ttl = HumanDuration::from_secs(3600);
    let Some(server) = TestServer::start_with(backend, config).await else {
        return;
    };
    let path = "/v1/calendar/calendars";
    let key = server.key(None, &[Scope::EventsRead]).await;
    assert_eq!(server.get(&key, path).await.status(), StatusCode::OK);
    // Same prefix (so the cached entry is found), another secret.
    let last = key.chars().last().unwrap();
    let forged = format!(
        "{}{}",
        &key[..key.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    assert_eq!(
        server.get(&forged, path).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.get(&key, path).await.status(), StatusCode::OK);
    let stored = server
        .store
        .find_api_key_by_prefix(&key[4..20])
        .await
        .unwrap()
        .unwrap();
    let revoked = server
        .client
        .delete(server.url(&format!("/v1/calendar/keys/{}", stored.id)))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        server.get(&key, path).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A short TTL, and a revocation the server does not see.
    let mut config = test_config();
    config.server.api_key_cache_ttl = HumanDuration(jiff::SignedDuration::from_millis(300));
    let Some(server) = TestServer::start_with(backend, config).await else {
        return;
    };
    let key = server.key(None, &[Scope::EventsRead]).await;
    assert_eq!(server.get(&key, path).await.status(), StatusCode::OK);
    let stored = server
        .store
        .find_api_key_by_prefix(&key[4..20])
        .await
        .unwrap()
        .unwrap();
    server
        .store
        .revoke_api_key(stored.tenant_id, stored.id)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        server.get(&key, path).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_cache_keeps_revocation_sqlite() {
    key_cache_keeps_revocation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_cache_keeps_revocation_postgres() {
    key_cache_keeps_revocation(Backend::Postgres).await;
}
