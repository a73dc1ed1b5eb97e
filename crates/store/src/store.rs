use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::crypto::MasterKey;
use crate::error::Result;
use crate::records::*;

/// The one storage interface of calbridge, implemented by [`crate::SqliteStore`] and [`crate::PgStore`].
///
/// Rules every method keeps: tenant data is only reached with its tenant id (another tenant's row reads as
/// `NotFound`/empty); versioned rows (calendars, series, connections) change only through an atomic
/// `UPDATE … WHERE version = expected`, failing with `PreconditionFailed` when stale; a series write and its
/// occurrence rows and its change-stream entry commit together.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Brings the schema up to date; safe to run any number of times, and concurrently.
    async fn migrate(&self) -> Result<()>;

    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    // --- tenants ---
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    async fn get_tenant(&self, tenant: TenantId) -> Result<Tenant>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;

    // --- API keys ---
    async fn create_api_key(&self, tenant: TenantId, key: NewApiKey) -> Result<ApiKey>;
    /// The authentication lookup: the key's prefix identifies it and its tenant, so this is the one query on
    /// tenant data that does not take a tenant id. Revoked keys are returned too (the caller refuses them).
    async fn find_api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>>;
    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>>;
    async fn touch_api_key(&self, tenant: TenantId, key: ApiKeyId, at: Timestamp) -> Result<()>;
    async fn revoke_api_key(&self, tenant: TenantId, key: ApiKeyId) -> Result<ApiKey>;

    // --- calendars ---
    async fn create_calendar(&self, tenant: TenantId, calendar: NewCalendar) -> Result<Calendar>;
    async fn get_calendar(&self, tenant: TenantId, calendar: CalendarId) -> Result<Calendar>;
    async fn list_calendars(&self, tenant: TenantId) -> Result<Vec<Calendar>>;
    async fn update_calendar(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        expected_version: i64,
        update: CalendarUpdate,
    ) -> Result<Calendar>;
    /// Deletes the calendar with its series and occurrences; refused (`Conflict`) while a connection uses it.
    async fn delete_calendar(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        expected_version: Option<i64>,
    ) -> Result<()>;

    // --- event series and occurrences ---
    async fn create_series(&self, tenant: TenantId, series: NewSeries) -> Result<Series>;
    /// Creates many series in one transaction, all or nothing (an initial import, a bulk load).
    async fn create_series_batch(
        &self,
        tenant: TenantId,
        batch: Vec<NewSeries>,
    ) -> Result<Vec<Series>>;
    /// Deleted series are returned too (with `deleted_at`), so sync can tell "deleted" from "never existed".
    async fn get_series(&self, tenant: TenantId, series: SeriesId) -> Result<Series>;
    async fn get_series_by_uid(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        uid: &str,
    ) -> Result<Option<Series>>;
    /// The live series of `calendar` holding one of `uids`, in no particular order (a UID no live
    /// series holds is absent): [`Store::get_series_by_uid`] for many UIDs, one indexed query per
    /// few hundred (a sync's batch of local creates asks once per chunk, not once per event).
    async fn get_series_by_uids(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        uids: &[String],
    ) -> Result<Vec<Series>>;
    /// The latest-created deleted series of `calendar` with `uid` created at or after `since`, if any
    /// (sync: a series it created itself, by a run killed before recording the pair, and deleted by
    /// the application since). Asked after an interrupted run, once per write-ahead row without its
    /// pair; one probe of a partial index on deleted series (migration 0016).
    async fn get_deleted_series_by_uid(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        uid: &str,
        since: Timestamp,
    ) -> Result<Option<Series>>;
    async fn get_series_many(&self, tenant: TenantId, ids: &[SeriesId]) -> Result<Vec<Series>>;
    /// Live series of a calendar in id order, `limit` at a time after `after`.
    async fn list_series(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        after: Option<SeriesId>,
        limit: u32,
    ) -> Result<Vec<Series>>;
    async fn update_series(
        &self,
        tenant: TenantId,
        series: SeriesId,
        expected_version: i64,
        update: SeriesUpdate,
    ) -> Result<Series>;
    /// Soft delete: the row stays (with `deleted_at`, version bumped), its occurrences go.
    async fn delete_series(
        &self,
        tenant: TenantId,
        series: SeriesId,
        expected_version: i64,
    ) -> Result<Series>;
    /// Replaces the occurrence rows of a live series (e.g. to extend the horizon) without changing its version.
    async fn replace_occurrences(
        &self,
        tenant: TenantId,
        series: SeriesId,
        expected_version: i64,
        occurrences: OccurrenceSet,
    ) -> Result<()>;
    /// Live series whose occurrence rows stop before `horizon` (candidates for extension), any tenant.
    async fn series_needing_expansion(
        &self,
        horizon: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, SeriesId)>>;
    /// Occurrences overlapping the window, ordered by (start, series, recurrence id), keyset-paginated.
    async fn list_occurrences(
        &self,
        tenant: TenantId,
        query: &OccurrenceQuery,
    ) -> Result<OccurrencePage>;
    /// The occurrences of the given series that overlap `[start, end)`, ordered by (start, series,
    /// recurrence id); all of them (a caller asks for a few series: the ones a sync run changed).
    async fn occurrences_of_series(
        &self,
        tenant: TenantId,
        series: &[SeriesId],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Occurrence>>;

    // --- connections and links ---
    async fn create_connection(
        &self,
        tenant: TenantId,
        connection: NewConnection,
    ) -> Result<Connection>;
    async fn get_connection(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
    ) -> Result<Connection>;
    async fn list_connections(&self, tenant: TenantId) -> Result<Vec<Connection>>;
    async fn update_connection(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        expected_version: Option<i64>,
        update: ConnectionUpdate,
    ) -> Result<Connection>;
    async fn set_connection_credentials(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        credentials: Option<crate::crypto::Sealed>,
    ) -> Result<Connection>;
    async fn set_connection_status(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        status: ConnectionStatus,
        reason: Option<&str>,
    ) -> Result<Connection>;
    async fn delete_connection(&self, tenant: TenantId, connection: ConnectionId) -> Result<()>;

    async fn create_link(&self, tenant: TenantId, link: NewLink) -> Result<Link>;
    async fn get_link(&self, tenant: TenantId, link: LinkId) -> Result<Link>;
    async fn list_links(&self, tenant: TenantId, connection: ConnectionId) -> Result<Vec<Link>>;
    /// Saves the provider cursor; `full_sync_at` records a completed full reconciliation.
    async fn set_link_cursor(
        &self,
        tenant: TenantId,
        link: LinkId,
        cursor: Option<&str>,
        full_sync_at: Option<Timestamp>,
    ) -> Result<Link>;
    /// Saves the provider cursor and the local change mark together, once a run committed every change
    /// they cover (`local` is a change-stream seq, see [`Store::latest_change_seq`]), and with them
    /// the run's time-detection mark when it has one (as [`Store::set_time_detection_due`]).
    async fn set_link_cursors(
        &self,
        tenant: TenantId,
        link: LinkId,
        cursors: LinkCursors<'_>,
    ) -> Result<Link>;
    async fn set_link_status(
        &self,
        tenant: TenantId,
        link: LinkId,
        status: LinkStatus,
        reason: Option<&str>,
    ) -> Result<Link>;
    async fn delete_link(&self, tenant: TenantId, link: LinkId) -> Result<()>;
    /// Marks the time-conflict detection of `mark.run` on `link` due before it runs (a run that
    /// commits cursors does it in [`Store::set_link_cursors`] instead), so that if it fails or never
    /// finishes, the link's next run detects again over the owner's whole window: the marker is the
    /// link's `time_detection_due`. It names `mark.run` when it was empty or named `mark.seen`;
    /// a marker naming another run stays (see [`TimeDetectionMark`]).
    async fn set_time_detection_due(
        &self,
        tenant: TenantId,
        link: LinkId,
        mark: TimeDetectionMark,
    ) -> Result<()>;
    /// Clears the marker after the detection of `seen` (the run that marked it) succeeded, only if
    /// it still names `seen`: a detection marked meanwhile by another run stays due. `false` when
    /// the marker named another run, or nothing.
    async fn clear_time_detection_due(
        &self,
        tenant: TenantId,
        link: LinkId,
        seen: SyncRunId,
    ) -> Result<bool>;

    // --- item mappings ---
    async fn upsert_mapping(&self, tenant: TenantId, mapping: MappingUpsert)
    -> Result<ItemMapping>;
    /// [`Store::upsert_mapping`] for many rows in one transaction, all or nothing, with multi-row
    /// statements (a sync's write-ahead rows for a batch of local creates). Refused (`Invalid`, nothing
    /// written) when a `(link, remote id)` appears twice; links and series are checked as the tenant's.
    async fn upsert_mappings(&self, tenant: TenantId, mappings: Vec<MappingUpsert>) -> Result<()>;
    /// Records the pair of `pair.series_id` (required) and `pair.remote_id` on the link, and deletes
    /// every other row of that link naming the series (a create's write-ahead row, an earlier pair) in
    /// the same transaction: a process killed midway leaves either those rows or the pair, never
    /// neither (a remote item created by a sync is known as its own by one of them).
    async fn upsert_pair(&self, tenant: TenantId, pair: MappingUpsert) -> Result<ItemMapping>;
    /// [`Store::upsert_pair`] for many pairs in one transaction, all or nothing: every pair, and the
    /// removal of every other row of its link naming its series, commit together (a sync's batch of
    /// local creates). Refused (`Invalid`, nothing written) when a pair has no series, or when a
    /// `(link, remote id)` or a `(link, series)` appears twice.
    async fn upsert_pairs(&self, tenant: TenantId, pairs: Vec<MappingUpsert>) -> Result<()>;
    async fn get_mapping(
        &self,
        tenant: TenantId,
        link: LinkId,
        remote_id: &str,
    ) -> Result<Option<ItemMapping>>;
    async fn mappings_for_series(
        &self,
        tenant: TenantId,
        series: SeriesId,
    ) -> Result<Vec<ItemMapping>>;
    async fn list_mappings(&self, tenant: TenantId, link: LinkId) -> Result<Vec<ItemMapping>>;
    /// Those of `series` that are live and still at the `local_version` their pair on `link` was
    /// recorded with: unchanged since that pair was recorded, so a sync run need not read them.
    async fn series_at_pair_version(
        &self,
        tenant: TenantId,
        link: LinkId,
        series: &[SeriesId],
    ) -> Result<Vec<SeriesId>>;
    /// The pairs of `link` with one of `remote_ids` or one of `series`.
    async fn mappings_naming(
        &self,
        tenant: TenantId,
        link: LinkId,
        remote_ids: &[String],
        series: &[SeriesId],
    ) -> Result<Vec<ItemMapping>>;
    /// The pairs of `link` written with `write_ahead` and not upserted since without it.
    async fn write_ahead_mappings(
        &self,
        tenant: TenantId,
        link: LinkId,
    ) -> Result<Vec<ItemMapping>>;
    async fn delete_mapping(&self, tenant: TenantId, mapping: MappingId) -> Result<()>;

    // --- occurrence ids of remote series ---
    /// Replaces the occurrence ids stored of each series of `link` (by its remote id), and marks their
    /// pairs as remembering them (an empty list: none, e.g. a single event). Only series with a pair on
    /// the link are kept: their rows go with the pair (`delete_mapping`, `delete_link`). An occurrence id
    /// listed again (under another series) moves there.
    async fn replace_remote_occurrences(
        &self,
        tenant: TenantId,
        link: LinkId,
        series: &[SeriesOccurrenceIds],
    ) -> Result<()>;
    /// The pairs of `link` whose occurrence ids are not remembered: no `replace_remote_occurrences` named
    /// their remote id since the pair was recorded (a new pair starts so; an upsert of an existing pair
    /// keeps what it was), or they were recorded before occurrences were (migration 0018). Few in steady
    /// state, found through their own index.
    async fn mappings_with_unknown_occurrences(
        &self,
        tenant: TenantId,
        link: LinkId,
    ) -> Result<Vec<ItemMapping>>;
    /// The series of `link` holding these occurrence ids, as `(occurrence id, series remote id)`; an id
    /// not stored is absent.
    async fn series_of_remote_occurrences(
        &self,
        tenant: TenantId,
        link: LinkId,
        occurrence_ids: &[String],
    ) -> Result<Vec<(String, String)>>;

    // --- conflicts ---
    async fn create_conflict(&self, tenant: TenantId, conflict: NewConflict) -> Result<Conflict>;
    async fn get_conflict(&self, tenant: TenantId, conflict: ConflictId) -> Result<Conflict>;
    async fn list_conflicts(
        &self,
        tenant: TenantId,
        filter: &ConflictFilter,
    ) -> Result<Vec<Conflict>>;
    /// Conflicts in id order (creation order: ids are UUIDv7) after `after`, at most `limit` (1..=1000):
    /// for readers that must see every matching conflict, page by page (`list_conflicts` stops at one
    /// page).
    async fn list_conflicts_after(
        &self,
        tenant: TenantId,
        filter: &ConflictFilter,
        after: Option<ConflictId>,
        limit: u32,
    ) -> Result<Vec<Conflict>>;
    /// Conflicts of `kind` that name one of `series`: as their series or as their other series (a time
    /// conflict's second). Index probes per series, whatever the number of conflicts stored. For readers
    /// that decide about a few series.
    async fn conflicts_naming_series(
        &self,
        tenant: TenantId,
        kind: ConflictKind,
        series: &[SeriesId],
    ) -> Result<Vec<Conflict>>;
    /// Records what one detection found in one transaction (a detection may find hundreds): each conflict
    /// with its `conflict.detected` audit entry, and a settled one resolved at once with a
    /// `conflict.settled` entry. Returns the stored conflicts in the order given.
    async fn record_conflicts(
        &self,
        tenant: TenantId,
        found: Vec<DetectedConflict>,
        at: Timestamp,
    ) -> Result<Vec<Conflict>>;
    /// Closes conflicts whose cause went away, each with its `conflict.closed` audit entry, in one
    /// transaction. One no longer open (a person resolved it meanwhile) is left as it is; returns how
    /// many were closed.
    async fn close_conflicts(
        &self,
        tenant: TenantId,
        closing: Vec<ConflictClosing>,
        at: Timestamp,
    ) -> Result<u64>;
    /// Closes an open conflict; `Conflict` if it was already resolved (two admins racing).
    async fn resolve_conflict(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        resolution_json: &str,
        resolved_by: &str,
        at: Timestamp,
    ) -> Result<Conflict>;
    /// [`Store::resolve_conflict`] and, in its transaction, [`Store::append_audit`] of each of
    /// `entries` in order (none when the conflict is no longer open): a conflict closed as
    /// resolved and the audit entries saying so are written together or not at all, so a process
    /// killed in between never leaves a closed conflict the audit log does not mention.
    async fn resolve_conflict_audited(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        resolution_json: &str,
        resolved_by: &str,
        at: Timestamp,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Conflict>;
    /// Records on an open conflict the resolution being carried out (`None` clears it); `Conflict` if
    /// the conflict is no longer open. Written before a resolution's first write, so a process that
    /// dies between its writes leaves the decision behind for whoever finishes it.
    async fn set_conflict_resolving(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        resolving_json: Option<&str>,
    ) -> Result<Conflict>;
    /// [`Store::set_conflict_resolving`] only while the conflict still holds `expected` (`None`:
    /// none), compared as stored: the fence between parties acting on one decision at once (a person
    /// replacing it, a sync or a retry resuming it, a sync abandoning it), so that only one of them
    /// goes on. `Conflict` if the conflict is no longer open or holds another record.
    async fn swap_conflict_resolving(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        expected: Option<&str>,
        resolving_json: Option<&str>,
    ) -> Result<Conflict>;
    /// [`Store::swap_conflict_resolving`] and, in its transaction, [`Store::append_audit`] of each of
    /// `entries` in order (none when the swap is refused): a record saying that a decision was given
    /// up and the audit entries saying so are written together or not at all, so a process killed
    /// in between neither loses an entry nor leaves one for whoever acts next to write again.
    async fn swap_conflict_resolving_audited(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        expected: Option<&str>,
        resolving_json: Option<&str>,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Conflict>;

    // --- sync runs ---
    async fn create_sync_run(
        &self,
        tenant: TenantId,
        connection: Option<ConnectionId>,
        full: bool,
    ) -> Result<SyncRun>;
    /// Records the progress or outcome of a running run; a `finished_at` closes it and announces
    /// `sync.finished` in the same transaction.
    ///
    /// A closed run is history: its status and `finished_at` were announced and others acted on them
    /// (a waiting API client, webhooks, the next scheduled sync). So an update of a run that is
    /// already closed — typically a process paused (SIGSTOP, a long stall) past its run's staleness
    /// bound, reaped as interrupted by [`Store::fail_stale_sync_runs`], that then resumed and
    /// finished — neither reopens it nor changes its status or `finished_at`, and announces nothing.
    /// Its report is not lost either: the row takes its counts, requests and bytes, its errors are
    /// merged after the row's (one already there is not repeated), and an entry `{item: "run",
    /// action: "report", class: "late_report", cause}` says what the process reported and when (one
    /// such entry, the latest). A warning is logged. Returns the row as it now is.
    async fn update_sync_run(
        &self,
        tenant: TenantId,
        run: SyncRunId,
        update: SyncRunUpdate,
    ) -> Result<SyncRun>;
    async fn get_sync_run(&self, tenant: TenantId, run: SyncRunId) -> Result<SyncRun>;
    /// The heartbeat of a running run: its row records `at` as the last sign of life, and
    /// `stale_after` (the running process's `sync.run_stale_after`) as the run's own staleness
    /// bound, which every reaper then judges it by. `false` when the run is no longer running
    /// (finished, or closed as interrupted by [`Store::fail_stale_sync_runs`]).
    async fn touch_sync_run(
        &self,
        tenant: TenantId,
        run: SyncRunId,
        at: Timestamp,
        stale_after: Duration,
    ) -> Result<bool>;
    /// Closes every unfinished run (any tenant) whose last heartbeat, or start when it never beat, is
    /// older at `now` than the run's own staleness bound (written by its heartbeat, see
    /// [`Store::touch_sync_run`]), or than `stale_after` for a run without one (rows from before
    /// migration 0009, a run that has not beaten yet): status `failed`, `finished_at = now`, an error
    /// `{item: "run", action: "run", class: "interrupted", cause: cause(bound)}` added, `sync.finished`
    /// announced in the same transaction. So a node configured with a short bound never reaps a live
    /// run of a node configured with a longer one. The staleness is checked again in the closing
    /// statement, so a heartbeat that lands meanwhile keeps its run alive (several nodes may call this
    /// at once). Returns the runs it closed.
    async fn fail_stale_sync_runs(
        &self,
        now: Timestamp,
        stale_after: Duration,
        cause: &(dyn Fn(Duration) -> String + Sync),
    ) -> Result<Vec<SyncRun>>;
    /// Newest first.
    async fn list_sync_runs(
        &self,
        tenant: TenantId,
        connection: Option<ConnectionId>,
        limit: u32,
    ) -> Result<Vec<SyncRun>>;

    // --- audit log (append-only: there is deliberately no update or delete) ---
    async fn append_audit(&self, tenant: TenantId, entry: NewAuditEntry) -> Result<AuditEntry>;
    /// Newest first, entries with `seq < before` when given.
    async fn list_audit(
        &self,
        tenant: TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>>;

    // --- tombstones ---
    async fn put_tombstone(&self, tenant: TenantId, tombstone: NewTombstone) -> Result<Tombstone>;
    async fn list_tombstones(
        &self,
        tenant: TenantId,
        link: Option<LinkId>,
    ) -> Result<Vec<Tombstone>>;
    /// Removes tombstones past their retention, any tenant; returns how many.
    async fn purge_tombstones(&self, now: Timestamp) -> Result<u64>;

    // --- leased jobs (system-wide: workers lease across tenants) ---
    /// Adds a job, or re-arms the existing one with the same (kind, key): a running job is marked to run
    /// again after it completes instead of being leased twice.
    async fn enqueue_job(&self, job: NewJob) -> Result<Job>;
    /// Leases the next due job (queued and due, or running with an expired lease), or `None`. Two leasers
    /// never receive the same job; each lease increases the job's fencing token.
    async fn lease_next(
        &self,
        owner: &str,
        kinds: &[&str],
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>>;
    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease>;
    /// Marks the job done, or queued again at `run_again_at` (or at once if it was re-armed meanwhile).
    async fn complete_job(
        &self,
        lease: &Lease,
        run_again_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()>;
    /// Records the failure; retried at `retry_at`, or given up (`failed`) when `None`.
    async fn fail_job(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()>;
    async fn get_job(&self, job: JobId) -> Result<Job>;

    // --- outbound webhooks and the change stream ---
    async fn create_webhook(&self, tenant: TenantId, webhook: NewWebhook) -> Result<Webhook>;
    async fn get_webhook(&self, tenant: TenantId, webhook: WebhookId) -> Result<Webhook>;
    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<Webhook>>;
    /// Records one delivery outcome and keeps the failure streak (disabling past `disable_after` failures).
    async fn record_delivery(
        &self,
        tenant: TenantId,
        delivery: NewDelivery,
        disable_after: i64,
    ) -> Result<Delivery>;
    async fn set_webhook_enabled(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<Webhook>;
    async fn list_deliveries(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    async fn delete_webhook(&self, tenant: TenantId, webhook: WebhookId) -> Result<()>;
    /// Changes a webhook's target, filters or secret.
    async fn update_webhook(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        update: WebhookUpdate,
    ) -> Result<Webhook>;
    /// Moves the webhook's delivery mark forward to `seq` (never back).
    async fn advance_webhook(&self, tenant: TenantId, webhook: WebhookId, seq: i64) -> Result<()>;
    /// Sets (or clears) the time before which no delivery is attempted (backoff after a failure).
    async fn set_webhook_retry(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        at: Option<Timestamp>,
    ) -> Result<()>;
    /// Enabled webhooks of any tenant with change-stream entries after their mark and no backoff pending.
    async fn webhooks_due(&self, now: Timestamp, limit: u32) -> Result<Vec<Webhook>>;
    /// Drops delivery log entries older than `before`, any tenant.
    async fn purge_deliveries(&self, before: Timestamp) -> Result<u64>;
    /// Appends to the change stream (series writes append their own entries in the same transaction).
    async fn append_change(&self, tenant: TenantId, change: NewChange) -> Result<Change>;
    /// Entries with `seq > after`, oldest first.
    async fn list_changes(
        &self,
        tenant: TenantId,
        after: i64,
        calendar: Option<CalendarId>,
        limit: u32,
    ) -> Result<Vec<Change>>;
    /// The seq of the tenant's newest change-stream entry (or, when retention removed them all, the
    /// highest seq removed; 0 when there never was one): a reader that lists
    /// everything after taking it, then resumes after it, misses nothing.
    async fn latest_change_seq(&self, tenant: TenantId) -> Result<i64>;
    /// Drops entries older than `before`, any tenant (the stream's retention window), and records per tenant
    /// the highest seq dropped (see [`Store::change_stream_floor`]).
    async fn purge_changes(&self, before: Timestamp) -> Result<u64>;
    /// The highest seq of the tenant's stream removed by retention (0 when nothing was): a reader resuming
    /// after a seq below it may have missed entries.
    async fn change_stream_floor(&self, tenant: TenantId) -> Result<i64>;

    // --- provider push channels (Graph subscriptions, Google watch channels) ---
    /// Creates or replaces (same provider and id) a push channel of a link.
    async fn put_push_channel(
        &self,
        tenant: TenantId,
        channel: NewPushChannel,
    ) -> Result<PushChannel>;
    /// The notification lookup: the provider's id names the channel and its tenant, so, like API keys, this
    /// takes no tenant id.
    async fn find_push_channel(&self, provider: &str, id: &str) -> Result<Option<PushChannel>>;
    async fn list_push_channels(&self, tenant: TenantId, link: LinkId) -> Result<Vec<PushChannel>>;
    /// Channels of any tenant expiring before `before` (renewal candidates), soonest first.
    async fn push_channels_expiring(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<PushChannel>>;
    /// Records message `number` if it is above every number seen on the channel; `false` means a duplicate
    /// or replayed (or out of order older) message.
    async fn accept_push_message(&self, provider: &str, id: &str, number: i64) -> Result<bool>;
    async fn delete_push_channel(&self, tenant: TenantId, provider: &str, id: &str) -> Result<()>;

    // --- pending OAuth sign-ins (authorize → callback) ---
    /// Keeps a pending sign-in until its callback; `state_hash` is the SHA-256 (hex) of the `state`.
    async fn put_oauth_state(&self, tenant: TenantId, state: NewOAuthState) -> Result<()>;
    /// Takes (deletes and returns) the pending sign-in whose state hashes to `state_hash`: a state can be
    /// used once. Like API keys, the state names its tenant, so this takes no tenant id. An expired row is
    /// returned too (and deleted), so the caller can say "expired" rather than "unknown".
    async fn take_oauth_state(&self, state_hash: &str) -> Result<Option<OAuthState>>;
    /// Drops pending sign-ins that expired before `now`, any tenant; returns how many.
    async fn purge_oauth_states(&self, now: Timestamp) -> Result<u64>;

    // --- secrets at rest ---
    /// Re-seals every encrypted column under `new` in one transaction; values already under `new` are left.
    /// Returns how many values were re-sealed. Fails without changing anything if any value does not open.
    async fn rotate_master(&self, old: &MasterKey, new: &MasterKey) -> Result<u64>;
}
