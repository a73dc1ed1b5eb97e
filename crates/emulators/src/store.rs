//! The in-memory mailbox state shared by both emulators.
//!
//! Every write gives the touched record a fresh, globally monotonic sequence number and moves it to that
//! number in its calendar's change log (`log`: sequence → record id). A delta or sync token is therefore just
//! "calendar + filters + the sequence it has seen", and an incremental page is a range scan of the log: it
//! costs O(changes since the token), never O(mailbox). Deleted records stay in the log as tombstones so the
//! next incremental round can report them; `compact` drops them and raises the floor below which tokens
//! are answered with the provider's "full sync required" error.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use serde_json::{Map, Value};

/// What a stored record is within a recurring series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Single,
    Master,
    /// A modified or cancelled instance of a series, keyed by its instance id.
    Exception,
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    /// The provider-native JSON representation, without the fields the emulator computes on output.
    pub body: Map<String, Value>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub all_day: bool,
    /// IANA name of the zone the event was created in (expansion and display zone).
    pub zone: String,
    pub kind: Kind,
    pub master_id: Option<String>,
    pub original_start: Option<Timestamp>,
    /// Tombstone: deleted single/master, or a cancelled instance of a live series.
    pub deleted: bool,
    pub seq: u64,
    pub created: Timestamp,
    pub modified: Timestamp,
}

impl StoredEvent {
    pub fn overlaps(&self, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
        from.is_none_or(|f| self.end > f) && to.is_none_or(|t| self.start < t)
    }
}

#[derive(Debug, Clone)]
pub struct Calendar {
    pub id: String,
    pub meta: Map<String, Value>,
    pub events: HashMap<String, StoredEvent>,
    pub log: BTreeMap<u64, String>,
    /// master id → ids of its stored exceptions (modified or cancelled instances).
    pub exceptions: HashMap<String, BTreeSet<String>>,
    /// client-supplied transaction ids (Graph) → event id, for idempotent creates.
    pub transactions: HashMap<String, String>,
    /// Tokens whose sequence is below this were issued before tombstones were purged.
    pub floor: u64,
}

impl Calendar {
    pub fn new(id: String, meta: Map<String, Value>) -> Self {
        Self {
            id,
            meta,
            events: HashMap::new(),
            log: BTreeMap::new(),
            exceptions: HashMap::new(),
            transactions: HashMap::new(),
            floor: 0,
        }
    }

    pub fn live_count(&self) -> usize {
        self.events.values().filter(|e| !e.deleted).count()
    }
}

#[derive(Debug, Clone)]
pub struct Mailbox {
    pub user_id: String,
    pub address: String,
    pub name: String,
    pub calendars: Vec<Calendar>,
    /// Bumped to invalidate every delta/sync token of this mailbox (answered with 410).
    pub epoch: u64,
}

impl Mailbox {
    pub fn calendar(&self, id: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.id == id)
    }
    pub fn calendar_mut(&mut self, id: &str) -> Option<&mut Calendar> {
        self.calendars.iter_mut().find(|c| c.id == id)
    }
    pub fn default_calendar_id(&self) -> Option<String> {
        self.calendars.first().map(|c| c.id.clone())
    }
    /// The calendar holding an event id (Graph addresses events without their calendar).
    pub fn find_event(&self, event_id: &str) -> Option<(usize, &StoredEvent)> {
        self.calendars
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.events.get(event_id).map(|e| (i, e)))
    }
}

/// A change that subscriptions and watch channels are told about.
#[derive(Debug, Clone)]
pub struct Change {
    pub mailbox: usize,
    pub calendar: String,
    pub event_id: String,
    pub change_type: ChangeType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Default)]
pub struct Store {
    pub mailboxes: Vec<Mailbox>,
    pub seq: u64,
    /// Counter behind generated ids (deterministic for a given seed).
    pub ids: u64,
    pub id_seed: u64,
    /// Changes not yet handed to the notifier.
    pub pending: Vec<Change>,
}

impl Store {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh deterministic id: 32 hex digits derived from the seed and a counter.
    pub fn next_hex_id(&mut self) -> String {
        use sha2::{Digest, Sha256};
        self.ids += 1;
        let digest = Sha256::digest([self.id_seed.to_be_bytes(), self.ids.to_be_bytes()].concat());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn mailbox_index(&self, key: &str) -> Option<usize> {
        self.mailboxes
            .iter()
            .position(|m| m.user_id == key || m.address.eq_ignore_ascii_case(key))
    }

    /// Writes (insert or replace) an event and moves it to the head of the change log.
    pub fn put(
        &mut self,
        mailbox: usize,
        calendar: &str,
        mut event: StoredEvent,
        change: ChangeType,
    ) -> Option<()> {
        let seq = self.next_seq();
        let mb = self.mailboxes.get_mut(mailbox)?;
        let cal = mb.calendar_mut(calendar)?;
        if let Some(old) = cal.events.get(&event.id) {
            cal.log.remove(&old.seq);
        }
        event.seq = seq;
        if event.kind == Kind::Exception
            && let Some(master) = &event.master_id
        {
            cal.exceptions
                .entry(master.clone())
                .or_default()
                .insert(event.id.clone());
        }
        cal.log.insert(seq, event.id.clone());
        let id = event.id.clone();
        cal.events.insert(id.clone(), event);
        self.pending.push(Change {
            mailbox,
            calendar: calendar.to_string(),
            event_id: id,
            change_type: change,
        });
        Some(())
    }

    /// Drops tombstones older than `before_seq` from every calendar of a mailbox; tokens from before that
    /// point can no longer be answered incrementally.
    pub fn compact(&mut self, mailbox: usize) {
        let upto = self.seq;
        if let Some(mb) = self.mailboxes.get_mut(mailbox) {
            for cal in &mut mb.calendars {
                // Cancelled instances of a live series stay: they are what keeps that instance from being
                // generated again.
                let live_master = |e: &StoredEvent| {
                    e.master_id
                        .as_ref()
                        .and_then(|m| cal.events.get(m))
                        .is_some_and(|m| !m.deleted)
                };
                let dead: Vec<(u64, String, Option<String>)> = cal
                    .events
                    .values()
                    .filter(|e| e.deleted && !(e.kind == Kind::Exception && live_master(e)))
                    .map(|e| (e.seq, e.id.clone(), e.master_id.clone()))
                    .collect();
                for (seq, id, master) in dead {
                    cal.log.remove(&seq);
                    cal.events.remove(&id);
                    cal.transactions.retain(|_, v| v != &id);
                    if let Some(master) = master
                        && let Some(set) = cal.exceptions.get_mut(&master)
                    {
                        set.remove(&id);
                    }
                }
                cal.exceptions.retain(|_, set| !set.is_empty());
                cal.floor = upto;
            }
        }
    }
}

/// Instance ids of a series, the convention Google documents as observed (`{master}_{YYYYMMDDTHHMMSSZ}`,
/// all-day `{master}_{YYYYMMDD}`); the Graph emulator uses the same scheme since its ids are opaque anyway.
pub fn instance_id(master: &str, original_start: Timestamp, all_day: bool) -> String {
    let dt = original_start.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    if all_day {
        format!("{master}_{:04}{:02}{:02}", dt.year(), dt.month(), dt.day())
    } else {
        format!(
            "{master}_{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )
    }
}
