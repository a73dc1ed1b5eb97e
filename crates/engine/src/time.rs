//! Time conflicts, run after a link's sync: busy occurrences of one owner that overlap, across all of
//! the owner's local calendars (each holds what its connections sync in), recurring occurrences
//! included, free/transparent and cancelled ones excluded. The rules (pairs, dedup, closing) are
//! [`calbridge_sync::overlap`]; here the store is read and written.
//!
//! **Owner**: a local calendar's `owner` when set — every calendar of the tenant with that owner is one
//! person's — else the calendar alone. A connection syncs all of its remote calendars into its one local
//! calendar, so "the owner's linked calendars" are the local calendars of that owner.

use std::collections::HashMap;

use calbridge_store::{
    Calendar, ConflictFilter, ConflictKind, ConflictState, Connection, NewAuditEntry, NewConflict,
    OccurrenceQuery, SeriesId, Store, TenantId,
};
use calbridge_sync::overlap::{
    BusyBlock, KnownTimeConflict, PairOverlap, overlapping_pairs, reconcile_time,
};
use calbridge_sync::{ConflictPolicy, ResolutionOption, Window};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::EngineError;
use crate::pairs::to_json;

/// Occurrences read per page, and at most in one detection (a bound on the cost of one run).
const PAGE: u32 = 1000;
const MAX_BLOCKS: usize = 50_000;
/// Overlapping spans listed in one conflict's `fields`.
const MAX_SPANS_SHOWN: usize = 20;

/// What one detection did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeCounts {
    pub detected: u64,
    pub settled: u64,
    pub closed: u64,
}

/// The owner key of a calendar and the local calendars that belong to that owner.
async fn owner_calendars(
    store: &dyn Store,
    tenant: TenantId,
    calendar: &Calendar,
) -> Result<(String, Vec<Calendar>), EngineError> {
    match &calendar.owner {
        Some(owner) => {
            let all = store.list_calendars(tenant).await?;
            let mine = all
                .into_iter()
                .filter(|c| c.owner.as_deref() == Some(owner.as_str()))
                .collect();
            Ok((format!("owner:{owner}"), mine))
        }
        None => Ok((format!("calendar:{}", calendar.id), vec![calendar.clone()])),
    }
}

/// One occurrence as the detection keeps it (the block plus what a person needs to see).
struct Seen {
    calendar: String,
    uid: String,
    summary: Option<String>,
}

fn data_field(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Detects, reports and closes the time conflicts of the owner of `connection`'s calendar in `window`.
pub(crate) async fn detect(
    store: &dyn Store,
    tenant: TenantId,
    connection: &Connection,
    window: Window,
    policy: ConflictPolicy,
    now: Timestamp,
) -> Result<TimeCounts, EngineError> {
    let calendar = store.get_calendar(tenant, connection.calendar_id).await?;
    let (owner, calendars) = owner_calendars(store, tenant, &calendar).await?;
    let mut blocks: Vec<BusyBlock> = Vec::new();
    let mut seen: Vec<Seen> = Vec::new();
    'calendars: for cal in &calendars {
        let mut after = None;
        loop {
            let page = store
                .list_occurrences(
                    tenant,
                    &OccurrenceQuery {
                        start: window.start,
                        end: window.end,
                        calendar_id: Some(cal.id),
                        after,
                        limit: PAGE,
                    },
                )
                .await?;
            for o in page.items {
                let data: Value = o
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(Value::Null);
                let free = data_field(&data, "transparency").as_deref() == Some("transparent")
                    || data_field(&data, "status").as_deref() == Some("cancelled");
                blocks.push(BusyBlock {
                    owner: owner.clone(),
                    series: o.series_id.to_string(),
                    recurrence_id: o.recurrence_id,
                    start: o.start,
                    end: o.end,
                    transparent: free,
                });
                seen.push(Seen {
                    calendar: o.calendar_id.to_string(),
                    uid: data_field(&data, "uid").unwrap_or_default(),
                    summary: data_field(&data, "summary"),
                });
                if blocks.len() >= MAX_BLOCKS {
                    tracing::warn!(
                        owner,
                        "time-conflict detection stopped at {MAX_BLOCKS} occurrences"
                    );
                    break 'calendars;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let uids: HashMap<&str, &str> = blocks
        .iter()
        .zip(&seen)
        .map(|(b, s)| (b.series.as_str(), s.uid.as_str()))
        .collect();
    let uid_of = |series: &str| uids.get(series).copied().unwrap_or_default();
    let pairs: Vec<PairOverlap> = overlapping_pairs(&blocks)
        .into_iter()
        .filter(|p| !calbridge_sync::resolve::is_copy_pair(uid_of(&p.first), uid_of(&p.second)))
        .collect();

    let stored = store
        .list_conflicts(
            tenant,
            &ConflictFilter {
                state: None,
                connection_id: None,
                kind: Some(ConflictKind::Time),
            },
        )
        .await?;
    let known: Vec<KnownTimeConflict> = stored
        .iter()
        .filter_map(|c| {
            let local: Value = serde_json::from_str(c.local_json.as_deref()?).ok()?;
            let resolution: Value = c
                .resolution_json
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            let accepted = resolution.get("option").and_then(Value::as_str) == Some("keep_both")
                || resolution.get("policy").and_then(Value::as_str) == Some("keep_both");
            Some(KnownTimeConflict {
                id: c.id.to_string(),
                owner: data_field(&local, "owner")?,
                key: data_field(&local, "key")?,
                fingerprint: data_field(&local, "fingerprint")?,
                open: c.state == ConflictState::Open,
                accepted,
            })
        })
        .collect();
    let decision = reconcile_time(&owner, &pairs, &known);
    let actor = format!("sync:{}", connection.id);
    let mut counts = TimeCounts::default();

    for &i in &decision.report {
        let pair = &pairs[i];
        let settled = report(
            store, tenant, connection, &owner, pair, &blocks, &seen, policy, &actor, now,
        )
        .await?;
        counts.detected += 1;
        counts.settled += u64::from(settled);
    }
    let by_id: HashMap<String, &calbridge_store::Conflict> =
        stored.iter().map(|c| (c.id.to_string(), c)).collect();
    for id in &decision.close {
        let Some(c) = by_id.get(id) else { continue };
        let resolution = json!({"closed": "overlap_gone"}).to_string();
        store
            .resolve_conflict(tenant, c.id, &resolution, &actor, now)
            .await?;
        store
            .append_audit(
                tenant,
                NewAuditEntry {
                    actor: actor.clone(),
                    action: "conflict.closed".into(),
                    subject: c.id.to_string(),
                    details_json: json!({"kind": "time", "reason": "the events no longer overlap", "event_uid": c.event_uid}).to_string(),
                },
            )
            .await?;
        counts.closed += 1;
    }
    Ok(counts)
}

/// Stores one new time conflict with its audit entry; under `keep_both` it is accepted at once.
#[allow(clippy::too_many_arguments)]
async fn report(
    store: &dyn Store,
    tenant: TenantId,
    connection: &Connection,
    owner: &str,
    pair: &PairOverlap,
    blocks: &[BusyBlock],
    seen: &[Seen],
    policy: ConflictPolicy,
    actor: &str,
    now: Timestamp,
) -> Result<bool, EngineError> {
    let (a, b) = pair.example;
    let event = |i: usize| {
        json!({
            "series_id": blocks[i].series,
            "calendar_id": seen[i].calendar,
            "uid": seen[i].uid,
            "summary": seen[i].summary,
            "recurrence_id": blocks[i].recurrence_id,
            "start": blocks[i].start.to_string(),
            "end": blocks[i].end.to_string(),
        })
    };
    let spans: Vec<String> = pair
        .spans
        .iter()
        .take(MAX_SPANS_SHOWN)
        .map(|(s, e)| format!("{s}/{e}"))
        .collect();
    let local = json!({
        "owner": owner,
        "key": pair.key(),
        "fingerprint": pair.fingerprint(),
        "events": [event(a), event(b)],
        "overlaps": pair.spans.len(),
    });
    let options = vec![ResolutionOption::KeepBoth];
    let record = store
        .create_conflict(
            tenant,
            NewConflict {
                connection_id: Some(connection.id),
                link_id: None,
                series_id: SeriesId::parse(&pair.first).ok(),
                event_uid: seen[a].uid.clone(),
                kind: ConflictKind::Time,
                local_json: Some(local.to_string()),
                remote_json: None,
                base_json: None,
                fields_json: to_json(&spans)?,
                options_json: to_json(&options)?,
            },
        )
        .await?;
    // `keep_both` accepts the overlap, as the `keep_both` option does; the other policies choose between
    // two versions of one event, which an overlap of two events does not have, so it waits for a person.
    let settled_by = (policy == ConflictPolicy::KeepBoth).then_some(policy);
    let details = json!({
        "kind": "time",
        "uid": seen[a].uid,
        "other_uid": seen[b].uid,
        "overlaps": spans,
        "settled_by": settled_by,
    })
    .to_string();
    store
        .append_audit(
            tenant,
            NewAuditEntry {
                actor: actor.to_owned(),
                action: "conflict.detected".into(),
                subject: record.id.to_string(),
                details_json: details.clone(),
            },
        )
        .await?;
    if let Some(policy) = settled_by {
        let resolution = json!({"policy": policy, "accepted": pair.fingerprint()}).to_string();
        store
            .resolve_conflict(tenant, record.id, &resolution, actor, now)
            .await?;
        store
            .append_audit(
                tenant,
                NewAuditEntry {
                    actor: actor.to_owned(),
                    action: "conflict.settled".into(),
                    subject: record.id.to_string(),
                    details_json: details,
                },
            )
            .await?;
    }
    Ok(settled_by.is_some())
}
