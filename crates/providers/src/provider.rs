//! The one interface every calendar provider implements (CalDAV and ICS now; Microsoft Graph and
//! Google Calendar next). The sync engine only ever talks to this trait.

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::content::ItemContent;
use crate::error::{ProviderError, Unavailability};
use crate::types::{
    BusyPeriod, CalendarId, Capabilities, ChangeSet, CreateKey, Cursor, Etag, KnownVersions, Probe,
    ReadItem, RemoteCalendar, RemoteId, WatchChannel, WatchRequest, Window, Written,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Microsoft,
    Google,
    Caldav,
    Ics,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Microsoft => "microsoft",
            Self::Google => "google",
            Self::Caldav => "caldav",
            Self::Ics => "ics",
        }
    }
}

/// What "Test Connection" found, with a sentence a person can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosisKind {
    Ok,
    InvalidCredentials,
    MissingPermission,
    Unreachable,
    TlsFailure,
    Timeout,
    ServiceDown,
    RateLimited,
    NotACalendarServer,
    NotFound,
    Blocked,
    InvalidConfiguration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub kind: DiagnosisKind,
    pub message: String,
    /// Calendars seen when the test succeeded.
    pub calendars: Vec<RemoteCalendar>,
}

impl Diagnosis {
    pub fn ok(calendars: Vec<RemoteCalendar>) -> Self {
        let message = format!("Connected; {} calendar(s) found.", calendars.len());
        Self {
            kind: DiagnosisKind::Ok,
            message,
            calendars,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.kind == DiagnosisKind::Ok
    }

    /// Turns the error a connection test ended with into a diagnosis.
    pub fn from_error(error: &ProviderError) -> Self {
        use DiagnosisKind as K;
        let (kind, message) = match error {
            ProviderError::Auth { .. } => (
                K::InvalidCredentials,
                "The server refused the user name or password (or the token). Check them and try again.".to_owned(),
            ),
            ProviderError::NeedsReauthorization { .. } => (
                K::InvalidCredentials,
                "The provider no longer accepts this connection's sign-in (revoked or expired). Sign in again to re-authorize it.".to_owned(),
            ),
            ProviderError::Forbidden { detail } => (
                K::MissingPermission,
                format!("Signed in, but the account may not read these calendars ({detail}). Grant calendar access to this account."),
            ),
            ProviderError::NotFound { what } => (
                K::NotFound,
                format!("Nothing was found at the address ({what}). Check the URL."),
            ),
            ProviderError::RateLimited { retry_after } => (
                K::RateLimited,
                match retry_after {
                    Some(wait) => format!("The provider is throttling requests; try again in {} s.", wait.as_secs().max(1)),
                    None => "The provider is throttling requests; try again in a few minutes.".to_owned(),
                },
            ),
            ProviderError::Unavailable { reason, detail } => match reason {
                Unavailability::Dns => (K::Unreachable, format!("The host name does not resolve ({detail}). Check the server address.")),
                Unavailability::Connect => (K::Unreachable, format!("The server cannot be reached ({detail}). Check the address, port and firewall.")),
                Unavailability::Tls => (K::TlsFailure, format!("The secure connection failed ({detail}). Check the server's certificate or use its https address.")),
                Unavailability::Timeout => (K::Timeout, format!("The server did not answer in time ({detail}). Try again later or check the address.")),
                Unavailability::Status(status) => (K::ServiceDown, format!("The server is failing (HTTP {status}). Try again later; if it persists, contact its administrator.")),
            },
            ProviderError::Blocked { detail } => (
                K::Blocked,
                format!("The address is not allowed ({detail}). Private and local addresses need the operator's permission."),
            ),
            ProviderError::Protocol { detail } => (
                K::NotACalendarServer,
                format!("The address answers, but not as a calendar server ({detail}). Check the URL points at the CalDAV server or the feed."),
            ),
            ProviderError::InvalidInput { detail } => (K::InvalidConfiguration, format!("The connection settings are unusable: {detail}.")),
            other => (K::ServiceDown, format!("The test failed: {other}.")),
        };
        Self {
            kind,
            message,
            calendars: Vec::new(),
        }
    }
}

/// The versions of the items the caller holds, looked up as a listing needs them.
///
/// An incremental round names a handful of items, and asks for those ([`HeldVersions::of`]); only a
/// complete listing compares every item held ([`HeldVersions::all`]). So the cost of a round follows
/// its changes, not the size of the calendar: a caller holding 100,000 pairs reads ten of them.
/// A plain [`KnownVersions`] map answers both from memory.
#[async_trait]
pub trait HeldVersions: Send + Sync {
    /// The versions held of these ids (an id not held is absent from the answer).
    async fn of(&self, ids: &[RemoteId]) -> Result<KnownVersions, ProviderError>;

    /// Every version held.
    async fn all(&self) -> Result<Cow<'_, KnownVersions>, ProviderError>;

    /// The series holding these occurrence ids, as far as the caller remembers them from earlier
    /// rounds' [`ChangeSet::series_occurrences`](crate::ChangeSet::series_occurrences): occurrence
    /// id → series id; an id not remembered is absent. A removed occurrence (Graph) then costs a
    /// re-read of its own series; one nobody remembers makes the round re-read the series whose
    /// occurrences are not remembered ([`HeldVersions::occurrences_unknown`]). A caller that keeps
    /// nothing answers with nothing.
    async fn series_of(
        &self,
        _occurrences: &[RemoteId],
    ) -> Result<HashMap<RemoteId, RemoteId>, ProviderError> {
        Ok(HashMap::new())
    }

    /// The versions of the items held whose occurrence ids are not remembered: reported by no
    /// [`ChangeSet::series_occurrences`](crate::ChangeSet::series_occurrences) since the caller
    /// recorded the item (an empty list counts: a single event, or a series with none in the
    /// window). Any series among them may hold a removed id nobody remembers, so it is re-read; one
    /// whose occurrences are remembered does not (see docs/architecture/providers.md). A caller that
    /// keeps nothing remembers nothing: every version held ([`HeldVersions::all`]).
    async fn occurrences_unknown(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        self.all().await
    }
}

#[async_trait]
impl HeldVersions for KnownVersions {
    async fn of(&self, ids: &[RemoteId]) -> Result<KnownVersions, ProviderError> {
        Ok(ids
            .iter()
            .filter_map(|id| Some((id.clone(), self.get(id)?.clone())))
            .collect())
    }

    async fn all(&self) -> Result<Cow<'_, KnownVersions>, ProviderError> {
        Ok(Cow::Borrowed(self))
    }
}

/// One connected account at one provider.
///
/// Reads are by calendar. Writes are conditional: `create` is idempotent through a client-chosen
/// key, `update` and `delete` take the version last read (`If-Match`) and fail with
/// [`ProviderError::PreconditionFailed`] when the item changed meanwhile. Read-only providers
/// answer writes with [`ProviderError::ReadOnly`].
#[async_trait]
pub trait CalendarProvider: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ProviderKind;

    fn capabilities(&self) -> Capabilities;

    /// Checks credentials, reachability and that this is a calendar service; never fails, the
    /// diagnosis says what is wrong.
    async fn test_connection(&self) -> Diagnosis;

    async fn list_calendars(&self) -> Result<Vec<RemoteCalendar>, ProviderError>;

    /// Changes since `cursor` (everything when `None` or when the provider invalidated it).
    /// `known` answers which versions the caller has, so full listings fetch only what differs and
    /// the caller's own writes coming back are told apart; a round asks it only about the items it
    /// names, unless it lists everything.
    /// When `capabilities().windowed_reads` is false, items outside `window` are returned too and
    /// the caller filters.
    async fn changes(
        &self,
        calendar: &CalendarId,
        cursor: Option<&Cursor>,
        window: &Window,
        known: &dyn HeldVersions,
    ) -> Result<ChangeSet, ProviderError>;

    /// Reads items by id, in batches the provider can take.
    async fn read(
        &self,
        calendar: &CalendarId,
        ids: &[RemoteId],
    ) -> Result<Vec<ReadItem>, ProviderError>;

    async fn create(
        &self,
        calendar: &CalendarId,
        key: &CreateKey,
        content: &ItemContent,
    ) -> Result<Written, ProviderError>;

    async fn update(
        &self,
        calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
        content: &ItemContent,
    ) -> Result<Written, ProviderError>;

    async fn delete(
        &self,
        calendar: &CalendarId,
        id: &RemoteId,
        if_match: &Etag,
    ) -> Result<(), ProviderError>;

    async fn free_busy(
        &self,
        calendar: &CalendarId,
        window: &Window,
    ) -> Result<Vec<BusyPeriod>, ProviderError>;

    /// One cheap request saying whether `calendar` changed since `cursor` (CalDAV: the collection's
    /// sync-token / ctag; ICS: a conditional GET), so a poll can skip the sync when nothing changed.
    async fn probe(
        &self,
        _calendar: &CalendarId,
        _cursor: Option<&Cursor>,
    ) -> Result<Probe, ProviderError> {
        Ok(Probe::Unknown)
    }

    /// Opens a push channel on `calendar` (Graph subscription, Google watch channel).
    async fn watch(
        &self,
        _calendar: &CalendarId,
        _request: &WatchRequest,
    ) -> Result<WatchChannel, ProviderError> {
        Err(ProviderError::Unsupported {
            what: "push notifications".into(),
        })
    }

    /// Extends a channel to `request.expires_at`. Graph renews in place (same id); Google cannot
    /// extend a channel, so a new one is opened with `request` and the old one stopped. A channel the
    /// provider no longer knows is [`ProviderError::NotFound`]: open a new one.
    async fn renew_watch(
        &self,
        _calendar: &CalendarId,
        _channel: &WatchChannel,
        _request: &WatchRequest,
    ) -> Result<WatchChannel, ProviderError> {
        Err(ProviderError::Unsupported {
            what: "push notifications".into(),
        })
    }

    /// Stops a channel; one the provider no longer knows counts as stopped.
    async fn stop_watch(&self, _channel: &WatchChannel) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            what: "push notifications".into(),
        })
    }
}
