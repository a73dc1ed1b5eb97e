//! The writes the steps are made of, each read back, and the provider read they use.

use calbridge_providers::{
    Etag, ItemContent, ProviderError, ReadItem, RemoteId as ProviderRemoteId,
};
use calbridge_store::Series;
use calbridge_sync::{LocalId, RemoteId, RemoteVersion, Uid};
use serde_json::json;

use crate::local::{Parsed, storable};
use crate::pairs::{PENDING_CREATE, StoredBase, create_key, series_id, write_ahead};

use super::Exec;
use crate::resolve::ResolveFailure;
use crate::resolve::failure::{content_error, provider_error};

impl Exec<'_> {
    pub(super) async fn read(
        &self,
        id: &ProviderRemoteId,
    ) -> Result<Option<(Etag, Parsed)>, ResolveFailure> {
        let items = self
            .provider
            .read(&self.calendar, std::slice::from_ref(id))
            .await
            .map_err(ResolveFailure::Provider)?;
        match items.into_iter().next() {
            Some(ReadItem::Found(item)) => {
                let parsed = Parsed::from_calendar(item.content.calendar().clone())?;
                Ok(Some((item.etag, parsed)))
            }
            Some(ReadItem::Missing(_)) | None => Ok(None),
            Some(ReadItem::Failed(_, why)) => {
                Err(ResolveFailure::Provider(ProviderError::Protocol {
                    detail: format!("the item cannot be read: {why}"),
                }))
            }
        }
    }

    /// Writes `parsed` over the provider's item with `If-Match`, reads it back and returns its version.
    pub(super) async fn write_remote(
        &mut self,
        id: &ProviderRemoteId,
        parsed: &Parsed,
        check_uid: bool,
    ) -> Result<RemoteVersion, ResolveFailure> {
        let content = ItemContent::from_calendar(parsed.calendar.clone()).map_err(content_error)?;
        let etag = self.etag()?;
        self.provider
            .update(&self.calendar, id, &etag, &content)
            .await
            .map_err(provider_error)?;
        self.wrote()?;
        self.read_back_remote(id, parsed, check_uid).await
    }

    pub(super) async fn read_back_remote(
        &mut self,
        id: &ProviderRemoteId,
        parsed: &Parsed,
        check_uid: bool,
    ) -> Result<RemoteVersion, ResolveFailure> {
        let Some((etag, back)) = self.read(id).await? else {
            return Err(ResolveFailure::ReadBack(format!(
                "{} is gone after the write",
                id.as_str()
            )));
        };
        let want = parsed.state(&self.floating).snapshot;
        if back.state(&self.floating).snapshot != want
            || (check_uid && back.series.uid() != parsed.series.uid())
        {
            return Err(ResolveFailure::ReadBack(format!(
                "{} does not hold what was written",
                id.as_str()
            )));
        }
        self.confirmed.push(
            json!({"side": "remote", "id": id.as_str(), "etag": etag.as_str(), "uid": back.series.uid()}),
        );
        Ok(RemoteVersion::new(etag.as_str()))
    }

    /// Creates a local series (or adopts a live one with the UID and the same content).
    pub(super) async fn create_local(&mut self, parsed: &Parsed) -> Result<Series, ResolveFailure> {
        let s = storable(&parsed.calendar, &self.floating)?;
        if let Some(row) = self
            .store
            .get_series_by_uid(self.tenant, self.local_calendar, &s.uid)
            .await?
        {
            let same = Parsed::from_stored(&row).is_ok_and(|p| {
                p.state(&self.floating).snapshot == parsed.state(&self.floating).snapshot
            });
            if !same {
                return Err(ResolveFailure::Changed("local"));
            }
            return Ok(row);
        }
        let hash = s.hash.clone();
        let row = self
            .store
            .create_series(self.tenant, s.into_new(self.local_calendar))
            .await?;
        self.wrote()?;
        let back = self.store.get_series(self.tenant, row.id).await?;
        if back.hash != hash || back.deleted_at.is_some() {
            return Err(ResolveFailure::ReadBack(
                "the created series differs".into(),
            ));
        }
        self.confirmed.push(
            json!({"side": "local", "series_id": row.id.to_string(), "version": back.version, "uid": back.uid}),
        );
        Ok(row)
    }

    /// Creates the series on the provider (idempotent key of the link and the series), reads it back.
    pub(super) async fn create_remote(
        &mut self,
        local: &LocalId,
        parsed: &Parsed,
    ) -> Result<(RemoteId, RemoteVersion), ResolveFailure> {
        let content = ItemContent::from_calendar(parsed.calendar.clone()).map_err(content_error)?;
        let key = create_key(self.link.id, local);
        // The sync run's own write-ahead row of a remote create: a process killed after the create
        // leaves the next sync pairing the item it finds instead of taking it for a stranger's.
        write_ahead(
            self.store,
            self.tenant,
            self.link.id,
            self.now,
            &format!("{PENDING_CREATE}{}", key.as_str()),
            Some(series_id(local)?),
            None,
            &StoredBase {
                uid: Uid::new(parsed.series.uid()),
                state: parsed.state(&self.floating),
                intent: None,
                earlier: None,
            },
        )
        .await?;
        let written = self
            .provider
            .create(&self.calendar, &key, &content)
            .await
            .map_err(provider_error)?;
        self.wrote()?;
        let version = self.read_back_remote(&written.id, parsed, true).await?;
        Ok((RemoteId::new(written.id.as_str()), version))
    }

    /// Deletes a provider item with `If-Match` and confirms it is gone.
    pub(super) async fn delete_remote_item(
        &mut self,
        id: &RemoteId,
        etag: &Etag,
    ) -> Result<(), ResolveFailure> {
        let id = ProviderRemoteId::parse(id.as_str()).map_err(provider_error)?;
        match self.provider.delete(&self.calendar, &id, etag).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(provider_error(e)),
        }
        self.wrote()?;
        if self.read(&id).await?.is_some() {
            return Err(ResolveFailure::ReadBack(format!(
                "{} is still there after the delete",
                id.as_str()
            )));
        }
        self.confirmed
            .push(json!({"side": "remote", "id": id.as_str(), "deleted": true}));
        Ok(())
    }
}
