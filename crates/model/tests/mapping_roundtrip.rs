//! Round trips: RRULE text, Graph patternedRecurrence ↔ RRULE, Google recurrence lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use calbridge_model::datetime::{CalDateTime, TzId};
use calbridge_model::expand::{ExpandOptions, SeriesInput, Window, expand};
use calbridge_model::mapping::google::GoogleRecurrence;
use calbridge_model::mapping::graph::{
    DayOfWeek, PatternType, PatternedRecurrence, RangeType, RecurrencePattern, RecurrenceRange,
    WeekIndex, from_rrule, to_rrule,
};
use calbridge_model::rrule::{Frequency, RRule, WeekdayNum};
use calbridge_model::tz::{TzResolver, windows_to_iana};
use jiff::civil::{Date, Weekday};
use proptest::prelude::*;

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

fn weekday() -> impl Strategy<Value = Weekday> {
    (0usize..7).prop_map(|i| WEEKDAYS[i])
}

fn distinct_days() -> impl Strategy<Value = Vec<DayOfWeek>> {
    proptest::sample::subsequence(WEEKDAYS.to_vec(), 1..=7)
        .prop_map(|v| v.into_iter().map(DayOfWeek).collect())
}

fn index() -> impl Strategy<Value = WeekIndex> {
    prop_oneof![
        Just(WeekIndex::First),
        Just(WeekIndex::Second),
        Just(WeekIndex::Third),
        Just(WeekIndex::Fourth),
        Just(WeekIndex::Last)
    ]
}

fn pattern() -> impl Strategy<Value = RecurrencePattern> {
    let base = |kind| RecurrencePattern {
        kind,
        interval: 1,
        month: 0,
        day_of_month: 0,
        days_of_week: Vec::new(),
        first_day_of_week: None,
        index: None,
    };
    prop_oneof![
        (1u32..30).prop_map(move |i| RecurrencePattern {
            interval: i,
            ..base(PatternType::Daily)
        }),
        (1u32..5, distinct_days(), weekday()).prop_map(move |(i, d, f)| RecurrencePattern {
            interval: i,
            days_of_week: d,
            first_day_of_week: Some(DayOfWeek(f)),
            ..base(PatternType::Weekly)
        }),
        (1u32..12, 1u8..=31).prop_map(move |(i, d)| RecurrencePattern {
            interval: i,
            day_of_month: d,
            ..base(PatternType::AbsoluteMonthly)
        }),
        (1u32..12, distinct_days(), index()).prop_map(move |(i, d, x)| RecurrencePattern {
            interval: i,
            days_of_week: d,
            index: Some(x),
            ..base(PatternType::RelativeMonthly)
        }),
        (1u32..4, 1u8..=12, 1u8..=28).prop_map(move |(i, m, d)| RecurrencePattern {
            interval: i,
            month: m,
            day_of_month: d,
            ..base(PatternType::AbsoluteYearly)
        }),
        (1u32..4, 1u8..=12, distinct_days(), index()).prop_map(move |(i, m, d, x)| {
            RecurrencePattern {
                interval: i,
                month: m,
                days_of_week: d,
                index: Some(x),
                ..base(PatternType::RelativeYearly)
            }
        }),
    ]
}

fn date() -> impl Strategy<Value = Date> {
    (2000i16..2040, 1i8..=12, 1i8..=28).prop_map(|(y, m, d)| Date::new(y, m, d).unwrap())
}

fn range() -> impl Strategy<Value = RecurrenceRange> {
    let zone = Some("W. Europe Standard Time".to_string());
    (date(), 0u8..3, 1u32..500, 0i32..3000).prop_map(move |(start, kind, n, days)| {
        RecurrenceRange {
            kind: [RangeType::NoEnd, RangeType::Numbered, RangeType::EndDate][usize::from(kind)],
            start_date: start,
            end_date: (kind == 2).then(|| start.checked_add(jiff::Span::new().days(days)).unwrap()),
            number_of_occurrences: (kind == 1).then_some(n),
            recurrence_time_zone: zone.clone(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn graph_to_rrule_and_back_is_identity(p in pattern(), r in range(), all_day in any::<bool>()) {
        let windows = r.recurrence_time_zone.clone().unwrap();
        let zone = jiff::tz::TimeZone::get(windows_to_iana(&windows).unwrap()).unwrap();
        let rec = PatternedRecurrence { pattern: p, range: r };
        let rule = to_rrule(&rec, &zone, all_day).unwrap();
        // The rule survives its own text form.
        prop_assert_eq!(&RRule::parse(&rule.to_ical()).unwrap(), &rule);
        let start = rec.range.start_date;
        let dtstart = if all_day {
            CalDateTime::Date(start)
        } else {
            CalDateTime::Zoned { local: start.at(9, 30, 0, 0), tzid: TzId::parse("Europe/Berlin").unwrap() }
        };
        let back = from_rrule(&rule, &dtstart, &zone, Some(&windows)).unwrap();
        prop_assert_eq!(back, rec);
    }

    #[test]
    fn rrule_text_round_trips(
        freq in 0usize..7,
        interval in 1u32..100,
        count in proptest::option::of(1u32..1000),
        hours in proptest::collection::vec(0i8..24, 0..3),
        days in proptest::collection::vec((proptest::option::of(prop_oneof![1i16..=5, -5i16..=-1]), weekday()), 0..4),
        month_days in proptest::collection::vec(prop_oneof![1i8..=31, -31i8..=-1], 0..3),
        months in proptest::collection::vec(1i8..=12, 0..3),
        set_pos in proptest::collection::vec(prop_oneof![1i16..=10, -10i16..=-1], 0..2),
        wkst in weekday(),
    ) {
        let freqs = [Frequency::Secondly, Frequency::Minutely, Frequency::Hourly, Frequency::Daily,
                     Frequency::Weekly, Frequency::Monthly, Frequency::Yearly];
        let mut rule = RRule::new(freqs[freq]);
        rule.interval = interval;
        rule.count = count;
        rule.by_hour = hours;
        rule.by_day = days.into_iter().map(|(ordinal, weekday)| WeekdayNum { ordinal, weekday }).collect();
        if rule.freq != Frequency::Weekly {
            rule.by_month_day = month_days;
        }
        rule.by_month = months;
        if !rule.by_day.is_empty() {
            rule.by_set_pos = set_pos;
        }
        rule.wkst = wkst;
        prop_assert_eq!(RRule::parse(&rule.to_ical()).unwrap(), rule);
    }

    #[test]
    fn google_lines_round_trip(p in pattern(), r in range()) {
        let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let rule = to_rrule(&PatternedRecurrence { pattern: p, range: r.clone() }, &zone, false).unwrap();
        let tz = Some("Europe/Berlin");
        let lines = vec![
            format!("RRULE:{}", rule.to_ical()),
            format!("RDATE;TZID=Europe/Berlin:{}T093000", calbridge_model::datetime::format_date(r.start_date)),
            format!("EXDATE;VALUE=DATE:{}", calbridge_model::datetime::format_date(r.start_date)),
        ];
        let parsed = GoogleRecurrence::parse(&lines).unwrap();
        prop_assert_eq!(&parsed.to_lines(), &lines);
        let mut series = SeriesInput::single(
            "g",
            CalDateTime::parse(&format!("{}T093000", calbridge_model::datetime::format_date(r.start_date)), tz, None).unwrap(),
            None,
        );
        parsed.apply_to(&mut series);
        prop_assert_eq!(GoogleRecurrence::from_series(&series).rrules, parsed.rrules);
    }
}

#[test]
fn graph_and_rrule_forms_expand_to_the_same_instances() {
    // "First Thursday or Friday of every month", from Graph's documentation shape.
    let json = r#"{"pattern":{"type":"relativeMonthly","interval":1,"daysOfWeek":["Thursday","Friday"],"index":"first"},
                   "range":{"type":"numbered","startDate":"2024-01-04","numberOfOccurrences":4,
                            "recurrenceTimeZone":"W. Europe Standard Time"}}"#;
    let rec: PatternedRecurrence = serde_json::from_str(json).unwrap();
    let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let mut series = SeriesInput::single(
        "m",
        CalDateTime::parse("20240104T100000", Some("W. Europe Standard Time"), None).unwrap(),
        None,
    );
    series.rrules.push(to_rrule(&rec, &zone, false).unwrap());
    let window = Window {
        from: "2024-01-01T00:00:00Z".parse().unwrap(),
        to: "2025-01-01T00:00:00Z".parse().unwrap(),
    };
    let got: Vec<String> = expand(
        &series,
        &TzResolver::default(),
        window,
        &ExpandOptions::default(),
    )
    .unwrap()
    .map(|o| o.unwrap().start.to_rfc3339())
    .collect();
    assert_eq!(
        got,
        [
            "2024-01-04T09:00:00Z",
            "2024-02-01T09:00:00Z",
            "2024-03-01T09:00:00Z",
            "2024-04-04T08:00:00Z"
        ]
    );
}

proptest! {
    #[test]
    fn parsers_never_panic_on_any_input(text in "\\PC{0,80}", rule_ish in "(FREQ|UNTIL|COUNT|BY[A-Z]{2,8}|WKST|INTERVAL)=[-+0-9A-Z,]{0,12}(;[A-Z]{2,8}=[-+0-9A-Z,]{0,12}){0,5}") {
        let _ = RRule::parse(&text);
        let _ = RRule::parse(&rule_ish);
        let _ = CalDateTime::parse(&text, None, None);
        let _ = CalDateTime::parse(&text, Some("Europe/Berlin"), None);
        let _ = calbridge_model::datetime::parse_date_list(&text, None, None);
        let _ = calbridge_model::datetime::IcalDuration::parse(&text);
        let _ = GoogleRecurrence::parse(&[text.as_str(), rule_ish.as_str()]);
        let _ = TzId::parse(&text).map(|t| TzResolver::default().resolve(&t));
    }
}
