//! The calendar model: date-times and time zones, iCalendar, recurrence, normalized hash. Pure: no I/O.
//!
//! - [`ical`]: iCalendar (RFC 5545) read and write, with line-numbered errors and [`Limits`].
//! - [`component`]: the generic component tree every iCalendar object is read into.

pub mod component;
pub mod datetime;
pub mod ical;
pub mod limits;

pub use component::{Component, Param, Property};
pub use limits::Limits;
