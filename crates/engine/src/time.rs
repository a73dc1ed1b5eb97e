//! Time conflicts, run after a link's sync: busy occurrences of one owner that overlap, across all of
//! the owner's local calendars (each holds what its connections sync in), recurring occurrences
//! included, free/transparent and cancelled ones excluded. The rules (pairs, dedup, closing) are
//! [`calbridge_sync::overlap`]; here the store is read and written.
//!
//! **Owner**: a local calendar's `owner` when set — every calendar of the tenant with that owner is one
//! person's — else the calendar alone. A connection syncs all of its remote calendars into its one local
//! calendar, so "the owner's linked calendars" are the local calendars of that owner.

use std::collections::{BTreeSet, HashMap, HashSet};

use calbridge_store::{
    Calendar, CalendarId, ConflictClosing, ConflictFilter, ConflictKind, ConflictState, Connection,
    DetectedConflict, NewConflict, Occurrence, OccurrenceQuery, SeriesId, Store, TenantId,
};
use calbridge_sync::overlap::{
    BusyBlock, KnownTimeConflict, PairOverlap, TimeScope, overlapping_pairs_in, reconcile_time,
};
use calbridge_sync::{ConflictPolicy, ResolutionOption, Window};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::EngineError;
use crate::pairs::{every_conflict, to_json};

/// Occurrences read per page, and at most in one detection (a bound on the cost of one run).
const PAGE: u32 = 1000;
const MAX_BLOCKS: usize = 50_000;
/// New time conflicts recorded by one detection at most: an imported calendar full of double bookings
/// would otherwise flood the conflict list (and the run) at once; the rest are counted as deferred.
const MAX_REPORTED: usize = 500;
/// Overlapping spans listed in one conflict's `fields`.
const MAX_SPANS_SHOWN: usize = 20;

/// What one detection did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeCounts {
    pub detected: u64,
    pub settled: u64,
    pub closed: u64,
    pub deferred: u64,
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

/// A time range, start inclusive, end exclusive.
type Span = (Timestamp, Timestamp);

/// Which series a detection looks at.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// The owner's whole window (a first or full sync: every series may have changed).
    All,
    /// These series (changed by the run) and what overlaps them: the cost follows the changes.
    Series(BTreeSet<SeriesId>),
}

/// Time ranges of the changed series above which a scoped detection reads the whole window instead of
/// one query per range (a daily series changed brings hundreds of ranges).
const MAX_SCOPED_RANGES: usize = 200;
/// Changed series up to which the stored conflicts are looked up by series rather than all read.
const MAX_SCOPED_SERIES_LOOKUP: usize = 200;

/// Collects busy blocks and what a person needs to see of them, once per occurrence.
#[derive(Default)]
struct Blocks {
    blocks: Vec<BusyBlock>,
    seen: Vec<Seen>,
    have: HashSet<(SeriesId, Option<String>)>,
}

impl Blocks {
    fn push(&mut self, owner: &str, o: Occurrence) {
        if !self.have.insert((o.series_id, o.recurrence_id.clone())) {
            return;
        }
        let data: Value = o
            .data
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        let free = data_field(&data, "transparency").as_deref() == Some("transparent")
            || data_field(&data, "status").as_deref() == Some("cancelled");
        self.blocks.push(BusyBlock {
            owner: owner.to_owned(),
            series: o.series_id.to_string(),
            recurrence_id: o.recurrence_id,
            start: o.start,
            end: o.end,
            transparent: free,
        });
        self.seen.push(Seen {
            calendar: o.calendar_id.to_string(),
            uid: data_field(&data, "uid").unwrap_or_default(),
            summary: data_field(&data, "summary"),
        });
    }

    fn full(&self) -> bool {
        self.blocks.len() >= MAX_BLOCKS
    }
}

/// Reads the occurrences of `calendars` overlapping `[start, end)` into `into` (up to `MAX_BLOCKS`).
async fn read_range(
    store: &dyn Store,
    tenant: TenantId,
    owner: &str,
    calendars: &[Calendar],
    start: Timestamp,
    end: Timestamp,
    into: &mut Blocks,
) -> Result<(), EngineError> {
    for cal in calendars {
        let mut after = None;
        loop {
            let page = store
                .list_occurrences(
                    tenant,
                    &OccurrenceQuery {
                        start,
                        end,
                        calendar_id: Some(cal.id),
                        after,
                        limit: PAGE,
                    },
                )
                .await?;
            for o in page.items {
                into.push(owner, o);
                if into.full() {
                    tracing::warn!(
                        owner,
                        "time-conflict detection stopped at {MAX_BLOCKS} occurrences"
                    );
                    return Ok(());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(())
}

/// Detects, reports and closes the time conflicts of the owner of `connection`'s calendar in `window`,
/// for the series in `scope`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn detect(
    store: &dyn Store,
    tenant: TenantId,
    connection: &Connection,
    window: Window,
    policy: ConflictPolicy,
    now: Timestamp,
    scope: &Scope,
) -> Result<TimeCounts, EngineError> {
    let calendar = store.get_calendar(tenant, connection.calendar_id).await?;
    let (owner, calendars) = owner_calendars(store, tenant, &calendar).await?;
    let mut found = Blocks::default();
    // The series decided on (`None`: all of them) and the time ranges read (`None`: the whole window).
    let (scoped, ranges): (Option<BTreeSet<String>>, Option<Vec<Span>>) = match scope {
        Scope::All => (None, None),
        Scope::Series(series) => {
            let ids: Vec<SeriesId> = series.iter().copied().collect();
            let mine: HashSet<CalendarId> = calendars.iter().map(|c| c.id).collect();
            let changed: Vec<Occurrence> = store
                .occurrences_of_series(tenant, &ids, window.start, window.end)
                .await?
                .into_iter()
                .filter(|o| mine.contains(&o.calendar_id))
                .collect();
            // The busy time of the changed series, merged into ranges: whatever overlaps them is
            // read.
            let mut ranges: Vec<Span> = Vec::new();
            for o in &changed {
                match ranges.last_mut() {
                    Some(last) if o.start <= last.1 => last.1 = last.1.max(o.end),
                    _ => ranges.push((o.start, o.end)),
                }
            }
            for o in changed {
                found.push(&owner, o);
            }
            let scoped = series.iter().map(ToString::to_string).collect();
            (
                Some(scoped),
                (ranges.len() <= MAX_SCOPED_RANGES).then_some(ranges),
            )
        }
    };
    match ranges {
        None => {
            read_range(
                store,
                tenant,
                &owner,
                &calendars,
                window.start,
                window.end,
                &mut found,
            )
            .await?
        }
        Some(ranges) => {
            for (start, end) in ranges {
                if start < end {
                    read_range(store, tenant, &owner, &calendars, start, end, &mut found).await?;
                }
            }
        }
    }
    let (blocks, seen) = (&found.blocks, &found.seen);
    let uids: HashMap<&str, &str> = blocks
        .iter()
        .zip(seen)
        .map(|(b, s)| (b.series.as_str(), s.uid.as_str()))
        .collect();
    let uid_of = |series: &str| uids.get(series).copied().unwrap_or_default();
    let time_scope = match &scoped {
        None => TimeScope::All,
        Some(series) => TimeScope::Series(series),
    };
    let pairs: Vec<PairOverlap> = overlapping_pairs_in(blocks, time_scope)
        .into_iter()
        .filter(|p| !calbridge_sync::resolve::is_copy_pair(uid_of(&p.first), uid_of(&p.second)))
        .collect();

    // The stored conflicts the decision needs: those of the scoped series (a scoped decision touches
    // no other pair), or all of them.
    let stored = match scope {
        Scope::Series(series) if series.len() <= MAX_SCOPED_SERIES_LOOKUP => {
            let ids: Vec<SeriesId> = series.iter().copied().collect();
            store
                .conflicts_naming_series(tenant, ConflictKind::Time, &ids)
                .await?
        }
        _ => {
            every_conflict(
                store,
                tenant,
                &ConflictFilter {
                    state: None,
                    connection_id: None,
                    link_id: None,
                    kind: Some(ConflictKind::Time),
                },
            )
            .await?
        }
    };
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
    let decision = reconcile_time(&owner, &pairs, &known, time_scope, MAX_REPORTED);
    if decision.deferred > 0 {
        tracing::warn!(
            owner,
            reported = decision.report.len(),
            deferred = decision.deferred,
            "more new time conflicts than one detection records; the rest are found by later detections"
        );
    }
    let actor = crate::run::sync_actor(connection);
    let mut counts = TimeCounts {
        deferred: decision.deferred as u64,
        ..TimeCounts::default()
    };

    let found: Vec<DetectedConflict> = decision
        .report
        .iter()
        .filter_map(|&i| pairs.get(i))
        .map(|pair| detected(connection, &owner, pair, blocks, seen, policy, &actor))
        .collect::<Result<_, _>>()?;
    for record in store.record_conflicts(tenant, found, now).await? {
        counts.detected += 1;
        counts.settled += u64::from(record.state == ConflictState::Resolved);
    }
    let by_id: HashMap<String, &calbridge_store::Conflict> =
        stored.iter().map(|c| (c.id.to_string(), c)).collect();
    let closing: Vec<ConflictClosing> = decision
        .close
        .iter()
        .filter_map(|id| by_id.get(id))
        .map(|c| ConflictClosing {
            id: c.id,
            resolution_json: json!({"closed": "overlap_gone"}).to_string(),
            actor: actor.clone(),
            details_json: json!({"kind": "time", "reason": "the events no longer overlap", "event_uid": c.event_uid}).to_string(),
        })
        .collect();
    counts.closed = store.close_conflicts(tenant, closing, now).await?;
    Ok(counts)
}

/// One new time conflict as it is recorded; under `keep_both` it is accepted at once.
fn detected(
    connection: &Connection,
    owner: &str,
    pair: &PairOverlap,
    blocks: &[BusyBlock],
    seen: &[Seen],
    policy: ConflictPolicy,
    actor: &str,
) -> Result<DetectedConflict, EngineError> {
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
    Ok(DetectedConflict {
        conflict: NewConflict {
            connection_id: Some(connection.id),
            link_id: None,
            series_id: SeriesId::parse(&pair.first).ok(),
            other_series_id: SeriesId::parse(&pair.second).ok(),
            event_uid: seen[a].uid.clone(),
            kind: ConflictKind::Time,
            local_json: Some(local.to_string()),
            remote_json: None,
            base_json: None,
            fields_json: to_json(&spans)?,
            options_json: to_json(&options)?,
        },
        actor: actor.to_owned(),
        details_json: details,
        settled: settled_by
            .map(|policy| json!({"policy": policy, "accepted": pair.fingerprint()}).to_string()),
    })
}
