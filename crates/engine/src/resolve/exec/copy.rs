//! The `keep_both` copy: saved locally before the provider's item is overwritten (or, for identity
//! `keep_both`, deleted), adopted when resuming, removed again when the overwrite is refused.

use calbridge_sync::Uid;
use calbridge_sync::resolve::copy_uid;

use crate::local::{Parsed, calendar_with, with_uid};

use super::Exec;
use crate::resolve::ResolveFailure;

impl Exec<'_> {
    /// The provider's version under the UID `keep_both` (and identity `keep_both`) give its copy.
    pub(super) async fn remote_copy(&self) -> Result<(Parsed, String), ResolveFailure> {
        let remote_id = self.recorded_remote_id()?;
        if let Some(remote) = &self.remote_now {
            let uid = copy_uid(
                &Uid::new(remote.series.uid()),
                &self.link.id.to_string(),
                &remote_id,
                &remote.state(&self.floating).snapshot,
            );
            let copy = Parsed::from_calendar(calendar_with(
                with_uid(&remote.series, &uid)?,
                &[&remote.calendar],
            ))?;
            return Ok((copy, uid));
        }
        // Resuming after the provider's item was overwritten (`keep_both`) or deleted (identity
        // `keep_both`): the copy was saved locally before either, under the UID of the version the
        // conflict recorded.
        let uid = self.recorded_copy_uid()?;
        let row = self
            .store
            .get_series_by_uid(self.tenant, self.local_calendar, &uid)
            .await?
            .filter(|row| row.deleted_at.is_none())
            .ok_or(ResolveFailure::Changed("local"))?;
        Ok((Parsed::from_stored(&row)?, uid))
    }

    /// The UID of the `keep_both` copy of the provider's version the conflict recorded.
    pub(super) fn recorded_copy_uid(&self) -> Result<String, ResolveFailure> {
        let recorded = self
            .recorded_remote
            .as_ref()
            .ok_or(ResolveFailure::Changed("remote"))?;
        Ok(copy_uid(
            &Uid::new(&self.conflict.event_uid),
            &self.link.id.to_string(),
            &self.recorded_remote_id()?,
            &recorded.snapshot,
        ))
    }

    /// Saves the `keep_both` copy locally (or adopts the one an interrupted resolution saved).
    pub(super) async fn save_copy(&mut self) -> Result<(), ResolveFailure> {
        let (copy, uid) = self.remote_copy().await?;
        let existed = self
            .store
            .get_series_by_uid(self.tenant, self.local_calendar, &uid)
            .await?
            .is_some();
        let row = self.create_local(&copy).await?;
        if !existed {
            self.saved_copy = Some(row);
        }
        Ok(())
    }

    /// Best effort: a copy saved for an overwrite the provider refused goes again (`true` when it went).
    pub(super) async fn drop_saved_copy(&mut self) -> bool {
        let Some(row) = self.saved_copy.take() else {
            return false;
        };
        match self
            .store
            .delete_series(self.tenant, row.id, row.version)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(series = %row.id, error = %e, "could not remove the keep_both copy of a refused resolution");
                false
            }
        }
    }
}
