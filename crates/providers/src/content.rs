//! Item content: the iCalendar text exactly as the provider sent it, plus the model's reading of it.
//!
//! This is the one place the providers turn text into structure (`calbridge_model::ical`), and the
//! one place a series' version-independent identity comes from (`calbridge_model::normalized_hash`).

use calbridge_model::{Calendar, Limits, ical, normalized_hash};

use crate::error::ProviderError;

/// Biggest single item accepted from a provider; larger ones are reported, not loaded.
pub const MAX_ITEM_BYTES: usize = 4 * 1024 * 1024;

/// One calendar object resource: one series (a master and its overrides, one UID), or a resource
/// of another kind (VTODO...) that the caller may skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemContent {
    ical: String,
    calendar: Calendar,
}

impl ItemContent {
    /// Reads one iCalendar object; refuses text that is not one, or that holds several UIDs
    /// (RFC 4791 §4.1: one UID per calendar object resource).
    pub fn parse(ical: impl Into<String>) -> Result<Self, ProviderError> {
        let ical = ical.into();
        let limits = Limits {
            max_object_bytes: MAX_ITEM_BYTES,
            ..Limits::DEFAULT
        };
        let calendar = ical::parse_with_limits(ical.as_bytes(), &limits)
            .map_err(|e| ProviderError::invalid(format!("iCalendar: {e}")))?;
        if calendar.series().len() > 1 {
            return Err(ProviderError::invalid(
                "one calendar object holds several UIDs",
            ));
        }
        Ok(Self { ical, calendar })
    }

    /// Wraps a calendar built in memory (written out once, so text and model agree).
    pub fn from_calendar(calendar: Calendar) -> Result<Self, ProviderError> {
        let text = String::from_utf8(ical::write(&calendar))
            .map_err(|_| ProviderError::invalid("calendar did not serialize to UTF-8"))?;
        Self::parse(text)
    }

    pub fn as_ical(&self) -> &str {
        &self.ical
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The UID of the series (or of the first other component that has one).
    pub fn uid(&self) -> Option<&str> {
        if let Some(series) = self.calendar.series().first() {
            return Some(series.uid());
        }
        self.calendar
            .other_components()
            .iter()
            .find_map(|c| c.property("UID").map(|p| p.value.as_str()))
    }

    /// Whether this resource holds an event series (and not only a VTODO, VJOURNAL...).
    pub fn is_event(&self) -> bool {
        !self.calendar.series().is_empty()
    }

    /// The model's normalized hash of the series: equal when nothing but server rewrites
    /// (DTSTAMP, PRODID, folding, order...) differs. Non-event resources hash their text.
    pub fn content_hash(&self) -> String {
        match self.calendar.series().first() {
            Some(series) => normalized_hash(series).to_string(),
            None => {
                use sha2::{Digest, Sha256};
                hex::encode(Sha256::digest(self.ical.as_bytes()))
            }
        }
    }
}

/// A whole calendar (an ICS feed) split into one calendar object per series, each carrying the
/// feed's VTIMEZONEs and calendar-level properties (METHOD dropped).
#[derive(Debug)]
pub struct SplitFeed {
    pub series: Vec<(String, Result<ItemContent, String>)>,
    /// Components other than VEVENT/VTIMEZONE (VTODO, VJOURNAL...), ignored.
    pub other_components: usize,
}

pub fn split_feed(feed: &[u8], max_bytes: usize) -> Result<SplitFeed, ProviderError> {
    let limits = Limits {
        max_object_bytes: max_bytes,
        ..Limits::DEFAULT
    };
    let calendars = ical::parse_all(feed, &limits)
        .map_err(|e| ProviderError::protocol(format!("the feed is not valid iCalendar: {e}")))?;
    if calendars.is_empty() {
        return Err(ProviderError::protocol("the feed holds no VCALENDAR"));
    }
    let mut series = Vec::new();
    let mut other_components = 0;
    for calendar in &calendars {
        other_components += calendar.other_components().len();
        for one in calendar.series() {
            let mut single = Calendar::new("-//calbridge//feed item//EN");
            for property in calendar.properties() {
                let name = property.name.to_ascii_uppercase();
                if name != "METHOD" && name != "VERSION" && name != "PRODID" {
                    single.properties_mut().push(property.clone());
                }
            }
            single
                .timezones_mut()
                .extend(calendar.timezones().iter().cloned());
            single.insert_series(one.clone());
            let item = ItemContent::from_calendar(single).map_err(|e| e.to_string());
            series.push((one.uid().to_owned(), item));
        }
    }
    Ok(SplitFeed {
        series,
        other_components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//a//b//EN\r\nBEGIN:VEVENT\r\nUID:one@example.org\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nSUMMARY:Long\r\n  title\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn parse_finds_uid_and_refuses_non_calendars() {
        let item = ItemContent::parse(EVENT).unwrap();
        assert_eq!(item.uid(), Some("one@example.org"));
        assert!(item.is_event());
        assert!(ItemContent::parse("hello").is_err());
        assert!(ItemContent::parse("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n").is_err());
        let two = EVENT.replace("END:VEVENT\r\n", "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:two\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nEND:VEVENT\r\n");
        assert!(ItemContent::parse(two).is_err());
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
        let feed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//f//EN\r\nMETHOD:PUBLISH\r\nX-WR-CALNAME:Team\r\n\
BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260105T100000\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260105T100000Z\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260106T100000\r\nDTSTART;TZID=Europe/Berlin:20260106T110000\r\nEND:VEVENT\r\n\
BEGIN:VTODO\r\nUID:t\r\nDTSTAMP:20260101T000000Z\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
        let split = split_feed(feed.as_bytes(), 1 << 20).unwrap();
        assert_eq!(split.other_components, 1);
        assert_eq!(split.series.len(), 2);
        let (uid, a) = split.series.iter().find(|(uid, _)| uid == "a").unwrap();
        assert_eq!(uid, "a");
        let a = a.as_ref().unwrap();
        assert_eq!(a.as_ical().matches("BEGIN:VEVENT").count(), 2);
        assert!(a.as_ical().contains("TZID:Europe/Berlin"));
        assert!(a.as_ical().contains("X-WR-CALNAME:Team"));
        assert!(!a.as_ical().contains("METHOD"));
        assert!(split_feed(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\n", 1 << 20).is_err());
    }
}
