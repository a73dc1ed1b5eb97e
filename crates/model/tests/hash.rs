#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The normalized hash: equal for two encodings of the same series, different for every real change.

use calbridge_model::{ContentHash, ical, normalized_hash};

const BASE: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//A//A//EN\r
BEGIN:VTIMEZONE\r
TZID:Europe/Berlin\r
BEGIN:STANDARD\r
DTSTART:19701025T030000\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:series-1@example.com\r
DTSTAMP:20260101T000000Z\r
CREATED:20251201T000000Z\r
LAST-MODIFIED:20260101T000000Z\r
SEQUENCE:1\r
DTSTART;TZID=Europe/Berlin:20260302T093000\r
DTEND;TZID=Europe/Berlin:20260302T100000\r
RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10\r
EXDATE;TZID=Europe/Berlin:20260304T093000,20260309T093000\r
SUMMARY:Planning\\, weekly\r
CATEGORIES:Work,Planning\r
ORGANIZER;CN=Ann:mailto:ann@example.com\r
ATTENDEE;CN=Bob;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:mailto:bob@example.com\r
ATTENDEE;CN=Cy;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:cy@example.com\r
X-CUSTOM;X-P=1:keep me\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
TRIGGER:-PT15M\r
END:VALARM\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:series-1@example.com\r
DTSTAMP:20260101T000000Z\r
RECURRENCE-ID;TZID=Europe/Berlin:20260311T093000\r
DTSTART;TZID=Europe/Berlin:20260311T140000\r
DTEND;TZID=Europe/Berlin:20260311T143000\r
SUMMARY:Planning (afternoon)\r
END:VEVENT\r
END:VCALENDAR\r
";

/// The same series as BASE, encoded as differently as RFC 5545 allows: another PRODID, DTSTAMP,
/// LAST-MODIFIED, CREATED and SEQUENCE; no VTIMEZONE; LF line ends; lower-case names; reordered
/// properties, parameters, RRULE parts, BY-lists, categories, EXDATEs and overrides; folded lines; a
/// quoted parameter value; explicit defaults (VALUE=DATE-TIME, INTERVAL=1); upper-case MAILTO.
const SAME: &str = "BEGIN:VCALENDAR
prodid:-//Other//Other//EN
version:2.0
BEGIN:VEVENT
uid:series-1@example.com
DTSTAMP:20270606T060606Z
DTSTART;VALUE=DATE-TIME;TZID=\"Europe/Berlin\":20260311T140000
DTEND;TZID=Europe/Berlin:20260311T143000
recurrence-id;tzid=Europe/Berlin:20260311T093000
SUMMARY:Planning (afternoon)
END:VEVENT
BEGIN:VEVENT
x-custom;x-p=1:keep me
summary:Planning\\, week
 ly
Attendee;Rsvp=true;PartStat=needs-action;CN=Cy:MAILTO:cy@example.com
ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN=Bob:mailto:bob@example.com
UID:series-1@example.com
LAST-MODIFIED:20270101T000000Z
CREATED:20270101T000000Z
SEQUENCE:7
BEGIN:VALARM
TRIGGER:-PT15M
ACTION:DISPLAY
END:VALARM
CATEGORIES:Planning
CATEGORIES:Work
EXDATE;TZID=Europe/Berlin:20260309T093000
EXDATE;TZID=Europe/Berlin:20260304T093000
RRULE:COUNT=10;BYDAY=WE,MO;INTERVAL=1;FREQ=WEEKLY
ORGANIZER;CN=Ann:mailto:ann@example.com
DTEND;TZID=Europe/Berlin:20260302T100000
DTSTART;TZID=Europe/Berlin:20260302T093000
DTSTAMP:20200101T000000Z
END:VEVENT
END:VCALENDAR
";

fn hash(input: &str) -> ContentHash {
    let calendar = ical::parse(input.as_bytes()).unwrap();
    assert_eq!(calendar.series().len(), 1);
    normalized_hash(&calendar.series()[0])
}

#[test]
fn two_encodings_of_the_same_series_hash_equal() {
    let text = |input: &str| {
        let calendar = ical::parse(input.as_bytes()).unwrap();
        calbridge_model::hash::normalized_text(&calendar.series()[0])
    };
    assert_eq!(text(BASE), text(SAME));
    assert_eq!(hash(BASE), hash(SAME));
}

#[test]
fn the_hash_is_stable_text() {
    let h = hash(BASE);
    assert_eq!(ContentHash::parse(&h.to_string()).unwrap(), h);
    assert_eq!(h.to_string().len(), 64);
    assert!(ContentHash::parse("xyz").is_err());
}

#[test]
fn every_real_change_changes_the_hash() {
    let base = hash(BASE);
    let changes: &[(&str, &str)] = &[
        ("SUMMARY:Planning\\, weekly", "SUMMARY:Planning\\, weekly!"),
        ("SUMMARY:Planning\\, weekly", "SUMMARY:planning\\, weekly"),
        (
            "DTSTART;TZID=Europe/Berlin:20260302T093000",
            "DTSTART;TZID=Europe/Berlin:20260302T094500",
        ),
        (
            "DTSTART;TZID=Europe/Berlin:20260302T093000",
            "DTSTART;TZID=Europe/Paris:20260302T093000",
        ),
        (
            "DTEND;TZID=Europe/Berlin:20260302T100000",
            "DTEND;TZID=Europe/Berlin:20260302T101500",
        ),
        ("PARTSTAT=ACCEPTED", "PARTSTAT=DECLINED"),
        ("ROLE=REQ-PARTICIPANT", "ROLE=OPT-PARTICIPANT"),
        ("RSVP=TRUE", "RSVP=FALSE"),
        ("CN=Bob", "CN=Robert"),
        ("mailto:cy@example.com", "mailto:cy2@example.com"),
        (
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=11",
        ),
        (
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
            "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10",
        ),
        (
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10;INTERVAL=2",
        ),
        ("20260304T093000,20260309T093000", "20260304T093000"),
        (
            "20260304T093000,20260309T093000",
            "20260304T093000,20260316T093000",
        ),
        ("CATEGORIES:Work,Planning", "CATEGORIES:Work"),
        ("X-CUSTOM;X-P=1:keep me", "X-CUSTOM;X-P=2:keep me"),
        ("X-CUSTOM;X-P=1:keep me", "X-CUSTOM;X-P=1:keep me too"),
        ("TRIGGER:-PT15M", "TRIGGER:-PT30M"),
        ("SUMMARY:Planning (afternoon)", "SUMMARY:Planning (later)"),
        (
            "RECURRENCE-ID;TZID=Europe/Berlin:20260311T093000",
            "RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Berlin:20260311T093000",
        ),
        (
            "DTSTART;TZID=Europe/Berlin:20260311T140000",
            "DTSTART;TZID=Europe/Berlin:20260311T150000",
        ),
        ("SEQUENCE:1\r\n", "SEQUENCE:1\r\nSTATUS:CANCELLED\r\n"),
        ("SEQUENCE:1\r\n", "SEQUENCE:1\r\nTRANSP:TRANSPARENT\r\n"),
        ("SEQUENCE:1\r\n", "SEQUENCE:1\r\nLOCATION:Room 1\r\n"),
        ("SEQUENCE:1\r\n", "SEQUENCE:1\r\nCLASS:PRIVATE\r\n"),
    ];
    for (from, to) in changes {
        assert!(BASE.contains(from), "test bug: {from:?} not in BASE");
        let changed = BASE.replacen(from, to, 1);
        assert_ne!(hash(&changed), base, "{from:?} -> {to:?} went unnoticed");
    }
}

#[test]
fn dropping_an_override_or_the_alarm_changes_the_hash() {
    let base = hash(BASE);
    let start = BASE.rfind("BEGIN:VEVENT").unwrap();
    let end = BASE.rfind("END:VEVENT\r\n").unwrap() + "END:VEVENT\r\n".len();
    let without_override = format!("{}{}", &BASE[..start], &BASE[end..]);
    assert_ne!(hash(&without_override), base);
    let without_alarm = BASE.replace(
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n",
        "",
    );
    assert_ne!(hash(&without_alarm), base);
}
