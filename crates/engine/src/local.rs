//! The local side of a link: a stored series read into the model, and a model series turned into what the
//! store keeps. What the store keeps (iCalendar text, the API's JSON view, the normalized hash, span and
//! occurrence rows) is computed by `calbridge_model::stored`, the one place the server's events API uses
//! too, so a series written by sync reads back through the API exactly like one written by a client.

use calbridge_model::datetime::CalDateTime;
use calbridge_model::stored::{self, StoredSeries};
use calbridge_model::{Calendar, EventSeries, ical};
use calbridge_store::{CalendarId, NewOccurrence, NewSeries, OccurrenceSet, Series, SeriesUpdate};
use calbridge_sync::{ItemState, Span};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::EngineError;

pub use calbridge_model::stored::calendar_with;

/// A series with the calendar it came in (whose VTIMEZONEs its times may need).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub calendar: Calendar,
    pub series: EventSeries,
}

impl Parsed {
    pub fn from_ical(text: &str) -> Result<Self, EngineError> {
        let calendar = ical::parse(text.as_bytes())
            .map_err(|e| EngineError::Content(format!("stored iCalendar does not parse: {e}")))?;
        Self::from_calendar(calendar)
    }

    pub fn from_calendar(calendar: Calendar) -> Result<Self, EngineError> {
        let series =
            calendar.series().first().cloned().ok_or_else(|| {
                EngineError::Content("the calendar object holds no VEVENT".into())
            })?;
        Ok(Self { calendar, series })
    }

    pub fn from_stored(series: &Series) -> Result<Self, EngineError> {
        Self::from_ical(&series.ical)
    }

    /// What the plan sees of this series.
    pub fn state(&self, floating: &TimeZone) -> ItemState {
        ItemState {
            snapshot: calbridge_sync::series::snapshot(&self.series),
            span: stored::span(&self.calendar, &self.series, floating)
                .map(|s| Span::new(s.start, s.end)),
            modified: modified_of(&self.series),
        }
    }
}

/// A copy of `series` under another UID (`keep_both`: the losing version becomes an event of its own).
pub fn with_uid(series: &EventSeries, uid: &str) -> Result<EventSeries, EngineError> {
    let mut out = EventSeries::new(uid);
    if let Some(master) = series.master() {
        let mut master = master.clone();
        master.uid = uid.to_owned();
        out.set_master(Some(master))
            .map_err(|e| EngineError::Content(e.to_string()))?;
    }
    for event in series.overrides() {
        let mut event = event.clone();
        event.uid = uid.to_owned();
        out.insert_override(event)
            .map_err(|e| EngineError::Content(e.to_string()))?;
    }
    Ok(out)
}

/// Everything the store keeps for a series.
#[derive(Debug, Clone)]
pub struct Storable {
    pub uid: String,
    pub ical: String,
    pub model_json: String,
    pub hash: String,
    pub occurrences: OccurrenceSet,
}

impl Storable {
    /// A new series of `calendar_id` holding this content.
    pub fn into_new(self, calendar_id: CalendarId) -> NewSeries {
        NewSeries {
            calendar_id,
            uid: self.uid,
            ical: self.ical,
            model_json: self.model_json,
            hash: self.hash,
            occurrences: self.occurrences,
        }
    }

    /// An update of a series to this content (its UID stays the series' own).
    pub fn into_update(self) -> SeriesUpdate {
        SeriesUpdate {
            ical: self.ical,
            model_json: self.model_json,
            hash: self.hash,
            occurrences: self.occurrences,
        }
    }
}

/// The store's form of what `calbridge_model::stored` computed (the one conversion between the two).
impl From<StoredSeries> for Storable {
    fn from(stored: StoredSeries) -> Self {
        Self {
            uid: stored.uid,
            ical: stored.ical,
            model_json: stored.model_json,
            hash: stored.hash,
            occurrences: OccurrenceSet {
                rows: stored
                    .rows
                    .into_iter()
                    .map(|row| NewOccurrence {
                        recurrence_id: row.recurrence_id,
                        start: row.start,
                        end: row.end,
                        all_day: row.all_day,
                        data: Some(row.data),
                    })
                    .collect(),
                expanded_until: stored.expanded_until,
            },
        }
    }
}

/// Everything the store keeps for the series of `calendar`, its occurrence index reaching from now.
pub fn storable(calendar: &Calendar, floating: &TimeZone) -> Result<Storable, EngineError> {
    stored::prepare(calendar, floating, Timestamp::now())
        .map(Storable::from)
        .map_err(|e| EngineError::Content(e.to_string()))
}

/// When the series was last modified, for `newest_wins` (LAST-MODIFIED of the master, else the newest
/// of any component).
fn modified_of(series: &EventSeries) -> Option<Timestamp> {
    series
        .events()
        .filter_map(|e| e.last_modified.as_ref())
        .filter_map(|p| match &p.value {
            CalDateTime::Utc(ts) => Some(*ts),
            _ => None,
        })
        .max()
}
