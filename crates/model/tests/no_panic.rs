#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests: no input makes the reader panic, and whatever it accepts survives write → parse
//! unchanged (model equality, same hashes, untouched bytes reproduced exactly).

use calbridge_model::{Limits, ical, normalized_hash};
use proptest::prelude::*;
use proptest::sample::Index;

const CORPUS: &[&[u8]] = &[
    include_bytes!("corpus/outlook.ics"),
    include_bytes!("corpus/google.ics"),
    include_bytes!("corpus/apple.ics"),
    include_bytes!("corpus/thunderbird.ics"),
    include_bytes!("corpus/custom_vtimezone.ics"),
    include_bytes!("corpus/allday_floating.ics"),
    include_bytes!("corpus/nonascii_folded.ics"),
];

/// Fragments that sit on the reader's decision points.
const TOKENS: &[&[u8]] = &[
    b":",
    b";",
    b",",
    b"=",
    b"\"",
    b"\\",
    b"\\n",
    b"\r\n",
    b"\n",
    b"\r\n ",
    b"\r\n\t",
    b"\r",
    b"BEGIN:VEVENT\r\n",
    b"END:VEVENT\r\n",
    b"BEGIN:VALARM\r\n",
    b"END:VCALENDAR\r\n",
    b"RECURRENCE-ID:20260101T100000Z\r\n",
    b"UID:dup\r\n",
    b"TZID=",
    b"VALUE=DATE",
    b"Z",
    b"\xC3",
    b"\xA9",
    b"\xF0\x9F\x8E",
    b"\x00",
    b"\xEF\xBB\xBF",
    b"X-A;X-B=\"c,d\":e\r\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index, usize),
    Insert(Index, Vec<u8>),
    Token(Index, usize),
    Flip(Index, u8),
    DuplicateLine(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<Index>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            bytes.push(b'B');
        }
        match m {
            Mutation::Delete(i, n) => {
                let at = i.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Token(i, t) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, TOKENS[*t].iter().copied());
            }
            Mutation::Flip(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Mutation::DuplicateLine(i) => {
                let at = i.index(bytes.len());
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| at + p + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(end..end, line);
            }
        }
    }
    bytes
}

fn first_difference(a: &str, b: &str) -> (String, String) {
    let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let from = at.saturating_sub(60);
    let window = |s: &str| {
        s.chars()
            .skip(s[..from.min(s.len())].chars().count())
            .take(140)
            .collect()
    };
    (window(a), window(b))
}

/// Everything that must hold for any input.
fn check(input: &[u8]) {
    let limits = Limits::DEFAULT;
    let Ok(calendars) = ical::parse_all(input, &limits) else {
        return;
    };
    for calendar in &calendars {
        let source = calendar.source().unwrap();
        assert_eq!(ical::write(calendar), source);
        let written = ical::write(&calendar.clone().without_sources());
        let again = ical::parse(&written).unwrap_or_else(|e| {
            panic!(
                "own output rejected: {e}\n{}",
                String::from_utf8_lossy(&written)
            )
        });
        // Compared through the serialized form so a failure prints two short texts, not two models.
        let rewritten = ical::write(&again.clone().without_sources());
        assert_eq!(
            String::from_utf8_lossy(&rewritten),
            String::from_utf8_lossy(&written),
            "write → parse → write changed the output"
        );
        assert!(
            &again == calendar,
            "write → parse changed the model\nfirst: {:?}\nthen:  {:?}",
            first_difference(&format!("{calendar:?}"), &format!("{again:?}")).0,
            first_difference(&format!("{calendar:?}"), &format!("{again:?}")).1,
        );
        for (a, b) in calendar.series().iter().zip(again.series()) {
            assert_eq!(normalized_hash(a), normalized_hash(b));
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&input);
    }

    #[test]
    fn mutated_corpus_files_never_panic_and_round_trip(
        file in 0..CORPUS.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        check(&apply(CORPUS[file].to_vec(), &mutations));
    }

    #[test]
    fn token_soup_inside_an_event_never_panics_and_round_trips(
        tokens in prop::collection::vec(0..TOKENS.len(), 0..40),
        text in "[A-Za-z0-9:;,=\"\\\\ é🎉-]{0,30}",
    ) {
        let mut input = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\nX-P:".to_vec();
        input.extend_from_slice(text.as_bytes());
        for t in tokens {
            input.extend_from_slice(TOKENS[t]);
        }
        input.extend_from_slice(b"\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
        check(&input);
    }
}

#[test]
fn every_corpus_file_passes_the_property_unmutated() {
    for file in CORPUS {
        check(file);
    }
}
