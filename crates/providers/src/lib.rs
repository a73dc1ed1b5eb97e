//! Calendar providers behind one interface ([`CalendarProvider`]) and the HTTP layer they share.
//!
//! This crate knows the wire (CalDAV, ICS feeds; Microsoft Graph and Google Calendar next) and
//! nothing of the store: it turns provider bytes into items and back.

pub mod caldav;
pub mod content;
pub mod error;
pub mod google;
pub mod graph;
pub mod http;
pub mod ics;
pub mod oauth;
pub mod provider;
mod series_etag;
pub mod types;

pub use content::ItemContent;
pub use error::{ProviderError, Unavailability};
pub use provider::{CalendarProvider, Diagnosis, DiagnosisKind, HeldVersions, ProviderKind};
pub use types::{
    BusyKind, BusyPeriod, CalendarId, Capabilities, ChangeSet, CreateKey, Cursor, Etag,
    FullListingReason, KnownVersions, Probe, ReadItem, RemoteCalendar, RemoteId, RemoteItem,
    WatchChannel, WatchRequest, Window, Written,
};
