//! Server behaviours neither Radicale nor Xandikos shows, played by small axum servers speaking only
//! the protocol subset in question: no `sync-collection` at all (a ctag-and-etag-only server, as older
//! ones are), RFC 6578 truncation (507 on the request-URI) with absolute-URL hrefs, and servers that
//! are not CalDAV at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use calbridge_providers::http::Credentials;
use calbridge_providers::{
    CalendarId, CalendarProvider, DiagnosisKind, FullListingReason, KnownVersions, Window,
};
use support::{caldav, event};
use tokio::sync::Mutex;

#[derive(Default)]
struct Legacy {
    items: Mutex<BTreeMap<String, (u32, String)>>,
    ctag: AtomicUsize,
    requests: Mutex<Vec<String>>,
    /// Multigets asked, being answered now, and the most at once.
    multigets: AtomicUsize,
    multigets_in_flight: AtomicUsize,
    most_multigets_in_flight: AtomicUsize,
}

impl Legacy {
    async fn put(&self, name: &str, summary: &str) {
        let mut items = self.items.lock().await;
        let version = items.get(name).map_or(1, |(v, _)| v + 1);
        items.insert(
            name.to_owned(),
            (
                version,
                event(&format!("{name}@legacy"), summary, "20260310T100000Z"),
            ),
        );
        self.ctag.fetch_add(1, Ordering::SeqCst);
    }

    async fn remove(&self, name: &str) {
        self.items.lock().await.remove(name);
        self.ctag.fetch_add(1, Ordering::SeqCst);
    }
}

fn multistatus(body: String) -> Response {
    (
        StatusCode::MULTI_STATUS,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        format!(r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:cal="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/">{body}</d:multistatus>"#),
    )
        .into_response()
}

async fn legacy(
    State(state): State<Arc<Legacy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let depth = headers
        .get("depth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_owned();
    state
        .requests
        .lock()
        .await
        .push(format!("{method} {} depth={depth}", uri.path()));
    if uri.path() != "/cal/" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let ctag = state.ctag.load(Ordering::SeqCst);
    let calendar_props = format!(
        r#"<d:response><d:href>/cal/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><cal:calendar/></d:resourcetype><d:displayname>Legacy</d:displayname><cs:getctag>ctag-{ctag}</cs:getctag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#
    );
    match method.as_str() {
        "PROPFIND" if depth == "0" => multistatus(calendar_props),
        "PROPFIND" => {
            let items = state.items.lock().await;
            let members: String = items
                .iter()
                .map(|(name, (version, _))| {
                    format!(r#"<d:response><d:href>/cal/{name}.ics</d:href><d:propstat><d:prop><d:getetag>"v{version}"</d:getetag><d:resourcetype/></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#)
                })
                .collect();
            multistatus(format!("{calendar_props}{members}"))
        }
        "REPORT" if body.contains("sync-collection") => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/xml")],
            r#"<?xml version="1.0"?><d:error xmlns:d="DAV:"><d:supported-report/></d:error>"#,
        )
            .into_response(),
        "REPORT" if body.contains("calendar-multiget") => {
            // A server that takes its time over each answer, as Radicale does over a large batch.
            state.multigets.fetch_add(1, Ordering::SeqCst);
            let now = state.multigets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state
                .most_multigets_in_flight
                .fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            state.multigets_in_flight.fetch_sub(1, Ordering::SeqCst);
            let items = state.items.lock().await;
            let mut out = String::new();
            for href in body
                .split("<D:href>")
                .skip(1)
                .filter_map(|s| s.split("</D:href>").next())
            {
                let name = href.trim_start_matches("/cal/").trim_end_matches(".ics");
                match items.get(name) {
                    Some((version, data)) => out.push_str(&format!(
                        r#"<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:getetag>"v{version}"</d:getetag><cal:calendar-data>{data}</cal:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#
                    )),
                    None => out.push_str(&format!(r#"<d:response><d:href>{href}</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>"#)),
                }
            }
            multistatus(out)
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn window() -> Window {
    Window::parse(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn without_sync_collection_a_ctag_gates_an_etag_listing() {
    let state = Arc::new(Legacy::default());
    for name in ["a", "b", "c"] {
        state.put(name, name).await;
    }
    let base = serve(
        Router::new()
            .fallback(any(legacy))
            .with_state(state.clone()),
    )
    .await;
    let provider = caldav(&format!("{base}/cal/"), Credentials::None);
    let calendars = provider.list_calendars().await.unwrap();
    assert_eq!(calendars.len(), 1);
    assert_eq!(calendars[0].name, "Legacy");
    let calendar = CalendarId::parse("/cal/").unwrap();

    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert_eq!(first.full_listing, Some(FullListingReason::NoCursor));
    assert_eq!(first.upserts.len(), 3);
    let known: KnownVersions = first
        .upserts
        .iter()
        .map(|i| (i.id.clone(), i.etag.clone()))
        .collect();

    // Unchanged: one cheap request, nothing reported.
    state.requests.lock().await.clear();
    let quiet = provider
        .changes(&calendar, first.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert!(
        quiet.upserts.is_empty() && quiet.deletions.is_empty() && quiet.full_listing.is_none(),
        "{quiet:?}"
    );
    assert_eq!(
        *state.requests.lock().await,
        vec!["PROPFIND /cal/ depth=0".to_owned()]
    );

    state.put("b", "b edited").await;
    state.remove("c").await;
    state.put("d", "d").await;
    let next = provider
        .changes(&calendar, quiet.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(next.full_listing, Some(FullListingReason::NotIncremental));
    let upserted: Vec<&str> = next.upserts.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(upserted, vec!["/cal/b.ics", "/cal/d.ics"]);
    assert_eq!(
        next.deletions
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>(),
        vec!["/cal/c.ics"]
    );
    assert_eq!(
        next.unchanged
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>(),
        vec!["/cal/a.ics"]
    );
    assert_ne!(next.cursor, quiet.cursor);
}

/// A first listing's multigets: the next batch is asked while the last answer is parsed (two in
/// flight, never more), and the items still arrive complete and in the listing's order.
#[tokio::test]
async fn a_first_listing_keeps_the_next_multiget_in_flight() {
    const N: usize = 450; // three batches of at most 200
    let state = Arc::new(Legacy::default());
    for n in 0..N {
        state.put(&format!("item-{n:03}"), "bulk").await;
    }
    let base = serve(
        Router::new()
            .fallback(any(legacy))
            .with_state(state.clone()),
    )
    .await;
    let provider = caldav(&format!("{base}/cal/"), Credentials::None);
    let calendar = CalendarId::parse("/cal/").unwrap();
    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    let ids: Vec<&str> = first.upserts.iter().map(|i| i.id.as_str()).collect();
    let expected: Vec<String> = (0..N).map(|n| format!("/cal/item-{n:03}.ics")).collect();
    assert_eq!(ids, expected);
    assert_eq!(state.multigets.load(Ordering::SeqCst), 3);
    assert_eq!(state.most_multigets_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn servers_that_are_not_caldav_are_diagnosed() {
    let html = Router::new().fallback(any(|| async {
        ([(header::CONTENT_TYPE, "text/html")], "<html>hello</html>")
    }));
    let base = serve(html).await;
    let provider = caldav(&base, Credentials::None);
    let diagnosis = provider.test_connection().await;
    assert_eq!(
        diagnosis.kind,
        DiagnosisKind::NotACalendarServer,
        "{}",
        diagnosis.message
    );

    let nothing = serve(Router::new().fallback(any(|| async { StatusCode::NOT_FOUND }))).await;
    let provider = caldav(&format!("{nothing}/dav/"), Credentials::None);
    let diagnosis = provider.test_connection().await;
    assert_eq!(
        diagnosis.kind,
        DiagnosisKind::NotFound,
        "{}",
        diagnosis.message
    );

    let down =
        serve(Router::new().fallback(any(|| async { StatusCode::SERVICE_UNAVAILABLE }))).await;
    let provider = caldav(&down, Credentials::None);
    assert_eq!(
        provider.test_connection().await.kind,
        DiagnosisKind::ServiceDown
    );

    let forbidden = serve(Router::new().fallback(any(|| async { StatusCode::FORBIDDEN }))).await;
    let provider = caldav(&forbidden, Credentials::None);
    assert_eq!(
        provider.test_connection().await.kind,
        DiagnosisKind::MissingPermission
    );
}

/// A server that truncates sync-collection answers the RFC 6578 §3.6 way (507 on the request-URI,
/// a token covering only what was sent) and spells hrefs as absolute URLs.
async fn truncating(
    State(origin): State<Arc<Mutex<String>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let origin = origin.lock().await.clone();
    let item = |name: &str, version: u32| {
        format!(
            r#"<d:response><d:href>{origin}/cal/{name}.ics</d:href><d:propstat><d:prop><d:getetag>"{version}"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#
        )
    };
    let truncated = format!(
        r#"<d:response><d:href>{origin}/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status><d:error><d:number-of-matches-within-limits/></d:error></d:response>"#
    );
    if uri.path() != "/cal/" {
        return StatusCode::NOT_FOUND.into_response();
    }
    match method.as_str() {
        "REPORT" if body.contains("<D:sync-token></D:sync-token>") => multistatus(format!(
            "{}{}{truncated}<d:sync-token>t1</d:sync-token>",
            item("a", 1),
            item("b", 1)
        )),
        "REPORT" if body.contains("<D:sync-token>t1</D:sync-token>") => {
            multistatus(format!("{}<d:sync-token>t2</d:sync-token>", item("c", 1)))
        }
        "REPORT" if body.contains("<D:sync-token>t2</D:sync-token>") => multistatus(format!(
            r#"{}<d:response><d:href>{origin}/cal/a.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response><d:sync-token>t3</d:sync-token>"#,
            item("b", 2)
        )),
        "REPORT" if body.contains("calendar-multiget") => {
            let mut out = String::new();
            for href in body
                .split("<D:href>")
                .skip(1)
                .filter_map(|s| s.split("</D:href>").next())
            {
                let name = href.trim_start_matches("/cal/").trim_end_matches(".ics");
                out.push_str(&format!(
                    r#"<d:response><d:href>{origin}{href}</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag><cal:calendar-data>{}</cal:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#,
                    event(&format!("{name}@trunc"), name, "20260310T100000Z")
                ));
            }
            multistatus(out)
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

#[tokio::test]
async fn truncated_sync_answers_are_followed_to_the_end() {
    let origin = Arc::new(Mutex::new(String::new()));
    let base = serve(
        Router::new()
            .fallback(any(truncating))
            .with_state(origin.clone()),
    )
    .await;
    *origin.lock().await = base.clone();
    let provider = caldav(&format!("{base}/cal/"), Credentials::None);
    let calendar = CalendarId::parse("/cal/").unwrap();
    let first = provider
        .changes(&calendar, None, &window(), &KnownVersions::new())
        .await
        .unwrap();
    let ids: Vec<&str> = first.upserts.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["/cal/a.ics", "/cal/b.ics", "/cal/c.ics"]);
    assert_eq!(first.cursor.as_ref().map(|c| c.as_str()), Some("sync:t2"));
    let known: KnownVersions = first
        .upserts
        .iter()
        .map(|i| (i.id.clone(), i.etag.clone()))
        .collect();
    let next = provider
        .changes(&calendar, first.cursor.as_ref(), &window(), &known)
        .await
        .unwrap();
    assert_eq!(next.full_listing, None);
    assert_eq!(
        next.deletions
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>(),
        vec!["/cal/a.ics"]
    );
    assert_eq!(
        next.upserts
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        vec!["/cal/b.ics"]
    );
    assert_eq!(next.cursor.as_ref().map(|c| c.as_str()), Some("sync:t3"));
}
