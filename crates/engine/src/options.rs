//! A connection's sync options (DESIGN §3) as the engine reads them from `connections.sync_options`, and
//! the engine's own settings.

use calbridge_sync::{ConflictPolicy, DeletionGuard, Direction, Policy, Window};
use jiff::{Span, Timestamp, ToSpan, Zoned};
use serde::Deserialize;

use crate::EngineError;

/// The options of one connection. Read from its JSON, either flat or under a `sync` key (the shape of
/// the config file's `[sync]` table); absent keys take the product defaults, unknown keys are ignored
/// (they belong to the scheduler or the API).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub direction: Direction,
    pub conflicts: ConflictPolicy,
    /// How far back and ahead of now events take part.
    pub past: Span,
    pub future: Span,
}

impl PartialEq for SyncOptions {
    fn eq(&self, other: &Self) -> bool {
        self.direction == other.direction
            && self.conflicts == other.conflicts
            && self.past.fieldwise() == other.past.fieldwise()
            && self.future.fieldwise() == other.future.fieldwise()
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            direction: Direction::Bidirectional,
            conflicts: ConflictPolicy::Ask,
            past: 3.months(),
            future: 3.months(),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawRange {
    past: Option<String>,
    future: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawOptions {
    direction: Option<Direction>,
    conflict_resolution: Option<ConflictPolicy>,
    range: Option<RawRange>,
}

#[derive(Deserialize)]
struct Nested {
    sync: RawOptions,
}

fn span(field: &str, text: &str) -> Result<Span, EngineError> {
    let span: Span = text
        .trim()
        .parse()
        .map_err(|e| EngineError::Options(format!("range.{field} `{text}`: {e}")))?;
    if span.is_negative() {
        return Err(EngineError::Options(format!(
            "range.{field} `{text}` is negative"
        )));
    }
    Ok(span)
}

impl SyncOptions {
    pub fn parse(json: &str) -> Result<Self, EngineError> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let raw = match serde_json::from_str::<Nested>(json) {
            Ok(nested) => nested.sync,
            Err(_) => serde_json::from_str::<RawOptions>(json)
                .map_err(|e| EngineError::Options(e.to_string()))?,
        };
        let defaults = Self::default();
        let range = raw.range.unwrap_or_default();
        Ok(Self {
            direction: raw.direction.unwrap_or(defaults.direction),
            conflicts: raw.conflict_resolution.unwrap_or(defaults.conflicts),
            past: match range.past {
                Some(text) => span("past", &text)?,
                None => defaults.past,
            },
            future: match range.future {
                Some(text) => span("future", &text)?,
                None => defaults.future,
            },
        })
    }

    /// The event range at `now`, computed in UTC (months are calendar months).
    pub fn window(&self, now: Timestamp) -> Result<Window, EngineError> {
        let zoned: Zoned = now.to_zoned(jiff::tz::TimeZone::UTC);
        let bad = |e: jiff::Error| EngineError::Options(format!("range: {e}"));
        let start = zoned.checked_sub(self.past).map_err(bad)?.timestamp();
        let end = zoned.checked_add(self.future).map_err(bad)?.timestamp();
        if start >= end {
            return Err(EngineError::Options("range is empty".into()));
        }
        Ok(Window { start, end })
    }

    pub fn policy(&self, guard: DeletionGuard) -> Policy {
        Policy {
            direction: self.direction,
            conflicts: self.conflicts,
            deletion_guard: guard,
        }
    }
}

/// Settings of the engine itself (from the service configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// How long tombstones of deleted items are kept.
    pub tombstone_retention: jiff::SignedDuration,
    pub deletion_guard: DeletionGuard,
    /// Stops after this many actions as if the process died there (no base, no cursor written for what
    /// remains). Only for crash tests; `None` in production.
    pub crash_after_actions: Option<usize>,
    /// Stops a conflict resolution right after this many of its writes (provider or local), before
    /// read-back and before the pair is recorded, as if the process died there. Only for crash tests.
    pub crash_after_resolution_writes: Option<usize>,
    /// Stops a conflict resolution (or a sync giving a decision up) right after it took the
    /// conflict's decision by compare-and-set (`conflicts.resolving`), before anything it does next,
    /// as if the process died there. Only for crash tests.
    pub crash_after_resolution_fence: bool,
    /// Stops whoever gives a decision up (a resolution giving up the decision it replaced, a sync
    /// abandoning one) right after the compare-and-set that marks it given up on the conflict,
    /// before anything it does next, as if the process died there. Only for crash tests.
    pub crash_after_giving_up: bool,
    /// Stops whoever closes a conflict as resolved (a resolution, a sync finishing a recognised
    /// one) right after it closed it, before anything it does next, as if the process died there.
    /// Only for crash tests.
    pub crash_after_closing: bool,
    /// Stops whoever gives a `keep_both` decision up right after it deleted the decision's copy,
    /// before it marks the decision given up, as if the process died there. Only for crash tests.
    pub crash_after_removing_copy: bool,
    /// Stops a run right after it committed its cursors, before its time-conflict detection, as
    /// if the process died there. Only for crash tests.
    pub crash_after_cursors: bool,
    /// How often a running run's row is touched, and the staleness bound each touch writes into it
    /// (see `beating`); the server derives it from `sync.run_stale_after`.
    pub heartbeat: crate::Heartbeat,
    /// How long a conflict resolution in progress is left to the process carrying it out before a
    /// sync resumes it (a live resolution takes seconds; one whose process died leaves its decision
    /// on the conflict). A sync that recognises the resolution's writes closes it without waiting.
    pub resume_resolutions_after: jiff::SignedDuration,
    /// Local creates of new remote items (an import) carried out together: one UID lookup and three
    /// transactions (write-ahead rows, series, pairs) per chunk instead of four round trips and three
    /// transactions per item (see `run/import.rs`). 250 is what the store writes per multi-row
    /// statement of series and mapping rows, so a chunk is one statement per table; larger chunks
    /// save little more and hold SQLite's one write connection longer, and a failing item makes its
    /// whole chunk go one at a time. 1 turns the batching off.
    pub local_create_chunk: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            tombstone_retention: jiff::SignedDuration::from_hours(24 * 30),
            deletion_guard: DeletionGuard::default(),
            crash_after_actions: None,
            crash_after_resolution_writes: None,
            crash_after_resolution_fence: false,
            crash_after_giving_up: false,
            crash_after_closing: false,
            crash_after_removing_copy: false,
            crash_after_cursors: false,
            heartbeat: crate::Heartbeat::default(),
            resume_resolutions_after: jiff::SignedDuration::from_mins(10),
            local_create_chunk: 250,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_flat_nested_and_defaults() {
        assert_eq!(SyncOptions::parse("").unwrap(), SyncOptions::default());
        let flat = SyncOptions::parse(
            r#"{"direction":"import","conflict_resolution":"keep_both","range":{"past":"P1M","future":"P2W"},"frequency":"5m"}"#,
        )
        .unwrap();
        assert_eq!(flat.direction, Direction::Import);
        assert_eq!(flat.conflicts, ConflictPolicy::KeepBoth);
        assert_eq!(flat.past.get_months(), 1);
        assert_eq!(flat.future.get_weeks(), 2);
        let nested = SyncOptions::parse(r#"{"sync":{"direction":"export"}}"#).unwrap();
        assert_eq!(nested.direction, Direction::Export);
        assert_eq!(nested.conflicts, ConflictPolicy::Ask);
        assert!(SyncOptions::parse(r#"{"direction":"sideways"}"#).is_err());
        assert!(SyncOptions::parse(r#"{"range":{"past":"-P1M"}}"#).is_err());
    }

    #[test]
    fn window_reaches_both_ways_from_now() {
        let now: Timestamp = "2026-05-31T12:00:00Z".parse().unwrap();
        let window = SyncOptions::default().window(now).unwrap();
        assert_eq!(
            window.start,
            "2026-02-28T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            window.end,
            "2026-08-31T12:00:00Z".parse::<Timestamp>().unwrap()
        );
    }
}
