//! Field-level three-way merge.

use std::collections::BTreeSet;

use crate::snapshot::{FieldPath, Snapshot};

/// The outcome of merging a local and a remote snapshot against their common base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// Paths where the merged series takes the remote value; every other path keeps the local value.
    /// Conflicting paths are in neither set's favour until a policy or a person decides: they are listed
    /// in `conflicts` and left at the local value here.
    pub from_remote: BTreeSet<FieldPath>,
    /// Paths changed on both sides to different values.
    pub conflicts: BTreeSet<FieldPath>,
}

impl Merge {
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }

    /// The merged snapshot, taking `extra_remote` (e.g. the conflicting paths when the remote side wins)
    /// from the remote side as well.
    pub fn apply(
        &self,
        local: &Snapshot,
        remote: &Snapshot,
        extra_remote: &BTreeSet<FieldPath>,
    ) -> Snapshot {
        let mut merged = local.clone();
        for path in self.from_remote.iter().chain(extra_remote) {
            match remote.get(path) {
                Some(value) => merged.set(path.clone(), value.to_owned()),
                None => {
                    merged.remove(path);
                }
            }
        }
        merged
    }
}

/// Merges per field: a path changed on one side only takes that side's value; changed on both sides to the
/// same value is no conflict; changed on both to different values is a conflict. Without a base (the first
/// time two existing items are paired), every differing path is a conflict.
pub fn three_way(base: Option<&Snapshot>, local: &Snapshot, remote: &Snapshot) -> Merge {
    let mut from_remote = BTreeSet::new();
    let mut conflicts = BTreeSet::new();
    for path in local.union_paths(remote) {
        let (l, r) = (local.get(path), remote.get(path));
        if l == r {
            continue;
        }
        match base.map(|b| b.get(path)) {
            Some(b) if b == l => {
                from_remote.insert(path.clone());
            }
            Some(b) if b == r => {}
            _ => {
                conflicts.insert(path.clone());
            }
        }
    }
    Merge {
        from_remote,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        pairs
            .iter()
            .fold(Snapshot::new(), |s, (k, v)| s.with(*k, *v))
    }

    #[test]
    fn edits_to_different_fields_merge_silently() {
        let base = snap(&[("summary", "A"), ("location", "X")]);
        let local = snap(&[("summary", "B"), ("location", "X")]);
        let remote = snap(&[("summary", "A"), ("location", "Y")]);
        let m = three_way(Some(&base), &local, &remote);
        assert!(m.is_clean());
        let merged = m.apply(&local, &remote, &BTreeSet::new());
        assert_eq!(merged, snap(&[("summary", "B"), ("location", "Y")]));
    }

    #[test]
    fn same_field_changed_differently_is_a_conflict() {
        let base = snap(&[("summary", "A")]);
        let m = three_way(
            Some(&base),
            &snap(&[("summary", "B")]),
            &snap(&[("summary", "C")]),
        );
        assert_eq!(
            m.conflicts
                .iter()
                .map(FieldPath::as_str)
                .collect::<Vec<_>>(),
            ["summary"]
        );
    }

    #[test]
    fn a_field_removed_remotely_is_removed_in_the_merge() {
        let base = snap(&[("summary", "A"), ("location", "X")]);
        let local = base.clone();
        let remote = snap(&[("summary", "A")]);
        let m = three_way(Some(&base), &local, &remote);
        assert_eq!(m.apply(&local, &remote, &BTreeSet::new()), remote);
    }

    #[test]
    fn without_a_base_every_difference_conflicts() {
        let m = three_way(None, &snap(&[("summary", "A")]), &snap(&[("summary", "B")]));
        assert_eq!(m.conflicts.len(), 1);
        let m = three_way(None, &snap(&[("summary", "A")]), &snap(&[("summary", "A")]));
        assert!(m.is_clean() && m.from_remote.is_empty());
    }
}
