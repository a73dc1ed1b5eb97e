//! Content lines (RFC 5545 §3.1) and the component tree built from them.
//!
//! The reader works on bytes until a logical line is unfolded, and only then checks UTF-8: folding may
//! split a multi-octet character between two physical lines, and both halves are invalid on their own.

use std::borrow::Cow;
use std::ops::Range;

use super::{ParseError, ParseErrorKind};
use crate::component::{Component, Param, Property};
use crate::limits::Limits;

/// A top-level component with the byte ranges the writer needs to reproduce untouched input.
#[derive(Debug)]
pub(crate) struct TopLevel {
    pub component: Component,
    /// From the first byte of `BEGIN:` to the end of the `END:` line's terminator.
    pub span: Range<usize>,
    /// The same for each direct child, parallel to `component.components`.
    pub child_spans: Vec<Range<usize>>,
}

struct LogicalLine<'a> {
    bytes: Cow<'a, [u8]>,
    /// 1-based physical line where this logical line starts.
    line: usize,
    start: usize,
    end: usize,
}

struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    /// Physical lines consumed so far.
    line: usize,
    max_line_octets: usize,
}

impl<'a> Lines<'a> {
    /// One physical line without its terminator, and the offset just after the terminator.
    fn physical(&self, at: usize) -> (&'a [u8], usize) {
        let rest = &self.input[at..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let content = &rest[..nl];
                let content = content.strip_suffix(b"\r").unwrap_or(content);
                (content, at + nl + 1)
            }
            None => (rest, self.input.len()),
        }
    }

    fn next_logical(&mut self) -> Option<Result<LogicalLine<'a>, ParseError>> {
        loop {
            if self.pos >= self.input.len() {
                return None;
            }
            let start = self.pos;
            let (first, mut next) = self.physical(start);
            self.line += 1;
            let line = self.line;
            let mut bytes: Cow<'a, [u8]> = Cow::Borrowed(first);
            while next < self.input.len() && matches!(self.input[next], b' ' | b'\t') {
                let (cont, after) = self.physical(next);
                self.line += 1;
                bytes.to_mut().extend_from_slice(&cont[1..]);
                next = after;
                if bytes.len() > self.max_line_octets {
                    break;
                }
            }
            self.pos = next;
            if bytes.len() > self.max_line_octets {
                return Some(Err(ParseError::new(
                    line,
                    ParseErrorKind::LineTooLong {
                        length: bytes.len(),
                        limit: self.max_line_octets,
                    },
                )));
            }
            // Blank lines are not content lines; exports often end with one, so they are skipped.
            if bytes.iter().all(|b| matches!(b, b' ' | b'\t')) {
                continue;
            }
            return Some(Ok(LogicalLine {
                bytes,
                line,
                start,
                end: next,
            }));
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn found(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

fn syntax(line: usize, expected: impl Into<String>, found_text: &str) -> ParseError {
    ParseError::new(
        line,
        ParseErrorKind::Syntax {
            expected: expected.into(),
            found: found(found_text),
        },
    )
}

/// Parses one unfolded content line: `name *(";" param) ":" value`.
pub(crate) fn parse_content_line(text: &str, line: usize) -> Result<Property, ParseError> {
    let bytes = text.as_bytes();
    let name_end = bytes
        .iter()
        .position(|&b| !is_name_char(b))
        .unwrap_or(bytes.len());
    if name_end == 0 {
        return Err(syntax(line, "a property name (letters, digits, '-')", text));
    }
    let name = text[..name_end].to_ascii_uppercase();
    let mut params = Vec::new();
    let mut pos = name_end;
    loop {
        match bytes.get(pos) {
            Some(b':') => {
                pos += 1;
                break;
            }
            Some(b';') => {
                pos += 1;
                let (param, after) = parse_param(text, pos, line)?;
                params.push(param);
                pos = after;
            }
            _ => {
                return Err(syntax(
                    line,
                    format!("':' or ';' after the property name {name}"),
                    &text[pos..],
                ));
            }
        }
    }
    Ok(Property {
        name,
        params,
        value: text[pos..].to_owned(),
        line,
    })
}

fn parse_param(text: &str, start: usize, line: usize) -> Result<(Param, usize), ParseError> {
    let bytes = text.as_bytes();
    let name_len = bytes[start..]
        .iter()
        .position(|&b| !is_name_char(b))
        .unwrap_or(bytes.len() - start);
    if name_len == 0 {
        return Err(syntax(line, "a parameter name after ';'", &text[start..]));
    }
    let name = text[start..start + name_len].to_ascii_uppercase();
    let mut pos = start + name_len;
    if bytes.get(pos) != Some(&b'=') {
        return Err(syntax(
            line,
            format!("'=' after the parameter name {name}"),
            &text[pos..],
        ));
    }
    pos += 1;
    let mut values = Vec::new();
    loop {
        if bytes.get(pos) == Some(&b'"') {
            let Some(close) = bytes[pos + 1..].iter().position(|&b| b == b'"') else {
                return Err(syntax(
                    line,
                    format!("a closing '\"' in the value of parameter {name}"),
                    &text[pos..],
                ));
            };
            values.push(text[pos + 1..pos + 1 + close].to_owned());
            pos += close + 2;
        } else {
            let len = bytes[pos..]
                .iter()
                .position(|&b| matches!(b, b',' | b';' | b':' | b'"'))
                .unwrap_or(bytes.len() - pos);
            values.push(text[pos..pos + len].to_owned());
            pos += len;
        }
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b';' | b':') => return Ok((Param { name, values }, pos)),
            _ => {
                return Err(syntax(
                    line,
                    format!("',', ';' or ':' after a value of parameter {name}"),
                    &text[pos..],
                ));
            }
        }
    }
}

struct Open {
    component: Component,
    start: usize,
    child_spans: Vec<Range<usize>>,
}

/// Reads every top-level component of `input`.
pub(crate) fn read(input: &[u8], limits: &Limits) -> Result<Vec<TopLevel>, ParseError> {
    if input.len() > limits.max_object_bytes {
        return Err(ParseError::new(
            0,
            ParseErrorKind::ObjectTooLarge {
                size: input.len(),
                limit: limits.max_object_bytes,
            },
        ));
    }
    let bom = if input.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let mut lines = Lines {
        input,
        pos: bom,
        line: 0,
        max_line_octets: limits.max_line_octets,
    };
    let mut stack: Vec<Open> = Vec::new();
    let mut tops = Vec::new();
    let mut components = 0usize;
    while let Some(logical) = lines.next_logical() {
        let logical = logical?;
        let line = logical.line;
        let Ok(text) = std::str::from_utf8(&logical.bytes) else {
            return Err(ParseError::new(line, ParseErrorKind::InvalidUtf8));
        };
        let property = parse_content_line(text, line)?;
        if property.name == "BEGIN" {
            let name = property.value.trim();
            if name.is_empty() || !name.bytes().all(is_name_char) {
                return Err(syntax(
                    line,
                    "a component name after BEGIN:",
                    &property.value,
                ));
            }
            if stack.is_empty() && !name.eq_ignore_ascii_case("VCALENDAR") {
                return Err(syntax(line, "BEGIN:VCALENDAR", text));
            }
            components += 1;
            if components > limits.max_components {
                return Err(ParseError::new(
                    line,
                    ParseErrorKind::TooManyComponents {
                        limit: limits.max_components,
                    },
                ));
            }
            if stack.len() + 1 > limits.max_depth {
                return Err(ParseError::new(
                    line,
                    ParseErrorKind::NestingTooDeep {
                        limit: limits.max_depth,
                    },
                ));
            }
            let mut component = Component::new(name);
            component.line = line;
            stack.push(Open {
                component,
                start: logical.start,
                child_spans: Vec::new(),
            });
        } else if property.name == "END" {
            let Some(open) = stack.pop() else {
                return Err(syntax(line, "BEGIN:VCALENDAR", text));
            };
            if !property
                .value
                .trim()
                .eq_ignore_ascii_case(&open.component.name)
            {
                return Err(syntax(
                    line,
                    format!(
                        "END:{} (to close the BEGIN on line {})",
                        open.component.name, open.component.line
                    ),
                    text,
                ));
            }
            let span = open.start..logical.end;
            match stack.last_mut() {
                Some(parent) => {
                    parent.component.components.push(open.component);
                    parent.child_spans.push(span);
                }
                None => tops.push(TopLevel {
                    component: open.component,
                    span,
                    child_spans: open.child_spans,
                }),
            }
        } else {
            let Some(open) = stack.last_mut() else {
                return Err(syntax(line, "BEGIN:VCALENDAR", text));
            };
            if open.component.properties.len() >= limits.max_properties_per_component {
                return Err(ParseError::new(
                    line,
                    ParseErrorKind::TooManyProperties {
                        component: open.component.name.clone(),
                        limit: limits.max_properties_per_component,
                    },
                ));
            }
            open.component.properties.push(property);
        }
    }
    if let Some(open) = stack.last() {
        return Err(ParseError::new(
            lines.line,
            ParseErrorKind::Syntax {
                expected: format!(
                    "END:{} (to close the BEGIN on line {})",
                    open.component.name, open.component.line
                ),
                found: "end of input".to_owned(),
            },
        ));
    }
    if tops.is_empty() {
        return Err(ParseError::new(
            lines.line,
            ParseErrorKind::Syntax {
                expected: "BEGIN:VCALENDAR".to_owned(),
                found: "end of input".to_owned(),
            },
        ));
    }
    Ok(tops)
}
