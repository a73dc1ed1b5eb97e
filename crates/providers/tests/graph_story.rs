#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Microsoft Graph connector against the Graph emulator over real HTTP on loopback.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/asked.rs"]
mod asked;
#[path = "support/story.rs"]
mod story;

use asked::Asked;
use calbridge_emulators::{Emulator, EmulatorConfig, Fault, FaultRule, FaultScope, Flavor};
use calbridge_providers::graph::{GraphConfig, GraphProvider};
use calbridge_providers::http::Secret;
use calbridge_providers::oauth::{Access, StaticToken};
use calbridge_providers::{
    CalendarProvider, CreateKey, DiagnosisKind, Etag, FullListingReason, ItemContent,
    KnownVersions, ProviderError, ReadItem, Window,
};
use jiff::Timestamp;
use serde_json::{Value, json};
use story::{client, create, first_calendar, known_of, total_requests, window};

async fn emulator() -> Emulator {
    Emulator::start(Flavor::Microsoft, EmulatorConfig::default())
        .await
        .unwrap()
}

fn provider_with(emu: &Emulator, token: String, access: Access, page_size: u32) -> GraphProvider {
    let base = url::Url::parse(&format!("{}/v1.0/", emu.base_url())).unwrap();
    let mut config = GraphConfig::new(base, access);
    config.page_size = page_size;
    config.read_window = Some(window());
    GraphProvider::new(&client(), config, Arc::new(StaticToken(Secret::new(token))))
}

fn provider(emu: &Emulator) -> GraphProvider {
    provider_with(emu, emu.token(None).unwrap(), Access::ReadWrite, 100)
}

fn single(subject: &str, day: u32) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": format!("2026-03-{day:02}T09:00:00"), "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": format!("2026-03-{day:02}T10:00:00"), "timeZone": "W. Europe Standard Time"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
    })
}

fn weekly(subject: &str) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": "2026-04-06T15:00:00", "timeZone": "Pacific Standard Time"},
        "end": {"dateTime": "2026-04-06T16:00:00", "timeZone": "Pacific Standard Time"},
        "originalStartTimeZone": "Pacific Standard Time",
        "originalEndTimeZone": "Pacific Standard Time",
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "numbered", "startDate": "2026-04-06", "numberOfOccurrences": 5},
        },
    })
}

#[tokio::test]
async fn graph_connection_test_lists_calendars_and_diagnoses_a_bad_token() {
    let emu = emulator().await;
    emu.add_calendar(None, "Team").unwrap();
    let p = provider(&emu);
    let diagnosis = p.test_connection().await;
    assert_eq!(diagnosis.kind, DiagnosisKind::Ok, "{diagnosis:?}");
    assert_eq!(diagnosis.calendars.len(), 2);
    assert!(diagnosis.calendars.iter().any(|c| c.name == "Team"));

    let bad = provider_with(&emu, "not-a-token".into(), Access::ReadWrite, 100);
    let diagnosis = bad.test_connection().await;
    assert_eq!(
        diagnosis.kind,
        DiagnosisKind::InvalidCredentials,
        "{diagnosis:?}"
    );
}

#[tokio::test]
async fn graph_full_read_pages_then_a_no_op_sync_costs_one_request() {
    let emu = emulator().await;
    let p = provider_with(&emu, emu.token(None).unwrap(), Access::ReadWrite, 3);
    let calendar = first_calendar(&p).await;
    let mut ids = Vec::new();
    for day in 1..=8 {
        ids.push(
            create(
                &emu,
                Some(calendar.as_str()),
                single(&format!("event {day}"), day),
            )
            .await,
        );
    }
    let series = create(&emu, Some(calendar.as_str()), weekly("weekly")).await;
    emu.reset_counters();
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.full_listing, Some(FullListingReason::NoCursor));
    assert_eq!(first.upserts.len(), 9, "8 singles + 1 series");
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    // 8 singles + 5 occurrences at 3 per page is 5 delta pages.
    assert!(
        emu.counters().for_endpoint("delta") >= 5,
        "{:?}",
        emu.counters()
    );
    let item = first
        .upserts
        .iter()
        .find(|i| i.id.as_str() == ids[0])
        .unwrap();
    let ical = item.content.as_ical();
    assert!(
        ical.contains("DTSTART;TZID=Europe/Berlin:20260301T090000"),
        "{ical}"
    );
    assert!(ical.contains("SUMMARY:event 1"));
    let series_item = first
        .upserts
        .iter()
        .find(|i| i.id.as_str() == series)
        .unwrap();
    let text = series_item.content.as_ical();
    assert!(
        text.contains("RRULE:FREQ=WEEKLY;COUNT=5;BYDAY=MO")
            || text.contains("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5"),
        "{text}"
    );
    assert!(
        text.contains("DTSTART;TZID=America/Los_Angeles:20260406T150000"),
        "{text}"
    );

    emu.reset_counters();
    let asked = Asked::new(known_of(&first));
    let again = p
        .changes(&calendar, first.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert!(
        again.upserts.is_empty()
            && again.deletions.is_empty()
            && again.uncertain_deletions.is_empty()
    );
    assert!(
        asked.named().is_empty() && asked.all_asked() == 0,
        "a no-op round asks about no version: {:?}",
        asked.named()
    );
    assert_eq!(again.full_listing, None);
    let counters = emu.counters();
    assert_eq!(
        total_requests(&emu),
        1,
        "a no-op sync is one request per calendar: {counters:?}"
    );
}

#[tokio::test]
async fn graph_incremental_changes_by_a_user_including_one_occurrence() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let keep = create(&emu, Some(calendar.as_str()), single("keep", 2)).await;
    let edit = create(&emu, Some(calendar.as_str()), single("edit me", 3)).await;
    let gone = create(&emu, Some(calendar.as_str()), single("delete me", 4)).await;
    let series = create(&emu, Some(calendar.as_str()), weekly("standup")).await;
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.upserts.len(), 4);
    let known = known_of(&first);

    let new = create(&emu, Some(calendar.as_str()), single("new", 5)).await;
    story::edit(&emu, &edit, json!({"subject": "edited"})).await;
    story::delete(&emu, &gone).await;
    // One occurrence moved and renamed, another cancelled.
    let instances = instance_ids(&emu, &series).await;
    story::edit(&emu, &instances[1], json!({"subject": "standup (moved)"})).await;
    story::delete(&emu, &instances[2]).await;

    let asked = Asked::new(known.clone());
    let second = p
        .changes(&calendar, first.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(second.full_listing, None);
    let upserted: Vec<&str> = second.upserts.iter().map(|i| i.id.as_str()).collect();
    assert!(upserted.contains(&new.as_str()), "{upserted:?}");
    assert!(upserted.contains(&edit.as_str()));
    assert!(!upserted.contains(&keep.as_str()));
    // An occurrence's `@removed` id does not name its series, and this caller remembers the
    // occurrences of no item (as after data synced before occurrences were reported): the series
    // whose occurrences it does not remember, here every series held, are re-read; the round asked
    // for their versions once, and never for every version.
    assert_eq!(asked.unknown_asked(), 1);
    assert_eq!(asked.all_asked(), 0);
    assert_eq!(
        asked.occurrences_named(),
        BTreeSet::from([instances[2].clone()])
    );
    let named = asked.named();
    for id in [&new, &edit, &gone, &series] {
        assert!(named.contains(id.as_str()), "{id} not asked: {named:?}");
    }
    assert!(
        !named.contains(keep.as_str()),
        "unchanged item asked: {named:?}"
    );
    let series_item = second
        .upserts
        .iter()
        .find(|i| i.id.as_str() == series)
        .expect("series re-read");
    let text = series_item.content.as_ical();
    assert!(
        text.contains("RECURRENCE-ID;TZID=America/Los_Angeles:20260413T150000"),
        "{text}"
    );
    assert!(text.contains("SUMMARY:standup (moved)"), "{text}");
    assert!(
        text.contains("EXDATE;TZID=America/Los_Angeles:20260420T150000"),
        "{text}"
    );
    assert_ne!(
        series_item.etag, known[&series_item.id],
        "an exception changes the series version"
    );
    assert!(
        second
            .uncertain_deletions
            .iter()
            .any(|d| d.as_str() == gone),
        "{second:?}"
    );
    assert!(
        second.deletions.is_empty(),
        "Graph's @removed is never certain: {second:?}"
    );
    let edited = second
        .upserts
        .iter()
        .find(|i| i.id.as_str() == edit)
        .unwrap();
    assert!(edited.content.as_ical().contains("SUMMARY:edited"));

    // Edits alone: the round asks about the edited items and nothing else.
    story::edit(&emu, &keep, json!({"subject": "kept, edited"})).await;
    let mut known = known;
    known.extend(known_of(&second));
    let asked = Asked::new(known);
    let third = p
        .changes(&calendar, second.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(third.upserts.len(), 1, "{third:?}");
    assert_eq!(
        asked.all_asked(),
        0,
        "an incremental round of edits reads no full list"
    );
    assert_eq!(asked.named(), BTreeSet::from([keep.clone()]));
}

async fn instance_ids(emu: &Emulator, series: &str) -> Vec<String> {
    story::instance_ids(
        emu,
        &format!("/v1.0/me/events/{series}/instances?startDateTime=2026-04-01T00:00:00Z&endDateTime=2026-06-01T00:00:00Z"),
    )
    .await
}

const SERIES: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:series-1@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260504T100000\r\nDTEND;TZID=Europe/Berlin:20260504T110000\r\nRRULE:FREQ=WEEKLY;COUNT=5;BYDAY=MO\r\nEXDATE;TZID=Europe/Berlin:20260518T100000\r\nSUMMARY:Planning\\, weekly\r\nLOCATION:Room 1\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:series-1@test\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260511T100000\r\nDTSTART;TZID=Europe/Berlin:20260511T140000\r\nDTEND;TZID=Europe/Berlin:20260511T150000\r\nSUMMARY:Planning (afternoon)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[tokio::test]
async fn graph_series_with_exceptions_round_trips_and_a_retried_create_is_idempotent() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let content = ItemContent::parse(SERIES).unwrap();
    let key = CreateKey::parse("0123456789abcdefghijklmnop").unwrap();
    emu.reset_counters();
    let written = p.create(&calendar, &key, &content).await.unwrap();
    assert!(!written.already_existed);
    let counters = emu.counters();
    // The override's PATCH and the EXDATE's DELETE travel in one $batch.
    assert_eq!(counters.for_endpoint("$batch"), 1, "{counters:?}");
    let read = p
        .read(&calendar, std::slice::from_ref(&written.id))
        .await
        .unwrap();
    let ReadItem::Found(item) = &read[0] else {
        panic!("{read:?}")
    };
    let text = item.content.as_ical();
    assert!(text.contains("RRULE:"), "{text}");
    assert!(text.contains("SUMMARY:Planning\\, weekly"), "{text}");
    assert!(
        text.contains("RECURRENCE-ID;TZID=Europe/Berlin:20260511T100000"),
        "{text}"
    );
    assert!(
        text.contains("DTSTART;TZID=Europe/Berlin:20260511T140000"),
        "{text}"
    );
    assert!(
        text.contains("EXDATE;TZID=Europe/Berlin:20260518T100000"),
        "{text}"
    );
    let series = &item.content.calendar().series()[0];
    assert_eq!(series.overrides().len(), 1);

    let live = emu.live_events(None).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = p.create(&calendar, &key, &content).await.unwrap();
    assert!(again.already_existed);
    assert_eq!(again.id, written.id);
    assert_eq!(emu.live_events(None).unwrap(), live, "no duplicate");
}

#[tokio::test]
async fn graph_if_match_refuses_stale_versions() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let id = create(&emu, Some(calendar.as_str()), single("versioned", 9)).await;
    let read = p
        .read(
            &calendar,
            &[calbridge_providers::RemoteId::parse(id.clone()).unwrap()],
        )
        .await
        .unwrap();
    let ReadItem::Found(item) = &read[0] else {
        panic!()
    };
    let edited = ItemContent::parse(
        item.content
            .as_ical()
            .replace("SUMMARY:versioned", "SUMMARY:ours"),
    )
    .unwrap();
    story::edit(&emu, &id, json!({"subject": "theirs"})).await;
    let stale = p.update(&calendar, &item.id, &item.etag, &edited).await;
    assert!(
        matches!(stale, Err(ProviderError::PreconditionFailed)),
        "{stale:?}"
    );
    assert!(matches!(
        p.delete(&calendar, &item.id, &item.etag).await,
        Err(ProviderError::PreconditionFailed)
    ));
    let fresh = p
        .read(&calendar, std::slice::from_ref(&item.id))
        .await
        .unwrap();
    let ReadItem::Found(fresh) = &fresh[0] else {
        panic!()
    };
    let written = p
        .update(&calendar, &item.id, &fresh.etag, &edited)
        .await
        .unwrap();
    let etag = written.etag.unwrap();
    assert_ne!(etag, fresh.etag);
    p.delete(&calendar, &item.id, &etag).await.unwrap();
    let after = p
        .read(&calendar, std::slice::from_ref(&item.id))
        .await
        .unwrap();
    assert!(matches!(after[0], ReadItem::Missing(_)), "{after:?}");
}

#[tokio::test]
async fn graph_invalidated_delta_token_restarts_with_a_full_read() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let a = create(&emu, Some(calendar.as_str()), single("a", 2)).await;
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    emu.invalidate_sync_state(None).unwrap();
    let mut known = known_of(&first);
    known.insert(
        calbridge_providers::RemoteId::parse("gone-elsewhere").unwrap(),
        Etag::parse("W/\"x\"").unwrap(),
    );
    let second = p
        .changes(&calendar, first.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(second.full_listing, Some(FullListingReason::CursorInvalid));
    assert!(
        second.unchanged.iter().any(|i| i.as_str() == a),
        "{second:?}"
    );
    assert!(
        second
            .deletions
            .iter()
            .any(|d| d.as_str() == "gone-elsewhere")
    );
    assert!(emu.counters().with_status(410) >= 1);
}

#[tokio::test]
async fn graph_throttling_waits_the_decimal_retry_after_and_5xx_is_retried() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    create(&emu, Some(calendar.as_str()), single("a", 2)).await;
    emu.add_fault(FaultRule {
        path_contains: Some("delta".into()),
        method: None,
        times: Some(1),
        scope: FaultScope::Request,
        fault: Fault::Throttle {
            retry_after_secs: 1.5,
            status: None,
        },
    })
    .unwrap();
    let started = Instant::now();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(set.upserts.len(), 1);
    assert_eq!(emu.counters().with_status(429), 1);

    emu.add_fault(FaultRule {
        path_contains: Some("delta".into()),
        method: None,
        times: Some(2),
        scope: FaultScope::Request,
        fault: Fault::ServerError { status: 503 },
    })
    .unwrap();
    let set = p
        .changes(&calendar, set.cursor.as_ref(), &window(), &known_of(&set))
        .await
        .unwrap();
    assert!(set.upserts.is_empty());
    assert_eq!(emu.counters().with_status(503), 2);
}

#[tokio::test]
async fn graph_read_only_connection_refuses_writes_without_a_request() {
    let emu = emulator().await;
    let p = provider_with(&emu, emu.token(None).unwrap(), Access::ReadOnly, 100);
    let calendar = first_calendar(&p).await;
    assert!(!p.capabilities().writable);
    emu.reset_counters();
    let content = ItemContent::parse(SERIES).unwrap();
    let key = CreateKey::parse("abcdeabcde").unwrap();
    assert!(matches!(
        p.create(&calendar, &key, &content).await,
        Err(ProviderError::ReadOnly)
    ));
    let id = calbridge_providers::RemoteId::parse("x").unwrap();
    let etag = Etag::parse("W/\"x\"").unwrap();
    assert!(matches!(
        p.update(&calendar, &id, &etag, &content).await,
        Err(ProviderError::ReadOnly)
    ));
    assert!(matches!(
        p.delete(&calendar, &id, &etag).await,
        Err(ProviderError::ReadOnly)
    ));
    assert_eq!(emu.counters().requests.len(), 0);
}

#[tokio::test]
async fn graph_reads_go_through_batches_of_twenty() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let mut ids = Vec::new();
    for i in 0..25u32 {
        let id = create(
            &emu,
            Some(calendar.as_str()),
            single(&format!("batch {i}"), 1 + i % 28),
        )
        .await;
        ids.push(calbridge_providers::RemoteId::parse(id).unwrap());
    }
    ids.push(calbridge_providers::RemoteId::parse("does-not-exist").unwrap());
    emu.reset_counters();
    let read = p.read(&calendar, &ids).await.unwrap();
    assert_eq!(
        read.iter()
            .filter(|r| matches!(r, ReadItem::Found(_)))
            .count(),
        25
    );
    assert!(matches!(read[25], ReadItem::Missing(_)), "{:?}", read[25]);
    let counters = emu.counters();
    // Two $batch POSTs for 26 ids (20 + 6); the individual GETs are inside them.
    assert_eq!(counters.for_endpoint("$batch"), 2, "{counters:?}");
}

#[tokio::test]
async fn graph_free_busy_through_get_schedule() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    create(&emu, Some(calendar.as_str()), single("busy", 10)).await;
    let window = Window::parse(
        "2026-03-09T00:00:00Z".parse().unwrap(),
        "2026-03-12T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let busy = p.free_busy(&calendar, &window).await.unwrap();
    assert_eq!(busy.len(), 1, "{busy:?}");
    let start: Timestamp = "2026-03-10T08:00:00Z".parse().unwrap();
    assert_eq!(busy[0].start, start);
}

#[tokio::test]
async fn graph_deleting_only_one_occurrence_reaches_its_series() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let series = create(&emu, Some(calendar.as_str()), weekly("standup")).await;
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let instances = instance_ids(&emu, &series).await;
    story::delete(&emu, &instances[3]).await;
    let second = p
        .changes(
            &calendar,
            first.cursor.as_ref(),
            &window(),
            &known_of(&first),
        )
        .await
        .unwrap();
    let item = second
        .upserts
        .iter()
        .find(|i| i.id.as_str() == series)
        .unwrap_or_else(|| panic!("{second:?}"));
    assert!(
        item.content
            .as_ical()
            .contains("EXDATE;TZID=America/Los_Angeles:20260427T150000"),
        "{}",
        item.content.as_ical()
    );
    assert!(
        !second
            .uncertain_deletions
            .iter()
            .any(|d| d.as_str() == series)
    );
}

/// A caller that remembers the occurrences a listing reported: an occurrence deleted in Outlook
/// re-reads its own series, not every series held (more than one `$batch` of them here).
#[tokio::test]
async fn graph_a_deleted_occurrence_re_reads_only_its_own_series() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let mut series = Vec::new();
    for i in 0..25 {
        series.push(
            create(
                &emu,
                Some(calendar.as_str()),
                weekly(&format!("weekly {i}")),
            )
            .await,
        );
    }
    let single = create(&emu, Some(calendar.as_str()), single("single", 3)).await;
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.upserts.len(), 26);
    // Every series reports its five occurrences; a single event reports none (an empty list).
    assert_eq!(first.series_occurrences.len(), 26, "{first:?}");
    let target = &series[7];
    let instances = instance_ids(&emu, target).await;
    let reported: BTreeSet<&str> = first.series_occurrences
        [&calbridge_providers::RemoteId::parse(target.clone()).unwrap()]
        .iter()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(
        reported,
        instances
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(reported.len(), 5);
    assert_eq!(
        first
            .series_occurrences
            .iter()
            .find(|(id, _)| id.as_str() == single)
            .map(|(_, o)| o.len()),
        Some(0)
    );

    story::delete(&emu, &instances[3]).await;
    let asked = Asked::remembering(known_of(&first), &first.series_occurrences);
    emu.reset_counters();
    let second = p
        .changes(&calendar, first.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(asked.all_asked(), 0, "no full list for a placed occurrence");
    assert_eq!(
        asked.occurrences_named(),
        BTreeSet::from([instances[3].clone()])
    );
    assert_eq!(
        asked.named(),
        BTreeSet::from([instances[3].clone(), target.clone()]),
        "the removed id, then its series"
    );
    // One delta page, then the master and the instances of one series: two `$batch` requests
    // (every series re-read would be four: 25 masters and 25 instance lists, 20 per batch).
    let counters = emu.counters();
    assert_eq!(counters.for_endpoint("$batch"), 2, "{counters:?}");
    assert_eq!(total_requests(&emu), 3, "{counters:?}");
    let read: Vec<&str> = second
        .series_occurrences
        .keys()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(read, [target.as_str()], "only its series is read");
    let upserted: Vec<&str> = second.upserts.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(upserted, [target.as_str()]);
    assert!(
        second.upserts[0]
            .content
            .as_ical()
            .contains("EXDATE;TZID=America/Los_Angeles:20260427T150000"),
        "{}",
        second.upserts[0].content.as_ical()
    );
    assert!(second.uncertain_deletions.is_empty(), "{second:?}");
    // The occurrence is forgotten with the re-read: what is reported replaces what was remembered.
    let now: Vec<&str> = second
        .series_occurrences
        .values()
        .next()
        .unwrap()
        .iter()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(now.len(), 4);
    assert!(!now.contains(&instances[3].as_str()));

    // A deleted series: its own `@removed` is verified by the caller; its occurrences' removals
    // read nothing more.
    let gone = &series[11];
    story::delete(&emu, gone).await;
    let mut known = known_of(&first);
    known.extend(known_of(&second));
    let mut remembered = first.series_occurrences.clone();
    remembered.extend(second.series_occurrences.clone());
    let asked = Asked::remembering(known, &remembered);
    emu.reset_counters();
    let third = p
        .changes(&calendar, second.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(asked.all_asked(), 0);
    let verify: Vec<&str> = third
        .uncertain_deletions
        .iter()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(verify, [gone.as_str()], "{third:?}");
    assert!(third.upserts.is_empty(), "{third:?}");
    assert_eq!(total_requests(&emu), 1, "{:?}", emu.counters());
}

/// `@removed` also names events added, changed or deleted outside the window. When every series
/// held has its occurrences remembered, such an id is no occurrence of theirs in the window: the
/// round reads nothing more than its delta page (re-reading every series cost four `$batch`
/// requests here, and at 100,000 events one round trip per 20 series). A series whose occurrences
/// are not remembered (held from before they were reported) is still re-read when an id nobody
/// remembers is removed, and it alone.
#[tokio::test]
async fn graph_a_removed_id_no_series_remembers_re_reads_only_unremembered_series() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let mut series = Vec::new();
    for i in 0..25 {
        series.push(
            create(
                &emu,
                Some(calendar.as_str()),
                weekly(&format!("weekly {i}")),
            )
            .await,
        );
    }
    let single = create(&emu, Some(calendar.as_str()), single("single", 3)).await;
    // Next year's meetings: outside the window.
    let far = |subject: &str, month: u32| {
        json!({
            "subject": subject,
            "start": {"dateTime": format!("2027-{month:02}-10T09:00:00"), "timeZone": "UTC"},
            "end": {"dateTime": format!("2027-{month:02}-10T10:00:00"), "timeZone": "UTC"},
        })
    };
    let later = create(&emu, Some(calendar.as_str()), far("next year", 3)).await;
    let dropped = create(&emu, Some(calendar.as_str()), far("dropped", 4)).await;
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.upserts.len(), 26, "{first:?}");

    story::edit(&emu, &later, json!({"subject": "next year (moved)"})).await;
    story::delete(&emu, &dropped).await;
    create(&emu, Some(calendar.as_str()), far("new next year", 5)).await;
    let asked = Asked::remembering(known_of(&first), &first.series_occurrences);
    emu.reset_counters();
    let second = p
        .changes(&calendar, first.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(
        asked.occurrences_named().len(),
        3,
        "three ids removed: {:?}",
        asked.occurrences_named()
    );
    assert_eq!(asked.all_asked(), 0);
    assert_eq!(
        asked.unknown_asked(),
        1,
        "nothing unremembered: no series read"
    );
    let counters = emu.counters();
    assert_eq!(counters.for_endpoint("$batch"), 0, "{counters:?}");
    assert_eq!(
        total_requests(&emu),
        1,
        "the delta page alone: {counters:?}"
    );
    assert!(
        second.upserts.is_empty()
            && second.deletions.is_empty()
            && second.uncertain_deletions.is_empty()
            && second.failures.is_empty()
            && second.series_occurrences.is_empty(),
        "{second:?}"
    );

    // A series held from before occurrences were reported: nothing remembered of it, so the id of
    // its deleted occurrence is placed nowhere. It alone is re-read (the master and its instances:
    // two `$batch` requests), and the occurrence becomes an EXDATE.
    let legacy = &series[7];
    let legacy_id = calbridge_providers::RemoteId::parse(legacy.clone()).unwrap();
    let mut remembered = first.series_occurrences.clone();
    remembered.remove(&legacy_id);
    let instances = instance_ids(&emu, legacy).await;
    story::delete(&emu, &instances[3]).await;
    let asked = Asked::remembering(known_of(&first), &remembered);
    emu.reset_counters();
    let third = p
        .changes(&calendar, second.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(asked.all_asked(), 0);
    assert_eq!(asked.unknown_asked(), 1);
    let counters = emu.counters();
    assert_eq!(counters.for_endpoint("$batch"), 2, "{counters:?}");
    assert_eq!(total_requests(&emu), 3, "{counters:?}");
    let upserted: Vec<&str> = third.upserts.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(upserted, [legacy.as_str()], "{third:?}");
    assert!(
        third.upserts[0]
            .content
            .as_ical()
            .contains("EXDATE;TZID=America/Los_Angeles:20260427T150000"),
        "{}",
        third.upserts[0].content.as_ical()
    );
    // Its occurrences are reported, to be remembered from now on.
    assert_eq!(third.series_occurrences[&legacy_id].len(), 4, "{third:?}");

    // A complete listing reads every series again; of the singles it shows unchanged it reports
    // only those whose occurrences are not remembered (as holding none), not every one each time.
    let single_id = calbridge_providers::RemoteId::parse(single.clone()).unwrap();
    let mut known = known_of(&first);
    known.extend(known_of(&third));
    let remembered = first.series_occurrences.clone();
    let asked = Asked::remembering(known.clone(), &remembered);
    let full = p.changes(&calendar, None, &window(), &asked).await.unwrap();
    assert_eq!(asked.unknown_asked(), 1);
    assert!(full.upserts.is_empty() && full.unchanged.contains(&single_id));
    assert_eq!(
        full.series_occurrences.len(),
        25,
        "every series, read again"
    );
    assert!(!full.series_occurrences.contains_key(&single_id));
    let mut remembered = remembered;
    remembered.remove(&single_id);
    let asked = Asked::remembering(known, &remembered);
    let full = p.changes(&calendar, None, &window(), &asked).await.unwrap();
    assert_eq!(full.series_occurrences.get(&single_id), Some(&Vec::new()));
}

#[tokio::test]
async fn graph_keeps_at_most_four_requests_in_flight_per_mailbox() {
    let emu = emulator().await;
    let p = Arc::new(provider(&emu));
    emu.add_fault(FaultRule {
        path_contains: Some("calendars".into()),
        method: None,
        times: None,
        scope: FaultScope::Request,
        fault: Fault::Latency { ms: 150 },
    })
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move { p.list_calendars().await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // The emulator answers a fifth concurrent request of a mailbox with 429 at once.
    assert_eq!(emu.counters().with_status(429), 0, "{:?}", emu.counters());
    assert_eq!(emu.counters().for_endpoint("calendars"), 12);
}

/// A fault on the requests inside `$batch` whose path contains `path`.
fn inner_fault(path: String, times: Option<u32>, fault: Fault) -> FaultRule {
    FaultRule {
        path_contains: Some(path),
        method: Some("GET".into()),
        times,
        scope: FaultScope::BatchItem,
        fault,
    }
}

/// The ids a round read (upserted) and failed to read, each with the cause.
fn read_and_failed(set: &calbridge_providers::ChangeSet) -> (Vec<&str>, Vec<(&str, &str)>) {
    (
        set.upserts.iter().map(|i| i.id.as_str()).collect(),
        set.failures
            .iter()
            .map(|(id, why)| (id.as_str(), why.as_str()))
            .collect(),
    )
}

/// A series whose `/instances` answer inside the `$batch` is a failure is a read failure naming the
/// status, never a series whose every occurrence became an EXDATE (the sync would delete them all on
/// the other side); the other series and singles of the same batch are read. The same for a read by
/// id, and for a failed master. Without the fault the series reads whole.
#[tokio::test]
async fn graph_an_inner_instances_failure_fails_its_series_instead_of_cancelling_it() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let failing = create(&emu, Some(calendar.as_str()), weekly("failing")).await;
    let healthy = create(&emu, Some(calendar.as_str()), weekly("healthy")).await;
    let lone = create(&emu, Some(calendar.as_str()), single("lone", 2)).await;
    emu.add_fault(inner_fault(
        format!("/events/{failing}/instances"),
        None,
        Fault::ServerError { status: 500 },
    ))
    .unwrap();

    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let (read, failed) = read_and_failed(&set);
    assert_eq!(failed.len(), 1, "{set:?}");
    assert_eq!(failed[0].0, failing);
    assert!(
        failed[0].1.contains("500") && failed[0].1.contains("occurrences"),
        "{failed:?}"
    );
    assert!(!read.contains(&failing.as_str()), "{set:?}");
    assert!(read.contains(&healthy.as_str()) && read.contains(&lone.as_str()));
    let healthy_item = set.upserts.iter().find(|i| i.id.as_str() == healthy);
    assert!(!healthy_item.unwrap().content.as_ical().contains("EXDATE"));
    assert!(set.deletions.is_empty() && set.uncertain_deletions.is_empty());
    // Its remembered occurrences are not replaced by an empty list.
    assert!(
        !set.series_occurrences
            .keys()
            .any(|id| id.as_str() == failing),
        "{:?}",
        set.series_occurrences
    );
    assert_eq!(
        set.series_occurrences
            .iter()
            .find(|(id, _)| id.as_str() == healthy)
            .map(|(_, o)| o.len()),
        Some(5)
    );

    let ids: Vec<_> = [&failing, &healthy]
        .iter()
        .map(|id| calbridge_providers::RemoteId::parse(id.as_str()).unwrap())
        .collect();
    let by_id = p.read(&calendar, &ids).await.unwrap();
    assert!(
        matches!(&by_id[0], ReadItem::Failed(id, why) if id.as_str() == failing && why.contains("500")),
        "{by_id:?}"
    );
    assert!(matches!(&by_id[1], ReadItem::Found(_)), "{by_id:?}");

    // A failed master (a 503 here) fails its series the same way.
    emu.clear_faults();
    emu.add_fault(inner_fault(
        format!("/events/{failing}"),
        None,
        Fault::ServerError { status: 503 },
    ))
    .unwrap();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let (read, failed) = read_and_failed(&set);
    assert_eq!(failed.len(), 1, "{set:?}");
    assert!(
        failed[0].0 == failing && failed[0].1.contains("503"),
        "{failed:?}"
    );
    assert_eq!(read.len(), 2, "{read:?}");

    emu.clear_faults();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert!(set.failures.is_empty(), "{set:?}");
    let item = set.upserts.iter().find(|i| i.id.as_str() == failing);
    let text = item.expect("read once the fault is gone").content.as_ical();
    assert!(!text.contains("EXDATE"), "{text}");
}

/// An inner 429 pauses the mailbox for its `Retry-After` and the throttled item alone is asked
/// again within the round: a passing throttle costs nothing; one that persists through every retry
/// leaves that series a read failure naming the 429, and the rest of the round stands; one longer
/// than the HTTP layer waits through ends the round with `RateLimited`.
#[tokio::test]
async fn graph_an_inner_throttle_is_retried_then_fails_only_its_series() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let throttled = create(&emu, Some(calendar.as_str()), weekly("throttled")).await;
    let healthy = create(&emu, Some(calendar.as_str()), weekly("healthy")).await;
    let path = format!("/events/{throttled}/instances");
    let throttle = Fault::Throttle {
        retry_after_secs: 0.3,
        status: None,
    };

    // Twice, then it passes: read whole after two waits.
    emu.add_fault(inner_fault(path.clone(), Some(2), throttle.clone()))
        .unwrap();
    let started = Instant::now();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert!(set.failures.is_empty(), "{set:?}");
    let item = set.upserts.iter().find(|i| i.id.as_str() == throttled);
    assert!(!item.unwrap().content.as_ical().contains("EXDATE"));
    assert!(emu.faults().is_empty(), "the rule was used up");

    // It persists: the item is asked again a bounded number of times, then reported.
    emu.add_fault(inner_fault(path, Some(100), throttle))
        .unwrap();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let (read, failed) = read_and_failed(&set);
    assert_eq!(read, [healthy.as_str()], "{set:?}");
    assert_eq!(failed.len(), 1, "{set:?}");
    assert!(
        failed[0].0 == throttled && failed[0].1.contains("429"),
        "{failed:?}"
    );
    let asked = 100 - emu.faults()[0].times.unwrap();
    assert_eq!(asked, 5, "five tries");

    // A `Retry-After` past what a call waits through ends the round at once, for the scheduler.
    emu.clear_faults();
    emu.add_fault(inner_fault(
        format!("/events/{healthy}/instances"),
        None,
        Fault::Throttle {
            retry_after_secs: 600.0,
            status: None,
        },
    ))
    .unwrap();
    let started = Instant::now();
    let outcome = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await;
    assert!(
        matches!(outcome, Err(ProviderError::RateLimited { retry_after: Some(wait) }) if wait >= Duration::from_secs(599)),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A series with more occurrences in the window than one `/instances` page: the `@odata.nextLink`
/// of the answer inside the `$batch` is followed, so nothing is taken for cancelled. When a later
/// page cannot be read, the series is a read failure, not a truncated series.
#[tokio::test]
async fn graph_follows_the_next_link_of_an_inner_instances_page() {
    let emu = emulator().await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let daily = create(
        &emu,
        Some(calendar.as_str()),
        json!({
            "subject": "daily",
            "start": {"dateTime": "2026-01-05T08:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-05T08:15:00", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "noEnd", "startDate": "2026-01-05"},
            },
        }),
    )
    .await;
    let lone = create(&emu, Some(calendar.as_str()), single("lone", 2)).await;
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert!(set.failures.is_empty(), "{set:?}");
    let item = set.upserts.iter().find(|i| i.id.as_str() == daily).unwrap();
    assert!(!item.content.as_ical().contains("EXDATE"));
    // 2026-01-05 to 2026-12-30: more than one page of 200.
    let occurrences = set
        .series_occurrences
        .iter()
        .find(|(id, _)| id.as_str() == daily)
        .map(|(_, o)| o.len());
    assert_eq!(occurrences, Some(360));

    // The follow-up page is a request of its own.
    emu.add_fault(FaultRule {
        path_contains: Some(format!("/events/{daily}/instances")),
        method: None,
        times: None,
        scope: FaultScope::Request,
        fault: Fault::ServerError { status: 500 },
    })
    .unwrap();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let (read, failed) = read_and_failed(&set);
    assert_eq!(read, [lone.as_str()], "{set:?}");
    assert_eq!(failed.len(), 1, "{set:?}");
    assert!(
        failed[0].0 == daily && failed[0].1.contains("500"),
        "{failed:?}"
    );
}
