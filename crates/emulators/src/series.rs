//! Expansion of recurring series into instance start times, for calendarView, `/instances` and Google's
//! `singleEvents=true`. The recurrence engine itself lives in `calbridge-model`; this module only adapts the
//! stored master to it.

use jiff::Timestamp;

use crate::store::StoredEvent;

/// Original start times of the master's generated instances that overlap `[from, to)`.
///
/// The recurrence engine (`calbridge-model`'s RRULE expansion and the Graph patternedRecurrence mapping) has
/// not landed on main yet, so no generated instances are produced: series answer with their stored
/// exceptions only. See README (emulator row) and ARCHITECTURE.md.
pub(crate) fn occurrences(
    _master: &StoredEvent,
    _from: Option<Timestamp>,
    _to: Option<Timestamp>,
) -> Vec<Timestamp> {
    Vec::new()
}
