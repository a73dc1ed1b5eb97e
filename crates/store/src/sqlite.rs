//! The embedded backend: one SQLite file in WAL mode.
//!
//! Writes go through a pool of exactly one connection, so writers queue in-process instead of failing with
//! `SQLITE_BUSY` on lock upgrades; reads use a separate pool and run concurrently with the writer (WAL).
//! Other processes on the same file are covered by the busy timeout.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::records::TenantId;

type Db = sqlx::Sqlite;
type Backend = SqliteStore;

const BACKEND: &str = "sqlite";
/// SQLite runs one write statement at a time, so the lease subquery needs no row lock.
const LEASE_LOCK: &str = "";
/// The window query is one range of the clustered primary key: rows starting shortly before the window are
/// read in sequence and dropped, which measured faster here than splitting the query (see `list_occurrences`).
const SPLIT_WINDOW_QUERY: bool = false;
/// The occurrences of given series, through the series index. Without statistics on `occurrences`
/// SQLite prefers the covering `occurrences_calendar (tenant_id, ...)` index for `series_id = ? AND
/// tenant_id = ?`, which reads every occurrence of the tenant: each series write then cost a scan, and a
/// 100,000-event import slowed from ~120 to ~7 series/s as it grew (found with gdb on the benchmark).
const OCCURRENCES_BY_SERIES: &str = "occurrences INDEXED BY occurrences_series";
/// A link's write-ahead pairs, through their partial index. Without statistics SQLite picks the
/// `(link_id, tenant_id, ...)` index and reads every pair's row to test the flag: ~0.3 s of every
/// 10,000-event sync (found with strace on the vdirsyncer benchmark).
const WRITE_AHEAD_MAPPINGS: &str = "item_mappings INDEXED BY item_mappings_write_ahead";
/// A link's pairs whose occurrence ids are not remembered, through their partial index (migration
/// 0018), for the same reason: without it SQLite reads every pair of the link to test the flag.
const UNKNOWN_OCCURRENCE_MAPPINGS: &str =
    "item_mappings INDEXED BY item_mappings_occurrences_unknown";
/// Series by their ids, through the primary key. Without statistics SQLite answers `tenant_id = ?
/// AND id IN (…)` from the covering `series_tenant_calendar (tenant_id, ...)` index, reading every
/// series of the tenant: ~7 ms of each incremental run at 10,000 events, O(events) (found in the
/// vdirsyncer benchmark's query log). The name is SQLite's for the `id TEXT PRIMARY KEY` index.
const SERIES_BY_ID: &str = "series INDEXED BY sqlite_autoindex_series_1";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if absent) the database at `url` (`sqlite://path`, `sqlite:path` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, crate::PoolSize::default()).await
    }

    /// [`SqliteStore::connect`] with at most `pool` reader connections (one per core, 2 to 8, by default).
    pub async fn connect_with(url: &str, pool: crate::PoolSize) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            // Page cache per connection (negative = KiB; SQLite's default is 2 MiB). A window read walks a
            // few hundred pages of the occurrence table; with the default they were re-read from the OS on
            // every request (pread + copy: ~15 % of the server's CPU samples at 100,000 events).
            .pragma("cache_size", "-32768")
            // Keeps planner statistics fresh (cheap: only analyzes tables whose stats drifted).
            .optimize_on_close(true, None);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // No ping before each acquire (sqlx's default): a SQLite connection lives in this process and
        // cannot have been hung up on, so the ping was only one more round trip to the connection's
        // worker thread in front of every statement and transaction.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        // An in-memory database exists once per connection: share the writer for reads too.
        let read = if in_memory {
            write.clone()
        } else {
            let readers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
                .min(usize::try_from(pool.get()).unwrap_or(8));
            SqlitePoolOptions::new()
                .max_connections(u32::try_from(readers).unwrap_or(4))
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(false))
                .await?
        };
        Ok(Self { write, read })
    }

    /// The write pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.write
    }

    fn r(&self) -> &SqlitePool {
        &self.read
    }

    fn w(&self) -> &SqlitePool {
        &self.write
    }

    /// `BEGIN IMMEDIATE`: take the write lock up front, so a transaction that reads before it writes cannot
    /// fail on a lock upgrade when another process writes the same file.
    async fn wtx(&self) -> Result<sqlx::Transaction<'static, Db>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn run_migrations(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.write)
            .await?;
        Ok(())
    }
}

/// Commit order is already sequence order: SQLite has one writer at a time.
async fn lock_change_stream(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _tenant: TenantId,
) -> Result<()> {
    Ok(())
}

include!("common.rs");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Asserts that SQLite's plan for `sql` reads through `index` (binds are left unset: NULL), and
    /// returns the step of `EXPLAIN QUERY PLAN` that does (`SEARCH t USING [COVERING] INDEX index ...`).
    async fn assert_plan_uses(sql: &str, index: &str) -> String {
        let plan = plan_of(sql).await;
        let step = plan.iter().find(|d| {
            let words: Vec<&str> = d.split_whitespace().collect();
            words.contains(&"USING") && words.windows(2).any(|w| w == ["INDEX", index])
        });
        match step {
            Some(step) => step.to_owned(),
            None => panic!("{sql}: no step uses {index}: {plan:?}"),
        }
    }

    /// The steps of SQLite's plan for `sql` on a freshly migrated database (binds left unset: NULL).
    async fn plan_of(sql: &str) -> Vec<String> {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.run_migrations().await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&store.write)
                .await
                .unwrap();
        plan.into_iter().map(|p| p.3).collect()
    }

    /// The pairs a run's changes name are found through an index on the named column, not by reading
    /// every pair of the link (what SQLite chose for series ids on its own: O(pairs) per run).
    #[tokio::test]
    async fn pairs_named_by_remote_id_or_series_are_found_through_their_indexes() {
        for (column, index) in [
            ("remote_id", "item_mappings_link_remote"),
            ("series_id", "item_mappings_link_series"),
        ] {
            assert_plan_uses(
                &format!(
                    "SELECT * FROM item_mappings WHERE tenant_id = 't' AND link_id = 'l' \
                     AND {column} IN ('a', 'b')"
                ),
                index,
            )
            .await;
        }
    }

    /// The series a run's change stream names are compared with their pairs' local versions through
    /// the pairs' series index and the series' primary key: a few probes per series.
    #[tokio::test]
    async fn series_at_their_pair_version_are_found_through_indexes() {
        let sql = format!(
            "{SERIES_AT_PAIR_VERSION}'t' AND m.link_id = 'l' AND m.series_id IN ('a', 'b')"
        );
        assert_plan_uses(&sql, "item_mappings_link_series").await;
        assert_plan_uses(&sql, "sqlite_autoindex_series_1").await;
    }

    /// The conflicts naming given series are found through an index on each of the two columns (a few
    /// probes per series), not by reading every conflict of the tenant.
    #[tokio::test]
    async fn conflicts_naming_series_are_found_through_both_series_indexes() {
        // As `conflicts_naming_series` asks (one `OR` of the two went through `conflicts_tenant`).
        let sql = "SELECT * FROM conflicts WHERE tenant_id = 't' AND kind = 'time' \
                   AND series_id IN ('a', 'b') \
                   UNION ALL SELECT * FROM conflicts WHERE tenant_id = 't' AND kind = 'time' \
                   AND other_series_id IN ('a', 'b') ORDER BY id";
        for index in ["conflicts_series", "conflicts_other_series"] {
            assert_plan_uses(sql, index).await;
        }
    }

    /// A removed occurrence's series is found by (link, tenant, occurrence id), and a pair's rows
    /// (replaced when its series is read again, cascaded when it is deleted) through their own index:
    /// neither reads every row of the link.
    #[tokio::test]
    async fn remote_occurrences_are_found_by_occurrence_id_and_by_pair() {
        let lookup = "SELECT o.occurrence_id, m.remote_id FROM remote_occurrences o \
                      JOIN item_mappings m ON m.id = o.mapping_id \
                      WHERE o.link_id = 'l' AND o.tenant_id = 't' AND o.occurrence_id IN ('a', 'b')";
        let plan = plan_of(lookup).await;
        assert!(
            plan.iter().any(|d| d.starts_with(
                "SEARCH o USING PRIMARY KEY (link_id=? AND tenant_id=? AND occurrence_id=?)"
            )),
            "{plan:?}"
        );
        assert_plan_uses(
            "DELETE FROM remote_occurrences WHERE tenant_id = 't' AND mapping_id IN ('a', 'b')",
            "remote_occurrences_mapping",
        )
        .await;
    }

    /// A batch of local creates asks which of its UIDs live series hold through the live-UID index
    /// (one probe per UID), and a batch of pairs removes its series' other rows through the pairs'
    /// series index: neither reads every series of the calendar or every pair of the link.
    #[tokio::test]
    async fn batch_lookups_and_removals_go_through_their_indexes() {
        let step = assert_plan_uses(
            &format!(
                "SELECT {SERIES_COLS} FROM series WHERE calendar_id = 'c' AND tenant_id = 't' \
                 AND deleted_at IS NULL AND uid IN ('a', 'b')"
            ),
            "series_live_uid",
        )
        .await;
        assert!(step.contains("calendar_id=? AND uid=?"), "{step}");
        assert_plan_uses(
            "DELETE FROM item_mappings WHERE tenant_id = 't' AND link_id = 'l' \
             AND series_id IN ('a', 'b') AND remote_id NOT IN ('x', 'y')",
            "item_mappings_link_series",
        )
        .await;
        assert_plan_uses(
            &format!("SELECT COUNT(*) AS n FROM {SERIES_BY_ID} WHERE tenant_id = 't' AND id IN ('a', 'b')"),
            "sqlite_autoindex_series_1",
        )
        .await;
    }

    /// A link's write-ahead pairs are found through their partial index, not by reading every pair.
    #[tokio::test]
    async fn write_ahead_pairs_are_found_through_their_partial_index() {
        assert_plan_uses(
            &format!(
                "SELECT * FROM {WRITE_AHEAD_MAPPINGS} \
                 WHERE link_id = 'l' AND write_ahead AND tenant_id = 't'"
            ),
            "item_mappings_write_ahead",
        )
        .await;
    }

    /// A link's pairs whose occurrence ids are not remembered are found through their partial index.
    #[tokio::test]
    async fn pairs_with_unknown_occurrences_are_found_through_their_partial_index() {
        assert_plan_uses(
            &format!(
                "SELECT * FROM {UNKNOWN_OCCURRENCE_MAPPINGS} \
                 WHERE link_id = 'l' AND NOT occurrences_remembered AND tenant_id = 't'"
            ),
            "item_mappings_occurrences_unknown",
        )
        .await;
    }

    /// The latest deleted series of a calendar with a UID is one probe of the partial index on
    /// deleted series, not a read of every series of the calendar (`series_tenant_calendar`, the only
    /// index that served it before migration 0016), and needs no sort.
    #[tokio::test]
    async fn deleted_series_by_uid_are_found_through_their_partial_index() {
        let sql = format!("SELECT {SERIES_COLS} {DELETED_SERIES_BY_UID}");
        let step = assert_plan_uses(&sql, "series_deleted_uid").await;
        assert!(
            step.contains("calendar_id=? AND uid=? AND created_at>?"),
            "{step}"
        );
        let plan = plan_of(&sql).await;
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// A run's read of its link's open conflicts goes through `conflicts_link`, already in page
    /// order: not through every open conflict of the tenant (time conflicts name no link), sorted.
    #[tokio::test]
    async fn a_links_open_conflicts_are_found_through_the_link_index() {
        let filter = ConflictFilter {
            state: Some(ConflictState::Open),
            connection_id: Some(ConnectionId::new()),
            link_id: Some(LinkId::new()),
            kind: None,
        };
        let mut q = conflicts_matching(TenantId::new(), &filter);
        q.push(" AND id > 'a' ORDER BY id LIMIT 1000");
        let step = assert_plan_uses(q.sql(), "conflicts_link").await;
        assert!(step.contains("link_id=? AND state=?"), "{step}");
        let plan = plan_of(q.sql()).await;
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// Series named by id are read through the primary key, not by a scan of the tenant's series.
    #[tokio::test]
    async fn series_named_by_id_are_found_through_the_primary_key() {
        let step = assert_plan_uses(
            &format!("SELECT {SERIES_COLS} FROM {SERIES_BY_ID} WHERE tenant_id = 't' AND id IN ('a', 'b')"),
            "sqlite_autoindex_series_1",
        )
        .await;
        assert!(step.contains("(id=?)"), "{step}");
    }

    /// The statements that pick a series' occurrences go through the series index, not a scan of the
    /// tenant's occurrences (what SQLite chose on its own, making every series write O(tenant)).
    #[tokio::test]
    async fn occurrences_of_a_series_are_found_through_the_series_index() {
        for sql in [
            format!(
                "DELETE FROM {OCCURRENCES_BY_SERIES} WHERE series_id = 'a' AND tenant_id = 'b'"
            ),
            format!(
                "SELECT * FROM {OCCURRENCES_BY_SERIES} WHERE tenant_id = 'b' AND start_utc < 2 \
                 AND end_utc > 1 AND series_id IN ('a', 'c')"
            ),
        ] {
            assert_plan_uses(&sql, "occurrences_series").await;
        }
    }
}
