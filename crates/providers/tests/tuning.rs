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
    // The collection's date (for the next read's gate), one listing REPORT, then multigets of 3
    // items (3 of them) against one multiget of 200.
    assert_eq!(requests, vec![5, 3], "{requests:?}");
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
