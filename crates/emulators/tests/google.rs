#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Google Calendar emulator over HTTP: calendarList, events with etags and client ids, list semantics,
//! sync tokens and page tokens, cancelled instances, watch channels and freeBusy.

mod common;

use std::collections::BTreeSet;

use calbridge_emulators::{Action, EmulatorConfig, Flavor, SeedSpec};
use common::{Api, Behaviour, Receiver, json_of};
use serde_json::{Value, json};

async fn google() -> Api {
    Api::start(Flavor::Google, EmulatorConfig::default()).await
}

const EVENTS: &str = "/calendar/v3/calendars/primary/events";

fn meeting(summary: &str, start: &str, end: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

#[tokio::test]
async fn calendar_list_has_the_primary_calendar() {
    let api = google().await;
    let (status, body) = json_of(
        api.get("/calendar/v3/users/me/calendarList")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "calendar#calendarList");
    let entry = &body["items"][0];
    assert_eq!(entry["kind"], "calendar#calendarListEntry");
    assert_eq!(entry["id"], "adele@contoso.example");
    assert_eq!(entry["primary"], true);
    assert_eq!(entry["accessRole"], "owner");
    assert!(entry["backgroundColor"].as_str().unwrap().starts_with('#'));
    assert_eq!(entry["defaultReminders"][0]["method"], "popup");
    assert!(entry.get("owner").is_none());
}

#[tokio::test]
async fn insert_patch_update_delete_with_etags() {
    let api = google().await;
    let (status, ev) = json_of(
        api.post(
            EVENTS,
            &meeting(
                "Standup",
                "2026-03-10T09:00:00+01:00",
                "2026-03-10T09:15:00+01:00",
            ),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ev["kind"], "calendar#event");
    assert_eq!(ev["status"], "confirmed");
    let etag = ev["etag"].as_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let id = ev["id"].as_str().unwrap().to_string();
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
    );
    assert!(ev["iCalUID"].is_string() && ev["created"].is_string() && ev["updated"].is_string());
    let path = format!("{EVENTS}/{id}");

    let r = api
        .get(&path)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let (status, patched) = json_of(
        api.patch(&path, &json!({"summary": "Daily standup"}))
            .header("If-Match", &etag)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["summary"], "Daily standup");
    assert_eq!(patched["start"]["dateTime"], "2026-03-10T09:00:00+01:00");
    assert_ne!(patched["etag"], etag);

    let (status, err) = json_of(
        api.patch(&path, &json!({"summary": "x"}))
            .header("If-Match", &etag)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 412);
    assert_eq!(err["error"]["code"], 412);
    assert_eq!(
        err["error"]["errors"][0],
        json!({"domain": "global", "reason": "conditionNotMet", "message": "Precondition Failed", "locationType": "header", "location": "If-Match"})
    );

    // PUT replaces: the description set before is gone.
    api.patch(&path, &json!({"description": "agenda"}))
        .send()
        .await
        .unwrap();
    let full = json!({"summary": "Replaced", "start": {"dateTime": "2026-03-10T10:00:00Z"}, "end": {"dateTime": "2026-03-10T10:30:00Z"}});
    let (status, put) = json_of(
        api.http
            .put(api.url(&path))
            .bearer_auth(&api.token)
            .json(&full)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(put["summary"], "Replaced");
    assert!(put.get("description").is_none());

    assert_eq!(api.delete(&path).send().await.unwrap().status(), 204);
    let (status, err) = json_of(api.delete(&path).send().await.unwrap()).await;
    assert_eq!(status, 410);
    assert_eq!(err["error"]["errors"][0]["reason"], "deleted");
    assert_eq!(err["error"]["message"], "Resource has been deleted");
    let (status, tomb) = json_of(api.get(&path).send().await.unwrap()).await;
    assert_eq!(status, 200, "get always returns cancelled events");
    assert_eq!(tomb["status"], "cancelled");
    let (status, err) = json_of(
        api.get(&format!("{EVENTS}/nosuchevent"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["errors"][0]["reason"], "notFound");
}

#[tokio::test]
async fn client_supplied_ids() {
    let api = google().await;
    let mut body = meeting("Mine", "2026-03-10T09:00:00Z", "2026-03-10T10:00:00Z");
    body["id"] = json!("calbridge0001abc");
    let (status, ev) = json_of(api.post(EVENTS, &body).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(ev["id"], "calbridge0001abc");
    let (status, err) = json_of(api.post(EVENTS, &body).send().await.unwrap()).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["errors"][0]["reason"], "duplicate");
    assert_eq!(
        err["error"]["message"],
        "The requested identifier already exists."
    );
    body["id"] = json!("Not_Base32hex!");
    assert_eq!(api.post(EVENTS, &body).send().await.unwrap().status(), 400);
    let recurring_without_zone = json!({"summary": "r", "start": {"dateTime": "2026-03-10T09:00:00Z"}, "end": {"dateTime": "2026-03-10T10:00:00Z"}, "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"]});
    assert_eq!(
        api.post(EVENTS, &recurring_without_zone)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn list_time_bounds_and_parameter_errors() {
    let api = google().await;
    api.post(
        EVENTS,
        &meeting("early", "2026-03-10T08:00:00Z", "2026-03-10T09:00:00Z"),
    )
    .send()
    .await
    .unwrap();
    api.post(
        EVENTS,
        &meeting("late", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z"),
    )
    .send()
    .await
    .unwrap();
    api.post(EVENTS, &json!({"summary": "allday", "start": {"date": "2026-03-11"}, "end": {"date": "2026-03-12"}})).send().await.unwrap();
    // timeMin bounds the END (exclusive), timeMax bounds the START (exclusive).
    let (_, body) = json_of(
        api.get(&format!(
            "{EVENTS}?timeMin=2026-03-10T09:00:00Z&timeMax=2026-03-10T10:00:00Z"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(body["items"].as_array().unwrap().is_empty(), "{body}");
    let (_, body) = json_of(api.get(&format!("{EVENTS}?timeMin=2026-03-10T08:59:00Z&timeMax=2026-03-12T00:00:00Z&singleEvents=true&orderBy=startTime")).send().await.unwrap()).await;
    let summaries: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, ["early", "late", "allday"]);
    assert_eq!(body["items"][2]["start"], json!({"date": "2026-03-11"}));
    assert_eq!(body["kind"], "calendar#events");
    assert!(body.get("nextSyncToken").is_some());

    let (status, err) = json_of(
        api.get(&format!(
            "{EVENTS}?timeMin=2026-03-10T10:00:00Z&timeMax=2026-03-10T09:00:00Z"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["errors"][0]["reason"], "timeRangeEmpty");
    assert_eq!(
        api.get(&format!("{EVENTS}?orderBy=startTime"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        api.get(&format!("{EVENTS}?timeMin=2026-03-10"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

async fn full_sync(api: &Api, first: &str) -> (Vec<Value>, usize, String) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut page_token: Option<String> = None;
    loop {
        let url = match &page_token {
            Some(t) => format!("{first}&pageToken={t}"),
            None => first.to_string(),
        };
        let (status, body) = json_of(api.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let page = body["items"].as_array().unwrap();
        if let Some(max) = first
            .split("maxResults=")
            .nth(1)
            .and_then(|m| m.split('&').next())
            .and_then(|m| m.parse::<usize>().ok())
        {
            assert!(page.len() <= max, "a page holds at most maxResults items");
        }
        items.extend(page.iter().cloned());
        match (body.get("nextPageToken"), body.get("nextSyncToken")) {
            (Some(p), None) => page_token = Some(p.as_str().unwrap().to_string()),
            (None, Some(s)) => return (items, pages, s.as_str().unwrap().to_string()),
            other => panic!("exactly one of nextPageToken / nextSyncToken: {other:?}"),
        }
    }
}

fn live_ids(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .filter(|i| i["status"] != "cancelled")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn cancelled_ids(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .filter(|i| i["status"] == "cancelled")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sync_tokens_pages_tombstones_and_410() {
    let api = google().await;
    api.emu
        .seed(&SeedSpec {
            events_per_calendar: 45,
            seed: 5,
            ..SeedSpec::default()
        })
        .await
        .unwrap();
    let (items, pages, sync) = full_sync(&api, &format!("{EVENTS}?maxResults=10")).await;
    assert!(pages >= 5);
    let all = live_ids(&items);
    assert!(
        all.len() >= 45,
        "series exceptions are listed too: {}",
        all.len()
    );

    // No change: empty incremental page with a new sync token.
    let (quiet, _, sync) =
        full_sync(&api, &format!("{EVENTS}?maxResults=10&syncToken={sync}")).await;
    assert!(quiet.is_empty());

    let mut it = all.iter().filter(|id| !id.contains('_'));
    let (edit, del) = (it.next().unwrap().clone(), it.next().unwrap().clone());
    api.emu
        .act(Action::Edit {
            user: None,
            calendar: None,
            event_id: edit.clone(),
            changes: json!({"summary": "edited"}),
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
    let (changes, _, next_sync) =
        full_sync(&api, &format!("{EVENTS}?maxResults=1&syncToken={sync}")).await;
    assert!(live_ids(&changes).contains(&edit));
    assert!(
        cancelled_ids(&changes).contains(&del),
        "deletions always come with a sync token"
    );
    let tomb = changes.iter().find(|c| c["id"] == del.as_str()).unwrap();
    assert_eq!(tomb["status"], "cancelled");

    for forbidden in [
        "timeMin=2026-01-01T00:00:00Z",
        "q=x",
        "orderBy=updated",
        "updatedMin=2026-01-01T00:00:00Z",
        "iCalUID=x",
    ] {
        let (status, err) = json_of(
            api.get(&format!("{EVENTS}?syncToken={next_sync}&{forbidden}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{forbidden}");
        assert_eq!(err["error"]["errors"][0]["locationType"], "parameter");
    }

    api.emu.invalidate_sync_state(None).unwrap();
    let (status, err) = json_of(
        api.get(&format!("{EVENTS}?syncToken={next_sync}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(err["error"]["errors"][0]["reason"], "fullSyncRequired");
    assert_eq!(
        err["error"]["message"],
        "Sync token is no longer valid, a full sync is required."
    );
    assert_eq!(
        api.get(&format!("{EVENTS}?syncToken=bogus"))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
}

#[tokio::test]
async fn cancelled_instances_carry_recurring_event_id_and_original_start() {
    let api = google().await;
    let series = json!({"summary": "Weekly", "start": {"dateTime": "2026-04-06T09:00:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-04-06T09:30:00", "timeZone": "Europe/Berlin"}, "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=5"]});
    let (status, master) = json_of(api.post(EVENTS, &series).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(master["recurrence"], json!(["RRULE:FREQ=WEEKLY;COUNT=5"]));
    let master_id = master["id"].as_str().unwrap().to_string();
    let (_, _, sync) = full_sync(&api, &format!("{EVENTS}?maxResults=50")).await;

    // 2026-04-13 09:00 Berlin (CEST) = 07:00Z.
    let instance = format!("{master_id}_20260413T070000Z");
    assert_eq!(
        api.delete(&format!("{EVENTS}/{instance}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let moved = format!("{master_id}_20260420T070000Z");
    let (status, ex) = json_of(
        api.patch(
            &format!("{EVENTS}/{moved}"),
            &json!({"summary": "Weekly (moved)"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ex["recurringEventId"], master_id.as_str());
    assert!(ex.get("recurrence").is_none());

    let (changes, _, _) =
        full_sync(&api, &format!("{EVENTS}?maxResults=50&syncToken={sync}")).await;
    let cancelled = changes
        .iter()
        .find(|c| c["id"] == instance.as_str())
        .expect("cancelled instance in the sync");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["recurringEventId"], master_id.as_str());
    assert_eq!(
        cancelled["originalStartTime"]["dateTime"],
        "2026-04-13T09:00:00+02:00"
    );
    assert_eq!(cancelled["originalStartTime"]["timeZone"], "Europe/Berlin");

    // Without showDeleted an unexpanded listing still shows the cancelled instance of the live series.
    let (_, listing) = json_of(
        api.get(&format!("{EVENTS}?maxResults=50"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        listing["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == instance.as_str())
    );
    let (_, listing) = json_of(
        api.get(&format!("{EVENTS}?maxResults=50&singleEvents=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !listing["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == instance.as_str())
    );
    assert!(
        !listing["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == master_id.as_str()),
        "singleEvents omits masters"
    );
    // Expanded: 5 weekly instances minus the cancelled one, the moved one as its exception, in start order.
    let (_, listing) = json_of(
        api.get(&format!(
            "{EVENTS}?maxResults=50&singleEvents=true&orderBy=startTime"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    let starts: Vec<(String, String)> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["start"]["dateTime"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(starts.len(), 4, "{starts:?}");
    assert_eq!(
        starts[0],
        (
            format!("{master_id}_20260406T070000Z"),
            "2026-04-06T09:00:00+02:00".to_string()
        )
    );
    assert_eq!(starts[1].0, moved);
    assert_eq!(
        starts[3],
        (
            format!("{master_id}_20260504T070000Z"),
            "2026-05-04T09:00:00+02:00".to_string()
        )
    );
    for item in listing["items"].as_array().unwrap() {
        assert_eq!(item["recurringEventId"], master_id.as_str());
        assert_eq!(
            item["iCalUID"], master["iCalUID"],
            "instances share the iCalUID"
        );
        assert!(item.get("recurrence").is_none());
    }
    let (_, window) = json_of(
        api.get(&format!(
            "{EVENTS}?singleEvents=true&timeMin=2026-04-26T00:00:00Z&timeMax=2026-05-10T00:00:00Z"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(window["items"].as_array().unwrap().len(), 2, "{window}");
    let (_, inst) = json_of(
        api.get(&format!("{EVENTS}/{master_id}/instances?showDeleted=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = inst["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&instance.as_str()) && ids.contains(&moved.as_str()));
    assert_eq!(ids.len(), 5, "{ids:?}");
    let (_, inst) = json_of(
        api.get(&format!("{EVENTS}/{master_id}/instances"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(inst["items"].as_array().unwrap().len(), 4);

    // Deleting the series deletes its exceptions too.
    assert_eq!(
        api.delete(&format!("{EVENTS}/{master_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (_, ex) = json_of(api.get(&format!("{EVENTS}/{moved}")).send().await.unwrap()).await;
    assert_eq!(ex["status"], "cancelled");
}

#[tokio::test]
async fn watch_channel_sends_sync_then_exists_and_stops() {
    let api = google().await;
    let hook = Receiver::start(Behaviour::Echo).await;
    let request = json!({"id": "01234567-89ab-cdef-0123456789ab", "type": "web_hook", "address": hook.url(), "token": "target=myApp-myCalendarChannelDest"});
    let (status, channel) = json_of(
        api.post(&format!("{EVENTS}/watch"), &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(channel["kind"], "api#channel");
    assert_eq!(channel["id"], "01234567-89ab-cdef-0123456789ab");
    assert!(
        channel["resourceUri"]
            .as_str()
            .unwrap()
            .contains("/calendar/v3/calendars/adele@contoso.example/events")
    );
    assert!(channel["expiration"].is_number());
    let resource_id = channel["resourceId"].as_str().unwrap().to_string();

    let hits = hook.wait_for(1).await;
    let sync = &hits[0].headers;
    assert_eq!(sync["x-goog-resource-state"], "sync");
    assert_eq!(sync["x-goog-message-number"], "1");
    assert_eq!(sync["x-goog-channel-id"], "01234567-89ab-cdef-0123456789ab");
    assert_eq!(
        sync["x-goog-channel-token"],
        "target=myApp-myCalendarChannelDest"
    );
    assert_eq!(sync["x-goog-resource-id"], resource_id.as_str());
    assert!(
        sync["x-goog-channel-expiration"]
            .to_str()
            .unwrap()
            .ends_with("GMT")
    );
    assert!(hits[0].body.is_empty());

    api.emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: meeting("new", "2026-03-10T09:00:00Z", "2026-03-10T10:00:00Z"),
        })
        .await
        .unwrap();
    let hits = hook.wait_for(2).await;
    assert_eq!(hits[1].headers["x-goog-resource-state"], "exists");
    let n1: u64 = hits[1].headers["x-goog-message-number"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n1 > 1);
    api.emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: meeting("newer", "2026-03-11T09:00:00Z", "2026-03-11T10:00:00Z"),
        })
        .await
        .unwrap();
    let hits = hook.wait_for(3).await;
    let n2: u64 = hits[2].headers["x-goog-message-number"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n2 > n1);

    let (status, _) = json_of(
        api.post(
            "/calendar/v3/channels/stop",
            &json!({"id": "01234567-89ab-cdef-0123456789ab", "resourceId": resource_id}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    api.emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: meeting("unseen", "2026-03-12T09:00:00Z", "2026-03-12T10:00:00Z"),
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(hook.hits().len(), 3, "no message after channels.stop");
    let (status, _) = json_of(
        api.post(
            "/calendar/v3/channels/stop",
            &json!({"id": "nope", "resourceId": "x"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn free_busy_merges_busy_periods_and_skips_transparent() {
    let api = google().await;
    api.post(
        EVENTS,
        &meeting("a", "2026-03-10T09:00:00Z", "2026-03-10T10:00:00Z"),
    )
    .send()
    .await
    .unwrap();
    api.post(
        EVENTS,
        &meeting("b", "2026-03-10T09:30:00Z", "2026-03-10T11:00:00Z"),
    )
    .send()
    .await
    .unwrap();
    let mut free = meeting("c", "2026-03-10T13:00:00Z", "2026-03-10T14:00:00Z");
    free["transparency"] = json!("transparent");
    api.post(EVENTS, &free).send().await.unwrap();
    let request = json!({"timeMin": "2026-03-10T00:00:00Z", "timeMax": "2026-03-11T00:00:00Z", "items": [{"id": "primary"}, {"id": "ghost@example.com"}]});
    let (status, body) = json_of(
        api.post("/calendar/v3/freeBusy", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "calendar#freeBusy");
    assert_eq!(
        body["calendars"]["primary"]["busy"],
        json!([{"start": "2026-03-10T09:00:00Z", "end": "2026-03-10T11:00:00Z"}])
    );
    assert_eq!(
        body["calendars"]["ghost@example.com"]["errors"][0]["reason"],
        "notFound"
    );
}

#[tokio::test]
async fn answering_an_invitation_sets_the_self_attendee() {
    let api = google().await;
    let made = api
        .emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event: meeting("invite", "2026-03-10T09:00:00Z", "2026-03-10T10:00:00Z"),
        })
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    api.emu
        .act(Action::Invite {
            user: None,
            calendar: None,
            event_id: id.clone(),
            organizer: "meganb@contoso.example".into(),
        })
        .await
        .unwrap();
    api.emu
        .act(Action::Respond {
            user: None,
            calendar: None,
            event_id: id.clone(),
            response: "declined".into(),
        })
        .await
        .unwrap();
    let (_, ev) = json_of(api.get(&format!("{EVENTS}/{id}")).send().await.unwrap()).await;
    assert_eq!(ev["organizer"]["email"], "meganb@contoso.example");
    let me = ev["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["self"] == true)
        .unwrap();
    assert_eq!(me["responseStatus"], "declined");
}
