//! The rows the store holds and the inputs that create them. Times are [`jiff::Timestamp`] (stored as Unix
//! milliseconds); JSON columns are carried as text the store does not interpret.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;
use crate::error::{Result, StoreError};

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A fresh id; UUIDv7, so ids sort by creation time and index pages stay warm.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            pub fn parse(text: &str) -> Result<Self> {
                uuid::Uuid::parse_str(text)
                    .map(Self)
                    .map_err(|_| StoreError::Invalid(format!("{} is not a valid {}", text, stringify!($name))))
            }

            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = StoreError;
            fn from_str(text: &str) -> Result<Self> {
                Self::parse(text)
            }
        }
    )*};
}

id_type! {
    /// A tenant: one site of a CMS; nothing crosses between tenants.
    TenantId,
    /// An API key row (not the secret).
    ApiKeyId,
    /// A local calendar.
    CalendarId,
    /// An event series (one UID: master plus overrides).
    SeriesId,
    /// A provider connection.
    ConnectionId,
    /// A connection × remote calendar pair.
    LinkId,
    /// One remote item mapped to a local series within a link.
    MappingId,
    /// A detected sync conflict.
    ConflictId,
    /// One sync run.
    SyncRunId,
    /// A tombstone of a deleted item.
    TombstoneId,
    /// A leased job.
    JobId,
    /// An outbound webhook subscription.
    WebhookId,
    /// One webhook delivery attempt.
    DeliveryId,
}

macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(StoreError::Invalid(format!("{other:?} is not a valid {}", stringify!($name)))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum! {
    /// The remote system a connection talks to.
    Provider { Microsoft = "microsoft", Google = "google", Caldav = "caldav", Ics = "ics" }
}
str_enum! {
    /// Whether a connection can sync, as the API shows it.
    ConnectionStatus { Active = "active", NeedsAuth = "needs_auth", NeedsReauth = "needs_reauth", Error = "error", Paused = "paused" }
}
str_enum! {
    /// Whether a link syncs or was stopped (for instance as suspect after a listing that shrank too much).
    LinkStatus { Active = "active", Suspect = "suspect", Error = "error" }
}
str_enum! {
    /// The four conflict kinds of DESIGN.md §5.
    ConflictKind { Update = "update", Deletion = "deletion", Time = "time", Identity = "identity" }
}
str_enum! {
    ConflictState { Open = "open", Resolved = "resolved" }
}
str_enum! {
    SyncRunStatus { Running = "running", Succeeded = "succeeded", Failed = "failed", Partial = "partial" }
}
str_enum! {
    /// `queued`: waits for `run_at`; `running`: leased; `done`: completed; `failed`: gave up.
    JobState { Queued = "queued", Running = "running", Done = "done", Failed = "failed" }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: Timestamp,
}

/// A key as the server made it: the server generates and hashes the secret; the store never sees it.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub name: String,
    /// The public key id embedded in the token, looked up on every request.
    pub prefix: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCalendar {
    pub name: String,
    pub time_zone: String,
    pub owner: Option<String>,
}

/// The mutable fields of a calendar; an update replaces all of them.
pub type CalendarUpdate = NewCalendar;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Calendar {
    pub id: CalendarId,
    pub tenant_id: TenantId,
    pub name: String,
    pub time_zone: String,
    pub owner: Option<String>,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One occurrence row, computed by the caller with the model's expander.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOccurrence {
    /// `None` for a non-recurring event; otherwise the occurrence's RECURRENCE-ID as the caller spells it.
    pub recurrence_id: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub all_day: bool,
    /// Opaque per-occurrence JSON the caller wants back from window queries (summary, status...).
    pub data: Option<String>,
}

/// The occurrence rows of a series up to `expanded_until` (`None`: the rows are complete, the series ends).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OccurrenceSet {
    pub rows: Vec<NewOccurrence>,
    pub expanded_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSeries {
    pub calendar_id: CalendarId,
    pub uid: String,
    pub ical: String,
    pub model_json: String,
    pub hash: String,
    pub occurrences: OccurrenceSet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesUpdate {
    pub ical: String,
    pub model_json: String,
    pub hash: String,
    pub occurrences: OccurrenceSet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Series {
    pub id: SeriesId,
    pub tenant_id: TenantId,
    pub calendar_id: CalendarId,
    pub uid: String,
    pub ical: String,
    pub model_json: String,
    pub hash: String,
    /// Starts at 1, increases by one on every change; the API's ETag.
    pub version: i64,
    pub expanded_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

/// Keyset position in a window query: the last row of the previous page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccurrenceCursor {
    pub start: Timestamp,
    pub series_id: SeriesId,
    pub recurrence_id: Option<String>,
}

impl OccurrenceCursor {
    /// A compact opaque token (`ms.series.recurrence-id-hex`), safe in a URL query.
    pub fn to_token(&self) -> String {
        format!(
            "{}.{}.{}",
            self.start.as_millisecond(),
            self.series_id,
            hex::encode(self.recurrence_id.as_deref().unwrap_or("").as_bytes())
        )
    }

    pub fn parse(token: &str) -> Result<Self> {
        let bad = || StoreError::Invalid(format!("{token:?} is not a valid cursor"));
        let mut parts = token.splitn(3, '.');
        let (Some(ms), Some(series), Some(rid)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let ms: i64 = ms.parse().map_err(|_| bad())?;
        let start = Timestamp::from_millisecond(ms).map_err(|_| bad())?;
        let series_id = SeriesId::parse(series).map_err(|_| bad())?;
        let rid = String::from_utf8(hex::decode(rid).map_err(|_| bad())?).map_err(|_| bad())?;
        Ok(Self {
            start,
            series_id,
            recurrence_id: (!rid.is_empty()).then_some(rid),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccurrenceQuery {
    /// Occurrences that end after `start` and begin before `end` (half-open overlap).
    pub start: Timestamp,
    pub end: Timestamp,
    pub calendar_id: Option<CalendarId>,
    pub after: Option<OccurrenceCursor>,
    /// Page size, 1..=1000.
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Occurrence {
    pub series_id: SeriesId,
    pub calendar_id: CalendarId,
    pub recurrence_id: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub all_day: bool,
    pub data: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccurrencePage {
    pub items: Vec<Occurrence>,
    /// Present when more rows may follow.
    pub next: Option<OccurrenceCursor>,
}

#[derive(Clone, Debug)]
pub struct NewConnection {
    pub provider: Provider,
    pub name: String,
    pub calendar_id: CalendarId,
    pub credentials: Option<Sealed>,
    pub sync_options_json: String,
    pub status: ConnectionStatus,
}

#[derive(Clone, Debug)]
pub struct ConnectionUpdate {
    pub name: String,
    pub sync_options_json: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: Provider,
    pub name: String,
    pub calendar_id: CalendarId,
    /// Sealed under the master key; never serialized.
    #[serde(skip)]
    pub credentials: Option<Sealed>,
    pub sync_options_json: String,
    pub status: ConnectionStatus,
    pub status_reason: Option<String>,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLink {
    pub connection_id: ConnectionId,
    pub remote_calendar_id: String,
    pub remote_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub id: LinkId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub remote_calendar_id: String,
    pub remote_name: Option<String>,
    /// Provider cursor: Graph delta link, Google sync token, CalDAV sync-token; `None` forces a full read.
    pub cursor: Option<String>,
    /// Local change mark: the change-stream seq up to which local edits were synced to this link;
    /// `None` until a first sync committed.
    pub local_cursor: Option<i64>,
    pub last_full_sync_at: Option<Timestamp>,
    pub status: LinkStatus,
    pub status_reason: Option<String>,
    /// The run whose time-conflict detection is due: begun (marked ahead, with the run's cursor
    /// commit) and not finished, or failed, and not made up for yet (see
    /// [`crate::Store::set_time_detection_due`]); `None` when nothing is due.
    pub time_detection_due: Option<SyncRunId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Both change marks of a link, saved together by [`crate::Store::set_link_cursors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkCursors<'a> {
    /// The provider cursor; `None` forces a full read next time.
    pub remote: Option<&'a str>,
    /// The change-stream seq covered; `None` makes the next sync list every local series.
    pub local: Option<i64>,
    /// Set when this run was a complete reconciliation.
    pub full_sync_at: Option<Timestamp>,
    /// Marks the link's time detection due in the same statement, for a run that detects time
    /// conflicts after its commit: a run killed in between leaves the mark, and the next run makes
    /// the detection up. `None` leaves the mark as it is.
    pub time_detection_due: Option<TimeDetectionMark>,
}

/// A run's mark on its link that its time-conflict detection is due (`links.time_detection_due`),
/// written before the detection and cleared by the run once it succeeded
/// ([`crate::Store::clear_time_detection_due`] of `run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeDetectionMark {
    /// The run about to detect; the mark names it.
    pub run: SyncRunId,
    /// The mark the run read on its link before it began (`Link::time_detection_due`). The run takes
    /// it over: a run of a marked link detects over the owner's whole window, which covers what the
    /// marking run left undetected. A mark naming any other run was written after the read (a run
    /// in between marked its own detection) and stays, so this run's success does not clear it.
    pub seen: Option<SyncRunId>,
}

/// Insert-or-replace of the mapping keyed by (link, remote id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingUpsert {
    pub link_id: LinkId,
    pub remote_id: String,
    pub series_id: Option<SeriesId>,
    pub remote_version: Option<String>,
    /// The normalized content both sides last agreed on (JSON) and its hash.
    pub base_json: Option<String>,
    pub base_hash: Option<String>,
    pub last_seen_at: Option<Timestamp>,
    /// The row records a write that may or may not have happened yet (a write-ahead row before a
    /// create, or a pair whose base carries an intent): `write_ahead_mappings` returns it until a later
    /// upsert clears this.
    pub write_ahead: bool,
    /// The version of the local series the base was taken from, when the caller read or wrote that very
    /// row in the step that records the pair (see `Store::series_at_pair_version`); `None` otherwise.
    pub local_version: Option<i64>,
}

/// The occurrence ids a provider reported of one remote series of a link (Microsoft Graph: a removed
/// occurrence's id does not name its series), replacing those stored before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesOccurrenceIds {
    /// The series' remote id (its pair's `remote_id`).
    pub remote_id: String,
    pub occurrence_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemMapping {
    pub id: MappingId,
    pub tenant_id: TenantId,
    pub link_id: LinkId,
    pub series_id: Option<SeriesId>,
    pub remote_id: String,
    pub remote_version: Option<String>,
    pub base_json: Option<String>,
    pub base_hash: Option<String>,
    pub last_seen_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConflict {
    pub connection_id: Option<ConnectionId>,
    pub link_id: Option<LinkId>,
    pub series_id: Option<SeriesId>,
    /// The second series a conflict names (a time conflict's other event); found by
    /// `Store::conflicts_naming_series` like `series_id`.
    pub other_series_id: Option<SeriesId>,
    pub event_uid: String,
    pub kind: ConflictKind,
    pub local_json: Option<String>,
    pub remote_json: Option<String>,
    pub base_json: Option<String>,
    /// JSON array of the differing field names.
    pub fields_json: String,
    /// JSON array of the resolution options that apply.
    pub options_json: String,
}

/// One conflict a detection found, recorded with its audit entry by `Store::record_conflicts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedConflict {
    pub conflict: NewConflict,
    /// Who detected it (`sync:<connection>`): the actor of its audit entries and of a settlement.
    pub actor: String,
    /// Details of its `conflict.detected` audit entry (and of `conflict.settled`, when settled).
    pub details_json: String,
    /// A policy settled it as it was found: this resolution, stored at once.
    pub settled: Option<String>,
}

/// An open conflict a detection closes (its cause went away), with its `conflict.closed` audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictClosing {
    pub id: ConflictId,
    pub resolution_json: String,
    pub actor: String,
    pub details_json: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub id: ConflictId,
    pub tenant_id: TenantId,
    pub connection_id: Option<ConnectionId>,
    pub link_id: Option<LinkId>,
    pub series_id: Option<SeriesId>,
    /// A time conflict's other series (`None` for the other kinds, or once that series is deleted).
    pub other_series_id: Option<SeriesId>,
    pub event_uid: String,
    pub kind: ConflictKind,
    pub state: ConflictState,
    pub local_json: Option<String>,
    pub remote_json: Option<String>,
    pub base_json: Option<String>,
    pub fields_json: String,
    pub options_json: String,
    pub detected_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolution_json: Option<String>,
    pub resolved_by: Option<String>,
    /// A resolution begun and not known to be finished (JSON: option, actor, start; the engine's
    /// shape), set before its first write (`set_conflict_resolving`, migration 0014) and kept when the
    /// conflict closes.
    pub resolving_json: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConflictFilter {
    pub state: Option<ConflictState>,
    pub connection_id: Option<ConnectionId>,
    /// Only the conflicts of this link (time conflicts belong to no link).
    pub link_id: Option<LinkId>,
    pub kind: Option<ConflictKind>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncRun {
    pub id: SyncRunId,
    pub tenant_id: TenantId,
    pub connection_id: Option<ConnectionId>,
    pub full: bool,
    pub status: SyncRunStatus,
    pub counts_json: String,
    pub requests: i64,
    pub bytes: i64,
    pub errors_json: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// Progress or outcome of a run; `finished_at` closes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRunUpdate {
    pub status: SyncRunStatus,
    pub counts_json: String,
    pub requests: i64,
    pub bytes: i64,
    pub errors_json: String,
    pub finished_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// Who: `key:<prefix>`, `system`, `sync:<connection>`...
    pub actor: String,
    /// What, dotted: `event.created`, `conflict.resolved`...
    pub action: String,
    /// The object acted on, usually its id.
    pub subject: String,
    pub details_json: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details_json: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTombstone {
    pub calendar_id: Option<CalendarId>,
    pub series_id: Option<SeriesId>,
    pub link_id: Option<LinkId>,
    pub remote_id: Option<String>,
    pub uid: Option<String>,
    pub deleted_at: Timestamp,
    /// Kept until then; [`crate::Store::purge_tombstones`] removes it afterwards.
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub id: TombstoneId,
    pub tenant_id: TenantId,
    pub calendar_id: Option<CalendarId>,
    pub series_id: Option<SeriesId>,
    pub link_id: Option<LinkId>,
    pub remote_id: Option<String>,
    pub uid: Option<String>,
    pub deleted_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub tenant_id: Option<TenantId>,
    /// What to do (`sync.link`, `webhook.deliver`...); with `key` it names the job uniquely.
    pub kind: String,
    pub key: String,
    pub payload_json: String,
    pub run_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: Option<TenantId>,
    pub kind: String,
    pub key: String,
    pub payload_json: String,
    pub state: JobState,
    pub run_at: Timestamp,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub fencing_token: i64,
}

/// Proof of holding a job: writes done on its behalf should carry `fencing_token`; a larger token wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: Job,
    pub owner: String,
    pub fencing_token: i64,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct NewWebhook {
    pub url: String,
    /// The HMAC signing secret, sealed under the master key.
    pub secret: Sealed,
    /// JSON array of event kinds delivered (`["*"]` for all).
    pub events_json: String,
    pub calendar_id: Option<CalendarId>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant_id: TenantId,
    pub url: String,
    #[serde(skip)]
    pub secret: Sealed,
    pub events_json: String,
    pub calendar_id: Option<CalendarId>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    /// The change-stream seq up to which this webhook's messages are settled (delivered or not matching).
    pub delivered_seq: i64,
    /// No attempt before this time (backing off after a failure).
    pub retry_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to a webhook's target or filters; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub events_json: Option<String>,
    /// `Some(None)` removes the calendar filter.
    pub calendar_id: Option<Option<CalendarId>>,
    /// A new signing secret (rotation).
    pub secret: Option<Sealed>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub subscription_id: WebhookId,
    pub change_seq: Option<i64>,
    pub event: String,
    pub attempt: i64,
    /// `delivered`, `failed`, `pending`...
    pub status: String,
    pub response_status: Option<i64>,
    pub error: Option<String>,
    /// Wall time of the attempt in milliseconds (request sent to answer or error).
    pub latency_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub subscription_id: WebhookId,
    pub change_seq: Option<i64>,
    pub event: String,
    pub attempt: i64,
    pub status: String,
    pub response_status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: Option<i64>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChange {
    pub calendar_id: Option<CalendarId>,
    /// `event.created`, `event.updated`, `event.deleted`, `conflict.detected`, `sync.finished`...
    pub kind: String,
    pub subject_id: String,
    pub data_json: String,
}

/// One entry of the change stream; `seq` increases in commit order within a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub seq: i64,
    pub tenant_id: TenantId,
    pub calendar_id: Option<CalendarId>,
    pub kind: String,
    pub subject_id: String,
    pub data_json: String,
    pub at: Timestamp,
}

/// A provider push channel to create or replace: a Graph subscription or a Google watch channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPushChannel {
    /// `microsoft` or `google`.
    pub provider: String,
    /// The provider's subscription / channel id.
    pub id: String,
    pub link_id: LinkId,
    /// SHA-256 hex of the clientState / channel token (never the secret itself).
    pub secret_hash: String,
    /// Google's `resourceId` (Graph has none).
    pub resource_id: Option<String>,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PushChannel {
    pub provider: String,
    pub id: String,
    pub tenant_id: TenantId,
    pub link_id: LinkId,
    #[serde(skip)]
    pub secret_hash: String,
    pub resource_id: Option<String>,
    pub expires_at: Timestamp,
    /// The highest message number accepted (Google), for dropping duplicates.
    pub last_message: Option<i64>,
    pub created_at: Timestamp,
}

/// A pending OAuth sign-in: the hash of the `state` sent to the provider and the sealed PKCE verifier.
#[derive(Clone, Debug)]
pub struct NewOAuthState {
    /// SHA-256 (hex) of the `state`; the state itself is never stored.
    pub state_hash: String,
    pub connection_id: ConnectionId,
    /// `microsoft` or `google`.
    pub provider: String,
    /// The PKCE verifier, sealed with `Purpose::OAuthVerifier`.
    pub verifier: Sealed,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct OAuthState {
    pub state_hash: String,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub verifier: Sealed,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}
