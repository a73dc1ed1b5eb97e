#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hand-written corpus in `tests/corpus/`, shaped like real exports: reviewed snapshots of the parsed
//! model, byte-for-byte output of untouched input, and parse → write → parse equality.

use std::path::PathBuf;

use calbridge_model::{Calendar, ical, normalized_hash};

const FILES: &[&str] = &[
    "outlook.ics",
    "google.ics",
    "apple.ics",
    "thunderbird.ics",
    "custom_vtimezone.ics",
    "allday_floating.ics",
    "nonascii_folded.ics",
    "long_series.ics",
];

fn read(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(name: &str) -> Calendar {
    ical::parse(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn untouched_input_is_written_back_byte_for_byte() {
    for name in FILES {
        let bytes = read(name);
        assert_eq!(ical::write(&parse(name)), bytes, "{name}");
    }
}

#[test]
fn parse_write_parse_is_equal_and_the_writer_reaches_a_fixed_point() {
    for name in FILES {
        let calendar = parse(name);
        let written = ical::write(&calendar.clone().without_sources());
        let text = std::str::from_utf8(&written).expect("serialized output is UTF-8");
        assert!(
            text.split("\r\n").all(|line| line.len() <= 75),
            "{name}: a line is longer than 75 octets"
        );
        let again = ical::parse(&written).unwrap_or_else(|e| panic!("{name} reparse: {e}"));
        assert_eq!(again, calendar, "{name}");
        assert_eq!(ical::write(&again.without_sources()), written, "{name}");
    }
}

#[test]
fn reserializing_keeps_every_series_hash() {
    for name in FILES {
        let calendar = parse(name);
        let again = ical::parse(&ical::write(&calendar.clone().without_sources())).unwrap();
        for (a, b) in calendar.series().iter().zip(again.series()) {
            assert_eq!(normalized_hash(a), normalized_hash(b), "{name} {}", a.uid());
        }
    }
}

#[test]
fn changing_one_series_keeps_the_others_byte_for_byte() {
    let bytes = read("google.ics");
    let mut calendar = parse("google.ics");
    let untouched: Vec<Vec<u8>> = calendar.series()[1..]
        .iter()
        .map(|s| s.source().unwrap().to_vec())
        .collect();
    let first_uid = calendar.series()[0].uid().to_owned();
    let series = calendar.series_by_uid_mut(&first_uid).unwrap();
    series.master_mut().unwrap().summary.as_mut().unwrap().value = "Stand-up (new name)".into();
    assert!(series.source().is_none());
    let out = ical::write(&calendar);
    assert_ne!(out, bytes);
    for source in untouched {
        assert!(
            out.windows(source.len()).any(|w| w == source.as_slice()),
            "an untouched series was rewritten"
        );
    }
    let again = ical::parse(&out).unwrap();
    assert_eq!(again, calendar);
    assert_eq!(
        again.series()[0].master().unwrap().summary_text(),
        Some("Stand-up (new name)")
    );
}

#[test]
fn folded_multi_octet_characters_are_joined_before_decoding() {
    let calendar = parse("nonascii_folded.ics");
    let first = calendar.series()[0].master().unwrap();
    assert_eq!(
        first.summary_text(),
        Some("週次定例会議 — 東京オフィス・大阪オフィス合同（第２四半期のロードマップ確認）")
    );
    assert_eq!(
        first.description.as_ref().unwrap().value,
        "議題:\n・売上報告\n・採用計画, 予算; その他\nパス: C:\\共有\\議事録\n終わり"
    );
    assert_eq!(
        first.category_names().collect::<Vec<_>>(),
        ["会議", "重要", "Überblick"]
    );
    let second = calendar.series()[1].master().unwrap();
    assert!(
        second
            .description
            .as_ref()
            .unwrap()
            .value
            .ends_with("όρια 75 οκτάδων.")
    );
    assert_eq!(
        calendar.property("X-WR-CALNAME").unwrap().text_value(),
        "Международный календарь 🌍"
    );
}

#[test]
fn snapshots_of_the_parsed_model() {
    for name in FILES.iter().filter(|n| **n != "long_series.ics") {
        insta::assert_debug_snapshot!(name.trim_end_matches(".ics"), parse(name));
    }
}

#[test]
fn snapshot_of_the_long_series_summary() {
    let calendar = parse("long_series.ics");
    let series = &calendar.series()[0];
    let master = series.master().unwrap();
    let cancelled = series
        .overrides()
        .iter()
        .filter(|o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.value.as_str() == "CANCELLED")
        })
        .count();
    let this_and_future: Vec<String> = series
        .overrides()
        .iter()
        .filter_map(|o| o.recurrence_id.as_ref())
        .filter(|r| r.this_and_future)
        .map(|r| r.value.to_string())
        .collect();
    let summary = format!(
        "uid: {}\nrrule: {}\nexdate properties: {}\nexdates: {}\noverrides: {}\ncancelled overrides: {}\nthis-and-future: {:?}\nfirst override: {:?}\nlast override start: {}\nhash: {}",
        series.uid(),
        master.rrule.as_ref().unwrap().value,
        master.exdates.len(),
        master.exdate_values().count(),
        series.overrides().len(),
        cancelled,
        this_and_future,
        series.overrides()[0],
        series
            .overrides()
            .last()
            .unwrap()
            .dtstart
            .as_ref()
            .unwrap()
            .value,
        normalized_hash(series),
    );
    insta::assert_snapshot!("long_series_summary", summary);
}
