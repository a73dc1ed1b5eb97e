//! The calendar model: date-times and time zones, iCalendar, recurrence, normalized hash. Pure: no I/O.

pub mod datetime;
