//! RECUR values (RFC 5545 §3.3.10): the rule, its text form, and the checks that make a rule invalid.

use std::fmt;

use jiff::civil::Weekday;

use crate::datetime::{CalDateTime, DateTimeError};

/// Why a RECUR value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RRuleError {
    #[error("RRULE has no FREQ part")]
    MissingFreq,
    #[error("RRULE part `{0}` is unknown")]
    UnknownPart(String),
    #[error("RRULE part `{0}` appears twice")]
    DuplicatePart(String),
    #[error("RRULE part {part}={value} is invalid: {why}")]
    InvalidValue {
        part: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("RRULE has both COUNT and UNTIL (RFC 5545 §3.3.10 allows one)")]
    CountAndUntil,
    #[error("RRULE UNTIL: {0}")]
    Until(#[from] DateTimeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Frequency {
    Secondly,
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secondly => "SECONDLY",
            Self::Minutely => "MINUTELY",
            Self::Hourly => "HOURLY",
            Self::Daily => "DAILY",
            Self::Weekly => "WEEKLY",
            Self::Monthly => "MONTHLY",
            Self::Yearly => "YEARLY",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SECONDLY" => Self::Secondly,
            "MINUTELY" => Self::Minutely,
            "HOURLY" => Self::Hourly,
            "DAILY" => Self::Daily,
            "WEEKLY" => Self::Weekly,
            "MONTHLY" => Self::Monthly,
            "YEARLY" => Self::Yearly,
            _ => return None,
        })
    }
}

/// A BYDAY entry: a weekday with an optional ordinal (`2TU`, `-1FR`, `MO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeekdayNum {
    pub ordinal: Option<i16>,
    pub weekday: Weekday,
}

pub fn weekday_code(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "MO",
        Weekday::Tuesday => "TU",
        Weekday::Wednesday => "WE",
        Weekday::Thursday => "TH",
        Weekday::Friday => "FR",
        Weekday::Saturday => "SA",
        Weekday::Sunday => "SU",
    }
}

pub fn parse_weekday_code(s: &str) -> Option<Weekday> {
    Some(match s {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

/// One recurrence rule. Empty `by_*` lists mean the part is absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RRule {
    pub freq: Frequency,
    pub interval: u32,
    pub count: Option<u32>,
    pub until: Option<CalDateTime>,
    pub by_second: Vec<i8>,
    pub by_minute: Vec<i8>,
    pub by_hour: Vec<i8>,
    pub by_day: Vec<WeekdayNum>,
    pub by_month_day: Vec<i8>,
    pub by_year_day: Vec<i16>,
    pub by_week_no: Vec<i8>,
    pub by_month: Vec<i8>,
    pub by_set_pos: Vec<i16>,
    pub wkst: Weekday,
}

impl RRule {
    /// A rule with only FREQ set (INTERVAL=1, WKST=MO).
    pub fn new(freq: Frequency) -> Self {
        Self {
            freq,
            interval: 1,
            count: None,
            until: None,
            by_second: Vec::new(),
            by_minute: Vec::new(),
            by_hour: Vec::new(),
            by_day: Vec::new(),
            by_month_day: Vec::new(),
            by_year_day: Vec::new(),
            by_week_no: Vec::new(),
            by_month: Vec::new(),
            by_set_pos: Vec::new(),
            wkst: Weekday::Monday,
        }
    }

    /// Reads a RECUR value such as `FREQ=MONTHLY;BYDAY=-1FR;COUNT=5`. Part names are case-insensitive;
    /// an `RRULE:` prefix is accepted. UNTIL is read as DATE, DATE-TIME or UTC as written; relating it to
    /// DTSTART is the expander's job.
    pub fn parse(raw: &str) -> Result<Self, RRuleError> {
        let text = raw.trim();
        let text = strip_prefix_ci(text, "RRULE:")
            .or_else(|| strip_prefix_ci(text, "EXRULE:"))
            .unwrap_or(text);
        let mut rule = Self::new(Frequency::Daily);
        let mut seen: Vec<String> = Vec::new();
        let mut freq = None;
        for part in text.split(';').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| RRuleError::InvalidValue {
                    part: "RRULE",
                    value: part.to_string(),
                    why: "expected NAME=VALUE",
                })?;
            let name = name.trim().to_ascii_uppercase();
            let value = value.trim().to_ascii_uppercase();
            if seen.contains(&name) {
                return Err(RRuleError::DuplicatePart(name));
            }
            seen.push(name.clone());
            match name.as_str() {
                "FREQ" => {
                    freq = Some(Frequency::parse(&value).ok_or(RRuleError::InvalidValue {
                        part: "FREQ",
                        value: value.clone(),
                        why: "expected SECONDLY, MINUTELY, HOURLY, DAILY, WEEKLY, MONTHLY or YEARLY",
                    })?)
                }
                "INTERVAL" => rule.interval = parse_num(&value, "INTERVAL", 1, i64::from(u32::MAX))?,
                "COUNT" => rule.count = Some(parse_num(&value, "COUNT", 1, i64::from(u32::MAX))?),
                "UNTIL" => rule.until = Some(CalDateTime::parse(&value, None, None)?),
                "BYSECOND" => rule.by_second = parse_list(&value, "BYSECOND", 0, 60, false)?,
                "BYMINUTE" => rule.by_minute = parse_list(&value, "BYMINUTE", 0, 59, false)?,
                "BYHOUR" => rule.by_hour = parse_list(&value, "BYHOUR", 0, 23, false)?,
                "BYMONTHDAY" => rule.by_month_day = parse_list(&value, "BYMONTHDAY", 1, 31, true)?,
                "BYYEARDAY" => rule.by_year_day = parse_list(&value, "BYYEARDAY", 1, 366, true)?,
                "BYWEEKNO" => rule.by_week_no = parse_list(&value, "BYWEEKNO", 1, 53, true)?,
                "BYMONTH" => rule.by_month = parse_list(&value, "BYMONTH", 1, 12, false)?,
                "BYSETPOS" => rule.by_set_pos = parse_list(&value, "BYSETPOS", 1, 366, true)?,
                "BYDAY" => {
                    rule.by_day = value
                        .split(',')
                        .map(|d| parse_weekday_num(d.trim()))
                        .collect::<Result<_, _>>()?
                }
                "WKST" => {
                    rule.wkst = parse_weekday_code(&value).ok_or(RRuleError::InvalidValue {
                        part: "WKST",
                        value: value.clone(),
                        why: "expected MO, TU, WE, TH, FR, SA or SU",
                    })?
                }
                _ if name.starts_with("X-") => {}
                _ => return Err(RRuleError::UnknownPart(name)),
            }
        }
        rule.freq = freq.ok_or(RRuleError::MissingFreq)?;
        if rule.count.is_some() && rule.until.is_some() {
            return Err(RRuleError::CountAndUntil);
        }
        if !rule.by_set_pos.is_empty()
            && rule.by_second.is_empty()
            && rule.by_minute.is_empty()
            && rule.by_hour.is_empty()
            && rule.by_day.is_empty()
            && rule.by_month_day.is_empty()
            && rule.by_year_day.is_empty()
            && rule.by_week_no.is_empty()
            && rule.by_month.is_empty()
        {
            return Err(RRuleError::InvalidValue {
                part: "BYSETPOS",
                value: join(&rule.by_set_pos),
                why: "BYSETPOS needs another BYxxx part to select from (RFC 5545 §3.3.10)",
            });
        }
        if !rule.by_week_no.is_empty() && rule.freq != Frequency::Yearly {
            return Err(RRuleError::InvalidValue {
                part: "BYWEEKNO",
                value: join(&rule.by_week_no),
                why: "only valid with FREQ=YEARLY (RFC 5545 §3.3.10)",
            });
        }
        if !rule.by_year_day.is_empty()
            && matches!(
                rule.freq,
                Frequency::Daily | Frequency::Weekly | Frequency::Monthly
            )
        {
            return Err(RRuleError::InvalidValue {
                part: "BYYEARDAY",
                value: join(&rule.by_year_day),
                why: "not valid with FREQ=DAILY, WEEKLY or MONTHLY (RFC 5545 §3.3.10)",
            });
        }
        if !rule.by_month_day.is_empty() && rule.freq == Frequency::Weekly {
            return Err(RRuleError::InvalidValue {
                part: "BYMONTHDAY",
                value: join(&rule.by_month_day),
                why: "not valid with FREQ=WEEKLY (RFC 5545 §3.3.10)",
            });
        }
        Ok(rule)
    }

    /// The RECUR text in a fixed part order (FREQ first), without the `RRULE:` prefix.
    pub fn to_ical(&self) -> String {
        let mut parts = vec![format!("FREQ={}", self.freq.as_str())];
        if let Some(until) = &self.until {
            parts.push(format!("UNTIL={}", until.to_ical()));
        }
        if let Some(count) = self.count {
            parts.push(format!("COUNT={count}"));
        }
        if self.interval != 1 {
            parts.push(format!("INTERVAL={}", self.interval));
        }
        let lists: [(&str, String); 9] = [
            ("BYSECOND", join(&self.by_second)),
            ("BYMINUTE", join(&self.by_minute)),
            ("BYHOUR", join(&self.by_hour)),
            (
                "BYDAY",
                self.by_day
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("BYMONTHDAY", join(&self.by_month_day)),
            ("BYYEARDAY", join(&self.by_year_day)),
            ("BYWEEKNO", join(&self.by_week_no)),
            ("BYMONTH", join(&self.by_month)),
            ("BYSETPOS", join(&self.by_set_pos)),
        ];
        for (name, value) in lists {
            if !value.is_empty() {
                parts.push(format!("{name}={value}"));
            }
        }
        if self.wkst != Weekday::Monday {
            parts.push(format!("WKST={}", weekday_code(self.wkst)));
        }
        parts.join(";")
    }
}

impl fmt::Display for WeekdayNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.ordinal {
            write!(f, "{n}")?;
        }
        f.write_str(weekday_code(self.weekday))
    }
}

impl fmt::Display for RRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ical())
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_num<T: TryFrom<i64>>(
    value: &str,
    part: &'static str,
    min: i64,
    max: i64,
) -> Result<T, RRuleError> {
    let bad = |why| RRuleError::InvalidValue {
        part,
        value: value.to_string(),
        why,
    };
    let n: i64 = value.parse().map_err(|_| bad("expected a number"))?;
    if n < min || n > max {
        return Err(bad("out of range"));
    }
    T::try_from(n).map_err(|_| bad("out of range"))
}

fn parse_list<T: TryFrom<i64>>(
    value: &str,
    part: &'static str,
    min: i64,
    max: i64,
    signed: bool,
) -> Result<Vec<T>, RRuleError> {
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            let n: i64 = item.parse().map_err(|_| RRuleError::InvalidValue {
                part,
                value: value.to_string(),
                why: "expected a comma-separated list of numbers",
            })?;
            let magnitude = n.abs();
            let ok = if signed {
                n != 0 && magnitude >= min && magnitude <= max
            } else {
                n >= min && n <= max
            };
            if !ok {
                return Err(RRuleError::InvalidValue {
                    part,
                    value: value.to_string(),
                    why: "a value is out of range",
                });
            }
            T::try_from(n).map_err(|_| RRuleError::InvalidValue {
                part,
                value: value.to_string(),
                why: "a value is out of range",
            })
        })
        .collect()
}

fn parse_weekday_num(item: &str) -> Result<WeekdayNum, RRuleError> {
    let bad = || RRuleError::InvalidValue {
        part: "BYDAY",
        value: item.to_string(),
        why: "expected [+|-][1-53]MO..SU",
    };
    if item.len() < 2 || !item.is_ascii() {
        return Err(bad());
    }
    let (num, code) = item.split_at(item.len() - 2);
    let weekday = parse_weekday_code(code).ok_or_else(bad)?;
    let ordinal = if num.is_empty() {
        None
    } else {
        let n: i16 = num.trim_start_matches('+').parse().map_err(|_| bad())?;
        if n == 0 || n.abs() > 53 {
            return Err(bad());
        }
        Some(n)
    };
    Ok(WeekdayNum { ordinal, weekday })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_round_trips() {
        let text = "FREQ=YEARLY;COUNT=10;INTERVAL=2;BYSECOND=0,30;BYMINUTE=15;BYHOUR=9,17;\
                    BYDAY=1MO,-1FR,TU;BYMONTHDAY=-1,15;BYYEARDAY=100,-1;BYWEEKNO=20,-2;\
                    BYMONTH=1,6;BYSETPOS=1,-1;WKST=SU";
        let rule = RRule::parse(text).unwrap();
        assert_eq!(rule.by_day[1].ordinal, Some(-1));
        assert_eq!(rule.wkst, Weekday::Sunday);
        assert_eq!(RRule::parse(&rule.to_ical()).unwrap(), rule);
        assert_eq!(rule.to_ical(), text);
        let until = RRule::parse("rrule:freq=daily;until=19971224T000000Z").unwrap();
        assert_eq!(until.to_ical(), "FREQ=DAILY;UNTIL=19971224T000000Z");
    }

    #[test]
    fn invalid_rules_name_the_problem() {
        let cases = [
            ("INTERVAL=2", RRuleError::MissingFreq),
            (
                "FREQ=DAILY;COUNT=2;UNTIL=20200101",
                RRuleError::CountAndUntil,
            ),
            ("FREQ=FORTNIGHTLY", RRuleError::MissingFreq),
            ("FREQ=DAILY;FREQ=WEEKLY", RRuleError::MissingFreq),
            ("FREQ=DAILY;BYMONTHDAY=0", RRuleError::MissingFreq),
            ("FREQ=DAILY;BYMONTHDAY=32", RRuleError::MissingFreq),
            ("FREQ=DAILY;BYDAY=0MO", RRuleError::MissingFreq),
            ("FREQ=DAILY;BYDAY=XX", RRuleError::MissingFreq),
            ("FREQ=DAILY;BYHOUR=24", RRuleError::MissingFreq),
            ("FREQ=DAILY;INTERVAL=0", RRuleError::MissingFreq),
            ("FREQ=DAILY;FOO=1", RRuleError::MissingFreq),
            ("FREQ=DAILY;BYSETPOS=1", RRuleError::MissingFreq),
            ("FREQ=MONTHLY;BYWEEKNO=1", RRuleError::MissingFreq),
            ("FREQ=WEEKLY;BYMONTHDAY=1", RRuleError::MissingFreq),
            ("FREQ=DAILY;UNTIL=2020", RRuleError::MissingFreq),
        ];
        for (text, _) in &cases[..2] {
            let err = RRule::parse(text).unwrap_err();
            assert_eq!(&err, &cases.iter().find(|c| c.0 == *text).unwrap().1);
        }
        for (text, _) in &cases[2..] {
            let err = RRule::parse(text).unwrap_err();
            assert_ne!(err, RRuleError::MissingFreq, "{text}: {err}");
        }
    }
}
