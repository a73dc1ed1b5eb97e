//! The heartbeat of a running sync run: while the work runs, its `sync_runs` row is touched at once
//! and then every `every`, so a run whose process died (killed, crashed) can be told from one still
//! working. Each touch also writes the run's own staleness bound (`stale_after`, the process's
//! `sync.run_stale_after`), and the scheduler of every node closes a run as `interrupted` only when
//! its heartbeat is older than that bound (`Store::fail_stale_sync_runs`; its own setting only for
//! rows without one). So nodes configured with different values never reap each other's live runs:
//! the process that runs a run decides how long a silence means it died.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use calbridge_store::{Store, SyncRunId, TenantId};
use jiff::Timestamp;

/// How a running run shows it is alive: touched every `every`, and judged dead by every reaper once
/// its last touch is older than `stale_after` (written into its row with each touch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub every: Duration,
    pub stale_after: Duration,
}

impl Heartbeat {
    /// Beats every tenth of `stale_after`, within 1 s..60 s (the server's `sync.run_stale_after`).
    pub fn for_stale_after(stale_after: Duration) -> Self {
        let tenth = stale_after.as_millis() / 10;
        let ms = u64::try_from(tenth).unwrap_or(60_000).clamp(1_000, 60_000);
        Self {
            every: Duration::from_millis(ms),
            stale_after,
        }
    }
}

impl Default for Heartbeat {
    /// The server's default `sync.run_stale_after` (10 min): a beat every minute.
    fn default() -> Self {
        Self::for_stale_after(Duration::from_secs(10 * 60))
    }
}

/// Runs `work` while the run's row is touched at once and then every `heartbeat.every`. The touches
/// run beside the work (never in its place: the work may hold the store's one SQLite write
/// connection across an await), and a failing touch is logged, never fatal: the worst it costs is
/// the run being closed as interrupted.
pub async fn beating<F: Future>(
    store: &dyn Store,
    tenant: TenantId,
    run: SyncRunId,
    heartbeat: Heartbeat,
    work: F,
) -> F::Output {
    tokio::select! {
        out = work => out,
        never = beat(store, tenant, run, heartbeat) => match never {},
    }
}

async fn beat(
    store: &dyn Store,
    tenant: TenantId,
    run: SyncRunId,
    heartbeat: Heartbeat,
) -> Infallible {
    let every = heartbeat.every.max(Duration::from_millis(100));
    loop {
        match store
            .touch_sync_run(tenant, run, Timestamp::now(), heartbeat.stale_after)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%run, "the running sync run was already closed (reaped as interrupted?)");
            }
            Err(e) => tracing::warn!(%run, error = %e, "sync run heartbeat failed"),
        }
        tokio::time::sleep(every).await;
    }
}
