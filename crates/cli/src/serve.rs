//! `calbridge serve` and `calbridge migrate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use calbridge_server::config::DatabaseUrl;
use calbridge_server::scheduler::{self, Scheduler, SchedulerConfig};
use calbridge_server::{AppState, Config, bootstrap, telemetry};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; also `server.listen`, CALBRIDGE_SERVER__LISTEN).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// `sqlite://PATH` or `postgres://…` (default sqlite://calbridge.db; also `database.url`).
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// `sqlite://PATH` or `postgres://…` (default from the configuration).
    #[arg(long)]
    pub database_url: Option<String>,
}

/// The configuration with the command line applied last (it is the most specific layer).
pub fn load_config(
    file: Option<&PathBuf>,
    listen: Option<SocketAddr>,
    database_url: Option<&str>,
) -> anyhow::Result<Config> {
    let mut config = Config::load(file.map(PathBuf::as_path))?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let Some(url) = database_url {
        config.database.url = DatabaseUrl::parse(url)?;
    }
    Ok(config)
}

pub fn serve(config_file: Option<&PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(config_file, args.listen, args.database_url.as_deref())?;
    telemetry::init_logging(&config.log);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        // First: from here on SIGINT/SIGTERM stop the service gracefully, however early they come.
        let shutdown = calbridge_server::shutdown_signal();
        let listener = Service::bind(&config).await?;
        let service = Service::start(config, listener, shutdown).await?;
        if let Some((tenant, token)) = &service.bootstrap_key {
            print_bootstrap_key(tenant, token);
        }
        service.finished().await
    })
}

/// The API and the sync workers of one process, as `serve` and `demo` run them.
pub struct Service {
    pub address: SocketAddr,
    /// The tenant name and the admin key created by a first start (shown once).
    pub bootstrap_key: Option<(String, String)>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Binds `server.listen`.
    pub async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))
    }

    /// Opens the store (creating and migrating it), makes the bootstrap key on a first start, and runs
    /// the API on `listener` and the scheduler until `shutdown` completes.
    pub async fn start(
        mut config: Config,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        tracing::info!(database = %config.database.url.redacted(), "opening the store");
        let master = bootstrap::master_key(&config)?;
        if master.created
            && let bootstrap::MasterKeySource::File(path) = &master.source
        {
            tracing::warn!(path = %path.display(), "created a new master key file; back it up: secrets sealed with it are lost without it");
        }
        let store = bootstrap::open_store(&config).await?;
        let bootstrap_key = bootstrap::bootstrap_admin(store.as_ref())
            .await?
            .map(|(tenant, token)| (tenant.name, token));
        let address = listener.local_addr()?;
        // With port 0 the real port is known only now; the default public URL (OAuth redirects) uses it.
        config.server.listen = address;
        tracing::info!(%address, "calbridge is listening");
        let state = AppState::new(config, store, master.key);
        // The sync workers run beside the API and stop with it.
        let ctx =
            calbridge_server::api::sync::context(&state).map_err(|e| anyhow::anyhow!("{e}"))?;
        let scheduler = Scheduler::new(
            ctx,
            SchedulerConfig::from_config(&state.config, scheduler::default_owner()),
        )
        .with_hub(state.realtime.clone());
        let task = tokio::spawn(async move {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let workers = tokio::spawn(scheduler.run(stop_rx));
            calbridge_server::serve(listener, state, shutdown).await?;
            let _ = stop_tx.send(true);
            let _ = workers.await;
            tracing::info!("stopped");
            anyhow::Ok(())
        });
        Ok(Self {
            address,
            bootstrap_key,
            task,
        })
    }

    /// Waits until the service has shut down (in-flight requests finished, workers stopped).
    pub async fn finished(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

#[allow(clippy::print_stdout)]
pub fn print_bootstrap_key(tenant: &str, token: &str) {
    println!("First start: created tenant `{tenant}` and an admin API key with every scope.");
    println!("It is shown this once; store it now:");
    println!();
    println!("    {token}");
    println!();
    println!(
        "Use it as `Authorization: Bearer <key>`; make narrower keys with `calbridge keys create`."
    );
}

#[allow(clippy::print_stdout)]
pub fn migrate(config_file: Option<&PathBuf>, args: MigrateArgs) -> anyhow::Result<()> {
    let config = load_config(config_file, None, args.database_url.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let store = bootstrap::open_store(&config).await?;
        println!(
            "database {} ({}) is up to date",
            config.database.url.redacted(),
            store.backend()
        );
        anyhow::Ok(())
    })
}
