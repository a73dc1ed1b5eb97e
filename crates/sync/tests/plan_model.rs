//! Model-based test of the plan, in the spirit of vdirsyncer's `SyncMachine`: two in-memory sides receive
//! random operations interleaved with syncs and faults (failed writes, 412 races from an edit landing
//! between plan and execution, replayed change feeds); a small executor carries each plan out the way the
//! real one does (conditional writes, cursor kept when anything failed). After quiescence both sides must
//! hold the same events, nothing may have vanished without a deletion, and nothing may be duplicated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use calbridge_sync::{
    Action, ConflictPolicy, Content, Direction, ItemState, Listing, LocalChange, LocalId,
    LocalSeries, Mapping, Plan, PlanInput, Policy, RemoteChange, RemoteChanges, RemoteId,
    RemoteVersion, Snapshot, Uid, Window, plan,
};
use jiff::Timestamp;
use proptest::prelude::*;

const FIELDS: [&str; 4] = [
    "summary",
    "location",
    "dtstart",
    "override/20250301T090000Z/summary",
];

#[derive(Debug, Clone)]
enum Op {
    LocalCreate {
        uid: u8,
        field: usize,
        value: u8,
    },
    LocalEdit {
        pick: usize,
        field: usize,
        value: u8,
    },
    LocalDelete {
        pick: usize,
    },
    RemoteCreate {
        uid: u8,
        field: usize,
        value: u8,
    },
    RemoteEdit {
        pick: usize,
        field: usize,
        value: u8,
    },
    RemoteDelete {
        pick: usize,
    },
    Sync {
        fail_every: u8,
        race: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..FIELDS.len();
    prop_oneof![
        (0u8..12, f.clone(), 0u8..3).prop_map(|(uid, field, value)| Op::LocalCreate {
            uid,
            field,
            value
        }),
        (any::<usize>(), f.clone(), 0u8..3).prop_map(|(pick, field, value)| Op::LocalEdit {
            pick,
            field,
            value
        }),
        any::<usize>().prop_map(|pick| Op::LocalDelete { pick }),
        (0u8..12, f.clone(), 0u8..3).prop_map(|(uid, field, value)| Op::RemoteCreate {
            uid,
            field,
            value
        }),
        (any::<usize>(), f, 0u8..3).prop_map(|(pick, field, value)| Op::RemoteEdit {
            pick,
            field,
            value
        }),
        any::<usize>().prop_map(|pick| Op::RemoteDelete { pick }),
        (0u8..4, any::<bool>()).prop_map(|(fail_every, race)| Op::Sync { fail_every, race }),
    ]
}

#[derive(Debug, Clone)]
struct Item {
    uid: String,
    snapshot: Snapshot,
    modified: i64,
}

#[derive(Debug, Default)]
struct World {
    local: BTreeMap<String, Item>,
    remote: BTreeMap<String, (Item, u64)>,
    mappings: BTreeMap<String, Mapping>, // by local id
    local_dirty: BTreeSet<String>,
    local_deleted: BTreeSet<String>,
    remote_dirty: BTreeSet<String>,
    parked_local: BTreeSet<LocalId>,
    parked_remote: BTreeSet<RemoteId>,
    clock: i64,
    next_id: u64,
    /// UIDs deleted by an operation (a person's deletion); anything else must survive.
    deleted_by_op: BTreeSet<String>,
    open_conflicts: usize,
}

fn state(item: &Item) -> ItemState {
    ItemState {
        snapshot: item.snapshot.clone(),
        span: None,
        modified: Some(Timestamp::from_second(item.modified).unwrap()),
    }
}

impl World {
    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn pick<T: Clone>(keys: impl Iterator<Item = T>, pick: usize) -> Option<T> {
        let keys: Vec<T> = keys.collect();
        (!keys.is_empty()).then(|| keys[pick % keys.len()].clone())
    }

    fn apply(&mut self, op: &Op, policy: Policy) {
        if trace() {
            eprintln!("op {op:?}");
        }
        match *op {
            Op::LocalCreate { uid, field, value } => {
                let uid = format!("u{uid}");
                // The store keeps UIDs unique per calendar; a second create with one is an edit.
                if self.local.values().any(|i| i.uid == uid) {
                    return;
                }
                let id = self.fresh("L");
                let modified = self.tick();
                let snapshot = Snapshot::new().with(FIELDS[field], format!("v{value}"));
                self.local.insert(
                    id.clone(),
                    Item {
                        uid,
                        snapshot,
                        modified,
                    },
                );
                self.local_dirty.insert(id);
            }
            Op::LocalEdit { pick, field, value } => {
                let Some(id) = Self::pick(self.local.keys().cloned(), pick) else {
                    return;
                };
                let modified = self.tick();
                let item = self.local.get_mut(&id).unwrap();
                item.snapshot = item
                    .snapshot
                    .clone()
                    .with(FIELDS[field], format!("l{value}"));
                item.modified = modified;
                self.local_dirty.insert(id);
            }
            Op::LocalDelete { pick } => {
                let Some(id) = Self::pick(self.local.keys().cloned(), pick) else {
                    return;
                };
                let item = self.local.remove(&id).unwrap();
                self.deleted_by_op.insert(item.uid);
                self.local_deleted.insert(id.clone());
                self.local_dirty.insert(id);
            }
            Op::RemoteCreate { uid, field, value } => {
                let uid = format!("u{uid}");
                // Duplicate UIDs on the provider are exercised by the identity scenario tests, not here.
                if self.remote.values().any(|(i, _)| i.uid == uid) {
                    return;
                }
                let id = self.fresh("R");
                let modified = self.tick();
                let snapshot = Snapshot::new().with(FIELDS[field], format!("v{value}"));
                self.remote.insert(
                    id.clone(),
                    (
                        Item {
                            uid,
                            snapshot,
                            modified,
                        },
                        1,
                    ),
                );
                self.remote_dirty.insert(id);
            }
            Op::RemoteEdit { pick, field, value } => {
                let Some(id) = Self::pick(self.remote.keys().cloned(), pick) else {
                    return;
                };
                self.remote_edit(&id, field, value);
            }
            Op::RemoteDelete { pick } => {
                let Some(id) = Self::pick(self.remote.keys().cloned(), pick) else {
                    return;
                };
                let (item, _) = self.remote.remove(&id).unwrap();
                self.deleted_by_op.insert(item.uid);
                self.remote_dirty.insert(id);
            }
            Op::Sync { fail_every, race } => self.sync(policy, fail_every, race),
        }
    }

    fn remote_edit(&mut self, id: &str, field: usize, value: u8) {
        let modified = self.tick();
        let (item, version) = self.remote.get_mut(id).unwrap();
        item.snapshot = item
            .snapshot
            .clone()
            .with(FIELDS[field], format!("r{value}"));
        item.modified = modified;
        *version += 1;
        self.remote_dirty.insert(id.to_owned());
    }

    fn local_changes(&self) -> Vec<LocalChange> {
        self.local_dirty
            .iter()
            .map(|id| match self.local.get(id) {
                Some(item) => LocalChange::Upsert {
                    id: LocalId::new(id),
                    uid: Uid::new(&item.uid),
                    state: state(item),
                },
                None => LocalChange::Deleted {
                    id: LocalId::new(id),
                    at: None,
                },
            })
            .collect()
    }

    fn remote_changes(&self) -> RemoteChanges {
        let changes = self
            .remote_dirty
            .iter()
            .map(|id| match self.remote.get(id) {
                Some((item, version)) => RemoteChange::Upsert {
                    id: RemoteId::new(id),
                    version: RemoteVersion::new(version.to_string()),
                    uid: Uid::new(&item.uid),
                    state: state(item),
                },
                None => RemoteChange::Deleted {
                    id: RemoteId::new(id),
                    certain: true,
                },
            })
            .collect();
        RemoteChanges {
            changes,
            listing: Listing::Incremental,
        }
    }

    fn sync(&mut self, policy: Policy, fail_every: u8, race: bool) {
        let local = self.local_changes();
        let remote = self.remote_changes();
        // The change marks covered by this run; what the run itself writes is marked anew.
        let covered_local = std::mem::take(&mut self.local_dirty);
        let covered_remote = std::mem::take(&mut self.remote_dirty);
        let mappings: Vec<Mapping> = self.mappings.values().cloned().collect();
        let local_by_uid: BTreeMap<Uid, LocalSeries> = self
            .local
            .iter()
            .map(|(id, item)| {
                (
                    Uid::new(&item.uid),
                    LocalSeries {
                        id: LocalId::new(id),
                        state: state(item),
                    },
                )
            })
            .collect();
        let window = Window {
            start: Timestamp::MIN,
            end: Timestamp::MAX,
        };
        let p = plan(PlanInput {
            window,
            policy,
            mappings: &mappings,
            local: &local,
            remote: &remote,
            local_by_uid: &local_by_uid,
            parked_local: &self.parked_local,
            parked_remote: &self.parked_remote,
        });
        plan_of_named_pairs_is_the_plan_of_all_pairs(
            &p,
            PlanInput {
                window,
                policy,
                mappings: &mappings,
                local: &local,
                remote: &remote,
                local_by_uid: &local_by_uid,
                parked_local: &self.parked_local,
                parked_remote: &self.parked_remote,
            },
        );
        if trace() {
            eprintln!(
                "  local {:?}\n  remote {:?}\n  mappings {:?}",
                self.local,
                self.remote,
                self.mappings
                    .values()
                    .map(|m| (&m.local, &m.remote, &m.remote_version))
                    .collect::<Vec<_>>()
            );
            eprintln!(
                "  changes L {local:?}\n  changes R {:?}\n  plan {:?}\n  conflicts {:?}",
                remote.changes,
                p.actions,
                p.conflicts
                    .iter()
                    .map(|c| (c.kind, &c.local_id, &c.remote_id))
                    .collect::<Vec<_>>()
            );
        }
        for c in &p.conflicts {
            if c.settled_by.is_none() {
                self.open_conflicts += 1;
                if let Some(l) = &c.local_id {
                    self.parked_local.insert(l.clone());
                }
                if let Some(r) = &c.remote_id {
                    self.parked_remote.insert(r.clone());
                }
            }
        }
        // A person edits the remote item between the plan and its execution: the conditional write of
        // the executor must refuse, and the next run must pick the edit up.
        if race
            && let Some(Action::UpdateRemote { remote, .. }) = p.actions.first()
            && self.remote.contains_key(remote.as_str())
        {
            self.remote_edit(remote.as_str(), 1, 9);
        }
        // The plan reads both sides as they were when it was made.
        let remote_at_plan: BTreeMap<String, (Item, u64)> = self.remote.clone();
        // The executor carries out one series' actions in order, stops that series at its first failure,
        // and records the new base only when the last of them succeeded.
        let mut groups: Vec<(String, Vec<&Action>)> = Vec::new();
        for action in &p.actions {
            let key = series_key(action);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(action),
                None => groups.push((key, vec![action])),
            }
        }
        let mut failed = false;
        let mut n = 0usize;
        for (_, group) in groups {
            let mut pending = None;
            let mut ok = true;
            for action in group {
                n += 1;
                if fail_every > 0 && n.is_multiple_of(fail_every as usize + 1) {
                    ok = false;
                    break;
                }
                match self.execute(action, &remote_at_plan) {
                    Ok(record) => pending = record.or(pending),
                    Err(()) => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                if let Some((local, mut mapping)) = pending {
                    // Recording a link replaces any earlier link of either id.
                    self.mappings.retain(|_, m| m.remote != mapping.remote);
                    mapping.uid = Uid::new(
                        self.local
                            .get(&local)
                            .map(|i| i.uid.clone())
                            .unwrap_or_default(),
                    );
                    self.mappings.insert(local, mapping);
                }
            } else {
                failed = true;
            }
        }
        if failed {
            // The cursor (and the local change mark) advance only when every change they cover committed.
            self.local_dirty.extend(covered_local);
            self.remote_dirty.extend(covered_remote);
        }
        self.local_deleted
            .retain(|id| self.mappings.contains_key(id));
    }

    fn compose(
        &self,
        local_id: &str,
        remote: Option<&Item>,
        content: &Content,
    ) -> Option<Snapshot> {
        match content {
            Content::Local => self.local.get(local_id).map(|i| i.snapshot.clone()),
            Content::Remote => remote.map(|i| i.snapshot.clone()),
            Content::Merged { from_remote } => {
                let mut merged = self.local.get(local_id)?.snapshot.clone();
                let remote = remote?;
                for path in from_remote {
                    match remote.snapshot.get(path) {
                        Some(v) => merged.set(path.clone(), v.to_owned()),
                        None => {
                            merged.remove(path);
                        }
                    }
                }
                Some(merged)
            }
        }
    }

    /// Executes one action; `Err` when a precondition failed (nothing changed then). `Ok(Some(..))` is
    /// the link to record once the series' last action succeeded.
    fn execute(
        &mut self,
        action: &Action,
        remote_at_plan: &BTreeMap<String, (Item, u64)>,
    ) -> Result<Option<(String, Mapping)>, ()> {
        let remote_read = |id: &RemoteId| remote_at_plan.get(id.as_str()).map(|(i, _)| i);
        let link = |local: &LocalId, remote: &RemoteId, version: String, snapshot: Snapshot| {
            let mapping = Mapping {
                uid: Uid::new(""),
                local: local.clone(),
                remote: remote.clone(),
                remote_version: RemoteVersion::new(version),
                base: ItemState {
                    snapshot,
                    span: None,
                    modified: None,
                },
            };
            Ok(Some((local.to_string(), mapping)))
        };
        match action {
            Action::CreateRemote { local } => {
                let item = self.local.get(local.as_str()).cloned().ok_or(())?;
                // Creates are idempotent by UID on every provider (CalDAV href, Google id): a second item
                // with the UID is refused, and the existing one comes back in the next feed to be paired.
                if let Some(existing) = self
                    .remote
                    .iter()
                    .find(|(_, (i, _))| i.uid == item.uid)
                    .map(|(k, _)| k.clone())
                {
                    self.remote_dirty.insert(existing);
                    return Err(());
                }
                let id = self.fresh("R");
                self.remote.insert(id.clone(), (item.clone(), 1));
                // The provider reports the create back in the next feed (an echo to be ignored).
                self.remote_dirty.insert(id.clone());
                link(local, &RemoteId::new(id), "1".into(), item.snapshot)
            }
            Action::UpdateRemote {
                local,
                remote,
                if_match,
                content,
            } => {
                let (_, version) = self.remote.get(remote.as_str()).ok_or(())?;
                if version.to_string() != if_match.as_str() {
                    return Err(());
                }
                let snapshot = self
                    .compose(local.as_str(), remote_read(remote), content)
                    .ok_or(())?;
                let modified = self.tick();
                let (item, version) = self.remote.get_mut(remote.as_str()).ok_or(())?;
                item.snapshot = snapshot.clone();
                item.modified = modified;
                *version += 1;
                let version = version.to_string();
                self.remote_dirty.insert(remote.to_string());
                link(local, remote, version, snapshot)
            }
            Action::DeleteRemote {
                local,
                remote,
                if_match,
            } => {
                if let Some((_, version)) = self.remote.get(remote.as_str()) {
                    if version.to_string() != if_match.as_str() {
                        return Err(());
                    }
                    self.remote.remove(remote.as_str());
                }
                self.mappings.remove(local.as_str());
                Ok(None)
            }
            Action::CreateLocal {
                remote,
                version,
                restore,
            } => {
                let item = remote_read(remote).cloned().ok_or(())?;
                // The store keeps UIDs unique per calendar: a create (or a restore) whose UID another
                // local series holds fails.
                if self.local.iter().any(|(id, i)| {
                    i.uid == item.uid && restore.as_ref().is_none_or(|r| r.as_str() != id)
                }) {
                    return Err(());
                }
                let id = match restore {
                    Some(id) => id.to_string(),
                    None => self.fresh("L"),
                };
                self.local.insert(id.clone(), item.clone());
                link(
                    &LocalId::new(id),
                    remote,
                    version.to_string(),
                    item.snapshot,
                )
            }
            Action::UpdateLocal {
                local,
                remote,
                version,
                content,
            } => {
                if !self.local.contains_key(local.as_str()) {
                    return Err(());
                }
                let snapshot = self
                    .compose(local.as_str(), remote_read(remote), content)
                    .ok_or(())?;
                let item = self.local.get_mut(local.as_str()).ok_or(())?;
                item.snapshot = snapshot.clone();
                link(local, remote, version.to_string(), snapshot)
            }
            Action::DeleteLocal { local, .. } => {
                self.local.remove(local.as_str());
                self.mappings.remove(local.as_str());
                Ok(None)
            }
            Action::Link {
                local,
                remote,
                version,
            } => {
                let item = self.local.get(local.as_str()).ok_or(())?;
                link(local, remote, version.to_string(), item.snapshot.clone())
            }
            Action::Unlink { local, .. } => {
                self.mappings.remove(local.as_str());
                Ok(None)
            }
            Action::CopyRemoteAsNewLocal { remote } => {
                let item = remote_read(remote).cloned().ok_or(())?;
                let id = self.fresh("L");
                let uid = format!("{}-copy{}", item.uid, self.next_id);
                self.local.insert(id.clone(), Item { uid, ..item });
                self.local_dirty.insert(id);
                Ok(None)
            }
            Action::VerifyRemote { .. } => panic!("the simulation reports only certain deletions"),
        }
    }

    /// Syncs without faults until a run plans nothing (bounded: convergence must be quick).
    fn quiesce(&mut self, policy: Policy) {
        for _ in 0..6 {
            self.sync(policy, 0, false);
            if self.local_dirty.is_empty() && self.remote_dirty.is_empty() {
                let local = self.local_changes();
                let remote = self.remote_changes();
                if local.is_empty() && remote.changes.is_empty() {
                    return;
                }
            }
        }
    }
}

/// The series an action belongs to: its local id, or its remote id for a series not yet local.
/// What the engine does on an incremental run: it reads only the pairs the changes name, and the local
/// series only for the UIDs of unlinked remote items. Where `PlanInput::mappings` says that is enough
/// (an incremental listing, fewer deletions per side than the guard's minimum), the plan must be the
/// one made from every pair and every series.
fn plan_of_named_pairs_is_the_plan_of_all_pairs(full: &Plan, input: PlanInput<'_>) {
    // Only deletions of paired items count (the engine's test before reading every pair): one
    // without a pair propagates nothing, so it cannot bring the guard's `min_count` nearer.
    let deletions = |n: usize| n >= input.policy.deletion_guard.min_count;
    let paired_local: BTreeSet<&LocalId> = input.mappings.iter().map(|m| &m.local).collect();
    let paired_remote: BTreeSet<&RemoteId> = input.mappings.iter().map(|m| &m.remote).collect();
    let local_deleted = input
        .local
        .iter()
        .filter(|c| matches!(c, LocalChange::Deleted { id, .. } if paired_local.contains(id)))
        .count();
    let remote_deleted = input
        .remote
        .changes
        .iter()
        .filter(|c| matches!(c, RemoteChange::Deleted { id, .. } if paired_remote.contains(id)))
        .count();
    if !matches!(input.remote.listing, Listing::Incremental)
        || deletions(local_deleted)
        || deletions(remote_deleted)
    {
        return;
    }
    let linked: BTreeSet<&RemoteId> = input.mappings.iter().map(|m| &m.remote).collect();
    let local_by_uid: BTreeMap<Uid, LocalSeries> = input
        .remote
        .changes
        .iter()
        .filter_map(|c| match c {
            RemoteChange::Upsert { id, uid, .. } if !linked.contains(id) => {
                input.local_by_uid.get_key_value(uid)
            }
            _ => None,
        })
        .map(|(uid, series)| (uid.clone(), series.clone()))
        .collect();
    let named_local: BTreeSet<&LocalId> = input
        .local
        .iter()
        .map(LocalChange::id)
        .chain(local_by_uid.values().map(|l| &l.id))
        .collect();
    let named_remote: BTreeSet<&RemoteId> =
        input.remote.changes.iter().map(RemoteChange::id).collect();
    let named: Vec<Mapping> = input
        .mappings
        .iter()
        .filter(|m| named_local.contains(&m.local) || named_remote.contains(&m.remote))
        .cloned()
        .collect();
    let partial = plan(PlanInput {
        mappings: &named,
        local_by_uid: &local_by_uid,
        ..input
    });
    assert_eq!(
        &partial, full,
        "the plan of the named pairs differs from the plan of all pairs"
    );
}

fn series_key(action: &Action) -> String {
    match action {
        Action::CreateRemote { local }
        | Action::UpdateRemote { local, .. }
        | Action::DeleteRemote { local, .. }
        | Action::UpdateLocal { local, .. }
        | Action::DeleteLocal { local, .. }
        | Action::Link { local, .. }
        | Action::Unlink { local, .. } => local.to_string(),
        Action::CreateLocal {
            restore: Some(local),
            ..
        } => local.to_string(),
        Action::CreateLocal { remote, .. }
        | Action::CopyRemoteAsNewLocal { remote }
        | Action::VerifyRemote { remote } => remote.to_string(),
    }
}

fn by_uid(items: impl Iterator<Item = Item>) -> BTreeMap<String, Vec<Snapshot>> {
    let mut out: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
    for item in items {
        out.entry(item.uid).or_default().push(item.snapshot);
    }
    out
}

fn run(ops: &[Op], policy: Policy) -> World {
    let mut world = World::default();
    let mut seen_uids = BTreeSet::new();
    for op in ops {
        world.apply(op, policy);
        seen_uids.extend(world.local.values().map(|i| i.uid.clone()));
        seen_uids.extend(world.remote.values().map(|(i, _)| i.uid.clone()));
    }
    world.quiesce(policy);

    let local = by_uid(world.local.values().cloned());
    let remote = by_uid(world.remote.values().map(|(i, _)| i.clone()));
    for (uid, copies) in local.iter().chain(remote.iter()) {
        assert_eq!(copies.len(), 1, "{uid} duplicated: {copies:?}");
    }
    // Nothing vanished: every UID that ever existed and was never deleted by a person is still there.
    for uid in &seen_uids {
        if !world.deleted_by_op.contains(uid) {
            assert!(
                local.contains_key(uid) || remote.contains_key(uid),
                "{uid} vanished without a deletion"
            );
        }
    }
    world
}

fn policy(direction: Direction, conflicts: ConflictPolicy) -> Policy {
    Policy {
        direction,
        conflicts,
        ..Policy::default()
    }
}

/// `SIM_TRACE=1` prints every operation and plan (for shrunk failures).
fn trace() -> bool {
    std::env::var_os("SIM_TRACE").is_some()
}

/// At least 2,000 cases per run; `PROPTEST_CASES` raises it for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u32)
        .max(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// With an automatic policy both sides converge to the same events.
    #[test]
    fn bidirectional_sides_converge(
        ops in prop::collection::vec(op(), 1..40),
        conflicts in prop_oneof![
            Just(ConflictPolicy::LocalWins),
            Just(ConflictPolicy::RemoteWins),
            Just(ConflictPolicy::NewestWins),
            Just(ConflictPolicy::KeepBoth),
        ],
    ) {
        let world = run(&ops, policy(Direction::Bidirectional, conflicts));
        let local = by_uid(world.local.values().cloned());
        let remote = by_uid(world.remote.values().map(|(i, _)| i.clone()));
        prop_assert_eq!(local, remote);
        prop_assert_eq!(world.open_conflicts, 0);
    }

    /// With `ask`, every difference left after quiescence is an open conflict, never a silent loss.
    #[test]
    fn ask_leaves_differences_only_as_open_conflicts(ops in prop::collection::vec(op(), 1..40)) {
        let world = run(&ops, policy(Direction::Bidirectional, ConflictPolicy::Ask));
        let local = by_uid(world.local.values().cloned());
        let remote = by_uid(world.remote.values().map(|(i, _)| i.clone()));
        for uid in local.keys().chain(remote.keys()) {
            if local.get(uid) != remote.get(uid) {
                let parked_local = world.local.iter().any(|(id, i)| &i.uid == uid && world.parked_local.contains(&LocalId::new(id)));
                let parked_remote = world.remote.iter().any(|(id, (i, _))| &i.uid == uid && world.parked_remote.contains(&RemoteId::new(id)));
                let parked_mapping = world.mappings.values().any(|m| world.parked_local.contains(&m.local) && world.remote.get(m.remote.as_str()).is_some_and(|(i, _)| &i.uid == uid));
                prop_assert!(parked_local || parked_remote || parked_mapping, "{uid} differs without an open conflict");
            }
        }
    }

    /// `import` never writes to the provider; `export` never changes local events.
    #[test]
    fn one_way_links_never_write_the_other_side(ops in prop::collection::vec(op(), 1..30)) {
        for (direction, remote_untouched) in [(Direction::Import, true), (Direction::Export, false)] {
            let mut world = World::default();
            for op in &ops {
                let before_local: BTreeMap<String, Snapshot> = world.local.iter().map(|(k, v)| (k.clone(), v.snapshot.clone())).collect();
                let before_remote: BTreeMap<String, Snapshot> = world.remote.iter().map(|(k, (v, _))| (k.clone(), v.snapshot.clone())).collect();
                let is_sync = matches!(op, Op::Sync { .. });
                world.apply(op, policy(direction, ConflictPolicy::Ask));
                if is_sync {
                    let after_local: BTreeMap<String, Snapshot> = world.local.iter().map(|(k, v)| (k.clone(), v.snapshot.clone())).collect();
                    let after_remote: BTreeMap<String, Snapshot> = world.remote.iter().map(|(k, (v, _))| (k.clone(), v.snapshot.clone())).collect();
                    if remote_untouched {
                        prop_assert_eq!(before_remote, after_remote);
                    } else {
                        prop_assert_eq!(before_local, after_local);
                    }
                }
            }
        }
    }
}
#[test]
/// Found by the model test: a remote item re-created under a new id in the round its local twin was
/// deleted, then replaced again; restoring must reuse the local series, never duplicate its UID.
fn regression_restore_after_remote_recreate_keeps_one_series() {
    let ops = vec![
        Op::RemoteCreate {
            uid: 0,
            field: 0,
            value: 0,
        },
        Op::LocalCreate {
            uid: 0,
            field: 0,
            value: 0,
        },
        Op::Sync {
            fail_every: 0,
            race: false,
        },
        Op::RemoteDelete { pick: 0 },
        Op::LocalCreate {
            uid: 1,
            field: 0,
            value: 0,
        },
        Op::LocalEdit {
            pick: 0,
            field: 0,
            value: 0,
        },
        Op::RemoteCreate {
            uid: 1,
            field: 0,
            value: 0,
        },
        Op::LocalDelete { pick: 0 },
        Op::LocalEdit {
            pick: 0,
            field: 0,
            value: 0,
        },
        Op::RemoteCreate {
            uid: 2,
            field: 0,
            value: 0,
        },
        Op::LocalCreate {
            uid: 3,
            field: 0,
            value: 0,
        },
        Op::RemoteCreate {
            uid: 0,
            field: 0,
            value: 1,
        },
        Op::LocalCreate {
            uid: 4,
            field: 0,
            value: 0,
        },
        Op::Sync {
            fail_every: 1,
            race: false,
        },
        Op::RemoteDelete {
            pick: 1862977471944825647,
        },
        Op::RemoteCreate {
            uid: 0,
            field: 1,
            value: 0,
        },
        Op::LocalEdit {
            pick: 4605285226284562069,
            field: 0,
            value: 0,
        },
        Op::Sync {
            fail_every: 0,
            race: false,
        },
    ];
    run(
        &ops,
        policy(Direction::Bidirectional, ConflictPolicy::NewestWins),
    );
}

#[test]
/// Found by a 200,000-case run of the model test (`PROPTEST_CASES=200000`): under `newest_wins`, a
/// series whose remote twin was deleted while a failing run left a second local series with its UID,
/// then re-created remotely, must still converge.
fn regression_newest_wins_after_failed_run_and_remote_recreate_converges() {
    let ops = vec![
        Op::LocalCreate {
            uid: 5,
            field: 0,
            value: 0,
        },
        Op::Sync {
            fail_every: 0,
            race: false,
        },
        Op::LocalCreate {
            uid: 0,
            field: 0,
            value: 0,
        },
        Op::LocalEdit {
            pick: 0,
            field: 0,
            value: 0,
        },
        Op::RemoteDelete { pick: 0 },
        Op::LocalDelete {
            pick: 10814606396381555892,
        },
        Op::LocalCreate {
            uid: 0,
            field: 0,
            value: 0,
        },
        Op::LocalDelete { pick: 0 },
        Op::LocalCreate {
            uid: 0,
            field: 0,
            value: 0,
        },
        Op::LocalEdit {
            pick: 0,
            field: 0,
            value: 0,
        },
        Op::LocalCreate {
            uid: 5,
            field: 0,
            value: 1,
        },
        Op::Sync {
            fail_every: 1,
            race: false,
        },
        Op::RemoteDelete { pick: 0 },
        Op::LocalEdit {
            pick: 9537116555335457,
            field: 0,
            value: 0,
        },
        Op::RemoteCreate {
            uid: 5,
            field: 0,
            value: 1,
        },
    ];
    let world = run(
        &ops,
        policy(Direction::Bidirectional, ConflictPolicy::NewestWins),
    );
    let local = by_uid(world.local.values().cloned());
    let remote = by_uid(world.remote.values().map(|(i, _)| i.clone()));
    assert_eq!(local, remote);
    assert_eq!(world.open_conflicts, 0);
}
