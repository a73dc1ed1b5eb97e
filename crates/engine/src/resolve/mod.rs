//! Applying an admin's resolution of a recorded conflict to both systems: the steps come from
//! [`calbridge_sync::resolve`] (pure); here they are checked against both sides, carried out with
//! conditional writes (`If-Match` on the provider, the series version locally), read back, and only then
//! is the conflict closed, its audit entry written in the same transaction. The API's and the CLI's
//! one implementation.
//!
//! **Interrupted resolutions.** The decision (option, `merged`, who, when: [`Resolving`]) is kept on the
//! conflict before the first write, and each write is preceded by the sync's own write-ahead rows. A
//! resolution that stops between its writes (process killed, provider down) leaves the conflict open
//! with its decision, and it is finished as decided, never superseded by its own writes:
//! - the admin's retry of the same decision resumes it: a side may hold what this resolution writes
//!   there (or be gone where it deletes), and such a write is not made again;
//! - a sync that recognises one of its writes through the write-ahead rows (update and deletion
//!   conflicts: the plan then carries out the rest, a later edit of either side syncing as an edit on
//!   top of the decision) closes it as resolved at once;
//! - otherwise a sync resumes it like the retry once it is older than
//!   [`EngineConfig::resume_resolutions_after`] (a live resolution takes seconds): identity
//!   resolutions, whose remaining deletions the plan cannot make, finish this way;
//! - a side that moved for another reason (a later edit the write-ahead rows do not explain) makes an
//!   update or deletion conflict superseded as before (its audit entry names the interrupted decision);
//!   a resumption that finds such a side abandons the decision (`conflict.resolution_abandoned`) and
//!   leaves the conflict open for a person. Abandoning (so superseding, and replacing, below) undoes
//!   what the decision did only locally: its `keep_both` copy goes unless it was exported
//!   ([`undo_copy`](abandon::undo_copy)).
//!
//! **The fence.** Whoever acts on a decision (a new one, a retry or a sync resuming it, a replacement,
//! an abandonment) first swaps the conflict's record it read for its own by compare-and-set
//! (`Store::swap_conflict_resolving`); the loser does nothing more, so two parties never both write
//! for one decision or remove what the other made. A removal survives a process killed right after
//! the swap: a replacement's record names the decision it replaced until that is given up
//! ([`Replaced`]), and an abandonment takes the decision up before it takes it off ([`abandon`]).
//! Each step that ends a decision writes its audit entries in its own transaction: a conflict
//! closed with `conflict.resolved` (`Store::resolve_conflict_audited`), a decision given up with
//! `conflict.resolution_abandoned` (`Store::swap_conflict_resolving_audited`).
//!
//! **Another decision while one is in progress** (another option, or a `merge` with another
//! `merged`): what a person expects is to be told, not to have two decisions write one pair. So it is
//! refused ([`ResolveFailure::InProgress`], 409 `resolution_in_progress` naming the pending option,
//! who decided it and since when) while the pending one is younger than
//! [`EngineConfig::resume_resolutions_after`], since it may still be running. Older, it has stopped
//! and the new decision replaces it if it wrote nothing yet: see
//! [`refuse_another_decision`](decision::refuse_another_decision). An abandoned decision is gone
//! from the conflict, so any option applies again.
//!
//! Here: the request ([`Resolve`]), its entry points and the flow from the conflict's record to its
//! closing ([`carry_out`]). `decision`: the record kept on the conflict and the fence; `abandon`:
//! giving a decision up and what becomes of its copy; `exec`: checking both sides and carrying the
//! steps out; `remote_gone`: what still applies when the connection or link is gone; `failure`:
//! the answers.

mod abandon;
mod decision;
mod exec;
mod failure;
mod remote_gone;

use calbridge_providers::CalendarProvider;
use calbridge_store::{
    Conflict, ConflictId, ConflictKind as StoreConflictKind, ConflictState, NewAuditEntry, Store,
    StoreError, TenantId,
};
use calbridge_sync::resolve::{MergedInput, Recorded, ResolveError, Step, steps};
use calbridge_sync::{
    ConflictKind, FieldPath, ItemState, RemoteId, RemoteVersion, ResolutionOption,
};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::pairs::{ConflictSide, record_pair, to_json};
use crate::{EngineConfig, EngineError};

pub(crate) use abandon::{abandon, release_copy};
pub use decision::{Replaced, Resolving};
pub use failure::ResolveFailure;

use abandon::give_up_replaced;
use decision::{fence_lost, refuse_another_decision, swap_resolving};
use exec::Exec;
use failure::closed;
use remote_gone::{apply_locally, gone, still_applicable, without_remote};

/// One resolution request.
#[derive(Debug, Clone, Copy)]
pub struct Resolve<'a> {
    pub store: &'a dyn Store,
    /// The provider of the conflict's connection; `None` is enough for conflicts that write nothing to a
    /// provider (time conflicts, see [`needs_provider`]).
    pub provider: Option<&'a dyn CalendarProvider>,
    pub tenant: TenantId,
    pub conflict: ConflictId,
    /// `keep_local`, `keep_remote`, `keep_both`, `merge`, `delete_everywhere` or `restore`.
    pub option: &'a str,
    /// The `merged` body of a `merge`.
    pub merged: Option<&'a Value>,
    /// Who resolves (audit actor).
    pub actor: &'a str,
    pub config: &'a EngineConfig,
    pub now: Timestamp,
}

/// Whether resolving this conflict talks to its provider (every kind but `time`).
pub fn needs_provider(conflict: &Conflict) -> bool {
    conflict.kind != StoreConflictKind::Time && conflict.link_id.is_some()
}

fn sync_kind(kind: StoreConflictKind) -> ConflictKind {
    match kind {
        StoreConflictKind::Update => ConflictKind::Update,
        StoreConflictKind::Deletion => ConflictKind::Deletion,
        StoreConflictKind::Identity => ConflictKind::Identity,
        StoreConflictKind::Time => ConflictKind::Time,
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::WriteRemote(_) => "write_remote",
        Step::WriteLocal(_) => "write_local",
        Step::CopyRemoteAsNew => "copy_remote_as_new",
        Step::RenameRemoteAsNew => "rename_remote_as_new",
        Step::DeleteRemote => "delete_remote",
        Step::DeleteLocal => "delete_local",
        Step::RecreateLocal => "recreate_local",
        Step::RecreateRemote => "recreate_remote",
        Step::RelinkAndDeleteOther(_) => "relink_and_delete_other",
        Step::AcceptOverlap => "accept_overlap",
    }
}

/// Who carries a resolution out.
#[derive(Debug, Clone, Copy)]
enum By<'a> {
    /// The request of whoever decided (a retry of an interrupted decision resumes it).
    Request,
    /// A sync resuming an interrupted resolution (its audit actor, `sync:<connection>`).
    Sync(&'a str),
}

/// Applies the option to the conflict on both systems and closes it; see the module docs.
pub async fn resolve_conflict(r: Resolve<'_>) -> Result<Conflict, ResolveFailure> {
    carry_out(r, By::Request).await
}

/// A sync resuming the interrupted resolution `resolving` of a conflict: the same steps as the admin's
/// retry (`r.actor` is who decided), audited as completed by `sync_actor`.
pub(crate) async fn resume(r: Resolve<'_>, sync_actor: &str) -> Result<Conflict, ResolveFailure> {
    carry_out(r, By::Sync(sync_actor)).await
}

/// Closes a conflict whose interrupted resolution a sync recognised by its write-ahead rows (the
/// plan carries out whatever the resolution had not written yet): resolved with the decided option,
/// `resolved_by` who decided, audited as completed by `sync_actor`. `false` when the conflict was
/// closed meanwhile.
pub(crate) async fn complete_recognised(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    resolving: &Resolving,
    sync_actor: &str,
    config: &EngineConfig,
    now: Timestamp,
) -> Result<bool, EngineError> {
    let interrupted = resolving.interruption(sync_actor, "recognised");
    let resolution = json!({"option": resolving.option, "interrupted": interrupted});
    // Closed with its audit entry, in one transaction (see `carry_out`).
    let entry = audit_entry(
        conflict,
        sync_actor,
        "conflict.resolved",
        resolving.option,
        json!({"interrupted": interrupted}),
    );
    match store
        .resolve_conflict_audited(
            tenant,
            conflict.id,
            &resolution.to_string(),
            &resolving.actor,
            now,
            vec![entry],
        )
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if config.crash_after_closing {
        return Err(EngineError::Content(
            "stopped after closing the conflict (crash test)".into(),
        ));
    }
    Ok(true)
}

/// The audit entry of what became of a resolution of `conflict`: `action` by `actor`, its details
/// the option, the conflict's kind and event UID, and the fields of `more` (an object).
fn audit_entry(
    conflict: &Conflict,
    actor: &str,
    action: &str,
    option: ResolutionOption,
    more: Value,
) -> NewAuditEntry {
    let mut details = json!({
        "option": option,
        "kind": sync_kind(conflict.kind),
        "event_uid": conflict.event_uid,
    });
    if let (Some(details), Value::Object(more)) = (details.as_object_mut(), more) {
        details.extend(more);
    }
    NewAuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: conflict.id.to_string(),
        details_json: details.to_string(),
    }
}

async fn carry_out(r: Resolve<'_>, by: By<'_>) -> Result<Conflict, ResolveFailure> {
    let store = r.store;
    let conflict = store.get_conflict(r.tenant, r.conflict).await?;
    if conflict.state != ConflictState::Open {
        return Err(ResolveFailure::AlreadyResolved);
    }
    let offered: Vec<calbridge_sync::ResolutionOption> =
        serde_json::from_str(&conflict.options_json).unwrap_or_default();
    let kind = sync_kind(conflict.kind);
    let refuse = || {
        ResolveFailure::Refused(ResolveError::NotApplicable {
            option: r.option.to_owned(),
            offered: conflict.options_json.clone(),
        })
    };
    let option: calbridge_sync::ResolutionOption =
        serde_json::from_value(json!(r.option)).map_err(|_| refuse())?;
    let local_side: Option<ConflictSide> = conflict
        .local_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let remote_side: Option<ConflictSide> = conflict
        .remote_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let base: Option<ItemState> = conflict
        .base_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let fields: Vec<FieldPath> = serde_json::from_str(&conflict.fields_json).unwrap_or_default();
    let merged: Option<MergedInput> = match r.merged {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
            ResolveFailure::Refused(ResolveError::MergedInvalid(format!(
                "each field is a string, null, or {{\"from\": \"local\"|\"remote\"}}: {e}"
            )))
        })?),
    };
    let local_state = local_side.as_ref().and_then(|s| s.state.as_ref());
    let remote_state = remote_side.as_ref().and_then(|s| s.state.as_ref());
    let recorded = Recorded {
        kind,
        offered: &offered,
        base: base.as_ref(),
        local: local_state,
        remote: remote_state,
        fields: &fields,
    };
    let plan = steps(&recorded, option, merged.as_ref())?;
    let merged_value = r.merged.filter(|v| !v.is_null()).cloned();
    let pending = Resolving::of(&conflict);
    // The same decision, begun earlier and interrupted: what it already wrote is this resolution's own.
    let resumed = pending
        .clone()
        .filter(|p| p.option == option && p.merged == merged_value);
    // Another decision than the one in progress: refused while that one may still be running;
    // past that, this one replaces it (its `keep_both` copy goes; any other write of it shows on a
    // recorded side, which `check` then refuses as changed).
    let replaced = match pending {
        Some(p) if resumed.is_none() => {
            refuse_another_decision(&p, r.config, r.now)?;
            Some(p)
        }
        _ => None,
    };

    let mut steps_done: Vec<&str> = plan.iter().map(step_name).collect();
    let mut remote_gone = None;
    // The decision this one replaced, as the conflict's record names it once given up (below).
    let mut replaced_record = replaced.as_ref().map(|p| Replaced::of(p, option));
    let actor = match by {
        By::Request => r.actor,
        By::Sync(sync) => sync,
    };
    let confirmed = if plan == [Step::AcceptOverlap] {
        // Nothing to write: the overlap is accepted as it stands (its fingerprint keeps it from being
        // reported again while the two events keep their times).
        let fingerprint = conflict
            .local_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .and_then(|v| v.get("fingerprint").cloned())
            .unwrap_or(Value::Null);
        json!({ "accepted": fingerprint })
    } else if let Some(what) = gone(&r, &conflict).await? {
        // What is left is local data only: options that need nothing else still apply there.
        let local_steps =
            without_remote(&recorded, option, &plan).ok_or_else(|| ResolveFailure::RemoteGone {
                what,
                option: r.option.to_owned(),
                still: still_applicable(&recorded),
            })?;
        steps_done = local_steps.iter().map(step_name).collect();
        remote_gone = Some(what);
        apply_locally(&r, &conflict, &recorded, &local_steps).await?
    } else {
        let provider = r.provider.ok_or_else(|| {
            ResolveFailure::Engine(EngineError::Content(
                "this conflict needs its connection's provider".into(),
            ))
        })?;
        let remote_ids = remote_side.as_ref().map(|side| {
            (
                side.id.clone().map(RemoteId::new),
                side.version.clone().map(RemoteVersion::new),
            )
        });
        let mut exec = Exec::open(&r, &conflict, provider, remote_ids, resumed.is_some()).await?;
        exec.check(&recorded, &plan).await?;
        // The decision goes on the conflict before the first write (see the module docs): a new
        // one, or the one resumed, taken up again now. Compare-and-set against the record read
        // above, the fence between parties acting on one decision at once (a replacement, a sync
        // or a retry resuming it, a sync abandoning it): only one goes on, and nobody else removes
        // or writes what the winner's decision makes.
        let record = match &resumed {
            Some(p) => Resolving {
                resumed_at: Some(r.now),
                ..p.clone()
            },
            None => Resolving {
                option,
                merged: merged_value.clone(),
                actor: r.actor.to_owned(),
                started_at: r.now,
                resumed_at: None,
                // Named by the swap itself, so that giving it up is finished by whoever acts on
                // this record next should this process die right after the swap.
                replaced: replaced.as_ref().map(|p| Replaced::of(p, option)),
            },
        };
        let record_json = to_json(&record)?;
        if !swap_resolving(
            store,
            r.tenant,
            conflict.id,
            conflict.resolving_json.as_deref(),
            Some(&record_json),
        )
        .await?
        {
            return Err(fence_lost(store, r.tenant, conflict.id).await);
        }
        if r.config.crash_after_resolution_fence {
            return Err(ResolveFailure::Interrupted(0));
        }
        // The decision this one replaced (now, or by a replacement that stopped before it was
        // done) is given up before anything is written: what it did only locally is undone (its
        // `keep_both` copy, unless exported; any other write of it would have failed `check`).
        let Some((held, _)) = give_up_replaced(
            store,
            r.tenant,
            &conflict,
            record,
            record_json,
            actor,
            r.config,
            r.now,
        )
        .await?
        else {
            return Err(fence_lost(store, r.tenant, conflict.id).await);
        };
        replaced_record = held.replaced;
        if let Err(e) = exec.carry_out(&plan).await {
            if resumed.is_none() && exec.writes == 0 {
                // Nothing was written (or what was, undone): the conflict is as it was, and no
                // sync is to finish this decision.
                if let Err(clear) = store
                    .set_conflict_resolving(r.tenant, conflict.id, None)
                    .await
                {
                    tracing::warn!(conflict = %conflict.id, error = %clear, "could not clear a resolution that wrote nothing");
                }
            }
            return Err(e);
        }
        for pending in std::mem::take(&mut exec.pending) {
            record_pair(store, r.tenant, exec.link.id, r.now, &pending).await?;
        }
        Value::Array(exec.confirmed)
    };

    let mut resolution = json!({"option": option, "steps": steps_done, "confirmed": confirmed});
    if let Some(what) = remote_gone {
        resolution["remote_gone"] = json!(what);
    }
    let interrupted = resumed.as_ref().map(|p| p.interruption(actor, "resumed"));
    if let Some(i) = &interrupted {
        resolution["interrupted"] = i.clone();
    }
    // The decision this one replaced (begun, never finished, past `resume_resolutions_after`).
    let replaced = replaced_record.map(|p| {
        json!({"option": p.option, "decided_by": p.decided_by, "started_at": p.started_at, "copy": p.copy})
    });
    if let Some(p) = &replaced {
        resolution["replaced"] = p.clone();
    }
    // `resolved_by` is who decided, whoever finished it.
    let decided_by = resumed.as_ref().map_or(r.actor, |p| p.actor.as_str());
    // Closed with its `conflict.resolved` entry, in one transaction: a process killed right after
    // leaves both or neither. (Written after the close, a kill in between left a resolved conflict
    // the audit log never mentioned.)
    let entry = audit_entry(
        &conflict,
        actor,
        "conflict.resolved",
        option,
        json!({
            "steps": steps_done,
            "confirmed": confirmed,
            "remote_gone": remote_gone,
            "interrupted": interrupted,
            "replaced": replaced,
        }),
    );
    let resolved = store
        .resolve_conflict_audited(
            r.tenant,
            conflict.id,
            &resolution.to_string(),
            decided_by,
            r.now,
            vec![entry],
        )
        .await
        .map_err(closed)?;
    if r.config.crash_after_closing {
        return Err(ResolveFailure::Interrupted(0));
    }
    Ok(resolved)
}
