//! The HTTP shell shared by both emulators: configuration, bearer-token checks, fault injection, throttling,
//! counters, the `/_control` API and the listener.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::store::Store;

/// Which provider an emulator instance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Microsoft,
    Google,
}

/// One person's mailbox / account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSpec {
    pub id: String,
    pub address: String,
    pub name: String,
}

/// Knobs for behaviour the documents leave open ([obs]/[unv] in PROTOCOLS.md) and for test speed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulatorConfig {
    pub users: Vec<UserSpec>,
    /// `expires_in` of issued access tokens (both providers document 3599).
    pub access_token_lifetime_secs: i64,
    /// Whether a refresh invalidates the refresh token it used (rotation).
    pub refresh_rotation_invalidates_old: bool,
    /// Per-mailbox request budget per window (Outlook documents 10,000 per 10 minutes; Google 600/min/user).
    pub requests_per_window: u32,
    pub window_secs: u64,
    /// Concurrent requests per mailbox (Outlook documents 4).
    pub max_concurrent_per_mailbox: usize,
    /// Maximum Graph subscription lifetime in minutes (4230 in the docs read; 10080 in newer sources).
    pub max_subscription_minutes: i64,
    /// Default page size of Graph `/calendarView` and `/events` ([obs] 10).
    pub list_page_size: usize,
    /// Default page size of a Graph delta page without `Prefer: odata.maxpagesize` ([unv]).
    pub delta_page_size: usize,
    /// Status of Google's `rateLimitExceeded` when the budget runs out (403 or 429, both documented).
    pub google_rate_limit_status: u16,
    /// Webhook addresses must be https (true in production; loopback tests use http).
    pub require_https_webhooks: bool,
    /// Time a webhook receiver has for the validation handshake (Graph documents 10 s).
    pub validation_timeout_ms: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            users: vec![UserSpec {
                id: "7f2b4a1e-3c5d-4e6f-8a9b-0c1d2e3f4a5b".into(),
                address: "adele@contoso.example".into(),
                name: "Adele Vance".into(),
            }],
            access_token_lifetime_secs: 3599,
            refresh_rotation_invalidates_old: true,
            requests_per_window: 10_000,
            window_secs: 600,
            max_concurrent_per_mailbox: 4,
            max_subscription_minutes: 4230,
            list_page_size: 10,
            delta_page_size: 100,
            google_rate_limit_status: 403,
            require_https_webhooks: false,
            validation_timeout_ms: 10_000,
        }
    }
}

/// A fault injected into matching requests (see `/_control/faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Delay the answer.
    Latency { ms: u64 },
    /// Answer with this 5xx status and the provider's error body.
    ServerError { status: u16 },
    /// Answer 429 (Graph: with `Retry-After`; Google: `rateLimitExceeded`, status per `status`).
    Throttle {
        #[serde(default = "default_retry_after")]
        retry_after_secs: f64,
        #[serde(default)]
        status: Option<u16>,
    },
    /// Close the connection without an HTTP answer.
    ConnectionReset,
    /// Send the headers (with the full Content-Length) and half the body, then close.
    TruncatedBody,
    /// Expire every access token before handling the request (the request then gets 401).
    TokenExpiry,
}

fn default_retry_after() -> f64 {
    2.0
}

/// Which requests a [`FaultRule`] looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultScope {
    /// Requests as they arrive over HTTP: a `$batch` is one request (`POST /v1.0/$batch`).
    #[default]
    Request,
    /// The requests inside a Graph `$batch`, each matched by its own method and path (`/v1.0/...`,
    /// query left out). The fault becomes that item's inner response in the batch's 200 answer, as
    /// Graph reports per-request failures: its status and error body, a throttle's `Retry-After` as an
    /// inner header. Only faults with an inner form: `latency`, `server_error`, `throttle`,
    /// `token_expiry`.
    BatchItem,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Only requests whose path contains this string.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Only this method.
    #[serde(default)]
    pub method: Option<String>,
    /// How many matching requests get the fault (None = until cleared). A 429 burst is `Throttle` + `times`.
    #[serde(default)]
    pub times: Option<u32>,
    /// Top-level requests (the default) or the requests inside a `$batch`.
    #[serde(default)]
    pub scope: FaultScope,
    pub fault: Fault,
}

impl FaultRule {
    /// Refuses a rule the emulator could not apply faithfully: an item inside a `$batch` has no
    /// connection of its own to reset or body to cut short (its answer is a part of the batch's).
    pub fn check(&self) -> Result<(), EmulatorError> {
        match (self.scope, &self.fault) {
            (FaultScope::BatchItem, Fault::ConnectionReset | Fault::TruncatedBody) => {
                Err(EmulatorError::Control(format!(
                    "a {:?} fault has no form inside a $batch",
                    self.fault
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The answer a `server_error` fault gives: the status with the provider's error body.
pub(crate) fn fault_server_error(flavor: Flavor, status: u16) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match flavor {
        Flavor::Microsoft => crate::graph::error(
            status,
            "serviceNotAvailable",
            "The service is temporarily unavailable.",
        ),
        Flavor::Google => crate::google::error(status, "global", "backendError", "Backend Error"),
    }
}

#[derive(Debug)]
pub(crate) struct CodeGrant {
    pub mailbox: usize,
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: Option<String>,
    pub challenge_method: String,
    pub scope: String,
    pub offline: bool,
    pub expires: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessGrant {
    pub mailbox: usize,
    pub expires: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshGrant {
    pub mailbox: usize,
    pub client_id: String,
    pub scope: String,
}

#[derive(Debug, Default)]
pub(crate) struct AuthState {
    pub codes: HashMap<String, CodeGrant>,
    pub access: HashMap<String, AccessGrant>,
    pub refresh: HashMap<String, RefreshGrant>,
}

#[derive(Debug)]
struct Budget {
    window_start: Instant,
    used: u32,
    slots: Arc<Semaphore>,
}

/// Everything an emulator instance holds; one per listener.
#[derive(Debug)]
pub(crate) struct Shared {
    pub flavor: Flavor,
    pub config: EmulatorConfig,
    pub base_url: OnceLock<String>,
    pub store: RwLock<Store>,
    pub auth: Mutex<AuthState>,
    pub faults: Mutex<Vec<FaultRule>>,
    pub counters: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    budgets: Mutex<HashMap<usize, Budget>>,
    pub subscriptions: Mutex<crate::notify::Registry>,
    pub http: reqwest::Client,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn new(flavor: Flavor, config: EmulatorConfig) -> Arc<Self> {
        let mut store = Store::default();
        for user in &config.users {
            store.mailboxes.push(crate::store::Mailbox {
                user_id: user.id.clone(),
                address: user.address.clone(),
                name: user.name.clone(),
                calendars: Vec::new(),
                epoch: 1,
            });
        }
        let shared = Arc::new(Self {
            flavor,
            config,
            base_url: OnceLock::new(),
            store: RwLock::new(store),
            auth: Mutex::new(AuthState::default()),
            faults: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            budgets: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(crate::notify::Registry::default()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        });
        {
            let mut store = shared.write();
            for mailbox in 0..store.mailboxes.len() {
                crate::control::add_calendar(&mut store, flavor, mailbox, None);
            }
            store.pending.clear();
        }
        shared
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn base(&self) -> &str {
        self.base_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1")
    }

    /// Mints an access token for a mailbox without the OAuth dance (tests, benchmarks, the demo).
    pub fn mint_token(&self, mailbox: usize) -> String {
        let token = random_token(32);
        let expires = Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(
                self.config.access_token_lifetime_secs,
            ))
            .unwrap_or(Timestamp::MAX);
        lock(&self.auth)
            .access
            .insert(token.clone(), AccessGrant { mailbox, expires });
        token
    }

    pub fn expire_tokens(&self) {
        let past = Timestamp::UNIX_EPOCH;
        for grant in lock(&self.auth).access.values_mut() {
            grant.expires = past;
        }
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<usize, AuthFailure> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthFailure::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthFailure::Missing)?;
        let auth = lock(&self.auth);
        let grant = auth.access.get(token.trim()).ok_or(AuthFailure::Invalid)?;
        if grant.expires <= Timestamp::now() {
            return Err(AuthFailure::Expired);
        }
        Ok(grant.mailbox)
    }

    /// The faults of the rules in `scope` that match this request, using up one of each rule's
    /// `times`.
    pub(crate) fn take_faults(&self, scope: FaultScope, method: &Method, path: &str) -> Vec<Fault> {
        let mut rules = lock(&self.faults);
        let mut hit = Vec::new();
        for rule in rules.iter_mut().filter(|r| r.scope == scope) {
            let path_ok = rule
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p));
            let method_ok = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()));
            if path_ok && method_ok && rule.times != Some(0) {
                hit.push(rule.fault.clone());
                if let Some(t) = rule.times.as_mut() {
                    *t -= 1;
                }
            }
        }
        rules.retain(|r| r.times != Some(0));
        hit
    }

    pub fn count(&self, endpoint: &str, status: u16) {
        *lock(&self.counters)
            .entry(endpoint.to_string())
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    /// Per-mailbox budget and concurrency cap. Returns the permit to hold while the request runs, or the
    /// seconds to wait.
    fn admit(&self, mailbox: usize) -> Result<OwnedSemaphorePermit, f64> {
        let mut budgets = lock(&self.budgets);
        let budget = budgets.entry(mailbox).or_insert_with(|| Budget {
            window_start: Instant::now(),
            used: 0,
            slots: Arc::new(Semaphore::new(
                self.config.max_concurrent_per_mailbox.max(1),
            )),
        });
        let window = Duration::from_secs(self.config.window_secs.max(1));
        let elapsed = budget.window_start.elapsed();
        if elapsed >= window {
            budget.window_start = Instant::now();
            budget.used = 0;
        }
        if budget.used >= self.config.requests_per_window {
            let left = window.saturating_sub(budget.window_start.elapsed());
            return Err(left.as_secs_f64().max(0.001));
        }
        let permit = Arc::clone(&budget.slots)
            .try_acquire_owned()
            .map_err(|_| 1.0)?;
        budget.used += 1;
        Ok(permit)
    }

    /// Budget check for the items of a `$batch` (the batch itself holds the concurrency slot).
    pub fn admit_inner(&self, mailbox: usize) -> Result<(), f64> {
        let mut budgets = lock(&self.budgets);
        let Some(budget) = budgets.get_mut(&mailbox) else {
            return Ok(());
        };
        if budget.used >= self.config.requests_per_window {
            let window = Duration::from_secs(self.config.window_secs.max(1));
            let left = window.saturating_sub(budget.window_start.elapsed());
            return Err(left.as_secs_f64().max(0.001));
        }
        budget.used += 1;
        Ok(())
    }

    /// Resets throttling state (control API).
    pub fn reset_budgets(&self) {
        lock(&self.budgets).clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthFailure {
    Missing,
    Invalid,
    Expired,
}

pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A parsed request as the dispatchers see it (also built for `$batch` items and control-API actions).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn new(method: Method, path_and_query: &str, headers: HeaderMap, body: Bytes) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        let query = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let path = percent_decode(path);
        Self {
            method,
            path,
            query,
            headers,
            body,
        }
    }

    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header, each split on commas (several `Prefer` headers or one with a list).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn json(&self) -> Result<Value, String> {
        if self.body.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not valid JSON: {e}"))
    }
}

fn percent_decode(path: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// What a dispatcher answers: status, headers and a JSON/text/empty body.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
}

#[derive(Debug, Clone)]
pub(crate) enum ReplyBody {
    Empty,
    Json(Value),
    Text(String),
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(body),
        }
    }
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ReplyBody::Empty,
        }
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn into_response(self, fault: Option<&Fault>) -> Response {
        let (bytes, content_type) = match self.body {
            ReplyBody::Empty => (Vec::new(), None),
            ReplyBody::Json(v) => (
                serde_json::to_vec(&v).unwrap_or_default(),
                Some("application/json"),
            ),
            ReplyBody::Text(t) => (t.into_bytes(), Some("text/plain; charset=utf-8")),
        };
        let full_len = bytes.len();
        let body = match fault {
            Some(Fault::TruncatedBody) => {
                let half = Bytes::from(bytes[..full_len / 2].to_vec());
                use futures::StreamExt;
                // The pause lets hyper flush the head and the first half before the connection is dropped.
                let stream = futures::stream::iter(vec![Ok::<Bytes, std::io::Error>(half)]).chain(
                    futures::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "truncated by fault rule",
                        ))
                    }),
                );
                Body::from_stream(stream)
            }
            _ => Body::from(bytes),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(ct) = content_type {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if matches!(fault, Some(Fault::TruncatedBody)) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(full_len));
        }
        for (k, v) in self.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                headers.append(name, value);
            }
        }
        response
    }
}

fn throttle_reply(
    flavor: Flavor,
    retry_after: f64,
    status: Option<u16>,
    config: &EmulatorConfig,
) -> Reply {
    match flavor {
        Flavor::Microsoft => crate::graph::throttled(retry_after),
        Flavor::Google => {
            let status = status.unwrap_or(config.google_rate_limit_status);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            crate::google::error(
                status,
                "usageLimits",
                "rateLimitExceeded",
                "Rate Limit Exceeded",
            )
        }
    }
}

/// A label for the counters: the method and the path with ids replaced by `{id}`.
pub(crate) fn endpoint_label(method: &Method, path: &str) -> String {
    const WORDS: &[&str] = &[
        "v1.0",
        "me",
        "users",
        "calendar",
        "calendars",
        "calendarGroups",
        "events",
        "calendarView",
        "delta",
        "instances",
        "accept",
        "decline",
        "tentativelyAccept",
        "cancel",
        "getSchedule",
        "subscriptions",
        "reauthorize",
        "$batch",
        "oauth2",
        "v2.0",
        "authorize",
        "token",
        "calendar",
        "v3",
        "calendarList",
        "watch",
        "channels",
        "stop",
        "freeBusy",
        "o",
        "v2",
        "auth",
        "users",
        "_control",
        "primary",
        "import",
        "move",
        "quickAdd",
    ];
    let mut out = String::from(method.as_str());
    out.push(' ');
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if WORDS.contains(&seg) {
            out.push_str(seg)
        } else {
            out.push_str("{id}")
        }
    }
    out
}

async fn api_entry(
    State(app): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let req = Req::new(method.clone(), &path_and_query, headers, body);
    let label = endpoint_label(&method, &req.path);

    let mut terminal = None;
    let mut latency = Duration::ZERO;
    for fault in app.take_faults(FaultScope::Request, &method, &req.path) {
        match fault {
            Fault::Latency { ms } => latency += Duration::from_millis(ms),
            Fault::TokenExpiry => app.expire_tokens(),
            other => {
                if terminal.is_none() {
                    terminal = Some(other);
                }
            }
        }
    }
    let reply = match &terminal {
        Some(Fault::ServerError { status }) => Some(fault_server_error(app.flavor, *status)),
        Some(Fault::Throttle {
            retry_after_secs,
            status,
        }) => Some(throttle_reply(
            app.flavor,
            *retry_after_secs,
            *status,
            &app.config,
        )),
        Some(Fault::ConnectionReset) => {
            tokio::time::sleep(latency).await;
            app.count(&label, 0);
            return connection_reset();
        }
        _ => None,
    };
    let reply = match reply {
        Some(r) => {
            tokio::time::sleep(latency).await;
            r
        }
        None => handle(&app, req, latency).await,
    };
    app.count(&label, reply.status.as_u16());
    reply.into_response(terminal.as_ref())
}

/// A response whose body fails before a single byte: hyper drops the connection without a complete answer.
fn connection_reset() -> Response {
    let stream = futures::stream::iter(vec![Err::<Bytes, std::io::Error>(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by fault rule",
    ))]);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from_static("100"),
    );
    response
}

async fn handle(app: &Arc<Shared>, req: Req, latency: Duration) -> Reply {
    if let Some(reply) = crate::oauth::handle(app, &req) {
        tokio::time::sleep(latency).await;
        return reply;
    }
    let mailbox = match app.authenticate(&req.headers) {
        Ok(m) => m,
        Err(failure) => return unauthorized(app.flavor, failure),
    };
    let _permit = match app.admit(mailbox) {
        Ok(p) => p,
        Err(wait) => return throttle_reply(app.flavor, wait, None, &app.config),
    };
    // A slow answer occupies its concurrency slot for the whole delay, as a slow mailbox would.
    tokio::time::sleep(latency).await;
    dispatch(app, mailbox, req).await
}

/// Routes an authenticated request to the provider's handlers and then hands the resulting changes to the
/// notifier. Also used by `$batch` and by the control API's "act as a user".
pub(crate) async fn dispatch(app: &Arc<Shared>, mailbox: usize, req: Req) -> Reply {
    let reply = match app.flavor {
        Flavor::Microsoft => crate::graph::dispatch(app, mailbox, req).await,
        Flavor::Google => crate::google::dispatch(app, mailbox, req).await,
    };
    crate::notify::flush(app);
    reply
}

fn unauthorized(flavor: Flavor, failure: AuthFailure) -> Reply {
    match flavor {
        Flavor::Microsoft => {
            let message = match failure {
                AuthFailure::Missing => "Access token is empty.",
                AuthFailure::Invalid => "IDX14100: JWT is not well formed.",
                AuthFailure::Expired => "Lifetime validation failed, the token is expired.",
            };
            crate::graph::error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            )
            .header(
                "WWW-Authenticate",
                "Bearer realm=\"\", error=\"invalid_token\"",
            )
        }
        Flavor::Google => crate::google::error_at(
            StatusCode::UNAUTHORIZED,
            "global",
            "authError",
            "Invalid Credentials",
            Some(("header", "Authorization")),
        ),
    }
}

/// A running emulator: its address, and the control API as Rust methods.
#[derive(Debug)]
pub struct Emulator {
    pub(crate) shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Failures starting an emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid control request: {0}")]
    Control(String),
}

impl Emulator {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub async fn start(flavor: Flavor, config: EmulatorConfig) -> Result<Self, EmulatorError> {
        Self::start_on(flavor, config, "127.0.0.1:0").await
    }

    pub async fn start_on(
        flavor: Flavor,
        config: EmulatorConfig,
        addr: &str,
    ) -> Result<Self, EmulatorError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let shared = Shared::new(flavor, config);
        let base_url = format!("http://{local}");
        let _ = shared.base_url.set(base_url.clone());
        let router = Router::new()
            .route("/_control/{*rest}", any(crate::control::http_entry))
            .fallback(any(api_entry))
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        Ok(Self {
            shared,
            addr: local,
            base_url,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` — the Graph API lives under `/v1.0`, Google's under `/calendar/v3`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    /// Waits until the server stops (the CLI's foreground mode).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        Reply::into_response(self, None)
    }
}

pub(crate) fn bad_control(message: impl Into<String>) -> Reply {
    Reply::json(StatusCode::BAD_REQUEST, json!({"error": message.into()}))
}
