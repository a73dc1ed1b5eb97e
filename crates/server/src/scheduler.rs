//! The scheduler: every link syncs at its connection's `frequency`, with a full reconciliation once a day
//! at `full_sync_at`, through the store's leased jobs.
//!
//! Each link has one job (`sync.link`, keyed by the link id) that re-arms itself: a worker leases it,
//! runs the engine on that link, and completes it with the next due time. Leases are exclusive across
//! processes (the store guarantees two leasers never get the same job, and a lease that expires is
//! taken over with a higher fencing token), so two nodes on one PostgreSQL never sync one link at once.
//! A worker that loses its lease (it could not renew it in time) abandons its run; the engine is
//! resumable at any point, so the next holder converges.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use calbridge_engine::{LinkSync, sync_link};
use calbridge_store::{ConnectionStatus, Lease, LinkId, LinkStatus, NewJob, StoreError, TenantId};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::HumanDuration;
use crate::syncing::{self, SyncContext};

pub const JOB_KIND: &str = "sync.link";

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Names this process's leases (host and pid, or a test's label).
    pub owner: String,
    /// How often new links are looked for and free workers look for due jobs.
    pub tick: Duration,
    pub lease_ttl: Duration,
    /// Links synced at once (`optimizations.parallel_sync` false → 1).
    pub concurrency: usize,
    /// Used when a connection sets no `frequency`.
    pub default_frequency: SignedDuration,
    /// Local time of the daily full reconciliation.
    pub full_sync_at: jiff::civil::Time,
    pub time_zone: jiff::tz::TimeZone,
}

impl SchedulerConfig {
    pub fn from_config(config: &crate::Config, owner: String) -> Self {
        Self {
            owner,
            tick: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(120),
            concurrency: if config.optimizations.parallel_sync {
                4
            } else {
                1
            },
            default_frequency: config.sync.frequency.0,
            full_sync_at: config.sync.full_sync_at,
            time_zone: jiff::tz::TimeZone::system(),
        }
    }
}

/// A lease owner name unique to this process.
pub fn default_owner() -> String {
    format!(
        "node-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    tenant: TenantId,
    link: LinkId,
}

/// The connection's `frequency` (flat or under `sync`), or the default.
pub fn frequency_of(sync_options_json: &str, default: SignedDuration) -> SignedDuration {
    let value: serde_json::Value = serde_json::from_str(sync_options_json).unwrap_or_default();
    let text = value
        .get("frequency")
        .or_else(|| value.get("sync").and_then(|s| s.get("frequency")))
        .and_then(|f| f.as_str());
    match text.map(HumanDuration::parse) {
        Some(Ok(d)) if d.0.is_positive() => d.0,
        _ => default,
    }
}

/// The latest `full_sync_at` moment at or before `now`.
pub fn last_full_slot(
    now: Timestamp,
    at: jiff::civil::Time,
    tz: &jiff::tz::TimeZone,
) -> Option<Timestamp> {
    let local = now.to_zoned(tz.clone());
    let today = local.date().to_datetime(at).to_zoned(tz.clone()).ok()?;
    if today.timestamp() <= now {
        Some(today.timestamp())
    } else {
        let yesterday = local
            .date()
            .yesterday()
            .ok()?
            .to_datetime(at)
            .to_zoned(tz.clone())
            .ok()?;
        Some(yesterday.timestamp())
    }
}

#[derive(Clone)]
pub struct Scheduler {
    ctx: SyncContext,
    config: Arc<SchedulerConfig>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(ctx: SyncContext, config: SchedulerConfig) -> Self {
        Self {
            ctx,
            config: Arc::new(config),
        }
    }

    /// Runs until `stop` turns true: one planner and `concurrency` workers.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for n in 0..self.config.concurrency.max(1) {
            let worker = self.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move { worker.work(n, stop).await }));
        }
        let planner = self.clone();
        let planner_stop = stop.clone();
        tasks.push(tokio::spawn(
            async move { planner.plan(planner_stop).await },
        ));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Gives every active link a job, once per process (the job then re-arms itself).
    async fn plan(&self, mut stop: watch::Receiver<bool>) {
        let mut seeded: HashSet<LinkId> = HashSet::new();
        loop {
            if let Err(e) = self.seed(&mut seeded).await {
                tracing::warn!(error = %e, "scheduler could not list links");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.tick) => {}
                changed = stop.changed() => if changed.is_err() { return; }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn seed(&self, seeded: &mut HashSet<LinkId>) -> Result<(), StoreError> {
        let store = self.ctx.store.as_ref();
        for tenant in store.list_tenants().await? {
            for connection in store.list_connections(tenant.id).await? {
                if connection.status != ConnectionStatus::Active {
                    continue;
                }
                for link in store.list_links(tenant.id, connection.id).await? {
                    if link.status != LinkStatus::Active || seeded.contains(&link.id) {
                        continue;
                    }
                    let payload = serde_json::to_string(&Payload {
                        tenant: tenant.id,
                        link: link.id,
                    })
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    store
                        .enqueue_job(NewJob {
                            tenant_id: Some(tenant.id),
                            kind: JOB_KIND.into(),
                            key: link.id.to_string(),
                            payload_json: payload,
                            run_at: Timestamp::now(),
                        })
                        .await?;
                    seeded.insert(link.id);
                }
            }
        }
        Ok(())
    }

    async fn work(&self, n: usize, mut stop: watch::Receiver<bool>) {
        let owner = format!("{}#{n}", self.config.owner);
        loop {
            if *stop.borrow() {
                return;
            }
            let leased = self
                .ctx
                .store
                .lease_next(&owner, &[JOB_KIND], self.config.lease_ttl, Timestamp::now())
                .await;
            match leased {
                Ok(Some(lease)) => self.run_job(lease).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.tick) => {}
                        changed = stop.changed() => if changed.is_err() { return; }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not lease a job");
                    tokio::time::sleep(self.config.tick).await;
                }
            }
        }
    }

    /// Runs one leased link, renewing the lease meanwhile; abandons the run if the lease is lost.
    async fn run_job(&self, lease: Lease) {
        let store = self.ctx.store.as_ref();
        let payload: Payload = match serde_json::from_str(&lease.job.payload_json) {
            Ok(p) => p,
            Err(e) => {
                let _ = store
                    .fail_job(&lease, &format!("bad payload: {e}"), None, Timestamp::now())
                    .await;
                return;
            }
        };
        let renewer = self.renew(lease.clone());
        let work = self.sync_one(&payload);
        tokio::pin!(renewer);
        tokio::pin!(work);
        let (outcome, lease) = tokio::select! {
            outcome = &mut work => (outcome, renewer_lease(&lease)),
            lost = &mut renewer => {
                tracing::warn!(link = %payload.link, error = %lost, "lease lost; run abandoned");
                return;
            }
        };
        let now = Timestamp::now();
        match outcome {
            Ok(Some(next)) => {
                let _ = store.complete_job(&lease, Some(next), now).await;
            }
            // The link or its connection is gone or stopped: the job ends; the planner seeds it again
            // if it comes back in a later process.
            Ok(None) => {
                let _ = store.complete_job(&lease, None, now).await;
            }
            Err(e) => {
                let retry = now.checked_add(SignedDuration::from_secs(60)).ok();
                let _ = store.fail_job(&lease, &e, retry, now).await;
            }
        }
    }

    /// Renews the lease every third of its life; returns only when a renewal failed.
    async fn renew(&self, mut lease: Lease) -> String {
        let every = self.config.lease_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            match self
                .ctx
                .store
                .renew_lease(&lease, self.config.lease_ttl, Timestamp::now())
                .await
            {
                Ok(renewed) => lease = renewed,
                Err(e) => return e.to_string(),
            }
        }
    }

    /// Syncs one link; `Ok(Some(next due))`, or `Ok(None)` when the link no longer syncs.
    async fn sync_one(&self, payload: &Payload) -> Result<Option<Timestamp>, String> {
        let store = self.ctx.store.as_ref();
        let link = match store.get_link(payload.tenant, payload.link).await {
            Ok(link) => link,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let connection = match store
            .get_connection(payload.tenant, link.connection_id)
            .await
        {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if connection.status != ConnectionStatus::Active || link.status != LinkStatus::Active {
            return Ok(None);
        }
        let provider = syncing::open(&self.ctx.master_key, &connection)
            .and_then(|c| syncing::provider_for(&self.ctx.http, connection.provider, &c))
            .map_err(|e| e.to_string())?;
        let now = Timestamp::now();
        let slot = last_full_slot(now, self.config.full_sync_at, &self.config.time_zone);
        let full = match (slot, link.last_full_sync_at) {
            (_, None) => false, // the first run lists everything anyway
            (Some(slot), Some(last)) => last < slot,
            (None, Some(_)) => false,
        };
        sync_link(LinkSync {
            store,
            provider: provider.as_ref(),
            tenant: payload.tenant,
            connection: &connection,
            link: &link,
            config: &self.ctx.engine,
            now,
            full,
            run: None,
        })
        .await
        .map_err(|e| e.to_string())?;
        let frequency = frequency_of(&connection.sync_options_json, self.config.default_frequency);
        let next = Timestamp::now()
            .checked_add(frequency)
            .map_err(|e| e.to_string())?;
        Ok(Some(next))
    }
}

/// The lease to complete with: the original one carries the fencing token the store checks; renewals
/// keep the token, so the original is enough.
fn renewer_lease(lease: &Lease) -> Lease {
    lease.clone()
}
