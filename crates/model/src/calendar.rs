//! A calendar and its event series, with the original bytes kept beside the parsed form.
//!
//! Every way to change a [`Calendar`] or an [`EventSeries`] goes through a `*_mut`/`set_*`/`insert_*`
//! method, and each of them drops the kept original bytes of what it touches. So "untouched" is exact:
//! [`crate::ical::write`] emits the original bytes only for objects nobody could have changed.

use std::collections::{HashMap, HashSet};

use crate::component::{Component, Property};
use crate::datetime::CalDateTime;
use crate::event::Event;
use crate::ical::{ParseError, ParseErrorKind, TopLevel};

/// One UID: an optional master (the event without RECURRENCE-ID, holding the RRULE) and its overrides.
///
/// An invitation to a single instance has overrides and no master; a plain event has a master and no
/// overrides.
#[derive(Clone)]
pub struct EventSeries {
    uid: String,
    master: Option<Event>,
    overrides: Vec<Event>,
    source: Option<Vec<u8>>,
}

impl PartialEq for EventSeries {
    fn eq(&self, other: &Self) -> bool {
        self.uid == other.uid && self.master == other.master && self.overrides == other.overrides
    }
}
impl Eq for EventSeries {}

/// Shows the kept original bytes as their length: the parsed form is what a reader wants to see.
struct SourceLen<'a>(&'a Option<Vec<u8>>);

impl std::fmt::Debug for SourceLen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(bytes) => write!(f, "Some(<{} bytes>)", bytes.len()),
            None => f.write_str("None"),
        }
    }
}

impl std::fmt::Debug for EventSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSeries")
            .field("uid", &self.uid)
            .field("master", &self.master)
            .field("overrides", &self.overrides)
            .field("source", &SourceLen(&self.source))
            .finish()
    }
}

/// Why an event cannot join a series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesError {
    /// The event's UID is not the series' UID.
    #[error("event UID {found} does not match the series UID {expected}")]
    UidMismatch {
        /// The series UID.
        expected: String,
        /// The event's UID.
        found: String,
    },
    /// An override needs a RECURRENCE-ID.
    #[error("an override needs a RECURRENCE-ID")]
    MissingRecurrenceId,
    /// A master must not have a RECURRENCE-ID.
    #[error("a series master must not have a RECURRENCE-ID")]
    MasterWithRecurrenceId,
}

impl EventSeries {
    /// An empty series.
    pub fn new(uid: impl Into<String>) -> EventSeries {
        EventSeries {
            uid: uid.into(),
            master: None,
            overrides: Vec::new(),
            source: None,
        }
    }

    /// The UID shared by every event of the series (in its wire form).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The master event, if the series has one.
    pub fn master(&self) -> Option<&Event> {
        self.master.as_ref()
    }

    /// The overrides, in the order they were read or inserted.
    pub fn overrides(&self) -> &[Event] {
        &self.overrides
    }

    /// The override replacing the instance that originally started at `recurrence_id`.
    pub fn override_at(&self, recurrence_id: &CalDateTime) -> Option<&Event> {
        self.overrides.iter().find(|e| {
            e.recurrence_id
                .as_ref()
                .is_some_and(|r| &r.value == recurrence_id)
        })
    }

    /// Master first, then the overrides.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.master.iter().chain(self.overrides.iter())
    }

    /// The bytes this series was read from (its VEVENT blocks, in input order), while untouched.
    pub fn source(&self) -> Option<&[u8]> {
        self.source.as_deref()
    }

    /// Mutable access to the master; drops the original bytes.
    pub fn master_mut(&mut self) -> Option<&mut Event> {
        self.source = None;
        self.master.as_mut()
    }

    /// Mutable access to one override; drops the original bytes.
    pub fn override_at_mut(&mut self, recurrence_id: &CalDateTime) -> Option<&mut Event> {
        self.source = None;
        self.overrides.iter_mut().find(|e| {
            e.recurrence_id
                .as_ref()
                .is_some_and(|r| &r.value == recurrence_id)
        })
    }

    /// Sets (or with `None` removes) the master and returns the previous one.
    pub fn set_master(&mut self, master: Option<Event>) -> Result<Option<Event>, SeriesError> {
        if let Some(event) = &master {
            self.check_uid(event)?;
            if event.recurrence_id.is_some() {
                return Err(SeriesError::MasterWithRecurrenceId);
            }
        }
        self.source = None;
        Ok(std::mem::replace(&mut self.master, master))
    }

    /// Inserts an override, replacing (and returning) one with the same RECURRENCE-ID.
    pub fn insert_override(&mut self, event: Event) -> Result<Option<Event>, SeriesError> {
        self.check_uid(&event)?;
        let Some(rid) = event.recurrence_id.as_ref().map(|r| r.value.clone()) else {
            return Err(SeriesError::MissingRecurrenceId);
        };
        self.source = None;
        let existing = self
            .overrides
            .iter()
            .position(|e| e.recurrence_id.as_ref().is_some_and(|r| r.value == rid));
        Ok(match existing {
            Some(i) => Some(std::mem::replace(&mut self.overrides[i], event)),
            None => {
                self.overrides.push(event);
                None
            }
        })
    }

    /// Removes the override at `recurrence_id`.
    pub fn remove_override(&mut self, recurrence_id: &CalDateTime) -> Option<Event> {
        let i = self.overrides.iter().position(|e| {
            e.recurrence_id
                .as_ref()
                .is_some_and(|r| &r.value == recurrence_id)
        })?;
        self.source = None;
        Some(self.overrides.remove(i))
    }

    fn check_uid(&self, event: &Event) -> Result<(), SeriesError> {
        if event.uid != self.uid {
            return Err(SeriesError::UidMismatch {
                expected: self.uid.clone(),
                found: event.uid.clone(),
            });
        }
        Ok(())
    }

    /// The VEVENT components of the series, master first.
    pub fn to_components(&self) -> Vec<Component> {
        self.events().map(Event::to_component).collect()
    }
}

/// One VCALENDAR: calendar-level properties, VTIMEZONE definitions, event series, and any other
/// components (VTODO, VJOURNAL, X- components) kept as read.
#[derive(Clone)]
pub struct Calendar {
    properties: Vec<Property>,
    timezones: Vec<Component>,
    series: Vec<EventSeries>,
    other_components: Vec<Component>,
    source: Option<Vec<u8>>,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.properties == other.properties
            && self.timezones == other.timezones
            && self.series == other.series
            && self.other_components == other.other_components
    }
}
impl Eq for Calendar {}

impl std::fmt::Debug for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calendar")
            .field("properties", &self.properties)
            .field("timezones", &self.timezones)
            .field("series", &self.series)
            .field("other_components", &self.other_components)
            .field("source", &SourceLen(&self.source))
            .finish()
    }
}

impl Calendar {
    /// An empty calendar with `VERSION:2.0` and the given `PRODID`.
    pub fn new(prodid: &str) -> Calendar {
        Calendar {
            properties: vec![
                Property::new("VERSION", "2.0"),
                Property::text("PRODID", prodid),
            ],
            timezones: Vec::new(),
            series: Vec::new(),
            other_components: Vec::new(),
            source: None,
        }
    }

    /// Calendar-level properties (VERSION, PRODID, METHOD, X-WR-CALNAME, ...) in order.
    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    /// The first calendar-level property named `name`.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The VTIMEZONE components, as read.
    pub fn timezones(&self) -> &[Component] {
        &self.timezones
    }

    /// The VTIMEZONE defining `tzid`, if the calendar carries one.
    pub fn timezone(&self, tzid: &str) -> Option<&Component> {
        self.timezones
            .iter()
            .find(|tz| tz.property("TZID").is_some_and(|p| p.value == tzid))
    }

    /// The event series, in the order their first VEVENT appeared.
    pub fn series(&self) -> &[EventSeries] {
        &self.series
    }

    /// The series with this UID.
    pub fn series_by_uid(&self, uid: &str) -> Option<&EventSeries> {
        self.series.iter().find(|s| s.uid == uid)
    }

    /// Components that are neither VEVENT nor VTIMEZONE (VTODO, VJOURNAL, VFREEBUSY, X-…).
    pub fn other_components(&self) -> &[Component] {
        &self.other_components
    }

    /// The bytes this calendar was read from (BEGIN:VCALENDAR through END:VCALENDAR), while untouched.
    pub fn source(&self) -> Option<&[u8]> {
        self.source.as_deref()
    }

    /// A calendar holding only the series `uid`, as one CalDAV resource or one provider write needs it:
    /// the same calendar-level properties, the VTIMEZONEs the series refers to (by any TZID parameter,
    /// alarms included), and the series itself with its original bytes, so an untouched series still goes
    /// out exactly as it came in.
    pub fn extract_series(&self, uid: &str) -> Option<Calendar> {
        let series = self.series_by_uid(uid)?;
        let mut tzids: Vec<String> = Vec::new();
        for component in series.to_components() {
            collect_tzids(&component, &mut tzids);
        }
        let timezones = self
            .timezones
            .iter()
            .filter(|tz| {
                tz.property("TZID")
                    .is_some_and(|p| tzids.contains(&p.value))
            })
            .cloned()
            .collect();
        Some(Calendar {
            properties: self.properties.clone(),
            timezones,
            series: vec![series.clone()],
            other_components: Vec::new(),
            source: None,
        })
    }

    /// Every TZID the series of this calendar refer to (any TZID parameter, alarms included), each once,
    /// in order of first use.
    pub fn tzids_used(&self) -> Vec<String> {
        let mut tzids = Vec::new();
        for series in &self.series {
            for component in series.to_components() {
                collect_tzids(&component, &mut tzids);
            }
        }
        tzids
    }

    /// Drops the kept original bytes of the calendar and of every series, so [`crate::ical::write`]
    /// serializes everything from the parsed form (canonical property order, CRLF, folding).
    #[must_use]
    pub fn without_sources(mut self) -> Calendar {
        self.source = None;
        for series in &mut self.series {
            series.source = None;
        }
        self
    }

    /// Number of overrides over all series.
    pub fn override_count(&self) -> usize {
        self.series.iter().map(|s| s.overrides.len()).sum()
    }

    /// Mutable calendar-level properties; drops the calendar's original bytes.
    pub fn properties_mut(&mut self) -> &mut Vec<Property> {
        self.source = None;
        &mut self.properties
    }

    /// Mutable VTIMEZONEs; drops the calendar's original bytes.
    pub fn timezones_mut(&mut self) -> &mut Vec<Component> {
        self.source = None;
        &mut self.timezones
    }

    /// Mutable other components; drops the calendar's original bytes.
    pub fn other_components_mut(&mut self) -> &mut Vec<Component> {
        self.source = None;
        &mut self.other_components
    }

    /// Mutable access to one series; drops the calendar's original bytes (the series keeps its own until
    /// it is changed).
    pub fn series_by_uid_mut(&mut self, uid: &str) -> Option<&mut EventSeries> {
        self.source = None;
        self.series.iter_mut().find(|s| s.uid == uid)
    }

    /// Adds a series, replacing (and returning) one with the same UID.
    pub fn insert_series(&mut self, series: EventSeries) -> Option<EventSeries> {
        self.source = None;
        match self.series.iter().position(|s| s.uid == series.uid) {
            Some(i) => Some(std::mem::replace(&mut self.series[i], series)),
            None => {
                self.series.push(series);
                None
            }
        }
    }

    /// Removes the series with this UID.
    pub fn remove_series(&mut self, uid: &str) -> Option<EventSeries> {
        let i = self.series.iter().position(|s| s.uid == uid)?;
        self.source = None;
        Some(self.series.remove(i))
    }

    pub(crate) fn from_top_level(top: TopLevel, input: &[u8]) -> Result<Calendar, ParseError> {
        let TopLevel {
            component,
            span,
            child_spans,
        } = top;
        let mut calendar = Calendar {
            properties: component.properties,
            timezones: Vec::new(),
            series: Vec::new(),
            other_components: Vec::new(),
            source: input.get(span).map(<[u8]>::to_vec),
        };
        let mut by_uid: HashMap<String, usize> = HashMap::new();
        let mut seen_overrides: HashSet<(usize, CalDateTime)> = HashSet::new();
        for (child, child_span) in component.components.into_iter().zip(child_spans) {
            match child.name.as_str() {
                "VTIMEZONE" => calendar.timezones.push(child),
                "VEVENT" => {
                    let line = child.line;
                    let event = Event::from_owned_component(child)?;
                    let index = *by_uid.entry(event.uid.clone()).or_insert_with(|| {
                        calendar.series.push(EventSeries {
                            source: Some(Vec::new()),
                            ..EventSeries::new(event.uid.clone())
                        });
                        calendar.series.len() - 1
                    });
                    let Some(series) = calendar.series.get_mut(index) else {
                        continue;
                    };
                    let duplicate = |recurrence_id: Option<String>| {
                        ParseError::new(
                            line,
                            ParseErrorKind::DuplicateEvent {
                                uid: event.uid.clone(),
                                recurrence_id,
                            },
                        )
                    };
                    match &event.recurrence_id {
                        None if series.master.is_some() => return Err(duplicate(None)),
                        Some(rid) if !seen_overrides.insert((index, rid.value.clone())) => {
                            return Err(duplicate(Some(rid.value.to_string())));
                        }
                        _ => {}
                    }
                    if let (Some(source), Some(bytes)) =
                        (series.source.as_mut(), input.get(child_span))
                    {
                        source.extend_from_slice(bytes);
                    }
                    if event.recurrence_id.is_none() {
                        series.master = Some(event);
                    } else {
                        series.overrides.push(event);
                    }
                }
                _ => calendar.other_components.push(child),
            }
        }
        Ok(calendar)
    }
}

fn collect_tzids(component: &Component, out: &mut Vec<String>) {
    for property in &component.properties {
        if let Some(tzid) = property.param_value("TZID")
            && !out.iter().any(|t| t == tzid)
        {
            out.push(tzid.to_owned());
        }
    }
    for child in &component.components {
        collect_tzids(child, out);
    }
}
