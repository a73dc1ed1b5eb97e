//! The normalized content hash of an event series: what later decides whether an event changed.
//!
//! The hash is SHA-256 over [`normalized_text`], a canonical text built from the typed model, so every
//! difference the reader already absorbs (line folding, CRLF vs LF, property/parameter name case,
//! escaping style, `VALUE=DATE-TIME` written or implied, quoted or bare parameter values) is gone before
//! hashing. On top of that:
//!
//! **Ignored** (not content, or order without meaning):
//! - `DTSTAMP`, `LAST-MODIFIED`, `CREATED` and `SEQUENCE`: revision metadata that servers rewrite on
//!   every store; SEQUENCE is a counter of changes, not a change itself. (`PRODID` and VTIMEZONEs live at
//!   calendar level and never enter a series hash, so their presence and order do not matter.)
//! - The order of properties, of parameters, of the values of a parameter (every multi-valued parameter
//!   of RFC 5545 — MEMBER, DELEGATED-TO, DELEGATED-FROM — is a set of addresses), of VALARMs, and of
//!   overrides in the file.
//! - How `CATEGORIES`, `RESOURCES`, `EXDATE` and `RDATE` values are spread over properties and their order
//!   and repetitions: `CATEGORIES:a,b` = `CATEGORIES:b` + `CATEGORIES:a`. They are sets in RFC 5545.
//! - In `RRULE`: part order, case, the order inside BY-lists (sets), and the defaults `INTERVAL=1` and
//!   `WKST=MO`.
//! - The case of keyword parameter values (PARTSTAT, ROLE, RSVP, CUTYPE, RANGE, RELATED, FBTYPE, VALUE,
//!   ENCODING, RELTYPE) and of `mailto:` addresses in ORGANIZER and ATTENDEE (providers lower-case them).
//!
//! **Not ignored** (real changes): every other property and parameter, including SUMMARY, DESCRIPTION,
//! LOCATION, times and their TZID, STATUS, TRANSP, CLASS, attendees and their PARTSTAT/ROLE/RSVP/CN,
//! organizer, RRULE parts, RDATE/EXDATE sets, RECURRENCE-ID and RANGE, alarms, X- properties (value as
//! written).
//!
//! **Not normalized** (would need time-zone resolution or guessing intent): `DTEND` vs an equivalent
//! `DURATION`; a TZID written as a Windows name vs its IANA equivalent; `Z` vs `TZID=UTC`; the escaping
//! inside unknown X- properties (their value type is unknown, so the text is compared as written).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::calendar::EventSeries;
use crate::component::{Component, Property};

/// A SHA-256 content hash, shown and parsed as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a content hash is 64 hex digits, found {0:?}")]
pub struct InvalidContentHash(String);

impl ContentHash {
    /// Reads the 64-hex-digit form.
    pub fn parse(hex_text: &str) -> Result<ContentHash, InvalidContentHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut bytes)
            .map_err(|_| InvalidContentHash(hex_text.to_owned()))?;
        Ok(ContentHash(bytes))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ContentHash::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The normalized content hash of a series (see the module documentation for exactly what it ignores).
pub fn normalized_hash(series: &EventSeries) -> ContentHash {
    ContentHash(Sha256::digest(normalized_text(series).as_bytes()).into())
}

/// Properties that never enter the hash.
const IGNORED: &[&str] = &["DTSTAMP", "LAST-MODIFIED", "CREATED", "SEQUENCE", "PRODID"];
/// Properties whose comma-separated values form a set.
const SET_VALUED: &[&str] = &["CATEGORIES", "RESOURCES", "EXDATE", "RDATE"];
/// Parameters whose values are case-insensitive keywords.
const KEYWORD_PARAMS: &[&str] = &[
    "PARTSTAT", "ROLE", "RSVP", "CUTYPE", "RANGE", "RELATED", "FBTYPE", "VALUE", "ENCODING",
    "RELTYPE",
];

/// The canonical text the hash is computed over: one block per event (master first, overrides sorted),
/// each a sorted list of canonical property lines followed by its sorted sub-component blocks.
pub fn normalized_text(series: &EventSeries) -> String {
    let mut master = Vec::new();
    let mut overrides = Vec::new();
    if let Some(event) = series.master() {
        master.push(canonical_component(&event.to_component()));
    }
    for event in series.overrides() {
        overrides.push(canonical_component(&event.to_component()));
    }
    overrides.sort();
    let mut out = String::from("SERIES\n");
    for block in master.into_iter().chain(overrides) {
        out.push_str(&block);
    }
    out
}

fn canonical_component(component: &Component) -> String {
    let mut lines: Vec<String> = component
        .properties
        .iter()
        .flat_map(canonical_property_lines)
        .collect();
    lines.sort();
    // A set: repeating a category or an EXDATE does not change it. Other repeated lines are rare and
    // meaningless twice, so collapsing them too keeps the rule simple.
    lines.dedup();
    let mut children: Vec<String> = component
        .components
        .iter()
        .map(canonical_component)
        .collect();
    children.sort();
    let mut out = format!("BEGIN:{}\n", component.name);
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    for child in children {
        out.push_str(&child);
    }
    out.push_str(&format!("END:{}\n", component.name));
    out
}

/// The canonical lines of one property, as they enter the hash: none for revision metadata, one per value
/// for set-valued properties, one otherwise. The sync crate compares and merges series by these lines.
pub fn canonical_property_lines(property: &Property) -> Vec<String> {
    if IGNORED.contains(&property.name.as_str()) {
        return Vec::new();
    }
    let head = canonical_head(property);
    if SET_VALUED.contains(&property.name.as_str()) {
        split_unescaped_commas(&property.value)
            .into_iter()
            .map(|value| format!("{head}:{value}"))
            .collect()
    } else {
        vec![format!("{head}:{}", canonical_value(property))]
    }
}

/// The canonical text of a whole component (properties sorted, sub-components sorted), as in the hash.
pub fn canonical_component_text(component: &Component) -> String {
    canonical_component(component)
}

fn canonical_head(property: &Property) -> String {
    let mut params: Vec<String> = property
        .params
        .iter()
        .map(|param| {
            let keyword = KEYWORD_PARAMS.contains(&param.name.as_str());
            let mut values: Vec<String> = param
                .values
                .iter()
                .map(|v| {
                    if keyword {
                        v.to_ascii_uppercase()
                    } else if is_mailto(v) {
                        v.to_lowercase()
                    } else {
                        v.clone()
                    }
                })
                .collect();
            values.sort();
            // Quoting is syntax, so values are written quoted uniformly to keep ',' inside one value.
            let joined: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
            format!("{}={}", param.name, joined.join(","))
        })
        .collect();
    params.sort();
    let mut head = property.name.clone();
    for param in params {
        head.push(';');
        head.push_str(&param);
    }
    head
}

fn canonical_value(property: &Property) -> String {
    match property.name.as_str() {
        "RRULE" | "EXRULE" => canonical_rrule(&property.value),
        "ORGANIZER" | "ATTENDEE" if is_mailto(property.value.trim()) => {
            property.value.trim().to_lowercase()
        }
        _ => property.value.clone(),
    }
}

fn is_mailto(value: &str) -> bool {
    value
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
}

fn canonical_rrule(value: &str) -> String {
    let mut parts: Vec<String> = value
        .split(';')
        .filter(|part| !part.trim().is_empty())
        .filter_map(|part| {
            let (key, values) = part.split_once('=').unwrap_or((part, ""));
            let key = key.trim().to_ascii_uppercase();
            let values = values.trim().to_ascii_uppercase();
            if (key == "INTERVAL" && values == "1") || (key == "WKST" && values == "MO") {
                return None;
            }
            if key.starts_with("BY") {
                let mut list: Vec<&str> = values.split(',').map(str::trim).collect();
                // "+1MO" and "1MO" are the same ordinal.
                let mut list: Vec<String> = list
                    .drain(..)
                    .map(|v| v.strip_prefix('+').unwrap_or(v).to_owned())
                    .collect();
                list.sort();
                list.dedup();
                return Some(format!("{key}={}", list.join(",")));
            }
            Some(format!("{key}={values}"))
        })
        .collect();
    parts.sort();
    parts.join(";")
}

fn split_unescaped_commas(raw: &str) -> Vec<&str> {
    let bytes = raw.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => {
                parts.push(&raw[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    parts.push(raw.get(start..).unwrap_or(""));
    parts
}
