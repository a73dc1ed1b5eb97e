//! Time conflicts: two busy events of one owner that overlap, across all of the owner's linked calendars,
//! recurring occurrences included. Free (transparent) events never block.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One occurrence on an owner's calendars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyBlock {
    pub owner: String,
    /// The series it belongs to; occurrences of one series never conflict with each other.
    pub series: String,
    pub recurrence_id: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// `TRANSP:TRANSPARENT` / Graph `showAs: free` / Google `transparency: transparent`.
    pub transparent: bool,
}

/// Two overlapping occurrences (indices into the input, `first` starting no later than `second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    pub first: usize,
    pub second: usize,
}

/// Finds every overlapping pair of busy blocks of the same owner. Touching blocks (`a.end == b.start`)
/// do not overlap, and an instant (`start == end`) occupies no time. Sweep line: O(n log n + pairs).
pub fn find_overlaps(blocks: &[BusyBlock]) -> Vec<Overlap> {
    find_overlaps_in(blocks, TimeScope::All)
}

/// [`find_overlaps`] restricted to pairs with at least one block of a series in `scope`. A scoped
/// detection reads the occurrences around the changed series; the pairs among those neighbours are
/// neither decided nor needed, and in a dense calendar they are most of them (quadratic in the density).
pub fn find_overlaps_in(blocks: &[BusyBlock], scope: TimeScope<'_>) -> Vec<Overlap> {
    let in_scope: Vec<bool> = blocks
        .iter()
        .map(|b| match scope {
            TimeScope::All => true,
            TimeScope::Series(series) => series.contains(&b.series),
        })
        .collect();
    let mut order: Vec<usize> = (0..blocks.len())
        .filter(|&i| !blocks[i].transparent && blocks[i].start < blocks[i].end)
        .collect();
    order.sort_by(|&a, &b| {
        (&blocks[a].owner, blocks[a].start, blocks[a].end, a).cmp(&(
            &blocks[b].owner,
            blocks[b].start,
            blocks[b].end,
            b,
        ))
    });
    let mut out = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    let mut owner: Option<&str> = None;
    for i in order {
        let block = &blocks[i];
        if owner != Some(block.owner.as_str()) {
            active.clear();
            owner = Some(block.owner.as_str());
        }
        active.retain(|&j| blocks[j].end > block.start);
        for &j in &active {
            if blocks[j].series != block.series && (in_scope[i] || in_scope[j]) {
                out.push(Overlap {
                    first: j,
                    second: i,
                });
            }
        }
        active.push(i);
    }
    out
}

/// Every overlap between two series of one owner, grouped: a weekly meeting overlapping another weekly
/// meeting is one time conflict, not one per week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairOverlap {
    pub owner: String,
    /// The two series, `first < second`.
    pub first: String,
    pub second: String,
    /// Indices of one overlapping block of each series (the earliest overlap), for display.
    pub example: (usize, usize),
    /// The overlapping spans (intersection of the two occurrences), sorted.
    pub spans: Vec<(Timestamp, Timestamp)>,
}

impl PairOverlap {
    /// Identifies the pair, whatever the times: an open conflict for it is not reported again.
    pub fn key(&self) -> String {
        format!("{}|{}", self.first, self.second)
    }

    /// Identifies the pair *and* where they overlap: an accepted overlap is reported again only when
    /// this changes (one of the events moved).
    pub fn fingerprint(&self) -> String {
        let text: String = self
            .spans
            .iter()
            .map(|(a, b)| format!("{}-{};", a.as_second(), b.as_second()))
            .collect();
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{}:{hash:016x}", self.spans.len())
    }
}

/// The overlaps of [`find_overlaps`], grouped by pair of series.
pub fn overlapping_pairs(blocks: &[BusyBlock]) -> Vec<PairOverlap> {
    overlapping_pairs_in(blocks, TimeScope::All)
}

/// [`overlapping_pairs`] restricted to pairs with a series in `scope` (see [`find_overlaps_in`]).
pub fn overlapping_pairs_in(blocks: &[BusyBlock], scope: TimeScope<'_>) -> Vec<PairOverlap> {
    let mut pairs: std::collections::BTreeMap<(String, String, String), PairOverlap> =
        std::collections::BTreeMap::new();
    for o in find_overlaps_in(blocks, scope) {
        let (a, b) = (&blocks[o.first], &blocks[o.second]);
        let (x, y, ix, iy) = if a.series <= b.series {
            (a, b, o.first, o.second)
        } else {
            (b, a, o.second, o.first)
        };
        let span = (x.start.max(y.start), x.end.min(y.end));
        let entry = pairs
            .entry((x.owner.clone(), x.series.clone(), y.series.clone()))
            .or_insert_with(|| PairOverlap {
                owner: x.owner.clone(),
                first: x.series.clone(),
                second: y.series.clone(),
                example: (ix, iy),
                spans: Vec::new(),
            });
        if span.0 < entry.spans.first().map_or(span.0, |s| s.0) {
            entry.example = (ix, iy);
        }
        entry.spans.push(span);
    }
    pairs
        .into_values()
        .map(|mut p| {
            p.spans.sort();
            p.spans.dedup();
            p
        })
        .collect()
}

/// A time conflict already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownTimeConflict {
    pub id: String,
    pub owner: String,
    pub key: String,
    pub fingerprint: String,
    pub open: bool,
    /// Resolved by accepting the overlap (`keep_both`, by an admin or by the policy).
    pub accepted: bool,
}

/// What a detection run does with the stored time conflicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeReconciliation {
    /// Indices into the pairs: overlaps to report as new conflicts.
    pub report: Vec<usize>,
    /// Ids of open conflicts of this owner whose overlap is gone: they close.
    pub close: Vec<String>,
    /// New overlaps beyond the cap of one detection, not reported this time (the next detection that
    /// covers them finds them again).
    pub deferred: usize,
}

/// Which pairs a detection saw whole.
#[derive(Debug, Clone, Copy)]
pub enum TimeScope<'a> {
    /// Every occurrence of the owner in the window: every pair is known, absent ones are gone.
    All,
    /// The occurrences of these series and everything that overlaps them: only pairs with one of them
    /// are known (the others were not looked at, so they are neither reported nor closed).
    Series(&'a std::collections::BTreeSet<String>),
}

impl TimeScope<'_> {
    fn covers_key(&self, key: &str) -> bool {
        match self {
            TimeScope::All => true,
            TimeScope::Series(series) => key.split('|').any(|s| series.contains(s)),
        }
    }
}

/// Deduplicates detection: a pair with an open conflict is not reported again, an accepted overlap is
/// reported again only when its fingerprint changed, and an open conflict of `owner` whose pair no
/// longer overlaps closes. Only what `scope` saw is decided; at most `max_report` new overlaps are
/// reported (the rest are counted in `deferred`). Linear in pairs + known.
pub fn reconcile_time(
    owner: &str,
    pairs: &[PairOverlap],
    known: &[KnownTimeConflict],
    scope: TimeScope<'_>,
    max_report: usize,
) -> TimeReconciliation {
    use std::collections::{BTreeSet, HashMap};
    let mut by_key: HashMap<&str, Vec<&KnownTimeConflict>> = HashMap::new();
    for k in known {
        by_key.entry(k.key.as_str()).or_default().push(k);
    }
    let mut out = TimeReconciliation::default();
    let mut current: BTreeSet<String> = BTreeSet::new();
    for (i, pair) in pairs.iter().enumerate() {
        let key = pair.key();
        if !scope.covers_key(&key) {
            continue;
        }
        let fingerprint = pair.fingerprint();
        let stored = by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let open = stored.iter().any(|k| k.open);
        let accepted = stored
            .iter()
            .any(|k| k.accepted && k.fingerprint == fingerprint);
        if !open && !accepted {
            if out.report.len() < max_report {
                out.report.push(i);
            } else {
                out.deferred += 1;
            }
        }
        current.insert(key);
    }
    out.close = known
        .iter()
        .filter(|k| {
            k.open && k.owner == owner && scope.covers_key(&k.key) && !current.contains(&k.key)
        })
        .map(|k| k.id.clone())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> Timestamp {
        Timestamp::from_second(h * 3600).unwrap()
    }

    fn block(owner: &str, series: &str, start: i64, end: i64, transparent: bool) -> BusyBlock {
        BusyBlock {
            owner: owner.into(),
            series: series.into(),
            recurrence_id: None,
            start: at(start),
            end: at(end),
            transparent,
        }
    }

    #[test]
    fn overlapping_busy_events_of_one_owner_conflict() {
        let blocks = [
            block("ann", "a", 9, 11, false),
            block("ann", "b", 10, 12, false),
            block("ann", "c", 12, 13, false), // touches b: no overlap
            block("bob", "d", 10, 12, false), // another owner
            block("ann", "e", 9, 17, true),   // free: never blocks
        ];
        assert_eq!(
            find_overlaps(&blocks),
            vec![Overlap {
                first: 0,
                second: 1
            }]
        );
    }

    #[test]
    fn occurrences_of_one_series_do_not_conflict_with_each_other() {
        let blocks = [
            block("ann", "a", 9, 11, false),
            block("ann", "a", 10, 12, false),
        ];
        assert!(find_overlaps(&blocks).is_empty());
    }

    #[test]
    fn matches_the_quadratic_definition() {
        // A deterministic pseudo-random mix checked against the obvious O(n²) definition.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        let blocks: Vec<BusyBlock> = (0..300)
            .map(|i| {
                let start = next() % 200;
                let len = next() % 5;
                let owner = ["ann", "bob"][(next() % 2) as usize];
                block(
                    owner,
                    &format!("s{}", i % 250),
                    start,
                    start + len,
                    next() % 7 == 0,
                )
            })
            .collect();
        let mut fast: Vec<(usize, usize)> = find_overlaps(&blocks)
            .into_iter()
            .map(|o| (o.first.min(o.second), o.first.max(o.second)))
            .collect();
        fast.sort();
        let mut slow = Vec::new();
        for i in 0..blocks.len() {
            for j in i + 1..blocks.len() {
                let (a, b) = (&blocks[i], &blocks[j]);
                if a.owner == b.owner
                    && a.series != b.series
                    && !a.transparent
                    && !b.transparent
                    && a.start < a.end
                    && b.start < b.end
                    && a.start < b.end
                    && b.start < a.end
                {
                    slow.push((i, j));
                }
            }
        }
        assert_eq!(fast, slow);
    }

    /// A scoped pairing finds exactly the pairs of the whole pairing that involve a scoped series.
    #[test]
    fn scoped_pairs_are_the_pairs_involving_the_scope() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let blocks: Vec<BusyBlock> = (0..600)
            .map(|i| {
                let start = (next() % 200) as i64;
                let len = (next() % 6) as i64;
                let owner = ["ann", "bob"][(next() % 2) as usize];
                block(
                    owner,
                    &format!("s{}", i % 90),
                    start,
                    start + len,
                    next() % 9 == 0,
                )
            })
            .collect();
        for picked in [
            vec![],
            vec!["s1"],
            vec!["s2", "s3", "s40"],
            vec!["s89", "nope"],
        ] {
            let scope: std::collections::BTreeSet<String> =
                picked.iter().map(|s| (*s).to_owned()).collect();
            let expected: Vec<PairOverlap> = overlapping_pairs(&blocks)
                .into_iter()
                .filter(|p| scope.contains(&p.first) || scope.contains(&p.second))
                .collect();
            let scoped = overlapping_pairs_in(&blocks, TimeScope::Series(&scope));
            assert_eq!(scoped, expected, "scope {picked:?}");
            assert!(picked.is_empty() || !scoped.is_empty() || expected.is_empty());
        }
        assert!(
            overlapping_pairs_in(&blocks, TimeScope::Series(&["s1".to_owned()].into())).len()
                < overlapping_pairs(&blocks).len()
        );
    }

    #[test]
    fn overlaps_group_by_pair_and_deduplicate() {
        // A weekly series "w" overlapping a daily series "d" on three days, and a one-off "o".
        let mut blocks = Vec::new();
        for week in 0..3 {
            blocks.push(block("ann", "w", week * 168 + 9, week * 168 + 11, false));
        }
        for day in 0..21 {
            blocks.push(block("ann", "d", day * 24 + 10, day * 24 + 12, false));
        }
        blocks.push(block("ann", "o", 500, 501, false));
        let pairs = overlapping_pairs(&blocks);
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        let pair = &pairs[0];
        assert_eq!((pair.first.as_str(), pair.second.as_str()), ("d", "w"));
        assert_eq!(pair.spans.len(), 3);
        assert_eq!(pair.spans[0], (at(10), at(11)));
        assert_eq!(blocks[pair.example.0].series, "d");
        assert_eq!(blocks[pair.example.1].start, at(9));

        let known = |open: bool, accepted: bool, fingerprint: &str| KnownTimeConflict {
            id: "c1".into(),
            owner: "ann".into(),
            key: pair.key(),
            fingerprint: fingerprint.into(),
            open,
            accepted,
        };
        // New: reported.
        assert_eq!(
            reconcile_time("ann", &pairs, &[], TimeScope::All, 10).report,
            vec![0]
        );
        // Open: not reported again, not closed.
        let r = reconcile_time(
            "ann",
            &pairs,
            &[known(true, false, "x")],
            TimeScope::All,
            10,
        );
        assert!(r.report.is_empty() && r.close.is_empty());
        // Accepted with the same fingerprint: quiet; after one event moved: reported again.
        assert!(
            reconcile_time(
                "ann",
                &pairs,
                &[known(false, true, &pair.fingerprint())],
                TimeScope::All,
                10
            )
            .report
            .is_empty()
        );
        assert_eq!(
            reconcile_time(
                "ann",
                &pairs,
                &[known(false, true, "moved")],
                TimeScope::All,
                10
            )
            .report,
            vec![0]
        );
        // Closed because the overlap was gone earlier: an overlap again is a new conflict.
        assert_eq!(
            reconcile_time(
                "ann",
                &pairs,
                &[known(false, false, &pair.fingerprint())],
                TimeScope::All,
                10
            )
            .report,
            vec![0]
        );
        // The overlap disappeared: the open conflict closes (only the owner's).
        let r = reconcile_time("ann", &[], &[known(true, false, "x")], TimeScope::All, 10);
        assert_eq!(r.close, vec!["c1".to_owned()]);
        assert!(
            reconcile_time("bob", &[], &[known(true, false, "x")], TimeScope::All, 10)
                .close
                .is_empty()
        );
    }

    #[test]
    fn a_scoped_detection_decides_only_pairs_of_its_series_and_caps_reports() {
        let blocks = [
            block("ann", "a", 9, 11, false),
            block("ann", "b", 10, 12, false),
            block("ann", "c", 10, 13, false),
        ];
        let pairs = overlapping_pairs(&blocks);
        assert_eq!(pairs.len(), 3, "a-b, a-c, b-c");
        let stale = |key: &str, id: &str| KnownTimeConflict {
            id: id.into(),
            owner: "ann".into(),
            key: key.into(),
            fingerprint: "old".into(),
            open: true,
            accepted: false,
        };
        // Series `a` changed: its pairs are decided, b-c is not looked at (neither reported nor closed),
        // and an open conflict of `a` with a series it no longer overlaps closes; one of `d`/`e` stays.
        let scope: std::collections::BTreeSet<String> = ["a".to_owned()].into();
        let known = [stale("a|z", "gone"), stale("d|e", "untouched")];
        let r = reconcile_time("ann", &pairs, &known, TimeScope::Series(&scope), 10);
        let reported: Vec<String> = r.report.iter().map(|&i| pairs[i].key()).collect();
        assert_eq!(reported, vec!["a|b".to_owned(), "a|c".to_owned()]);
        assert_eq!(r.close, vec!["gone".to_owned()]);
        // The whole window seen: the untouched conflict's pair is absent, so it closes too.
        let r = reconcile_time("ann", &pairs, &known, TimeScope::All, 10);
        assert_eq!(r.report.len(), 3);
        assert_eq!(r.close, vec!["gone".to_owned(), "untouched".to_owned()]);
        // The cap: two reported, the third counted as deferred.
        let r = reconcile_time("ann", &pairs, &[], TimeScope::All, 2);
        assert_eq!((r.report.len(), r.deferred), (2, 1));
    }
}
