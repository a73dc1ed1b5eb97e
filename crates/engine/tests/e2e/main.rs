//! The sync engine end to end with real parts only: a real store (a SQLite file, and a fresh PostgreSQL
//! database) on one side and a real Radicale (or the Graph and Google emulators, `cloud`) on the other. Every scenario runs on both backends
//! (`sqlite::<name>`, `postgres::<name>`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../store/tests/story/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../../../providers/tests/support/mod.rs"]
mod support;

mod cloud;
mod resolution;
mod scenarios;

/// Asserts the counts a run reported for `expected` keys (0: not reported), showing all of them on
/// failure.
pub fn assert_counts(report: &calbridge_engine::RunReport, expected: &[(&str, u64)]) {
    let got: Vec<(&str, u64)> = expected
        .iter()
        .map(|(key, _)| (*key, report.counts.get(*key).copied().unwrap_or(0)))
        .collect();
    assert_eq!(got, expected, "{:?}", report.counts);
}

/// Counts that say what a run read, not what it changed (`RunReport::counts`): which series of the
/// change stream it left unread, whether the stream's retention made it read the local side in full,
/// how many pairs a complete listing made it read, which uncertain
/// deletions it verified (whatever a verification finds is counted as its own action).
const READ_ONLY_COUNTS: [&str; 4] = [
    "local_unchanged_since_pair",
    "local_stream_expired",
    "pairs_read_in_full",
    "verify_remote",
];

/// Whether a run changed anything: wrote either side, paired or unpaired items, recorded, settled or
/// closed a conflict, or left work for later (deferred time conflicts, resolutions not resumed).
/// What it read is no change: the echo of a run's own writes, or a run that had to read every pair,
/// changes nothing.
pub fn made_changes(report: &calbridge_engine::RunReport) -> bool {
    report
        .counts
        .iter()
        .any(|(key, n)| *n > 0 && !READ_ONLY_COUNTS.contains(&key.as_str()))
}

/// The request of `option` on `conflict` as the tests make it: by `key:test`, now, with nothing
/// merged (set `merged` on the result for a `merge`).
pub fn resolve_request<'a>(
    store: &'a dyn calbridge_store::Store,
    provider: &'a dyn calbridge_providers::CalendarProvider,
    tenant: calbridge_store::TenantId,
    conflict: calbridge_store::ConflictId,
    option: &'a str,
    config: &'a calbridge_engine::EngineConfig,
) -> calbridge_engine::Resolve<'a> {
    calbridge_engine::Resolve {
        store,
        provider: Some(provider),
        tenant,
        conflict,
        option,
        merged: None,
        actor: "key:test",
        config,
        now: jiff::Timestamp::now(),
    }
}

/// Every conflict kind under every policy, each applicable option applied and the others refused
/// (`resolution.rs`), on SQLite; one Radicale process for all five worlds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_matrix_every_policy_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let radicale = std::sync::Arc::new(radicale);
    for policy in resolution::POLICIES {
        let db = harness::sqlite().await;
        resolution::policy_world(db, radicale.clone(), policy).await;
    }
}

/// The representative subset on PostgreSQL: `ask` (every option) and `keep_both` (the policy that
/// must agree with the option).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_matrix_ask_and_keep_both_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let radicale = std::sync::Arc::new(radicale);
    for policy in ["ask", "keep_both"] {
        let Some(db) = harness::postgres().await else {
            return;
        };
        resolution::policy_world(db, radicale.clone(), policy).await;
    }
}

/// A flood of time conflicts (1,225 pairs): capped per detection, recorded once, closed by scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_conflict_flood_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_flood_of_time_conflicts_is_capped_deduplicated_and_scoped(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_conflict_flood_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_flood_of_time_conflicts_is_capped_deduplicated_and_scoped(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// A time detection that failed after the cursors advanced is redone by the link's next run (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_time_detection_is_redone_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_failed_time_detection_is_redone_by_the_next_run(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_time_detection_is_redone_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_failed_time_detection_is_redone_by_the_next_run(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// A run killed between its cursor commit and its time detection: the next run records the overlap
/// (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_cursors_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_kill_before_the_time_detection_loses_no_conflict(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_cursors_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_kill_before_the_time_detection_loses_no_conflict(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// Conflict resolutions interrupted after a write converge on the next syncs (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_resolutions_converge_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::interrupted_resolutions_converge(db, std::sync::Arc::new(radicale)).await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_resolutions_converge_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::interrupted_resolutions_converge(db, std::sync::Arc::new(radicale)).await;
}

/// A `merge` whose provider PUT is refused after its local write is finished by the next sync
/// (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_merge_is_finished_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_merge_whose_put_is_refused_is_finished_by_the_next_sync(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_merge_is_finished_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_merge_whose_put_is_refused_is_finished_by_the_next_sync(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// Abandoned (superseded, or raced by a replacement) `keep_both` decisions undo their local copy
/// unless it was exported (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_keep_both_copies_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::abandoned_keep_both_copies_are_undone_unless_exported(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_keep_both_copies_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::abandoned_keep_both_copies_are_undone_unless_exported(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// A process killed right after taking a conflict's decision over (a replacement, a superseding
/// sync) leaves no `keep_both` copy to be exported (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_fence_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_copy_outlives_no_kill_of_whoever_gives_its_decision_up(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_fence_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_copy_outlives_no_kill_of_whoever_gives_its_decision_up(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// A `keep_both` copy a sync parked is exported by an incremental sync once its decision lets it
/// go (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_copy_is_exported_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_parked_copy_is_exported_once_its_decision_lets_it_go(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_copy_is_exported_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_parked_copy_is_exported_once_its_decision_lets_it_go(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// Replacements chained before any gave the one before it up: each decision given up is audited
/// once (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_replacements_are_audited_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_chain_of_replacements_audits_every_decision_given_up(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_replacements_are_audited_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_chain_of_replacements_audits_every_decision_given_up(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// A process killed right after marking a decision given up leaves its audit entry written once
/// (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_giving_up_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_kill_after_giving_a_decision_up_loses_no_audit_entry(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_giving_up_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_kill_after_giving_a_decision_up_loses_no_audit_entry(
        db,
        std::sync::Arc::new(radicale),
    )
    .await;
}

/// A process killed right after closing a conflict as resolved leaves its `conflict.resolved`
/// entry written once (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_closing_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_kill_after_closing_loses_no_resolved_entry(db, std::sync::Arc::new(radicale))
        .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_closing_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_kill_after_closing_loses_no_resolved_entry(db, std::sync::Arc::new(radicale))
        .await;
}

/// A process killed right after deleting a given-up decision's copy: the entry written next says
/// the copy was deleted (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_removing_a_copy_sqlite() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let db = harness::sqlite().await;
    resolution::a_copy_deleted_before_a_kill_is_audited_deleted(db, std::sync::Arc::new(radicale))
        .await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_removing_a_copy_postgres() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let Some(db) = harness::postgres().await else {
        return;
    };
    resolution::a_copy_deleted_before_a_kill_is_audited_deleted(db, std::sync::Arc::new(radicale))
        .await;
}

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
    a_local_cursor_the_stream_no_longer_covers_reads_the_local_side_in_full,
    a_stale_if_match_is_reported_while_the_rest_commits,
    interrupted_runs_converge_without_loss_or_duplicates,
    a_mass_deletion_marks_the_link_suspect_and_deletes_nothing,
    echoed_deletions_do_not_make_the_next_run_read_every_pair,
    one_way_links_never_write_the_other_side,
    an_occurrence_edit_merges_as_that_override,
    writes_of_a_killed_run_are_recognised_as_its_own,
    a_create_whose_pair_was_not_recorded_stays_ours,
    an_import_cut_short_then_deleted_locally_stays_deleted,
    a_create_parked_unreadable_then_deleted_locally_stays_deleted,
    pending_creates_do_not_pile_up_while_an_item_stays_unreadable,
    a_link_listed_in_full_every_run_settles,
    an_import_goes_in_chunks_and_a_failing_item_fails_alone,
);

mod cloud_sqlite {
    use calbridge_emulators::Flavor;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graph_story() {
        crate::cloud::cloud_story(crate::harness::sqlite().await, Flavor::Microsoft).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn google_story() {
        crate::cloud::cloud_story(crate::harness::sqlite().await, Flavor::Google).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identity_conflicts_google() {
        crate::cloud::identity_conflicts_resolve_on_both_systems(crate::harness::sqlite().await)
            .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_identity_resolutions_google() {
        crate::cloud::interrupted_identity_resolutions_converge(crate::harness::sqlite().await)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_calendar_three_providers() {
        crate::cloud::one_calendar_three_providers(crate::harness::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_identity_keep_both_copies_google() {
        crate::cloud::abandoned_identity_keep_both_copies(crate::harness::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_graph_occurrence_re_reads_its_series_alone() {
        crate::cloud::a_deleted_graph_occurrence_re_reads_its_series_alone(
            crate::harness::sqlite().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_graph_series_read_keeps_its_occurrences() {
        crate::cloud::a_failed_graph_series_read_keeps_its_occurrences(
            crate::harness::sqlite().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_outside_the_window_reads_no_graph_series() {
        crate::cloud::an_edit_outside_the_window_reads_no_graph_series(
            crate::harness::sqlite().await,
        )
        .await;
    }
}

mod cloud_postgres {
    use calbridge_emulators::Flavor;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graph_story() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::cloud_story(db, Flavor::Microsoft).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn google_story() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::cloud_story(db, Flavor::Google).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_identity_resolutions_google() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::interrupted_identity_resolutions_converge(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_calendar_three_providers() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::one_calendar_three_providers(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_identity_keep_both_copies_google() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::abandoned_identity_keep_both_copies(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_graph_occurrence_re_reads_its_series_alone() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::a_deleted_graph_occurrence_re_reads_its_series_alone(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_graph_series_read_keeps_its_occurrences() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::a_failed_graph_series_read_keeps_its_occurrences(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edit_outside_the_window_reads_no_graph_series() {
        let Some(db) = crate::harness::postgres().await else {
            return;
        };
        crate::cloud::an_edit_outside_the_window_reads_no_graph_series(db).await;
    }
}
