//! The calendar model: date-times and time zones, iCalendar, recurrence, normalized hash. Pure: no I/O.

pub mod datetime;
pub mod expand;
pub mod rrule;
mod rrule_iter;
pub mod tz;

pub use rrule_iter::{IterLimits, RuleIterError};
