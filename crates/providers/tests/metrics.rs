//! Per-provider metrics: requests, errors by class, throttles, retries and latency are recorded
//! under the provider's label. A recorder of its own (this test binary's global one) reads them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use calbridge_providers::http::{
    AddressPolicy, Budget, BudgetConfig, Credentials, HttpClient, HttpConfig, Request, RetryPolicy,
};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use url::Url;

#[derive(Default)]
struct Store {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Mutex<Vec<f64>>>>>,
}

struct CounterCell(Arc<AtomicU64>);
impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

struct HistogramCell(Arc<Mutex<Vec<f64>>>);
impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Clone, Default)]
struct TestRecorder(Arc<Store>);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .0
            .counters
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Counter::from_arc(Arc::new(CounterCell(cell)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let cell = self
            .0
            .histograms
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Histogram::from_arc(Arc::new(HistogramCell(cell)))
    }
}

impl TestRecorder {
    fn counter(&self, name: &str) -> u64 {
        self.0
            .counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn requests_errors_throttles_and_latency_are_counted_per_provider() {
    let recorder = TestRecorder::default();
    metrics::set_global_recorder(recorder.clone()).unwrap();

    let throttled_once = Arc::new(AtomicU64::new(0));
    let t = throttled_once.clone();
    let router = Router::new()
        .route(
            "/throttle",
            get(move || {
                let t = t.clone();
                async move {
                    if t.fetch_add(1, Ordering::SeqCst) == 0 {
                        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")])
                            .into_response()
                    } else {
                        "ok".into_response()
                    }
                }
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let base = Url::parse(&format!("http://{addr}/")).unwrap();

    let client = HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap();
    let caldav = client.endpoint(
        "caldav",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );
    let ics = client.endpoint(
        "ics",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );

    assert_eq!(
        caldav
            .send(Request::new(
                http::Method::GET,
                base.join("throttle").unwrap()
            ))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        ics.send(Request::new(
            http::Method::GET,
            base.join("missing").unwrap()
        ))
        .await
        .unwrap()
        .status,
        404
    );

    assert_eq!(
        recorder.counter("calbridge_provider_requests_total{method=GET,provider=caldav}"),
        2
    );
    assert_eq!(
        recorder.counter("calbridge_provider_throttles_total{provider=caldav}"),
        1
    );
    assert_eq!(
        recorder.counter("calbridge_provider_retries_total{provider=caldav}"),
        1
    );
    assert_eq!(
        recorder.counter("calbridge_provider_errors_total{class=throttled,provider=caldav}"),
        1
    );
    assert_eq!(
        recorder.counter("calbridge_provider_requests_total{method=GET,provider=ics}"),
        1
    );
    assert_eq!(
        recorder.counter("calbridge_provider_errors_total{class=not_found,provider=ics}"),
        1
    );
    assert_eq!(
        recorder.counter("calbridge_provider_throttles_total{provider=ics}"),
        0
    );
    let latencies = {
        let histograms = recorder.0.histograms.lock().unwrap();
        histograms
            .get("calbridge_provider_request_duration_seconds{provider=caldav}")
            .unwrap()
            .lock()
            .unwrap()
            .clone()
    };
    assert_eq!(latencies.len(), 2);
    assert!(latencies.iter().all(|s| *s >= 0.0 && *s < 10.0));

    // Blocked requests are counted as such, and never reach the network.
    let strict = HttpClient::new(HttpConfig::default()).unwrap();
    let blocked = strict.endpoint(
        "google",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    );
    assert!(
        blocked
            .send(Request::new(
                http::Method::GET,
                base.join("missing").unwrap()
            ))
            .await
            .is_err()
    );
    assert_eq!(
        recorder.counter("calbridge_provider_errors_total{class=blocked,provider=google}"),
        1
    );
    assert_eq!(
        recorder.counter("calbridge_provider_requests_total{method=GET,provider=google}"),
        0
    );
}
