//! A conflict whose connection or link was deleted: the options that touch only local data, applied
//! there.

use calbridge_store::{Conflict, StoreError};
use calbridge_sync::resolve::{Recorded, Step, steps};
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::local::Parsed;

use super::failure::local_error;
use super::{Resolve, ResolveFailure};

/// Whether the conflict's remote side is gone: `Some("connection")` or `Some("link")` when the
/// connection or the link it was recorded on was deleted (the store then clears the conflict's
/// references to it).
pub(super) async fn gone(
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
pub(super) fn without_remote(
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
pub(super) fn still_applicable(recorded: &Recorded<'_>) -> String {
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
pub(super) async fn apply_locally(
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
