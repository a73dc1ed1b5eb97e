//! The sync engine end to end with real parts only: a real store (a SQLite file, and a fresh PostgreSQL
//! database) on one side and a real Radicale on the other. Every scenario runs on both backends
//! (`sqlite::<name>`, `postgres::<name>`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../store/tests/story/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../../../providers/tests/support/mod.rs"]
mod support;

mod scenarios;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::harness::sqlite().await;
                    crate::scenarios::$name(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::harness::postgres().await else { return };
                    crate::scenarios::$name(db).await;
                }
            )*
        }
    };
}

both_backends!(
    initial_import_both_ways_pairs_same_uid_and_respects_the_window,
    incremental_edits_merge_field_by_field,
    update_conflict_under_ask_is_stored_and_parked,
    update_conflict_under_each_automatic_policy,
    deletions_propagate_both_ways_with_tombstones,
    deletion_conflict_is_stored,
    a_stale_if_match_is_reported_while_the_rest_commits,
    interrupted_runs_converge_without_loss_or_duplicates,
    a_mass_deletion_marks_the_link_suspect_and_deletes_nothing,
    one_way_links_never_write_the_other_side,
    an_occurrence_edit_merges_as_that_override,
    writes_of_a_killed_run_are_recognised_as_its_own,
);
