//! The date-time value every date-time in the model uses, and its iCalendar text form.
//!
//! iCalendar has four kinds of "when": an all-day date, a floating local time (the same wall-clock time in
//! whatever zone the reader is in), a UTC instant, and a local time in a named zone. They are kept apart
//! here exactly as written, because collapsing a zoned time to UTC at parse time would lose the series'
//! behaviour across DST changes, and collapsing a floating time would invent a zone. Turning a value into an
//! instant needs a zone resolver (see [`crate::tz`]).

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};

/// Why an iCalendar date, date-time, period or duration value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    #[error("invalid DATE value `{0}`: expected YYYYMMDD")]
    InvalidDate(String),
    #[error("invalid DATE-TIME value `{0}`: expected YYYYMMDDTHHMMSS, optionally followed by Z")]
    InvalidDateTime(String),
    #[error("invalid PERIOD value `{0}`: expected START/END or START/DURATION")]
    InvalidPeriod(String),
    #[error("invalid DURATION value `{0}`: expected e.g. P1D, PT1H30M, -PT15M or P2W")]
    InvalidDuration(String),
    #[error("invalid TZID `{0}`: must be non-empty and free of control characters")]
    InvalidTzId(String),
    #[error("VALUE={0} is not a date or time value type (expected DATE, DATE-TIME or PERIOD)")]
    UnsupportedValueType(String),
}

/// A TZID exactly as the producer wrote it: an IANA name, a legacy alias, a Windows name or a custom
/// (VTIMEZONE-only) identifier. Resolution to rules happens later, with the calendar's VTIMEZONEs at hand.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TzId(String);

impl TzId {
    /// Accepts any non-empty identifier without control characters; surrounding DQUOTEs (a quoted
    /// parameter value) are removed because they are syntax, not part of the name.
    pub fn parse(raw: &str) -> Result<Self, DateTimeError> {
        let trimmed = raw.trim();
        let unquoted = trimmed
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(trimmed);
        if unquoted.is_empty() || unquoted.chars().any(char::is_control) {
            return Err(DateTimeError::InvalidTzId(raw.to_string()));
        }
        Ok(Self(unquoted.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TzId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `VALUE` parameter of a date or time property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Date,
    DateTime,
    Period,
}

impl ValueType {
    pub fn parse(raw: &str) -> Result<Self, DateTimeError> {
        match raw.trim().to_ascii_uppercase().as_str() {
            "DATE" => Ok(Self::Date),
            "DATE-TIME" => Ok(Self::DateTime),
            "PERIOD" => Ok(Self::Period),
            _ => Err(DateTimeError::UnsupportedValueType(raw.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Date => "DATE",
            Self::DateTime => "DATE-TIME",
            Self::Period => "PERIOD",
        }
    }
}

/// One iCalendar date or date-time value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CalDateTime {
    /// An all-day date (`VALUE=DATE`).
    Date(Date),
    /// A local time with no zone: read in the reader's zone.
    Floating(DateTime),
    /// A UTC instant (`...Z`).
    Utc(Timestamp),
    /// A local time in the zone named by TZID.
    Zoned { local: DateTime, tzid: TzId },
}

impl CalDateTime {
    /// Reads a property value with its `TZID` and `VALUE` parameters (already unescaped, without the
    /// property name). A UTC value ignores a TZID (RFC 5545 §3.2.19 forbids the pair; the `Z` is the more
    /// specific statement). An 8-digit value is read as a date even without `VALUE=DATE`, because several
    /// producers omit the parameter.
    pub fn parse(
        value: &str,
        tzid: Option<&str>,
        value_type: Option<ValueType>,
    ) -> Result<Self, DateTimeError> {
        let value = value.trim();
        match value_type {
            Some(ValueType::Date) => return parse_date(value).map(Self::Date),
            Some(ValueType::Period) => {
                return Err(DateTimeError::InvalidDateTime(format!(
                    "{value} (a PERIOD is not a single date-time)"
                )));
            }
            Some(ValueType::DateTime) | None => {}
        }
        if value_type.is_none() && value.len() == 8 {
            return parse_date(value).map(Self::Date);
        }
        if let Some(utc) = value.strip_suffix('Z').or_else(|| value.strip_suffix('z')) {
            let local =
                parse_local(utc).map_err(|_| DateTimeError::InvalidDateTime(value.into()))?;
            let ts = local
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map_err(|_| DateTimeError::InvalidDateTime(value.into()))?
                .timestamp();
            return Ok(Self::Utc(ts));
        }
        let local = parse_local(value)?;
        match tzid {
            Some(t) => Ok(Self::Zoned {
                local,
                tzid: TzId::parse(t)?,
            }),
            None => Ok(Self::Floating(local)),
        }
    }

    /// The value text, e.g. `19970714T133000`, `19970714T173000Z` or `19970714`.
    pub fn to_ical(&self) -> String {
        match self {
            Self::Date(d) => format_date(*d),
            Self::Floating(dt) | Self::Zoned { local: dt, .. } => format_local(*dt),
            Self::Utc(ts) => {
                let dt = jiff::tz::TimeZone::UTC.to_datetime(*ts);
                format!("{}Z", format_local(dt))
            }
        }
    }

    /// The TZID parameter this value needs when written, if any.
    pub fn tzid(&self) -> Option<&TzId> {
        match self {
            Self::Zoned { tzid, .. } => Some(tzid),
            _ => None,
        }
    }

    /// The VALUE parameter this value needs when written (`DATE` only; DATE-TIME is the default).
    pub fn value_param(&self) -> Option<ValueType> {
        match self {
            Self::Date(_) => Some(ValueType::Date),
            _ => None,
        }
    }

    pub fn is_all_day(&self) -> bool {
        matches!(self, Self::Date(_))
    }

    /// The calendar date as written (the UTC date for a UTC value).
    pub fn date(&self) -> Date {
        match self {
            Self::Date(d) => *d,
            Self::Floating(dt) | Self::Zoned { local: dt, .. } => dt.date(),
            Self::Utc(ts) => jiff::tz::TimeZone::UTC.to_datetime(*ts).date(),
        }
    }
}

impl fmt::Display for CalDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tzid() {
            Some(t) => write!(f, "TZID={t}:{}", self.to_ical()),
            None => f.write_str(&self.to_ical()),
        }
    }
}

/// An iCalendar DURATION (RFC 5545 §3.3.6). Weeks and days are nominal (calendar days, which can be 23 or
/// 25 hours long across a DST change); hours, minutes and seconds are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IcalDuration {
    pub negative: bool,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
}

impl IcalDuration {
    pub fn parse(raw: &str) -> Result<Self, DateTimeError> {
        let err = || DateTimeError::InvalidDuration(raw.to_string());
        let s = raw.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let s = s
            .strip_prefix('P')
            .or_else(|| s.strip_prefix('p'))
            .ok_or_else(err)?;
        let mut out = Self {
            negative,
            ..Self::default()
        };
        let mut in_time = false;
        let mut digits = String::new();
        let mut seen_any = false;
        let mut time_units = 0;
        for c in s.chars() {
            match c.to_ascii_uppercase() {
                '0'..='9' => digits.push(c),
                'T' if !in_time && digits.is_empty() => in_time = true,
                unit => {
                    let n: u32 = digits.parse().map_err(|_| err())?;
                    digits.clear();
                    seen_any = true;
                    if in_time {
                        time_units += 1;
                    }
                    match (unit, in_time) {
                        ('W', false) => out.weeks = n,
                        ('D', false) => out.days = n,
                        ('H', true) => out.hours = n,
                        ('M', true) => out.minutes = n,
                        ('S', true) => out.seconds = n,
                        _ => return Err(err()),
                    }
                }
            }
        }
        if !digits.is_empty() || !seen_any || (in_time && time_units == 0) {
            return Err(err());
        }
        Ok(out)
    }

    pub fn to_ical(&self) -> String {
        let mut s = String::new();
        if self.negative {
            s.push('-');
        }
        s.push('P');
        if self.weeks > 0 {
            s.push_str(&format!("{}W", self.weeks));
        }
        if self.days > 0 {
            s.push_str(&format!("{}D", self.days));
        }
        if self.hours > 0 || self.minutes > 0 || self.seconds > 0 {
            s.push('T');
            if self.hours > 0 {
                s.push_str(&format!("{}H", self.hours));
            }
            if self.minutes > 0 {
                s.push_str(&format!("{}M", self.minutes));
            }
            if self.seconds > 0 {
                s.push_str(&format!("{}S", self.seconds));
            }
        }
        if s.ends_with('P') {
            s.push_str("T0S");
        }
        s
    }

    /// The nominal part in days (weeks included), signed.
    pub fn nominal_days(&self) -> i64 {
        let d = i64::from(self.weeks) * 7 + i64::from(self.days);
        if self.negative { -d } else { d }
    }

    /// The exact part in seconds, signed.
    pub fn exact_seconds(&self) -> i64 {
        let s =
            i64::from(self.hours) * 3600 + i64::from(self.minutes) * 60 + i64::from(self.seconds);
        if self.negative { -s } else { s }
    }
}

/// The end of a PERIOD: an explicit end or a duration from the start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeriodEnd {
    End(CalDateTime),
    Duration(IcalDuration),
}

/// A PERIOD value (RFC 5545 §3.3.9).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Period {
    pub start: CalDateTime,
    pub end: PeriodEnd,
}

/// One value of an RDATE or EXDATE list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DateOrPeriod {
    At(CalDateTime),
    Period(Period),
}

impl DateOrPeriod {
    pub fn start(&self) -> &CalDateTime {
        match self {
            Self::At(at) => at,
            Self::Period(p) => &p.start,
        }
    }

    pub fn to_ical(&self) -> String {
        match self {
            Self::At(at) => at.to_ical(),
            Self::Period(p) => match &p.end {
                PeriodEnd::End(e) => format!("{}/{}", p.start.to_ical(), e.to_ical()),
                PeriodEnd::Duration(d) => format!("{}/{}", p.start.to_ical(), d.to_ical()),
            },
        }
    }
}

/// Reads a comma-separated RDATE/EXDATE value list with its `TZID` and `VALUE` parameters.
pub fn parse_date_list(
    value: &str,
    tzid: Option<&str>,
    value_type: Option<ValueType>,
) -> Result<Vec<DateOrPeriod>, DateTimeError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| parse_date_or_period(v, tzid, value_type))
        .collect()
}

fn parse_date_or_period(
    value: &str,
    tzid: Option<&str>,
    value_type: Option<ValueType>,
) -> Result<DateOrPeriod, DateTimeError> {
    let looks_like_period = value.contains('/');
    if value_type == Some(ValueType::Period) || (value_type.is_none() && looks_like_period) {
        let (start, end) = value
            .split_once('/')
            .ok_or_else(|| DateTimeError::InvalidPeriod(value.to_string()))?;
        let period_err = |_| DateTimeError::InvalidPeriod(value.to_string());
        let start =
            CalDateTime::parse(start, tzid, Some(ValueType::DateTime)).map_err(period_err)?;
        let end = if end.trim_start_matches(['+', '-']).starts_with(['P', 'p']) {
            PeriodEnd::Duration(IcalDuration::parse(end).map_err(period_err)?)
        } else {
            PeriodEnd::End(
                CalDateTime::parse(end, tzid, Some(ValueType::DateTime)).map_err(period_err)?,
            )
        };
        return Ok(DateOrPeriod::Period(Period { start, end }));
    }
    CalDateTime::parse(value, tzid, value_type).map(DateOrPeriod::At)
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Result<Date, DateTimeError> {
    let err = || DateTimeError::InvalidDate(s.to_string());
    if s.len() != 8 || !s.is_ascii() {
        return Err(err());
    }
    let y = digits(&s[0..4]).ok_or_else(err)?;
    let m = digits(&s[4..6]).ok_or_else(err)?;
    let d = digits(&s[6..8]).ok_or_else(err)?;
    Date::new(
        i16::try_from(y).map_err(|_| err())?,
        i8::try_from(m).map_err(|_| err())?,
        i8::try_from(d).map_err(|_| err())?,
    )
    .map_err(|_| err())
}

fn parse_local(s: &str) -> Result<DateTime, DateTimeError> {
    let err = || DateTimeError::InvalidDateTime(s.to_string());
    if s.len() != 15 || !s.is_ascii() || !matches!(s.as_bytes()[8], b'T' | b't') {
        return Err(err());
    }
    let date = parse_date(&s[0..8]).map_err(|_| err())?;
    let h = digits(&s[9..11]).ok_or_else(err)?;
    let mi = digits(&s[11..13]).ok_or_else(err)?;
    let mut sec = digits(&s[13..15]).ok_or_else(err)?;
    // A leap second (60) is legal iCalendar but not representable; the second before it is the closest
    // instant that keeps the event on the same minute.
    if sec == 60 {
        sec = 59;
    }
    let time = jiff::civil::Time::new(
        i8::try_from(h).map_err(|_| err())?,
        i8::try_from(mi).map_err(|_| err())?,
        i8::try_from(sec).map_err(|_| err())?,
        0,
    )
    .map_err(|_| err())?;
    Ok(date.to_datetime(time))
}

/// `YYYYMMDD`.
pub fn format_date(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
}

/// `YYYYMMDDTHHMMSS` (no zone designator).
pub fn format_local(dt: DateTime) -> String {
    format!(
        "{}T{:02}{:02}{:02}",
        format_date(dt.date()),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn four_kinds_round_trip() {
        let cases = [
            ("19970714", None, Some(ValueType::Date)),
            ("19970714T133000", None, None),
            ("19970714T173000Z", None, None),
            ("19970714T133000", Some("America/New_York"), None),
        ];
        for (v, tz, vt) in cases {
            let parsed = CalDateTime::parse(v, tz, vt).unwrap();
            assert_eq!(parsed.to_ical(), v);
            assert_eq!(parsed.tzid().map(TzId::as_str), tz);
        }
        assert_eq!(
            CalDateTime::parse("19970714T133000", Some("\"Europe/Berlin\""), None).unwrap(),
            CalDateTime::Zoned {
                local: date(1997, 7, 14).at(13, 30, 0, 0),
                tzid: TzId::parse("Europe/Berlin").unwrap()
            }
        );
    }

    #[test]
    fn bad_values_are_rejected_with_the_kind() {
        assert!(matches!(
            CalDateTime::parse("19970231", None, Some(ValueType::Date)),
            Err(DateTimeError::InvalidDate(_))
        ));
        assert!(matches!(
            CalDateTime::parse("19970714T253000", None, None),
            Err(DateTimeError::InvalidDateTime(_))
        ));
        assert!(matches!(
            CalDateTime::parse("19970714T1330", None, None),
            Err(DateTimeError::InvalidDateTime(_))
        ));
        assert!(matches!(
            CalDateTime::parse("1997-07-14", None, Some(ValueType::Date)),
            Err(DateTimeError::InvalidDate(_))
        ));
        assert!(TzId::parse("").is_err());
        assert!(ValueType::parse("TEXT").is_err());
    }

    #[test]
    fn periods_and_durations() {
        let list = parse_date_list(
            "19960403T020000Z/19960403T040000Z,19960404T010000Z/PT3H",
            None,
            Some(ValueType::Period),
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1].to_ical(),
            "19960404T010000Z/PT3H",
            "duration periods keep their form"
        );
        let d = IcalDuration::parse("-P1W2DT3H4M5S").unwrap();
        assert_eq!(d.nominal_days(), -9);
        assert_eq!(d.exact_seconds(), -(3 * 3600 + 4 * 60 + 5));
        assert_eq!(d.to_ical(), "-P1W2DT3H4M5S");
        assert_eq!(IcalDuration::parse("PT0S").unwrap().to_ical(), "PT0S");
        for bad in ["P", "PT", "1D", "P1H", "PT1D", "P1DT", "PXD"] {
            assert!(IcalDuration::parse(bad).is_err(), "{bad}");
        }
        let dates = parse_date_list("19970101,19970120", None, Some(ValueType::Date)).unwrap();
        assert_eq!(dates[1].start(), &CalDateTime::Date(date(1997, 1, 20)));
    }
}
