//! Conflicts end to end, table-driven: each conflict kind (update, deletion in both directions, time)
//! under each policy (`ask`, `local_wins`, `remote_wins`, `newest_wins`, `keep_both`), and each
//! resolution option where the conflict stays open — applied, refused with `option_not_applicable`, or
//! refused with `conflict_changed` when a side moved on. One Radicale process serves every world (a
//! calendar each); the data is a dozen small events per world.
//!
//! Identity conflicts cannot be produced against Radicale (it refuses a second item with a UID and a
//! UID change in place with `no-uid-conflict`); they run against the Google emulator
//! (`cloud::identity_conflicts_resolve_on_both_systems`).

use std::sync::Arc;

use calbridge_engine::{EngineConfig, Parsed, Resolve, ResolveFailure, resolve_conflict, storable};
use calbridge_store::*;
use calbridge_sync::resolve::copy_uid;
use calbridge_sync::{ItemState, RemoteId, Uid};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::harness::TestDb;
use crate::scenarios::{World, at, ics, one, prop};
use crate::support::Radicale;

pub const POLICIES: [&str; 5] = [
    "ask",
    "local_wins",
    "remote_wins",
    "newest_wins",
    "keep_both",
];
const OPTIONS: [&str; 6] = [
    "keep_local",
    "keep_remote",
    "keep_both",
    "merge",
    "delete_everywhere",
    "restore",
];

/// A one-hour busy event on `day` at 10:00 UTC (`minute` later), with extra properties.
fn ev(uid: &str, summary: &str, day: i64, minute: u32, extra: &[(&str, &str)]) -> String {
    let start = at(day).replace("T100000Z", &format!("T10{minute:02}00Z"));
    let mut props: Vec<(&str, &str)> = vec![("DTSTART", &start), ("DURATION", "PT1H")];
    props.push(("SUMMARY", summary));
    props.extend_from_slice(extra);
    ics(uid, &props)
}

const OLDER: (&str, &str) = ("LAST-MODIFIED", "20260101T000000Z");
const NEWER: (&str, &str) = ("LAST-MODIFIED", "20260102T000000Z");

impl World {
    /// A local series written as the API writes it (with its occurrence rows, which time detection reads).
    async fn put_local(&self, ical: &str) {
        let parsed = Parsed::from_ical(ical).unwrap();
        let s = storable(&parsed.calendar, &jiff::tz::TimeZone::UTC).unwrap();
        match self.local_by_uid(&s.uid).await {
            None => {
                self.store()
                    .create_series(self.tenant, s.into_new(self.local_calendar))
                    .await
                    .unwrap();
            }
            Some(row) => {
                self.store()
                    .update_series(self.tenant, row.id, row.version, s.into_update())
                    .await
                    .unwrap();
            }
        }
    }

    async fn resolve(
        &self,
        conflict: ConflictId,
        option: &str,
        merged: Option<Value>,
    ) -> Result<Conflict, ResolveFailure> {
        resolve_conflict(Resolve {
            merged: merged.as_ref(),
            ..self.request(conflict, option, &EngineConfig::default())
        })
        .await
    }

    /// The request of `option` on `conflict` through this world's provider (see
    /// [`crate::resolve_request`]).
    fn request<'a>(
        &'a self,
        conflict: ConflictId,
        option: &'a str,
        config: &'a EngineConfig,
    ) -> Resolve<'a> {
        crate::resolve_request(
            self.store(),
            &self.provider,
            self.tenant,
            conflict,
            option,
            config,
        )
    }

    /// A world on a calendar of its own whose conflicts wait for the admin (`ask`).
    async fn asking(db: TestDb, radicale: Arc<Radicale>, name: &str) -> Self {
        Self::on(db, radicale, name, r#"{"conflict_resolution": "ask"}"#).await
    }

    /// The conflict `id` as stored now.
    async fn conflict(&self, id: ConflictId) -> Conflict {
        self.store().get_conflict(self.tenant, id).await.unwrap()
    }

    /// A sync through this world's provider under `config`: no errors, and `counts` (see
    /// [`crate::assert_counts`]).
    async fn synced_with(&self, config: &EngineConfig, counts: &[(&str, u64)]) {
        let report = self.sync_with(&self.provider, config).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        crate::assert_counts(&report, counts);
    }

    /// [`Self::synced_with`] the default config.
    async fn synced(&self, counts: &[(&str, u64)]) {
        self.synced_with(&EngineConfig::default(), counts).await
    }

    /// The provider's item of `uid` (a new event on `day`) edited again ("<uid> remote again").
    async fn remote_edit_again(&self, uid: &str, day: i64) {
        let summary = format!("{uid} remote again");
        self.remote_edit(uid, &ev(uid, &summary, day, 0, &[NEWER]))
            .await;
    }

    /// `conflict`, closed `resolved` with `option`, and its resolution record.
    async fn resolved_with(&self, conflict: ConflictId, option: &str) -> (Conflict, Value) {
        let done = self.conflict(conflict).await;
        assert_eq!(done.state, ConflictState::Resolved);
        let resolution: Value =
            serde_json::from_str(done.resolution_json.as_deref().unwrap()).unwrap();
        assert_eq!(resolution["option"], option, "{resolution}");
        (done, resolution)
    }

    async fn conflict_of(&self, uid: &str) -> Conflict {
        self.all_conflicts()
            .await
            .into_iter()
            .filter(|c| c.event_uid == uid)
            .max_by_key(|c| c.detected_at)
            .unwrap_or_else(|| panic!("no conflict for {uid}"))
    }

    async fn time_conflicts(&self) -> Vec<Conflict> {
        self.store()
            .list_conflicts(
                self.tenant,
                &ConflictFilter {
                    state: None,
                    connection_id: None,
                    link_id: None,
                    kind: Some(ConflictKind::Time),
                },
            )
            .await
            .unwrap()
    }

    async fn audit_actions(&self) -> Vec<String> {
        self.store()
            .list_audit(self.tenant, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

/// The UID `keep_both` gives the copy of a conflict's remote version (policy and option alike).
fn expected_copy(w: &World, conflict: &Conflict) -> String {
    let remote: Value = serde_json::from_str(conflict.remote_json.as_deref().unwrap()).unwrap();
    let state: ItemState = serde_json::from_value(remote["state"].clone()).unwrap();
    copy_uid(
        &Uid::new(&conflict.event_uid),
        &w.link.to_string(),
        &RemoteId::new(remote["id"].as_str().unwrap()),
        &state.snapshot,
    )
}

async fn assert_refused(w: &World, conflict: ConflictId, options: &[&str]) {
    for option in options {
        let err = w.resolve(conflict, option, None).await.unwrap_err();
        assert_eq!(err.code(), "option_not_applicable", "{option}: {err}");
    }
}

/// One world per policy: every conflict kind is provoked in it, then settled by the policy or resolved
/// with each option.
pub async fn policy_world(db: TestDb, radicale: Arc<Radicale>, policy: &str) {
    let options = json!({ "conflict_resolution": policy }).to_string();
    let w = World::on(
        db,
        radicale,
        &format!("m-{}", policy.replace('_', "-")),
        &options,
    )
    .await;

    // --- the events: one per case, each on a day of its own (so only the time cases overlap) ---
    let update_cases = [
        "u-keep_local",
        "u-keep_remote",
        "u-keep_both",
        "u-merge",
        "u-stale",
    ];
    for (i, uid) in update_cases.iter().enumerate() {
        w.put_local(&ev(uid, uid, 1 + i as i64, 0, &[])).await;
    }
    for (i, uid) in ["dl-delete", "dl-restore", "dr-delete", "dr-restore"]
        .iter()
        .enumerate()
    {
        w.put_local(&ev(uid, uid, 8 + i as i64, 0, &[])).await;
    }
    // Time: t-a/t-b overlap; t-free overlaps both but is transparent; the recurring t-d overlaps t-c
    // on its second occurrence only.
    w.put_local(&ev("t-a", "A", 20, 0, &[])).await;
    w.put_local(&ev("t-b", "B", 20, 30, &[])).await;
    w.put_local(&ev("t-free", "Free", 20, 0, &[("TRANSP", "TRANSPARENT")]))
        .await;
    w.put_local(&ev("t-c", "C", 23, 0, &[])).await;
    w.put_local(&ics(
        "t-d",
        &[
            ("DTSTART", &at(22).replace("T100000Z", "T101500Z")),
            ("DURATION", "PT30M"),
            ("RRULE", "FREQ=DAILY;COUNT=3"),
            ("SUMMARY", "Daily"),
        ],
    ))
    .await;
    w.settle().await;

    // --- time conflicts: detected once per pair, the transparent event never ---
    let time = w.time_conflicts().await;
    assert_eq!(time.len(), 2, "{time:?}");
    let uids: Vec<&str> = time.iter().map(|c| c.event_uid.as_str()).collect();
    assert!(
        !time
            .iter()
            .any(|c| c.local_json.as_deref().unwrap().contains("\"Free\""))
    );
    let pair_ab = time
        .iter()
        .find(|c| c.local_json.as_deref().unwrap().contains("\"B\""))
        .unwrap_or_else(|| panic!("{uids:?}"))
        .clone();
    let pair_cd = time
        .iter()
        .find(|c| c.local_json.as_deref().unwrap().contains("\"Daily\""))
        .unwrap()
        .clone();
    assert_eq!(pair_ab.options_json, r#"["keep_both"]"#);
    if policy == "keep_both" {
        // The policy accepts overlaps at once, as the option does.
        assert!(time.iter().all(|c| c.state == ConflictState::Resolved));
        assert!(
            pair_ab
                .resolution_json
                .as_deref()
                .unwrap()
                .contains("keep_both")
        );
        assert_eq!(
            w.resolve(pair_ab.id, "keep_both", None)
                .await
                .unwrap_err()
                .code(),
            "already_resolved"
        );
    } else {
        // The other policies choose between two versions of one event; an overlap waits for a person.
        assert!(time.iter().all(|c| c.state == ConflictState::Open));
        assert_refused(
            &w,
            pair_ab.id,
            &[
                "keep_local",
                "keep_remote",
                "merge",
                "delete_everywhere",
                "restore",
            ],
        )
        .await;
        let accepted = w.resolve(pair_ab.id, "keep_both", None).await.unwrap();
        assert_eq!(accepted.state, ConflictState::Resolved);
    }

    // --- update and deletion conflicts ---
    for (i, uid) in update_cases.iter().enumerate() {
        w.put_local(&ev(uid, &format!("{uid} local"), 1 + i as i64, 0, &[OLDER]))
            .await;
    }
    for (i, uid) in update_cases.iter().enumerate() {
        let mut extra = vec![NEWER];
        if *uid == "u-merge" {
            extra.push(("LOCATION", "Remote room"));
        }
        w.remote_edit(
            uid,
            &ev(uid, &format!("{uid} remote"), 1 + i as i64, 0, &extra),
        )
        .await;
    }
    w.local_delete("dl-delete").await;
    w.local_delete("dl-restore").await;
    w.remote_edit(
        "dl-delete",
        &ev("dl-delete", "dl-delete remote", 8, 0, &[NEWER]),
    )
    .await;
    w.remote_edit(
        "dl-restore",
        &ev("dl-restore", "dl-restore remote", 9, 0, &[NEWER]),
    )
    .await;
    w.put_local(&ev("dr-delete", "dr-delete local", 10, 0, &[OLDER]))
        .await;
    w.put_local(&ev("dr-restore", "dr-restore local", 11, 0, &[OLDER]))
        .await;
    w.remote_delete("dr-delete").await;
    w.remote_delete("dr-restore").await;
    w.synced(&[("conflicts", 9)]).await;

    let conflicts: Vec<(&str, Conflict)> = {
        let mut out = Vec::new();
        for uid in
            update_cases
                .iter()
                .chain(&["dl-delete", "dl-restore", "dr-delete", "dr-restore"])
        {
            out.push((*uid, w.conflict_of(uid).await));
        }
        out
    };
    for (uid, c) in &conflicts {
        let expected = if uid.starts_with('u') {
            ConflictKind::Update
        } else {
            ConflictKind::Deletion
        };
        assert_eq!(c.kind, expected, "{uid}");
    }

    if policy == "ask" {
        resolve_each_option(&w, &conflicts).await;
    } else {
        // Settled by the policy at once: closed, audited, and no longer resolvable.
        for (uid, c) in &conflicts {
            assert_eq!(c.state, ConflictState::Resolved, "{uid}");
            assert!(
                c.resolution_json.as_deref().unwrap().contains(policy),
                "{uid}"
            );
        }
        let err = w
            .resolve(conflicts[0].1.id, "keep_local", None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "already_resolved");
        w.settle().await;
        let local = w.assert_converged().await;
        let expect = |uid: &str, side: &str| format!("{uid} {side}");
        let (update_side, dl_restored, dr_restored) = match policy {
            "local_wins" => ("local", false, true),
            "remote_wins" => ("remote", true, false),
            // The remote edits carry the later LAST-MODIFIED; a local deletion happened now (later
            // still), and a remote deletion has no time, so the local edit is kept.
            "newest_wins" => ("remote", false, true),
            "keep_both" => ("local", true, true),
            other => panic!("{other}"),
        };
        for uid in ["u-keep_local", "u-keep_remote", "u-keep_both", "u-stale"] {
            assert_eq!(one(&local, uid), expect(uid, update_side), "{policy} {uid}");
        }
        for uid in ["dl-delete", "dl-restore"] {
            assert_eq!(local.contains_key(uid), dl_restored, "{policy} {uid}");
            if dl_restored {
                assert_eq!(one(&local, uid), expect(uid, "remote"));
            }
        }
        for uid in ["dr-delete", "dr-restore"] {
            assert_eq!(local.contains_key(uid), dr_restored, "{policy} {uid}");
            if dr_restored {
                assert_eq!(one(&local, uid), expect(uid, "local"));
            }
        }
        let copies: Vec<&String> = local.keys().filter(|k| k.contains("-copy-")).collect();
        if policy == "keep_both" {
            // The loser became a new event, on both sides once the next run synced it out, under the
            // same UID the keep_both option gives it.
            assert_eq!(copies.len(), 5, "{local:?}");
            for (uid, c) in conflicts.iter().filter(|(u, _)| u.starts_with('u')) {
                let copy = expected_copy(&w, c);
                assert_eq!(one(&local, &copy), format!("{uid} remote"), "{copy}");
            }
        } else {
            assert!(copies.is_empty(), "{copies:?}");
        }
    }

    // --- time conflicts close when the overlap disappears, and accepted ones stay quiet ---
    w.put_local(&ev("t-c", "C", 25, 0, &[])).await;
    w.settle().await;
    let time = w.time_conflicts().await;
    assert_eq!(time.len(), 2, "no new time conflict: {time:?}");
    let cd = time.iter().find(|c| c.id == pair_cd.id).unwrap();
    assert_eq!(cd.state, ConflictState::Resolved);
    if policy == "keep_both" {
        assert!(cd.resolution_json.as_deref().unwrap().contains("keep_both"));
    } else {
        assert!(
            cd.resolution_json
                .as_deref()
                .unwrap()
                .contains("overlap_gone"),
            "{cd:?}"
        );
    }
    // Moving an accepted event so it overlaps differently is a new conflict.
    w.put_local(&ev("t-b", "B", 20, 15, &[])).await;
    w.settle().await;
    assert_eq!(w.time_conflicts().await.len(), 3);

    let audit = w.audit_actions().await;
    assert!(audit.iter().any(|a| a == "conflict.detected"));
    if policy == "ask" {
        assert!(
            audit.iter().filter(|a| *a == "conflict.resolved").count() >= 9,
            "{audit:?}"
        );
        assert!(audit.iter().any(|a| a == "conflict.closed"), "{audit:?}");
    } else {
        assert!(audit.iter().any(|a| a == "conflict.settled"), "{audit:?}");
    }
}

/// Under `ask`: every option on every open conflict — applied where it applies, refused elsewhere.
async fn resolve_each_option(w: &World, conflicts: &[(&str, Conflict)]) {
    let id = |uid: &str| conflicts.iter().find(|(u, _)| *u == uid).unwrap().1.id;
    let conflict = |uid: &str| conflicts.iter().find(|(u, _)| *u == uid).unwrap().1.clone();
    for (uid, c) in conflicts {
        let offered: Vec<String> = serde_json::from_str(&c.options_json).unwrap();
        let not_offered: Vec<&str> = OPTIONS
            .iter()
            .copied()
            .filter(|o| !offered.iter().any(|x| x == o))
            .collect();
        assert_refused(w, c.id, &not_offered).await;
        if uid.starts_with('u') {
            assert_eq!(not_offered, ["delete_everywhere", "restore"], "{uid}");
        } else {
            assert_eq!(offered, ["delete_everywhere", "restore"], "{uid}");
        }
    }

    // A side that moved on: refused, nothing written (no copy made, no side overwritten).
    w.remote_edit(
        "u-stale",
        &ev("u-stale", "u-stale remote again", 5, 0, &[NEWER]),
    )
    .await;
    let stale = conflict("u-stale");
    for option in ["keep_both", "keep_local"] {
        let err = w.resolve(stale.id, option, None).await.unwrap_err();
        assert_eq!(err.code(), "conflict_changed", "{option}: {err}");
    }
    assert!(w.local_by_uid(&expected_copy(w, &stale)).await.is_none());
    assert_eq!(one(&w.local_all().await, "u-stale"), "u-stale local");
    assert_eq!(
        one(&w.remote_all().await, "u-stale"),
        "u-stale remote again"
    );

    // keep_local / keep_remote.
    w.resolve(id("u-keep_local"), "keep_local", None)
        .await
        .unwrap();
    w.resolve(id("u-keep_remote"), "keep_remote", None)
        .await
        .unwrap();
    // keep_both: the local version stays on both sides, the remote one becomes a new linked event.
    let resolved = w
        .resolve(id("u-keep_both"), "keep_both", None)
        .await
        .unwrap();
    assert_eq!(resolved.state, ConflictState::Resolved);
    let copy = expected_copy(w, &conflict("u-keep_both"));
    // merge: refused without decisions, or with a conflicting field left undecided.
    let err = w.resolve(id("u-merge"), "merge", None).await.unwrap_err();
    assert_eq!(err.code(), "merged_required");
    let err = w
        .resolve(id("u-merge"), "merge", Some(json!({"location": "Lab"})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_merged", "{err}");
    let merged = w
        .resolve(
            id("u-merge"),
            "merge",
            Some(json!({"summary": "Merged, by hand"})),
        )
        .await
        .unwrap();
    assert!(
        merged
            .resolution_json
            .as_deref()
            .unwrap()
            .contains("write_remote")
    );
    // Deletions.
    w.resolve(id("dl-delete"), "delete_everywhere", None)
        .await
        .unwrap();
    w.resolve(id("dl-restore"), "restore", None).await.unwrap();
    w.resolve(id("dr-delete"), "delete_everywhere", None)
        .await
        .unwrap();
    w.resolve(id("dr-restore"), "restore", None).await.unwrap();

    // Both systems hold the result at once (confirmed by read-back), and the next runs change
    // nothing and record no new conflict.
    let check = |local: &std::collections::BTreeMap<String, Vec<String>>| {
        assert_eq!(one(local, "u-keep_local"), "u-keep_local local");
        assert_eq!(one(local, "u-keep_remote"), "u-keep_remote remote");
        assert_eq!(one(local, "u-keep_both"), "u-keep_both local");
        assert_eq!(one(local, &copy), "u-keep_both remote");
        assert_eq!(one(local, "u-merge"), "Merged\\, by hand");
        assert!(!local.contains_key("dl-delete") && !local.contains_key("dr-delete"));
        assert_eq!(one(local, "dl-restore"), "dl-restore remote");
        assert_eq!(one(local, "dr-restore"), "dr-restore local");
    };
    check(&w.local_all().await);
    let remote = w.remote_all().await;
    check(&remote);
    let (_, merged_remote) = w.remote_item("u-merge").await.unwrap();
    assert_eq!(
        prop(&merged_remote, "LOCATION").as_deref(),
        Some("Remote room")
    );
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for key in [
        "update_local",
        "update_remote",
        "create_local",
        "create_remote",
    ] {
        assert_eq!(report.counts.get(key), None, "{key}: {:?}", report.counts);
    }
    // The stale conflict is superseded: recorded again with both sides' versions of now (neither
    // side's edit overwritten), and that one resolves.
    crate::assert_counts(&report, &[("conflicts_superseded", 1), ("conflicts", 1)]);
    let again = w.conflict_of("u-stale").await;
    assert_ne!(again.id, stale.id);
    assert_eq!(again.state, ConflictState::Open);
    assert!(
        again
            .remote_json
            .as_deref()
            .unwrap()
            .contains("remote again")
    );
    assert_eq!(one(&w.local_all().await, "u-stale"), "u-stale local");
    w.resolve(again.id, "keep_remote", None).await.unwrap();
    w.settle().await;
    let local = w.assert_converged().await;
    check(&local);
    assert_eq!(one(&local, "u-stale"), "u-stale remote again");
}

/// A calendar full of double bookings: 50 busy events at the same hour make 1,225 overlapping pairs.
/// Each detection records at most 500 new ones (the rest deferred, found by later detections), every
/// pair is recorded exactly once however many runs follow (the stored conflicts outnumber a page of
/// 1,000), and after an incremental run only the changed event's conflicts are decided: moving it away
/// closes its 49 and leaves the others alone.
pub async fn a_flood_of_time_conflicts_is_capped_deduplicated_and_scoped(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::on(db, radicale, "flood", "{}").await;
    let n = 50usize;
    let pairs = n * (n - 1) / 2;
    for i in 0..n {
        w.put_local(&ev(
            &format!("f-{i:02}"),
            &format!("Meeting {i}"),
            3,
            (i % 30) as u32,
            &[],
        ))
        .await;
    }
    let first = w.sync().await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    crate::assert_counts(
        &first,
        &[
            ("time_conflicts", 500),
            ("time_conflicts_deferred", (pairs - 500) as u64),
        ],
    );
    // The next runs (the echo of the first run's writes, then full reconciliations) record the rest.
    let mut runs = 0;
    loop {
        let all = every_time_conflict(&w).await;
        if all.len() >= pairs || runs == 6 {
            break;
        }
        w.sync_full(&w.provider, &EngineConfig::default(), runs % 2 == 1)
            .await;
        runs += 1;
    }
    let all = every_time_conflict(&w).await;
    let keys: std::collections::BTreeSet<String> = all.iter().map(time_key).collect();
    assert_eq!(all.len(), pairs, "every pair recorded once");
    assert_eq!(keys.len(), pairs, "no pair recorded twice");
    // More runs, full or not, record nothing again.
    for full in [true, false, true] {
        let report = w
            .sync_full(&w.provider, &EngineConfig::default(), full)
            .await;
        crate::assert_counts(&report, &[("time_conflicts", 0)]);
    }
    assert_eq!(every_time_conflict(&w).await.len(), pairs);

    // One event moves to another day: an incremental run closes its 49 conflicts only.
    w.put_local(&ev("f-07", "Meeting 7", 9, 0, &[])).await;
    let report = w.sync().await;
    crate::assert_counts(
        &report,
        &[
            ("time_conflicts_closed", (n - 1) as u64),
            ("time_conflicts", 0),
        ],
    );
    let open = every_time_conflict(&w)
        .await
        .into_iter()
        .filter(|c| c.state == ConflictState::Open)
        .count();
    assert_eq!(open, pairs - (n - 1));
}

/// Every stored time conflict (past the first page of `list_conflicts`).
async fn every_time_conflict(w: &World) -> Vec<Conflict> {
    let filter = ConflictFilter {
        state: None,
        connection_id: None,
        link_id: None,
        kind: Some(ConflictKind::Time),
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = w
            .store()
            .list_conflicts_after(w.tenant, &filter, after, 1000)
            .await
            .unwrap();
        after = page.last().map(|c| c.id);
        let last = page.len() < 1000;
        all.extend(page);
        if last {
            return all;
        }
    }
}

fn time_key(c: &Conflict) -> String {
    let local: Value = serde_json::from_str(c.local_json.as_deref().unwrap()).unwrap();
    local["key"].as_str().unwrap().to_owned()
}

/// Resolutions killed right after a write (`crash_after_resolution_writes`: after the side effect,
/// before the read-back, the pair's record and the conflict's closing), then synced to quiescence,
/// some with a later edit on the side the resolution did not write, some retried by the admin first.
/// The write-ahead intents make the next sync take the resolution's write as its own: no conflict is
/// recorded again (without them the later edits below meet the resolution's write as an update
/// conflict), nothing is duplicated, the `keep_both` copy is never lost, and both sides end with the
/// resolved content (or the later edit). Every interrupted conflict ends `resolved` with the option
/// the admin chose, and the audit log says who completed it: the sync that recognised its writes, the
/// sync that resumed it once it was old enough, or the admin's retry (never `superseded`, which they
/// were before: the sync took the resolution's own writes for a side moving on).
pub async fn interrupted_resolutions_converge(db: TestDb, radicale: Arc<Radicale>) {
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Setup {
        /// Edited on both sides: an update conflict.
        Update,
        /// Deleted locally, edited remotely.
        DeletedLocally,
        /// Edited locally, deleted remotely.
        DeletedRemotely,
    }
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Then {
        Nothing,
        EditLocal,
        EditRemote,
        /// The admin resolves again at once, with the same option.
        Retry,
    }
    use Setup::*;
    use Then::*;
    // uid, conflict, option, the write after which the process "dies", what happens next.
    let cases: [(&str, Setup, &str, usize, Then); 15] = [
        // keep_local: one write, the provider's item.
        ("i-local", Update, "keep_local", 1, Nothing),
        ("i-local-edit", Update, "keep_local", 1, EditLocal),
        // keep_remote: one write, the local series.
        ("i-remote", Update, "keep_remote", 1, Nothing),
        ("i-remote-edit", Update, "keep_remote", 1, EditRemote),
        ("i-retry", Update, "keep_remote", 1, Retry),
        // keep_both: the local copy, the provider's item, the copy on the provider.
        ("i-both-saved", Update, "keep_both", 1, Nothing),
        ("i-both", Update, "keep_both", 2, Nothing),
        ("i-both-edit", Update, "keep_both", 2, EditLocal),
        ("i-both-copy", Update, "keep_both", 3, Nothing),
        ("i-retry-both", Update, "keep_both", 2, Retry),
        // merge: the local series, then the provider's item.
        ("i-merge", Update, "merge", 1, EditRemote),
        ("i-merge-out", Update, "merge", 2, Nothing),
        ("i-retry-merge", Update, "merge", 1, Retry),
        // Deletions: the provider's item deleted; the provider's item recreated.
        ("d-delete", DeletedLocally, "delete_everywhere", 1, Nothing),
        ("d-restore", DeletedRemotely, "restore", 1, Nothing),
    ];
    let w = World::asking(db, radicale, "interrupted").await;
    // Each event on a day of its own, an hour apart from any other (copies overlap their original:
    // those time conflicts are not what this test is about).
    for (i, (uid, ..)) in cases.iter().enumerate() {
        w.put_local(&ev(uid, uid, 1 + i as i64, 0, &[])).await;
    }
    w.settle().await;
    for (i, (uid, setup, ..)) in cases.iter().enumerate() {
        let day = 1 + i as i64;
        let local = ev(uid, &format!("{uid} local"), day, 0, &[OLDER]);
        let remote = ev(uid, &format!("{uid} remote"), day, 0, &[NEWER]);
        match setup {
            Update => {
                w.put_local(&local).await;
                w.remote_edit(uid, &remote).await;
            }
            DeletedLocally => {
                w.local_delete(uid).await;
                w.remote_edit(uid, &remote).await;
            }
            DeletedRemotely => {
                w.put_local(&local).await;
                w.remote_delete(uid).await;
            }
        }
    }
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.counts.get("conflicts"),
        Some(&cases.len().try_into().unwrap())
    );

    let mut copies = Vec::new();
    let mut ids = std::collections::BTreeMap::new();
    for (i, (uid, setup, option, crash_after, then)) in cases.iter().enumerate() {
        let day = 1 + i as i64;
        let conflict = w.conflict_of(uid).await;
        let kind = match setup {
            Update => ConflictKind::Update,
            _ => ConflictKind::Deletion,
        };
        assert_eq!(conflict.kind, kind, "{uid}");
        ids.insert(conflict.id, *uid);
        if *option == "keep_both" {
            copies.push((*uid, expected_copy(&w, &conflict)));
        }
        let merged = (*option == "merge").then(|| json!({"summary": format!("{uid} merged")}));
        let crash = EngineConfig {
            crash_after_resolution_writes: Some(*crash_after),
            ..EngineConfig::default()
        };
        let err = resolve_conflict(Resolve {
            merged: merged.as_ref(),
            ..w.request(conflict.id, option, &crash)
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), "interrupted", "{uid}: {err}");
        // The decision is on the conflict, which stays open.
        let begun = w.conflict(conflict.id).await;
        assert_eq!(begun.state, ConflictState::Open, "{uid}");
        let resolving: Value =
            serde_json::from_str(begun.resolving_json.as_deref().unwrap()).unwrap();
        assert_eq!(
            (resolving["option"].as_str(), resolving["actor"].as_str()),
            (Some(*option), Some("key:test")),
            "{uid}"
        );
        match then {
            Nothing => {}
            EditLocal => {
                w.put_local(&ev(uid, &format!("{uid} local again"), day, 0, &[]))
                    .await;
            }
            EditRemote => {
                // A field the resolution did not decide: the summary stays the resolved one.
                let summary = match *option {
                    "merge" => format!("{uid} remote"),
                    _ => format!("{uid} remote again"),
                };
                w.remote_edit(
                    uid,
                    &ev(uid, &summary, day, 0, &[NEWER, ("LOCATION", "Annex")]),
                )
                .await;
            }
            Retry => {
                // The sides hold the first attempt's writes: the retry finishes it instead of
                // answering `conflict_changed`.
                let resolved = w
                    .resolve(conflict.id, option, merged.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{uid}: {e}"));
                assert_eq!(resolved.state, ConflictState::Resolved, "{uid}");
            }
        }
    }

    // Syncs right after: every resolution whose writes they recognise is closed as resolved. The one
    // killed before its first recognisable write (`i-both-saved`: only the local copy saved) may still
    // be running for all a sync knows: it stays open and parked, its copy not yet on the provider.
    w.settle().await;
    let sync_conflicts = |all: Vec<Conflict>| -> Vec<Conflict> {
        all.into_iter()
            .filter(|c| c.kind != ConflictKind::Time)
            .collect()
    };
    let open = sync_conflicts(w.open_conflicts().await);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].event_uid, "i-both-saved");
    assert!(open[0].resolving_json.is_some());
    let saved_copy = &copies
        .iter()
        .find(|(uid, _)| *uid == "i-both-saved")
        .unwrap()
        .1;
    assert!(w.local_by_uid(saved_copy).await.is_some());
    assert!(w.remote_item(saved_copy).await.is_none());
    // Once it is older than `resume_resolutions_after`, a sync resumes it as the retry would.
    let resume_now = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..EngineConfig::default()
    };
    w.synced_with(&resume_now, &[("resolutions_completed", 1)])
        .await;
    w.settle().await;

    let open = sync_conflicts(w.open_conflicts().await);
    assert!(open.is_empty(), "conflicts recorded again: {open:?}");
    let all = sync_conflicts(w.all_conflicts().await);
    assert_eq!(all.len(), cases.len(), "no new conflict: {all:?}");
    let audit = w.store().list_audit(w.tenant, None, 1000).await.unwrap();
    assert!(
        !audit.iter().any(|e| e.action == "conflict.superseded"),
        "{audit:?}"
    );
    let sync_actor = format!("sync:{}", w.connection);
    for c in &all {
        let uid = ids[&c.id];
        let (_, _, option, _, then) = cases.iter().find(|(u, ..)| *u == uid).unwrap();
        // Resolved (not superseded) with the option the admin chose, by the admin.
        assert_eq!(c.state, ConflictState::Resolved, "{uid}");
        assert_eq!(c.resolved_by.as_deref(), Some("key:test"), "{uid}");
        let resolution: Value =
            serde_json::from_str(c.resolution_json.as_deref().unwrap()).unwrap();
        assert_eq!(
            resolution["option"].as_str(),
            Some(*option),
            "{uid}: {resolution}"
        );
        // Completed after the interruption: by whom, and how.
        let (by, how) = match (uid, then) {
            (_, Retry) => ("key:test", "resumed"),
            ("i-both-saved", _) => (sync_actor.as_str(), "resumed"),
            _ => (sync_actor.as_str(), "recognised"),
        };
        let interrupted = &resolution["interrupted"];
        assert_eq!(
            (
                interrupted["completed_by"].as_str(),
                interrupted["how"].as_str()
            ),
            (Some(by), Some(how)),
            "{uid}: {resolution}"
        );
        assert_eq!(
            interrupted["decided_by"].as_str(),
            Some("key:test"),
            "{uid}"
        );
        // The audit log holds that completion, once.
        let entries: Vec<&AuditEntry> = audit
            .iter()
            .filter(|e| e.action == "conflict.resolved" && e.subject == c.id.to_string())
            .collect();
        assert_eq!(entries.len(), 1, "{uid}: {entries:?}");
        assert_eq!(entries[0].actor, by, "{uid}");
        let details: Value = serde_json::from_str(&entries[0].details_json).unwrap();
        assert_eq!(details["option"].as_str(), Some(*option), "{uid}");
        assert_eq!(details["interrupted"]["how"].as_str(), Some(how), "{uid}");
    }
    // A retry after a sync finished the resolution: already resolved.
    let done = all.iter().find(|c| ids[&c.id] == "i-local").unwrap();
    let err = w.resolve(done.id, "keep_local", None).await.unwrap_err();
    assert_eq!(err.code(), "already_resolved");

    let both = w.assert_converged().await;
    let expect = |uid: &str| -> Option<String> {
        let (_, _, option, _, then) = cases.iter().find(|(u, ..)| *u == uid).unwrap();
        Some(match (*option, then) {
            ("keep_local" | "keep_both", EditLocal) => format!("{uid} local again"),
            ("keep_local" | "keep_both", _) => format!("{uid} local"),
            ("keep_remote", EditRemote) => format!("{uid} remote again"),
            ("keep_remote", _) => format!("{uid} remote"),
            ("merge", _) => format!("{uid} merged"),
            ("delete_everywhere", _) => return None,
            ("restore", _) => format!("{uid} local"),
            other => panic!("{uid}: {:?}", other.0),
        })
    };
    for (uid, ..) in &cases {
        match expect(uid) {
            Some(summary) => assert_eq!(one(&both, uid), summary, "{uid}"),
            None => assert!(!both.contains_key(*uid), "{uid}: {both:?}"),
        }
    }
    // The field edited remotely after the merged version was written locally merged in too.
    for uid in ["i-merge", "i-remote-edit"] {
        let (_, remote) = w.remote_item(uid).await.unwrap();
        assert_eq!(prop(&remote, "LOCATION").as_deref(), Some("Annex"), "{uid}");
        let local = w.local_by_uid(uid).await.unwrap();
        assert_eq!(
            prop(&local.ical, "LOCATION").as_deref(),
            Some("Annex"),
            "{uid}"
        );
    }
    // keep_both's copy exists once on each side (never lost, never doubled), as the option names it.
    let copy_keys: Vec<&String> = both.keys().filter(|k| k.contains("-copy-")).collect();
    assert_eq!(copy_keys.len(), copies.len(), "{both:?}");
    for (uid, copy) in &copies {
        assert_eq!(one(&both, copy), format!("{uid} remote"), "{copy}");
    }
}

impl World {
    /// Makes the database itself refuse (or accept again) every new time conflict: a real failure of
    /// the store's write inside a detection, on either backend.
    async fn refuse_time_conflicts(&self, refuse: bool) {
        let sql: &[&str] = match (&self.db.raw, refuse) {
            (crate::harness::Raw::Sqlite(_), true) => &[
                "CREATE TRIGGER refuse_time_conflicts BEFORE INSERT ON conflicts \
                 WHEN NEW.kind = 'time' BEGIN SELECT RAISE(ABORT, 'time conflicts refused by the test'); END",
            ],
            (crate::harness::Raw::Sqlite(_), false) => &["DROP TRIGGER refuse_time_conflicts"],
            (crate::harness::Raw::Pg(_), true) => &[
                "CREATE FUNCTION refuse_time_conflicts() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'time conflicts refused by the test'; END $$",
                "CREATE TRIGGER refuse_time_conflicts BEFORE INSERT ON conflicts FOR EACH ROW \
                 WHEN (NEW.kind = 'time') EXECUTE FUNCTION refuse_time_conflicts()",
            ],
            (crate::harness::Raw::Pg(_), false) => &[
                "DROP TRIGGER refuse_time_conflicts ON conflicts",
                "DROP FUNCTION refuse_time_conflicts()",
            ],
        };
        for statement in sql {
            self.db.raw_execute(statement).await.unwrap();
        }
    }
}

/// An incremental run's time detection fails after its cursors advanced (the database refuses the new
/// conflict): the link is marked, later runs detect over the whole window (and keep failing while the
/// database refuses), and the first run after the database accepts again records the overlap the
/// failed run missed, though nothing changed since, and clears the mark. Without the mark the quiet
/// runs would detect nothing until the daily full reconciliation.
pub async fn a_failed_time_detection_is_redone_by_the_next_run(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::on(db, radicale, "redo", "{}").await;
    w.put_local(&ev("r-a", "Standup", 3, 0, &[])).await;
    w.put_local(&ev("r-b", "Review", 4, 0, &[])).await;
    w.settle().await;
    assert!(w.time_conflicts().await.is_empty());
    let link = || async { w.store().get_link(w.tenant, w.link).await.unwrap() };
    let before = link().await;
    assert_eq!(before.time_detection_due, None);

    // r-b moves onto r-a's hour; the run syncs it, commits its cursors, then fails to record the overlap.
    w.refuse_time_conflicts(true).await;
    w.put_local(&ev("r-b", "Review", 3, 30, &[])).await;
    let failed = w.sync().await;
    assert_eq!(failed.status, calbridge_engine::RunStatus::Succeeded);
    assert!(
        failed
            .errors
            .iter()
            .any(|e| e.item == "time" && e.action == "detect_time_conflicts"),
        "{:?}",
        failed.errors
    );
    crate::assert_counts(&failed, &[("update_remote", 1)]);
    let marked = link().await;
    assert!(
        marked.local_cursor > before.local_cursor,
        "the cursors advanced"
    );
    assert_eq!(marked.time_detection_due, Some(failed.run_id));
    assert!(w.time_conflicts().await.is_empty());

    // Until the link is quiet (the echo of the run's own write, then nothing), the database still
    // refuses: each run detects again, fails again and names itself.
    let mut quiet = false;
    for _ in 0..4 {
        let report = w.sync().await;
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.action == "detect_time_conflicts"),
            "a due detection runs on every run: {report:?}"
        );
        assert_eq!(link().await.time_detection_due, Some(report.run_id));
        if report.counts.is_empty() {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the link settles");

    // The database accepts again; nothing changed on either side, yet the next run finds the overlap.
    w.refuse_time_conflicts(false).await;
    let redone = w.sync().await;
    assert!(redone.errors.is_empty(), "{:?}", redone.errors);
    crate::assert_counts(&redone, &[("time_conflicts", 1)]);
    let conflicts = w.time_conflicts().await;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let uids: std::collections::BTreeSet<String> = [
        w.local_by_uid("r-a").await.unwrap().id,
        w.local_by_uid("r-b").await.unwrap().id,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let named: std::collections::BTreeSet<String> =
        [conflicts[0].series_id, conflicts[0].other_series_id]
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
    assert_eq!(named, uids, "the conflict names both events");
    assert_eq!(link().await.time_detection_due, None, "made up for");

    // Nothing is due any more: a quiet run detects nothing and records nothing.
    let after = w.sync().await;
    assert!(
        after.errors.is_empty() && after.counts.is_empty(),
        "{after:?}"
    );
    assert_eq!(w.time_conflicts().await.len(), 1);
}

/// A run killed right after committing its cursors, before its time detection
/// (`crash_after_cursors`): the change it synced is behind the cursors, so the next run does not
/// read it again, yet that run records the overlap the killed run never looked for. Before, nothing
/// marked the link, and the overlap waited for the daily full reconciliation.
pub async fn a_kill_before_the_time_detection_loses_no_conflict(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::on(db, radicale, "detect-kill", "{}").await;
    w.put_local(&ev("k-a", "Standup", 3, 0, &[])).await;
    w.put_local(&ev("k-b", "Review", 4, 0, &[])).await;
    w.settle().await;
    assert!(w.time_conflicts().await.is_empty());
    let link = || async { w.store().get_link(w.tenant, w.link).await.unwrap() };
    let before = link().await;
    assert_eq!(before.time_detection_due, None);

    // k-b moves onto k-a's hour; the run syncs it, commits its cursors and dies.
    w.put_local(&ev("k-b", "Review", 3, 30, &[])).await;
    let kill = EngineConfig {
        crash_after_cursors: true,
        ..EngineConfig::default()
    };
    let err = w.try_sync(&w.provider, &kill, false).await.unwrap_err();
    assert!(err.to_string().contains("crash test"), "{err}");
    let killed = link().await;
    assert!(
        killed.local_cursor > before.local_cursor,
        "the cursors advanced"
    );
    assert!(
        killed.time_detection_due.is_some(),
        "marked with the cursors"
    );
    assert!(w.time_conflicts().await.is_empty());

    // Nothing changed since on either side, yet the next run finds the overlap and clears the mark.
    let next = w.sync().await;
    assert!(next.errors.is_empty(), "{:?}", next.errors);
    assert_eq!(
        next.counts.get("time_conflicts").copied(),
        Some(1),
        "{:?}",
        next.counts
    );
    let conflicts = w.time_conflicts().await;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let named: std::collections::BTreeSet<String> =
        [conflicts[0].series_id, conflicts[0].other_series_id]
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
    let both: std::collections::BTreeSet<String> = [
        w.local_by_uid("k-a").await.unwrap().id,
        w.local_by_uid("k-b").await.unwrap().id,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(named, both, "the conflict names both events");
    assert_eq!(link().await.time_detection_due, None, "made up for");

    // A quiet run after that detects nothing and records nothing.
    w.settle().await;
    assert_eq!(w.time_conflicts().await.len(), 1);
}

/// The World's Radicale provider with a hand on its writes: every update refused as the server does
/// to an account that may not write (`refuse_updates`), or, right before the next update, another
/// person's decision sent on a conflict (`replace_before_update`: the option, answered into
/// `replaced`), racing whatever is writing.
struct Hooked<'a> {
    w: &'a World,
    refuse_updates: bool,
    replace_before_update: std::sync::Mutex<Option<(ConflictId, &'static str)>>,
    replaced: std::sync::Mutex<Option<Result<Conflict, String>>>,
}

impl<'a> Hooked<'a> {
    fn new(w: &'a World) -> Self {
        Self {
            w,
            refuse_updates: false,
            replace_before_update: std::sync::Mutex::new(None),
            replaced: std::sync::Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Hooked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

#[async_trait::async_trait]
impl calbridge_providers::CalendarProvider for Hooked<'_> {
    fn kind(&self) -> calbridge_providers::ProviderKind {
        self.w.provider.kind()
    }
    fn capabilities(&self) -> calbridge_providers::Capabilities {
        self.w.provider.capabilities()
    }
    async fn test_connection(&self) -> calbridge_providers::Diagnosis {
        self.w.provider.test_connection().await
    }
    async fn list_calendars(
        &self,
    ) -> Result<Vec<calbridge_providers::RemoteCalendar>, calbridge_providers::ProviderError> {
        self.w.provider.list_calendars().await
    }
    async fn changes(
        &self,
        calendar: &calbridge_providers::CalendarId,
        cursor: Option<&calbridge_providers::Cursor>,
        window: &calbridge_providers::Window,
        known: &dyn calbridge_providers::HeldVersions,
    ) -> Result<calbridge_providers::ChangeSet, calbridge_providers::ProviderError> {
        self.w
            .provider
            .changes(calendar, cursor, window, known)
            .await
    }
    async fn read(
        &self,
        calendar: &calbridge_providers::CalendarId,
        ids: &[calbridge_providers::RemoteId],
    ) -> Result<Vec<calbridge_providers::ReadItem>, calbridge_providers::ProviderError> {
        self.w.provider.read(calendar, ids).await
    }
    async fn create(
        &self,
        calendar: &calbridge_providers::CalendarId,
        key: &calbridge_providers::CreateKey,
        content: &calbridge_providers::ItemContent,
    ) -> Result<calbridge_providers::Written, calbridge_providers::ProviderError> {
        self.w.provider.create(calendar, key, content).await
    }
    async fn update(
        &self,
        calendar: &calbridge_providers::CalendarId,
        id: &calbridge_providers::RemoteId,
        if_match: &calbridge_providers::Etag,
        content: &calbridge_providers::ItemContent,
    ) -> Result<calbridge_providers::Written, calbridge_providers::ProviderError> {
        if self.refuse_updates {
            return Err(calbridge_providers::ProviderError::Forbidden {
                detail: "PUT refused by the test".into(),
            });
        }
        let race = self.replace_before_update.lock().unwrap().take();
        if let Some((conflict, option)) = race {
            let answer = self
                .w
                .resolve(conflict, option, None)
                .await
                .map_err(|e| e.code().to_owned());
            *self.replaced.lock().unwrap() = Some(answer);
        }
        self.w
            .provider
            .update(calendar, id, if_match, content)
            .await
    }
    async fn delete(
        &self,
        calendar: &calbridge_providers::CalendarId,
        id: &calbridge_providers::RemoteId,
        if_match: &calbridge_providers::Etag,
    ) -> Result<(), calbridge_providers::ProviderError> {
        self.w.provider.delete(calendar, id, if_match).await
    }
    async fn free_busy(
        &self,
        calendar: &calbridge_providers::CalendarId,
        window: &calbridge_providers::Window,
    ) -> Result<Vec<calbridge_providers::BusyPeriod>, calbridge_providers::ProviderError> {
        self.w.provider.free_busy(calendar, window).await
    }
}

impl World {
    /// An update conflict on each `uid` (a new event on its `day`): edited locally ("<uid> local")
    /// and remotely ("<uid> remote"), recorded by one sync.
    async fn update_conflicts(&self, events: &[(&str, i64)]) -> Vec<Conflict> {
        for (uid, day) in events {
            self.put_local(&ev(uid, uid, *day, 0, &[])).await;
        }
        self.settle().await;
        for (uid, day) in events {
            self.put_local(&ev(uid, &format!("{uid} local"), *day, 0, &[OLDER]))
                .await;
            self.remote_edit(uid, &ev(uid, &format!("{uid} remote"), *day, 0, &[NEWER]))
                .await;
        }
        self.synced(&[("conflicts", events.len() as u64)]).await;
        let mut out = Vec::new();
        for (uid, _) in events {
            out.push(self.conflict_of(uid).await);
        }
        out
    }

    /// The audit entries of `action` about `conflict`.
    async fn audit_of(&self, conflict: ConflictId, action: &str) -> Vec<AuditEntry> {
        self.store()
            .list_audit(self.tenant, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == action && e.subject == conflict.to_string())
            .collect()
    }
}

/// A `merge` writes the merged version locally, then the provider refuses its PUT (403): the
/// conflict stays open with the decision, and the pair's row keeps both writes recognisable (the
/// remote write's intent used to replace the local write's, so the next sync took the local write
/// for a side moving on and superseded the conflict). The next sync recognises the local write,
/// closes the conflict `resolved` with `merge` (one completion audit entry, nothing superseded)
/// and writes the merged version out; a field edited remotely meanwhile merges in.
pub async fn a_merge_whose_put_is_refused_is_finished_by_the_next_sync(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::asking(db, radicale, "refused-merge").await;
    let uid = "m-refused";
    let conflict = w.update_conflicts(&[(uid, 2)]).await.remove(0);
    let remote_id = serde_json::from_str::<Value>(conflict.remote_json.as_deref().unwrap())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let refusing = Hooked {
        refuse_updates: true,
        ..Hooked::new(&w)
    };
    let merged = json!({"summary": "m merged"});
    let err = resolve_conflict(Resolve {
        provider: Some(&refusing),
        merged: Some(&merged),
        ..w.request(conflict.id, "merge", &EngineConfig::default())
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), "provider_unavailable", "{err}");
    let open = w.conflict(conflict.id).await;
    assert_eq!(open.state, ConflictState::Open);
    assert!(open.resolving_json.is_some());
    let local = w.local_by_uid(uid).await.unwrap();
    assert_eq!(prop(&local.ical, "SUMMARY").as_deref(), Some("m merged"));
    // Both writes stay recognisable on the pair's row: the remote one's intent, and the local one's
    // kept beside it.
    let row = w
        .store()
        .get_mapping(w.tenant, w.link, &remote_id)
        .await
        .unwrap()
        .unwrap();
    let base: Value = serde_json::from_str(row.base_json.as_deref().unwrap()).unwrap();
    assert_eq!(base["intent"]["side"], "remote", "{base}");
    assert_eq!(base["earlier"]["side"], "local", "{base}");
    // Someone edits a field nobody decided on the provider meanwhile.
    w.remote_edit(
        uid,
        &ev(
            uid,
            &format!("{uid} remote"),
            2,
            0,
            &[NEWER, ("LOCATION", "Annex")],
        ),
    )
    .await;

    // The next sync (the decision is not old enough to be resumed) finishes it.
    w.synced(&[
        ("resolutions_completed", 1),
        ("conflicts_superseded", 0),
        ("conflicts", 0),
    ])
    .await;
    w.settle().await;
    let (done, resolution) = w.resolved_with(conflict.id, "merge").await;
    assert_eq!(done.resolved_by.as_deref(), Some("key:test"));
    assert_eq!(
        resolution["interrupted"]["how"], "recognised",
        "{resolution}"
    );
    assert_eq!(w.audit_of(conflict.id, "conflict.resolved").await.len(), 1);
    assert!(
        w.audit_of(conflict.id, "conflict.superseded")
            .await
            .is_empty()
    );
    assert!(w.open_conflicts().await.is_empty());
    let both = w.assert_converged().await;
    assert_eq!(one(&both, uid), "m merged");
    let (_, remote) = w.remote_item(uid).await.unwrap();
    assert_eq!(prop(&remote, "LOCATION").as_deref(), Some("Annex"));
}

/// Abandoned `keep_both` decisions undo what they did only locally. Three conflicts:
/// - `a-saved`: killed after saving its local copy, then the provider's item edited again: the next
///   sync supersedes the conflict and abandons the decision, and the copy (never exported) is
///   deleted; the audit entry says so. The admin picks `keep_both` again on the conflict recorded
///   anew: one copy in the end (of the version it keeps), not two.
/// - `a-exported`: killed after its copy was created on the provider, then the provider's item edited
///   again: superseded, and the copy, a real event by then, is kept (audited as kept).
/// - `a-race`: a stale `keep_both` (past `resume_resolutions_after`) that a sync resumes while
///   another person replaces it with `keep_local` at that very moment (right before the sync's
///   overwrite): the sync took the decision up first (compare-and-set on the conflict's
///   `resolving`), so the replacement is told `resolution_in_progress` and removes nothing; the
///   sync finishes `keep_both`, its copy once on each side.
pub async fn abandoned_keep_both_copies_are_undone_unless_exported(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::asking(db, radicale, "abandoned").await;
    let recorded = w
        .update_conflicts(&[("a-saved", 3), ("a-exported", 5)])
        .await;
    let (saved, exported) = (&recorded[0], &recorded[1]);
    // a-saved: only the local copy saved, then the provider moves on.
    let saved_copy = expected_copy(&w, saved);
    w.keep_both_killed_after(saved.id, 1).await;
    assert!(w.local_by_uid(&saved_copy).await.is_some());
    w.remote_edit_again("a-saved", 3).await;
    // a-exported: the copy created on the provider, then the provider's item edited over the
    // resolution's overwrite.
    let exported_copy = expected_copy(&w, exported);
    w.keep_both_killed_after(exported.id, 3).await;
    assert!(w.remote_item(&exported_copy).await.is_some());
    w.remote_edit_again("a-exported", 5).await;

    w.synced(&[("conflicts_superseded", 2)]).await;
    // The saved copy is gone locally and never reached the provider; the exported one stays.
    assert!(w.local_by_uid(&saved_copy).await.is_none());
    let copy = w.abandoned_copy(saved.id).await;
    assert_eq!(copy["fate"], "deleted", "{copy}");
    assert_eq!(copy["uid"], saved_copy.as_str(), "{copy}");
    assert!(w.local_by_uid(&exported_copy).await.is_some());
    let copy = w.abandoned_copy(exported.id).await;
    assert_eq!(copy["fate"], "kept", "{copy}");
    assert!(copy["why"].as_str().unwrap().contains("exported"), "{copy}");
    w.settle().await;
    assert!(w.remote_item(&saved_copy).await.is_none());
    assert!(w.remote_item(&exported_copy).await.is_some());

    // Each conflict is recorded again; the admin decides once more.
    let again = w.conflict_of("a-saved").await;
    assert_ne!(again.id, saved.id);
    assert_eq!(again.state, ConflictState::Open);
    let new_copy = expected_copy(&w, &again);
    assert_ne!(new_copy, saved_copy);
    w.resolve(again.id, "keep_both", None).await.unwrap();
    let again = w.conflict_of("a-exported").await;
    assert_ne!(again.id, exported.id);
    w.resolve(again.id, "keep_local", None).await.unwrap();
    w.settle().await;
    let both = w.assert_converged().await;
    let copies_of = |uid: &str| {
        both.keys()
            .filter(|k| k.starts_with(&format!("{uid}-copy-")))
            .cloned()
            .collect::<Vec<_>>()
    };
    // One copy each: a-saved's of the version it kept now, a-exported's from the first decision.
    assert_eq!(copies_of("a-saved"), [new_copy.as_str()], "{both:?}");
    assert_eq!(one(&both, &new_copy), "a-saved remote again");
    assert_eq!(one(&both, "a-saved"), "a-saved local");
    assert_eq!(
        copies_of("a-exported"),
        [exported_copy.as_str()],
        "{both:?}"
    );
    assert_eq!(one(&both, &exported_copy), "a-exported remote");
    assert_eq!(one(&both, "a-exported"), "a-exported local");
    // The deleted copy's deletion never went out (it was never exported): no tombstone of it.
    let tombstones = w
        .store()
        .list_tombstones(w.tenant, Some(w.link))
        .await
        .unwrap();
    assert!(
        !tombstones
            .iter()
            .any(|t| t.uid.as_deref() == Some(saved_copy.as_str())),
        "{tombstones:?}"
    );

    // a-race: a stale keep_both (its copy saved), resumed by a sync while someone replaces it.
    let race = w.update_conflicts(&[("a-race", 7)]).await.remove(0);
    let race_copy = expected_copy(&w, &race);
    w.keep_both_killed_after(race.id, 1).await;
    w.age_decision(race.id).await;
    let racing = Hooked::new(&w);
    *racing.replace_before_update.lock().unwrap() = Some((race.id, "keep_local"));
    let report = w.sync_with(&racing, &EngineConfig::default()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let answer = racing
        .replaced
        .lock()
        .unwrap()
        .take()
        .expect("the replacement ran");
    assert_eq!(answer.unwrap_err(), "resolution_in_progress");
    crate::assert_counts(&report, &[("resolutions_completed", 1)]);
    w.resolved_with(race.id, "keep_both").await;
    assert!(
        w.audit_of(race.id, "conflict.resolution_abandoned")
            .await
            .is_empty()
    );
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(one(&both, &race_copy), "a-race remote");
    assert_eq!(one(&both, "a-race"), "a-race local");
}

impl World {
    /// Resolves `conflict` with `option` under `config` (its crash knobs), as `key:test`.
    async fn resolve_with(
        &self,
        conflict: ConflictId,
        option: &str,
        config: &EngineConfig,
    ) -> Result<Conflict, ResolveFailure> {
        resolve_conflict(self.request(conflict, option, config)).await
    }

    /// `option` on `conflict` under `config`, which kills it (`interrupted`).
    async fn resolve_killed(&self, conflict: ConflictId, option: &str, config: &EngineConfig) {
        let err = self
            .resolve_with(conflict, option, config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "interrupted", "{err}");
    }

    /// `keep_both` on `conflict`, killed right after its `writes`-th write.
    async fn keep_both_killed_after(&self, conflict: ConflictId, writes: usize) {
        let crash = EngineConfig {
            crash_after_resolution_writes: Some(writes),
            ..EngineConfig::default()
        };
        self.resolve_killed(conflict, "keep_both", &crash).await;
    }

    /// Makes the decision in progress on `conflict` look begun 11 minutes ago (past
    /// `resume_resolutions_after`: it has stopped, and another decision may replace it).
    async fn age_decision(&self, conflict: ConflictId) {
        let c = self.conflict(conflict).await;
        let mut record: Value = serde_json::from_str(c.resolving_json.as_deref().unwrap()).unwrap();
        record["started_at"] =
            json!((Timestamp::now() - jiff::SignedDuration::from_mins(11)).to_string());
        self.store()
            .set_conflict_resolving(self.tenant, conflict, Some(&record.to_string()))
            .await
            .unwrap();
    }

    /// The `copy` of the one `conflict.resolution_abandoned` entry of `conflict`.
    async fn abandoned_copy(&self, conflict: ConflictId) -> Value {
        let entries = self
            .audit_of(conflict, "conflict.resolution_abandoned")
            .await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        let details: Value = serde_json::from_str(&entries[0].details_json).unwrap();
        assert_eq!(details["option"], "keep_both", "{details}");
        assert_eq!(details["decided_by"], "key:test", "{details}");
        details["copy"].clone()
    }
}

/// A process killed right after taking a conflict's decision over by compare-and-set
/// (`crash_after_resolution_fence`), before it removed the `keep_both` copy of the decision it gave
/// up: the removal still happens, and no sync exports the copy meanwhile.
/// - `k-replaced`: a stale `keep_both` (its copy saved) replaced with `keep_local` by a request killed
///   right after its swap. The new decision names the one it replaced, so the next sync keeps the
///   copy parked, and the sync that resumes `keep_local` first removes the copy (audited once), then
///   finishes. Before, the copy was unparked at once and the next sync exported it as an event.
/// - `k-superseded`: `keep_both` (copy saved), then the provider's item edited again; the superseding
///   sync is killed right after taking the decision up to give it up. The decision stays on the
///   conflict until the copy is gone, so the next sync supersedes it again and removes the copy.
///   Before, the decision was taken off first, and the next sync exported the copy.
pub async fn a_copy_outlives_no_kill_of_whoever_gives_its_decision_up(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::asking(db, radicale, "fence-kill").await;
    let fence_kill = EngineConfig {
        crash_after_resolution_fence: true,
        ..EngineConfig::default()
    };
    let recorded = w
        .update_conflicts(&[("k-replaced", 3), ("k-superseded", 5)])
        .await;
    let (replaced, superseded) = (&recorded[0], &recorded[1]);

    // k-replaced: keep_both saved its copy and stopped; keep_local replaces it and is killed.
    let replaced_copy = expected_copy(&w, replaced);
    w.keep_both_killed_after(replaced.id, 1).await;
    w.age_decision(replaced.id).await;
    w.resolve_killed(replaced.id, "keep_local", &fence_kill)
        .await;
    let taken = w.conflict(replaced.id).await;
    let record: Value = serde_json::from_str(taken.resolving_json.as_deref().unwrap()).unwrap();
    assert_eq!(record["option"], "keep_local", "{record}");
    assert!(w.local_by_uid(&replaced_copy).await.is_some());
    // k-superseded: keep_both saved its copy and stopped; the provider moves on.
    let superseded_copy = expected_copy(&w, superseded);
    w.keep_both_killed_after(superseded.id, 1).await;
    w.remote_edit_again("k-superseded", 5).await;

    // The superseding sync dies right after taking k-superseded's decision up.
    let report = w.sync_with(&w.provider, &fence_kill).await;
    assert_eq!(
        report.status,
        calbridge_engine::RunStatus::Partial,
        "{report:?}"
    );
    assert!(w.remote_item(&replaced_copy).await.is_none());
    assert!(w.remote_item(&superseded_copy).await.is_none());

    // The next sync: k-replaced's copy stays parked (the new decision is fresh, not resumed yet);
    // k-superseded is superseded again and its copy removed.
    w.synced(&[("conflicts_superseded", 1)]).await;
    assert!(w.remote_item(&replaced_copy).await.is_none(), "exported");
    assert!(w.local_by_uid(&replaced_copy).await.is_some());
    assert!(w.local_by_uid(&superseded_copy).await.is_none());
    assert!(w.remote_item(&superseded_copy).await.is_none(), "exported");
    let copy = w.abandoned_copy(superseded.id).await;
    assert_eq!(copy["fate"], "deleted", "{copy}");

    // keep_local, once old enough, is resumed: the copy goes first, then keep_local is written.
    let resume_now = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..EngineConfig::default()
    };
    w.synced_with(&resume_now, &[("resolutions_completed", 1)])
        .await;
    let (_, resolution) = w.resolved_with(replaced.id, "keep_local").await;
    assert_eq!(
        resolution["replaced"]["option"], "keep_both",
        "{resolution}"
    );
    assert_eq!(
        resolution["replaced"]["copy"]["fate"], "deleted",
        "{resolution}"
    );
    let copy = w.abandoned_copy(replaced.id).await;
    assert_eq!(copy["fate"], "deleted", "{copy}");
    assert_eq!(copy["uid"], replaced_copy.as_str(), "{copy}");
    assert!(w.local_by_uid(&replaced_copy).await.is_none());

    // k-superseded was recorded anew; the admin keeps the local version.
    let again = w.conflict_of("k-superseded").await;
    assert_ne!(again.id, superseded.id);
    w.resolve(again.id, "keep_local", None).await.unwrap();
    w.settle().await;
    let both = w.assert_converged().await;
    assert!(
        !both.keys().any(|k| k.contains("-copy-")),
        "a removed copy came back: {both:?}"
    );
    assert_eq!(one(&both, "k-replaced"), "k-replaced local");
    assert_eq!(one(&both, "k-superseded"), "k-superseded local");
}

/// A `keep_both` copy saved, then parked by a sync (which read its creation then and will not read
/// it again), is exported by an incremental sync once its decision lets it go:
/// - `p-recognised`: the retry of `keep_both` overwrites the provider's item and is killed; the next
///   sync recognises that write and closes the conflict, and exports the copy in the same run;
/// - `p-killed`: the same, but that sync is killed before its first action: the next one exports it;
/// - `p-edited`: someone edits the copy before the parking sync, then the provider's item is edited
///   again: the superseding sync gives the decision up and keeps the copy (it is theirs), and
///   exports it.
///
/// Before, each copy stayed local until the next full sync.
pub async fn a_parked_copy_is_exported_once_its_decision_lets_it_go(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::asking(db, radicale, "parked-copy").await;
    let recorded = w
        .update_conflicts(&[("p-recognised", 2), ("p-killed", 4), ("p-edited", 6)])
        .await;
    let copies: Vec<String> = recorded.iter().map(|c| expected_copy(&w, c)).collect();
    for c in &recorded {
        w.keep_both_killed_after(c.id, 1).await;
    }
    w.put_local(&ev(&copies[2], "p-edited copy mine", 6, 0, &[]))
        .await;
    // The parking sync: every decision is in progress, every copy stays local.
    w.synced(&[]).await;
    for copy in &copies {
        assert!(w.remote_item(copy).await.is_none(), "{copy} exported");
    }

    // p-recognised: the retry's overwrite, recognised by the next sync, which exports the copy.
    w.keep_both_killed_after(recorded[0].id, 1).await;
    w.synced(&[("resolutions_completed", 1)]).await;
    assert_eq!(
        w.conflict(recorded[0].id).await.state,
        ConflictState::Resolved
    );
    assert!(w.remote_item(&copies[0]).await.is_some(), "not exported");

    // p-killed: the same, and the recognising sync dies before its first action.
    w.keep_both_killed_after(recorded[1].id, 1).await;
    let killed = EngineConfig {
        crash_after_actions: Some(0),
        ..EngineConfig::default()
    };
    let report = w.sync_with(&w.provider, &killed).await;
    assert_eq!(
        report.status,
        calbridge_engine::RunStatus::Interrupted,
        "{report:?}"
    );
    assert_eq!(
        w.conflict(recorded[1].id).await.state,
        ConflictState::Resolved
    );
    assert!(w.remote_item(&copies[1]).await.is_none());
    w.synced(&[]).await;
    assert!(w.remote_item(&copies[1]).await.is_some(), "not exported");

    // p-edited: superseded; the copy someone edited is kept, and exported.
    w.remote_edit_again("p-edited", 6).await;
    w.synced(&[("conflicts_superseded", 1)]).await;
    let copy = w.abandoned_copy(recorded[2].id).await;
    assert_eq!(copy["fate"], "kept", "{copy}");
    assert!(w.remote_item(&copies[2]).await.is_some(), "not exported");

    let again = w.conflict_of("p-edited").await;
    w.resolve(again.id, "keep_local", None).await.unwrap();
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(one(&both, &copies[0]), "p-recognised remote");
    assert_eq!(one(&both, &copies[1]), "p-killed remote");
    assert_eq!(one(&both, &copies[2]), "p-edited copy mine");
    assert_eq!(
        both.keys().filter(|k| k.contains("-copy-")).count(),
        3,
        "{both:?}"
    );
    for uid in ["p-recognised", "p-killed", "p-edited"] {
        assert_eq!(one(&both, uid), format!("{uid} local"), "{uid}");
    }
}

impl World {
    /// The details of every `conflict.resolution_abandoned` entry of `conflict`, oldest first.
    async fn abandoned_entries(&self, conflict: ConflictId) -> Vec<Value> {
        let mut entries = self
            .audit_of(conflict, "conflict.resolution_abandoned")
            .await;
        entries.sort_by_key(|e| e.seq);
        entries
            .iter()
            .map(|e| serde_json::from_str(&e.details_json).unwrap())
            .collect()
    }
}

/// A chain of replacements, each killed right after its swap (so before it gave up the decision it
/// replaced): `keep_both` (its copy saved), replaced by `keep_local`, replaced by `merge`, replaced
/// by `keep_remote`, each once the one before is stale. The last gives all three up: the copy is
/// deleted and each decision leaves one `conflict.resolution_abandoned` entry, oldest first, each
/// naming the decision that replaced it, the copy's fate on `keep_both`'s. Before, a replacement
/// carried along the copy of the decision it had not given up yet but not that decision itself, so
/// `keep_both` and `keep_local` were never audited.
pub async fn a_chain_of_replacements_audits_every_decision_given_up(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::asking(db, radicale, "chain").await;
    let fence_kill = EngineConfig {
        crash_after_resolution_fence: true,
        ..EngineConfig::default()
    };
    let chain = w.update_conflicts(&[("g-chain", 3)]).await.remove(0);
    let copy = expected_copy(&w, &chain);
    w.keep_both_killed_after(chain.id, 1).await;
    assert!(w.local_by_uid(&copy).await.is_some());
    w.age_decision(chain.id).await;
    w.resolve_killed(chain.id, "keep_local", &fence_kill).await;
    w.age_decision(chain.id).await;
    let merged = json!({"summary": "g-chain merged"});
    let err = resolve_conflict(Resolve {
        merged: Some(&merged),
        ..w.request(chain.id, "merge", &fence_kill)
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), "interrupted", "{err}");
    w.age_decision(chain.id).await;
    // Nothing was given up yet: the copy is still there, no entry written.
    assert!(w.local_by_uid(&copy).await.is_some());
    assert!(w.abandoned_entries(chain.id).await.is_empty());

    w.resolve(chain.id, "keep_remote", None).await.unwrap();
    let (_, resolution) = w.resolved_with(chain.id, "keep_remote").await;
    assert_eq!(resolution["replaced"]["option"], "merge", "{resolution}");
    assert!(w.local_by_uid(&copy).await.is_none());
    let entries = w.abandoned_entries(chain.id).await;
    let given_up: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["option"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        given_up,
        [
            ("keep_both", "replaced by `keep_local`"),
            ("keep_local", "replaced by `merge`"),
            ("merge", "replaced by `keep_remote`"),
        ],
        "{entries:?}"
    );
    for entry in &entries {
        assert_eq!(entry["decided_by"], "key:test", "{entry}");
    }
    assert_eq!(entries[0]["copy"]["fate"], "deleted", "{entries:?}");
    assert_eq!(entries[0]["copy"]["uid"], copy.as_str(), "{entries:?}");
    assert!(entries[1]["copy"].is_null(), "{entries:?}");
    assert!(entries[2]["copy"].is_null(), "{entries:?}");

    // Nothing of the given-up decisions comes back with the next syncs.
    w.settle().await;
    assert_eq!(w.abandoned_entries(chain.id).await.len(), 3);
    let both = w.assert_converged().await;
    assert!(!both.keys().any(|k| k.contains("-copy-")), "{both:?}");
    assert_eq!(one(&both, "g-chain"), "g-chain remote");
}

/// A process killed right after marking a decision given up on the conflict
/// (`crash_after_giving_up`): its `conflict.resolution_abandoned` entry is there exactly once,
/// whoever acts next.
/// - `u-replaced`: a stale `keep_both` (its copy saved) replaced with `keep_local` by a request
///   killed right after marking `keep_both` given up; a sync that finds `keep_local` fresh leaves
///   it, the one that resumes it finishes it.
/// - `u-superseded`: `keep_both` (its copy saved), then the provider's item edited again; the
///   superseding sync is killed right after taking the decision off; the next sync supersedes the
///   conflict, which has no decision left to give up.
///
/// Before, the mark and the entry were two writes, and a kill between them lost the entry: whoever
/// came next found the decision given up and wrote none.
pub async fn a_kill_after_giving_a_decision_up_loses_no_audit_entry(
    db: TestDb,
    radicale: Arc<Radicale>,
) {
    let w = World::asking(db, radicale, "given-up-kill").await;
    let give_up_kill = EngineConfig {
        crash_after_giving_up: true,
        ..EngineConfig::default()
    };
    let recorded = w
        .update_conflicts(&[("u-replaced", 3), ("u-superseded", 5)])
        .await;
    let (replaced, superseded) = (&recorded[0], &recorded[1]);

    // u-replaced: keep_local gives keep_both up and dies right after marking it so.
    let replaced_copy = expected_copy(&w, replaced);
    w.keep_both_killed_after(replaced.id, 1).await;
    w.age_decision(replaced.id).await;
    let err = w
        .resolve_with(replaced.id, "keep_local", &give_up_kill)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("crash test"), "{err}");
    let taken = w.conflict(replaced.id).await;
    let record: Value = serde_json::from_str(taken.resolving_json.as_deref().unwrap()).unwrap();
    assert_eq!(record["option"], "keep_local", "{record}");
    assert_eq!(record["replaced"]["abandoned"], true, "{record}");
    assert!(w.local_by_uid(&replaced_copy).await.is_none());

    // u-superseded: the superseding sync dies right after taking keep_both off the conflict.
    let superseded_copy = expected_copy(&w, superseded);
    w.keep_both_killed_after(superseded.id, 1).await;
    w.remote_edit_again("u-superseded", 5).await;
    let report = w.sync_with(&w.provider, &give_up_kill).await;
    assert_eq!(
        report.status,
        calbridge_engine::RunStatus::Partial,
        "{report:?}"
    );
    let open = w.conflict(superseded.id).await;
    assert_eq!(open.state, ConflictState::Open);
    assert!(open.resolving_json.is_none());
    assert!(w.local_by_uid(&superseded_copy).await.is_none());

    // The next sync supersedes u-superseded; u-replaced's keep_local is fresh and waits.
    w.synced(&[("conflicts_superseded", 1), ("resolutions_completed", 0)])
        .await;
    // Once old enough, keep_local is resumed and finished; keep_both is not given up again.
    let resume_now = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..EngineConfig::default()
    };
    w.synced_with(&resume_now, &[("resolutions_completed", 1)])
        .await;
    let (_, resolution) = w.resolved_with(replaced.id, "keep_local").await;
    assert_eq!(
        resolution["replaced"]["copy"]["fate"], "deleted",
        "{resolution}"
    );
    for conflict in [replaced.id, superseded.id] {
        let copy = w.abandoned_copy(conflict).await;
        assert_eq!(copy["fate"], "deleted", "{copy}");
    }

    let again = w.conflict_of("u-superseded").await;
    assert_ne!(again.id, superseded.id);
    w.resolve(again.id, "keep_local", None).await.unwrap();
    w.settle().await;
    for conflict in [replaced.id, superseded.id] {
        w.abandoned_copy(conflict).await;
    }
    let both = w.assert_converged().await;
    assert!(!both.keys().any(|k| k.contains("-copy-")), "{both:?}");
    assert_eq!(one(&both, "u-replaced"), "u-replaced local");
    assert_eq!(one(&both, "u-superseded"), "u-superseded local");
}

/// A process killed right after closing a conflict as resolved (`crash_after_closing`): its
/// `conflict.resolved` entry is there exactly once, whoever closed it.
/// - `r-request`: `keep_local` by a request killed right after the close.
/// - `r-recognised`: `keep_local` killed after its write, then a sync that recognises the write,
///   closes the conflict and is killed right after.
/// - `r-resumed`: `keep_both` killed after saving its copy, then a sync that resumes it (past
///   `resume_resolutions_after`), killed right after the close.
///
/// Before, the close and the entry were two writes, and a kill between them lost the entry: the
/// conflict was closed and the audit log never said so.
pub async fn a_kill_after_closing_loses_no_resolved_entry(db: TestDb, radicale: Arc<Radicale>) {
    let w = World::asking(db, radicale, "closed-kill").await;
    let close_kill = EngineConfig {
        crash_after_closing: true,
        ..EngineConfig::default()
    };
    let recorded = w
        .update_conflicts(&[("r-request", 3), ("r-recognised", 4), ("r-resumed", 5)])
        .await;
    let (request, recognised, resumed) = (&recorded[0], &recorded[1], &recorded[2]);

    // r-request: the request dies right after closing the conflict.
    w.resolve_killed(request.id, "keep_local", &close_kill)
        .await;
    w.resolved_with(request.id, "keep_local").await;

    // r-recognised: the sync that recognises keep_local's write dies right after closing it.
    let write_kill = EngineConfig {
        crash_after_resolution_writes: Some(1),
        ..EngineConfig::default()
    };
    w.resolve_killed(recognised.id, "keep_local", &write_kill)
        .await;
    w.keep_both_killed_after(resumed.id, 1).await;
    let report = w.sync_with(&w.provider, &close_kill).await;
    assert_eq!(
        report.status,
        calbridge_engine::RunStatus::Partial,
        "{report:?}"
    );
    w.resolved_with(recognised.id, "keep_local").await;

    // r-resumed: the sync resuming keep_both dies right after closing it (a resumption stopped
    // inside a run is counted as not resumed).
    let resume_kill = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..close_kill.clone()
    };
    let report = w.sync_with(&w.provider, &resume_kill).await;
    crate::assert_counts(&report, &[("resolutions_not_resumed", 1)]);
    w.resolved_with(resumed.id, "keep_both").await;

    w.settle().await;
    for (conflict, how) in [
        (request.id, None),
        (recognised.id, Some("recognised")),
        (resumed.id, Some("resumed")),
    ] {
        let entries = w.audit_of(conflict, "conflict.resolved").await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        let details: Value = serde_json::from_str(&entries[0].details_json).unwrap();
        assert_eq!(
            details["interrupted"]["how"].as_str(),
            how,
            "{conflict}: {details}"
        );
    }
    let both = w.assert_converged().await;
    assert_eq!(one(&both, "r-request"), "r-request local");
    assert_eq!(one(&both, "r-recognised"), "r-recognised local");
    assert_eq!(one(&both, "r-resumed"), "r-resumed local");
    assert_eq!(one(&both, &expected_copy(&w, resumed)), "r-resumed remote");
}

/// A process killed right after deleting the `keep_both` copy of a decision it gives up, before
/// marking the decision given up (`crash_after_removing_copy`): whoever gives it up next writes
/// the one `conflict.resolution_abandoned` entry, and it says the copy was deleted.
/// - `d-replaced`: a stale `keep_both` replaced with `keep_local` by a request killed right after
///   deleting the copy; the sync resuming `keep_local` gives `keep_both` up.
/// - `d-superseded`: `keep_both`, then the provider's item edited again; the superseding sync is
///   killed right after deleting the copy; the next sync supersedes the conflict.
///
/// Before, the next party found no live copy and recorded its fate as `none` ("no copy was
/// saved").
pub async fn a_copy_deleted_before_a_kill_is_audited_deleted(db: TestDb, radicale: Arc<Radicale>) {
    let w = World::asking(db, radicale, "copy-kill").await;
    let copy_kill = EngineConfig {
        crash_after_removing_copy: true,
        ..EngineConfig::default()
    };
    let recorded = w
        .update_conflicts(&[("d-replaced", 3), ("d-superseded", 5)])
        .await;
    let (replaced, superseded) = (&recorded[0], &recorded[1]);

    // d-replaced: keep_local deletes keep_both's copy and dies before marking keep_both given up.
    let replaced_copy = expected_copy(&w, replaced);
    w.keep_both_killed_after(replaced.id, 1).await;
    assert!(w.local_by_uid(&replaced_copy).await.is_some());
    w.age_decision(replaced.id).await;
    let err = w
        .resolve_with(replaced.id, "keep_local", &copy_kill)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("crash test"), "{err}");
    assert!(w.local_by_uid(&replaced_copy).await.is_none());
    let taken = w.conflict(replaced.id).await;
    let record: Value = serde_json::from_str(taken.resolving_json.as_deref().unwrap()).unwrap();
    assert_eq!(record["option"], "keep_local", "{record}");
    assert_eq!(record["replaced"]["abandoned"], Value::Null, "{record}");

    // d-superseded: the superseding sync deletes the copy and dies before taking keep_both off.
    let superseded_copy = expected_copy(&w, superseded);
    w.keep_both_killed_after(superseded.id, 1).await;
    w.remote_edit_again("d-superseded", 5).await;
    let report = w.sync_with(&w.provider, &copy_kill).await;
    assert_eq!(
        report.status,
        calbridge_engine::RunStatus::Partial,
        "{report:?}"
    );
    assert!(w.local_by_uid(&superseded_copy).await.is_none());
    let open = w.conflict(superseded.id).await;
    assert_eq!(open.state, ConflictState::Open);
    assert!(open.resolving_json.is_some());
    assert!(
        w.audit_of(superseded.id, "conflict.resolution_abandoned")
            .await
            .is_empty()
    );

    // The next sync supersedes d-superseded and resumes keep_local: each gives keep_both up once.
    let resume_now = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..EngineConfig::default()
    };
    w.synced_with(
        &resume_now,
        &[("conflicts_superseded", 1), ("resolutions_completed", 1)],
    )
    .await;
    for (conflict, copy) in [
        (replaced.id, &replaced_copy),
        (superseded.id, &superseded_copy),
    ] {
        let fate = w.abandoned_copy(conflict).await;
        assert_eq!(fate["fate"], "deleted", "{fate}");
        assert_eq!(fate["uid"], copy.as_str(), "{fate}");
        assert!(fate["series_id"].is_string(), "{fate}");
    }
    let (_, resolution) = w.resolved_with(replaced.id, "keep_local").await;
    assert_eq!(
        resolution["replaced"]["copy"]["fate"], "deleted",
        "{resolution}"
    );

    let again = w.conflict_of("d-superseded").await;
    assert_ne!(again.id, superseded.id);
    w.resolve(again.id, "keep_local", None).await.unwrap();
    w.settle().await;
    let both = w.assert_converged().await;
    assert!(!both.keys().any(|k| k.contains("-copy-")), "{both:?}");
    assert_eq!(one(&both, "d-replaced"), "d-replaced local");
    assert_eq!(one(&both, "d-superseded"), "d-superseded local");
}
