//! Fuzzes the iCalendar reader: no input may panic, and whatever it accepts must survive
//! write → parse unchanged (same model, same hashes, untouched bytes reproduced exactly).
#![no_main]

use calbridge_model::{Limits, ical, normalized_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(calendars) = ical::parse_all(input, &Limits::DEFAULT) else {
        return;
    };
    for calendar in &calendars {
        assert_eq!(Some(ical::write(calendar).as_slice()), calendar.source());
        let written = ical::write(&calendar.clone().without_sources());
        let again = match ical::parse(&written) {
            Ok(again) => again,
            Err(e) => panic!("own output rejected: {e}"),
        };
        assert!(&again == calendar, "write → parse changed the model");
        for (a, b) in calendar.series().iter().zip(again.series()) {
            assert_eq!(normalized_hash(a), normalized_hash(b));
        }
        assert_eq!(ical::write(&again.without_sources()), written);
    }
});
