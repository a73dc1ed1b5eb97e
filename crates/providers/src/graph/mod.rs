//! Microsoft Graph (Outlook calendar, v1.0): per-calendar `calendarView/delta` with the delta link
//! as cursor, series reassembled from instances (master fetched when only instances arrive),
//! idempotent creates through `transactionId`, `If-Match` writes, `$batch` reads, `getSchedule`.

pub(crate) mod convert;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use http::Method;
use http::header::{CONTENT_TYPE, HeaderName, IF_MATCH};
use jiff::Timestamp;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use url::Url;

use crate::content::ItemContent;
use crate::error::ProviderError;
use crate::http::rest::{self, Next};
use crate::http::{Budget, BudgetConfig, Credentials, Endpoint, HttpClient, Request, Response};
use crate::oauth::{Access, TokenSource};
use crate::provider::{CalendarProvider, Diagnosis, HeldVersions, ProviderKind};
use crate::series_etag;
use crate::types::{
    BusyKind, BusyPeriod, CalendarId, Capabilities, ChangeSet, CreateKey, Cursor, Etag,
    FullListingReason, KnownVersions, ReadItem, RemoteCalendar, RemoteId, RemoteItem, WatchChannel,
    WatchRequest, Window, Written,
};

/// Most requests one `$batch` may carry (documented limit).
pub const MAX_BATCH: usize = 20;
const PREFER: HeaderName = HeaderName::from_static("prefer");

#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// `https://graph.microsoft.com/v1.0/` (or a national cloud, or an emulator).
    pub api_base: Url,
    /// `None`: the signed-in user (`/me`); `Some(id or UPN)`: `/users/{id}`.
    pub user: Option<String>,
    pub access: Access,
    /// `Prefer: odata.maxpagesize` for delta pages.
    pub page_size: u32,
    /// Where `read` looks for a series' exceptions (Graph lists instances only inside a window).
    pub read_window: Option<Window>,
}

impl GraphConfig {
    pub fn new(api_base: Url, access: Access) -> Self {
        let mut api_base = api_base;
        if !api_base.path().ends_with('/') {
            let path = format!("{}/", api_base.path());
            api_base.set_path(&path);
        }
        Self {
            api_base,
            user: None,
            access,
            page_size: 100,
            read_window: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GraphProvider {
    endpoint: Endpoint,
    tokens: Arc<dyn TokenSource>,
    config: GraphConfig,
}

fn seg(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn parse_json(response: &Response) -> Result<Value, ProviderError> {
    serde_json::from_slice(&response.body)
        .map_err(|e| ProviderError::protocol(format!("Graph answered invalid JSON: {e}")))
}

/// A collection page's items and the `@odata.nextLink` it points to, if any.
fn graph_page(page: &Value) -> Result<(Vec<Value>, Option<Url>), ProviderError> {
    let items = page
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let next = page
        .get("@odata.nextLink")
        .and_then(Value::as_str)
        .map(|next| Url::parse(next).map_err(|e| ProviderError::protocol(format!("nextLink: {e}"))))
        .transpose()?;
    Ok((items, next))
}

fn error_code(body: &Value) -> String {
    body.get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// How many times one `$batch` item is sent while Graph answers it 429.
const BATCH_TRIES: usize = 5;

/// One request's answer inside a `$batch`.
struct InnerAnswer {
    /// 0 when the batch's answer had none for it.
    status: u16,
    body: Value,
    /// A 429's `Retry-After` (still throttled after `BATCH_TRIES` tries).
    retry_after: Option<std::time::Duration>,
}

impl InnerAnswer {
    /// The failure, for a read failure's cause: `HTTP 500 (serviceNotAvailable)`.
    fn describe(&self) -> String {
        if self.status == 0 {
            return "no answer for it inside the $batch".to_owned();
        }
        let code = error_code(&self.body);
        let mut out = format!("HTTP {}", self.status);
        if !code.is_empty() {
            out.push_str(&format!(" ({code})"));
        }
        if self.status == 429 {
            out.push_str(&format!(", still throttled after {BATCH_TRIES} tries"));
        }
        out
    }
}

/// One id read by `GraphProvider::assemble`.
struct Assembled {
    id: String,
    /// The series or single event; `None` when Graph no longer has it.
    outcome: Result<Option<RemoteItem>, String>,
    /// For a series master read whole: the ids of its instances in the window (occurrences and
    /// exceptions).
    instances: Option<Vec<String>>,
}

fn ts_param(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl GraphProvider {
    /// One mailbox. Requests share a budget of 4 in flight (Outlook's per-mailbox limit).
    pub fn new(http: &HttpClient, config: GraphConfig, tokens: Arc<dyn TokenSource>) -> Self {
        let budget = Budget::new(BudgetConfig {
            concurrency: 4,
            rate: None,
        });
        Self {
            endpoint: http.endpoint("microsoft", Credentials::None, budget),
            tokens,
            config,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn user_path(&self) -> String {
        match &self.config.user {
            None => "me".to_owned(),
            Some(u) => format!("users/{}", seg(u)),
        }
    }

    fn url(&self, tail: &str) -> Result<Url, ProviderError> {
        self.config
            .api_base
            .join(&format!("{}/{tail}", self.user_path()))
            .map_err(|e| ProviderError::invalid(format!("Graph URL: {e}")))
    }

    fn writable(&self) -> Result<(), ProviderError> {
        match self.config.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(ProviderError::ReadOnly),
        }
    }

    /// Sends with the current bearer token (a 401 gets one fresh token and one more try), asking
    /// for times in UTC and plain-text bodies.
    async fn send(&self, mut request: Request) -> Result<Response, ProviderError> {
        request.headers.append(
            PREFER,
            http::HeaderValue::from_static("outlook.timezone=\"UTC\""),
        );
        request.headers.append(
            PREFER,
            http::HeaderValue::from_static("outlook.body-content-type=\"text\""),
        );
        rest::send_with_bearer(&self.endpoint, self.tokens.as_ref(), request, |_| false).await
    }

    async fn get_json(&self, url: Url) -> Result<Value, ProviderError> {
        let response = self.send(Request::new(Method::GET, url)).await?;
        if !response.status.is_success() {
            return Err(response.error());
        }
        parse_json(&response)
    }

    /// Every page of a collection, following `@odata.nextLink`.
    async fn collect(&self, first: Url) -> Result<Vec<Value>, ProviderError> {
        let (items, ()) = rest::all_pages(first, move |url| async move {
            let (items, next) = graph_page(&self.get_json(url).await?)?;
            Ok((items, next.map_or(Next::End(()), Next::Page)))
        })
        .await?;
        Ok(items)
    }

    fn calendar_json(&self, c: &Value) -> Option<RemoteCalendar> {
        let id = CalendarId::parse(c.get("id")?.as_str()?).ok()?;
        Some(RemoteCalendar {
            id,
            name: c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            description: None,
            color: c
                .get("hexColor")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
            time_zone: None,
            components: vec!["VEVENT".into()],
            read_only: self.config.access == Access::ReadOnly
                || c.get("canEdit").and_then(Value::as_bool) == Some(false),
            change_tag: c
                .get("changeKey")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// One delta round: every page until the delta link. `Err(CursorInvalid)` on 410.
    async fn delta_round(&self, first: Url) -> Result<(Vec<Value>, Url), ProviderError> {
        rest::all_pages(first, move |url| async move {
            let mut request = Request::new(Method::GET, url);
            request.headers.append(
                PREFER,
                http::HeaderValue::from_str(&format!(
                    "odata.maxpagesize={}",
                    self.config.page_size
                ))
                .map_err(|_| ProviderError::invalid("page size"))?,
            );
            let response = self.send(request).await?;
            if response.status.as_u16() == 410 {
                return Err(ProviderError::CursorInvalid);
            }
            if !response.status.is_success() {
                return Err(response.error());
            }
            let page = parse_json(&response)?;
            let (items, next) = graph_page(&page)?;
            if let Some(next) = next {
                return Ok((items, Next::Page(next)));
            }
            let delta = page
                .get("@odata.deltaLink")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ProviderError::protocol("delta page with neither nextLink nor deltaLink")
                })?;
            let delta = Url::parse(delta)
                .map_err(|e| ProviderError::protocol(format!("deltaLink: {e}")))?;
            Ok((items, Next::End(delta)))
        })
        .await
    }

    /// GETs through `$batch`, ≤20 per request; inner 429s are retried after their `Retry-After`.
    async fn batch_get(&self, urls: &[String]) -> Result<Vec<InnerAnswer>, ProviderError> {
        let items: Vec<Value> = urls
            .iter()
            .map(|u| json!({"method": "GET", "url": u}))
            .collect();
        self.batch(&items, true).await
    }

    /// Sends requests (`{method, url, body?}`, URLs relative to the version root) through `$batch`,
    /// ≤20 per request, and answers each one's inner response in order. An inner 429 pauses the
    /// whole budget for its `Retry-After` (as a top-level 429 does) and only the throttled items are
    /// sent again, up to `BATCH_TRIES` times; one still throttled then is answered as its 429 for the
    /// caller to report. A `Retry-After` longer than the HTTP layer's `max_retry_after` is not slept
    /// through: the call ends with `RateLimited`, as a top-level one does. `idempotent`: the whole
    /// batch may be repeated after a lost answer (true for reads and `If-Match`-guarded writes).
    async fn batch(
        &self,
        items: &[Value],
        idempotent: bool,
    ) -> Result<Vec<InnerAnswer>, ProviderError> {
        let mut results: Vec<Option<InnerAnswer>> = items.iter().map(|_| None).collect();
        let per_batch = self.endpoint.batch_size(MAX_BATCH);
        for (chunk_index, chunk) in items.chunks(per_batch).enumerate() {
            let mut pending: Vec<usize> = (0..chunk.len()).collect();
            for attempt in 1..=BATCH_TRIES {
                let requests: Vec<Value> = pending
                    .iter()
                    .map(|&i| {
                        let mut one = chunk[i].clone();
                        one["id"] = json!(i.to_string());
                        if one.get("body").is_some() {
                            one["headers"] = json!({"Content-Type": "application/json"});
                        }
                        one
                    })
                    .collect();
                let body = serde_json::to_vec(&json!({"requests": requests}))
                    .map_err(|e| ProviderError::invalid(e.to_string()))?;
                let url = self
                    .config
                    .api_base
                    .join("$batch")
                    .map_err(|e| ProviderError::invalid(e.to_string()))?;
                let request = Request::new(Method::POST, url)
                    .header(CONTENT_TYPE, "application/json")?
                    .body(body)
                    .idempotent(idempotent);
                let response = self.send(request).await?;
                if !response.status.is_success() {
                    return Err(response.error());
                }
                let answer = parse_json(&response)?;
                let mut wait = None;
                let mut still = Vec::new();
                for r in answer
                    .get("responses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(i) = r
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<usize>().ok())
                        .filter(|i| pending.contains(i))
                    else {
                        continue;
                    };
                    let status = r.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let retry_after = (status == 429).then(|| {
                        r.get("headers")
                            .and_then(|h| h.get("Retry-After").or_else(|| h.get("retry-after")))
                            .and_then(Value::as_str)
                            .and_then(|v| {
                                crate::http::parse_retry_after(v, std::time::SystemTime::now())
                            })
                            .unwrap_or(std::time::Duration::from_secs(1))
                    });
                    if let Some(after) = retry_after {
                        wait = Some(wait.map_or(after, |w: std::time::Duration| w.max(after)));
                        still.push(i);
                    }
                    if let Some(slot) = results.get_mut(chunk_index * per_batch + i) {
                        *slot = Some(InnerAnswer {
                            status,
                            body: r.get("body").cloned().unwrap_or(Value::Null),
                            retry_after,
                        });
                    }
                }
                pending = still;
                let Some(wait) = wait else {
                    break;
                };
                // Every request of the mailbox waits, not only the throttled items.
                self.endpoint.budget().pause_for(wait).await;
                if wait > self.endpoint.max_retry_after() {
                    return Err(ProviderError::RateLimited {
                        retry_after: Some(wait),
                    });
                }
                if attempt == BATCH_TRIES {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(InnerAnswer {
                    status: 0,
                    body: Value::Null,
                    retry_after: None,
                })
            })
            .collect())
    }

    fn event_path(&self, id: &str) -> String {
        format!("/{}/events/{}", self.user_path(), seg(id))
    }

    fn instances_path(&self, id: &str, window: &Window) -> String {
        format!(
            "/{}/events/{}/instances?startDateTime={}&endDateTime={}&$top=200",
            self.user_path(),
            seg(id),
            ts_param(window.start()),
            ts_param(window.end())
        )
    }

    fn default_read_window(&self) -> Result<Window, ProviderError> {
        if let Some(w) = self.config.read_window {
            return Ok(w);
        }
        let now = Timestamp::now();
        Window::parse(
            now.checked_sub(jiff::SignedDuration::from_hours(24 * 366))
                .unwrap_or(now),
            now.checked_add(jiff::SignedDuration::from_hours(24 * 731))
                .unwrap_or(now),
        )
    }

    /// Reassembles series: for each id (a master or single event), its body and, for masters, its
    /// instances in `window` (exceptions become overrides; missing occurrences become EXDATEs).
    /// A series is only built from its complete instance list: an occurrence missing because a
    /// request failed would otherwise be taken for cancelled, and the sync would delete it on the
    /// other side. So a failed master or `/instances` request (any page) makes that id a read
    /// failure naming the status; the other ids of the batch are still read.
    async fn assemble(
        &self,
        ids: &[String],
        window: &Window,
    ) -> Result<Vec<Assembled>, ProviderError> {
        let urls: Vec<String> = ids.iter().map(|id| self.event_path(id)).collect();
        let masters = self.batch_get(&urls).await?;
        let mut series_ids = Vec::new();
        for (i, answer) in masters.iter().enumerate() {
            if answer.status == 200
                && answer.body.get("type").and_then(Value::as_str) == Some("seriesMaster")
            {
                series_ids.push(i);
            }
        }
        let instance_urls: Vec<String> = series_ids
            .iter()
            .map(|&i| self.instances_path(&ids[i], window))
            .collect();
        let instance_pages = self.batch_get(&instance_urls).await?;
        let mut instances: HashMap<usize, Result<Vec<Value>, String>> = HashMap::new();
        for (&i, answer) in series_ids.iter().zip(instance_pages) {
            instances.insert(i, self.all_instances(answer).await);
        }
        let mut out = Vec::new();
        for (i, answer) in masters.into_iter().enumerate() {
            let id = ids[i].clone();
            let failed = |why: String| Assembled {
                id: id.clone(),
                outcome: Err(why),
                instances: None,
            };
            if answer.status == 404 {
                out.push(Assembled {
                    id,
                    outcome: Ok(None),
                    instances: None,
                });
                continue;
            }
            if answer.status != 200 {
                out.push(failed(format!("reading the event: {}", answer.describe())));
                continue;
            }
            let read = match instances.remove(&i) {
                None => None,
                Some(Ok(list)) => Some(list),
                Some(Err(why)) => {
                    out.push(failed(why));
                    continue;
                }
            };
            let outcome = self
                .series_item(
                    &id,
                    &answer.body,
                    read.as_deref().unwrap_or_default(),
                    window,
                )
                .map(Some)
                .map_err(|e| e.to_string());
            let instances = read.map(|list| {
                list.iter()
                    .filter_map(|v| Some(v.get("id")?.as_str()?.to_owned()))
                    .collect()
            });
            out.push(Assembled {
                id,
                outcome,
                instances,
            });
        }
        Ok(out)
    }

    /// Every instance of a series in the window, from its `/instances` answer inside the `$batch`
    /// and the pages its `@odata.nextLink` leads to; `Err(cause)` when any of them failed.
    async fn all_instances(&self, answer: InnerAnswer) -> Result<Vec<Value>, String> {
        if answer.status != 200 {
            return Err(format!(
                "reading its occurrences in the window: {}",
                answer.describe()
            ));
        }
        let (mut list, next) = graph_page(&answer.body)
            .map_err(|e| format!("reading its occurrences in the window: {e}"))?;
        if let Some(next) = next {
            // The first page came through `$batch`; the rest are followed one by one.
            let rest = self
                .collect(next)
                .await
                .map_err(|e| format!("reading its occurrences past the first page: {e}"))?;
            list.extend(rest);
        }
        Ok(list)
    }

    fn series_item(
        &self,
        id: &str,
        master: &Value,
        instances: &[Value],
        window: &Window,
    ) -> Result<RemoteItem, ProviderError> {
        let exceptions: Vec<Value> = instances
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) == Some("exception"))
            .cloned()
            .collect();
        let mut cancelled = Vec::new();
        let is_series = master.get("type").and_then(Value::as_str) == Some("seriesMaster");
        if is_series {
            // Occurrences the rule makes in the window but Graph no longer lists were deleted.
            let present: HashSet<Timestamp> = instances
                .iter()
                .filter_map(|v| v.get("originalStart").and_then(Value::as_str))
                .filter_map(|s| s.parse::<Timestamp>().ok())
                .collect();
            let plain = convert::to_ical(master, &[], &[])?;
            cancelled = expected_starts(&plain, window)?
                .into_iter()
                .filter(|t| !present.contains(t))
                .collect();
        }
        let content = convert::to_ical(master, &exceptions, &cancelled)?;
        let master_etag = master
            .get("@odata.etag")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::protocol("event without @odata.etag"))?;
        // Series always carry the marker, so a removal the connector cannot place (an occurrence
        // id) can be followed up by re-reading the known series.
        let etag = if !is_series {
            master_etag.to_owned()
        } else {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for e in &exceptions {
                h.update(
                    e.get("@odata.etag")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .as_bytes(),
                );
                h.update(b"\n");
            }
            for c in &cancelled {
                h.update(c.to_string().as_bytes());
            }
            series_etag::with_exceptions(master_etag, h)
        };
        Ok(RemoteItem {
            id: RemoteId::parse(id)?,
            etag: Etag::parse(etag)?,
            content,
        })
    }

    async fn full_window_read(
        &self,
        calendar: &CalendarId,
        window: &Window,
    ) -> Result<(Vec<Value>, Url), ProviderError> {
        let mut url = self.url(&format!(
            "calendars/{}/calendarView/delta",
            seg(calendar.as_str())
        ))?;
        url.query_pairs_mut()
            .append_pair("startDateTime", &ts_param(window.start()))
            .append_pair("endDateTime", &ts_param(window.end()));
        self.delta_round(url).await
    }

    /// Creates or patches the exceptions and deletes the cancelled occurrences of a series just
    /// written (Graph takes them one instance at a time).
    async fn write_overrides(
        &self,
        master_id: &str,
        content: &ItemContent,
    ) -> Result<(), ProviderError> {
        let Some(series) = content.calendar().series().first() else {
            return Ok(());
        };
        let exdates = convert::exdate_instants(series);
        if series.overrides().is_empty() && exdates.is_empty() {
            return Ok(());
        }
        let mut targets: Vec<Timestamp> = series
            .overrides()
            .iter()
            .filter_map(convert::recurrence_instant)
            .collect();
        targets.extend(exdates.iter().copied());
        let (Some(min), Some(max)) = (targets.iter().min(), targets.iter().max()) else {
            return Ok(());
        };
        let day = jiff::SignedDuration::from_hours(24);
        let window = Window::parse(
            min.checked_sub(day).unwrap_or(*min),
            max.checked_add(day).unwrap_or(*max),
        )?;
        let url = Url::parse(&format!(
            "{}{}",
            self.config.api_base.as_str().trim_end_matches('/'),
            self.instances_path(master_id, &window)
        ))
        .map_err(|e| ProviderError::invalid(e.to_string()))?;
        let instances = self.collect(url).await?;
        let by_start: BTreeMap<Timestamp, String> = instances
            .iter()
            .filter_map(|v| {
                let start = v
                    .get("originalStart")?
                    .as_str()?
                    .parse::<Timestamp>()
                    .ok()?;
                Some((start, v.get("id")?.as_str()?.to_owned()))
            })
            .collect();
        // One `$batch` (≤20 per request) for every instance write of the series.
        let mut writes: Vec<Value> = Vec::new();
        for over in series.overrides() {
            let Some(at) = convert::recurrence_instant(over) else {
                continue;
            };
            let Some(instance) = by_start.get(&at) else {
                return Err(ProviderError::Rejected {
                    status: 400,
                    detail: format!("the series has no occurrence at {at} to override"),
                });
            };
            let cancelled = over
                .status
                .as_ref()
                .is_some_and(|s| s.value.as_str().eq_ignore_ascii_case("CANCELLED"));
            let url = self.event_path(instance);
            writes.push(if cancelled {
                json!({"method": "DELETE", "url": url})
            } else {
                json!({"method": "PATCH", "url": url, "body": Value::Object(convert::event_fields(over)?)})
            });
        }
        for at in exdates {
            if let Some(instance) = by_start.get(&at) {
                writes.push(json!({"method": "DELETE", "url": self.event_path(instance)}));
            }
        }
        // Setting an occurrence's fields or cancelling it again is harmless: the batch may repeat.
        for answer in self.batch(&writes, true).await? {
            match answer.status {
                200..=299 | 404 => {}
                429 => {
                    return Err(ProviderError::RateLimited {
                        retry_after: answer.retry_after,
                    });
                }
                status => {
                    return Err(ProviderError::Rejected {
                        status,
                        detail: format!("writing an occurrence: {}", error_code(&answer.body)),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The occurrence ids to report for one item read: a series' instances in the window and those the
/// listing showed (a change between the two reads leaves both kinds); none for a single event
/// (`instances` is `None`: one that was a series has its occurrences forgotten, and any single is
/// remembered as holding none, so a removed id nobody remembers does not make it a suspect).
fn series_occurrences(instances: Option<Vec<String>>, listed: Option<Vec<&str>>) -> Vec<RemoteId> {
    let Some(mut ids) = instances else {
        return Vec::new();
    };
    let mut have: HashSet<String> = ids.iter().cloned().collect();
    for id in listed.into_iter().flatten() {
        if have.insert(id.to_owned()) {
            ids.push(id.to_owned());
        }
    }
    ids.into_iter()
        .filter_map(|id| RemoteId::parse(id).ok())
        .collect()
}

/// Instants the series' rule produces in `window` (EXDATEs and overrides not applied).
fn expected_starts(
    content: &ItemContent,
    window: &Window,
) -> Result<Vec<Timestamp>, ProviderError> {
    use calbridge_model::expand::{ExpandOptions, Window as ExpandWindow};
    use calbridge_model::occurrences::{calendar_resolver, series_occurrences};
    let calendar = content.calendar();
    let Some(series) = calendar.series().first() else {
        return Ok(Vec::new());
    };
    let (resolver, _) = calendar_resolver(calendar);
    let options = ExpandOptions {
        floating_zone: jiff::tz::TimeZone::UTC,
        limits: calbridge_model::IterLimits::default(),
    };
    let window = ExpandWindow {
        from: window.start(),
        to: window.end(),
    };
    let iter = series_occurrences(series, &resolver, window, &options)
        .map_err(|e| ProviderError::protocol(format!("expanding the series: {e}")))?;
    let mut out = Vec::new();
    for occurrence in iter.take(5_000) {
        let occurrence = occurrence
            .map_err(|e| ProviderError::protocol(format!("expanding the series: {e}")))?;
        if let Some(ts) = occurrence
            .recurrence_id
            .as_ref()
            .and_then(occurrence_instant)
        {
            out.push(ts);
        }
    }
    Ok(out)
}

fn occurrence_instant(t: &calbridge_model::expand::OccurrenceTime) -> Option<Timestamp> {
    t.to_rfc3339().parse::<Timestamp>().ok().or_else(|| {
        let date: jiff::civil::Date = t.to_rfc3339().parse().ok()?;
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })
}

fn json_request(method: Method, url: Url, body: &Value) -> Result<Request, ProviderError> {
    Ok(Request::new(method, url)
        .header(CONTENT_TYPE, "application/json")?
        .body(serde_json::to_vec(body).map_err(|e| ProviderError::invalid(e.to_string()))?))
}

/// A subscription resource → the channel it describes.
fn subscription_of(body: &Value) -> Result<WatchChannel, ProviderError> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::protocol("subscription without an id"))?;
    let expires = body
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .ok_or_else(|| {
            ProviderError::protocol("subscription without a valid expirationDateTime")
        })?;
    Ok(WatchChannel {
        id: id.to_owned(),
        resource_id: None,
        expires_at: expires,
    })
}

impl GraphProvider {
    fn subscription_url(&self, id: &str) -> Result<Url, ProviderError> {
        self.config
            .api_base
            .join(&format!("subscriptions/{}", seg(id)))
            .map_err(|e| ProviderError::invalid(format!("Graph URL: {e}")))
    }
}

#[async_trait]
impl CalendarProvider for GraphProvider {
    /// `POST /subscriptions` on the calendar's events (created, updated, deleted) with a lifecycle URL;
    /// Graph validates both URLs with its handshake before answering.
    async fn watch(
        &self,
        calendar: &CalendarId,
        request: &WatchRequest,
    ) -> Result<WatchChannel, ProviderError> {
        let mut body = json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": request.notification_url.as_str(),
            // A JSON string, not a URL: the id goes in as Graph gave it.
            "resource": match &self.config.user {
                None => format!("me/calendars/{}/events", calendar.as_str()),
                Some(user) => format!("users/{user}/calendars/{}/events", calendar.as_str()),
            },
            "expirationDateTime": ts_param(request.expires_at),
            "clientState": request.secret,
            "latestSupportedTlsVersion": "v1_2",
        });
        if let Some(lifecycle) = &request.lifecycle_url {
            body["lifecycleNotificationUrl"] = Value::String(lifecycle.as_str().to_owned());
        }
        let url = self
            .config
            .api_base
            .join("subscriptions")
            .map_err(|e| ProviderError::invalid(format!("Graph URL: {e}")))?;
        let response = self.send(json_request(Method::POST, url, &body)?).await?;
        if !response.status.is_success() {
            return Err(response.error());
        }
        subscription_of(&parse_json(&response)?)
    }

    /// `PATCH /subscriptions/{id}` with the new expiry (this also reauthorizes it).
    async fn renew_watch(
        &self,
        _calendar: &CalendarId,
        channel: &WatchChannel,
        request: &WatchRequest,
    ) -> Result<WatchChannel, ProviderError> {
        let body = json!({"expirationDateTime": ts_param(request.expires_at)});
        let response = self
            .send(json_request(
                Method::PATCH,
                self.subscription_url(&channel.id)?,
                &body,
            )?)
            .await?;
        if !response.status.is_success() {
            return Err(response.error());
        }
        subscription_of(&parse_json(&response)?)
    }

    /// `DELETE /subscriptions/{id}`; 404 means already gone.
    async fn stop_watch(&self, channel: &WatchChannel) -> Result<(), ProviderError> {
        let response = self
            .send(
                Request::new(Method::DELETE, self.subscription_url(&channel.id)?).idempotent(true),
            )
            .await?;
        match response.status.as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(response.error()),
        }
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Microsoft
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writable: self.config.access == Access::ReadWrite,
            free_busy: true,
            incremental: true,
            windowed_reads: true,
            max_batch: MAX_BATCH,
        }
    }

    async fn test_connection(&self) -> Diagnosis {
        match self.list_calendars().await {
            Ok(calendars) => Diagnosis::ok(calendars),
            Err(e) => Diagnosis::from_error(&e),
        }
    }

    async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError> {
        let items = self.collect(self.url("calendars")?).await?;
        Ok(items.iter().filter_map(|c| self.calendar_json(c)).collect())
    }

    async fn changes(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
        window: &Window,
        held: &dyn HeldVersions,
    ) -> Result<ChangeSet, ProviderError> {
        let (items, delta, full) = match cursor {
            Some(cursor) => {
                let url = Url::parse(cursor.as_str()).map_err(|_| ProviderError::CursorInvalid)?;
                if url.origin() != self.config.api_base.origin() {
                    return Err(ProviderError::invalid("cursor points at another host"));
                }
                match self.delta_round(url).await {
                    Ok((items, delta)) => (items, delta, None),
                    Err(ProviderError::CursorInvalid) => {
                        let (items, delta) = self.full_window_read(calendar, window).await?;
                        (items, delta, Some(FullListingReason::CursorInvalid))
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                let (items, delta) = self.full_window_read(calendar, window).await?;
                (items, delta, Some(FullListingReason::NoCursor))
            }
        };
        let mut set = ChangeSet {
            cursor: Some(Cursor::parse(delta.as_str())?),
            full_listing: full,
            ..ChangeSet::default()
        };
        // Series ids (masters or singles) touched this round, in first-seen order.
        let mut touched: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut removed: Vec<String> = Vec::new();
        // The occurrence ids the listing shows of each series (reported with what `/instances` lists).
        let mut listed_occurrences: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut unplaced_removals = false;
        for item in &items {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                continue;
            };
            if item.get("@removed").is_some() {
                removed.push(id.to_owned());
                continue;
            }
            let master = match item.get("type").and_then(Value::as_str) {
                Some("occurrence") | Some("exception") => {
                    item.get("seriesMasterId").and_then(Value::as_str)
                }
                _ => None,
            };
            let series_id = match master {
                Some(master) => {
                    listed_occurrences.entry(master).or_default().push(id);
                    master
                }
                None => id,
            };
            if seen.insert(series_id.to_owned()) {
                touched.push(series_id.to_owned());
            }
        }
        // The versions held: of every item for a full listing, else of the items this round names.
        let mut known: Cow<'_, KnownVersions> = match full {
            Some(_) => held.all().await?,
            None => {
                let named = touched
                    .iter()
                    .chain(&removed)
                    .map(|id| RemoteId::parse(id.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Cow::Owned(held.of(&named).await?)
            }
        };
        // A removed id that is a known item: a deleted single or series, or one that left the
        // window; a removed occurrence changes its series (re-read below when we know it).
        let mut unheld: Vec<RemoteId> = Vec::new();
        for id in removed {
            if seen.contains(&id) {
                continue;
            }
            let remote = RemoteId::parse(id.clone())?;
            if known.contains_key(&remote) {
                if full.is_none() {
                    // Graph says `deleted` for both; only a read can tell.
                    set.uncertain_deletions.push(remote);
                } else {
                    set.deletions.push(remote);
                }
            } else if full.is_none() {
                // Not an item we hold: a removed occurrence (its id does not name its series), or
                // an item outside the window.
                unheld.push(remote);
            }
        }
        if !unheld.is_empty() {
            // The series of the occurrences the caller remembers are re-read (their versions tell
            // whether they changed). An id nobody remembers is an occurrence of a series whose
            // occurrences are not remembered, or else an item or occurrence outside the window:
            // the former are re-read, below.
            let series_of = held.series_of(&unheld).await?;
            let verified: HashSet<&RemoteId> = set.uncertain_deletions.iter().collect();
            let mut placed: Vec<RemoteId> = Vec::new();
            for id in &unheld {
                match series_of.get(id) {
                    // A series removed itself is read by the caller before anything is deleted.
                    Some(series) if verified.contains(series) => {}
                    Some(series) => {
                        if seen.insert(series.as_str().to_owned()) {
                            touched.push(series.as_str().to_owned());
                            placed.push(series.clone());
                        }
                    }
                    None => unplaced_removals = true,
                }
            }
            if !placed.is_empty() {
                known.to_mut().extend(held.of(&placed).await?);
            }
        }
        if full.is_some() {
            let mut unchanged_candidates = Vec::new();
            let mut to_read = Vec::new();
            // Listed versions by id, first listing wins (a lookup per touched id: the listing of a
            // large mailbox holds hundreds of thousands of instances).
            let mut listed_versions: HashMap<&str, &str> = HashMap::with_capacity(items.len());
            for v in &items {
                if let (Some(id), Some(etag)) = (
                    v.get("id").and_then(Value::as_str),
                    v.get("@odata.etag").and_then(Value::as_str),
                ) {
                    listed_versions.entry(id).or_insert(etag);
                }
            }
            for id in &touched {
                let remote = RemoteId::parse(id.clone())?;
                // Singles carry their version in the listing; series need their master read anyway.
                let single_version = listed_versions.get(id.as_str()).copied();
                match (known.get(&remote), single_version) {
                    (Some(etag), Some(version)) if etag.as_str() == version => {
                        unchanged_candidates.push(remote)
                    }
                    _ => to_read.push(id.clone()),
                }
            }
            // A single event listed at the version held holds no occurrence. Those the caller
            // does not remember so (recorded before occurrences were reported, or by its own write
            // whose echo only this listing shows) are reported with none; the others are not
            // reported again (100,000 singles would be 100,000 rows looked up every full run).
            if !unchanged_candidates.is_empty() {
                let unknown = held.occurrences_unknown().await?;
                for id in unchanged_candidates
                    .iter()
                    .filter(|id| unknown.contains_key(*id))
                {
                    set.series_occurrences.insert(id.clone(), Vec::new());
                }
            }
            set.unchanged = unchanged_candidates;
            let present: HashSet<&str> = touched.iter().map(String::as_str).collect();
            for id in known.keys() {
                if !present.contains(id.as_str()) {
                    set.deletions.push(id.clone());
                }
            }
            touched = to_read;
        }
        if unplaced_removals {
            // Not every series: one whose occurrences are remembered was read, with every occurrence
            // it had in the window, by the complete listing that began this delta link or since (a
            // series changed shows up in the delta through its instances, and is re-read), so an id
            // it does not hold lies outside the window the run syncs (docs/architecture/providers.md,
            // "A removed id nobody remembers").
            let unknown = held.occurrences_unknown().await?;
            for (id, etag) in unknown.iter() {
                if series_etag::is_series(etag) && seen.insert(id.as_str().to_owned()) {
                    touched.push(id.as_str().to_owned());
                }
            }
            known
                .to_mut()
                .extend(unknown.iter().map(|(id, etag)| (id.clone(), etag.clone())));
        }
        for Assembled {
            id,
            outcome,
            instances,
        } in self.assemble(&touched, window).await?
        {
            let remote = RemoteId::parse(id)?;
            match outcome {
                Ok(Some(item)) => {
                    set.series_occurrences.insert(
                        item.id.clone(),
                        series_occurrences(instances, listed_occurrences.remove(item.id.as_str())),
                    );
                    if known.get(&item.id) == Some(&item.etag) {
                        if full.is_some() {
                            set.unchanged.push(item.id);
                        }
                    } else {
                        set.upserts.push(item);
                    }
                }
                Ok(None) => set.uncertain_deletions.push(remote),
                Err(why) => set.failures.push((remote, why)),
            }
        }
        Ok(set)
    }

    async fn read(
        &self,
        _calendar: &CalendarId,
        ids: &[RemoteId],
    ) -> Result<Vec<ReadItem>, ProviderError> {
        let window = self.default_read_window()?;
        let raw: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let mut out = Vec::new();
        for Assembled { id, outcome, .. } in self.assemble(&raw, &window).await? {
            let remote = RemoteId::parse(id)?;
            out.push(match outcome {
                Ok(Some(item)) => ReadItem::Found(item),
                Ok(None) => ReadItem::Missing(remote),
                Err(why) => ReadItem::Failed(remote, why),
            });
        }
        Ok(out)
    }

    async fn create(
        &self,
        calendar: &CalendarId,
        key: &CreateKey,
        content: &ItemContent,
    ) -> Result<Written, ProviderError> {
        self.writable()?;
        let series = content.calendar().series().first().ok_or_else(|| {
            ProviderError::invalid("only events can be written to Microsoft Graph")
        })?;
        let mut body = convert::master_body(series)?;
        body.insert("transactionId".into(), json!(key.as_str()));
        let started = Timestamp::now();
        let url = self.url(&format!("calendars/{}/events", seg(calendar.as_str())))?;
        // The transactionId makes a repeated POST return the first event instead of a second one.
        let request = Request::new(Method::POST, url)
            .header(CONTENT_TYPE, "application/json")?
            .body(
                serde_json::to_vec(&Value::Object(body))
                    .map_err(|e| ProviderError::invalid(e.to_string()))?,
            )
            .idempotent(true);
        let response = self.send(request).await?;
        if !response.status.is_success() {
            return Err(response.error());
        }
        let created = parse_json(&response)?;
        let id = created
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::protocol("created event without id"))?
            .to_owned();
        let already_existed = created
            .get("createdDateTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_some_and(|t| t < started);
        self.write_overrides(&id, content).await?;
        let etag = if series.overrides().is_empty() && convert::exdate_instants(series).is_empty() {
            created
                .get("@odata.etag")
                .and_then(Value::as_str)
                .map(Etag::parse)
                .transpose()?
        } else {
            None
        };
        Ok(Written {
            id: RemoteId::parse(id)?,
            etag,
            already_existed,
        })
    }

    async fn update(
        &self,
        _calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
        content: &ItemContent,
    ) -> Result<Written, ProviderError> {
        self.writable()?;
        let series = content.calendar().series().first().ok_or_else(|| {
            ProviderError::invalid("only events can be written to Microsoft Graph")
        })?;
        let body = convert::master_body(series)?;
        let master_etag = series_etag::master(if_match);
        let request = Request::new(
            Method::PATCH,
            self.url(&format!("events/{}", seg(id.as_str())))?,
        )
        .header(CONTENT_TYPE, "application/json")?
        .header(IF_MATCH, master_etag)?
        .body(
            serde_json::to_vec(&Value::Object(body))
                .map_err(|e| ProviderError::invalid(e.to_string()))?,
        )
        .idempotent(true);
        let response = self.send(request).await?;
        match response.status.as_u16() {
            200..=299 => {}
            412 => return Err(ProviderError::PreconditionFailed),
            _ => return Err(response.error()),
        }
        let updated = parse_json(&response)?;
        self.write_overrides(id.as_str(), content).await?;
        let etag = if series.overrides().is_empty() && convert::exdate_instants(series).is_empty() {
            updated
                .get("@odata.etag")
                .and_then(Value::as_str)
                .map(Etag::parse)
                .transpose()?
        } else {
            None
        };
        Ok(Written {
            id: id.clone(),
            etag,
            already_existed: false,
        })
    }

    async fn delete(
        &self,
        _calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
    ) -> Result<(), ProviderError> {
        self.writable()?;
        let master_etag = series_etag::master(if_match);
        let request = Request::new(
            Method::DELETE,
            self.url(&format!("events/{}", seg(id.as_str())))?,
        )
        .header(IF_MATCH, master_etag)?;
        let response = self.send(request).await?;
        match response.status.as_u16() {
            200..=299 => Ok(()),
            412 => Err(ProviderError::PreconditionFailed),
            404 => Err(ProviderError::NotFound {
                what: id.to_string(),
            }),
            _ => Err(response.error()),
        }
    }

    async fn free_busy(
        &self,
        calendar: &CalendarId,
        window: &Window,
    ) -> Result<Vec<BusyPeriod>, ProviderError> {
        let cal = self
            .get_json(self.url(&format!("calendars/{}", seg(calendar.as_str())))?)
            .await?;
        let address = cal
            .get("owner")
            .and_then(|o| o.get("address"))
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Unsupported {
                what: "free/busy of a calendar without an owner address".into(),
            })?
            .to_owned();
        let body = json!({
            "schedules": [address],
            "startTime": {"dateTime": window.start().strftime("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"},
            "endTime": {"dateTime": window.end().strftime("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"},
            "availabilityViewInterval": 30,
        });
        let request = Request::new(Method::POST, self.url("calendar/getSchedule")?)
            .header(CONTENT_TYPE, "application/json")?
            .body(serde_json::to_vec(&body).map_err(|e| ProviderError::invalid(e.to_string()))?)
            .idempotent(true);
        let response = self.send(request).await?;
        if !response.status.is_success() {
            return Err(response.error());
        }
        let answer = parse_json(&response)?;
        let mut out = Vec::new();
        for schedule in answer
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(error) = schedule.get("error") {
                return Err(ProviderError::protocol(format!("getSchedule: {error}")));
            }
            for item in schedule
                .get("scheduleItems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kind = match item.get("status").and_then(Value::as_str) {
                    Some("busy") | Some("workingElsewhere") => BusyKind::Busy,
                    Some("tentative") => BusyKind::Tentative,
                    Some("oof") => BusyKind::OutOfOffice,
                    _ => continue,
                };
                let (Some(start), Some(end)) = (item.get("start"), item.get("end")) else {
                    continue;
                };
                let start = convert_instant(start)?;
                let end = convert_instant(end)?;
                out.push(BusyPeriod { start, end, kind });
            }
        }
        out.sort_by_key(|p| p.start);
        Ok(out)
    }
}

fn convert_instant(v: &Value) -> Result<Timestamp, ProviderError> {
    let dt = v
        .get("dateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::protocol("no dateTime"))?;
    let tz = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    let civil: jiff::civil::DateTime = dt
        .parse()
        .map_err(|e| ProviderError::protocol(format!("dateTime {dt}: {e}")))?;
    let zone = convert::zone_of(Some(tz))
        .map(|(_, z)| z)
        .unwrap_or(jiff::tz::TimeZone::UTC);
    zone.to_ambiguous_timestamp(civil)
        .compatible()
        .map_err(|e| ProviderError::protocol(e.to_string()))
}
