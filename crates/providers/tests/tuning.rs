//! `optimizations.batch_size`, `optimizations.cache_ttl` and the traffic meter, against a real Radicale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use calbridge_providers::caldav::CaldavProvider;
use calbridge_providers::http::{AddressPolicy, HttpClient, HttpConfig, Traffic, metered};
use calbridge_providers::{CalendarId, CalendarProvider, KnownVersions, Window};

fn client(batch_size: Option<usize>, cache_ttl: Duration) -> HttpClient {
    HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        batch_size,
        cache_ttl,
        ..HttpConfig::default()
    })
    .unwrap()
}

fn window() -> Window {
    Window::parse(
        "2000-01-01T00:00:00Z".parse().unwrap(),
        "2100-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn batch_size_sets_items_per_multiget_and_traffic_counts_requests_and_bytes() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let url = radicale.calendar_url("work");
    radicale.raw().mkcalendar(&url, "work").await;
    for n in 0..7 {
        let put = radicale
            .raw()
            .put(
                &format!("{url}e{n}.ics"),
                &support::event(&format!("tune-{n}"), &format!("E {n}"), "20261125T090000Z"),
            )
            .await;
        assert!(put.status().is_success());
    }
    let calendar = CalendarId::parse(format!("/{}/work/", support::USER)).unwrap();
    let mut requests = Vec::new();
    for batch in [Some(3), None] {
        let provider = CaldavProvider::new(
            &client(batch, Duration::ZERO),
            &radicale.base(),
            support::password(support::USER, support::PASSWORD),
            support::budget(),
        )
        .unwrap();
        let traffic = Traffic::new();
        let set = metered(
            traffic.clone(),
            provider.changes(&calendar, None, &window(), &KnownVersions::new()),
        )
        .await
        .unwrap();
        assert_eq!(set.upserts.len(), 7);
        // Every item body came over the wire, so the bytes received exceed their total size.
        let bodies: usize = set.upserts.iter().map(|i| i.content.as_ical().len()).sum();
        assert!(
            traffic.bytes_received() > bodies as u64,
            "{} <= {bodies}",
            traffic.bytes_received()
        );
        assert!(traffic.bytes_sent() > 0);
        requests.push(traffic.requests());
    }
    // One listing REPORT (no collection date: a first listing does not know the server yet),
    // then multigets of 3 items (3 of them) against one multiget of 200.
    assert_eq!(requests, vec![4, 2], "{requests:?}");
}

/// An incremental REPORT asks for the changed items' data; Radicale refuses one that would carry
/// more VEVENTs than its `max_expand_occurrence` (400). The same token is then asked again without
/// data and the items come by multiget, in batches under the limit: still incremental, nothing
/// lost, nothing listed in full.
#[tokio::test]
async fn a_report_refused_for_its_data_is_asked_again_without_it() {
    let Some(radicale) =
        support::Radicale::start_with("\n[reporting]\nmax_expand_occurrence = 3\n")
    else {
        return;
    };
    let url = radicale.calendar_url("work");
    radicale.raw().mkcalendar(&url, "work").await;
    let put = |n: usize, summary: &'static str| {
        let raw = radicale.raw();
        let url = url.clone();
        async move {
            let put = raw
                .put(
                    &format!("{url}e{n}.ics"),
                    &support::event(&format!("limit-{n}"), summary, "20261125T090000Z"),
                )
                .await;
            assert!(put.status().is_success());
        }
    };
    for n in 0..2 {
        put(n, "First").await;
    }
    let calendar = CalendarId::parse(format!("/{}/work/", support::USER)).unwrap();
    let provider = CaldavProvider::new(
        &client(Some(3), Duration::ZERO),
        &radicale.base(),
        support::password(support::USER, support::PASSWORD),
        support::budget(),
    )
    .unwrap();
    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.upserts.len(), 2);
    for n in 0..5 {
        put(n, "Second").await;
    }
    let traffic = Traffic::new();
    let next = metered(
        traffic.clone(),
        provider.changes(
            &calendar,
            first.cursor.as_ref(),
            &window(),
            &KnownVersions::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(next.full_listing, None, "still incremental");
    assert!(next.failures.is_empty(), "{:?}", next.failures);
    let mut uids: Vec<String> = next
        .upserts
        .iter()
        .map(|i| i.content.uid().unwrap().to_owned())
        .collect();
    uids.sort();
    assert_eq!(
        uids,
        ["limit-0", "limit-1", "limit-2", "limit-3", "limit-4"]
    );
    // The date, the REPORT with data (400), the REPORT without, two multigets (3 + 2).
    assert_eq!(traffic.requests(), 5);
    assert_ne!(next.cursor, first.cursor);
}

#[tokio::test]
async fn the_calendar_list_is_served_from_the_cache_within_its_ttl() {
    let Some(radicale) = support::Radicale::start() else {
        return;
    };
    let url = radicale.calendar_url("home");
    radicale.raw().mkcalendar(&url, "Home").await;
    let new_provider = |ttl| {
        CaldavProvider::new(
            &client(None, ttl),
            &radicale.base(),
            support::password(support::USER, support::PASSWORD),
            support::budget(),
        )
        .unwrap()
    };
    let count = |provider: CaldavProvider| async move {
        let traffic = Traffic::new();
        let calendars = metered(traffic.clone(), provider.list_calendars())
            .await
            .unwrap();
        (calendars.len(), traffic.requests())
    };
    // Without a TTL every list asks the server.
    let (listed, first) = count(new_provider(Duration::ZERO)).await;
    assert_eq!(listed, 1);
    assert!(first >= 2, "discovery and the list: {first}");
    assert_eq!(count(new_provider(Duration::ZERO)).await, (1, first));
    // With one, a second provider instance (a later run) is answered from the cache...
    let ttl = Duration::from_millis(1500);
    assert_eq!(count(new_provider(ttl)).await, (1, first));
    assert_eq!(count(new_provider(ttl)).await, (1, 0));
    // ...and asks again once the answer is older than the TTL.
    radicale
        .raw()
        .mkcalendar(&radicale.calendar_url("travel"), "Travel")
        .await;
    assert_eq!(count(new_provider(ttl)).await, (1, 0), "still cached");
    tokio::time::sleep(ttl).await;
    assert_eq!(count(new_provider(ttl)).await, (2, first));
    // Other credentials never see the cached answer.
    let other = CaldavProvider::new(
        &client(None, Duration::from_secs(60)),
        &radicale.base(),
        support::password("bob", "builder"),
        support::budget(),
    )
    .unwrap();
    let traffic = Traffic::new();
    let _ = metered(traffic.clone(), other.list_calendars()).await;
    assert!(traffic.requests() >= 1);
}
