//! Item content: the iCalendar text exactly as the provider sent it.
//!
//! The calendar model's parser and normalized hash belong to `calbridge-model`; this module is the
//! one place the providers turn text into structure, so switching to the model's parser touches
//! nothing else. Until then it does the little the connectors need: unfold lines, find components
//! and UIDs, split a feed into series, and hash a series without the fields servers rewrite.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::ProviderError;

/// Biggest single item accepted from a provider; larger ones are reported, not loaded.
pub const MAX_ITEM_BYTES: usize = 4 * 1024 * 1024;

/// One calendar object resource (one series: a master and its overrides, one UID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemContent {
    ical: String,
    uid: Option<String>,
}

impl ItemContent {
    /// Checks the text is one iCalendar object and remembers its UID.
    pub fn parse(ical: impl Into<String>) -> Result<Self, ProviderError> {
        let ical = ical.into();
        if ical.len() > MAX_ITEM_BYTES {
            return Err(ProviderError::invalid(format!(
                "item is larger than {MAX_ITEM_BYTES} bytes"
            )));
        }
        let lines = unfold(&ical);
        let first = lines.iter().find(|l| !l.trim().is_empty());
        if !first.is_some_and(|l| l.trim().eq_ignore_ascii_case("BEGIN:VCALENDAR")) {
            return Err(ProviderError::invalid(
                "not an iCalendar object (no BEGIN:VCALENDAR)",
            ));
        }
        if !lines
            .iter()
            .any(|l| l.trim().eq_ignore_ascii_case("END:VCALENDAR"))
        {
            return Err(ProviderError::invalid(
                "iCalendar object is cut short (no END:VCALENDAR)",
            ));
        }
        let uids: Vec<String> = lines.iter().filter_map(|l| property(l, "UID")).collect();
        let mut distinct = uids.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            return Err(ProviderError::invalid(
                "one calendar object holds several UIDs",
            ));
        }
        Ok(Self {
            ical,
            uid: distinct.pop(),
        })
    }

    pub fn as_ical(&self) -> &str {
        &self.ical
    }

    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// A hash of the content that ignores what servers rewrite on their own (`DTSTAMP`, `PRODID`,
    /// `LAST-MODIFIED`, line folding, line endings, component order).
    pub fn content_hash(&self) -> String {
        let lines = unfold(&self.ical);
        let mut components: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut depth = 0usize;
        for line in &lines {
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("BEGIN:") {
                depth += 1;
            }
            if depth >= 2 && !is_volatile(&upper) {
                current.push_str(line);
                current.push('\n');
            }
            if upper.starts_with("END:") {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    components.push(std::mem::take(&mut current));
                }
            }
        }
        components.sort();
        let mut hasher = Sha256::new();
        for component in components {
            hasher.update(component.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

fn is_volatile(upper_line: &str) -> bool {
    ["DTSTAMP", "PRODID", "LAST-MODIFIED"].iter().any(|name| {
        upper_line
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(';'))
    })
}

/// Unfolds RFC 5545 content lines (CRLF or LF, continuation lines start with a space or tab).
pub(crate) fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let (Some(rest), Some(last)) = (raw.strip_prefix([' ', '\t']), lines.last_mut()) {
            last.push_str(rest);
            continue;
        }
        lines.push(raw.to_owned());
    }
    lines
}

/// The value of a property line named `name` (any parameters), or `None`.
pub(crate) fn property(line: &str, name: &str) -> Option<String> {
    let (head, value) = split_value(line)?;
    let prop = head.split(';').next()?;
    prop.eq_ignore_ascii_case(name).then(|| value.to_owned())
}

/// Splits a content line at the first colon that is not inside a quoted parameter value.
pub(crate) fn split_value(line: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => return Some((&line[..i], &line[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Splits a whole calendar (an ICS feed) into one calendar object per UID, each carrying the
/// calendar's VTIMEZONEs. Components without a UID are reported by position.
pub fn split_series(feed: &str) -> Result<SplitFeed, ProviderError> {
    let lines = unfold(feed);
    let first = lines.iter().find(|l| !l.trim().is_empty());
    if !first.is_some_and(|l| l.trim().eq_ignore_ascii_case("BEGIN:VCALENDAR")) {
        return Err(ProviderError::protocol(
            "the feed is not iCalendar (no BEGIN:VCALENDAR)",
        ));
    }
    let mut header: Vec<String> = Vec::new();
    let mut timezones: Vec<String> = Vec::new();
    let mut by_uid: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut without_uid = 0usize;
    let mut depth = 0usize;
    let mut component: Vec<String> = Vec::new();
    let mut component_name = String::new();
    let mut closed = false;
    for line in lines {
        let upper = line.to_ascii_uppercase();
        if let Some(name) = upper.strip_prefix("BEGIN:") {
            depth += 1;
            if depth == 2 {
                component_name = name.trim().to_owned();
                component.clear();
            }
        }
        match depth {
            0 => {}
            1 => {
                if upper.starts_with("END:VCALENDAR") {
                    closed = true;
                } else if !upper.starts_with("BEGIN:VCALENDAR")
                    && !upper.starts_with("METHOD:")
                    && !line.is_empty()
                {
                    header.push(line.clone());
                }
            }
            _ => component.push(line.clone()),
        }
        if upper.starts_with("END:") {
            if depth == 2 {
                let text = component.join("\r\n");
                if component_name == "VTIMEZONE" {
                    timezones.push(text);
                } else if let Some(uid) = component.iter().find_map(|l| property(l, "UID")) {
                    by_uid.entry(uid).or_default().push(text);
                } else {
                    without_uid += 1;
                }
            }
            depth = depth.saturating_sub(1);
        }
    }
    if !closed {
        return Err(ProviderError::protocol(
            "the feed is cut short (no END:VCALENDAR)",
        ));
    }
    let mut series = Vec::with_capacity(by_uid.len());
    for (uid, components) in by_uid {
        let mut text = String::from("BEGIN:VCALENDAR\r\n");
        for line in &header {
            text.push_str(line);
            text.push_str("\r\n");
        }
        for tz in &timezones {
            text.push_str(tz);
            text.push_str("\r\n");
        }
        for component in components {
            text.push_str(&component);
            text.push_str("\r\n");
        }
        text.push_str("END:VCALENDAR\r\n");
        match ItemContent::parse(text) {
            Ok(content) => series.push((uid, Ok(content))),
            Err(err) => series.push((uid, Err(err.to_string()))),
        }
    }
    Ok(SplitFeed {
        series,
        without_uid,
    })
}

#[derive(Debug)]
pub struct SplitFeed {
    pub series: Vec<(String, Result<ItemContent, String>)>,
    pub without_uid: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//a//b//EN\r\nBEGIN:VEVENT\r\nUID:one@example.org\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nSUMMARY:Long\r\n  title\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn parse_finds_uid_and_refuses_non_calendars() {
        let item = ItemContent::parse(EVENT).unwrap();
        assert_eq!(item.uid(), Some("one@example.org"));
        assert!(ItemContent::parse("hello").is_err());
        assert!(ItemContent::parse("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n").is_err());
    }

    #[test]
    fn hash_ignores_server_rewrites_but_not_edits() {
        let a = ItemContent::parse(EVENT).unwrap();
        let rewritten = EVENT
            .replace("DTSTAMP:20260101T000000Z", "DTSTAMP:20270101T000000Z")
            .replace("-//a//b//EN", "-//server//EN")
            .replace("\r\n", "\n");
        let b = ItemContent::parse(rewritten).unwrap();
        assert_eq!(a.content_hash(), b.content_hash());
        let edited = ItemContent::parse(EVENT.replace("SUMMARY:Long", "SUMMARY:Short")).unwrap();
        assert_ne!(a.content_hash(), edited.content_hash());
    }

    #[test]
    fn split_groups_overrides_with_their_master_and_copies_timezones() {
        let feed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:PUBLISH\r\nBEGIN:VTIMEZONE\r\nTZID:X\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:a\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:a\r\nRECURRENCE-ID:20260101T000000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nSUMMARY:no uid\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let split = split_series(feed).unwrap();
        assert_eq!(split.without_uid, 1);
        assert_eq!(split.series.len(), 2);
        let (uid, a) = &split.series[0];
        assert_eq!(uid, "a");
        let a = a.as_ref().unwrap().as_ical();
        assert_eq!(a.matches("BEGIN:VEVENT").count(), 2);
        assert!(a.contains("TZID:X"));
        assert!(!a.contains("METHOD"));
        assert!(split_series("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\n").is_err());
    }
}
