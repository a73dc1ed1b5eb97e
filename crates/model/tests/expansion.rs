//! Expansion at DST edges, bounded expansion, overrides, and iCalendar → occurrences end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use calbridge_model::datetime::{CalDateTime, DateOrPeriod, IcalDuration, Period, PeriodEnd};
use calbridge_model::expand::{
    ExpandError, ExpandOptions, Occurrence, OccurrenceTime, OverrideInput, SeriesEnd, SeriesInput,
    Window, expand,
};
use calbridge_model::occurrences::{calendar_resolver, series_occurrences};
use calbridge_model::rrule::RRule;
use calbridge_model::tz::TzResolver;
use calbridge_model::{IterLimits, RuleIterError};

fn cal(value: &str, tzid: Option<&str>) -> CalDateTime {
    CalDateTime::parse(value, tzid, None).unwrap()
}

fn window(from: &str, to: &str) -> Window {
    Window {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
    }
}

fn all(series: &SeriesInput, w: Window, options: &ExpandOptions) -> Vec<Occurrence> {
    expand(series, &TzResolver::default(), w, options)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn starts(series: &SeriesInput, w: Window) -> Vec<String> {
    all(series, w, &ExpandOptions::default())
        .iter()
        .map(|o| o.start.to_rfc3339())
        .collect()
}

fn daily(dtstart: &str, tz: &str, count: u32) -> SeriesInput {
    let mut s = SeriesInput::single("s", cal(dtstart, Some(tz)), None);
    s.rrules
        .push(RRule::parse(&format!("FREQ=DAILY;COUNT={count}")).unwrap());
    s
}

const WIDE: (&str, &str) = ("2000-01-01T00:00:00Z", "2040-01-01T00:00:00Z");

#[test]
fn new_york_0230_on_the_spring_forward_day_takes_the_offset_before_the_gap() {
    // 2024-03-10 02:00 EST → 03:00 EDT. 02:30 does not exist; RFC 5545 §3.3.5: read with the offset
    // before the gap (EST), i.e. 07:30Z = 03:30 EDT. The next day 02:30 EDT = 06:30Z.
    let s = daily("20240309T023000", "America/New_York", 3);
    assert_eq!(
        starts(&s, window(WIDE.0, WIDE.1)),
        [
            "2024-03-09T07:30:00Z",
            "2024-03-10T07:30:00Z",
            "2024-03-11T06:30:00Z"
        ]
    );
}

#[test]
fn berlin_fall_back_ambiguous_time_takes_the_first_occurrence() {
    // 2024-10-27 03:00 CEST → 02:00 CET: 02:30 happens twice; the first (CEST, 00:30Z) is meant.
    let s = daily("20241026T023000", "Europe/Berlin", 3);
    assert_eq!(
        starts(&s, window(WIDE.0, WIDE.1)),
        [
            "2024-10-26T00:30:00Z",
            "2024-10-27T00:30:00Z",
            "2024-10-28T01:30:00Z"
        ]
    );
}

#[test]
fn lord_howe_half_hour_dst() {
    // Lord Howe moves +10:30 → +11:00 at 02:00 on the first Sunday of October (2024-10-06): 02:15 is in
    // the half-hour gap and reads as +10:30 (15:45Z the day before). It moves back at 02:00 +11 → 01:30
    // +10:30 on the first Sunday of April (2024-04-07): 01:45 happens twice, the first is +11 (14:45Z).
    let spring = daily("20241005T021500", "Australia/Lord_Howe", 3);
    assert_eq!(
        starts(&spring, window(WIDE.0, WIDE.1)),
        [
            "2024-10-04T15:45:00Z",
            "2024-10-05T15:45:00Z",
            "2024-10-06T15:15:00Z"
        ]
    );
    let autumn = daily("20240406T014500", "Australia/Lord_Howe", 3);
    assert_eq!(
        starts(&autumn, window(WIDE.0, WIDE.1)),
        [
            "2024-04-05T14:45:00Z",
            "2024-04-06T14:45:00Z",
            "2024-04-07T15:15:00Z"
        ]
    );
}

#[test]
fn apia_skips_2011_12_30_entirely() {
    // Samoa jumped from UTC-10 to UTC+14 at the end of 2011-12-29: the whole of 2011-12-30 is a gap and
    // reads with the offset before it (-10). 09:00 on the 30th is therefore the same instant as 09:00 on
    // the 31st (+14), and a recurrence set counts that instant once (RFC 5545 §3.8.5.3).
    let s = daily("20111229T090000", "Pacific/Apia", 4);
    assert_eq!(
        starts(&s, window(WIDE.0, WIDE.1)),
        [
            "2011-12-29T19:00:00Z",
            "2011-12-30T19:00:00Z",
            "2011-12-31T19:00:00Z"
        ]
    );
}

#[test]
fn exdate_in_the_skipped_hour_removes_the_instance_and_does_not_extend_count() {
    let mut s = daily("20240309T023000", "America/New_York", 3);
    s.exdates
        .push(cal("20240310T023000", Some("America/New_York")));
    assert_eq!(
        starts(&s, window(WIDE.0, WIDE.1)),
        ["2024-03-09T07:30:00Z", "2024-03-11T06:30:00Z"]
    );
}

#[test]
fn dtend_keeps_the_exact_length_and_duration_the_nominal_one_across_dst() {
    // Daily 12:00 Berlin, DTEND 12:00 the next day: across the spring-forward night that first instance
    // lasts 23 real hours, and DTEND means every instance lasts exactly that (RFC 5545 §3.8.5.3). With
    // DURATION:P1D each instance instead ends at 12:00 local the next day.
    let ends = |end: SeriesEnd| -> Vec<String> {
        let mut s = daily("20240330T120000", "Europe/Berlin", 2);
        s.end = Some(end);
        all(&s, window(WIDE.0, WIDE.1), &ExpandOptions::default())
            .iter()
            .map(|o| o.end.to_rfc3339())
            .collect()
    };
    assert_eq!(
        ends(SeriesEnd::End(cal(
            "20240331T120000",
            Some("Europe/Berlin")
        ))),
        ["2024-03-31T10:00:00Z", "2024-04-01T09:00:00Z"]
    );
    assert_eq!(
        ends(SeriesEnd::Duration(IcalDuration::parse("P1D").unwrap())),
        ["2024-03-31T10:00:00Z", "2024-04-01T10:00:00Z"]
    );
}

#[test]
fn floating_series_follow_the_reader_zone_and_all_day_series_stay_dates() {
    let mut floating = SeriesInput::single("f", cal("20240309T023000", None), None);
    floating
        .rrules
        .push(RRule::parse("FREQ=DAILY;COUNT=2").unwrap());
    let ny = ExpandOptions {
        floating_zone: jiff::tz::TimeZone::get("America/New_York").unwrap(),
        ..ExpandOptions::default()
    };
    let got: Vec<String> = all(&floating, window(WIDE.0, WIDE.1), &ny)
        .iter()
        .map(|o| o.start.to_rfc3339())
        .collect();
    assert_eq!(got, ["2024-03-09T07:30:00Z", "2024-03-10T07:30:00Z"]);
    let utc: Vec<String> = all(&floating, window(WIDE.0, WIDE.1), &ExpandOptions::default())
        .iter()
        .map(|o| o.start.to_rfc3339())
        .collect();
    assert_eq!(utc, ["2024-03-09T02:30:00Z", "2024-03-10T02:30:00Z"]);

    let mut all_day = SeriesInput::single(
        "d",
        CalDateTime::parse("20240229", None, None).unwrap(),
        Some(SeriesEnd::End(
            CalDateTime::parse("20240301", None, None).unwrap(),
        )),
    );
    all_day
        .rrules
        .push(RRule::parse("FREQ=YEARLY;COUNT=3").unwrap());
    let got = all(&all_day, window(WIDE.0, WIDE.1), &ExpandOptions::default());
    let got: Vec<(String, String)> = got
        .iter()
        .map(|o| (o.start.to_rfc3339(), o.end.to_rfc3339()))
        .collect();
    // Feb 29 exists only in leap years: the invalid dates are skipped, not moved.
    assert_eq!(
        got,
        [
            ("2024-02-29".to_string(), "2024-03-01".to_string()),
            ("2028-02-29".to_string(), "2028-03-01".to_string()),
            ("2032-02-29".to_string(), "2032-03-01".to_string()),
        ]
    );
}

#[test]
fn rdate_periods_keep_their_own_length_and_exdate_wins_over_rdate() {
    let mut s = SeriesInput::single(
        "r",
        cal("20240101T090000Z", None),
        Some(SeriesEnd::Duration(IcalDuration::parse("PT1H").unwrap())),
    );
    s.rdates.push(DateOrPeriod::Period(Period {
        start: cal("20240105T100000Z", None),
        end: PeriodEnd::Duration(IcalDuration::parse("PT3H").unwrap()),
    }));
    s.rdates
        .push(DateOrPeriod::At(cal("20240107T100000Z", None)));
    s.exdates.push(cal("20240107T100000Z", None));
    let got = all(&s, window(WIDE.0, WIDE.1), &ExpandOptions::default());
    let got: Vec<(String, String)> = got
        .iter()
        .map(|o| (o.start.to_rfc3339(), o.end.to_rfc3339()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "2024-01-01T09:00:00Z".to_string(),
                "2024-01-01T10:00:00Z".to_string()
            ),
            (
                "2024-01-05T10:00:00Z".to_string(),
                "2024-01-05T13:00:00Z".to_string()
            ),
        ]
    );
}

#[test]
fn overrides_replace_instances_and_thisandfuture_shifts_the_rest() {
    let mut s = daily("20240101T090000", "Europe/Berlin", 5);
    s.end = Some(SeriesEnd::Duration(IcalDuration::parse("PT1H").unwrap()));
    s.overrides.push(OverrideInput {
        recurrence_id: cal("20240102T090000", Some("Europe/Berlin")),
        this_and_future: false,
        start: cal("20240102T150000", Some("Europe/Berlin")),
        end: None,
        cancelled: false,
    });
    s.overrides.push(OverrideInput {
        recurrence_id: cal("20240103T090000", Some("Europe/Berlin")),
        this_and_future: true,
        start: cal("20240103T100000", Some("Europe/Berlin")),
        end: Some(SeriesEnd::Duration(IcalDuration::parse("PT30M").unwrap())),
        cancelled: false,
    });
    let got = all(&s, window(WIDE.0, WIDE.1), &ExpandOptions::default());
    let got: Vec<(String, String, String, bool)> = got
        .iter()
        .map(|o| {
            (
                o.recurrence_id.unwrap().to_rfc3339(),
                o.start.to_rfc3339(),
                o.end.to_rfc3339(),
                o.is_override,
            )
        })
        .collect();
    let row = |r: &str, s: &str, e: &str, o: bool| (r.to_string(), s.to_string(), e.to_string(), o);
    assert_eq!(
        got,
        [
            row(
                "2024-01-01T08:00:00Z",
                "2024-01-01T08:00:00Z",
                "2024-01-01T09:00:00Z",
                false
            ),
            row(
                "2024-01-02T08:00:00Z",
                "2024-01-02T14:00:00Z",
                "2024-01-02T15:00:00Z",
                true
            ),
            row(
                "2024-01-03T08:00:00Z",
                "2024-01-03T09:00:00Z",
                "2024-01-03T09:30:00Z",
                true
            ),
            row(
                "2024-01-04T08:00:00Z",
                "2024-01-04T09:00:00Z",
                "2024-01-04T09:30:00Z",
                true
            ),
            row(
                "2024-01-05T08:00:00Z",
                "2024-01-05T09:00:00Z",
                "2024-01-05T09:30:00Z",
                true
            ),
        ]
    );
    // A cancelled override removes its instance.
    s.overrides[0].cancelled = true;
    assert_eq!(
        all(&s, window(WIDE.0, WIDE.1), &ExpandOptions::default()).len(),
        4
    );
}

#[test]
fn an_endless_secondly_rule_is_lazy() {
    let mut s = SeriesInput::single("s", cal("20000101T000000Z", None), None);
    s.rrules.push(RRule::parse("FREQ=SECONDLY").unwrap());
    let started = Instant::now();
    let it = expand(
        &s,
        &TzResolver::default(),
        window("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"),
        &ExpandOptions::default(),
    )
    .unwrap();
    assert_eq!(it.take(100_000).count(), 100_000);
    // Far from DTSTART, without COUNT, expansion jumps straight to the window.
    let got = starts(&s, window("2039-12-31T23:59:58Z", "2040-01-01T00:00:00Z"));
    assert_eq!(got, ["2039-12-31T23:59:58Z", "2039-12-31T23:59:59Z"]);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_rule_without_any_instance_ends_with_a_clear_error() {
    for rule in [
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=4,6,9,11",
        "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=31",
    ] {
        let mut s = SeriesInput::single("x", cal("20240101T000000Z", None), None);
        s.rrules.push(RRule::parse(rule).unwrap());
        let started = Instant::now();
        let results: Vec<Result<Occurrence, ExpandError>> = expand(
            &s,
            &TzResolver::default(),
            window("2024-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),
            &ExpandOptions::default(),
        )
        .unwrap()
        .collect();
        // The rule gives up with an error naming it, not a hang and not an endless stream.
        assert!(results.len() <= 2, "{rule}");
        assert!(
            matches!(
                results.last(),
                Some(Err(ExpandError::Rule(RuleIterError::NoMatch { .. })))
            ),
            "{rule}: {results:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{rule}");
    }
}

#[test]
fn the_total_work_of_a_rule_is_capped() {
    let mut s = SeriesInput::single("x", cal("20240101T000000Z", None), None);
    s.rrules
        .push(RRule::parse("FREQ=SECONDLY;COUNT=4000000000").unwrap());
    let options = ExpandOptions {
        limits: IterLimits {
            max_empty_periods: 1000,
            max_periods: 50_000,
        },
        ..ExpandOptions::default()
    };
    let results: Vec<_> = expand(
        &s,
        &TzResolver::default(),
        window("2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"),
        &options,
    )
    .unwrap()
    .collect();
    assert!(matches!(
        results.last(),
        Some(Err(ExpandError::Rule(
            RuleIterError::TooManyIterations { .. }
        )))
    ));
}

const CUSTOM_ZONE_ICS: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//calbridge tests//EN\r
BEGIN:VTIMEZONE\r
TZID:Customized Time Zone\r
BEGIN:STANDARD\r
DTSTART:16010101T030000\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:16010101T020000\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r
END:DAYLIGHT\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:weekly-standup\r
DTSTAMP:20240101T000000Z\r
DTSTART;TZID=Customized Time Zone:20240325T093000\r
DTEND;TZID=Customized Time Zone:20240325T100000\r
RRULE:FREQ=WEEKLY;COUNT=3\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:weekly-standup\r
DTSTAMP:20240101T000000Z\r
RECURRENCE-ID;TZID=Customized Time Zone:20240401T093000\r
DTSTART;TZID=Customized Time Zone:20240401T110000\r
DTEND;TZID=Customized Time Zone:20240401T113000\r
END:VEVENT\r
END:VCALENDAR\r
";

#[test]
fn a_vtimezone_only_zone_is_evaluated_from_its_rules() {
    let calendar = calbridge_model::ical::parse(CUSTOM_ZONE_ICS.as_bytes()).unwrap();
    let (resolver, errors) = calendar_resolver(&calendar);
    assert!(errors.is_empty(), "{errors:?}");
    let options = ExpandOptions::default();
    let series = &calendar.series()[0];
    let got: Vec<(String, String, bool)> =
        series_occurrences(series, &resolver, window(WIDE.0, WIDE.1), &options)
            .unwrap()
            .map(|o| {
                let o = o.unwrap();
                (
                    o.recurrence_id.map(|r| r.to_rfc3339()).unwrap_or_default(),
                    o.start.to_rfc3339(),
                    o.is_override,
                )
            })
            .collect();
    // March 25 is before the EU change (CET, +1); April 1 and 8 are after it (CEST, +2).
    assert_eq!(
        got,
        [
            (
                "2024-03-25T08:30:00Z".to_string(),
                "2024-03-25T08:30:00Z".to_string(),
                false
            ),
            (
                "2024-04-01T07:30:00Z".to_string(),
                "2024-04-01T09:00:00Z".to_string(),
                true
            ),
            (
                "2024-04-08T07:30:00Z".to_string(),
                "2024-04-08T07:30:00Z".to_string(),
                false
            ),
        ]
    );
}

#[test]
fn an_unknown_tzid_without_vtimezone_is_a_clear_error() {
    let ics = CUSTOM_ZONE_ICS.replace("TZID:Customized Time Zone\r\n", "TZID:Something Else\r\n");
    let calendar = calbridge_model::ical::parse(ics.as_bytes()).unwrap();
    let (resolver, _) = calendar_resolver(&calendar);
    let options = ExpandOptions::default();
    let err = series_occurrences(
        &calendar.series()[0],
        &resolver,
        window(WIDE.0, WIDE.1),
        &options,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("unknown time zone `Customized Time Zone`"),
        "{err}"
    );
}

#[test]
fn a_non_recurring_event_has_no_recurrence_id() {
    let s = SeriesInput::single("one", cal("20240101T090000Z", None), None);
    let got = all(&s, window(WIDE.0, WIDE.1), &ExpandOptions::default());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recurrence_id, None);
    assert_eq!(
        got[0].start,
        OccurrenceTime::At("2024-01-01T09:00:00Z".parse().unwrap())
    );
}

#[test]
fn instances_after_a_gap_come_out_in_instant_order_and_none_is_lost() {
    // 2010-10-03 is Lord Howe's spring-forward day (02:00 → 02:30). 02:15 is in the gap and resolves to
    // +10:30 (15:45Z), later than 02:30 at +11 (15:30Z): both instances are kept, in instant order.
    let mut s = SeriesInput::single(
        "lh",
        cal("20101002T021500", Some("Australia/Lord_Howe")),
        None,
    );
    s.rrules
        .push(RRule::parse("FREQ=DAILY;BYHOUR=2;BYMINUTE=15,30;COUNT=4").unwrap());
    assert_eq!(
        starts(&s, window(WIDE.0, WIDE.1)),
        [
            "2010-10-01T15:45:00Z",
            "2010-10-01T16:00:00Z",
            "2010-10-02T15:30:00Z",
            "2010-10-02T15:45:00Z"
        ]
    );
    // Apia's skipped day: 13:00 on 2011-12-30 (-10 → 23:00Z) is later than 04:00 and 09:00 on the 31st.
    let mut a = SeriesInput::single("apia", cal("20111230T130000", Some("Pacific/Apia")), None);
    a.rrules
        .push(RRule::parse("FREQ=HOURLY;INTERVAL=5;BYHOUR=4,9,13;COUNT=3").unwrap());
    assert_eq!(
        starts(&a, window(WIDE.0, WIDE.1)),
        [
            "2011-12-30T14:00:00Z",
            "2011-12-30T19:00:00Z",
            "2011-12-30T23:00:00Z"
        ]
    );
}

#[test]
fn byweekno_counts_days_of_weeks_that_straddle_new_year() {
    // ISO-style weeks (RFC 5545 §3.3.10): 2022-01-02 (Sunday) is in week 52 of 2021, 2018-12-31 (Monday)
    // in week 1 of 2019, which is also week -52 of that 52-week year. These are the two places where
    // python-dateutil differs (listed in scripts/differential-dateutil-allowed.txt).
    let mut s = SeriesInput::single("w", cal("20211227T100000Z", None), None);
    s.rrules
        .push(RRule::parse("FREQ=YEARLY;BYWEEKNO=52;BYDAY=SU;COUNT=2").unwrap());
    assert_eq!(
        starts(&s, window(WIDE.0, WIDE.1)),
        ["2021-12-27T10:00:00Z", "2022-01-02T10:00:00Z"]
    );
    let mut n = SeriesInput::single("n", cal("20180101T100000Z", None), None);
    n.rrules
        .push(RRule::parse("FREQ=YEARLY;BYWEEKNO=-52;BYDAY=MO;COUNT=3").unwrap());
    assert_eq!(
        starts(&n, window(WIDE.0, WIDE.1)),
        // 2020 has 53 weeks, so its week -52 is week 2 (Monday January 6).
        [
            "2018-01-01T10:00:00Z",
            "2018-12-31T10:00:00Z",
            "2020-01-06T10:00:00Z"
        ]
    );
}
