//! The engine against the Microsoft Graph and Google Calendar emulators (real HTTP on loopback): one
//! local calendar linked to one remote calendar, the same story on both providers and both backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use calbridge_emulators::{Action, Emulator, EmulatorConfig, Fault, FaultRule, FaultScope, Flavor};
use calbridge_engine::{EngineConfig, LinkSync, RunReport, RunStatus, sync_link};
use calbridge_providers::google::{GoogleConfig, GoogleProvider};
use calbridge_providers::graph::{GraphConfig, GraphProvider};
use calbridge_providers::http::Secret;
use calbridge_providers::oauth::{Access, StaticToken};
use calbridge_providers::{CalendarId, CalendarProvider, KnownVersions, Window};
use calbridge_store::*;
use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};

use crate::harness::TestDb;
use crate::scenarios::{event, prop};
use crate::support::http_client;

/// `YYYY-MM-DD` `days` from today (UTC).
fn day(days: i64) -> jiff::civil::Date {
    Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(days.days())
        .unwrap()
}

pub struct Cloud {
    db: TestDb,
    pub emu: Emulator,
    flavor: Flavor,
    provider: Arc<dyn CalendarProvider>,
    calendar: CalendarId,
    tenant: TenantId,
    local_calendar: calbridge_store::CalendarId,
    connection: ConnectionId,
    link: LinkId,
}

impl Cloud {
    pub async fn new(db: TestDb, flavor: Flavor) -> Self {
        let emu = Emulator::start(flavor, EmulatorConfig::default())
            .await
            .unwrap();
        let provider = cloud_provider(&emu, flavor);
        let calendar = provider.list_calendars().await.unwrap().remove(0).id;
        let (tenant, local_calendar) = local_calendar(db.store.as_ref(), "Work").await;
        let kind = match flavor {
            Flavor::Microsoft => Provider::Microsoft,
            Flavor::Google => Provider::Google,
        };
        let (connection, link) = link_to(
            db.store.as_ref(),
            tenant,
            local_calendar,
            kind,
            "cloud",
            &calendar,
        )
        .await;
        Self {
            db,
            emu,
            flavor,
            provider,
            calendar,
            tenant,
            local_calendar,
            connection,
            link,
        }
    }

    fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    pub async fn sync(&self) -> RunReport {
        self.sync_with(&EngineConfig::default()).await
    }

    async fn sync_with(&self, config: &EngineConfig) -> RunReport {
        sync_once_with(
            self.store(),
            self.provider.as_ref(),
            self.tenant,
            self.connection,
            self.link,
            config,
        )
        .await
    }

    /// Syncs until a run changes nothing (bounded): no ping-pong of our own writes.
    async fn settle(&self) {
        for _ in 0..4 {
            let report = self.sync().await;
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            if !crate::made_changes(&report) {
                return;
            }
        }
        panic!("sync did not settle");
    }

    // --- the local side ---

    async fn local_create(&self, ical: &str) {
        self.store()
            .create_series(
                self.tenant,
                NewSeries {
                    calendar_id: self.local_calendar,
                    uid: prop(ical, "UID").unwrap(),
                    ical: ical.to_owned(),
                    model_json: "{}".into(),
                    hash: "test".into(),
                    occurrences: OccurrenceSet::default(),
                },
            )
            .await
            .unwrap();
    }

    async fn local_edit(&self, uid: &str, ical: &str) {
        let series = self
            .store()
            .get_series_by_uid(self.tenant, self.local_calendar, uid)
            .await
            .unwrap()
            .unwrap();
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

    /// Master summary → the local series' iCalendar (a summary twice would panic: no duplicates).
    async fn local_all(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for s in self
            .store()
            .list_series(self.tenant, self.local_calendar, None, 1000)
            .await
            .unwrap()
        {
            let summary = prop(&s.ical, "SUMMARY").unwrap_or_default();
            assert!(
                out.insert(summary.clone(), s.ical).is_none(),
                "duplicate local {summary}"
            );
        }
        out
    }

    // --- the remote side, as a person using the provider's own app ---

    /// Master summary → iCalendar of every remote series (a summary twice would panic).
    async fn remote_all(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for item in full_read(self.provider.as_ref(), &self.calendar).await {
            let ical = item.content.as_ical().to_owned();
            let summary = prop(&ical, "SUMMARY").unwrap_or_default();
            assert!(
                out.insert(summary.clone(), ical).is_none(),
                "duplicate remote {summary}"
            );
        }
        out
    }

    fn single(&self, summary: &str, days: i64) -> Value {
        let d = day(days);
        match self.flavor {
            Flavor::Microsoft => json!({
                "subject": summary,
                "start": {"dateTime": format!("{d}T09:00:00"), "timeZone": "UTC"},
                "end": {"dateTime": format!("{d}T10:00:00"), "timeZone": "UTC"},
            }),
            Flavor::Google => json!({
                "summary": summary,
                "start": {"dateTime": format!("{d}T09:00:00Z")},
                "end": {"dateTime": format!("{d}T10:00:00Z")},
            }),
        }
    }

    fn weekly(&self, summary: &str, days: i64) -> Value {
        let d = day(days);
        match self.flavor {
            Flavor::Microsoft => {
                let weekday = format!("{:?}", d.weekday()).to_lowercase();
                json!({
                    "subject": summary,
                    "start": {"dateTime": format!("{d}T15:00:00"), "timeZone": "W. Europe Standard Time"},
                    "end": {"dateTime": format!("{d}T16:00:00"), "timeZone": "W. Europe Standard Time"},
                    "originalStartTimeZone": "W. Europe Standard Time",
                    "originalEndTimeZone": "W. Europe Standard Time",
                    "recurrence": {
                        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekday]},
                        "range": {"type": "numbered", "startDate": d.to_string(), "numberOfOccurrences": 4},
                    },
                })
            }
            Flavor::Google => json!({
                "summary": summary,
                "start": {"dateTime": format!("{d}T15:00:00+01:00"), "timeZone": "Europe/Berlin"},
                "end": {"dateTime": format!("{d}T16:00:00+01:00"), "timeZone": "Europe/Berlin"},
                "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"],
            }),
        }
    }

    fn summary_change(&self, summary: &str) -> Value {
        match self.flavor {
            Flavor::Microsoft => json!({"subject": summary}),
            Flavor::Google => json!({"summary": summary}),
        }
    }

    async fn remote_create(&self, event: Value) -> String {
        let created = self
            .emu
            .act(Action::Create {
                user: None,
                calendar: Some(self.calendar.as_str().to_owned()),
                event,
            })
            .await
            .unwrap();
        created["id"].as_str().unwrap().to_owned()
    }

    async fn remote_edit(&self, id: &str, changes: Value) {
        self.emu
            .act(Action::Edit {
                user: None,
                calendar: Some(self.calendar.as_str().to_owned()),
                event_id: id.to_owned(),
                changes,
            })
            .await
            .unwrap();
    }

    async fn remote_delete(&self, id: &str) {
        self.emu
            .act(Action::Delete {
                user: None,
                calendar: Some(self.calendar.as_str().to_owned()),
                event_id: id.to_owned(),
            })
            .await
            .unwrap();
    }

    /// The stored (occurrence id, series remote id) of these occurrence ids, sorted.
    async fn occurrence_series(&self, ids: Vec<String>) -> Vec<(String, String)> {
        let mut found = self
            .store()
            .series_of_remote_occurrences(self.tenant, self.link, &ids)
            .await
            .unwrap();
        found.sort();
        found
    }

    async fn instance_ids(&self, series: &str) -> Vec<String> {
        let (from, to) = (day(-1), day(60));
        let url = match self.flavor {
            Flavor::Microsoft => format!(
                "{}/v1.0/me/events/{series}/instances?startDateTime={from}T00:00:00Z&endDateTime={to}T00:00:00Z",
                self.emu.base_url()
            ),
            Flavor::Google => format!(
                "{}/calendar/v3/calendars/{}/events/{series}/instances",
                self.emu.base_url(),
                self.calendar.as_str()
            ),
        };
        let body: Value = reqwest::Client::new()
            .get(url)
            .bearer_auth(self.emu.token(None).unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = body.get("value").or_else(|| body.get("items")).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Initial import both ways (a single event, a recurring series with one moved-and-renamed
/// occurrence, a local event), then a local edit pushed, a remote edit pulled, a remote deletion
/// removed locally; nothing duplicated, and each round settles without ping-pong.
pub async fn cloud_story(db: TestDb, flavor: Flavor) {
    let w = Cloud::new(db, flavor).await;
    let single = w.remote_create(w.single("Remote single", 3)).await;
    let series = w.remote_create(w.weekly("Weekly review", 7)).await;
    let instances = w.instance_ids(&series).await;
    assert_eq!(instances.len(), 4, "{instances:?}");
    w.remote_edit(&instances[1], w.summary_change("Weekly review (special)"))
        .await;
    w.local_create(&event("local-1@calbridge.test", "Local event", 5))
        .await;

    // --- initial import, both ways ---
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let local = w.local_all().await;
    assert_eq!(
        local.keys().cloned().collect::<Vec<_>>(),
        ["Local event", "Remote single", "Weekly review"],
        "{local:?}"
    );
    let weekly = &local["Weekly review"];
    assert!(weekly.contains("RRULE:"), "{weekly}");
    assert!(weekly.contains("RECURRENCE-ID"), "{weekly}");
    assert!(weekly.contains("Weekly review (special)"), "{weekly}");
    let remote = w.remote_all().await;
    assert_eq!(
        remote.keys().cloned().collect::<Vec<_>>(),
        ["Local event", "Remote single", "Weekly review"],
        "{remote:?}"
    );
    w.settle().await;

    // --- a local edit is pushed ---
    w.local_edit(
        "local-1@calbridge.test",
        &event("local-1@calbridge.test", "Local event (edited)", 5),
    )
    .await;
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.counts.get("update_remote"), Some(&1), "{report:?}");
    let remote = w.remote_all().await;
    assert!(remote.contains_key("Local event (edited)"), "{remote:?}");
    assert!(!remote.contains_key("Local event"), "{remote:?}");
    w.settle().await;

    // --- a remote edit is pulled ---
    w.remote_edit(&single, w.summary_change("Remote single (edited)"))
        .await;
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let local = w.local_all().await;
    assert!(local.contains_key("Remote single (edited)"), "{local:?}");
    assert!(!local.contains_key("Remote single"), "{local:?}");
    w.settle().await;

    // --- a remote deletion removes the local event (with a tombstone) ---
    w.remote_delete(&single).await;
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let local = w.local_all().await;
    assert_eq!(
        local.keys().cloned().collect::<Vec<_>>(),
        ["Local event (edited)", "Weekly review"],
        "{local:?}"
    );
    assert_eq!(
        w.store()
            .list_tombstones(w.tenant, Some(w.link))
            .await
            .unwrap()
            .len(),
        1
    );
    w.settle().await;
    let remote = w.remote_all().await;
    assert_eq!(remote.len(), 2, "{remote:?}");
}

/// An occurrence deleted in Outlook reaches the local series as an EXDATE, and the run re-reads that
/// series alone (its id was remembered from the listing that brought the series), not every series of
/// the link: more series than one `$batch` here, so a re-read of all of them would show in the requests.
/// The remembered occurrence ids go with the pair when the series is deleted.
pub async fn a_deleted_graph_occurrence_re_reads_its_series_alone(db: TestDb) {
    let w = Cloud::new(db, Flavor::Microsoft).await;
    let mut series = Vec::new();
    for i in 0..21 {
        series.push(
            w.remote_create(w.weekly(&format!("Weekly {i:02}"), 7))
                .await,
        );
    }
    w.remote_create(w.single("Remote single", 3)).await;
    w.settle().await;
    assert_eq!(w.local_all().await.len(), 22);
    let target = &series[4];
    let instances = w.instance_ids(target).await;
    assert_eq!(instances.len(), 4, "{instances:?}");
    let held = |ids| w.occurrence_series(ids);
    let mut expected: Vec<(String, String)> = instances
        .iter()
        .map(|o| (o.clone(), target.clone()))
        .collect();
    expected.sort();
    assert_eq!(
        held(instances.clone()).await,
        expected,
        "stored with the pair"
    );

    w.remote_delete(&instances[2]).await;
    w.emu.reset_counters();
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.counts.get("update_local"), Some(&1), "{report:?}");
    // The delta page, then the master and the instances of one series: one `$batch` each.
    let counters = w.emu.counters();
    assert_eq!(counters.for_endpoint("$batch"), 2, "{counters:?}");
    assert_eq!(report.requests, 3, "{counters:?}");
    let local = w.local_all().await;
    let weekly = &local["Weekly 04"];
    assert_eq!(weekly.matches("EXDATE").count(), 1, "{weekly}");
    assert!(
        local
            .iter()
            .filter(|(summary, _)| summary.as_str() != "Weekly 04")
            .all(|(_, ical)| !ical.contains("EXDATE")),
        "{local:?}"
    );
    // The deleted occurrence is forgotten with the re-read; the others stay.
    let left: Vec<String> = held(instances.clone())
        .await
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let mut kept = vec![
        instances[0].clone(),
        instances[1].clone(),
        instances[3].clone(),
    ];
    kept.sort();
    assert_eq!(left, kept);
    w.settle().await;

    // The series deleted: the pair is forgotten, and its occurrences with it.
    w.remote_delete(target).await;
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(!w.local_all().await.contains_key("Weekly 04"));
    assert!(held(instances).await.is_empty());
    let other = w.instance_ids(&series[5]).await;
    assert_eq!(held(other).await.len(), 4, "other series keep theirs");
}

impl Cloud {
    /// A full reconciliation (the daily run): both sides listed completely.
    async fn full_sync(&self) -> RunReport {
        let connection = self
            .store()
            .get_connection(self.tenant, self.connection)
            .await
            .unwrap();
        let link = self.store().get_link(self.tenant, self.link).await.unwrap();
        sync_link(LinkSync {
            store: self.store(),
            provider: self.provider.as_ref(),
            tenant: self.tenant,
            connection: &connection,
            link: &link,
            config: &EngineConfig::default(),
            now: Timestamp::now(),
            full: true,
            run: None,
        })
        .await
        .unwrap()
    }

    /// The remote ids of the link's pairs whose occurrences are not remembered.
    async fn unremembered(&self) -> Vec<String> {
        self.store()
            .mappings_with_unknown_occurrences(self.tenant, self.link)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.remote_id)
            .collect()
    }
}

/// Graph's delta also reports `@removed` for events added, edited or deleted outside the window (a
/// meeting next year). With the occurrences of every series held remembered, such an id is nobody's
/// occurrence in the window: the run reads its delta page and nothing else (re-reading every series
/// was four `$batch` requests here, and one round trip per 20 series of a 100,000-event mailbox), and
/// changes nothing. Series held from before occurrences were remembered (as migration 0018 leaves a
/// pair without occurrence rows) are still re-read when an id nobody remembers is removed, and are
/// remembered from then on; a single event held so is remembered by the next complete listing.
pub async fn an_edit_outside_the_window_reads_no_graph_series(db: TestDb) {
    let w = Cloud::new(db, Flavor::Microsoft).await;
    let mut series = Vec::new();
    for i in 0..21 {
        series.push(
            w.remote_create(w.weekly(&format!("Weekly {i:02}"), 7))
                .await,
        );
    }
    let single = w.remote_create(w.single("Remote single", 3)).await;
    // Outside the window (three months either way by default).
    let next_year = w.remote_create(w.single("Next year", 400)).await;
    let dropped = w.remote_create(w.single("Dropped next year", 420)).await;
    w.settle().await;
    assert_eq!(w.local_all().await.len(), 22);
    assert!(
        w.unremembered().await.is_empty(),
        "every series and the single are remembered: {:?}",
        w.unremembered().await
    );

    w.remote_edit(&next_year, w.summary_change("Next year (moved)"))
        .await;
    w.remote_delete(&dropped).await;
    w.remote_create(w.single("New next year", 450)).await;
    w.emu.reset_counters();
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let counters = w.emu.counters();
    assert_eq!(counters.for_endpoint("$batch"), 0, "{counters:?}");
    assert_eq!(report.requests, 1, "the delta page alone: {counters:?}");
    assert!(!crate::made_changes(&report), "{report:?}");
    assert_eq!(w.local_all().await.len(), 22);

    // As a database migrated to 0018 holds pairs recorded before occurrences were reported.
    w.db.raw_execute("DELETE FROM remote_occurrences")
        .await
        .unwrap();
    w.db.raw_execute("UPDATE item_mappings SET occurrences_remembered = FALSE")
        .await
        .unwrap();
    let target = &series[4];
    let instances = w.instance_ids(target).await;
    w.remote_delete(&instances[2]).await;
    w.emu.reset_counters();
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.counts.get("update_local"), Some(&1), "{report:?}");
    // The delta page, then 21 masters and 21 instance lists, 20 per `$batch`.
    let counters = w.emu.counters();
    assert_eq!(counters.for_endpoint("$batch"), 4, "{counters:?}");
    let local = w.local_all().await;
    assert_eq!(local["Weekly 04"].matches("EXDATE").count(), 1, "{local:?}");
    // The series re-read are remembered; the single event, not read, is not (a series it is not).
    assert_eq!(w.unremembered().await, vec![single]);
    assert_eq!(
        w.occurrence_series(vec![instances[0].clone()]).await,
        [(instances[0].clone(), target.clone())]
    );
    w.settle().await;
    // The next complete listing shows it unchanged, and it is remembered as holding none.
    let report = w.full_sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.full_listing, "{report:?}");
    assert!(w.unremembered().await.is_empty());

    w.remote_edit(&next_year, w.summary_change("Next year (moved again)"))
        .await;
    w.emu.reset_counters();
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.requests, 1, "{:?}", w.emu.counters());
    assert!(!crate::made_changes(&report), "{report:?}");
}

/// A series whose occurrences Graph fails to list inside the `$batch` (an inner 500 on its
/// `/instances`) is a read failure: its local series keeps every occurrence (no EXDATE invented from
/// the missing list), the run is partial with an error naming the series and the status, the other
/// series of the same round are pulled, and the next run without the fault converges.
pub async fn a_failed_graph_series_read_keeps_its_occurrences(db: TestDb) {
    let w = Cloud::new(db, Flavor::Microsoft).await;
    let failing = w.remote_create(w.weekly("Weekly failing", 7)).await;
    let other = w.remote_create(w.weekly("Weekly other", 7)).await;
    w.settle().await;
    let before = w.local_all().await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.values().all(|ical| !ical.contains("EXDATE")));

    w.remote_edit(&failing, w.summary_change("Weekly failing (edited)"))
        .await;
    w.remote_edit(&other, w.summary_change("Weekly other (edited)"))
        .await;
    w.emu
        .add_fault(FaultRule {
            path_contains: Some(format!("/events/{failing}/instances")),
            method: Some("GET".into()),
            times: None,
            scope: FaultScope::BatchItem,
            fault: Fault::ServerError { status: 500 },
        })
        .unwrap();
    let report = w.sync().await;
    assert_eq!(report.status, RunStatus::Partial, "{report:?}");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let error = &report.errors[0];
    assert_eq!(error.item, failing, "{error:?}");
    assert!(error.cause.contains("500"), "{error:?}");
    let local = w.local_all().await;
    assert_eq!(
        local.keys().cloned().collect::<Vec<_>>(),
        ["Weekly failing", "Weekly other (edited)"],
        "{local:?}"
    );
    assert_eq!(local["Weekly failing"], before["Weekly failing"]);
    assert_eq!(
        w.instance_ids(&failing).await.len(),
        4,
        "nothing deleted remotely"
    );

    w.emu.clear_faults();
    let report = w.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let local = w.local_all().await;
    assert_eq!(
        local.keys().cloned().collect::<Vec<_>>(),
        ["Weekly failing (edited)", "Weekly other (edited)"],
        "{local:?}"
    );
    assert!(
        local.values().all(|ical| !ical.contains("EXDATE")),
        "{local:?}"
    );
    w.settle().await;
    assert_eq!(w.instance_ids(&failing).await.len(), 4);
    let remote = w.remote_all().await;
    assert!(
        remote.values().all(|ical| !ical.contains("EXDATE")),
        "{remote:?}"
    );
}

/// Identity conflicts, which Radicale cannot produce (it refuses a second item with one UID): on the
/// Google emulator a second event claims the UID of a linked one. Each identity option is applied on
/// both systems; the next runs converge with every UID once.
pub async fn identity_conflicts_resolve_on_both_systems(db: TestDb) {
    let cloud = Cloud::new(db, Flavor::Google).await;
    let with_uid = |summary: &str, days: i64, uid: &str| {
        let mut event = cloud.single(summary, days);
        event["extendedProperties"] = json!({"private": {"calbridgeUid": uid}});
        event
    };
    let options = ["keep_local", "keep_remote", "keep_both"];
    for (i, option) in options.iter().enumerate() {
        cloud
            .remote_create(with_uid(
                &format!("{option} original"),
                2 + 2 * i as i64,
                &format!("id-{option}"),
            ))
            .await;
    }
    cloud.settle().await;
    for (i, option) in options.iter().enumerate() {
        cloud
            .remote_create(with_uid(
                &format!("{option} newcomer"),
                3 + 2 * i as i64,
                &format!("id-{option}"),
            ))
            .await;
    }
    let report = cloud.sync().await;
    crate::assert_counts(&report, &[("conflicts", 3)]);
    let conflicts = cloud
        .store()
        .list_conflicts(
            cloud.tenant,
            &ConflictFilter {
                state: Some(ConflictState::Open),
                connection_id: Some(cloud.connection),
                link_id: None,
                kind: Some(ConflictKind::Identity),
            },
        )
        .await
        .unwrap();
    assert_eq!(conflicts.len(), 3, "{conflicts:?}");
    for option in options {
        let c = conflicts
            .iter()
            .find(|c| c.event_uid == format!("id-{option}"))
            .unwrap();
        let config = EngineConfig::default();
        let resolve = |option| {
            calbridge_engine::resolve_conflict(crate::resolve_request(
                cloud.store(),
                cloud.provider.as_ref(),
                cloud.tenant,
                c.id,
                option,
                &config,
            ))
        };
        let refused = resolve("restore").await.unwrap_err();
        assert_eq!(refused.code(), "option_not_applicable");
        let resolved = resolve(option)
            .await
            .unwrap_or_else(|e| panic!("{option}: {e}"));
        assert_eq!(resolved.state, ConflictState::Resolved);
    }
    cloud.settle().await;
    // UID → summary on both sides.
    let local: BTreeMap<String, String> = cloud
        .store()
        .list_series(cloud.tenant, cloud.local_calendar, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.uid.clone(), prop(&s.ical, "SUMMARY").unwrap_or_default()))
        .collect();
    let remote: BTreeMap<String, String> = cloud
        .remote_all()
        .await
        .into_values()
        .map(|ical| {
            (
                prop(&ical, "UID").unwrap(),
                prop(&ical, "SUMMARY").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(local, remote);
    assert_eq!(local["id-keep_local"], "keep_local original");
    assert_eq!(local["id-keep_remote"], "keep_remote newcomer");
    assert_eq!(local["id-keep_both"], "keep_both original");
    let copies: Vec<(&String, &String)> = local
        .iter()
        .filter(|(uid, _)| uid.starts_with("id-keep_both-copy-"))
        .collect();
    assert_eq!(copies.len(), 1, "{local:?}");
    assert_eq!(copies[0].1, "keep_both newcomer");
    assert_eq!(local.len(), 4, "{local:?}");
    assert!(
        cloud
            .store()
            .list_conflicts(
                cloud.tenant,
                &ConflictFilter {
                    state: Some(ConflictState::Open),
                    connection_id: None,
                    link_id: None,
                    kind: Some(ConflictKind::Identity)
                }
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// Identity resolutions killed right after each of their writes (`crash_after_resolution_writes`),
/// on the Google emulator (Radicale refuses a second item with one UID). Each write is preceded by the
/// write-ahead rows sync runs write (`keep_remote`'s local write: the intent on the series' pair), and
/// the decision is kept on the conflict. A sync soon after (the resolution might still be running)
/// leaves the conflict open and parked: the local write does not travel to the item the series is
/// linked to, the saved copy does not go out beside the newcomer, nothing is recorded again. A sync
/// once the resolution is older than `resume_resolutions_after` finishes it (the admin's retry does
/// the same at once): every conflict `resolved` with its option, both sides equal, every UID once. One
/// whose newcomer was edited after the decision is abandoned instead, and left open for a person.
pub async fn interrupted_identity_resolutions_converge(db: TestDb) {
    let cloud = Cloud::new(db, Flavor::Google).await;
    let with_uid = |summary: &str, days: i64, uid: &str| {
        let mut event = cloud.single(summary, days);
        event["extendedProperties"] = json!({"private": {"calbridgeUid": uid}});
        event
    };
    // UID, option, the write after which the process "dies", whether the admin retries at once.
    let cases: [(&str, &str, usize, bool); 8] = [
        // keep_local: the newcomer deleted.
        ("ik-local", "keep_local", 1, false),
        // keep_remote: the series takes the newcomer's version, then the item it was linked to goes.
        ("ik-remote", "keep_remote", 1, false),
        ("ik-remote-other", "keep_remote", 2, false),
        ("ik-retry", "keep_remote", 1, true),
        // keep_both: the renamed copy saved locally, the newcomer deleted, the copy created remotely.
        ("ik-both-saved", "keep_both", 1, false),
        ("ik-both-deleted", "keep_both", 2, false),
        ("ik-both-created", "keep_both", 3, false),
        // keep_remote killed after its local write, then the newcomer edited by someone else.
        ("ik-moved", "keep_remote", 1, false),
    ];
    const MOVED: &str = "ik-moved";
    let mut originals = BTreeMap::new();
    for (i, (uid, ..)) in cases.iter().enumerate() {
        let id = cloud
            .remote_create(with_uid(&format!("{uid} original"), 2 + 2 * i as i64, uid))
            .await;
        originals.insert(*uid, id);
    }
    cloud.settle().await;
    let mut newcomers = BTreeMap::new();
    for (i, (uid, ..)) in cases.iter().enumerate() {
        let id = cloud
            .remote_create(with_uid(&format!("{uid} newcomer"), 3 + 2 * i as i64, uid))
            .await;
        newcomers.insert(*uid, id);
    }
    let report = cloud.sync().await;
    crate::assert_counts(&report, &[("conflicts", cases.len() as u64)]);
    let identity = |state: Option<ConflictState>| ConflictFilter {
        state,
        connection_id: Some(cloud.connection),
        link_id: None,
        kind: Some(ConflictKind::Identity),
    };
    let conflicts = cloud
        .store()
        .list_conflicts(cloud.tenant, &identity(None))
        .await
        .unwrap();
    assert_eq!(conflicts.len(), cases.len(), "{conflicts:?}");
    let conflict_of = |uid: &str| conflicts.iter().find(|c| c.event_uid == uid).unwrap();

    for (uid, option, crash_after, retry) in cases {
        let c = conflict_of(uid);
        let crash = EngineConfig {
            crash_after_resolution_writes: Some(crash_after),
            ..EngineConfig::default()
        };
        let resolve = |config| {
            calbridge_engine::resolve_conflict(crate::resolve_request(
                cloud.store(),
                cloud.provider.as_ref(),
                cloud.tenant,
                c.id,
                option,
                config,
            ))
        };
        let err = resolve(&crash).await.unwrap_err();
        assert_eq!(err.code(), "interrupted", "{uid}: {err}");
        if option == "keep_remote" && crash_after == 1 {
            // The series holds the newcomer's version; its pair (with the original) carries the
            // intent of that write, as a sync run's own local write would.
            let row = cloud
                .store()
                .get_mapping(cloud.tenant, cloud.link, &originals[uid])
                .await
                .unwrap()
                .unwrap();
            let base: Value = serde_json::from_str(row.base_json.as_deref().unwrap()).unwrap();
            assert_eq!(base["intent"]["side"], "local", "{uid}: {base}");
            assert!(
                base["intent"]["state"].to_string().contains("newcomer"),
                "{uid}: {base}"
            );
        }
        if uid == MOVED {
            cloud
                .remote_edit(
                    &newcomers[uid],
                    cloud.summary_change("ik-moved newcomer edited"),
                )
                .await;
        }
        if retry {
            // The admin's retry finishes it (the local side holds the first attempt's write).
            let resolved = resolve(&EngineConfig::default())
                .await
                .unwrap_or_else(|e| panic!("{uid}: {e}"));
            assert_eq!(resolved.state, ConflictState::Resolved, "{uid}");
        }
    }

    // A sync soon after: nothing recorded again, nothing doubled on either side (`local_all` and
    // `remote_all` refuse a summary twice: the newcomer and its renamed copy, or the original and the
    // newcomer's version pushed over it), and the resolutions left to finish.
    let report = cloud.sync().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    crate::assert_counts(&report, &[("conflicts", 0)]);
    let local = cloud.local_all().await;
    let remote = cloud.remote_all().await;
    assert!(remote.contains_key("ik-remote original"), "{remote:?}");
    assert!(local.contains_key("ik-remote newcomer"), "{local:?}");
    // The renamed copy of a deleted newcomer is kept locally until its resolution is finished.
    assert!(local.contains_key("ik-both-deleted newcomer"), "{local:?}");
    assert!(
        !remote.contains_key("ik-both-deleted newcomer"),
        "{remote:?}"
    );
    let open = cloud
        .store()
        .list_conflicts(cloud.tenant, &identity(Some(ConflictState::Open)))
        .await
        .unwrap();
    assert_eq!(open.len(), cases.len() - 1, "{open:?}");
    assert!(open.iter().all(|c| c.resolving_json.is_some()), "{open:?}");

    // Once older than `resume_resolutions_after`, a sync finishes each of them.
    let resume_now = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..EngineConfig::default()
    };
    let report = cloud.sync_with(&resume_now).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    crate::assert_counts(
        &report,
        &[
            ("resolutions_completed", cases.len() as u64 - 2),
            ("resolutions_abandoned", 1),
            ("conflicts", 0),
        ],
    );
    cloud.settle().await;
    // The abandoned one: open, without a decision, audited; nothing of it was deleted.
    let open = cloud
        .store()
        .list_conflicts(cloud.tenant, &identity(Some(ConflictState::Open)))
        .await
        .unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].event_uid, MOVED);
    assert_eq!(open[0].resolving_json, None);
    let remote_now = cloud.remote_all().await;
    assert!(
        remote_now.contains_key("ik-moved original"),
        "{remote_now:?}"
    );
    assert!(
        remote_now.contains_key("ik-moved newcomer edited"),
        "{remote_now:?}"
    );

    // UID → summary, equal on both sides.
    let local: BTreeMap<String, String> = cloud
        .store()
        .list_series(cloud.tenant, cloud.local_calendar, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.uid.clone(), prop(&s.ical, "SUMMARY").unwrap_or_default()))
        .filter(|(uid, _)| uid != MOVED)
        .collect();
    let remote: BTreeMap<String, String> = remote_now
        .into_values()
        .map(|ical| {
            (
                prop(&ical, "UID").unwrap(),
                prop(&ical, "SUMMARY").unwrap_or_default(),
            )
        })
        .filter(|(uid, _)| uid != MOVED)
        .collect();
    assert_eq!(local, remote);
    for (uid, option, ..) in cases.into_iter().filter(|c| c.0 != MOVED) {
        let kept = match option {
            "keep_remote" => "newcomer",
            _ => "original",
        };
        assert_eq!(local[uid], format!("{uid} {kept}"), "{local:?}");
        let copies: Vec<&String> = local
            .keys()
            .filter(|k| k.starts_with(&format!("{uid}-copy-")))
            .collect();
        if option == "keep_both" {
            assert_eq!(copies.len(), 1, "{uid}: {local:?}");
            assert_eq!(local[copies[0]], format!("{uid} newcomer"));
        } else {
            assert!(copies.is_empty(), "{uid}: {local:?}");
        }
    }
    assert_eq!(local.len(), cases.len() - 1 + 3, "{local:?}");

    // Every conflict resolved with its option, by the admin, completed after the interruption; no
    // conflict recorded again.
    let all = cloud
        .store()
        .list_conflicts(cloud.tenant, &identity(None))
        .await
        .unwrap();
    assert_eq!(all.len(), cases.len(), "{all:?}");
    let audit = cloud
        .store()
        .list_audit(cloud.tenant, None, 1000)
        .await
        .unwrap();
    let sync_actor = format!("sync:{}", cloud.connection);
    let abandoned: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.action == "conflict.resolution_abandoned")
        .collect();
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0].subject, open[0].id.to_string());
    for (uid, option, _, retry) in cases.into_iter().filter(|c| c.0 != MOVED) {
        let c = all.iter().find(|c| c.event_uid == uid).unwrap();
        assert_eq!(c.state, ConflictState::Resolved, "{uid}");
        assert_eq!(c.resolved_by.as_deref(), Some("key:test"), "{uid}");
        let resolution: Value =
            serde_json::from_str(c.resolution_json.as_deref().unwrap()).unwrap();
        assert_eq!(resolution["option"], option, "{uid}: {resolution}");
        let by = if retry {
            "key:test"
        } else {
            sync_actor.as_str()
        };
        assert_eq!(
            resolution["interrupted"]["completed_by"], by,
            "{uid}: {resolution}"
        );
        assert_eq!(resolution["interrupted"]["how"], "resumed", "{uid}");
        let entries: Vec<&AuditEntry> = audit
            .iter()
            .filter(|e| e.action == "conflict.resolved" && e.subject == c.id.to_string())
            .collect();
        assert_eq!(entries.len(), 1, "{uid}: {entries:?}");
        assert_eq!(entries[0].actor, by, "{uid}");
    }
}

fn cloud_provider(emu: &Emulator, flavor: Flavor) -> Arc<dyn CalendarProvider> {
    let token = Arc::new(StaticToken(Secret::new(emu.token(None).unwrap())));
    let window = Window::parse(
        Timestamp::now() - 24 * 100.hours(),
        Timestamp::now() + 24 * 100.hours(),
    )
    .unwrap();
    match flavor {
        Flavor::Microsoft => {
            let base = url::Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
            let mut config = GraphConfig::new(base, Access::ReadWrite);
            config.read_window = Some(window);
            Arc::new(GraphProvider::new(&http_client(), config, token))
        }
        Flavor::Google => {
            let base = url::Url::parse(&format!("{}/calendar/v3/", emu.base_url())).unwrap();
            let mut config = GoogleConfig::new(base, Access::ReadWrite);
            config.read_window = Some(window);
            Arc::new(GoogleProvider::new(&http_client(), config, token))
        }
    }
}

/// Every series of a remote calendar, through a full read of a window wider than the stories use.
async fn full_read(
    provider: &dyn CalendarProvider,
    calendar: &CalendarId,
) -> Vec<calbridge_providers::RemoteItem> {
    let window = Window::parse(
        Timestamp::now() - 24 * 200.hours(),
        Timestamp::now() + 24 * 200.hours(),
    )
    .unwrap();
    provider
        .changes(calendar, None, &window, &KnownVersions::new())
        .await
        .unwrap()
        .upserts
}

/// Remote id and summary of every series in a remote calendar.
async fn listing(provider: &dyn CalendarProvider, calendar: &CalendarId) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = full_read(provider, calendar)
        .await
        .into_iter()
        .map(|i| {
            let summary = prop(i.content.as_ical(), "SUMMARY").unwrap_or_default();
            (i.id.as_str().to_owned(), summary)
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// A new tenant with one local calendar named `name`.
async fn local_calendar(store: &dyn Store, name: &str) -> (TenantId, calbridge_store::CalendarId) {
    let tenant = store.create_tenant("acme").await.unwrap().id;
    let calendar = store
        .create_calendar(
            tenant,
            NewCalendar {
                name: name.into(),
                time_zone: "UTC".into(),
                owner: None,
            },
        )
        .await
        .unwrap()
        .id;
    (tenant, calendar)
}

/// A connection of `kind` for `local` and its one link to the remote `calendar`.
async fn link_to(
    store: &dyn Store,
    tenant: TenantId,
    local: calbridge_store::CalendarId,
    kind: Provider,
    name: &str,
    calendar: &CalendarId,
) -> (ConnectionId, LinkId) {
    let connection = store
        .create_connection(
            tenant,
            NewConnection {
                provider: kind,
                name: name.into(),
                calendar_id: local,
                credentials: None,
                sync_options_json: "{}".into(),
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
                remote_calendar_id: calendar.as_str().to_owned(),
                remote_name: None,
            },
        )
        .await
        .unwrap()
        .id;
    (connection, link)
}

/// One engine run of a link, as the scheduler starts it (not a full reconciliation).
async fn sync_once(
    store: &dyn Store,
    provider: &dyn CalendarProvider,
    tenant: TenantId,
    connection: ConnectionId,
    link: LinkId,
) -> RunReport {
    sync_once_with(
        store,
        provider,
        tenant,
        connection,
        link,
        &EngineConfig::default(),
    )
    .await
}

async fn sync_once_with(
    store: &dyn Store,
    provider: &dyn CalendarProvider,
    tenant: TenantId,
    connection: ConnectionId,
    link: LinkId,
    config: &EngineConfig,
) -> RunReport {
    let connection = store.get_connection(tenant, connection).await.unwrap();
    let link = store.get_link(tenant, link).await.unwrap();
    sync_link(LinkSync {
        store,
        provider,
        tenant,
        connection: &connection,
        link: &link,
        config,
        now: Timestamp::now(),
        full: false,
        run: None,
    })
    .await
    .unwrap()
}

/// One local calendar linked at once to the Graph emulator, the Google emulator and Radicale (issue #6):
/// a local event reaches all three exactly once, an edit made on one provider reaches the other two
/// through the local calendar, a deletion on another provider removes it everywhere; nothing doubles.
pub async fn one_calendar_three_providers(db: TestDb) {
    let Some(radicale) = crate::support::Radicale::start() else {
        return;
    };
    let dav_url = radicale.calendar_url("work");
    radicale.raw().mkcalendar(&dav_url, "work").await;
    let graph_emu = Emulator::start(Flavor::Microsoft, EmulatorConfig::default())
        .await
        .unwrap();
    let google_emu = Emulator::start(Flavor::Google, EmulatorConfig::default())
        .await
        .unwrap();
    let dav: Arc<dyn CalendarProvider> = Arc::new(radicale.provider());
    let graph = cloud_provider(&graph_emu, Flavor::Microsoft);
    let google = cloud_provider(&google_emu, Flavor::Google);
    let graph_cal = graph.list_calendars().await.unwrap().remove(0).id;
    let google_cal = google.list_calendars().await.unwrap().remove(0).id;
    let dav_cal = CalendarId::parse(format!("/{}/work/", crate::support::USER)).unwrap();

    let store = db.store.clone();
    let (tenant, local_calendar) = local_calendar(store.as_ref(), "Shared").await;
    let mut links = Vec::new();
    for (provider, kind, calendar) in [
        (graph.clone(), Provider::Microsoft, graph_cal.clone()),
        (google.clone(), Provider::Google, google_cal.clone()),
        (dav.clone(), Provider::Caldav, dav_cal.clone()),
    ] {
        let (connection, link) = link_to(
            store.as_ref(),
            tenant,
            local_calendar,
            kind,
            kind.as_str(),
            &calendar,
        )
        .await;
        links.push((provider, connection, link));
    }
    // Every link, twice: a change pulled from one provider is pushed to the others in the next round.
    let sync_all = || {
        let store = store.clone();
        let links = &links;
        async move {
            for _ in 0..2 {
                for (provider, connection, link) in links {
                    let report = sync_once(
                        store.as_ref(),
                        provider.as_ref(),
                        tenant,
                        *connection,
                        *link,
                    )
                    .await;
                    assert!(report.errors.is_empty(), "{:?}", report.errors);
                }
            }
        }
    };
    let remotes = [
        ("graph", &graph, &graph_cal),
        ("google", &google, &google_cal),
        ("radicale", &dav, &dav_cal),
    ];
    let summaries = |items: Vec<(String, String)>| -> Vec<String> {
        items.into_iter().map(|(_, s)| s).collect()
    };
    let local_summaries = || {
        let store = store.clone();
        async move {
            let mut out: Vec<String> = store
                .list_series(tenant, local_calendar, None, 100)
                .await
                .unwrap()
                .iter()
                .map(|s| prop(&s.ical, "SUMMARY").unwrap_or_default())
                .collect();
            out.sort();
            out
        }
    };

    // --- a local event reaches all three, once each ---
    store
        .create_series(
            tenant,
            NewSeries {
                calendar_id: local_calendar,
                uid: "launch@calbridge.test".into(),
                ical: event("launch@calbridge.test", "Launch", 4),
                model_json: "{}".into(),
                hash: "test".into(),
                occurrences: OccurrenceSet::default(),
            },
        )
        .await
        .unwrap();
    sync_all().await;
    for (name, provider, calendar) in remotes {
        assert_eq!(
            summaries(listing(provider.as_ref(), calendar).await),
            ["Launch"],
            "{name}"
        );
    }
    assert_eq!(local_summaries().await, ["Launch"]);

    // --- an edit on Google reaches Graph and Radicale through the local calendar ---
    let google_id = listing(google.as_ref(), &google_cal).await.remove(0).0;
    google_emu
        .act(Action::Edit {
            user: None,
            calendar: Some(google_cal.as_str().to_owned()),
            event_id: google_id,
            changes: json!({"summary": "Launch (moved)"}),
        })
        .await
        .unwrap();
    sync_all().await;
    assert_eq!(local_summaries().await, ["Launch (moved)"]);
    for (name, provider, calendar) in remotes {
        assert_eq!(
            summaries(listing(provider.as_ref(), calendar).await),
            ["Launch (moved)"],
            "{name}"
        );
    }

    // --- a deletion on Graph removes it locally, from Google and from Radicale ---
    let graph_id = listing(graph.as_ref(), &graph_cal).await.remove(0).0;
    graph_emu
        .act(Action::Delete {
            user: None,
            calendar: Some(graph_cal.as_str().to_owned()),
            event_id: graph_id,
        })
        .await
        .unwrap();
    sync_all().await;
    assert!(local_summaries().await.is_empty());
    for (name, provider, calendar) in remotes {
        assert!(
            listing(provider.as_ref(), calendar).await.is_empty(),
            "{name}"
        );
    }
}

/// Identity `keep_both` decisions abandoned by the sync that resumes them (Google emulator; identity
/// conflicts are never superseded, so resumption is where they are given up):
/// - `ia-saved`: killed after saving the renamed copy (the newcomer not deleted yet), then the
///   newcomer edited by someone else. The resumption finds it moved and abandons the decision; the
///   copy, which never left calbridge, is deleted (audited `fate: deleted`) and no sync exports it.
/// - `ia-created`: killed after the copy was created on the provider, then the local series edited.
///   Abandoned too; the copy is a real event by then and is kept on both sides (audited `kept`).
///
/// Both conflicts stay open for a person, without a decision.
pub async fn abandoned_identity_keep_both_copies(db: TestDb) {
    let cloud = Cloud::new(db, Flavor::Google).await;
    let with_uid = |summary: &str, days: i64, uid: &str| {
        let mut event = cloud.single(summary, days);
        event["extendedProperties"] = json!({"private": {"calbridgeUid": uid}});
        event
    };
    let cases = [("ia-saved", 1, 4), ("ia-created", 3, 8)];
    for (uid, _, days) in cases {
        cloud
            .remote_create(with_uid(&format!("{uid} original"), days, uid))
            .await;
    }
    cloud.settle().await;
    let mut newcomers = BTreeMap::new();
    for (uid, _, days) in cases {
        let id = cloud
            .remote_create(with_uid(&format!("{uid} newcomer"), days + 1, uid))
            .await;
        newcomers.insert(uid, id);
    }
    let report = cloud.sync().await;
    crate::assert_counts(&report, &[("conflicts", 2)]);
    let conflicts = cloud
        .store()
        .list_conflicts(
            cloud.tenant,
            &ConflictFilter {
                state: None,
                connection_id: Some(cloud.connection),
                link_id: None,
                kind: Some(ConflictKind::Identity),
            },
        )
        .await
        .unwrap();
    for (uid, crash_after, days) in cases {
        let c = conflicts.iter().find(|c| c.event_uid == uid).unwrap();
        let crash = EngineConfig {
            crash_after_resolution_writes: Some(crash_after),
            ..EngineConfig::default()
        };
        let err = calbridge_engine::resolve_conflict(crate::resolve_request(
            cloud.store(),
            cloud.provider.as_ref(),
            cloud.tenant,
            c.id,
            "keep_both",
            &crash,
        ))
        .await
        .unwrap_err();
        assert_eq!(err.code(), "interrupted", "{uid}: {err}");
        match uid {
            "ia-saved" => {
                cloud
                    .remote_edit(
                        &newcomers[uid],
                        cloud.summary_change("ia-saved newcomer edited"),
                    )
                    .await
            }
            _ => {
                cloud
                    .local_edit(uid, &event(uid, "ia-created original edited", days))
                    .await
            }
        }
    }
    assert!(cloud.local_all().await.contains_key("ia-saved newcomer"));
    assert!(cloud.remote_all().await.contains_key("ia-created newcomer"));

    let resume_now = EngineConfig {
        resume_resolutions_after: jiff::SignedDuration::ZERO,
        ..EngineConfig::default()
    };
    let report = cloud.sync_with(&resume_now).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    crate::assert_counts(&report, &[("resolutions_abandoned", 2)]);
    cloud.settle().await;
    let local = cloud.local_all().await;
    let remote = cloud.remote_all().await;
    // ia-saved's copy is gone and never reached the provider; the newcomer stays as edited.
    assert!(!local.contains_key("ia-saved newcomer"), "{local:?}");
    assert!(!remote.contains_key("ia-saved newcomer"), "{remote:?}");
    assert!(
        remote.contains_key("ia-saved newcomer edited"),
        "{remote:?}"
    );
    // ia-created's copy stays on both sides, once (`local_all`/`remote_all` refuse a summary twice).
    assert!(local.contains_key("ia-created newcomer"), "{local:?}");
    assert!(remote.contains_key("ia-created newcomer"), "{remote:?}");
    let audit = cloud
        .store()
        .list_audit(cloud.tenant, None, 1000)
        .await
        .unwrap();
    for (uid, fate) in [("ia-saved", "deleted"), ("ia-created", "kept")] {
        let c = cloud
            .store()
            .get_conflict(
                cloud.tenant,
                conflicts.iter().find(|c| c.event_uid == uid).unwrap().id,
            )
            .await
            .unwrap();
        assert_eq!(c.state, ConflictState::Open, "{uid}");
        assert_eq!(c.resolving_json, None, "{uid}");
        let entries: Vec<&AuditEntry> = audit
            .iter()
            .filter(|e| {
                e.action == "conflict.resolution_abandoned" && e.subject == c.id.to_string()
            })
            .collect();
        assert_eq!(entries.len(), 1, "{uid}: {entries:?}");
        let details: Value = serde_json::from_str(&entries[0].details_json).unwrap();
        assert_eq!(details["copy"]["fate"], fate, "{uid}: {details}");
    }
}
