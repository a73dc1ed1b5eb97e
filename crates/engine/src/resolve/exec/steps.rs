//! One step of the plan, carried out (or, resuming, confirmed as made by the interrupted attempt).

use calbridge_providers::Etag;
use calbridge_store::ConflictKind as StoreConflictKind;
use calbridge_sync::resolve::{Step, Version};
use calbridge_sync::{LocalId, RemoteId, RemoteVersion, Uid};
use serde_json::json;

use crate::local::{Parsed, calendar_with, storable, with_uid};
use crate::pairs::{Intent, IntentSide, Pending, StoredBase, forget_pair, write_ahead};

use super::Exec;
use crate::resolve::ResolveFailure;
use crate::resolve::failure::{local_error, provider_error};

impl Exec<'_> {
    pub(super) async fn apply(&mut self, step: &Step) -> Result<(), ResolveFailure> {
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
