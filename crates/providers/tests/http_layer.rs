//! The shared HTTP layer against a real axum server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use calbridge_providers::http::{
    AddressPolicy, Budget, BudgetConfig, Credentials, HttpClient, HttpConfig, Request, RetryPolicy,
    Secret,
};
use calbridge_providers::{ProviderError, Unavailability};
use http::Method;
use md5::{Digest, Md5};
use tokio::sync::Mutex;
use url::Url;

#[derive(Default)]
struct Log {
    arrivals: Mutex<Vec<(Instant, String, HeaderMap)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

async fn serve(router: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Url::parse(&format!("http://{addr}/")).unwrap()
}

fn client(retry: RetryPolicy) -> HttpClient {
    HttpClient::new(HttpConfig {
        retry,
        address_policy: AddressPolicy::with_loopback(),
        ..HttpConfig::default()
    })
    .unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

fn endpoint(client: &HttpClient) -> calbridge_providers::http::Endpoint {
    client.endpoint(
        "test",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    )
}

/// Answers each path's scripted statuses in turn, then 200.
fn scripted(log: Arc<Log>, script: Vec<(u16, Option<String>)>) -> Router {
    let script = Arc::new(Mutex::new(script.into_iter()));
    Router::new()
        .fallback(any(
            move |State(log): State<Arc<Log>>, method: Method, headers: HeaderMap| {
                let script = script.clone();
                async move {
                    log.arrivals
                        .lock()
                        .await
                        .push((Instant::now(), method.to_string(), headers));
                    match script.lock().await.next() {
                        Some((status, retry_after)) => {
                            let mut response =
                                (StatusCode::from_u16(status).unwrap(), "scripted").into_response();
                            if let Some(mut value) = retry_after {
                                if value == "DATE+2" {
                                    value = httpdate::fmt_http_date(
                                        std::time::SystemTime::now() + Duration::from_secs(2),
                                    );
                                }
                                response
                                    .headers_mut()
                                    .insert(header::RETRY_AFTER, value.parse().unwrap());
                            }
                            response
                        }
                        None => (StatusCode::OK, "done").into_response(),
                    }
                }
            },
        ))
        .with_state(log)
}

async fn gaps(log: &Log) -> Vec<Duration> {
    let arrivals = log.arrivals.lock().await;
    arrivals
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .collect()
}

#[tokio::test]
async fn retry_after_in_seconds_decimals_and_dates_is_never_undercut() {
    let log = Arc::new(Log::default());
    let url = serve(scripted(
        log.clone(),
        vec![
            (429, Some("1".into())),
            (429, Some("0.6".into())),
            (503, Some("DATE+2".into())),
            (200, None),
        ],
    ))
    .await;
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::GET, url))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.requests, 4);
    let gaps = gaps(&log).await;
    assert_eq!(gaps.len(), 3);
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(600), "{gaps:?}");
    // An HTTP-date has one-second resolution: the wait reaches at least the start of that second.
    assert!(gaps[2] >= Duration::from_millis(1000), "{gaps:?}");
}

#[tokio::test]
async fn throttling_pauses_the_whole_budget() {
    let log = Arc::new(Log::default());
    let url = serve(scripted(log.clone(), vec![(429, Some("1".into()))])).await;
    let endpoint = endpoint(&client(fast_retry()));
    let first = endpoint.send(Request::new(Method::GET, url.clone()));
    let second = async {
        // Starts after the 429 went out; must still wait for the pause.
        tokio::time::sleep(Duration::from_millis(200)).await;
        endpoint
            .send(Request::new(Method::GET, url.join("other").unwrap()))
            .await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!(a.unwrap().status, 200);
    assert_eq!(b.unwrap().status, 200);
    let arrivals = log.arrivals.lock().await;
    assert_eq!(arrivals.len(), 3);
    let throttled_at = arrivals[0].0;
    for (at, _, _) in arrivals.iter().skip(1) {
        assert!(at.duration_since(throttled_at) >= Duration::from_secs(1));
    }
}

#[tokio::test]
async fn a_retry_after_longer_than_the_policy_fails_fast_with_the_wait() {
    let log = Arc::new(Log::default());
    let url = serve(scripted(log.clone(), vec![(429, Some("3600".into()))])).await;
    let started = Instant::now();
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::GET, url))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(log.arrivals.lock().await.len(), 1);
    match response.error() {
        ProviderError::RateLimited { retry_after } => {
            assert_eq!(retry_after, Some(Duration::from_secs(3600)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_requests_only() {
    let log = Arc::new(Log::default());
    let url = serve(scripted(
        log.clone(),
        vec![(500, None), (502, None), (200, None)],
    ))
    .await;
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::GET, url))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(log.arrivals.lock().await.len(), 3);

    let log = Arc::new(Log::default());
    let url = serve(scripted(log.clone(), vec![(500, None)])).await;
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::POST, url.clone()))
        .await
        .unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(
        log.arrivals.lock().await.len(),
        1,
        "a POST must not be repeated after a 500"
    );
    assert!(matches!(
        response.error(),
        ProviderError::Unavailable {
            reason: Unavailability::Status(500),
            ..
        }
    ));

    // ...but a 429 means "not processed", so even a POST is repeated.
    let log = Arc::new(Log::default());
    let url = serve(scripted(log.clone(), vec![(429, Some("0".into()))])).await;
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::POST, url))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(log.arrivals.lock().await.len(), 2);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_attempts() {
    let log = Arc::new(Log::default());
    let url = serve(scripted(log.clone(), vec![(503, None); 10])).await;
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::GET, url))
        .await
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(log.arrivals.lock().await.len(), 4);
}

#[tokio::test]
async fn connection_refused_is_classified_and_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = Url::parse(&format!("http://{addr}/")).unwrap();
    let err = endpoint(&client(fast_retry()))
        .send(Request::new(Method::GET, url))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Unavailable {
                reason: Unavailability::Connect,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirects_to_blocked_addresses_are_refused() {
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "file:///etc/passwd",
    ] {
        let target = target.to_owned();
        let router = Router::new().fallback(any(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, target)]).into_response() }
        }));
        let url = serve(router).await;
        let err = endpoint(&client(fast_retry()))
            .send(Request::new(Method::GET, url))
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Blocked { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed_by_literal_and_by_name() {
    let log = Arc::new(Log::default());
    let url = serve(scripted(log.clone(), vec![])).await;
    let strict = HttpClient::new(HttpConfig::default()).unwrap();
    let strict = strict.endpoint(
        "test",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );
    let err = strict
        .send(Request::new(Method::GET, url.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Blocked { .. }), "{err:?}");
    // By name: only the resolver sees that localhost is 127.0.0.1.
    let mut by_name = url.clone();
    by_name.set_host(Some("localhost")).unwrap();
    let err = strict
        .send(Request::new(Method::GET, by_name.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Blocked { .. }), "{err:?}");
    assert!(
        log.arrivals.lock().await.is_empty(),
        "nothing may reach the server"
    );
    // The operator's explicit permission opens it.
    let allowed = endpoint(&client(fast_retry()));
    assert_eq!(
        allowed
            .send(Request::new(Method::GET, by_name))
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn redirects_keep_webdav_methods_and_drop_credentials_across_origins() {
    let log = Arc::new(Log::default());
    let other = serve(scripted(log.clone(), vec![])).await;
    let mut other_by_name = other.clone();
    other_by_name.set_host(Some("localhost")).unwrap();
    let same_log = Arc::new(Log::default());
    let same_target = Arc::new(Mutex::new(String::new()));
    let st = same_target.clone();
    let sl = same_log.clone();
    let to_other = other_by_name.to_string();
    let router =
        Router::new()
            .route(
                "/well-known",
                any(|| async {
                    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/dav/")]).into_response()
                }),
            )
            .route(
                "/dav/",
                any(move |method: Method, headers: HeaderMap| {
                    let st = st.clone();
                    let sl = sl.clone();
                    async move {
                        sl.arrivals.lock().await.push((
                            Instant::now(),
                            method.to_string(),
                            headers,
                        ));
                        *st.lock().await = "seen".into();
                        (StatusCode::MULTI_STATUS, "ok").into_response()
                    }
                }),
            )
            .route(
                "/away",
                any(move || {
                    let to = to_other.clone();
                    async move {
                        (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
                    }
                }),
            );
    let url = serve(router).await;
    let client = client(fast_retry());
    let ep = client.endpoint(
        "test",
        Credentials::Password {
            username: "u".into(),
            password: Secret::new("p"),
        },
        Budget::new(BudgetConfig::default()),
    );
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let response = ep
        .send(Request::new(
            propfind.clone(),
            url.join("well-known").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(response.status, 207);
    assert_eq!(response.url.path(), "/dav/");
    let arrivals = same_log.arrivals.lock().await;
    assert_eq!(
        arrivals[0].1, "PROPFIND",
        "a 301 must not turn PROPFIND into GET"
    );
    assert!(arrivals[0].2.contains_key(header::AUTHORIZATION));
    drop(arrivals);

    let response = ep
        .send(Request::new(propfind, url.join("away").unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let arrivals = log.arrivals.lock().await;
    assert_eq!(arrivals.len(), 1);
    assert!(
        !arrivals[0].2.contains_key(header::AUTHORIZATION),
        "credentials must not follow to another origin"
    );
    drop(arrivals);

    // Credentials a connector sets as headers itself (OAuth bearer tokens) are dropped too.
    let mut bearer = Request::new(Method::GET, url.join("away").unwrap());
    bearer.headers.insert(
        header::AUTHORIZATION,
        header::HeaderValue::from_static("Bearer secret-token"),
    );
    bearer.headers.insert(
        header::COOKIE,
        header::HeaderValue::from_static("session=1"),
    );
    let response = ep.send(bearer).await.unwrap();
    assert_eq!(response.status, 200);
    let arrivals = log.arrivals.lock().await;
    assert_eq!(arrivals.len(), 2);
    assert!(
        !arrivals[1].2.contains_key(header::AUTHORIZATION)
            && !arrivals[1].2.contains_key(header::COOKIE),
        "a bearer token or cookie must not follow to another origin: {:?}",
        arrivals[1].2
    );
}

#[tokio::test]
async fn concurrency_budget_is_kept() {
    let log = Arc::new(Log::default());
    let router = Router::new()
        .fallback(any(|State(log): State<Arc<Log>>| async move {
            let now = log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            log.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            log.in_flight.fetch_sub(1, Ordering::SeqCst);
            "ok"
        }))
        .with_state(log.clone());
    let url = serve(router).await;
    let client = client(fast_retry());
    let ep = client.endpoint(
        "test",
        Credentials::None,
        Budget::new(BudgetConfig {
            concurrency: 4,
            rate: None,
        }),
    );
    let requests = (0..16).map(|i| {
        ep.send(Request::new(
            Method::GET,
            url.join(&format!("r{i}")).unwrap(),
        ))
    });
    let results = futures::future::join_all(requests).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status == 200))
    );
    let max = log.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 4, "at most 4 in flight, saw {max}");
    assert!(max >= 2, "requests should overlap, saw {max}");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let router = Router::new().fallback(any(|| async { "x".repeat(4096) }));
    let url = serve(router).await;
    let client = HttpClient::new(HttpConfig {
        max_body_bytes: 1024,
        address_policy: AddressPolicy::with_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let err = endpoint(&client)
        .send(Request::new(Method::GET, url))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn gzip_is_asked_for_and_decoded() {
    let big = "BEGIN:VCALENDAR\r\n".repeat(2000);
    let expected = big.clone();
    let router = Router::new()
        .fallback(any(move |headers: HeaderMap| {
            let big = big.clone();
            async move {
                let accepts = headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (
                    [(header::CONTENT_TYPE, "text/calendar")],
                    format!("{accepts}\n{big}"),
                )
            }
        }))
        .layer(tower_http::compression::CompressionLayer::new());
    let url = serve(router).await;
    let response = endpoint(&client(fast_retry()))
        .send(Request::new(Method::GET, url))
        .await
        .unwrap();
    assert!(
        !response.headers.contains_key(header::CONTENT_ENCODING),
        "decoded transparently"
    );
    let text = response.text();
    let (accepts, body) = text.split_once('\n').unwrap();
    assert!(
        accepts.contains("gzip") && accepts.contains("br"),
        "{accepts}"
    );
    assert_eq!(body, expected);
}

#[tokio::test]
async fn digest_auth_answers_the_challenge_and_reuses_it() {
    const REALM: &str = "calbridge-test";
    const NONCE: &str = "5f1c2d3e4a5b6c7d";
    let log = Arc::new(Log::default());
    let router = Router::new()
        .fallback(any(|State(log): State<Arc<Log>>, method: Method, uri: axum::http::Uri, headers: HeaderMap| async move {
            log.arrivals.lock().await.push((Instant::now(), method.to_string(), headers.clone()));
            let challenge = || -> Response {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, format!("Digest realm=\"{REALM}\", qop=\"auth\", nonce=\"{NONCE}\", opaque=\"op\""))],
                )
                    .into_response()
            };
            let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return challenge() };
            let Some(params) = auth.strip_prefix("Digest ") else { return challenge() };
            let get = |k: &str| {
                params.split(", ").find_map(|p| p.strip_prefix(&format!("{k}="))).map(|v| v.trim_matches('"').to_owned())
            };
            let hex = |s: String| hex::encode(Md5::digest(s.as_bytes()));
            let ha1 = hex(format!("alice:{REALM}:wonderland"));
            let ha2 = hex(format!("{}:{}", method, uri.path()));
            let expected = hex(format!(
                "{ha1}:{NONCE}:{}:{}:auth:{ha2}",
                get("nc").unwrap_or_default(),
                get("cnonce").unwrap_or_default()
            ));
            if get("response").as_deref() == Some(expected.as_str()) && get("uri").as_deref() == Some(uri.path()) && get("opaque").as_deref() == Some("op") {
                (StatusCode::OK, "welcome").into_response()
            } else {
                challenge()
            }
        }))
        .with_state(log.clone());
    let url = serve(router).await;
    let client = client(fast_retry());
    let good = client.endpoint(
        "test",
        Credentials::Password {
            username: "alice".into(),
            password: Secret::new("wonderland"),
        },
        Budget::new(BudgetConfig::default()),
    );
    assert_eq!(
        good.send(Request::new(Method::GET, url.join("a").unwrap()))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        log.arrivals.lock().await.len(),
        2,
        "one challenge, one answer"
    );
    assert_eq!(
        good.send(Request::new(Method::GET, url.join("b").unwrap()))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        log.arrivals.lock().await.len(),
        3,
        "the known challenge is answered up front"
    );

    let bad = client.endpoint(
        "test",
        Credentials::Password {
            username: "alice".into(),
            password: Secret::new("wrong"),
        },
        Budget::new(BudgetConfig::default()),
    );
    let response = bad
        .send(Request::new(Method::GET, url.join("c").unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status, 401);
    assert!(matches!(
        response.error(),
        ProviderError::Auth { status: 401 }
    ));
}

#[derive(Debug)]
struct RotatingTokens {
    current: Mutex<u32>,
    refusals: AtomicUsize,
    broken: bool,
}

#[async_trait::async_trait]
impl calbridge_providers::http::TokenSource for RotatingTokens {
    async fn access_token(&self) -> Result<Secret, ProviderError> {
        if self.broken {
            return Err(ProviderError::Auth { status: 400 });
        }
        Ok(Secret::new(format!("token-{}", self.current.lock().await)))
    }

    async fn refused(&self, token: &Secret) {
        self.refusals.fetch_add(1, Ordering::SeqCst);
        let mut current = self.current.lock().await;
        if token.expose() == format!("token-{current}") {
            *current += 1;
        }
    }
}

#[tokio::test]
async fn oauth_tokens_are_refreshed_once_on_401() {
    let log = Arc::new(Log::default());
    let router = Router::new()
        .fallback(any(
            |State(log): State<Arc<Log>>, headers: HeaderMap| async move {
                log.arrivals
                    .lock()
                    .await
                    .push((Instant::now(), "GET".into(), headers.clone()));
                match headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                {
                    Some("Bearer token-1") => (StatusCode::OK, "in").into_response(),
                    _ => StatusCode::UNAUTHORIZED.into_response(),
                }
            },
        ))
        .with_state(log.clone());
    let url = serve(router).await;
    let client = client(fast_retry());
    let source = Arc::new(RotatingTokens {
        current: Mutex::new(0),
        refusals: AtomicUsize::new(0),
        broken: false,
    });
    let ep = client.endpoint(
        "google",
        Credentials::OAuth(source.clone()),
        Budget::new(BudgetConfig::default()),
    );
    assert_eq!(
        ep.send(Request::new(Method::GET, url.clone()))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(source.refusals.load(Ordering::SeqCst), 1);
    assert_eq!(log.arrivals.lock().await.len(), 2);
    // The refreshed token is used from then on; no more refusals.
    assert_eq!(
        ep.send(Request::new(Method::GET, url.clone()))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(source.refusals.load(Ordering::SeqCst), 1);

    // A token that is refused again after the refresh is a real credentials problem: one retry only.
    *source.current.lock().await = 5;
    let response = ep
        .send(Request::new(Method::GET, url.clone()))
        .await
        .unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(source.refusals.load(Ordering::SeqCst), 2);

    // A source that cannot produce a token (invalid_grant) fails the call before anything is sent.
    let before = log.arrivals.lock().await.len();
    let broken = Arc::new(RotatingTokens {
        current: Mutex::new(0),
        refusals: AtomicUsize::new(0),
        broken: true,
    });
    let ep = client.endpoint(
        "google",
        Credentials::OAuth(broken),
        Budget::new(BudgetConfig::default()),
    );
    assert!(matches!(
        ep.send(Request::new(Method::GET, url)).await,
        Err(ProviderError::Auth { .. })
    ));
    assert_eq!(log.arrivals.lock().await.len(), before);
}
