//! From a model series to the [`Snapshot`] the plan compares, and back: composing the merged series from
//! the two versions the executor read.
//!
//! Paths: `<component>/<group>`, where `<component>` is `master` or `override/<RECURRENCE-ID line>` and
//! `<group>` is a property name, `ATTENDEE/<address>` (each attendee on its own, so two people answering
//! an invitation on two sides merge), or a sub-component name (`VALARM`, all alarms as one value). The
//! path `<component>/` records that the component exists, so an occurrence edited or cancelled on one
//! side only is an added or removed override. Values are the canonical lines of the normalized hash, so
//! what the hash ignores (DTSTAMP, SEQUENCE, order, folding, case of keywords) the merge ignores too.

use std::collections::{BTreeMap, BTreeSet};

use calbridge_model::hash::{canonical_component_text, canonical_property_lines};
use calbridge_model::{Component, Event, EventSeries, Property};

use crate::snapshot::{FieldPath, Snapshot};

const PRESENT: &str = "present";

/// Why a merged series could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("the merged series is not a valid event: {0}")]
    Invalid(String),
}

/// The snapshot of a series: what the plan compares and merges.
pub fn snapshot(series: &EventSeries) -> Snapshot {
    let mut out = Snapshot::new();
    for (key, component) in components_by_key(series) {
        out.set(FieldPath::new(format!("{key}/")), PRESENT.to_owned());
        for (group, value) in groups(&component) {
            out.set(FieldPath::new(format!("{key}/{group}")), value);
        }
    }
    out
}

/// The local series with the given paths taken from the remote one.
pub fn compose(
    local: &EventSeries,
    remote: &EventSeries,
    from_remote: &BTreeSet<FieldPath>,
) -> Result<EventSeries, ComposeError> {
    let local_components = components_by_key(local);
    let remote_components = components_by_key(remote);
    let keys: BTreeSet<&String> = local_components
        .keys()
        .chain(remote_components.keys())
        .collect();
    let mut merged = EventSeries::new(local.uid());
    for key in keys {
        let (l, r) = (local_components.get(key), remote_components.get(key));
        let presence_from_remote = from_remote.contains(&FieldPath::new(format!("{key}/")));
        let start = if presence_from_remote { r.or(l) } else { l };
        let Some(start) = start else { continue };
        if presence_from_remote && r.is_none() {
            continue; // removed on the remote side
        }
        let mut component = start.clone();
        let prefix = format!("{key}/");
        for path in from_remote {
            let Some(group) = path.as_str().strip_prefix(&prefix) else {
                continue;
            };
            if group.is_empty() {
                continue;
            }
            replace_group(&mut component, r, group);
        }
        let event =
            Event::from_component(&component).map_err(|e| ComposeError::Invalid(e.to_string()))?;
        let added = if event.recurrence_id.is_some() {
            merged.insert_override(event).map(|_| ())
        } else {
            merged.set_master(Some(event)).map(|_| ())
        };
        added.map_err(|e| ComposeError::Invalid(e.to_string()))?;
    }
    validate(&merged)?;
    Ok(merged)
}

/// The series with explicit values set (a `merge` resolution): each path `<component>/<NAME>` gets one
/// `NAME` property with the value (`text` ones escaped as TEXT), or none when the value is `None`.
/// `text_names` lists the TEXT properties; any other name is written as given (a keyword).
pub fn with_values(
    series: &EventSeries,
    values: &BTreeMap<FieldPath, Option<String>>,
    text_names: &[&str],
) -> Result<EventSeries, ComposeError> {
    let mut components = components_by_key(series);
    for (path, value) in values {
        let Some((key, name)) = path.as_str().rsplit_once('/') else {
            return Err(ComposeError::Invalid(format!("{path} is not a field")));
        };
        let Some(component) = components.get_mut(key) else {
            return Err(ComposeError::Invalid(format!("the series has no {key}")));
        };
        let position = component.properties.iter().position(|p| p.name == name);
        component.properties.retain(|p| p.name != name);
        if let Some(value) = value {
            let property = if text_names.contains(&name) {
                Property::text(name, value)
            } else {
                Property::new(name, value.clone())
            };
            let at = position
                .unwrap_or(component.properties.len())
                .min(component.properties.len());
            component.properties.insert(at, property);
        }
    }
    let mut out = EventSeries::new(series.uid());
    for component in components.values() {
        let event =
            Event::from_component(component).map_err(|e| ComposeError::Invalid(e.to_string()))?;
        let added = if event.recurrence_id.is_some() {
            out.insert_override(event).map(|_| ())
        } else {
            out.set_master(Some(event)).map(|_| ())
        };
        added.map_err(|e| ComposeError::Invalid(e.to_string()))?;
    }
    validate(&out)?;
    Ok(out)
}

/// Checks what a merge can break that the parser does not: every component starts before it ends
/// (compared when start and end are written the same way; zone-dependent pairs are left to expansion).
pub fn validate(series: &EventSeries) -> Result<(), ComposeError> {
    use calbridge_model::datetime::CalDateTime;
    use calbridge_model::event::EventEnd;
    for event in series.events() {
        let (Some(start), Some(EventEnd::End(end))) = (&event.dtstart, &event.end) else {
            continue;
        };
        let backwards = match (&start.value, &end.value) {
            (CalDateTime::Date(a), CalDateTime::Date(b)) => b < a,
            (CalDateTime::Utc(a), CalDateTime::Utc(b)) => b < a,
            (CalDateTime::Floating(a), CalDateTime::Floating(b)) => b < a,
            (
                CalDateTime::Zoned { local: a, tzid: x },
                CalDateTime::Zoned { local: b, tzid: y },
            ) if x == y => b < a,
            _ => false,
        };
        if backwards {
            return Err(ComposeError::Invalid(
                "the merged version ends before it starts".into(),
            ));
        }
    }
    Ok(())
}

fn components_by_key(series: &EventSeries) -> BTreeMap<String, Component> {
    series
        .to_components()
        .into_iter()
        .map(|component| (component_key(&component), component))
        .collect()
}

fn component_key(component: &Component) -> String {
    match component
        .properties
        .iter()
        .find(|p| p.name == "RECURRENCE-ID")
    {
        Some(rid) => format!(
            "override/{}",
            canonical_property_lines(rid).join(",").replace('/', "%2F")
        ),
        None => "master".to_owned(),
    }
}

/// The group a property belongs to.
fn group_of(property: &Property) -> String {
    match property.name.as_str() {
        "ATTENDEE" => format!("ATTENDEE/{}", property.value.trim().to_lowercase()),
        name => name.to_owned(),
    }
}

fn groups(component: &Component) -> BTreeMap<String, String> {
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for property in &component.properties {
        if property.name == "RECURRENCE-ID" || property.name == "UID" {
            continue; // the key and the series identity, never merged
        }
        let canonical = canonical_property_lines(property);
        if canonical.is_empty() {
            continue;
        }
        lines
            .entry(group_of(property))
            .or_default()
            .extend(canonical);
    }
    for child in &component.components {
        lines
            .entry(child.name.clone())
            .or_default()
            .push(canonical_component_text(child));
    }
    lines
        .into_iter()
        .map(|(group, mut values)| {
            values.sort();
            values.dedup();
            (group, values.join("\n"))
        })
        .collect()
}

/// Replaces everything of `group` in `component` with the remote component's (or removes it).
fn replace_group(component: &mut Component, remote: Option<&Component>, group: &str) {
    let is_sub_component = remote
        .map(|r| r.components.iter().any(|c| c.name == group))
        .unwrap_or(false)
        || component.components.iter().any(|c| c.name == group);
    if is_sub_component {
        component.components.retain(|c| c.name != group);
        if let Some(r) = remote {
            component
                .components
                .extend(r.components.iter().filter(|c| c.name == group).cloned());
        }
        return;
    }
    // Keep the local position of the group so an untouched layout stays recognisable.
    let position = component
        .properties
        .iter()
        .position(|p| group_of(p) == group);
    component.properties.retain(|p| group_of(p) != group);
    let incoming: Vec<Property> = remote
        .map(|r| {
            r.properties
                .iter()
                .filter(|p| group_of(p) == group)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let at = position
        .unwrap_or(component.properties.len())
        .min(component.properties.len());
    component.properties.splice(at..at, incoming);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::three_way;

    fn series(ics: &str) -> EventSeries {
        let calendar = calbridge_model::ical::parse(ics.as_bytes()).unwrap();
        calendar.series()[0].clone()
    }

    const BASE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//a//b//EN\r\nBEGIN:VEVENT\r\nUID:s1\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250301T090000Z\r\nDTEND:20250301T100000Z\r\nSUMMARY:Standup\r\nLOCATION:Room 1\r\nRRULE:FREQ=DAILY;COUNT=5\r\nATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:ann@example.com\r\nATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn two_encodings_of_one_series_have_one_snapshot() {
        let other = "BEGIN:VCALENDAR\nPRODID:-//other//x//EN\nVERSION:2.0\nBEGIN:VEVENT\nSUMMARY:Standup\nUID:s1\nDTSTAMP:20261111T111111Z\nATTENDEE;PARTSTAT=needs-action:MAILTO:bob@example.com\nLOCATION:Room 1\nDTSTART:20250301T090000Z\nRRULE:COUNT=5;FREQ=DAILY\nDTEND:20250301T100000Z\nATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:ann@example.com\nEND:VEVENT\nEND:VCALENDAR\n";
        assert_eq!(snapshot(&series(BASE)), snapshot(&series(other)));
    }

    #[test]
    fn edits_on_two_sides_compose_into_one_series() {
        let base = series(BASE);
        let local = series(&BASE.replace("LOCATION:Room 1", "LOCATION:Room 2"));
        let remote = series(
            &BASE
                .replace("SUMMARY:Standup", "SUMMARY:Daily standup")
                .replace(
                    "PARTSTAT=NEEDS-ACTION:mailto:bob",
                    "PARTSTAT=ACCEPTED:mailto:bob",
                ),
        );
        let merge = three_way(
            Some(&snapshot(&base)),
            &snapshot(&local),
            &snapshot(&remote),
        );
        assert!(merge.is_clean(), "{:?}", merge.conflicts);
        let merged = compose(&local, &remote, &merge.from_remote).unwrap();
        let expected = series(
            &BASE
                .replace("LOCATION:Room 1", "LOCATION:Room 2")
                .replace("SUMMARY:Standup", "SUMMARY:Daily standup")
                .replace(
                    "PARTSTAT=NEEDS-ACTION:mailto:bob",
                    "PARTSTAT=ACCEPTED:mailto:bob",
                ),
        );
        assert_eq!(snapshot(&merged), snapshot(&expected));
    }

    #[test]
    fn an_occurrence_edited_remotely_becomes_a_local_override() {
        let base = series(BASE);
        let with_override = BASE.replace(
            "END:VEVENT\r\nEND:VCALENDAR",
            "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:s1\r\nDTSTAMP:20250101T000000Z\r\nRECURRENCE-ID:20250303T090000Z\r\nDTSTART:20250303T110000Z\r\nDTEND:20250303T120000Z\r\nSUMMARY:Standup (moved)\r\nEND:VEVENT\r\nEND:VCALENDAR",
        );
        let remote = series(&with_override);
        let merge = three_way(Some(&snapshot(&base)), &snapshot(&base), &snapshot(&remote));
        assert!(merge.is_clean());
        let merged = compose(&base, &remote, &merge.from_remote).unwrap();
        assert_eq!(merged.overrides().len(), 1);
        assert_eq!(snapshot(&merged), snapshot(&remote));
        // And removing it remotely removes it locally.
        let merge = three_way(
            Some(&snapshot(&remote)),
            &snapshot(&remote),
            &snapshot(&base),
        );
        let merged = compose(&remote, &base, &merge.from_remote).unwrap();
        assert!(merged.overrides().is_empty());
    }

    #[test]
    fn explicit_values_are_set_escaped_and_validated() {
        let base = series(BASE);
        let values: BTreeMap<FieldPath, Option<String>> = [
            (
                FieldPath::new("master/SUMMARY"),
                Some("Standup, merged; ok".to_owned()),
            ),
            (FieldPath::new("master/LOCATION"), None),
        ]
        .into_iter()
        .collect();
        let out = with_values(&base, &values, &["SUMMARY", "LOCATION"]).unwrap();
        let master = out.master().unwrap();
        assert_eq!(
            master.summary.as_ref().unwrap().value,
            "Standup, merged; ok"
        );
        assert!(master.location.is_none());
        let text = String::from_utf8(calbridge_model::ical::write(&{
            let mut c = calbridge_model::Calendar::new("-//t//t//EN");
            c.insert_series(out.clone());
            c
        }))
        .unwrap();
        assert!(text.contains("SUMMARY:Standup\\, merged\\; ok"), "{text}");
        // A start taken from one side and an end from the other may end before it starts: refused.
        let remote = series(
            &BASE
                .replace("DTSTART:20250301T090000Z", "DTSTART:20250301T150000Z")
                .replace("DTEND:20250301T100000Z", "DTEND:20250301T160000Z"),
        );
        let from_remote: BTreeSet<FieldPath> = [FieldPath::new("master/DTSTART")].into();
        assert!(compose(&base, &remote, &from_remote).is_err());
        let unknown: BTreeMap<FieldPath, Option<String>> =
            [(FieldPath::new("override/x/SUMMARY"), Some("y".to_owned()))].into();
        assert!(with_values(&base, &unknown, &["SUMMARY"]).is_err());
    }

    #[test]
    fn the_same_field_changed_differently_conflicts() {
        let base = series(BASE);
        let local = series(&BASE.replace("SUMMARY:Standup", "SUMMARY:A"));
        let remote = series(&BASE.replace("SUMMARY:Standup", "SUMMARY:B"));
        let merge = three_way(
            Some(&snapshot(&base)),
            &snapshot(&local),
            &snapshot(&remote),
        );
        assert_eq!(
            merge
                .conflicts
                .iter()
                .map(FieldPath::as_str)
                .collect::<Vec<_>>(),
            ["master/SUMMARY"]
        );
    }
}
