//! Real time: the in-process change bell that wakes WebSocket streams, its PostgreSQL LISTEN/NOTIFY bridge
//! (so a write on one node wakes streams on every node), and the shared secret checks for provider
//! push notifications.
//!
//! The change stream in the store is the one source of truth: a stream always reads from it by sequence
//! number, and the bell only says "read now". A lost ring therefore delays a message (until the periodic
//! re-read) but never loses it.

pub mod channels;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use calbridge_store::{Change, Store};
use tokio::sync::{OnceCell, watch};

/// PostgreSQL notification channel carrying "the change stream moved".
pub const PG_CHANNEL: &str = "calbridge_changes";

/// How often an idle stream re-reads the store even without a ring (covers a lost NOTIFY, or a write by a
/// process that does not ring, such as a sync worker in another binary).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// Wakes the streams of this process when the change stream may have moved.
#[derive(Debug)]
pub struct Hub {
    bell: watch::Sender<u64>,
    /// Set for PostgreSQL: writes are announced with NOTIFY and other nodes' announcements are heard.
    postgres_url: Option<String>,
    pg: OnceCell<Option<sqlx::PgPool>>,
    listening: OnceCell<()>,
    rescan: Duration,
    /// Wakes this process's idle scheduler workers when a job was enqueued here (a provider
    /// notification), so the sync starts now rather than at the workers' next poll of the queue.
    work: tokio::sync::Notify,
}

impl Hub {
    pub fn new(database_url: &str) -> Self {
        let postgres_url = (database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        .then(|| database_url.to_owned());
        Self {
            bell: watch::channel(0).0,
            postgres_url,
            pg: OnceCell::new(),
            listening: OnceCell::new(),
            rescan: RESCAN_INTERVAL,
            work: tokio::sync::Notify::new(),
        }
    }

    /// Changes the idle re-read interval (tests set it far out to prove that a ring alone delivers).
    pub fn with_rescan(mut self, every: Duration) -> Self {
        self.rescan = every;
        self
    }

    pub fn rescan_interval(&self) -> Duration {
        self.rescan
    }

    /// Tells idle scheduler workers of this process that a job is due now.
    pub fn wake_workers(&self) {
        self.work.notify_waiters();
    }

    /// Resolves at the next [`Hub::wake_workers`] (enable it before looking at the queue).
    pub fn work_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// A receiver that sees every later ring.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.bell.subscribe()
    }

    fn ring_local(&self) {
        self.bell.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Announce that the change stream moved: locally at once, and to the other nodes through PostgreSQL.
    pub async fn ring(&self) {
        self.ring_local();
        let Some(url) = &self.postgres_url else {
            return;
        };
        let pool = self
            .pg
            .get_or_init(|| async {
                match sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                {
                    Ok(pool) => Some(pool),
                    Err(e) => {
                        tracing::warn!(error = %e, "change fan-out: cannot connect to PostgreSQL; other nodes learn of changes by rescan");
                        None
                    }
                }
            })
            .await;
        if let Some(pool) = pool
            && let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(PG_CHANNEL)
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, "change fan-out: NOTIFY failed");
        }
    }

    /// Starts (once) the task that turns other nodes' NOTIFYs into local rings.
    pub async fn ensure_listening(self: &Arc<Self>) {
        let Some(url) = self.postgres_url.clone() else {
            return;
        };
        let hub = Arc::clone(self);
        self.listening
            .get_or_init(|| async move {
                tokio::spawn(async move { listen(hub, url).await });
            })
            .await;
    }
}

async fn listen(hub: Arc<Hub>, url: String) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(PG_CHANNEL).await {
                    tracing::warn!(error = %e, "change fan-out: LISTEN failed");
                } else {
                    // Anything may have happened while we were not listening.
                    hub.ring_local();
                    loop {
                        match listener.recv().await {
                            Ok(_) => hub.ring_local(),
                            Err(e) => {
                                tracing::warn!(error = %e, "change fan-out: listener lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "change fan-out: cannot LISTEN; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Rings the bell after every successful write to the API: series writes append their change-stream entry
/// in the same transaction, so by the time the response exists the entry is committed.
pub async fn ring_after_writes(hub: Arc<Hub>, request: Request, next: Next) -> Response {
    let write = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let response = next.run(request).await;
    if write && response.status().is_success() {
        hub.ring().await;
    }
    response
}

/// One change-stream entry as clients see it, on the WebSocket and in webhook bodies alike:
/// `{"seq", "type", "calendar_id", "subject_id", "data", "at"}`.
pub fn message_json(change: &Change) -> serde_json::Value {
    let data: serde_json::Value =
        serde_json::from_str(&change.data_json).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "seq": change.seq,
        "type": change.kind,
        "calendar_id": change.calendar_id,
        "subject_id": change.subject_id,
        "data": data,
        "at": change.at.to_string(),
    })
}

/// Removes change-stream entries older than `retention` and delivery log entries older than
/// `log_retention`, every `every`, until `stop` turns true. Several nodes may run it: the deletes are
/// idempotent.
pub async fn prune(
    store: Arc<dyn Store>,
    retention: jiff::SignedDuration,
    log_retention: jiff::SignedDuration,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = jiff::Timestamp::now();
        if let Ok(before) = now.checked_sub(retention) {
            match store.purge_changes(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "change stream: expired entries removed"),
                Err(e) => tracing::warn!(error = %e, "change stream: pruning failed"),
            }
        }
        if let Ok(before) = now.checked_sub(log_retention)
            && let Err(e) = store.purge_deliveries(before).await
        {
            tracing::warn!(error = %e, "webhook delivery log: pruning failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return; },
        }
    }
}
