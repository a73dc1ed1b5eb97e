//! Microsoft (Graph) and Google connections end to end: the real server on port 0 (SQLite and
//! PostgreSQL) against the project's Graph and Google emulators, tokens obtained through the
//! emulators' real OAuth code + PKCE flow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use calbridge_emulators::{Action, Emulator, EmulatorConfig, Flavor};
use calbridge_providers::ProviderError;
use calbridge_providers::http::{
    AddressPolicy, Budget, BudgetConfig, Credentials, Endpoint, HttpClient, HttpConfig, Secret,
};
use calbridge_providers::oauth::{Access, OAuthConfig};
use calbridge_server::bootstrap;
use calbridge_server::syncing::{self, StoredCredentials};
use calbridge_store::ConnectionId;
use common::{Backend, TestServer, json_of, lan_config, sync_and_wait};
use jiff::{Timestamp, ToSpan};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;
use url::Url;

const CLIENT_ID: &str = "calbridge-test-client";

fn day(days: i64) -> jiff::civil::Date {
    Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(days.days())
        .unwrap()
}

fn provider_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Microsoft => "microsoft",
        Flavor::Google => "google",
    }
}

/// A fresh emulator of `flavor`, and a server whose operator configured it as the provider (and
/// allows loopback); `public`: `server.public_url` is set to where the server really listens, so
/// OAuth redirects reach it.
async fn emulator_and_server(
    backend: Backend,
    flavor: Flavor,
    public: bool,
) -> Option<(Emulator, TestServer)> {
    let emu = Emulator::start(flavor, EmulatorConfig::default())
        .await
        .unwrap();
    let mut config = emulator_config(&emu);
    if public {
        config.server.public_url = Some(common::SELF_URL.into());
    }
    let server = TestServer::start_with(backend, config).await?;
    Some((emu, server))
}

fn emulator_config(emu: &Emulator) -> calbridge_server::Config {
    let mut config = lan_config();
    let settings = match emu.flavor() {
        Flavor::Microsoft => &mut config.providers.microsoft,
        Flavor::Google => &mut config.providers.google,
    };
    settings.client_id = Some(CLIENT_ID.into());
    settings.authority_url = Some(emu.base_url().to_owned());
    settings.graph_url = Some(match emu.flavor() {
        Flavor::Microsoft => format!("{}/v1.0", emu.base_url()),
        Flavor::Google => format!("{}/calendar/v3", emu.base_url()),
    });
    config
}

fn token_endpoint() -> Endpoint {
    let http = HttpClient::new(HttpConfig {
        address_policy: AddressPolicy::with_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    http.endpoint(
        "oauth",
        Credentials::None,
        Budget::new(BudgetConfig::default()),
    )
}

/// The OAuth client an application would use with the emulator (same client id as the server's).
fn app_oauth(emu: &Emulator) -> OAuthConfig {
    let base = Url::parse(emu.base_url()).unwrap();
    let redirect = Url::parse("https://app.example.org/oauth/callback").unwrap();
    match emu.flavor() {
        Flavor::Microsoft => OAuthConfig::microsoft(
            &base,
            "common",
            CLIENT_ID,
            None,
            redirect,
            Access::ReadWrite,
        )
        .unwrap(),
        Flavor::Google => {
            OAuthConfig::google(&base, &base, CLIENT_ID, None, redirect, Access::ReadWrite).unwrap()
        }
    }
}

/// Consents in the emulator like a browser would, and exchanges the code: a refresh token.
async fn refresh_token_from(emu: &Emulator) -> String {
    let oauth = app_oauth(emu);
    let request = oauth.authorization_request(None);
    let location = consent(request.url.as_str()).await;
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens = oauth
        .exchange_code(&token_endpoint(), &code, &request.pkce_verifier)
        .await
        .unwrap();
    tokens.refresh_token.unwrap().expose().to_owned()
}

async fn stored_credentials(server: &TestServer, id: &str) -> StoredCredentials {
    let master = bootstrap::master_key(&server.config).unwrap();
    let tenant = server.store.list_tenants().await.unwrap()[0].id;
    let id: ConnectionId = id.parse().unwrap();
    let connection = server.store.get_connection(tenant, id).await.unwrap();
    syncing::open(&master.key, &connection).unwrap()
}

/// Occurrence summaries in the local calendar over the next weeks, sorted.
async fn local_summaries(server: &TestServer, calendar: &str) -> Vec<String> {
    let path = format!(
        "/v1/calendar/events?start={}T00:00:00Z&end={}T00:00:00Z&calendar_id={calendar}",
        day(-1),
        day(60)
    );
    let page = server.admin_get(&path).await;
    let mut out: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default().to_owned())
        .collect();
    out.sort();
    out
}

/// What the person sees in the provider's own app: summaries of the events (masters, singles).
async fn remote_summaries(emu: &Emulator) -> Vec<String> {
    let url = match emu.flavor() {
        Flavor::Microsoft => format!("{}/v1.0/me/events", emu.base_url()),
        Flavor::Google => format!("{}/calendar/v3/calendars/primary/events", emu.base_url()),
    };
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(emu.token(None).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = body.get("value").or_else(|| body.get("items")).unwrap();
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        // Google lists a series' modified instances beside their master: count series once.
        .filter(|e| e["status"] != "cancelled" && e.get("recurringEventId").is_none())
        .map(|e| {
            e.get("subject")
                .or_else(|| e.get("summary"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

fn single(flavor: Flavor, summary: &str, days: i64) -> Value {
    let d = day(days);
    match flavor {
        Flavor::Microsoft => json!({
            "subject": summary,
            "start": {"dateTime": format!("{d}T09:00:00"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{d}T10:00:00"), "timeZone": "UTC"},
        }),
        Flavor::Google => json!({
            "summary": summary,
            "start": {"dateTime": format!("{d}T09:00:00Z")},
            "end": {"dateTime": format!("{d}T10:00:00Z")},
        }),
    }
}

fn weekly(flavor: Flavor, summary: &str, days: i64) -> Value {
    let d = day(days);
    match flavor {
        Flavor::Microsoft => json!({
            "subject": summary,
            "start": {"dateTime": format!("{d}T15:00:00"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{d}T16:00:00"), "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1,
                            "daysOfWeek": [format!("{:?}", d.weekday()).to_lowercase()]},
                "range": {"type": "numbered", "startDate": d.to_string(), "numberOfOccurrences": 3},
            },
        }),
        Flavor::Google => json!({
            "summary": summary,
            "start": {"dateTime": format!("{d}T15:00:00Z"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{d}T16:00:00Z"), "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"],
        }),
    }
}

fn rename(flavor: Flavor, summary: &str) -> Value {
    match flavor {
        Flavor::Microsoft => json!({"subject": summary}),
        Flavor::Google => json!({"summary": summary}),
    }
}

async fn create_remote(emu: &Emulator, event: Value) -> String {
    let created = emu
        .act(Action::Create {
            user: None,
            calendar: None,
            event,
        })
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_owned()
}

async fn instance_ids(emu: &Emulator, series: &str) -> Vec<String> {
    let url = match emu.flavor() {
        Flavor::Microsoft => format!(
            "{}/v1.0/me/events/{series}/instances?startDateTime={}T00:00:00Z&endDateTime={}T00:00:00Z",
            emu.base_url(),
            day(-1),
            day(60)
        ),
        Flavor::Google => format!(
            "{}/calendar/v3/calendars/primary/events/{series}/instances",
            emu.base_url()
        ),
    };
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(emu.token(None).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = body.get("value").or_else(|| body.get("items")).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The whole life of a Microsoft or Google connection through the API: created from a refresh token
/// (refreshed and rotated at once, the rotation persisted sealed), initial import with a recurring
/// series and its exception, a local edit pushed, a remote edit pulled, a remote deletion, a 401
/// answered by a refresh whose rotation is persisted again, then a revoked grant: `needs_reauth`,
/// events kept, later syncs stop with a clear error.
async fn connection_story(backend: Backend, flavor: Flavor) {
    let Some((emu, server)) = emulator_and_server(backend, flavor, false).await else {
        return;
    };
    let name = provider_name(flavor);
    let gone = create_remote(&emu, single(flavor, "Dentist", 2)).await;
    let series = create_remote(&emu, weekly(flavor, "Weekly review", 4)).await;
    let instances = instance_ids(&emu, &series).await;
    assert_eq!(instances.len(), 3, "{instances:?}");
    emu.act(Action::Edit {
        user: None,
        calendar: None,
        event_id: instances[1].clone(),
        changes: rename(flavor, "Weekly review (special)"),
    })
    .await
    .unwrap();

    // Read-only connections only import; asking for more is refused before anything is stored.
    let refused = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": name, "name": "RO", "access": "read_only",
                   "credentials": {"refresh_token": "x"}, "sync": {"direction": "bidirectional"}}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(refused).await["code"], "read_only_direction");

    let given = refresh_token_from(&emu).await;
    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": name, "name": "Cloud", "credentials": {"refresh_token": given}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let connection = json_of(created).await;
    assert_eq!(connection["status"], "active", "{connection}");
    assert_eq!(
        connection["links"].as_array().unwrap().len(),
        1,
        "{connection}"
    );
    assert!(!connection.to_string().contains(&given));
    let id = connection["id"].as_str().unwrap().to_owned();
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();

    // Listing the calendars needed an access token: the refresh rotated the refresh token, and the
    // new one is what the connection holds now (the old one no longer works).
    let stored = stored_credentials(&server, &id).await.oauth.unwrap();
    let first_rotation = stored.refresh_token.clone().unwrap();
    assert_ne!(first_rotation, given);
    assert!(stored.access_token.is_some() && stored.expires_at.is_some());
    let old = app_oauth(&emu)
        .refresh(&token_endpoint(), &Secret::new(given.clone()))
        .await;
    assert!(
        matches!(old, Err(ProviderError::NeedsReauthorization { .. })),
        "{old:?}"
    );

    let diagnosis = server
        .admin_post(&format!("/v1/calendar/connections/{id}/test"), json!({}))
        .await;
    assert_eq!(diagnosis["kind"], "ok", "{diagnosis}");

    // --- initial import: the single, and the series with its renamed occurrence ---
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        local_summaries(&server, &calendar).await,
        [
            "Dentist",
            "Weekly review",
            "Weekly review",
            "Weekly review (special)"
        ]
    );

    // --- a local event is pushed ---
    let local = server
        .post_json(
            &server.admin,
            "/v1/calendar/events",
            json!({"calendar_id": calendar, "summary": "Team lunch",
                   "start": format!("{}T12:00:00Z", day(3)), "end": format!("{}T13:00:00Z", day(3))}),
        )
        .await;
    assert_eq!(local.status(), StatusCode::CREATED);
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        remote_summaries(&emu).await,
        ["Dentist", "Team lunch", "Weekly review"]
    );

    // --- a remote edit is pulled, a remote deletion removes the local event ---
    emu.act(Action::Edit {
        user: None,
        calendar: None,
        event_id: series.clone(),
        changes: rename(flavor, "Weekly sync"),
    })
    .await
    .unwrap();
    emu.act(Action::Delete {
        user: None,
        calendar: None,
        event_id: gone,
    })
    .await
    .unwrap();
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        local_summaries(&server, &calendar).await,
        [
            "Team lunch",
            "Weekly review (special)",
            "Weekly sync",
            "Weekly sync"
        ]
    );

    // --- the provider refuses the access token early: refreshed once, rotation persisted ---
    emu.expire_tokens();
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let second_rotation = stored_credentials(&server, &id)
        .await
        .oauth
        .unwrap()
        .refresh_token
        .unwrap();
    assert_ne!(second_rotation, first_rotation);

    // --- the person revokes the grant: needs_reauth, events kept, syncs stop with a clear error ---
    emu.revoke_grants();
    emu.expire_tokens();
    let run = sync_and_wait(&server, &id).await;
    assert_ne!(run["status"], "succeeded", "{run}");
    let shown = server
        .admin_get(&format!("/v1/calendar/connections/{id}"))
        .await;
    assert_eq!(shown["status"], "needs_reauth", "{shown}");
    let reason = shown["status_reason"].as_str().unwrap();
    assert!(reason.contains("sign in again"), "{reason}");
    assert!(
        reason.contains(&format!(
            "/v1/calendar/oauth/{name}/authorize?connection_id={id}"
        )),
        "{reason}"
    );
    assert_eq!(
        local_summaries(&server, &calendar).await,
        [
            "Team lunch",
            "Weekly review (special)",
            "Weekly sync",
            "Weekly sync"
        ],
        "nothing deleted"
    );
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let errors = run["errors"].as_array().unwrap();
    assert_eq!(errors[0]["class"], "needs_reauth", "{run}");
    assert!(
        errors[0]["cause"].as_str().unwrap().contains("authorize"),
        "{run}"
    );
    let diagnosis = server
        .admin_post(&format!("/v1/calendar/connections/{id}/test"), json!({}))
        .await;
    assert_eq!(diagnosis["kind"], "invalid_credentials", "{diagnosis}");
    let audit = server.admin_get("/v1/calendar/audit").await;
    assert!(
        audit.to_string().contains("connection.needs_reauth"),
        "{audit}"
    );
}

/// A read-only grant imports and never writes to the provider.
async fn read_only_story(backend: Backend, flavor: Flavor) {
    let Some((emu, server)) = emulator_and_server(backend, flavor, false).await else {
        return;
    };
    create_remote(&emu, single(flavor, "Board meeting", 2)).await;
    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": provider_name(flavor), "name": "RO", "access": "read_only",
                   "credentials": {"refresh_token": refresh_token_from(&emu).await}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let connection = json_of(created).await;
    assert_eq!(connection["sync"]["direction"], "import", "{connection}");
    let id = connection["id"].as_str().unwrap().to_owned();
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();
    let local = server
        .post_json(
            &server.admin,
            "/v1/calendar/events",
            json!({"calendar_id": calendar, "summary": "Private note",
                   "start": format!("{}T12:00:00Z", day(3)), "end": format!("{}T13:00:00Z", day(3))}),
        )
        .await;
    assert_eq!(local.status(), StatusCode::CREATED);
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        local_summaries(&server, &calendar).await,
        ["Board meeting", "Private note"]
    );
    assert_eq!(remote_summaries(&emu).await, ["Board meeting"]);
}

/// Follows a provider authorize URL like a browser whose person consents; returns the callback URL
/// the provider redirects to (on this server).
async fn consent(authorize_url: &str) -> Url {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = browser.get(authorize_url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap()
}

async fn get_anonymous(url: &Url) -> reqwest::Response {
    reqwest::Client::new()
        .get(url.clone())
        .send()
        .await
        .unwrap()
}

/// The sign-in as a person goes through it: create → authorize_url → consent at the provider → the
/// callback on this server → active, calendars linked, events imported. Then the defences: a forged
/// state, a replayed callback, an expired state, a declined consent, and `authorize` for re-consent.
async fn oauth_flow_story(backend: Backend, flavor: Flavor) {
    let Some((emu, server)) = emulator_and_server(backend, flavor, true).await else {
        return;
    };
    let name = provider_name(flavor);
    create_remote(&emu, single(flavor, "Kick-off", 2)).await;

    let created = server
        .post_json(
            &server.admin,
            "/v1/calendar/connections",
            json!({"provider": name, "name": "Cloud"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let connection = json_of(created).await;
    assert_eq!(connection["status"], "needs_auth", "{connection}");
    assert!(connection["links"].as_array().unwrap().is_empty());
    let id = connection["id"].as_str().unwrap().to_owned();
    let calendar = connection["calendar_id"].as_str().unwrap().to_owned();
    let authorize_url = Url::parse(connection["authorize_url"].as_str().unwrap()).unwrap();
    assert!(
        authorize_url.as_str().starts_with(emu.base_url()),
        "{authorize_url}"
    );
    let pairs: std::collections::HashMap<_, _> = authorize_url.query_pairs().into_owned().collect();
    assert_eq!(pairs["code_challenge_method"], "S256");
    assert!(pairs["state"].len() >= 43);
    assert_eq!(
        pairs["redirect_uri"],
        server.url(&format!("/v1/calendar/oauth/{name}/callback"))
    );
    // Syncing before consent: a clear error, nothing else.
    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["errors"][0]["class"], "needs_auth", "{run}");

    // A forged state changes nothing.
    let callback_base =
        Url::parse(&server.url(&format!("/v1/calendar/oauth/{name}/callback"))).unwrap();
    let mut forged = callback_base.clone();
    forged.set_query(Some("code=abc&state=forged-state-value"));
    let answer = get_anonymous(&forged).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(answer).await["code"], "invalid_oauth_state");
    let mut missing = callback_base.clone();
    missing.set_query(Some("code=abc"));
    assert_eq!(
        get_anonymous(&missing).await.status(),
        StatusCode::BAD_REQUEST
    );

    // The person consents; the provider sends the browser to the callback.
    let callback = consent(authorize_url.as_str()).await;
    assert!(
        callback.as_str().starts_with(callback_base.as_str()),
        "{callback}"
    );
    let answer = get_anonymous(&callback).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let done = json_of(answer).await;
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(done["links"].as_array().unwrap().len(), 1, "{done}");
    let stored = stored_credentials(&server, &id).await.oauth.unwrap();
    assert!(stored.refresh_token.is_some() && stored.access_token.is_some());

    // Replaying the same callback: the state was single-use.
    let replay = get_anonymous(&callback).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(replay).await["code"], "invalid_oauth_state");
    let shown = server
        .admin_get(&format!("/v1/calendar/connections/{id}"))
        .await;
    assert_eq!(shown["status"], "active");
    assert_eq!(
        shown["links"].as_array().unwrap().len(),
        1,
        "no duplicate links"
    );

    let run = sync_and_wait(&server, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(local_summaries(&server, &calendar).await, ["Kick-off"]);

    // `authorize` (API key) answers 302 to the provider, for a re-consent.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let again = no_redirect
        .get(server.url(&format!(
            "/v1/calendar/oauth/{name}/authorize?connection_id={id}"
        )))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::FOUND);
    let location = again.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(emu.base_url()), "{location}");
    let other = match flavor {
        Flavor::Microsoft => "google",
        Flavor::Google => "microsoft",
    };
    let mismatch = no_redirect
        .get(server.url(&format!(
            "/v1/calendar/oauth/{other}/authorize?connection_id={id}"
        )))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The person declines this time: still connected with the old grant? No: the state is spent and
    // the connection says why it needs a new sign-in; its links and events stay.
    let state = Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut denied = callback_base.clone();
    denied
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The user declined.")
        .append_pair("state", &state);
    let answer = get_anonymous(&denied).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(answer).await["code"], "oauth_access_denied");
    let shown = server
        .admin_get(&format!("/v1/calendar/connections/{id}"))
        .await;
    assert_eq!(shown["status"], "needs_reauth", "{shown}");
    assert!(
        shown["status_reason"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{shown}"
    );
    assert_eq!(local_summaries(&server, &calendar).await, ["Kick-off"]);

    // A new connection whose person declines at once stays needs_auth, with the reason.
    let second = server
        .admin_post(
            "/v1/calendar/connections",
            json!({"provider": name, "name": "Declined"}),
        )
        .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let state = Url::parse(second["authorize_url"].as_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut denied = callback_base.clone();
    denied
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("state", &state);
    assert_eq!(
        get_anonymous(&denied).await.status(),
        StatusCode::BAD_REQUEST
    );
    let shown = server
        .admin_get(&format!("/v1/calendar/connections/{second_id}"))
        .await;
    assert_eq!(shown["status"], "needs_auth", "{shown}");
    assert!(
        shown["status_reason"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{shown}"
    );

    // An expired state: refused with its own message, nothing changed.
    let third = server
        .admin_post(
            "/v1/calendar/connections",
            json!({"provider": name, "name": "Slow"}),
        )
        .await;
    let third_callback = consent(third["authorize_url"].as_str().unwrap()).await;
    let state = third_callback
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    // Ten minutes pass: the pending sign-in is put back with its expiry in the past.
    let hash = hex::encode(sha2::Sha256::digest(state.as_bytes()));
    let pending = server.store.take_oauth_state(&hash).await.unwrap().unwrap();
    server
        .store
        .put_oauth_state(
            pending.tenant_id,
            calbridge_store::NewOAuthState {
                state_hash: pending.state_hash,
                connection_id: pending.connection_id,
                provider: pending.provider,
                verifier: pending.verifier,
                expires_at: Timestamp::now() - 1.minutes(),
            },
        )
        .await
        .unwrap();
    let answer = get_anonymous(&third_callback).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let problem = json_of(answer).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("expired"),
        "{problem}"
    );
    let shown = server
        .admin_get(&format!(
            "/v1/calendar/connections/{}",
            third["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(shown["status"], "needs_auth", "{shown}");
}

macro_rules! stories {
    ($($name:ident => $story:ident($flavor:expr)),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$story(super::Backend::Sqlite, $flavor).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$story(super::Backend::Postgres, $flavor).await;
                }
            )*
        }
    };
}

stories!(
    microsoft_connection_lifecycle => connection_story(calbridge_emulators::Flavor::Microsoft),
    google_connection_lifecycle => connection_story(calbridge_emulators::Flavor::Google),
    microsoft_read_only_imports_only => read_only_story(calbridge_emulators::Flavor::Microsoft),
    google_read_only_imports_only => read_only_story(calbridge_emulators::Flavor::Google),
    microsoft_oauth_sign_in => oauth_flow_story(calbridge_emulators::Flavor::Microsoft),
    google_oauth_sign_in => oauth_flow_story(calbridge_emulators::Flavor::Google),
);
