//! Before anything is written: both sides read and compared with what the conflict recorded (or,
//! resuming, found holding what this resolution writes there).

use calbridge_providers::RemoteId as ProviderRemoteId;
use calbridge_sync::resolve::{Recorded, SETTABLE, Step, Version};
use calbridge_sync::{ItemState, RemoteVersion};

use crate::local::{Parsed, calendar_with, storable};

use super::Exec;
use crate::resolve::ResolveFailure;
use crate::resolve::failure::{content_error, provider_error};

impl Exec<'_> {
    /// Both sides must still be what the conflict recorded; otherwise nothing is written. When
    /// resuming an interrupted resolution of the same decision, a side may instead hold what this
    /// resolution writes there, or be gone where it deletes: that step was done (`remote_written`,
    /// `local_written`, `remote_deleted`, `local_deleted`, `other_deleted`) and is not done again.
    pub(in crate::resolve) async fn check(
        &mut self,
        recorded: &Recorded<'_>,
        plan: &[Step],
    ) -> Result<(), ResolveFailure> {
        self.recorded_remote = recorded.remote.cloned();
        self.other = plan.iter().find_map(|step| match step {
            Step::RelinkAndDeleteOther(other) => Some(other.clone()),
            _ => None,
        });
        let remote_current = match self.remote_id {
            Some(_) => Some(self.read(&self.remote_id()?).await?),
            None => None,
        };
        if let Some(Some((_, parsed))) = &remote_current {
            self.remote_now = Some(parsed.clone());
        }
        if let Some(series) = self.conflict.series_id {
            let row = self.store.get_series(self.tenant, series).await?;
            if row.deleted_at.is_none() {
                self.local_now = Some(Parsed::from_stored(&row)?);
            }
            self.local_row = Some(row);
        }
        // The merged version, composed once from the versions read (both sides get the same).
        // Composed from a side that already holds it, it comes out the same, so a resumed `merge`
        // finds it on the side its first attempt wrote.
        let compose = |exec: &mut Self| -> Result<(), ResolveFailure> {
            for step in plan {
                if let Step::WriteRemote(Version::Merged(m)) | Step::WriteLocal(Version::Merged(m)) =
                    step
                    && exec.merged.is_none()
                {
                    exec.merged = Some(exec.compose_merged(m)?);
                }
            }
            Ok(())
        };
        if self.resuming {
            compose(self)?;
        }

        if self.local_row.is_some() {
            let now = self.local_now.as_ref().map(|p| p.state(&self.floating));
            let as_recorded = match (recorded.local, &now) {
                (Some(state), Some(now)) => state == now,
                (None, None) => true,
                _ => false,
            };
            if !as_recorded {
                let target = plan.iter().find_map(|step| match step {
                    Step::WriteLocal(v) => Some(Some(v)),
                    Step::DeleteLocal => Some(None),
                    _ => None,
                });
                match (target, &now) {
                    (Some(Some(v)), Some(now)) if self.resuming && self.holds(v, recorded, now) => {
                        self.local_written = true;
                    }
                    (Some(None), None) if self.resuming && recorded.local.is_some() => {
                        self.local_deleted = true;
                    }
                    _ => return Err(ResolveFailure::Changed("local")),
                }
            }
        }
        if let Some(current) = remote_current {
            let expected = self.remote_version.as_ref().map(RemoteVersion::as_str);
            let as_recorded = match (recorded.remote, &current) {
                (Some(_), Some((etag, _))) => expected == Some(etag.as_str()),
                (None, None) => true,
                _ => false,
            };
            if !as_recorded {
                let target = plan.iter().find_map(|step| match step {
                    Step::WriteRemote(v) => Some(Some(v)),
                    Step::DeleteRemote | Step::RenameRemoteAsNew => Some(None),
                    _ => None,
                });
                match (target, current) {
                    (Some(Some(v)), Some((etag, parsed)))
                        if self.resuming
                            && self.holds(v, recorded, &parsed.state(&self.floating)) =>
                    {
                        self.remote_written = Some(etag);
                        // Not the provider's recorded version any more: nothing is made of it.
                        self.remote_now = None;
                    }
                    (Some(None), None) if self.resuming && recorded.remote.is_some() => {
                        self.remote_deleted = true;
                    }
                    _ => return Err(ResolveFailure::Changed("remote")),
                }
            }
        }
        // Identity `keep_remote` deletes the item the series was linked to: it must be unchanged too
        // (or, resuming, already gone).
        if let Some(other) = self.other.clone() {
            let id = ProviderRemoteId::parse(other.as_str()).map_err(provider_error)?;
            let current = self.read(&id).await?;
            let linked = self
                .store
                .get_mapping(self.tenant, self.link.id, other.as_str())
                .await?
                .and_then(|m| m.remote_version);
            match (current, linked) {
                (Some((etag, _)), Some(version)) if etag.as_str() == version => {}
                (None, _) if self.resuming => self.other_deleted = true,
                _ => return Err(ResolveFailure::Changed("remote")),
            }
        }
        if !self.resuming {
            compose(self)?;
        }
        Ok(())
    }

    /// Whether `now` is what this resolution writes as `v` (resuming: that write was made).
    pub(super) fn holds(&self, v: &Version, recorded: &Recorded<'_>, now: &ItemState) -> bool {
        let written = match v {
            Version::Local => recorded.local.map(|s| s.snapshot.clone()),
            Version::Remote => recorded.remote.map(|s| s.snapshot.clone()),
            Version::Merged(_) => self
                .merged
                .as_ref()
                .map(|m| m.state(&self.floating).snapshot),
        };
        written.as_ref() == Some(&now.snapshot)
    }

    pub(super) fn compose_merged(
        &self,
        m: &calbridge_sync::resolve::MergedVersion,
    ) -> Result<Parsed, ResolveFailure> {
        let (l, r) = (self.local()?, self.remote()?);
        let merged = calbridge_sync::series::compose(&l.series, &r.series, &m.from_remote)
            .map_err(content_error)?;
        let text: Vec<&str> = SETTABLE
            .iter()
            .filter(|(_, text)| *text)
            .map(|(name, _)| *name)
            .collect();
        let merged = calbridge_sync::series::with_values(&merged, &m.values, &text)
            .map_err(content_error)?;
        let parsed = Parsed::from_calendar(calendar_with(merged, &[&l.calendar, &r.calendar]))?;
        // It must be storable (expandable) before anything is written.
        storable(&parsed.calendar, &self.floating).map_err(content_error)?;
        Ok(parsed)
    }
}
