//! The multi-node backend: PostgreSQL, where several calbridge processes share one database.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::records::TenantId;

type Db = sqlx::Postgres;
type Backend = PgStore;

const BACKEND: &str = "postgres";
/// Concurrent leasers skip rows another transaction is leasing instead of queueing behind it.
const LEASE_LOCK: &str = " FOR UPDATE SKIP LOCKED";
/// Rows are fetched from the heap one by one, so the window query skips rows starting before the window
/// in an index instead of reading them (migration 0006, see `list_occurrences`).
const SPLIT_WINDOW_QUERY: bool = true;
/// The occurrences of given series (PostgreSQL's statistics pick the series index by themselves).
const OCCURRENCES_BY_SERIES: &str = "occurrences";
/// A link's write-ahead pairs (PostgreSQL's statistics pick the partial index by themselves).
const WRITE_AHEAD_MAPPINGS: &str = "item_mappings";
/// A link's pairs whose occurrence ids are not remembered (the statistics pick the partial index).
const UNKNOWN_OCCURRENCE_MAPPINGS: &str = "item_mappings";
/// Series by their ids (PostgreSQL's statistics pick the primary key by themselves).
const SERIES_BY_ID: &str = "series";

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_pool(url, crate::PoolSize::default()).await
    }

    /// [`PgStore::connect`] with at most `pool` connections.
    pub async fn connect_pool(url: &str, pool: crate::PoolSize) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "bad PostgreSQL URL {}: {e}",
                crate::redact_url(url)
            ))
        })?;
        Self::connect_options(options, pool).await
    }

    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        Self::connect_options(options, crate::PoolSize::default()).await
    }

    async fn connect_options(options: PgConnectOptions, size: crate::PoolSize) -> Result<Self> {
        let options = options.application_name("calbridge");
        let pool = PgPoolOptions::new()
            .max_connections(size.get())
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn r(&self) -> &PgPool {
        &self.pool
    }

    fn w(&self) -> &PgPool {
        &self.pool
    }

    async fn wtx(&self) -> Result<sqlx::Transaction<'static, Db>> {
        Ok(self.pool.begin().await?)
    }

    async fn run_migrations(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}

/// Identity values are handed out before commit, so two writers could commit seq 8 before seq 7 and a reader
/// resuming "after 8" would miss 7. A per-tenant transaction lock makes seq order equal commit order.
async fn lock_change_stream(
    tx: &mut sqlx::Transaction<'static, Db>,
    tenant: TenantId,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("calbridge.changes.{tenant}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

include!("common.rs");
