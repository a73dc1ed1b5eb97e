//! One conformance story for the CalDAV connector, run against real Radicale and real Xandikos
//! started by the test (each test gets a fresh server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/asked.rs"]
mod asked;
mod support;

use std::collections::{BTreeSet, HashMap};

use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::http::{Traffic, metered};
use calbridge_providers::{
    BusyKind, CalendarId, CalendarProvider, ChangeSet, CreateKey, Cursor, DiagnosisKind, Etag,
    FullListingReason, ItemContent, KnownVersions, ProviderError, ReadItem, RemoteId, Window,
};
use support::{Peer, USER, budget, caldav, event, password};

/// Each story runs once per server.
macro_rules! against_both {
    ($($story:ident),* $(,)?) => {
        mod radicale {
            $(
                #[tokio::test]
                async fn $story() {
                    let Some(peer) = super::Peer::radicale() else { return };
                    super::$story(&peer).await;
                }
            )*
        }
        mod xandikos {
            $(
                #[tokio::test]
                async fn $story() {
                    let Some(peer) = super::Peer::xandikos() else { return };
                    super::$story(&peer).await;
                }
            )*
        }
    };
}

against_both!(
    discovery_listing_and_connection_diagnoses,
    writes_are_conditional_and_creates_idempotent,
    sync_collection_initial_then_incremental,
    an_invalid_token_turns_into_a_full_listing,
    percent_encoded_hrefs_are_one_id,
    multiget_reads_large_calendars_in_batches,
    free_busy_reports_busy_time_only,
    a_broken_item_is_reported_and_the_rest_arrives,
);

fn window() -> Window {
    Window::parse(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

async fn setup(peer: &Peer, name: &str) -> (CaldavProvider, CalendarId) {
    peer.raw().mkcalendar(&peer.calendar_url(name), name).await;
    let provider = peer.provider();
    (
        provider,
        CalendarId::parse(peer.calendar_path(name)).unwrap(),
    )
}

fn key(n: u8) -> CreateKey {
    CreateKey::from_bytes([n; 16])
}

fn content(uid: &str, summary: &str) -> ItemContent {
    ItemContent::parse(event(uid, summary, "20260310T100000Z")).unwrap()
}

fn known_of(set: &ChangeSet, base: &KnownVersions) -> KnownVersions {
    let mut known = base.clone();
    for id in &set.deletions {
        known.remove(id);
    }
    for item in &set.upserts {
        known.insert(item.id.clone(), item.etag.clone());
    }
    known
}

fn summaries(set: &ChangeSet) -> BTreeSet<String> {
    set.upserts
        .iter()
        .map(|i| {
            let ical = i.content.as_ical();
            ical.lines()
                .find_map(|l| l.strip_prefix("SUMMARY:"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect()
}

async fn discovery_listing_and_connection_diagnoses(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;
    peer.raw()
        .mkcalendar(&peer.calendar_url("home"), "Home")
        .await;

    let diagnosis = provider.test_connection().await;
    assert_eq!(diagnosis.kind, DiagnosisKind::Ok, "{}", diagnosis.message);
    let calendars = provider.list_calendars().await.unwrap();
    let names: BTreeSet<_> = calendars.iter().map(|c| c.name.clone()).collect();
    assert!(
        names.contains("Home") && names.contains("work"),
        "{names:?}"
    );
    let work = calendars.iter().find(|c| c.id == calendar).unwrap();
    assert!(work.holds_events(), "{:?}", work.components);
    assert!(!work.read_only);
    assert!(work.change_tag.is_some());

    // Starting from a calendar's own URL finds the same calendars.
    let from_calendar = caldav(&peer.calendar_url("work"), peer.credentials());
    let again = from_calendar.list_calendars().await.unwrap();
    assert!(again.iter().any(|c| c.id == calendar), "{again:?}");

    if peer.has_auth() {
        let wrong = caldav(&peer.base(), password(USER, "nope"));
        let diagnosis = wrong.test_connection().await;
        assert_eq!(
            diagnosis.kind,
            DiagnosisKind::InvalidCredentials,
            "{}",
            diagnosis.message
        );
    }

    let strict = calbridge_providers::http::HttpClient::new(Default::default()).unwrap();
    let blocked = CaldavProvider::new(&strict, &peer.base(), peer.credentials(), budget()).unwrap();
    assert_eq!(blocked.test_connection().await.kind, DiagnosisKind::Blocked);
}

async fn writes_are_conditional_and_creates_idempotent(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;

    let first = provider
        .create(&calendar, &key(1), &content("w1@example.org", "One"))
        .await
        .unwrap();
    assert!(!first.already_existed);
    assert!(
        first.id.as_str().starts_with(&peer.calendar_path("work"))
            && first.id.as_str().ends_with(".ics")
    );
    let etag = first
        .etag
        .clone()
        .expect("the server returns an ETag on PUT");

    // A retried create (the answer was lost) finds its own item.
    let again = provider
        .create(&calendar, &key(1), &content("w1@example.org", "One"))
        .await
        .unwrap();
    assert!(again.already_existed);
    assert_eq!(again.etag.as_ref(), Some(&etag));
    // The same key with another UID is not ours: refused.
    let taken = provider
        .create(&calendar, &key(1), &content("other@example.org", "Other"))
        .await;
    assert!(
        matches!(taken, Err(ProviderError::PreconditionFailed)),
        "{taken:?}"
    );
    // The same UID under another href: a UID conflict (Radicale answers 409, Xandikos 412).
    let clash = provider
        .create(&calendar, &key(2), &content("w1@example.org", "Clash"))
        .await;
    assert!(
        matches!(clash, Err(ProviderError::Conflict { .. })),
        "{clash:?}"
    );

    // (An unescaped comma in SUMMARY makes Radicale 3.9 answer 204 and keep the old text: content
    // must go out properly escaped, as the model's writer does.)
    let updated = provider
        .update(
            &calendar,
            &first.id,
            &etag,
            &content("w1@example.org", "One\\, edited"),
        )
        .await
        .unwrap();
    let new_etag = updated.etag.clone().unwrap();
    assert_ne!(new_etag, etag);
    let stale = provider
        .update(
            &calendar,
            &first.id,
            &etag,
            &content("w1@example.org", "Lost edit"),
        )
        .await;
    assert!(
        matches!(stale, Err(ProviderError::PreconditionFailed)),
        "{stale:?}"
    );
    let stale_delete = provider.delete(&calendar, &first.id, &etag).await;
    assert!(
        matches!(stale_delete, Err(ProviderError::PreconditionFailed)),
        "{stale_delete:?}"
    );

    let read = provider
        .read(&calendar, std::slice::from_ref(&first.id))
        .await
        .unwrap();
    match &read[..] {
        [ReadItem::Found(item)] => {
            assert_eq!(item.etag, new_etag);
            assert!(item.content.as_ical().contains("One\\, edited"));
        }
        other => panic!("{other:?}"),
    }

    provider
        .delete(&calendar, &first.id, &new_etag)
        .await
        .unwrap();
    let gone = provider.delete(&calendar, &first.id, &new_etag).await;
    assert!(
        matches!(gone, Err(ProviderError::NotFound { .. })),
        "{gone:?}"
    );
    let read = provider
        .read(&calendar, std::slice::from_ref(&first.id))
        .await
        .unwrap();
    assert!(
        matches!(&read[..], [ReadItem::Missing(id)] if *id == first.id),
        "{read:?}"
    );
}

async fn sync_collection_initial_then_incremental(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;
    let mut ids = Vec::new();
    for (n, name) in ["Alpha", "Beta", "Gamma"].iter().enumerate() {
        let written = provider
            .create(
                &calendar,
                &key(n as u8 + 10),
                &content(&format!("{name}@t"), name),
            )
            .await
            .unwrap();
        ids.push((written.id, written.etag.unwrap()));
    }
    // An item created and deleted before the first sync leaves a tombstone Radicale reports.
    let ghost = provider
        .create(&calendar, &key(99), &content("ghost@t", "Ghost"))
        .await
        .unwrap();
    provider
        .delete(&calendar, &ghost.id, ghost.etag.as_ref().unwrap())
        .await
        .unwrap();

    let traffic = Traffic::new();
    let initial = metered(
        traffic.clone(),
        provider.changes(&calendar, None, &window(), &KnownVersions::new()),
    )
    .await
    .unwrap();
    assert_eq!(initial.full_listing, Some(FullListingReason::NoCursor));
    // The REPORT, then one multiget. No collection date: the server is not known yet, and only on
    // Radicale could the date gate a later read (before, every first listing asked it).
    assert_eq!(traffic.requests(), 2);
    assert_eq!(
        summaries(&initial),
        BTreeSet::from(["Alpha".into(), "Beta".into(), "Gamma".into()])
    );
    assert!(
        initial.deletions.is_empty(),
        "initial tombstones are not deletions: {:?}",
        initial.deletions
    );
    assert!(initial.failures.is_empty());
    let known = known_of(&initial, &KnownVersions::new());
    let cursor = initial.cursor.clone().unwrap();

    // Nothing changed: nothing reported.
    let traffic = Traffic::new();
    let quiet = metered(
        traffic.clone(),
        provider.changes(&calendar, Some(&cursor), &window(), &known),
    )
    .await
    .unwrap();
    assert_eq!(quiet.full_listing, None);
    // Radicale's token names its server: its date is read before the REPORT, to arm the gate.
    // Xandikos is never asked its date.
    let expected = if peer.is_radicale() { 2 } else { 1 };
    assert_eq!(traffic.requests(), expected);
    assert!(
        quiet.upserts.is_empty() && quiet.deletions.is_empty(),
        "{quiet:?}"
    );

    // Beta edited, Gamma deleted, Delta added.
    let (beta_id, beta_etag) = &ids[1];
    provider
        .update(&calendar, beta_id, beta_etag, &content("Beta@t", "Beta v2"))
        .await
        .unwrap();
    let (gamma_id, gamma_etag) = &ids[2];
    provider
        .delete(&calendar, gamma_id, gamma_etag)
        .await
        .unwrap();
    provider
        .create(&calendar, &key(20), &content("Delta@t", "Delta"))
        .await
        .unwrap();

    let asked = asked::Asked::new(known.clone());
    let traffic = Traffic::new();
    let next = metered(
        traffic.clone(),
        provider.changes(&calendar, quiet.cursor.as_ref(), &window(), &asked),
    )
    .await
    .unwrap();
    assert_eq!(next.full_listing, None);
    // Radicale: its date (which moved), then the REPORT, which carries the changed items' data.
    // Xandikos answers `calendar-data` 404 inside sync-collection (0.2.x), so a multiget follows.
    assert_eq!(traffic.requests(), 2);
    // The report names Beta, Gamma and Delta: only those were asked about, never everything.
    assert_eq!(
        asked.all_asked(),
        0,
        "an incremental round reads no full list"
    );
    let alpha = ids[0].0.as_str();
    assert!(
        asked.named().contains(beta_id.as_str()),
        "{:?}",
        asked.named()
    );
    assert!(
        !asked.named().contains(alpha),
        "unchanged item asked: {:?}",
        asked.named()
    );
    assert_eq!(
        summaries(&next),
        BTreeSet::from(["Beta v2".into(), "Delta".into()])
    );
    assert_eq!(next.deletions, vec![gamma_id.clone()]);
    assert_ne!(next.cursor, quiet.cursor);
    let known = known_of(&next, &known);
    assert_eq!(known.len(), 3);

    // A write of our own comes back with the etag we already hold: not fetched again.
    let (alpha_id, alpha_etag) = &ids[0];
    let own = provider
        .update(
            &calendar,
            alpha_id,
            alpha_etag,
            &content("Alpha@t", "Alpha v2"),
        )
        .await
        .unwrap();
    let mut known = known;
    known.insert(alpha_id.clone(), own.etag.unwrap());
    let echo = provider
        .changes(&calendar, next.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert!(echo.upserts.is_empty(), "{:?}", echo.upserts);
    assert_eq!(echo.unchanged, vec![alpha_id.clone()]);
}

async fn an_invalid_token_turns_into_a_full_listing(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;
    let a = provider
        .create(&calendar, &key(1), &content("a@t", "A"))
        .await
        .unwrap();
    let b = provider
        .create(&calendar, &key(2), &content("b@t", "B"))
        .await
        .unwrap();
    let mut known = KnownVersions::new();
    known.insert(a.id.clone(), a.etag.clone().unwrap());
    known.insert(b.id.clone(), Etag::parse("\"stale\"").unwrap());
    let vanished = RemoteId::parse(format!("{}vanished.ics", peer.calendar_path("work"))).unwrap();
    known.insert(vanished.clone(), Etag::parse("\"old\"").unwrap());

    // A token the server never issued: Radicale answers 403, Xandikos 412 (valid-sync-token).
    let bogus = if peer.is_radicale() {
        Cursor::parse("sync:http://radicale.org/ns/sync/0000000000000000000000000000000000000000")
            .unwrap()
    } else {
        Cursor::parse("sync:0000000000000000000000000000000000000000").unwrap()
    };
    let set = provider
        .changes(&calendar, Some(&bogus), &window(), &known)
        .await
        .unwrap();
    assert_eq!(set.full_listing, Some(FullListingReason::CursorInvalid));
    assert_eq!(
        set.unchanged,
        vec![a.id.clone()],
        "an item with the known etag is not fetched again"
    );
    assert_eq!(set.upserts.len(), 1);
    assert_eq!(set.upserts[0].id, b.id);
    assert_eq!(set.deletions, vec![vanished]);
    // A sync-token cursor again (on Radicale behind the collection date's gate: `lm:…;sync:…`).
    assert!(
        set.cursor
            .as_ref()
            .is_some_and(|c| c.as_str().starts_with("sync:") || c.as_str().contains(";sync:"))
    );
    // A cursor of another provider's shape is treated the same way.
    let foreign =
        Cursor::parse("https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=x")
            .unwrap();
    let set = provider
        .changes(&calendar, Some(&foreign), &window(), &known)
        .await
        .unwrap();
    assert_eq!(set.full_listing, Some(FullListingReason::CursorInvalid));
}

async fn percent_encoded_hrefs_are_one_id(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;
    // Another app names the resource after its UID, with an '@' in the path.
    let url = format!("{}abc@example.org.ics", peer.calendar_url("work"));
    let response = peer
        .raw()
        .put(
            &url,
            &event("abc@example.org", "At sign", "20260401T090000Z"),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);

    let initial = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(initial.upserts.len(), 1);
    let item = &initial.upserts[0];
    assert_eq!(
        item.id.as_str(),
        format!("{}abc%40example.org.ics", peer.calendar_path("work"))
    );

    // The same resource named with a bare '@' is the same id.
    let spelled =
        RemoteId::parse(format!("{}abc@example.org.ics", peer.calendar_path("work"))).unwrap();
    let read = provider.read(&calendar, &[spelled]).await.unwrap();
    assert!(
        matches!(&read[..], [ReadItem::Found(found)] if found.id == item.id),
        "{read:?}"
    );

    let updated = provider
        .update(
            &calendar,
            &item.id,
            &item.etag,
            &content("abc@example.org", "At sign\\, edited"),
        )
        .await
        .unwrap();
    assert_ne!(updated.etag.as_ref(), Some(&item.etag));
    let known: KnownVersions = HashMap::from([(item.id.clone(), updated.etag.clone().unwrap())]);
    let quiet = provider
        .changes(&calendar, initial.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert!(quiet.upserts.is_empty(), "{quiet:?}");
    assert_eq!(quiet.unchanged, vec![item.id.clone()]);
    provider
        .delete(&calendar, &item.id, updated.etag.as_ref().unwrap())
        .await
        .unwrap();
    let after = provider
        .changes(&calendar, quiet.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(after.deletions, vec![item.id.clone()]);
}

async fn multiget_reads_large_calendars_in_batches(peer: &Peer) {
    let (provider, calendar) = setup(peer, "big").await;
    const N: usize = 450;
    let bulk = |i: usize| {
        format!(
            "BEGIN:VEVENT\r\nUID:bulk-{i}@t\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T{:02}0000Z\r\nDURATION:PT30M\r\nSUMMARY:Bulk {i}\r\nEND:VEVENT\r\n",
            i % 24
        )
    };
    let wrap = |body: String| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge tests//EN\r\n{body}END:VCALENDAR\r\n"
        )
    };
    if peer.is_radicale() {
        // One PUT of a whole calendar: Radicale splits it into one resource per UID.
        let response = peer
            .raw()
            .put(&peer.calendar_url("big"), &wrap((0..N).map(bulk).collect()))
            .await;
        assert!(response.status().is_success(), "{}", response.status());
    } else {
        let raw = peer.raw();
        for i in 0..N {
            let response = raw
                .put(
                    &format!("{}bulk-{i}.ics", peer.calendar_url("big")),
                    &wrap(bulk(i)),
                )
                .await;
            assert_eq!(response.status().as_u16(), 201);
        }
    }

    let set = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert!(set.failures.is_empty(), "{:?}", set.failures);
    assert_eq!(set.upserts.len(), N);
    let uids: BTreeSet<_> = set
        .upserts
        .iter()
        .map(|i| i.content.uid().unwrap().to_owned())
        .collect();
    assert_eq!(uids.len(), N);
    assert!(uids.contains("bulk-0@t") && uids.contains(&format!("bulk-{}@t", N - 1)));

    let ids: Vec<RemoteId> = set.upserts.iter().map(|i| i.id.clone()).collect();
    let mut with_missing = ids.clone();
    with_missing
        .push(RemoteId::parse(format!("{}not-there.ics", peer.calendar_path("big"))).unwrap());
    let read = provider.read(&calendar, &with_missing).await.unwrap();
    assert_eq!(
        read.iter()
            .filter(|r| matches!(r, ReadItem::Found(_)))
            .count(),
        N
    );
    assert_eq!(
        read.iter()
            .filter(|r| matches!(r, ReadItem::Missing(_)))
            .count(),
        1
    );
}

async fn free_busy_reports_busy_time_only(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;
    provider
        .create(
            &calendar,
            &key(1),
            &ItemContent::parse(event("busy@t", "Busy", "20260310T100000Z")).unwrap(),
        )
        .await
        .unwrap();
    let free = event("free@t", "Free", "20260310T140000Z")
        .replace("SUMMARY:Free", "SUMMARY:Free\r\nTRANSP:TRANSPARENT");
    provider
        .create(&calendar, &key(2), &ItemContent::parse(free).unwrap())
        .await
        .unwrap();
    provider
        .create(
            &calendar,
            &key(3),
            &ItemContent::parse(event("later@t", "Later", "20260320T100000Z")).unwrap(),
        )
        .await
        .unwrap();

    let day = Window::parse(
        "2026-03-10T00:00:00Z".parse().unwrap(),
        "2026-03-11T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let periods = provider.free_busy(&calendar, &day).await.unwrap();
    assert_eq!(periods.len(), 1, "{periods:?}");
    assert_eq!(periods[0].kind, BusyKind::Busy);
    assert_eq!(periods[0].start.to_string(), "2026-03-10T10:00:00Z");
    assert_eq!(periods[0].end.to_string(), "2026-03-10T11:00:00Z");
}

async fn a_broken_item_is_reported_and_the_rest_arrives(peer: &Peer) {
    let (provider, calendar) = setup(peer, "work").await;
    provider
        .create(&calendar, &key(1), &content("fine@t", "Fine"))
        .await
        .unwrap();
    // Another client stores a VEVENT without UID: Radicale refuses it (400), Xandikos keeps it.
    let broken = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VEVENT\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260310T100000Z\r\nSUMMARY:No UID\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let response = peer
        .raw()
        .put(&format!("{}broken.ics", peer.calendar_url("work")), broken)
        .await;
    let stored = response.status().is_success();
    assert_eq!(stored, !peer.is_radicale(), "{}", response.status());

    let set = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(summaries(&set), BTreeSet::from(["Fine".into()]));
    if stored {
        assert_eq!(set.failures.len(), 1, "{:?}", set.failures);
        assert!(set.failures[0].0.as_str().ends_with("/broken.ics"));
        assert!(!set.failures[0].1.is_empty());
    } else {
        assert!(set.failures.is_empty());
    }
}
