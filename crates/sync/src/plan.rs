//! The sync plan: a pure function from what changed on both sides since the last sync, the stored bases,
//! the link's direction and its conflict policy to the actions to execute and the conflicts to record.
//!
//! The plan decides; the executor (in the server) only carries the actions out with conditional writes and
//! records the new bases. Because the plan is pure it is property-tested on its own (`tests/plan_model.rs`
//! simulates both sides and checks they converge without losing or duplicating anything).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ids::{LocalId, RemoteId, RemoteVersion, Uid};
use crate::merge::{Merge, three_way};
use crate::snapshot::{FieldPath, ItemState, Window};

/// Which way changes flow on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Changes flow both ways; both sides' edits are merged.
    #[default]
    Bidirectional,
    /// Provider → application. The provider is the truth for linked items: its changes overwrite local
    /// ones, and nothing is ever written to the provider.
    Import,
    /// Application → provider. The application is the truth: its changes overwrite remote ones, remote
    /// edits are reverted and remote deletions restored, and no local event is ever changed.
    Export,
}

impl Direction {
    fn writes_remote(self) -> bool {
        self != Direction::Import
    }

    fn writes_local(self) -> bool {
        self != Direction::Export
    }
}

/// What to do when both sides changed the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// Record the conflict and change nothing until an admin resolves it.
    #[default]
    Ask,
    LocalWins,
    RemoteWins,
    /// The side modified last wins; a tie goes to the local side.
    NewestWins,
    /// The local version stays; the remote version is kept as a new, separate event.
    KeepBoth,
}

/// Stops a run that would delete an implausible share of a calendar (a provider answering an empty
/// listing by mistake must not wipe the other side).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeletionGuard {
    /// Largest share of the linked items in the window one run may delete on either side.
    pub max_share: f64,
    /// Runs deleting fewer items than this are never suspect (a small calendar may be emptied on purpose).
    pub min_count: usize,
}

impl Default for DeletionGuard {
    fn default() -> Self {
        Self {
            max_share: 0.5,
            min_count: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Policy {
    pub direction: Direction,
    pub conflicts: ConflictPolicy,
    pub deletion_guard: DeletionGuard,
}

/// What the store remembers about a linked pair: ids on both sides, the remote version last seen, and the
/// base — the content both sides last agreed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub uid: Uid,
    pub local: LocalId,
    pub remote: RemoteId,
    pub remote_version: RemoteVersion,
    pub base: ItemState,
}

/// A local series that changed since the last sync (on the first sync: every local series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LocalChange {
    Upsert {
        id: LocalId,
        uid: Uid,
        state: ItemState,
    },
    Deleted {
        id: LocalId,
        at: Option<Timestamp>,
    },
}

impl LocalChange {
    /// The local series that changed.
    pub fn id(&self) -> &LocalId {
        match self {
            LocalChange::Upsert { id, .. } | LocalChange::Deleted { id, .. } => id,
        }
    }
}

/// A remote item that changed since the provider cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RemoteChange {
    Upsert {
        id: RemoteId,
        version: RemoteVersion,
        uid: Uid,
        state: ItemState,
    },
    /// The provider says the item is gone. `certain = false` when that may only mean "left the window"
    /// (Graph reports `@removed` for items moved out of a calendarView window): the plan then asks the
    /// executor to read the item before anything is deleted.
    Deleted { id: RemoteId, certain: bool },
}

impl RemoteChange {
    /// The remote item that changed.
    pub fn id(&self) -> &RemoteId {
        match self {
            RemoteChange::Upsert { id, .. } | RemoteChange::Deleted { id, .. } => id,
        }
    }
}

/// How much of the remote calendar the changes cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Listing {
    /// Only what changed since the cursor.
    Incremental,
    /// Every live item (a first sync, or after the provider invalidated the cursor): a linked item that is
    /// not listed is gone. `window_filtered` when the provider listed only the window, so an unlisted item
    /// may merely have left it.
    Complete { window_filtered: bool },
}

/// The remote side's changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteChanges {
    pub changes: Vec<RemoteChange>,
    pub listing: Listing,
}

/// A local series the plan may need although it did not change: at least every local series whose UID
/// appears among unlinked remote items (so an item that exists on both sides is paired, not duplicated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalSeries {
    pub id: LocalId,
    pub state: ItemState,
}

/// Everything the plan needs; nothing else influences it.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub window: Window,
    pub policy: Policy,
    /// The stored pairs. All of them, or only those a change or `local_by_uid` names, which gives the
    /// same plan when the listing is incremental and each side has fewer deletions of paired items
    /// than the deletion guard's `min_count` (only a complete listing and the guard look at pairs
    /// nothing names, and only a paired item's deletion is propagated;
    /// `plan_of_named_pairs_is_the_plan_of_all_pairs` checks it).
    pub mappings: &'a [Mapping],
    pub local: &'a [LocalChange],
    pub remote: &'a RemoteChanges,
    pub local_by_uid: &'a BTreeMap<Uid, LocalSeries>,
    /// Series with an open conflict: left alone until it is resolved.
    pub parked_local: &'a BTreeSet<LocalId>,
    pub parked_remote: &'a BTreeSet<RemoteId>,
}

/// Which content a write carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// The local series as it is now.
    Local,
    /// The remote item as it was read in this run.
    Remote,
    /// The local series with these paths taken from the remote item.
    Merged { from_remote: BTreeSet<FieldPath> },
}

/// One step for the executor. Every write to an existing item is conditional on the version named here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Create the local series on the provider (idempotently) and link the two.
    CreateRemote {
        local: LocalId,
    },
    UpdateRemote {
        local: LocalId,
        remote: RemoteId,
        if_match: RemoteVersion,
        content: Content,
    },
    DeleteRemote {
        local: LocalId,
        remote: RemoteId,
        if_match: RemoteVersion,
    },
    /// Create a local series from the remote item and link the two; `restore` names the deleted local
    /// series to bring back (same id, so its history and links stay one).
    CreateLocal {
        remote: RemoteId,
        version: RemoteVersion,
        restore: Option<LocalId>,
    },
    UpdateLocal {
        local: LocalId,
        remote: RemoteId,
        version: RemoteVersion,
        content: Content,
    },
    DeleteLocal {
        local: LocalId,
        remote: RemoteId,
    },
    /// Both sides already agree: record the link, the remote version and the new base.
    Link {
        local: LocalId,
        remote: RemoteId,
        version: RemoteVersion,
    },
    /// Both sides are gone: forget the link (a tombstone remains).
    Unlink {
        local: LocalId,
        remote: RemoteId,
    },
    /// `keep_both`: save the remote version as a new local event with a new UID (it syncs out next run).
    CopyRemoteAsNewLocal {
        remote: RemoteId,
    },
    /// The remote deletion is uncertain (may have left the window): read the item, then plan it again.
    VerifyRemote {
        remote: RemoteId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// The same field changed on both sides.
    Update,
    /// Deleted on one side, changed on the other.
    Deletion,
    /// Two items claim one UID, or one item appears under two ids.
    Identity,
    /// Two events of one owner overlap (see [`crate::overlap`]).
    Time,
}

/// How an admin may resolve a conflict (DESIGN §4.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionOption {
    KeepLocal,
    KeepRemote,
    KeepBoth,
    Merge,
    DeleteEverywhere,
    Restore,
}

impl ConflictKind {
    pub fn options(self) -> &'static [ResolutionOption] {
        use ResolutionOption::*;
        match self {
            ConflictKind::Update => &[KeepLocal, KeepRemote, KeepBoth, Merge],
            ConflictKind::Deletion => &[DeleteEverywhere, Restore],
            ConflictKind::Identity => &[KeepLocal, KeepRemote, KeepBoth],
            // Two different events overlap: there is no losing version. `keep_both` accepts the overlap;
            // removing or moving one of them is an ordinary edit, after which the conflict closes itself.
            ConflictKind::Time => &[KeepBoth],
        }
    }
}

/// Which side deleted, in a deletion conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Local,
    Remote,
}

/// A conflict found by the plan, with all three versions so a person can decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub uid: Option<Uid>,
    pub local_id: Option<LocalId>,
    pub remote_id: Option<RemoteId>,
    pub remote_version: Option<RemoteVersion>,
    pub base: Option<ItemState>,
    pub local: Option<ItemState>,
    pub remote: Option<ItemState>,
    /// For a deletion conflict: the side that deleted.
    pub deleted_on: Option<Side>,
    pub fields: Vec<FieldPath>,
    pub options: Vec<ResolutionOption>,
    /// `Some` when the link's policy settled it automatically (still recorded for the audit log);
    /// `None` when it waits for an admin.
    pub settled_by: Option<ConflictPolicy>,
}

/// Why a run was stopped before it changed anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Suspect {
    TooManyDeletions {
        side: Side,
        deletions: usize,
        linked_in_window: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// When set, the executor runs nothing, keeps the cursor, and marks the link suspect.
    pub suspect: Option<Suspect>,
}

impl Plan {
    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }
}

/// Computes the plan for one link.
pub fn plan(input: PlanInput<'_>) -> Plan {
    Planner::new(input).run()
}

struct Planner<'a> {
    input: PlanInput<'a>,
    by_local: BTreeMap<&'a LocalId, &'a Mapping>,
    by_remote: BTreeMap<&'a RemoteId, &'a Mapping>,
    local_changes: BTreeMap<&'a LocalId, &'a LocalChange>,
    remote_changes: BTreeMap<&'a RemoteId, &'a RemoteChange>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn new(input: PlanInput<'a>) -> Self {
        // Later entries win: a provider may report one item twice in a round (Graph replays changes).
        let local_changes = input.local.iter().map(|c| (c.id(), c)).collect();
        let remote_changes = input.remote.changes.iter().map(|c| (c.id(), c)).collect();
        Self {
            by_local: input.mappings.iter().map(|m| (&m.local, m)).collect(),
            by_remote: input.mappings.iter().map(|m| (&m.remote, m)).collect(),
            local_changes,
            remote_changes,
            input,
            plan: Plan::default(),
        }
    }

    fn run(mut self) -> Plan {
        let moved = self.relink_moved_items();
        let recreated = self.relink_recreated_series();
        let absent = self.unlisted_linked_items();

        for mapping in self.input.mappings {
            if self.is_parked(mapping) {
                continue;
            }
            let before = self.plan.actions.len();
            let recreated_series = recreated.contains_key(&mapping.local);
            let (mapping, local) = match recreated.get(&mapping.local) {
                Some(change) => (
                    &Mapping {
                        local: change.id().clone(),
                        ..mapping.clone()
                    },
                    Some(*change),
                ),
                None => (mapping, self.local_changes.get(&mapping.local).copied()),
            };
            match moved.get(&mapping.remote) {
                Some((new_id, change)) => {
                    let followed = Mapping {
                        remote: new_id.clone(),
                        ..mapping.clone()
                    };
                    self.linked(&followed, local, Some(*change), true);
                }
                None => {
                    let remote = self.remote_changes.get(&mapping.remote).copied();
                    let remote = remote.or_else(|| absent.get(&mapping.remote));
                    self.linked(mapping, local, remote, false);
                }
            }
            if recreated_series
                && self.plan.actions.len() == before
                && !self
                    .plan
                    .conflicts
                    .iter()
                    .any(|c| c.local_id.as_ref() == Some(&mapping.local))
            {
                // Nothing to write, but the link now belongs to the re-created series.
                self.plan.act(link(mapping, &mapping.remote_version));
            }
        }

        self.unlinked_remote(&moved);
        let followed = recreated.values().map(|c| c.id().clone()).collect();
        self.unlinked_local(&followed);
        self.guard_deletions();
        self.plan
    }

    fn is_parked(&self, mapping: &Mapping) -> bool {
        self.input.parked_local.contains(&mapping.local)
            || self.input.parked_remote.contains(&mapping.remote)
    }

    /// A linked remote item deleted in the same round as an unlinked item with the same UID appears is one
    /// item under a new id (Graph changes ids when an event moves between calendars): follow it instead
    /// of deleting one and creating the other.
    fn relink_moved_items(&self) -> BTreeMap<RemoteId, (RemoteId, &'a RemoteChange)> {
        let mut moved = BTreeMap::new();
        let deleted: Vec<&Mapping> = self
            .input
            .remote
            .changes
            .iter()
            .filter_map(|c| match c {
                RemoteChange::Deleted { id, .. } => self.by_remote.get(id).copied(),
                RemoteChange::Upsert { .. } => None,
            })
            .filter(|m| !self.is_parked(m))
            .collect();
        if deleted.is_empty() {
            return moved;
        }
        for change in self.remote_changes.values() {
            let RemoteChange::Upsert { id, uid, .. } = change else {
                continue;
            };
            if self.by_remote.contains_key(id) {
                continue;
            }
            // Two stale pairs may hold the UID (one whose local series was deleted and re-created
            // under a new id, one of the new series): the item follows the pair whose series lives,
            // or the deleted one's restore would collide with the living series' UID forever (found
            // by a 200,000-case run of the model test).
            let candidates = || {
                deleted
                    .iter()
                    .filter(|m| m.uid == *uid && !moved.contains_key(&m.remote))
            };
            let living = candidates().find(|m| {
                !matches!(
                    self.local_changes.get(&m.local),
                    Some(LocalChange::Deleted { .. })
                )
            });
            if let Some(old) = living.or_else(|| candidates().next()) {
                moved.insert(old.remote.clone(), (id.clone(), *change));
            }
        }
        moved
    }

    /// A linked local series deleted in the same round as an unlinked one with the same UID was created is
    /// the same event re-created (an application that replaces instead of updating): follow it as an edit.
    fn relink_recreated_series(&self) -> BTreeMap<LocalId, &'a LocalChange> {
        let mut recreated = BTreeMap::new();
        for mapping in self.input.mappings.iter().filter(|m| !self.is_parked(m)) {
            if !matches!(
                self.local_changes.get(&mapping.local),
                Some(LocalChange::Deleted { .. })
            ) {
                continue;
            }
            let successor = self.local_changes.values().find(|c| {
                matches!(c, LocalChange::Upsert { id, uid, .. }
                    if *uid == mapping.uid && !self.by_local.contains_key(id))
            });
            if let Some(change) = successor
                && !recreated
                    .values()
                    .any(|c: &&LocalChange| c.id() == change.id())
            {
                recreated.insert(mapping.local.clone(), *change);
            }
        }
        recreated
    }

    /// On a complete listing, every linked item inside the window that was not listed is gone (or, when
    /// the listing was filtered by window, may have left it).
    fn unlisted_linked_items(&self) -> BTreeMap<RemoteId, RemoteChange> {
        let Listing::Complete { window_filtered } = self.input.remote.listing else {
            return BTreeMap::new();
        };
        self.input
            .mappings
            .iter()
            .filter(|m| !self.remote_changes.contains_key(&m.remote))
            .filter(|m| m.base.in_window(&self.input.window))
            .map(|m| {
                let change = RemoteChange::Deleted {
                    id: m.remote.clone(),
                    certain: !window_filtered,
                };
                (m.remote.clone(), change)
            })
            .collect()
    }

    fn linked(
        &mut self,
        mapping: &Mapping,
        local: Option<&LocalChange>,
        remote: Option<&RemoteChange>,
        remote_id_changed: bool,
    ) {
        let window = self.input.window;
        let base_in = mapping.base.in_window(&window);
        let local_in =
            matches!(local, Some(LocalChange::Upsert { state, .. }) if state.in_window(&window));
        let remote_in =
            matches!(remote, Some(RemoteChange::Upsert { state, .. }) if state.in_window(&window));
        // Nothing outside the window is ever deleted or overwritten: a pair takes part only if one of its
        // versions is inside it.
        if !(base_in || local_in || remote_in) {
            return;
        }
        // A remote change that carries the version we already hold is our own write coming back.
        let remote = match remote {
            Some(RemoteChange::Upsert { version, .. })
                if *version == mapping.remote_version && !remote_id_changed =>
            {
                None
            }
            other => other,
        };

        match (local, remote) {
            (None, None) => {}
            (Some(LocalChange::Upsert { state, .. }), None) => self.local_edit(mapping, state),
            (None, Some(RemoteChange::Upsert { version, state, .. })) => {
                self.remote_edit(mapping, version, state)
            }
            (
                Some(LocalChange::Upsert { state: l, .. }),
                Some(RemoteChange::Upsert {
                    version, state: r, ..
                }),
            ) => self.both_edited(mapping, l, version, r),
            (Some(LocalChange::Deleted { at, .. }), None) => self.local_deleted(mapping, *at, None),
            (
                Some(LocalChange::Deleted { at, .. }),
                Some(RemoteChange::Upsert { version, state, .. }),
            ) => self.local_deleted(mapping, *at, Some((version, state))),
            (local, Some(RemoteChange::Deleted { id, certain })) => {
                if !base_in {
                    // Graph reports `@removed` for changes outside the window: not a deletion.
                    return;
                }
                if !certain {
                    self.plan.act(Action::VerifyRemote { remote: id.clone() });
                    return;
                }
                match local {
                    None => self.remote_deleted(mapping, None),
                    Some(LocalChange::Upsert { state, .. }) => {
                        self.remote_deleted(mapping, Some(state))
                    }
                    Some(LocalChange::Deleted { .. }) => self.plan.act(Action::Unlink {
                        local: mapping.local.clone(),
                        remote: mapping.remote.clone(),
                    }),
                }
            }
        }
    }

    fn local_edit(&mut self, m: &Mapping, local: &ItemState) {
        if local.snapshot == m.base.snapshot || !self.input.policy.direction.writes_remote() {
            return;
        }
        self.plan
            .act(update_remote(m, &m.remote_version, Content::Local));
    }

    fn remote_edit(&mut self, m: &Mapping, version: &RemoteVersion, remote: &ItemState) {
        let direction = self.input.policy.direction;
        if remote.snapshot == m.base.snapshot {
            self.plan.act(link(m, version));
        } else if direction.writes_local() {
            self.plan.act(update_local(m, version, Content::Remote));
        } else {
            // Export: the application is the truth; put its version back.
            self.plan.act(update_remote(m, version, Content::Local));
        }
    }

    fn both_edited(
        &mut self,
        m: &Mapping,
        local: &ItemState,
        version: &RemoteVersion,
        remote: &ItemState,
    ) {
        match self.input.policy.direction {
            Direction::Import => return self.remote_edit(m, version, remote),
            Direction::Export => {
                if local.snapshot != remote.snapshot {
                    self.plan.act(update_remote(m, version, Content::Local));
                } else {
                    self.plan.act(link(m, version));
                }
                return;
            }
            Direction::Bidirectional => {}
        }
        if local.snapshot == remote.snapshot {
            self.plan.act(link(m, version));
            return;
        }
        let merge = three_way(Some(&m.base.snapshot), &local.snapshot, &remote.snapshot);
        if merge.is_clean() {
            self.write_merge(m, version, local, remote, &merge, BTreeSet::new());
            return;
        }
        let policy = self.input.policy.conflicts;
        let conflict = Conflict {
            kind: ConflictKind::Update,
            uid: Some(m.uid.clone()),
            local_id: Some(m.local.clone()),
            remote_id: Some(m.remote.clone()),
            remote_version: Some(version.clone()),
            base: Some(m.base.clone()),
            local: Some(local.clone()),
            remote: Some(remote.clone()),
            deleted_on: None,
            fields: merge.conflicts.iter().cloned().collect(),
            options: ConflictKind::Update.options().to_vec(),
            settled_by: (policy != ConflictPolicy::Ask).then_some(policy),
        };
        self.plan.conflicts.push(conflict);
        match policy {
            ConflictPolicy::Ask => {}
            ConflictPolicy::LocalWins => {
                self.write_merge(m, version, local, remote, &merge, BTreeSet::new())
            }
            ConflictPolicy::RemoteWins => {
                let extra = merge.conflicts.clone();
                self.write_merge(m, version, local, remote, &merge, extra)
            }
            ConflictPolicy::NewestWins => {
                let extra = if remote_is_newer(local.modified, remote.modified) {
                    merge.conflicts.clone()
                } else {
                    BTreeSet::new()
                };
                self.write_merge(m, version, local, remote, &merge, extra)
            }
            ConflictPolicy::KeepBoth => {
                self.plan.act(Action::CopyRemoteAsNewLocal {
                    remote: m.remote.clone(),
                });
                self.plan.act(update_remote(m, version, Content::Local));
            }
        }
    }

    /// Writes the merged series to whichever side does not already hold it.
    fn write_merge(
        &mut self,
        m: &Mapping,
        version: &RemoteVersion,
        local: &ItemState,
        remote: &ItemState,
        merge: &Merge,
        extra_remote: BTreeSet<FieldPath>,
    ) {
        let merged = merge.apply(&local.snapshot, &remote.snapshot, &extra_remote);
        let from_remote: BTreeSet<FieldPath> = merge
            .from_remote
            .iter()
            .cloned()
            .chain(extra_remote)
            .collect();
        let content = Content::Merged { from_remote };
        let local_changes = merged != local.snapshot;
        let remote_changes = merged != remote.snapshot;
        if local_changes {
            self.plan.act(update_local(m, version, content.clone()));
        }
        if remote_changes {
            self.plan.act(update_remote(m, version, content));
        }
        if !local_changes && !remote_changes {
            self.plan.act(link(m, version));
        }
    }

    fn local_deleted(
        &mut self,
        m: &Mapping,
        deleted_at: Option<Timestamp>,
        remote: Option<(&RemoteVersion, &ItemState)>,
    ) {
        if !m.base.in_window(&self.input.window) {
            return;
        }
        let direction = self.input.policy.direction;
        let (version, remote_state) = match remote {
            None => (&m.remote_version, None),
            Some((v, s)) => (v, Some(s)),
        };
        let remote_changed = remote_state.is_some_and(|s| s.snapshot != m.base.snapshot);
        match direction {
            // Import: the provider is the truth; a local deletion is not propagated and the remote version
            // comes back only if the provider changes it.
            Direction::Import => {
                if remote_changed {
                    self.plan.act(Action::CreateLocal {
                        remote: m.remote.clone(),
                        version: version.clone(),
                        restore: Some(m.local.clone()),
                    });
                }
                return;
            }
            Direction::Export => {
                self.plan.act(delete_remote(m, version));
                return;
            }
            Direction::Bidirectional => {}
        }
        if !remote_changed {
            self.plan.act(delete_remote(m, version));
            return;
        }
        let policy = self.input.policy.conflicts;
        self.deletion_conflict(m, Side::Local, remote_state, Some(version));
        let keep_deletion = match policy {
            ConflictPolicy::Ask => return,
            ConflictPolicy::LocalWins => true,
            ConflictPolicy::RemoteWins | ConflictPolicy::KeepBoth => false,
            ConflictPolicy::NewestWins => {
                !remote_is_newer(deleted_at, remote_state.and_then(|s| s.modified))
            }
        };
        if keep_deletion {
            self.plan.act(delete_remote(m, version));
        } else {
            self.plan.act(Action::CreateLocal {
                remote: m.remote.clone(),
                version: version.clone(),
                restore: Some(m.local.clone()),
            });
        }
    }

    fn remote_deleted(&mut self, m: &Mapping, local: Option<&ItemState>) {
        let direction = self.input.policy.direction;
        let local_changed = local.is_some_and(|s| s.snapshot != m.base.snapshot);
        match direction {
            Direction::Import => {
                self.plan.act(delete_local(m));
                return;
            }
            Direction::Export => {
                // The application is the truth: restore the item on the provider.
                self.plan.act(Action::CreateRemote {
                    local: m.local.clone(),
                });
                return;
            }
            Direction::Bidirectional => {}
        }
        if !local_changed {
            self.plan.act(delete_local(m));
            return;
        }
        let policy = self.input.policy.conflicts;
        self.deletion_conflict(m, Side::Remote, local, None);
        // The provider does not say when it deleted, so `newest_wins` keeps the local edit: an edit that
        // was made cannot be proven older than a deletion of unknown time.
        match policy {
            ConflictPolicy::Ask => {}
            ConflictPolicy::RemoteWins => self.plan.act(delete_local(m)),
            ConflictPolicy::LocalWins | ConflictPolicy::KeepBoth | ConflictPolicy::NewestWins => {
                self.plan.act(Action::CreateRemote {
                    local: m.local.clone(),
                })
            }
        }
    }

    /// Records the deletion conflict of a pair: `deleted_on` deleted the series, the other side still
    /// holds `survivor` (changed since the base). Both directions record the same shape; what each
    /// then does under the link's policy differs and stays with the caller.
    fn deletion_conflict(
        &mut self,
        m: &Mapping,
        deleted_on: Side,
        survivor: Option<&ItemState>,
        remote_version: Option<&RemoteVersion>,
    ) {
        let policy = self.input.policy.conflicts;
        let (local, remote) = match deleted_on {
            Side::Local => (None, survivor.cloned()),
            Side::Remote => (survivor.cloned(), None),
        };
        self.plan.conflicts.push(Conflict {
            kind: ConflictKind::Deletion,
            uid: Some(m.uid.clone()),
            local_id: Some(m.local.clone()),
            remote_id: Some(m.remote.clone()),
            remote_version: remote_version.cloned(),
            base: Some(m.base.clone()),
            local,
            remote,
            deleted_on: Some(deleted_on),
            fields: survivor
                .map(|s| {
                    m.base
                        .snapshot
                        .differing_paths(&s.snapshot)
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            options: ConflictKind::Deletion.options().to_vec(),
            settled_by: (policy != ConflictPolicy::Ask).then_some(policy),
        });
    }

    fn unlinked_remote(&mut self, moved: &BTreeMap<RemoteId, (RemoteId, &RemoteChange)>) {
        let moved_to: BTreeSet<&RemoteId> = moved.values().map(|(new, _)| new).collect();
        let window = self.input.window;
        let mut claimed: BTreeMap<&Uid, &RemoteId> = BTreeMap::new();
        let changes: Vec<&'a RemoteChange> = self.remote_changes.values().copied().collect();
        for change in changes {
            let RemoteChange::Upsert {
                id,
                version,
                uid,
                state,
            } = change
            else {
                continue;
            };
            if self.by_remote.contains_key(id)
                || moved_to.contains(id)
                || self.input.parked_remote.contains(id)
                || !state.in_window(&window)
                || !self.input.policy.direction.writes_local()
            {
                continue;
            }
            // One UID claimed by two remote items, or by a remote item while the local series with that
            // UID is linked to another one: an identity conflict, nothing is written.
            let local = self.input.local_by_uid.get(uid);
            let other_remote = claimed.get(uid).copied().or_else(|| {
                local
                    .and_then(|l| self.by_local.get(&l.id))
                    .map(|m| &m.remote)
            });
            if let Some(other) = other_remote {
                self.plan.conflicts.push(Conflict {
                    kind: ConflictKind::Identity,
                    uid: Some(uid.clone()),
                    local_id: local.map(|l| l.id.clone()),
                    remote_id: Some(id.clone()),
                    remote_version: Some(version.clone()),
                    base: None,
                    local: local.map(|l| l.state.clone()),
                    remote: Some(state.clone()),
                    deleted_on: None,
                    fields: vec![FieldPath::new(format!("remote_id:{other}"))],
                    options: ConflictKind::Identity.options().to_vec(),
                    settled_by: None,
                });
                continue;
            }
            claimed.insert(uid, id);
            match local {
                None => self.plan.act(Action::CreateLocal {
                    remote: id.clone(),
                    version: version.clone(),
                    restore: None,
                }),
                Some(series) => self.pair_existing(series, uid, id, version, state),
            }
        }
    }

    /// The same UID exists on both sides but was never linked (a first sync of two calendars that already
    /// share events): link them instead of duplicating, merging without a base.
    fn pair_existing(
        &mut self,
        series: &LocalSeries,
        uid: &Uid,
        remote: &RemoteId,
        version: &RemoteVersion,
        remote_state: &ItemState,
    ) {
        let local_state = match self.local_changes.get(&series.id) {
            Some(LocalChange::Upsert { state, .. }) => state,
            // Deleted locally since: the remote item is a new one for us.
            Some(LocalChange::Deleted { .. }) => return,
            None => &series.state,
        };
        let mapping = Mapping {
            uid: uid.clone(),
            local: series.id.clone(),
            remote: remote.clone(),
            remote_version: version.clone(),
            // Without a common ancestor, treat the remote as the base: then only real differences show,
            // and a clean pairing is a plain link.
            base: remote_state.clone(),
        };
        if local_state.snapshot == remote_state.snapshot {
            self.plan.act(link(&mapping, version));
            return;
        }
        match self.input.policy.direction {
            Direction::Import => self
                .plan
                .act(update_local(&mapping, version, Content::Remote)),
            Direction::Export => self
                .plan
                .act(update_remote(&mapping, version, Content::Local)),
            Direction::Bidirectional => {
                let merge = three_way(None, &local_state.snapshot, &remote_state.snapshot);
                let policy = self.input.policy.conflicts;
                self.plan.conflicts.push(Conflict {
                    kind: ConflictKind::Update,
                    uid: Some(uid.clone()),
                    local_id: Some(series.id.clone()),
                    remote_id: Some(remote.clone()),
                    remote_version: Some(version.clone()),
                    base: None,
                    local: Some(local_state.clone()),
                    remote: Some(remote_state.clone()),
                    deleted_on: None,
                    fields: merge.conflicts.iter().cloned().collect(),
                    options: ConflictKind::Update.options().to_vec(),
                    settled_by: (policy != ConflictPolicy::Ask).then_some(policy),
                });
                let take_remote = match policy {
                    ConflictPolicy::Ask => return,
                    ConflictPolicy::LocalWins | ConflictPolicy::KeepBoth => false,
                    ConflictPolicy::RemoteWins => true,
                    ConflictPolicy::NewestWins => {
                        remote_is_newer(local_state.modified, remote_state.modified)
                    }
                };
                if policy == ConflictPolicy::KeepBoth {
                    self.plan.act(Action::CopyRemoteAsNewLocal {
                        remote: remote.clone(),
                    });
                }
                if take_remote {
                    self.plan
                        .act(update_local(&mapping, version, Content::Remote));
                } else {
                    self.plan
                        .act(update_remote(&mapping, version, Content::Local));
                }
            }
        }
    }

    fn unlinked_local(&mut self, followed: &BTreeSet<LocalId>) {
        if !self.input.policy.direction.writes_remote() {
            return;
        }
        let paired: BTreeSet<&LocalId> = self
            .plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Link { local, .. }
                | Action::UpdateLocal { local, .. }
                | Action::UpdateRemote { local, .. } => Some(local),
                _ => None,
            })
            .collect();
        let identity: BTreeSet<&LocalId> = self
            .plan
            .conflicts
            .iter()
            .filter_map(|c| c.local_id.as_ref())
            .collect();
        let mut creates = Vec::new();
        for change in self.local_changes.values() {
            let LocalChange::Upsert { id, state, .. } = change else {
                continue;
            };
            if self.by_local.contains_key(id)
                || followed.contains(id)
                || paired.contains(id)
                || identity.contains(id)
                || self.input.parked_local.contains(id)
                || !state.in_window(&self.input.window)
            {
                continue;
            }
            creates.push(Action::CreateRemote { local: id.clone() });
        }
        self.plan.actions.extend(creates);
    }

    fn guard_deletions(&mut self) {
        let guard = self.input.policy.deletion_guard;
        let window = self.input.window;
        let linked_in_window = self
            .input
            .mappings
            .iter()
            .filter(|m| m.base.in_window(&window))
            .count();
        let count =
            |pred: fn(&Action) -> bool| self.plan.actions.iter().filter(|a| pred(a)).count();
        let local = count(|a| matches!(a, Action::DeleteLocal { .. }));
        let remote = count(|a| matches!(a, Action::DeleteRemote { .. }));
        for (side, deletions) in [(Side::Local, local), (Side::Remote, remote)] {
            let share = deletions as f64 / linked_in_window.max(1) as f64;
            if deletions >= guard.min_count && share > guard.max_share {
                self.plan = Plan {
                    suspect: Some(Suspect::TooManyDeletions {
                        side,
                        deletions,
                        linked_in_window,
                    }),
                    ..Plan::default()
                };
                return;
            }
        }
    }
}

/// `newest_wins`: the remote side wins only when it is known to be strictly newer.
fn remote_is_newer(local: Option<Timestamp>, remote: Option<Timestamp>) -> bool {
    match (local, remote) {
        (Some(l), Some(r)) => r > l,
        (None, Some(_)) => true,
        _ => false,
    }
}

fn update_remote(m: &Mapping, if_match: &RemoteVersion, content: Content) -> Action {
    Action::UpdateRemote {
        local: m.local.clone(),
        remote: m.remote.clone(),
        if_match: if_match.clone(),
        content,
    }
}

fn update_local(m: &Mapping, version: &RemoteVersion, content: Content) -> Action {
    Action::UpdateLocal {
        local: m.local.clone(),
        remote: m.remote.clone(),
        version: version.clone(),
        content,
    }
}

fn delete_remote(m: &Mapping, if_match: &RemoteVersion) -> Action {
    Action::DeleteRemote {
        local: m.local.clone(),
        remote: m.remote.clone(),
        if_match: if_match.clone(),
    }
}

fn delete_local(m: &Mapping) -> Action {
    Action::DeleteLocal {
        local: m.local.clone(),
        remote: m.remote.clone(),
    }
}

fn link(m: &Mapping, version: &RemoteVersion) -> Action {
    Action::Link {
        local: m.local.clone(),
        remote: m.remote.clone(),
        version: version.clone(),
    }
}
