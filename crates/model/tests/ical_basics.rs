#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Content-line layer, typed model and writer on small hand-written inputs.

use calbridge_model::ical::{self, ParseErrorKind};
use calbridge_model::{Limits, event::PartStat};

const SIMPLE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:a@x\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260310T093000\r\nDTEND;TZID=Europe/Berlin:20260310T100000\r\nSUMMARY;LANGUAGE=de:Kaffee\\, Kuchen\\; und\\nmehr\r\nATTENDEE;CN=\"Doe, Jane\";PARTSTAT=accepted;RSVP=TRUE;X-FOO=bar:mailto:jane@x\r\nX-CUSTOM;X-P=1:raw\\,value\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[test]
fn reads_typed_fields_and_keeps_unknown_ones() {
    let cal = ical::parse(SIMPLE.as_bytes()).unwrap();
    let series = &cal.series()[0];
    let event = series.master().unwrap();
    assert_eq!(event.summary_text(), Some("Kaffee, Kuchen; und\nmehr"));
    let summary = event.summary.as_ref().unwrap();
    assert_eq!(summary.params[0].name, "LANGUAGE");
    let attendee = &event.attendees[0];
    assert_eq!(attendee.cn.as_deref(), Some("Doe, Jane"));
    assert_eq!(attendee.partstat, Some(PartStat::Accepted));
    assert_eq!(attendee.rsvp, Some(true));
    assert_eq!(attendee.params[0].name, "X-FOO");
    assert_eq!(event.other[0].name, "X-CUSTOM");
    assert_eq!(event.other[0].value, "raw\\,value");
}

#[test]
fn untouched_calendar_is_written_byte_for_byte_and_modified_one_reparses_equal() {
    let lf = SIMPLE.replace("\r\n", "\n");
    let cal = ical::parse(lf.as_bytes()).unwrap();
    assert_eq!(ical::write(&cal), lf.as_bytes());
    let mut changed = cal.clone();
    changed
        .series_by_uid_mut("a@x")
        .unwrap()
        .master_mut()
        .unwrap()
        .summary
        .as_mut()
        .unwrap()
        .value = "Tee".into();
    let out = ical::write(&changed);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("\r\nSUMMARY;LANGUAGE=de:Tee\r\n"), "{text}");
    assert_eq!(ical::parse(&out).unwrap(), changed);
}

#[test]
fn folding_splits_only_between_characters() {
    let long = "ü".repeat(100);
    let input = format!(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\nSUMMARY:{long}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let mut cal = ical::parse(input.as_bytes()).unwrap();
    cal.properties_mut().clear();
    cal.series_by_uid_mut("u").unwrap().master_mut();
    let out = ical::write(&cal);
    let text = String::from_utf8(out.clone()).expect("folded output stays valid UTF-8");
    assert!(text.split("\r\n").all(|l| l.len() <= 75));
    let again = ical::parse(&out).unwrap();
    assert_eq!(
        again.series()[0].master().unwrap().summary_text(),
        Some(long.as_str())
    );
}

#[test]
fn errors_carry_line_and_expectation() {
    let input = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:x\nDTSTART:2026-01-01\nEND:VEVENT\nEND:VCALENDAR\n";
    let err = ical::parse(input.as_bytes()).unwrap_err();
    assert_eq!(err.line, 5);
    assert!(
        matches!(err.kind, ParseErrorKind::InvalidValue { ref property, .. } if property == "DTSTART")
    );

    let limits = Limits {
        max_depth: 2,
        ..Limits::DEFAULT
    };
    let input = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nBEGIN:VALARM\nEND:VALARM\nEND:VEVENT\nEND:VCALENDAR\n";
    let err = ical::parse_with_limits(input.as_bytes(), &limits).unwrap_err();
    assert_eq!(
        (err.line, err.kind),
        (4, ParseErrorKind::NestingTooDeep { limit: 2 })
    );
}

#[test]
fn extracting_a_series_keeps_its_zones_and_its_bytes() {
    let berlin = "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";
    let tokyo = berlin.replace("Europe/Berlin", "Asia/Tokyo");
    let input = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{berlin}{tokyo}BEGIN:VEVENT\r\nUID:a\r\nDTSTART;TZID=Asia/Tokyo:20260101T100000\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:20260101T100000Z\r\nEXDATE;TZID=Europe/Berlin:20260102T100000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let cal = ical::parse(input.as_bytes()).unwrap();
    let only_b = cal.extract_series("b").unwrap();
    assert_eq!(only_b.series().len(), 1);
    assert_eq!(only_b.timezones().len(), 1);
    assert!(only_b.timezone("Europe/Berlin").is_some());
    let out = String::from_utf8(ical::write(&only_b)).unwrap();
    assert!(out.contains("BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20260101T100000Z\r\nEXDATE;TZID=Europe/Berlin:20260102T100000\r\nEND:VEVENT\r\n"));
    assert!(!out.contains("UID:a"));
    assert_eq!(ical::parse(out.as_bytes()).unwrap(), only_b);
    assert!(cal.extract_series("missing").is_none());
}
