#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Malformed and oversized input: every error names the line and what was expected, every limit has
//! its own kind.

use calbridge_model::Limits;
use calbridge_model::ical::{self, ParseError, ParseErrorKind};

fn err(input: &str) -> ParseError {
    ical::parse(input.as_bytes()).unwrap_err()
}

fn expected(error: &ParseError) -> &str {
    match &error.kind {
        ParseErrorKind::Syntax { expected, .. } | ParseErrorKind::InvalidValue { expected, .. } => {
            expected
        }
        other => panic!("not a syntax/value error: {other:?}"),
    }
}

const HEAD: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n";

#[test]
fn structure_errors_name_the_line_and_the_expectation() {
    let e = err(&format!(
        "{HEAD}BEGIN:VEVENT\r\nUID:1\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    ));
    assert_eq!(e.line, 6);
    assert_eq!(expected(&e), "END:VEVENT (to close the BEGIN on line 4)");

    let e = err(&format!("{HEAD}BEGIN:VEVENT\r\nUID:1\r\n"));
    assert_eq!(e.line, 5);
    assert!(expected(&e).starts_with("END:VEVENT"));
    assert!(e.to_string().contains("end of input"), "{e}");

    let e = err("VERSION:2.0\r\n");
    assert_eq!((e.line, expected(&e)), (1, "BEGIN:VCALENDAR"));

    let e = err("BEGIN:VEVENT\r\nUID:1\r\nEND:VEVENT\r\n");
    assert_eq!((e.line, expected(&e)), (1, "BEGIN:VCALENDAR"));

    let e = err("");
    assert_eq!(expected(&e), "BEGIN:VCALENDAR");

    let two = format!("{HEAD}END:VCALENDAR\r\n{HEAD}END:VCALENDAR\r\n");
    let e = err(&two);
    assert_eq!(
        (e.line, expected(&e)),
        (5, "end of input after END:VCALENDAR")
    );
    assert_eq!(
        ical::parse_all(two.as_bytes(), &Limits::DEFAULT)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn content_line_errors_name_the_line_and_the_expectation() {
    let cases: &[(&str, &str)] = &[
        (
            "SUMMARY no colon",
            "':' or ';' after the property name SUMMARY",
        ),
        (":no name", "a property name (letters, digits, '-')"),
        ("SUM_MARY:x", "':' or ';' after the property name SUM"),
        ("SUMMARY;:x", "a parameter name after ';'"),
        (
            "SUMMARY;LANGUAGE:x",
            "'=' after the parameter name LANGUAGE",
        ),
        (
            "SUMMARY;X=\"open:x",
            "a closing '\"' in the value of parameter X",
        ),
        (
            "SUMMARY;X=\"a\"b:x",
            "',', ';' or ':' after a value of parameter X",
        ),
        (
            "SUMMARY;X=a",
            "',', ';' or ':' after a value of parameter X",
        ),
    ];
    for (line, want) in cases {
        let e = err(&format!(
            "{HEAD}BEGIN:VEVENT\r\nUID:1\r\n{line}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        ));
        assert_eq!(e.line, 6, "{line}");
        assert_eq!(expected(&e), *want, "{line}");
    }
}

#[test]
fn a_folded_line_reports_the_line_it_starts_on() {
    let input = format!(
        "{HEAD}BEGIN:VEVENT\r\nUID:1\r\nDESCRIPTION:long\r\n  text\r\n  more\r\nSUMMARY\r\n  x:y\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let e = err(&input);
    assert_eq!(e.line, 9);
}

#[test]
fn value_errors_name_the_property() {
    let cases: &[(&str, &str)] = &[
        ("DTSTART:20261301T000000", "DTSTART"),
        ("DTEND;VALUE=DATE:2026-01-01", "DTEND"),
        ("DTSTART;VALUE=TEXT:x", "DTSTART"),
        ("SEQUENCE:-1", "SEQUENCE"),
        ("DURATION:1H", "DURATION"),
        ("EXDATE:20260101,20260102T100000", "EXDATE"),
        ("RECURRENCE-ID:soon", "RECURRENCE-ID"),
    ];
    for (line, property_name) in cases {
        let e = err(&format!(
            "{HEAD}BEGIN:VEVENT\r\nUID:1\r\n{line}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        ));
        assert_eq!(e.line, 6, "{line}");
        match e.kind {
            ParseErrorKind::InvalidValue { ref property, .. } => {
                assert_eq!(property, property_name)
            }
            ref other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn missing_uid_and_duplicates_are_errors() {
    let e = err(&format!(
        "{HEAD}BEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ));
    assert_eq!(e.line, 4);
    assert!(
        matches!(e.kind, ParseErrorKind::MissingProperty { ref property, .. } if property == "UID")
    );

    let event = "BEGIN:VEVENT\r\nUID:1\r\nEND:VEVENT\r\n";
    let e = err(&format!("{HEAD}{event}{event}END:VCALENDAR\r\n"));
    assert_eq!(e.line, 7);
    assert!(matches!(
        e.kind,
        ParseErrorKind::DuplicateEvent {
            recurrence_id: None,
            ..
        }
    ));

    let over = "BEGIN:VEVENT\r\nUID:1\r\nRECURRENCE-ID:20260101T100000Z\r\nEND:VEVENT\r\n";
    let e = err(&format!("{HEAD}{over}{over}END:VCALENDAR\r\n"));
    assert_eq!(e.line, 8);
    assert!(matches!(
        e.kind,
        ParseErrorKind::DuplicateEvent {
            recurrence_id: Some(_),
            ..
        }
    ));
}

#[test]
fn invalid_utf8_is_reported_on_its_line() {
    let mut input = format!("{HEAD}BEGIN:VEVENT\r\nUID:1\r\n").into_bytes();
    input.extend_from_slice(b"SUMMARY:caf\xE9\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
    let e = ical::parse(&input).unwrap_err();
    assert_eq!((e.line, e.kind), (6, ParseErrorKind::InvalidUtf8));
}

fn with(limits: Limits, input: &str) -> ParseError {
    ical::parse_with_limits(input.as_bytes(), &limits).unwrap_err()
}

#[test]
fn each_limit_has_its_own_error() {
    let ok = format!(
        "{HEAD}BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:{}\r\n {}\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        "a".repeat(60),
        "b".repeat(60)
    );
    ical::parse(ok.as_bytes()).unwrap();
    let d = Limits::DEFAULT;

    let e = with(
        Limits {
            max_object_bytes: ok.len() - 1,
            ..d
        },
        &ok,
    );
    assert_eq!(
        e.kind,
        ParseErrorKind::ObjectTooLarge {
            size: ok.len(),
            limit: ok.len() - 1
        }
    );

    // The SUMMARY is 128 octets once unfolded; each physical line alone is below the limit.
    let e = with(
        Limits {
            max_line_octets: 100,
            ..d
        },
        &ok,
    );
    assert_eq!(e.line, 6);
    assert!(
        matches!(e.kind, ParseErrorKind::LineTooLong { limit: 100, .. }),
        "{e}"
    );

    let e = with(
        Limits {
            max_components: 2,
            ..d
        },
        &ok,
    );
    assert_eq!(
        (e.line, e.kind),
        (8, ParseErrorKind::TooManyComponents { limit: 2 })
    );

    let e = with(Limits { max_depth: 2, ..d }, &ok);
    assert_eq!(
        (e.line, e.kind),
        (8, ParseErrorKind::NestingTooDeep { limit: 2 })
    );

    let e = with(
        Limits {
            max_properties_per_component: 1,
            ..d
        },
        &ok,
    );
    assert_eq!(
        (e.line, e.kind),
        (
            3,
            ParseErrorKind::TooManyProperties {
                component: "VCALENDAR".into(),
                limit: 1
            }
        )
    );
}

#[test]
fn a_line_over_the_limit_is_refused_without_reading_it_all() {
    // 10 MB of continuation lines: the reader stops as soon as the limit is passed.
    let mut input = format!("{HEAD}BEGIN:VEVENT\r\nUID:1\r\nDESCRIPTION:x\r\n");
    for _ in 0..100_000 {
        input.push(' ');
        input.push_str(&"y".repeat(98));
        input.push_str("\r\n");
    }
    let e = with(
        Limits {
            max_line_octets: 4096,
            ..Limits::DEFAULT
        },
        &input,
    );
    assert_eq!(e.line, 6);
    match e.kind {
        ParseErrorKind::LineTooLong { length, limit } => {
            assert_eq!(limit, 4096);
            assert!(length < 4096 + 200, "read {length} octets");
        }
        other => panic!("{other:?}"),
    }
}
