//! The heartbeat of a running sync run: while the work runs, its `sync_runs` row is touched every
//! `every`, so a run whose process died (killed, crashed) can be told from one still working: the
//! scheduler closes runs whose heartbeat is older than `sync.run_stale_after` as `interrupted`
//! (`Store::fail_stale_sync_runs`), on every node, without reaping a live run of another node.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use calbridge_store::{Store, SyncRunId, TenantId};
use jiff::Timestamp;

/// Runs `work` while the run's row is touched every `every`. The touches run beside the work (never
/// in its place: the work may hold the store's one SQLite write connection across an await), and a
/// failing touch is logged, never fatal: the worst it costs is the run being closed as interrupted.
pub async fn beating<F: Future>(
    store: &dyn Store,
    tenant: TenantId,
    run: SyncRunId,
    every: Duration,
    work: F,
) -> F::Output {
    tokio::select! {
        out = work => out,
        never = beat(store, tenant, run, every) => match never {},
    }
}

async fn beat(store: &dyn Store, tenant: TenantId, run: SyncRunId, every: Duration) -> Infallible {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match store.touch_sync_run(tenant, run, Timestamp::now()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%run, "the running sync run was already closed (reaped as interrupted?)");
            }
            Err(e) => tracing::warn!(%run, error = %e, "sync run heartbeat failed"),
        }
    }
}
