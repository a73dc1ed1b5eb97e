//! `calbridge sync` and `calbridge conflicts` as a person runs them: the real binary on a SQLite database
//! holding a CalDAV connection to a real Radicale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../providers/tests/support/mod.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_calbridge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_imports_and_conflicts_commands_answer() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    // An hour each: events at one time would be time conflicts.
    radicale
        .work_calendar(&[
            ("cli-0", "E 0", "20261125T090000Z"),
            ("cli-1", "E 1", "20261125T110000Z"),
            ("cli-2", "E 2", "20261125T130000Z"),
        ])
        .await;

    let dir = tempfile::tempdir().unwrap();
    let (cli, store) = common::CliDatabase::caldav(
        dir.path(),
        &radicale.base(),
        support::USER,
        support::PASSWORD,
    )
    .await;
    let run = |args: &[&str]| {
        cli.command(BIN, args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let connection_id = cli.connection.to_string();
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
            .get_series_by_uid(cli.tenant, cli.calendar, &format!("cli-{n}"))
            .await
            .unwrap();
        assert!(series.is_some(), "cli-{n} not imported");
    }
    // The run is in the system log the API serves.
    let runs = store
        .list_sync_runs(cli.tenant, Some(cli.connection), 10)
        .await
        .unwrap();
    assert!(runs.iter().any(|r| r.status.as_str() == "succeeded"));

    let listed = run(&["conflicts", "list"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).trim().is_empty());
    let missing = run(&["conflicts", "show", "00000000-0000-4000-8000-000000000000"]);
    assert!(!missing.status.success());
    // A resolution in progress is said on stderr; stdout stays the conflict's JSON, which holds it.
    let conflict = store
        .create_conflict(
            cli.tenant,
            calbridge_store::NewConflict {
                connection_id: Some(cli.connection),
                link_id: None,
                series_id: None,
                other_series_id: None,
                event_uid: "cli-0".into(),
                kind: calbridge_store::ConflictKind::Update,
                local_json: None,
                remote_json: None,
                base_json: None,
                fields_json: r#"["master/SUMMARY"]"#.into(),
                options_json: r#"["keep_local","keep_remote"]"#.into(),
            },
        )
        .await
        .unwrap();
    // `conflicts list` marks a resolution in progress in its last column.
    let list_line = || {
        let listed = run(&["conflicts", "list"]);
        assert!(listed.status.success());
        let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
        stdout
            .lines()
            .find(|l| l.starts_with(&conflict.id.to_string()))
            .unwrap_or_else(|| panic!("{} not listed: {stdout}", conflict.id))
            .to_owned()
    };
    let line = list_line();
    assert!(line.ends_with("\t-"), "{line}");
    assert_eq!(line.split('\t').count(), 7, "{line}");
    store
        .set_conflict_resolving(
            cli.tenant,
            conflict.id,
            Some(r#"{"option":"keep_local","actor":"key:cb_admin","started_at":"2026-11-20T10:00:00Z"}"#),
        )
        .await
        .unwrap();
    let line = list_line();
    assert!(line.contains("\topen\tcli-0\t"), "{line}");
    assert!(line.ends_with("\tresolving:keep_local"), "{line}");
    let shown = run(&["conflicts", "show", &conflict.id.to_string()]);
    assert!(shown.status.success());
    let said = String::from_utf8_lossy(&shown.stderr);
    assert!(
        said.lines().any(|l| l
            == "resolution in progress: keep_local by key:cb_admin, since 2026-11-20T10:00:00Z"),
        "{said}"
    );
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        shown["resolving"],
        serde_json::json!({"option": "keep_local", "decided_by": "key:cb_admin",
                           "since": "2026-11-20T10:00:00Z", "resumed_at": null, "merged": null})
    );
    // Taken up again later: said beside when it was decided.
    store
        .set_conflict_resolving(
            cli.tenant,
            conflict.id,
            Some(r#"{"option":"keep_local","actor":"key:cb_admin","started_at":"2026-11-20T10:00:00Z","resumed_at":"2026-11-20T10:30:00Z"}"#),
        )
        .await
        .unwrap();
    let shown = run(&["conflicts", "show", &conflict.id.to_string()]);
    assert!(shown.status.success());
    let said = String::from_utf8_lossy(&shown.stderr);
    assert!(
        said.lines().any(|l| l
            == "resolution in progress: keep_local by key:cb_admin, since 2026-11-20T10:00:00Z, resumed 2026-11-20T10:30:00Z"),
        "{said}"
    );
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["resolving"]["resumed_at"], "2026-11-20T10:30:00Z");
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
    assert!(listed.contains(&cli.connection.to_string()), "{listed}");
    assert!(listed.contains("caldav\tactive"), "{listed}");
    let shown = run(&["connections", "show", &cli.connection.to_string()]);
    assert!(shown.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["provider"], "caldav");
    assert_eq!(shown["links"].as_array().unwrap().len(), 1, "{shown}");
    let text = shown.to_string();
    assert!(!text.contains(support::PASSWORD), "no password in {text}");
    assert!(!text.contains("credentials"), "no credentials in {text}");
    let tested = run(&["connections", "test", &cli.connection.to_string()]);
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.status.success(), "{out}");
    assert!(out.starts_with("ok\t"), "{out}");
    assert!(!run(&["connections", "show", "not-an-id"]).status.success());
}
