//! The scheduler: every link syncs at its connection's `frequency`, with a full reconciliation once a day
//! at `full_sync_at`, through the store's leased jobs.
//!
//! Each link has one job (`sync.link`, keyed by the link id) that re-arms itself: a worker leases it,
//! runs the engine on that link, and completes it with the next due time. Leases are exclusive across
//! processes (the store guarantees two leasers never get the same job, and a lease that expires is
//! taken over with a higher fencing token), so two nodes on one PostgreSQL never sync one link at once.
//! A worker that loses its lease (it could not renew it in time) abandons its run; the engine is
//! resumable at any point, so the next holder converges.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calbridge_engine::{LinkSync, sync_link};
use calbridge_providers::{CalendarId, Probe};
use calbridge_store::{
    Connection, ConnectionStatus, Lease, Link, LinkId, LinkStatus, NewJob, Provider, StoreError,
    TenantId,
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::HumanDuration;
use crate::realtime::channels::{self, ChannelConfig, ChannelPayload};
use crate::realtime::push::CHANNEL_JOB;
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
    /// CalDAV / ICS links are probed this often (`sync.poll_interval`).
    pub poll_interval: SignedDuration,
    /// Push channels of Microsoft / Google links.
    pub channels: ChannelConfig,
    /// Runs without a staleness bound of their own (rows from before migration 0009) whose heartbeat
    /// is older than this are closed as interrupted (`sync.run_stale_after`); the others by theirs.
    pub run_stale_after: SignedDuration,
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
            poll_interval: config.sync.poll_interval.0,
            channels: ChannelConfig::from_config(config),
            run_stale_after: config.sync.run_stale_after.0,
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
    /// When this process last ran a real sync of each polled link (a probe that saw nothing is not
    /// one); after `frequency` a link syncs even when its probe says unchanged.
    synced: Arc<Mutex<HashMap<LinkId, Timestamp>>>,
    /// Rung after every sync run, so WebSocket streams (of this node, and of the others through
    /// PostgreSQL NOTIFY) read what the run wrote at once instead of at their next rescan.
    hub: Option<Arc<crate::realtime::Hub>>,
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
            synced: Arc::default(),
            hub: None,
        }
    }

    /// Rings `hub` after each sync run (`calbridge serve` passes the API's hub).
    pub fn with_hub(mut self, hub: Arc<crate::realtime::Hub>) -> Self {
        self.hub = Some(hub);
        self
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

    /// Gives every active link a job, once per process (the job then re-arms itself), and closes runs
    /// cut short by a dead process: at start and then every half of `run_stale_after` (at most 5 min).
    async fn plan(&self, mut stop: watch::Receiver<bool>) {
        let mut seeded: HashSet<LinkId> = HashSet::new();
        let mut watched: HashSet<LinkId> = HashSet::new();
        let reap_every = (self.config.run_stale_after / 2)
            .clamp(SignedDuration::from_secs(1), SignedDuration::from_secs(300));
        let mut reaped_at: Option<Timestamp> = None;
        loop {
            let now = Timestamp::now();
            if reaped_at.is_none_or(|at| now.duration_since(at) >= reap_every) {
                reaped_at = Some(now);
                if let Err(e) =
                    reap_interrupted_runs(self.ctx.store.as_ref(), self.config.run_stale_after, now)
                        .await
                {
                    tracing::warn!(error = %e, "scheduler could not close interrupted runs");
                }
            }
            if let Err(e) = self.seed(&mut seeded, &mut watched).await {
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

    /// Seeds `sync.link` jobs, and `push.channel` jobs: once per process for links that should have a
    /// channel (this opens channels for new links and after `server.public_url` is set), and whenever a
    /// link that should have none still has one (a paused connection: the job stops it).
    async fn seed(
        &self,
        seeded: &mut HashSet<LinkId>,
        watched: &mut HashSet<LinkId>,
    ) -> Result<(), StoreError> {
        let store = self.ctx.store.as_ref();
        let push_on = self.config.channels.public_url.is_some();
        for tenant in store.list_tenants().await? {
            for connection in store.list_connections(tenant.id).await? {
                let pushes = channels::pushes(connection.provider);
                if connection.status != ConnectionStatus::Active {
                    if pushes {
                        for link in store.list_links(tenant.id, connection.id).await? {
                            if !store
                                .list_push_channels(tenant.id, link.id)
                                .await?
                                .is_empty()
                            {
                                channels::enqueue(store, tenant.id, link.id, Timestamp::now())
                                    .await?;
                            }
                        }
                    }
                    continue;
                }
                for link in store.list_links(tenant.id, connection.id).await? {
                    if pushes && !watched.contains(&link.id) {
                        let active = link.status == LinkStatus::Active;
                        if (active && push_on)
                            || !store
                                .list_push_channels(tenant.id, link.id)
                                .await?
                                .is_empty()
                        {
                            channels::enqueue(store, tenant.id, link.id, Timestamp::now()).await?;
                        }
                        watched.insert(link.id);
                    }
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
            // Listen for "a job was enqueued here" before looking, so a wake-up in between is kept.
            let notified = self.hub.as_ref().map(|hub| hub.work_notified());
            tokio::pin!(notified);
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
            let leased = self
                .ctx
                .store
                .lease_next(
                    &owner,
                    &[JOB_KIND, CHANNEL_JOB],
                    self.config.lease_ttl,
                    Timestamp::now(),
                )
                .await;
            match leased {
                Ok(Some(lease)) => self.run_job(lease).await,
                Ok(None) => {
                    let wake = async {
                        match notified.as_mut().as_pin_mut() {
                            Some(n) => n.await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.tick) => {}
                        _ = wake => {}
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
        if lease.job.kind == CHANNEL_JOB {
            return self.run_channel_job(lease).await;
        }
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

    /// Runs a link's `push.channel` job (open / renew / stop its channel) under the same lease rules.
    async fn run_channel_job(&self, lease: Lease) {
        let store = self.ctx.store.as_ref();
        let payload: ChannelPayload = match serde_json::from_str(&lease.job.payload_json) {
            Ok(p) => p,
            Err(e) => {
                let _ = store
                    .fail_job(&lease, &format!("bad payload: {e}"), None, Timestamp::now())
                    .await;
                return;
            }
        };
        let renewer = self.renew(lease.clone());
        let work = channels::run(&self.ctx, &self.config.channels, &payload, Timestamp::now());
        tokio::pin!(renewer);
        tokio::pin!(work);
        let outcome = tokio::select! {
            outcome = &mut work => outcome,
            lost = &mut renewer => {
                tracing::warn!(link = %payload.link, error = %lost, "channel job lease lost");
                return;
            }
        };
        let now = Timestamp::now();
        match outcome {
            Ok(next) => {
                let _ = store.complete_job(&lease, next, now).await;
            }
            Err(e) => {
                tracing::warn!(link = %payload.link, error = %e, "push channel work failed; links are polled meanwhile");
                let retry = now.checked_add(self.config.channels.retry).ok();
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
        let provider = match syncing::open_provider(&self.ctx, &connection).await {
            Ok(p) => p,
            // A grant that is gone ends the link's job; the OAuth callback re-arms it.
            Err(syncing::SyncServiceError::NotAuthorized { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let connection = syncing::effective_connection(&self.ctx.master_key, &connection);
        let now = Timestamp::now();
        let slot = last_full_slot(now, self.config.full_sync_at, &self.config.time_zone);
        let full = match (slot, link.last_full_sync_at) {
            (_, None) => false, // the first run lists everything anyway
            (Some(slot), Some(last)) => last < slot,
            (None, Some(_)) => false,
        };
        let frequency = frequency_of(&connection.sync_options_json, self.config.default_frequency);
        let polled = matches!(connection.provider, Provider::Caldav | Provider::Ics);
        // CalDAV and ICS come back every `poll_interval` (never later than `frequency`).
        let interval = if polled {
            frequency.min(self.config.poll_interval)
        } else {
            frequency
        };
        if polled
            && !full
            && self
                .quiet(&connection, &link, provider.as_ref(), frequency, now)
                .await
        {
            let next = now.checked_add(interval).map_err(|e| e.to_string())?;
            return Ok(Some(next));
        }
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
        if let Ok(mut synced) = self.synced.lock() {
            synced.insert(link.id, now);
        }
        if let Some(hub) = &self.hub {
            hub.ring().await;
        }
        let next = Timestamp::now()
            .checked_add(interval)
            .map_err(|e| e.to_string())?;
        Ok(Some(next))
    }

    /// May a polled link skip this run? Only when its one probe request says the remote calendar is
    /// unchanged, no local change waits for it, no failed time-conflict detection waits to be redone
    /// (`Link::time_detection_due`), and this process synced it within `frequency`. Any doubt (probe
    /// failed or unknown, first run here) means sync.
    async fn quiet(
        &self,
        connection: &Connection,
        link: &Link,
        provider: &dyn calbridge_providers::CalendarProvider,
        frequency: SignedDuration,
        now: Timestamp,
    ) -> bool {
        let recent = self
            .synced
            .lock()
            .ok()
            .and_then(|s| s.get(&link.id).copied())
            .is_some_and(|at| now.duration_since(at) < frequency);
        let (Some(local), Some(cursor)) = (link.local_cursor, link.cursor.as_deref()) else {
            return false;
        };
        if !recent || link.time_detection_due.is_some() {
            return false;
        }
        let local_waiting = self
            .ctx
            .store
            .list_changes(link.tenant_id, local, Some(connection.calendar_id), 100)
            .await
            // Only event changes are the engine's business (it skips the rest too); a full page
            // of other entries counts as "maybe".
            .map(|page| page.len() == 100 || page.iter().any(|c| c.kind.starts_with("event.")))
            .unwrap_or(true);
        if local_waiting {
            return false;
        }
        let (Ok(calendar), Ok(cursor)) = (
            CalendarId::parse(&link.remote_calendar_id),
            calbridge_providers::Cursor::parse(cursor),
        ) else {
            return false;
        };
        matches!(
            provider.probe(&calendar, Some(&cursor)).await,
            Ok(Probe::Unchanged)
        )
    }
}

/// Closes the runs (any tenant, any node) whose heartbeat is older than their own staleness bound as
/// failed with an error of class `interrupted`; returns how many. Each run's bound is the
/// `sync.run_stale_after` of the process running it, written with its heartbeat (a live run beats
/// every tenth of it), so a run of a live node, this one or another, is never closed, whatever this
/// node's own value; `stale_after` (this node's) judges only rows without a bound (written before
/// migration 0009). Several nodes reaping at once close each run once (the store re-checks the
/// heartbeat in the closing statement).
pub async fn reap_interrupted_runs(
    store: &dyn calbridge_store::Store,
    stale_after: SignedDuration,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let stale_after =
        Duration::try_from(stale_after).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let cause = |bound: Duration| {
        let bound = SignedDuration::try_from(bound).unwrap_or(SignedDuration::MAX);
        format!(
            "no heartbeat for {bound:#}: the process running this sync stopped (killed, crashed or cut off from the database) before closing it; the next sync picks up where it stopped"
        )
    };
    let closed = store.fail_stale_sync_runs(now, stale_after, &cause).await?;
    for run in &closed {
        tracing::warn!(run = %run.id, tenant = %run.tenant_id, started_at = %run.started_at, "closed a sync run left running by a dead process");
    }
    Ok(closed.len())
}

/// The lease to complete with: the original one carries the fencing token the store checks; renewals
/// keep the token, so the original is enough.
fn renewer_lease(lease: &Lease) -> Lease {
    lease.clone()
}
