//! iCalendar (RFC 5545) read and write.
//!
//! Reading goes bytes → content lines (unfolded, UTF-8 checked after unfolding) → a generic
//! [`Component`] tree → the typed [`Calendar`]. Every step reports the physical line it failed on and what
//! it expected there, and every size is bounded by [`Limits`]. The original bytes of each calendar and of
//! each event series are kept, so [`write()`] reproduces untouched input byte for byte.
//!
//! ```
//! let input = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\n\
//!              BEGIN:VEVENT\r\nUID:1@x\r\nDTSTAMP:20260101T000000Z\r\n\
//!              DTSTART:20260102T100000Z\r\nSUMMARY:Hi\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
//! let calendar = calbridge_model::ical::parse(input.as_bytes())?;
//! assert_eq!(calendar.series().len(), 1);
//! assert_eq!(calbridge_model::ical::write(&calendar), input.as_bytes());
//! # Ok::<(), calbridge_model::ical::ParseError>(())
//! ```

mod reader;
mod writer;

use crate::calendar::{Calendar, EventSeries};
use crate::component::Component;
use crate::limits::Limits;

pub(crate) use reader::{TopLevel, read};
pub(crate) use writer::{push_folded, write_component, write_property};

/// Malformed or oversized iCalendar input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based physical line where the problem starts (0 for problems with the input as a whole).
    pub line: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(line: usize, kind: ParseErrorKind) -> ParseError {
        ParseError { line, kind }
    }
}

/// The kinds of [`ParseError`]: one per limit, plus syntax and value errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The content-line or component structure is broken.
    #[error("expected {expected}, found {found:?}")]
    Syntax {
        /// What the reader expected at this point.
        expected: String,
        /// What it found (shortened).
        found: String,
    },
    /// A known property's value does not have the type RFC 5545 requires.
    #[error("{property}: expected {expected}, found {found:?}")]
    InvalidValue {
        /// The property name.
        property: String,
        /// The expected value type.
        expected: String,
        /// The value found (shortened).
        found: String,
    },
    /// A component lacks a property RFC 5545 requires of it.
    #[error("{component} without {property}")]
    MissingProperty {
        /// The component name.
        component: String,
        /// The missing property.
        property: String,
    },
    /// Two VEVENTs with the same UID and the same RECURRENCE-ID (or both without one).
    #[error("a second VEVENT for UID {uid:?}{}", recurrence_id.as_ref().map(|r| format!(" with RECURRENCE-ID {r}")).unwrap_or_default())]
    DuplicateEvent {
        /// The UID.
        uid: String,
        /// The RECURRENCE-ID, `None` for a second master.
        recurrence_id: Option<String>,
    },
    /// An unfolded line is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// [`Limits::max_object_bytes`] exceeded.
    #[error("the input is {size} bytes, over the limit of {limit}")]
    ObjectTooLarge {
        /// Input size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// [`Limits::max_line_octets`] exceeded.
    #[error("the unfolded line is at least {length} octets, over the limit of {limit}")]
    LineTooLong {
        /// Octets read so far on this line.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// [`Limits::max_components`] exceeded.
    #[error("more than {limit} components")]
    TooManyComponents {
        /// The limit.
        limit: usize,
    },
    /// [`Limits::max_depth`] exceeded.
    #[error("components nested deeper than {limit}")]
    NestingTooDeep {
        /// The limit.
        limit: usize,
    },
    /// [`Limits::max_properties_per_component`] exceeded.
    #[error("more than {limit} properties in one {component}")]
    TooManyProperties {
        /// The component being read.
        component: String,
        /// The limit.
        limit: usize,
    },
}

/// Reads exactly one VCALENDAR with the default [`Limits`].
pub fn parse(input: &[u8]) -> Result<Calendar, ParseError> {
    parse_with_limits(input, &Limits::DEFAULT)
}

/// Reads exactly one VCALENDAR; a second one is an error (use [`parse_all`] for streams of several).
pub fn parse_with_limits(input: &[u8], limits: &Limits) -> Result<Calendar, ParseError> {
    let mut tops = read(input, limits)?;
    if let Some(second) = tops.get(1) {
        return Err(ParseError::new(
            second.component.line,
            ParseErrorKind::Syntax {
                expected: "end of input after END:VCALENDAR".to_owned(),
                found: "BEGIN:VCALENDAR".to_owned(),
            },
        ));
    }
    let Some(first) = tops.pop() else {
        return Err(ParseError::new(
            0,
            ParseErrorKind::Syntax {
                expected: "BEGIN:VCALENDAR".to_owned(),
                found: "end of input".to_owned(),
            },
        ));
    };
    Calendar::from_top_level(first, input)
}

/// Reads every VCALENDAR in `input` (some feeds concatenate several).
pub fn parse_all(input: &[u8], limits: &Limits) -> Result<Vec<Calendar>, ParseError> {
    read(input, limits)?
        .into_iter()
        .map(|top| Calendar::from_top_level(top, input))
        .collect()
}

/// Writes a calendar: its original bytes if it is untouched; otherwise freshly serialized with CRLF and
/// folding, except that each untouched series still goes out as its original bytes.
pub fn write(calendar: &Calendar) -> Vec<u8> {
    if let Some(source) = calendar.source() {
        return source.to_vec();
    }
    let mut out = String::new();
    push_folded(&mut out, "BEGIN:VCALENDAR");
    for property in calendar.properties() {
        write_property(&mut out, property);
    }
    for timezone in calendar.timezones() {
        write_component(&mut out, timezone);
    }
    let mut bytes = out.into_bytes();
    for series in calendar.series() {
        bytes.extend_from_slice(&write_series(series));
    }
    let mut out = String::new();
    for component in calendar.other_components() {
        write_component(&mut out, component);
    }
    push_folded(&mut out, "END:VCALENDAR");
    bytes.extend_from_slice(out.as_bytes());
    bytes
}

/// Writes several calendars one after the other.
pub fn write_all(calendars: &[Calendar]) -> Vec<u8> {
    calendars.iter().flat_map(write).collect()
}

/// The VEVENT blocks of one series: its original bytes if untouched, else serialized (master first).
pub fn write_series(series: &EventSeries) -> Vec<u8> {
    if let Some(source) = series.source() {
        return source.to_vec();
    }
    let mut out = String::new();
    for component in series.to_components() {
        write_component(&mut out, &component);
    }
    out.into_bytes()
}

/// Reads the generic component tree of every top-level component (each a VCALENDAR) in `input`.
pub fn parse_components(input: &[u8], limits: &Limits) -> Result<Vec<Component>, ParseError> {
    Ok(read(input, limits)?
        .into_iter()
        .map(|top| top.component)
        .collect())
}

/// Writes a generic component tree, folded, with CRLF line ends.
pub fn write_components(components: &[Component]) -> String {
    let mut out = String::new();
    for component in components {
        write_component(&mut out, component);
    }
    out
}

/// Escapes TEXT for the wire (RFC 5545 §3.3.11): backslash, semicolon, comma and line feeds. A carriage
/// return is left as it is: TEXT read from the wire can hold a lone CR (the reader only splits lines at
/// LF), and writing it back unchanged is what keeps parse → write → parse exact.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

/// Resolves TEXT escapes. An unknown escape (`\:` is common in old Outlook exports) stands for the
/// character itself; a trailing lone backslash is kept.
pub fn unescape_text(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Splits a multi-valued TEXT value (CATEGORIES, RESOURCES) on unescaped commas and unescapes each part.
pub fn split_text_list(raw: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => {
                parts.push(unescape_text(&raw[start..i]));
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    parts.push(unescape_text(raw.get(start..).unwrap_or("")));
    parts
}
