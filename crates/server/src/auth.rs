//! Authentication (`Authorization: Bearer <key>`) and authorization (one scope per route), as extractors:
//! a handler that takes `Authorized<EventsWrite>` cannot run without a valid key carrying that scope, and
//! every store call it makes is bounded to the key's tenant.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use calbridge_store::{ApiKey, ApiKeyId, TenantId};

use crate::AppState;
use crate::error::ApiError;
use crate::keys::{PresentedKey, Scope};

/// The caller, once its key is checked.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    /// The public key id, used as the actor in the audit log (`key:<id>`).
    pub key_prefix: String,
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_prefix)
    }
}

/// A type-level scope, so a route's requirement is written once, in its signature.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

macro_rules! scope_marker {
    ($($name:ident => $scope:expr),* $(,)?) => {$(
        #[derive(Debug)]
        pub struct $name;
        impl RequiredScope for $name {
            const SCOPE: Scope = $scope;
        }
    )*};
}

scope_marker! {
    EventsRead => Scope::EventsRead,
    EventsWrite => Scope::EventsWrite,
    ConnectionsManage => Scope::ConnectionsManage,
    ConflictsResolve => Scope::ConflictsResolve,
    Admin => Scope::Admin,
}

/// A principal proven to hold scope `S`.
#[derive(Debug)]
pub struct Authorized<S: RequiredScope>(pub Principal, PhantomData<S>);

impl<S: RequiredScope> Authorized<S> {
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state).await?;
        if !principal.scopes.contains(&S::SCOPE) {
            return Err(ApiError::MissingScope(S::SCOPE.as_str()));
        }
        Ok(Authorized(principal, PhantomData))
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthenticated(
                "no API key; send `Authorization: Bearer <key>` (create one with `calbridge keys create`)".into(),
            )
        })?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not readable text".into()))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::Unauthenticated("use the Bearer scheme: `Authorization: Bearer <key>`".into())
        })?
        .trim();
    let invalid = || ApiError::Unauthenticated("invalid or revoked API key".into());
    let presented = PresentedKey::parse(token).map_err(|_| invalid())?;
    let key = match state.keys.get(presented.id.as_str()) {
        Some(key) => key,
        None => {
            let generation = state.keys.generation();
            let stored = state
                .store
                .find_api_key_by_prefix(presented.id.as_str())
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(invalid)?;
            state.keys.put(stored, generation)
        }
    };
    // The secret is checked on every request, cached or not: the cache saves the lookup, never the check.
    if key.revoked || !presented.matches(&key.secret_hash) {
        return Err(invalid());
    }
    // Rate limiting comes after authentication so an attacker cannot drain someone else's bucket.
    if let Err(wait) = state.limiter.check(&key.prefix) {
        return Err(ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    // `last_used_at` tells operators which keys are dead; minute precision is plenty, so write it at
    // most every five minutes per key and off the request's path.
    let now = jiff::Timestamp::now();
    if state.keys.claim_touch(&key, now) {
        let store = std::sync::Arc::clone(&state.store);
        let (tenant, id) = (key.tenant, key.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(tenant, id, now).await {
                tracing::warn!(error = %e, "could not record API key use");
            }
        });
    }
    Ok(Principal {
        tenant: key.tenant,
        key_prefix: key.prefix.clone(),
        scopes: key.scopes.clone(),
    })
}

/// A key as authentication needs it, scopes parsed once.
#[derive(Debug)]
pub struct VerifiedKey {
    pub id: ApiKeyId,
    pub tenant: TenantId,
    pub prefix: String,
    secret_hash: String,
    pub scopes: BTreeSet<Scope>,
    pub revoked: bool,
    /// When `last_used_at` was last written (ms since the epoch; 0 = never).
    last_used_ms: AtomicI64,
    fetched: Instant,
}

/// How often `last_used_at` is written per key.
const TOUCH_EVERY_MS: i64 = 5 * 60 * 1000;
/// Past this many cached keys the cache starts over (it only ever holds keys that exist).
const MAX_CACHED_KEYS: usize = 10_000;

/// Keys read from the store in the last `ttl`, by prefix, so a client's requests do not each cost a
/// database lookup. Only keys that exist are cached (an unknown prefix always reaches the store), the
/// secret is still compared on every request, a revocation through this process's API drops the entry
/// at once ([`KeyCache::forget`]), and one made elsewhere (another node, `calbridge keys revoke`) takes
/// effect within `ttl`. A zero `ttl` turns the cache off.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<VerifiedKey>>>,
    /// Bumped by every [`KeyCache::forget`]: a lookup that started before a revocation must not cache
    /// what it read.
    generation: AtomicU64,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Take this before reading a key from the store and hand it to [`KeyCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<VerifiedKey>>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            // Only whole entries are ever inserted; a poisoned map is still consistent.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The cached key for `prefix` if it was read less than `ttl` ago.
    pub fn get(&self, prefix: &str) -> Option<Arc<VerifiedKey>> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.lock();
        let key = entries.get(prefix)?;
        if key.fetched.elapsed() < self.ttl {
            return Some(Arc::clone(key));
        }
        entries.remove(prefix);
        None
    }

    /// Caches a key just read from the store (unless a key was revoked here since `generation` was
    /// taken) and returns it in the form authentication uses.
    pub fn put(&self, key: ApiKey, generation: u64) -> Arc<VerifiedKey> {
        let verified = Arc::new(VerifiedKey {
            id: key.id,
            tenant: key.tenant_id,
            scopes: key
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s).ok())
                .collect(),
            revoked: key.revoked_at.is_some(),
            last_used_ms: AtomicI64::new(key.last_used_at.map_or(0, |t| t.as_millisecond())),
            secret_hash: key.secret_hash,
            prefix: key.prefix,
            fetched: Instant::now(),
        });
        if !self.ttl.is_zero() {
            let mut entries = self.lock();
            if self.generation.load(Ordering::SeqCst) != generation {
                return verified;
            }
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
            entries.insert(verified.prefix.clone(), Arc::clone(&verified));
        }
        verified
    }

    /// Drops `prefix` (its key was revoked here).
    pub fn forget(&self, prefix: &str) {
        let mut entries = self.lock();
        entries.remove(prefix);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether this request should write `last_used_at` (true at most once per [`TOUCH_EVERY_MS`] per
    /// cached key, also when several requests race).
    fn claim_touch(&self, key: &VerifiedKey, now: jiff::Timestamp) -> bool {
        let now_ms = now.as_millisecond();
        let last = key.last_used_ms.load(Ordering::Relaxed);
        now_ms - last > TOUCH_EVERY_MS
            && key
                .last_used_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(prefix: &str) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new(),
            tenant_id: TenantId::new(),
            name: "k".into(),
            prefix: prefix.into(),
            secret_hash: "h".into(),
            scopes: vec!["events:read".into(), "nonsense".into()],
            created_at: jiff::Timestamp::UNIX_EPOCH,
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn cache_expires_forgets_and_ignores_lookups_older_than_a_revocation() {
        let cache = KeyCache::new(Duration::from_millis(200));
        assert!(cache.get("a").is_none());
        let put = cache.put(stored("a"), cache.generation());
        assert_eq!(put.scopes, BTreeSet::from([Scope::EventsRead]));
        assert!(cache.get("a").is_some());
        cache.forget("a");
        assert!(cache.get("a").is_none());

        // A lookup that began before a revocation here is not cached.
        let before = cache.generation();
        cache.forget("b");
        cache.put(stored("b"), before);
        assert!(cache.get("b").is_none());
        cache.put(stored("b"), cache.generation());
        assert!(cache.get("b").is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("b").is_none(), "entries expire after the TTL");

        let off = KeyCache::new(Duration::ZERO);
        off.put(stored("c"), off.generation());
        assert!(off.get("c").is_none(), "a zero TTL caches nothing");
    }

    #[test]
    fn last_use_is_claimed_once_per_interval() {
        let cache = KeyCache::new(Duration::from_secs(60));
        let key = cache.put(stored("a"), cache.generation());
        let now = jiff::Timestamp::now();
        assert!(cache.claim_touch(&key, now));
        assert!(!cache.claim_touch(&key, now));
        let later = now.checked_add(jiff::SignedDuration::from_mins(6)).unwrap();
        assert!(cache.claim_touch(&key, later));
    }
}
