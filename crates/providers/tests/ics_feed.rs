//! ICS feeds: a local file server, a scripted server for each failure, and Radicale's collection GET.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use calbridge_providers::http::Credentials;
use calbridge_providers::ics::IcsProvider;
use calbridge_providers::{
    CalendarId, CalendarProvider, ChangeSet, CreateKey, DiagnosisKind, Etag, FullListingReason,
    ItemContent, KnownVersions, ProviderError, RemoteId, Window,
};
use support::{PASSWORD, Radicale, USER, budget, event, http_client, password};

fn window() -> Window {
    Window::parse(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

fn feed(events: &[(&str, &str)], stamp: &str) -> String {
    let mut out = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//feed//EN\r\nX-WR-CALNAME:Holidays\r\n",
    );
    for (uid, summary) in events {
        out.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:{stamp}\r\nDTSTART;VALUE=DATE:20260501\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\n"
        ));
    }
    out.push_str("END:VCALENDAR\r\n");
    out
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn known_after(set: &ChangeSet) -> KnownVersions {
    set.upserts
        .iter()
        .map(|i| (i.id.clone(), i.etag.clone()))
        .collect()
}

fn ids(items: &[RemoteId]) -> BTreeSet<String> {
    items.iter().map(|i| i.as_str().to_owned()).collect()
}

#[tokio::test]
async fn file_feed_uses_last_modified_and_hashes_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holidays.ics");
    std::fs::write(
        &path,
        feed(
            &[("may-day", "May Day"), ("labour", "Labour Day")],
            "20260101T000000Z",
        ),
    )
    .unwrap();
    let base = serve(
        Router::new().route_service("/holidays.ics", tower_http::services::ServeFile::new(&path)),
    )
    .await;
    let url = format!("{base}/holidays.ics");
    let provider = IcsProvider::new(&http_client(), &url, Credentials::None, budget()).unwrap();
    let calendar = provider.calendar_id().unwrap();

    let calendars = provider.list_calendars().await.unwrap();
    assert_eq!(calendars.len(), 1);
    assert_eq!(calendars[0].name, "Holidays");
    assert!(calendars[0].read_only);

    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.full_listing, Some(FullListingReason::NoCursor));
    assert_eq!(first.upserts.len(), 2);
    let known = known_after(&first);

    // Unchanged file: the server answers 304 to If-Modified-Since and nothing is reported.
    let second = provider
        .changes(&calendar, first.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(
        second,
        ChangeSet {
            cursor: first.cursor.clone(),
            ..ChangeSet::default()
        }
    );

    // Re-published with new DTSTAMPs and one real edit, one series gone, one new.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // Last-Modified has 1 s resolution
    std::fs::write(
        &path,
        feed(
            &[("may-day", "May Day (moved)"), ("new-year", "New Year")],
            "20260202T000000Z",
        ),
    )
    .unwrap();
    let third = provider
        .changes(&calendar, second.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(third.full_listing, Some(FullListingReason::NotIncremental));
    assert_eq!(
        ids(&third
            .upserts
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()),
        BTreeSet::from(["may-day".into(), "new-year".into()])
    );
    assert_eq!(ids(&third.deletions), BTreeSet::from(["labour".into()]));

    // Only the stamps change: no series is reported as changed.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let known = known_after(&third);
    std::fs::write(
        &path,
        feed(
            &[("may-day", "May Day (moved)"), ("new-year", "New Year")],
            "20260303T000000Z",
        ),
    )
    .unwrap();
    let fourth = provider
        .changes(&calendar, third.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert!(fourth.upserts.is_empty(), "{:?}", fourth.upserts);
    assert_eq!(fourth.unchanged.len(), 2);
    assert!(fourth.deletions.is_empty());
}

#[tokio::test]
async fn etag_validators_give_304() {
    let hits = Arc::new(AtomicUsize::new(0));
    let full = Arc::new(AtomicUsize::new(0));
    let (h, f) = (hits.clone(), full.clone());
    let body = feed(&[("a", "A")], "20260101T000000Z");
    let router = Router::new().route(
        "/feed.ics",
        get(move |headers: HeaderMap| {
            let (h, f, body) = (h.clone(), f.clone(), body.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v == "\"v1\"")
                {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                f.fetch_add(1, Ordering::SeqCst);
                (
                    [
                        (header::ETAG, "\"v1\""),
                        (header::CONTENT_TYPE, "text/calendar"),
                    ],
                    body,
                )
                    .into_response()
            }
        }),
    );
    let base = serve(router).await;
    let provider = IcsProvider::new(
        &http_client(),
        &format!("{base}/feed.ics"),
        Credentials::None,
        budget(),
    )
    .unwrap();
    let calendar = provider.calendar_id().unwrap();
    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.upserts.len(), 1);
    let second = provider
        .changes(
            &calendar,
            first.cursor.as_ref(),
            &window(),
            &known_after(&first),
        )
        .await
        .unwrap();
    assert!(second.upserts.is_empty() && second.full_listing.is_none());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        full.load(Ordering::SeqCst),
        1,
        "the second read must be a 304"
    );
}

#[tokio::test]
async fn feeds_are_read_only() {
    let base =
        serve(Router::new().fallback(any(|| async { feed(&[("a", "A")], "20260101T000000Z") })))
            .await;
    let provider = IcsProvider::new(
        &http_client(),
        &format!("{base}/x.ics"),
        Credentials::None,
        budget(),
    )
    .unwrap();
    let calendar = provider.calendar_id().unwrap();
    let content = ItemContent::parse(event("a", "A", "20260101T000000Z")).unwrap();
    let id = RemoteId::parse("a").unwrap();
    let etag = Etag::parse("hash:x").unwrap();
    let key = CreateKey::from_bytes([1; 16]);
    assert!(matches!(
        provider.create(&calendar, &key, &content).await,
        Err(ProviderError::ReadOnly)
    ));
    assert!(matches!(
        provider.update(&calendar, &id, &etag, &content).await,
        Err(ProviderError::ReadOnly)
    ));
    assert!(matches!(
        provider.delete(&calendar, &id, &etag).await,
        Err(ProviderError::ReadOnly)
    ));
    assert!(!provider.capabilities().writable);
    let other = CalendarId::parse("http://elsewhere.example/feed.ics").unwrap();
    assert!(matches!(
        provider
            .changes(&other, None, &window(), &KnownVersions::new())
            .await,
        Err(ProviderError::NotFound { .. })
    ));
}

/// One "Test Connection" diagnosis per failure a person can act on.
#[tokio::test]
async fn each_failure_has_its_own_diagnosis() {
    let router = Router::new()
        .route(
            "/html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>Welcome</body></html>",
                )
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/login",
            get(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"feeds\"")],
                )
            }),
        )
        .route("/private", get(|| async { StatusCode::FORBIDDEN }))
        .route("/down", get(|| async { StatusCode::BAD_GATEWAY }))
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "3600")],
                )
            }),
        );
    let base = serve(router).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/feed.ics")
    };
    let cases = [
        (format!("{base}/html"), DiagnosisKind::NotACalendarServer),
        (format!("{base}/missing"), DiagnosisKind::NotFound),
        (format!("{base}/login"), DiagnosisKind::InvalidCredentials),
        (format!("{base}/private"), DiagnosisKind::MissingPermission),
        (format!("{base}/down"), DiagnosisKind::ServiceDown),
        (format!("{base}/busy"), DiagnosisKind::RateLimited),
        (dead, DiagnosisKind::Unreachable),
        (
            "http://nonexistent.invalid/feed.ics".to_owned(),
            DiagnosisKind::Unreachable,
        ),
    ];
    for (url, expected) in cases {
        let provider = IcsProvider::new(&http_client(), &url, Credentials::None, budget()).unwrap();
        let diagnosis = provider.test_connection().await;
        assert_eq!(diagnosis.kind, expected, "{url}: {}", diagnosis.message);
        assert!(!diagnosis.message.is_empty());
    }
    let strict = calbridge_providers::http::HttpClient::new(Default::default()).unwrap();
    let blocked = IcsProvider::new(
        &strict,
        &format!("{base}/html"),
        Credentials::None,
        budget(),
    )
    .unwrap();
    assert_eq!(blocked.test_connection().await.kind, DiagnosisKind::Blocked);
}

#[tokio::test]
async fn radicale_collection_get_is_a_feed() {
    let Some(radicale) = Radicale::start() else {
        return;
    };
    let raw = radicale.raw();
    let cal = radicale.calendar_url("public");
    raw.mkcalendar(&cal, "Public").await;
    for (uid, summary) in [("r1@t", "Standup"), ("r2@t", "Review"), ("r3@t", "Retro")] {
        let response = raw
            .put(
                &format!("{cal}{uid}.ics"),
                &event(uid, summary, "20260310T100000Z"),
            )
            .await;
        assert_eq!(response.status().as_u16(), 201);
    }
    let provider =
        IcsProvider::new(&http_client(), &cal, password(USER, PASSWORD), budget()).unwrap();
    let calendar = provider.calendar_id().unwrap();
    assert_eq!(provider.test_connection().await.kind, DiagnosisKind::Ok);

    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(
        ids(&first
            .upserts
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()),
        BTreeSet::from(["r1@t".into(), "r2@t".into(), "r3@t".into()])
    );
    let known = known_after(&first);

    // Radicale sends an ETag but never answers 304: the hashes keep an unchanged feed quiet.
    let again = provider
        .changes(&calendar, first.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert!(
        again.upserts.is_empty() && again.deletions.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.unchanged.len(), 3);

    // Edit one through CalDAV, delete another: exactly those show.
    raw.put(
        &format!("{cal}r2@t.ics"),
        &event("r2@t", "Review (moved)", "20260311T100000Z"),
    )
    .await;
    let response = raw
        .request("DELETE", &format!("{cal}r3@t.ics"), &[], None)
        .await;
    assert!(response.status().is_success());
    let after = provider
        .changes(&calendar, again.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(
        ids(&after
            .upserts
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()),
        BTreeSet::from(["r2@t".into()])
    );
    assert_eq!(ids(&after.deletions), BTreeSet::from(["r3@t".into()]));
    assert_eq!(ids(&after.unchanged), BTreeSet::from(["r1@t".into()]));
}
