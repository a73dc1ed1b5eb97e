//! The provider's question "which versions of these items do you hold?" ([`HeldVersions`]), answered
//! from the link's stored pairs as a listing names them: an incremental round of ten changes in a
//! 100,000-event mailbox reads ten pairs, not 100,000 (a complete listing still reads them all). The
//! pairs read are handed back to the run, whose plan needs the same ones. "Which series hold these
//! occurrences?" is answered from the occurrence ids the provider reported of its series
//! ([`remember_occurrences`]), so a removed Graph occurrence re-reads its own series only; a removed id
//! no series holds re-reads only the series whose occurrences were never reported (the pairs the store
//! does not flag as remembered), not every series of the link.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use calbridge_providers::{
    Etag, HeldVersions, KnownVersions, ProviderError, RemoteId as ProviderRemoteId,
};
use calbridge_store::{ItemMapping, LinkId, MappingId, SeriesOccurrenceIds, Store, TenantId};
use calbridge_sync::{LocalId, Mapping, RemoteId, RemoteVersion};

use crate::pairs::{StoredBase, stored_base};

/// A stored row as the plan sees it: a pair of a local series and a remote item with a readable
/// base. Write-ahead rows of creates (one side unknown) and rows whose base cannot be read are not.
pub(crate) fn linked_pair(m: ItemMapping) -> Option<Mapping> {
    let base = stored_base(&m)?;
    pair_of(&m, base)
}

/// The pair of a row whose base was read: `None` for a write-ahead row of a create (one side unknown).
pub(crate) fn pair_of(m: &ItemMapping, base: StoredBase) -> Option<Mapping> {
    let (Some(series), Some(version)) = (m.series_id, &m.remote_version) else {
        return None;
    };
    Some(Mapping {
        uid: base.uid,
        local: LocalId::new(series.to_string()),
        remote: RemoteId::new(m.remote_id.clone()),
        remote_version: RemoteVersion::new(version.clone()),
        base: base.state,
    })
}

/// The version a provider compares with what it lists: the remote version of a linked pair.
pub(crate) fn held_version(pair: &Mapping) -> Option<(ProviderRemoteId, Etag)> {
    let id = ProviderRemoteId::parse(pair.remote.as_str()).ok()?;
    let etag = Etag::parse(pair.remote_version.as_str()).ok()?;
    Some((id, etag))
}

/// What the provider's questions read, for the run to take over.
#[derive(Default)]
pub(crate) struct PairsRead {
    /// Every row read (by id), with its pair when it is a linked one.
    pub rows: Vec<(MappingId, Option<Mapping>)>,
    /// The remote ids asked about (their pairs, if any, are among `rows`).
    pub asked: Vec<String>,
    /// Whether every pair of the link was read (a complete listing asked for all).
    pub all: bool,
}

/// [`HeldVersions`] over a link's stored pairs, keeping what it reads.
pub(crate) struct PairVersions<'a> {
    store: &'a dyn Store,
    tenant: TenantId,
    link: LinkId,
    read: Mutex<PairsRead>,
}

impl<'a> PairVersions<'a> {
    pub(crate) fn new(store: &'a dyn Store, tenant: TenantId, link: LinkId) -> Self {
        Self {
            store,
            tenant,
            link,
            read: Mutex::new(PairsRead::default()),
        }
    }

    pub(crate) fn into_read(self) -> PairsRead {
        self.read
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `rows` for the run and answers with the versions of their linked pairs.
    fn keep(&self, rows: Vec<ItemMapping>, asked: Vec<String>, all: bool) -> KnownVersions {
        let rows: Vec<(MappingId, Option<Mapping>)> =
            rows.into_iter().map(|m| (m.id, linked_pair(m))).collect();
        let known = rows
            .iter()
            .filter_map(|(_, pair)| held_version(pair.as_ref()?))
            .collect();
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        read.rows.extend(rows);
        read.asked.extend(asked);
        read.all |= all;
        known
    }
}

fn held_error(e: calbridge_store::StoreError) -> ProviderError {
    ProviderError::Held {
        detail: e.to_string(),
    }
}

#[async_trait]
impl HeldVersions for PairVersions<'_> {
    async fn of(&self, ids: &[ProviderRemoteId]) -> Result<KnownVersions, ProviderError> {
        let names: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        if names.is_empty() {
            return Ok(KnownVersions::new());
        }
        let rows = self
            .store
            .mappings_naming(self.tenant, self.link, &names, &[])
            .await
            .map_err(held_error)?;
        Ok(self.keep(rows, names, false))
    }

    async fn all(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        let rows = self
            .store
            .list_mappings(self.tenant, self.link)
            .await
            .map_err(held_error)?;
        Ok(Cow::Owned(self.keep(rows, Vec::new(), true)))
    }

    async fn occurrences_unknown(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        let rows = self
            .store
            .mappings_with_unknown_occurrences(self.tenant, self.link)
            .await
            .map_err(held_error)?;
        let names = rows.iter().map(|m| m.remote_id.clone()).collect();
        Ok(Cow::Owned(self.keep(rows, names, false)))
    }

    async fn series_of(
        &self,
        occurrences: &[ProviderRemoteId],
    ) -> Result<HashMap<ProviderRemoteId, ProviderRemoteId>, ProviderError> {
        let names: Vec<String> = occurrences
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect();
        let rows = self
            .store
            .series_of_remote_occurrences(self.tenant, self.link, &names)
            .await
            .map_err(held_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(occurrence, series)| {
                Some((
                    ProviderRemoteId::parse(occurrence).ok()?,
                    ProviderRemoteId::parse(series).ok()?,
                ))
            })
            .collect())
    }
}

/// [`HeldVersions`] of a run that read every pair up front (a first or full run): the versions from
/// that map, what the pairs remember of occurrences from the store ([`PairVersions`]), so a complete
/// listing reports only the singles whose occurrences are not remembered yet, not all of them.
pub(crate) struct ReadPairVersions<'a> {
    known: &'a KnownVersions,
    pairs: &'a PairVersions<'a>,
}

impl<'a> ReadPairVersions<'a> {
    pub(crate) fn new(known: &'a KnownVersions, pairs: &'a PairVersions<'a>) -> Self {
        Self { known, pairs }
    }
}

#[async_trait]
impl HeldVersions for ReadPairVersions<'_> {
    async fn of(&self, ids: &[ProviderRemoteId]) -> Result<KnownVersions, ProviderError> {
        self.known.of(ids).await
    }

    async fn all(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        Ok(Cow::Borrowed(self.known))
    }

    async fn occurrences_unknown(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        self.pairs.occurrences_unknown().await
    }

    async fn series_of(
        &self,
        occurrences: &[ProviderRemoteId],
    ) -> Result<HashMap<ProviderRemoteId, ProviderRemoteId>, ProviderError> {
        self.pairs.series_of(occurrences).await
    }
}

/// Stores the occurrence ids a listing reported of its series (`ChangeSet::series_occurrences`), in
/// place of those stored before, once the run's pairs are recorded: only series with a pair are kept,
/// and their rows go with the pair.
pub(crate) async fn remember_occurrences(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    series: &BTreeMap<ProviderRemoteId, Vec<ProviderRemoteId>>,
) -> Result<(), calbridge_store::StoreError> {
    let series: Vec<SeriesOccurrenceIds> = series
        .iter()
        .map(|(id, occurrences)| SeriesOccurrenceIds {
            remote_id: id.as_str().to_owned(),
            occurrence_ids: occurrences.iter().map(|o| o.as_str().to_owned()).collect(),
        })
        .collect();
    store
        .replace_remote_occurrences(tenant, link, &series)
        .await
}
