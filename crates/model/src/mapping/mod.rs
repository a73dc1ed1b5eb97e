//! Provider recurrence formats ↔ the model's RRULE.
//!
//! - [`graph`]: Microsoft Graph `patternedRecurrence` (six pattern types, three range types).
//! - [`google`]: Google Calendar `recurrence[]` strings (RRULE/EXRULE/RDATE/EXDATE lines).
//!
//! # What cannot round-trip, and what calbridge does then
//!
//! Google's `recurrence[]` is RFC 5545 text without DTSTART, so every rule, RDATE and EXDATE the model
//! holds goes there and back unchanged (values are re-serialised in canonical form: part order, upper
//! case). Graph's patterns are far narrower than RRULE. These RRULE features have no Graph form:
//!
//! | feature | why |
//! |---|---|
//! | FREQ=SECONDLY/MINUTELY/HOURLY, BYHOUR, BYMINUTE, BYSECOND | Graph patterns are day-based |
//! | BYYEARDAY, BYWEEKNO | no pattern type |
//! | several BYMONTH values; BYMONTH with DAILY/WEEKLY/MONTHLY | yearly patterns take one month |
//! | several or negative BYMONTHDAY | `dayOfMonth` is one positive day |
//! | BYSETPOS other than one of 1, 2, 3, 4, -1; ordinals other than those | `index` is first..fourth, last |
//! | BYDAY ordinals on different weekdays with different ordinals (`1MO,-1FR`) | one `index` per pattern |
//! | several RRULEs, any EXRULE, any RDATE | one pattern per series |
//! | DAILY with BYDAY and INTERVAL > 1 | WEEKLY with the same days is only equal for INTERVAL=1 |
//!
//! Converting such a series to Graph returns [`MappingError::NotRepresentable`] naming the feature. Policy:
//! the sync never approximates a rule (an approximation silently moves or drops meetings); it writes the
//! series to Graph as single events, one per instance inside the sync horizon, and records the downgrade
//! in the audit log. EXDATEs are not part of the pattern: they become deleted occurrences of the Graph
//! series (`cancelledOccurrences`), which the connector handles.
//!
//! Graph → RRULE always succeeds for valid input: every Graph pattern has an exact RRULE.
//! `endDate` becomes UNTIL at the last second of that day in `recurrenceTimeZone` (inclusive, as Graph
//! means it), or a DATE UNTIL for all-day series.

pub mod google;
pub mod graph;

/// Why a recurrence could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The rule has a feature the target format cannot express; expand into single instances instead.
    #[error("not representable in {target}: {what}")]
    NotRepresentable { target: &'static str, what: String },
    /// The provider's data is malformed.
    #[error("invalid {source_format} recurrence: {what}")]
    Invalid {
        source_format: &'static str,
        what: String,
    },
}
