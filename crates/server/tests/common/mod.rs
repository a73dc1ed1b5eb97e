//! Runs the real server on a loopback port 0 with a fresh database (a SQLite temp file, or a PostgreSQL
//! database made for the test and dropped after it), and a few helpers to talk to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use calbridge_server::{AppState, Config, bootstrap};
use calbridge_store::Store;
use sqlx::Connection as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    /// An admin key of the default tenant, with every scope.
    pub admin: String,
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    /// The configuration the server runs with (its database URL included).
    pub config: Config,
    /// The server's change bell: a scheduler run beside the test server rings it, as `serve` does.
    pub hub: Arc<calbridge_server::realtime::Hub>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

/// The PostgreSQL test server, or `None` (with a notice) when it is absent and peers are optional.
pub fn postgres_url() -> Option<String> {
    let required = std::env::var("CALBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    match std::env::var("CALBRIDGE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if required => {
            panic!("CALBRIDGE_TEST_POSTGRES_URL is not set and CALBRIDGE_REQUIRE_PEERS=1")
        }
        _ => {
            eprintln!(
                "notice: CALBRIDGE_TEST_POSTGRES_URL not set; skipping the PostgreSQL run of this test"
            );
            None
        }
    }
}

fn database_url_with(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = path_start.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{host}/{database}?{q}"),
        None => format!("{host}/{database}"),
    }
}

/// `server.public_url` placeholder that `start_with` replaces with the server's own address.
pub const SELF_URL: &str = "http://self.invalid";

pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.rate_limit.enabled = false;
    config.limits.max_body_bytes = 256 * 1024;
    config.server.shutdown_grace = calbridge_server::config::HumanDuration::from_secs(10);
    config
}

/// `test_config()` for a server whose providers listen on loopback (Radicale, the emulators), as
/// an operator allows private networks for them.
pub fn lan_config() -> Config {
    let mut config = test_config();
    config.network.allow_private_networks = true;
    config
}

/// The sync context of a scheduler node beside the test server, built as `calbridge serve` builds
/// its own: a pool of its own on the server's database, the server's master key, HTTP client and
/// provider settings.
pub async fn node_sync_context(config: &Config) -> calbridge_server::syncing::SyncContext {
    let store = bootstrap::open_store(config).await.unwrap();
    let master = bootstrap::master_key(config).unwrap();
    calbridge_server::syncing::SyncContext {
        store,
        master_key: Arc::new(master.key),
        http: calbridge_server::syncing::http_client(config).unwrap(),
        engine: config.sync.engine(),
        providers: calbridge_server::syncing::ProviderSettings::from_config(config),
    }
}

/// The answer's JSON body; a body that is not JSON fails the test with the status and the text.
pub async fn json_of(response: reqwest::Response) -> serde_json::Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

/// Starts a sync of `connection` through the API and polls its run until it is no longer running
/// (30 s at most); answers the run.
pub async fn sync_and_wait(server: &TestServer, connection: &str) -> serde_json::Value {
    let started = server
        .post_json(
            &server.admin,
            "/v1/calendar/sync",
            serde_json::json!({"connection_id": connection}),
        )
        .await;
    assert_eq!(started.status(), reqwest::StatusCode::ACCEPTED);
    let run_id = json_of(started).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..300 {
        let run = server
            .admin_get(&format!("/v1/calendar/sync/runs/{run_id}"))
            .await;
        if run["status"] != "running" {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("run {run_id} still running after 30 s");
}

impl TestServer {
    /// `None` only when the backend is PostgreSQL, it is not configured, and peers are optional.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, test_config()).await
    }

    pub async fn start_with(backend: Backend, mut config: Config) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut pg_database = None;
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("calbridge.db").display());
                config.database.url = calbridge_server::config::DatabaseUrl::parse(&url).unwrap();
            }
            Backend::Postgres => {
                let admin_url = postgres_url()?;
                let name = format!("calbridge_srv_{}", uuid::Uuid::new_v4().simple());
                let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
                    Ok(c) => c,
                    Err(e) => {
                        if std::env::var("CALBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
                            panic!("PostgreSQL at CALBRIDGE_TEST_POSTGRES_URL is unreachable: {e}");
                        }
                        eprintln!(
                            "notice: PostgreSQL unreachable ({e}); skipping the PostgreSQL run"
                        );
                        return None;
                    }
                };
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                config.database.url = calbridge_server::config::DatabaseUrl::parse(
                    &database_url_with(&admin_url, &name),
                )
                .unwrap();
                pg_database = Some(name);
            }
        }
        config.secrets.master_key_file = Some(dir.path().join("master.key"));
        calbridge_store::crypto::MasterKey::create_file(&dir.path().join("master.key")).unwrap();
        let master = bootstrap::master_key(&config).unwrap();
        let store = bootstrap::open_store(&config).await.unwrap();
        let (_, admin) = bootstrap::bootstrap_admin(store.as_ref())
            .await
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if config.server.public_url.as_deref() == Some(SELF_URL) {
            // Providers (the emulators) post notifications to this very server.
            config.server.public_url = Some(format!("http://{addr}"));
        }
        let config_copy = config.clone();
        let state = AppState::new(config, Arc::clone(&store), master.key);
        let hub = Arc::clone(&state.realtime);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(calbridge_server::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Some(Self {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            admin,
            store,
            backend,
            config: config_copy,
            hub,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
            pg_database,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Ask the server to stop and wait until it has.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }

    /// A key in a new tenant (for isolation tests) or in the default one.
    pub async fn key(
        &self,
        tenant: Option<&str>,
        scopes: &[calbridge_server::keys::Scope],
    ) -> String {
        let tenant = match tenant {
            Some(name) => bootstrap::tenant_by_name_or_id(self.store.as_ref(), name)
                .await
                .unwrap(),
            None => bootstrap::tenant_by_name_or_id(self.store.as_ref(), bootstrap::DEFAULT_TENANT)
                .await
                .unwrap(),
        };
        calbridge_server::api::keys::make_key(self.store.as_ref(), tenant.id, "test", scopes)
            .await
            .unwrap()
            .1
    }

    pub async fn post_json(
        &self,
        key: &str,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` with the admin key; answers the JSON body, whatever the status.
    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        json_of(self.post_json(&self.admin, path, body).await).await
    }

    /// GETs `path` with the admin key; answers the JSON body, whatever the status.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        json_of(self.get(&self.admin, path).await).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Only a PostgreSQL server asks for the admin URL (a SQLite one must not need it).
        if let Some(name) = self.pg_database.take()
            && let Some(admin_url) = postgres_url()
        {
            // Dropping needs async I/O; Drop is sync and may run inside a runtime, so use a thread.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Write a scenario once; run it against both backends.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($server:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(mut $server) = $crate::common::TestServer::start($crate::common::Backend::Sqlite).await else { return };
                    #[allow(unused_mut)]
                    let _ = &mut $server;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(mut $server) = $crate::common::TestServer::start($crate::common::Backend::Postgres).await else { return };
                    #[allow(unused_mut)]
                    let _ = &mut $server;
                    $body
                }
            )*
        }
    };
}
