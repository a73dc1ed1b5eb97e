//! Google Calendar `recurrence[]` ↔ the model. Google stores RFC 5545 lines without DTSTART
//! (`RRULE:…`, `EXRULE:…`, `RDATE;TZID=…:…`, `EXDATE;VALUE=DATE:…`), so the mapping is lossless.

use crate::datetime::{CalDateTime, DateOrPeriod, ValueType, parse_date_list};
use crate::expand::SeriesInput;
use crate::rrule::RRule;

use super::MappingError;

/// The recurrence lines of one Google event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoogleRecurrence {
    pub rrules: Vec<RRule>,
    pub exrules: Vec<RRule>,
    pub rdates: Vec<DateOrPeriod>,
    pub exdates: Vec<DateOrPeriod>,
}

fn invalid(line: &str, why: impl std::fmt::Display) -> MappingError {
    MappingError::Invalid {
        source_format: "Google recurrence",
        what: format!("`{line}`: {why}"),
    }
}

impl GoogleRecurrence {
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Self, MappingError> {
        let mut out = Self::default();
        for line in lines {
            let line = line.as_ref().trim();
            if line.is_empty() {
                continue;
            }
            let (head, value) =
                split_value(line).ok_or_else(|| invalid(line, "expected NAME[;PARAMS]:VALUE"))?;
            let mut segments = head.split(';');
            let name = segments.next().unwrap_or("").to_ascii_uppercase();
            let mut tzid = None;
            let mut value_type = None;
            for param in segments {
                let (k, v) = param
                    .split_once('=')
                    .ok_or_else(|| invalid(line, "parameter without `=`"))?;
                match k.to_ascii_uppercase().as_str() {
                    "TZID" => tzid = Some(v.trim_matches('"').to_string()),
                    "VALUE" => {
                        value_type = Some(ValueType::parse(v).map_err(|e| invalid(line, e))?)
                    }
                    _ => {}
                }
            }
            match name.as_str() {
                "RRULE" => out
                    .rrules
                    .push(RRule::parse(value).map_err(|e| invalid(line, e))?),
                "EXRULE" => out
                    .exrules
                    .push(RRule::parse(value).map_err(|e| invalid(line, e))?),
                "RDATE" => out.rdates.extend(
                    parse_date_list(value, tzid.as_deref(), value_type)
                        .map_err(|e| invalid(line, e))?,
                ),
                "EXDATE" => out.exdates.extend(
                    parse_date_list(value, tzid.as_deref(), value_type)
                        .map_err(|e| invalid(line, e))?,
                ),
                other => {
                    return Err(invalid(
                        line,
                        format!("unknown recurrence property {other}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The lines Google expects: rules first, then RDATE and EXDATE, one line per TZID/VALUE run.
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .rrules
            .iter()
            .map(|r| format!("RRULE:{}", r.to_ical()))
            .collect();
        lines.extend(
            self.exrules
                .iter()
                .map(|r| format!("EXRULE:{}", r.to_ical())),
        );
        date_lines(&mut lines, "RDATE", &self.rdates);
        date_lines(&mut lines, "EXDATE", &self.exdates);
        lines
    }

    pub fn from_series(series: &SeriesInput) -> Self {
        Self {
            rrules: series.rrules.clone(),
            exrules: series.exrules.clone(),
            rdates: series.rdates.clone(),
            exdates: series
                .exdates
                .iter()
                .cloned()
                .map(DateOrPeriod::At)
                .collect(),
        }
    }

    /// Puts these lines into a series (replacing its recurrence).
    pub fn apply_to(&self, series: &mut SeriesInput) {
        series.rrules = self.rrules.clone();
        series.exrules = self.exrules.clone();
        series.rdates = self.rdates.clone();
        series.exdates = self.exdates.iter().map(|e| e.start().clone()).collect();
    }
}

fn split_value(line: &str) -> Option<(&str, &str)> {
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

fn params_of(value: &DateOrPeriod) -> String {
    let (start, period) = match value {
        DateOrPeriod::At(at) => (at, false),
        DateOrPeriod::Period(p) => (&p.start, true),
    };
    let mut params = String::new();
    if period {
        params.push_str(";VALUE=PERIOD");
    } else if let CalDateTime::Date(_) = start {
        params.push_str(";VALUE=DATE");
    }
    if let Some(tzid) = start.tzid() {
        params.push_str(";TZID=");
        params.push_str(tzid.as_str());
    }
    params
}

fn date_lines(lines: &mut Vec<String>, name: &str, values: &[DateOrPeriod]) {
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    for v in values {
        let params = params_of(v);
        match runs.last_mut() {
            Some((p, vals)) if *p == params => vals.push(v.to_ical()),
            _ => runs.push((params, vec![v.to_ical()])),
        }
    }
    for (params, vals) in runs {
        lines.push(format!("{name}{params}:{}", vals.join(",")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_lines_round_trip() {
        let lines = [
            "RRULE:FREQ=WEEKLY;UNTIL=20110701T170000Z",
            "EXRULE:FREQ=MONTHLY;BYDAY=1MO",
            "RDATE;TZID=Europe/Berlin:20110612T090000,20110613T090000",
            "RDATE;VALUE=PERIOD:20110614T090000Z/PT1H",
            "EXDATE;VALUE=DATE:20110620",
        ];
        let parsed = GoogleRecurrence::parse(&lines).unwrap();
        assert_eq!(parsed.rdates.len(), 3);
        assert_eq!(parsed.to_lines(), lines);
        assert_eq!(GoogleRecurrence::parse(&parsed.to_lines()).unwrap(), parsed);
        assert!(GoogleRecurrence::parse(&["DTSTART:20110101T000000Z"]).is_err());
        assert!(GoogleRecurrence::parse(&["RRULE:FREQ=SOMETIMES"]).is_err());
    }
}
