//! The calbridge service: configuration, the HTTP API (axum), API keys and scopes, and the production
//! manners around them (limits, timeouts, compression, request ids, rate limits, graceful shutdown).
//!
//! [`app::serve`] runs the API on an already bound listener, so tests run the real server on port 0.

pub mod api;
pub mod app;
pub mod auth;
pub mod benchseed;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod extract;
pub mod keys;
pub mod ratelimit;
pub mod realtime;
pub mod scheduler;
pub mod series;
pub mod syncing;
pub mod telemetry;
pub mod webhooks;

use std::sync::Arc;

pub use crate::app::{router, serve, shutdown_signal};
pub use crate::config::Config;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn calbridge_store::Store>,
    pub limiter: Arc<ratelimit::RateLimiter>,
    /// API keys read in the last `server.api_key_cache_ttl`.
    pub keys: Arc<auth::KeyCache>,
    /// Seals credentials and webhook secrets at rest.
    pub master_key: Arc<calbridge_store::crypto::MasterKey>,
    /// Wakes WebSocket streams when the change stream moves (and fans out across nodes on PostgreSQL).
    pub realtime: Arc<realtime::Hub>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<dyn calbridge_store::Store>,
        master_key: calbridge_store::crypto::MasterKey,
    ) -> Self {
        let limiter = Arc::new(ratelimit::RateLimiter::new(&config.rate_limit));
        let realtime = Arc::new(realtime::Hub::new(config.database.url.expose()));
        let keys = Arc::new(auth::KeyCache::new(
            config.server.api_key_cache_ttl.to_std(),
        ));
        Self {
            keys,
            config: Arc::new(config),
            store,
            limiter,
            master_key: Arc::new(master_key),
            realtime,
        }
    }
}
