//! Resolving a recorded conflict: from the option an admin chose (and, for `merge`, the fields they
//! decided) to the writes each side takes. Pure: the engine carries the steps out with conditional writes
//! and reads them back; the rules live here so the API and the CLI hold none.
//!
//! | kind | option | steps |
//! |---|---|---|
//! | update | `keep_local` | the provider takes the local version |
//! | update | `keep_remote` | the local series takes the provider's version |
//! | update | `keep_both` | the provider takes the local version; the provider's version becomes a new series (new UID, [`copy_uid`]) on both sides, linked — what the `keep_both` policy leaves after its next run |
//! | update | `merge` | the clean three-way merge, with every conflicting field decided by `merged`, written to both sides |
//! | deletion (deleted locally) | `delete_everywhere` / `restore` | delete the provider's item / recreate the local series from it |
//! | deletion (deleted remotely) | `delete_everywhere` / `restore` | delete the local series / recreate the provider's item from it |
//! | identity | `keep_local` | the linked pair stays; the newcomer claiming its UID is deleted on the provider |
//! | identity | `keep_remote` | the local series takes the newcomer's version and is linked to it; the item it was linked to is deleted |
//! | identity | `keep_both` | the newcomer becomes a new series under a new UID on both sides, linked (re-created, since providers refuse a UID change in place: saved locally, the newcomer deleted with `If-Match`, then created on the provider) |
//! | time | `keep_both` | both events stay: the overlap is accepted and not reported again while their times stay |

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{RemoteId, Uid};
use crate::merge::three_way;
use crate::plan::{ConflictKind, ResolutionOption, Side};
use crate::snapshot::{FieldPath, ItemState, Snapshot};

/// What a recorded conflict holds that the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub kind: ConflictKind,
    /// The options stored with the conflict.
    pub offered: &'a [ResolutionOption],
    pub base: Option<&'a ItemState>,
    /// `None` when the local series is deleted (or, for identity, when no local series holds the UID).
    pub local: Option<&'a ItemState>,
    /// `None` when the provider's item is deleted.
    pub remote: Option<&'a ItemState>,
    /// The conflicting fields as recorded.
    pub fields: &'a [FieldPath],
}

impl Recorded<'_> {
    /// For a deletion conflict, the side that deleted.
    pub fn deleted_on(&self) -> Option<Side> {
        match (self.kind, self.local, self.remote) {
            (ConflictKind::Deletion, None, Some(_)) => Some(Side::Local),
            (ConflictKind::Deletion, Some(_), None) => Some(Side::Remote),
            _ => None,
        }
    }
}

/// A version a write carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// The local series as recorded.
    Local,
    /// The provider's item as recorded.
    Remote,
    /// The local series with `from_remote` paths taken from the provider's item, then `values` set.
    Merged(MergedVersion),
}

/// A merged version: which paths come from the remote side, and explicit values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedVersion {
    pub from_remote: BTreeSet<FieldPath>,
    /// Path → new TEXT value (`None` removes the property). Only [`SETTABLE`] properties.
    pub values: BTreeMap<FieldPath, Option<String>>,
}

/// One step of a resolution, in the order to carry them out. Every write to an existing item is
/// conditional on the version the conflict recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The provider's item takes this version (`If-Match` the recorded version).
    WriteRemote(Version),
    /// The local series takes this version (the series version read when checking is the precondition).
    WriteLocal(Version),
    /// `keep_both`: the provider's version becomes a new series under [`copy_uid`], created locally and on
    /// the provider (idempotently), and linked.
    CopyRemoteAsNew,
    /// Identity `keep_both`: the newcomer is re-created under a new UID ([`copy_uid`]) locally and on the
    /// provider, linked, and the newcomer itself is deleted (`If-Match`; the engine deletes it after
    /// the local copy and before the provider's, so the provider never shows both).
    RenameRemoteAsNew,
    /// The provider's item is deleted (`If-Match`); the pair is forgotten with a tombstone.
    DeleteRemote,
    /// The local series is deleted; the pair is forgotten with a tombstone.
    DeleteLocal,
    /// The local series is recreated from the provider's item and linked to it.
    RecreateLocal,
    /// The provider's item is recreated from the local series and linked to it.
    RecreateRemote,
    /// Identity `keep_remote`: the local series is linked to the newcomer, and the item it was linked to
    /// (named in the conflict's fields as `remote_id:<id>`) is deleted on the provider.
    RelinkAndDeleteOther(RemoteId),
    /// Time `keep_both`: nothing is written; the overlap is accepted.
    AcceptOverlap,
}

/// One decided field of a `merged` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MergedField {
    /// `{"from": "local"}` or `{"from": "remote"}`: take that side's value of the path.
    From { from: Side },
    /// A new value for a TEXT or keyword property (`null` removes it).
    Value(Option<String>),
}

/// The `merged` body of a `merge` resolution: field name (`summary`, …) or path (`master/SUMMARY`, as
/// the conflict lists them) → decision.
pub type MergedInput = BTreeMap<String, MergedField>;

/// Properties `merged` may set to an explicit value. TEXT ones are escaped; keyword ones must be
/// keywords. Times, rules and attendees can only be taken from one side (`{"from": …}`).
pub const SETTABLE: &[(&str, bool)] = &[
    ("SUMMARY", true),
    ("DESCRIPTION", true),
    ("LOCATION", true),
    ("COMMENT", true),
    ("STATUS", false),
    ("TRANSP", false),
    ("CLASS", false),
];

/// The short names `merged` accepts besides paths, and the master path each stands for.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("summary", "master/SUMMARY"),
    ("description", "master/DESCRIPTION"),
    ("location", "master/LOCATION"),
    ("comment", "master/COMMENT"),
    ("status", "master/STATUS"),
    ("transparency", "master/TRANSP"),
    ("class", "master/CLASS"),
    ("start", "master/DTSTART"),
    ("end", "master/DTEND"),
    ("duration", "master/DURATION"),
    ("rrule", "master/RRULE"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The option is not among the conflict's options, or does not fit this conflict.
    #[error("`{option}` does not apply to this conflict; it offers {offered}")]
    NotApplicable { option: String, offered: String },
    /// `merge` without a `merged` body.
    #[error(
        "`merge` needs a `merged` object deciding each conflicting field ({0}); e.g. {{\"summary\": \"New title\"}} or {{\"master/DTSTART\": {{\"from\": \"remote\"}}}}"
    )]
    MergedMissing(String),
    /// The `merged` body does not make a valid version.
    #[error("merged: {0}")]
    MergedInvalid(String),
}

fn option_name(option: ResolutionOption) -> String {
    serde_json::to_value(option)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{option:?}"))
}

fn names(options: &[ResolutionOption]) -> String {
    let list: Vec<String> = options.iter().copied().map(option_name).collect();
    format!("[{}]", list.join(", "))
}

/// The steps that apply `option` to the recorded conflict, or why it cannot be applied. Nothing here
/// reads either side: the executor first checks both still hold what the conflict recorded.
pub fn steps(
    recorded: &Recorded<'_>,
    option: ResolutionOption,
    merged: Option<&MergedInput>,
) -> Result<Vec<Step>, ResolveError> {
    use ResolutionOption::*;
    let refuse = || ResolveError::NotApplicable {
        option: option_name(option),
        offered: names(recorded.offered),
    };
    if !recorded.offered.contains(&option) || !recorded.kind.options().contains(&option) {
        return Err(refuse());
    }
    let (local, remote) = (recorded.local.is_some(), recorded.remote.is_some());
    let out = match (recorded.kind, option) {
        (ConflictKind::Update, KeepLocal) if local && remote => {
            vec![Step::WriteRemote(Version::Local)]
        }
        (ConflictKind::Update, KeepRemote) if local && remote => {
            vec![Step::WriteLocal(Version::Remote)]
        }
        // The conditional overwrite goes first: when it is refused, nothing was written.
        (ConflictKind::Update, KeepBoth) if local && remote => {
            vec![Step::WriteRemote(Version::Local), Step::CopyRemoteAsNew]
        }
        (ConflictKind::Update, Merge) => {
            let merged = merged.ok_or_else(|| {
                ResolveError::MergedMissing(
                    recorded
                        .fields
                        .iter()
                        .map(FieldPath::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
            let version = merged_version(recorded, merged)?;
            vec![
                Step::WriteLocal(Version::Merged(version.clone())),
                Step::WriteRemote(Version::Merged(version)),
            ]
        }
        (ConflictKind::Deletion, DeleteEverywhere) => match recorded.deleted_on() {
            Some(Side::Local) => vec![Step::DeleteRemote],
            Some(Side::Remote) => vec![Step::DeleteLocal],
            None => return Err(refuse()),
        },
        (ConflictKind::Deletion, Restore) => match recorded.deleted_on() {
            Some(Side::Local) => vec![Step::RecreateLocal],
            Some(Side::Remote) => vec![Step::RecreateRemote],
            None => return Err(refuse()),
        },
        (ConflictKind::Identity, KeepLocal) if remote => vec![Step::DeleteRemote],
        (ConflictKind::Identity, KeepRemote) if local && remote => {
            let other = recorded
                .fields
                .iter()
                .find_map(|f| f.as_str().strip_prefix("remote_id:"))
                .ok_or_else(refuse)?;
            vec![
                Step::WriteLocal(Version::Remote),
                Step::RelinkAndDeleteOther(RemoteId::new(other)),
            ]
        }
        (ConflictKind::Identity, KeepBoth) if remote => vec![Step::RenameRemoteAsNew],
        (ConflictKind::Time, KeepBoth) => vec![Step::AcceptOverlap],
        _ => return Err(refuse()),
    };
    Ok(out)
}

/// Resolves a `merged` key (short name or path) to a path.
fn path_of(key: &str) -> FieldPath {
    SHORT_NAMES
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(key))
        .map(|(_, path)| FieldPath::new(*path))
        .unwrap_or_else(|| FieldPath::new(key))
}

/// The property a path names, when it is `<component>/<NAME>` of a plain property.
fn property_of(path: &FieldPath) -> Option<(&str, &str)> {
    let (component, name) = path.as_str().rsplit_once('/')?;
    if component.is_empty() || name.is_empty() {
        return None;
    }
    Some((component, name))
}

/// The merged version of an update conflict: the clean three-way merge of both sides, with each
/// conflicting path decided by `merged`. Every conflicting path must be decided; a key must name a
/// path either version has (or a settable property of a component that exists), and explicit values
/// are only accepted for [`SETTABLE`] properties.
pub fn merged_version(
    recorded: &Recorded<'_>,
    merged: &MergedInput,
) -> Result<MergedVersion, ResolveError> {
    let (Some(local), Some(remote)) = (recorded.local, recorded.remote) else {
        return Err(ResolveError::MergedInvalid(
            "a merge needs both versions".into(),
        ));
    };
    if merged.is_empty() {
        return Err(ResolveError::MergedInvalid(
            "the merged object is empty".into(),
        ));
    }
    let merge = three_way(
        recorded.base.map(|b| &b.snapshot),
        &local.snapshot,
        &remote.snapshot,
    );
    let conflicting: BTreeSet<FieldPath> = merge
        .conflicts
        .iter()
        .cloned()
        .chain(recorded.fields.iter().cloned())
        .filter(|p| !p.as_str().starts_with("remote_id:"))
        .collect();
    let known = |path: &FieldPath| {
        local.snapshot.get(path).is_some()
            || remote.snapshot.get(path).is_some()
            || recorded
                .base
                .is_some_and(|b| b.snapshot.get(path).is_some())
    };
    let mut version = MergedVersion {
        from_remote: merge.from_remote.clone(),
        values: BTreeMap::new(),
    };
    let mut decided = BTreeSet::new();
    for (key, field) in merged {
        let path = path_of(key);
        if !decided.insert(path.clone()) {
            return Err(ResolveError::MergedInvalid(format!(
                "`{key}` decides {path} a second time"
            )));
        }
        match field {
            MergedField::From { from } => {
                if !known(&path) {
                    return Err(ResolveError::MergedInvalid(format!(
                        "`{key}`: neither version has the field {path}"
                    )));
                }
                match from {
                    Side::Remote => {
                        version.from_remote.insert(path);
                    }
                    Side::Local => {
                        version.from_remote.remove(&path);
                    }
                }
            }
            MergedField::Value(value) => {
                let Some((component, name)) = property_of(&path) else {
                    return Err(ResolveError::MergedInvalid(format!(
                        "`{key}` is not a field"
                    )));
                };
                let Some((_, text)) = SETTABLE.iter().find(|(n, _)| *n == name) else {
                    return Err(ResolveError::MergedInvalid(format!(
                        "`{key}` cannot be set to a value; take it from one side with {{\"from\": \"local\"}} or {{\"from\": \"remote\"}}"
                    )));
                };
                let component_path = FieldPath::new(format!("{component}/"));
                if !known(&component_path) {
                    return Err(ResolveError::MergedInvalid(format!(
                        "`{key}`: no version has the component {component}"
                    )));
                }
                if let Some(v) = value {
                    if v.len() > 64 * 1024 {
                        return Err(ResolveError::MergedInvalid(format!("`{key}` is too long")));
                    }
                    let keyword =
                        v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !v.is_empty();
                    if !text && !keyword {
                        return Err(ResolveError::MergedInvalid(format!(
                            "`{key}` must be a keyword (letters, digits, `-`)"
                        )));
                    }
                }
                let value = match (value, text) {
                    (Some(v), false) => Some(v.to_ascii_uppercase()),
                    (v, _) => v.clone(),
                };
                // An explicit value wins over either side's.
                version.from_remote.remove(&path);
                version.values.insert(path, value);
            }
        }
    }
    let missing: Vec<&str> = conflicting
        .iter()
        .filter(|p| !decided.contains(*p))
        .map(FieldPath::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ResolveError::MergedInvalid(format!(
            "every conflicting field must be decided; missing: {}",
            missing.join(", ")
        )));
    }
    Ok(version)
}

/// The UID of the new series `keep_both` makes from the losing version. Derived from the link, the
/// remote item and its content, so the policy (in a run) and the option (in a resolution) name the same
/// copy, and a rerun after a crash finds the copy it already made.
pub fn copy_uid(uid: &Uid, link: &str, remote: &RemoteId, remote_snapshot: &Snapshot) -> String {
    // FNV-1a, 64 bits twice with two seeds: stable across builds and platforms, no dependency.
    let text = format!(
        "{link}\n{remote}\n{}",
        serde_json::to_string(remote_snapshot).unwrap_or_default()
    );
    let hash = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x6c62_272e_07bb_0142));
    format!("{uid}-copy-{:08x}{:04x}", a as u32, (b & 0xffff) as u16)
}

/// Whether one of two UIDs is the other's `keep_both` copy ([`copy_uid`]). Such a pair overlaps by
/// construction (the copy keeps the loser's times), and keeping both was the person's (or the policy's)
/// decision, so it is no time conflict.
pub fn is_copy_pair(a: &str, b: &str) -> bool {
    let copy_of = |copy: &str, original: &str| {
        copy.strip_prefix(original)
            .and_then(|rest| rest.strip_prefix("-copy-"))
            .is_some_and(|suffix| {
                suffix.len() == 12 && suffix.bytes().all(|c| c.is_ascii_hexdigit())
            })
    };
    copy_of(a, b) || copy_of(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResolutionOption::*;

    fn state(pairs: &[(&str, &str)]) -> ItemState {
        ItemState {
            snapshot: pairs
                .iter()
                .fold(Snapshot::new(), |s, (k, v)| s.with(*k, *v)),
            span: None,
            modified: None,
        }
    }

    fn recorded<'a>(
        kind: ConflictKind,
        base: Option<&'a ItemState>,
        local: Option<&'a ItemState>,
        remote: Option<&'a ItemState>,
        fields: &'a [FieldPath],
    ) -> Recorded<'a> {
        Recorded {
            kind,
            offered: kind.options(),
            base,
            local,
            remote,
            fields,
        }
    }

    fn sample() -> (ItemState, ItemState, ItemState, Vec<FieldPath>) {
        let base = state(&[
            ("master/", "present"),
            ("master/SUMMARY", "SUMMARY:A"),
            ("master/LOCATION", "LOCATION:X"),
            ("master/DTSTART", "DTSTART:1"),
        ]);
        let local = state(&[
            ("master/", "present"),
            ("master/SUMMARY", "SUMMARY:L"),
            ("master/LOCATION", "LOCATION:X"),
            ("master/DTSTART", "DTSTART:2"),
        ]);
        let remote = state(&[
            ("master/", "present"),
            ("master/SUMMARY", "SUMMARY:R"),
            ("master/LOCATION", "LOCATION:Y"),
            ("master/DTSTART", "DTSTART:3"),
        ]);
        let fields = vec![
            FieldPath::new("master/DTSTART"),
            FieldPath::new("master/SUMMARY"),
        ];
        (base, local, remote, fields)
    }

    #[test]
    fn every_kind_and_option_has_steps_or_is_refused() {
        let (base, local, remote, fields) = sample();
        let update = recorded(
            ConflictKind::Update,
            Some(&base),
            Some(&local),
            Some(&remote),
            &fields,
        );
        assert_eq!(
            steps(&update, KeepLocal, None),
            Ok(vec![Step::WriteRemote(Version::Local)])
        );
        assert_eq!(
            steps(&update, KeepRemote, None),
            Ok(vec![Step::WriteLocal(Version::Remote)])
        );
        assert_eq!(
            steps(&update, KeepBoth, None),
            Ok(vec![
                Step::WriteRemote(Version::Local),
                Step::CopyRemoteAsNew
            ])
        );
        for option in [DeleteEverywhere, Restore] {
            assert!(matches!(
                steps(&update, option, None),
                Err(ResolveError::NotApplicable { .. })
            ));
        }
        assert!(matches!(
            steps(&update, Merge, None),
            Err(ResolveError::MergedMissing(_))
        ));

        let deleted_locally = recorded(
            ConflictKind::Deletion,
            Some(&base),
            None,
            Some(&remote),
            &[],
        );
        assert_eq!(deleted_locally.deleted_on(), Some(Side::Local));
        assert_eq!(
            steps(&deleted_locally, DeleteEverywhere, None),
            Ok(vec![Step::DeleteRemote])
        );
        assert_eq!(
            steps(&deleted_locally, Restore, None),
            Ok(vec![Step::RecreateLocal])
        );
        let deleted_remotely =
            recorded(ConflictKind::Deletion, Some(&base), Some(&local), None, &[]);
        assert_eq!(
            steps(&deleted_remotely, DeleteEverywhere, None),
            Ok(vec![Step::DeleteLocal])
        );
        assert_eq!(
            steps(&deleted_remotely, Restore, None),
            Ok(vec![Step::RecreateRemote])
        );
        for option in [KeepLocal, KeepRemote, KeepBoth, Merge] {
            assert!(matches!(
                steps(&deleted_remotely, option, None),
                Err(ResolveError::NotApplicable { .. })
            ));
        }

        let identity_fields = vec![FieldPath::new("remote_id:/a/old.ics")];
        let identity = recorded(
            ConflictKind::Identity,
            None,
            Some(&local),
            Some(&remote),
            &identity_fields,
        );
        assert_eq!(
            steps(&identity, KeepLocal, None),
            Ok(vec![Step::DeleteRemote])
        );
        assert_eq!(
            steps(&identity, KeepRemote, None),
            Ok(vec![
                Step::WriteLocal(Version::Remote),
                Step::RelinkAndDeleteOther(RemoteId::new("/a/old.ics"))
            ])
        );
        assert_eq!(
            steps(&identity, KeepBoth, None),
            Ok(vec![Step::RenameRemoteAsNew])
        );
        assert!(steps(&identity, Restore, None).is_err());

        let time = recorded(ConflictKind::Time, None, None, None, &[]);
        assert_eq!(steps(&time, KeepBoth, None), Ok(vec![Step::AcceptOverlap]));
        for option in [KeepLocal, KeepRemote, Merge, DeleteEverywhere, Restore] {
            assert!(steps(&time, option, None).is_err(), "{option:?}");
        }
    }

    #[test]
    fn an_option_the_conflict_does_not_offer_is_refused() {
        let (base, local, remote, fields) = sample();
        let mut update = recorded(
            ConflictKind::Update,
            Some(&base),
            Some(&local),
            Some(&remote),
            &fields,
        );
        update.offered = &[KeepLocal];
        let refused = steps(&update, KeepRemote, None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "`keep_remote` does not apply to this conflict; it offers [keep_local]"
        );
    }

    #[test]
    fn merge_keeps_clean_edits_and_applies_the_decisions() {
        let (base, local, remote, fields) = sample();
        let update = recorded(
            ConflictKind::Update,
            Some(&base),
            Some(&local),
            Some(&remote),
            &fields,
        );
        let merged: MergedInput = serde_json::from_value(serde_json::json!({
            "summary": "Both agreed",
            "master/DTSTART": {"from": "remote"},
        }))
        .unwrap();
        let v = merged_version(&update, &merged).unwrap();
        // LOCATION changed only remotely: merged silently; DTSTART decided for the remote side.
        assert_eq!(
            v.from_remote,
            [
                FieldPath::new("master/DTSTART"),
                FieldPath::new("master/LOCATION")
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(
            v.values,
            [(
                FieldPath::new("master/SUMMARY"),
                Some("Both agreed".to_owned())
            )]
            .into_iter()
            .collect()
        );
        // Taking a clean remote edit back to the local side is allowed too.
        let back: MergedInput = serde_json::from_value(serde_json::json!({
            "summary": {"from": "local"}, "start": {"from": "local"}, "location": {"from": "local"},
        }))
        .unwrap();
        let v = merged_version(&update, &back).unwrap();
        assert!(v.from_remote.is_empty() && v.values.is_empty());
    }

    #[test]
    fn merge_refuses_incomplete_unknown_and_unsettable_fields() {
        let (base, local, remote, fields) = sample();
        let update = recorded(
            ConflictKind::Update,
            Some(&base),
            Some(&local),
            Some(&remote),
            &fields,
        );
        let cases = [
            (
                serde_json::json!({"summary": "x"}),
                "missing: master/DTSTART",
            ),
            (
                serde_json::json!({"summary": "x", "start": "20260101T000000Z"}),
                "cannot be set to a value",
            ),
            (
                serde_json::json!({"summary": "x", "start": {"from": "local"}, "master/X-NOPE": {"from": "remote"}}),
                "neither version has",
            ),
            (
                serde_json::json!({"summary": "x", "start": {"from": "local"}, "status": "not a keyword"}),
                "keyword",
            ),
            (
                serde_json::json!({"summary": "x", "start": {"from": "local"}, "override/nope/SUMMARY": "y"}),
                "no version has the component",
            ),
            (serde_json::json!({}), "empty"),
        ];
        for (body, expected) in cases {
            let merged: MergedInput = serde_json::from_value(body.clone()).unwrap();
            let err = merged_version(&update, &merged).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn copy_uids_are_stable_and_depend_on_the_content() {
        let uid = Uid::new("u1");
        let remote = RemoteId::new("/alice/work/u1.ics");
        let a = state(&[("master/SUMMARY", "SUMMARY:A")]).snapshot;
        let b = state(&[("master/SUMMARY", "SUMMARY:B")]).snapshot;
        let first = copy_uid(&uid, "link-1", &remote, &a);
        assert_eq!(first, copy_uid(&uid, "link-1", &remote, &a));
        assert!(first.starts_with("u1-copy-") && first.len() == "u1-copy-".len() + 12);
        assert_ne!(first, copy_uid(&uid, "link-1", &remote, &b));
        assert_ne!(first, copy_uid(&uid, "link-2", &remote, &a));
        assert!(is_copy_pair("u1", &first) && is_copy_pair(&first, "u1"));
        assert!(!is_copy_pair("u2", &first) && !is_copy_pair("u1", "u1-copy-nothex"));
    }
}
