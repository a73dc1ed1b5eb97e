#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Google Calendar connector against the Google emulator over real HTTP on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/asked.rs"]
mod asked;
#[path = "support/story.rs"]
mod story;

use asked::Asked;
use calbridge_emulators::{Emulator, EmulatorConfig, Fault, FaultRule, FaultScope, Flavor};
use calbridge_providers::google::{GoogleConfig, GoogleProvider};
use calbridge_providers::http::Secret;
use calbridge_providers::oauth::{Access, StaticToken};
use calbridge_providers::{
    CalendarProvider, CreateKey, DiagnosisKind, FullListingReason, ItemContent, KnownVersions,
    ProviderError, ReadItem, Window,
};
use serde_json::{Value, json};
use story::{client, create, first_calendar, known_of, total_requests, window};

async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start(Flavor::Google, config).await.unwrap()
}

fn provider_with(emu: &Emulator, token: String, access: Access, page: u32) -> GoogleProvider {
    let base = url::Url::parse(&format!("{}/calendar/v3/", emu.base_url())).unwrap();
    let mut config = GoogleConfig::new(base, access);
    config.page_size = page;
    config.read_window = Some(window());
    GoogleProvider::new(&client(), config, Arc::new(StaticToken(Secret::new(token))))
}

fn provider(emu: &Emulator) -> GoogleProvider {
    provider_with(emu, emu.token(None).unwrap(), Access::ReadWrite, 250)
}

fn single(summary: &str, day: u32) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": format!("2026-03-{day:02}T09:00:00+01:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2026-03-{day:02}T10:00:00+01:00"), "timeZone": "Europe/Berlin"},
    })
}

fn weekly(summary: &str) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": "2026-04-06T15:00:00-07:00", "timeZone": "America/Los_Angeles"},
        "end": {"dateTime": "2026-04-06T16:00:00-07:00", "timeZone": "America/Los_Angeles"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=5"],
    })
}

async fn instance_ids(emu: &Emulator, calendar: &str, series: &str) -> Vec<String> {
    story::instance_ids(
        emu,
        &format!("/calendar/v3/calendars/{calendar}/events/{series}/instances"),
    )
    .await
}

#[tokio::test]
async fn google_connection_test_and_bad_token() {
    let emu = emulator(EmulatorConfig::default()).await;
    let diagnosis = provider(&emu).test_connection().await;
    assert_eq!(diagnosis.kind, DiagnosisKind::Ok, "{diagnosis:?}");
    assert!(!diagnosis.calendars.is_empty());
    let bad = provider_with(&emu, "nope".into(), Access::ReadWrite, 250)
        .test_connection()
        .await;
    assert_eq!(bad.kind, DiagnosisKind::InvalidCredentials, "{bad:?}");
}

#[tokio::test]
async fn google_full_read_pages_incremental_changes_and_no_op_cost() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider_with(&emu, emu.token(None).unwrap(), Access::ReadWrite, 3);
    let calendar = first_calendar(&p).await;
    let mut singles = Vec::new();
    for day in 1..=7 {
        singles.push(create(&emu, None, single(&format!("event {day}"), day)).await);
    }
    let series = create(&emu, None, weekly("standup")).await;
    emu.reset_counters();
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.full_listing, Some(FullListingReason::NoCursor));
    assert_eq!(first.upserts.len(), 8, "{:?}", first.failures);
    assert!(
        emu.counters().for_endpoint("events") >= 3,
        "paged at 3 per page"
    );
    let text = first
        .upserts
        .iter()
        .find(|i| i.id.as_str() == series)
        .unwrap()
        .content
        .as_ical()
        .to_owned();
    assert!(text.contains("RRULE:FREQ=WEEKLY;COUNT=5"), "{text}");
    assert!(
        text.contains("DTSTART;TZID=America/Los_Angeles:20260406T150000"),
        "{text}"
    );

    emu.reset_counters();
    let quiet = p
        .changes(
            &calendar,
            first.cursor.as_ref(),
            &window(),
            &known_of(&first),
        )
        .await
        .unwrap();
    assert!(quiet.upserts.is_empty() && quiet.deletions.is_empty());
    assert_eq!(
        total_requests(&emu),
        1,
        "a no-op sync is one request per calendar"
    );

    story::edit(&emu, &singles[0], json!({"summary": "edited"})).await;
    story::delete(&emu, &singles[1]).await;
    let instances = instance_ids(&emu, calendar.as_str(), &series).await;
    story::edit(&emu, &instances[1], json!({"summary": "standup (moved)"})).await;
    story::delete(&emu, &instances[2]).await;
    let asked = Asked::new(known_of(&first));
    let second = p
        .changes(&calendar, first.cursor.as_ref(), &window(), &asked)
        .await
        .unwrap();
    assert_eq!(second.full_listing, None);
    // The round asked about the series it names, never about everything.
    assert_eq!(
        asked.all_asked(),
        0,
        "an incremental round reads no full list"
    );
    let named = asked.named();
    assert!(
        named.contains(singles[0].as_str()) && named.contains(series.as_str()),
        "{named:?}"
    );
    for untouched in &singles[2..] {
        assert!(
            !named.contains(untouched.as_str()),
            "unchanged item asked: {named:?}"
        );
    }
    assert!(
        second.deletions.iter().any(|d| d.as_str() == singles[1]),
        "{second:?}"
    );
    let edited = second
        .upserts
        .iter()
        .find(|i| i.id.as_str() == singles[0])
        .unwrap();
    assert!(edited.content.as_ical().contains("SUMMARY:edited"));
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

    // A full read of the same state gives the same series content as the incremental one.
    let full = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let again = full
        .upserts
        .iter()
        .find(|i| i.id.as_str() == series)
        .unwrap();
    assert_eq!(
        again.content.content_hash(),
        series_item.content.content_hash()
    );
}

const SERIES: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:series-g@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260504T100000\r\nDTEND;TZID=Europe/Berlin:20260504T110000\r\nRRULE:FREQ=WEEKLY;COUNT=5\r\nEXDATE;TZID=Europe/Berlin:20260518T100000\r\nSUMMARY:Planning\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:series-g@test\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260511T100000\r\nDTSTART;TZID=Europe/Berlin:20260511T140000\r\nDTEND;TZID=Europe/Berlin:20260511T150000\r\nSUMMARY:Planning (afternoon)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[tokio::test]
async fn google_series_round_trip_idempotent_insert_and_if_match() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let content = ItemContent::parse(SERIES).unwrap();
    let key = CreateKey::parse("0123456789abcdefghijklmnop").unwrap();
    let written = p.create(&calendar, &key, &content).await.unwrap();
    assert_eq!(
        written.id.as_str(),
        key.as_str(),
        "the client-chosen id is the event id"
    );
    assert!(!written.already_existed);
    let retried = p.create(&calendar, &key, &content).await.unwrap();
    assert!(retried.already_existed);
    assert_eq!(emu.counters().with_status(409), 1);

    let read = p
        .read(&calendar, std::slice::from_ref(&written.id))
        .await
        .unwrap();
    let ReadItem::Found(item) = &read[0] else {
        panic!("{read:?}")
    };
    let text = item.content.as_ical();
    assert_eq!(
        item.content.uid(),
        Some("series-g@test"),
        "our UID survives the round trip"
    );
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

    // Someone else edits the series: our stale etag is refused.
    story::edit(&emu, &written.id.to_string(), json!({"summary": "theirs"})).await;
    let edited =
        ItemContent::parse(SERIES.replace("SUMMARY:Planning\r\n", "SUMMARY:ours\r\n")).unwrap();
    let stale = p.update(&calendar, &item.id, &item.etag, &edited).await;
    assert!(
        matches!(stale, Err(ProviderError::PreconditionFailed)),
        "{stale:?}"
    );
    assert!(matches!(
        p.delete(&calendar, &item.id, &item.etag).await,
        Err(ProviderError::PreconditionFailed)
    ));
    let ReadItem::Found(fresh) = p
        .read(&calendar, std::slice::from_ref(&item.id))
        .await
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    p.update(&calendar, &item.id, &fresh.etag, &edited)
        .await
        .unwrap();
    let ReadItem::Found(now) = p
        .read(&calendar, std::slice::from_ref(&item.id))
        .await
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    assert!(now.content.as_ical().contains("SUMMARY:ours"));
    p.delete(&calendar, &now.id, &now.etag).await.unwrap();
    assert!(matches!(
        p.read(&calendar, std::slice::from_ref(&now.id))
            .await
            .unwrap()[0],
        ReadItem::Missing(_)
    ));
}

#[tokio::test]
async fn google_invalid_sync_token_restarts_with_a_full_read() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    let a = create(&emu, None, single("a", 3)).await;
    let first = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    emu.invalidate_sync_state(None).unwrap();
    let second = p
        .changes(
            &calendar,
            first.cursor.as_ref(),
            &window(),
            &known_of(&first),
        )
        .await
        .unwrap();
    assert_eq!(second.full_listing, Some(FullListingReason::CursorInvalid));
    assert!(second.unchanged.iter().any(|i| i.as_str() == a));
    assert_eq!(emu.counters().with_status(410), 1);
}

#[tokio::test]
async fn google_403_and_429_rate_limits_are_waited_out() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu);
    let calendar = first_calendar(&p).await;
    create(&emu, None, single("a", 3)).await;
    emu.add_fault(FaultRule {
        path_contains: Some("/events".into()),
        method: None,
        times: Some(2),
        scope: FaultScope::Request,
        fault: Fault::Throttle {
            retry_after_secs: 0.0,
            status: Some(403),
        },
    })
    .unwrap();
    let set = p
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(set.upserts.len(), 1);
    assert_eq!(emu.counters().with_status(403), 2);
    emu.add_fault(FaultRule {
        path_contains: Some("/events".into()),
        method: None,
        times: Some(1),
        scope: FaultScope::Request,
        fault: Fault::Throttle {
            retry_after_secs: 1.0,
            status: Some(429),
        },
    })
    .unwrap();
    let started = Instant::now();
    p.changes(&calendar, set.cursor.as_ref(), &window(), &known_of(&set))
        .await
        .unwrap();
    assert_eq!(emu.counters().with_status(429), 1);
    // Google promises no Retry-After: the wait is the backoff (at least a quarter of the base delay).
    assert!(
        started.elapsed() >= Duration::from_millis(5),
        "{:?}",
        started.elapsed()
    );
    emu.add_fault(FaultRule {
        path_contains: Some("/events".into()),
        method: None,
        times: Some(2),
        scope: FaultScope::Request,
        fault: Fault::ServerError { status: 500 },
    })
    .unwrap();
    p.changes(&calendar, set.cursor.as_ref(), &window(), &known_of(&set))
        .await
        .unwrap();
    assert_eq!(emu.counters().with_status(500), 2);
}

#[tokio::test]
async fn google_read_only_refuses_writes_and_free_busy_works() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider_with(&emu, emu.token(None).unwrap(), Access::ReadOnly, 250);
    let calendar = first_calendar(&p).await;
    create(&emu, None, single("busy", 10)).await;
    let key = CreateKey::parse("abcdeabcde").unwrap();
    let content = ItemContent::parse(SERIES).unwrap();
    assert!(matches!(
        p.create(&calendar, &key, &content).await,
        Err(ProviderError::ReadOnly)
    ));
    let window = Window::parse(
        "2026-03-09T00:00:00Z".parse().unwrap(),
        "2026-03-12T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let busy = p.free_busy(&calendar, &window).await.unwrap();
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(
        busy[0].start,
        "2026-03-10T08:00:00Z".parse::<jiff::Timestamp>().unwrap()
    );
}
