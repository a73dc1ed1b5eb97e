//! Storage for calbridge: one [`Store`] interface over SQLite (embedded default) and PostgreSQL (several nodes),
//! with migrations, optimistic concurrency, an occurrence index for window queries, leased jobs with fencing
//! tokens, an append-only audit log and secrets sealed at rest ([`crypto`]).
//!
//! The store knows nothing of HTTP or of the calendar model: series arrive as iCalendar text plus the model's
//! JSON, and their occurrence rows are computed by the caller. Every query on tenant data takes the tenant id.

pub mod crypto;
mod error;
mod postgres;
mod records;
mod rows;
mod sqlite;
mod store;

use std::sync::Arc;

pub use crate::error::{Result, StoreError};
pub use crate::postgres::PgStore;
pub use crate::records::*;
pub use crate::sqlite::SqliteStore;
pub use crate::store::Store;

/// The default database of `calbridge serve`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://calbridge.db";

/// Opens a store for `url`, choosing the backend from its scheme (`sqlite:` or `postgres:`/`postgresql:`).
/// Does not migrate; see [`open`].
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    connect_with(url, PoolSize::default()).await
}

/// How many database connections a store may hold open (`database.max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize(pub u32);

impl Default for PoolSize {
    fn default() -> Self {
        Self(16)
    }
}

impl PoolSize {
    /// At least one connection.
    pub fn get(self) -> u32 {
        self.0.max(1)
    }
}

/// [`connect`] with a pool of at most `pool` connections. On PostgreSQL that is the pool; on SQLite it
/// caps the readers (there is always exactly one writer).
pub async fn connect_with(url: &str, pool: PoolSize) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect_with(url, pool).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect_pool(url, pool).await?))
    } else {
        Err(StoreError::Invalid(format!(
            "database URL must start with sqlite: or postgres:// (got {})",
            redact_url(url)
        )))
    }
}

/// [`connect`], then bring the schema up to date: what `serve` does on start.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, PoolSize::default()).await
}

/// [`open`] with a pool of at most `pool` connections (see [`connect_with`]).
pub async fn open_with(url: &str, pool: PoolSize) -> Result<Arc<dyn Store>> {
    let store = connect_with(url, pool).await?;
    store.migrate().await?;
    Ok(store)
}

/// A database URL fit for logs: any password is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
