//! Outbound webhooks: signing, matching and the delivery worker.
//!
//! Every webhook keeps a mark in the tenant's change stream (`delivered_seq`). A planner finds webhooks
//! with entries after their mark (woken by API writes and every `webhooks.poll_interval`) and enqueues
//! one leased job per webhook (`webhook.deliver`, keyed by the webhook id), so two nodes never deliver
//! for one webhook at once. The worker holding the job sends the entries after the mark in order, one at
//! a time, moving the mark after each answered 2xx (at-least-once: a crash between the answer and the
//! mark repeats that one message, with the same `Calbridge-Webhook-Id`). A failure records the attempt,
//! sets `retry_at` (exponential backoff with jitter, never shorter than a `Retry-After`) and stops; after
//! `webhooks.disable_after` consecutive failures the store disables the webhook with the reason.
//!
//! Signature: `Calbridge-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, with the
//! timestamp (Unix seconds) sent as `Calbridge-Timestamp`; the key is the secret string's UTF-8 bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use calbridge_providers::http::{
    Budget, BudgetConfig, Credentials, HttpClient, HttpConfig, Request, RetryPolicy,
};
use calbridge_store::crypto::{MasterKey, Purpose};
use calbridge_store::{Change, Lease, NewDelivery, NewJob, Store, StoreError, Webhook, WebhookId};
use hmac::{Hmac, Mac};
use http::{HeaderName, Method};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::watch;

use crate::config::WebhooksConfig;
use crate::realtime::Hub;

pub const JOB_KIND: &str = "webhook.deliver";

/// Message types a webhook may subscribe to (the change stream's types); `*` and `prefix.*` also match.
pub const EVENT_TYPES: &[&str] = &[
    "event.created",
    "event.updated",
    "event.deleted",
    "conflict.detected",
    "conflict.resolved",
    "connection.status",
    "sync.finished",
];

pub const HEADER_ID: HeaderName = HeaderName::from_static("calbridge-webhook-id");
pub const HEADER_TIMESTAMP: HeaderName = HeaderName::from_static("calbridge-timestamp");
pub const HEADER_SIGNATURE: HeaderName = HeaderName::from_static("calbridge-signature");
pub const HEADER_EVENT: HeaderName = HeaderName::from_static("calbridge-event");
pub const HEADER_ATTEMPT: HeaderName = HeaderName::from_static("calbridge-attempt");

/// Messages read from the stream per job round.
const BATCH: u32 = 200;

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh signing secret: `whsec_` and 32 random bytes in base64url.
pub fn new_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Is `pattern` a valid entry of a webhook's `events` list?
pub fn valid_event_pattern(pattern: &str) -> bool {
    if pattern == "*" || EVENT_TYPES.contains(&pattern) {
        return true;
    }
    pattern.strip_suffix(".*").is_some_and(|prefix| {
        EVENT_TYPES
            .iter()
            .any(|t| t.split('.').next() == Some(prefix))
    })
}

/// Does the webhook want this change-stream entry?
pub fn wants(webhook: &Webhook, change: &Change) -> bool {
    if let Some(calendar) = webhook.calendar_id
        && change.calendar_id != Some(calendar)
    {
        return false;
    }
    let patterns: Vec<String> = serde_json::from_str(&webhook.events_json).unwrap_or_default();
    patterns.iter().any(|p| {
        p == "*"
            || *p == change.kind
            || p.strip_suffix(".*").is_some_and(|prefix| {
                change
                    .kind
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    tenant: calbridge_store::TenantId,
    webhook: WebhookId,
}

/// Runs the delivery planner and workers.
#[derive(Clone)]
pub struct Deliverer {
    store: Arc<dyn Store>,
    master_key: Arc<MasterKey>,
    hub: Arc<Hub>,
    http: HttpClient,
    config: WebhooksConfig,
    owner: String,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended.
struct Attempt {
    ok: bool,
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    latency_ms: i64,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        master_key: Arc<MasterKey>,
        hub: Arc<Hub>,
        config: WebhooksConfig,
        allow_private_networks: bool,
        owner: String,
    ) -> Result<Self, calbridge_providers::ProviderError> {
        let http = HttpClient::new(HttpConfig {
            connect_timeout: config.timeout.to_std(),
            request_timeout: config.timeout.to_std(),
            // One attempt per job round: retries are scheduled by the worker, with the delivery log.
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            compression: false,
            max_body_bytes: 1024 * 1024,
            // A redirect is a failed delivery: the receiver's URL is the one registered.
            max_redirects: 0,
            address_policy: crate::syncing::address_policy(allow_private_networks),
            ..HttpConfig::default()
        })?;
        Ok(Self {
            store,
            master_key,
            hub,
            http,
            config,
            owner,
        })
    }

    fn lease_ttl(&self) -> Duration {
        (self.config.timeout.to_std() * 3).max(Duration::from_secs(30))
    }

    /// Runs until `stop` turns true: one planner and one worker.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let planner = self.clone();
        let planner_stop = stop.clone();
        let plan = tokio::spawn(async move { planner.plan(planner_stop).await });
        let work = tokio::spawn(async move { self.work(stop).await });
        let _ = plan.await;
        let _ = work.await;
    }

    async fn plan(&self, mut stop: watch::Receiver<bool>) {
        let mut bell = self.hub.subscribe();
        self.hub.ensure_listening().await;
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.enqueue_due().await {
                tracing::warn!(error = %e, "webhook planner could not look for pending messages");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval.to_std()) => {}
                changed = bell.changed() => if changed.is_err() { return; },
                changed = stop.changed() => if changed.is_err() { return; },
            }
        }
    }

    async fn enqueue_due(&self) -> Result<(), StoreError> {
        for webhook in self.store.webhooks_due(Timestamp::now(), 1000).await? {
            let payload = serde_json::to_string(&Payload {
                tenant: webhook.tenant_id,
                webhook: webhook.id,
            })
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
            self.store
                .enqueue_job(NewJob {
                    tenant_id: Some(webhook.tenant_id),
                    kind: JOB_KIND.into(),
                    key: webhook.id.to_string(),
                    payload_json: payload,
                    run_at: Timestamp::now(),
                })
                .await?;
        }
        Ok(())
    }

    async fn work(&self, mut stop: watch::Receiver<bool>) {
        let mut bell = self.hub.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            let leased = self
                .store
                .lease_next(&self.owner, &[JOB_KIND], self.lease_ttl(), Timestamp::now())
                .await;
            match leased {
                Ok(Some(lease)) => self.run_job(lease).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll_interval.to_std()) => {}
                        changed = bell.changed() => if changed.is_err() { return; },
                        changed = stop.changed() => if changed.is_err() { return; },
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook worker could not lease a job");
                    tokio::time::sleep(self.config.poll_interval.to_std()).await;
                }
            }
        }
    }

    async fn run_job(&self, lease: Lease) {
        let now = Timestamp::now();
        let payload: Payload = match serde_json::from_str(&lease.job.payload_json) {
            Ok(p) => p,
            Err(e) => {
                let _ = self
                    .store
                    .fail_job(&lease, &format!("bad payload: {e}"), None, now)
                    .await;
                return;
            }
        };
        match self.deliver_pending(&lease, &payload).await {
            Ok(next) => {
                let _ = self
                    .store
                    .complete_job(&lease, next, Timestamp::now())
                    .await;
            }
            Err(e) => {
                tracing::warn!(webhook = %payload.webhook, error = %e, "webhook delivery round failed");
                let retry = Timestamp::now()
                    .checked_add(SignedDuration::from_secs(5))
                    .ok();
                let _ = self
                    .store
                    .fail_job(&lease, &e.to_string(), retry, Timestamp::now())
                    .await;
            }
        }
    }

    /// Sends the pending messages of one webhook in order. `Some(t)`: run the job again at `t` (backing
    /// off); `None`: caught up, stopped or gone (the planner enqueues it again when messages arrive).
    async fn deliver_pending(
        &self,
        lease: &Lease,
        payload: &Payload,
    ) -> Result<Option<Timestamp>, StoreError> {
        let store = self.store.as_ref();
        let tenant = payload.tenant;
        let mut lease = lease.clone();
        loop {
            let webhook = match store.get_webhook(tenant, payload.webhook).await {
                Ok(w) => w,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if !webhook.enabled {
                return Ok(None);
            }
            if let Some(at) = webhook.retry_at
                && at > Timestamp::now()
            {
                return Ok(Some(at));
            }
            let batch = store
                .list_changes(tenant, webhook.delivered_seq, None, BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(None);
            }
            let full = batch.len() as u32 == BATCH;
            let secret = match self
                .master_key
                .open(Purpose::WebhookSecret, &webhook.secret)
            {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    // Not the receiver's fault and not fixable by retrying: stop this webhook, say why.
                    store
                        .set_webhook_enabled(
                            tenant,
                            webhook.id,
                            false,
                            Some(&format!("the signing secret cannot be opened: {e}")),
                        )
                        .await?;
                    return Ok(None);
                }
            };
            let mut skipped_to = None;
            let mut failures = webhook.consecutive_failures;
            for change in &batch {
                if !wants(&webhook, change) {
                    skipped_to = Some(change.seq);
                    continue;
                }
                if let Some(seq) = skipped_to.take() {
                    store.advance_webhook(tenant, webhook.id, seq).await?;
                }
                let attempt_no = failures + 1;
                let attempt = self.attempt(&webhook, &secret, change, attempt_no).await;
                store
                    .record_delivery(
                        tenant,
                        NewDelivery {
                            subscription_id: webhook.id,
                            change_seq: Some(change.seq),
                            event: change.kind.clone(),
                            attempt: attempt_no,
                            status: if attempt.ok { "delivered" } else { "failed" }.into(),
                            response_status: attempt.status.map(i64::from),
                            error: attempt.error.clone(),
                            latency_ms: Some(attempt.latency_ms),
                        },
                        i64::from(self.config.disable_after),
                    )
                    .await?;
                if !attempt.ok {
                    let wait = self.backoff(attempt_no, attempt.retry_after);
                    let at = Timestamp::now()
                        .checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX))
                        .unwrap_or(Timestamp::MAX);
                    store
                        .set_webhook_retry(tenant, webhook.id, Some(at))
                        .await?;
                    // The store may just have disabled it; then the job ends.
                    let after = store.get_webhook(tenant, webhook.id).await?;
                    return Ok(after.enabled.then_some(at));
                }
                failures = 0;
                store
                    .advance_webhook(tenant, webhook.id, change.seq)
                    .await?;
                // A long batch must not outlive the lease: renew it, and stop if it was taken over.
                match store
                    .renew_lease(&lease, self.lease_ttl(), Timestamp::now())
                    .await
                {
                    Ok(renewed) => lease = renewed,
                    Err(_) => return Ok(None),
                }
            }
            if let Some(seq) = skipped_to {
                store.advance_webhook(tenant, webhook.id, seq).await?;
            }
            if !full {
                return Ok(None);
            }
        }
    }

    /// The wait after the `failed`-th consecutive failure: exponential with jitter, never shorter than
    /// the receiver's `Retry-After` (capped at a day).
    fn backoff(&self, failed: i64, retry_after: Option<Duration>) -> Duration {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: self.config.retry_base.to_std(),
            max_delay: self.config.retry_max.to_std(),
            max_retry_after: Duration::from_secs(24 * 3600),
        };
        let failed = u32::try_from(failed.max(1)).unwrap_or(u32::MAX);
        policy.delay(
            failed,
            retry_after.map(|wait| wait.min(policy.max_retry_after)),
        )
    }

    async fn attempt(
        &self,
        webhook: &Webhook,
        secret: &str,
        change: &Change,
        attempt_no: i64,
    ) -> Attempt {
        let started = Instant::now();
        let elapsed =
            |started: Instant| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let fail = |error: String, started: Instant| Attempt {
            ok: false,
            status: None,
            error: Some(error),
            retry_after: None,
            latency_ms: elapsed(started),
        };
        let url = match url::Url::parse(&webhook.url) {
            Ok(url) => url,
            Err(e) => return fail(format!("invalid URL: {e}"), started),
        };
        let body = crate::realtime::message_json(change).to_string();
        let timestamp = Timestamp::now().as_second();
        let signature = sign(secret, timestamp, body.as_bytes());
        let request = Request::new(Method::POST, url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .and_then(|r| r.header(HEADER_ID, &format!("{}.{}", webhook.id, change.seq)))
            .and_then(|r| r.header(HEADER_TIMESTAMP, &timestamp.to_string()))
            .and_then(|r| r.header(HEADER_SIGNATURE, &signature))
            .and_then(|r| r.header(HEADER_EVENT, &change.kind))
            .and_then(|r| r.header(HEADER_ATTEMPT, &attempt_no.to_string()));
        let request = match request {
            Ok(r) => r.body(body.into_bytes()),
            Err(e) => return fail(e.to_string(), started),
        };
        // A budget of its own per attempt: a receiver's Retry-After is honoured by scheduling, not by
        // pausing a shared budget.
        let endpoint = self.http.endpoint(
            "webhook",
            Credentials::None,
            Budget::new(BudgetConfig::default()),
        );
        match endpoint.send(request).await {
            Ok(response) => {
                let status = response.status.as_u16();
                let ok = response.status.is_success();
                let retry_after = if status == 429 || status == 503 {
                    response.retry_after()
                } else {
                    None
                };
                Attempt {
                    ok,
                    status: Some(status),
                    error: (!ok).then(|| {
                        let text: String = response.text().chars().take(200).collect();
                        format!("HTTP {status}: {}", text.trim())
                    }),
                    retry_after,
                    latency_ms: elapsed(started),
                }
            }
            Err(e) => fail(e.to_string(), started),
        }
    }
}
