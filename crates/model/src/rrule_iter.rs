//! The candidate generator of one RRULE: local wall-clock date-times in order, per RFC 5545 §3.3.10.
//!
//! It works on wall-clock time, period by period (a year, month, week, day, hour, minute or second),
//! like the RFC's own description: each period's days are filtered by the BYxxx parts, crossed with the
//! time set, narrowed by BYSETPOS. Turning wall-clock times into instants (DST gaps and folds) is the
//! caller's job. Every loop is bounded: a rule that never matches ends in [`RuleIterError`].

use jiff::civil::{Date, DateTime, Time, Weekday};

use crate::rrule::{Frequency, RRule};

/// Why a rule stopped producing candidates before it ran out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleIterError {
    #[error(
        "RRULE {rule} produced no instance in {periods} consecutive periods; it probably matches no date (e.g. FEB 30)"
    )]
    NoMatch { rule: String, periods: u64 },
    #[error("RRULE {rule} needed more than {limit} candidate periods; expansion stopped")]
    TooManyIterations { rule: String, limit: u64 },
}

/// Bounds on the work one rule may do.
#[derive(Debug, Clone, Copy)]
pub struct IterLimits {
    /// Consecutive periods without a single candidate before the rule is declared empty.
    pub max_empty_periods: u64,
    /// Total periods visited (skips included) before expansion stops with an error.
    pub max_periods: u64,
}

impl Default for IterLimits {
    fn default() -> Self {
        Self {
            max_empty_periods: 20_000,
            max_periods: 20_000_000,
        }
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Monday = 0 … Sunday = 6.
fn weekday_of_days(z: i64) -> i64 {
    (z + 3).rem_euclid(7)
}

fn wd_index(w: Weekday) -> i64 {
    i64::from(w.to_monday_zero_offset())
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// First day of week 1 of `year` (RFC 5545: the first week with at least four days in the year).
fn week1_start(year: i64, wkst: i64) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    let offset = (weekday_of_days(jan1) - wkst).rem_euclid(7);
    if 7 - offset >= 4 {
        jan1 - offset
    } else {
        jan1 + (7 - offset)
    }
}

const MIN_YEAR: i64 = -9000;
const MAX_YEAR: i64 = 9999;

/// A day with everything the BYxxx filters look at, computed once.
#[derive(Clone, Copy)]
struct DayInfo {
    z: i64,
    y: i64,
    m: i64,
    d: i64,
}

impl DayInfo {
    fn new(z: i64) -> Self {
        let (y, m, d) = civil_from_days(z);
        Self { z, y, m, d }
    }
}

pub(crate) struct RuleIter {
    rule: RRule,
    dtstart: DateTime,
    limits: IterLimits,
    // Effective parts with the RFC's defaults from DTSTART filled in.
    by_month: Vec<i64>,
    by_month_day: Vec<i64>,
    by_weekday_plain: Vec<i64>,
    by_weekday_nth: Vec<(i64, i64)>,
    hours: Vec<i64>,
    minutes: Vec<i64>,
    seconds: Vec<i64>,
    /// The current period: a day number for day-level and coarser rules' anchors, or seconds since the
    /// epoch (wall clock) for sub-daily rules.
    anchor_year: i64,
    anchor_month: i64,
    anchor_day: i64,
    anchor_secs: i64,
    buffer: std::collections::VecDeque<DateTime>,
    emitted: u64,
    periods: u64,
    empty_run: u64,
    finished: bool,
    failed: bool,
}

impl RuleIter {
    pub(crate) fn new(rule: RRule, dtstart: DateTime, limits: IterLimits) -> Self {
        let has_day_parts = !rule.by_week_no.is_empty()
            || !rule.by_year_day.is_empty()
            || !rule.by_month_day.is_empty()
            || !rule.by_day.is_empty();
        let mut by_month: Vec<i64> = rule.by_month.iter().map(|&m| i64::from(m)).collect();
        let mut by_month_day: Vec<i64> = rule.by_month_day.iter().map(|&d| i64::from(d)).collect();
        let mut by_weekday_plain = Vec::new();
        let mut by_weekday_nth = Vec::new();
        let nth_allowed = matches!(rule.freq, Frequency::Monthly | Frequency::Yearly);
        for wd in &rule.by_day {
            match wd.ordinal {
                Some(n) if nth_allowed => by_weekday_nth.push((i64::from(n), wd_index(wd.weekday))),
                _ => by_weekday_plain.push(wd_index(wd.weekday)),
            }
        }
        if !has_day_parts {
            match rule.freq {
                Frequency::Yearly => {
                    if by_month.is_empty() {
                        by_month.push(i64::from(dtstart.month()));
                    }
                    by_month_day.push(i64::from(dtstart.day()));
                }
                Frequency::Monthly => by_month_day.push(i64::from(dtstart.day())),
                Frequency::Weekly => by_weekday_plain.push(wd_index(dtstart.weekday())),
                _ => {}
            }
        }
        let pick = |v: &[i8], default: i8, applies: bool| -> Vec<i64> {
            let mut out: Vec<i64> = if v.is_empty() {
                if applies {
                    vec![i64::from(default)]
                } else {
                    Vec::new()
                }
            } else {
                // Second 60 (a leap second) has no wall-clock representation here.
                v.iter()
                    .map(|&x| i64::from(x))
                    .filter(|&x| x < 60)
                    .collect()
            };
            out.sort_unstable();
            out.dedup();
            out
        };
        let hours = pick(&rule.by_hour, dtstart.hour(), rule.freq > Frequency::Hourly);
        let minutes = pick(
            &rule.by_minute,
            dtstart.minute(),
            rule.freq > Frequency::Minutely,
        );
        let seconds = pick(
            &rule.by_second,
            dtstart.second(),
            rule.freq > Frequency::Secondly,
        );
        let start_days = days_from_civil(
            i64::from(dtstart.year()),
            i64::from(dtstart.month()),
            i64::from(dtstart.day()),
        );
        let anchor_day = match rule.freq {
            Frequency::Weekly => {
                start_days - (weekday_of_days(start_days) - wd_index(rule.wkst)).rem_euclid(7)
            }
            _ => start_days,
        };
        let anchor_secs = start_days * 86_400
            + i64::from(dtstart.hour()) * 3600
            + i64::from(dtstart.minute()) * 60
            + i64::from(dtstart.second());
        Self {
            anchor_year: i64::from(dtstart.year()),
            anchor_month: i64::from(dtstart.month()),
            anchor_day,
            anchor_secs,
            rule,
            dtstart,
            limits,
            by_month,
            by_month_day,
            by_weekday_plain,
            by_weekday_nth,
            hours,
            minutes,
            seconds,
            buffer: std::collections::VecDeque::new(),
            emitted: 0,
            periods: 0,
            empty_run: 0,
            finished: false,
            failed: false,
        }
    }

    /// Jumps forward to the last period that starts at or before `target` (wall clock), without
    /// generating the periods in between. Only valid for rules without COUNT: COUNT needs every
    /// earlier instance counted.
    pub(crate) fn skip_to(&mut self, target: DateTime) {
        if self.rule.count.is_some() || target <= self.dtstart {
            return;
        }
        let interval = i64::from(self.rule.interval.max(1));
        let tz = days_from_civil(
            i64::from(target.year()),
            i64::from(target.month()),
            i64::from(target.day()),
        );
        match self.rule.freq {
            Frequency::Yearly => {
                let steps = (i64::from(target.year()) - self.anchor_year).div_euclid(interval);
                if steps > 0 {
                    self.anchor_year += steps * interval;
                }
            }
            Frequency::Monthly => {
                let cur = self.anchor_year * 12 + self.anchor_month - 1;
                let tgt = i64::from(target.year()) * 12 + i64::from(target.month()) - 1;
                let steps = (tgt - cur).div_euclid(interval);
                if steps > 0 {
                    let next = cur + steps * interval;
                    self.anchor_year = next.div_euclid(12);
                    self.anchor_month = next.rem_euclid(12) + 1;
                }
            }
            Frequency::Weekly => {
                let steps = (tz - self.anchor_day).div_euclid(7 * interval);
                if steps > 0 {
                    self.anchor_day += steps * 7 * interval;
                }
            }
            Frequency::Daily => {
                let steps = (tz - self.anchor_day).div_euclid(interval);
                if steps > 0 {
                    self.anchor_day += steps * interval;
                }
            }
            Frequency::Hourly | Frequency::Minutely | Frequency::Secondly => {
                let unit = self.unit_secs() * interval;
                let tsecs = tz * 86_400
                    + i64::from(target.hour()) * 3600
                    + i64::from(target.minute()) * 60
                    + i64::from(target.second());
                let steps = (tsecs - self.anchor_secs).div_euclid(unit);
                if steps > 0 {
                    self.anchor_secs += steps * unit;
                }
            }
        }
    }

    fn unit_secs(&self) -> i64 {
        match self.rule.freq {
            Frequency::Hourly => 3600,
            Frequency::Minutely => 60,
            _ => 1,
        }
    }

    fn rule_text(&self) -> String {
        self.rule.to_ical()
    }

    fn week_matches(&self, day: DayInfo) -> bool {
        let wkst = wd_index(self.rule.wkst);
        let mut year = day.y;
        let mut start = week1_start(year, wkst);
        if day.z < start {
            year -= 1;
            start = week1_start(year, wkst);
        } else {
            let next = week1_start(year + 1, wkst);
            if day.z >= next {
                year += 1;
                start = next;
            }
        }
        let weeks = (week1_start(year + 1, wkst) - start) / 7;
        let week = (day.z - start) / 7 + 1;
        self.rule
            .by_week_no
            .iter()
            .any(|&n| i64::from(n) == week || i64::from(n) == week - weeks - 1)
    }

    fn day_matches(&self, day: DayInfo) -> bool {
        if !self.by_month.is_empty() && !self.by_month.contains(&day.m) {
            return false;
        }
        if !self.rule.by_week_no.is_empty() && !self.week_matches(day) {
            return false;
        }
        if !self.rule.by_year_day.is_empty() {
            let doy = day.z - days_from_civil(day.y, 1, 1) + 1;
            let len = if is_leap(day.y) { 366 } else { 365 };
            if !self
                .rule
                .by_year_day
                .iter()
                .any(|&n| i64::from(n) == doy || i64::from(n) == doy - len - 1)
            {
                return false;
            }
        }
        if !self.by_month_day.is_empty() {
            let dim = days_in_month(day.y, day.m);
            if !self
                .by_month_day
                .iter()
                .any(|&n| n == day.d || n == day.d - dim - 1)
            {
                return false;
            }
        }
        if !self.by_weekday_plain.is_empty() || !self.by_weekday_nth.is_empty() {
            let wd = weekday_of_days(day.z);
            let plain = self.by_weekday_plain.contains(&wd);
            let nth = !plain && !self.by_weekday_nth.is_empty() && {
                // Ordinals count within the month for MONTHLY (and YEARLY narrowed by BYMONTH),
                // within the year otherwise.
                let in_month =
                    self.rule.freq == Frequency::Monthly || !self.rule.by_month.is_empty();
                let (index, len) = if in_month {
                    (day.d - 1, days_in_month(day.y, day.m))
                } else {
                    (
                        day.z - days_from_civil(day.y, 1, 1),
                        if is_leap(day.y) { 366 } else { 365 },
                    )
                };
                let pos = index / 7 + 1;
                let neg = -((len - 1 - index) / 7 + 1);
                self.by_weekday_nth
                    .iter()
                    .any(|&(n, w)| w == wd && (n == pos || n == neg))
            };
            if !plain && !nth {
                return false;
            }
        }
        true
    }

    /// The days of the current period (day numbers), for day-level and coarser rules.
    fn period_days(&self) -> Option<std::ops::Range<i64>> {
        match self.rule.freq {
            Frequency::Yearly => {
                let y = self.anchor_year;
                if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
                    return None;
                }
                Some(days_from_civil(y, 1, 1)..days_from_civil(y + 1, 1, 1))
            }
            Frequency::Monthly => {
                let y = self.anchor_year;
                if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
                    return None;
                }
                let first = days_from_civil(y, self.anchor_month, 1);
                Some(first..first + days_in_month(y, self.anchor_month))
            }
            Frequency::Weekly => Some(self.anchor_day..self.anchor_day + 7),
            _ => Some(self.anchor_day..self.anchor_day + 1),
        }
    }

    fn advance(&mut self) {
        let interval = i64::from(self.rule.interval.max(1));
        match self.rule.freq {
            Frequency::Yearly => self.anchor_year += interval,
            Frequency::Monthly => {
                let next = self.anchor_year * 12 + self.anchor_month - 1 + interval;
                self.anchor_year = next.div_euclid(12);
                self.anchor_month = next.rem_euclid(12) + 1;
            }
            Frequency::Weekly => self.anchor_day += 7 * interval,
            Frequency::Daily => self.anchor_day += interval,
            _ => self.anchor_secs += self.unit_secs() * interval,
        }
    }

    /// Advances a sub-daily anchor past a whole day (or hour, minute) that cannot match, keeping it on
    /// the rule's interval grid.
    fn skip_sub_daily(&mut self, boundary_secs: i64) {
        let step = self.unit_secs() * i64::from(self.rule.interval.max(1));
        let gap = boundary_secs - self.anchor_secs;
        let steps = (gap + step - 1).div_euclid(step).max(1);
        self.anchor_secs += steps * step;
    }

    fn to_datetime(z: i64, secs_of_day: i64) -> Option<DateTime> {
        let (y, m, d) = civil_from_days(z);
        let date = Date::new(
            i16::try_from(y).ok()?,
            i8::try_from(m).ok()?,
            i8::try_from(d).ok()?,
        )
        .ok()?;
        let time = Time::new(
            i8::try_from(secs_of_day / 3600).ok()?,
            i8::try_from(secs_of_day / 60 % 60).ok()?,
            i8::try_from(secs_of_day % 60).ok()?,
            0,
        )
        .ok()?;
        Some(date.to_datetime(time))
    }

    /// Fills the buffer with the next period's candidates. Returns false when the rule has run out of
    /// representable time.
    fn fill_period(&mut self) -> Result<bool, RuleIterError> {
        self.periods += 1;
        if self.periods > self.limits.max_periods {
            return Err(RuleIterError::TooManyIterations {
                rule: self.rule_text(),
                limit: self.limits.max_periods,
            });
        }
        let mut set: Vec<(i64, i64)> = Vec::new();
        if self.rule.freq >= Frequency::Daily {
            let Some(days) = self.period_days() else {
                return Ok(false);
            };
            if days.start < days_from_civil(MIN_YEAR, 1, 1)
                || days.end > days_from_civil(MAX_YEAR, 12, 31)
            {
                return Ok(false);
            }
            for z in days {
                if self.day_matches(DayInfo::new(z)) {
                    for &h in &self.hours {
                        for &mi in &self.minutes {
                            for &s in &self.seconds {
                                set.push((z, h * 3600 + mi * 60 + s));
                            }
                        }
                    }
                }
            }
            self.advance();
        } else {
            let z = self.anchor_secs.div_euclid(86_400);
            if z > days_from_civil(MAX_YEAR, 12, 31) {
                return Ok(false);
            }
            let sod = self.anchor_secs.rem_euclid(86_400);
            let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
            if !self.day_matches(DayInfo::new(z)) {
                self.skip_sub_daily((z + 1) * 86_400);
            } else if !self.rule.by_hour.is_empty()
                && !self.rule.by_hour.iter().any(|&x| i64::from(x) == h)
            {
                self.skip_sub_daily(z * 86_400 + (h + 1) * 3600);
            } else if self.rule.freq < Frequency::Hourly
                && !self.rule.by_minute.is_empty()
                && !self.rule.by_minute.iter().any(|&x| i64::from(x) == mi)
            {
                self.skip_sub_daily(z * 86_400 + h * 3600 + (mi + 1) * 60);
            } else if self.rule.freq < Frequency::Minutely
                && !self.rule.by_second.is_empty()
                && !self.rule.by_second.iter().any(|&x| i64::from(x) == s)
            {
                self.advance();
            } else {
                let minutes: Vec<i64> = if self.rule.freq == Frequency::Hourly {
                    self.minutes.clone()
                } else {
                    vec![mi]
                };
                let seconds: Vec<i64> = if self.rule.freq == Frequency::Secondly {
                    vec![s]
                } else {
                    self.seconds.clone()
                };
                for &m2 in &minutes {
                    for &s2 in &seconds {
                        set.push((z, h * 3600 + m2 * 60 + s2));
                    }
                }
                self.advance();
            }
        }
        set.sort_unstable();
        if !self.rule.by_set_pos.is_empty() {
            let len = i64::try_from(set.len()).unwrap_or(i64::MAX);
            let mut picked: Vec<(i64, i64)> = self
                .rule
                .by_set_pos
                .iter()
                .filter_map(|&p| {
                    let p = i64::from(p);
                    let idx = if p > 0 { p - 1 } else { len + p };
                    usize::try_from(idx).ok().and_then(|i| set.get(i).copied())
                })
                .collect();
            picked.sort_unstable();
            picked.dedup();
            set = picked;
        }
        let mut produced = false;
        for (z, sod) in set {
            if let Some(dt) = Self::to_datetime(z, sod)
                && dt >= self.dtstart
            {
                self.buffer.push_back(dt);
                produced = true;
            }
        }
        if produced {
            self.empty_run = 0;
        } else {
            self.empty_run += 1;
            // A thousand empty years is proof enough for yearly rules; finer rules get the full budget.
            let cap = if self.rule.freq == Frequency::Yearly {
                self.limits.max_empty_periods.min(1_000)
            } else {
                self.limits.max_empty_periods
            };
            if self.empty_run > cap {
                return Err(RuleIterError::NoMatch {
                    rule: self.rule_text(),
                    periods: cap,
                });
            }
        }
        Ok(true)
    }
}

impl Iterator for RuleIter {
    type Item = Result<DateTime, RuleIterError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.failed {
            return None;
        }
        if let Some(count) = self.rule.count
            && self.emitted >= u64::from(count)
        {
            self.finished = true;
            return None;
        }
        while self.buffer.is_empty() {
            match self.fill_period() {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let dt = self.buffer.pop_front()?;
        self.emitted += 1;
        Some(Ok(dt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn day_numbers_round_trip() {
        for z in [-800_000, -1, 0, 1, 59, 60, 365, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(weekday_of_days(0), 3, "1970-01-01 was a Thursday");
    }

    #[test]
    fn a_rule_without_instances_ends_in_an_error() {
        let rule = RRule::parse("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30").unwrap();
        let mut it = RuleIter::new(rule, date(2020, 1, 1).at(9, 0, 0, 0), IterLimits::default());
        assert!(matches!(
            it.next(),
            Some(Err(RuleIterError::NoMatch { .. }))
        ));
        assert!(it.next().is_none());
    }
}
