//! The state the CLI tests (and `examples/bench_vdirsyncer.rs`) start `calbridge` on: a fresh SQLite
//! database and master key file, bootstrapped like `calbridge serve` does, holding one local calendar
//! "Work" linked through a CalDAV connection (credentials sealed as the server seals them) to the
//! remote calendar `/{user}/work/`. Test code only: the binary never sees this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use calbridge_server::{Config, bootstrap, syncing};
use calbridge_store::{
    CalendarId, ConnectionId, ConnectionStatus, NewCalendar, NewConnection, NewLink, Provider,
    Store, TenantId,
};

pub struct CliDatabase {
    /// `sqlite://…`, as `--database-url` takes it.
    pub db: String,
    pub key_file: PathBuf,
    pub tenant: TenantId,
    pub calendar: CalendarId,
    pub connection: ConnectionId,
}

impl CliDatabase {
    /// Creates the database and key file in `dir`; `base` is the CalDAV server's root URL. The store
    /// comes back beside it for the caller to inspect, or to drop before the binary runs.
    pub async fn caldav(
        dir: &Path,
        base: &str,
        user: &str,
        password: &str,
    ) -> (Self, Arc<dyn Store>) {
        let db = format!("sqlite://{}", dir.join("calbridge.db").display());
        let key_file = dir.join("master.key");
        calbridge_store::crypto::MasterKey::create_file(&key_file).unwrap();
        let mut config = Config::default();
        config.database.url = calbridge_server::config::DatabaseUrl::parse(&db).unwrap();
        config.secrets.master_key_file = Some(key_file.clone());
        let master = bootstrap::master_key(&config).unwrap();
        let store = bootstrap::open_store(&config).await.unwrap();
        bootstrap::bootstrap_admin(store.as_ref()).await.unwrap();
        let tenant = bootstrap::tenant_by_name_or_id(store.as_ref(), bootstrap::DEFAULT_TENANT)
            .await
            .unwrap()
            .id;
        let calendar = store
            .create_calendar(
                tenant,
                NewCalendar {
                    name: "Work".into(),
                    time_zone: "UTC".into(),
                    owner: None,
                },
            )
            .await
            .unwrap()
            .id;
        let credentials = syncing::StoredCredentials {
            url: base.to_owned(),
            username: Some(user.into()),
            password: Some(password.into()),
            oauth: None,
        };
        let connection = store
            .create_connection(
                tenant,
                NewConnection {
                    provider: Provider::Caldav,
                    name: "Radicale".into(),
                    calendar_id: calendar,
                    credentials: Some(syncing::seal(&master.key, &credentials).unwrap()),
                    sync_options_json: "{}".into(),
                    status: ConnectionStatus::Active,
                },
            )
            .await
            .unwrap()
            .id;
        store
            .create_link(
                tenant,
                NewLink {
                    connection_id: connection,
                    remote_calendar_id: format!("/{user}/work/"),
                    remote_name: Some("Work".into()),
                },
            )
            .await
            .unwrap();
        let cli = Self {
            db,
            key_file,
            tenant,
            calendar,
            connection,
        };
        (cli, store)
    }

    /// Opens the database again (with no calbridge process holding it), to inspect what a run left.
    pub async fn open(&self) -> Arc<dyn Store> {
        let mut config = Config::default();
        config.database.url = calbridge_server::config::DatabaseUrl::parse(&self.db).unwrap();
        config.secrets.master_key_file = Some(self.key_file.clone());
        bootstrap::open_store(&config).await.unwrap()
    }

    /// `bin args… --database-url <db>` with the key file and private networks (the CalDAV server is
    /// on loopback) allowed through the environment, as an operator would run it.
    pub fn command(&self, bin: impl AsRef<OsStr>, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .args(args)
            .args(["--database-url", &self.db])
            .env("CALBRIDGE_SECRETS__MASTER_KEY_FILE", &self.key_file)
            .env("CALBRIDGE_NETWORK__ALLOW_PRIVATE_NETWORKS", "true");
        command
    }
}
