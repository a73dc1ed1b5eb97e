//! ICS feeds.
