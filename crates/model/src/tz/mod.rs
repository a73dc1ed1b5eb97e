//! Time zone resolution: from a TZID as written to rules jiff can evaluate.
//!
//! Order of lookup (first hit wins):
//! 1. `UTC`, `GMT`, `Z`, `Etc/UTC` and friends → UTC;
//! 2. an IANA name or legacy alias known to the bundled tzdb (`Europe/Berlin`, `Asia/Calcutta`,
//!    `US/Eastern`), case-insensitively;
//! 3. a Windows zone name (`W. Europe Standard Time`) → the CLDR territory-001 IANA zone;
//! 4. the calendar's own VTIMEZONE with that TZID (Outlook's "Customized Time Zone", vendor ids);
//! 5. a path-prefixed IANA name (`/mozilla.org/20050126_1/Europe/Berlin`) → its IANA tail.
//!
//! A known name beats the calendar's VTIMEZONE of the same TZID: embedded definitions are often cut down
//! to the current year's rule and go stale, while the tzdb carries history and future changes. The
//! VTIMEZONE is the authority only for identifiers the tzdb and CLDR do not know.

mod vtimezone;
mod windows_table;

use std::collections::HashMap;
use std::sync::OnceLock;

use jiff::tz::TimeZone;

use crate::datetime::TzId;

pub use vtimezone::{Observance, ObservanceKind, VTimezone};

/// Why a TZID could not be turned into rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TzError {
    #[error(
        "unknown time zone `{0}`: not an IANA or Windows name and no VTIMEZONE in the calendar defines it"
    )]
    Unknown(String),
    #[error("VTIMEZONE `{tzid}` cannot be evaluated: {why}")]
    InvalidVTimezone { tzid: String, why: String },
}

/// Where a resolved zone's rules came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    Utc,
    Iana,
    Windows,
    VTimezone,
}

/// A zone with the rules to evaluate it.
#[derive(Debug, Clone)]
pub struct ResolvedZone {
    pub zone: TimeZone,
    pub source: ZoneSource,
    /// The IANA name when the tzdb supplied the rules.
    pub iana: Option<String>,
}

/// Resolves TZIDs against the tzdb, CLDR and the VTIMEZONEs of one calendar.
#[derive(Debug, Clone, Default)]
pub struct TzResolver {
    /// Each definition with its evaluated zone, built on first use (a VTIMEZONE is evaluated once per
    /// calendar, not once per date that names it).
    definitions: HashMap<String, (VTimezone, OnceLock<Result<TimeZone, TzError>>)>,
}

impl TzResolver {
    /// A resolver that knows the given calendar's VTIMEZONE definitions.
    pub fn new(definitions: impl IntoIterator<Item = VTimezone>) -> Self {
        Self {
            definitions: definitions
                .into_iter()
                .map(|d| (d.tzid.as_str().to_string(), (d, OnceLock::new())))
                .collect(),
        }
    }

    pub fn resolve(&self, tzid: &TzId) -> Result<ResolvedZone, TzError> {
        let name = tzid.as_str().trim();
        if is_utc_name(name) {
            return Ok(ResolvedZone {
                zone: TimeZone::UTC,
                source: ZoneSource::Utc,
                iana: Some("Etc/UTC".into()),
            });
        }
        if let Some(found) = iana(name) {
            return Ok(found);
        }
        if let Some(target) = windows_to_iana(name)
            && let Some(mut found) = iana(target)
        {
            found.source = ZoneSource::Windows;
            return Ok(found);
        }
        if let Some((def, zone)) = self.definitions.get(name) {
            return Ok(ResolvedZone {
                zone: zone.get_or_init(|| def.to_time_zone()).clone()?,
                source: ZoneSource::VTimezone,
                iana: None,
            });
        }
        // Vendor-prefixed ids carry the IANA name as their tail.
        let segments: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        for start in 1..segments.len().saturating_sub(1) {
            if let Some(found) = iana(&segments[start..].join("/")) {
                return Ok(found);
            }
        }
        Err(TzError::Unknown(name.to_string()))
    }
}

fn is_utc_name(name: &str) -> bool {
    [
        "UTC",
        "GMT",
        "Z",
        "Etc/UTC",
        "Etc/GMT",
        "Etc/Zulu",
        "Zulu",
        "UCT",
        "Etc/UCT",
        "Universal",
    ]
    .iter()
    .any(|u| u.eq_ignore_ascii_case(name))
}

fn iana(name: &str) -> Option<ResolvedZone> {
    let zone = TimeZone::get(name).ok()?;
    let iana = zone.iana_name().map(str::to_string);
    Some(ResolvedZone {
        zone,
        source: ZoneSource::Iana,
        iana: iana.or_else(|| Some(name.to_string())),
    })
}

/// The tzdb canonical name of a link (`Asia/Calcutta` → `Asia/Kolkata`); other names unchanged.
pub fn canonical_iana(name: &str) -> &str {
    match windows_table::TZDB_LINKS.binary_search_by(|(link, _)| (*link).cmp(name)) {
        Ok(i) => windows_table::TZDB_LINKS[i].1,
        Err(_) => name,
    }
}

/// Windows zone name → IANA name (CLDR territory 001 row), case-insensitive.
pub fn windows_to_iana(windows: &str) -> Option<&'static str> {
    windows_table::WINDOWS_ZONES
        .iter()
        .find(|(w, territory, _)| *territory == "001" && w.eq_ignore_ascii_case(windows.trim()))
        .and_then(|(_, _, types)| types.split(' ').next())
        .map(canonical_static)
}

fn canonical_static(name: &'static str) -> &'static str {
    match windows_table::TZDB_LINKS.binary_search_by(|(link, _)| (*link).cmp(name)) {
        Ok(i) => windows_table::TZDB_LINKS[i].1,
        Err(_) => name,
    }
}

/// IANA name (or alias) → Windows zone name: the row whose IANA list holds it, both sides canonicalised
/// through the tzdb links; a territory-001 row is preferred when several match.
pub fn iana_to_windows(iana_name: &str) -> Option<&'static str> {
    let wanted = canonical_iana(iana_name.trim());
    if is_utc_name(wanted) {
        return Some("UTC");
    }
    let mut fallback = None;
    for (windows, territory, types) in windows_table::WINDOWS_ZONES {
        if types
            .split(' ')
            .any(|t| t == wanted || canonical_iana(t) == wanted)
        {
            if *territory == "001" {
                return Some(windows);
            }
            fallback.get_or_insert(*windows);
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn resolve(name: &str) -> ResolvedZone {
        TzResolver::default()
            .resolve(&TzId::parse(name).unwrap())
            .unwrap()
    }

    #[test]
    fn iana_aliases_and_windows_names_resolve_to_the_same_rules() {
        let instant = date(2024, 7, 1).at(12, 0, 0, 0);
        let kolkata = resolve("Asia/Kolkata").zone.to_timestamp(instant).unwrap();
        assert_eq!(
            resolve("Asia/Calcutta").zone.to_timestamp(instant).unwrap(),
            kolkata
        );
        assert_eq!(
            resolve("India Standard Time")
                .zone
                .to_timestamp(instant)
                .unwrap(),
            kolkata
        );
        assert_eq!(resolve("India Standard Time").source, ZoneSource::Windows);
        let ny = resolve("America/New_York")
            .zone
            .to_timestamp(instant)
            .unwrap();
        assert_eq!(
            resolve("US/Eastern").zone.to_timestamp(instant).unwrap(),
            ny
        );
        assert_eq!(
            resolve("Eastern Standard Time")
                .zone
                .to_timestamp(instant)
                .unwrap(),
            ny
        );
        assert_eq!(
            resolve("/mozilla.org/20050126_1/Europe/Berlin")
                .iana
                .as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(resolve("GMT").source, ZoneSource::Utc);
        assert!(matches!(
            TzResolver::default().resolve(&TzId::parse("Customized Time Zone").unwrap()),
            Err(TzError::Unknown(_))
        ));
    }

    #[test]
    fn a_known_name_beats_a_vtimezone_of_the_same_tzid() {
        // A stale or wrong embedded definition (fixed +05:00) must not override the tzdb.
        let bogus = VTimezone {
            tzid: TzId::parse("Europe/Berlin").unwrap(),
            observances: vec![Observance {
                kind: ObservanceKind::Standard,
                dtstart: date(1970, 1, 1).at(0, 0, 0, 0),
                offset_from: 18_000,
                offset_to: 18_000,
                rrule: None,
                rdates: vec![],
                name: None,
            }],
        };
        let resolver = TzResolver::new([bogus]);
        let zone = resolver
            .resolve(&TzId::parse("Europe/Berlin").unwrap())
            .unwrap();
        assert_eq!(zone.source, ZoneSource::Iana);
        let ts = zone
            .zone
            .to_timestamp(date(2024, 7, 1).at(12, 0, 0, 0))
            .unwrap();
        assert_eq!(ts.to_string(), "2024-07-01T10:00:00Z");
    }

    #[test]
    fn windows_names_round_trip_through_iana() {
        for (windows, territory, _) in windows_table::WINDOWS_ZONES {
            if *territory != "001" {
                continue;
            }
            let iana_name = windows_to_iana(windows).unwrap();
            assert!(
                TimeZone::get(iana_name).is_ok(),
                "{windows} → {iana_name} unknown to the tzdb"
            );
            let back = iana_to_windows(iana_name).unwrap();
            assert_eq!(&back, windows, "{windows} → {iana_name} → {back}");
        }
        assert_eq!(iana_to_windows("Asia/Kolkata"), Some("India Standard Time"));
        assert_eq!(
            iana_to_windows("Asia/Calcutta"),
            Some("India Standard Time")
        );
        assert_eq!(iana_to_windows("Europe/Kyiv"), Some("FLE Standard Time"));
        assert_eq!(
            iana_to_windows("America/Nuuk"),
            windows_to_iana("Greenland Standard Time").and_then(iana_to_windows)
        );
        assert_eq!(
            iana_to_windows("Europe/Berlin"),
            Some("W. Europe Standard Time")
        );
        assert_eq!(
            windows_to_iana("w. europe standard time"),
            Some("Europe/Berlin")
        );
        assert_eq!(iana_to_windows("Mars/Olympus_Mons"), None);
    }
}
