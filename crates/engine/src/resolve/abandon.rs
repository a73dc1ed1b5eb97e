//! Giving a decision up (abandoned, or replaced by another) and what becomes of its `keep_both`
//! copy: removed while it is only local, kept (and released to go out as an event) otherwise.

use calbridge_store::{Conflict, Series, Store, StoreError, TenantId};
use calbridge_sync::resolve::copy_uid;
use calbridge_sync::{LocalId, RemoteId, ResolutionOption, Uid};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::local::Parsed;
use crate::pairs::{ConflictSide, PENDING_CREATE, StoredBase, create_key, to_json, write_ahead};
use crate::{EngineConfig, EngineError};

use super::audit_entry;
use super::decision::{Replaced, Resolving, option_name, swap_resolving, swap_resolving_audited};

/// Gives up an interrupted resolution a sync could not finish because a side moved for another reason
/// (its resumption found the side moved, or the conflict is superseded): the decision goes from the
/// conflict (audited `conflict.resolution_abandoned` in the same transaction), and what it did
/// only locally is undone ([`undo_copy`]: a `keep_both` copy never exported; also the copy of a
/// decision it replaced, if that was not removed yet). The conflict itself is left as it is (open for a person, or closed as
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
        config,
        now,
    )
    .await?
    else {
        return Ok(false);
    };
    let copy = match (held.option, copy_place(store, tenant, conflict).await?) {
        (ResolutionOption::KeepBoth, Some((link, calendar))) => {
            Some(undo_copy(store, tenant, conflict, link, calendar, config, now).await?)
        }
        _ => None,
    };
    // Taken off with its audit entry, in one transaction (see `give_up_replaced`).
    let entry = audit_entry(
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
    );
    if !swap_resolving_audited(
        store,
        tenant,
        conflict.id,
        Some(&held_json),
        None,
        vec![entry],
    )
    .await?
    {
        return Ok(false);
    }
    if config.crash_after_giving_up {
        return Err(EngineError::Content(
            "stopped after giving the decision up (crash test)".into(),
        ));
    }
    Ok(true)
}

/// Gives up the decision the record `held` names as replaced, unless that was done (see
/// [`Replaced`]): removes its copy, then marks it `abandoned` by compare-and-set against `held_json`
/// (the record as this party swapped it in) and, in the same transaction, audits it
/// (`conflict.resolution_abandoned`, by `actor`) and each decision it had replaced without giving it
/// up ([`Replaced::replaced`]). Returns the record the conflict holds afterwards, or `None` when
/// another party took it meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) async fn give_up_replaced(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    held: Resolving,
    held_json: String,
    actor: &str,
    config: &EngineConfig,
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
            Some(undo_copy(store, tenant, conflict, link, calendar, config, now).await?)
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
    // One entry per decision given up, oldest first; the copy's fate on the entry of the oldest
    // whose copy it was to remove (the one that saved it, or adopted it). Written with the mark,
    // in its transaction: a process killed right after neither loses them nor leaves them for
    // whoever acts next to write again. (Written after it, a kill in between lost them: whoever
    // came next found the decision given up.)
    let chain = replaced.chain(held.option);
    let copy_of = chain.iter().position(|(r, _)| r.copy_to_remove);
    let entries = chain
        .into_iter()
        .enumerate()
        .map(|(at, (decision, by))| {
            audit_entry(
                conflict,
                actor,
                "conflict.resolution_abandoned",
                decision.option,
                json!({
                    "decided_by": decision.decided_by,
                    "started_at": decision.started_at,
                    "reason": format!("replaced by `{}`", option_name(by)),
                    "copy": if Some(at) == copy_of { copy.clone() } else { None },
                }),
            )
        })
        .collect();
    if !swap_resolving_audited(
        store,
        tenant,
        conflict.id,
        Some(&held_json),
        Some(&done_json),
        entries,
    )
    .await?
    {
        return Ok(None);
    }
    if config.crash_after_giving_up {
        return Err(EngineError::Content(
            "stopped after giving the replaced decision up (crash test)".into(),
        ));
    }
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
/// `{uid, series_id, fate: "deleted" | "kept" | "none", why}`; a copy deleted already (by a party
/// killed before it marked the decision given up) is `deleted`.
async fn undo_copy(
    store: &dyn Store,
    tenant: TenantId,
    conflict: &Conflict,
    link: calbridge_store::LinkId,
    calendar: calbridge_store::CalendarId,
    config: &EngineConfig,
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
        // Deleted already: by whoever gave this decision up before and was killed before marking
        // it so (or by a person). Still deleted, not "none": the entry tells what became of the
        // copy, whoever removed it. Copies are saved after the conflict is recorded.
        return match store
            .get_deleted_series_by_uid(tenant, calendar, &uid, conflict.detected_at)
            .await?
        {
            Some(gone) => Ok(
                json!({"uid": uid, "series_id": gone.id.to_string(), "fate": "deleted", "why": "it was deleted already"}),
            ),
            None => Ok(json!({"uid": uid, "fate": "none", "why": "no copy was saved"})),
        };
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
        Ok(_) if config.crash_after_removing_copy => Err(EngineError::Content(
            "stopped after deleting the copy (crash test)".into(),
        )),
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
