//! `calbridge sync` and `calbridge conflicts` as a person runs them: the real binary on a SQLite database
//! holding a CalDAV connection to a real Radicale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../providers/tests/support/mod.rs"]
mod support;

use std::process::Command;

use calbridge_server::{Config, bootstrap, syncing};
use calbridge_store::{ConnectionStatus, NewCalendar, NewConnection, NewLink, Provider};

const BIN: &str = env!("CARGO_BIN_EXE_calbridge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_imports_and_conflicts_commands_answer() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let calendar_url = radicale.calendar_url("work");
    raw.mkcalendar(&calendar_url, "Work").await;
    for n in 0..3 {
        let put = raw
            .put(
                &format!("{calendar_url}e{n}.ics"),
                // An hour each: events at one time would be time conflicts.
                &support::event(
                    &format!("cli-{n}"),
                    &format!("E {n}"),
                    &format!("20261125T{:02}0000Z", 9 + 2 * n),
                ),
            )
            .await;
        assert!(put.status().is_success());
    }

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let key_file = dir.path().join("master.key");
    calbridge_store::crypto::MasterKey::create_file(&key_file).unwrap();
    let mut config = Config::default();
    config.database.url = calbridge_server::config::DatabaseUrl::parse(&db).unwrap();
    config.secrets.master_key_file = Some(key_file.clone());
    let master = bootstrap::master_key(&config).unwrap();
    let store = bootstrap::open_store(&config).await.unwrap();
    bootstrap::bootstrap_admin(store.as_ref()).await.unwrap();
    let tenant = bootstrap::tenant_by_name_or_id(store.as_ref(), bootstrap::DEFAULT_TENANT)
        .await
        .unwrap();
    let calendar = store
        .create_calendar(
            tenant.id,
            NewCalendar {
                name: "Work".into(),
                time_zone: "UTC".into(),
                owner: None,
            },
        )
        .await
        .unwrap();
    let credentials = syncing::StoredCredentials {
        url: radicale.base(),
        username: Some(support::USER.into()),
        password: Some(support::PASSWORD.into()),
        oauth: None,
    };
    let connection = store
        .create_connection(
            tenant.id,
            NewConnection {
                provider: Provider::Caldav,
                name: "Radicale".into(),
                calendar_id: calendar.id,
                credentials: Some(syncing::seal(&master.key, &credentials).unwrap()),
                sync_options_json: "{}".into(),
                status: ConnectionStatus::Active,
            },
        )
        .await
        .unwrap();
    store
        .create_link(
            tenant.id,
            NewLink {
                connection_id: connection.id,
                remote_calendar_id: format!("/{}/work/", support::USER),
                remote_name: Some("Work".into()),
            },
        )
        .await
        .unwrap();

    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--database-url", &db])
            .env("CALBRIDGE_SECRETS__MASTER_KEY_FILE", &key_file)
            .env("CALBRIDGE_NETWORK__ALLOW_PRIVATE_NETWORKS", "true")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let connection_id = connection.id.to_string();
    let synced = run(&["sync", "--connection", &connection_id]);
    let stdout = String::from_utf8_lossy(&synced.stdout);
    assert!(
        synced.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(stdout.contains("create_local"), "{stdout}");
    for n in 0..3 {
        let series = store
            .get_series_by_uid(tenant.id, calendar.id, &format!("cli-{n}"))
            .await
            .unwrap();
        assert!(series.is_some(), "cli-{n} not imported");
    }
    // The run is in the system log the API serves.
    let runs = store
        .list_sync_runs(tenant.id, Some(connection.id), 10)
        .await
        .unwrap();
    assert!(runs.iter().any(|r| r.status.as_str() == "succeeded"));

    let listed = run(&["conflicts", "list"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).trim().is_empty());
    let missing = run(&["conflicts", "show", "00000000-0000-4000-8000-000000000000"]);
    assert!(!missing.status.success());
    let unknown = run(&[
        "sync",
        "--connection",
        "00000000-0000-4000-8000-000000000000",
    ]);
    assert!(!unknown.status.success());

    // `calbridge connections`: the same connection, never its credentials.
    let listed = run(&["connections", "list"]);
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&connection.id.to_string()), "{listed}");
    assert!(listed.contains("caldav\tactive"), "{listed}");
    let shown = run(&["connections", "show", &connection.id.to_string()]);
    assert!(shown.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["provider"], "caldav");
    assert_eq!(shown["links"].as_array().unwrap().len(), 1, "{shown}");
    let text = shown.to_string();
    assert!(!text.contains(support::PASSWORD), "no password in {text}");
    assert!(!text.contains("credentials"), "no credentials in {text}");
    let tested = run(&["connections", "test", &connection.id.to_string()]);
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.status.success(), "{out}");
    assert!(out.starts_with("ok\t"), "{out}");
    assert!(!run(&["connections", "show", "not-an-id"]).status.success());
}
