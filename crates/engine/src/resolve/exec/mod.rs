//! Carrying a checked plan out on both sides: the state of one resolution ([`Exec`]), opened on
//! the conflict's link; [`Exec::check`] compares both sides with what the conflict recorded, the
//! steps ([`Exec::apply`]) are made of the writes in `writes` (each read back) and of the
//! `keep_both` copy's handling in `copy`.

mod check;
mod copy;
mod steps;
mod writes;

use calbridge_providers::{
    CalendarId as RemoteCalendarId, CalendarProvider, Etag, RemoteId as ProviderRemoteId,
};
use calbridge_store::{Conflict, ConflictKind as StoreConflictKind, Link, Series, Store, TenantId};
use calbridge_sync::resolve::{Step, Version};
use calbridge_sync::{ItemState, LocalId, RemoteId, RemoteVersion};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

use crate::local::Parsed;
use crate::pairs::{Intent, Pending, StoredBase, TombstoneAt, write_ahead};
use crate::{EngineConfig, EngineError};

use super::failure::{content_error, provider_error};
use super::{Resolve, ResolveFailure};

/// The state of one resolution being carried out.
pub(super) struct Exec<'a> {
    store: &'a dyn Store,
    provider: &'a dyn CalendarProvider,
    tenant: TenantId,
    config: &'a EngineConfig,
    now: Timestamp,
    pub(super) link: Link,
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
    pub(super) pending: Vec<Pending>,
    pub(super) confirmed: Vec<Value>,
    /// Writes made so far that stay (provider and local; a `keep_both` copy removed again is not one),
    /// counted for the test-only crash knob.
    pub(super) writes: usize,
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
    pub(super) async fn open(
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
    pub(super) async fn carry_out(&mut self, plan: &[Step]) -> Result<(), ResolveFailure> {
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
}
