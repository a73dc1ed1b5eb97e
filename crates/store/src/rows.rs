//! Conversions shared by both backends between Rust values and stored columns.

use std::str::FromStr;

use jiff::Timestamp;

use crate::error::{Result, StoreError};

/// Largest page any list call returns, whatever the caller asks.
pub(crate) const MAX_PAGE: u32 = 1000;
/// Rows per multi-row INSERT: 8 columns × 500 stays far below both backends' bind-parameter limits.
pub(crate) const INSERT_CHUNK: usize = 500;
/// Sanity bound on occurrence rows per series write; the caller bounds its horizon well below this.
pub(crate) const MAX_OCCURRENCES_PER_SERIES: usize = 100_000;

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// Now, truncated to what the store keeps, so a returned record equals the one read back later.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn ts(v: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(v)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

pub(crate) fn ots(v: Option<i64>) -> Result<Option<Timestamp>> {
    v.map(ts).transpose()
}

pub(crate) fn id<T: FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad id {s:?}")))
}

pub(crate) fn oid<T: FromStr>(s: Option<String>) -> Result<Option<T>> {
    s.as_deref().map(id).transpose()
}

pub(crate) fn parse_enum<T>(s: &str, parse: fn(&str) -> Result<T>) -> Result<T> {
    parse(s).map_err(|_| StoreError::Corrupt(format!("bad enum value {s:?}")))
}

pub(crate) fn page(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE))
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn rid_to_db(rid: &Option<String>) -> String {
    rid.clone().unwrap_or_default()
}

pub(crate) fn rid_from_db(rid: String) -> Option<String> {
    (!rid.is_empty()).then_some(rid)
}

pub(crate) fn non_empty(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

pub(crate) fn check_json(what: &str, value: &str) -> Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| StoreError::Invalid(format!("{what} is not valid JSON: {e}")))
}
