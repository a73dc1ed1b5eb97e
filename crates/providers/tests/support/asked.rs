//! Versions held, answered from a map, recording what a listing asked: an incremental round must ask
//! only about the items it names, and only a full listing about all of them. It may also remember the
//! occurrences of series a listing reported (as the sync engine does), and records which occurrence
//! ids were asked about and how often the items whose occurrences it does not remember were.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use calbridge_providers::{HeldVersions, KnownVersions, ProviderError, RemoteId};

pub struct Asked {
    held: KnownVersions,
    /// Occurrence id → series id.
    occurrences: HashMap<RemoteId, RemoteId>,
    named: Mutex<BTreeSet<String>>,
    occurrences_named: Mutex<BTreeSet<String>>,
    all: AtomicUsize,
    unknown: AtomicUsize,
    /// The items whose occurrences are remembered (an empty list included).
    remembered: BTreeSet<RemoteId>,
}

impl Asked {
    /// Holds `held` and remembers no occurrence.
    pub fn new(held: KnownVersions) -> Self {
        Self::remembering(held, &BTreeMap::new())
    }

    /// Holds `held` and remembers the occurrences of `series` (a `ChangeSet::series_occurrences`);
    /// those of the other items held are not remembered.
    pub fn remembering(held: KnownVersions, series: &BTreeMap<RemoteId, Vec<RemoteId>>) -> Self {
        Self {
            held,
            occurrences: series
                .iter()
                .flat_map(|(s, occurrences)| occurrences.iter().map(|o| (o.clone(), s.clone())))
                .collect(),
            named: Mutex::new(BTreeSet::new()),
            occurrences_named: Mutex::new(BTreeSet::new()),
            all: AtomicUsize::new(0),
            unknown: AtomicUsize::new(0),
            remembered: series.keys().cloned().collect(),
        }
    }

    /// The occurrence ids asked about (`series_of`).
    pub fn occurrences_named(&self) -> BTreeSet<String> {
        self.occurrences_named.lock().unwrap().clone()
    }

    /// The ids asked about by name.
    pub fn named(&self) -> BTreeSet<String> {
        self.named.lock().unwrap().clone()
    }

    /// How many times every version was asked for.
    pub fn all_asked(&self) -> usize {
        self.all.load(Ordering::SeqCst)
    }

    /// How many times the versions of the items whose occurrences are not remembered were asked for.
    pub fn unknown_asked(&self) -> usize {
        self.unknown.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl HeldVersions for Asked {
    async fn of(&self, ids: &[RemoteId]) -> Result<KnownVersions, ProviderError> {
        self.named
            .lock()
            .unwrap()
            .extend(ids.iter().map(|id| id.as_str().to_owned()));
        self.held.of(ids).await
    }

    async fn all(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        self.all.fetch_add(1, Ordering::SeqCst);
        Ok(Cow::Borrowed(&self.held))
    }

    async fn occurrences_unknown(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        self.unknown.fetch_add(1, Ordering::SeqCst);
        Ok(Cow::Owned(
            self.held
                .iter()
                .filter(|(id, _)| !self.remembered.contains(*id))
                .map(|(id, etag)| (id.clone(), etag.clone()))
                .collect(),
        ))
    }

    async fn series_of(
        &self,
        occurrences: &[RemoteId],
    ) -> Result<HashMap<RemoteId, RemoteId>, ProviderError> {
        self.occurrences_named
            .lock()
            .unwrap()
            .extend(occurrences.iter().map(|id| id.as_str().to_owned()));
        Ok(occurrences
            .iter()
            .filter_map(|o| Some((o.clone(), self.occurrences.get(o)?.clone())))
            .collect())
    }
}
