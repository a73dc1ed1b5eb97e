//! `calbridge demo`: the service plus the Microsoft Graph and Google emulators on loopback, seeded with
//! realistic calendars, connected through the real OAuth flow, synced, and with one open conflict to
//! resolve (DESIGN §2).
//!
//! The demo holds no logic of its own: it starts the same [`Service`] as `serve`, and then does what a
//! newcomer would do through the public API (create calendars and connections, consent, sync), so what
//! it prints is what works for them too. The only thing it does behind the API is act as the person in
//! Outlook (the emulator's control API) to make the remote half of the conflict.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use calbridge_emulators::{Action, Emulator, EmulatorConfig, Flavor, SeedSpec};
use calbridge_server::Config;
use calbridge_server::config::DatabaseUrl;
use serde_json::{Value, json};

use crate::serve::{Service, load_config};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the calbridge API (the emulators take free loopback ports of their own).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo keeps its database and master key; a fresh temporary directory when absent
    /// (every demo then starts from the same state).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Events seeded per emulated calendar.
    #[arg(long, default_value_t = 40)]
    pub events: usize,
    /// Set everything up, print the summary and exit instead of serving until Ctrl-C (for scripts).
    #[arg(long)]
    pub exit_after_setup: bool,
}

/// What the demo made, printed for the person and (as one JSON line) for scripts and tests.
#[derive(Debug, serde::Serialize)]
struct Summary {
    api: String,
    api_key: String,
    microsoft_emulator: String,
    google_emulator: String,
    calendars: Vec<Value>,
    connections: Vec<Value>,
    events_in_window: usize,
    open_conflict: Value,
    other_open_conflicts: usize,
}

pub fn run(config_file: Option<&PathBuf>, args: DemoArgs) -> anyhow::Result<()> {
    let mut base = load_config(config_file, Some(args.listen), None)?;
    // The demo's own output is the summary it prints; request logs would bury it. A configured level
    // (or RUST_LOG) still wins.
    if base.log.level == "info" {
        base.log.level = "warn,calbridge=info".into();
    }
    calbridge_server::telemetry::init_logging(&base.log);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo(base, args))
}

async fn demo(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    // Keep the temporary directory alive for the whole run.
    let (dir, _temporary) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::tempdir()?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };

    let microsoft = start_emulator(Flavor::Microsoft, args.events, 11).await?;
    let google = start_emulator(Flavor::Google, args.events, 12).await?;

    config.database.url = DatabaseUrl::parse(&format!(
        "sqlite://{}",
        dir.join("calbridge-demo.db").display()
    ))?;
    let key_file = dir.join("calbridge-demo.key");
    if !key_file.exists() {
        calbridge_store::crypto::MasterKey::create_file(&key_file)?;
    }
    config.secrets.master_key_file = Some(key_file);
    // The emulators listen on loopback, which user-supplied URLs may not reach by default.
    config.network.allow_private_networks = true;
    point_at_emulator(&mut config.providers.microsoft, &microsoft, "/v1.0");
    point_at_emulator(&mut config.providers.google, &google, "/calendar/v3");

    // Bound first, so the public URL (OAuth redirects, the emulators' notifications) has the real port.
    let listener = Service::bind(&config).await?;
    let address = listener.local_addr()?;
    config.server.listen = address;
    config.server.public_url = Some(format!("http://{address}"));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = calbridge_server::shutdown_signal();
    let service = Service::start(config, listener, async move {
        tokio::select! {
            _ = signal => {}
            _ = stop_rx => {}
        }
    })
    .await?;
    let Some((_, api_key)) = service.bootstrap_key.clone() else {
        bail!(
            "{} already holds a calbridge database; the demo needs a fresh one (omit --data-dir or point it at an empty directory)",
            dir.display()
        );
    };
    let api = Api::new(format!("http://{}", service.address), api_key.clone())?;

    let setup = set_up(&api, &microsoft, &google).await;
    let summary = match setup {
        Ok(summary) => summary,
        Err(e) => {
            let _ = stop_tx.send(());
            let _ = service.finished().await;
            return Err(e.context("the demo could not set itself up"));
        }
    };
    print_summary(&summary, &dir, args.data_dir.is_none());

    if args.exit_after_setup {
        let _ = stop_tx.send(());
    }
    let finished = service.finished().await;
    microsoft.stop().await;
    google.stop().await;
    finished
}

async fn start_emulator(flavor: Flavor, events: usize, seed: u64) -> anyhow::Result<Emulator> {
    let emulator = Emulator::start_on(flavor, EmulatorConfig::default(), "127.0.0.1:0").await?;
    // Anchored on today, so the seeded events fall inside the default sync window (±3 months).
    let today = jiff::Zoned::now().date();
    emulator
        .seed(&SeedSpec {
            calendars: 1,
            events_per_calendar: events,
            seed,
            anchor: today.to_string(),
            ..SeedSpec::default()
        })
        .await?;
    Ok(emulator)
}

fn point_at_emulator(
    provider: &mut calbridge_server::config::OAuthProviderConfig,
    emulator: &Emulator,
    api_path: &str,
) {
    provider.client_id = Some("calbridge-demo".into());
    provider.authority_url = Some(emulator.base_url().to_string());
    provider.graph_url = Some(format!("{}{api_path}", emulator.base_url()));
}

async fn set_up(api: &Api, microsoft: &Emulator, google: &Emulator) -> anyhow::Result<Summary> {
    let team = api
        .post(
            "/v1/calendar/calendars",
            json!({"name": "Team (Outlook)", "time_zone": "Europe/Berlin"}),
        )
        .await?;
    let family = api
        .post(
            "/v1/calendar/calendars",
            json!({"name": "Family (Google)", "time_zone": "America/New_York"}),
        )
        .await?;
    let team_id = string_field(&team, "id")?;
    let family_id = string_field(&family, "id")?;

    // The event both sides will change: a person creates it in Outlook before the first sync.
    let planning = microsoft
        .act(Action::Create {
            user: None,
            calendar: None,
            event: planning_event(),
        })
        .await?;
    let planning_remote_id = string_field(&planning, "id")?;
    let planning_uid = string_field(&planning, "iCalUId")?;

    let outlook = connect(api, "microsoft", "Outlook (emulated)", &team_id).await?;
    let gmail = connect(api, "google", "Google (emulated)", &family_id).await?;
    let outlook_id = string_field(&outlook, "id")?;
    let gmail_id = string_field(&gmail, "id")?;
    api.sync_and_wait(&outlook_id).await?;
    api.sync_and_wait(&gmail_id).await?;

    // Both sides change the same field of the same event, then a sync meets both edits: an update
    // conflict, left open for the person (the connection's policy is `ask`).
    let local = api.find_event(&team_id, &planning_uid).await?;
    let local_id = string_field(&local, "id")?;
    let (event, etag) = api.get_event(&local_id).await?;
    let mut edited = event_input(&event);
    edited["summary"] = json!("Quarterly planning (moved to the big room)");
    api.put_event(&local_id, &etag, edited).await?;
    microsoft
        .act(Action::Edit {
            user: None,
            calendar: None,
            event_id: planning_remote_id,
            changes: json!({"subject": "Quarterly planning — agenda attached"}),
        })
        .await?;
    let _ = google;
    api.sync_and_wait(&outlook_id).await?;

    let conflicts = api.get("/v1/calendar/conflicts").await?;
    let items = conflicts["items"].as_array().cloned().unwrap_or_default();
    let open_conflict = items
        .iter()
        .find(|c| c["kind"] == "update" && c["event_uid"] == planning_uid.as_str())
        .cloned()
        .context("the demo expected an open conflict after both sides changed the same event")?;
    // Seeded calendars are busy: overlapping meetings show up as time conflicts beside it.
    let other_open_conflicts = items.len().saturating_sub(1);

    let events = api.events_in_window().await?;
    Ok(Summary {
        api: api.base.clone(),
        api_key: api.key.clone(),
        microsoft_emulator: microsoft.base_url().to_string(),
        google_emulator: google.base_url().to_string(),
        calendars: vec![team, family],
        connections: vec![
            api.get(&format!("/v1/calendar/connections/{outlook_id}"))
                .await?,
            api.get(&format!("/v1/calendar/connections/{gmail_id}"))
                .await?,
        ],
        events_in_window: events,
        open_conflict,
        other_open_conflicts,
    })
}

/// A weekly meeting in Berlin time, starting next Monday at 10:00: recurring, so the conflict also shows
/// that the unit of sync is the series.
fn planning_event() -> Value {
    let today = jiff::Zoned::now().date();
    let days_to_monday = 7 - i64::from(today.weekday().to_monday_zero_offset());
    let monday = today
        .checked_add(jiff::Span::new().days(days_to_monday))
        .unwrap_or(today);
    json!({
        "subject": "Quarterly planning",
        "body": {"contentType": "text", "content": "Goals, budget and hiring for next quarter."},
        "location": {"displayName": "Room 4.12"},
        "start": {"dateTime": format!("{monday}T10:00:00"), "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": format!("{monday}T11:30:00"), "timeZone": "W. Europe Standard Time"},
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday"},
            "range": {"type": "numbered", "startDate": monday.to_string(), "numberOfOccurrences": 6}
        }
    })
}

/// The API's event body for a `PUT` from the API's event view.
fn event_input(view: &Value) -> Value {
    let mut input = json!({});
    for field in [
        "calendar_id",
        "uid",
        "summary",
        "description",
        "location",
        "start",
        "end",
        "all_day",
        "time_zone",
        "status",
        "transparency",
        "rrule",
        "exdates",
    ] {
        if let Some(value) = view.get(field)
            && !value.is_null()
        {
            input[field] = value.clone();
        }
    }
    input
}

/// Creates a connection and gives consent as the person would in the browser: follow `authorize_url`
/// through the provider's consent page back to calbridge's callback.
async fn connect(
    api: &Api,
    provider: &str,
    name: &str,
    calendar_id: &str,
) -> anyhow::Result<Value> {
    let created = api
        .post(
            "/v1/calendar/connections",
            json!({
                "provider": provider,
                "name": name,
                "calendar_id": calendar_id,
                "sync": {"frequency": "1m", "conflict_resolution": "ask"},
            }),
        )
        .await?;
    let id = string_field(&created, "id")?;
    if let Some(url) = created.get("authorize_url").and_then(Value::as_str) {
        api.consent(url).await?;
    }
    let connection = api.get(&format!("/v1/calendar/connections/{id}")).await?;
    if connection.get("status").and_then(Value::as_str) != Some("active") {
        bail!("the {provider} connection did not become active: {connection}");
    }
    Ok(connection)
}

fn string_field(value: &Value, field: &str) -> anyhow::Result<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("expected a `{field}` in {value}"))
}

/// A small client of calbridge's own API, with the demo's admin key.
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String, key: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { base, key, http })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.bearer_auth(&self.key).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("calbridge answered {status}: {body}");
        }
        Ok(response)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self.send(self.http.get(url)).await?.json().await?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .send(self.http.post(url).json(&body))
            .await?
            .json()
            .await?)
    }

    async fn get_event(&self, id: &str) -> anyhow::Result<(Value, String)> {
        let url = format!("{}/v1/calendar/events/{id}", self.base);
        let response = self.send(self.http.get(url)).await?;
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .context("an event without an ETag")?;
        Ok((response.json().await?, etag))
    }

    async fn put_event(&self, id: &str, etag: &str, body: Value) -> anyhow::Result<()> {
        let url = format!("{}/v1/calendar/events/{id}", self.base);
        self.send(
            self.http
                .put(url)
                .header(reqwest::header::IF_MATCH, etag)
                .json(&body),
        )
        .await?;
        Ok(())
    }

    /// The window the demo shows: the default sync range around today.
    fn window() -> (String, String) {
        let now = jiff::Timestamp::now();
        let day = jiff::SignedDuration::from_hours(24);
        let start = now.checked_sub(day * 90).unwrap_or(now);
        let end = now.checked_add(day * 90).unwrap_or(now);
        (start.to_string(), end.to_string())
    }

    async fn find_event(&self, calendar_id: &str, uid: &str) -> anyhow::Result<Value> {
        let (start, end) = Self::window();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/v1/calendar/events?calendar_id={calendar_id}&start={start}&end={end}",
                self.base
            );
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = self.send(self.http.get(url)).await?.json().await?;
            if let Some(found) = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|item| item.get("uid").and_then(Value::as_str) == Some(uid))
            {
                return Ok(found.clone());
            }
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_string()),
                None => bail!("event {uid} was not imported into calendar {calendar_id}"),
            }
        }
    }

    async fn events_in_window(&self) -> anyhow::Result<usize> {
        let (start, end) = Self::window();
        let mut cursor: Option<String> = None;
        let mut count = 0;
        loop {
            let mut url = format!(
                "{}/v1/calendar/events?start={start}&end={end}&limit=500",
                self.base
            );
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = self.send(self.http.get(url)).await?.json().await?;
            count += page["items"].as_array().map_or(0, Vec::len);
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(count),
            }
        }
    }

    /// Follows the consent redirects: calbridge's authorize endpoint (with the API key), the provider's
    /// consent page (which the emulator grants at once), and calbridge's callback.
    async fn consent(&self, authorize_url: &str) -> anyhow::Result<()> {
        let mut url = if authorize_url.starts_with('/') {
            format!("{}{authorize_url}", self.base)
        } else {
            authorize_url.to_string()
        };
        for _ in 0..6 {
            let mut request = self.http.get(&url);
            // The API key goes to calbridge only, never to the provider.
            if url.starts_with(&self.base) {
                request = request.bearer_auth(&self.key);
            }
            let response = request.send().await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .context("a redirect without a Location")?;
                url = reqwest::Url::parse(&url)?.join(location)?.to_string();
                continue;
            }
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                bail!("consent stopped at {url}: {status} {body}");
            }
            return Ok(());
        }
        bail!("consent did not finish after 6 redirects")
    }

    async fn sync_and_wait(&self, connection_id: &str) -> anyhow::Result<()> {
        let started = self
            .post("/v1/calendar/sync", json!({"connection_id": connection_id}))
            .await?;
        let run_id = string_field(&started, "run_id")?;
        for _ in 0..600 {
            let run = self
                .get(&format!("/v1/calendar/sync/runs/{run_id}"))
                .await?;
            match run.get("status").and_then(Value::as_str) {
                Some("running") | Some("queued") | None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some("succeeded") | Some("partial") => return Ok(()),
                Some(other) => bail!("sync run {run_id} ended {other}: {run}"),
            }
        }
        bail!("sync run {run_id} did not finish within a minute")
    }
}

#[allow(clippy::print_stdout)]
fn print_summary(summary: &Summary, dir: &std::path::Path, temporary: bool) {
    let conflict_id = summary.open_conflict["id"].as_str().unwrap_or("?");
    let api = &summary.api;
    println!("calbridge demo is running");
    println!();
    println!("  API                {api}   (OpenAPI: {api}/v1/openapi.json)");
    println!("  admin API key      {}", summary.api_key);
    println!("  Outlook emulator   {}", summary.microsoft_emulator);
    println!("  Google emulator    {}", summary.google_emulator);
    println!(
        "  data               {}{}",
        dir.display(),
        if temporary {
            " (temporary, removed on exit)"
        } else {
            ""
        }
    );
    println!();
    println!(
        "Two calendars are connected and synced ({} events and occurrences in the ±90-day window);",
        summary.events_in_window
    );
    println!(
        "\"Quarterly planning\" was changed in Outlook and in calbridge at once, and waits for you."
    );
    println!(
        "Beside it, {} time conflicts: overlapping meetings found across each owner's calendars.",
        summary.other_open_conflicts
    );
    println!();
    println!("  export KEY={}", summary.api_key);
    println!("  curl -s -H \"Authorization: Bearer $KEY\" {api}/v1/calendar/conflicts");
    println!(
        "  curl -s -H \"Authorization: Bearer $KEY\" -H 'content-type: application/json' \\\n       -d '{{\"option\":\"keep_local\"}}' {api}/v1/calendar/conflicts/{conflict_id}/resolve"
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $KEY\" '{api}/v1/calendar/events?start=2026-01-01T00:00:00Z&end=2027-01-01T00:00:00Z&tz=Europe/Berlin'"
    );
    println!();
    println!("Stop with Ctrl-C.");
    println!(
        "DEMO_SUMMARY {}",
        serde_json::to_string(summary).unwrap_or_default()
    );
}
