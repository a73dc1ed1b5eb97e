//! Typed, layered configuration: built-in defaults, then a TOML file, then `CALBRIDGE_SECTION__KEY`
//! environment variables. Secrets are wrapped in [`Secret`] so that `Debug` output and logs never show them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::{SignedDuration, Span};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a configuration could not be loaded; every variant names the place to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A value that must never appear in `Debug` output or logs (client secrets, the master key, database
/// passwords). Serialization keeps the real value so that a configuration can round-trip.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A database URL; it may carry a password, so `Debug` shows it with the password masked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        if value.starts_with("sqlite:")
            || value.starts_with("postgres://")
            || value.starts_with("postgresql://")
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(ConfigError::Invalid {
                origin: "database.url".into(),
                message: format!(
                    "`{}` is neither `sqlite://PATH` nor `postgres://…`",
                    Self(value.to_owned()).redacted()
                ),
            })
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    /// The file of an embedded SQLite database, when the URL names one (not `:memory:`).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.0.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or(rest);
        if path.is_empty() || path == ":memory:" {
            None
        } else {
            Some(PathBuf::from(path))
        }
    }

    /// The URL with any password replaced, fit for logs.
    pub fn redacted(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &self.0[scheme_end + 3..at];
                match userinfo.find(':') {
                    Some(colon) => format!(
                        "{}{}:[redacted]{}",
                        &self.0[..scheme_end + 3],
                        &userinfo[..colon],
                        &self.0[at..]
                    ),
                    None => self.0.clone(),
                }
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// A duration written `15m`, `1h 30m` or ISO 8601 `PT15M`; printed in the short friendly form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub SignedDuration);

impl HumanDuration {
    pub fn parse(value: &str) -> Result<Self, String> {
        let duration = SignedDuration::from_str(value.trim())
            .map_err(|e| format!("`{value}` is not a duration like `15m` or `PT15M`: {e}"))?;
        if duration.is_negative() {
            return Err(format!(
                "`{value}` is negative; a duration here must be positive"
            ));
        }
        Ok(Self(duration))
    }

    pub fn from_secs(secs: i64) -> Self {
        Self(SignedDuration::from_secs(secs))
    }

    pub fn to_std(self) -> std::time::Duration {
        self.0.unsigned_abs()
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A calendar span such as `P3M` (months are calendar units, so this is a `Span`, not a duration).
#[derive(Clone, Copy)]
pub struct CalendarSpan(pub Span);

impl CalendarSpan {
    pub fn parse(value: &str) -> Result<Self, String> {
        let span = Span::from_str(value.trim())
            .map_err(|e| format!("`{value}` is not a span like `P3M` or `3 months`: {e}"))?;
        if span.is_negative() {
            return Err(format!(
                "`{value}` is negative; a range reaches forward or back by a positive span"
            ));
        }
        Ok(Self(span))
    }
}

impl PartialEq for CalendarSpan {
    fn eq(&self, other: &Self) -> bool {
        self.0.fieldwise() == other.0.fieldwise()
    }
}

impl fmt::Debug for CalendarSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for CalendarSpan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CalendarSpan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The whole configuration. Every section has defaults, so an empty file is a valid configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub secrets: SecretsConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub rate_limit: RateLimitConfig,
    pub network: NetworkConfig,
    pub providers: ProvidersConfig,
    pub sync: SyncConfig,
    pub push: PushConfig,
    pub optimizations: OptimizationsConfig,
    pub stream: StreamConfig,
    pub webhooks: WebhooksConfig,
}

/// Provider push channels (Graph subscriptions, Google watch channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// A channel is renewed this long before it expires.
    pub renew_before: HumanDuration,
    /// Lifetime asked for a Graph subscription (Graph's maximum for calendars is 4230 minutes).
    pub microsoft_lifetime: HumanDuration,
    /// Lifetime asked for a Google channel (Google may grant less; its answer is used).
    pub google_lifetime: HumanDuration,
    /// Wait before retrying channel work that failed (provider down, token refused).
    pub retry: HumanDuration,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            renew_before: HumanDuration::from_secs(3600),
            microsoft_lifetime: HumanDuration::from_secs(4200 * 60),
            google_lifetime: HumanDuration::from_secs(7 * 24 * 3600),
            retry: HumanDuration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the API listens on; loopback by default so nothing is exposed by accident.
    pub listen: SocketAddr,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: HumanDuration,
    /// How long an API key read from the database is reused for authentication (`0s`: never). A key
    /// revoked through this node's API stops working at once; one revoked on another node or with
    /// `calbridge keys revoke` within this time.
    pub api_key_cache_ttl: HumanDuration,
    /// The address people's browsers reach this server at (behind a proxy: the proxy's https URL);
    /// OAuth redirect URIs are built from it. Default: `http://{listen}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: HumanDuration::from_secs(30),
            api_key_cache_ttl: HumanDuration::from_secs(5),
            public_url: None,
        }
    }
}

impl ServerConfig {
    /// [`ServerConfig::public_url`], or `http://{listen}` (an unspecified listen address becomes
    /// loopback, since a browser cannot reach `0.0.0.0`). Always ends with `/`.
    pub fn public_base(&self) -> Result<url::Url, String> {
        let text = match &self.public_url {
            Some(u) => u.trim().to_owned(),
            None => {
                let mut addr = self.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
                }
                format!("http://{addr}")
            }
        };
        let mut url = url::Url::parse(&text)
            .map_err(|e| format!("server.public_url `{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("server.public_url `{text}` must be an http(s) URL"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// Connections the store may hold: the PostgreSQL pool; on SQLite a cap on the reader connections
    /// (one per core by default; there is always one writer). Default: 2 × CPU cores.
    pub max_connections: u32,
}

/// PostgreSQL's sizing rule of thumb (cores × 2, plus disks, which an SSD makes ~0): more connections than
/// the database can run at once only queue inside it. Measured: on 2 cores at 100,000 events a pool of 16 gave a p99 of 168 ms, a pool of
/// 4 gave 8.8 ms with more throughput (BENCHMARKS.md).
fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    u32::try_from(cores.saturating_mul(2).max(2)).unwrap_or(16)
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://calbridge.db".into()),
            max_connections: default_pool_size(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// The master key itself (base64 of 32 bytes). Prefer the environment or a key file to the TOML file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    /// A file holding the master key. When neither is set and the database is the embedded SQLite, a key
    /// file is created beside the database (mode 0600) on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `calbridge_server=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// A request taking longer than this is answered 503 and abandoned.
    pub request_timeout: HumanDuration,
    /// Widest window `GET /v1/calendar/events` accepts, in days.
    pub max_window_days: u32,
    /// Largest page of a listing.
    pub max_page_size: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: HumanDuration::from_secs(30),
            max_window_days: 366 * 2,
            max_page_size: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per API key (token bucket refill rate).
    pub requests_per_second: f64,
    /// Requests a key may make at once before being slowed (bucket size).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 50.0,
            burst: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Let connections reach private, loopback and link-local addresses (CalDAV on a LAN, emulators).
    /// Off by default: a tenant must not be able to point calbridge at the operator's internal network.
    pub allow_private_networks: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    pub microsoft: OAuthProviderConfig,
    pub google: OAuthProviderConfig,
}

/// The operator's OAuth client for a provider, and where the provider lives (overridable for emulators
/// and sovereign clouds).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthProviderConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Microsoft only: `common`, `organizations` or a tenant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority_url: Option<String>,
    /// The API base (Graph for Microsoft, Calendar API for Google).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_url: Option<String>,
    /// Google only: the token endpoint's base (`{token_url}/token`). Default
    /// `https://oauth2.googleapis.com`, or `authority_url` when that is set (emulators serve both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncDirection {
    Bidirectional,
    Import,
    Export,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictResolution {
    Ask,
    LocalWins,
    RemoteWins,
    NewestWins,
    KeepBoth,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncRange {
    pub past: CalendarSpan,
    pub future: CalendarSpan,
}

impl Default for SyncRange {
    fn default() -> Self {
        Self {
            past: CalendarSpan(Span::new().months(3)),
            future: CalendarSpan(Span::new().months(3)),
        }
    }
}

/// The defaults every new connection starts with (each connection may override them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub frequency: HumanDuration,
    pub direction: SyncDirection,
    pub range: SyncRange,
    pub conflict_resolution: ConflictResolution,
    /// Local time of day of the periodic full reconciliation (off-peak).
    pub full_sync_at: jiff::civil::Time,
    /// CalDAV and ICS links are probed this often (one sync-token/ctag request or one conditional
    /// GET); a sync runs only when the probe sees a change, a local change waits, or `frequency` passed.
    pub poll_interval: HumanDuration,
    /// A running sync run whose heartbeat is older than this was cut short (its process was killed
    /// or lost the database): the scheduler closes it as failed with class `interrupted`. Running
    /// runs beat every tenth of it (1 s to 60 s), and each beat writes this value into the run's row:
    /// every node's scheduler judges a run by the value of the process running it (its own value
    /// only for rows without one), so nodes may be configured differently.
    pub run_stale_after: HumanDuration,
    /// How many local creates of new remote items (an initial import) the engine writes together:
    /// one UID lookup and three multi-row transactions per chunk instead of about 13 statements per
    /// event (`EngineConfig::local_create_chunk`). 1 writes them one at a time. A setting of this
    /// node's engine, not a connection default. Between 1 and [`MAX_LOCAL_CREATE_CHUNK`].
    pub local_create_chunk: u32,
}

/// The largest `sync.local_create_chunk`. A chunk is one transaction on the one write connection
/// SQLite has, and an item the store refuses sends its whole chunk through again one at a time; a
/// slip of the keyboard (an extra zero or two on the default 250) must not make an import one
/// transaction of a whole mailbox.
pub const MAX_LOCAL_CREATE_CHUNK: u32 = 10_000;

impl SyncConfig {
    /// The engine's settings this section gives (every other engine setting at its default).
    pub fn engine(&self) -> calbridge_engine::EngineConfig {
        let defaults = calbridge_engine::EngineConfig::default();
        calbridge_engine::EngineConfig {
            heartbeat: self.run_heartbeat(),
            local_create_chunk: usize::try_from(self.local_create_chunk)
                .unwrap_or(defaults.local_create_chunk),
            ..defaults
        }
    }

    /// How a running run's row is touched: every tenth of `run_stale_after` (1 s..60 s), each touch
    /// writing `run_stale_after` as the run's staleness bound.
    pub fn run_heartbeat(&self) -> calbridge_engine::Heartbeat {
        let stale_after = std::time::Duration::try_from(self.run_stale_after.0)
            .unwrap_or(std::time::Duration::from_secs(10 * 60));
        calbridge_engine::Heartbeat::for_stale_after(stale_after)
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            frequency: HumanDuration::from_secs(15 * 60),
            direction: SyncDirection::Bidirectional,
            range: SyncRange::default(),
            conflict_resolution: ConflictResolution::Ask,
            full_sync_at: jiff::civil::Time::midnight()
                .with()
                .hour(3)
                .build()
                .unwrap_or_default(),
            poll_interval: HumanDuration::from_secs(120),
            run_stale_after: HumanDuration::from_secs(10 * 60),
            local_create_chunk: 250,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizationsConfig {
    /// Items per provider batch, capped by each provider's own limit.
    pub batch_size: u32,
    pub parallel_sync: bool,
    /// Seconds a provider read may be served from cache.
    pub cache_ttl: u64,
    /// gzip/br on provider and API traffic.
    pub compression: bool,
}

impl Default for OptimizationsConfig {
    fn default() -> Self {
        Self {
            batch_size: 50,
            parallel_sync: true,
            cache_ttl: 3600,
            compression: true,
        }
    }
}

/// The change stream (WebSocket `GET /v1/calendar/stream` and webhooks read it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// How long change-stream entries are kept: a client resuming with an older `since` gets a reset.
    pub retention: HumanDuration,
    /// How often expired entries (and old webhook delivery logs) are removed.
    pub prune_interval: HumanDuration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            retention: HumanDuration::from_secs(7 * 24 * 3600),
            prune_interval: HumanDuration::from_secs(3600),
        }
    }
}

/// Outbound webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Consecutive failed attempts after which a webhook is disabled (re-enable it with PATCH).
    pub disable_after: u32,
    /// Backoff after the first failure; it doubles per failure (with jitter) up to `retry_max`.
    pub retry_base: HumanDuration,
    pub retry_max: HumanDuration,
    /// One delivery attempt (connect, send, answer) may take this long.
    pub timeout: HumanDuration,
    /// How often the delivery planner looks for pending messages (API writes also wake it at once).
    pub poll_interval: HumanDuration,
    /// How long delivery log entries are kept.
    pub log_retention: HumanDuration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            disable_after: 10,
            retry_base: HumanDuration::from_secs(60),
            retry_max: HumanDuration::from_secs(6 * 3600),
            timeout: HumanDuration::from_secs(10),
            poll_interval: HumanDuration::from_secs(1),
            log_retention: HumanDuration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Environment variables with this prefix that belong to tooling, not to the configuration.
const ENV_NOT_CONFIG: &[&str] = &["PYTHON", "TEST_POSTGRES_URL", "REQUIRE_PEERS", "LOG"];

impl Config {
    /// Defaults, then the TOML file (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
                origin: "defaults".into(),
                message: e.to_string(),
            })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let origin = path.display().to_string();
            let from_file: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
            // Check the file on its own first, so that its mistakes are reported against the file.
            Config::from_table(from_file.clone(), &origin)?;
            merge(&mut tree, from_file);
        }
        let mut overrides: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix("CALBRIDGE_") {
                if rest.is_empty() || ENV_NOT_CONFIG.contains(&rest) {
                    continue;
                }
                overrides.insert(rest.to_owned(), value);
            }
        }
        for (name, value) in overrides {
            let path: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
            if path.len() < 2 {
                // Top-level keys do not exist; a lone `CALBRIDGE_X` is likely meant for some other tool.
                continue;
            }
            set_path(&mut tree, &path, &value).map_err(|message| ConfigError::Invalid {
                origin: format!("environment variable CALBRIDGE_{name}"),
                message,
            })?;
        }
        Config::from_table(tree, "configuration (file and environment)")
    }

    /// Parse a TOML document (no environment), e.g. the output of `calbridge config example`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: "TOML".into(),
            message: e.to_string(),
        })?;
        Config::from_table(table, "TOML")
    }

    fn from_table(table: toml::Table, origin: &str) -> Result<Self, ConfigError> {
        let config: Config =
            table
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: origin.to_owned(),
                    message: e.to_string(),
                })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        DatabaseUrl::parse(self.database.url.expose())?;
        if self.limits.max_body_bytes < 1024 {
            return Err(invalid(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.limits.max_page_size == 0 || self.limits.max_window_days == 0 {
            return Err(invalid(
                "limits.max_page_size and limits.max_window_days must be positive".into(),
            ));
        }
        if self.rate_limit.enabled
            && (!self.rate_limit.requests_per_second.is_finite()
                || self.rate_limit.requests_per_second <= 0.0
                || self.rate_limit.burst == 0)
        {
            return Err(invalid(
                "rate_limit.requests_per_second and rate_limit.burst must be positive (or set rate_limit.enabled = false)".into(),
            ));
        }
        if self.optimizations.batch_size == 0 {
            return Err(invalid("optimizations.batch_size must be positive".into()));
        }
        if self.sync.frequency.0 < SignedDuration::from_secs(60) {
            return Err(invalid("sync.frequency must be at least 1m".into()));
        }
        if self.sync.run_stale_after.0 < SignedDuration::from_secs(3) {
            // Runs beat at least every second: a shorter threshold would close live runs.
            return Err(invalid("sync.run_stale_after must be at least 3s".into()));
        }
        let chunk = self.sync.local_create_chunk;
        if !(1..=MAX_LOCAL_CREATE_CHUNK).contains(&chunk) {
            return Err(invalid(format!(
                "sync.local_create_chunk must be between 1 and {MAX_LOCAL_CREATE_CHUNK} (local \
                 creates written per transaction during an import; 1 writes them one at a time), \
                 not {chunk}"
            )));
        }
        if self.webhooks.disable_after == 0 {
            return Err(invalid("webhooks.disable_after must be positive".into()));
        }
        let positive = [
            ("stream.retention", self.stream.retention),
            ("stream.prune_interval", self.stream.prune_interval),
            ("webhooks.retry_base", self.webhooks.retry_base),
            ("webhooks.retry_max", self.webhooks.retry_max),
            ("webhooks.timeout", self.webhooks.timeout),
            ("webhooks.poll_interval", self.webhooks.poll_interval),
            ("webhooks.log_retention", self.webhooks.log_retention),
            ("sync.run_stale_after", self.sync.run_stale_after),
        ];
        for (name, value) in positive {
            if !value.0.is_positive() {
                return Err(invalid(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(over_table)) => {
                merge(base_table, over_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Set `path` in `tree` from an environment string, typed after the value already there (the defaults
/// give every non-optional key a type); keys absent so far are strings.
fn set_path(tree: &mut toml::Table, path: &[String], raw: &str) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut table = tree;
    for segment in parents {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{segment}` is a value, not a section")),
        };
    }
    let value = match table.get(last) {
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{raw}` is not an integer"))?,
        Some(toml::Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("`{raw}` is not a number"))?,
        Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(format!("`{raw}` is not a boolean (true/false)")),
        },
        Some(toml::Value::Table(_)) => return Err(format!("`{last}` is a section, not a value")),
        _ => toml::Value::String(raw.to_owned()),
    };
    table.insert(last.clone(), value);
    Ok(())
}

/// A commented example configuration that parses back to the defaults.
pub const EXAMPLE: &str = r#"# calbridge configuration. Every key is optional; the values shown are the defaults.
# Layering: built-in defaults, then this file (`calbridge --config FILE`), then environment variables
# named CALBRIDGE_SECTION__KEY (e.g. CALBRIDGE_SERVER__LISTEN=0.0.0.0:8080, CALBRIDGE_SYNC__RANGE__PAST=P1M).

[server]
# Address of the HTTP API. Loopback by default: put a TLS-terminating proxy in front to expose it.
listen = "127.0.0.1:8080"
# After SIGINT/SIGTERM, in-flight requests get this long to finish.
shutdown_grace = "30s"
# An API key read from the database is reused this long ("0s": read it on every request). Revoking a key
# through this server's API takes effect at once; on another node or with `calbridge keys revoke`, within
# this time.
api_key_cache_ttl = "5s"
# Where browsers reach this server (OAuth redirect URIs are built from it); default http://{listen}.
# public_url = "https://calendar.example.org"

[database]
# Embedded SQLite (created and migrated on first start) or PostgreSQL: "postgres://user:pass@host/db".
url = "sqlite://calbridge.db"
# PostgreSQL pool size (on SQLite: at most this many readers beside the one writer); default 2 × cores.
# max_connections = 4

[secrets]
# The master key that encrypts credentials at rest: 32 bytes, base64. Prefer the environment
# (CALBRIDGE_SECRETS__MASTER_KEY) or a key file over writing it here. With neither set and the embedded
# SQLite database, a key file is created beside the database (mode 0600) on first start.
# master_key = "…"
# master_key_file = "/etc/calbridge/master.key"

[log]
# "text" for people, "json" for log collectors. RUST_LOG overrides `level`.
format = "text"
level = "info"

[limits]
# Larger request bodies are refused with 413.
max_body_bytes = 1048576
# Requests running longer are answered 503.
request_timeout = "30s"
# Widest window GET /v1/calendar/events accepts, in days.
max_window_days = 732
max_page_size = 1000

[rate_limit]
# Token bucket per API key; over the limit the API answers 429 with Retry-After.
enabled = true
requests_per_second = 50.0
burst = 100

[network]
# Allow connections to private, loopback and link-local addresses (a CalDAV server on the LAN).
allow_private_networks = false

[providers.microsoft]
# Your Entra ID app registration. The endpoints default to the public cloud; override them for
# sovereign clouds or the built-in emulator.
# client_id = "00000000-0000-0000-0000-000000000000"
# client_secret = "…"
# tenant = "common"
# authority_url = "https://login.microsoftonline.com"
# graph_url = "https://graph.microsoft.com/v1.0"

[providers.google]
# client_id = "….apps.googleusercontent.com"
# client_secret = "…"
# authority_url = "https://accounts.google.com"
# graph_url = "https://www.googleapis.com/calendar/v3"
# token_url = "https://oauth2.googleapis.com"

# Defaults for new connections; each connection may override them.
[sync]
# How often each connection is synced (push notifications make it sooner).
frequency = "15m"
# "bidirectional", "import" (provider → app) or "export" (app → provider).
direction = "bidirectional"
# "ask", "local_wins", "remote_wins", "newest_wins" or "keep_both".
conflict_resolution = "ask"
# Local time of the daily full reconciliation (off-peak).
full_sync_at = "03:00"
# CalDAV and ICS: one cheap request (sync-token/ctag, conditional GET) this often; a sync only on change.
poll_interval = "2m"
# A running sync whose heartbeat (every tenth of this, 1s..60s) is older than this was cut short (its
# process was killed): the scheduler closes it as failed with class "interrupted". Each run carries the
# value of the node running it, and every node's scheduler judges it by that: nodes may differ.
run_stale_after = "10m"
# An import's local creates are written this many at a time (one UID lookup and three multi-row
# transactions per chunk; 1 writes them one at a time). 1 to 10000; a setting of this node, not a
# connection default.
local_create_chunk = 250

[sync.range]
# How far back and ahead events are synced (ISO 8601 spans).
past = "P3M"
future = "P3M"

[push]
# Graph subscriptions and Google watch channels. Only with an explicit server.public_url that Microsoft
# and Google can reach (the http://{listen} default cannot be); without it those connections are polled.
# Renew a channel this long before it expires.
renew_before = "1h"
# Lifetime asked for (Graph allows at most 4230 minutes for calendars).
microsoft_lifetime = "70h"
google_lifetime = "168h"
# Wait before retrying failed channel work.
retry = "1m"

[optimizations]
# Items per provider batch (capped by each provider's limit, e.g. Graph $batch takes 20).
batch_size = 50
# Sync connections concurrently.
parallel_sync = true
# Seconds a provider read may be served from cache.
cache_ttl = 3600
# gzip/br on provider and API traffic.
compression = true

[stream]
# Change-stream entries older than this are removed; a WebSocket client resuming with an older `since`
# receives a `stream.reset` message (re-read the state through the API, then keep the stream).
retention = "168h"
# How often expired entries and old webhook delivery logs are removed.
prune_interval = "1h"

[webhooks]
# A webhook is disabled after this many consecutive failed deliveries (the reason is shown on it).
disable_after = 10
# Retry backoff: doubles per failure from `retry_base` up to `retry_max`, with jitter; Retry-After on
# 429/503 is honoured.
retry_base = "1m"
retry_max = "6h"
# One attempt (connect, send, answer).
timeout = "10s"
# How often pending messages are looked for (API writes also wake delivery at once).
poll_interval = "1s"
# How long the delivery log keeps entries.
log_retention = "720h"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn example_parses_back_to_the_defaults() {
        let parsed = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn example_mentions_every_key_of_the_defaults() {
        let tree = toml::Table::try_from(Config::default()).unwrap();
        fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (key, value) in table {
                match value {
                    toml::Value::Table(t) => walk(&format!("{prefix}{key}."), t, out),
                    _ => out.push(format!("{prefix}{key}")),
                }
            }
        }
        let mut keys = Vec::new();
        walk("", &tree, &mut keys);
        for key in keys {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                EXAMPLE.contains(&format!("{leaf} = ")),
                "example lacks {key}"
            );
        }
    }

    #[test]
    fn defaults_are_the_products() {
        let c = Config::default();
        assert_eq!(c.sync.frequency.to_string(), "15m");
        assert_eq!(c.sync.direction, SyncDirection::Bidirectional);
        assert_eq!(c.sync.range.past.0.get_months(), 3);
        assert_eq!(c.sync.range.future.0.get_months(), 3);
        assert_eq!(c.sync.conflict_resolution, ConflictResolution::Ask);
        assert_eq!(c.sync.full_sync_at.to_string(), "03:00:00");
        assert_eq!(c.optimizations.batch_size, 50);
        assert!(c.optimizations.parallel_sync);
        assert_eq!(c.optimizations.cache_ttl, 3600);
        assert!(c.optimizations.compression);
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database.url.expose(), "sqlite://calbridge.db");
    }

    #[test]
    fn layers_apply_in_order_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:9000\"\n[sync]\nfrequency = \"5m\"\n[optimizations]\nbatch_size = 20\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("CALBRIDGE_SYNC__FREQUENCY", "PT30M"),
                ("CALBRIDGE_OPTIMIZATIONS__PARALLEL_SYNC", "false"),
                ("CALBRIDGE_PROVIDERS__MICROSOFT__CLIENT_ID", "12345"),
                ("CALBRIDGE_SYNC__RANGE__PAST", "P1M"),
                ("CALBRIDGE_RATE_LIMIT__REQUESTS_PER_SECOND", "2.5"),
                ("CALBRIDGE_PYTHON", "/usr/bin/python3"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000, "file over defaults");
        assert_eq!(c.optimizations.batch_size, 20, "file over defaults");
        assert_eq!(c.sync.frequency.to_string(), "30m", "env over file");
        assert!(!c.optimizations.parallel_sync);
        assert_eq!(c.providers.microsoft.client_id.as_deref(), Some("12345"));
        assert_eq!(c.sync.range.past.0.get_months(), 1);
        assert_eq!(c.rate_limit.requests_per_second, 2.5);
    }

    #[test]
    fn mistakes_name_their_place() {
        let err = Config::load_from(
            None,
            env(&[("CALBRIDGE_OPTIMIZATIONS__BATCH_SIZE", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CALBRIDGE_OPTIMIZATIONS__BATCH_SIZE"), "{err}");
        let err = Config::from_toml("[sync]\ndirection = \"sideways\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sideways"), "{err}");
        let err = Config::from_toml("[sever]\nlisten = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sever"), "{err}");
        let err = Config::from_toml("[database]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        let err = Config::from_toml("[sync]\nfrequency = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
    }

    /// `sync.local_create_chunk` from the file and the environment is the engine's chunk (with the
    /// heartbeat the section gives), and a value outside 1..=10000 is refused naming the key.
    #[test]
    fn the_import_chunk_reaches_the_engine_within_bounds() {
        let engine = Config::default().sync.engine();
        assert_eq!(
            engine.local_create_chunk,
            calbridge_engine::EngineConfig::default().local_create_chunk
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[sync]\nlocal_create_chunk = 40\n").unwrap();
        let from_file = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(from_file.sync.engine().local_create_chunk, 40);
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("CALBRIDGE_SYNC__LOCAL_CREATE_CHUNK", "1"),
                ("CALBRIDGE_SYNC__RUN_STALE_AFTER", "1m"),
            ]),
        )
        .unwrap();
        let engine = c.sync.engine();
        assert_eq!(engine.local_create_chunk, 1, "env over file");
        assert_eq!(engine.heartbeat, c.sync.run_heartbeat());
        assert_eq!(
            Config::from_toml("[sync]\nlocal_create_chunk = 10000\n")
                .unwrap()
                .sync
                .local_create_chunk,
            10_000
        );

        for bad in ["0", "10001", "1000000"] {
            let err = Config::load_from(None, env(&[("CALBRIDGE_SYNC__LOCAL_CREATE_CHUNK", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("sync.local_create_chunk must be between 1 and 10000")
                    && err.contains(&format!("not {bad}")),
                "{err}"
            );
        }
        let err = Config::from_toml("[sync]\nlocal_create_chunk = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.local_create_chunk"), "{err}");
        for bad in ["-5", "many"] {
            let err = Config::load_from(None, env(&[("CALBRIDGE_SYNC__LOCAL_CREATE_CHUNK", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.to_ascii_lowercase().contains("local_create_chunk"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn secrets_never_print_in_debug() {
        let c = Config::from_toml(
            "[secrets]\nmaster_key = \"TOPSECRETKEY\"\n[providers.google]\nclient_secret = \"GOOGLESECRET\"\n[database]\nurl = \"postgres://app:DBPASSWORD@127.0.0.1/cb\"\n",
        )
        .unwrap();
        let debug = format!("{c:?}");
        for secret in ["TOPSECRETKEY", "GOOGLESECRET", "DBPASSWORD"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("app:[redacted]@127.0.0.1"));
        assert_eq!(c.secrets.master_key.unwrap().expose(), "TOPSECRETKEY");
    }

    #[test]
    fn sqlite_paths() {
        let url = DatabaseUrl::parse("sqlite://data/cb.db?mode=rwc").unwrap();
        assert_eq!(url.sqlite_path().unwrap(), PathBuf::from("data/cb.db"));
        assert!(
            DatabaseUrl::parse("sqlite::memory:")
                .unwrap()
                .sqlite_path()
                .is_none()
        );
        assert!(
            DatabaseUrl::parse("postgres://x/y")
                .unwrap()
                .sqlite_path()
                .is_none()
        );
    }
}
