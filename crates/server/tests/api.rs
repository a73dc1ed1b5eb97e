//! The API end to end: the real server on port 0, a fresh database per test, each scenario on SQLite and
//! on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use calbridge_server::keys::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::TestServer;

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn assert_problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "{:?}", response.url());
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body = json_of(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["detail"].as_str().unwrap().len() > 10,
        "detail should say what to do: {body}"
    );
    body
}

async fn create_calendar(server: &TestServer, key: &str, name: &str) -> Value {
    let response = server
        .post_json(
            key,
            "/v1/calendar/calendars",
            json!({"name": name, "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response).await
}

both_backends! {
    async fn health_ready_metrics_and_openapi(server) {
        let ok = server.client.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(json_of(ready).await["status"], "ready");
        // One API call so the counters exist.
        server.get(&server.admin, "/v1/calendar/calendars").await;
        let metrics = server.client.get(server.url("/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("http_requests_total"), "{text}");
        assert!(text.contains("route=\"/v1/calendar/calendars\""), "{text}");
        let doc = json_of(server.client.get(server.url("/v1/openapi.json")).send().await.unwrap()).await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["paths"]["/v1/calendar/calendars"]["post"].is_object());
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }

    async fn calendars_crud_with_etags(server) {
        let created = server
            .post_json(&server.admin, "/v1/calendar/calendars", json!({"name": "Team", "time_zone": "Europe/Berlin"}))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let etag = created.headers()["etag"].to_str().unwrap().to_owned();
        let body = json_of(created).await;
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", body["version"]));

        let path = format!("/v1/calendar/calendars/{id}");
        let got = server.get(&server.admin, &path).await;
        assert_eq!(got.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(json_of(got).await["name"], "Team");

        let updated = server
            .client
            .put(server.url(&path))
            .bearer_auth(&server.admin)
            .header("if-match", &etag)
            .json(&json!({"name": "Team A", "time_zone": "UTC"}))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), StatusCode::OK);
        let new_etag = updated.headers()["etag"].to_str().unwrap().to_owned();
        assert_ne!(new_etag, etag);

        let stale = server
            .client
            .put(server.url(&path))
            .bearer_auth(&server.admin)
            .header("if-match", &etag)
            .json(&json!({"name": "lost update"}))
            .send()
            .await
            .unwrap();
        assert_problem(stale, StatusCode::PRECONDITION_FAILED, "etag_mismatch").await;
        assert_eq!(json_of(server.get(&server.admin, &path).await).await["name"], "Team A");

        let list = json_of(server.get(&server.admin, "/v1/calendar/calendars").await).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        let deleted = server.client.delete(server.url(&path)).bearer_auth(&server.admin).send().await.unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        assert_problem(server.get(&server.admin, &path).await, StatusCode::NOT_FOUND, "not_found").await;

        let audit = json_of(server.get(&server.admin, "/v1/calendar/audit").await).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["calendar.deleted", "calendar.updated", "calendar.created"]);
        assert!(audit["items"][0]["actor"].as_str().unwrap().starts_with("key:"));
    }

    async fn keys_are_shown_once_stored_hashed_and_revocable(server) {
        let made = server
            .post_json(&server.admin, "/v1/calendar/keys", json!({"name": "reader", "scopes": ["events:read"]}))
            .await;
        assert_eq!(made.status(), StatusCode::CREATED);
        let made = json_of(made).await;
        let token = made["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("cbk_"));
        assert_eq!(made["scopes"], json!(["events:read"]));

        let list = json_of(server.get(&server.admin, "/v1/calendar/keys").await).await;
        let text = list.to_string();
        assert!(!text.contains(&token[21..]), "a listing must not show secrets");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);

        assert_eq!(server.get(&token, "/v1/calendar/calendars").await.status(), StatusCode::OK);
        assert_problem(
            server.post_json(&token, "/v1/calendar/calendars", json!({"name": "x"})).await,
            StatusCode::FORBIDDEN,
            "missing_scope",
        )
        .await;

        let id = made["id"].as_str().unwrap();
        let revoked = server
            .client
            .delete(server.url(&format!("/v1/calendar/keys/{id}")))
            .bearer_auth(&server.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), StatusCode::OK);
        assert!(json_of(revoked).await["revoked_at"].is_string());
        assert_problem(server.get(&token, "/v1/calendar/calendars").await, StatusCode::UNAUTHORIZED, "unauthenticated").await;

        let bad_scope = server
            .post_json(&server.admin, "/v1/calendar/keys", json!({"name": "x", "scopes": ["events:delete"]}))
            .await;
        let problem = assert_problem(bad_scope, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        assert!(problem["detail"].as_str().unwrap().contains("events:delete"));
    }

    async fn bad_input_is_refused_clearly_and_changes_nothing(server) {
        let calendar = create_calendar(&server, &server.admin, "Keep").await;
        let before = json_of(server.get(&server.admin, "/v1/calendar/calendars").await).await;
        let audit_before = json_of(server.get(&server.admin, "/v1/calendar/audit").await).await;

        let raw = |body: &'static str| {
            server
                .client
                .post(server.url("/v1/calendar/calendars"))
                .bearer_auth(&server.admin)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        assert_problem(raw("{not json").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_json").await;
        assert_problem(raw("{\"name\": 5}").await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        assert_problem(raw("{\"name\": \"x\", \"surprise\": 1}").await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        let zone = server
            .post_json(&server.admin, "/v1/calendar/calendars", json!({"name": "x", "time_zone": "Mars/Olympus"}))
            .await;
        let problem = assert_problem(zone, StatusCode::UNPROCESSABLE_ENTITY, "unknown_time_zone").await;
        assert!(problem["detail"].as_str().unwrap().contains("Mars/Olympus"));
        let no_type = server
            .client
            .post(server.url("/v1/calendar/calendars"))
            .bearer_auth(&server.admin)
            .body("{\"name\": \"x\"}")
            .send()
            .await
            .unwrap();
        assert_problem(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

        // Over the body limit (256 KiB in tests), with and without a Content-Length.
        let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(400 * 1024));
        let big = server
            .client
            .post(server.url("/v1/calendar/calendars"))
            .bearer_auth(&server.admin)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap();
        let problem = assert_problem(big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        assert!(problem["detail"].as_str().unwrap().contains("262144"));
        let stream = futures::stream::iter(huge.into_bytes().chunks(8192).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
        let chunked = server
            .client
            .post(server.url("/v1/calendar/calendars"))
            .bearer_auth(&server.admin)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        // The server answers 413 as soon as the limit is crossed and may close the connection while the
        // client is still streaming; the client then sees either the 413 or the closed connection.
        match chunked {
            Ok(response) => {
                assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
            }
            Err(e) => assert!(e.is_request() || e.is_body(), "refused mid-stream: {e}"),
        }

        let stale_match = server
            .client
            .put(server.url(&format!("/v1/calendar/calendars/{}", calendar["id"].as_str().unwrap())))
            .bearer_auth(&server.admin)
            .header("if-match", "garbage")
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_problem(stale_match, StatusCode::BAD_REQUEST, "invalid_if_match").await;
        assert_problem(server.get(&server.admin, "/v1/calendar/calendars/not-an-id").await, StatusCode::NOT_FOUND, "not_found").await;
        assert_problem(server.get(&server.admin, "/v1/nothing-here").await, StatusCode::NOT_FOUND, "not_found").await;
        let wrong_method = server.client.patch(server.url("/v1/calendar/calendars")).bearer_auth(&server.admin).send().await.unwrap();
        assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        assert_problem(server.get(&server.admin, "/v1/calendar/audit?limit=0").await, StatusCode::BAD_REQUEST, "invalid_limit").await;
        assert_problem(server.get(&server.admin, "/v1/calendar/audit?cursor=abc").await, StatusCode::BAD_REQUEST, "invalid_cursor").await;

        // Still up, and nothing stored changed.
        assert_eq!(json_of(server.get(&server.admin, "/v1/calendar/calendars").await).await, before);
        assert_eq!(json_of(server.get(&server.admin, "/v1/calendar/audit").await).await, audit_before);
    }

    async fn requests_carry_ids_and_answers_are_compressed(server) {
        let response = server.get(&server.admin, "/v1/calendar/calendars").await;
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "a fresh uuid: {id}");
        let given = server
            .client
            .get(server.url("/healthz"))
            .header("x-request-id", "trace-me-123")
            .send()
            .await
            .unwrap();
        assert_eq!(given.headers()["x-request-id"], "trace-me-123");

        for _ in 0..30 {
            create_calendar(&server, &server.admin, "a calendar with a name long enough to compress well").await;
        }
        let raw_client = reqwest::Client::builder().no_gzip().no_brotli().build().unwrap();
        for encoding in ["gzip", "br"] {
            let compressed = raw_client
                .get(server.url("/v1/calendar/calendars"))
                .bearer_auth(&server.admin)
                .header("accept-encoding", encoding)
                .send()
                .await
                .unwrap();
            assert_eq!(compressed.status(), StatusCode::OK);
            assert_eq!(compressed.headers()["content-encoding"], encoding);
        }
    }
}

/// Every API endpoint × (no key, bad key, revoked key, missing scope, wrong tenant). The table must list
/// every operation of the OpenAPI document, so a new endpoint cannot be left out.
mod matrix {
    use super::*;

    struct Route {
        method: &'static str,
        path: &'static str,
        scope: Scope,
        /// Query string; `{cal}` stands for tenant A's calendar.
        query: &'static str,
        /// Body; the text `{cal}` stands for tenant A's calendar.
        body: Option<Value>,
    }

    fn table() -> Vec<Route> {
        let r = |method, path, scope, query, body: Option<Value>| Route {
            method,
            path,
            scope,
            query,
            body,
        };
        vec![
            r("get", "/v1/calendar/calendars", Scope::EventsRead, "", None),
            r(
                "post",
                "/v1/calendar/calendars",
                Scope::EventsWrite,
                "",
                Some(json!({"name": "m"})),
            ),
            r(
                "get",
                "/v1/calendar/calendars/{id}",
                Scope::EventsRead,
                "",
                None,
            ),
            r(
                "put",
                "/v1/calendar/calendars/{id}",
                Scope::EventsWrite,
                "",
                Some(json!({"name": "m"})),
            ),
            r(
                "delete",
                "/v1/calendar/calendars/{id}",
                Scope::EventsWrite,
                "",
                None,
            ),
            r(
                "get",
                "/v1/calendar/events",
                Scope::EventsRead,
                "start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z&calendar_id={cal}",
                None,
            ),
            r(
                "post",
                "/v1/calendar/events",
                Scope::EventsWrite,
                "",
                Some(json!({"calendar_id": "{cal}", "start": "2026-01-05T10:00:00Z"})),
            ),
            r(
                "get",
                "/v1/calendar/events/{id}",
                Scope::EventsRead,
                "",
                None,
            ),
            r(
                "put",
                "/v1/calendar/events/{id}",
                Scope::EventsWrite,
                "",
                Some(json!({"summary": "m", "start": "2026-01-05T10:00:00Z"})),
            ),
            r(
                "delete",
                "/v1/calendar/events/{id}",
                Scope::EventsWrite,
                "",
                None,
            ),
            r("get", "/v1/calendar/keys", Scope::Admin, "", None),
            r(
                "post",
                "/v1/calendar/keys",
                Scope::Admin,
                "",
                Some(json!({"name": "m", "scopes": ["events:read"]})),
            ),
            r("delete", "/v1/calendar/keys/{id}", Scope::Admin, "", None),
            r("get", "/v1/calendar/audit", Scope::Admin, "", None),
            r(
                "get",
                "/v1/calendar/stream",
                Scope::EventsRead,
                "calendar_id={cal}",
                None,
            ),
            r(
                "get",
                "/v1/calendar/connections",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "post",
                "/v1/calendar/connections",
                Scope::ConnectionsManage,
                "",
                // Loopback is refused by default: the connection is kept with status `error`.
                Some(
                    json!({"provider": "ics", "name": "m", "credentials": {"url": "http://127.0.0.1:9/f.ics"}}),
                ),
            ),
            r(
                "get",
                "/v1/calendar/connections/{id}",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "patch",
                "/v1/calendar/connections/{id}",
                Scope::ConnectionsManage,
                "",
                Some(json!({"name": "m"})),
            ),
            r(
                "delete",
                "/v1/calendar/connections/{id}",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "post",
                "/v1/calendar/connections/{id}/test",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "get",
                "/v1/calendar/oauth/{provider}/authorize",
                Scope::ConnectionsManage,
                "connection_id={conn}",
                None,
            ),
            r(
                "post",
                "/v1/calendar/sync",
                Scope::ConnectionsManage,
                "",
                Some(json!({"full": false})),
            ),
            r("get", "/v1/calendar/sync/runs", Scope::EventsRead, "", None),
            r(
                "get",
                "/v1/calendar/sync/runs/{id}",
                Scope::EventsRead,
                "",
                None,
            ),
            r("get", "/v1/calendar/conflicts", Scope::EventsRead, "", None),
            r(
                "get",
                "/v1/calendar/conflicts/{id}",
                Scope::EventsRead,
                "",
                None,
            ),
            r(
                "post",
                "/v1/calendar/conflicts/{id}/resolve",
                Scope::ConflictsResolve,
                "",
                Some(json!({"option": "keep_local"})),
            ),
            r(
                "get",
                "/v1/calendar/webhooks",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "post",
                "/v1/calendar/webhooks",
                Scope::ConnectionsManage,
                "",
                // A public address literal (no DNS), for a message type nothing here produces.
                Some(json!({"url": "https://93.184.215.14/hook", "events": ["conflict.resolved"]})),
            ),
            r(
                "get",
                "/v1/calendar/webhooks/{id}",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "patch",
                "/v1/calendar/webhooks/{id}",
                Scope::ConnectionsManage,
                "",
                Some(json!({"enabled": true})),
            ),
            r(
                "delete",
                "/v1/calendar/webhooks/{id}",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "post",
                "/v1/calendar/webhooks/{id}/rotate-secret",
                Scope::ConnectionsManage,
                "",
                None,
            ),
            r(
                "get",
                "/v1/calendar/webhooks/{id}/deliveries",
                Scope::ConnectionsManage,
                "",
                None,
            ),
        ]
    }

    async fn run(server: TestServer) {
        let doc = json_of(
            server
                .client
                .get(server.url("/v1/openapi.json"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                // Provider notifications carry no API key: they are trusted by channel secret
                // (tests/realtime.rs), so they are outside this key/scope/tenant matrix.
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str())
                    && !path.starts_with("/v1/calendar/notifications/")
                    // The OAuth callback is the person's browser: trusted by its one-time state
                    // (tests/oauth.rs).
                    && !path.ends_with("/callback")
                {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut listed: Vec<(String, String)> = table()
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        listed.sort();
        assert_eq!(
            listed, documented,
            "the matrix table must list exactly the documented operations"
        );

        // Tenant A's resources, which tenant B must not reach.
        let calendar = create_calendar(&server, &server.admin, "A's").await;
        let a_key = json_of(
            server
                .post_json(
                    &server.admin,
                    "/v1/calendar/keys",
                    json!({"name": "victim", "scopes": ["events:read"]}),
                )
                .await,
        )
        .await;
        let event = json_of(
            server
                .post_json(&server.admin, "/v1/calendar/events", json!({"calendar_id": calendar["id"], "summary": "A's secret", "start": "2026-01-10T10:00:00Z"}))
                .await,
        )
        .await;
        let a_connection = json_of(
            server
                .post_json(&server.admin, "/v1/calendar/connections", json!({"provider": "ics", "name": "A's feed", "credentials": {"url": "http://127.0.0.1:9/a.ics"}}))
                .await,
        )
        .await;
        let a_run = json_of(
            server
                .post_json(
                    &server.admin,
                    "/v1/calendar/sync",
                    json!({"connection_id": a_connection["id"]}),
                )
                .await,
        )
        .await;
        let a_webhook = json_of(
            server
                .post_json(
                    &server.admin,
                    "/v1/calendar/webhooks",
                    json!({"url": "https://93.184.215.14/a", "events": ["conflict.resolved"]}),
                )
                .await,
        )
        .await;
        let cal_id = calendar["id"].as_str().unwrap().to_owned();
        let id_for = |path: &str| -> String {
            if path.starts_with("/v1/calendar/calendars/") {
                calendar["id"].as_str().unwrap().to_owned()
            } else if path.starts_with("/v1/calendar/events/") {
                event["id"].as_str().unwrap().to_owned()
            } else if path.starts_with("/v1/calendar/keys/") {
                a_key["id"].as_str().unwrap().to_owned()
            } else if path.starts_with("/v1/calendar/connections/") {
                a_connection["id"].as_str().unwrap().to_owned()
            } else if path.starts_with("/v1/calendar/webhooks/") {
                a_webhook["id"].as_str().unwrap().to_owned()
            } else if path.starts_with("/v1/calendar/sync/runs/") {
                a_run["run_id"].as_str().unwrap().to_owned()
            } else if path.contains("{id}") {
                // No conflict exists to name; another tenant's view must still be 404.
                "00000000-0000-4000-8000-000000000000".to_owned()
            } else {
                String::new()
            }
        };
        let other_tenant = server.key(Some("tenant-b"), &Scope::ALL).await;
        let revoked = server.key(None, &Scope::ALL).await;
        let revoked_prefix = &revoked[4..20];
        let keys = json_of(server.get(&server.admin, "/v1/calendar/keys").await).await;
        let revoked_id = keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["prefix"] == revoked_prefix)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let gone = server
            .client
            .delete(server.url(&format!("/v1/calendar/keys/{revoked_id}")))
            .bearer_auth(&server.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), StatusCode::OK);

        let send = |route: &Route, key: Option<&str>| {
            let mut path = route
                .path
                .replace("{id}", &id_for(route.path))
                .replace("{provider}", "microsoft");
            if !route.query.is_empty() {
                let query = route
                    .query
                    .replace("{cal}", &cal_id)
                    .replace("{conn}", a_connection["id"].as_str().unwrap());
                path = format!("{path}?{query}");
            }
            let method =
                reqwest::Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
            let mut request = server.client.request(method, server.url(&path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = &route.body {
                let body: Value =
                    serde_json::from_str(&body.to_string().replace("{cal}", &cal_id)).unwrap();
                request = request.json(&body);
            }
            request.send()
        };

        for route in table() {
            let label = format!("{} {}", route.method, route.path);
            let response = send(&route, None).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "no key: {label}"
            );
            for bad in [
                "cbk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "nonsense",
                &revoked,
            ] {
                let response = send(&route, Some(bad)).await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "bad key {bad}: {label}"
                );
            }
            let without: Vec<Scope> = Scope::ALL
                .into_iter()
                .filter(|s| *s != route.scope)
                .collect();
            let lacking = server.key(None, &without).await;
            let response = send(&route, Some(&lacking)).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "missing {}: {label}",
                route.scope
            );

            let response = send(&route, Some(&other_tenant)).await.unwrap();
            let names_a = route.path.contains("{id}")
                || route.query.contains("{cal}")
                || route.query.contains("{conn}")
                || route
                    .body
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("{cal}"));
            if names_a {
                assert_eq!(
                    response.status(),
                    StatusCode::NOT_FOUND,
                    "wrong tenant: {label}"
                );
            } else {
                assert!(
                    response.status().is_success(),
                    "tenant B may use its own collection: {label}"
                );
                let text = response.text().await.unwrap();
                assert!(
                    !text.contains(calendar["id"].as_str().unwrap()),
                    "B sees A's calendar: {label}"
                );
                assert!(
                    !text.contains(a_key["id"].as_str().unwrap()),
                    "B sees A's key: {label}"
                );
                assert!(!text.contains("A's secret"), "B sees A's event: {label}");
                assert!(
                    !text.contains(a_webhook["id"].as_str().unwrap()),
                    "B sees A's webhook: {label}"
                );
            }
        }
        // Tenant A's calendar, event, webhook and key survived all of that.
        let hook_path = format!(
            "/v1/calendar/webhooks/{}",
            a_webhook["id"].as_str().unwrap()
        );
        assert_eq!(
            server.get(&server.admin, &hook_path).await.status(),
            StatusCode::OK
        );
        let event_path = format!("/v1/calendar/events/{}", event["id"].as_str().unwrap());
        assert_eq!(
            json_of(server.get(&server.admin, &event_path).await).await["summary"],
            "A's secret"
        );
        let path = format!(
            "/v1/calendar/calendars/{}",
            calendar["id"].as_str().unwrap()
        );
        assert_eq!(
            server.get(&server.admin, &path).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            server
                .get(a_key["token"].as_str().unwrap(), "/v1/calendar/calendars")
                .await
                .status(),
            StatusCode::OK
        );
    }

    both_backends! {
        async fn every_endpoint_refuses_strangers(server) {
            run(server).await;
        }
    }
}
