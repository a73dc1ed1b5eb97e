//! The last-modified gate: one cheap `PROPFIND Depth: 0` for the collection's `DAV:getlastmodified`
//! lets a sync skip a `sync-collection` listing that would find nothing.
//!
//! Why: Radicale computes every other change indicator it offers (`CS:getctag`, `DAV:sync-token`,
//! the collection's `DAV:getetag`) by hashing the whole collection, 0.5–1.3 s at 10,000 items, and
//! its `sync-collection` REPORT costs the same. Its collection date is the newest modification time
//! of the collection's folder and of each item file: 0.05–0.08 s at 10,000 items. The folder's time
//! moves when an item is added or removed, a file's when it is rewritten, so the date moves with
//! every change of a member.
//!
//! RFC 4918 promises nothing of the kind for collections (SabreDAV leaves the property out; other
//! servers may keep the date of the collection's own properties), so the gate is armed only for a
//! server known to behave: Radicale's storage, recognised by the namespace of its sync tokens. Every
//! other server is read as before.
//!
//! Known means that the cursor holds one of those tokens. A first listing has none, so it does not
//! ask the date: on any other server that request would buy nothing. On Radicale the read after it
//! asks (the token says whose server it is) and arms the gate; the cost is one more listing per
//! link, once.
//!
//! A listing is skipped only when all of these hold:
//! - the date equals the one read just before the listing the cursor's token came from;
//! - that date had *settled*: the server's clock (its `Date` header) was at least [`SETTLE`] past it
//!   when it was read. The date has one-second resolution, so a change made later in the same second
//!   would not move it; a settled date guarantees every later change carries a later second. The same
//!   rule keeps the gate shut while the server's clock runs behind the dates it wrote (a clock step);
//! - the last listing is less than [`LIST_AT_LEAST_EVERY`] old by the server's clock: a safety net
//!   against writers that bypass the server and keep old file times.
//!
//! A tripwire: a listing that finds changes although the settled date did not move (the safety-net
//! listing can) turns the gate off for the link for good ([`Gate::Refuted`]).
//!
//! A collection that just changed is not asked its date ([`Gate::Busy`]): after an incremental
//! listing that found changes, the next read lists straight away. Edits come in bursts (a person at
//! work in their calendar, a script), and right after a change the date could only have said "moved"
//! (or not settled yet), so reading it would add a request to every read of a busy calendar. The
//! first listing that finds nothing hands the link back to the gate: the read after it takes the date
//! again before listing, and the reads after that can skip.

use jiff::SignedDuration;

use crate::types::Probe;

/// How far the server's clock must be past the recorded date when it was read (see the module).
pub const SETTLE: SignedDuration = SignedDuration::from_secs(2);

/// The longest a gate skips listings before one runs anyway.
pub const LIST_AT_LEAST_EVERY: SignedDuration = SignedDuration::from_mins(15);

/// The namespace of the sync tokens of Radicale's storage, whose collection date is known to move
/// with every member (see the module).
const RADICALE_TOKEN_PREFIX: &str = "http://radicale.org/ns/sync/";

/// One reading of a collection's date, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The collection's `DAV:getlastmodified`.
    pub modified: i64,
    /// The server's clock when it answered (its `Date` header).
    pub server_now: i64,
}

/// What a cursor remembers of the collection's date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The reading taken just before the listing the cursor's token came from.
    Armed(Reading),
    /// A listing found changes the date did not announce: this link never skips a listing again.
    Refuted,
    /// The last incremental listing found changes: the next read lists without asking the date.
    Busy,
}

/// Whether the server behind `token` is known to move its collection date with every member.
pub fn trusted(token: &str) -> bool {
    token.starts_with(RADICALE_TOKEN_PREFIX)
}

fn settled(reading: &Reading) -> bool {
    reading.server_now - reading.modified >= SETTLE.as_secs()
}

impl Gate {
    /// Whether the collection is known unchanged since the listing this gate was armed for, given a
    /// reading taken now.
    pub fn unchanged(&self, now: &Reading) -> bool {
        match self {
            Gate::Armed(then) => {
                now.modified == then.modified
                    && settled(then)
                    && now.server_now >= then.server_now
                    && now.server_now - then.server_now < LIST_AT_LEAST_EVERY.as_secs()
            }
            Gate::Refuted | Gate::Busy => false,
        }
    }

    /// The scheduler's answer for a link whose cursor holds this gate, from the date read now.
    /// Never from the token: on Radicale it costs what a listing costs, and answering "unchanged"
    /// from it would keep a cursor that cannot gate for as long as the link stays quiet, every poll
    /// paying that hash. So whatever the date cannot decide is `Unknown`, which syncs, and that
    /// sync's listing re-arms the gate.
    pub fn probe(&self, now: &Reading) -> Probe {
        if self.unchanged(now) {
            Probe::Unchanged
        } else if self.moved(now) {
            Probe::Changed
        } else {
            // The same date, but it had not settled when the listing read it (a change later in
            // that second would not move it), the safety-net listing is due, or the server's clock
            // went back; or a gate that is not armed.
            Probe::Unknown
        }
    }

    /// Whether the gate was armed with a settled date, so that a reading can decide.
    #[cfg(test)]
    pub fn settled(&self) -> bool {
        match self {
            Gate::Armed(then) => settled(then),
            Gate::Refuted | Gate::Busy => false,
        }
    }

    /// Whether the date moved since the listing this gate was armed for: something changed, or
    /// the server rewrote a member as it was.
    pub fn moved(&self, now: &Reading) -> bool {
        match self {
            Gate::Armed(then) => now.modified != then.modified,
            Gate::Refuted | Gate::Busy => false,
        }
    }

    /// The gate to keep with the token of a listing: `previous` is the cursor's gate, `reading` was
    /// taken just before the listing (if any), `found_changes` says whether an incremental listing
    /// named any item (a complete listing passes `false`: it names everything), and `token` is the
    /// listing's new token.
    pub fn after_listing(
        previous: Option<Gate>,
        reading: Option<Reading>,
        found_changes: bool,
        token: &str,
    ) -> Option<Gate> {
        match previous {
            Some(Gate::Refuted) => return Some(Gate::Refuted),
            Some(Gate::Armed(then))
                if found_changes
                    && settled(&then)
                    && reading.is_some_and(|now| now.modified == then.modified) =>
            {
                return Some(Gate::Refuted);
            }
            _ => {}
        }
        if !trusted(token) {
            return None;
        }
        if found_changes {
            return Some(Gate::Busy);
        }
        reading.map(Gate::Armed)
    }

    /// The gate's part of a cursor (`lm:<modified>:<server_now>`, `lm-off` or `lm-busy`).
    pub fn encode(&self) -> String {
        match self {
            Gate::Armed(r) => format!("lm:{}:{}", r.modified, r.server_now),
            Gate::Refuted => "lm-off".to_owned(),
            Gate::Busy => "lm-busy".to_owned(),
        }
    }

    pub fn decode(text: &str) -> Option<Gate> {
        match text {
            "lm-off" => return Some(Gate::Refuted),
            "lm-busy" => return Some(Gate::Busy),
            _ => {}
        }
        let (modified, server_now) = text.strip_prefix("lm:")?.split_once(':')?;
        Some(Gate::Armed(Reading {
            modified: modified.parse().ok()?,
            server_now: server_now.parse().ok()?,
        }))
    }
}

/// Parses an HTTP date (`DAV:getlastmodified`, the `Date` header) into Unix seconds.
pub fn http_date(text: &str) -> Option<i64> {
    let when = httpdate::parse_http_date(text.trim()).ok()?;
    let secs = when.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RADICALE: &str = "http://radicale.org/ns/sync/abc";

    fn reading(modified: i64, server_now: i64) -> Reading {
        Reading {
            modified,
            server_now,
        }
    }

    #[test]
    fn a_settled_unmoved_date_skips_the_listing() {
        let gate = Gate::Armed(reading(1_000, 1_002));
        assert!(gate.settled());
        assert!(gate.unchanged(&reading(1_000, 1_010)));
    }

    #[test]
    fn the_probe_answers_from_the_date_and_leaves_the_rest_to_a_sync() {
        let settled = Gate::Armed(reading(1_000, 1_002));
        assert_eq!(settled.probe(&reading(1_000, 1_010)), Probe::Unchanged);
        assert_eq!(settled.probe(&reading(1_001, 1_010)), Probe::Changed);
        // Due for the safety-net listing.
        assert_eq!(settled.probe(&reading(1_000, 2_000)), Probe::Unknown);
        // Recorded before it settled: the same date proves nothing, a sync re-arms the gate.
        let unsettled = Gate::Armed(reading(1_000, 1_000));
        assert_eq!(unsettled.probe(&reading(1_000, 1_010)), Probe::Unknown);
        assert_eq!(unsettled.probe(&reading(1_001, 1_010)), Probe::Changed);
        for other in [Gate::Busy, Gate::Refuted] {
            assert_eq!(other.probe(&reading(1_001, 1_010)), Probe::Unknown);
        }
    }

    #[test]
    fn a_moved_date_lists() {
        let gate = Gate::Armed(reading(1_000, 1_002));
        assert!(!gate.unchanged(&reading(1_001, 1_010)));
        assert!(gate.moved(&reading(1_001, 1_010)));
        // A date that went backwards (a restored backup) lists too.
        assert!(!gate.unchanged(&reading(999, 1_010)));
        assert!(gate.moved(&reading(999, 1_010)));
        assert!(!gate.moved(&reading(1_000, 1_010)));
        assert!(!Gate::Refuted.moved(&reading(1_001, 1_010)));
    }

    #[test]
    fn a_date_read_within_its_own_second_or_the_next_lists() {
        // Read in its own second, or in the next one (the `Date` header is rounded down too, so
        // the read may have been at 1_000.9): a change after the read may still carry 1_000.
        for unsettled in [
            Gate::Armed(reading(1_000, 1_000)),
            Gate::Armed(reading(1_000, 1_001)),
        ] {
            assert!(!unsettled.settled());
            assert!(!unsettled.unchanged(&reading(1_000, 1_100)));
        }
        assert!(!Gate::Refuted.settled());
    }

    #[test]
    fn the_safety_net_lists_after_the_interval_and_when_the_clock_went_back() {
        let gate = Gate::Armed(reading(1_000, 2_000));
        let limit = LIST_AT_LEAST_EVERY.as_secs();
        assert!(gate.unchanged(&reading(1_000, 2_000 + limit - 1)));
        assert!(!gate.unchanged(&reading(1_000, 2_000 + limit)));
        assert!(!gate.unchanged(&reading(1_000, 1_999)));
    }

    #[test]
    fn only_radicale_tokens_arm_the_gate() {
        let now = Some(reading(1_000, 1_005));
        assert_eq!(
            Gate::after_listing(None, now, false, RADICALE),
            Some(Gate::Armed(reading(1_000, 1_005)))
        );
        assert_eq!(Gate::after_listing(None, now, false, "a1b2c3"), None);
        assert_eq!(
            Gate::after_listing(None, now, false, "http://example.com/ns/sync/1"),
            None
        );
        // No date: no gate.
        assert_eq!(Gate::after_listing(None, None, false, RADICALE), None);
    }

    #[test]
    fn changes_behind_a_settled_unmoved_date_refute_the_gate_for_good() {
        let settled = Some(Gate::Armed(reading(1_000, 1_005)));
        let unmoved = Some(reading(1_000, 3_000));
        assert_eq!(
            Gate::after_listing(settled, unmoved, true, RADICALE),
            Some(Gate::Refuted)
        );
        assert_eq!(
            Gate::after_listing(
                Some(Gate::Refuted),
                Some(reading(5_000, 5_010)),
                true,
                RADICALE
            ),
            Some(Gate::Refuted)
        );
        assert!(!Gate::Refuted.unchanged(&reading(1_000, 1_010)));
        // Changes behind an unsettled date are the same-second case the rule exists for.
        let unsettled = Some(Gate::Armed(reading(1_000, 1_001)));
        assert_eq!(
            Gate::after_listing(unsettled, unmoved, true, RADICALE),
            Some(Gate::Busy)
        );
        // A moved date announced them.
        assert_eq!(
            Gate::after_listing(settled, Some(reading(2_000, 3_000)), true, RADICALE),
            Some(Gate::Busy)
        );
        // No changes, nothing to learn.
        assert_eq!(
            Gate::after_listing(settled, unmoved, false, RADICALE),
            Some(Gate::Armed(reading(1_000, 3_000)))
        );
    }

    #[test]
    fn a_busy_collection_lists_without_its_date_until_a_listing_finds_nothing() {
        // Changes found: busy, whatever the gate was.
        let armed = Some(Gate::Armed(reading(1_000, 1_005)));
        let moved = Some(reading(2_000, 2_001));
        assert_eq!(
            Gate::after_listing(armed, moved, true, RADICALE),
            Some(Gate::Busy)
        );
        assert_eq!(
            Gate::after_listing(Some(Gate::Busy), None, true, RADICALE),
            Some(Gate::Busy)
        );
        // Nothing found without a date read first: no gate, so the next read takes the date again.
        assert_eq!(
            Gate::after_listing(Some(Gate::Busy), None, false, RADICALE),
            None
        );
        // A busy gate never skips, and leaves the probe to the token.
        assert!(!Gate::Busy.unchanged(&reading(2_000, 9_000)));
        assert!(!Gate::Busy.settled());
        assert!(!Gate::Busy.moved(&reading(2_000, 9_000)));
        // Servers not trusted with the date are never busy either.
        assert_eq!(Gate::after_listing(None, moved, true, "a1b2c3"), None);
    }

    #[test]
    fn gates_round_trip_and_reject_garbage() {
        for gate in [
            Gate::Armed(reading(-5, 1_700_000_000)),
            Gate::Refuted,
            Gate::Busy,
        ] {
            assert_eq!(Gate::decode(&gate.encode()), Some(gate));
        }
        for bad in ["", "lm:", "lm:1", "lm:x:2", "lm:1:2:3", "lm-on", "sync:abc"] {
            assert_eq!(Gate::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            http_date("Sat, 21 Nov 2026 20:54:31 GMT"),
            Some(1_795_294_471)
        );
        assert_eq!(http_date("yesterday"), None);
    }
}
