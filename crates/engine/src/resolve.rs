//! Applying an admin's resolution of a recorded conflict to both systems: the steps come from
//! [`calbridge_sync::resolve`] (pure); here they are checked against both sides, carried out with
//! conditional writes (`If-Match` on the provider, the series version locally), read back, and only then
//! is the conflict closed and the audit entry written. The API's and the CLI's one implementation.
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
//!   ([`undo_copy`]).
//!
//! **The fence.** Whoever acts on a decision (a new one, a retry or a sync resuming it, a replacement,
//! an abandonment) first swaps the conflict's record it read for its own by compare-and-set
//! (`Store::swap_conflict_resolving`); the loser does nothing more, so two parties never both write
//! for one decision or remove what the other made. A removal survives a process killed right after
//! the swap: a replacement's record names the decision it replaced until that is given up
//! ([`Replaced`]), and an abandonment takes the decision up before it takes it off ([`abandon`]).
//!
//! **Another decision while one is in progress** (another option, or a `merge` with another
//! `merged`): what a person expects is to be told, not to have two decisions write one pair. So it is
//! refused ([`ResolveFailure::InProgress`], 409 `resolution_in_progress` naming the pending option,
//! who decided it and since when) while the pending one is younger than
//! [`EngineConfig::resume_resolutions_after`], since it may still be running. Older, it has stopped
//! and the new decision replaces it if it wrote nothing yet: see [`refuse_another_decision`]. An
//! abandoned decision is gone from the conflict, so any option applies again.

use calbridge_providers::{
    CalendarId as RemoteCalendarId, CalendarProvider, Etag, ItemContent, ProviderError, ReadItem,
    RemoteId as ProviderRemoteId,
};
use calbridge_store::{
    Conflict, ConflictId, ConflictKind as StoreConflictKind, ConflictState, Link, NewAuditEntry,
    Series, Store, StoreError, TenantId,
};
use calbridge_sync::resolve::{
    MergedInput, Recorded, ResolveError, SETTABLE, Step, Version, copy_uid, steps,
};
use calbridge_sync::{
    ConflictKind, FieldPath, ItemState, LocalId, RemoteId, RemoteVersion, ResolutionOption, Uid,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::local::{Parsed, calendar_with, storable, with_uid};
use crate::pairs::{
    ConflictSide, Intent, IntentSide, PENDING_CREATE, Pending, StoredBase, TombstoneAt, create_key,
    forget_pair, record_pair, series_id, to_json, write_ahead,
};
use crate::{EngineConfig, EngineError};

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

/// Why a resolution was not applied. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum ResolveFailure {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("this conflict is already resolved")]
    AlreadyResolved,
    /// The option does not apply (or is not an option at all), or `merged` is missing or invalid.
    #[error("{0}")]
    Refused(#[from] ResolveError),
    /// A side changed again after the conflict was recorded (or refused a conditional write).
    #[error(
        "the {0} version changed again after this conflict was recorded; nothing was overwritten. Sync again and resolve the conflict it records"
    )]
    Changed(&'static str),
    /// The provider could not be reached or refused the request.
    #[error("the provider could not be reached: {0}")]
    Provider(ProviderError),
    /// Written, but reading back did not show what was written (the conflict stays open).
    #[error("read-back after the write differs: {0}")]
    ReadBack(String),
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The conflict's connection (or its link) was deleted: the remote side can no longer be read or
    /// written, so an option that needs it cannot be applied. Nothing was written.
    #[error(
        "the conflict's {what} was deleted, so its remote side can no longer be read or written and `{option}` cannot be applied; {still}"
    )]
    RemoteGone {
        what: &'static str,
        option: String,
        /// What can still be done.
        still: String,
    },
    /// Stopped by the test-only crash knob (`EngineConfig::crash_after_resolution_writes`).
    #[error("interrupted after {0} write(s)")]
    Interrupted(usize),
    /// Another decision (option, or `merged` body) than the resolution in progress on the conflict,
    /// which may still be running or is left for a sync to finish (see [`refuse_another_decision`]).
    /// Nothing was written.
    #[error(
        "a `{option}` resolution of this conflict, decided by {decided_by}, is in progress since {since}; send the same decision again to finish it, or wait: {then}"
    )]
    InProgress {
        option: String,
        decided_by: String,
        since: Timestamp,
        /// What happens to it, and when another decision is accepted.
        then: String,
    },
}

impl ResolveFailure {
    /// The stable code an API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveFailure::Refused(ResolveError::NotApplicable { .. }) => "option_not_applicable",
            ResolveFailure::Refused(ResolveError::MergedMissing(_)) => "merged_required",
            ResolveFailure::Refused(ResolveError::MergedInvalid(_)) => "invalid_merged",
            ResolveFailure::Changed(_) => "conflict_changed",
            ResolveFailure::AlreadyResolved => "already_resolved",
            ResolveFailure::Provider(_) => "provider_unavailable",
            ResolveFailure::ReadBack(_) => "read_back_failed",
            ResolveFailure::RemoteGone { .. } => "connection_deleted",
            ResolveFailure::Interrupted(_) => "interrupted",
            ResolveFailure::InProgress { .. } => "resolution_in_progress",
            ResolveFailure::Store(StoreError::NotFound { .. }) => "not_found",
            ResolveFailure::Store(_) | ResolveFailure::Engine(_) => "internal",
        }
    }
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

fn provider_error(e: ProviderError) -> ResolveFailure {
    match e {
        ProviderError::PreconditionFailed => ResolveFailure::Changed("remote"),
        other => ResolveFailure::Provider(other),
    }
}

fn local_error(e: StoreError) -> ResolveFailure {
    match e {
        StoreError::PreconditionFailed { .. } => ResolveFailure::Changed("local"),
        other => ResolveFailure::Store(other),
    }
}

fn content_error(e: impl std::fmt::Display) -> ResolveFailure {
    ResolveFailure::Refused(ResolveError::MergedInvalid(e.to_string()))
}

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
/// by compare-and-set; a sync keeps the copy parked meanwhile (before, it was unparked by the swap
/// and the next sync exported it as a new event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replaced {
    pub option: ResolutionOption,
    pub decided_by: String,
    pub started_at: Timestamp,
    /// Its `keep_both` copy is to be removed (under [`undo_copy`]'s rules): it was a `keep_both`, or
    /// had itself replaced one without removing its copy yet. Never when the new decision is
    /// `keep_both`: a conflict's copy has one UID, so that decision adopts it as its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_to_remove: bool,
    /// Given up: its copy removed or kept, its audit entry written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// What became of its copy ([`undo_copy`]'s answer), once given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<Value>,
}

impl Replaced {
    /// `pending` as a decision `option` replaces it.
    fn of(pending: &Resolving, option: ResolutionOption) -> Self {
        Self {
            option: pending.option,
            decided_by: pending.actor.clone(),
            started_at: pending.started_at,
            copy_to_remove: option != ResolutionOption::KeepBoth
                && (pending.option == ResolutionOption::KeepBoth || pending.copy_to_remove()),
            abandoned: false,
            copy: None,
        }
    }
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

    /// The option's API name (what [`Resolve::option`] takes).
    pub fn option_name(&self) -> String {
        json!(self.option).as_str().unwrap_or_default().to_owned()
    }

    /// What a resolution finished after an interruption records about that (in its `resolution` and
    /// its `conflict.resolved` audit entry): `how` is `resumed` (its remaining steps carried out) or
    /// `recognised` (a sync recognised its writes; the plan carries out the rest).
    fn interruption(&self, completed_by: &str, how: &str) -> Value {
        json!({
            "started_at": self.started_at,
            "decided_by": self.actor,
            "completed_by": completed_by,
            "how": how,
        })
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

/// A conflict closed meanwhile (two admins, or a sync finishing an interrupted resolution).
fn closed(e: StoreError) -> ResolveFailure {
    match e {
        StoreError::Conflict(_) => ResolveFailure::AlreadyResolved,
        other => ResolveFailure::Store(other),
    }
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
    now: Timestamp,
) -> Result<bool, StoreError> {
    let interrupted = resolving.interruption(sync_actor, "recognised");
    let resolution = json!({"option": resolving.option, "interrupted": interrupted});
    match store
        .resolve_conflict(
            tenant,
            conflict.id,
            &resolution.to_string(),
            &resolving.actor,
            now,
        )
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => return Ok(false),
        Err(e) => return Err(e),
    }
    audit(
        store,
        tenant,
        conflict,
        sync_actor,
        "conflict.resolved",
        resolving.option,
        json!({"interrupted": interrupted}),
    )
    .await?;
    Ok(true)
}

/// Gives up an interrupted resolution a sync could not finish because a side moved for another reason
/// (its resumption found the side moved, or the conflict is superseded): the decision goes from the
/// conflict (audit `conflict.resolution_abandoned`), and what it did only locally is undone
/// ([`undo_copy`]: a `keep_both` copy never exported; also the copy of a decision it replaced, if
/// that was not removed yet). The conflict itself is left as it is (open for a person, or closed as
/// superseded by the caller). `false` (nothing done) when someone else took the decision up,
/// replaced or gave it up meanwhile, or the conflict closed: it is taken up by compare-and-set
/// against `conflict.resolving_json` as the caller read it.
///
/// Taken up first (the same record with `resumed_at` = `now`, as a resumption claims it), and taken
/// off only once the copy is dealt with: a process killed in between leaves the decision on the
/// conflict, its copy parked, and the next sync gives it up again. (Taken off first, such a kill left
/// the copy unparked, and the next sync exported it as a new event.)
#[allow(clippy::too_many_arguments)]
pub(crate) async fn abandon(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    resolving: &Resolving,
    sync_actor: &str,
    why: &str,
    config: &EngineConfig,
    now: Timestamp,
) -> Result<bool, EngineError> {
    let claimed = Resolving {
        resumed_at: Some(now),
        ..resolving.clone()
    };
    let claimed_json = to_json(&claimed)?;
    if !swap_resolving(
        store,
        tenant,
        conflict.id,
        conflict.resolving_json.as_deref(),
        Some(&claimed_json),
    )
    .await?
    {
        return Ok(false);
    }
    if config.crash_after_resolution_fence {
        return Err(EngineError::Content(
            "stopped after taking the decision up (crash test)".into(),
        ));
    }
    let Some((held, held_json)) = give_up_replaced(
        store,
        tenant,
        conflict,
        claimed,
        claimed_json,
        sync_actor,
        now,
    )
    .await?
    else {
        return Ok(false);
    };
    let copy = match (held.option, copy_place(store, tenant, conflict).await?) {
        (ResolutionOption::KeepBoth, Some((link, calendar))) => {
            Some(undo_copy(store, tenant, conflict, link, calendar, now).await?)
        }
        _ => None,
    };
    if !swap_resolving(store, tenant, conflict.id, Some(&held_json), None).await? {
        return Ok(false);
    }
    audit(
        store,
        tenant,
        conflict,
        sync_actor,
        "conflict.resolution_abandoned",
        resolving.option,
        json!({
            "decided_by": resolving.actor,
            "started_at": resolving.started_at,
            "reason": why,
            "copy": copy,
        }),
    )
    .await?;
    Ok(true)
}

/// Gives up the decision the record `held` names as replaced, unless that was done (see
/// [`Replaced`]): removes its copy, marks it `abandoned` by compare-and-set against `held_json` (the
/// record as this party swapped it in), then audits it (`conflict.resolution_abandoned`, by `actor`).
/// Returns the record the conflict holds afterwards, or `None` when another party took it meanwhile.
async fn give_up_replaced(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    held: Resolving,
    held_json: String,
    actor: &str,
    now: Timestamp,
) -> Result<Option<(Resolving, String)>, EngineError> {
    let Some(replaced) = held.replaced.clone().filter(|r| !r.abandoned) else {
        return Ok(Some((held, held_json)));
    };
    let copy = match (
        replaced.copy_to_remove,
        copy_place(store, tenant, conflict).await?,
    ) {
        (true, Some((link, calendar))) => {
            Some(undo_copy(store, tenant, conflict, link, calendar, now).await?)
        }
        _ => None,
    };
    let done = Resolving {
        replaced: Some(Replaced {
            abandoned: true,
            copy: copy.clone(),
            ..replaced.clone()
        }),
        ..held.clone()
    };
    let done_json = to_json(&done)?;
    if !swap_resolving(
        store,
        tenant,
        conflict.id,
        Some(&held_json),
        Some(&done_json),
    )
    .await?
    {
        return Ok(None);
    }
    audit(
        store,
        tenant,
        conflict,
        actor,
        "conflict.resolution_abandoned",
        replaced.option,
        json!({
            "decided_by": replaced.decided_by,
            "started_at": replaced.started_at,
            "reason": format!("replaced by `{}`", held.option_name()),
            "copy": copy,
        }),
    )
    .await?;
    Ok(Some((done, done_json)))
}

/// The link and the local calendar of a conflict's `keep_both` copy (`None` when its connection or
/// link is gone).
async fn copy_place(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
) -> Result<Option<(calbridge_store::LinkId, calbridge_store::CalendarId)>, StoreError> {
    let (Some(link), Some(connection)) = (conflict.link_id, conflict.connection_id) else {
        return Ok(None);
    };
    match store.get_connection(tenant, connection).await {
        Ok(c) => Ok(Some((link, c.calendar_id))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Undoes the local copy an abandoned (or replaced) `keep_both` decision saved, as far as it is only
/// local: the copy of the provider's version the conflict recorded (named as the option names it) is
/// deleted (a soft delete through the normal path: no pair names it, so no sync exports the
/// deletion) unless it has left calbridge — a pair or a create's write-ahead row on any link names
/// it, so it is (or may be) on a provider and is kept as the real event it then is — or someone
/// edited it since it was saved (kept: it is theirs, and it goes out as a new event, see
/// [`release_copy`]). Returns what became of it, for the audit entry:
/// `{uid, series_id, fate: "deleted" | "kept" | "none", why}`.
async fn undo_copy(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    link: calbridge_store::LinkId,
    calendar: calbridge_store::CalendarId,
    now: Timestamp,
) -> Result<Value, EngineError> {
    let side: Option<ConflictSide> = conflict
        .remote_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let Some(ConflictSide {
        id: Some(id),
        state: Some(state),
        ..
    }) = side
    else {
        return Ok(json!({"fate": "none", "why": "the conflict recorded no remote version"}));
    };
    let uid = copy_uid(
        &Uid::new(&conflict.event_uid),
        &link.to_string(),
        &RemoteId::new(id),
        &state.snapshot,
    );
    let Some(row) = store.get_series_by_uid(tenant, calendar, &uid).await? else {
        return Ok(json!({"uid": uid, "fate": "none", "why": "no copy was saved"}));
    };
    let series = row.id.to_string();
    if !store.mappings_for_series(tenant, row.id).await?.is_empty() {
        return Ok(
            json!({"uid": uid, "series_id": series, "fate": "kept", "why": "it was exported to a provider"}),
        );
    }
    // Created at version 1; an edit since is someone's.
    if row.version > 1 {
        let time_zone = store.get_calendar(tenant, calendar).await?.time_zone;
        let floating = TimeZone::get(&time_zone).unwrap_or(TimeZone::UTC);
        release_copy(store, tenant, link, &row, &floating, now).await?;
        return Ok(
            json!({"uid": uid, "series_id": series, "fate": "kept", "why": "it was edited after it was saved"}),
        );
    }
    match store.delete_series(tenant, row.id, row.version).await {
        Ok(_) => Ok(json!({"uid": uid, "series_id": series, "fate": "deleted"})),
        Err(StoreError::PreconditionFailed { .. }) => Ok(
            json!({"uid": uid, "series_id": series, "fate": "kept", "why": "it was edited after it was saved"}),
        ),
        Err(e) => Err(e.into()),
    }
}

/// Lets a `keep_both` copy that stays (its decision went on without exporting it, or gave up a copy
/// someone edited) go out as an event: a sync parked it while the decision was in progress, and
/// that sync's local mark is past the copy's change, which no later incremental sync reads again
/// (before, the copy stayed local until the next full sync). So the create's write-ahead row
/// (`pending-create:<key>`, the key a sync's create of this series on `link` uses) is written for
/// it, unless a row of `link` names it already: an incremental sync reads the series of such rows
/// even when its change stream does not name them, and creates it (or pairs the item if the create
/// happened). Durable, so a process killed before that sync still leaves it to the next one.
pub(crate) async fn release_copy(
    store: &dyn Store,
    tenant: TenantId,
    link: calbridge_store::LinkId,
    row: &Series,
    floating: &TimeZone,
    now: Timestamp,
) -> Result<(), EngineError> {
    if row.deleted_at.is_some()
        || store
            .mappings_for_series(tenant, row.id)
            .await?
            .iter()
            .any(|m| m.link_id == link)
    {
        return Ok(());
    }
    let parsed = Parsed::from_stored(row)?;
    let local = LocalId::new(row.id.to_string());
    write_ahead(
        store,
        tenant,
        link,
        now,
        &format!("{PENDING_CREATE}{}", create_key(link, &local).as_str()),
        Some(row.id),
        None,
        &StoredBase {
            uid: Uid::new(&row.uid),
            state: parsed.state(floating),
            intent: None,
            earlier: None,
        },
    )
    .await
}

/// Swaps the decision on `conflict` from `expected` to `resolving_json` by compare-and-set
/// (`swap_conflict_resolving`): `false` when another party swapped first (the store answers
/// `Conflict`), so that this one does nothing more; any other error passes on.
async fn swap_resolving(
    store: &dyn Store,
    tenant: TenantId,
    conflict: ConflictId,
    expected: Option<&str>,
    resolving_json: Option<&str>,
) -> Result<bool, StoreError> {
    match store
        .swap_conflict_resolving(tenant, conflict, expected, resolving_json)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The answer to a request that lost the compare-and-set on the conflict's decision (someone else
/// took the decision up, replaced or gave it up, or closed the conflict a moment ago).
async fn fence_lost(store: &dyn Store, tenant: TenantId, conflict: ConflictId) -> ResolveFailure {
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

/// Appends the audit entry of what became of a resolution of `conflict`: `action` by `actor`, its
/// details the option, the conflict's kind and event UID, and the fields of `more` (an object).
async fn audit(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    actor: &str,
    action: &str,
    option: ResolutionOption,
    more: Value,
) -> Result<(), StoreError> {
    let mut details = json!({
        "option": option,
        "kind": sync_kind(conflict.kind),
        "event_uid": conflict.event_uid,
    });
    if let (Some(details), Value::Object(more)) = (details.as_object_mut(), more) {
        details.extend(more);
    }
    store
        .append_audit(
            tenant,
            NewAuditEntry {
                actor: actor.to_owned(),
                action: action.to_owned(),
                subject: conflict.id.to_string(),
                details_json: details.to_string(),
            },
        )
        .await?;
    Ok(())
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
    let resolved = store
        .resolve_conflict(
            r.tenant,
            conflict.id,
            &resolution.to_string(),
            decided_by,
            r.now,
        )
        .await
        .map_err(closed)?;
    audit(
        store,
        r.tenant,
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
    )
    .await?;
    Ok(resolved)
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
fn refuse_another_decision(
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

/// Whether the conflict's remote side is gone: `Some("connection")` or `Some("link")` when the
/// connection or the link it was recorded on was deleted (the store then clears the conflict's
/// references to it).
async fn gone(
    r: &Resolve<'_>,
    conflict: &Conflict,
) -> Result<Option<&'static str>, ResolveFailure> {
    let (Some(connection), Some(link)) = (conflict.connection_id, conflict.link_id) else {
        return Ok(Some(if conflict.connection_id.is_none() {
            "connection"
        } else {
            "link"
        }));
    };
    match r.store.get_connection(r.tenant, connection).await {
        Err(StoreError::NotFound { .. }) => return Ok(Some("connection")),
        other => {
            other?;
        }
    }
    match r.store.get_link(r.tenant, link).await {
        Err(StoreError::NotFound { .. }) => Ok(Some("link")),
        other => other.map(|_| None).map_err(ResolveFailure::from),
    }
}

/// The option's steps on local data alone, when the remote side is gone, or `None` when the option
/// needs the remote side (its version, or a write there). `keep_local` keeps the local version as it
/// is (nothing remote to overwrite or delete any more); `delete_everywhere` deletes the local series
/// of an event deleted remotely, and closes the conflict of one deleted locally (already deleted
/// everywhere that is left). `keep_remote`, `keep_both`, `merge` and `restore` need the provider's
/// version or a provider write.
fn without_remote(
    recorded: &Recorded<'_>,
    option: calbridge_sync::ResolutionOption,
    plan: &[Step],
) -> Option<Vec<Step>> {
    use calbridge_sync::ResolutionOption as O;
    match (option, plan) {
        (O::KeepLocal, _) => Some(Vec::new()),
        (O::DeleteEverywhere, [Step::DeleteLocal]) => Some(vec![Step::DeleteLocal]),
        (O::DeleteEverywhere, [Step::DeleteRemote]) if recorded.local.is_none() => Some(Vec::new()),
        _ => None,
    }
}

/// The sentence saying what can still be done with a conflict whose remote side is gone.
fn still_applicable(recorded: &Recorded<'_>) -> String {
    use calbridge_sync::ResolutionOption as O;
    let mut still = Vec::new();
    for option in recorded.offered {
        let Ok(plan) = steps(recorded, *option, None) else {
            continue;
        };
        if without_remote(recorded, *option, &plan).is_some() {
            still.push(match (option, plan.as_slice()) {
                (O::KeepLocal, _) => "`keep_local` keeps the local version as it is",
                (O::DeleteEverywhere, [Step::DeleteLocal]) => {
                    "`delete_everywhere` deletes the local event"
                }
                _ => "`delete_everywhere` closes it (the event is deleted locally)",
            });
        }
    }
    if still.is_empty() {
        "none of its options can be applied any more".into()
    } else {
        format!(
            "options that touch only local data still apply: {}",
            still.join("; ")
        )
    }
}

/// Applies local-only steps (see [`without_remote`]) after checking the local side is still what the
/// conflict recorded; returns what was confirmed.
async fn apply_locally(
    r: &Resolve<'_>,
    conflict: &Conflict,
    recorded: &Recorded<'_>,
    local_steps: &[Step],
) -> Result<Value, ResolveFailure> {
    let Some(series) = conflict.series_id else {
        // The local series is gone too (its calendar was deleted): nothing left on either side.
        return Ok(json!([]));
    };
    let row = r.store.get_series(r.tenant, series).await?;
    let calendar = r.store.get_calendar(r.tenant, row.calendar_id).await?;
    let floating = TimeZone::get(&calendar.time_zone).unwrap_or(TimeZone::UTC);
    match (recorded.local, row.deleted_at) {
        (Some(state), None) => {
            if &Parsed::from_stored(&row)?.state(&floating) != state {
                return Err(ResolveFailure::Changed("local"));
            }
        }
        (None, Some(_)) => {}
        _ => return Err(ResolveFailure::Changed("local")),
    }
    let mut confirmed = Vec::new();
    if local_steps.contains(&Step::DeleteLocal) {
        r.store
            .delete_series(r.tenant, row.id, row.version)
            .await
            .map_err(local_error)?;
        let back = r.store.get_series(r.tenant, row.id).await?;
        if back.deleted_at.is_none() {
            return Err(ResolveFailure::ReadBack(
                "the local series is still there after the delete".into(),
            ));
        }
        confirmed.push(json!({"side": "local", "series_id": row.id.to_string(), "deleted": true}));
    } else if row.deleted_at.is_none() {
        confirmed.push(json!({"side": "local", "series_id": row.id.to_string(), "version": row.version, "kept": true}));
    }
    Ok(Value::Array(confirmed))
}

/// The state of one resolution being carried out.
struct Exec<'a> {
    store: &'a dyn Store,
    provider: &'a dyn CalendarProvider,
    tenant: TenantId,
    config: &'a EngineConfig,
    now: Timestamp,
    link: Link,
    local_calendar: calbridge_store::CalendarId,
    calendar: RemoteCalendarId,
    floating: TimeZone,
    conflict: &'a Conflict,
    /// The provider's item named by the conflict, and the version the conflict recorded.
    remote_id: Option<RemoteId>,
    remote_version: Option<RemoteVersion>,
    /// Read in `check`.
    remote_now: Option<Parsed>,
    local_row: Option<Series>,
    local_now: Option<Parsed>,
    /// The merged version, composed once from the versions read (both sides get the same).
    merged: Option<Parsed>,
    pending: Vec<Pending>,
    confirmed: Vec<Value>,
    /// Writes made so far that stay (provider and local; a `keep_both` copy removed again is not one),
    /// counted for the test-only crash knob.
    writes: usize,
    /// Resuming an interrupted resolution of the same decision (see `check`).
    resuming: bool,
    /// Found by `check` when resuming: the provider's item already holds what this resolution writes
    /// there (with the version it has now), or is already deleted; the same for the local series and
    /// for the item an identity conflict's series was linked to (`keep_remote` deletes it).
    remote_written: Option<Etag>,
    remote_deleted: bool,
    local_written: bool,
    local_deleted: bool,
    other_deleted: bool,
    /// The item an identity conflict's series is linked to (the pair `keep_remote` moves).
    other: Option<RemoteId>,
    /// The provider's version as the conflict recorded it (what the `keep_both` copy is named after).
    recorded_remote: Option<ItemState>,
    /// The `keep_both` copy saved locally by this resolution (`None` when adopted from an earlier,
    /// interrupted one), removed again if the provider then refuses the overwrite.
    saved_copy: Option<Series>,
    /// The base both sides agree on once the merged version is written locally: the provider's
    /// version (with its etag), which the merged version's own write then replaces.
    agreed: Option<(ItemState, RemoteVersion)>,
}

impl<'a> Exec<'a> {
    async fn open(
        r: &Resolve<'a>,
        conflict: &'a Conflict,
        provider: &'a dyn CalendarProvider,
        remote: Option<(Option<RemoteId>, Option<RemoteVersion>)>,
        resuming: bool,
    ) -> Result<Self, ResolveFailure> {
        let link_id = conflict.link_id.ok_or_else(|| {
            ResolveFailure::Engine(EngineError::Content("the conflict names no link".into()))
        })?;
        let link = r.store.get_link(r.tenant, link_id).await?;
        let connection = r.store.get_connection(r.tenant, link.connection_id).await?;
        let local_calendar = r
            .store
            .get_calendar(r.tenant, connection.calendar_id)
            .await?;
        let floating = TimeZone::get(&local_calendar.time_zone).unwrap_or(TimeZone::UTC);
        let calendar =
            RemoteCalendarId::parse(link.remote_calendar_id.clone()).map_err(provider_error)?;
        let (remote_id, remote_version) = remote.unwrap_or((None, None));
        Ok(Self {
            store: r.store,
            provider,
            tenant: r.tenant,
            config: r.config,
            now: r.now,
            link,
            local_calendar: local_calendar.id,
            calendar,
            floating,
            conflict,
            remote_id,
            remote_version,
            remote_now: None,
            local_row: None,
            local_now: None,
            merged: None,
            pending: Vec::new(),
            confirmed: Vec::new(),
            writes: 0,
            resuming,
            remote_written: None,
            remote_deleted: false,
            local_written: false,
            local_deleted: false,
            other_deleted: false,
            other: None,
            recorded_remote: None,
            saved_copy: None,
            agreed: None,
        })
    }

    /// Carries the checked plan out, step by step.
    async fn carry_out(&mut self, plan: &[Step]) -> Result<(), ResolveFailure> {
        // `keep_both` saves the provider's version as the local copy before the provider's item is
        // overwritten (identity `keep_both`: deleted), so a process killed in between cannot lose it.
        if plan.contains(&Step::CopyRemoteAsNew) || plan.contains(&Step::RenameRemoteAsNew) {
            self.save_copy().await?;
        }
        for step in plan {
            if let Err(e) = self.apply(step).await {
                if matches!(
                    (step, &e),
                    (Step::WriteRemote(_), ResolveFailure::Changed(_))
                ) && self.drop_saved_copy().await
                {
                    // The overwrite was refused and the copy saved for it removed again: nothing of
                    // this resolution stayed behind.
                    self.writes = self.writes.saturating_sub(1);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Counts a write that just happened; the test-only crash knob stops here, after the side effect
    /// and before anything records it (the worst moment, which the next sync must absorb).
    fn wrote(&mut self) -> Result<(), ResolveFailure> {
        self.writes += 1;
        match self.config.crash_after_resolution_writes {
            Some(limit) if self.writes >= limit => Err(ResolveFailure::Interrupted(self.writes)),
            _ => Ok(()),
        }
    }

    /// Records on the pair's row, before a write that copies a whole version to one side, what that
    /// side will hold (the sync run's own `Intent`): a sync after a process killed right after the
    /// write then takes the write as ours, not as someone else's change. The pair is the conflict's
    /// for an update conflict, and for an identity conflict the series' own pair (with the item it is
    /// linked to, which `keep_remote` deletes next): its local write must not travel to that item.
    /// Deletions write no pair's version.
    async fn intend(&self, intent: Intent) -> Result<(), ResolveFailure> {
        let pair_remote = match self.conflict.kind {
            StoreConflictKind::Update => self.remote_id.as_ref(),
            StoreConflictKind::Identity => self.other.as_ref(),
            StoreConflictKind::Deletion | StoreConflictKind::Time => None,
        };
        let Some(remote) = pair_remote else {
            return Ok(());
        };
        let Some(row) = self
            .store
            .get_mapping(self.tenant, self.link.id, remote.as_str())
            .await?
        else {
            return Ok(());
        };
        let Some(stored) = row
            .base_json
            .as_deref()
            .and_then(|b| serde_json::from_str::<StoredBase>(b).ok())
        else {
            return Ok(());
        };
        // This resolution's write of the other side, made before (a `merge`'s local write, by this
        // attempt or an interrupted one): it stays recognisable beside this one, since this write
        // may be refused and leave that one the only write made.
        let earlier = [stored.intent, stored.earlier]
            .into_iter()
            .flatten()
            .find(|i| i.side != intent.side && i.state.snapshot == intent.state.snapshot);
        let (state, version) = match &self.agreed {
            Some((state, version)) => (state.clone(), Some(version.clone())),
            None => (stored.state, row.remote_version.map(RemoteVersion::new)),
        };
        let base = StoredBase {
            uid: stored.uid,
            state,
            intent: Some(intent),
            earlier,
        };
        write_ahead(
            self.store,
            self.tenant,
            self.link.id,
            self.now,
            remote.as_str(),
            row.series_id,
            version.as_ref(),
            &base,
        )
        .await?;
        Ok(())
    }

    /// The provider's version under the UID `keep_both` (and identity `keep_both`) give its copy.
    async fn remote_copy(&self) -> Result<(Parsed, String), ResolveFailure> {
        let remote_id = self.recorded_remote_id()?;
        if let Some(remote) = &self.remote_now {
            let uid = copy_uid(
                &Uid::new(remote.series.uid()),
                &self.link.id.to_string(),
                &remote_id,
                &remote.state(&self.floating).snapshot,
            );
            let copy = Parsed::from_calendar(calendar_with(
                with_uid(&remote.series, &uid)?,
                &[&remote.calendar],
            ))?;
            return Ok((copy, uid));
        }
        // Resuming after the provider's item was overwritten (`keep_both`) or deleted (identity
        // `keep_both`): the copy was saved locally before either, under the UID of the version the
        // conflict recorded.
        let uid = self.recorded_copy_uid()?;
        let row = self
            .store
            .get_series_by_uid(self.tenant, self.local_calendar, &uid)
            .await?
            .filter(|row| row.deleted_at.is_none())
            .ok_or(ResolveFailure::Changed("local"))?;
        Ok((Parsed::from_stored(&row)?, uid))
    }

    /// The UID of the `keep_both` copy of the provider's version the conflict recorded.
    fn recorded_copy_uid(&self) -> Result<String, ResolveFailure> {
        let recorded = self
            .recorded_remote
            .as_ref()
            .ok_or(ResolveFailure::Changed("remote"))?;
        Ok(copy_uid(
            &Uid::new(&self.conflict.event_uid),
            &self.link.id.to_string(),
            &self.recorded_remote_id()?,
            &recorded.snapshot,
        ))
    }

    /// Saves the `keep_both` copy locally (or adopts the one an interrupted resolution saved).
    async fn save_copy(&mut self) -> Result<(), ResolveFailure> {
        let (copy, uid) = self.remote_copy().await?;
        let existed = self
            .store
            .get_series_by_uid(self.tenant, self.local_calendar, &uid)
            .await?
            .is_some();
        let row = self.create_local(&copy).await?;
        if !existed {
            self.saved_copy = Some(row);
        }
        Ok(())
    }

    /// Best effort: a copy saved for an overwrite the provider refused goes again (`true` when it went).
    async fn drop_saved_copy(&mut self) -> bool {
        let Some(row) = self.saved_copy.take() else {
            return false;
        };
        match self
            .store
            .delete_series(self.tenant, row.id, row.version)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(series = %row.id, error = %e, "could not remove the keep_both copy of a refused resolution");
                false
            }
        }
    }

    /// The remote item the conflict recorded. A step that needs one when the conflict has none
    /// is refused as a changed remote side, like any other state the plan did not expect.
    fn recorded_remote_id(&self) -> Result<RemoteId, ResolveFailure> {
        self.remote_id
            .clone()
            .ok_or(ResolveFailure::Changed("remote"))
    }

    /// The remote version the conflict recorded (refused like [`Self::recorded_remote_id`]).
    fn recorded_remote_version(&self) -> Result<RemoteVersion, ResolveFailure> {
        self.remote_version
            .clone()
            .ok_or(ResolveFailure::Changed("remote"))
    }

    /// The recorded remote item with its version: what a pending pair is committed with.
    fn remote_pair(&self) -> Result<(RemoteId, RemoteVersion), ResolveFailure> {
        Ok((self.recorded_remote_id()?, self.recorded_remote_version()?))
    }

    fn remote_id(&self) -> Result<ProviderRemoteId, ResolveFailure> {
        let id = self.remote_id.as_ref().ok_or_else(|| {
            ResolveFailure::Engine(EngineError::Content(
                "the conflict names no remote item".into(),
            ))
        })?;
        ProviderRemoteId::parse(id.as_str()).map_err(provider_error)
    }

    fn etag(&self) -> Result<Etag, ResolveFailure> {
        let version = self.remote_version.as_ref().ok_or_else(|| {
            ResolveFailure::Engine(EngineError::Content(
                "the conflict recorded no remote version".into(),
            ))
        })?;
        Etag::parse(version.as_str()).map_err(provider_error)
    }

    async fn read(&self, id: &ProviderRemoteId) -> Result<Option<(Etag, Parsed)>, ResolveFailure> {
        let items = self
            .provider
            .read(&self.calendar, std::slice::from_ref(id))
            .await
            .map_err(ResolveFailure::Provider)?;
        match items.into_iter().next() {
            Some(ReadItem::Found(item)) => {
                let parsed = Parsed::from_calendar(item.content.calendar().clone())?;
                Ok(Some((item.etag, parsed)))
            }
            Some(ReadItem::Missing(_)) | None => Ok(None),
            Some(ReadItem::Failed(_, why)) => {
                Err(ResolveFailure::Provider(ProviderError::Protocol {
                    detail: format!("the item cannot be read: {why}"),
                }))
            }
        }
    }

    /// Both sides must still be what the conflict recorded; otherwise nothing is written. When
    /// resuming an interrupted resolution of the same decision, a side may instead hold what this
    /// resolution writes there, or be gone where it deletes: that step was done (`remote_written`,
    /// `local_written`, `remote_deleted`, `local_deleted`, `other_deleted`) and is not done again.
    async fn check(
        &mut self,
        recorded: &Recorded<'_>,
        plan: &[Step],
    ) -> Result<(), ResolveFailure> {
        self.recorded_remote = recorded.remote.cloned();
        self.other = plan.iter().find_map(|step| match step {
            Step::RelinkAndDeleteOther(other) => Some(other.clone()),
            _ => None,
        });
        let remote_current = match self.remote_id {
            Some(_) => Some(self.read(&self.remote_id()?).await?),
            None => None,
        };
        if let Some(Some((_, parsed))) = &remote_current {
            self.remote_now = Some(parsed.clone());
        }
        if let Some(series) = self.conflict.series_id {
            let row = self.store.get_series(self.tenant, series).await?;
            if row.deleted_at.is_none() {
                self.local_now = Some(Parsed::from_stored(&row)?);
            }
            self.local_row = Some(row);
        }
        // The merged version, composed once from the versions read (both sides get the same).
        // Composed from a side that already holds it, it comes out the same, so a resumed `merge`
        // finds it on the side its first attempt wrote.
        let compose = |exec: &mut Self| -> Result<(), ResolveFailure> {
            for step in plan {
                if let Step::WriteRemote(Version::Merged(m)) | Step::WriteLocal(Version::Merged(m)) =
                    step
                    && exec.merged.is_none()
                {
                    exec.merged = Some(exec.compose_merged(m)?);
                }
            }
            Ok(())
        };
        if self.resuming {
            compose(self)?;
        }

        if self.local_row.is_some() {
            let now = self.local_now.as_ref().map(|p| p.state(&self.floating));
            let as_recorded = match (recorded.local, &now) {
                (Some(state), Some(now)) => state == now,
                (None, None) => true,
                _ => false,
            };
            if !as_recorded {
                let target = plan.iter().find_map(|step| match step {
                    Step::WriteLocal(v) => Some(Some(v)),
                    Step::DeleteLocal => Some(None),
                    _ => None,
                });
                match (target, &now) {
                    (Some(Some(v)), Some(now)) if self.resuming && self.holds(v, recorded, now) => {
                        self.local_written = true;
                    }
                    (Some(None), None) if self.resuming && recorded.local.is_some() => {
                        self.local_deleted = true;
                    }
                    _ => return Err(ResolveFailure::Changed("local")),
                }
            }
        }
        if let Some(current) = remote_current {
            let expected = self.remote_version.as_ref().map(RemoteVersion::as_str);
            let as_recorded = match (recorded.remote, &current) {
                (Some(_), Some((etag, _))) => expected == Some(etag.as_str()),
                (None, None) => true,
                _ => false,
            };
            if !as_recorded {
                let target = plan.iter().find_map(|step| match step {
                    Step::WriteRemote(v) => Some(Some(v)),
                    Step::DeleteRemote | Step::RenameRemoteAsNew => Some(None),
                    _ => None,
                });
                match (target, current) {
                    (Some(Some(v)), Some((etag, parsed)))
                        if self.resuming
                            && self.holds(v, recorded, &parsed.state(&self.floating)) =>
                    {
                        self.remote_written = Some(etag);
                        // Not the provider's recorded version any more: nothing is made of it.
                        self.remote_now = None;
                    }
                    (Some(None), None) if self.resuming && recorded.remote.is_some() => {
                        self.remote_deleted = true;
                    }
                    _ => return Err(ResolveFailure::Changed("remote")),
                }
            }
        }
        // Identity `keep_remote` deletes the item the series was linked to: it must be unchanged too
        // (or, resuming, already gone).
        if let Some(other) = self.other.clone() {
            let id = ProviderRemoteId::parse(other.as_str()).map_err(provider_error)?;
            let current = self.read(&id).await?;
            let linked = self
                .store
                .get_mapping(self.tenant, self.link.id, other.as_str())
                .await?
                .and_then(|m| m.remote_version);
            match (current, linked) {
                (Some((etag, _)), Some(version)) if etag.as_str() == version => {}
                (None, _) if self.resuming => self.other_deleted = true,
                _ => return Err(ResolveFailure::Changed("remote")),
            }
        }
        if !self.resuming {
            compose(self)?;
        }
        Ok(())
    }

    /// Whether `now` is what this resolution writes as `v` (resuming: that write was made).
    fn holds(&self, v: &Version, recorded: &Recorded<'_>, now: &ItemState) -> bool {
        let written = match v {
            Version::Local => recorded.local.map(|s| s.snapshot.clone()),
            Version::Remote => recorded.remote.map(|s| s.snapshot.clone()),
            Version::Merged(_) => self
                .merged
                .as_ref()
                .map(|m| m.state(&self.floating).snapshot),
        };
        written.as_ref() == Some(&now.snapshot)
    }

    async fn other_mapping(
        &self,
        other: &RemoteId,
    ) -> Result<(calbridge_store::ItemMapping, RemoteVersion), ResolveFailure> {
        let mapping = self
            .store
            .get_mapping(self.tenant, self.link.id, other.as_str())
            .await?
            .ok_or(ResolveFailure::Changed("local"))?;
        let version = mapping
            .remote_version
            .clone()
            .map(RemoteVersion::new)
            .ok_or(ResolveFailure::Changed("remote"))?;
        Ok((mapping, version))
    }

    fn local(&self) -> Result<&Parsed, ResolveFailure> {
        self.local_now
            .as_ref()
            .ok_or(ResolveFailure::Changed("local"))
    }

    fn remote(&self) -> Result<&Parsed, ResolveFailure> {
        self.remote_now
            .as_ref()
            .ok_or(ResolveFailure::Changed("remote"))
    }

    fn compose_merged(
        &self,
        m: &calbridge_sync::resolve::MergedVersion,
    ) -> Result<Parsed, ResolveFailure> {
        let (l, r) = (self.local()?, self.remote()?);
        let merged = calbridge_sync::series::compose(&l.series, &r.series, &m.from_remote)
            .map_err(content_error)?;
        let text: Vec<&str> = SETTABLE
            .iter()
            .filter(|(_, text)| *text)
            .map(|(name, _)| *name)
            .collect();
        let merged = calbridge_sync::series::with_values(&merged, &m.values, &text)
            .map_err(content_error)?;
        let parsed = Parsed::from_calendar(calendar_with(merged, &[&l.calendar, &r.calendar]))?;
        // It must be storable (expandable) before anything is written.
        storable(&parsed.calendar, &self.floating).map_err(content_error)?;
        Ok(parsed)
    }

    fn version(&self, v: &Version) -> Result<Parsed, ResolveFailure> {
        match v {
            Version::Local => Ok(self.local()?.clone()),
            Version::Remote => Ok(self.remote()?.clone()),
            Version::Merged(_) => self
                .merged
                .clone()
                .ok_or_else(|| content_error("the merged version was not composed")),
        }
    }

    fn local_id(&self) -> Result<LocalId, ResolveFailure> {
        self.conflict
            .series_id
            .map(|s| LocalId::new(s.to_string()))
            .ok_or(ResolveFailure::Changed("local"))
    }

    fn tombstone_at(&self) -> TombstoneAt {
        TombstoneAt {
            link: self.link.id,
            calendar: self.local_calendar,
            now: self.now,
            retention: self.config.tombstone_retention,
        }
    }

    /// Writes `parsed` over the provider's item with `If-Match`, reads it back and returns its version.
    async fn write_remote(
        &mut self,
        id: &ProviderRemoteId,
        parsed: &Parsed,
        check_uid: bool,
    ) -> Result<RemoteVersion, ResolveFailure> {
        let content = ItemContent::from_calendar(parsed.calendar.clone()).map_err(content_error)?;
        let etag = self.etag()?;
        self.provider
            .update(&self.calendar, id, &etag, &content)
            .await
            .map_err(provider_error)?;
        self.wrote()?;
        self.read_back_remote(id, parsed, check_uid).await
    }

    async fn read_back_remote(
        &mut self,
        id: &ProviderRemoteId,
        parsed: &Parsed,
        check_uid: bool,
    ) -> Result<RemoteVersion, ResolveFailure> {
        let Some((etag, back)) = self.read(id).await? else {
            return Err(ResolveFailure::ReadBack(format!(
                "{} is gone after the write",
                id.as_str()
            )));
        };
        let want = parsed.state(&self.floating).snapshot;
        if back.state(&self.floating).snapshot != want
            || (check_uid && back.series.uid() != parsed.series.uid())
        {
            return Err(ResolveFailure::ReadBack(format!(
                "{} does not hold what was written",
                id.as_str()
            )));
        }
        self.confirmed.push(
            json!({"side": "remote", "id": id.as_str(), "etag": etag.as_str(), "uid": back.series.uid()}),
        );
        Ok(RemoteVersion::new(etag.as_str()))
    }

    /// Creates a local series (or adopts a live one with the UID and the same content).
    async fn create_local(&mut self, parsed: &Parsed) -> Result<Series, ResolveFailure> {
        let s = storable(&parsed.calendar, &self.floating)?;
        if let Some(row) = self
            .store
            .get_series_by_uid(self.tenant, self.local_calendar, &s.uid)
            .await?
        {
            let same = Parsed::from_stored(&row).is_ok_and(|p| {
                p.state(&self.floating).snapshot == parsed.state(&self.floating).snapshot
            });
            if !same {
                return Err(ResolveFailure::Changed("local"));
            }
            return Ok(row);
        }
        let hash = s.hash.clone();
        let row = self
            .store
            .create_series(self.tenant, s.into_new(self.local_calendar))
            .await?;
        self.wrote()?;
        let back = self.store.get_series(self.tenant, row.id).await?;
        if back.hash != hash || back.deleted_at.is_some() {
            return Err(ResolveFailure::ReadBack(
                "the created series differs".into(),
            ));
        }
        self.confirmed.push(
            json!({"side": "local", "series_id": row.id.to_string(), "version": back.version, "uid": back.uid}),
        );
        Ok(row)
    }

    /// Creates the series on the provider (idempotent key of the link and the series), reads it back.
    async fn create_remote(
        &mut self,
        local: &LocalId,
        parsed: &Parsed,
    ) -> Result<(RemoteId, RemoteVersion), ResolveFailure> {
        let content = ItemContent::from_calendar(parsed.calendar.clone()).map_err(content_error)?;
        let key = create_key(self.link.id, local);
        // The sync run's own write-ahead row of a remote create: a process killed after the create
        // leaves the next sync pairing the item it finds instead of taking it for a stranger's.
        write_ahead(
            self.store,
            self.tenant,
            self.link.id,
            self.now,
            &format!("{PENDING_CREATE}{}", key.as_str()),
            Some(series_id(local)?),
            None,
            &StoredBase {
                uid: Uid::new(parsed.series.uid()),
                state: parsed.state(&self.floating),
                intent: None,
                earlier: None,
            },
        )
        .await?;
        let written = self
            .provider
            .create(&self.calendar, &key, &content)
            .await
            .map_err(provider_error)?;
        self.wrote()?;
        let version = self.read_back_remote(&written.id, parsed, true).await?;
        Ok((RemoteId::new(written.id.as_str()), version))
    }

    /// Deletes a provider item with `If-Match` and confirms it is gone.
    async fn delete_remote_item(
        &mut self,
        id: &RemoteId,
        etag: &Etag,
    ) -> Result<(), ResolveFailure> {
        let id = ProviderRemoteId::parse(id.as_str()).map_err(provider_error)?;
        match self.provider.delete(&self.calendar, &id, etag).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(provider_error(e)),
        }
        self.wrote()?;
        if self.read(&id).await?.is_some() {
            return Err(ResolveFailure::ReadBack(format!(
                "{} is still there after the delete",
                id.as_str()
            )));
        }
        self.confirmed
            .push(json!({"side": "remote", "id": id.as_str(), "deleted": true}));
        Ok(())
    }

    async fn apply(&mut self, step: &Step) -> Result<(), ResolveFailure> {
        match step {
            Step::WriteRemote(v) => {
                let parsed = self.version(v)?;
                let id = self.remote_id()?;
                let version = if let Some(etag) = self.remote_written.clone() {
                    // Written by the interrupted attempt: the version it has now is the pair's.
                    self.confirmed.push(json!({"side": "remote", "id": id.as_str(), "etag": etag.as_str(), "uid": parsed.series.uid(), "written_before": true}));
                    RemoteVersion::new(etag.as_str())
                } else {
                    // A whole version copied out: the local one (`keep_local`, `keep_both`), or the
                    // merged one, which the local side holds by now (it is written there first).
                    self.intend(Intent {
                        side: IntentSide::Remote,
                        state: parsed.state(&self.floating),
                        version: None,
                        base: None,
                    })
                    .await?;
                    self.write_remote(&id, &parsed, false).await?
                };
                self.pending.retain(|p| p.remote.as_str() != id.as_str());
                self.pending.push(Pending {
                    local: self.local_id()?,
                    remote: RemoteId::new(id.as_str()),
                    version,
                    state: parsed.state(&self.floating),
                    uid: Uid::new(parsed.series.uid()),
                });
            }
            Step::WriteLocal(v) => {
                let mut parsed = self.version(v)?;
                let row = self
                    .local_row
                    .clone()
                    .ok_or(ResolveFailure::Changed("local"))?;
                // The local UID stays (the pair is one series on both sides).
                if parsed.series.uid() != row.uid {
                    let series = with_uid(&parsed.series, &row.uid)?;
                    parsed = Parsed::from_calendar(calendar_with(series, &[&parsed.calendar]))?;
                }
                let remote_version = self.recorded_remote_version()?;
                // The provider keeps its version: the remote one copied here is that version; a
                // merged one is a change made on top of it (so the provider's version is the base).
                // (Resuming a `merge` whose remote write was made too, the base is that write's.)
                let merged_base = match v {
                    Version::Merged(_) if self.remote_written.is_none() => {
                        Some(self.remote()?.state(&self.floating))
                    }
                    _ => None,
                };
                if self.local_written {
                    // Written by the interrupted attempt.
                    self.confirmed.push(json!({"side": "local", "series_id": row.id.to_string(), "version": row.version, "written_before": true}));
                    if let Some(state) = merged_base {
                        self.agreed = Some((state, remote_version.clone()));
                    }
                } else {
                    // The pair's remote version stays: the conflict's item for an update conflict,
                    // the item the series is linked to for an identity one (its version is not the
                    // newcomer's whose content is copied here).
                    let pair_version = match self.other.clone() {
                        Some(other) => self.other_mapping(&other).await?.1,
                        None => remote_version.clone(),
                    };
                    self.intend(Intent {
                        side: IntentSide::Local,
                        state: parsed.state(&self.floating),
                        version: Some(pair_version.to_string()),
                        base: merged_base.clone(),
                    })
                    .await?;
                    let s = storable(&parsed.calendar, &self.floating)?;
                    let hash = s.hash.clone();
                    let updated = self
                        .store
                        .update_series(self.tenant, row.id, row.version, s.into_update())
                        .await
                        .map_err(local_error)?;
                    self.wrote()?;
                    if let Some(state) = merged_base {
                        self.agreed = Some((state, remote_version.clone()));
                    }
                    let back = self.store.get_series(self.tenant, updated.id).await?;
                    if back.hash != hash {
                        return Err(ResolveFailure::ReadBack(
                            "the local series does not hold what was written".into(),
                        ));
                    }
                    self.confirmed.push(json!({"side": "local", "series_id": back.id.to_string(), "version": back.version}));
                    self.local_row = Some(back);
                }
                let (remote, version) = self.remote_pair()?;
                if !self.pending.iter().any(|p| p.remote == remote) {
                    self.pending.push(Pending {
                        local: self.local_id()?,
                        remote,
                        version,
                        state: parsed.state(&self.floating),
                        uid: Uid::new(parsed.series.uid()),
                    });
                }
            }
            Step::CopyRemoteAsNew => {
                // Saved locally before the overwrite (`save_copy`): this finds it.
                let (copy, uid) = self.remote_copy().await?;
                let row = self.create_local(&copy).await?;
                let local = LocalId::new(row.id.to_string());
                let (id, version) = self.create_remote(&local, &copy).await?;
                self.pending.push(Pending {
                    local,
                    remote: id,
                    version,
                    state: copy.state(&self.floating),
                    uid: Uid::new(uid),
                });
            }
            Step::RenameRemoteAsNew => {
                // Providers refuse a UID change in place (CalDAV `no-uid-conflict`), so the newcomer is
                // re-created under the new UID. Like `keep_both`'s copy, its version is saved locally
                // first (`save_copy`), then the newcomer is deleted (`If-Match`, checked just before;
                // refused, the saved copy goes again), and only then is the copy created on the
                // provider: a process killed at any point leaves the provider never showing both, and
                // the copy never lost (a sync parks it until the resolution is finished).
                let remote_id = self.recorded_remote_id()?;
                let (renamed, uid) = self.remote_copy().await?;
                if self.remote_deleted {
                    self.confirmed.push(json!({"side": "remote", "id": remote_id.as_str(), "deleted": true, "written_before": true}));
                } else {
                    let etag = self.etag()?;
                    if let Err(e) = self.delete_remote_item(&remote_id, &etag).await {
                        if matches!(e, ResolveFailure::Changed(_)) && self.drop_saved_copy().await {
                            self.writes = self.writes.saturating_sub(1);
                        }
                        return Err(e);
                    }
                }
                let row = self.create_local(&renamed).await?;
                let local = LocalId::new(row.id.to_string());
                let (id, version) = self.create_remote(&local, &renamed).await?;
                forget_pair(
                    self.store,
                    self.tenant,
                    self.tombstone_at(),
                    &LocalId::new(""),
                    &remote_id,
                    Some(self.conflict.event_uid.clone()),
                )
                .await?;
                self.pending.push(Pending {
                    local,
                    remote: id,
                    version,
                    state: renamed.state(&self.floating),
                    uid: Uid::new(uid),
                });
            }
            Step::DeleteRemote => {
                let id = self.remote_id()?;
                if self.remote_deleted {
                    self.confirmed.push(json!({"side": "remote", "id": id.as_str(), "deleted": true, "written_before": true}));
                } else {
                    let etag = self.etag()?;
                    self.delete_remote_item(&RemoteId::new(id.as_str()), &etag)
                        .await?;
                }
                // Identity: the newcomer was never linked; the series keeps its own pair.
                let local = match self.conflict.kind {
                    StoreConflictKind::Identity => LocalId::new(""),
                    _ => self.local_id()?,
                };
                let uid = Some(self.conflict.event_uid.clone());
                forget_pair(
                    self.store,
                    self.tenant,
                    self.tombstone_at(),
                    &local,
                    &RemoteId::new(id.as_str()),
                    uid,
                )
                .await?;
            }
            Step::DeleteLocal => {
                let row = self
                    .local_row
                    .clone()
                    .ok_or(ResolveFailure::Changed("local"))?;
                if self.local_deleted {
                    self.confirmed.push(json!({"side": "local", "series_id": row.id.to_string(), "deleted": true, "written_before": true}));
                } else {
                    self.store
                        .delete_series(self.tenant, row.id, row.version)
                        .await
                        .map_err(local_error)?;
                    self.wrote()?;
                    let back = self.store.get_series(self.tenant, row.id).await?;
                    if back.deleted_at.is_none() {
                        return Err(ResolveFailure::ReadBack(
                            "the local series is still there after the delete".into(),
                        ));
                    }
                    self.confirmed.push(
                        json!({"side": "local", "series_id": row.id.to_string(), "deleted": true}),
                    );
                }
                let remote = self.recorded_remote_id()?;
                forget_pair(
                    self.store,
                    self.tenant,
                    self.tombstone_at(),
                    &self.local_id()?,
                    &remote,
                    Some(row.uid.clone()),
                )
                .await?;
            }
            Step::RecreateLocal => {
                let remote = self.remote()?.clone();
                let (remote_id, version) = self.remote_pair()?;
                // The sync run's write-ahead row of a local create (the pair with no series yet):
                // the next sync pairs the series it finds under the UID, or drops the row.
                write_ahead(
                    self.store,
                    self.tenant,
                    self.link.id,
                    self.now,
                    remote_id.as_str(),
                    None,
                    Some(&version),
                    &StoredBase {
                        uid: Uid::new(remote.series.uid()),
                        state: remote.state(&self.floating),
                        intent: None,
                        earlier: None,
                    },
                )
                .await?;
                let row = self.create_local(&remote).await?;
                self.pending.push(Pending {
                    local: LocalId::new(row.id.to_string()),
                    remote: remote_id,
                    version,
                    state: remote.state(&self.floating),
                    uid: Uid::new(remote.series.uid()),
                });
            }
            Step::RecreateRemote => {
                let local = self.local()?.clone();
                let local_id = self.local_id()?;
                if let Some(old) = self.remote_id.clone() {
                    // The pair moves to the recreated item; the deleted one leaves a tombstone.
                    // Forgotten first, so the create's write-ahead row is the series' only pair
                    // when a sync after an interrupted resolution looks for it.
                    forget_pair(
                        self.store,
                        self.tenant,
                        self.tombstone_at(),
                        &LocalId::new(""),
                        &old,
                        Some(self.conflict.event_uid.clone()),
                    )
                    .await?;
                }
                let (id, version) = self.create_remote(&local_id, &local).await?;
                self.pending.push(Pending {
                    local: local_id,
                    remote: id,
                    version,
                    state: local.state(&self.floating),
                    uid: Uid::new(local.series.uid()),
                });
            }
            Step::RelinkAndDeleteOther(other) => {
                if self.other_deleted {
                    self.confirmed.push(json!({"side": "remote", "id": other.as_str(), "deleted": true, "written_before": true}));
                } else {
                    let (_, version) = self.other_mapping(other).await?;
                    let etag = Etag::parse(version.as_str()).map_err(provider_error)?;
                    self.delete_remote_item(other, &etag).await?;
                }
                forget_pair(
                    self.store,
                    self.tenant,
                    self.tombstone_at(),
                    &LocalId::new(""),
                    other,
                    Some(self.conflict.event_uid.clone()),
                )
                .await?;
            }
            Step::AcceptOverlap => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
