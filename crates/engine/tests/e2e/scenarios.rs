//! The scenarios: a local calendar in a real store linked to one Radicale calendar.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait_free::{Racing, RefusesEveryToken};
use calbridge_engine::{EngineConfig, LinkSync, RunReport, RunStatus, sync_link};
use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::{CalendarId, CalendarProvider, KnownVersions, Window};
use calbridge_store::*;
use jiff::{Timestamp, ToSpan};

use crate::harness::TestDb;
use crate::support::{Radicale, USER};

/// A date-time `days` from now at 10:00 UTC, in iCalendar form.
pub(crate) fn at(days: i64) -> String {
    let day = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(days.days())
        .unwrap();
    format!("{}T100000Z", day.strftime("%Y%m%d"))
}

pub(crate) fn ics(uid: &str, props: &[(&str, &str)]) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//calbridge engine tests//EN".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{uid}"),
        "DTSTAMP:20260101T000000Z".to_owned(),
    ];
    for (k, v) in props {
        lines.push(format!("{k}:{v}"));
    }
    lines.push("END:VEVENT".into());
    lines.push("END:VCALENDAR".into());
    lines.join("\r\n") + "\r\n"
}

pub(crate) fn event(uid: &str, summary: &str, day: i64) -> String {
    ics(
        uid,
        &[
            ("DTSTART", &at(day)),
            ("DURATION", "PT1H"),
            ("SUMMARY", summary),
        ],
    )
}

pub(crate) fn prop(ical: &str, name: &str) -> Option<String> {
    ical.replace("\r\n ", "")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_owned))
}

pub(crate) struct World {
    pub(crate) db: TestDb,
    pub(crate) radicale: std::sync::Arc<Radicale>,
    /// The Radicale calendar (collection) of this world.
    pub(crate) name: String,
    pub(crate) provider: CaldavProvider,
    pub(crate) tenant: TenantId,
    pub(crate) calendar: CalendarId,
    pub(crate) local_calendar: calbridge_store::CalendarId,
    pub(crate) connection: ConnectionId,
    pub(crate) link: LinkId,
}

impl World {
    async fn new(db: TestDb, options: &str) -> Option<Self> {
        let radicale = std::sync::Arc::new(Radicale::start()?);
        Some(Self::on(db, radicale, "work", options).await)
    }

    /// A world on a calendar of its own in a shared Radicale (one process for many scenarios).
    pub(crate) async fn on(
        db: TestDb,
        radicale: std::sync::Arc<Radicale>,
        name: &str,
        options: &str,
    ) -> Self {
        let url = radicale.calendar_url(name);
        radicale.raw().mkcalendar(&url, name).await;
        let provider = radicale.provider();
        let store = db.store.clone();
        let tenant = store.create_tenant("acme").await.unwrap().id;
        let local_calendar = store
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
        let connection = store
            .create_connection(
                tenant,
                NewConnection {
                    provider: Provider::Caldav,
                    name: "radicale".into(),
                    calendar_id: local_calendar,
                    credentials: None,
                    sync_options_json: options.into(),
                    status: ConnectionStatus::Active,
                },
            )
            .await
            .unwrap()
            .id;
        let link = store
            .create_link(
                tenant,
                NewLink {
                    connection_id: connection,
                    remote_calendar_id: format!("/{USER}/{name}/"),
                    remote_name: Some(name.into()),
                },
            )
            .await
            .unwrap()
            .id;
        Self {
            calendar: CalendarId::parse(format!("/{USER}/{name}/")).unwrap(),
            db,
            radicale,
            name: name.to_owned(),
            provider,
            tenant,
            local_calendar,
            connection,
            link,
        }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    pub(crate) async fn sync_with(
        &self,
        provider: &dyn CalendarProvider,
        config: &EngineConfig,
    ) -> RunReport {
        self.sync_full(provider, config, false).await
    }

    pub(crate) async fn sync_full(
        &self,
        provider: &dyn CalendarProvider,
        config: &EngineConfig,
        full: bool,
    ) -> RunReport {
        self.try_sync(provider, config, full).await.unwrap()
    }

    /// A sync that may fail as a whole (a crash knob stops it with an error, as a kill would).
    pub(crate) async fn try_sync(
        &self,
        provider: &dyn CalendarProvider,
        config: &EngineConfig,
        full: bool,
    ) -> Result<RunReport, calbridge_engine::EngineError> {
        let connection = self
            .store()
            .get_connection(self.tenant, self.connection)
            .await
            .unwrap();
        let link = self.store().get_link(self.tenant, self.link).await.unwrap();
        sync_link(LinkSync {
            store: self.store(),
            provider,
            tenant: self.tenant,
            connection: &connection,
            link: &link,
            config,
            now: Timestamp::now(),
            full,
            run: None,
        })
        .await
    }

    pub(crate) async fn sync(&self) -> RunReport {
        self.sync_with(&self.provider, &EngineConfig::default())
            .await
    }

    /// Syncs until a run changes nothing (bounded).
    pub(crate) async fn settle(&self) {
        self.settle_with(&self.provider).await;
    }

    /// Syncs through `provider` until a run changes nothing (bounded); answers that run. Not "until
    /// a run reports no count": runs also count what they read (`crate::made_changes`).
    pub(crate) async fn settle_with(&self, provider: &dyn CalendarProvider) -> RunReport {
        for _ in 0..4 {
            let report = self.sync_with(provider, &EngineConfig::default()).await;
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            if !crate::made_changes(&report) {
                return report;
            }
        }
        panic!("sync did not settle");
    }

    pub(crate) async fn set_options(&self, options: &str) {
        self.store()
            .update_connection(
                self.tenant,
                self.connection,
                None,
                ConnectionUpdate {
                    name: "radicale".into(),
                    sync_options_json: options.into(),
                },
            )
            .await
            .unwrap();
    }

    // --- the local side, written as an application would ---

    pub(crate) async fn local_create(&self, ical: &str) -> SeriesId {
        let uid = prop(ical, "UID").unwrap();
        self.store()
            .create_series(
                self.tenant,
                NewSeries {
                    calendar_id: self.local_calendar,
                    uid,
                    ical: ical.to_owned(),
                    model_json: "{}".into(),
                    hash: "test".into(),
                    occurrences: OccurrenceSet::default(),
                },
            )
            .await
            .unwrap()
            .id
    }

    pub(crate) async fn local_by_uid(&self, uid: &str) -> Option<Series> {
        self.store()
            .get_series_by_uid(self.tenant, self.local_calendar, uid)
            .await
            .unwrap()
    }

    pub(crate) async fn local_edit(&self, uid: &str, ical: &str) {
        let series = self.local_by_uid(uid).await.unwrap();
        self.store()
            .update_series(
                self.tenant,
                series.id,
                series.version,
                SeriesUpdate {
                    ical: ical.to_owned(),
                    model_json: "{}".into(),
                    hash: "test".into(),
                    occurrences: OccurrenceSet::default(),
                },
            )
            .await
            .unwrap();
    }

    pub(crate) async fn local_delete(&self, uid: &str) {
        let series = self.local_by_uid(uid).await.unwrap();
        self.store()
            .delete_series(self.tenant, series.id, series.version)
            .await
            .unwrap();
    }

    /// UID → summaries of the live local series (a UID twice would show two entries).
    pub(crate) async fn local_all(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self
            .store()
            .list_series(self.tenant, self.local_calendar, None, 1000)
            .await
            .unwrap()
        {
            out.entry(s.uid.clone())
                .or_default()
                .push(prop(&s.ical, "SUMMARY").unwrap_or_default());
        }
        out
    }

    // --- the remote side, written by "another calendar app" on the same account ---

    pub(crate) fn href(&self, name: &str) -> String {
        format!("{}{name}.ics", self.radicale.calendar_url(&self.name))
    }

    pub(crate) async fn remote_put(&self, name: &str, ical: &str) {
        let response = self.radicale.raw().put(&self.href(name), ical).await;
        assert!(
            response.status().is_success(),
            "PUT {name}: {}",
            response.status()
        );
    }

    /// Overwrites the remote item holding `uid`, wherever it lives.
    pub(crate) async fn remote_edit(&self, uid: &str, ical: &str) {
        let (url, _) = self.remote_item(uid).await.unwrap();
        let response = self.radicale.raw().put(&url, ical).await;
        assert!(response.status().is_success());
    }

    pub(crate) async fn remote_delete(&self, uid: &str) {
        let (url, _) = self.remote_item(uid).await.unwrap();
        let response = self.radicale.raw().request("DELETE", &url, &[], None).await;
        assert!(response.status().is_success());
    }

    pub(crate) async fn remote_items(&self) -> Vec<(String, String)> {
        let window = Window::parse(
            "2000-01-01T00:00:00Z".parse().unwrap(),
            "2100-01-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let set = self
            .provider
            .changes(&self.calendar, None, &window, &KnownVersions::new())
            .await
            .unwrap();
        set.upserts
            .into_iter()
            .map(|i| {
                (
                    format!("http://127.0.0.1:{}{}", self.radicale.port, i.id.as_str()),
                    i.content.as_ical().to_owned(),
                )
            })
            .collect()
    }

    pub(crate) async fn remote_item(&self, uid: &str) -> Option<(String, String)> {
        self.remote_items()
            .await
            .into_iter()
            .find(|(_, ical)| prop(ical, "UID").as_deref() == Some(uid))
    }

    pub(crate) async fn remote_all(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, ical) in self.remote_items().await {
            out.entry(prop(&ical, "UID").unwrap())
                .or_default()
                .push(prop(&ical, "SUMMARY").unwrap_or_default());
        }
        out
    }

    pub(crate) async fn open_conflicts(&self) -> Vec<Conflict> {
        self.store()
            .list_conflicts(
                self.tenant,
                &ConflictFilter {
                    state: Some(ConflictState::Open),
                    connection_id: Some(self.connection),
                    link_id: None,
                    kind: None,
                },
            )
            .await
            .unwrap()
    }

    pub(crate) async fn all_conflicts(&self) -> Vec<Conflict> {
        self.store()
            .list_conflicts(self.tenant, &ConflictFilter::default())
            .await
            .unwrap()
    }

    /// Both sides hold the same UIDs with the same summaries, each exactly once.
    pub(crate) async fn assert_converged(&self) -> BTreeMap<String, Vec<String>> {
        let local = self.local_all().await;
        let remote = self.remote_all().await;
        assert_eq!(local, remote, "local and remote differ");
        for (uid, summaries) in &local {
            assert_eq!(summaries.len(), 1, "{uid} is duplicated: {summaries:?}");
        }
        local
    }
}

pub(crate) fn one(map: &BTreeMap<String, Vec<String>>, uid: &str) -> String {
    map.get(uid)
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_else(|| panic!("{uid} missing from {map:?}"))
}

pub async fn initial_import_both_ways_pairs_same_uid_and_respects_the_window(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("local-1", "Local one", 1)).await;
    w.local_create(&event("local-2", "Local two", 5)).await;
    w.local_create(&event("shared", "Shared", 3)).await;
    w.local_create(&event("local-far", "Next year", 400)).await;
    w.remote_put("r1", &event("remote-1", "Remote one", 2))
        .await;
    w.remote_put("shared", &event("shared", "Shared", 3)).await;
    w.remote_put("rfar", &event("remote-far", "Far past", -400))
        .await;

    let first = w.sync().await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.errors);
    assert!(first.full_listing);
    crate::assert_counts(&first, &[("create_remote", 2), ("create_local", 1)]);
    assert_eq!(
        first.counts.get("link"),
        Some(&1),
        "the shared UID is paired: {:?}",
        first.counts
    );

    let local = w.local_all().await;
    let remote = w.remote_all().await;
    for uid in ["local-1", "local-2", "shared", "remote-1"] {
        assert_eq!(
            local.get(uid).map(Vec::len),
            Some(1),
            "local {uid}: {local:?}"
        );
        assert_eq!(
            remote.get(uid).map(Vec::len),
            Some(1),
            "remote {uid}: {remote:?}"
        );
    }
    // Outside the window: neither exported nor imported, and not deleted either.
    assert!(!remote.contains_key("local-far"));
    assert!(!local.contains_key("remote-far"));
    assert!(local.contains_key("local-far"));
    assert!(remote.contains_key("remote-far"));

    // The run's own writes come back (local change stream, remote sync-collection) and are recognised.
    // The imported series is dropped from the change stream unread: it is still at the version its
    // pair was recorded at.
    let second = w.sync().await;
    assert_eq!(second.status, RunStatus::Succeeded);
    assert_eq!(
        second.counts,
        std::collections::BTreeMap::from([("local_unchanged_since_pair".to_owned(), 1)]),
        "echo planned work"
    );
    // A no-op sync is one request. On Radicale (the date gate, `caldav/gate.rs`) it is a PROPFIND of
    // the collection's date once that date has settled, 2 s after the last write; until then the
    // no-ops list (the first right after the echo run's changes without the date, the next with
    // it). Elsewhere it is one sync-collection REPORT.
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    for _ in 0..2 {
        let settling = w.sync().await;
        assert!(settling.counts.is_empty());
        assert!(settling.requests <= 2, "{}", settling.requests);
    }
    let third = w.sync().await;
    assert!(third.counts.is_empty());
    assert_eq!(third.requests, 1);
    let run = w
        .store()
        .get_sync_run(w.tenant, third.run_id)
        .await
        .unwrap();
    assert_eq!((run.status, run.requests), (SyncRunStatus::Succeeded, 1));
    let link = w.store().get_link(w.tenant, w.link).await.unwrap();
    assert!(link.cursor.is_some() && link.local_cursor.is_some());
}

pub async fn incremental_edits_merge_field_by_field(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("a", "Alpha", 1)).await;
    w.local_create(&event("b", "Beta", 2)).await;
    w.remote_put("c", &event("c", "Gamma", 3)).await;
    w.settle().await;

    // Different fields of one event on the two sides: merged silently on both.
    let start = at(1);
    w.local_edit(
        "a",
        &ics(
            "a",
            &[
                ("DTSTART", &start),
                ("DURATION", "PT1H"),
                ("SUMMARY", "Alpha (local)"),
            ],
        ),
    )
    .await;
    w.remote_edit(
        "a",
        &ics(
            "a",
            &[
                ("DTSTART", &start),
                ("DURATION", "PT1H"),
                ("SUMMARY", "Alpha"),
                ("LOCATION", "Room 7"),
            ],
        ),
    )
    .await;
    // One-sided edits on each side.
    w.local_edit("b", &event("b", "Beta (local)", 2)).await;
    w.remote_edit("c", &event("c", "Gamma (remote)", 3)).await;

    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    assert!(w.open_conflicts().await.is_empty());
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(one(&both, "a"), "Alpha (local)");
    assert_eq!(one(&both, "b"), "Beta (local)");
    assert_eq!(one(&both, "c"), "Gamma (remote)");
    let local_a = w.local_by_uid("a").await.unwrap();
    assert_eq!(prop(&local_a.ical, "LOCATION").as_deref(), Some("Room 7"));
    let (_, remote_a) = w.remote_item("a").await.unwrap();
    assert_eq!(prop(&remote_a, "LOCATION").as_deref(), Some("Room 7"));
    assert_eq!(prop(&remote_a, "SUMMARY").as_deref(), Some("Alpha (local)"));
}

async fn conflicting_edit(w: &World, remote_extra: &[(&str, &str)]) {
    w.local_create(&event("x", "Base", 2)).await;
    w.settle().await;
    w.local_edit("x", &event("x", "Local title", 2)).await;
    let start = at(2);
    let mut props = vec![
        ("DTSTART", start.as_str()),
        ("DURATION", "PT1H"),
        ("SUMMARY", "Remote title"),
    ];
    props.extend_from_slice(remote_extra);
    w.remote_edit("x", &ics("x", &props)).await;
}

pub async fn update_conflict_under_ask_is_stored_and_parked(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    conflicting_edit(&w, &[]).await;
    let report = w.sync().await;
    assert_eq!(report.counts.get("conflicts"), Some(&1));
    let open = w.open_conflicts().await;
    assert_eq!(open.len(), 1);
    let c = &open[0];
    assert_eq!((c.kind, c.event_uid.as_str()), (ConflictKind::Update, "x"));
    assert!(
        c.fields_json.contains("master/SUMMARY"),
        "{}",
        c.fields_json
    );
    assert!(c.options_json.contains("keep_local"));
    assert!(c.local_json.as_deref().unwrap().contains("Local title"));
    assert!(c.remote_json.as_deref().unwrap().contains("Remote title"));
    assert!(c.base_json.as_deref().unwrap().contains("Base"));
    // Nothing was overwritten on either side.
    assert_eq!(one(&w.local_all().await, "x"), "Local title");
    assert_eq!(one(&w.remote_all().await, "x"), "Remote title");
    // Detection is in the audit log.
    let audit = w.store().list_audit(w.tenant, None, 50).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "conflict.detected" && e.subject == c.id.to_string())
    );
    // Parked: a run with nothing new neither writes it nor records it again.
    let quiet = w.sync().await;
    assert!(quiet.counts.is_empty(), "{:?}", quiet.counts);
    assert_eq!(w.all_conflicts().await.len(), 1);
    // A side that moves on supersedes it: recorded again with the versions of now, nothing written.
    w.local_edit("x", &event("x", "Local title 2", 2)).await;
    let again = w.sync().await;
    crate::assert_counts(&again, &[("conflicts_superseded", 1), ("conflicts", 1)]);
    let open = w.open_conflicts().await;
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].id, c.id);
    assert!(
        open[0]
            .local_json
            .as_deref()
            .unwrap()
            .contains("Local title 2")
    );
    assert!(
        open[0]
            .remote_json
            .as_deref()
            .unwrap()
            .contains("Remote title")
    );
    assert_eq!(w.all_conflicts().await.len(), 2);
    assert_eq!(one(&w.remote_all().await, "x"), "Remote title");
    assert_eq!(one(&w.local_all().await, "x"), "Local title 2");
    let later = w.sync().await;
    assert!(later.counts.is_empty(), "{:?}", later.counts);
}

pub async fn update_conflict_under_each_automatic_policy(db: TestDb) {
    let Some(w) = World::new(db, r#"{"conflict_resolution":"local_wins"}"#).await else {
        return;
    };
    // One world, one event per policy (a fresh Radicale per policy would only cost time).
    let cases = [
        ("local_wins", "Local title", vec![]),
        ("remote_wins", "Remote title", vec![]),
        // The remote side says it was modified later, so it wins.
        (
            "newest_wins",
            "Remote title",
            vec![("LAST-MODIFIED", "20990101T000000Z")],
        ),
        // No modification times: a tie goes to the local side.
        ("newest_wins", "Local title", vec![]),
        ("keep_both", "Local title", vec![]),
    ];
    for (n, (policy, winner, extra)) in cases.iter().enumerate() {
        w.set_options(&format!(r#"{{"conflict_resolution":"{policy}"}}"#))
            .await;
        let uid = format!("p{n}");
        // A day each: events at one time would (rightly) be time conflicts of their own.
        let day = 2 + n as i64;
        w.local_create(&event(&uid, "Base", day)).await;
        w.settle().await;
        w.local_edit(&uid, &event(&uid, "Local title", day)).await;
        let start = at(day);
        let mut props = vec![
            ("DTSTART", start.as_str()),
            ("DURATION", "PT1H"),
            ("SUMMARY", "Remote title"),
        ];
        props.extend(extra.iter().copied());
        w.remote_edit(&uid, &ics(&uid, &props)).await;
        let report = w.sync().await;
        assert_eq!(
            report.status,
            RunStatus::Succeeded,
            "{policy}: {:?}",
            report.errors
        );
        assert_eq!(report.counts.get("conflicts"), Some(&1), "{policy}");
        w.settle().await;
        let both = w.assert_converged().await;
        assert_eq!(one(&both, &uid), *winner, "{policy}");
        if *policy == "keep_both" {
            let copy = both
                .iter()
                .find(|(k, _)| k.starts_with(&format!("{uid}-copy-")))
                .unwrap_or_else(|| panic!("no copy in {both:?}"));
            assert_eq!(copy.1, &vec!["Remote title".to_owned()]);
        }
    }
    // Settled conflicts are recorded closed, with detection and settlement audited.
    assert!(w.open_conflicts().await.is_empty());
    let all = w.all_conflicts().await;
    assert_eq!(all.len(), cases.len());
    assert!(all.iter().all(|c| c.state == ConflictState::Resolved));
    let audit = w.store().list_audit(w.tenant, None, 100).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "conflict.settled")
            .count(),
        cases.len()
    );
}

pub async fn deletions_propagate_both_ways_with_tombstones(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    for (uid, day) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        w.local_create(&event(uid, uid, day)).await;
    }
    w.settle().await;
    w.local_delete("a").await;
    w.remote_delete("b").await;
    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    assert_eq!(report.counts.get("delete_remote"), Some(&1));
    assert_eq!(report.counts.get("delete_local"), Some(&1));
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(both.keys().cloned().collect::<Vec<_>>(), ["c", "d"]);
    let tombstones = w
        .store()
        .list_tombstones(w.tenant, Some(w.link))
        .await
        .unwrap();
    assert_eq!(tombstones.len(), 2);
    let retention = tombstones[0]
        .expires_at
        .duration_since(tombstones[0].deleted_at);
    assert_eq!(retention, jiff::SignedDuration::from_hours(24 * 30));
    assert!(
        w.store()
            .list_mappings(w.tenant, w.link)
            .await
            .unwrap()
            .len()
            == 2
    );
}

/// The change stream keeps a week; a link whose local cursor fell behind what it still holds reads
/// the local side in full, so the edits and deletions the stream no longer names still go out (they
/// used to wait for the daily full reconciliation).
pub async fn a_local_cursor_the_stream_no_longer_covers_reads_the_local_side_in_full(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    for (uid, day) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        w.local_create(&event(uid, uid, day)).await;
    }
    w.settle().await;
    w.local_edit("a", &event("a", "a (edited)", 1)).await;
    w.local_delete("b").await;
    // Retention drops every entry, the edit and the deletion among them.
    let later = Timestamp::now().checked_add(1.second()).unwrap();
    assert!(w.store().purge_changes(later).await.unwrap() >= 2);
    assert!(
        w.store()
            .list_changes(w.tenant, 0, None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    crate::assert_counts(
        &report,
        &[
            ("local_stream_expired", 1),
            ("update_remote", 1),
            ("delete_remote", 1),
        ],
    );
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(both.keys().cloned().collect::<Vec<_>>(), ["a", "c", "d"]);
    assert_eq!(one(&both, "a"), "a (edited)");

    // The cursor this run committed is past the floor again: the next run is incremental.
    w.local_edit("c", &event("c", "c (edited)", 3)).await;
    let next = w.sync().await;
    crate::assert_counts(&next, &[("local_stream_expired", 0), ("update_remote", 1)]);
}

pub async fn deletion_conflict_is_stored(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("a", "Alpha", 1)).await;
    w.local_create(&event("b", "Beta", 2)).await;
    w.settle().await;
    // Deleted here, edited there.
    w.local_delete("a").await;
    w.remote_edit("a", &event("a", "Alpha edited", 1)).await;
    // Edited here, deleted there.
    w.local_edit("b", &event("b", "Beta edited", 2)).await;
    w.remote_delete("b").await;
    let report = w.sync().await;
    crate::assert_counts(&report, &[("conflicts", 2)]);
    let open = w.open_conflicts().await;
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|c| c.kind == ConflictKind::Deletion));
    assert!(open.iter().all(|c| c.options_json.contains("restore")));
    // Nothing deleted or restored while it waits.
    assert!(w.local_by_uid("a").await.is_none());
    assert_eq!(one(&w.remote_all().await, "a"), "Alpha edited");
    assert_eq!(one(&w.local_all().await, "b"), "Beta edited");
    assert!(!w.remote_all().await.contains_key("b"));
}

pub async fn a_stale_if_match_is_reported_while_the_rest_commits(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("a", "Alpha", 1)).await;
    w.local_create(&event("b", "Beta", 2)).await;
    w.settle().await;
    let cursor_before = w.store().get_link(w.tenant, w.link).await.unwrap().cursor;
    w.local_edit("a", &event("a", "Alpha (local)", 1)).await;
    w.local_edit("b", &event("b", "Beta (local)", 2)).await;
    // Someone edits "a" on the server between our listing and our write: our If-Match is stale.
    let (url, _) = w.remote_item("a").await.unwrap();
    let racing = Racing {
        inner: &w.provider,
        before_update: Mutex::new(Some((
            url,
            ics(
                "a",
                &[
                    ("DTSTART", &at(1)),
                    ("DURATION", "PT1H"),
                    ("SUMMARY", "Alpha"),
                    ("LOCATION", "Lab"),
                ],
            ),
        ))),
    };
    let report = w.sync_with(&racing, &EngineConfig::default()).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].class, "precondition");
    // "b" committed, "a" was not overwritten, and the cursor stayed.
    assert_eq!(one(&w.remote_all().await, "b"), "Beta (local)");
    let (_, remote_a) = w.remote_item("a").await.unwrap();
    assert_eq!(prop(&remote_a, "SUMMARY").as_deref(), Some("Alpha"));
    assert_eq!(
        w.store().get_link(w.tenant, w.link).await.unwrap().cursor,
        cursor_before
    );
    let run = w
        .store()
        .get_sync_run(w.tenant, report.run_id)
        .await
        .unwrap();
    assert_eq!(run.status, SyncRunStatus::Partial);
    assert!(run.errors_json.contains("precondition"));
    // The next run merges both edits (different fields).
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(one(&both, "a"), "Alpha (local)");
    assert_eq!(
        prop(&w.local_by_uid("a").await.unwrap().ical, "LOCATION").as_deref(),
        Some("Lab")
    );
}

pub async fn interrupted_runs_converge_without_loss_or_duplicates(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    for n in 0..4 {
        w.local_create(&event(&format!("l{n}"), &format!("Local {n}"), n + 1))
            .await;
        w.remote_put(
            &format!("r{n}"),
            &event(&format!("r{n}"), &format!("Remote {n}"), n + 1),
        )
        .await;
    }
    w.remote_put("both", &event("both", "Both", 9)).await;
    w.local_create(&event("both", "Both", 9)).await;
    // Die after 1, 2, 3... actions (each time after the side effect, before the base is recorded).
    for limit in 1..=4 {
        let config = EngineConfig {
            crash_after_actions: Some(limit),
            ..EngineConfig::default()
        };
        let report = w.sync_with(&w.provider, &config).await;
        assert_eq!(report.status, RunStatus::Interrupted);
        assert!(
            w.store()
                .get_link(w.tenant, w.link)
                .await
                .unwrap()
                .cursor
                .is_none()
        );
    }
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(both.len(), 9, "{both:?}");
    // Edits after the crashes flow normally, crashed again midway.
    w.local_edit("l0", &event("l0", "Local 0 edited", 1)).await;
    w.remote_edit("r0", &event("r0", "Remote 0 edited", 1))
        .await;
    let config = EngineConfig {
        crash_after_actions: Some(1),
        ..EngineConfig::default()
    };
    w.sync_with(&w.provider, &config).await;
    w.settle().await;
    let both = w.assert_converged().await;
    assert_eq!(one(&both, "l0"), "Local 0 edited");
    assert_eq!(one(&both, "r0"), "Remote 0 edited");
    assert!(w.open_conflicts().await.is_empty());
}

pub async fn a_mass_deletion_marks_the_link_suspect_and_deletes_nothing(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    for n in 0..12 {
        w.local_create(&event(&format!("e{n}"), "Event", 1 + n % 20))
            .await;
    }
    w.settle().await;
    for n in 0..11 {
        w.remote_delete(&format!("e{n}")).await;
    }
    let cursor = w.store().get_link(w.tenant, w.link).await.unwrap().cursor;
    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Suspect);
    let link = w.store().get_link(w.tenant, w.link).await.unwrap();
    assert_eq!(link.status, LinkStatus::Suspect);
    assert!(link.status_reason.unwrap().contains("TooManyDeletions"));
    assert_eq!(link.cursor, cursor);
    assert_eq!(w.local_all().await.len(), 12, "nothing deleted locally");
}

/// The deletions a run carries out come back in the next run's changes (the local change stream
/// names the series it deleted for remote deletions, the provider's delta the items it deleted for
/// local ones). They have no pair any more and nothing is propagated for them, so the deletion guard
/// does not count them: the next run reads only the pairs its changes name, not every pair of the
/// link (`pairs_read_in_full` in the run's counts). A real mass deletion still trips the guard.
pub async fn echoed_deletions_do_not_make_the_next_run_read_every_pair(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    // One event a day: no time conflicts in the counts.
    for n in 0..30 {
        w.local_create(&event(&format!("e{n}"), "Event", 1 + n))
            .await;
    }
    w.settle().await;

    // Remote deletions applied locally: a third of the link, let through by the guard, which read
    // every pair to weigh them.
    for n in 0..10 {
        w.remote_delete(&format!("e{n}")).await;
    }
    let applied = w.sync().await;
    assert_eq!(applied.status, RunStatus::Succeeded, "{:?}", applied.errors);
    crate::assert_counts(
        &applied,
        &[("delete_local", 10), ("pairs_read_in_full", 30)],
    );
    let echo = w.sync().await;
    assert_eq!(echo.status, RunStatus::Succeeded, "{:?}", echo.errors);
    crate::assert_counts(&echo, &[("pairs_read_in_full", 0)]);

    // Local deletions propagated to the provider: half of the 20 left, let through as well.
    for n in 10..20 {
        w.local_delete(&format!("e{n}")).await;
    }
    let applied = w.sync().await;
    assert_eq!(applied.status, RunStatus::Succeeded, "{:?}", applied.errors);
    crate::assert_counts(
        &applied,
        &[("delete_remote", 10), ("pairs_read_in_full", 20)],
    );
    let echo = w.sync().await;
    assert_eq!(echo.status, RunStatus::Succeeded, "{:?}", echo.errors);
    crate::assert_counts(&echo, &[("pairs_read_in_full", 0)]);
    assert_eq!(w.assert_converged().await.len(), 10);

    // Every remaining series deleted locally: the guard stops the run, nothing leaves.
    for n in 20..30 {
        w.local_delete(&format!("e{n}")).await;
    }
    let suspect = w.sync().await;
    assert_eq!(suspect.status, RunStatus::Suspect);
    let link = w.store().get_link(w.tenant, w.link).await.unwrap();
    assert!(link.status_reason.unwrap().contains("TooManyDeletions"));
    assert_eq!(w.remote_all().await.len(), 10, "nothing deleted remotely");
}

mod async_trait_free {
    //! A real provider with one person racing it: right before the first update of a given item, that
    //! item is changed on the server by another client (a stale `If-Match` at exactly the worst time).
    use std::sync::Mutex;

    use calbridge_providers::caldav::CaldavProvider;
    use calbridge_providers::*;

    #[derive(Debug)]
    pub struct Racing<'a> {
        pub inner: &'a CaldavProvider,
        /// (item URL, content to PUT) before the first update.
        pub before_update: Mutex<Option<(String, String)>>,
    }

    #[async_trait::async_trait]
    impl CalendarProvider for Racing<'_> {
        fn kind(&self) -> ProviderKind {
            self.inner.kind()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn test_connection(&self) -> Diagnosis {
            self.inner.test_connection().await
        }
        async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError> {
            self.inner.list_calendars().await
        }
        async fn changes(
            &self,
            calendar: &CalendarId,
            cursor: Option<&Cursor>,
            window: &Window,
            known: &dyn HeldVersions,
        ) -> Result<ChangeSet, ProviderError> {
            self.inner.changes(calendar, cursor, window, known).await
        }
        async fn read(
            &self,
            calendar: &CalendarId,
            ids: &[RemoteId],
        ) -> Result<Vec<ReadItem>, ProviderError> {
            self.inner.read(calendar, ids).await
        }
        async fn create(
            &self,
            calendar: &CalendarId,
            key: &CreateKey,
            content: &ItemContent,
        ) -> Result<Written, ProviderError> {
            self.inner.create(calendar, key, content).await
        }
        async fn update(
            &self,
            calendar: &CalendarId,
            id: &RemoteId,
            if_match: &Etag,
            content: &ItemContent,
        ) -> Result<Written, ProviderError> {
            let race = self.before_update.lock().unwrap().take();
            match race {
                Some((url, body)) if url.ends_with(id.as_str()) => {
                    let response = reqwest::Client::new()
                        .put(&url)
                        .basic_auth(crate::support::USER, Some(crate::support::PASSWORD))
                        .header("Content-Type", "text/calendar")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                }
                other => *self.before_update.lock().unwrap() = other,
            }
            self.inner.update(calendar, id, if_match, content).await
        }
        async fn delete(
            &self,
            calendar: &CalendarId,
            id: &RemoteId,
            if_match: &Etag,
        ) -> Result<(), ProviderError> {
            self.inner.delete(calendar, id, if_match).await
        }
        async fn free_busy(
            &self,
            calendar: &CalendarId,
            window: &Window,
        ) -> Result<Vec<BusyPeriod>, ProviderError> {
            self.inner.free_busy(calendar, window).await
        }
    }

    /// A real Radicale connector behind a server that refuses every sync token (as one that keeps
    /// losing its sync state does): each read hands the connector a token Radicale never issued, so
    /// Radicale answers 403 `valid-sync-token` and every read is the complete listing the connector
    /// falls back to (`FullListingReason::CursorInvalid`). Everything else goes straight through.
    #[derive(Debug)]
    pub struct RefusesEveryToken<'a> {
        pub inner: &'a CaldavProvider,
    }

    #[async_trait::async_trait]
    impl CalendarProvider for RefusesEveryToken<'_> {
        fn kind(&self) -> ProviderKind {
            self.inner.kind()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn test_connection(&self) -> Diagnosis {
            self.inner.test_connection().await
        }
        async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError> {
            self.inner.list_calendars().await
        }
        async fn changes(
            &self,
            calendar: &CalendarId,
            _cursor: Option<&Cursor>,
            window: &Window,
            known: &dyn HeldVersions,
        ) -> Result<ChangeSet, ProviderError> {
            let refused = Cursor::parse(
                "sync:http://radicale.org/ns/sync/0000000000000000000000000000000000000000",
            )?;
            let set = self
                .inner
                .changes(calendar, Some(&refused), window, known)
                .await?;
            assert_eq!(set.full_listing, Some(FullListingReason::CursorInvalid));
            Ok(set)
        }
        async fn read(
            &self,
            calendar: &CalendarId,
            ids: &[RemoteId],
        ) -> Result<Vec<ReadItem>, ProviderError> {
            self.inner.read(calendar, ids).await
        }
        async fn create(
            &self,
            calendar: &CalendarId,
            key: &CreateKey,
            content: &ItemContent,
        ) -> Result<Written, ProviderError> {
            self.inner.create(calendar, key, content).await
        }
        async fn update(
            &self,
            calendar: &CalendarId,
            id: &RemoteId,
            if_match: &Etag,
            content: &ItemContent,
        ) -> Result<Written, ProviderError> {
            self.inner.update(calendar, id, if_match, content).await
        }
        async fn delete(
            &self,
            calendar: &CalendarId,
            id: &RemoteId,
            if_match: &Etag,
        ) -> Result<(), ProviderError> {
            self.inner.delete(calendar, id, if_match).await
        }
        async fn free_busy(
            &self,
            calendar: &CalendarId,
            window: &Window,
        ) -> Result<Vec<BusyPeriod>, ProviderError> {
            self.inner.free_busy(calendar, window).await
        }
    }
}

/// A link whose every run is a complete listing (a server that refuses every sync token, as one that
/// keeps losing its sync state does) settles at the first run that changes nothing, and every later
/// run lists in full and changes nothing. That first run is the echo of the import: it reports what
/// it read (the imported series in the local change stream, left unread at its pair's version), not a
/// change; settling used to wait for a run that reported no count at all.
pub async fn a_link_listed_in_full_every_run_settles(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    let lists_in_full = RefusesEveryToken { inner: &w.provider };
    w.local_create(&event("local", "Local", 1)).await;
    w.remote_put("remote", &event("remote", "Remote", 2)).await;
    let first = w.sync_with(&lists_in_full, &EngineConfig::default()).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.errors);
    crate::assert_counts(&first, &[("create_remote", 1), ("create_local", 1)]);

    let settled = w.settle_with(&lists_in_full).await;
    assert!(settled.full_listing);
    assert_eq!(settled.status, RunStatus::Succeeded);
    assert_eq!(
        settled.counts,
        BTreeMap::from([("local_unchanged_since_pair".to_owned(), 1)]),
        "the echo run changes nothing"
    );
    // Every later run lists in full too, and changes nothing.
    let again = w.sync_with(&lists_in_full, &EngineConfig::default()).await;
    assert!(again.full_listing);
    assert!(!crate::made_changes(&again), "{:?}", again.counts);
    assert_eq!(one(&w.remote_all().await, "local"), "Local");
    assert_eq!(one(&w.local_all().await, "remote"), "Remote");

    // A change on either side is still carried over by the full listings, and the link settles again.
    w.remote_edit("remote", &event("remote", "Remote edited", 2))
        .await;
    w.local_edit("local", &event("local", "Local edited", 1))
        .await;
    w.settle_with(&lists_in_full).await;
    assert_eq!(one(&w.remote_all().await, "local"), "Local edited");
    assert_eq!(one(&w.local_all().await, "remote"), "Remote edited");
}

pub async fn one_way_links_never_write_the_other_side(db: TestDb) {
    // import: provider → application; local edits and deletions never reach the provider.
    let Some(w) = World::new(db, r#"{"direction":"import"}"#).await else {
        return;
    };
    w.remote_put("a", &event("a", "Alpha", 1)).await;
    w.local_create(&event("l", "Local only", 2)).await;
    w.settle().await;
    assert_eq!(one(&w.local_all().await, "a"), "Alpha");
    assert!(
        !w.remote_all().await.contains_key("l"),
        "import exported a local event"
    );
    w.local_edit("a", &event("a", "Alpha (local)", 1)).await;
    w.settle().await;
    assert_eq!(one(&w.remote_all().await, "a"), "Alpha");
    w.remote_edit("a", &event("a", "Alpha (remote)", 1)).await;
    w.settle().await;
    assert_eq!(one(&w.local_all().await, "a"), "Alpha (remote)");

    // export: application → provider; remote edits are reverted, local events never change.
    // A changed direction is followed by a full reconciliation (the cursors only cover what the old
    // direction let through).
    w.set_options(r#"{"direction":"export"}"#).await;
    let full = w
        .sync_full(&w.provider, &EngineConfig::default(), true)
        .await;
    assert!(full.full_listing);
    w.settle().await;
    assert_eq!(one(&w.remote_all().await, "l"), "Local only");
    w.remote_edit("l", &event("l", "Edited on the server", 2))
        .await;
    w.settle().await;
    assert_eq!(one(&w.local_all().await, "l"), "Local only");
    assert_eq!(
        one(&w.remote_all().await, "l"),
        "Local only",
        "export did not revert"
    );
}

pub async fn an_occurrence_edit_merges_as_that_override(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    let start = at(1);
    let master = |location: &str| {
        vec![
            "BEGIN:VEVENT".to_owned(),
            "UID:standup".to_owned(),
            "DTSTAMP:20260101T000000Z".to_owned(),
            format!("DTSTART:{start}"),
            "DURATION:PT30M".to_owned(),
            "RRULE:FREQ=DAILY;COUNT=5".to_owned(),
            "SUMMARY:Standup".to_owned(),
            format!("LOCATION:{location}"),
            "END:VEVENT".to_owned(),
        ]
    };
    let wrap = |events: Vec<String>| {
        let mut lines = vec![
            "BEGIN:VCALENDAR".to_owned(),
            "VERSION:2.0".to_owned(),
            "PRODID:-//calbridge engine tests//EN".to_owned(),
        ];
        lines.extend(events);
        lines.push("END:VCALENDAR".into());
        lines.join("\r\n") + "\r\n"
    };
    w.local_create(&wrap(master("Room 1"))).await;
    w.settle().await;
    // Remote: the third occurrence moves by an hour. Local: the whole series changes room.
    let third = at(3);
    let moved = third.replace("T100000Z", "T110000Z");
    let mut remote = master("Room 1");
    remote.extend([
        "BEGIN:VEVENT".to_owned(),
        "UID:standup".to_owned(),
        "DTSTAMP:20260101T000000Z".to_owned(),
        format!("RECURRENCE-ID:{third}"),
        format!("DTSTART:{moved}"),
        "DURATION:PT30M".to_owned(),
        "SUMMARY:Standup (moved)".to_owned(),
        "END:VEVENT".to_owned(),
    ]);
    w.remote_edit("standup", &wrap(remote)).await;
    w.local_edit("standup", &wrap(master("Room 2"))).await;
    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    assert!(w.open_conflicts().await.is_empty());
    w.settle().await;
    let local = w
        .local_by_uid("standup")
        .await
        .unwrap()
        .ical
        .replace("\r\n ", "");
    let (_, remote) = w.remote_item("standup").await.unwrap();
    let remote = remote.replace("\r\n ", "");
    for side in [&local, &remote] {
        assert!(side.contains("LOCATION:Room 2"), "{side}");
        assert!(side.contains(&format!("RECURRENCE-ID:{third}")), "{side}");
        assert!(side.contains("SUMMARY:Standup (moved)"), "{side}");
        assert_eq!(side.matches("BEGIN:VEVENT").count(), 2, "{side}");
    }
}

/// Regression (found by the `kill -9` crash test in `crates/cli/tests/crash_sync.rs`): a run that dies
/// right after a write, before recording it, must not take its own write for someone else's change
/// when the next run comes, even if the other side changed meanwhile.
pub async fn writes_of_a_killed_run_are_recognised_as_its_own(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    let crash_after_one = EngineConfig {
        crash_after_actions: Some(1),
        ..EngineConfig::default()
    };
    // 1. A remote create (first sync, never finished), then the local event is deleted: the deletion
    //    reaches Radicale (it was left there, or the event came back locally).
    w.local_create(&event("gone", "Gone", 2)).await;
    let report = w.sync_with(&w.provider, &crash_after_one).await;
    assert_eq!(report.status, RunStatus::Interrupted);
    assert!(w.remote_item("gone").await.is_some(), "the create happened");
    w.local_delete("gone").await;
    w.settle().await;
    assert!(w.remote_item("gone").await.is_none(), "deletion lost");
    assert!(w.local_by_uid("gone").await.is_none(), "event came back");

    // 2. A remote create, then a local edit: an update, not a conflict with our own create.
    w.local_create(&event("edited", "Before", 3)).await;
    w.sync_with(&w.provider, &crash_after_one).await;
    w.local_edit("edited", &event("edited", "After", 3)).await;
    w.settle().await;

    // 3. A remote update copied from local, then the local event is deleted: a deletion, not a
    //    deletion conflict with our own update.
    w.local_create(&event("updated", "One", 4)).await;
    w.settle().await;
    w.local_edit("updated", &event("updated", "Two", 4)).await;
    w.sync_with(&w.provider, &crash_after_one).await;
    assert_eq!(
        prop(&w.remote_item("updated").await.unwrap().1, "SUMMARY").as_deref(),
        Some("Two")
    );
    w.local_delete("updated").await;
    w.settle().await;
    assert!(w.remote_item("updated").await.is_none());

    // 4. A local create of a remote event, then the remote event is deleted: the local copy goes
    //    too (it was left behind, or pushed back to Radicale).
    w.remote_put("r-gone", &event("r-gone", "Remote", 5)).await;
    w.sync_with(&w.provider, &crash_after_one).await;
    assert!(
        w.local_by_uid("r-gone").await.is_some(),
        "the create happened"
    );
    w.remote_delete("r-gone").await;
    w.settle().await;
    assert!(w.local_by_uid("r-gone").await.is_none(), "deletion lost");
    assert!(w.remote_item("r-gone").await.is_none(), "event came back");

    // 5. A local update copied from remote, then the remote event is deleted.
    w.remote_put("r-upd", &event("r-upd", "One", 6)).await;
    w.settle().await;
    w.remote_edit("r-upd", &event("r-upd", "Two", 6)).await;
    w.sync_with(&w.provider, &crash_after_one).await;
    assert_eq!(
        prop(&w.local_by_uid("r-upd").await.unwrap().ical, "SUMMARY").as_deref(),
        Some("Two")
    );
    w.remote_delete("r-upd").await;
    w.settle().await;
    assert!(w.local_by_uid("r-upd").await.is_none());

    assert!(
        w.open_conflicts().await.is_empty(),
        "{:?}",
        w.open_conflicts().await
    );
    let both = w.assert_converged().await;
    assert_eq!(one(&both, "edited"), "After");
    assert_eq!(both.len(), 1, "{both:?}");
}

impl World {
    /// Makes the database itself refuse (or accept again) every recorded pair (an item-mapping row
    /// written without `write_ahead`), write-ahead rows still accepted: a run then stops exactly where a
    /// process killed between a create and the record of its pair stops.
    async fn refuse_pairs(&self, refuse: bool) {
        let sql: &[&str] = match (&self.db.raw, refuse) {
            (crate::harness::Raw::Sqlite(_), true) => &[
                "CREATE TRIGGER refuse_pairs BEFORE INSERT ON item_mappings \
                 WHEN NOT NEW.write_ahead BEGIN SELECT RAISE(ABORT, 'pairs refused by the test'); END",
            ],
            (crate::harness::Raw::Sqlite(_), false) => &["DROP TRIGGER refuse_pairs"],
            (crate::harness::Raw::Pg(_), true) => &[
                "CREATE FUNCTION refuse_pairs() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'pairs refused by the test'; END $$",
                "CREATE TRIGGER refuse_pairs BEFORE INSERT ON item_mappings FOR EACH ROW \
                 WHEN (NOT NEW.write_ahead) EXECUTE FUNCTION refuse_pairs()",
            ],
            (crate::harness::Raw::Pg(_), false) => &[
                "DROP TRIGGER refuse_pairs ON item_mappings",
                "DROP FUNCTION refuse_pairs()",
            ],
        };
        for statement in sql {
            self.db.raw_execute(statement).await.unwrap();
        }
    }
}

/// Regression (the `kill -9` crash test, seed 1795291811082385306: a locally deleted event was live
/// again locally at quiescence): a run that created a local event remotely and stopped while recording
/// its pair must leave the create's write-ahead row in place, so that the next run still knows the
/// remote item as its own. Here the database refuses the pair (the run stops where a process killed
/// between the create's two store writes stops), the event is then deleted locally: the deletion
/// reaches Radicale and the event does not come back as a "new" remote event.
pub async fn a_create_whose_pair_was_not_recorded_stays_ours(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("kept", "Kept", 1)).await;
    w.settle().await;
    // Incremental runs from here on, as in every round of the crash test after the first.
    for (uid, day, delete) in [("cut-deleted", 2, true), ("cut-kept", 3, false)] {
        w.local_create(&event(uid, uid, day)).await;
        w.refuse_pairs(true).await;
        let report = w.sync().await;
        w.refuse_pairs(false).await;
        assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(report.errors[0].action, "record", "{:?}", report.errors);
        assert!(w.remote_item(uid).await.is_some(), "the create happened");
        if delete {
            w.local_delete(uid).await;
        }
        w.settle().await;
        assert_eq!(
            w.local_by_uid(uid).await.is_some(),
            !delete,
            "{uid} locally"
        );
        assert_eq!(
            w.remote_item(uid).await.is_some(),
            !delete,
            "{uid} remotely"
        );
    }
    assert!(
        w.open_conflicts().await.is_empty(),
        "{:?}",
        w.open_conflicts().await
    );
    let both = w.assert_converged().await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(one(&both, "cut-kept"), "cut-kept");
}

/// A remote event imported by a run killed before recording its pair, then deleted locally: the
/// deletion reaches Radicale and the event is not imported again.
pub async fn an_import_cut_short_then_deleted_locally_stays_deleted(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    let crash_after_one = EngineConfig {
        crash_after_actions: Some(1),
        ..EngineConfig::default()
    };
    for (uid, day, settled_first) in [("first-run", 1, false), ("incremental", 2, true)] {
        if settled_first {
            w.settle().await;
        }
        w.remote_put(uid, &event(uid, uid, day)).await;
        let report = w.sync_with(&w.provider, &crash_after_one).await;
        assert_eq!(report.status, RunStatus::Interrupted);
        assert!(w.local_by_uid(uid).await.is_some(), "the import happened");
        w.local_delete(uid).await;
        w.settle().await;
        assert!(
            w.local_by_uid(uid).await.is_none(),
            "{uid} came back locally"
        );
        assert!(w.remote_item(uid).await.is_none(), "{uid} deletion lost");
    }
    assert!(w.open_conflicts().await.is_empty());
    assert!(w.assert_converged().await.is_empty());
}

/// A run that created a local event remotely and stopped before recording its pair, the event then
/// deleted locally while its item cannot be read (here another app rewrote it with a `SEQUENCE` that
/// is not an integer: Radicale keeps and serves it, calbridge refuses it): the run that parks the item
/// keeps the create's write-ahead row, so the run that reads the item again pairs it and deletes it
/// instead of importing the deleted event as a new one.
pub async fn a_create_parked_unreadable_then_deleted_locally_stays_deleted(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("kept", "Kept", 1)).await;
    w.settle().await;
    w.local_create(&event("cut", "Cut", 2)).await;
    w.refuse_pairs(true).await;
    let report = w.sync().await;
    w.refuse_pairs(false).await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].action, "record", "{:?}", report.errors);
    let (url, original) = w.remote_item("cut").await.expect("the create happened");

    let unreadable = original.replacen("END:VEVENT", "SEQUENCE:not-a-number\r\nEND:VEVENT", 1);
    assert_ne!(unreadable, original);
    let put = w.radicale.raw().put(&url, &unreadable).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());
    w.local_delete("cut").await;
    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.action == "read" && url.ends_with(&e.item)),
        "the item was not parked: {:?}",
        report.errors
    );

    let put = w.radicale.raw().put(&url, &original).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());
    w.settle().await;
    assert!(
        w.local_by_uid("cut").await.is_none(),
        "cut came back locally"
    );
    assert!(w.remote_item("cut").await.is_none(), "cut deletion lost");
    assert!(
        w.open_conflicts().await.is_empty(),
        "{:?}",
        w.open_conflicts().await
    );
    let both = w.assert_converged().await;
    assert_eq!(both.len(), 1, "{both:?}");
    assert_eq!(one(&both, "kept"), "Kept");
}

/// The `pending-create:` rows of `w`'s link (write-ahead rows of remote creates).
async fn pending_create_rows(w: &World) -> usize {
    w.store()
        .write_ahead_mappings(w.tenant, w.link)
        .await
        .unwrap()
        .iter()
        .filter(|m| m.remote_id.starts_with("pending-create:"))
        .count()
}

/// Whether the `pending-create:` rows of deleted series pile up while a remote item stays
/// unreadable (a note of an earlier session): they do not. A row is keyed by link and series (a
/// create retried writes the same row again), so runs do not add rows; a deleted series' row is
/// kept while a run parks an item (the item may be its create), through incremental and full runs
/// alike, and the first run that parks nothing pairs it or drops it (the parked runs kept the
/// cursors, so that run reads the deletion again). Creates that finish meanwhile leave no row. What
/// grows is the count of distinct series created, cut short and deleted while the item is
/// unreadable: each is a row that run needs.
pub async fn pending_creates_do_not_pile_up_while_an_item_stays_unreadable(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    w.local_create(&event("kept", "Kept", 1)).await;
    w.settle().await;
    // Two creates cut short before their pairs, both items made on the provider.
    w.local_create(&event("cut", "Cut", 2)).await;
    w.local_create(&event("gone", "Gone", 3)).await;
    w.refuse_pairs(true).await;
    let report = w.sync().await;
    w.refuse_pairs(false).await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    assert_eq!(pending_create_rows(&w).await, 2);
    // `cut`'s item becomes unreadable; both series are deleted locally.
    let (url, original) = w.remote_item("cut").await.expect("the create happened");
    let unreadable = original.replacen("END:VEVENT", "SEQUENCE:not-a-number\r\nEND:VEVENT", 1);
    let put = w.radicale.raw().put(&url, &unreadable).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());
    w.local_delete("cut").await;
    w.local_delete("gone").await;

    // Runs while the item stays unreadable, one of them full, and a new event created meanwhile.
    let mut rows = Vec::new();
    for round in 0..6 {
        if round == 2 {
            w.local_create(&event("fresh", "Fresh", 4)).await;
        }
        let report = if round == 4 {
            w.sync_full(&w.provider, &EngineConfig::default(), true)
                .await
        } else {
            w.sync().await
        };
        assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
        assert!(
            report.errors.iter().all(|e| e.action == "read"),
            "only the parked item fails: {:?}",
            report.errors
        );
        rows.push(pending_create_rows(&w).await);
    }
    // `gone` was paired with its item and deleted on the provider in the first of them; `cut`'s row
    // stays, one row, whatever the number of runs; `fresh` was created and paired.
    assert_eq!(rows, vec![1; 6], "pending-create rows per run");
    assert!(w.remote_item("gone").await.is_none());
    assert!(w.remote_item("fresh").await.is_some());

    // Readable again: the row goes with the deletion it waited for.
    let put = w.radicale.raw().put(&url, &original).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());
    w.settle().await;
    assert_eq!(pending_create_rows(&w).await, 0);
    assert!(w.remote_item("cut").await.is_none(), "cut deletion lost");
    assert!(w.local_by_uid("cut").await.is_none(), "cut came back");
    let both = w.assert_converged().await;
    assert_eq!(both.len(), 2, "{both:?}");
}

impl World {
    /// Makes the database record, for every series inserted, how many write-ahead rows of local
    /// creates (no series yet) were pending at that moment (table `probe`), and refuse the series
    /// with UID `poisoned` (every series when `None`); `false` removes all of it.
    async fn watch_series_inserts(&self, on: bool, poisoned: Option<&str>) {
        let when_sqlite = poisoned.map_or(String::new(), |uid| format!("WHEN NEW.uid = '{uid}'"));
        let when_pg = poisoned.map_or(String::new(), |uid| format!("WHEN (NEW.uid = '{uid}')"));
        let sql: Vec<String> = match (&self.db.raw, on) {
            (crate::harness::Raw::Sqlite(_), true) => vec![
                "CREATE TABLE probe (uid TEXT, pending BIGINT)".into(),
                "CREATE TRIGGER probe AFTER INSERT ON series BEGIN INSERT INTO probe VALUES \
                 (NEW.uid, (SELECT COUNT(*) FROM item_mappings WHERE series_id IS NULL AND write_ahead)); END"
                    .into(),
                format!(
                    "CREATE TRIGGER poison BEFORE INSERT ON series {when_sqlite} \
                     BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END"
                ),
            ],
            (crate::harness::Raw::Sqlite(_), false) => vec![
                "DROP TRIGGER poison".into(),
                "DROP TRIGGER probe".into(),
                "DROP TABLE probe".into(),
            ],
            (crate::harness::Raw::Pg(_), true) => vec![
                "CREATE TABLE probe (uid TEXT, pending BIGINT)".into(),
                "CREATE FUNCTION probe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 INSERT INTO probe VALUES (NEW.uid, (SELECT COUNT(*) FROM item_mappings \
                 WHERE series_id IS NULL AND write_ahead)); RETURN NULL; END $$"
                    .into(),
                "CREATE TRIGGER probe AFTER INSERT ON series FOR EACH ROW EXECUTE FUNCTION probe()"
                    .into(),
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'poisoned by the test'; END $$"
                    .into(),
                format!(
                    "CREATE TRIGGER poison BEFORE INSERT ON series FOR EACH ROW {when_pg} \
                     EXECUTE FUNCTION poison()"
                ),
            ],
            (crate::harness::Raw::Pg(_), false) => vec![
                "DROP TRIGGER poison ON series".into(),
                "DROP FUNCTION poison()".into(),
                "DROP TRIGGER probe ON series".into(),
                "DROP FUNCTION probe()".into(),
                "DROP TABLE probe".into(),
            ],
        };
        for statement in sql {
            self.db.raw_execute(&statement).await.unwrap();
        }
    }

    /// Puts `count` new events on Radicale, named `{prefix}-{i}`, from `day` on.
    async fn remote_events(&self, prefix: &str, count: usize, day: i64) -> Vec<String> {
        let mut uids = Vec::new();
        for i in 0..count {
            let uid = format!("{prefix}-{i}");
            self.remote_put(&uid, &event(&uid, &uid, day + i as i64))
                .await;
            uids.push(uid);
        }
        uids
    }
}

/// An import of many remote events goes in chunks (`EngineConfig::local_create_chunk`): the write-ahead
/// rows of a chunk before any of its series, its pairs before the next chunk. An event the database
/// refuses fails alone: its chunk goes one at a time, the other events land, and once the refusal is
/// gone the next sync imports it. Then the states a process killed inside a chunk leaves (write-ahead
/// rows without their series; series without their pairs) converge without loss, duplicate or conflict.
pub async fn an_import_goes_in_chunks_and_a_failing_item_fails_alone(db: TestDb) {
    let Some(w) = World::new(db, "{}").await else {
        return;
    };
    let chunked = EngineConfig {
        local_create_chunk: 4,
        ..EngineConfig::default()
    };
    // 12 events: three chunks of 4, one of them holding `bad`.
    let mut uids = w.remote_events("imp", 11, 1).await;
    w.remote_put("bad", &event("bad", "bad", 12)).await;
    uids.push("bad".into());
    w.watch_series_inserts(true, Some("bad")).await;
    let report = w.sync_with(&w.provider, &chunked).await;
    let pending = w.db.raw_i64s("SELECT pending FROM probe").await.unwrap();
    w.watch_series_inserts(false, None).await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let error = &report.errors[0];
    assert_eq!(error.action, "create_local", "{error:?}");
    assert!(error.item.contains("bad"), "{error:?}");
    crate::assert_counts(&report, &[("create_local", 11)]);
    let local = w.local_all().await;
    assert_eq!(local.len(), 11, "{local:?}");
    assert!(!local.contains_key("bad"));
    // The two chunks without `bad` were created after their 4 write-ahead rows were all written (one
    // at a time, a series finds its own row pending, and `bad`'s lingering one).
    assert_eq!(pending.len(), 11, "{pending:?}");
    assert!(
        pending.iter().filter(|p| p.unwrap_or(0) >= 4).count() >= 8,
        "not written in chunks: {pending:?}"
    );
    let report = w.sync_with(&w.provider, &chunked).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    crate::assert_counts(&report, &[("create_local", 1)]);
    w.settle().await;
    assert_eq!(w.assert_converged().await.len(), 12);

    // Killed after a chunk's write-ahead rows: the database refuses every series (the chunk fails,
    // then each event one at a time), leaving the rows without their series.
    uids.extend(w.remote_events("unwritten", 5, 20).await);
    w.watch_series_inserts(true, None).await;
    let report = w.sync_with(&w.provider, &chunked).await;
    w.watch_series_inserts(false, None).await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    assert_eq!(report.errors.len(), 5, "{:?}", report.errors);
    assert!(report.errors.iter().all(|e| e.action == "create_local"));
    let rows = w
        .store()
        .write_ahead_mappings(w.tenant, w.link)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|m| m.series_id.is_none()));

    // Killed after a chunk's series, before its pairs: the database refuses the pairs (the chunk's,
    // then each one), and the test knob stops a chunk right after its series.
    uids.extend(w.remote_events("unpaired", 6, 30).await);
    w.refuse_pairs(true).await;
    let report = w.sync_with(&w.provider, &chunked).await;
    w.refuse_pairs(false).await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    crate::assert_counts(&report, &[("create_local", 11)]);
    assert_eq!(
        report
            .errors
            .iter()
            .filter(|e| e.action == "record")
            .count(),
        11,
        "{:?}",
        report.errors
    );
    uids.extend(w.remote_events("killed", 5, 40).await);
    let killed = EngineConfig {
        crash_after_actions: Some(3),
        ..chunked.clone()
    };
    let report = w.sync_with(&w.provider, &killed).await;
    assert_eq!(report.status, RunStatus::Interrupted);

    w.settle().await;
    assert!(
        w.open_conflicts().await.is_empty(),
        "{:?}",
        w.open_conflicts().await
    );
    let both = w.assert_converged().await;
    let mut expected = uids.clone();
    expected.sort();
    assert_eq!(both.keys().cloned().collect::<Vec<_>>(), expected);
}
