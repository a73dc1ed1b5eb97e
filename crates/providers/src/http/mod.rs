//! The one HTTP layer every provider sends through: timeouts, retries that honour `Retry-After`,
//! budgets, compression, redirects checked hop by hop, the address guard, auth, and metrics.

pub mod auth;
pub mod budget;
mod cache;
pub mod rest;
pub mod retry;
pub mod ssrf;
mod traffic;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, LOCATION, PROXY_AUTHORIZATION,
    RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

pub use auth::{Credentials, Secret, TokenSource};
pub use budget::{Budget, BudgetConfig, Rate};
pub use retry::{RetryPolicy, parse_retry_after};
pub use ssrf::AddressPolicy;
pub use traffic::{Traffic, metered};

use crate::error::{ProviderError, Unavailability};
use auth::{Authenticator, DigestChallenge};
use ssrf::{GuardedResolver, ResolveError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    /// Whole request, body included.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Ask for gzip/br and decode them.
    pub compression: bool,
    /// Bodies larger than this are refused rather than held in memory.
    pub max_body_bytes: usize,
    pub max_redirects: usize,
    pub address_policy: AddressPolicy,
    pub user_agent: String,
    /// Items per provider batch (CalDAV multiget, Graph `$batch`), capped by each provider's own
    /// limit; `None`: the provider's limit (`optimizations.batch_size`).
    pub batch_size: Option<usize>,
    /// How long an answer to a request marked [`Request::cacheable`] may be served again without
    /// asking (`optimizations.cache_ttl`); zero turns the cache off.
    pub cache_ttl: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            compression: true,
            max_body_bytes: 64 * 1024 * 1024,
            max_redirects: 10,
            address_policy: AddressPolicy::public_only(),
            user_agent: concat!("calbridge/", env!("CARGO_PKG_VERSION")).to_owned(),
            batch_size: None,
            cache_ttl: Duration::ZERO,
        }
    }
}

/// The process-wide client: one connection pool, one address guard.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    config: Arc<HttpConfig>,
}

impl HttpClient {
    pub fn new(config: HttpConfig) -> Result<Self, ProviderError> {
        let inner = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .gzip(config.compression)
            .brotli(config.compression)
            // Redirects are followed by `send`, which checks every hop and keeps WebDAV methods.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve names where the guard cannot see them.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(config.address_policy)))
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| ProviderError::invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// A handle for one provider account: its name in metrics, its credentials, its budget.
    pub fn endpoint(
        &self,
        provider: &'static str,
        credentials: Credentials,
        budget: Arc<Budget>,
    ) -> Endpoint {
        Endpoint {
            client: self.clone(),
            provider,
            auth: Arc::new(Authenticator::new(credentials)),
            budget,
        }
    }
}

/// A request description; rebuilt for every attempt so retries resend the same bytes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Safe to repeat after a 5xx or a lost answer. Derived from the method; writes made
    /// idempotent by `If-Match`/`If-None-Match` or a client-chosen id may set it explicitly.
    pub idempotent: bool,
    /// A read whose successful answer may be served from the cache for `cache_ttl` (discovery and
    /// calendar lists: things that change rarely). Never set on change listings or item reads.
    pub cacheable: bool,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Self {
        let idempotent = !matches!(method, Method::POST | Method::PATCH)
            && method.as_str() != "LOCK"
            && method.as_str() != "MKCALENDAR";
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            idempotent,
            cacheable: false,
        }
    }

    pub fn cacheable(mut self) -> Self {
        self.cacheable = true;
        self
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Result<Self, ProviderError> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| ProviderError::invalid(format!("bad {name} header value")))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Where the answer finally came from, after redirects.
    pub url: Url,
    /// Requests this call made, retries and redirects included.
    pub requests: u32,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header_str(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.header_str(&RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    }

    /// The generic meaning of a failure status; providers handle the statuses their protocol
    /// gives a special meaning first.
    pub fn error(&self) -> ProviderError {
        let status = self.status.as_u16();
        let detail = {
            let text = self.text();
            let trimmed: String = text.chars().take(300).collect();
            format!("HTTP {status} from {}: {}", self.url.path(), trimmed.trim())
        };
        match status {
            401 => ProviderError::Auth { status },
            403 => ProviderError::Forbidden { detail },
            404 | 410 => ProviderError::NotFound {
                what: self.url.path().to_owned(),
            },
            409 => ProviderError::Conflict { detail },
            412 => ProviderError::PreconditionFailed,
            429 => ProviderError::RateLimited {
                retry_after: self.retry_after(),
            },
            500..=599 => ProviderError::Unavailable {
                reason: Unavailability::Status(status),
                detail,
            },
            400..=499 => ProviderError::Rejected { status, detail },
            _ => ProviderError::protocol(detail),
        }
    }
}

/// One provider account's way out: shared client, own credentials and budget.
#[derive(Debug, Clone)]
pub struct Endpoint {
    client: HttpClient,
    provider: &'static str,
    auth: Arc<Authenticator>,
    budget: Arc<Budget>,
}

fn classify_transport(error: &reqwest::Error) -> ProviderError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut messages = Vec::new();
    let mut invalid_data = false;
    while let Some(err) = source {
        if let Some(resolve) = err.downcast_ref::<ResolveError>() {
            return match resolve {
                ResolveError::Blocked(detail) => ProviderError::Blocked {
                    detail: detail.clone(),
                },
                ResolveError::NotFound(detail) => ProviderError::Unavailable {
                    reason: Unavailability::Dns,
                    detail: detail.clone(),
                },
            };
        }
        messages.push(err.to_string());
        // An io::Error's source() skips the error it wraps; the TLS layer's error is in there.
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            invalid_data |= io.kind() == std::io::ErrorKind::InvalidData;
            if let Some(inner) = io.get_ref() {
                messages.push(inner.to_string());
            }
        }
        source = err.source();
    }
    let detail = messages.join(": ");
    let lower = detail.to_ascii_lowercase();
    const TLS_SIGNS: [&str; 7] = [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "alert",
        "peer is incompatible",
        "peer misbehaved",
    ];
    let reason = if error.is_timeout() {
        Unavailability::Timeout
    } else if invalid_data || TLS_SIGNS.iter().any(|sign| lower.contains(sign)) {
        // Nothing but the TLS layer turns a connect into InvalidData.
        Unavailability::Tls
    } else {
        Unavailability::Connect
    };
    ProviderError::Unavailable { reason, detail }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl Endpoint {
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    pub fn address_policy(&self) -> AddressPolicy {
        self.client.config.address_policy
    }

    /// The longest `Retry-After` a call waits through; a longer one ends it with `RateLimited`.
    pub fn max_retry_after(&self) -> Duration {
        self.client.config.retry.max_retry_after
    }

    /// Items per batch for a provider whose own limit is `provider_max`.
    pub fn batch_size(&self, provider_max: usize) -> usize {
        self.client
            .config
            .batch_size
            .map_or(provider_max, |n| n.min(provider_max))
            .max(1)
    }

    /// Sends a request, or answers it from the cache when it is [`Request::cacheable`], the cache is
    /// on, and a successful answer to the same request with the same credentials is younger than
    /// `cache_ttl`. A cached answer makes no request (and is not counted as one).
    pub async fn send(&self, request: Request) -> Result<Response, ProviderError> {
        let ttl = self.client.config.cache_ttl;
        let key = if request.cacheable && !ttl.is_zero() {
            self.auth
                .fingerprint()
                .map(|who| cache::key(self.provider, &who, &request))
        } else {
            None
        };
        let Some(key) = key else {
            return self.send_uncached(request).await;
        };
        if let Some(hit) = cache::get(&key, ttl) {
            metrics::counter!("calbridge_provider_cache_hits_total", "provider" => self.provider)
                .increment(1);
            return Ok(hit);
        }
        let response = self.send_uncached(request).await?;
        if response.status.is_success() {
            cache::put(key, &response);
        }
        Ok(response)
    }

    /// Sends a request and returns the final answer, whatever its status, after retrying what may
    /// be retried. Fails only when no usable answer came: transport failures, blocked addresses,
    /// bodies too large, or throttling longer than the retry policy waits out.
    async fn send_uncached(&self, request: Request) -> Result<Response, ProviderError> {
        let config = &self.client.config;
        let policy = config.retry;
        let provider = self.provider;
        let mut method = request.method.clone();
        let mut body = request.body.clone();
        let mut url = request.url.clone();
        let mut send_auth = true;
        let mut failed_attempts: u32 = 0;
        let mut redirects = 0usize;
        let mut auth_retried = false;
        let mut requests: u32 = 0;
        loop {
            config
                .address_policy
                .check_url(&url)
                .inspect_err(|e| self.count_error(e.class()))?;
            let permit = self
                .budget
                .acquire()
                .await
                .map_err(|_| ProviderError::protocol("request budget closed"))?;
            let mut headers = request.headers.clone();
            if !send_auth {
                // Credentials the caller put in the headers (a bearer token, a cookie) belong to the
                // origin they were given for, exactly like the authenticator's.
                for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
                    headers.remove(name);
                }
            }
            let mut builder = self
                .client
                .inner
                .request(method.clone(), url.clone())
                .headers(headers);
            if send_auth {
                let target = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_owned(),
                };
                if let Some(value) = self.auth.authorization(method.as_str(), &target).await? {
                    builder = builder.header(AUTHORIZATION, value);
                }
            }
            if let Some(bytes) = &body {
                builder = builder.body(bytes.clone());
            }
            requests += 1;
            metrics::counter!("calbridge_provider_requests_total", "provider" => provider, "method" => method.to_string()).increment(1);
            let started = Instant::now();
            let result = builder.send().await;
            let outcome = match result {
                Ok(response) => self.read_response(response).await,
                Err(error) => Err(error),
            };
            metrics::histogram!("calbridge_provider_request_duration_seconds", "provider" => provider)
                .record(started.elapsed().as_secs_f64());
            drop(permit);
            traffic::record(
                traffic::request_size(&method, &url, &request.headers, body.as_deref()),
                match &outcome {
                    Ok((_, headers, Some(bytes))) => traffic::headers_size(headers) + bytes.len(),
                    Ok((_, headers, None)) => traffic::headers_size(headers),
                    Err(_) => 0,
                },
            );
            let (status, headers, bytes) = match outcome {
                Ok(parts) => parts,
                Err(error) => {
                    let classified = classify_transport(&error);
                    self.count_error(classified.class());
                    // A refused address or a failed TLS handshake will not change on a retry.
                    if matches!(
                        classified,
                        ProviderError::Blocked { .. }
                            | ProviderError::Unavailable {
                                reason: Unavailability::Tls,
                                ..
                            }
                    ) {
                        return Err(classified);
                    }
                    // A refused connection never reached the server: safe to repeat for any method.
                    let retryable = error.is_connect() || request.idempotent;
                    failed_attempts += 1;
                    if retryable && failed_attempts < policy.max_attempts {
                        self.count_retry();
                        tokio::time::sleep(policy.delay(failed_attempts, None)).await;
                        continue;
                    }
                    return Err(classified);
                }
            };
            let bytes = match bytes {
                Some(bytes) => bytes,
                None => {
                    self.count_error("too_large");
                    return Err(ProviderError::protocol(format!(
                        "response body larger than {} bytes",
                        config.max_body_bytes
                    )));
                }
            };

            if let Some(location) = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .filter(|_| status.is_redirection())
            {
                redirects += 1;
                if redirects > config.max_redirects {
                    return Err(ProviderError::protocol("too many redirects"));
                }
                let next = url
                    .join(location)
                    .map_err(|_| ProviderError::protocol("redirect to an invalid URL"))?;
                if let Err(e) = config.address_policy.check_url(&next) {
                    self.count_error(e.class());
                    return Err(e);
                }
                if !same_origin(&url, &next) {
                    // Credentials belong to the origin the user gave them for.
                    send_auth = false;
                }
                if status == StatusCode::SEE_OTHER {
                    method = Method::GET;
                    body = None;
                }
                url = next;
                continue;
            }

            if status == StatusCode::UNAUTHORIZED && send_auth && !auth_retried {
                let challenge = DigestChallenge::from_headers(
                    headers
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                if self.auth.unauthorized(challenge).await {
                    auth_retried = true;
                    continue;
                }
            }

            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let throttled = status == StatusCode::TOO_MANY_REQUESTS;
            if throttled || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some()) {
                metrics::counter!("calbridge_provider_throttles_total", "provider" => provider)
                    .increment(1);
                if let Some(wait) = retry_after {
                    // Every request of this budget waits, not only this one.
                    self.budget.pause_for(wait).await;
                }
            }
            let server_error = matches!(status.as_u16(), 500 | 502 | 503 | 504);
            // 429 means "not processed": repeating is safe for any method. 5xx may have been
            // half-done: only idempotent requests repeat.
            let retryable = throttled || (server_error && request.idempotent);
            if retryable {
                failed_attempts += 1;
                let too_long = retry_after.is_some_and(|wait| wait > policy.max_retry_after);
                if failed_attempts < policy.max_attempts && !too_long {
                    self.count_error(if throttled { "throttled" } else { "server" });
                    self.count_retry();
                    tokio::time::sleep(policy.delay(failed_attempts, retry_after)).await;
                    continue;
                }
            }
            if status.is_client_error() || status.is_server_error() {
                self.count_error(match status.as_u16() {
                    401 => "auth",
                    403 => "forbidden",
                    404 | 410 => "not_found",
                    412 => "precondition",
                    429 => "throttled",
                    500..=599 => "server",
                    _ => "client",
                });
            }
            return Ok(Response {
                status,
                headers,
                body: bytes,
                url,
                requests,
            });
        }
    }

    /// Reads the body up to the limit; `Ok(None)` body when it is larger.
    async fn read_response(
        &self,
        mut response: reqwest::Response,
    ) -> Result<(StatusCode, HeaderMap, Option<Vec<u8>>), reqwest::Error> {
        let limit = self.client.config.max_body_bytes;
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Ok((status, headers, None));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > limit {
                return Ok((status, headers, None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, Some(body)))
    }

    fn count_error(&self, class: &'static str) {
        metrics::counter!("calbridge_provider_errors_total", "provider" => self.provider, "class" => class).increment(1);
    }

    fn count_retry(&self) {
        metrics::counter!("calbridge_provider_retries_total", "provider" => self.provider)
            .increment(1);
    }
}
