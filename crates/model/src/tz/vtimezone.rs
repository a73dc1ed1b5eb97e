//! Zones defined only by a VTIMEZONE, evaluated from their STANDARD/DAYLIGHT observances.
//!
//! The observances are turned into what the tzdb itself is made of: an explicit list of transitions
//! (every onset from DTSTART, RRULE and RDATE, up to 2037) plus, when the zone ends in the common pair of
//! open-ended yearly rules ("second Sunday of March"), a POSIX TZ rule that carries it on forever. Both are
//! packed into TZif bytes and handed to jiff, so custom zones get jiff's exact gap and fold handling.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::TzError;
use crate::datetime::TzId;
use crate::rrule::{Frequency, RRule};
use crate::rrule_iter::{IterLimits, RuleIter, days_from_civil};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservanceKind {
    Standard,
    Daylight,
}

/// One STANDARD or DAYLIGHT sub-component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observance {
    pub kind: ObservanceKind,
    /// DTSTART: the first onset, in local time as observed before it (i.e. in `offset_from`).
    pub dtstart: DateTime,
    /// TZOFFSETFROM in seconds east of UTC.
    pub offset_from: i32,
    /// TZOFFSETTO in seconds east of UTC.
    pub offset_to: i32,
    pub rrule: Option<RRule>,
    /// RDATE onsets, local time like DTSTART.
    pub rdates: Vec<DateTime>,
    pub name: Option<String>,
}

/// A VTIMEZONE as the resolver needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VTimezone {
    pub tzid: TzId,
    pub observances: Vec<Observance>,
}

/// Transitions are listed explicitly up to this year; a POSIX rule (when there is one) takes over after.
const EXPLICIT_UNTIL_YEAR: i16 = 2037;
const MAX_ONSETS_PER_OBSERVANCE: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalType {
    offset: i32,
    dst: bool,
    abbr: String,
}

impl VTimezone {
    /// Reads a UTC offset value (`+0100`, `-0530`, `+013045`) into seconds.
    pub fn parse_offset(raw: &str) -> Option<i32> {
        let s = raw.trim();
        let (sign, digits) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        if !(digits.len() == 4 || digits.len() == 6) || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let h: i32 = digits[0..2].parse().ok()?;
        let m: i32 = digits[2..4].parse().ok()?;
        let sec: i32 = if digits.len() == 6 {
            digits[4..6].parse().ok()?
        } else {
            0
        };
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        Some(sign * (h * 3600 + m * 60 + sec))
    }

    pub fn to_time_zone(&self) -> Result<TimeZone, TzError> {
        let invalid = |why: String| TzError::InvalidVTimezone {
            tzid: self.tzid.as_str().to_string(),
            why,
        };
        if self.observances.is_empty() {
            return Err(invalid("it has no STANDARD or DAYLIGHT component".into()));
        }
        let mut transitions: Vec<(i64, LocalType)> = Vec::new();
        for obs in &self.observances {
            let ty = LocalType {
                offset: obs.offset_to,
                dst: obs.kind == ObservanceKind::Daylight,
                abbr: designation(obs.name.as_deref(), obs.offset_to),
            };
            let mut onsets = vec![obs.dtstart];
            onsets.extend(obs.rdates.iter().copied());
            if let Some(rule) = &obs.rrule {
                let mut rule = rule.clone();
                // UNTIL in a VTIMEZONE is UTC; comparing onsets in local time is within a day of it,
                // and onsets are months apart, so compare on the local onset shifted to UTC below.
                let until = rule.until.take();
                let iter = RuleIter::new(rule, obs.dtstart, IterLimits::default());
                for onset in iter.take(MAX_ONSETS_PER_OBSERVANCE) {
                    let onset = onset.map_err(|e| invalid(e.to_string()))?;
                    if onset.year() > EXPLICIT_UNTIL_YEAR {
                        break;
                    }
                    if let Some(until) = &until {
                        let utc = local_seconds(onset) - i64::from(obs.offset_from);
                        if utc > until_seconds(until) {
                            break;
                        }
                    }
                    onsets.push(onset);
                }
            }
            for onset in onsets {
                transitions.push((
                    local_seconds(onset) - i64::from(obs.offset_from),
                    ty.clone(),
                ));
            }
        }
        transitions.sort_by_key(|(at, _)| *at);
        transitions.dedup_by_key(|(at, _)| *at);
        // Before the first onset the zone keeps the offset that onset came from.
        let first = self
            .observances
            .iter()
            .min_by_key(|o| local_seconds(o.dtstart) - i64::from(o.offset_from))
            .ok_or_else(|| invalid("no observance".into()))?;
        let initial = LocalType {
            offset: first.offset_from,
            dst: false,
            abbr: designation(None, first.offset_from),
        };
        let footer = self.posix_footer(&transitions);
        let bytes = write_tzif(&initial, &transitions, &footer);
        TimeZone::tzif(self.tzid.as_str(), &bytes).map_err(|e| invalid(e.to_string()))
    }

    /// The POSIX TZ string for the zone's future: the latest open-ended yearly STANDARD/DAYLIGHT pair
    /// when it has the "nth weekday of a month" form, otherwise the last observed offset, fixed.
    fn posix_footer(&self, transitions: &[(i64, LocalType)]) -> String {
        let open = |kind| {
            self.observances
                .iter()
                .filter(|o| o.kind == kind)
                .filter(|o| {
                    o.rrule
                        .as_ref()
                        .is_some_and(|r| r.until.is_none() && r.count.is_none())
                })
                .max_by_key(|o| o.dtstart)
        };
        if let (Some(std), Some(dst)) = (
            open(ObservanceKind::Standard),
            open(ObservanceKind::Daylight),
        ) && let (Some(std_rule), Some(dst_rule)) = (posix_rule(std), posix_rule(dst))
        {
            let std_name = designation(std.name.as_deref(), std.offset_to);
            let dst_name = designation(dst.name.as_deref(), dst.offset_to);
            return format!(
                "<{std_name}>{}<{dst_name}>{},{dst_rule},{std_rule}",
                posix_offset(std.offset_to),
                posix_offset(dst.offset_to)
            );
        }
        match transitions.last() {
            Some((_, last)) => format!("<{}>{}", last.abbr, posix_offset(last.offset)),
            None => "UTC0".into(),
        }
    }
}

fn local_seconds(dt: DateTime) -> i64 {
    days_from_civil(
        i64::from(dt.year()),
        i64::from(dt.month()),
        i64::from(dt.day()),
    ) * 86_400
        + i64::from(dt.hour()) * 3600
        + i64::from(dt.minute()) * 60
        + i64::from(dt.second())
}

fn until_seconds(until: &crate::datetime::CalDateTime) -> i64 {
    use crate::datetime::CalDateTime;
    match until {
        CalDateTime::Utc(ts) => ts.as_second(),
        CalDateTime::Date(d) => {
            local_seconds(d.to_datetime(jiff::civil::Time::midnight())) + 86_399
        }
        CalDateTime::Floating(dt) | CalDateTime::Zoned { local: dt, .. } => local_seconds(*dt),
    }
}

/// A TZif/POSIX designation: the TZNAME when it is a plain 3–6 character name, else the offset.
fn designation(name: Option<&str>, offset: i32) -> String {
    if let Some(n) = name
        && (3..=6).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
    {
        return n.to_string();
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    format!("{sign}{:02}{:02}", a / 3600, a / 60 % 60)
}

/// POSIX offsets are hours *west* of UTC.
fn posix_offset(offset_east: i32) -> String {
    let west = -offset_east;
    let sign = if west < 0 { "-" } else { "" };
    let a = west.unsigned_abs();
    format!("{sign}{}:{:02}:{:02}", a / 3600, a / 60 % 60, a % 60)
}

/// `Mm.w.d/time` for a yearly "nth weekday of month" rule, with the onset time in the offset before it.
fn posix_rule(obs: &Observance) -> Option<String> {
    let rule = obs.rrule.as_ref()?;
    if rule.freq != Frequency::Yearly
        || rule.interval != 1
        || rule.by_month.len() != 1
        || rule.by_day.len() != 1
        || !rule.by_set_pos.is_empty()
        || !rule.by_year_day.is_empty()
        || !rule.by_week_no.is_empty()
    {
        return None;
    }
    let month = rule.by_month[0];
    let day = rule.by_day[0];
    let week = match (day.ordinal, rule.by_month_day.as_slice()) {
        (Some(n @ 1..=4), []) => n,
        (Some(-1), []) => 5,
        (None, days) if days.len() == 7 => {
            let mut sorted = days.to_vec();
            sorted.sort_unstable();
            match sorted[0] {
                1 | 8 | 15 | 22 if sorted.windows(2).all(|w| w[1] == w[0] + 1) => {
                    i16::from((sorted[0] - 1) / 7 + 1)
                }
                -7 => 5,
                _ => return None,
            }
        }
        _ => return None,
    };
    let weekday = day.weekday.to_sunday_zero_offset();
    let t = obs.dtstart;
    Some(format!(
        "M{month}.{week}.{weekday}/{}:{:02}:{:02}",
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// TZif version 2 bytes (RFC 8536): an empty v1 block, then the 64-bit block and the POSIX footer.
fn write_tzif(initial: &LocalType, transitions: &[(i64, LocalType)], footer: &str) -> Vec<u8> {
    let mut types: Vec<LocalType> = vec![initial.clone()];
    let mut indices = Vec::with_capacity(transitions.len());
    for (_, ty) in transitions {
        let idx = match types.iter().position(|t| t == ty) {
            Some(i) => i,
            None => {
                types.push(ty.clone());
                types.len() - 1
            }
        };
        indices.push(u8::try_from(idx).unwrap_or(0));
    }
    let mut chars: Vec<u8> = Vec::new();
    let mut abbr_index = Vec::new();
    for t in &types {
        abbr_index.push(u8::try_from(chars.len()).unwrap_or(0));
        chars.extend_from_slice(t.abbr.as_bytes());
        chars.push(0);
    }
    let header = |out: &mut Vec<u8>, timecnt: usize, typecnt: usize, charcnt: usize| {
        out.extend_from_slice(b"TZif2");
        out.extend_from_slice(&[0; 15]);
        for count in [0, 0, 0, timecnt, typecnt, charcnt] {
            out.extend_from_slice(&u32::try_from(count).unwrap_or(0).to_be_bytes());
        }
    };
    let mut out = Vec::new();
    // v1 block: one UTC type, as readers of v2+ skip it.
    header(&mut out, 0, 1, 4);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(b"UTC\0");
    header(&mut out, transitions.len(), types.len(), chars.len());
    for (at, _) in transitions {
        out.extend_from_slice(&at.to_be_bytes());
    }
    out.extend_from_slice(&indices);
    for (t, idx) in types.iter().zip(&abbr_index) {
        out.extend_from_slice(&t.offset.to_be_bytes());
        out.push(u8::from(t.dst));
        out.push(*idx);
    }
    out.extend_from_slice(&chars);
    out.push(b'\n');
    out.extend_from_slice(footer.as_bytes());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn outlook_custom() -> VTimezone {
        // The shape Outlook writes for a "Customized Time Zone": no IANA name anywhere, EU rules.
        VTimezone {
            tzid: TzId::parse("Customized Time Zone").unwrap(),
            observances: vec![
                Observance {
                    kind: ObservanceKind::Standard,
                    dtstart: date(1601, 1, 1).at(3, 0, 0, 0),
                    offset_from: 7200,
                    offset_to: 3600,
                    rrule: Some(RRule::parse("FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10").unwrap()),
                    rdates: vec![],
                    name: None,
                },
                Observance {
                    kind: ObservanceKind::Daylight,
                    dtstart: date(1601, 1, 1).at(2, 0, 0, 0),
                    offset_from: 3600,
                    offset_to: 7200,
                    rrule: Some(RRule::parse("FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3").unwrap()),
                    rdates: vec![],
                    name: None,
                },
            ],
        }
    }

    #[test]
    fn a_custom_zone_matches_the_tzdb_zone_it_imitates() {
        let custom = outlook_custom().to_time_zone().unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        for year in [2001, 2024, 2036, 2050, 2100] {
            for (m, d, h) in [
                (1, 15, 12),
                (3, 31, 1),
                (3, 31, 3),
                (7, 1, 0),
                (10, 27, 2),
                (10, 31, 12),
            ] {
                let local = date(year, m, d).at(h, 30, 0, 0);
                assert_eq!(
                    custom.to_ambiguous_timestamp(local).compatible().unwrap(),
                    berlin.to_ambiguous_timestamp(local).compatible().unwrap(),
                    "{local}"
                );
            }
        }
        // The 2024 spring-forward gap: 02:30 takes the offset before the gap.
        let gap = custom
            .to_ambiguous_timestamp(date(2024, 3, 31).at(2, 30, 0, 0))
            .compatible()
            .unwrap();
        assert_eq!(gap.to_string(), "2024-03-31T01:30:00Z");
    }

    #[test]
    fn one_off_transitions_without_rules_are_honoured() {
        let zone = VTimezone {
            tzid: TzId::parse("X-Custom-Shift").unwrap(),
            observances: vec![
                Observance {
                    kind: ObservanceKind::Standard,
                    dtstart: date(2000, 1, 1).at(0, 0, 0, 0),
                    offset_from: 0,
                    offset_to: 3600,
                    rrule: None,
                    rdates: vec![],
                    name: Some("AAA".into()),
                },
                Observance {
                    kind: ObservanceKind::Standard,
                    dtstart: date(2010, 6, 1).at(0, 0, 0, 0),
                    offset_from: 3600,
                    offset_to: 5400,
                    rrule: None,
                    rdates: vec![date(2011, 1, 1).at(0, 0, 0, 0)],
                    name: Some("BBB".into()),
                },
            ],
        }
        .to_time_zone()
        .unwrap();
        let at = |y, m, d| {
            zone.to_offset(
                date(y, m, d)
                    .at(12, 0, 0, 0)
                    .to_zoned(TimeZone::UTC)
                    .unwrap()
                    .timestamp(),
            )
            .seconds()
        };
        assert_eq!(at(1999, 1, 1), 0);
        assert_eq!(at(2005, 1, 1), 3600);
        assert_eq!(at(2030, 1, 1), 5400);
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(VTimezone::parse_offset("+0100"), Some(3600));
        assert_eq!(VTimezone::parse_offset("-0530"), Some(-19800));
        assert_eq!(VTimezone::parse_offset("+013045"), Some(5445));
        assert_eq!(VTimezone::parse_offset("0100"), None);
        assert_eq!(VTimezone::parse_offset("+2500"), None);
    }
}
