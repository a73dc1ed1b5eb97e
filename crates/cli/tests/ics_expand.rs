#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `calbridge ics expand` run as a user runs it.

use std::process::Command;

const ICS: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//calbridge tests//EN\r
BEGIN:VEVENT\r
UID:standup\r
DTSTAMP:20240101T000000Z\r
DTSTART;TZID=America/New_York:20240309T023000\r
DTEND;TZID=America/New_York:20240309T030000\r
RRULE:FREQ=DAILY;COUNT=3\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:holiday\r
DTSTAMP:20240101T000000Z\r
DTSTART;VALUE=DATE:20240310\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:floating-lunch\r
DTSTAMP:20240101T000000Z\r
DTSTART:20240310T120000\r
DURATION:PT1H\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:broken-zone\r
DTSTAMP:20240101T000000Z\r
DTSTART;TZID=Nowhere/Special:20240310T120000\r
END:VEVENT\r
END:VCALENDAR\r
";

fn expand(args: &[&str]) -> (bool, String, String) {
    // A folder of its own per call: the tests run in parallel threads of one process, and a shared
    // file was rewritten under another test's running `calbridge` (a flaky partial read).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cal.ics");
    std::fs::write(&file, ICS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_calbridge"))
        .args(["ics", "expand"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn prints_sorted_tab_separated_occurrences_and_reports_the_broken_series() {
    let (ok, stdout, stderr) = expand(&[
        "--from",
        "2024-03-01T00:00:00Z",
        "--to",
        "2024-04-01T00:00:00Z",
        "--tz",
        "Europe/Berlin",
    ]);
    assert_eq!(
        stdout,
        "standup\t2024-03-09T07:30:00Z\t2024-03-09T07:30:00Z\t2024-03-09T08:00:00Z\n\
         holiday\t\t2024-03-10\t2024-03-11\n\
         standup\t2024-03-10T07:30:00Z\t2024-03-10T07:30:00Z\t2024-03-10T08:00:00Z\n\
         floating-lunch\t\t2024-03-10T11:00:00Z\t2024-03-10T12:00:00Z\n\
         standup\t2024-03-11T06:30:00Z\t2024-03-11T06:30:00Z\t2024-03-11T07:00:00Z\n"
    );
    // The series with an unknown zone is named on stderr and fails the run; the others still print.
    assert!(!ok);
    assert!(
        stderr.contains("broken-zone") && stderr.contains("Nowhere/Special"),
        "{stderr}"
    );
}

#[test]
fn the_window_is_from_inclusive_to_exclusive_and_floating_follows_tz() {
    let (_, stdout, _) = expand(&[
        "--from",
        "2024-03-10T07:30:00Z",
        "--to",
        "2024-03-10T16:00:00Z",
        "--tz",
        "America/New_York",
    ]);
    let starts: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').nth(2).unwrap())
        .collect();
    // 07:30Z is in (FROM is inclusive); the floating lunch is 12:00 New York = 16:00Z, excluded (TO is
    // exclusive); the all-day date starts at midnight New York = 05:00Z, before FROM.
    assert_eq!(starts, ["2024-03-10T07:30:00Z"]);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let (ok, _, stderr) = expand(&["--from", "yesterday", "--to", "2024-04-01"]);
    assert!(!ok);
    assert!(stderr.contains("--from"), "{stderr}");
}
