//! Events end to end on both backends: JSON and iCalendar, ETags, the window query with recurrence,
//! zones and pagination, concurrent writers, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::TestServer;

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

async fn calendar(server: &TestServer, zone: &str) -> String {
    let response = server
        .post_json(
            &server.admin,
            "/v1/calendar/calendars",
            json!({"name": "Events", "time_zone": zone}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response).await["id"].as_str().unwrap().to_owned()
}

async fn create(server: &TestServer, body: Value) -> (String, String, Value) {
    let response = server
        .post_json(&server.admin, "/v1/calendar/events", body)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
    unreachable_if_not_created(response).await
}

async fn unreachable_if_not_created(response: reqwest::Response) -> (String, String, Value) {
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body = json_of(response).await;
    (body["id"].as_str().unwrap().to_owned(), etag, body)
}

async fn window(server: &TestServer, query: &str) -> Value {
    let response = server
        .get(&server.admin, &format!("/v1/calendar/events?{query}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    json_of(response).await
}

async fn problem(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body = json_of(response).await;
    assert_eq!(body["code"], code, "{body}");
    body["detail"].as_str().unwrap().to_owned()
}

const ICAL_WITH_OVERRIDE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
BEGIN:VEVENT\r\nUID:standup-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260302T093000\r\n\
DTEND;TZID=Europe/Berlin:20260302T094500\r\nRRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=10\r\nSUMMARY:Standup\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:standup-1\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260304T093000\r\n\
DTSTART;TZID=Europe/Berlin:20260304T110000\r\nDTEND;TZID=Europe/Berlin:20260304T111500\r\nSUMMARY:Standup (moved)\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

both_backends! {
    async fn json_event_round_trip_and_window_in_a_zone(server) {
        let cal = calendar(&server, "Europe/Berlin").await;
        let (id, etag, body) = create(&server, json!({
            "calendar_id": cal, "summary": "Review", "start": "2026-03-10T14:00:00", "end": "2026-03-10T15:00:00",
            "time_zone": "Europe/Berlin", "location": "Room 1"
        })).await;
        assert_eq!(etag, "\"1\"");
        assert_eq!(body["summary"], "Review");
        assert_eq!(body["time_zone"], "Europe/Berlin");
        assert_eq!(body["start"], "2026-03-10T14:00:00");

        let ical = server
            .client
            .get(server.url(&format!("/v1/calendar/events/{id}")))
            .bearer_auth(&server.admin)
            .header("accept", "text/calendar")
            .send()
            .await
            .unwrap();
        assert!(ical.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
        let text = ical.text().await.unwrap();
        assert!(text.contains("DTSTART;TZID=Europe/Berlin:20260310T140000"), "{text}");
        assert!(text.contains("SUMMARY:Review"));

        let page = window(&server, "start=2026-03-01T00:00:00Z&end=2026-04-01T00:00:00Z&tz=America/New_York").await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["id"], id.as_str());
        assert_eq!(items[0]["start"], "2026-03-10T09:00:00-04:00", "14:00 Berlin (UTC+1) is 09:00 in New York (UTC-4 after its DST start)");
        assert_eq!(items[0]["end"], "2026-03-10T10:00:00-04:00");
        assert_eq!(items[0]["summary"], "Review");
        assert_eq!(items[0]["location"], "Room 1");
        assert!(items[0].get("recurrence_id").is_none());
        let utc = window(&server, "start=2026-03-01T00:00:00Z&end=2026-04-01T00:00:00Z").await;
        assert_eq!(utc["items"][0]["start"], "2026-03-10T13:00:00Z");
        let empty = window(&server, "start=2026-04-01T00:00:00Z&end=2026-05-01T00:00:00Z").await;
        assert!(empty["items"].as_array().unwrap().is_empty());
    }

    async fn recurring_series_with_exdate_and_override(server) {
        let cal = calendar(&server, "UTC").await;
        let (_, _, body) = create(&server, json!({
            "calendar_id": cal, "summary": "Weekly", "start": "2026-03-02T10:00:00", "end": "2026-03-02T11:00:00",
            "time_zone": "Europe/Berlin", "rrule": "FREQ=WEEKLY;COUNT=6", "exdates": ["2026-03-16T10:00:00"]
        })).await;
        assert_eq!(body["rrule"], "FREQ=WEEKLY;COUNT=6");
        let page = window(&server, "start=2026-03-01T00:00:00Z&end=2026-05-01T00:00:00Z&tz=Europe/Berlin").await;
        let starts: Vec<&str> = page["items"].as_array().unwrap().iter().map(|o| o["start"].as_str().unwrap()).collect();
        // Six weeks minus the excluded one; Berlin moves to summer time on 29 March, the wall time stays.
        assert_eq!(starts, ["2026-03-02T10:00:00+01:00", "2026-03-09T10:00:00+01:00", "2026-03-23T10:00:00+01:00", "2026-03-30T10:00:00+02:00", "2026-04-06T10:00:00+02:00"]);
        assert_eq!(page["items"][0]["recurrence_id"], "2026-03-02T09:00:00Z");

        let response = server
            .client
            .post(server.url(&format!("/v1/calendar/events?calendar_id={cal}")))
            .bearer_auth(&server.admin)
            .header("content-type", "text/calendar")
            .body(ICAL_WITH_OVERRIDE)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let page = window(&server, &format!("start=2026-03-04T00:00:00Z&end=2026-03-05T00:00:00Z&calendar_id={cal}")).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        assert_eq!(items[0]["summary"], "Standup (moved)");
        assert_eq!(items[0]["start"], "2026-03-04T10:00:00Z");
        assert_eq!(items[0]["recurrence_id"], "2026-03-04T08:30:00Z");
        let all = window(&server, &format!("start=2026-03-01T00:00:00Z&end=2026-04-01T00:00:00Z&calendar_id={cal}")).await;
        let standups = all["items"].as_array().unwrap().iter().filter(|o| o["uid"] == "standup-1").count();
        assert_eq!(standups, 10);
    }

    async fn cursor_pagination_visits_every_occurrence_once(server) {
        let cal = calendar(&server, "UTC").await;
        create(&server, json!({"calendar_id": cal, "summary": "Daily", "start": "2026-06-01T08:00:00Z", "end": "2026-06-01T08:30:00Z", "rrule": "FREQ=DAILY;COUNT=25"})).await;
        create(&server, json!({"calendar_id": cal, "summary": "Same time", "start": "2026-06-05T08:00:00Z", "end": "2026-06-05T09:00:00Z"})).await;
        create(&server, json!({"calendar_id": cal, "summary": "All day", "start": "2026-06-10", "end": "2026-06-12"})).await;
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = "start=2026-06-01T00:00:00Z&end=2026-07-01T00:00:00Z&limit=10".to_owned();
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={c}"));
            }
            let page = window(&server, &query).await;
            pages += 1;
            for item in page["items"].as_array().unwrap() {
                seen.push((item["start"].as_str().unwrap().to_owned(), item["uid"].as_str().unwrap().to_owned(), item["recurrence_id"].as_str().unwrap_or("").to_owned()));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(pages < 10);
        }
        assert_eq!(seen.len(), 27);
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 27, "no occurrence twice");
        let all_day: Vec<_> = seen.iter().filter(|(start, _, _)| start.len() == 10).collect();
        assert_eq!(all_day.len(), 1);
        assert_eq!(all_day[0].0, "2026-06-10");
    }

    async fn stale_if_match_is_refused_and_concurrent_writers_lose_nothing(server) {
        let cal = calendar(&server, "UTC").await;
        let (id, etag, _) = create(&server, json!({"calendar_id": cal, "summary": "0", "start": "2026-07-01T10:00:00Z"})).await;
        let path = format!("/v1/calendar/events/{id}");
        let put = |if_match: String, summary: String| {
            server
                .client
                .put(server.url(&path))
                .bearer_auth(&server.admin)
                .header("if-match", if_match)
                .json(&json!({"summary": summary, "start": "2026-07-01T10:00:00Z"}))
                .send()
        };
        assert_eq!(put(etag.clone(), "first".into()).await.unwrap().status(), StatusCode::OK);
        problem(put(etag, "stale".into()).await.unwrap(), StatusCode::PRECONDITION_FAILED, "etag_mismatch").await;

        // Eight writers each add 5 increments to a counter kept in the summary, by read-modify-write with
        // If-Match and retry on 412. Every increment must survive.
        let reset = server.get(&server.admin, &path).await;
        let etag = reset.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(put(etag, "0".into()).await.unwrap().status(), StatusCode::OK);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = server.client.clone();
            let url = server.url(&path);
            let key = server.admin.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..5 {
                    loop {
                        let current = client.get(&url).bearer_auth(&key).send().await.unwrap();
                        let etag = current.headers()["etag"].to_str().unwrap().to_owned();
                        let body: Value = current.json().await.unwrap();
                        let n: u32 = body["summary"].as_str().unwrap().parse().unwrap();
                        let response = client
                            .put(&url)
                            .bearer_auth(&key)
                            .header("if-match", etag)
                            .json(&json!({"summary": (n + 1).to_string(), "start": "2026-07-01T10:00:00Z"}))
                            .send()
                            .await
                            .unwrap();
                        match response.status() {
                            StatusCode::OK => break,
                            StatusCode::PRECONDITION_FAILED => conflicts += 1,
                            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
                        }
                    }
                }
                conflicts
            }));
        }
        let mut conflicts = 0;
        for task in tasks {
            conflicts += task.await.unwrap();
        }
        let last = json_of(server.get(&server.admin, &path).await).await;
        assert_eq!(last["summary"], "40", "every increment survives ({conflicts} conflicts retried)");
        let window = window(&server, "start=2026-07-01T00:00:00Z&end=2026-07-02T00:00:00Z").await;
        assert_eq!(window["items"][0]["summary"], "40", "the occurrence index follows the series");

        let deleted = server.client.delete(server.url(&path)).bearer_auth(&server.admin).header("if-match", "\"1\"").send().await.unwrap();
        problem(deleted, StatusCode::PRECONDITION_FAILED, "etag_mismatch").await;
        let deleted = server.client.delete(server.url(&path)).bearer_auth(&server.admin).send().await.unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        problem(server.get(&server.admin, &path).await, StatusCode::NOT_FOUND, "not_found").await;
        let window2 = window_of(&server).await;
        assert!(window2["items"].as_array().unwrap().is_empty());
        let audit = json_of(server.get(&server.admin, "/v1/calendar/audit?limit=500").await).await;
        let updates = audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == "event.updated").count();
        assert_eq!(updates, 42);
    }

    async fn bad_event_input_gets_4xx_and_changes_nothing(server) {
        let cal = calendar(&server, "UTC").await;
        let (id, _, _) = create(&server, json!({"calendar_id": cal, "summary": "Keep", "start": "2026-08-01T10:00:00Z"})).await;
        let before = window(&server, "start=2026-01-01T00:00:00Z&end=2027-01-01T00:00:00Z").await;
        let send_ical = |body: &'static str| {
            server
                .client
                .post(server.url(&format!("/v1/calendar/events?calendar_id={cal}")))
                .bearer_auth(&server.admin)
                .header("content-type", "text/calendar")
                .body(body)
                .send()
        };
        let detail = problem(send_ical("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:nonsense\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_icalendar").await;
        assert!(detail.contains("line 4"), "{detail}");
        problem(send_ical("hello").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_icalendar").await;
        problem(server.post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": cal, "start": "tomorrow"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_time").await;
        problem(server.post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": cal, "start": "2026-08-01T10:00:00", "time_zone": "Nowhere/City"})).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown_time_zone").await;
        problem(server.post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": cal, "start": "2026-08-01T10:00:00Z", "rrule": "FREQ=SOMETIMES"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_rrule").await;
        problem(server.post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": cal, "start": "2026-08-01T10:00:00Z", "end": "2026-08-01T09:00:00Z"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_time").await;
        problem(server.post_json(&server.admin, "/v1/calendar/events", json!({"start": "2026-08-01T10:00:00Z"})).await, StatusCode::UNPROCESSABLE_ENTITY, "missing_calendar_id").await;
        let raw = server
            .client
            .post(server.url("/v1/calendar/events"))
            .bearer_auth(&server.admin)
            .header("content-type", "application/json")
            .body("{\"calendar_id\": ")
            .send()
            .await
            .unwrap();
        problem(raw, StatusCode::BAD_REQUEST, "invalid_json").await;
        let huge = format!("BEGIN:VCALENDAR\r\nX-PAD:{}\r\nEND:VCALENDAR\r\n", "x".repeat(300 * 1024));
        let big = server
            .client
            .post(server.url(&format!("/v1/calendar/events?calendar_id={cal}")))
            .bearer_auth(&server.admin)
            .header("content-type", "text/calendar")
            .body(huge)
            .send()
            .await
            .unwrap();
        problem(big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        let wrong_type = server
            .client
            .post(server.url("/v1/calendar/events"))
            .bearer_auth(&server.admin)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap();
        problem(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
        let dup = server.post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": cal, "uid": "dup", "start": "2026-08-02T10:00:00Z"})).await;
        assert_eq!(dup.status(), StatusCode::CREATED);
        problem(server.post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": cal, "uid": "dup", "start": "2026-08-03T10:00:00Z"})).await, StatusCode::CONFLICT, "conflict").await;

        for (query, code) in [
            ("start=2026-01-01T00:00:00Z&end=2025-01-01T00:00:00Z", "invalid_window"),
            ("start=0001-01-01T00:00:00Z&end=9999-01-01T00:00:00Z", "invalid_window"),
            ("start=yesterday&end=2026-01-01T00:00:00Z", "invalid_window"),
            ("start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z&tz=Mars/Base", "unknown_time_zone"),
            ("start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z&limit=100000", "invalid_limit"),
            ("start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z&cursor=zzz", "invalid_cursor"),
            ("start=2026-01-01T00:00:00Z", "invalid_query"),
        ] {
            problem(server.get(&server.admin, &format!("/v1/calendar/events?{query}")).await, StatusCode::BAD_REQUEST, code).await;
        }
        let stale_ical = server
            .client
            .put(server.url(&format!("/v1/calendar/events/{id}")))
            .bearer_auth(&server.admin)
            .header("content-type", "text/calendar")
            .body(ICAL_WITH_OVERRIDE)
            .send()
            .await
            .unwrap();
        problem(stale_ical, StatusCode::UNPROCESSABLE_ENTITY, "uid_mismatch").await;

        let after = window(&server, "start=2026-01-01T00:00:00Z&end=2027-01-01T00:00:00Z").await;
        let before_items = before["items"].as_array().unwrap().len();
        assert_eq!(after["items"].as_array().unwrap().len(), before_items + 1, "only the one valid `dup` event was added");
        assert_eq!(json_of(server.get(&server.admin, &format!("/v1/calendar/events/{id}")).await).await["version"], 1);
    }

    async fn bench_seed_writes_what_the_api_reads(server) {
        use calbridge_server::benchseed::{SeedOptions, seed};
        let options = SeedOptions { events: 200, seed: 7, batch: 64 };
        let report = seed(std::sync::Arc::clone(&server.store), "bench", &options).await.unwrap();
        assert_eq!((report.series, report.recurring), (200, 40));
        assert!(report.occurrences > 200 + 40 * 5, "{report:?}");
        // The key reads, and only reads.
        let refused = server.post_json(&report.token, "/v1/calendar/calendars", json!({"name": "x"})).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/calendar/events?start=2026-01-01&end=2027-01-01&tz=Europe/Berlin&limit=1000".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = json_of(server.get(&report.token, &path).await).await;
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert!(items.len() > 200, "{}", items.len());
        assert!(items.iter().all(|i| i["uid"].as_str().unwrap().starts_with("bench-7-")));
        let series: std::collections::BTreeSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(series.len(), 200, "every seeded series has an occurrence in 2026");
        assert!(items.iter().any(|i| i["all_day"] == true));
        assert!(items.iter().any(|i| i["recurrence_id"].is_string()));
        assert!(items.iter().any(|i| i["summary"].as_str().unwrap().ends_with("(moved)")), "an override shows its own summary");
        let zones: std::collections::BTreeSet<&str> = items.iter().filter_map(|i| i["time_zone"].as_str()).collect();
        assert!(zones.len() >= 5, "{zones:?}");
    }
}

async fn window_of(server: &TestServer) -> Value {
    window(
        server,
        "start=2026-07-01T00:00:00Z&end=2026-07-02T00:00:00Z",
    )
    .await
}
