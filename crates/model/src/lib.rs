//! The calendar model: date-times and time zones, iCalendar, recurrence, normalized hash. Pure: no I/O.
//!
//! - [`ical`]: iCalendar (RFC 5545) read and write, with line-numbered errors and [`Limits`].
//! - [`component`]: the generic component tree every iCalendar object is read into.
//! - [`Calendar`], [`EventSeries`], [`Event`]: the typed model (one series per UID: master + overrides).
//! - [`normalized_hash`]: the content hash that decides whether a series changed.
//! - [`stored`]: a series as the store keeps it (JSON view, hash, span, occurrence index rows).

pub mod calendar;
pub mod component;
pub mod datetime;
pub mod event;
pub mod expand;
pub mod hash;
pub mod ical;
pub mod limits;
pub mod mapping;
pub mod occurrences;
pub mod rrule;
mod rrule_iter;
pub mod stored;
pub mod tz;

pub use calendar::{Calendar, EventSeries, SeriesError};
pub use component::{Component, Param, Property};
pub use event::{Attendee, Event, EventEnd, Organizer, Prop, RecurrenceId};
pub use hash::{ContentHash, normalized_hash};
pub use limits::Limits;
pub use rrule_iter::{IterLimits, RuleIterError};
