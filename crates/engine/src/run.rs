//! One run of one link: read, plan, execute, commit (see the crate docs and docs/architecture/engine.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use calbridge_providers::http::{Traffic, metered};
use calbridge_providers::{
    CalendarId as RemoteCalendarId, CalendarProvider, CreateKey, Cursor, Etag, HeldVersions,
    ItemContent, KnownVersions, ProviderError, ReadItem, RemoteId as ProviderRemoteId,
    Window as ProviderWindow, Written,
};
use calbridge_store::{
    ConflictFilter, ConflictKind as StoreConflictKind, ConflictState, Connection, Link,
    LinkCursors, LinkStatus, NewAuditEntry, NewConflict, SeriesId, Store, StoreError, SyncRunId,
    SyncRunStatus, SyncRunUpdate, TenantId, TimeDetectionMark,
};
use calbridge_sync::{
    Action, Conflict, ConflictKind, Content, ItemState, Listing, LocalChange, LocalId, LocalSeries,
    Mapping, PlanInput, RemoteChange, RemoteChanges, RemoteId, RemoteVersion, Uid, Window, plan,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use tracing::Instrument;

mod import;

use import::{PlainCreate, Planned};

use crate::held::{
    PairVersions, ReadPairVersions, held_version, linked_pair, pair_of, remember_occurrences,
};
use crate::local::{Parsed, calendar_with, storable, with_uid};
use crate::pairs::{
    ConflictSide, Intent, IntentSide, PENDING_CREATE, Pending, StoredBase, TombstoneAt, create_key,
    every_conflict, forget_pair, record_pair_at, stored_base, to_json,
};
use crate::resolve::{Resolve, ResolveFailure, Resolving};
use crate::{EngineConfig, EngineError, SyncOptions};

/// Change-stream entries read per page.
const CHANGE_PAGE: u32 = 500;
const SERIES_PAGE: u32 = 500;

/// Everything one run needs.
#[derive(Debug, Clone, Copy)]
pub struct LinkSync<'a> {
    pub store: &'a dyn Store,
    pub provider: &'a dyn CalendarProvider,
    pub tenant: TenantId,
    pub connection: &'a Connection,
    pub link: &'a Link,
    pub config: &'a EngineConfig,
    pub now: Timestamp,
    /// A full reconciliation: both sides listed completely, ignoring both cursors (the daily
    /// `full_sync_at` run, and after the link's direction or range changed).
    pub full: bool,
    /// The run this sync belongs to. `None`: the engine opens and closes a `sync_runs` row of its own
    /// (the scheduler's one-link jobs). `Some`: the caller owns that run (one request over several
    /// links) and records the totals of the returned reports; the engine writes no run row.
    pub run: Option<SyncRunId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything committed; both cursors advanced.
    Succeeded,
    /// Some items failed (see `errors`); the rest committed, the cursors stayed.
    Partial,
    /// The link was stopped as suspect (deletion guard, failed listing); nothing was changed.
    Suspect,
    /// Stopped by the test-only crash knob.
    Interrupted,
}

/// One failing item (or step), with its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunError {
    /// The series or remote item concerned (`listing` for the read itself).
    pub item: String,
    /// The action that failed (`update_remote`...), or `read`.
    pub action: String,
    /// A stable class (`precondition`, `not_found`, `store`...).
    pub class: String,
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: SyncRunId,
    pub status: RunStatus,
    /// Executed actions by kind (`create_remote`, `update_local`...), plus `conflicts`, and what an
    /// incremental run read: `local_unchanged_since_pair` (series of the change stream not read),
    /// `pairs_read_in_full` (the pairs read when it read every pair of the link: a complete listing,
    /// or enough paired deletions for the deletion guard).
    pub counts: BTreeMap<String, u64>,
    pub errors: Vec<RunError>,
    /// HTTP requests made to the provider (retries and redirects included).
    pub requests: u64,
    /// Bytes sent to and received from the provider (heads and decoded bodies).
    pub bytes: u64,
    pub suspect_reason: Option<String>,
    pub full_listing: bool,
    pub duration_ms: u64,
}

/// The audit actor of what a sync of `connection` does on its own (`sync:<connection>`).
pub(crate) fn sync_actor(connection: &Connection) -> String {
    format!("sync:{}", connection.id)
}

/// Runs one sync of the link. Fails only when the run could not be carried out at all (store down,
/// unusable options); item failures and suspect listings are reported in the returned [`RunReport`].
pub async fn sync_link(ctx: LinkSync<'_>) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let (run_id, own_run) = match ctx.run {
        Some(id) => (id, false),
        None => {
            let run = ctx
                .store
                .create_sync_run(
                    ctx.tenant,
                    Some(ctx.connection.id),
                    ctx.full || ctx.link.cursor.is_none(),
                )
                .await?;
            (run.id, true)
        }
    };
    let mut runner = match Runner::new(ctx, run_id, own_run).await {
        Ok(runner) => runner,
        Err(e) => {
            if own_run {
                let errors = vec![RunError {
                    item: "run".into(),
                    action: "start".into(),
                    class: "setup".into(),
                    cause: e.to_string(),
                }];
                ctx.store
                    .update_sync_run(
                        ctx.tenant,
                        run_id,
                        SyncRunUpdate {
                            status: SyncRunStatus::Failed,
                            counts_json: "{}".into(),
                            requests: 0,
                            bytes: 0,
                            errors_json: to_json(&errors)?,
                            finished_at: Some(Timestamp::now()),
                        },
                    )
                    .await?;
            }
            return Err(e);
        }
    };
    // Every HTTP request of this run, and only of this run, is counted here.
    let traffic = Traffic::new();
    // Boxed: the run's state machine is large, and callers nest it in their own futures (a debug
    // build's test thread overflowed its stack with it inline).
    let work = Box::pin(
        async {
            let outcome = metered(traffic.clone(), runner.run()).await;
            runner.finish(outcome, started, &traffic).await
        }
        .instrument(tracing::debug_span!("sync_link")),
    );
    // A run of its own beats while it works (a caller's run is the caller's to keep alive).
    if own_run {
        let heartbeat = ctx.config.heartbeat;
        crate::heartbeat::beating(ctx.store, ctx.tenant, run_id, heartbeat, work).await
    } else {
        work.await
    }
}

/// A pair an executed step leaves, and the version of the local series that holds its base when the
/// step read or wrote that row itself (see `StoredBase::local_version`).
struct ToRecord {
    pair: Pending,
    local_version: Option<i64>,
}

impl ToRecord {
    /// The pair a provider write of `parsed` (whose state is `state`) for `local` leaves: the item
    /// the write named, at the version it has now.
    fn remote_write(
        local: &LocalId,
        written: &Written,
        version: RemoteVersion,
        parsed: &Parsed,
        state: ItemState,
        local_version: Option<i64>,
    ) -> Self {
        Self {
            pair: Pending {
                local: local.clone(),
                remote: RemoteId::new(written.id.as_str()),
                version,
                uid: Uid::new(parsed.series.uid()),
                state,
            },
            local_version,
        }
    }
}

/// The write-ahead row of a local create a killed run may or may not have made (see `Intent`).
struct PendingLocalCreate {
    row: calbridge_store::MappingId,
    remote: RemoteId,
    version: RemoteVersion,
    base: StoredBase,
    /// When the row was written: the series the create made is not older.
    written_at: Timestamp,
}

struct LocalEntry {
    row: calbridge_store::Series,
    parsed: Option<Parsed>,
}

struct Runner<'a> {
    ctx: LinkSync<'a>,
    run_id: SyncRunId,
    options: SyncOptions,
    floating: TimeZone,
    calendar: RemoteCalendarId,
    window: Window,
    /// Where this run resumes the local change stream: the link's local cursor, unless the run reads
    /// the local side in full (a first or full run, or a cursor the stream's retention has passed).
    local_cursor: Option<i64>,
    /// Local series read in this run, by id (live or deleted).
    local: HashMap<LocalId, LocalEntry>,
    /// Remote items read in this run, by id.
    remote: HashMap<RemoteId, ItemContent>,
    /// The link's pairs read so far: all of them (`pairs_complete`), or those the run's changes name
    /// plus the write-ahead rows (an incremental run's cost follows its changes, not the calendar).
    mappings: Vec<Mapping>,
    pairs_complete: bool,
    /// Stored rows taken into `mappings` (or set aside as write-ahead creates), and the ids already
    /// asked for, so each is read once.
    pairs_read: HashSet<calbridge_store::MappingId>,
    pairs_asked: HashSet<String>,
    counts: BTreeMap<String, u64>,
    errors: Vec<RunError>,
    /// Whether the engine opened the run row (and so closes it).
    own_run: bool,
    suspect: Option<String>,
    full_listing: bool,
    interrupted: bool,
    executed: usize,
    /// Local series changed since the last run (the application's edits): time conflicts may have
    /// appeared or gone.
    local_changed: bool,
    /// Local series read as changed or written by this run: a time-conflict detection after an
    /// incremental run looks at these only.
    touched_local: BTreeSet<SeriesId>,
    /// Pairs whose write-ahead rows this run recognised as an earlier write of ours (a killed run's,
    /// or an interrupted conflict resolution's, which then closes as resolved).
    recognised: Vec<(LocalId, RemoteId)>,
}

enum Outcome {
    Done {
        remote_cursor: Option<Cursor>,
        local_cursor: i64,
    },
    Suspect(String),
    Failed(EngineError),
}

#[derive(Debug)]
struct StepError {
    class: String,
    cause: String,
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        Self {
            class: e.class().to_owned(),
            cause: e.to_string(),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        let class = match &e {
            StoreError::PreconditionFailed { .. } => "local_precondition",
            StoreError::NotFound { .. } => "local_not_found",
            StoreError::Conflict(_) => "local_conflict",
            _ => "store",
        };
        Self {
            class: class.to_owned(),
            cause: e.to_string(),
        }
    }
}

impl From<EngineError> for StepError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::Provider(p) => p.into(),
            other => Self {
                class: "content".into(),
                cause: other.to_string(),
            },
        }
    }
}

fn step(class: &str, cause: impl Into<String>) -> StepError {
    StepError {
        class: class.to_owned(),
        cause: cause.into(),
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::CreateRemote { .. } => "create_remote",
        Action::UpdateRemote { .. } => "update_remote",
        Action::DeleteRemote { .. } => "delete_remote",
        Action::CreateLocal { .. } => "create_local",
        Action::UpdateLocal { .. } => "update_local",
        Action::DeleteLocal { .. } => "delete_local",
        Action::Link { .. } => "link",
        Action::Unlink { .. } => "unlink",
        Action::CopyRemoteAsNewLocal { .. } => "copy_remote_as_new_local",
        Action::VerifyRemote { .. } => "verify_remote",
    }
}

/// The series an action belongs to: its local id, or its remote id for a series not yet local.
fn series_key(action: &Action) -> String {
    match action {
        Action::CreateRemote { local }
        | Action::UpdateRemote { local, .. }
        | Action::DeleteRemote { local, .. }
        | Action::UpdateLocal { local, .. }
        | Action::DeleteLocal { local, .. }
        | Action::Link { local, .. }
        | Action::Unlink { local, .. }
        | Action::CreateLocal {
            restore: Some(local),
            ..
        } => format!("l:{local}"),
        Action::CreateLocal { remote, .. }
        | Action::CopyRemoteAsNewLocal { remote }
        | Action::VerifyRemote { remote } => format!("r:{remote}"),
    }
}

fn store_kind(kind: ConflictKind) -> StoreConflictKind {
    match kind {
        ConflictKind::Update => StoreConflictKind::Update,
        ConflictKind::Deletion => StoreConflictKind::Deletion,
        ConflictKind::Identity => StoreConflictKind::Identity,
        ConflictKind::Time => StoreConflictKind::Time,
    }
}

fn parse_series_id(id: &LocalId) -> Result<SeriesId, StepError> {
    SeriesId::parse(id.as_str()).map_err(|e| step("content", e.to_string()))
}

fn provider_id(id: &RemoteId) -> Result<ProviderRemoteId, StepError> {
    ProviderRemoteId::parse(id.as_str()).map_err(StepError::from)
}

impl<'a> Runner<'a> {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn new(ctx: LinkSync<'a>, run_id: SyncRunId, own_run: bool) -> Result<Self, EngineError> {
        let options = SyncOptions::parse(&ctx.connection.sync_options_json)?;
        let window = options.window(ctx.now)?;
        let local_calendar = ctx
            .store
            .get_calendar(ctx.tenant, ctx.connection.calendar_id)
            .await?;
        let floating = TimeZone::get(&local_calendar.time_zone).unwrap_or(TimeZone::UTC);
        let calendar = RemoteCalendarId::parse(ctx.link.remote_calendar_id.clone())?;
        // The change stream keeps `stream.retention` (7 days by default): a link whose cursor fell
        // behind what it still holds (a link paused for a week, a node that was down) may have missed
        // local changes, so the run reads the local side in full, as a first run does, rather than
        // leaving them to the daily full reconciliation.
        let mut counts = BTreeMap::new();
        let local_cursor = match ctx.link.local_cursor {
            Some(seq) if !ctx.full => {
                let floor = ctx.store.change_stream_floor(ctx.tenant).await?;
                if seq < floor {
                    counts.insert("local_stream_expired".to_owned(), 1);
                    None
                } else {
                    Some(seq)
                }
            }
            _ => None,
        };
        Ok(Self {
            ctx,
            run_id,
            options,
            floating,
            calendar,
            window,
            local_cursor,
            local: HashMap::new(),
            remote: HashMap::new(),
            mappings: Vec::new(),
            pairs_complete: false,
            pairs_read: HashSet::new(),
            pairs_asked: HashSet::new(),
            counts,
            errors: Vec::new(),
            own_run,
            suspect: None,
            full_listing: false,
            interrupted: false,
            executed: 0,
            local_changed: false,
            touched_local: BTreeSet::new(),
            recognised: Vec::new(),
        })
    }

    fn error(&mut self, item: &str, action: &str, e: StepError) {
        tracing::warn!(item, action, class = %e.class, cause = %e.cause, "sync item failed");
        self.errors.push(RunError {
            item: item.to_owned(),
            action: action.to_owned(),
            class: e.class,
            cause: e.cause,
        });
    }

    async fn run(&mut self) -> Outcome {
        match self.run_inner().await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn run_inner(&mut self) -> Result<Outcome, EngineError> {
        let store = self.ctx.store;
        let tenant = self.ctx.tenant;
        let link = self.ctx.link;

        let cursor = match &link.cursor {
            Some(c) if !self.ctx.full => Some(Cursor::parse(c.clone())?),
            _ => None,
        };
        // --- read: the stored pairs ---
        // A run that reads either side in full needs every pair; an incremental one reads the write-ahead
        // rows now, the versions of all pairs for the provider, and the pairs its changes name later.
        let incremental = cursor.is_some() && self.local_cursor.is_some();
        let mut known = KnownVersions::new();
        let stored = if incremental {
            store.write_ahead_mappings(tenant, link.id).await?
        } else {
            self.pairs_complete = true;
            store.list_mappings(tenant, link.id).await?
        };
        // Write-ahead rows of creates a killed run may or may not have made (see `Intent`).
        let mut pending_remote_creates: Vec<(calbridge_store::MappingId, LocalId, StoredBase)> =
            Vec::new();
        let mut pending_local_creates: Vec<PendingLocalCreate> = Vec::new();
        let mut intents: Vec<(usize, Intent)> = Vec::new();
        for m in &stored {
            self.pairs_read.insert(m.id);
            let Some(base) = stored_base(m) else {
                continue;
            };
            match (m.series_id, &m.remote_version) {
                (Some(series), None) if m.remote_id.starts_with(PENDING_CREATE) => {
                    pending_remote_creates.push((m.id, LocalId::new(series.to_string()), base));
                    continue;
                }
                (None, Some(version)) => {
                    pending_local_creates.push(PendingLocalCreate {
                        row: m.id,
                        remote: RemoteId::new(m.remote_id.clone()),
                        version: RemoteVersion::new(version.clone()),
                        base,
                        written_at: m.updated_at,
                    });
                    continue;
                }
                _ => {}
            }
            let row_intents: Vec<Intent> = base.intents().cloned().collect();
            let Some(pair) = pair_of(m, base) else {
                continue;
            };
            for intent in row_intents {
                intents.push((self.mappings.len(), intent));
            }
            // An incremental run answers the provider from the pairs instead (below).
            if !incremental {
                known.extend(held_version(&pair));
            }
            self.mappings.push(pair);
        }

        // --- read: local changes since the local change mark ---
        let pending_locals: Vec<LocalId> = pending_remote_creates
            .iter()
            .map(|(_, local, _)| local.clone())
            .collect();
        let (mut local_changes, local_cursor) = self.read_local(&pending_locals).await?;
        self.local_changed = !local_changes.is_empty();

        // --- read: remote changes since the provider cursor ---
        let provider_window = ProviderWindow::parse(self.window.start, self.window.end)?;
        // An incremental run answers the provider's questions about versions from the pairs the
        // listing names (and keeps those pairs); a first or full run has every pair in `known`, and
        // asks the store only what the pairs remember of occurrences.
        let from_pairs = PairVersions::new(store, tenant, link.id);
        let read_pairs = ReadPairVersions::new(&known, &from_pairs);
        let held: &dyn HeldVersions = if incremental {
            &from_pairs
        } else {
            &read_pairs
        };
        let mut listed = self
            .ctx
            .provider
            .changes(&self.calendar, cursor.as_ref(), &provider_window, held)
            .instrument(tracing::debug_span!("provider_changes"))
            .await;
        if matches!(listed, Err(ProviderError::CursorInvalid)) {
            // The provider forgot our cursor: list everything (the known versions keep it cheap).
            listed = self
                .ctx
                .provider
                .changes(&self.calendar, None, &provider_window, held)
                .await;
        }
        let read = from_pairs.into_read();
        self.pairs_asked
            .extend(read.asked.into_iter().map(|id| format!("r:{id}")));
        self.take_linked(read.rows);
        self.pairs_complete |= read.all;
        let changes = match listed {
            Ok(changes) => changes,
            Err(e) if e.is_transient() || matches!(e, ProviderError::Protocol { .. }) => {
                // A listing that fails says nothing about deletions: stop the link, touch nothing.
                return Ok(Outcome::Suspect(format!("the listing failed: {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        self.full_listing = changes.full_listing.is_some();
        if self.full_listing {
            // Whatever the listing does not name is gone: every pair takes part.
            self.read_all_pairs().await?;
        } else {
            let remote_ids = changes
                .upserts
                .iter()
                .map(|i| &i.id)
                .chain(&changes.deletions)
                .chain(&changes.uncertain_deletions)
                .map(|id| id.as_str().to_owned())
                .chain(pending_local_creates.iter().map(|p| p.remote.to_string()));
            let series = local_changes
                .iter()
                .map(LocalChange::id)
                .chain(&pending_locals)
                .cloned();
            let (remote_ids, series): (Vec<String>, Vec<LocalId>) =
                (remote_ids.collect(), series.collect());
            self.read_pairs(remote_ids, &series).await?;
        }
        let capabilities = self.ctx.provider.capabilities();
        let mut parked_remote: BTreeSet<RemoteId> = BTreeSet::new();
        for (id, why) in &changes.failures {
            // An unreadable item is neither changed nor gone: leave its pair alone this run.
            parked_remote.insert(RemoteId::new(id.as_str()));
            self.error(id.as_str(), "read", step("unreadable", why.clone()));
        }
        let mut remote_changes = Vec::new();
        for item in &changes.upserts {
            if !item.content.is_event() {
                continue;
            }
            let Some(uid) = item.content.uid() else {
                continue;
            };
            let parsed = match Parsed::from_calendar(item.content.calendar().clone()) {
                Ok(p) => p,
                Err(e) => {
                    parked_remote.insert(RemoteId::new(item.id.as_str()));
                    self.error(item.id.as_str(), "read", e.into());
                    continue;
                }
            };
            let id = RemoteId::new(item.id.as_str());
            remote_changes.push(RemoteChange::Upsert {
                id: id.clone(),
                version: RemoteVersion::new(item.etag.as_str()),
                uid: Uid::new(uid),
                state: parsed.state(&self.floating),
            });
            self.remote.insert(id, item.content.clone());
        }
        // A complete listing reports items we hold at their known version as `unchanged`; the plan
        // reads "not listed" as "gone", so they are passed as our own version coming back (ignored).
        let mapping_of: HashMap<&str, &Mapping> = self
            .mappings
            .iter()
            .map(|m| (m.remote.as_str(), m))
            .collect();
        for id in &changes.unchanged {
            if let Some(m) = mapping_of.get(id.as_str()) {
                remote_changes.push(RemoteChange::Upsert {
                    id: m.remote.clone(),
                    version: m.remote_version.clone(),
                    uid: m.uid.clone(),
                    state: m.base.clone(),
                });
            }
        }
        for id in &changes.deletions {
            remote_changes.push(RemoteChange::Deleted {
                id: RemoteId::new(id.as_str()),
                certain: !capabilities.windowed_reads,
            });
        }
        // Removals the provider cannot tell from "left the window" (Graph's `@removed`): the plan
        // answers them with `VerifyRemote`, so nothing is deleted before the item is read.
        for id in &changes.uncertain_deletions {
            remote_changes.push(RemoteChange::Deleted {
                id: RemoteId::new(id.as_str()),
                certain: false,
            });
        }
        let deleted_imports = self
            .resolve_intents(
                &intents,
                &pending_remote_creates,
                pending_local_creates,
                &local_changes,
                &remote_changes,
                &parked_remote,
            )
            .await?;
        local_changes.extend(deleted_imports);
        let mut remote = RemoteChanges {
            changes: remote_changes,
            listing: match changes.full_listing {
                Some(_) => Listing::Complete {
                    window_filtered: capabilities.windowed_reads,
                },
                None => Listing::Incremental,
            },
        };

        // --- read: local series that unlinked remote items may pair with ---
        let linked_remote: BTreeSet<&RemoteId> = self.mappings.iter().map(|m| &m.remote).collect();
        let mut local_by_uid: BTreeMap<Uid, LocalSeries> = BTreeMap::new();
        let unlinked_uids: Vec<Uid> = remote
            .changes
            .iter()
            .filter_map(|c| match c {
                RemoteChange::Upsert { id, uid, .. } if !linked_remote.contains(id) => {
                    Some(uid.clone())
                }
                _ => None,
            })
            .collect();
        for uid in unlinked_uids {
            if let Some(series) = store
                .get_series_by_uid(tenant, self.ctx.connection.calendar_id, uid.as_str())
                .await?
            {
                let id = LocalId::new(series.id.to_string());
                let parsed = Parsed::from_stored(&series).ok();
                if let Some(p) = &parsed {
                    local_by_uid.insert(
                        uid,
                        LocalSeries {
                            id: id.clone(),
                            state: p.state(&self.floating),
                        },
                    );
                }
                self.local.insert(
                    id,
                    LocalEntry {
                        row: series,
                        parsed,
                    },
                );
            }
        }

        // --- read: open conflicts park their series ---
        let mut parked_local: BTreeSet<LocalId> = BTreeSet::new();
        let open = every_conflict(
            store,
            tenant,
            &ConflictFilter {
                state: Some(ConflictState::Open),
                connection_id: Some(self.ctx.connection.id),
                link_id: Some(self.ctx.link.id),
                kind: None,
            },
        )
        .instrument(tracing::debug_span!("open_conflicts"))
        .await?;
        for c in &open {
            let resolving = Resolving::of(c);
            if let Some(resolving) = &resolving
                && self
                    .resolution_recognised(c, resolving, &mut local_changes, &mut remote)
                    .await?
            {
                // An interrupted resolution's write: closed as resolved, the pair is planned from
                // the base it left (the plan carries out the rest, a later edit on top of it).
                continue;
            }
            // The copy a `keep_both` decision saved, before this run acts on the decision.
            let copy = match &resolving {
                Some(resolving) => self.saved_copy(c, resolving).await?,
                None => None,
            };
            if Self::superseded(c, &local_changes, &remote)
                && self.refresh_pair(c, &mut local_changes, &mut remote).await
            {
                // A side moved on since the conflict was recorded: the pair is planned again with both
                // sides' versions of now (and recorded again if it still conflicts).
                self.close_superseded(c, "a side changed again", resolving.as_ref())
                    .await?;
                self.after_abandon(copy, &mut parked_local, &mut local_changes)
                    .await?;
                continue;
            }
            if let Some(resolving) = &resolving {
                // Finished here or not, its pairs stay parked for this run: a resumption rewrites
                // them behind the pairs this run read.
                if self.resume_resolution(c, resolving).await? {
                    // Abandoned: its copy was deleted (parked) or kept as the event it is now.
                    self.after_abandon(copy, &mut parked_local, &mut local_changes)
                        .await?;
                } else if let Some(copy) = copy.or(self.saved_copy(c, resolving).await?) {
                    // So does a `keep_both` copy the resolution saved: it goes out with the
                    // resolution (identity: only once the newcomer is gone), not as a new event.
                    parked_local.insert(copy);
                }
            }
            if let Some(s) = c.series_id {
                parked_local.insert(LocalId::new(s.to_string()));
            }
            if let Some(side) = c
                .remote_json
                .as_deref()
                .and_then(|j| serde_json::from_str::<ConflictSide>(j).ok())
                && let Some(id) = side.id
            {
                parked_remote.insert(RemoteId::new(id));
            }
        }

        // --- read: the pairs the plan looks at ---
        // The pairs the changes name (and those of the local series unlinked items may pair with);
        // each is asked once, so the names read after the listing cost nothing again.
        let remote_ids: Vec<String> = remote.changes.iter().map(|c| c.id().to_string()).collect();
        let series: Vec<LocalId> = local_changes
            .iter()
            .map(LocalChange::id)
            .chain(local_by_uid.values().map(|l| &l.id))
            .cloned()
            .collect();
        self.read_pairs(remote_ids, &series).await?;
        // Only a deletion of a paired item can become a deletion on the other side (`DeleteRemote` /
        // `DeleteLocal` each need the pair), and every pair of a named item is read now. A deletion
        // without one is this link's own deletion read back (the previous run deleted the series
        // for a remote deletion, or the item for a local one): counting those made every run after
        // one that applied `min_count` deletions read every pair (81 ms at 10,000 events).
        let guard = self.ctx.config.deletion_guard;
        let (local_deletions, remote_deletions) = self.paired_deletions(&local_changes, &remote);
        if local_deletions.max(remote_deletions) >= guard.min_count {
            // Enough deletions for the guard to weigh them against every linked item in the window.
            self.read_all_pairs().await?;
        }
        self.forget_echoes(&local_changes);

        // --- plan ---
        let planned = {
            let _span = tracing::debug_span!("plan").entered();
            plan(PlanInput {
                window: self.window,
                policy: self.options.policy(guard),
                mappings: &self.mappings,
                local: &local_changes,
                remote: &remote,
                local_by_uid: &local_by_uid,
                parked_local: &parked_local,
                parked_remote: &parked_remote,
            })
        };
        if let Some(suspect) = &planned.suspect {
            return Ok(Outcome::Suspect(format!("{suspect:?}")));
        }
        for conflict in &planned.conflicts {
            self.record_conflict(conflict).await?;
        }

        // --- execute, series by series ---
        // Groups in first-seen order; the index keeps grouping linear in the number of actions.
        let mut groups: Vec<(String, Vec<Action>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for action in planned.actions {
            let key = series_key(&action);
            match group_of.get(&key).and_then(|&at| groups.get_mut(at)) {
                Some((_, group)) => group.push(action),
                None => {
                    group_of.insert(key.clone(), groups.len());
                    groups.push((key, vec![action]));
                }
            }
        }
        let planned = Planned {
            local_changes: &local_changes,
            remote: &remote,
            local_by_uid: &local_by_uid,
        };
        // Plain local creates (an import) are carried out in chunks (`import.rs`); any other group
        // first lets the creates seen before it finish, so actions keep the plan's order.
        let chunk = self.ctx.config.local_create_chunk.max(1);
        let mut creates: Vec<PlainCreate> = Vec::new();
        for (key, group) in groups {
            if self.interrupted {
                break;
            }
            match PlainCreate::of(key, group) {
                Ok(create) => {
                    creates.push(create);
                    if creates.len() >= chunk {
                        self.create_locals(std::mem::take(&mut creates), planned)
                            .await;
                    }
                }
                Err((key, group)) => {
                    self.create_locals(std::mem::take(&mut creates), planned)
                        .await;
                    if self.interrupted {
                        break;
                    }
                    self.execute_group(&key, group, &local_changes, &remote, &local_by_uid)
                        .await;
                }
            }
        }
        if !self.interrupted {
            self.create_locals(creates, planned).await;
        }
        // Kept once the pairs of series new to the link are recorded (rows of unpaired series are not).
        remember_occurrences(store, tenant, link.id, &changes.series_occurrences)
            .instrument(tracing::debug_span!("remember_occurrences"))
            .await?;
        if self.interrupted {
            return Ok(Outcome::Done {
                remote_cursor: None,
                local_cursor,
            });
        }
        Ok(Outcome::Done {
            remote_cursor: changes.cursor,
            local_cursor,
        })
    }

    /// The local and the remote deletions among the changes whose item has a pair among those read:
    /// the most deletions the plan can propagate, which is what the deletion guard weighs.
    fn paired_deletions(
        &self,
        local_changes: &[LocalChange],
        remote: &RemoteChanges,
    ) -> (usize, usize) {
        let paired_local: HashSet<&LocalId> = self.mappings.iter().map(|m| &m.local).collect();
        let paired_remote: HashSet<&RemoteId> = self.mappings.iter().map(|m| &m.remote).collect();
        let local = local_changes
            .iter()
            .filter(|c| matches!(c, LocalChange::Deleted { id, .. } if paired_local.contains(id)))
            .count();
        let remote = remote
            .changes
            .iter()
            .filter(|c| matches!(c, RemoteChange::Deleted { id, .. } if paired_remote.contains(id)))
            .count();
        (local, remote)
    }

    /// A local change that carries its pair's base is this link's own write read back: the run that
    /// wrote it looked at its time already, so it neither counts as a local edit nor brings its series
    /// into this run's time-conflict detection (after a 100,000-event import, the next run reads them
    /// all back).
    fn forget_echoes(&mut self, local_changes: &[LocalChange]) {
        let base_of: HashMap<&LocalId, &calbridge_sync::ItemState> =
            self.mappings.iter().map(|m| (&m.local, &m.base)).collect();
        let mut edited = false;
        for change in local_changes {
            let echo = match change {
                LocalChange::Upsert { id, state, .. } => base_of
                    .get(id)
                    .is_some_and(|b| b.snapshot == state.snapshot),
                LocalChange::Deleted { .. } => false,
            };
            if !echo {
                edited = true;
            } else if let Ok(series) = SeriesId::parse(change.id().as_str()) {
                self.touched_local.remove(&series);
            }
        }
        self.local_changed = edited;
    }

    /// Takes the linked pairs among `rows` not read yet into `mappings`.
    fn take_pairs(&mut self, rows: Vec<calbridge_store::ItemMapping>) {
        self.take_linked(rows.into_iter().map(|m| (m.id, linked_pair(m))).collect());
    }

    /// Takes the pairs of the rows not read yet into `mappings` (rows without one are only marked
    /// read).
    fn take_linked(&mut self, rows: Vec<(calbridge_store::MappingId, Option<Mapping>)>) {
        for (id, pair) in rows {
            if self.pairs_read.insert(id)
                && let Some(pair) = pair
            {
                self.mappings.push(pair);
            }
        }
    }

    /// Reads the pairs of these remote items and local series, unless read already.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_pairs(
        &mut self,
        remote_ids: Vec<String>,
        series: &[LocalId],
    ) -> Result<(), EngineError> {
        if self.pairs_complete {
            return Ok(());
        }
        let remote_ids: Vec<String> = remote_ids
            .into_iter()
            .filter(|r| self.pairs_asked.insert(format!("r:{r}")))
            .collect();
        let series: Vec<SeriesId> = series
            .iter()
            .filter(|l| self.pairs_asked.insert(format!("l:{l}")))
            .filter_map(|l| SeriesId::parse(l.as_str()).ok())
            .collect();
        if remote_ids.is_empty() && series.is_empty() {
            return Ok(());
        }
        let rows = self
            .ctx
            .store
            .mappings_naming(self.ctx.tenant, self.ctx.link.id, &remote_ids, &series)
            .await?;
        self.take_pairs(rows);
        Ok(())
    }

    /// Reads every pair of the link not read yet.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_all_pairs(&mut self) -> Result<(), EngineError> {
        if self.pairs_complete {
            return Ok(());
        }
        let rows = self
            .ctx
            .store
            .list_mappings(self.ctx.tenant, self.ctx.link.id)
            .await?;
        // Reached only by an incremental run (a first or full run reads every pair up front): the
        // report says when one paid for every pair (a complete listing, the deletion guard).
        self.counts
            .insert("pairs_read_in_full".into(), rows.len() as u64);
        self.take_pairs(rows);
        self.pairs_complete = true;
        Ok(())
    }

    /// Recognises the writes of a run that was killed before recording them, so they are not taken
    /// for changes someone else made (which would raise false conflicts, or bring back an event
    /// deleted since):
    /// - an update whose `Intent` state is found on the written side: that side is at the intent, so
    ///   the intent becomes the base (with the version found, or the one copied);
    /// - a remote create whose item is listed (same UID, the state we wrote): the pair is made; when
    ///   it is not and the series was deleted since, its row goes, unless the run parked a remote item
    ///   (`parked_remote`: the item may be the one it could not read);
    /// - a local create whose series exists (same UID): the pair is made; so it is when the series was
    ///   deleted since (a deleted series with the UID created after the write-ahead row), and that
    ///   deletion is returned as a local change when the run's read of local changes did not have it
    ///   (a first or full run lists live series only), so the plan deletes the remote item instead of
    ///   importing it again; otherwise its row goes.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn resolve_intents(
        &mut self,
        intents: &[(usize, Intent)],
        pending_remote_creates: &[(calbridge_store::MappingId, LocalId, StoredBase)],
        pending_local_creates: Vec<PendingLocalCreate>,
        local_changes: &[LocalChange],
        remote_changes: &[RemoteChange],
        parked_remote: &BTreeSet<RemoteId>,
    ) -> Result<Vec<LocalChange>, EngineError> {
        let mut deletions = Vec::new();
        // Pairs recognised here are recorded at once: the plan may have nothing to do for them, and
        // the next incremental listing will not show the written item again.
        let mut recognised: Vec<usize> = Vec::new();
        let remote_upsert = |wanted: &dyn Fn(&RemoteId, &Uid, &ItemState) -> bool| {
            remote_changes.iter().find_map(|c| match c {
                RemoteChange::Upsert {
                    id,
                    version,
                    uid,
                    state,
                } if wanted(id, uid, state) => Some((id.clone(), version.clone())),
                _ => None,
            })
        };
        for (index, intent) in intents {
            let Some(m) = self.mappings.get(*index).cloned() else {
                continue;
            };
            match intent.side {
                IntentSide::Remote => {
                    if let Some((_, version)) = remote_upsert(&|id, _, state| {
                        *id == m.remote && state.snapshot == intent.state.snapshot
                    }) && let Some(target) = self.mappings.get_mut(*index)
                    {
                        target.base = intent.recognised_base();
                        target.remote_version = version;
                        recognised.push(*index);
                    }
                }
                IntentSide::Local => {
                    let at_intent = local_changes.iter().any(|c| {
                        matches!(c, LocalChange::Upsert { id, state, .. }
                            if *id == m.local && state.snapshot == intent.state.snapshot)
                    });
                    if at_intent
                        && let (Some(version), Some(target)) =
                            (&intent.version, self.mappings.get_mut(*index))
                    {
                        target.base = intent.recognised_base();
                        target.remote_version = RemoteVersion::new(version.clone());
                        recognised.push(*index);
                    }
                }
            }
        }
        for (row, local, base) in pending_remote_creates {
            if self.mappings.iter().any(|m| &m.local == local) {
                continue;
            }
            let deleted = local_changes
                .iter()
                .any(|c| matches!(c, LocalChange::Deleted { id, .. } if id == local));
            let linked: BTreeSet<RemoteId> =
                self.mappings.iter().map(|m| m.remote.clone()).collect();
            if let Some((remote, version)) = remote_upsert(&|id, uid, state| {
                !linked.contains(id) && *uid == base.uid && state.snapshot == base.state.snapshot
            }) {
                recognised.push(self.mappings.len());
                self.mappings.push(Mapping {
                    uid: base.uid.clone(),
                    local: local.clone(),
                    remote,
                    remote_version: version,
                    base: base.state.clone(),
                });
            } else if deleted && parked_remote.is_empty() {
                // Deleted before its create was seen remotely: nothing left to pair.
                self.ctx.store.delete_mapping(self.ctx.tenant, *row).await?;
            } else if deleted {
                // The run parked an item it could not read or parse (which tells neither its UID nor
                // its state): it may be the created one. The row stays for a later run, which pairs
                // the item once it reads and deletes it; without the row, that run would find an
                // unlinked item with no live series of its UID and import the deleted event again.
                // (A parked item leaves the run partial: the cursors stay, so it is listed again.)
            }
        }
        for PendingLocalCreate {
            row,
            remote,
            version,
            base,
            written_at,
        } in pending_local_creates
        {
            if self.mappings.iter().any(|m| m.remote == remote) {
                continue;
            }
            let found = self
                .ctx
                .store
                .get_series_by_uid(
                    self.ctx.tenant,
                    self.ctx.connection.calendar_id,
                    base.uid.as_str(),
                )
                .await?;
            if let Some(series) = &found {
                self.read_pairs(Vec::new(), &[LocalId::new(series.id.to_string())])
                    .await?;
            }
            match found {
                Some(series)
                    if !self
                        .mappings
                        .iter()
                        .any(|m| m.local.as_str() == series.id.to_string()) =>
                {
                    recognised.push(self.mappings.len());
                    self.mappings.push(Mapping {
                        uid: base.uid.clone(),
                        local: LocalId::new(series.id.to_string()),
                        remote,
                        remote_version: version,
                        base: base.state,
                    });
                }
                Some(_) => {}
                None => {
                    // Created and deleted locally since (a remote item left without its pair would be
                    // imported again as someone else's event): the pair is made with the deleted
                    // series, and the plan deletes the remote item.
                    let deleted = self
                        .ctx
                        .store
                        .get_deleted_series_by_uid(
                            self.ctx.tenant,
                            self.ctx.connection.calendar_id,
                            base.uid.as_str(),
                            written_at,
                        )
                        .await?;
                    if let Some(series) = &deleted {
                        self.read_pairs(Vec::new(), &[LocalId::new(series.id.to_string())])
                            .await?;
                    }
                    match deleted {
                        Some(series)
                            if !self
                                .mappings
                                .iter()
                                .any(|m| m.local.as_str() == series.id.to_string()) =>
                        {
                            let id = LocalId::new(series.id.to_string());
                            if !local_changes.iter().any(|c| c.id() == &id) {
                                deletions.push(LocalChange::Deleted {
                                    id: id.clone(),
                                    at: series.deleted_at,
                                });
                            }
                            self.local.insert(
                                id.clone(),
                                LocalEntry {
                                    row: series,
                                    parsed: None,
                                },
                            );
                            recognised.push(self.mappings.len());
                            self.mappings.push(Mapping {
                                uid: base.uid.clone(),
                                local: id,
                                remote,
                                remote_version: version,
                                base: base.state,
                            });
                        }
                        Some(_) => {}
                        // The create never happened: the remote item is listed again and imported then.
                        None => self.ctx.store.delete_mapping(self.ctx.tenant, row).await?,
                    }
                }
            }
        }
        for index in recognised {
            let Some(m) = self.mappings.get(index).cloned() else {
                continue;
            };
            let pair = Pending {
                local: m.local.clone(),
                remote: m.remote.clone(),
                version: m.remote_version,
                state: m.base,
                uid: m.uid,
            };
            self.recognised.push((m.local.clone(), m.remote.clone()));
            if let Err(e) = self.record_pair(pair, None).await {
                self.error(m.local.as_str(), "record", e);
            }
        }
        Ok(deletions)
    }

    /// Writes a write-ahead row (or a pair's intent) before a write, so a run killed right after the
    /// write can recognise it next time.
    async fn write_ahead(
        &self,
        remote_id: &str,
        series: Option<SeriesId>,
        version: Option<&RemoteVersion>,
        base: &StoredBase,
    ) -> Result<(), StepError> {
        crate::pairs::write_ahead(
            self.ctx.store,
            self.ctx.tenant,
            self.ctx.link.id,
            self.ctx.now,
            remote_id,
            series,
            version,
            base,
        )
        .await?;
        Ok(())
    }

    /// Records the intent of an update that copies one side's state to the other on the pair's row.
    async fn write_intent(
        &self,
        local: &LocalId,
        remote: &RemoteId,
        intent: Intent,
    ) -> Result<(), StepError> {
        let Some(m) = self
            .mappings
            .iter()
            .find(|m| &m.local == local && &m.remote == remote)
        else {
            return Ok(());
        };
        let base = StoredBase {
            uid: m.uid.clone(),
            state: m.base.clone(),
            intent: Some(intent),
            earlier: None,
        };
        self.write_ahead(
            remote.as_str(),
            Some(parse_series_id(local)?),
            Some(&m.remote_version),
            &base,
        )
        .await
    }

    /// Whether an open update or deletion conflict is out of date because one of its sides changed
    /// again since it was recorded; such a conflict is closed as `superseded` (audited) and the pair is
    /// planned again, instead of staying parked on versions nobody can resolve any more.
    fn superseded(
        c: &calbridge_store::Conflict,
        local_changes: &[LocalChange],
        remote: &RemoteChanges,
    ) -> bool {
        if !matches!(
            c.kind,
            StoreConflictKind::Update | StoreConflictKind::Deletion
        ) {
            return false;
        }
        let side = |json: Option<&str>| {
            json.and_then(|j| serde_json::from_str::<ConflictSide>(j).ok())
                .unwrap_or(ConflictSide {
                    id: None,
                    version: None,
                    state: None,
                })
        };
        let (local_side, remote_side) = (
            side(c.local_json.as_deref()),
            side(c.remote_json.as_deref()),
        );
        let series = c.series_id.map(|s| s.to_string());
        let local_moved = local_changes.iter().any(|change| match change {
            LocalChange::Upsert { id, state, .. } => {
                Some(id.as_str()) == series.as_deref() && local_side.state.as_ref() != Some(state)
            }
            LocalChange::Deleted { id, .. } => {
                Some(id.as_str()) == series.as_deref() && local_side.state.is_some()
            }
        });
        let remote_moved = remote.changes.iter().any(|change| match change {
            RemoteChange::Upsert { id, version, .. } => {
                Some(id.as_str()) == remote_side.id.as_deref()
                    && remote_side.version.as_deref() != Some(version.as_str())
            }
            RemoteChange::Deleted { id, certain } => {
                *certain
                    && Some(id.as_str()) == remote_side.id.as_deref()
                    && remote_side.state.is_some()
            }
        });
        local_moved || remote_moved
    }

    fn sync_actor(&self) -> String {
        sync_actor(self.ctx.connection)
    }

    /// Whether this run recognised a write of the interrupted resolution of an open update or
    /// deletion conflict, which it then closes as resolved with the decided option (audit
    /// `conflict.resolved`, completed by this sync): one of its write-ahead rows matched what the
    /// written side holds (its pair is named by the conflict, or its series/item is the one restored),
    /// or the side its `delete_everywhere` deletes is seen deleted. The pair then holds the base the
    /// resolution left, both sides are put before the plan (as for a superseded conflict), and the
    /// plan carries out whatever the resolution had not written yet; an edit of either side made after
    /// it is an edit on top of the decision, not a reason to supersede it. Identity resolutions are
    /// not closed here: their remaining deletions are not the plan's to make (they are resumed).
    async fn resolution_recognised(
        &mut self,
        c: &calbridge_store::Conflict,
        resolving: &Resolving,
        local_changes: &mut Vec<LocalChange>,
        remote: &mut RemoteChanges,
    ) -> Result<bool, EngineError> {
        if !matches!(
            c.kind,
            StoreConflictKind::Update | StoreConflictKind::Deletion
        ) {
            return Ok(false);
        }
        let series = c.series_id.map(|s| LocalId::new(s.to_string()));
        let side =
            |json: Option<&str>| json.and_then(|j| serde_json::from_str::<ConflictSide>(j).ok());
        let remote_side = side(c.remote_json.as_deref());
        let local_side = side(c.local_json.as_deref());
        let remote_id = remote_side.as_ref().and_then(|s| s.id.clone());
        let written = self.recognised.iter().any(|(local, remote)| {
            Some(local) == series.as_ref() || Some(remote.as_str()) == remote_id.as_deref()
        });
        let deleted = resolving.option == calbridge_sync::ResolutionOption::DeleteEverywhere
            && match (
                local_side.and_then(|s| s.state),
                remote_side.and_then(|s| s.state),
            ) {
                // Deleted locally: the resolution deletes the provider's item.
                (None, Some(_)) => remote.changes.iter().any(|change| {
                    matches!(change, RemoteChange::Deleted { id, certain: true }
                        if Some(id.as_str()) == remote_id.as_deref())
                }),
                // Deleted remotely: the resolution deletes the local series.
                (Some(_), None) => local_changes.iter().any(|change| {
                    matches!(change, LocalChange::Deleted { id, .. } if Some(id) == series.as_ref())
                }),
                _ => false,
            };
        if !(written || deleted) || !self.refresh_pair(c, local_changes, remote).await {
            return Ok(false);
        }
        // `keep_both`: the plan exports the copy (the rest of the decision). A sync that parked it
        // earlier read its change then, so it is released for the incremental syncs (a create's
        // write-ahead row, written before the conflict closes: a run killed after closing it leaves
        // the row for the next one) and put before this run's plan.
        if resolving.option == calbridge_sync::ResolutionOption::KeepBoth
            && let Some(copy) = self.saved_copy(c, resolving).await?
        {
            let row = self
                .ctx
                .store
                .get_series(self.ctx.tenant, crate::pairs::series_id(&copy)?)
                .await?;
            crate::resolve::release_copy(
                self.ctx.store,
                self.ctx.tenant,
                self.ctx.link.id,
                &row,
                &self.floating,
                self.ctx.now,
            )
            .await?;
            self.present_series(row, local_changes);
        }
        let actor = self.sync_actor();
        if crate::resolve::complete_recognised(
            self.ctx.store,
            self.ctx.tenant,
            c,
            resolving,
            &actor,
            self.ctx.config,
            self.ctx.now,
        )
        .await?
        {
            *self
                .counts
                .entry("resolutions_completed".into())
                .or_default() += 1;
        }
        Ok(true)
    }

    /// Resumes the interrupted resolution of an open conflict once it is older than
    /// `EngineConfig::resume_resolutions_after` (a younger one may still be running): the admin's
    /// decision carried out by the same code as their retry, its writes made before not made again.
    /// A side that moved for another reason abandons it (the conflict stays open for a person; `true`);
    /// a failure (provider down) is logged and counted, and the next run tries again.
    async fn resume_resolution(
        &mut self,
        c: &calbridge_store::Conflict,
        resolving: &Resolving,
    ) -> Result<bool, EngineError> {
        let due = resolving
            .active_since()
            .checked_add(self.ctx.config.resume_resolutions_after)
            .is_ok_and(|at| at <= self.ctx.now);
        if !due {
            return Ok(false);
        }
        let actor = self.sync_actor();
        let option = resolving.option_name();
        let resumed = crate::resolve::resume(
            Resolve {
                store: self.ctx.store,
                provider: Some(self.ctx.provider),
                tenant: self.ctx.tenant,
                conflict: c.id,
                option: &option,
                merged: resolving.merged.as_ref(),
                actor: &resolving.actor,
                config: self.ctx.config,
                now: self.ctx.now,
            },
            &actor,
        )
        .await;
        let count = match resumed {
            Ok(_) => "resolutions_completed",
            Err(ResolveFailure::AlreadyResolved) => return Ok(false),
            Err(ResolveFailure::Changed(side)) => {
                let why = format!(
                    "the {side} side changed after the resolution began, for another reason than its own writes"
                );
                if !crate::resolve::abandon(
                    self.ctx.store,
                    self.ctx.tenant,
                    c,
                    resolving,
                    &actor,
                    &why,
                    self.ctx.config,
                    self.ctx.now,
                )
                .await?
                {
                    // Taken up, replaced or given up by someone else meanwhile.
                    return Ok(false);
                }
                *self
                    .counts
                    .entry("resolutions_abandoned".into())
                    .or_default() += 1;
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(conflict = %c.id, code = e.code(), error = %e, "could not resume an interrupted conflict resolution");
                "resolutions_not_resumed"
            }
        };
        *self.counts.entry(count.into()).or_default() += 1;
        Ok(false)
    }

    /// What this run does with a `keep_both` copy once its decision was given up: deleted, it is
    /// parked (the change this run read before must not export it); kept (exported already, or
    /// edited, see `resolve::release_copy`), it is put before the plan like a change, since the run
    /// that parked it earlier read its change then and no incremental run reads it again.
    async fn after_abandon(
        &mut self,
        copy: Option<LocalId>,
        parked: &mut BTreeSet<LocalId>,
        local_changes: &mut Vec<LocalChange>,
    ) -> Result<(), EngineError> {
        let Some(copy) = copy else {
            return Ok(());
        };
        let series = crate::pairs::series_id(&copy)?;
        let row = self.ctx.store.get_series(self.ctx.tenant, series).await?;
        if row.deleted_at.is_some() {
            parked.insert(copy);
        } else {
            self.present_series(row, local_changes);
        }
        Ok(())
    }

    /// The local copy an interrupted `keep_both` resolution saved (named as the option names it), if
    /// there is one; also while a decision that replaced such a resolution has not removed it yet.
    async fn saved_copy(
        &self,
        c: &calbridge_store::Conflict,
        resolving: &Resolving,
    ) -> Result<Option<LocalId>, EngineError> {
        if resolving.option != calbridge_sync::ResolutionOption::KeepBoth
            && !resolving.copy_to_remove()
        {
            return Ok(None);
        }
        let Some(ConflictSide {
            id: Some(id),
            state: Some(state),
            ..
        }) = c
            .remote_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<ConflictSide>(j).ok())
        else {
            return Ok(None);
        };
        let uid = calbridge_sync::resolve::copy_uid(
            &Uid::new(&c.event_uid),
            &self.ctx.link.id.to_string(),
            &RemoteId::new(id),
            &state.snapshot,
        );
        let copy = self
            .ctx
            .store
            .get_series_by_uid(self.ctx.tenant, self.ctx.connection.calendar_id, &uid)
            .await?;
        Ok(copy.map(|series| LocalId::new(series.id.to_string())))
    }

    async fn close_superseded(
        &mut self,
        c: &calbridge_store::Conflict,
        why: &str,
        resolving: Option<&Resolving>,
    ) -> Result<(), EngineError> {
        let store = self.ctx.store;
        let actor = self.sync_actor();
        if let Some(resolving) = resolving {
            // The decision did not take: it is abandoned, and what it did only locally (a `keep_both`
            // copy never exported) is undone.
            crate::resolve::abandon(
                store,
                self.ctx.tenant,
                c,
                resolving,
                &actor,
                &format!("superseded: {why}"),
                self.ctx.config,
                self.ctx.now,
            )
            .await?;
        }
        let resolution = serde_json::json!({"superseded": why}).to_string();
        // Closed with its audit entry, in one transaction.
        let entry = NewAuditEntry {
            actor: actor.clone(),
            action: "conflict.superseded".into(),
            subject: c.id.to_string(),
            details_json: serde_json::json!({
                "kind": c.kind.to_string(),
                "uid": c.event_uid,
                "reason": why,
                // A decision interrupted before a write this run could recognise: it did not
                // take, and the admin decides again on the conflict recorded now.
                "interrupted_resolution": resolving,
            })
            .to_string(),
        };
        store
            .resolve_conflict_audited(
                self.ctx.tenant,
                c.id,
                &resolution,
                &actor,
                self.ctx.now,
                vec![entry],
            )
            .await?;
        *self
            .counts
            .entry("conflicts_superseded".into())
            .or_default() += 1;
        Ok(())
    }

    /// Puts a local series in front of the plan as a change (a deletion, or its state now), unless
    /// the run has a change of it already. `false` when it cannot be parsed.
    fn present_series(
        &mut self,
        row: calbridge_store::Series,
        local_changes: &mut Vec<LocalChange>,
    ) -> bool {
        let id = LocalId::new(row.id.to_string());
        has_change(local_changes, &id) || self.take_local(row, local_changes).is_ok()
    }

    /// Makes a local series a change of the run (its deletion, or its state now) and keeps its row;
    /// `Err` when its stored content cannot be parsed (then nothing is taken).
    fn take_local(
        &mut self,
        row: calbridge_store::Series,
        changes: &mut Vec<LocalChange>,
    ) -> Result<(), EngineError> {
        let id = LocalId::new(row.id.to_string());
        if row.deleted_at.is_some() {
            changes.push(LocalChange::Deleted {
                id: id.clone(),
                at: row.deleted_at,
            });
            self.local.insert(id, LocalEntry { row, parsed: None });
            return Ok(());
        }
        let parsed = Parsed::from_stored(&row)?;
        changes.push(LocalChange::Upsert {
            id: id.clone(),
            uid: Uid::new(&row.uid),
            state: parsed.state(&self.floating),
        });
        self.local.insert(
            id,
            LocalEntry {
                row,
                parsed: Some(parsed),
            },
        );
        Ok(())
    }

    /// Puts both sides of a superseded conflict's pair in front of the plan as changes, the side that
    /// did not move too (its earlier edit is part of the conflict and must not be overwritten as if it
    /// were the base). `false` when a side cannot be read now (the conflict then stays parked).
    async fn refresh_pair(
        &mut self,
        c: &calbridge_store::Conflict,
        local_changes: &mut Vec<LocalChange>,
        remote: &mut RemoteChanges,
    ) -> bool {
        if let Some(series) = c.series_id
            && !has_change(local_changes, &LocalId::new(series.to_string()))
        {
            let Ok(row) = self.ctx.store.get_series(self.ctx.tenant, series).await else {
                return false;
            };
            if !self.present_series(row, local_changes) {
                return false;
            }
        }
        let remote_id = c
            .remote_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<ConflictSide>(j).ok())
            .and_then(|side| side.id);
        if let Some(rid) = remote_id {
            let listed = remote.changes.iter().any(|change| match change {
                RemoteChange::Upsert { id, .. } | RemoteChange::Deleted { id, .. } => {
                    id.as_str() == rid
                }
            });
            if !listed {
                let Ok(pid) = ProviderRemoteId::parse(rid.clone()) else {
                    return false;
                };
                let read = self
                    .ctx
                    .provider
                    .read(&self.calendar, std::slice::from_ref(&pid))
                    .await;
                match read.map(|items| items.into_iter().next()) {
                    Ok(Some(ReadItem::Found(item))) => {
                        let Ok(parsed) = Parsed::from_calendar(item.content.calendar().clone())
                        else {
                            return false;
                        };
                        let id = RemoteId::new(rid);
                        remote.changes.push(RemoteChange::Upsert {
                            id: id.clone(),
                            version: RemoteVersion::new(item.etag.as_str()),
                            uid: Uid::new(parsed.series.uid()),
                            state: parsed.state(&self.floating),
                        });
                        self.remote.insert(id, item.content);
                    }
                    Ok(Some(ReadItem::Missing(_))) => remote.changes.push(RemoteChange::Deleted {
                        id: RemoteId::new(rid),
                        certain: true,
                    }),
                    _ => return false,
                }
            }
        }
        true
    }

    /// Local changes since the link's local change mark, and the mark to save when the run commits. On a
    /// first sync every live series is a change (the stream may have been purged past its beginning).
    ///
    /// A complete listing holds live series only, so the series of known pairs (and of write-ahead
    /// creates, `also`) that are not in it are read too: the deleted ones are deletions. Without that,
    /// a deletion made before a first or full sync was never propagated (found by the crash test).
    /// An incremental read adds the live series of `also` its stream does not name.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_local(
        &mut self,
        also: &[LocalId],
    ) -> Result<(Vec<LocalChange>, i64), EngineError> {
        let store = self.ctx.store;
        let tenant = self.ctx.tenant;
        let calendar = self.ctx.connection.calendar_id;
        let mut rows = Vec::new();
        let mark = match self.local_cursor {
            None => {
                // Taken before listing: whatever is written while we list is seen again next run.
                let head = store.latest_change_seq(tenant).await?;
                let mut after = None;
                loop {
                    let page = store
                        .list_series(tenant, calendar, after, SERIES_PAGE)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id);
                    let full = page.len() as u32 == SERIES_PAGE;
                    rows.extend(page);
                    if !full {
                        break;
                    }
                }
                let live: BTreeSet<SeriesId> = rows.iter().map(|r| r.id).collect();
                let missing: Vec<SeriesId> = self
                    .mappings
                    .iter()
                    .map(|m| &m.local)
                    .chain(also)
                    .filter_map(|l| SeriesId::parse(l.as_str()).ok())
                    .filter(|id| !live.contains(id))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                rows.extend(
                    series_named(store, tenant, &missing, |r| r.deleted_at.is_some()).await?,
                );
                head
            }
            Some(mut seq) => {
                let mut ids: Vec<SeriesId> = Vec::new();
                let mut seen = BTreeSet::new();
                loop {
                    let page = store
                        .list_changes(tenant, seq, Some(calendar), CHANGE_PAGE)
                        .await?;
                    let Some(last) = page.last() else { break };
                    seq = last.seq;
                    let full = page.len() as u32 == CHANGE_PAGE;
                    for change in page {
                        if !change.kind.starts_with("event.") {
                            continue;
                        }
                        if let Ok(id) = SeriesId::parse(&change.subject_id)
                            && seen.insert(id)
                        {
                            ids.push(id);
                        }
                    }
                    if !full {
                        break;
                    }
                }
                // A series still at the version its pair was recorded at is unchanged since: this
                // link's own write coming back (after a large import, every series). It is neither
                // read nor parsed, nor a change, whoever wrote it last.
                let unchanged: HashSet<SeriesId> = store
                    .series_at_pair_version(tenant, self.ctx.link.id, &ids)
                    .await?
                    .into_iter()
                    .collect();
                if !unchanged.is_empty() {
                    ids.retain(|id| !unchanged.contains(id));
                    self.counts
                        .insert("local_unchanged_since_pair".into(), unchanged.len() as u64);
                }
                rows.extend(series_named(store, tenant, &ids, |_| true).await?);
                // A live series a create's write-ahead row names is read even when the stream
                // does not name it: a resolution released it for export after a run had read its
                // change (a parked `keep_both` copy, `resolve::release_copy`), or the create is
                // unfinished; the plan creates it (or the listing pairs the item). Deleted ones are
                // left to the stream, which names every deletion.
                let pending: Vec<SeriesId> = also
                    .iter()
                    .filter_map(|l| SeriesId::parse(l.as_str()).ok())
                    .filter(|id| !seen.contains(id))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                rows.extend(
                    series_named(store, tenant, &pending, |r| r.deleted_at.is_none()).await?,
                );
                seq
            }
        };
        let mut changes = Vec::new();
        for row in rows {
            self.touched_local.insert(row.id);
            let id = row.id.to_string();
            if let Err(e) = self.take_local(row, &mut changes) {
                self.error(&id, "read", e.into());
            }
        }
        Ok((changes, mark))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_conflict(&mut self, c: &Conflict) -> Result<(), EngineError> {
        let store = self.ctx.store;
        let local = ConflictSide {
            id: c.local_id.as_ref().map(|l| l.to_string()),
            version: None,
            state: c.local.clone(),
        };
        let remote = ConflictSide {
            id: c.remote_id.as_ref().map(|r| r.to_string()),
            version: c.remote_version.as_ref().map(|v| v.to_string()),
            state: c.remote.clone(),
        };
        let record = store
            .create_conflict(
                self.ctx.tenant,
                NewConflict {
                    connection_id: Some(self.ctx.connection.id),
                    link_id: Some(self.ctx.link.id),
                    series_id: c
                        .local_id
                        .as_ref()
                        .and_then(|l| SeriesId::parse(l.as_str()).ok()),
                    other_series_id: None,
                    event_uid: c.uid.as_ref().map(|u| u.to_string()).unwrap_or_default(),
                    kind: store_kind(c.kind),
                    local_json: Some(to_json(&local)?),
                    remote_json: Some(to_json(&remote)?),
                    base_json: c.base.as_ref().map(to_json).transpose()?,
                    fields_json: to_json(&c.fields)?,
                    options_json: to_json(&c.options)?,
                },
            )
            .await?;
        *self.counts.entry("conflicts".into()).or_default() += 1;
        let actor = self.sync_actor();
        let details = serde_json::json!({
            "kind": c.kind,
            "uid": c.uid,
            "link": self.ctx.link.id,
            "fields": c.fields,
            "deleted_on": c.deleted_on,
            "settled_by": c.settled_by,
        })
        .to_string();
        store
            .append_audit(
                self.ctx.tenant,
                NewAuditEntry {
                    actor: actor.clone(),
                    action: "conflict.detected".into(),
                    subject: record.id.to_string(),
                    details_json: details.clone(),
                },
            )
            .await?;
        if let Some(policy) = c.settled_by {
            // Settled by the link's policy: the record is closed at once, the audit log says how.
            let resolution = serde_json::json!({ "policy": policy }).to_string();
            let entry = NewAuditEntry {
                actor: actor.clone(),
                action: "conflict.settled".into(),
                subject: record.id.to_string(),
                details_json: details,
            };
            store
                .resolve_conflict_audited(
                    self.ctx.tenant,
                    record.id,
                    &resolution,
                    &actor,
                    self.ctx.now,
                    vec![entry],
                )
                .await?;
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn execute_group(
        &mut self,
        key: &str,
        group: Vec<Action>,
        local_changes: &[LocalChange],
        remote: &RemoteChanges,
        local_by_uid: &BTreeMap<Uid, LocalSeries>,
    ) {
        let mut pending: Option<ToRecord> = None;
        let mut queue: std::collections::VecDeque<Action> = group.into();
        let mut verified = false;
        while let Some(action) = queue.pop_front() {
            if self.crash_point() {
                return;
            }
            let name = action_name(&action);
            if let Action::VerifyRemote { remote: id } = &action {
                if verified {
                    self.error(key, name, step("verify", "the item is still uncertain"));
                    return;
                }
                verified = true;
                match self.verify(id, local_changes, remote, local_by_uid).await {
                    Ok(actions) => {
                        *self.counts.entry(name.into()).or_default() += 1;
                        queue.extend(actions);
                        continue;
                    }
                    Err(e) => {
                        self.error(key, name, e);
                        return;
                    }
                }
            }
            let result = self.execute(&action).await;
            self.executed += 1;
            // The test-only crash lands after the side effect and before the base is recorded: the
            // worst moment, which the next run must absorb.
            if self.crash_point() {
                return;
            }
            match result {
                Ok(record) => {
                    *self.counts.entry(name.into()).or_default() += 1;
                    if record.is_some() {
                        pending = record;
                    }
                }
                Err(e) => {
                    self.error(key, name, e);
                    return;
                }
            }
        }
        if let Some(p) = pending
            && let Err(e) = self.record_pair(p.pair, p.local_version).await
        {
            self.error(key, "record", e);
        }
    }

    /// A create that meets a live series holding the item's UID: our own create of a run that died
    /// before recording it is adopted (same content: its id and version), anyone else's is refused.
    fn adopt(
        &self,
        row: &calbridge_store::Series,
        uid: &str,
        state: &ItemState,
    ) -> Result<(SeriesId, i64), StepError> {
        let same = Parsed::from_stored(row)
            .is_ok_and(|p| p.state(&self.floating).snapshot == state.snapshot);
        if same {
            Ok((row.id, row.version))
        } else {
            Err(step(
                "local_conflict",
                format!("another local series holds UID {uid}"),
            ))
        }
    }

    fn crash_point(&mut self) -> bool {
        if self
            .ctx
            .config
            .crash_after_actions
            .is_some_and(|limit| self.executed >= limit)
        {
            self.interrupted = true;
        }
        self.interrupted
    }

    /// Reads an item whose removal was uncertain and plans it again with what was found.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn verify(
        &mut self,
        id: &RemoteId,
        local_changes: &[LocalChange],
        remote: &RemoteChanges,
        local_by_uid: &BTreeMap<Uid, LocalSeries>,
    ) -> Result<Vec<Action>, StepError> {
        let _ = remote;
        let read = self
            .ctx
            .provider
            .read(&self.calendar, &[provider_id(id)?])
            .await?;
        let change = match read.into_iter().next() {
            Some(ReadItem::Found(item)) => {
                let parsed = Parsed::from_calendar(item.content.calendar().clone())?;
                let change = RemoteChange::Upsert {
                    id: id.clone(),
                    version: RemoteVersion::new(item.etag.as_str()),
                    uid: Uid::new(parsed.series.uid()),
                    state: parsed.state(&self.floating),
                };
                self.remote.insert(id.clone(), item.content);
                change
            }
            Some(ReadItem::Missing(_)) => RemoteChange::Deleted {
                id: id.clone(),
                certain: true,
            },
            Some(ReadItem::Failed(_, why)) => return Err(step("unreadable", why)),
            None => return Err(step("protocol", "the provider answered no item")),
        };
        let mappings: Vec<Mapping> = self
            .mappings
            .iter()
            .filter(|m| &m.remote == id)
            .cloned()
            .collect();
        let locals: Vec<LocalChange> = local_changes
            .iter()
            .filter(|c| match c {
                LocalChange::Upsert { id: l, .. } | LocalChange::Deleted { id: l, .. } => {
                    mappings.iter().any(|m| &m.local == l)
                }
            })
            .cloned()
            .collect();
        let remote = RemoteChanges {
            changes: vec![change],
            listing: Listing::Incremental,
        };
        let none = BTreeSet::new();
        let replanned = plan(PlanInput {
            window: self.window,
            policy: self.options.policy(self.ctx.config.deletion_guard),
            mappings: &mappings,
            local: &locals,
            remote: &remote,
            local_by_uid,
            parked_local: &none,
            parked_remote: &BTreeSet::new(),
        });
        Ok(replanned.actions)
    }

    fn local_entry(&self, id: &LocalId) -> Result<&LocalEntry, StepError> {
        self.local
            .get(id)
            .ok_or_else(|| step("local_not_found", format!("series {id} was not read")))
    }

    /// The current local series (read now if this run has not read it: `Link` of an unchanged series).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn load_local(&mut self, id: &LocalId) -> Result<(), StepError> {
        if self.local.get(id).is_some_and(|e| e.parsed.is_some()) {
            return Ok(());
        }
        let row = self
            .ctx
            .store
            .get_series(self.ctx.tenant, parse_series_id(id)?)
            .await?;
        let parsed = if row.deleted_at.is_none() {
            Some(Parsed::from_stored(&row)?)
        } else {
            None
        };
        self.local.insert(id.clone(), LocalEntry { row, parsed });
        Ok(())
    }

    fn live_local(&self, id: &LocalId) -> Result<&Parsed, StepError> {
        self.local_entry(id)?
            .parsed
            .as_ref()
            .ok_or_else(|| step("local_not_found", format!("series {id} is deleted")))
    }

    fn remote_parsed(&self, id: &RemoteId) -> Result<Parsed, StepError> {
        let content = self
            .remote
            .get(id)
            .ok_or_else(|| step("not_found", format!("remote item {id} was not read")))?;
        Ok(Parsed::from_calendar(content.calendar().clone())?)
    }

    /// The series a write carries.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn compose(
        &mut self,
        local: &LocalId,
        remote: &RemoteId,
        content: &Content,
    ) -> Result<Parsed, StepError> {
        match content {
            Content::Local => {
                self.load_local(local).await?;
                Ok(self.live_local(local)?.clone())
            }
            Content::Remote => self.remote_parsed(remote),
            Content::Merged { from_remote } => {
                self.load_local(local).await?;
                let l = self.live_local(local)?;
                let r = self.remote_parsed(remote)?;
                let merged = calbridge_sync::series::compose(&l.series, &r.series, from_remote)
                    .map_err(|e| step("content", e.to_string()))?;
                let calendar = calendar_with(merged, &[&l.calendar, &r.calendar]);
                Ok(Parsed::from_calendar(calendar)?)
            }
        }
    }

    fn create_key(&self, local: &LocalId) -> CreateKey {
        create_key(self.ctx.link.id, local)
    }

    /// The version a write left: the one the provider answered, or read back when it sent none (a
    /// server that rewrote the data on store), so our write is recognised when it comes back.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn written_version(
        &mut self,
        written: &Written,
    ) -> Result<(RemoteVersion, Option<ItemContent>), StepError> {
        if let Some(etag) = &written.etag {
            return Ok((RemoteVersion::new(etag.as_str()), None));
        }
        let read = self
            .ctx
            .provider
            .read(&self.calendar, std::slice::from_ref(&written.id))
            .await?;
        match read.into_iter().next() {
            Some(ReadItem::Found(item)) => {
                Ok((RemoteVersion::new(item.etag.as_str()), Some(item.content)))
            }
            _ => Err(step("protocol", "the written item cannot be read back")),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn execute(&mut self, action: &Action) -> Result<Option<ToRecord>, StepError> {
        match action {
            Action::CreateRemote { local } => {
                self.load_local(local).await?;
                let parsed = self.live_local(local)?.clone();
                let content = item_content(&parsed)?;
                let key = self.create_key(local);
                let state = parsed.state(&self.floating);
                self.write_ahead(
                    &format!("{PENDING_CREATE}{}", key.as_str()),
                    Some(parse_series_id(local)?),
                    None,
                    &StoredBase {
                        uid: Uid::new(parsed.series.uid()),
                        state: state.clone(),
                        intent: None,
                        earlier: None,
                    },
                )
                .await?;
                let written = self
                    .ctx
                    .provider
                    .create(&self.calendar, &key, &content)
                    .await?;
                let (version, read_back) = self.written_version(&written).await?;
                if written.already_existed {
                    // Our own earlier create (a run that died before recording it): adopt it only if
                    // it still holds what we would write; otherwise the next listing pairs it.
                    let current = match read_back {
                        Some(c) => Some(c),
                        None => self
                            .ctx
                            .provider
                            .read(&self.calendar, std::slice::from_ref(&written.id))
                            .await?
                            .into_iter()
                            .find_map(|r| match r {
                                ReadItem::Found(item) => Some(item.content),
                                _ => None,
                            }),
                    };
                    let same = current
                        .and_then(|c| Parsed::from_calendar(c.calendar().clone()).ok())
                        .is_some_and(|p| p.state(&self.floating).snapshot == state.snapshot);
                    if !same {
                        return Err(step(
                            "exists",
                            "the item exists remotely with other content; it is paired next run",
                        ));
                    }
                }
                let local_version = Some(self.local_entry(local)?.row.version);
                Ok(Some(ToRecord::remote_write(
                    local,
                    &written,
                    version,
                    &parsed,
                    state,
                    local_version,
                )))
            }
            Action::UpdateRemote {
                local,
                remote,
                if_match,
                content,
            } => {
                let parsed = self.compose(local, remote, content).await?;
                let body = item_content(&parsed)?;
                let etag = Etag::parse(if_match.as_str())?;
                if matches!(content, Content::Local) {
                    self.write_intent(
                        local,
                        remote,
                        Intent {
                            side: IntentSide::Remote,
                            state: parsed.state(&self.floating),
                            version: None,
                            base: None,
                        },
                    )
                    .await?;
                }
                let written = self
                    .ctx
                    .provider
                    .update(&self.calendar, &provider_id(remote)?, &etag, &body)
                    .await?;
                let (version, _) = self.written_version(&written).await?;
                // Only the local series' own content makes its row the base (a merge is written
                // locally by its own step).
                let local_version = match content {
                    Content::Local => Some(self.local_entry(local)?.row.version),
                    _ => None,
                };
                Ok(Some(ToRecord::remote_write(
                    local,
                    &written,
                    version,
                    &parsed,
                    parsed.state(&self.floating),
                    local_version,
                )))
            }
            Action::DeleteRemote {
                local,
                remote,
                if_match,
            } => {
                let etag = Etag::parse(if_match.as_str())?;
                match self
                    .ctx
                    .provider
                    .delete(&self.calendar, &provider_id(remote)?, &etag)
                    .await
                {
                    Ok(()) | Err(ProviderError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                self.forget_pair(local, remote).await?;
                Ok(None)
            }
            Action::CreateLocal {
                remote,
                version,
                restore,
            } => {
                let parsed = self.remote_parsed(remote)?;
                let state = parsed.state(&self.floating);
                let uid = parsed.series.uid().to_owned();
                let existing = self
                    .ctx
                    .store
                    .get_series_by_uid(self.ctx.tenant, self.ctx.connection.calendar_id, &uid)
                    .await?;
                let (id, local_version) = match existing {
                    Some(row) => self.adopt(&row, &uid, &state)?,
                    None => {
                        if restore.is_none() {
                            self.write_ahead(
                                remote.as_str(),
                                None,
                                Some(version),
                                &StoredBase {
                                    uid: Uid::new(&uid),
                                    state: state.clone(),
                                    intent: None,
                                    earlier: None,
                                },
                            )
                            .await?;
                        }
                        let new = storable(&parsed.calendar, &self.floating)?
                            .into_new(self.ctx.connection.calendar_id);
                        let row = self.ctx.store.create_series(self.ctx.tenant, new).await?;
                        (row.id, row.version)
                    }
                };
                self.touched_local.insert(id);
                if let Some(old) = restore
                    && old.as_str() != id.to_string()
                {
                    // The deleted series comes back under a new id (the store keeps deletions final);
                    // its pair moves with it.
                    self.mappings.retain(|m| &m.local != old);
                }
                Ok(Some(ToRecord {
                    pair: Pending {
                        local: LocalId::new(id.to_string()),
                        remote: remote.clone(),
                        version: version.clone(),
                        uid: Uid::new(uid),
                        state,
                    },
                    local_version: Some(local_version),
                }))
            }
            Action::UpdateLocal {
                local,
                remote,
                version,
                content,
            } => {
                self.load_local(local).await?;
                let expected = self.local_entry(local)?.row.version;
                let parsed = self.compose(local, remote, content).await?;
                if matches!(content, Content::Remote) {
                    self.write_intent(
                        local,
                        remote,
                        Intent {
                            side: IntentSide::Local,
                            state: parsed.state(&self.floating),
                            version: Some(version.to_string()),
                            base: None,
                        },
                    )
                    .await?;
                }
                // The local UID stays (the pair is one series on both sides).
                let update = storable(&parsed.calendar, &self.floating)?.into_update();
                let row = self
                    .ctx
                    .store
                    .update_series(self.ctx.tenant, parse_series_id(local)?, expected, update)
                    .await?;
                self.touched_local.insert(row.id);
                let state = parsed.state(&self.floating);
                let uid = Uid::new(parsed.series.uid());
                let local_version = row.version;
                self.local.insert(
                    local.clone(),
                    LocalEntry {
                        row,
                        parsed: Some(parsed),
                    },
                );
                Ok(Some(ToRecord {
                    pair: Pending {
                        local: local.clone(),
                        remote: remote.clone(),
                        version: version.clone(),
                        uid,
                        state,
                    },
                    local_version: Some(local_version),
                }))
            }
            Action::DeleteLocal { local, remote } => {
                self.load_local(local).await?;
                let entry = self.local_entry(local)?;
                if entry.row.deleted_at.is_none() {
                    let expected = entry.row.version;
                    let series = parse_series_id(local)?;
                    self.ctx
                        .store
                        .delete_series(self.ctx.tenant, series, expected)
                        .await?;
                    self.touched_local.insert(series);
                }
                self.forget_pair(local, remote).await?;
                Ok(None)
            }
            Action::Link {
                local,
                remote,
                version,
            } => {
                self.load_local(local).await?;
                let parsed = self.live_local(local)?;
                let pair = Pending {
                    local: local.clone(),
                    remote: remote.clone(),
                    version: version.clone(),
                    uid: Uid::new(parsed.series.uid()),
                    state: parsed.state(&self.floating),
                };
                Ok(Some(ToRecord {
                    pair,
                    local_version: Some(self.local_entry(local)?.row.version),
                }))
            }
            Action::Unlink { local, remote } => {
                self.forget_pair(local, remote).await?;
                Ok(None)
            }
            Action::CopyRemoteAsNewLocal { remote } => {
                let parsed = self.remote_parsed(remote)?;
                // Derived, so a rerun after a crash finds the copy it already made, and a resolution
                // with `keep_both` names the same copy.
                let uid = calbridge_sync::resolve::copy_uid(
                    &Uid::new(parsed.series.uid()),
                    &self.ctx.link.id.to_string(),
                    remote,
                    &parsed.state(&self.floating).snapshot,
                );
                let exists = self
                    .ctx
                    .store
                    .get_series_by_uid(self.ctx.tenant, self.ctx.connection.calendar_id, &uid)
                    .await?
                    .is_some();
                if !exists {
                    let copy = with_uid(&parsed.series, &uid)?;
                    let calendar = calendar_with(copy, &[&parsed.calendar]);
                    let new = storable(&calendar, &self.floating)?
                        .into_new(self.ctx.connection.calendar_id);
                    let row = self.ctx.store.create_series(self.ctx.tenant, new).await?;
                    self.touched_local.insert(row.id);
                }
                Ok(None)
            }
            Action::VerifyRemote { .. } => Err(step("verify", "verified outside execute")),
        }
    }

    /// Records a pair with its new base; a pair replaces any earlier pair of either id on this link.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_pair(
        &mut self,
        p: Pending,
        local_version: Option<i64>,
    ) -> Result<(), StepError> {
        record_pair_at(
            self.ctx.store,
            self.ctx.tenant,
            self.ctx.link.id,
            self.ctx.now,
            &p,
            local_version,
        )
        .await?;
        Ok(())
    }

    /// Drops the pair and leaves a tombstone of the deletion.
    async fn forget_pair(&mut self, local: &LocalId, remote: &RemoteId) -> Result<(), StepError> {
        let uid = self
            .mappings
            .iter()
            .find(|m| &m.remote == remote)
            .map(|m| m.uid.to_string());
        let at = TombstoneAt {
            link: self.ctx.link.id,
            calendar: self.ctx.connection.calendar_id,
            now: self.ctx.now,
            retention: self.ctx.config.tombstone_retention,
        };
        forget_pair(self.ctx.store, self.ctx.tenant, at, local, remote, uid).await?;
        Ok(())
    }

    /// Whether the owner's occurrences may have changed in this run: local edits were read, local
    /// series were written, or everything was listed. A no-op run skips the detection (it costs a
    /// window read of the owner's calendars).
    fn time_may_have_changed(&self) -> bool {
        const LOCAL_WRITES: [&str; 4] = [
            "create_local",
            "update_local",
            "delete_local",
            "copy_remote_as_new_local",
        ];
        self.local_changed
            || self.full_listing
            || LOCAL_WRITES
                .iter()
                .any(|k| self.counts.get(*k).is_some_and(|n| *n > 0))
    }

    /// Time conflicts of the owner after this run (see `time.rs`). A failure is reported; it does not
    /// hold the cursors back (they are already committed). So that nothing it would have found is lost
    /// until the daily full reconciliation, the run marked the link before it began
    /// (`links.time_detection_due`, naming this run, written with the cursors; see `finish`), and
    /// clears the mark only once the detection succeeded: a detection that fails, or a process
    /// killed before or during it, leaves the mark, and the link's next run detects over the owner's
    /// whole window.
    ///
    /// The whole window rather than the series the marking run touched: one nullable column instead
    /// of a stored set of ids that several runs would have to merge, and a superset of whatever the
    /// lost detection (scoped or not) would have decided. It costs one full-window read (bounded like
    /// the daily reconciliation) per lost detection; a detection that keeps failing repeats it every
    /// run and reports its error every run. The mark read is on the link row the caller read before
    /// the run, and the mark written goes in the cursor commit, so a run that does not detect (the
    /// usual no-op) costs no extra store request, and one that does costs the clearing.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn detect_time_conflicts(&mut self) {
        let due = self.ctx.link.time_detection_due;
        // After a run that read a side in full (first, full, or past the stream's retention: no local
        // cursor) every series may have moved; otherwise only the ones this run read as changed or
        // wrote, unless an earlier detection was lost.
        let whole = due.is_some() || self.full_listing || self.local_cursor.is_none();
        let scope = if whole {
            crate::time::Scope::All
        } else {
            crate::time::Scope::Series(std::mem::take(&mut self.touched_local))
        };
        match crate::time::detect(
            self.ctx.store,
            self.ctx.tenant,
            self.ctx.connection,
            self.window,
            self.options.conflicts,
            self.ctx.now,
            &scope,
        )
        .await
        {
            Ok(counts) => {
                for (key, n) in [
                    ("time_conflicts", counts.detected),
                    ("time_conflicts_settled", counts.settled),
                    ("time_conflicts_closed", counts.closed),
                    ("time_conflicts_deferred", counts.deferred),
                ] {
                    if n > 0 {
                        *self.counts.entry(key.into()).or_default() += n;
                    }
                }
                // Clears only this run's mark: one another run wrote after this run read the link
                // (its detection may cover series this one read before they changed) stays due.
                if let Err(e) = self
                    .ctx
                    .store
                    .clear_time_detection_due(self.ctx.tenant, self.ctx.link.id, self.run_id)
                    .await
                {
                    self.error("time", "clear_time_detection_due", e.into());
                }
            }
            // The mark written before the detection stays: the next run makes it up. If even the
            // mark could not be written (the store is down), the daily full reconciliation is what
            // finds the missed conflicts.
            Err(e) => self.error("time", "detect_time_conflicts", e.into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn finish(
        &mut self,
        outcome: Outcome,
        started: Instant,
        traffic: &Traffic,
    ) -> Result<RunReport, EngineError> {
        let store = self.ctx.store;
        let tenant = self.ctx.tenant;
        let link = self.ctx.link;
        // Decided before anything is committed, so that the mark goes with the cursors.
        let detects = matches!(outcome, Outcome::Done { .. } | Outcome::Failed(_))
            && !self.interrupted
            && (self.time_may_have_changed() || link.time_detection_due.is_some());
        let mark = TimeDetectionMark {
            run: self.run_id,
            seen: link.time_detection_due,
        };
        let mut marked = false;
        let status = match outcome {
            Outcome::Suspect(reason) => {
                store
                    .set_link_status(tenant, link.id, LinkStatus::Suspect, Some(&reason))
                    .await?;
                self.suspect = Some(reason);
                RunStatus::Suspect
            }
            Outcome::Failed(e) => {
                self.error("run", "run", e.into());
                RunStatus::Partial
            }
            Outcome::Done { .. } if self.interrupted => RunStatus::Interrupted,
            Outcome::Done {
                remote_cursor,
                local_cursor,
            } => {
                if self.errors.is_empty() {
                    // Every change both cursors cover is committed: only now may they advance.
                    store
                        .set_link_cursors(
                            tenant,
                            link.id,
                            LinkCursors {
                                remote: remote_cursor.as_ref().map(Cursor::as_str),
                                local: Some(local_cursor),
                                full_sync_at: self.full_listing.then_some(self.ctx.now),
                                time_detection_due: detects.then_some(mark),
                            },
                        )
                        .await?;
                    marked = detects;
                    if self.ctx.config.crash_after_cursors {
                        return Err(EngineError::Content(
                            "stopped after committing the cursors (crash test)".into(),
                        ));
                    }
                    if link.status != LinkStatus::Active {
                        store
                            .set_link_status(tenant, link.id, LinkStatus::Active, None)
                            .await?;
                    }
                    RunStatus::Succeeded
                } else {
                    RunStatus::Partial
                }
            }
        };
        if detects && matches!(status, RunStatus::Succeeded | RunStatus::Partial) {
            if !marked {
                // A partial run keeps its cursors, but the next run will not take its own local
                // writes for changes (echoes), so it marks its detection as a committing run does.
                if let Err(e) = store.set_time_detection_due(tenant, link.id, mark).await {
                    self.error("time", "set_time_detection_due", e.into());
                }
            }
            self.detect_time_conflicts().await;
        }
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut counts = self.counts.clone();
        counts.insert("duration_ms".into(), duration_ms);
        let store_status = match status {
            RunStatus::Succeeded => SyncRunStatus::Succeeded,
            RunStatus::Partial => SyncRunStatus::Partial,
            RunStatus::Suspect | RunStatus::Interrupted => SyncRunStatus::Failed,
        };
        let mut errors = self.errors.clone();
        if let Some(reason) = &self.suspect {
            errors.push(RunError {
                item: "listing".into(),
                action: "read".into(),
                class: "suspect".into(),
                cause: reason.clone(),
            });
        }
        let requests = traffic.requests();
        let bytes = traffic.bytes();
        if self.own_run {
            store
                .update_sync_run(
                    tenant,
                    self.run_id,
                    SyncRunUpdate {
                        status: store_status,
                        counts_json: to_json(&counts)?,
                        requests: i64::try_from(requests).unwrap_or(i64::MAX),
                        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                        errors_json: to_json(&errors)?,
                        finished_at: Some(Timestamp::now()),
                    },
                )
                .await?;
        }
        counts.remove("duration_ms");
        Ok(RunReport {
            run_id: self.run_id,
            status,
            counts,
            errors: self.errors.clone(),
            requests,
            bytes,
            suspect_reason: self.suspect.clone(),
            full_listing: self.full_listing,
            duration_ms,
        })
    }
}

/// Whether the run's local changes hold one of `id`.
fn has_change(local_changes: &[LocalChange], id: &LocalId) -> bool {
    local_changes.iter().any(|change| change.id() == id)
}

fn item_content(parsed: &Parsed) -> Result<ItemContent, StepError> {
    ItemContent::from_calendar(parsed.calendar.clone()).map_err(StepError::from)
}

/// The series `ids` names that `keep` accepts, read by id a page at a time.
async fn series_named(
    store: &dyn Store,
    tenant: TenantId,
    ids: &[SeriesId],
    keep: fn(&calbridge_store::Series) -> bool,
) -> Result<Vec<calbridge_store::Series>, EngineError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(SERIES_PAGE as usize) {
        out.extend(
            store
                .get_series_many(tenant, chunk)
                .await?
                .into_iter()
                .filter(keep),
        );
    }
    Ok(out)
}
