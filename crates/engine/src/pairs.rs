//! The stored state of a link's pairs, shared by sync runs and conflict resolutions: the create key of a
//! series on a link, recording a pair with its new base, and forgetting one with a tombstone.

use calbridge_providers::CreateKey;
use calbridge_store::{
    Conflict, ConflictFilter, ItemMapping, LinkId, MappingUpsert, NewTombstone, SeriesId, Store,
    TenantId,
};
use calbridge_sync::{ItemState, LocalId, RemoteId, RemoteVersion, Uid};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::EngineError;

/// What the mapping's `base_json` holds: the UID and the state both sides last agreed on.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredBase {
    pub uid: Uid,
    pub state: ItemState,
    /// A write begun but not known to be finished (written just before it, cleared when the pair is
    /// recorded). A run killed between the write and its record leaves it, and the next run uses it
    /// to recognise its own write instead of taking it for someone else's change (see `Intent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// An earlier write in flight on the same row, kept beside `intent`: a resolution's `merge`
    /// writes the merged version locally and then to the provider, and the remote write's intent
    /// must not replace the local one's (a refused remote write leaves the local write the only one
    /// made, which the next run must still recognise as the resolution's own). Recognised first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier: Option<Intent>,
}

impl StoredBase {
    /// The writes in flight on the row, the earlier one first.
    pub fn intents(&self) -> impl Iterator<Item = &Intent> {
        self.earlier.iter().chain(self.intent.iter())
    }
}

/// The base a stored row holds, when it can be read (a corrupt one counts as none: the pair is then
/// left out of plans rather than failing the run).
pub(crate) fn stored_base(m: &ItemMapping) -> Option<StoredBase> {
    serde_json::from_str(m.base_json.as_deref()?).ok()
}

/// What a write in flight was going to leave: `state` on `side`. Only recorded for writes that copy
/// one side's whole state to the other (so the copied side held `state` when the write began).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub side: IntentSide,
    pub state: ItemState,
    /// For a local write: the remote version the copied state had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The base to take when the intent is recognised, when it is not `state` itself: a resolution's
    /// merged version written locally leaves the remote side at its own version, which is then the
    /// base both sides agreed on (so the next run writes the merge out instead of re-detecting the
    /// conflict the person just decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ItemState>,
}

impl Intent {
    /// The base a recognised intent leaves the pair with.
    pub fn recognised_base(&self) -> ItemState {
        self.base.clone().unwrap_or_else(|| self.state.clone())
    }
}

/// Remote ids of write-ahead rows for remote creates (the real id is known only after the create).
pub(crate) const PENDING_CREATE: &str = "pending-create:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IntentSide {
    Local,
    Remote,
}

/// One side of a conflict as stored (`local_json` / `remote_json`): enough to park it and to show it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ConflictSide {
    pub id: Option<String>,
    pub version: Option<String>,
    pub state: Option<ItemState>,
}

/// A pair to record once the series' last action succeeded.
#[derive(Debug)]
pub(crate) struct Pending {
    pub local: LocalId,
    pub remote: RemoteId,
    pub version: RemoteVersion,
    pub state: ItemState,
    pub uid: Uid,
}

/// The idempotent create key of a local series on a link: a retried create lands on the same item.
pub(crate) fn create_key(link: LinkId, local: &LocalId) -> CreateKey {
    let digest = Sha256::digest(format!("{link}\n{local}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    CreateKey::from_bytes(bytes)
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String, EngineError> {
    serde_json::to_string(value).map_err(|e| EngineError::Content(e.to_string()))
}

pub(crate) fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn series_id(id: &LocalId) -> Result<SeriesId, EngineError> {
    SeriesId::parse(id.as_str()).map_err(|e| EngineError::Content(e.to_string()))
}

/// Writes a write-ahead row (or a pair's intent) before a write, so a process killed right after the
/// write can recognise it next time (sync runs and conflict resolutions alike; see `Intent`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_ahead(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    now: Timestamp,
    remote_id: &str,
    series: Option<SeriesId>,
    version: Option<&RemoteVersion>,
    base: &StoredBase,
) -> Result<(), EngineError> {
    store
        .upsert_mapping(
            tenant,
            write_ahead_row(link, now, remote_id, series, version, base)?,
        )
        .await?;
    Ok(())
}

/// The row [`write_ahead`] writes (a batch of local creates writes many in one transaction).
pub(crate) fn write_ahead_row(
    link: LinkId,
    now: Timestamp,
    remote_id: &str,
    series: Option<SeriesId>,
    version: Option<&RemoteVersion>,
    base: &StoredBase,
) -> Result<MappingUpsert, EngineError> {
    Ok(MappingUpsert {
        link_id: link,
        remote_id: remote_id.to_owned(),
        series_id: series,
        remote_version: version.map(ToString::to_string),
        base_json: Some(to_json(base)?),
        base_hash: Some(hex_sha256(&to_json(&base.state.snapshot)?)),
        last_seen_at: Some(now),
        write_ahead: true,
        local_version: None,
    })
}

/// Records a pair with its new base; a pair replaces any earlier pair of either id on this link.
pub(crate) async fn record_pair(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    now: Timestamp,
    p: &Pending,
) -> Result<(), EngineError> {
    record_pair_at(store, tenant, link, now, p, None).await
}

/// [`record_pair`], stating that the local series at `local_version` holds the pair's new base. Only a
/// step that read or wrote that very row may say so: a sync run then skips the series while it stays at
/// that version (`Store::series_at_pair_version`), which is how it tells its own writes coming back.
pub(crate) async fn record_pair_at(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    now: Timestamp,
    p: &Pending,
    local_version: Option<i64>,
) -> Result<(), EngineError> {
    // One transaction with the removal of the series' other rows on the link: deleting a create's
    // write-ahead row before the pair was written left a process killed in between with a remote item
    // nothing named as ours, which the next run imported as someone else's event (bringing back a
    // series deleted locally meanwhile; found by the `kill -9` crash test).
    store
        .upsert_pair(tenant, pair_row(link, now, p, local_version)?)
        .await?;
    Ok(())
}

/// The row [`record_pair_at`] writes (a batch of local creates records many in one transaction,
/// `Store::upsert_pairs`).
pub(crate) fn pair_row(
    link: LinkId,
    now: Timestamp,
    p: &Pending,
    local_version: Option<i64>,
) -> Result<MappingUpsert, EngineError> {
    let series = series_id(&p.local)?;
    let base = StoredBase {
        uid: p.uid.clone(),
        state: p.state.clone(),
        intent: None,
        earlier: None,
    };
    Ok(MappingUpsert {
        link_id: link,
        remote_id: p.remote.to_string(),
        series_id: Some(series),
        remote_version: Some(p.version.to_string()),
        base_json: Some(to_json(&base)?),
        base_hash: Some(hex_sha256(&to_json(&p.state.snapshot)?)),
        last_seen_at: Some(now),
        write_ahead: false,
        local_version,
    })
}

/// Where a forgotten pair's tombstone goes and how long it stays.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TombstoneAt {
    pub link: LinkId,
    pub calendar: calbridge_store::CalendarId,
    pub now: Timestamp,
    pub retention: jiff::SignedDuration,
}

/// Drops the pair (if stored) and leaves a tombstone of the deletion.
pub(crate) async fn forget_pair(
    store: &dyn Store,
    tenant: TenantId,
    at: TombstoneAt,
    local: &LocalId,
    remote: &RemoteId,
    uid: Option<String>,
) -> Result<(), EngineError> {
    let mapping = store.get_mapping(tenant, at.link, remote.as_str()).await?;
    let expires = at
        .now
        .checked_add(at.retention)
        .map_err(|e| EngineError::Content(e.to_string()))?;
    store
        .put_tombstone(
            tenant,
            NewTombstone {
                calendar_id: Some(at.calendar),
                series_id: SeriesId::parse(local.as_str()).ok(),
                link_id: Some(at.link),
                remote_id: Some(remote.to_string()),
                uid,
                deleted_at: at.now,
                expires_at: expires,
            },
        )
        .await?;
    if let Some(m) = mapping {
        store.delete_mapping(tenant, m.id).await?;
    }
    Ok(())
}

/// Every conflict matching `filter`, page by page: the engine parks and deduplicates against all of
/// them, and a first page alone (`list_conflicts`) would let conflicts past it be recorded again.
pub(crate) async fn every_conflict(
    store: &dyn Store,
    tenant: TenantId,
    filter: &ConflictFilter,
) -> Result<Vec<Conflict>, EngineError> {
    const PAGE: u32 = 1000;
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_conflicts_after(tenant, filter, after, PAGE)
            .await?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|c| c.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}
