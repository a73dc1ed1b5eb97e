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
            if blocks[j].series != block.series {
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
}
