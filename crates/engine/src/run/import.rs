//! Local creates of new remote items in chunks: what a first sync of a full calendar (an import) is
//! made of. One at a time, each create costs a UID lookup and three transactions (its write-ahead row,
//! its series with occurrences and change entry, its pair): about 13 statements, and a 10,000-event
//! import waited on the store's round trips. A chunk costs one lookup and three transactions, each
//! written with multi-row statements, in the order the one-at-a-time path keeps per item:
//!
//! 1. which of the chunk's UIDs live series hold (`Store::get_series_by_uids`): such a series is
//!    adopted when it holds the item's content (a killed run's create) and refused otherwise, per item;
//! 2. the write-ahead rows of the chunk's new series (`Store::upsert_mappings`);
//! 3. the new series (`Store::create_series_batch`);
//! 4. the pairs of the whole chunk (`Store::upsert_pairs`).
//!
//! A process killed between two steps leaves what the next run recovers from already: write-ahead rows
//! without their series (dropped: the items are imported again), series without their pairs
//! (recognised by the write-ahead rows, or adopted by UID). A step that fails sends the chunk down the
//! one-at-a-time path (a failed pair step: only the recording), so a failing item is reported alone
//! and the others land, with the same counts and errors as one at a time.

use calbridge_store::{MappingUpsert, NewSeries};

use super::*;
use crate::pairs::{pair_row, write_ahead_row};

/// A `CreateLocal` of a remote item that is new (no restore) and alone in its group.
pub(super) struct PlainCreate {
    key: String,
    remote: RemoteId,
    version: RemoteVersion,
}

impl PlainCreate {
    /// The group's create when the group is one plain create; the group back otherwise.
    pub(super) fn of(key: String, group: Vec<Action>) -> Result<Self, (String, Vec<Action>)> {
        match group.as_slice() {
            [
                Action::CreateLocal {
                    remote,
                    version,
                    restore: None,
                },
            ] => Ok(Self {
                remote: remote.clone(),
                version: version.clone(),
                key,
            }),
            _ => Err((key, group)),
        }
    }

    fn action(&self) -> Action {
        Action::CreateLocal {
            remote: self.remote.clone(),
            version: self.version.clone(),
            restore: None,
        }
    }
}

/// What the plan's groups are executed against (read only for `VerifyRemote`, which a plain create
/// never is; handed through to the one-at-a-time path).
#[derive(Clone, Copy)]
pub(super) struct Planned<'p> {
    pub local_changes: &'p [LocalChange],
    pub remote: &'p RemoteChanges,
    pub local_by_uid: &'p BTreeMap<Uid, LocalSeries>,
}

/// An item of a chunk once read: its create, UID and state.
struct Item {
    create: PlainCreate,
    uid: String,
    state: ItemState,
}

/// An item whose local series exists (adopted, or created by the chunk): its pair is recorded.
struct Landed {
    item: Item,
    series: SeriesId,
    version: i64,
}

impl Runner<'_> {
    /// Carries out `creates` (plain creates, in plan order) as one chunk, or one at a time when the
    /// chunk is too small to gain anything or a step fails.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(super) async fn create_locals(
        &mut self,
        mut creates: Vec<PlainCreate>,
        planned: Planned<'_>,
    ) {
        if creates.is_empty() || self.crash_point() {
            return;
        }
        // The test-only crash lands after as many actions as one at a time: the chunk stops there
        // (after its series, before its pairs: the worst moment, as for a single create).
        if let Some(limit) = self.ctx.config.crash_after_actions {
            creates.truncate(limit.saturating_sub(self.executed));
        }
        if creates.len() < 2 {
            return self.one_at_a_time(creates, planned).await;
        }
        let mut items = Vec::with_capacity(creates.len());
        let mut parsed = Vec::with_capacity(creates.len());
        for create in creates {
            match self.remote_parsed(&create.remote) {
                Ok(p) => {
                    items.push(Item {
                        uid: p.series.uid().to_owned(),
                        state: p.state(&self.floating),
                        create,
                    });
                    parsed.push(p);
                }
                Err(e) => self.failed(&create, e),
            }
        }
        let uids: Vec<String> = items.iter().map(|i| i.uid.clone()).collect();
        if uids.iter().collect::<HashSet<_>>().len() < uids.len() {
            // One UID twice: the second meets the first one's series, which only one at a time sees.
            return self.one_at_a_time(creates_of(items), planned).await;
        }

        // 1. The UIDs live series already hold.
        let store = self.ctx.store;
        let (tenant, calendar) = (self.ctx.tenant, self.ctx.connection.calendar_id);
        let existing = match store.get_series_by_uids(tenant, calendar, &uids).await {
            Ok(rows) => rows
                .into_iter()
                .map(|row| (row.uid.clone(), row))
                .collect::<HashMap<_, _>>(),
            Err(e) => return self.fall_back("read", e, items, planned).await,
        };
        let mut landed = Vec::with_capacity(items.len());
        let mut new = Vec::new();
        for (item, parsed) in items.into_iter().zip(parsed) {
            match existing.get(&item.uid) {
                Some(row) => match self.adopt(row, &item.uid, &item.state) {
                    Ok((series, version)) => landed.push(Landed {
                        series,
                        version,
                        item,
                    }),
                    Err(e) => self.failed(&item.create, e),
                },
                None => match self.new_series(&item, &parsed) {
                    Ok(rows) => new.push((item, rows)),
                    Err(e) => self.failed(&item.create, e),
                },
            }
        }

        // 2. The write-ahead rows of the series about to be created, 3. the series.
        if !new.is_empty() {
            let ahead: Vec<MappingUpsert> = new.iter().map(|(_, (row, _))| row.clone()).collect();
            if let Err(e) = store.upsert_mappings(tenant, ahead).await {
                let items = landed
                    .into_iter()
                    .map(|l| l.item)
                    .chain(new.into_iter().map(|n| n.0));
                return self
                    .fall_back("write_ahead", e, items.collect(), planned)
                    .await;
            }
            let (items, series): (Vec<Item>, Vec<NewSeries>) = new
                .into_iter()
                .map(|(item, (_, series))| (item, series))
                .unzip();
            match store.create_series_batch(tenant, series).await {
                Ok(rows) => landed.extend(items.into_iter().zip(rows).map(|(item, row)| Landed {
                    series: row.id,
                    version: row.version,
                    item,
                })),
                Err(e) => {
                    let items = landed.into_iter().map(|l| l.item).chain(items);
                    return self.fall_back("create", e, items.collect(), planned).await;
                }
            }
        }
        for l in &landed {
            self.touched_local.insert(l.series);
        }
        self.executed += landed.len();
        *self.counts.entry("create_local".into()).or_default() += landed.len() as u64;
        if self.crash_point() {
            return;
        }

        // 4. The pairs.
        let pairs: Vec<(String, Pending, i64)> = landed
            .into_iter()
            .map(|l| {
                let pending = Pending {
                    local: LocalId::new(l.series.to_string()),
                    remote: l.item.create.remote,
                    version: l.item.create.version,
                    uid: Uid::new(l.item.uid),
                    state: l.item.state,
                };
                (l.item.create.key, pending, l.version)
            })
            .collect();
        let (link, now) = (self.ctx.link.id, self.ctx.now);
        let rows: Result<Vec<MappingUpsert>, EngineError> = pairs
            .iter()
            .map(|(_, p, version)| pair_row(link, now, p, Some(*version)))
            .collect();
        let recorded = match rows {
            Ok(rows) => store
                .upsert_pairs(tenant, rows)
                .await
                .map_err(EngineError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::info!(error = %e, "recording a chunk of pairs failed; recording them one at a time");
            for (key, pending, version) in pairs {
                if let Err(e) = self.record_pair(pending, Some(version)).await {
                    self.error(&key, "record", e);
                }
            }
        }
    }

    /// The write-ahead row and the new series of an item no live series holds.
    fn new_series(
        &self,
        item: &Item,
        parsed: &Parsed,
    ) -> Result<(MappingUpsert, NewSeries), StepError> {
        let base = StoredBase {
            uid: Uid::new(&item.uid),
            state: item.state.clone(),
            intent: None,
            earlier: None,
        };
        let row = write_ahead_row(
            self.ctx.link.id,
            self.ctx.now,
            item.create.remote.as_str(),
            None,
            Some(&item.create.version),
            &base,
        )?;
        let series =
            storable(&parsed.calendar, &self.floating)?.into_new(self.ctx.connection.calendar_id);
        Ok((row, series))
    }

    /// An item that failed before any write of the chunk: reported as one at a time reports it.
    fn failed(&mut self, create: &PlainCreate, e: StepError) {
        self.executed += 1;
        self.error(&create.key, "create_local", e);
    }

    /// A chunk step failed (it wrote nothing, all or nothing): the chunk's remaining items go one
    /// at a time, so a failing item is reported alone and the others land.
    async fn fall_back(&mut self, at: &str, e: StoreError, items: Vec<Item>, planned: Planned<'_>) {
        tracing::info!(step = at, error = %e, items = items.len(), "a chunk of local creates failed; creating them one at a time");
        self.one_at_a_time(creates_of(items), planned).await;
    }

    async fn one_at_a_time(&mut self, creates: Vec<PlainCreate>, planned: Planned<'_>) {
        for create in creates {
            if self.interrupted {
                return;
            }
            let Planned {
                local_changes,
                remote,
                local_by_uid,
            } = planned;
            self.execute_group(
                &create.key,
                vec![create.action()],
                local_changes,
                remote,
                local_by_uid,
            )
            .await;
        }
    }
}

fn creates_of(items: Vec<Item>) -> Vec<PlainCreate> {
    items.into_iter().map(|i| i.create).collect()
}
