//! Recurrence sets (RFC 5545 §3.8.5): DTSTART + RRULEs + RDATEs − EXRULEs − EXDATEs, then overrides by
//! RECURRENCE-ID, expanded lazily into a window.
//!
//! Local wall-clock candidates become instants here, with RFC 5545 §3.3.5's rule for DST edges: a time in
//! a gap takes the offset before the gap (02:30 on Berlin's spring-forward day is 01:30Z), an ambiguous
//! time takes its first occurrence. That is jiff's "compatible" disambiguation.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::datetime::{CalDateTime, DateOrPeriod, IcalDuration, PeriodEnd};
use crate::rrule::{Frequency, RRule};
use crate::rrule_iter::{IterLimits, RuleIter, RuleIterError};
use crate::tz::{TzError, TzResolver};

/// Why a series could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(transparent)]
    TimeZone(#[from] TzError),
    #[error(transparent)]
    Rule(#[from] RuleIterError),
    #[error("FREQ={0} needs a DTSTART with a time; this series is all-day")]
    SubDailyAllDay(&'static str),
    #[error("date-time out of range: {0}")]
    OutOfRange(String),
}

/// How long each instance lasts, as the master event says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesEnd {
    /// DTEND: every instance lasts the same exact time (RFC 5545 §3.8.5.3), or the same number of days
    /// for all-day series.
    End(CalDateTime),
    /// DURATION: nominal days plus exact time, applied to each instance's own start.
    Duration(IcalDuration),
}

/// An overridden instance (a VEVENT with RECURRENCE-ID and the master's UID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideInput {
    pub recurrence_id: CalDateTime,
    /// RANGE=THISANDFUTURE: the change of start and length applies to every later instance too.
    pub this_and_future: bool,
    pub start: CalDateTime,
    pub end: Option<SeriesEnd>,
    /// STATUS:CANCELLED: the instance is removed.
    pub cancelled: bool,
}

/// Everything expansion needs from one event series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInput {
    pub uid: String,
    pub dtstart: CalDateTime,
    pub end: Option<SeriesEnd>,
    pub rrules: Vec<RRule>,
    pub exrules: Vec<RRule>,
    pub rdates: Vec<DateOrPeriod>,
    pub exdates: Vec<CalDateTime>,
    pub overrides: Vec<OverrideInput>,
}

impl SeriesInput {
    /// A single event with no recurrence.
    pub fn single(uid: impl Into<String>, dtstart: CalDateTime, end: Option<SeriesEnd>) -> Self {
        Self {
            uid: uid.into(),
            dtstart,
            end,
            rrules: Vec::new(),
            exrules: Vec::new(),
            rdates: Vec::new(),
            exdates: Vec::new(),
            overrides: Vec::new(),
        }
    }

    pub fn is_recurring(&self) -> bool {
        !self.rrules.is_empty() || !self.rdates.is_empty()
    }
}

/// A point of an occurrence: an instant, or a date for all-day series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OccurrenceTime {
    Date(Date),
    At(Timestamp),
}

impl OccurrenceTime {
    /// RFC 3339 UTC (`2024-03-31T01:30:00Z`) or `YYYY-MM-DD`.
    pub fn to_rfc3339(&self) -> String {
        match self {
            Self::Date(d) => d.to_string(),
            Self::At(ts) => {
                let dt = TimeZone::UTC.to_datetime(*ts);
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                    dt.year(),
                    dt.month(),
                    dt.day(),
                    dt.hour(),
                    dt.minute(),
                    dt.second()
                )
            }
        }
    }
}

/// One instance of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The instance's original start (what RECURRENCE-ID names); `None` for a non-recurring event.
    pub recurrence_id: Option<OccurrenceTime>,
    pub start: OccurrenceTime,
    pub end: OccurrenceTime,
    pub is_override: bool,
}

/// The half-open window `[from, to)` on occurrence starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Expansion settings.
#[derive(Debug, Clone)]
pub struct ExpandOptions {
    /// The zone floating times and all-day dates are read in (for window comparisons).
    pub floating_zone: TimeZone,
    pub limits: IterLimits,
}

impl Default for ExpandOptions {
    fn default() -> Self {
        Self {
            floating_zone: TimeZone::UTC,
            limits: IterLimits::default(),
        }
    }
}

/// The series' frame of reference: all-day, or timed in one zone.
#[derive(Debug, Clone)]
struct Frame {
    all_day: bool,
    zone: TimeZone,
    floating: TimeZone,
}

impl Frame {
    fn instant(&self, local: DateTime) -> Result<Timestamp, ExpandError> {
        to_instant(&self.zone, local)
    }

    /// The comparable key of any date or date-time value in this series.
    fn key(
        &self,
        value: &CalDateTime,
        resolver: &TzResolver,
    ) -> Result<OccurrenceTime, ExpandError> {
        if self.all_day {
            let date = match value {
                CalDateTime::Utc(ts) => self.floating.to_datetime(*ts).date(),
                other => other.date(),
            };
            return Ok(OccurrenceTime::Date(date));
        }
        Ok(OccurrenceTime::At(match value {
            CalDateTime::Date(d) => self.instant(d.to_datetime(Time::midnight()))?,
            CalDateTime::Floating(dt) => to_instant(&self.floating, *dt)?,
            CalDateTime::Utc(ts) => *ts,
            CalDateTime::Zoned { local, tzid } => {
                to_instant(&resolver.resolve(tzid)?.zone, *local)?
            }
        }))
    }

    /// The local wall-clock time of a value in the series' zone (for nominal durations).
    fn local(&self, value: &CalDateTime, resolver: &TzResolver) -> Result<DateTime, ExpandError> {
        Ok(match self.key(value, resolver)? {
            OccurrenceTime::Date(d) => d.to_datetime(Time::midnight()),
            OccurrenceTime::At(ts) => self.zone.to_datetime(ts),
        })
    }

    /// Where a key sits on the timeline, for window checks: all-day dates at midnight in the floating zone.
    fn position(&self, key: OccurrenceTime) -> Result<Timestamp, ExpandError> {
        match key {
            OccurrenceTime::At(ts) => Ok(ts),
            OccurrenceTime::Date(d) => to_instant(&self.floating, d.to_datetime(Time::midnight())),
        }
    }
}

fn to_instant(zone: &TimeZone, local: DateTime) -> Result<Timestamp, ExpandError> {
    zone.to_ambiguous_timestamp(local)
        .compatible()
        .map_err(|e| ExpandError::OutOfRange(format!("{local}: {e}")))
}

/// The length of instances, resolved once.
#[derive(Debug, Clone, Copy)]
enum Length {
    Days(i64),
    Exact(SignedDuration),
    Nominal { days: i64, exact: SignedDuration },
}

impl Length {
    fn end(&self, frame: &Frame, start: OccurrenceTime) -> Result<OccurrenceTime, ExpandError> {
        let oor = |what: &str| ExpandError::OutOfRange(what.to_string());
        match (start, *self) {
            (OccurrenceTime::Date(d), Length::Days(n)) => d
                .checked_add(jiff::Span::new().days(n))
                .map(OccurrenceTime::Date)
                .map_err(|_| oor("end date")),
            (OccurrenceTime::Date(d), Length::Nominal { days, .. }) => d
                .checked_add(jiff::Span::new().days(days))
                .map(OccurrenceTime::Date)
                .map_err(|_| oor("end date")),
            (OccurrenceTime::Date(d), Length::Exact(e)) => d
                .checked_add(jiff::Span::new().days(e.as_secs() / 86_400))
                .map(OccurrenceTime::Date)
                .map_err(|_| oor("end date")),
            (OccurrenceTime::At(ts), Length::Exact(e)) => ts
                .checked_add(e)
                .map(OccurrenceTime::At)
                .map_err(|_| oor("end")),
            (OccurrenceTime::At(ts), Length::Days(n)) => ts
                .checked_add(SignedDuration::from_hours(24 * n))
                .map(OccurrenceTime::At)
                .map_err(|_| oor("end")),
            (OccurrenceTime::At(ts), Length::Nominal { days: 0, exact }) => ts
                .checked_add(exact)
                .map(OccurrenceTime::At)
                .map_err(|_| oor("end")),
            (OccurrenceTime::At(ts), Length::Nominal { days, exact }) => {
                let local = frame
                    .zone
                    .to_datetime(ts)
                    .checked_add(jiff::Span::new().days(days))
                    .map_err(|_| oor("end"))?;
                frame
                    .instant(local)?
                    .checked_add(exact)
                    .map(OccurrenceTime::At)
                    .map_err(|_| oor("end"))
            }
        }
    }
}

fn length_of(
    frame: &Frame,
    resolver: &TzResolver,
    start: &CalDateTime,
    end: Option<&SeriesEnd>,
) -> Result<Length, ExpandError> {
    Ok(match end {
        None if frame.all_day => Length::Days(1),
        None => Length::Exact(SignedDuration::ZERO),
        Some(SeriesEnd::Duration(d)) if frame.all_day => {
            Length::Days(d.nominal_days() + d.exact_seconds() / 86_400)
        }
        Some(SeriesEnd::Duration(d)) => Length::Nominal {
            days: d.nominal_days(),
            exact: SignedDuration::from_secs(d.exact_seconds()),
        },
        Some(SeriesEnd::End(e)) => match (frame.key(start, resolver)?, frame.key(e, resolver)?) {
            (OccurrenceTime::Date(a), OccurrenceTime::Date(b)) => {
                Length::Days(i64::from((b - a).get_days()))
            }
            (OccurrenceTime::At(a), OccurrenceTime::At(b)) => Length::Exact(b.duration_since(a)),
            _ => Length::Exact(SignedDuration::ZERO),
        },
    })
}

/// One rule's candidates as keys, with its UNTIL applied.
///
/// Wall-clock order is not always instant order: a candidate in a DST gap resolves to a later instant
/// than a candidate just after the gap (02:15 in Lord Howe's half-hour gap is 15:45Z, 02:30 is 15:30Z;
/// Apia's skipped 2011-12-30 is a 24-hour gap). Candidates in a gap are therefore held back until a
/// candidate outside any gap proves that nothing earlier can follow (instants of non-gap wall-clock
/// times only grow).
struct KeyedRule {
    iter: RuleIter,
    until: Option<UntilBound>,
    done: bool,
    pending: BinaryHeap<Reverse<(OccurrenceTime, DateTime)>>,
    released_up_to: Option<OccurrenceTime>,
}

#[derive(Debug, Clone, Copy)]
enum UntilBound {
    Date(Date),
    Local(DateTime),
    At(Timestamp),
}

impl KeyedRule {
    fn new(
        frame: &Frame,
        resolver: &TzResolver,
        rule: &RRule,
        dtstart_local: DateTime,
        limits: IterLimits,
        skip_to: Option<DateTime>,
    ) -> Result<Self, ExpandError> {
        if frame.all_day && rule.freq < Frequency::Daily {
            return Err(ExpandError::SubDailyAllDay(rule.freq.as_str()));
        }
        let until = match &rule.until {
            None => None,
            Some(u) if frame.all_day => Some(UntilBound::Date(match u {
                CalDateTime::Utc(ts) => frame.floating.to_datetime(*ts).date(),
                other => other.date(),
            })),
            // A DATE UNTIL on a timed series covers that whole day: the most useful reading of a value the
            // RFC says must not occur.
            Some(CalDateTime::Date(d)) => Some(UntilBound::Local(
                d.to_datetime(Time::new(23, 59, 59, 0).unwrap_or(Time::MAX)),
            )),
            // A floating UNTIL bounds the wall clock, exactly as written.
            Some(CalDateTime::Floating(dt)) => Some(UntilBound::Local(*dt)),
            Some(other) => Some(UntilBound::At(match frame.key(other, resolver)? {
                OccurrenceTime::At(ts) => ts,
                OccurrenceTime::Date(d) => frame.instant(d.to_datetime(Time::midnight()))?,
            })),
        };
        let mut rule = rule.clone();
        rule.until = None;
        // DTSTART counts as the first instance even when the rule does not produce it (RFC 5545
        // §3.8.5.3), so such a rule owes one instance fewer.
        if let Some(count) = rule.count {
            let mut probe = RuleIter::new(rule.clone(), dtstart_local, limits);
            if !matches!(probe.next(), Some(Ok(first)) if first == dtstart_local) {
                rule.count = Some(count.saturating_sub(1));
            }
        }
        let mut iter = RuleIter::new(rule, dtstart_local, limits);
        if let Some(target) = skip_to {
            iter.skip_to(target);
        }
        Ok(Self {
            iter,
            until,
            done: false,
            pending: BinaryHeap::new(),
            released_up_to: None,
        })
    }

    fn next_key(
        &mut self,
        frame: &Frame,
    ) -> Option<Result<(OccurrenceTime, DateTime), ExpandError>> {
        loop {
            if let Some(Reverse(first)) = self.pending.peek()
                && (self.done || self.released_up_to.is_some_and(|r| first.0 <= r))
            {
                return self.pending.pop().map(|Reverse(item)| Ok(item));
            }
            if self.done {
                return None;
            }
            match self.next_candidate(frame) {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    self.pending.clear();
                    return Some(Err(e));
                }
                Some(Ok((key, local))) => {
                    let in_gap = !frame.all_day
                        && matches!(
                            frame.zone.to_ambiguous_timestamp(local).offset(),
                            jiff::tz::AmbiguousOffset::Gap { .. }
                        );
                    self.pending.push(Reverse((key, local)));
                    if !in_gap {
                        self.released_up_to = Some(self.released_up_to.map_or(key, |r| r.max(key)));
                    }
                }
            }
        }
    }

    fn next_candidate(
        &mut self,
        frame: &Frame,
    ) -> Option<Result<(OccurrenceTime, DateTime), ExpandError>> {
        if self.done {
            return None;
        }
        let local = match self.iter.next()? {
            Ok(local) => local,
            Err(e) => {
                self.done = true;
                return Some(Err(e.into()));
            }
        };
        let key = if frame.all_day {
            OccurrenceTime::Date(local.date())
        } else {
            match frame.instant(local) {
                Ok(ts) => OccurrenceTime::At(ts),
                Err(e) => return Some(Err(e)),
            }
        };
        let within = match (self.until, key) {
            (None, _) => true,
            (Some(UntilBound::Date(u)), _) => local.date() <= u,
            (Some(UntilBound::Local(u)), _) => local <= u,
            (Some(UntilBound::At(u)), OccurrenceTime::At(ts)) => ts <= u,
            (Some(UntilBound::At(u)), OccurrenceTime::Date(d)) => {
                d <= frame.floating.to_datetime(u).date()
            }
        };
        if !within {
            self.done = true;
            return None;
        }
        Some(Ok((key, local)))
    }
}

/// A lazily merged, de-duplicated stream of one series' instances (before overrides).
struct MasterStream {
    frame: Frame,
    rules: Vec<(KeyedRule, Option<(OccurrenceTime, DateTime)>)>,
    exrules: Vec<(KeyedRule, Option<OccurrenceTime>)>,
    /// DTSTART (when not skipped) and RDATEs, sorted; each with its own length when it is a PERIOD.
    extra: VecDeque<(OccurrenceTime, DateTime, Option<Length>)>,
    exdates: Vec<OccurrenceTime>,
    last: Option<OccurrenceTime>,
    failed: bool,
}

impl MasterStream {
    fn pull_rules(&mut self) -> Result<(), ExpandError> {
        for (rule, head) in &mut self.rules {
            if head.is_none() {
                match rule.next_key(&self.frame) {
                    Some(Ok(item)) => *head = Some(item),
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
            }
        }
        Ok(())
    }

    fn excluded(&mut self, key: OccurrenceTime) -> Result<bool, ExpandError> {
        if self.exdates.binary_search(&key).is_ok() {
            return Ok(true);
        }
        for (rule, head) in &mut self.exrules {
            loop {
                match head {
                    Some(k) if *k >= key => break,
                    _ => match rule.next_key(&self.frame) {
                        Some(Ok((k, _))) => *head = Some(k),
                        Some(Err(e)) => return Err(e),
                        None => {
                            *head = None;
                            break;
                        }
                    },
                }
                if head.is_none() {
                    break;
                }
            }
            if *head == Some(key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn next_item(
        &mut self,
    ) -> Result<Option<(OccurrenceTime, DateTime, Option<Length>)>, ExpandError> {
        loop {
            self.pull_rules()?;
            let rule_min = self
                .rules
                .iter()
                .filter_map(|(_, h)| h.map(|(k, _)| k))
                .min();
            let extra_min = self.extra.front().map(|(k, _, _)| *k);
            let pick = match (rule_min, extra_min) {
                (None, None) => return Ok(None),
                (Some(r), Some(e)) if e <= r => self.extra.pop_front(),
                (Some(r), _) => {
                    let mut picked = None;
                    for (_, head) in &mut self.rules {
                        if head.map(|(k, _)| k) == Some(r) {
                            let taken = head.take();
                            if picked.is_none() {
                                picked = taken.map(|(k, l)| (k, l, None));
                            }
                        }
                    }
                    picked
                }
                (None, Some(_)) => self.extra.pop_front(),
            };
            let Some((key, local, len)) = pick else {
                return Ok(None);
            };
            if self.last.is_some_and(|l| l >= key) {
                continue;
            }
            self.last = Some(key);
            if self.excluded(key)? {
                continue;
            }
            return Ok(Some((key, local, len)));
        }
    }
}

/// The occurrences of one series in a window, in order of start, lazily.
pub struct Occurrences {
    master: Option<MasterStream>,
    frame: Frame,
    length: Length,
    window: Window,
    /// The window widened by the largest THISANDFUTURE shift, so shifted instances are not missed.
    scan_to: Timestamp,
    overrides: Vec<ResolvedOverride>,
    /// Overrides' own occurrences in the window, sorted, merged into the stream.
    pending_overrides: VecDeque<Occurrence>,
    recurring: bool,
    done: bool,
    /// Master instances already computed but not yet emitted (kept sorted).
    ready: VecDeque<Occurrence>,
}

impl std::fmt::Debug for Occurrences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Occurrences")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct ResolvedOverride {
    rid: OccurrenceTime,
    this_and_future: bool,
    cancelled: bool,
    start: OccurrenceTime,
    shift: SignedDuration,
    shift_days: i64,
    length: Length,
}

/// Expands a series into the occurrences whose start lies in `window`.
pub fn expand(
    series: &SeriesInput,
    resolver: &TzResolver,
    window: Window,
    options: &ExpandOptions,
) -> Result<Occurrences, ExpandError> {
    let floating = options.floating_zone.clone();
    let (all_day, zone) = match &series.dtstart {
        CalDateTime::Date(_) => (true, floating.clone()),
        CalDateTime::Floating(_) => (false, floating.clone()),
        CalDateTime::Utc(_) => (false, TimeZone::UTC),
        CalDateTime::Zoned { tzid, .. } => (false, resolver.resolve(tzid)?.zone),
    };
    let frame = Frame {
        all_day,
        zone,
        floating,
    };
    let length = length_of(&frame, resolver, &series.dtstart, series.end.as_ref())?;
    let start_key = frame.key(&series.dtstart, resolver)?;
    // The rule runs on DTSTART's wall clock exactly as written, even when that time falls in a gap:
    // resolving it first would move every later instance by the size of the gap.
    let start_local = match &series.dtstart {
        CalDateTime::Date(d) => d.to_datetime(Time::midnight()),
        CalDateTime::Floating(dt) | CalDateTime::Zoned { local: dt, .. } => *dt,
        CalDateTime::Utc(ts) => TimeZone::UTC.to_datetime(*ts),
    };

    let mut overrides = Vec::new();
    for o in &series.overrides {
        let rid = frame.key(&o.recurrence_id, resolver)?;
        let start = frame.key(&o.start, resolver)?;
        let (shift, shift_days) = match (rid, start) {
            (OccurrenceTime::At(a), OccurrenceTime::At(b)) => (b.duration_since(a), 0),
            (OccurrenceTime::Date(a), OccurrenceTime::Date(b)) => {
                (SignedDuration::ZERO, i64::from((b - a).get_days()))
            }
            _ => (SignedDuration::ZERO, 0),
        };
        let own_length = match &o.end {
            Some(end) => length_of(&frame, resolver, &o.start, Some(end))?,
            None => length,
        };
        overrides.push(ResolvedOverride {
            rid,
            this_and_future: o.this_and_future,
            cancelled: o.cancelled,
            start,
            shift,
            shift_days,
            length: own_length,
        });
    }
    overrides.sort_by_key(|o| o.rid);
    let max_shift = overrides
        .iter()
        .filter(|o| o.this_and_future)
        .map(|o| o.shift.abs() + SignedDuration::from_hours(24 * o.shift_days.abs()))
        .max()
        .unwrap_or(SignedDuration::ZERO);
    let margin = max_shift + SignedDuration::from_hours(48);
    let scan_from = window.from.checked_sub(margin).unwrap_or(window.from);
    let scan_to = window.to.checked_add(margin).unwrap_or(window.to);

    let recurring = series.is_recurring();
    let skip_local = frame.zone.to_datetime(scan_from);
    let mut rules = Vec::new();
    for rule in &series.rrules {
        let skip = (skip_local > start_local).then_some(skip_local);
        rules.push((
            KeyedRule::new(&frame, resolver, rule, start_local, options.limits, skip)?,
            None,
        ));
    }
    let mut exrules = Vec::new();
    for rule in &series.exrules {
        let skip = (skip_local > start_local).then_some(skip_local);
        exrules.push((
            KeyedRule::new(&frame, resolver, rule, start_local, options.limits, skip)?,
            None,
        ));
    }
    // DTSTART is always the first instance (RFC 5545 §3.8.5.3), whether or not the rule matches it.
    let mut extra: Vec<(OccurrenceTime, DateTime, Option<Length>)> =
        vec![(start_key, start_local, None)];
    for rdate in &series.rdates {
        let key = frame.key(rdate.start(), resolver)?;
        let local = frame.local(rdate.start(), resolver)?;
        let len = match rdate {
            DateOrPeriod::At(_) => None,
            DateOrPeriod::Period(p) => Some(match &p.end {
                PeriodEnd::End(e) => {
                    length_of(&frame, resolver, &p.start, Some(&SeriesEnd::End(e.clone())))?
                }
                PeriodEnd::Duration(d) => {
                    length_of(&frame, resolver, &p.start, Some(&SeriesEnd::Duration(*d)))?
                }
            }),
        };
        extra.push((key, local, len));
    }
    extra.sort_by_key(|(k, _, _)| *k);
    let mut exdates = series
        .exdates
        .iter()
        .map(|e| frame.key(e, resolver))
        .collect::<Result<Vec<_>, _>>()?;
    exdates.sort();

    let mut pending = Vec::new();
    for o in &overrides {
        if o.cancelled {
            continue;
        }
        let pos = frame.position(o.start)?;
        if pos >= window.from && pos < window.to {
            pending.push(Occurrence {
                recurrence_id: Some(o.rid),
                start: o.start,
                end: o.length.end(&frame, o.start)?,
                is_override: true,
            });
        }
    }
    pending.sort_by_key(|o| o.start);

    Ok(Occurrences {
        master: Some(MasterStream {
            frame: frame.clone(),
            rules,
            exrules,
            extra: extra.into(),
            exdates,
            last: None,
            failed: false,
        }),
        frame,
        length,
        window,
        scan_to,
        overrides,
        pending_overrides: pending.into(),
        recurring,
        done: false,
        ready: VecDeque::new(),
    })
}

impl Occurrences {
    /// Turns one master instance into its occurrence, applying overrides; `None` when it is replaced,
    /// cancelled or outside the window.
    fn shape(
        &self,
        key: OccurrenceTime,
        own_length: Option<Length>,
    ) -> Result<Option<Occurrence>, ExpandError> {
        if self.overrides.binary_search_by_key(&key, |o| o.rid).is_ok() {
            return Ok(None);
        }
        let future = self
            .overrides
            .iter()
            .rev()
            .find(|o| o.this_and_future && o.rid < key);
        let (start, length) = match future {
            Some(o) if o.cancelled => return Ok(None),
            Some(o) => {
                let start = match key {
                    OccurrenceTime::At(ts) => OccurrenceTime::At(
                        ts.checked_add(o.shift)
                            .map_err(|_| ExpandError::OutOfRange("shifted start".into()))?,
                    ),
                    OccurrenceTime::Date(d) => OccurrenceTime::Date(
                        d.checked_add(jiff::Span::new().days(o.shift_days))
                            .map_err(|_| ExpandError::OutOfRange("shifted start".into()))?,
                    ),
                };
                (start, o.length)
            }
            None => (key, own_length.unwrap_or(self.length)),
        };
        let pos = self.frame.position(start)?;
        if pos < self.window.from || pos >= self.window.to {
            return Ok(None);
        }
        Ok(Some(Occurrence {
            recurrence_id: self.recurring.then_some(key),
            start,
            end: length.end(&self.frame, start)?,
            is_override: future.is_some(),
        }))
    }

    fn next_master(&mut self) -> Result<Option<Occurrence>, ExpandError> {
        while let Some(master) = self.master.as_mut() {
            if master.failed {
                self.master = None;
                break;
            }
            let item = match master.next_item() {
                Ok(item) => item,
                Err(e) => {
                    master.failed = true;
                    return Err(e);
                }
            };
            let Some((key, _local, len)) = item else {
                self.master = None;
                break;
            };
            if self.frame.position(key)? >= self.scan_to {
                self.master = None;
                break;
            }
            if let Some(occ) = self.shape(key, len)? {
                return Ok(Some(occ));
            }
        }
        Ok(None)
    }
}

impl Iterator for Occurrences {
    type Item = Result<Occurrence, ExpandError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.ready.is_empty() {
            match self.next_master() {
                Ok(Some(occ)) => self.ready.push_back(occ),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let take_override = match (self.pending_overrides.front(), self.ready.front()) {
            (Some(o), Some(m)) => o.start <= m.start,
            (Some(_), None) => true,
            _ => false,
        };
        let next = if take_override {
            self.pending_overrides.pop_front()
        } else {
            self.ready.pop_front()
        };
        if next.is_none() {
            self.done = true;
        }
        next.map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datetime::TzId;
    use jiff::civil::date;

    fn zoned(tz: &str, dt: DateTime) -> CalDateTime {
        CalDateTime::Zoned {
            local: dt,
            tzid: TzId::parse(tz).unwrap(),
        }
    }

    fn window(from: &str, to: &str) -> Window {
        Window {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
        }
    }

    fn starts(series: &SeriesInput, w: Window) -> Vec<String> {
        expand(series, &TzResolver::default(), w, &ExpandOptions::default())
            .unwrap()
            .map(|o| o.unwrap().start.to_rfc3339())
            .collect()
    }

    #[test]
    fn gap_takes_the_offset_before_and_fold_the_first_occurrence() {
        let mut s = SeriesInput::single(
            "gap",
            zoned("Europe/Berlin", date(2024, 3, 30).at(2, 30, 0, 0)),
            None,
        );
        s.rrules.push(RRule::parse("FREQ=DAILY;COUNT=3").unwrap());
        assert_eq!(
            starts(&s, window("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")),
            [
                "2024-03-30T01:30:00Z",
                "2024-03-31T01:30:00Z",
                "2024-04-01T00:30:00Z"
            ]
        );
        let mut f = SeriesInput::single(
            "fold",
            zoned("Europe/Berlin", date(2024, 10, 26).at(2, 30, 0, 0)),
            None,
        );
        f.rrules.push(RRule::parse("FREQ=DAILY;COUNT=3").unwrap());
        assert_eq!(
            starts(&f, window("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")),
            [
                "2024-10-26T00:30:00Z",
                "2024-10-27T00:30:00Z",
                "2024-10-28T01:30:00Z"
            ]
        );
    }

    #[test]
    fn exdate_does_not_extend_count_and_until_is_inclusive() {
        let mut s = SeriesInput::single(
            "x",
            CalDateTime::Utc("2024-01-01T09:00:00Z".parse().unwrap()),
            None,
        );
        s.rrules.push(RRule::parse("FREQ=DAILY;COUNT=3").unwrap());
        s.exdates
            .push(CalDateTime::Utc("2024-01-02T09:00:00Z".parse().unwrap()));
        assert_eq!(
            starts(&s, window("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")),
            ["2024-01-01T09:00:00Z", "2024-01-03T09:00:00Z"]
        );
        s.exdates.clear();
        s.rrules = vec![RRule::parse("FREQ=DAILY;UNTIL=20240103T090000Z").unwrap()];
        assert_eq!(
            starts(&s, window("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")).len(),
            3
        );
    }

    #[test]
    fn an_endless_secondly_rule_far_from_dtstart_finishes_quickly() {
        let mut s = SeriesInput::single(
            "s",
            CalDateTime::Utc("1970-01-01T00:00:00Z".parse().unwrap()),
            None,
        );
        s.rrules.push(RRule::parse("FREQ=SECONDLY").unwrap());
        let got = starts(&s, window("2030-06-01T00:00:00Z", "2030-06-01T00:00:10Z"));
        assert_eq!(got.len(), 10);
        assert_eq!(got[0], "2030-06-01T00:00:00Z");
    }
}
