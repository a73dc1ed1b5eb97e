//! Values that cross the provider boundary. Every one has a `parse` constructor that refuses what
//! the rest of the system could not store or send back.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::content::ItemContent;
use crate::error::ProviderError;

const MAX_OPAQUE_LEN: usize = 8 * 1024;

fn check_opaque(kind: &str, value: &str, max: usize) -> Result<(), ProviderError> {
    if value.is_empty() {
        return Err(ProviderError::invalid(format!("{kind} is empty")));
    }
    if value.len() > max {
        return Err(ProviderError::invalid(format!(
            "{kind} is longer than {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ProviderError::invalid(format!(
            "{kind} contains control characters"
        )));
    }
    Ok(())
}

macro_rules! opaque_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, ProviderError> {
                let value = value.into();
                check_opaque($kind, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProviderError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

opaque_newtype!(
    /// A version of one remote item exactly as the provider spelled it (quotes and `W/` kept), so
    /// it can be sent back in `If-Match` byte for byte. For ICS feeds it is a content hash.
    Etag,
    "etag",
    1024
);
opaque_newtype!(
    /// Where to resume reading changes: a CalDAV sync token, a Graph delta link, a Google sync token,
    /// or an ICS feed's validators. Opaque: never parsed, compared or built by callers.
    Cursor,
    "cursor",
    MAX_OPAQUE_LEN
);
opaque_newtype!(
    /// The provider's id of one item: a normalised CalDAV href (absolute path, canonical
    /// percent-encoding), a Graph or Google event id, or an ICS series UID.
    RemoteId,
    "remote id",
    4096
);
opaque_newtype!(
    /// The provider's id of one calendar: a CalDAV collection href, a Graph or Google calendar id,
    /// or the feed URL for ICS.
    CalendarId,
    "calendar id",
    4096
);

/// A client-chosen key that makes a create idempotent: the CalDAV resource name (`<key>.ics`), the
/// Google event id, the Graph `transactionId`. Restricted to lowercase base32hex (`0-9a-v`), 5 to 128
/// characters, because that is the one alphabet all three accept.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CreateKey(String);

impl CreateKey {
    pub fn parse(value: impl Into<String>) -> Result<Self, ProviderError> {
        let value = value.into();
        if !(5..=128).contains(&value.len()) {
            return Err(ProviderError::invalid(
                "create key must be 5 to 128 characters",
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
        {
            return Err(ProviderError::invalid(
                "create key must use only 0-9 and a-v (base32hex)",
            ));
        }
        Ok(Self(value))
    }

    /// Encodes 16 random or derived bytes (a UUID) as 26 base32hex characters.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
        let mut acc: u128 = u128::from_be_bytes(bytes);
        let mut out = [b'0'; 26];
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(acc & 31) as usize];
            acc >>= 5;
        }
        Self(out.iter().map(|&b| char::from(b)).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CreateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreateKey({:?})", self.0)
    }
}

impl TryFrom<String> for CreateKey {
    type Error = ProviderError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<CreateKey> for String {
    fn from(value: CreateKey) -> String {
        value.0
    }
}

/// A half-open time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    start: Timestamp,
    end: Timestamp,
}

impl Window {
    pub fn parse(start: Timestamp, end: Timestamp) -> Result<Self, ProviderError> {
        if start >= end {
            return Err(ProviderError::invalid(
                "window start must be before its end",
            ));
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    pub fn end(&self) -> Timestamp {
        self.end
    }
}

/// What a provider can do; the sync engine plans with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub writable: bool,
    pub free_busy: bool,
    /// Changes are incremental after the first read (false: every read is a full listing).
    pub incremental: bool,
    /// The provider restricts reads to the window itself (false: the caller filters).
    pub windowed_reads: bool,
    /// Most items one batched read or write may carry.
    pub max_batch: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCalendar {
    pub id: CalendarId,
    pub name: String,
    pub description: Option<String>,
    pub color: Option<String>,
    pub time_zone: Option<String>,
    /// Component types it accepts (`VEVENT`, `VTODO`...); empty when the server did not say.
    pub components: Vec<String>,
    pub read_only: bool,
    /// A cheap "anything changed?" token when the provider has one (CalDAV ctag, sync-token).
    pub change_tag: Option<String>,
}

impl RemoteCalendar {
    pub fn holds_events(&self) -> bool {
        self.components.is_empty()
            || self
                .components
                .iter()
                .any(|c| c.eq_ignore_ascii_case("VEVENT"))
    }
}

/// One item as read from a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteItem {
    pub id: RemoteId,
    pub etag: Etag,
    pub content: ItemContent,
}

/// Versions the caller already holds, so a full listing only fetches what changed.
pub type KnownVersions = HashMap<RemoteId, Etag>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullListingReason {
    /// No cursor was given.
    NoCursor,
    /// The provider refused the cursor (expired, invalidated).
    CursorInvalid,
    /// The provider has no incremental change feed (ICS, CalDAV without sync-collection).
    NotIncremental,
}

/// The answer to "what changed since this cursor?".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// New or changed items, with content.
    pub upserts: Vec<RemoteItem>,
    /// Items gone from the provider.
    pub deletions: Vec<RemoteId>,
    /// Removals that may only mean "left the window" (Graph reports `@removed` for an item moved
    /// or changed outside the requested window, and for out-of-window changes, exactly as for a
    /// deletion). Not in `deletions`; the sync engine maps them to `RemoteChange::Deleted
    /// { certain: false }` and reads the item before deleting anything.
    pub uncertain_deletions: Vec<RemoteId>,
    /// Only in full listings: present with the version the caller already knows, so not fetched.
    pub unchanged: Vec<RemoteId>,
    /// Items that were listed but could not be read or understood; each with the reason. The
    /// caller decides whether the cursor may advance past them.
    pub failures: Vec<(RemoteId, String)>,
    /// Commit this only after every change above is applied.
    pub cursor: Option<Cursor>,
    /// `Some` when this is a complete listing: anything the caller knows that is in none of
    /// `upserts`, `unchanged` and `failures` is gone (already listed in `deletions` when the
    /// caller passed its known versions).
    pub full_listing: Option<FullListingReason>,
    /// The occurrence ids of each item read this round, by item id, when the provider's removals do
    /// not name their series (Graph: a deleted occurrence comes back as an `@removed` id alone).
    /// Each list is complete for its series in the window: it replaces what the caller remembered
    /// of that series; a single event has an empty list (it holds none, and so is remembered), as
    /// has a single a complete listing shows unchanged whose occurrences the caller does not
    /// remember ([`HeldVersions::occurrences_unknown`](crate::HeldVersions::occurrences_unknown)). A caller that keeps them answers
    /// [`HeldVersions::series_of`](crate::HeldVersions::series_of) and
    /// [`HeldVersions::occurrences_unknown`](crate::HeldVersions::occurrences_unknown), so a later
    /// removed occurrence re-reads its own series, and an id no series remembers re-reads only the
    /// series never reported, instead of every series held. Empty for Google (a cancelled instance
    /// carries `recurringEventId`), CalDAV and ICS (an item is a whole series).
    pub series_occurrences: BTreeMap<RemoteId, Vec<RemoteId>>,
}

/// The result of reading one item by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadItem {
    Found(RemoteItem),
    Missing(RemoteId),
    Failed(RemoteId, String),
}

/// The outcome of a successful create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub id: RemoteId,
    /// `None` when the server changed the data on store and sent no strong etag: re-read it.
    pub etag: Option<Etag>,
    /// A create found its own earlier write already there (a retried create after a lost answer).
    pub already_existed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyKind {
    Busy,
    Tentative,
    OutOfOffice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyPeriod {
    pub start: Timestamp,
    pub end: Timestamp,
    pub kind: BusyKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_key_from_bytes_is_valid_and_stable() {
        let key = CreateKey::from_bytes([0xff; 16]);
        assert_eq!(key.as_str().len(), 26);
        assert!(CreateKey::parse(key.as_str()).is_ok());
        assert_eq!(CreateKey::from_bytes([0; 16]).as_str(), "0".repeat(26));
        assert_ne!(
            CreateKey::from_bytes([1; 16]),
            CreateKey::from_bytes([2; 16])
        );
    }

    #[test]
    fn create_key_rejects_other_alphabets() {
        assert!(CreateKey::parse("abcw1").is_err());
        assert!(CreateKey::parse("ab-c1").is_err());
        assert!(CreateKey::parse("ABCDE").is_err());
        assert!(CreateKey::parse("abcd").is_err());
    }

    #[test]
    fn opaque_values_refuse_empty_and_control_characters() {
        assert!(Etag::parse("").is_err());
        assert!(Etag::parse("\"a\nb\"").is_err());
        assert_eq!(
            Etag::parse("W/\"x\"").map(|e| e.as_str().to_owned()).ok(),
            Some("W/\"x\"".into())
        );
        assert!(Cursor::parse("x".repeat(MAX_OPAQUE_LEN + 1)).is_err());
    }

    #[test]
    fn window_must_be_ordered() {
        let a = Timestamp::from_second(10).unwrap();
        let b = Timestamp::from_second(20).unwrap();
        assert!(Window::parse(a, b).is_ok());
        assert!(Window::parse(b, a).is_err());
        assert!(Window::parse(a, a).is_err());
    }
}

/// What to ask a provider for when opening a push channel (a Graph subscription, a Google watch
/// channel) on one calendar. The caller chooses the id (Google; Graph assigns its own) and the secret
/// the provider echoes with every notification (Graph `clientState`, Google channel `token`).
#[derive(Clone)]
pub struct WatchRequest {
    /// Google channel id (ignored by Graph, which assigns one).
    pub id: String,
    /// Graph `clientState` / Google channel `token`; at most 128 characters (Graph's limit).
    pub secret: String,
    /// Where change notifications are posted.
    pub notification_url: url::Url,
    /// Where Graph posts lifecycle notifications (ignored by Google).
    pub lifecycle_url: Option<url::Url>,
    /// The expiry asked for; the provider may grant less (the answer says).
    pub expires_at: jiff::Timestamp,
}

impl std::fmt::Debug for WatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRequest")
            .field("id", &self.id)
            .field("notification_url", &self.notification_url)
            .field("lifecycle_url", &self.lifecycle_url)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An open push channel as the provider granted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchChannel {
    /// Graph subscription id / Google channel id.
    pub id: String,
    /// Google's `resourceId` (needed to stop the channel and checked on every message); Graph: none.
    pub resource_id: Option<String>,
    pub expires_at: jiff::Timestamp,
}

/// What a cheap change probe found: whether a calendar changed since the state a cursor records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// The collection's change tag equals the cursor's: nothing to read.
    Unchanged,
    /// It differs (or the cursor records none): a sync will find something.
    Changed,
    /// The provider has no cheap probe (or the cursor is of another kind): sync to find out.
    Unknown,
}
