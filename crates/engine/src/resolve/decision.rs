//! The decision kept on a conflict while its resolution is in progress ([`Resolving`], and the
//! decision it replaced, [`Replaced`]), the compare-and-set fence whoever acts on it passes, and
//! whether another decision may take its place.

use calbridge_store::{
    Conflict, ConflictId, ConflictState, NewAuditEntry, Store, StoreError, TenantId,
};
use calbridge_sync::ResolutionOption;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::EngineConfig;

use super::ResolveFailure;

/// A resolution begun and not known to be finished, as kept on its conflict (`conflicts.resolving`):
/// recorded before the resolution's first write, so whoever finishes it (the admin's retry, a sync)
/// carries out the decision the admin made. Kept when the conflict closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolving {
    pub option: ResolutionOption,
    /// The `merged` body of a `merge` (a retry with another body is another decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<Value>,
    /// Who decided: the conflict's `resolved_by`, whoever finishes the resolution.
    pub actor: String,
    pub started_at: Timestamp,
    /// When a retry or a sync last took it up again (claimed on the conflict before its first write):
    /// from then on it may be running again, so another decision waits as it does after
    /// `started_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<Timestamp>,
    /// The decision this one replaced (see [`Replaced`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Replaced>,
}

/// The decision a replacement took the conflict over from, named on the new decision's record by
/// the very compare-and-set that replaced it: giving it up (removing its `keep_both` copy, its
/// `conflict.resolution_abandoned` entry) then survives a process killed right after that swap.
/// Until `abandoned`, whoever acts on the record next (the replacement itself, a retry or a sync
/// resuming the new decision, a sync giving the new decision up) does that first and marks it done
/// by compare-and-set, its audit entries in the same transaction; a sync keeps the copy parked meanwhile (before, it was unparked by the swap
/// and the next sync exported it as a new event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replaced {
    pub option: ResolutionOption,
    pub decided_by: String,
    pub started_at: Timestamp,
    /// Its `keep_both` copy is to be removed (under [`undo_copy`](super::abandon::undo_copy)'s
    /// rules): it was a `keep_both`, or had itself replaced one without removing its copy yet.
    /// Never when the new decision is `keep_both`: a conflict's copy has one UID, so that decision
    /// adopts it as its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_to_remove: bool,
    /// Given up: its copy removed or kept, its audit entry written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// What became of its copy ([`undo_copy`](super::abandon::undo_copy)'s answer), once given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<Value>,
    /// The decision this one had itself replaced and not given up yet when it was replaced in turn
    /// (a chain of replacements, each stopped before giving up the one before): given up together
    /// with it, each with its own `conflict.resolution_abandoned` entry. Before, only its copy was
    /// carried along, and the decision itself was never audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Box<Replaced>>,
}

impl Replaced {
    /// `pending` as a decision `option` replaces it.
    pub(super) fn of(pending: &Resolving, option: ResolutionOption) -> Self {
        Self {
            option: pending.option,
            decided_by: pending.actor.clone(),
            started_at: pending.started_at,
            copy_to_remove: option != ResolutionOption::KeepBoth
                && (pending.option == ResolutionOption::KeepBoth || pending.copy_to_remove()),
            abandoned: false,
            copy: None,
            replaced: pending
                .replaced
                .clone()
                .filter(|r| !r.abandoned)
                .map(Box::new),
        }
    }

    /// The decisions given up with this one: those it had replaced, not given up yet (see
    /// [`Replaced::replaced`]), then itself, oldest first; each with the option that replaced it
    /// (`by` for this one).
    pub(super) fn chain(&self, by: ResolutionOption) -> Vec<(&Replaced, ResolutionOption)> {
        let mut chain = vec![(self, by)];
        while let Some(earlier) = chain
            .last()
            .and_then(|&(later, _)| Some((later.replaced.as_deref()?, later.option)))
        {
            chain.push(earlier);
        }
        chain.reverse();
        chain
    }
}

/// An option's API name (what [`Resolve::option`](super::Resolve::option) takes).
pub(super) fn option_name(option: ResolutionOption) -> String {
    json!(option).as_str().unwrap_or_default().to_owned()
}

impl Resolving {
    /// Whether the decision this one replaced still has a `keep_both` copy to remove (which a sync
    /// keeps parked until then, as it does a `keep_both` decision's own).
    pub(crate) fn copy_to_remove(&self) -> bool {
        self.replaced
            .as_ref()
            .is_some_and(|r| r.copy_to_remove && !r.abandoned)
    }

    /// The resolution in progress on a conflict, if any (an unreadable record counts as none).
    pub(crate) fn of(conflict: &Conflict) -> Option<Self> {
        serde_json::from_str(conflict.resolving_json.as_deref()?).ok()
    }

    /// The resolution in progress on an open conflict, as the API shows it: begun and not finished
    /// (a closed conflict keeps its decision's record, but nothing is in progress there any more).
    pub fn in_progress(conflict: &Conflict) -> Option<Self> {
        (conflict.state == ConflictState::Open)
            .then(|| Self::of(conflict))
            .flatten()
    }

    /// Since when it may be running: begun, or taken up again.
    pub(crate) fn active_since(&self) -> Timestamp {
        self.resumed_at
            .map_or(self.started_at, |at| at.max(self.started_at))
    }

    /// The option's API name (what [`Resolve::option`](super::Resolve::option) takes).
    pub fn option_name(&self) -> String {
        option_name(self.option)
    }

    /// What a resolution finished after an interruption records about that (in its `resolution` and
    /// its `conflict.resolved` audit entry): `how` is `resumed` (its remaining steps carried out) or
    /// `recognised` (a sync recognised its writes; the plan carries out the rest).
    pub(super) fn interruption(&self, completed_by: &str, how: &str) -> Value {
        json!({
            "started_at": self.started_at,
            "decided_by": self.actor,
            "completed_by": completed_by,
            "how": how,
        })
    }
}

/// Swaps the decision on `conflict` from `expected` to `resolving_json` by compare-and-set
/// (`swap_conflict_resolving`): `false` when another party swapped first (the store answers
/// `Conflict`), so that this one does nothing more; any other error passes on.
pub(super) async fn swap_resolving(
    store: &dyn Store,
    tenant: TenantId,
    conflict: ConflictId,
    expected: Option<&str>,
    resolving_json: Option<&str>,
) -> Result<bool, StoreError> {
    swap_resolving_audited(
        store,
        tenant,
        conflict,
        expected,
        resolving_json,
        Vec::new(),
    )
    .await
}

/// [`swap_resolving`] with `entries` appended to the audit log in the same transaction
/// (`swap_conflict_resolving_audited`): a decision marked given up and the entries saying so are
/// written together or not at all.
pub(super) async fn swap_resolving_audited(
    store: &dyn Store,
    tenant: TenantId,
    conflict: ConflictId,
    expected: Option<&str>,
    resolving_json: Option<&str>,
    entries: Vec<NewAuditEntry>,
) -> Result<bool, StoreError> {
    match store
        .swap_conflict_resolving_audited(tenant, conflict, expected, resolving_json, entries)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The answer to a request that lost the compare-and-set on the conflict's decision (someone else
/// took the decision up, replaced or gave it up, or closed the conflict a moment ago).
pub(super) async fn fence_lost(
    store: &dyn Store,
    tenant: TenantId,
    conflict: ConflictId,
) -> ResolveFailure {
    match store.get_conflict(tenant, conflict).await {
        Ok(c) if c.state != ConflictState::Open => ResolveFailure::AlreadyResolved,
        Ok(c) => match Resolving::of(&c) {
            Some(p) => ResolveFailure::InProgress {
                option: p.option_name(),
                decided_by: p.actor.clone(),
                since: p.started_at,
                then: "it was taken up a moment ago; it is shown with the conflict".into(),
            },
            // Given up meanwhile (a sync found a side moved).
            None => ResolveFailure::Changed("local or remote"),
        },
        Err(e) => ResolveFailure::Store(e),
    }
}

/// Whether a request may decide otherwise than the resolution in progress `pending` (another
/// option, or a `merge` with another `merged` body). Not while `pending` may still be running
/// (younger than [`EngineConfig::resume_resolutions_after`]: a live resolution takes seconds, and two
/// decisions writing one pair would race): 409 `resolution_in_progress`, naming it. Past that age
/// it has stopped, and a sync finishes it unless a person decides otherwise first: the new decision
/// replaces it when both sides are still what the conflict recorded (a write of `keep_local`,
/// `keep_remote`, `merge` or `delete_everywhere` shows there and is refused as `conflict_changed`,
/// and the next sync finishes it; `keep_both`'s copy saved locally is removed). A pending `restore`
/// is never replaced: its writes re-create the event as a new item, which those checks cannot see,
/// so a sync finishes it. An abandoned decision is no longer pending (any option applies).
pub(super) fn refuse_another_decision(
    pending: &Resolving,
    config: &EngineConfig,
    now: Timestamp,
) -> Result<(), ResolveFailure> {
    let stopped = pending
        .active_since()
        .checked_add(config.resume_resolutions_after)
        .ok();
    let then = match (pending.option, stopped) {
        (ResolutionOption::Restore, _) | (_, None) => {
            "a sync of its connection finishes it".to_owned()
        }
        (_, Some(at)) if at <= now => return Ok(()),
        (_, Some(at)) => format!(
            "from {at} on a sync finishes it, and another decision is accepted if it has written nothing yet"
        ),
    };
    Err(ResolveFailure::InProgress {
        option: pending.option_name(),
        decided_by: pending.actor.clone(),
        since: pending.started_at,
        then,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairs::to_json;

    fn record(option: ResolutionOption) -> Resolving {
        Resolving {
            option,
            merged: None,
            actor: "key:a".into(),
            started_at: Timestamp::UNIX_EPOCH,
            resumed_at: None,
            replaced: None,
        }
    }

    #[test]
    fn a_record_written_before_replaced_existed_still_reads() {
        let old = r#"{"option":"keep_both","actor":"key:a","started_at":"2026-01-01T00:00:00Z"}"#;
        let read: Resolving = serde_json::from_str(old).unwrap();
        assert_eq!(read.replaced, None);
        assert!(!read.copy_to_remove());
        // And a record without a replaced decision is written as before.
        let written = serde_json::to_value(record(ResolutionOption::KeepLocal)).unwrap();
        assert!(written.get("replaced").is_none(), "{written}");
    }

    #[test]
    fn the_copy_to_remove_follows_replacements_until_given_up() {
        let both = record(ResolutionOption::KeepBoth);
        let local = Resolving {
            replaced: Some(Replaced::of(&both, ResolutionOption::KeepLocal)),
            ..record(ResolutionOption::KeepLocal)
        };
        assert!(local.copy_to_remove());
        let back: Resolving = serde_json::from_str(&to_json(&local).unwrap()).unwrap();
        assert_eq!(back, local);
        // Replaced again before its copy went: the next decision removes it; `keep_both` adopts it.
        assert!(Replaced::of(&local, ResolutionOption::Merge).copy_to_remove);
        assert!(!Replaced::of(&local, ResolutionOption::KeepBoth).copy_to_remove);
        // Once given up, nothing is left to remove.
        let done = Resolving {
            replaced: local.replaced.clone().map(|r| Replaced {
                abandoned: true,
                ..r
            }),
            ..local.clone()
        };
        assert!(!done.copy_to_remove());
        assert!(!Replaced::of(&done, ResolutionOption::Merge).copy_to_remove);
        // A decision without a copy leaves none to remove.
        assert!(
            !Replaced::of(
                &record(ResolutionOption::KeepRemote),
                ResolutionOption::KeepLocal
            )
            .copy_to_remove
        );
    }

    #[test]
    fn a_chain_of_replacements_carries_every_decision_not_given_up() {
        use ResolutionOption::{KeepBoth, KeepLocal, KeepRemote, Merge};
        let both = record(KeepBoth);
        let local = Resolving {
            replaced: Some(Replaced::of(&both, KeepLocal)),
            ..record(KeepLocal)
        };
        let merge = Resolving {
            replaced: Some(Replaced::of(&local, Merge)),
            ..record(Merge)
        };
        let by_remote = Replaced::of(&merge, KeepRemote);
        let chain: Vec<_> = by_remote
            .chain(KeepRemote)
            .into_iter()
            .map(|(r, by)| (r.option, by))
            .collect();
        assert_eq!(
            chain,
            [
                (KeepBoth, KeepLocal),
                (KeepLocal, Merge),
                (Merge, KeepRemote)
            ]
        );
        let back: Replaced = serde_json::from_str(&to_json(&by_remote).unwrap()).unwrap();
        assert_eq!(back, by_remote);
        // What was given up already is not carried along.
        let given_up = Resolving {
            replaced: merge.replaced.clone().map(|r| Replaced {
                abandoned: true,
                ..r
            }),
            ..merge.clone()
        };
        assert_eq!(
            Replaced::of(&given_up, KeepRemote).chain(KeepRemote).len(),
            1
        );
    }
}
