//! Scenario tests of the plan: one situation each, with the exact actions and conflicts expected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use calbridge_sync::{
    Action, ConflictKind, ConflictPolicy, Content, DeletionGuard, Direction, ItemState, Listing,
    LocalChange, LocalId, LocalSeries, Mapping, Plan, PlanInput, Policy, RemoteChange,
    RemoteChanges, RemoteId, RemoteVersion, ResolutionOption, Side, Snapshot, Span, Suspect, Uid,
    Window, plan,
};
use jiff::Timestamp;

fn day(n: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + n * 86_400).unwrap() // 2026-01-01 + n days
}

/// The link's window: days 0..90.
fn window() -> Window {
    Window {
        start: day(0),
        end: day(90),
    }
}

fn item(summary: &str, on_day: i64) -> ItemState {
    ItemState {
        snapshot: Snapshot::new()
            .with("summary", summary)
            .with("dtstart", on_day.to_string()),
        span: Some(Span::new(
            day(on_day),
            Some(day(on_day) + jiff::SignedDuration::from_hours(1)),
        )),
        modified: None,
    }
}

fn mapping(n: u32, base: ItemState) -> Mapping {
    Mapping {
        uid: Uid::new(format!("uid{n}")),
        local: LocalId::new(format!("L{n}")),
        remote: RemoteId::new(format!("R{n}")),
        remote_version: RemoteVersion::new("v1"),
        base,
    }
}

fn local_upsert(n: u32, state: ItemState) -> LocalChange {
    LocalChange::Upsert {
        id: LocalId::new(format!("L{n}")),
        uid: Uid::new(format!("uid{n}")),
        state,
    }
}

fn remote_upsert(n: u32, version: &str, state: ItemState) -> RemoteChange {
    RemoteChange::Upsert {
        id: RemoteId::new(format!("R{n}")),
        version: RemoteVersion::new(version),
        uid: Uid::new(format!("uid{n}")),
        state,
    }
}

struct Case {
    policy: Policy,
    mappings: Vec<Mapping>,
    local: Vec<LocalChange>,
    remote: Vec<RemoteChange>,
    listing: Listing,
    local_by_uid: BTreeMap<Uid, LocalSeries>,
}

impl Case {
    fn new() -> Self {
        Case {
            policy: Policy::default(),
            mappings: vec![],
            local: vec![],
            remote: vec![],
            listing: Listing::Incremental,
            local_by_uid: BTreeMap::new(),
        }
    }

    fn plan(&self) -> Plan {
        let remote = RemoteChanges {
            changes: self.remote.clone(),
            listing: self.listing,
        };
        plan(PlanInput {
            window: window(),
            policy: self.policy,
            mappings: &self.mappings,
            local: &self.local,
            remote: &remote,
            local_by_uid: &self.local_by_uid,
            parked_local: &BTreeSet::new(),
            parked_remote: &BTreeSet::new(),
        })
    }
}

#[test]
fn nothing_changed_plans_nothing() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    assert_eq!(case.plan(), Plan::default());
}

#[test]
fn our_own_write_coming_back_is_not_a_change() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    // Same version as recorded after our write: an echo.
    case.remote = vec![remote_upsert(1, "v1", item("whatever the server says", 5))];
    assert!(case.plan().actions.is_empty());
    // A new version with content equal to the base (a server rewrote PRODID/DTSTAMP): only re-link.
    case.remote = vec![remote_upsert(1, "v2", item("a", 5))];
    assert!(matches!(
        case.plan().actions.as_slice(),
        [Action::Link { .. }]
    ));
}

#[test]
fn edits_to_different_fields_merge_without_conflict() {
    let mut case = Case::new();
    let base = item("a", 5);
    case.mappings = vec![mapping(1, base.clone())];
    let mut local = base.clone();
    local.snapshot = local.snapshot.with("location", "Room 1");
    let mut remote = base;
    remote.snapshot = remote.snapshot.with("summary", "b");
    case.local = vec![local_upsert(1, local)];
    case.remote = vec![remote_upsert(1, "v2", remote)];
    let p = case.plan();
    assert!(p.conflicts.is_empty());
    let from_remote: BTreeSet<_> = [calbridge_sync::FieldPath::new("summary")].into();
    assert_eq!(
        p.actions,
        vec![
            Action::UpdateLocal {
                local: LocalId::new("L1"),
                remote: RemoteId::new("R1"),
                version: RemoteVersion::new("v2"),
                content: Content::Merged {
                    from_remote: from_remote.clone()
                },
            },
            Action::UpdateRemote {
                local: LocalId::new("L1"),
                remote: RemoteId::new("R1"),
                if_match: RemoteVersion::new("v2"),
                content: Content::Merged { from_remote },
            },
        ]
    );
}

#[test]
fn same_field_edited_on_both_sides_is_an_update_conflict_under_ask() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local = vec![local_upsert(1, item("local", 5))];
    case.remote = vec![remote_upsert(1, "v2", item("remote", 5))];
    let p = case.plan();
    assert!(p.actions.is_empty(), "ask changes nothing: {:?}", p.actions);
    let [c] = p.conflicts.as_slice() else {
        panic!("{:?}", p.conflicts)
    };
    assert_eq!(c.kind, ConflictKind::Update);
    assert_eq!(
        c.fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        ["summary"]
    );
    assert_eq!(c.uid, Some(Uid::new("uid1")));
    assert!(c.base.is_some() && c.local.is_some() && c.remote.is_some());
    assert_eq!(c.options, ConflictKind::Update.options());
    assert_eq!(c.settled_by, None);
}

#[test]
fn each_policy_settles_an_update_conflict_its_own_way() {
    let newer = |mut s: ItemState, at: i64| {
        s.modified = Some(day(at));
        s
    };
    for (policy, expect_local_write, expect_remote_write) in [
        (ConflictPolicy::LocalWins, false, true),
        (ConflictPolicy::RemoteWins, true, false),
        (ConflictPolicy::NewestWins, true, false), // remote modified later
        (ConflictPolicy::KeepBoth, false, true),
    ] {
        let mut case = Case::new();
        case.policy.conflicts = policy;
        case.mappings = vec![mapping(1, item("a", 5))];
        case.local = vec![local_upsert(1, newer(item("local", 5), 1))];
        case.remote = vec![remote_upsert(1, "v2", newer(item("remote", 5), 2))];
        let p = case.plan();
        assert_eq!(p.conflicts.len(), 1, "{policy:?}");
        assert_eq!(
            p.conflicts[0].settled_by,
            Some(policy),
            "recorded for the audit log"
        );
        let wrote_local = p
            .actions
            .iter()
            .any(|a| matches!(a, Action::UpdateLocal { .. }));
        let wrote_remote = p
            .actions
            .iter()
            .any(|a| matches!(a, Action::UpdateRemote { .. }));
        assert_eq!(
            (wrote_local, wrote_remote),
            (expect_local_write, expect_remote_write),
            "{policy:?}: {:?}",
            p.actions
        );
        if policy == ConflictPolicy::KeepBoth {
            assert!(p.actions.contains(&Action::CopyRemoteAsNewLocal {
                remote: RemoteId::new("R1")
            }));
        }
    }
}

#[test]
fn deletion_conflicts_in_both_directions() {
    // Deleted locally, edited remotely.
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local = vec![LocalChange::Deleted {
        id: LocalId::new("L1"),
        at: None,
    }];
    case.remote = vec![remote_upsert(1, "v2", item("edited", 5))];
    let p = case.plan();
    assert!(p.actions.is_empty());
    assert_eq!(p.conflicts[0].kind, ConflictKind::Deletion);
    assert_eq!(p.conflicts[0].deleted_on, Some(Side::Local));
    assert_eq!(
        p.conflicts[0].options,
        [
            ResolutionOption::DeleteEverywhere,
            ResolutionOption::Restore
        ]
    );

    // Deleted remotely, edited locally.
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local = vec![local_upsert(1, item("edited", 5))];
    case.remote = vec![RemoteChange::Deleted {
        id: RemoteId::new("R1"),
        certain: true,
    }];
    let p = case.plan();
    assert!(p.actions.is_empty());
    assert_eq!(p.conflicts[0].deleted_on, Some(Side::Remote));

    // An unmodified item deleted on one side is deleted on the other, conditionally.
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local = vec![LocalChange::Deleted {
        id: LocalId::new("L1"),
        at: None,
    }];
    assert_eq!(
        case.plan().actions,
        vec![Action::DeleteRemote {
            local: LocalId::new("L1"),
            remote: RemoteId::new("R1"),
            if_match: RemoteVersion::new("v1")
        }]
    );
}

#[test]
fn nothing_outside_the_window_is_deleted_or_overwritten() {
    let mut case = Case::new();
    // Linked item far in the past (day -200), outside the window.
    case.mappings = vec![mapping(1, item("old", -200))];
    case.remote = vec![RemoteChange::Deleted {
        id: RemoteId::new("R1"),
        certain: true,
    }];
    assert!(
        case.plan().actions.is_empty(),
        "a remote @removed outside the window is not a deletion"
    );
    case.remote = vec![remote_upsert(1, "v2", item("old but edited", -200))];
    assert!(case.plan().actions.is_empty());
    case.remote = vec![];
    case.local = vec![LocalChange::Deleted {
        id: LocalId::new("L1"),
        at: None,
    }];
    assert!(case.plan().actions.is_empty());
    // A new local event outside the window is not exported.
    let mut case = Case::new();
    case.local = vec![local_upsert(2, item("far future", 400))];
    assert!(case.plan().actions.is_empty());
}

#[test]
fn an_event_moved_out_of_the_window_is_updated_not_deleted() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local = vec![local_upsert(1, item("a", 300))];
    let p = case.plan();
    assert!(
        matches!(p.actions.as_slice(), [Action::UpdateRemote { .. }]),
        "{:?}",
        p.actions
    );
}

#[test]
fn an_uncertain_removal_is_verified_before_anything_is_deleted() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.remote = vec![RemoteChange::Deleted {
        id: RemoteId::new("R1"),
        certain: false,
    }];
    assert_eq!(
        case.plan().actions,
        vec![Action::VerifyRemote {
            remote: RemoteId::new("R1")
        }]
    );
}

#[test]
fn a_complete_listing_that_omits_linked_items_deletes_them_unless_suspect() {
    let mut case = Case::new();
    case.mappings = (1..=20).map(|n| mapping(n, item("a", 5))).collect();
    case.listing = Listing::Complete {
        window_filtered: false,
    };
    // 19 of 20 listed: one deletion is plausible.
    case.remote = (2..=20)
        .map(|n| remote_upsert(n, "v1", item("a", 5)))
        .collect();
    assert_eq!(
        case.plan().actions,
        vec![Action::DeleteLocal {
            local: LocalId::new("L1"),
            remote: RemoteId::new("R1")
        }]
    );
    // An empty listing would delete everything: the link is suspect and nothing at all is done.
    case.remote = vec![];
    let p = case.plan();
    assert!(p.actions.is_empty());
    assert_eq!(
        p.suspect,
        Some(Suspect::TooManyDeletions {
            side: Side::Local,
            deletions: 20,
            linked_in_window: 20
        })
    );
    // A small calendar may be emptied on purpose.
    case.mappings.truncate(3);
    case.policy.deletion_guard = DeletionGuard {
        max_share: 0.5,
        min_count: 10,
    };
    assert_eq!(case.plan().actions.len(), 3);
}

#[test]
fn a_window_filtered_listing_verifies_unlisted_items() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.listing = Listing::Complete {
        window_filtered: true,
    };
    assert_eq!(
        case.plan().actions,
        vec![Action::VerifyRemote {
            remote: RemoteId::new("R1")
        }]
    );
}

#[test]
fn an_item_existing_on_both_sides_is_paired_not_duplicated() {
    let mut case = Case::new();
    let same = item("standup", 3);
    case.local = vec![local_upsert(1, same.clone())];
    case.local_by_uid.insert(
        Uid::new("uid1"),
        LocalSeries {
            id: LocalId::new("L1"),
            state: same.clone(),
        },
    );
    case.remote = vec![remote_upsert(1, "v7", same)];
    assert_eq!(
        case.plan().actions,
        vec![Action::Link {
            local: LocalId::new("L1"),
            remote: RemoteId::new("R1"),
            version: RemoteVersion::new("v7")
        }]
    );
}

#[test]
fn one_uid_claimed_by_two_remote_items_is_an_identity_conflict() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local_by_uid.insert(
        Uid::new("uid1"),
        LocalSeries {
            id: LocalId::new("L1"),
            state: item("a", 5),
        },
    );
    case.remote = vec![RemoteChange::Upsert {
        id: RemoteId::new("R-other"),
        version: RemoteVersion::new("v1"),
        uid: Uid::new("uid1"),
        state: item("a copy", 5),
    }];
    let p = case.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.conflicts.len(), 1);
    assert_eq!(p.conflicts[0].kind, ConflictKind::Identity);
}

#[test]
fn an_item_under_a_new_id_is_followed_not_duplicated() {
    // Graph changes an event's id when it moves between calendars: deleted + re-added with one UID.
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local_by_uid.insert(
        Uid::new("uid1"),
        LocalSeries {
            id: LocalId::new("L1"),
            state: item("a", 5),
        },
    );
    case.remote = vec![
        RemoteChange::Deleted {
            id: RemoteId::new("R1"),
            certain: true,
        },
        RemoteChange::Upsert {
            id: RemoteId::new("R1-moved"),
            version: RemoteVersion::new("v1"),
            uid: Uid::new("uid1"),
            state: item("a", 5),
        },
    ];
    assert_eq!(
        case.plan().actions,
        vec![Action::Link {
            local: LocalId::new("L1"),
            remote: RemoteId::new("R1-moved"),
            version: RemoteVersion::new("v1")
        }]
    );
}

#[test]
fn import_never_writes_remote_and_export_never_writes_local() {
    let mut case = Case::new();
    case.mappings = vec![mapping(1, item("a", 5))];
    case.local = vec![
        local_upsert(1, item("local", 5)),
        local_upsert(2, item("new local", 6)),
    ];
    case.remote = vec![
        remote_upsert(1, "v2", item("remote", 5)),
        remote_upsert(3, "v1", item("new remote", 7)),
    ];

    case.policy.direction = Direction::Import;
    let p = case.plan();
    assert!(p.conflicts.is_empty());
    assert!(
        p.actions
            .iter()
            .all(|a| matches!(a, Action::UpdateLocal { .. } | Action::CreateLocal { .. })),
        "{:?}",
        p.actions
    );
    assert_eq!(p.actions.len(), 2);

    case.policy.direction = Direction::Export;
    let p = case.plan();
    assert!(p.conflicts.is_empty());
    assert!(
        p.actions
            .iter()
            .all(|a| matches!(a, Action::UpdateRemote { .. } | Action::CreateRemote { .. })),
        "{:?}",
        p.actions
    );
    assert_eq!(p.actions.len(), 2);
}
