//! The sync-relevant content of one series, flattened into field paths.
//!
//! The plan never looks at iCalendar or provider JSON: each side's series is reduced to a [`Snapshot`], a
//! sorted map from a field path (`summary`, `dtstart`, `override/20250301T090000Z/summary`, …) to its
//! normalized text. Three-way merge works per path, so edits to different fields — or to different
//! occurrences of one series — merge without a conflict, and a change to one occurrence is a change to
//! that override's paths only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A field path inside a series snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The normalized content of a series: field path → canonical value. A missing path means the field is
/// absent; two snapshots are the same event exactly when their maps are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    fields: BTreeMap<FieldPath, String>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, path: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(FieldPath::new(path), value.into());
        self
    }

    pub fn set(&mut self, path: FieldPath, value: String) {
        self.fields.insert(path, value);
    }

    pub fn remove(&mut self, path: &FieldPath) -> Option<String> {
        self.fields.remove(path)
    }

    pub fn get(&self, path: &FieldPath) -> Option<&str> {
        self.fields.get(path).map(String::as_str)
    }

    pub fn fields(&self) -> impl Iterator<Item = (&FieldPath, &str)> {
        self.fields.iter().map(|(k, v)| (k, v.as_str()))
    }

    /// Every path present on either side.
    pub fn union_paths<'a>(&'a self, other: &'a Snapshot) -> BTreeSet<&'a FieldPath> {
        self.fields.keys().chain(other.fields.keys()).collect()
    }

    /// The paths whose values differ between the two snapshots.
    pub fn differing_paths(&self, other: &Snapshot) -> BTreeSet<FieldPath> {
        self.union_paths(other)
            .into_iter()
            .filter(|p| self.get(p) != other.get(p))
            .cloned()
            .collect()
    }
}

/// A half-open interval of time `[start, end)`; `end = None` means the series never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

impl Span {
    pub fn new(start: Timestamp, end: Option<Timestamp>) -> Self {
        Self { start, end }
    }

    pub fn intersects(&self, window: &Window) -> bool {
        self.start < window.end && self.end.is_none_or(|end| end > window.start)
    }
}

/// The link's event range. Only series whose span meets it take part in a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One side's version of a series as the plan sees it: its content, where it sits in time (so the plan
/// knows whether it is inside the link's window) and when it was last modified (for `newest_wins`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub snapshot: Snapshot,
    /// `None` when the span cannot be computed (e.g. an unreadable rule): such an item is treated as
    /// inside the window, because ignoring it could lose an edit.
    pub span: Option<Span>,
    pub modified: Option<Timestamp>,
}

impl ItemState {
    pub fn in_window(&self, window: &Window) -> bool {
        self.span.is_none_or(|s| s.intersects(window))
    }
}
