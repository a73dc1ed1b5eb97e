//! The read cache behind `optimizations.cache_ttl`: successful answers to requests a provider marks
//! cacheable, kept for the configured time. Today that is CalDAV discovery (principal, calendar home)
//! and the calendar list; change listings and item reads are never cached, because a sync must see
//! changes at its own frequency.
//!
//! It is process-wide, so it outlives the per-run provider instances and the per-request HTTP clients
//! of the API. Entries are keyed by a SHA-256 over the provider, the credentials' identity (never the
//! secret itself), the method, the URL, the caller's headers and the body; a request with credentials
//! whose identity cannot be told (a refreshing OAuth source) is never cached. At most
//! [`MAX_ENTRIES`] answers are kept; a full cache drops expired entries, then the oldest.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Request, Response};

pub const MAX_ENTRIES: usize = 1024;

type Key = [u8; 32];

fn entries() -> &'static Mutex<HashMap<Key, (Instant, Response)>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, (Instant, Response)>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(super) fn key(provider: &str, who: &[u8; 32], request: &Request) -> Key {
    let mut hash = Sha256::new();
    for part in [
        provider.as_bytes(),
        who.as_slice(),
        request.method.as_str().as_bytes(),
        request.url.as_str().as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let mut headers: Vec<(&str, &[u8])> = request
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    headers.sort();
    for (name, value) in headers {
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
    }
    let body = request.body.as_deref().unwrap_or_default();
    hash.update((body.len() as u64).to_be_bytes());
    hash.update(body);
    hash.finalize().into()
}

pub(super) fn get(key: &Key, ttl: Duration) -> Option<Response> {
    let entries = entries().lock().ok()?;
    let (at, response) = entries.get(key)?;
    (at.elapsed() < ttl).then(|| Response {
        requests: 0,
        ..response.clone()
    })
}

pub(super) fn put(key: Key, response: &Response) {
    let Ok(mut entries) = entries().lock() else {
        return;
    };
    if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
        // Full: drop the older half (expired entries are among them).
        let mut ages: Vec<(Instant, Key)> = entries.iter().map(|(k, (at, _))| (*at, *k)).collect();
        ages.sort();
        for (_, old) in ages.into_iter().take(MAX_ENTRIES / 2) {
            entries.remove(&old);
        }
    }
    entries.insert(key, (Instant::now(), response.clone()));
}
