//! One test story, written once and run against both backends: every scenario below becomes
//! `sqlite::<name>` (a temp file) and `postgres::<name>` (a fresh database at CALBRIDGE_TEST_POSTGRES_URL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod scenarios;

macro_rules! story {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::harness::sqlite().await;
                    crate::scenarios::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = crate::harness::postgres().await else { return };
                    crate::scenarios::$name(&db).await;
                }
            )*
        }
    };
}

story!(
    migrations_are_idempotent,
    tenants_and_api_keys,
    calendars_crud_and_stale_versions,
    series_crud_occurrences_and_change_stream,
    concurrent_updates_lose_nothing,
    window_query_matches_brute_force_with_pagination,
    connections_links_and_mappings,
    conflicts_sync_runs_and_tombstones,
    audit_log_is_append_only,
    job_leases_are_exclusive,
    job_fencing_and_lifecycle,
    webhooks_and_deliveries,
    rotate_master_round_trip,
    series_batch_is_all_or_nothing,
    bad_input_is_refused_and_changes_nothing,
    oauth_states_are_single_use_and_tenant_checked,
    stale_sync_runs_are_closed_as_interrupted,
    a_late_report_leaves_a_reaped_run_closed,
    each_run_is_judged_by_its_own_staleness_bound,
    detections_are_recorded_and_closed_in_one_transaction,
    remote_occurrences_go_with_their_pair,
    pairs_remember_their_occurrences_once_reported,
    series_at_their_pair_version_are_known,
    a_failed_time_detection_stays_due_until_covered,
    a_pair_replaces_the_series_other_rows_in_one_transaction,
    deleted_series_are_found_by_uid_and_age,
    series_are_found_by_many_uids,
    mapping_and_pair_batches_are_all_or_nothing,
);

/// Migrations applied to databases that predate them: 0011 fills the second series of the time
/// conflicts stored before it; 0018 marks the pairs whose occurrence ids were stored; a migration
/// numbered below ones already applied is still applied.
mod migration {
    use crate::harness::Migrated;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_time_conflicts_get_their_second_series() {
        let db = crate::harness::sqlite_migrated_to(Some(10)).await;
        crate::scenarios::time_conflicts_get_their_second_series(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_time_conflicts_get_their_second_series() {
        let Some(db) = crate::harness::postgres_migrated_to(Some(10)).await else {
            return;
        };
        crate::scenarios::time_conflicts_get_their_second_series(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_pairs_with_occurrence_rows_are_remembered_after_0018() {
        let db = crate::harness::sqlite_migrated_to(Some(17)).await;
        crate::scenarios::pairs_with_occurrence_rows_are_remembered_after_0018(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_pairs_with_occurrence_rows_are_remembered_after_0018() {
        let Some(db) = crate::harness::postgres_migrated_to(Some(17)).await else {
            return;
        };
        crate::scenarios::pairs_with_occurrence_rows_are_remembered_after_0018(&db).await;
    }

    /// Migration 0009 landed on main after 0010: a database migrated at that commit had 0010 (and
    /// everything later a node since applied) but not 0009. Opening it applies 0009.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_0009_is_applied_after_later_ones() {
        let db = crate::harness::sqlite_migrated(Migrated::AllBut(&[9])).await;
        crate::scenarios::a_migration_numbered_below_applied_ones_is_applied_on_open(&db, 9).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_0009_is_applied_after_later_ones() {
        let Some(db) = crate::harness::postgres_migrated(Migrated::AllBut(&[9])).await else {
            return;
        };
        crate::scenarios::a_migration_numbered_below_applied_ones_is_applied_on_open(&db, 9).await;
    }

    /// 0012 landed after 0013..0015: the same for a database migrated just before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_0012_is_applied_after_later_ones() {
        let db = crate::harness::sqlite_migrated(Migrated::AllBut(&[12])).await;
        crate::scenarios::a_migration_numbered_below_applied_ones_is_applied_on_open(&db, 12).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_0012_is_applied_after_later_ones() {
        let Some(db) = crate::harness::postgres_migrated(Migrated::AllBut(&[12])).await else {
            return;
        };
        crate::scenarios::a_migration_numbered_below_applied_ones_is_applied_on_open(&db, 12).await;
    }
}
