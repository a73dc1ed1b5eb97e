#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `calbridge ics check` run as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn calbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_calbridge"))
}

#[test]
fn a_valid_file_prints_its_summary_and_exits_zero() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/corpus/google.ics");
    let out = calbridge()
        .args(["ics", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("ok: 1 calendar(s), 4 series, 2 override(s), 2 time zone(s)"),
        "{stdout}"
    );
}

#[test]
fn a_broken_file_prints_the_line_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("calbridge-ics-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.ics");
    std::fs::write(
        &file,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\nSUMMARY;LANGUAGE:no equals sign\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    let out = calbridge()
        .args(["ics", "check"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("broken.ics:5: error: expected '=' after the parameter name LANGUAGE"),
        "{stderr}"
    );
}

#[test]
fn a_zone_nobody_defines_is_a_warning_not_an_error() {
    let dir = std::env::temp_dir().join(format!("calbridge-ics-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("zones.ics");
    std::fs::write(
        &file,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART;TZID=Office Time:20260101T100000\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:y\r\nDTSTART;TZID=W. Europe Standard Time:20260101T100000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    let out = calbridge()
        .args(["ics", "check"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("zones.ics: warning: unknown time zone `Office Time`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("W. Europe"),
        "a Windows name resolves: {stderr}"
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("1 warning(s)")
    );
}
