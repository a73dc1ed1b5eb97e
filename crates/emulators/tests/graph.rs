#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Graph emulator over HTTP: shapes, concurrency control, calendarView, delta, invitations, getSchedule,
//! subscriptions and $batch.

mod common;

use std::collections::BTreeSet;

use calbridge_emulators::{Action, EmulatorConfig, Flavor, SeedSpec};
use common::{Api, Behaviour, Receiver, json_of};
use serde_json::{Value, json};

async fn graph() -> Api {
    Api::start(Flavor::Microsoft, EmulatorConfig::default()).await
}

fn lunch() -> Value {
    json!({
        "subject": "Let's go for lunch",
        "body": {"contentType": "HTML", "content": "<p>Does noon work for you?</p>"},
        "start": {"dateTime": "2026-03-10T12:00:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-03-10T13:00:00", "timeZone": "Europe/Berlin"},
        "location": {"displayName": "Harry's Bar"},
        "attendees": [{"emailAddress": {"address": "megan@contoso.example", "name": "Megan"}, "type": "required"}],
    })
}

fn is_seven_digit_utc(s: &str) -> bool {
    // 2017-04-15T03:00:50.7579581Z
    s.len() == 28 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn calendars_have_the_documented_fields() {
    let api = graph().await;
    let (status, body) = json_of(api.get("/v1.0/me/calendars").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let cal = &body["value"][0];
    for field in [
        "id",
        "name",
        "color",
        "hexColor",
        "changeKey",
        "canEdit",
        "canShare",
        "canViewPrivateItems",
        "isRemovable",
        "isTallyingResponses",
        "allowedOnlineMeetingProviders",
        "defaultOnlineMeetingProvider",
    ] {
        assert!(cal.get(field).is_some(), "calendar lacks {field}: {cal}");
    }
    assert_eq!(cal["isDefaultCalendar"], true);
    assert_eq!(cal["hexColor"], "");
    assert_eq!(cal["owner"]["address"], "adele@contoso.example");
    let (status, me_cal) = json_of(api.get("/v1.0/me/calendar").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(me_cal["id"], cal["id"]);
}

#[tokio::test]
async fn create_update_delete_with_etags_and_if_match() {
    let api = graph().await;
    let (status, ev) = json_of(api.post("/v1.0/me/events", &lunch()).send().await.unwrap()).await;
    assert_eq!(status, 201);
    let change_key = ev["changeKey"].as_str().unwrap().to_string();
    assert_eq!(ev["@odata.etag"], format!("W/\"{change_key}\""));
    assert_eq!(ev["type"], "singleInstance");
    assert_eq!(ev["seriesMasterId"], Value::Null);
    assert_eq!(ev["recurrence"], Value::Null);
    assert_eq!(ev["isOrganizer"], true);
    assert_eq!(ev["responseStatus"]["response"], "organizer");
    assert_eq!(ev["responseStatus"]["time"], "0001-01-01T00:00:00Z");
    assert_eq!(ev["body"]["contentType"], "html");
    assert_eq!(ev["bodyPreview"], "Does noon work for you?");
    assert_eq!(ev["attendees"][0]["status"]["response"], "none");
    assert_eq!(ev["locations"][0]["displayName"], "Harry's Bar");
    assert_eq!(ev["originalStartTimeZone"], "Europe/Berlin");
    assert!(
        ev["iCalUId"]
            .as_str()
            .unwrap()
            .starts_with("040000008200E00074C5B7101A82E008")
    );
    assert!(
        is_seven_digit_utc(ev["createdDateTime"].as_str().unwrap()),
        "{}",
        ev["createdDateTime"]
    );
    // Default output zone is UTC: 12:00 Berlin in March is 11:00 UTC.
    assert_eq!(
        ev["start"],
        json!({"dateTime": "2026-03-10T11:00:00.0000000", "timeZone": "UTC"})
    );
    let id = ev["id"].as_str().unwrap().to_string();
    let path = format!("/v1.0/me/events/{id}");

    let (status, patched) = json_of(
        api.patch(&path, &json!({"subject": "Brunch instead"}))
            .header("If-Match", ev["@odata.etag"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["subject"], "Brunch instead");
    assert_eq!(
        patched["location"]["displayName"], "Harry's Bar",
        "PATCH returns the full event"
    );
    assert_ne!(patched["changeKey"], ev["changeKey"]);

    // The old etag is now stale.
    let (status, err) = json_of(
        api.patch(&path, &json!({"subject": "x"}))
            .header("If-Match", ev["@odata.etag"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 412);
    assert_eq!(err["error"]["code"], "ErrorIrresolvableConflict");
    let r = api
        .delete(&path)
        .header("If-Match", ev["@odata.etag"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);

    let r = api
        .get(&path)
        .header("Prefer", "outlook.body-content-type=\"text\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["preference-applied"],
        "outlook.body-content-type=\"text\""
    );
    let (_, as_text) = json_of(r).await;
    assert_eq!(
        as_text["body"],
        json!({"contentType": "text", "content": "Does noon work for you?"})
    );
    let r = api
        .delete(&path)
        .header("If-Match", patched["@odata.etag"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, err) = json_of(api.get(&path).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "ErrorItemNotFound");
    assert_eq!(
        err["error"]["message"],
        "The specified object was not found in the store."
    );
    assert!(err["error"]["innerError"]["request-id"].is_string());
}

#[tokio::test]
async fn transaction_id_makes_create_idempotent() {
    let api = graph().await;
    let mut body = lunch();
    body["transactionId"] = json!("7E163156-7762-4BEB-A1C6-729EA81755A7");
    let (s1, a) = json_of(api.post("/v1.0/me/events", &body).send().await.unwrap()).await;
    let (s2, b) = json_of(api.post("/v1.0/me/events", &body).send().await.unwrap()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["transactionId"], "7E163156-7762-4BEB-A1C6-729EA81755A7");
    let (_, list) = json_of(api.get("/v1.0/me/events").send().await.unwrap()).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn calendar_view_window_rules_paging_and_time_zones() {
    let api = graph().await;
    let (status, err) = json_of(
        api.get("/v1.0/me/calendarView?startDateTime=2026-03-01T00:00:00Z")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "ErrorInvalidParameter");
    assert_eq!(
        err["error"]["message"],
        "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime."
    );

    for day in 1..=5 {
        let mut ev = lunch();
        ev["subject"] = json!(format!("day {day}"));
        ev["start"]["dateTime"] = json!(format!("2026-03-0{day}T12:00:00"));
        ev["end"]["dateTime"] = json!(format!("2026-03-0{day}T13:00:00"));
        assert_eq!(
            api.post("/v1.0/me/events", &ev)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let all_day = json!({"subject": "Holiday", "isAllDay": true,
        "start": {"dateTime": "2026-03-04T00:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-03-05T00:00:00", "timeZone": "UTC"}});
    assert_eq!(
        api.post("/v1.0/me/events", &all_day)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let bad_all_day = json!({"subject": "x", "isAllDay": true,
        "start": {"dateTime": "2026-03-04T10:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-03-05T00:00:00", "timeZone": "UTC"}});
    assert_eq!(
        api.post("/v1.0/me/events", &bad_all_day)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // The offset in the window is honoured: 2026-03-02T00:00-08:00 = 08:00Z, so day 2 (11:00Z) is inside.
    let url = "/v1.0/me/calendarView?startDateTime=2026-03-02T00:00:00-08:00&endDateTime=2026-03-04T12:00:00Z&$top=2";
    let (status, page1) = json_of(api.get(url).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let subjects: Vec<&str> = page1["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["day 2", "day 3"]);
    let next = page1["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("$skip=2"), "{next}");
    let (_, page2) = json_of(api.get(next).send().await.unwrap()).await;
    let subjects: Vec<&str> = page2["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["Holiday", "day 4"]);
    assert!(page2.get("@odata.nextLink").is_none());

    let r = api
        .get("/v1.0/me/calendarView?startDateTime=2026-03-04T00:00:00Z&endDateTime=2026-03-05T00:00:00Z")
        .header("Prefer", "outlook.timezone=\"America/Los_Angeles\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["preference-applied"],
        "outlook.timezone=\"America/Los_Angeles\""
    );
    let (_, view) = json_of(r).await;
    let holiday = view["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == "Holiday")
        .unwrap();
    // All-day events stay midnight to midnight; only the label follows the requested zone.
    assert_eq!(
        holiday["start"],
        json!({"dateTime": "2026-03-04T00:00:00.0000000", "timeZone": "America/Los_Angeles"})
    );
    assert_eq!(holiday["end"]["dateTime"], "2026-03-05T00:00:00.0000000");
    let day4 = view["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == "day 4")
        .unwrap();
    assert_eq!(
        day4["start"],
        json!({"dateTime": "2026-03-04T03:00:00.0000000", "timeZone": "America/Los_Angeles"})
    );

    // Windows zone names work both ways: in the request body and in Prefer.
    let windows = json!({"subject": "windows", "start": {"dateTime": "2026-07-01T09:00:00", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2026-07-01T10:00:00", "timeZone": "W. Europe Standard Time"}});
    let (status, made) = json_of(
        api.post("/v1.0/me/events", &windows)
            .header("Prefer", "outlook.timezone=\"Pacific Standard Time\"")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(made["originalStartTimeZone"], "W. Europe Standard Time");
    // 09:00 CEST = 07:00Z = 00:00 PDT.
    assert_eq!(
        made["start"],
        json!({"dateTime": "2026-07-01T00:00:00.0000000", "timeZone": "Pacific Standard Time"})
    );
    let bad_zone = json!({"subject": "x", "start": {"dateTime": "2026-07-01T09:00:00", "timeZone": "Mars Standard Time"}, "end": {"dateTime": "2026-07-01T10:00:00", "timeZone": "Mars Standard Time"}});
    let (status, err) = json_of(api.post("/v1.0/me/events", &bad_zone).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "TimeZoneNotSupportedException");
}

fn ids(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .filter(|i| i.get("@removed").is_none())
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn removed(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .filter(|i| i.get("@removed").is_some())
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Follows nextLinks to the deltaLink; returns all items, the page count and the deltaLink.
async fn delta_round(api: &Api, first: &str, page_size: usize) -> (Vec<Value>, usize, String) {
    let mut url = first.to_string();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let r = api
            .get(&url)
            .header("Prefer", format!("odata.maxpagesize={page_size}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (_, body) = json_of(r).await;
        pages += 1;
        assert_eq!(
            body["@odata.context"],
            "https://graph.microsoft.com/v1.0/$metadata#Collection(event)"
        );
        let page: Vec<Value> = body["value"].as_array().unwrap().clone();
        assert!(page.len() <= page_size, "maxpagesize is a hard limit");
        for item in &page {
            assert_eq!(item["@odata.type"], "#microsoft.graph.event");
        }
        items.extend(page);
        match (body.get("@odata.nextLink"), body.get("@odata.deltaLink")) {
            (Some(next), None) => {
                let next = next.as_str().unwrap();
                assert!(next.contains("/calendarView/delta?$skiptoken="), "{next}");
                url = next.to_string();
            }
            (None, Some(delta)) => {
                let delta = delta.as_str().unwrap().to_string();
                assert!(
                    delta.contains("/calendarView/delta?$deltatoken="),
                    "{delta}"
                );
                return (items, pages, delta);
            }
            other => panic!("a page needs exactly one of nextLink / deltaLink: {other:?}"),
        }
    }
}

#[tokio::test]
async fn delta_pages_removals_replays_and_410() {
    let api = graph().await;
    api.emu
        .seed(&SeedSpec {
            events_per_calendar: 60,
            seed: 42,
            ..SeedSpec::default()
        })
        .await
        .unwrap();
    let window = "startDateTime=2025-06-01T00:00:00Z&endDateTime=2026-07-01T00:00:00Z";
    let (_, view) = json_of(
        api.get(&format!("/v1.0/me/calendarView?{window}&$top=1000"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let expected = ids(view["value"].as_array().unwrap());
    assert!(
        expected.len() > 20,
        "seed should put most events in the window"
    );

    let (items, pages, delta_link) =
        delta_round(&api, &format!("/v1.0/me/calendarView/delta?{window}"), 7).await;
    assert!(pages >= expected.len() / 7, "paged by maxpagesize");
    assert_eq!(
        ids(&items),
        expected,
        "round 1 returns the current state of the window"
    );
    assert!(removed(&items).is_empty(), "round 1 has no removals");

    // Nothing changed: the next round is empty.
    let (quiet, _, _) = delta_round(&api, &delta_link, 7).await;
    assert!(quiet.is_empty(), "{quiet:?}");

    // A person edits one event, deletes one, moves one far out of the window and creates one outside it.
    let mut it = expected.iter();
    let (edit, del, mv) = (
        it.next().unwrap().clone(),
        it.next().unwrap().clone(),
        it.next().unwrap().clone(),
    );
    api.emu
        .act(Action::Edit {
            user: None,
            calendar: None,
            event_id: edit.clone(),
            changes: json!({"subject": "edited"}),
        })
        .await
        .unwrap();
    api.emu
        .act(Action::Delete {
            user: None,
            calendar: None,
            event_id: del.clone(),
        })
        .await
        .unwrap();
    api.emu
        .act(Action::Move {
            user: None,
            calendar: None,
            event_id: mv.clone(),
            minutes: 60 * 24 * 400,
        })
        .await
        .unwrap();
    let far = json!({"subject": "far away", "start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2030-01-01T11:00:00", "timeZone": "UTC"}});
    let outside = api
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: far,
        })
        .await
        .unwrap();
    let outside_id = outside["id"].as_str().unwrap().to_string();

    let (round2, _, next_link) = delta_round(&api, &delta_link, 2).await;
    assert_eq!(ids(&round2), BTreeSet::from([edit.clone()]));
    let edited = round2.iter().find(|i| i["id"] == edit.as_str()).unwrap();
    assert_eq!(edited["subject"], "edited");
    assert!(edited["@odata.etag"].as_str().unwrap().starts_with("W/\""));
    assert_eq!(
        removed(&round2),
        BTreeSet::from([del.clone(), mv.clone(), outside_id.clone()])
    );
    let tomb = round2.iter().find(|i| i["id"] == del.as_str()).unwrap();
    assert_eq!(
        tomb,
        &json!({"@odata.type": "#microsoft.graph.event", "id": del, "@removed": {"reason": "deleted"}})
    );

    // Replaying the old deltaLink is allowed and returns the same changes again.
    let (replay, _, _) = delta_round(&api, &delta_link, 50).await;
    assert_eq!(ids(&replay), ids(&round2));
    assert_eq!(removed(&replay), removed(&round2));
    let (after, _, _) = delta_round(&api, &next_link, 50).await;
    assert!(after.is_empty());

    // Expired sync state: 410 SyncStateNotFound with a Location to restart from.
    api.emu.invalidate_sync_state(None).unwrap();
    let r = api.get(&next_link).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("startDateTime=") && !location.contains("deltatoken"),
        "{location}"
    );
    let (_, err) = json_of(r).await;
    assert_eq!(err["error"]["code"], "SyncStateNotFound");
    let (status, _) = json_of(
        api.get("/v1.0/me/calendarView/delta?$deltatoken=garbage")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn delta_token_survives_compaction_only_if_newer() {
    let api = graph().await;
    let window = "startDateTime=2026-01-01T00:00:00Z&endDateTime=2026-12-31T00:00:00Z";
    let made = api
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: lunch(),
        })
        .await
        .unwrap();
    let (_, _, old_link) =
        delta_round(&api, &format!("/v1.0/me/calendarView/delta?{window}"), 10).await;
    api.emu
        .act(Action::Delete {
            user: None,
            calendar: None,
            event_id: made["id"].as_str().unwrap().into(),
        })
        .await
        .unwrap();
    api.emu.compact(None).unwrap();
    // The tombstone the old token would need is gone.
    assert_eq!(api.get(&old_link).send().await.unwrap().status(), 410);
    let (items, _, fresh) =
        delta_round(&api, &format!("/v1.0/me/calendarView/delta?{window}"), 10).await;
    assert!(items.is_empty());
    assert_eq!(api.get(&fresh).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn series_master_echoes_recurrence_and_an_edited_occurrence_becomes_an_exception() {
    let api = graph().await;
    let series = json!({
        "subject": "Weekly sync",
        "start": {"dateTime": "2026-04-06T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-04-06T09:30:00", "timeZone": "UTC"},
        "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["Monday"]},
                       "range": {"type": "endDate", "startDate": "2026-04-06", "endDate": "2026-06-29"}},
    });
    let (status, master) =
        json_of(api.post("/v1.0/me/events", &series).send().await.unwrap()).await;
    assert_eq!(status, 201);
    assert_eq!(master["type"], "seriesMaster");
    let rec = &master["recurrence"];
    assert_eq!(rec["pattern"]["daysOfWeek"], json!(["monday"]));
    assert_eq!(rec["pattern"]["firstDayOfWeek"], "sunday");
    assert_eq!(rec["pattern"]["index"], "first");
    assert_eq!(rec["pattern"]["month"], 0);
    assert_eq!(rec["range"]["numberOfOccurrences"], 0);
    let master_id = master["id"].as_str().unwrap();

    // The second Monday (2026-04-13 09:00Z) is moved by an hour.
    let occurrence = format!("{master_id}_20260413T090000Z");
    let moved = json!({"start": {"dateTime": "2026-04-13T10:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-04-13T10:30:00", "timeZone": "UTC"}});
    let (status, ex) = json_of(
        api.patch(&format!("/v1.0/me/events/{occurrence}"), &moved)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ex["type"], "exception");
    assert_eq!(ex["seriesMasterId"], master_id);
    assert_eq!(ex["originalStart"], "2026-04-13T09:00:00.0000000Z");
    assert_eq!(ex["recurrence"], Value::Null);
    assert_eq!(ex["subject"], "Weekly sync");

    let (status, inst) = json_of(api.get(&format!("/v1.0/me/events/{master_id}/instances?startDateTime=2026-04-01T00:00:00Z&endDateTime=2026-05-01T00:00:00Z")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let list = inst["value"].as_array().unwrap();
    let exception = list
        .iter()
        .find(|i| i["id"] == occurrence.as_str())
        .expect("the exception is an instance");
    assert_eq!(exception["type"], "exception");
    assert!(
        list.iter()
            .all(|i| i["seriesMasterId"] == master_id && i["type"] != "seriesMaster")
    );
    // calendarView never returns the master.
    let (_, view) = json_of(api.get("/v1.0/me/calendarView?startDateTime=2026-04-01T00:00:00Z&endDateTime=2026-05-01T00:00:00Z&$top=100").send().await.unwrap()).await;
    assert!(
        view["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "seriesMaster")
    );
    let (status, _) = json_of(
        api.get(&format!("/v1.0/me/events/{master_id}/instances"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "instances needs a window");

    // Expansion: the four Mondays of April, the second one as the exception.
    let starts: Vec<(String, String, String)> = list
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().into(),
                i["type"].as_str().unwrap().into(),
                i["start"]["dateTime"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(starts.len(), 4, "{starts:?}");
    assert_eq!(
        starts[0],
        (
            format!("{master_id}_20260406T090000Z"),
            "occurrence".into(),
            "2026-04-06T09:00:00.0000000".into()
        )
    );
    assert_eq!(
        starts[1],
        (
            occurrence.clone(),
            "exception".into(),
            "2026-04-13T10:00:00.0000000".into()
        )
    );
    assert_eq!(starts[3].2, "2026-04-27T09:00:00.0000000");
    let occ = &list[0];
    assert_eq!(occ["originalStart"], "2026-04-06T09:00:00.0000000Z");
    assert_eq!(occ["recurrence"], Value::Null);
    assert_ne!(
        occ["iCalUId"], list[2]["iCalUId"],
        "iCalUId differs per occurrence"
    );
    let view_ids: BTreeSet<String> = ids(view["value"].as_array().unwrap());
    assert_eq!(view_ids.len(), 4);

    // Moving an occurrence onto the next one's day is refused.
    let third = format!("{master_id}_20260420T090000Z");
    let crossing = json!({"start": {"dateTime": "2026-04-27T11:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-04-27T11:30:00", "timeZone": "UTC"}});
    let (status, err) = json_of(
        api.patch(&format!("/v1.0/me/events/{third}"), &crossing)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "ErrorOccurrenceCrossingBoundary");

    // Deleting one occurrence: it leaves the view and the next delta round reports it removed.
    let window = "startDateTime=2026-04-01T00:00:00Z&endDateTime=2026-05-01T00:00:00Z";
    let (round1, _, link) =
        delta_round(&api, &format!("/v1.0/me/calendarView/delta?{window}"), 3).await;
    assert_eq!(ids(&round1), view_ids);
    assert_eq!(
        api.delete(&format!("/v1.0/me/events/{third}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (round2, _, _) = delta_round(&api, &link, 10).await;
    assert!(removed(&round2).contains(&third), "{round2:?}");
    let (_, inst) = json_of(
        api.get(&format!("/v1.0/me/events/{master_id}/instances?{window}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(inst["value"].as_array().unwrap().len(), 3);

    // A pattern the recurrence mapping cannot read is refused.
    let mut bad = series.clone();
    bad["recurrence"]["pattern"] = json!({"type": "weekly", "interval": 1});
    let (status, err) = json_of(api.post("/v1.0/me/events", &bad).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "ErrorInvalidParameter");
}

#[tokio::test]
async fn answering_an_invitation_changes_response_status_and_change_key() {
    let api = graph().await;
    let made = api
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: lunch(),
        })
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    // The organizer cannot answer their own meeting.
    assert_eq!(
        api.post(
            &format!("/v1.0/me/events/{id}/accept"),
            &json!({"sendResponse": true})
        )
        .send()
        .await
        .unwrap()
        .status(),
        400
    );
    api.emu
        .act(Action::Invite {
            user: None,
            calendar: None,
            event_id: id.clone(),
            organizer: "meganb@contoso.example".into(),
        })
        .await
        .unwrap();
    let (_, before) = json_of(
        api.get(&format!("/v1.0/me/events/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(before["isOrganizer"], false);
    assert_eq!(before["responseStatus"]["response"], "notResponded");
    let r = api
        .post(
            &format!("/v1.0/me/events/{id}/tentativelyAccept"),
            &json!({"comment": "maybe", "sendResponse": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.text().await.unwrap().is_empty());
    let (_, after) = json_of(
        api.get(&format!("/v1.0/me/events/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(after["responseStatus"]["response"], "tentativelyAccepted");
    assert_ne!(after["responseStatus"]["time"], "0001-01-01T00:00:00Z");
    assert_ne!(after["changeKey"], before["changeKey"]);
    let me = after["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["emailAddress"]["address"] == "adele@contoso.example")
        .unwrap();
    assert_eq!(me["status"]["response"], "tentativelyAccepted");
    // A proposal is refused when the meeting does not allow new time proposals.
    api.emu
        .act(Action::Edit {
            user: None,
            calendar: None,
            event_id: id.clone(),
            changes: json!({"allowNewTimeProposals": false}),
        })
        .await
        .unwrap();
    let proposal = json!({"sendResponse": true, "proposedNewTime": {"start": {"dateTime": "2026-03-11T12:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-03-11T13:00:00", "timeZone": "UTC"}}});
    assert_eq!(
        api.post(&format!("/v1.0/me/events/{id}/decline"), &proposal)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        api.post(&format!("/v1.0/me/events/{id}/decline"), &json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
}

#[tokio::test]
async fn get_schedule_reports_availability_by_slot() {
    let api = graph().await;
    let busy = json!({"subject": "busy", "showAs": "busy", "start": {"dateTime": "2026-03-10T09:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-03-10T10:00:00", "timeZone": "UTC"}});
    let tentative = json!({"subject": "maybe", "showAs": "tentative", "start": {"dateTime": "2026-03-10T11:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-03-10T11:30:00", "timeZone": "UTC"}});
    let free = json!({"subject": "free", "showAs": "free", "start": {"dateTime": "2026-03-10T12:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-03-10T13:00:00", "timeZone": "UTC"}});
    for e in [busy, tentative, free] {
        api.post("/v1.0/me/events", &e).send().await.unwrap();
    }
    let request = json!({
        "schedules": ["adele@contoso.example", "nobody@contoso.example"],
        "startTime": {"dateTime": "2026-03-10T08:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2026-03-10T13:00:00", "timeZone": "UTC"},
        "availabilityViewInterval": 60,
    });
    let (status, body) = json_of(
        api.post("/v1.0/me/calendar/getSchedule", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let mine = &body["value"][0];
    assert_eq!(mine["scheduleId"], "adele@contoso.example");
    assert_eq!(mine["availabilityView"], "02010");
    assert_eq!(mine["scheduleItems"].as_array().unwrap().len(), 2);
    assert_eq!(mine["scheduleItems"][0]["status"], "busy");
    assert_eq!(
        mine["scheduleItems"][0]["start"]["dateTime"],
        "2026-03-10T09:00:00.0000000"
    );
    assert_eq!(mine["workingHours"]["startTime"], "08:00:00.0000000");
    assert!(body["value"][1]["error"]["responseCode"].is_string());
}

#[tokio::test]
async fn subscription_handshake_notifications_lifecycle_and_renewal() {
    let api = graph().await;
    let hook = Receiver::start(Behaviour::Echo).await;
    let expiration = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(48))
        .unwrap();
    let request = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": hook.url(),
        "lifecycleNotificationUrl": format!("{}?kind=lifecycle", hook.url()),
        "resource": "/me/events",
        "expirationDateTime": expiration.to_string(),
        "clientState": "secretClientValue",
    });
    let (status, sub) = json_of(
        api.post("/v1.0/subscriptions", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let validations = hook.hits();
    assert_eq!(validations.len(), 2, "both URLs are validated");
    for hit in &validations {
        let token = hit
            .query
            .iter()
            .find(|(k, _)| k == "validationToken")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(
            token.contains(' '),
            "the token must be URL-decoded by the receiver: {token}"
        );
        assert!(
            hit.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
    assert!(
        validations[1]
            .query
            .iter()
            .any(|(k, v)| k == "kind" && v == "lifecycle"),
        "query of the URL is kept"
    );
    assert_eq!(sub["clientState"], "secretClientValue");
    assert_eq!(sub["resource"], "/me/events");
    let sub_id = sub["id"].as_str().unwrap().to_string();

    let made = api
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: lunch(),
        })
        .await
        .unwrap();
    let hits = hook.wait_for(3).await;
    let note: Value = serde_json::from_slice(&hits[2].body).unwrap();
    let item = &note["value"][0];
    assert_eq!(item["subscriptionId"], sub_id.as_str());
    assert_eq!(item["clientState"], "secretClientValue");
    assert_eq!(item["changeType"], "created");
    assert_eq!(item["resourceData"]["id"], made["id"]);
    assert_eq!(
        item["resourceData"]["@odata.type"],
        "#Microsoft.Graph.Event"
    );
    assert!(item["resource"].as_str().unwrap().starts_with("Users/"));

    let status = api
        .emu
        .lifecycle(&sub_id, "reauthorizationRequired")
        .await
        .unwrap();
    assert_eq!(status, 202);
    let hits = hook.wait_for(4).await;
    let life: Value = serde_json::from_slice(&hits[3].body).unwrap();
    assert_eq!(
        life["value"][0]["lifecycleEvent"],
        "reauthorizationRequired"
    );
    assert_eq!(life["value"][0]["clientState"], "secretClientValue");

    // Renewal within the maximum works, beyond it is refused.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(60))
        .unwrap();
    let (status, renewed) = json_of(
        api.patch(
            &format!("/v1.0/subscriptions/{sub_id}"),
            &json!({"expirationDateTime": later.to_string()}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        renewed["expirationDateTime"]
            .as_str()
            .unwrap()
            .starts_with(&later.to_string()[..16])
    );
    let too_late = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 8))
        .unwrap();
    assert_eq!(
        api.patch(
            &format!("/v1.0/subscriptions/{sub_id}"),
            &json!({"expirationDateTime": too_late.to_string()})
        )
        .send()
        .await
        .unwrap()
        .status(),
        400
    );
    assert_eq!(
        api.post(
            &format!("/v1.0/subscriptions/{sub_id}/reauthorize"),
            &json!({})
        )
        .send()
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        api.delete(&format!("/v1.0/subscriptions/{sub_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        api.delete(&format!("/v1.0/subscriptions/{sub_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn subscription_fails_when_the_receiver_does_not_echo() {
    let api = graph().await;
    let hook = Receiver::start(Behaviour::WrongEcho).await;
    let expiration = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let request = json!({"changeType": "created", "notificationUrl": hook.url(), "resource": "me/events", "expirationDateTime": expiration.to_string(), "clientState": "s"});
    let (status, err) = json_of(
        api.post("/v1.0/subscriptions", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "ValidationError");
    assert!(api.emu.subscriptions().is_empty());
    // Nothing listens here: the handshake cannot succeed either.
    let request = json!({"changeType": "created", "notificationUrl": "http://127.0.0.1:9/hook", "resource": "me/events", "expirationDateTime": expiration.to_string()});
    assert_eq!(
        api.post("/v1.0/subscriptions", &request)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn json_batch_depends_on_and_limits() {
    let api = graph().await;
    let batch = json!({"requests": [
        {"id": "1", "method": "POST", "url": "/me/events", "headers": {"Content-Type": "application/json"}, "body": lunch()},
        {"id": "2", "method": "GET", "url": "/me/events/does-not-exist"},
        {"id": "3", "method": "GET", "url": "/me/calendars", "dependsOn": ["2"]},
        {"id": "4", "method": "GET", "url": "/me/events", "dependsOn": ["1"]},
    ]});
    let (status, body) = json_of(api.post("/v1.0/$batch", &batch).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("1")["status"], 201);
    assert_eq!(by_id("2")["status"], 404);
    assert_eq!(by_id("2")["body"]["error"]["code"], "ErrorItemNotFound");
    assert_eq!(by_id("3")["status"], 424);
    assert_eq!(by_id("4")["status"], 200);
    assert_eq!(by_id("4")["body"]["value"].as_array().unwrap().len(), 1);

    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me/calendars"}))
        .collect();
    assert_eq!(
        api.post("/v1.0/$batch", &json!({"requests": too_many}))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let no_content_type =
        json!({"requests": [{"id": "1", "method": "POST", "url": "/me/events", "body": lunch()}]});
    assert_eq!(
        api.post("/v1.0/$batch", &no_content_type)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn control_api_over_http() {
    let api = graph().await;
    let base = api.emu.base_url().to_string();
    let (status, seeded) = json_of(
        api.http
            .post(format!("{base}/_control/seed"))
            .json(&json!({"events_per_calendar": 12, "calendars": 2, "seed": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seeded["created"], 24);
    let (_, state) = json_of(
        api.http
            .get(format!("{base}/_control/state"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        state["mailboxes"][0]["calendars"].as_array().unwrap().len(),
        2
    );
    let (_, token) = json_of(
        api.http
            .post(format!("{base}/_control/token"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let token = token["access_token"].as_str().unwrap();
    let r = api
        .http
        .get(format!("{base}/v1.0/me/calendars"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, counters) = json_of(
        api.http
            .get(format!("{base}/_control/counters"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(counters["requests"]["GET /v1.0/me/calendars"]["200"], 1);
    let (status, _) = json_of(
        api.http
            .post(format!("{base}/_control/act"))
            .json(&json!({"action": "delete", "event_id": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn seeding_is_deterministic() {
    let a = graph().await;
    let b = graph().await;
    let spec = SeedSpec {
        events_per_calendar: 30,
        seed: 9,
        ..SeedSpec::default()
    };
    a.emu.seed(&spec).await.unwrap();
    b.emu.seed(&spec).await.unwrap();
    let list = |api: &Api| {
        let req = api.get("/v1.0/me/events?$top=1000");
        async move {
            let (_, v) = json_of(req.send().await.unwrap()).await;
            v["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["id"].clone(), e["subject"].clone(), e["start"].clone()))
                .collect::<Vec<_>>()
        }
    };
    let (la, lb) = (list(&a).await, list(&b).await);
    assert_eq!(la.len(), 30);
    assert_eq!(la, lb);
}

#[tokio::test]
async fn subscriptions_expire_and_can_be_removed_by_lifecycle() {
    let api = graph().await;
    let hook = Receiver::start(Behaviour::Echo).await;
    let soon = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_millis(1500))
        .unwrap();
    let request = json!({"changeType": "created", "notificationUrl": hook.url(), "resource": "/me/events",
        "expirationDateTime": soon.to_string(), "clientState": "c"});
    let (status, _) = json_of(
        api.post("/v1.0/subscriptions", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(hook.wait_for(1).await.len(), 1, "validation only");
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    api.emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: lunch(),
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        hook.hits().len(),
        1,
        "an expired subscription gets no notification"
    );
    let (_, list) = json_of(api.get("/v1.0/subscriptions").send().await.unwrap()).await;
    assert!(list["value"].as_array().unwrap().is_empty());

    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let request = json!({"changeType": "created", "notificationUrl": hook.url(), "lifecycleNotificationUrl": hook.url(),
        "resource": "/me/events", "expirationDateTime": later.to_string(), "clientState": "c"});
    let (_, sub) = json_of(
        api.post("/v1.0/subscriptions", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = sub["id"].as_str().unwrap();
    assert_eq!(api.emu.lifecycle(id, "missed").await.unwrap(), 202);
    assert_eq!(
        api.emu.lifecycle(id, "subscriptionRemoved").await.unwrap(),
        202
    );
    let hits = hook.wait_for(5).await;
    let last: Value = serde_json::from_slice(&hits[4].body).unwrap();
    assert_eq!(last["value"][0]["lifecycleEvent"], "subscriptionRemoved");
    assert!(
        api.emu.subscriptions().is_empty(),
        "subscriptionRemoved removes it"
    );
    assert!(api.emu.lifecycle(id, "missed").await.is_err());
}
