//! Versions held, answered from a map, recording what a listing asked: an incremental round must ask
//! only about the items it names, and only a full listing about all of them.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use calbridge_providers::{HeldVersions, KnownVersions, ProviderError, RemoteId};

pub struct Asked {
    held: KnownVersions,
    named: Mutex<BTreeSet<String>>,
    all: AtomicUsize,
}

impl Asked {
    pub fn new(held: KnownVersions) -> Self {
        Self {
            held,
            named: Mutex::new(BTreeSet::new()),
            all: AtomicUsize::new(0),
        }
    }

    /// The ids asked about by name.
    pub fn named(&self) -> BTreeSet<String> {
        self.named.lock().unwrap().clone()
    }

    /// How many times every version was asked for.
    pub fn all_asked(&self) -> usize {
        self.all.load(Ordering::SeqCst)
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
}
