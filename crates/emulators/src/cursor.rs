//! Opaque delta / sync / page tokens.
//!
//! A token is the base64url of a small JSON record: which mailbox and calendar, the window or filters of the
//! initial request, the sequence range being walked, and the mailbox epoch it was issued under. Clients must
//! treat them as opaque; the emulator rejects anything it cannot decode or that belongs to an older epoch.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// mailbox index
    pub m: usize,
    /// calendar id
    pub c: String,
    /// window start / end (unix seconds) for Graph calendarView delta; Google timeMin/timeMax for page tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub we: Option<i64>,
    /// Changes strictly after this sequence belong to this round (0 = initial round: current state only).
    pub from: u64,
    /// Log position already served within this round.
    pub after: u64,
    /// Last sequence of this round (the snapshot taken by its first page).
    pub upto: u64,
    /// page size
    pub ps: usize,
    /// mailbox epoch
    pub ep: u64,
    /// provider-specific filter flags (Google: singleEvents, showDeleted...)
    #[serde(default)]
    pub f: u32,
    /// offset for listings that are not walked in log order (Google orderBy=startTime)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off: Option<usize>,
    /// A page that ended inside one log entry: (its sequence, items of it already served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<(u64, usize)>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(token: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let mut cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
        cursor.ps = cursor.ps.clamp(1, 10_000);
        Some(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = Cursor {
            m: 0,
            c: "cal".into(),
            ws: Some(1),
            we: Some(2),
            from: 3,
            after: 4,
            upto: 5,
            ps: 6,
            ep: 7,
            f: 8,
            off: None,
            part: Some((9, 2)),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a token!"), None);
        assert_eq!(Cursor::decode("e30"), None);
    }
}
