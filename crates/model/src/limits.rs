//! Bounds on what the iCalendar reader accepts, so hostile or broken input costs bounded time and memory.

/// Limits applied while reading iCalendar data. Every limit has its own error kind
/// ([`crate::ical::ParseErrorKind`]) so a caller can tell the user which one was hit.
///
/// The defaults are generous enough for real exports (a 10-year Outlook export of a busy mailbox is a few
/// MB; base64 `ATTACH` lines reach a few hundred KB) and small enough that one request cannot exhaust a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input in bytes (the whole stream, possibly several VCALENDARs).
    pub max_object_bytes: usize,
    /// Longest accepted content line in octets, measured after unfolding.
    pub max_line_octets: usize,
    /// Most components (VCALENDAR, VEVENT, VALARM, VTIMEZONE, STANDARD, ...) in the whole input.
    pub max_components: usize,
    /// Deepest accepted nesting; VCALENDAR is depth 1, VEVENT 2, VALARM 3.
    pub max_depth: usize,
    /// Most properties in any single component.
    pub max_properties_per_component: usize,
}

impl Limits {
    /// The defaults: 64 MiB, 1 MiB lines, 200 000 components, depth 8, 10 000 properties per component.
    pub const DEFAULT: Limits = Limits {
        max_object_bytes: 64 * 1024 * 1024,
        max_line_octets: 1024 * 1024,
        max_components: 200_000,
        max_depth: 8,
        max_properties_per_component: 10_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
