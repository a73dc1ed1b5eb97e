//! Microsoft Graph `patternedRecurrence` ↔ RRULE (see the module above for what does not map).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MappingError;
use crate::datetime::CalDateTime;
use crate::rrule::{Frequency, RRule, WeekdayNum};

/// `patternedRecurrence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternedRecurrence {
    pub pattern: RecurrencePattern,
    pub range: RecurrenceRange,
}

/// `recurrencePattern`. Graph echoes zero/defaults for unused fields; they are accepted and omitted on
/// output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrencePattern {
    #[serde(rename = "type")]
    pub kind: PatternType,
    #[serde(default = "one")]
    pub interval: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub month: u8,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub day_of_month: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days_of_week: Vec<DayOfWeek>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_day_of_week: Option<DayOfWeek>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<WeekIndex>,
}

fn one() -> u32 {
    1
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PatternType {
    Daily,
    Weekly,
    AbsoluteMonthly,
    RelativeMonthly,
    AbsoluteYearly,
    RelativeYearly,
}

/// `dayOfWeek`: Graph accepts any case on input (`"Monday"`) and answers lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayOfWeek(pub Weekday);

const DAY_NAMES: [(&str, Weekday); 7] = [
    ("sunday", Weekday::Sunday),
    ("monday", Weekday::Monday),
    ("tuesday", Weekday::Tuesday),
    ("wednesday", Weekday::Wednesday),
    ("thursday", Weekday::Thursday),
    ("friday", Weekday::Friday),
    ("saturday", Weekday::Saturday),
];

impl Serialize for DayOfWeek {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = DAY_NAMES
            .iter()
            .find(|(_, w)| *w == self.0)
            .map(|(n, _)| *n)
            .unwrap_or("sunday");
        s.serialize_str(name)
    }
}

impl<'de> Deserialize<'de> for DayOfWeek {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DAY_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&raw))
            .map(|(_, w)| DayOfWeek(*w))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown dayOfWeek `{raw}`")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WeekIndex {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

impl WeekIndex {
    fn ordinal(self) -> i16 {
        match self {
            Self::First => 1,
            Self::Second => 2,
            Self::Third => 3,
            Self::Fourth => 4,
            Self::Last => -1,
        }
    }

    fn from_ordinal(n: i16) -> Option<Self> {
        Some(match n {
            1 => Self::First,
            2 => Self::Second,
            3 => Self::Third,
            4 => Self::Fourth,
            -1 => Self::Last,
            _ => return None,
        })
    }
}

/// `recurrenceRange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrenceRange {
    #[serde(rename = "type")]
    pub kind: RangeType,
    pub start_date: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<Date>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_occurrences: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_time_zone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RangeType {
    EndDate,
    NoEnd,
    Numbered,
}

fn invalid(what: impl Into<String>) -> MappingError {
    MappingError::Invalid {
        source_format: "Graph",
        what: what.into(),
    }
}

fn refuse(what: impl Into<String>) -> MappingError {
    MappingError::NotRepresentable {
        target: "Graph patternedRecurrence",
        what: what.into(),
    }
}

/// Graph → RRULE. `zone` is the series' zone (`recurrenceTimeZone` resolved, or the event's), used to
/// turn `endDate` into a UTC UNTIL; `all_day` series get a DATE UNTIL instead.
pub fn to_rrule(
    rec: &PatternedRecurrence,
    zone: &TimeZone,
    all_day: bool,
) -> Result<RRule, MappingError> {
    let p = &rec.pattern;
    if p.interval == 0 {
        return Err(invalid("interval 0"));
    }
    let days = |p: &RecurrencePattern| -> Result<Vec<Weekday>, MappingError> {
        if p.days_of_week.is_empty() {
            return Err(invalid(format!("{:?} pattern without daysOfWeek", p.kind)));
        }
        let mut days: Vec<Weekday> = p.days_of_week.iter().map(|d| d.0).collect();
        days.dedup();
        Ok(days)
    };
    let month = |p: &RecurrencePattern| -> Result<i8, MappingError> {
        if (1..=12).contains(&p.month) {
            Ok(i8::try_from(p.month).unwrap_or(1))
        } else {
            Err(invalid(format!("month {}", p.month)))
        }
    };
    let day_of_month = |p: &RecurrencePattern| -> Result<i8, MappingError> {
        if (1..=31).contains(&p.day_of_month) {
            Ok(i8::try_from(p.day_of_month).unwrap_or(1))
        } else {
            Err(invalid(format!("dayOfMonth {}", p.day_of_month)))
        }
    };
    let relative = |rule: &mut RRule, p: &RecurrencePattern| -> Result<(), MappingError> {
        let days = days(p)?;
        let n = p.index.unwrap_or(WeekIndex::First).ordinal();
        if days.len() == 1 {
            rule.by_day = vec![WeekdayNum {
                ordinal: Some(n),
                weekday: days[0],
            }];
        } else {
            // "The event falls on the first (or nth, or last) day that satisfies the pattern."
            rule.by_day = days
                .into_iter()
                .map(|weekday| WeekdayNum {
                    ordinal: None,
                    weekday,
                })
                .collect();
            rule.by_set_pos = vec![n];
        }
        Ok(())
    };
    let mut rule = match p.kind {
        PatternType::Daily => RRule::new(Frequency::Daily),
        PatternType::Weekly => {
            let mut r = RRule::new(Frequency::Weekly);
            r.by_day = days(p)?
                .into_iter()
                .map(|weekday| WeekdayNum {
                    ordinal: None,
                    weekday,
                })
                .collect();
            r.wkst = p.first_day_of_week.map(|d| d.0).unwrap_or(Weekday::Sunday);
            r
        }
        PatternType::AbsoluteMonthly => {
            let mut r = RRule::new(Frequency::Monthly);
            r.by_month_day = vec![day_of_month(p)?];
            r
        }
        PatternType::RelativeMonthly => {
            let mut r = RRule::new(Frequency::Monthly);
            relative(&mut r, p)?;
            r
        }
        PatternType::AbsoluteYearly => {
            let mut r = RRule::new(Frequency::Yearly);
            r.by_month = vec![month(p)?];
            r.by_month_day = vec![day_of_month(p)?];
            r
        }
        PatternType::RelativeYearly => {
            let mut r = RRule::new(Frequency::Yearly);
            r.by_month = vec![month(p)?];
            relative(&mut r, p)?;
            r
        }
    };
    rule.interval = p.interval;
    match rec.range.kind {
        RangeType::NoEnd => {}
        RangeType::Numbered => match rec.range.number_of_occurrences {
            Some(n) if n > 0 => rule.count = Some(n),
            _ => return Err(invalid("numbered range without numberOfOccurrences > 0")),
        },
        RangeType::EndDate => {
            let end = rec
                .range
                .end_date
                .ok_or_else(|| invalid("endDate range without endDate"))?;
            rule.until = Some(if all_day {
                CalDateTime::Date(end)
            } else {
                let last_second = end.to_datetime(Time::new(23, 59, 59, 0).unwrap_or(Time::MAX));
                let ts = zone
                    .to_ambiguous_timestamp(last_second)
                    .later()
                    .map_err(|e| invalid(format!("endDate {end}: {e}")))?;
                CalDateTime::Utc(ts)
            });
        }
    }
    Ok(rule)
}

/// RRULE → Graph. `dtstart` is the series' DTSTART; `zone` its zone (for UNTIL → endDate and the
/// dates); `windows_zone` the name written as `recurrenceTimeZone`.
pub fn from_rrule(
    rule: &RRule,
    dtstart: &CalDateTime,
    zone: &TimeZone,
    windows_zone: Option<&str>,
) -> Result<PatternedRecurrence, MappingError> {
    if rule.freq < Frequency::Daily {
        return Err(refuse(format!("FREQ={}", rule.freq.as_str())));
    }
    for (present, name) in [
        (!rule.by_second.is_empty(), "BYSECOND"),
        (!rule.by_minute.is_empty(), "BYMINUTE"),
        (!rule.by_hour.is_empty(), "BYHOUR"),
        (!rule.by_year_day.is_empty(), "BYYEARDAY"),
        (!rule.by_week_no.is_empty(), "BYWEEKNO"),
        (rule.by_month.len() > 1, "several BYMONTH values"),
        (rule.by_month_day.len() > 1, "several BYMONTHDAY values"),
        (rule.by_set_pos.len() > 1, "several BYSETPOS values"),
        (
            rule.by_month_day.iter().any(|&d| d < 0),
            "negative BYMONTHDAY",
        ),
    ] {
        if present {
            return Err(refuse(name));
        }
    }
    let start_local = match dtstart {
        CalDateTime::Date(d) => d.to_datetime(Time::midnight()),
        CalDateTime::Floating(dt) | CalDateTime::Zoned { local: dt, .. } => *dt,
        CalDateTime::Utc(ts) => zone.to_datetime(*ts),
    };
    let start_date = start_local.date();
    let plain_days = |rule: &RRule| -> Result<Vec<DayOfWeek>, MappingError> {
        rule.by_day
            .iter()
            .map(|d| match d.ordinal {
                None => Ok(DayOfWeek(d.weekday)),
                Some(_) => Err(refuse(format!(
                    "BYDAY ordinal {d} with FREQ={}",
                    rule.freq.as_str()
                ))),
            })
            .collect()
    };
    // BYDAY with ordinals (nth weekday) or plain days narrowed by BYSETPOS → (days, index).
    let relative = |rule: &RRule| -> Result<Option<(Vec<DayOfWeek>, WeekIndex)>, MappingError> {
        if rule.by_day.is_empty() {
            return Ok(None);
        }
        let ordinals: Vec<Option<i16>> = rule.by_day.iter().map(|d| d.ordinal).collect();
        let days: Vec<DayOfWeek> = rule.by_day.iter().map(|d| DayOfWeek(d.weekday)).collect();
        let index = match (ordinals.first().copied().flatten(), rule.by_set_pos.first()) {
            (Some(n), None) if ordinals.iter().all(|o| *o == Some(n)) => n,
            (None, Some(&pos)) if ordinals.iter().all(Option::is_none) => pos,
            (None, None) => {
                return Err(refuse(
                    "BYDAY every week of the month (no ordinal, no BYSETPOS)",
                ));
            }
            _ => return Err(refuse("BYDAY ordinals that differ, or with BYSETPOS")),
        };
        let index = WeekIndex::from_ordinal(index).ok_or_else(|| {
            refuse(format!(
                "position {index} (Graph knows first..fourth and last)"
            ))
        })?;
        if days.len() > 1 && ordinals.iter().any(Option::is_some) {
            // `1TH,1FR` is every first Thursday and every first Friday; Graph's several-days form is
            // "the first day that is a Thursday or Friday", a different set.
            return Err(refuse("ordinal BYDAY on several weekdays"));
        }
        Ok(Some((days, index)))
    };
    let mut pattern = RecurrencePattern {
        kind: PatternType::Daily,
        interval: rule.interval,
        month: 0,
        day_of_month: 0,
        days_of_week: Vec::new(),
        first_day_of_week: None,
        index: None,
    };
    let month_of = |rule: &RRule| -> u8 {
        rule.by_month
            .first()
            .map(|&m| u8::try_from(m).unwrap_or(1))
            .unwrap_or_else(|| u8::try_from(start_date.month()).unwrap_or(1))
    };
    let day_of = |rule: &RRule| -> u8 {
        rule.by_month_day
            .first()
            .map(|&d| u8::try_from(d).unwrap_or(1))
            .unwrap_or_else(|| u8::try_from(start_date.day()).unwrap_or(1))
    };
    match rule.freq {
        Frequency::Daily => {
            if !rule.by_month.is_empty()
                || !rule.by_month_day.is_empty()
                || !rule.by_set_pos.is_empty()
            {
                return Err(refuse("FREQ=DAILY with BYMONTH, BYMONTHDAY or BYSETPOS"));
            }
            if !rule.by_day.is_empty() {
                if rule.interval != 1 {
                    return Err(refuse("FREQ=DAILY with BYDAY and INTERVAL > 1"));
                }
                pattern.kind = PatternType::Weekly;
                pattern.days_of_week = plain_days(rule)?;
                pattern.first_day_of_week = Some(DayOfWeek(rule.wkst));
            }
        }
        Frequency::Weekly => {
            if !rule.by_month.is_empty() || !rule.by_set_pos.is_empty() {
                return Err(refuse("FREQ=WEEKLY with BYMONTH or BYSETPOS"));
            }
            pattern.kind = PatternType::Weekly;
            pattern.days_of_week = if rule.by_day.is_empty() {
                vec![DayOfWeek(start_date.weekday())]
            } else {
                plain_days(rule)?
            };
            pattern.first_day_of_week = Some(DayOfWeek(rule.wkst));
        }
        Frequency::Monthly => {
            if !rule.by_month.is_empty() {
                return Err(refuse("FREQ=MONTHLY with BYMONTH"));
            }
            match relative(rule)? {
                Some((days, index)) if rule.by_month_day.is_empty() => {
                    pattern.kind = PatternType::RelativeMonthly;
                    pattern.days_of_week = days;
                    pattern.index = Some(index);
                }
                Some(_) => return Err(refuse("BYDAY together with BYMONTHDAY")),
                None if rule.by_set_pos.is_empty() => {
                    pattern.kind = PatternType::AbsoluteMonthly;
                    pattern.day_of_month = day_of(rule);
                }
                None => return Err(refuse("BYSETPOS without BYDAY")),
            }
        }
        Frequency::Yearly => {
            pattern.month = month_of(rule);
            match relative(rule)? {
                Some((days, index))
                    if rule.by_month_day.is_empty() && !rule.by_month.is_empty() =>
                {
                    pattern.kind = PatternType::RelativeYearly;
                    pattern.days_of_week = days;
                    pattern.index = Some(index);
                }
                Some(_) => {
                    return Err(refuse(
                        "yearly BYDAY without one BYMONTH, or with BYMONTHDAY",
                    ));
                }
                None if rule.by_set_pos.is_empty() => {
                    pattern.kind = PatternType::AbsoluteYearly;
                    pattern.day_of_month = day_of(rule);
                }
                None => return Err(refuse("BYSETPOS without BYDAY")),
            }
        }
        _ => return Err(refuse(format!("FREQ={}", rule.freq.as_str()))),
    }
    let mut range = RecurrenceRange {
        kind: RangeType::NoEnd,
        start_date,
        end_date: None,
        number_of_occurrences: None,
        recurrence_time_zone: windows_zone.map(str::to_string),
    };
    if let Some(count) = rule.count {
        range.kind = RangeType::Numbered;
        range.number_of_occurrences = Some(count);
    } else if let Some(until) = &rule.until {
        range.kind = RangeType::EndDate;
        range.end_date = Some(match until {
            CalDateTime::Utc(ts) => zone.to_datetime(*ts).date(),
            other => other.date(),
        });
    }
    Ok(PatternedRecurrence { pattern, range })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    #[test]
    fn graph_documentation_shapes_deserialize_and_map() {
        let json = r#"{"pattern":{"type":"relativeMonthly","interval":1,"daysOfWeek":["Thursday","Friday"],"index":"first"},
                      "range":{"type":"endDate","startDate":"2017-07-01","endDate":"2017-07-31"}}"#;
        let rec: PatternedRecurrence = serde_json::from_str(json).unwrap();
        let rule = to_rrule(&rec, &berlin(), false).unwrap();
        assert_eq!(
            rule.to_ical(),
            "FREQ=MONTHLY;UNTIL=20170731T215959Z;BYDAY=TH,FR;BYSETPOS=1"
        );
        let echoed = r#"{"pattern":{"type":"weekly","interval":1,"month":0,"dayOfMonth":0,"daysOfWeek":["monday"],
                         "firstDayOfWeek":"sunday","index":"first"},
                         "range":{"type":"noEnd","startDate":"2017-09-04","endDate":"0001-01-01",
                         "recurrenceTimeZone":"Pacific Standard Time","numberOfOccurrences":0}}"#;
        let rec: PatternedRecurrence = serde_json::from_str(echoed).unwrap();
        assert_eq!(
            to_rrule(&rec, &berlin(), false).unwrap().to_ical(),
            "FREQ=WEEKLY;BYDAY=MO;WKST=SU"
        );
    }

    #[test]
    fn rules_graph_cannot_express_are_refused_by_name() {
        let start = CalDateTime::Zoned {
            local: jiff::civil::date(2024, 1, 1).at(9, 0, 0, 0),
            tzid: crate::datetime::TzId::parse("Europe/Berlin").unwrap(),
        };
        for (text, needle) in [
            ("FREQ=HOURLY", "FREQ=HOURLY"),
            ("FREQ=DAILY;BYHOUR=9,17", "BYHOUR"),
            ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=5", "position 5"),
            ("FREQ=MONTHLY;BYDAY=MO,TU;BYSETPOS=1,-1", "several BYSETPOS"),
            ("FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO"),
            ("FREQ=YEARLY;BYMONTH=1,2", "several BYMONTH"),
            ("FREQ=MONTHLY;BYMONTHDAY=-1", "negative BYMONTHDAY"),
            ("FREQ=MONTHLY;BYDAY=1MO,-1FR", "ordinals that differ"),
        ] {
            let err =
                from_rrule(&RRule::parse(text).unwrap(), &start, &berlin(), None).unwrap_err();
            assert!(
                matches!(&err, MappingError::NotRepresentable { what, .. } if what.contains(needle)),
                "{text}: {err}"
            );
        }
    }
}
