//! CalDAV (RFC 4791) with RFC 6578 `sync-collection`, measured against Radicale and Xandikos.
//!
//! Server quirks handled here (PROTOCOLS.md §7):
//! - an invalid or unknown sync token comes back as 403 (Radicale), 409 or 412 (Xandikos): the
//!   read restarts as a full listing and says so;
//! - `DAV:limit` is never sent (Xandikos returns N items and the current token, losing the rest);
//!   a 507 truncation is still followed if a server does it the RFC way;
//! - hrefs come back percent-encoded (`%40`) or as sent (`@`): every href is normalised to one
//!   canonical form before it becomes a [`RemoteId`];
//! - response-level 404s are deletions in an incremental read, and ignored tombstones in an
//!   initial one (Radicale lists long-deleted items there);
//! - tokens are opaque (Radicale: URIs, Xandikos: bare hashes);
//! - multigets go in batches (Radicale refuses a REPORT expanding past 10 000 VEVENTs);
//! - every XML body is sent with `Content-Type: application/xml` (Xandikos answers 415 without).
//!
//! Servers without `sync-collection` are read with a ctag gate and a `PROPFIND Depth: 1` etag
//! listing. On Radicale, whose every change indicator hashes the whole collection, a settled
//! collection date lets a no-op read skip the listing ([`gate`]).

mod gate;
pub mod xml;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{CONTENT_TYPE, ETAG, HeaderName, IF_MATCH, IF_NONE_MATCH};
use http::{Method, StatusCode};
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::sync::Mutex;
use url::Url;

use crate::content::ItemContent;
use crate::error::{ProviderError, Unavailability};
use crate::http::{Budget, Credentials, Endpoint, HttpClient, Request, Response};
use crate::provider::{CalendarProvider, Diagnosis, HeldVersions, ProviderKind};
use crate::types::{
    BusyKind, BusyPeriod, CalendarId, Capabilities, ChangeSet, CreateKey, Cursor, Etag,
    FullListingReason, KnownVersions, Probe, ReadItem, RemoteCalendar, RemoteId, RemoteItem,
    Window, Written,
};
use gate::{Gate, Reading};
use xml::{APPLE, CALDAV, CALSERVER, DAV, DavResponse, Multistatus};

/// Hrefs per `calendar-multiget`: small enough for Radicale's 10 000-VEVENT report limit even with
/// long recurring series, large enough to keep round trips few.
pub const MULTIGET_BATCH: usize = 200;

const XML_CONTENT_TYPE: &str = "application/xml; charset=utf-8";
const ICAL_CONTENT_TYPE: &str = "text/calendar; charset=utf-8";

/// Bytes kept as they are in a canonical path segment: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Turns any href a server sends (absolute URL or path, `%40` or `@`) into one canonical absolute
/// path: each segment percent-decoded, then re-encoded with only unreserved characters left bare.
pub fn normalize_href(base: &Url, href: &str) -> Result<String, ProviderError> {
    let url = base
        .join(href.trim())
        .map_err(|_| ProviderError::protocol(format!("invalid href {href:?}")))?;
    let mut out = String::new();
    for segment in url.path().split('/').skip(1) {
        out.push('/');
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        let decoded = String::from_utf8_lossy(&decoded);
        out.push_str(&utf8_percent_encode(&decoded, SEGMENT).to_string());
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn method(name: &'static str) -> Method {
    // Only called with the fixed WebDAV names below, which are valid tokens.
    Method::from_bytes(name.as_bytes()).unwrap_or(Method::GET)
}

const DEPTH: HeaderName = HeaderName::from_static("depth");

/// One CalDAV account.
#[derive(Debug)]
pub struct CaldavProvider {
    endpoint: Endpoint,
    url: Url,
    home: Mutex<Option<Url>>,
}

enum SyncOutcome {
    Done(Listing, String),
    InvalidToken,
    Unsupported,
}

/// What a listing names: each member's etag (`None`: reported gone), and the `calendar-data` of
/// those the server sent along, by href (an incremental `sync-collection` asks for it).
#[derive(Default)]
struct Listing {
    entries: Vec<(String, Option<Etag>)>,
    inline: HashMap<String, String>,
}

/// The cursor envelope: which kind of change source produced it. The token inside stays opaque.
/// A sync token carries the collection date read before its listing when the server is one whose
/// date can gate the next listing ([`gate`]).
enum CaldavCursor {
    SyncToken { token: String, gate: Option<Gate> },
    Ctag(Option<String>),
}

impl CaldavCursor {
    fn encode(&self) -> Result<Cursor, ProviderError> {
        match self {
            Self::SyncToken { token, gate: None } => Cursor::parse(format!("sync:{token}")),
            Self::SyncToken {
                token,
                gate: Some(gate),
            } => Cursor::parse(format!("{};sync:{token}", gate.encode())),
            Self::Ctag(Some(ctag)) => Cursor::parse(format!("ctag:{ctag}")),
            Self::Ctag(None) => Cursor::parse("ctag-none"),
        }
    }

    fn decode(cursor: &Cursor) -> Option<Self> {
        let text = cursor.as_str();
        if text.starts_with("lm") {
            let (gate, rest) = text.split_once(';')?;
            let gate = Gate::decode(gate)?;
            let token = rest.strip_prefix("sync:")?;
            return Some(Self::SyncToken {
                token: token.to_owned(),
                gate: Some(gate),
            });
        }
        if let Some(token) = text.strip_prefix("sync:") {
            Some(Self::SyncToken {
                token: token.to_owned(),
                gate: None,
            })
        } else if let Some(ctag) = text.strip_prefix("ctag:") {
            Some(Self::Ctag(Some(ctag.to_owned())))
        } else if text == "ctag-none" {
            Some(Self::Ctag(None))
        } else {
            None
        }
    }
}

impl CaldavProvider {
    /// `url` is what the person typed: the server root, a principal, a calendar home or a calendar.
    pub fn new(
        http: &HttpClient,
        url: &str,
        credentials: Credentials,
        budget: Arc<Budget>,
    ) -> Result<Self, ProviderError> {
        let url = Url::parse(url.trim())
            .map_err(|e| ProviderError::invalid(format!("CalDAV URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ProviderError::invalid(
                "the CalDAV URL must start with http:// or https://",
            ));
        }
        Ok(Self {
            endpoint: http.endpoint("caldav", credentials, budget),
            url,
            home: Mutex::new(None),
        })
    }

    fn url_for(&self, path: &str) -> Result<Url, ProviderError> {
        self.url
            .join(path)
            .map_err(|_| ProviderError::protocol(format!("invalid path {path:?}")))
    }

    fn calendar_url(&self, calendar: &CalendarId) -> Result<Url, ProviderError> {
        let mut path = normalize_href(&self.url, calendar.as_str())?;
        if !path.ends_with('/') {
            path.push('/');
        }
        self.url_for(&path)
    }

    fn item_url(&self, id: &RemoteId) -> Result<Url, ProviderError> {
        let path = normalize_href(&self.url, id.as_str())?;
        self.url_for(&path)
    }

    async fn xml_request(
        &self,
        verb: &'static str,
        url: Url,
        depth_value: &'static str,
        body: String,
    ) -> Result<Response, ProviderError> {
        self.xml_request_cached(verb, url, depth_value, body, false)
            .await
    }

    /// `cacheable`: the answer may come from the `cache_ttl` cache (discovery and calendar lists
    /// only; never a change listing).
    async fn xml_request_cached(
        &self,
        verb: &'static str,
        url: Url,
        depth_value: &'static str,
        body: String,
        cacheable: bool,
    ) -> Result<Response, ProviderError> {
        let mut request = Request::new(method(verb), url)
            .header(DEPTH, depth_value)?
            .header(CONTENT_TYPE, XML_CONTENT_TYPE)?
            .body(body);
        if cacheable {
            request = request.cacheable();
        }
        self.endpoint.send(request).await
    }

    /// PROPFIND that must answer 207; other statuses become errors.
    async fn propfind(
        &self,
        url: Url,
        depth_value: &'static str,
        props: &[&str],
    ) -> Result<(Multistatus, Url), ProviderError> {
        self.propfind_cached(url, depth_value, props, false).await
    }

    async fn propfind_cached(
        &self,
        url: Url,
        depth_value: &'static str,
        props: &[&str],
        cacheable: bool,
    ) -> Result<(Multistatus, Url), ProviderError> {
        let response = self
            .xml_request_cached(
                "PROPFIND",
                url,
                depth_value,
                xml::propfind(props),
                cacheable,
            )
            .await?;
        if response.status != StatusCode::MULTI_STATUS {
            return Err(match response.status.as_u16() {
                200 | 405 | 501 => ProviderError::protocol(format!(
                    "{} answered PROPFIND with HTTP {}: not a CalDAV server",
                    response.url,
                    response.status.as_u16()
                )),
                _ => response.error(),
            });
        }
        let multistatus = xml::parse_multistatus(&response.text())?;
        Ok((multistatus, response.url))
    }

    /// Finds the calendar home: well-known URL or the given one → current-user-principal →
    /// calendar-home-set. A URL that is already a home or a calendar is used as it is.
    async fn discover_home(&self) -> Result<Url, ProviderError> {
        if let Some(home) = self.home.lock().await.clone() {
            return Ok(home);
        }
        let props = [
            "D:current-user-principal",
            "C:calendar-home-set",
            "D:resourcetype",
        ];
        let mut candidates = vec![self.url.clone()];
        if let Ok(well_known) = self.url.join("/.well-known/caldav") {
            if self.url.path() == "/" || self.url.path().is_empty() {
                candidates.insert(0, well_known);
            } else {
                candidates.push(well_known);
            }
        }
        let mut last_error = None;
        let mut found = None;
        for candidate in candidates {
            match self.propfind_cached(candidate, "0", &props, true).await {
                Ok(found_here) => {
                    found = Some(found_here);
                    break;
                }
                Err(
                    e @ (ProviderError::Auth { .. }
                    | ProviderError::Blocked { .. }
                    | ProviderError::Unavailable { .. }
                    | ProviderError::RateLimited { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some((multistatus, context)) = found else {
            return Err(
                last_error.unwrap_or_else(|| ProviderError::protocol("no CalDAV service found"))
            );
        };
        let first = multistatus.responses.first();
        let href_of = |response: Option<&DavResponse>, ns: &str, name: &str| {
            response
                .and_then(|r| r.prop(ns, name))
                .and_then(|p| p.child(DAV, "href"))
                .map(xml::Element::text_trimmed)
        };
        let home = if let Some(home) = href_of(first, CALDAV, "calendar-home-set") {
            context
                .join(&home)
                .map_err(|_| ProviderError::protocol("invalid calendar-home-set"))?
        } else if let Some(principal) = href_of(first, DAV, "current-user-principal") {
            let principal = context
                .join(&principal)
                .map_err(|_| ProviderError::protocol("invalid principal href"))?;
            let (ms, principal_url) = self
                .propfind_cached(principal, "0", &["C:calendar-home-set"], true)
                .await?;
            let home =
                href_of(ms.responses.first(), CALDAV, "calendar-home-set").ok_or_else(|| {
                    ProviderError::protocol(
                        "the principal has no calendar-home-set: not a CalDAV account",
                    )
                })?;
            principal_url
                .join(&home)
                .map_err(|_| ProviderError::protocol("invalid calendar-home-set"))?
        } else {
            // No principal support: the URL itself is the home (or a calendar).
            context
        };
        *self.home.lock().await = Some(home.clone());
        Ok(home)
    }

    /// An incremental `sync-collection` that asks for the changed members' data as well, so no
    /// multiget follows; asked again without it when that answer fails in a way the data could
    /// explain (Radicale refuses a report past its VEVENT limit with 400; a burst of changes can
    /// outgrow the body limit; a server may not offer the property).
    async fn sync_changes(&self, url: &Url, token: &str) -> Result<SyncOutcome, ProviderError> {
        match self.sync_collection(url, Some(token), true).await {
            Ok(SyncOutcome::Unsupported) => {}
            Err(e) if !data_could_explain(&e) => return Err(e),
            Err(_) => {}
            Ok(outcome) => return Ok(outcome),
        }
        self.sync_collection(url, Some(token), false).await
    }

    async fn sync_collection(
        &self,
        url: &Url,
        token: Option<&str>,
        with_data: bool,
    ) -> Result<SyncOutcome, ProviderError> {
        let mut token = token.map(str::to_owned);
        let mut entries = Vec::new();
        let mut inline = HashMap::new();
        let collection = normalize_href(url, url.path())?;
        // A server that truncates (507 on the request-URI) expects to be asked again with the
        // token it returned; bounded so a misbehaving server cannot loop us forever.
        for _round in 0..1000 {
            let response = self
                .xml_request(
                    "REPORT",
                    url.clone(),
                    "0",
                    xml::sync_collection(token.as_deref(), with_data),
                )
                .await?;
            let status = response.status.as_u16();
            if status != 207 {
                let conditions = xml::error_conditions(&response.text());
                let names: Vec<&str> = conditions.iter().map(|(_, n)| n.as_str()).collect();
                return match status {
                    401 => Err(response.error()),
                    403 | 409 | 412 if names.contains(&"valid-sync-token") => {
                        Ok(SyncOutcome::InvalidToken)
                    }
                    403 | 409 | 412 if token.is_some() && !names.contains(&"supported-report") => {
                        Ok(SyncOutcome::InvalidToken)
                    }
                    400 | 403 | 405 | 415 | 501 => Ok(SyncOutcome::Unsupported),
                    _ => Err(response.error()),
                };
            }
            let multistatus = xml::parse_multistatus(&response.text())?;
            let mut truncated = false;
            for r in &multistatus.responses {
                for href in &r.hrefs {
                    let path = normalize_href(url, href)?;
                    if path == collection {
                        truncated |= r.status == Some(507);
                        continue;
                    }
                    if r.status == Some(404) {
                        inline.remove(&path);
                        entries.push((path, None));
                    } else if let Some(etag) = r.prop_text(DAV, "getetag") {
                        match r.prop_text(CALDAV, "calendar-data") {
                            Some(data) => inline.insert(path.clone(), data),
                            None => inline.remove(&path),
                        };
                        entries.push((path, Some(Etag::parse(etag)?)));
                    }
                }
            }
            let new_token = multistatus.sync_token.ok_or_else(|| {
                ProviderError::protocol("sync-collection answer without a sync-token")
            })?;
            if !truncated {
                let listing = Listing {
                    entries: dedup_last(entries),
                    inline,
                };
                return Ok(SyncOutcome::Done(listing, new_token));
            }
            token = Some(new_token);
        }
        Err(ProviderError::protocol("sync-collection kept truncating"))
    }

    /// The collection's `DAV:getlastmodified` with the server's clock (its `Date` header), for the
    /// [`gate`]; `None` when the server gives either no date or does not answer with a multistatus
    /// (the listing that follows reports what is wrong).
    async fn collection_date(&self, url: &Url) -> Result<Option<Reading>, ProviderError> {
        let response = self
            .xml_request(
                "PROPFIND",
                url.clone(),
                "0",
                xml::propfind(&["D:getlastmodified"]),
            )
            .await?;
        if response.status == StatusCode::UNAUTHORIZED {
            return Err(response.error());
        }
        if response.status != StatusCode::MULTI_STATUS {
            return Ok(None);
        }
        let server_now = response
            .header_str(&http::header::DATE)
            .and_then(gate::http_date);
        let multistatus = xml::parse_multistatus(&response.text())?;
        let modified = multistatus
            .responses
            .first()
            .and_then(|r| r.prop_text(DAV, "getlastmodified"))
            .and_then(|text| gate::http_date(&text));
        Ok(modified
            .zip(server_now)
            .map(|(modified, server_now)| Reading {
                modified,
                server_now,
            }))
    }

    async fn ctag(&self, url: &Url) -> Result<Option<String>, ProviderError> {
        let (ms, _) = self
            .propfind(url.clone(), "0", &["CS:getctag", "D:sync-token"])
            .await?;
        let first = ms.responses.first();
        Ok(first.and_then(|r| {
            r.prop_text(CALSERVER, "getctag")
                .or_else(|| r.prop_text(DAV, "sync-token"))
        }))
    }

    async fn etag_listing(&self, url: &Url) -> Result<Vec<(String, Option<Etag>)>, ProviderError> {
        let (ms, _) = self
            .propfind(url.clone(), "1", &["D:getetag", "D:resourcetype"])
            .await?;
        let collection = normalize_href(url, url.path())?;
        let mut entries = Vec::new();
        for r in &ms.responses {
            let is_collection = r
                .prop(DAV, "resourcetype")
                .is_some_and(|t| t.child(DAV, "collection").is_some());
            for href in &r.hrefs {
                let path = normalize_href(url, href)?;
                if path == collection || is_collection {
                    continue;
                }
                if let Some(etag) = r.prop_text(DAV, "getetag") {
                    entries.push((path, Some(Etag::parse(etag)?)));
                }
            }
        }
        Ok(entries)
    }

    /// `calendar-multiget` in batches, the next batch asked while the last answer is parsed.
    ///
    /// Why two in flight: on an initial import the server spends its time building each answer and
    /// we spend ours parsing it (XML, then every event), and one after the other the two add up.
    /// With the next request already sent, the server works on it while we parse. Two, not more: the server gets no more concurrent work than one
    /// extra request per link, and answers are still taken (and items reported) in order. The
    /// endpoint's budget still bounds the requests in flight across the provider.
    async fn multiget(
        &self,
        calendar_url: &Url,
        paths: &[String],
    ) -> Result<Vec<ReadItem>, ProviderError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        const IN_FLIGHT: usize = 2;
        let mut out = Vec::with_capacity(paths.len());
        let batches: Vec<&[String]> = paths
            .chunks(self.endpoint.batch_size(MULTIGET_BATCH))
            .collect();
        // By index: a closure taking the borrowed batch itself is not general enough for the
        // `Send` future `async_trait` asks of the callers.
        let mut answers = stream::iter(0..batches.len())
            .map(|i| {
                let batch = batches[i];
                async move {
                    let response = self
                        .xml_request(
                            "REPORT",
                            calendar_url.clone(),
                            "1",
                            xml::calendar_multiget(batch),
                        )
                        .await?;
                    Ok::<_, ProviderError>((batch, response))
                }
            })
            .buffered(IN_FLIGHT);
        while let Some((batch, response)) = answers.try_next().await? {
            if response.status != StatusCode::MULTI_STATUS {
                return Err(response.error());
            }
            let multistatus = xml::parse_multistatus(&response.text())?;
            let mut answered: HashSet<String> = HashSet::new();
            for r in &multistatus.responses {
                for href in &r.hrefs {
                    let path = normalize_href(calendar_url, href)?;
                    let id = RemoteId::parse(path.clone())?;
                    answered.insert(path);
                    let data = r.prop_text(CALDAV, "calendar-data");
                    let etag = r.prop_text(DAV, "getetag");
                    let item = match (r.status, data, etag) {
                        (Some(404), _, _) => ReadItem::Missing(id),
                        (_, Some(data), Some(etag)) => match Etag::parse(etag) {
                            Ok(etag) => read_item(id, data, etag),
                            Err(e) => ReadItem::Failed(id, e.to_string()),
                        },
                        _ if r.propstats.iter().any(|(s, _)| *s == 404)
                            && r.prop(CALDAV, "calendar-data").is_none() =>
                        {
                            ReadItem::Missing(id)
                        }
                        _ => ReadItem::Failed(
                            id,
                            "the server sent no calendar-data or etag".to_owned(),
                        ),
                    };
                    out.push(item);
                }
            }
            for path in batch {
                if !answered.contains(path) {
                    out.push(ReadItem::Missing(RemoteId::parse(path.clone())?));
                }
            }
        }
        Ok(out)
    }

    /// Turns a listing into a change set: fetches what is new or changed relative to `known`.
    async fn assemble(
        &self,
        calendar_url: &Url,
        listing: Listing,
        held: &dyn HeldVersions,
        full: Option<FullListingReason>,
        cursor: Cursor,
    ) -> Result<ChangeSet, ProviderError> {
        let Listing {
            entries,
            mut inline,
        } = listing;
        let mut set = ChangeSet {
            cursor: Some(cursor),
            full_listing: full,
            ..ChangeSet::default()
        };
        // The versions held: of every item for a full listing (what it does not list is gone), else
        // of the items this report names.
        let known: Cow<'_, KnownVersions> = match full {
            Some(_) => held.all().await?,
            None => {
                let named = entries
                    .iter()
                    .map(|(path, _)| RemoteId::parse(path.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Cow::Owned(held.of(&named).await?)
            }
        };
        let mut to_fetch = Vec::new();
        let mut read = Vec::new();
        let mut present: HashSet<RemoteId> = HashSet::new();
        for (path, etag) in entries {
            let id = RemoteId::parse(path.clone())?;
            match etag {
                // Reported even when unknown (created and deleted between two reads): harmless.
                None if full.is_none() => set.deletions.push(id),
                // An initial listing's 404s are tombstones of long-gone items (Radicale).
                None => {}
                Some(etag) => {
                    present.insert(id.clone());
                    if known.get(&id) == Some(&etag) {
                        set.unchanged.push(id);
                    } else if let Some(data) = inline.remove(&path) {
                        read.push(read_item(id, data, etag));
                    } else {
                        to_fetch.push(path);
                    }
                }
            }
        }
        if full.is_some() {
            let mut gone: Vec<RemoteId> = known
                .keys()
                .filter(|id| !present.contains(*id))
                .cloned()
                .collect();
            gone.sort();
            set.deletions = gone;
        }
        read.extend(self.multiget(calendar_url, &to_fetch).await?);
        for item in read {
            match item {
                ReadItem::Found(item) if item.content.is_event() => set.upserts.push(item),
                // Tasks and journals in a mixed collection are not events: left alone.
                ReadItem::Found(_) => {}
                // Listed, then gone before the fetch: a deletion.
                ReadItem::Missing(id) => {
                    if known.contains_key(&id) || full.is_none() {
                        set.deletions.push(id);
                    }
                }
                ReadItem::Failed(id, reason) => set.failures.push((id, reason)),
            }
        }
        Ok(set)
    }

    async fn get_item(&self, url: Url) -> Result<Option<(Etag, ItemContent)>, ProviderError> {
        let response = self.endpoint.send(Request::new(Method::GET, url)).await?;
        match response.status.as_u16() {
            200 => {
                let etag = response
                    .header_str(&ETAG)
                    .map(Etag::parse)
                    .transpose()?
                    .ok_or_else(|| ProviderError::protocol("GET answered without an ETag"))?;
                Ok(Some((etag, ItemContent::parse(response.text())?)))
            }
            404 | 410 => Ok(None),
            _ => Err(response.error()),
        }
    }

    fn write_error(response: &Response) -> ProviderError {
        let conditions = xml::error_conditions(&response.text());
        if conditions
            .iter()
            .any(|(ns, name)| ns == CALDAV && name == "no-uid-conflict")
        {
            return ProviderError::Conflict {
                detail: "another item on the server already has this UID".to_owned(),
            };
        }
        match response.status.as_u16() {
            400 | 415 | 422 => ProviderError::Rejected {
                status: response.status.as_u16(),
                detail: response.text().chars().take(300).collect(),
            },
            403 if !conditions.is_empty() => ProviderError::Rejected {
                status: 403,
                detail: conditions
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            _ => response.error(),
        }
    }

    /// The probe of a server without a trusted date: the one change indicator the cursor holds.
    async fn probe_token(
        &self,
        url: &Url,
        previous: &CaldavCursor,
    ) -> Result<Probe, ProviderError> {
        // Only the property the cursor holds: servers compute each from the whole collection (Radicale
        // at 10,000 items: ~0.65 s for the sync-token alone, ~1.1 s for both).
        let wanted: &[&str] = match previous {
            CaldavCursor::SyncToken { .. } => &["D:sync-token"],
            CaldavCursor::Ctag(_) => &["CS:getctag", "D:sync-token"],
        };
        let (ms, _) = self.propfind(url.clone(), "0", wanted).await?;
        let Some(props) = ms.responses.first() else {
            return Ok(Probe::Unknown);
        };
        let current = match previous {
            CaldavCursor::SyncToken { .. } => props.prop_text(DAV, "sync-token"),
            CaldavCursor::Ctag(Some(_)) => props
                .prop_text(CALSERVER, "getctag")
                .or_else(|| props.prop_text(DAV, "sync-token")),
            CaldavCursor::Ctag(None) => None,
        };
        let recorded = match previous {
            CaldavCursor::SyncToken { token, .. } => Some(token),
            CaldavCursor::Ctag(ctag) => ctag.as_ref(),
        };
        Ok(match (current, recorded) {
            (Some(now), Some(then)) if &now == then => Probe::Unchanged,
            (Some(_), Some(_)) => Probe::Changed,
            _ => Probe::Unknown,
        })
    }

    fn written_etag(response: &Response) -> Result<Option<Etag>, ProviderError> {
        // A weak etag cannot guard a later If-Match: treat it as absent and let the caller re-read.
        match response.header_str(&ETAG) {
            Some(tag) if !tag.starts_with("W/") => Ok(Some(Etag::parse(tag)?)),
            _ => Ok(None),
        }
    }
}

/// One member read with its data (from a multiget or a sync-collection that carried it): parsed,
/// or failed with the reason (the others still count).
fn read_item(id: RemoteId, data: String, etag: Etag) -> ReadItem {
    match ItemContent::parse(data) {
        Ok(content) => ReadItem::Found(RemoteItem { id, etag, content }),
        Err(e) => ReadItem::Failed(id, e.to_string()),
    }
}

/// Whether a failed `sync-collection` that asked for data may succeed without it: not when the
/// credentials, the account's rights, throttling or the network are what failed.
fn data_could_explain(error: &ProviderError) -> bool {
    !matches!(
        error,
        ProviderError::Auth { .. }
            | ProviderError::NeedsReauthorization { .. }
            | ProviderError::Forbidden { .. }
            | ProviderError::RateLimited { .. }
            | ProviderError::Blocked { .. }
            | ProviderError::CursorInvalid
            | ProviderError::Unavailable {
                reason: Unavailability::Dns | Unavailability::Connect | Unavailability::Tls,
                ..
            }
    )
}

/// Keeps the last entry per href (a server may report one item twice across truncated rounds).
fn dedup_last(entries: Vec<(String, Option<Etag>)>) -> Vec<(String, Option<Etag>)> {
    let mut seen = HashSet::new();
    let mut out: Vec<_> = entries
        .into_iter()
        .rev()
        .filter(|(path, _)| seen.insert(path.clone()))
        .collect();
    out.reverse();
    out
}

fn parse_utc(text: &str) -> Option<Timestamp> {
    let text = text.trim().strip_suffix('Z')?;
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", text).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

fn format_utc(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Reads the FREEBUSY periods of a VFREEBUSY answer.
pub fn parse_free_busy(ical: &str) -> Result<Vec<BusyPeriod>, ProviderError> {
    let calendar = calbridge_model::ical::parse(ical.as_bytes())
        .map_err(|e| ProviderError::protocol(format!("free/busy answer: {e}")))?;
    let mut periods = Vec::new();
    for component in calendar
        .other_components()
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case("VFREEBUSY"))
    {
        for property in component
            .properties
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case("FREEBUSY"))
        {
            let kind = match property
                .param_value("FBTYPE")
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("BUSY") => BusyKind::Busy,
                Some("BUSY-TENTATIVE") => BusyKind::Tentative,
                Some("BUSY-UNAVAILABLE") => BusyKind::OutOfOffice,
                Some("FREE") => continue,
                Some(_) => BusyKind::Busy,
            };
            for period in property.value.split(',') {
                let (start, end) = period.split_once('/').ok_or_else(|| {
                    ProviderError::protocol(format!("bad FREEBUSY period {period:?}"))
                })?;
                let start = parse_utc(start).ok_or_else(|| {
                    ProviderError::protocol(format!("bad FREEBUSY start {start:?}"))
                })?;
                let end = match parse_utc(end) {
                    Some(end) => end,
                    None => {
                        let span: jiff::Span = end.trim().parse().map_err(|_| {
                            ProviderError::protocol(format!("bad FREEBUSY end {end:?}"))
                        })?;
                        start
                            .to_zoned(jiff::tz::TimeZone::UTC)
                            .checked_add(span)
                            .map_err(|_| ProviderError::protocol("FREEBUSY duration out of range"))?
                            .timestamp()
                    }
                };
                periods.push(BusyPeriod { start, end, kind });
            }
        }
    }
    periods.sort_by_key(|p| (p.start, p.end));
    Ok(periods)
}

#[async_trait]
impl CalendarProvider for CaldavProvider {
    /// On Radicale (a trusted [`gate`]): one `PROPFIND Depth: 0` of the collection's date when the
    /// gate is armed, none when busy or dateless, and "unknown" whenever the date cannot decide
    /// ([`Gate::probe`]); a server that gives no date is asked its token. Elsewhere one `PROPFIND Depth: 0` of `DAV:sync-token` or `CS:getctag`,
    /// compared with the token the cursor holds (a sync-token cursor with the sync-token, a ctag
    /// cursor with what `changes` read).
    async fn probe(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
    ) -> Result<Probe, ProviderError> {
        let Some(previous) = cursor.and_then(CaldavCursor::decode) else {
            return Ok(Probe::Changed);
        };
        let url = self.calendar_url(calendar)?;
        // On a trusted server the token is never asked (`Gate::probe` says why).
        if let CaldavCursor::SyncToken { token, gate } = &previous {
            match gate {
                Some(armed @ Gate::Armed(_)) => {
                    if let Some(now) = self.collection_date(&url).await? {
                        return Ok(armed.probe(&now));
                    }
                }
                // Changing at the last listing: the sync's listing is the question to ask, and the
                // first one that finds nothing hands the link back to the date.
                Some(Gate::Busy) => return Ok(Probe::Unknown),
                // A trusted server's token without a date: the listing after a busy one, which did
                // not ask the date. The next listing asks it and arms the gate.
                None if gate::trusted(token) => return Ok(Probe::Unknown),
                Some(Gate::Refuted) | None => {}
            }
        }
        self.probe_token(&url, &previous).await
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Caldav
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writable: true,
            free_busy: true,
            incremental: true,
            windowed_reads: false,
            max_batch: MULTIGET_BATCH,
        }
    }

    async fn test_connection(&self) -> Diagnosis {
        match self.list_calendars().await {
            Ok(calendars) => Diagnosis::ok(calendars),
            Err(error) => Diagnosis::from_error(&error),
        }
    }

    async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError> {
        let home = self.discover_home().await?;
        let props = [
            "D:resourcetype",
            "D:displayname",
            "CS:getctag",
            "D:sync-token",
            "C:supported-calendar-component-set",
            "C:calendar-description",
            "C:calendar-timezone",
            "A:calendar-color",
            "D:current-user-privilege-set",
        ];
        let (ms, home) = self.propfind_cached(home, "1", &props, true).await?;
        let mut calendars = Vec::new();
        for r in &ms.responses {
            let Some(kind) = r.prop(DAV, "resourcetype") else {
                continue;
            };
            if kind.child(CALDAV, "calendar").is_none()
                || kind.child(CALDAV, "schedule-inbox").is_some()
                || kind.child(CALDAV, "schedule-outbox").is_some()
            {
                continue;
            }
            let Some(href) = r.hrefs.first() else {
                continue;
            };
            let path = normalize_href(&home, href)?;
            let components = r
                .prop(CALDAV, "supported-calendar-component-set")
                .map(|set| {
                    set.children_named(CALDAV, "comp")
                        .filter_map(|c| c.attribute("name").map(str::to_ascii_uppercase))
                        .collect()
                })
                .unwrap_or_default();
            let read_only = r
                .prop(DAV, "current-user-privilege-set")
                .is_some_and(|set| {
                    !set.children_named(DAV, "privilege").any(|p| {
                        p.child(DAV, "write").is_some()
                            || p.child(DAV, "write-content").is_some()
                            || p.child(DAV, "all").is_some()
                            || p.child(DAV, "bind").is_some()
                    })
                });
            let time_zone = r.prop_text(CALDAV, "calendar-timezone").and_then(|tz| {
                tz.lines()
                    .find_map(|l| l.trim().strip_prefix("TZID:").map(str::to_owned))
            });
            calendars.push(RemoteCalendar {
                name: r.prop_text(DAV, "displayname").unwrap_or_else(|| {
                    path.trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                }),
                id: CalendarId::parse(path)?,
                description: r.prop_text(CALDAV, "calendar-description"),
                color: r.prop_text(APPLE, "calendar-color"),
                time_zone,
                components,
                read_only,
                change_tag: r
                    .prop_text(DAV, "sync-token")
                    .or_else(|| r.prop_text(CALSERVER, "getctag")),
            });
        }
        Ok(calendars)
    }

    async fn changes(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
        _window: &Window,
        known: &dyn HeldVersions,
    ) -> Result<ChangeSet, ProviderError> {
        let url = self.calendar_url(calendar)?;
        let previous = cursor
            .map(|c| CaldavCursor::decode(c).ok_or(ProviderError::CursorInvalid))
            .transpose();
        // A cursor we cannot read is treated like one the server refused.
        let (previous, mut reason) = match previous {
            Ok(None) => (None, FullListingReason::NoCursor),
            Ok(Some(p)) => (Some(p), FullListingReason::NoCursor),
            Err(_) => (None, FullListingReason::CursorInvalid),
        };
        // The collection's date, read before any listing so that a change made during the listing
        // moves it past what the cursor records. Only where it can gate (see `gate`): a sync token
        // of a trusted server that is not busy. A first listing (or one after a cursor we cannot
        // read) does not know the server yet, and elsewhere than on Radicale the date would be a
        // request for nothing; Radicale's gate arms at the next read instead, which asks the date
        // because the token says whose it is (one more listing per link, once).
        let wants_date = match &previous {
            Some(CaldavCursor::SyncToken { token, gate }) => match gate {
                Some(Gate::Armed(_)) => true,
                Some(Gate::Refuted | Gate::Busy) => false,
                None => gate::trusted(token),
            },
            None | Some(CaldavCursor::Ctag(_)) => false,
        };
        let reading = if wants_date {
            self.collection_date(&url).await?
        } else {
            None
        };
        let prior_gate = match &previous {
            Some(CaldavCursor::SyncToken { gate, .. }) => *gate,
            _ => None,
        };
        if let (Some(gate), Some(now)) = (prior_gate, reading)
            && gate.unchanged(&now)
        {
            return Ok(ChangeSet {
                cursor: cursor.cloned(),
                ..ChangeSet::default()
            });
        }
        if let Some(CaldavCursor::SyncToken { token, .. }) = &previous {
            match self.sync_changes(&url, token).await? {
                SyncOutcome::Done(listing, new_token) => {
                    let found = !listing.entries.is_empty();
                    let gate = Gate::after_listing(prior_gate, reading, found, &new_token);
                    let cursor = CaldavCursor::SyncToken {
                        token: new_token,
                        gate,
                    }
                    .encode()?;
                    return self.assemble(&url, listing, known, None, cursor).await;
                }
                SyncOutcome::InvalidToken | SyncOutcome::Unsupported => {
                    reason = FullListingReason::CursorInvalid
                }
            }
        }
        let ctag_mode = matches!(previous, Some(CaldavCursor::Ctag(_)));
        if !ctag_mode {
            // The first listing names every member: their data comes by multiget, in batches.
            match self.sync_collection(&url, None, false).await? {
                SyncOutcome::Done(listing, token) => {
                    // A complete listing: what it names says nothing about the old date.
                    let gate = Gate::after_listing(prior_gate, reading, false, &token);
                    let cursor = CaldavCursor::SyncToken { token, gate }.encode()?;
                    return self
                        .assemble(&url, listing, known, Some(reason), cursor)
                        .await;
                }
                SyncOutcome::InvalidToken => {
                    return Err(ProviderError::protocol(
                        "the server refused an empty sync-token",
                    ));
                }
                SyncOutcome::Unsupported => {}
            }
        }
        // No sync-collection: the ctag says whether anything changed, an etag listing says what.
        let ctag = self.ctag(&url).await?;
        if let (Some(CaldavCursor::Ctag(Some(old))), Some(new)) = (&previous, &ctag)
            && old == new
        {
            return Ok(ChangeSet {
                cursor: cursor.cloned(),
                ..ChangeSet::default()
            });
        }
        let full = if previous.is_some() {
            FullListingReason::NotIncremental
        } else {
            reason
        };
        let listing = Listing {
            entries: self.etag_listing(&url).await?,
            inline: HashMap::new(),
        };
        // The ctag was read before the listing, so a change during the listing shows next time.
        let cursor = CaldavCursor::Ctag(ctag).encode()?;
        self.assemble(&url, listing, known, Some(full), cursor)
            .await
    }

    async fn read(
        &self,
        calendar: &CalendarId,
        ids: &[RemoteId],
    ) -> Result<Vec<ReadItem>, ProviderError> {
        let url = self.calendar_url(calendar)?;
        let paths: Vec<String> = ids
            .iter()
            .map(|id| normalize_href(&url, id.as_str()))
            .collect::<Result<_, _>>()?;
        self.multiget(&url, &paths).await
    }

    async fn create(
        &self,
        calendar: &CalendarId,
        key: &CreateKey,
        content: &ItemContent,
    ) -> Result<Written, ProviderError> {
        let calendar_url = self.calendar_url(calendar)?;
        let url = calendar_url
            .join(&format!("{}.ics", key.as_str()))
            .map_err(|_| ProviderError::invalid("bad create key"))?;
        let id = RemoteId::parse(normalize_href(&url, url.path())?)?;
        let request = Request::new(Method::PUT, url.clone())
            .header(IF_NONE_MATCH, "*")?
            .header(CONTENT_TYPE, ICAL_CONTENT_TYPE)?
            .body(content.as_ical().as_bytes().to_vec())
            // If-None-Match makes a repeat harmless: it fails with 412, handled below.
            .idempotent(true);
        let response = self.endpoint.send(request).await?;
        match response.status.as_u16() {
            200..=299 => Ok(Written {
                id,
                etag: Self::written_etag(&response)?,
                already_existed: false,
            }),
            412 => {
                // Either our own earlier attempt got through (a retried create), or the UID lives
                // under another href (Xandikos answers 412 for that too), or the key is taken.
                match self.get_item(url).await? {
                    Some((etag, existing))
                        if existing.uid().is_some() && existing.uid() == content.uid() =>
                    {
                        Ok(Written {
                            id,
                            etag: Some(etag),
                            already_existed: true,
                        })
                    }
                    Some(_) => Err(ProviderError::PreconditionFailed),
                    None => Err(ProviderError::Conflict {
                        detail: "another item on the server already has this UID".to_owned(),
                    }),
                }
            }
            409 => Err(ProviderError::Conflict {
                detail: "another item on the server already has this UID".to_owned(),
            }),
            _ => Err(Self::write_error(&response)),
        }
    }

    async fn update(
        &self,
        _calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
        content: &ItemContent,
    ) -> Result<Written, ProviderError> {
        let url = self.item_url(id)?;
        let request = Request::new(Method::PUT, url)
            .header(IF_MATCH, if_match.as_str())?
            .header(CONTENT_TYPE, ICAL_CONTENT_TYPE)?
            .body(content.as_ical().as_bytes().to_vec());
        let response = self.endpoint.send(request).await?;
        match response.status.as_u16() {
            200..=299 => Ok(Written {
                id: id.clone(),
                etag: Self::written_etag(&response)?,
                already_existed: false,
            }),
            412 => Err(ProviderError::PreconditionFailed),
            404 | 410 => Err(ProviderError::NotFound {
                what: id.to_string(),
            }),
            _ => Err(Self::write_error(&response)),
        }
    }

    async fn delete(
        &self,
        _calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
    ) -> Result<(), ProviderError> {
        let url = self.item_url(id)?;
        let request = Request::new(Method::DELETE, url).header(IF_MATCH, if_match.as_str())?;
        let response = self.endpoint.send(request).await?;
        match response.status.as_u16() {
            200..=299 => Ok(()),
            412 => Err(ProviderError::PreconditionFailed),
            404 | 410 => Err(ProviderError::NotFound {
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
        let url = self.calendar_url(calendar)?;
        let body = xml::free_busy_query(&format_utc(window.start()), &format_utc(window.end()));
        let response = self.xml_request("REPORT", url, "1", body).await?;
        if response.status != StatusCode::OK {
            return Err(response.error());
        }
        parse_free_busy(&response.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_normalise_to_one_form() {
        let base = Url::parse("https://dav.example.org/cal/user/").unwrap();
        let canonical = normalize_href(&base, "/cal/user/work/abc%40example.org.ics").unwrap();
        assert_eq!(canonical, "/cal/user/work/abc%40example.org.ics");
        assert_eq!(
            normalize_href(&base, "/cal/user/work/abc@example.org.ics").unwrap(),
            canonical
        );
        assert_eq!(
            normalize_href(
                &base,
                "https://dav.example.org/cal/user/work/abc%40example.org.ics"
            )
            .unwrap(),
            canonical
        );
        assert_eq!(
            normalize_href(&base, "work/abc@example.org.ics").unwrap(),
            canonical
        );
        assert_eq!(
            normalize_href(&base, "/a%2fb/c%20d.ics").unwrap(),
            "/a%2Fb/c%20d.ics"
        );
        assert_eq!(
            normalize_href(&base, "/x/caf%C3%A9.ics").unwrap(),
            normalize_href(&base, "/x/café.ics").unwrap()
        );
        assert_eq!(normalize_href(&base, "/cal/user/").unwrap(), "/cal/user/");
    }

    #[test]
    fn free_busy_periods_with_durations_and_types() {
        let body = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VFREEBUSY\r\nDTSTAMP:20050125T090000Z\r\nDTSTART:20060104T140000Z\r\nDTEND:20060105T220000Z\r\nFREEBUSY;FBTYPE=BUSY-TENTATIVE:20060104T150000Z/PT1H\r\nFREEBUSY:20060104T190000Z/PT1H,20060104T210000Z/20060104T213000Z\r\nFREEBUSY;FBTYPE=FREE:20060104T220000Z/PT1H\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n";
        let periods = parse_free_busy(body).unwrap();
        assert_eq!(periods.len(), 3);
        assert_eq!(periods[0].kind, BusyKind::Tentative);
        assert_eq!(periods[0].start.to_string(), "2006-01-04T15:00:00Z");
        assert_eq!(periods[0].end.to_string(), "2006-01-04T16:00:00Z");
        assert_eq!(periods[2].end.to_string(), "2006-01-04T21:30:00Z");
        assert!(parse_free_busy("BEGIN:VCALENDAR\r\nBEGIN:VFREEBUSY\r\nFREEBUSY:garbage\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n").is_err());
    }

    #[test]
    fn cursors_keep_their_kind() {
        let token = "http://radicale.org/ns/sync/abc";
        let gates = [
            None,
            Some(Gate::Refuted),
            Some(Gate::Busy),
            Some(Gate::Armed(Reading {
                modified: 1_795_294_471,
                server_now: 1_795_294_480,
            })),
        ];
        for gate in gates {
            let c = CaldavCursor::SyncToken {
                token: token.into(),
                gate,
            }
            .encode()
            .unwrap();
            assert!(
                matches!(CaldavCursor::decode(&c), Some(CaldavCursor::SyncToken { token: t, gate: g }) if t == token && g == gate),
                "{c:?}"
            );
        }
        // Cursors written before the gate existed still read.
        let old = Cursor::parse(format!("sync:{token}")).unwrap();
        assert!(
            matches!(CaldavCursor::decode(&old), Some(CaldavCursor::SyncToken { token: t, gate: None }) if t == token)
        );
        let c = CaldavCursor::Ctag(None).encode().unwrap();
        assert!(matches!(
            CaldavCursor::decode(&c),
            Some(CaldavCursor::Ctag(None))
        ));
        assert!(CaldavCursor::decode(&Cursor::parse("graph-delta-link").unwrap()).is_none());
        assert!(CaldavCursor::decode(&Cursor::parse("lm:1:2;ctag:x").unwrap()).is_none());
        assert!(CaldavCursor::decode(&Cursor::parse("lm:1;sync:x").unwrap()).is_none());
    }
}
