//! Authentication (`Authorization: Bearer <key>`) and authorization (one scope per route), as extractors:
//! a handler that takes `Authorized<EventsWrite>` cannot run without a valid key carrying that scope, and
//! every store call it makes is bounded to the key's tenant.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use calbridge_store::TenantId;

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
    let key = state
        .store
        .find_api_key_by_prefix(presented.id.as_str())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(invalid)?;
    if key.revoked_at.is_some() || !presented.matches(&key.secret_hash) {
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
    let stale = key
        .last_used_at
        .is_none_or(|t| now.duration_since(t) > jiff::SignedDuration::from_mins(5));
    if stale {
        let store = std::sync::Arc::clone(&state.store);
        let (tenant, id) = (key.tenant_id, key.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(tenant, id, now).await {
                tracing::warn!(error = %e, "could not record API key use");
            }
        });
    }
    let scopes = key
        .scopes
        .iter()
        .filter_map(|s| Scope::parse(s).ok())
        .collect();
    Ok(Principal {
        tenant: key.tenant_id,
        key_prefix: key.prefix,
        scopes,
    })
}
