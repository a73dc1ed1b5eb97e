//! Read-only iCalendar feeds over `http(s)://` and `webcal://`.
//!
//! A feed has no change log: every read that is not answered `304 Not Modified` is a full listing.
//! Each series (one UID) becomes one item whose version is the model's normalized hash, so a feed
//! re-served with new DTSTAMPs, a new PRODID or another order reports nothing as changed.

use std::sync::Arc;

use async_trait::async_trait;
use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::content::{SplitFeed, split_feed};
use crate::error::ProviderError;
use crate::http::{Budget, Credentials, Endpoint, HttpClient, Request, Response};
use crate::provider::{CalendarProvider, Diagnosis, HeldVersions, ProviderKind};
use crate::types::{
    BusyPeriod, CalendarId, Capabilities, ChangeSet, CreateKey, Cursor, Etag, FullListingReason,
    Probe, ReadItem, RemoteCalendar, RemoteId, RemoteItem, Window, Written,
};

/// Largest feed accepted.
pub const MAX_FEED_BYTES: usize = 32 * 1024 * 1024;

/// The validators a feed answered with, kept as the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

impl Validators {
    fn from_response(response: &Response) -> Self {
        Self {
            etag: response.header_str(&ETAG).map(str::to_owned),
            last_modified: response.header_str(&LAST_MODIFIED).map(str::to_owned),
        }
    }

    fn encode(&self) -> Result<Cursor, ProviderError> {
        let json =
            serde_json::to_string(self).map_err(|e| ProviderError::protocol(e.to_string()))?;
        Cursor::parse(format!("ics:{json}"))
    }

    fn decode(cursor: &Cursor) -> Option<Self> {
        serde_json::from_str(cursor.as_str().strip_prefix("ics:")?).ok()
    }
}

/// Accepts `webcal://` and `webcals://` (served over HTTPS) besides `http(s)://`.
pub fn feed_url(input: &str) -> Result<Url, ProviderError> {
    let input = input.trim();
    let lower = input.to_ascii_lowercase();
    let normalized = if lower.starts_with("webcal://") {
        format!("https://{}", &input["webcal://".len()..])
    } else if lower.starts_with("webcals://") {
        format!("https://{}", &input["webcals://".len()..])
    } else {
        input.to_owned()
    };
    let url =
        Url::parse(&normalized).map_err(|e| ProviderError::invalid(format!("feed URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProviderError::invalid(
            "a feed URL must start with http://, https:// or webcal://",
        ));
    }
    Ok(url)
}

/// The version of a series in a feed: its normalized content hash.
pub fn series_version(content: &crate::content::ItemContent) -> Result<Etag, ProviderError> {
    Etag::parse(format!("hash:{}", content.content_hash()))
}

#[derive(Debug)]
pub struct IcsProvider {
    endpoint: Endpoint,
    url: Url,
}

enum Fetched {
    NotModified,
    Feed(SplitFeed, Validators),
}

impl IcsProvider {
    pub fn new(
        http: &HttpClient,
        url: &str,
        credentials: Credentials,
        budget: Arc<Budget>,
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            endpoint: http.endpoint("ics", credentials, budget),
            url: feed_url(url)?,
        })
    }

    pub fn calendar_id(&self) -> Result<CalendarId, ProviderError> {
        CalendarId::parse(self.url.as_str())
    }

    async fn fetch(&self, validators: Option<&Validators>) -> Result<Fetched, ProviderError> {
        let mut request = Request::new(Method::GET, self.url.clone())
            .header(http::header::ACCEPT, "text/calendar, */*;q=0.5")?;
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                request = request.header(IF_NONE_MATCH, etag)?;
            }
            if let Some(date) = &v.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date)?;
            }
        }
        let response = self.endpoint.send(request).await?;
        match response.status {
            StatusCode::NOT_MODIFIED if validators.is_some() => Ok(Fetched::NotModified),
            StatusCode::OK => {
                if response.body.len() > MAX_FEED_BYTES {
                    return Err(ProviderError::protocol("the feed is larger than the limit"));
                }
                let split = split_feed(&response.body, MAX_FEED_BYTES)?;
                Ok(Fetched::Feed(split, Validators::from_response(&response)))
            }
            _ => Err(response.error()),
        }
    }

    fn check_calendar(&self, calendar: &CalendarId) -> Result<(), ProviderError> {
        let wanted = feed_url(calendar.as_str())?;
        if wanted != self.url {
            return Err(ProviderError::NotFound {
                what: format!("feed {calendar}"),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl CalendarProvider for IcsProvider {
    /// One conditional GET with the cursor's validators: 304, or a 200 carrying the same strong ETag,
    /// is "unchanged" (some servers, Radicale among them, never answer 304). The body is not parsed.
    async fn probe(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
    ) -> Result<Probe, ProviderError> {
        self.check_calendar(calendar)?;
        let Some(validators) = cursor.and_then(Validators::decode) else {
            return Ok(Probe::Changed);
        };
        if validators.etag.is_none() && validators.last_modified.is_none() {
            return Ok(Probe::Unknown);
        }
        let mut request = Request::new(Method::GET, self.url.clone())
            .header(http::header::ACCEPT, "text/calendar, */*;q=0.5")?;
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag)?;
        }
        if let Some(date) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date)?;
        }
        let response = self.endpoint.send(request).await?;
        match response.status {
            StatusCode::NOT_MODIFIED => Ok(Probe::Unchanged),
            StatusCode::OK => {
                let now = Validators::from_response(&response);
                let strong =
                    |e: &Option<String>| e.as_ref().filter(|t| !t.starts_with("W/")).cloned();
                Ok(match (strong(&now.etag), strong(&validators.etag)) {
                    (Some(a), Some(b)) if a == b => Probe::Unchanged,
                    _ => Probe::Changed,
                })
            }
            _ => Err(response.error()),
        }
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Ics
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writable: false,
            free_busy: false,
            incremental: false,
            windowed_reads: false,
            max_batch: usize::MAX,
        }
    }

    async fn test_connection(&self) -> Diagnosis {
        match self.list_calendars().await {
            Ok(calendars) => Diagnosis::ok(calendars),
            Err(error) => Diagnosis::from_error(&error),
        }
    }

    async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError> {
        let response = self
            .endpoint
            .send(Request::new(Method::GET, self.url.clone()))
            .await?;
        if response.status != StatusCode::OK {
            return Err(response.error());
        }
        let calendars =
            calbridge_model::ical::parse_all(&response.body, &calbridge_model::Limits::DEFAULT)
                .map_err(|e| ProviderError::protocol(format!("not an iCalendar feed: {e}")))?;
        let first = calendars
            .first()
            .ok_or_else(|| ProviderError::protocol("the feed holds no VCALENDAR"))?;
        let text = |name: &str| {
            first
                .property(name)
                .map(|p| p.text_value())
                .filter(|t| !t.is_empty())
        };
        Ok(vec![RemoteCalendar {
            id: self.calendar_id()?,
            name: text("NAME")
                .or_else(|| text("X-WR-CALNAME"))
                .unwrap_or_else(|| self.url.host_str().unwrap_or("feed").to_owned()),
            description: text("DESCRIPTION").or_else(|| text("X-WR-CALDESC")),
            color: text("COLOR"),
            time_zone: text("X-WR-TIMEZONE"),
            components: vec!["VEVENT".to_owned()],
            read_only: true,
            change_tag: Validators::from_response(&response).etag,
        }])
    }

    async fn changes(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
        _window: &Window,
        held: &dyn HeldVersions,
    ) -> Result<ChangeSet, ProviderError> {
        self.check_calendar(calendar)?;
        let validators = cursor.map(Validators::decode);
        let reason = match &validators {
            None => FullListingReason::NoCursor,
            Some(None) => FullListingReason::CursorInvalid,
            Some(Some(_)) => FullListingReason::NotIncremental,
        };
        let validators = validators.flatten();
        let (split, new_validators) = match self.fetch(validators.as_ref()).await? {
            Fetched::NotModified => {
                return Ok(ChangeSet {
                    cursor: cursor.cloned(),
                    ..ChangeSet::default()
                });
            }
            Fetched::Feed(split, v) => (split, v),
        };
        // A feed is always listed whole: every version held takes part.
        let known = held.all().await?;
        let mut set = ChangeSet {
            cursor: Some(new_validators.encode()?),
            full_listing: Some(reason),
            ..ChangeSet::default()
        };
        let mut present = std::collections::HashSet::new();
        for (uid, content) in split.series {
            let id = match RemoteId::parse(uid.clone()) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(uid = %uid, error = %e, "feed series with an unusable UID skipped");
                    continue;
                }
            };
            if !present.insert(id.clone()) {
                set.failures.push((
                    id,
                    "the UID appears in several VCALENDARs of the feed".to_owned(),
                ));
                continue;
            }
            match content {
                Ok(content) => {
                    let etag = series_version(&content)?;
                    if known.get(&id) == Some(&etag) {
                        set.unchanged.push(id);
                    } else {
                        set.upserts.push(RemoteItem { id, etag, content });
                    }
                }
                Err(reason) => set.failures.push((id, reason)),
            }
        }
        let mut gone: Vec<RemoteId> = known
            .keys()
            .filter(|id| !present.contains(*id))
            .cloned()
            .collect();
        gone.sort();
        set.deletions = gone;
        Ok(set)
    }

    async fn read(
        &self,
        calendar: &CalendarId,
        ids: &[RemoteId],
    ) -> Result<Vec<ReadItem>, ProviderError> {
        self.check_calendar(calendar)?;
        let Fetched::Feed(split, _) = self.fetch(None).await? else {
            return Err(ProviderError::protocol("304 to an unconditional request"));
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = split.series.iter().find(|(uid, _)| uid == id.as_str());
            out.push(match found {
                Some((_, Ok(content))) => ReadItem::Found(RemoteItem {
                    id: id.clone(),
                    etag: series_version(content)?,
                    content: content.clone(),
                }),
                Some((_, Err(reason))) => ReadItem::Failed(id.clone(), reason.clone()),
                None => ReadItem::Missing(id.clone()),
            });
        }
        Ok(out)
    }

    async fn create(
        &self,
        _: &CalendarId,
        _: &CreateKey,
        _: &crate::content::ItemContent,
    ) -> Result<Written, ProviderError> {
        Err(ProviderError::ReadOnly)
    }

    async fn update(
        &self,
        _: &CalendarId,
        _: &RemoteId,
        _: &Etag,
        _: &crate::content::ItemContent,
    ) -> Result<Written, ProviderError> {
        Err(ProviderError::ReadOnly)
    }

    async fn delete(&self, _: &CalendarId, _: &RemoteId, _: &Etag) -> Result<(), ProviderError> {
        Err(ProviderError::ReadOnly)
    }

    async fn free_busy(
        &self,
        _: &CalendarId,
        _: &Window,
    ) -> Result<Vec<BusyPeriod>, ProviderError> {
        Err(ProviderError::Unsupported {
            what: "free/busy from an ICS feed (answered from the synced store)".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webcal_becomes_https_and_other_schemes_are_refused() {
        assert_eq!(
            feed_url("webcal://example.org/a.ics").unwrap().as_str(),
            "https://example.org/a.ics"
        );
        assert_eq!(
            feed_url("WEBCAL://example.org/a.ics").unwrap().as_str(),
            "https://example.org/a.ics"
        );
        assert_eq!(
            feed_url("webcals://example.org/a.ics").unwrap().as_str(),
            "https://example.org/a.ics"
        );
        assert_eq!(
            feed_url("http://example.org/a.ics").unwrap().as_str(),
            "http://example.org/a.ics"
        );
        assert!(feed_url("ftp://example.org/a.ics").is_err());
        assert!(feed_url("file:///etc/passwd").is_err());
        assert!(feed_url("not a url").is_err());
    }

    #[test]
    fn validators_round_trip_through_the_cursor() {
        let v = Validators {
            etag: Some("\"abc\"".into()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
        };
        assert_eq!(Validators::decode(&v.encode().unwrap()), Some(v));
        assert_eq!(
            Validators::decode(&Cursor::parse("sync:xyz").unwrap()),
            None
        );
    }
}
