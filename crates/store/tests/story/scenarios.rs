//! The scenarios of the shared story. Each takes a fresh, migrated database and uses only the `Store` trait
//! (plus raw SQL where the point is that the database itself refuses something).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use calbridge_store::crypto::{CryptoError, MasterKey, Purpose};
use calbridge_store::*;
use jiff::{Timestamp, ToSpan};

use crate::harness::TestDb;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn ms(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap()
}

async fn tenant(store: &dyn Store, name: &str) -> TenantId {
    store.create_tenant(name).await.unwrap().id
}

async fn calendar(store: &dyn Store, tenant: TenantId, name: &str) -> Calendar {
    store
        .create_calendar(
            tenant,
            NewCalendar {
                name: name.into(),
                time_zone: "Europe/Berlin".into(),
                owner: Some("ana@example.org".into()),
            },
        )
        .await
        .unwrap()
}

/// A connection of `provider` on `calendar`, without credentials, in `status`.
async fn connection(
    store: &dyn Store,
    tenant: TenantId,
    calendar: CalendarId,
    provider: Provider,
    status: ConnectionStatus,
) -> Connection {
    store
        .create_connection(
            tenant,
            NewConnection {
                provider,
                name: provider.as_str().into(),
                calendar_id: calendar,
                credentials: None,
                sync_options_json: "{}".into(),
                status,
            },
        )
        .await
        .unwrap()
}

/// A connection of `provider` on `calendar` with two linked remote calendars.
async fn two_links(
    store: &dyn Store,
    tenant: TenantId,
    calendar: CalendarId,
    provider: Provider,
) -> (LinkId, LinkId) {
    let conn = connection(store, tenant, calendar, provider, ConnectionStatus::Active).await;
    let mut links = Vec::new();
    for remote in ["cal-1", "cal-2"] {
        let link = store
            .create_link(
                tenant,
                NewLink {
                    connection_id: conn.id,
                    remote_calendar_id: remote.into(),
                    remote_name: None,
                },
            )
            .await
            .unwrap();
        links.push(link.id);
    }
    (links[0], links[1])
}

fn single(start: Timestamp, end: Timestamp) -> OccurrenceSet {
    OccurrenceSet {
        rows: vec![NewOccurrence {
            recurrence_id: None,
            start,
            end,
            all_day: false,
            data: Some(r#"{"summary":"x"}"#.into()),
        }],
        expanded_until: None,
    }
}

fn new_series(calendar: CalendarId, uid: &str, occurrences: OccurrenceSet) -> NewSeries {
    NewSeries {
        calendar_id: calendar,
        uid: uid.into(),
        ical: format!(
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        ),
        model_json: r#"{"counter":0}"#.into(),
        hash: format!("hash-{uid}"),
        occurrences,
    }
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(StoreError::NotFound { .. }))
}

pub async fn migrations_are_idempotent(db: &TestDb) {
    let store = db.store.as_ref();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let t1 = tenant(store, "acme").await;
    // A second process opening the same database migrates again, concurrently with the first.
    let second = db.second_store().await;
    let (a, b) = tokio::join!(second.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();
    assert_eq!(second.get_tenant(t1).await.unwrap().name, "acme");
    second.ping().await.unwrap();
    assert_eq!(second.backend(), store.backend());
}

pub async fn tenants_and_api_keys(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "site-a").await;
    let b = tenant(store, "site-b").await;
    let names: HashSet<String> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains("site-a") && names.contains("site-b"));
    assert!(is_not_found(store.get_tenant(TenantId::new()).await));

    let key = store
        .create_api_key(
            a,
            NewApiKey {
                name: "cms".into(),
                prefix: "cbk_abc123".into(),
                secret_hash: "argon2id$stub".into(),
                scopes: vec!["events:read".into(), "admin".into()],
            },
        )
        .await
        .unwrap();
    let found = store
        .find_api_key_by_prefix("cbk_abc123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, key);
    assert_eq!(found.tenant_id, a);
    assert!(
        store
            .find_api_key_by_prefix("cbk_nope")
            .await
            .unwrap()
            .is_none()
    );
    let dup = store
        .create_api_key(
            b,
            NewApiKey {
                name: "x".into(),
                prefix: "cbk_abc123".into(),
                secret_hash: "h".into(),
                scopes: vec![],
            },
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert!(is_not_found(
        store
            .create_api_key(
                TenantId::new(),
                NewApiKey {
                    name: "x".into(),
                    prefix: "cbk_orphan".into(),
                    secret_hash: "h".into(),
                    scopes: vec![]
                }
            )
            .await
    ));

    let used = t("2026-11-21T10:00:00Z");
    store.touch_api_key(a, key.id, used).await.unwrap();
    store
        .touch_api_key(a, key.id, t("2026-11-21T09:00:00Z"))
        .await
        .unwrap(); // older touch loses
    assert_eq!(
        store.list_api_keys(a).await.unwrap()[0].last_used_at,
        Some(used)
    );

    // Tenant isolation: b cannot see, touch or revoke a's key.
    assert!(store.list_api_keys(b).await.unwrap().is_empty());
    assert!(is_not_found(store.touch_api_key(b, key.id, used).await));
    assert!(is_not_found(store.revoke_api_key(b, key.id).await));
    assert!(
        store
            .find_api_key_by_prefix("cbk_abc123")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );

    let revoked = store.revoke_api_key(a, key.id).await.unwrap();
    let first_revocation = revoked.revoked_at.unwrap();
    assert_eq!(
        store.revoke_api_key(a, key.id).await.unwrap().revoked_at,
        Some(first_revocation)
    );
}

pub async fn calendars_crud_and_stale_versions(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "Team").await;
    assert_eq!(cal.version, 1);
    assert_eq!(store.get_calendar(a, cal.id).await.unwrap(), cal);
    assert_eq!(store.list_calendars(a).await.unwrap(), vec![cal.clone()]);

    let update = NewCalendar {
        name: "Team (renamed)".into(),
        time_zone: "America/New_York".into(),
        owner: None,
    };
    let updated = store
        .update_calendar(a, cal.id, 1, update.clone())
        .await
        .unwrap();
    assert_eq!(
        (
            updated.version,
            updated.name.as_str(),
            updated.owner.as_deref()
        ),
        (2, "Team (renamed)", None)
    );
    assert_eq!(store.get_calendar(a, cal.id).await.unwrap(), updated);

    let stale = store.update_calendar(a, cal.id, 1, update.clone()).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::PreconditionFailed {
                expected: 1,
                current: Some(2),
                ..
            })
        ),
        "{stale:?}"
    );
    // Another tenant sees nothing, cannot update or delete it.
    assert!(store.list_calendars(b).await.unwrap().is_empty());
    assert!(is_not_found(store.get_calendar(b, cal.id).await));
    assert!(is_not_found(
        store.update_calendar(b, cal.id, 2, update.clone()).await
    ));
    assert!(is_not_found(store.delete_calendar(b, cal.id, None).await));
    assert!(matches!(
        store.delete_calendar(a, cal.id, Some(1)).await,
        Err(StoreError::PreconditionFailed {
            current: Some(2),
            ..
        })
    ));
    assert_eq!(store.get_calendar(a, cal.id).await.unwrap().version, 2);

    // Deleting takes the calendar's series and occurrences with it.
    let s = store
        .create_series(
            a,
            new_series(
                cal.id,
                "u1",
                single(t("2026-01-01T10:00:00Z"), t("2026-01-01T11:00:00Z")),
            ),
        )
        .await
        .unwrap();
    store.delete_calendar(a, cal.id, Some(2)).await.unwrap();
    assert!(is_not_found(store.get_calendar(a, cal.id).await));
    assert!(is_not_found(store.get_series(a, s.id).await));
    let page = store
        .list_occurrences(
            a,
            &OccurrenceQuery {
                start: t("2025-01-01T00:00:00Z"),
                end: t("2027-01-01T00:00:00Z"),
                calendar_id: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

pub async fn series_crud_occurrences_and_change_stream(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "Work").await;
    let b_cal = calendar(store, b, "B's").await;
    let start = t("2026-03-02T09:00:00Z");
    let weekly = OccurrenceSet {
        rows: (0..4)
            .map(|i| {
                let s = start.checked_add((i * 7 * 24).hours()).unwrap();
                NewOccurrence {
                    recurrence_id: Some(format!("R{i}")),
                    start: s,
                    end: s.checked_add(1.hour()).unwrap(),
                    all_day: false,
                    data: None,
                }
            })
            .collect(),
        expanded_until: Some(t("2026-03-30T00:00:00Z")),
    };
    let created = store
        .create_series(a, new_series(cal.id, "weekly@example", weekly))
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(store.get_series(a, created.id).await.unwrap(), created);
    assert_eq!(
        store
            .get_series_by_uid(a, cal.id, "weekly@example")
            .await
            .unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store
            .get_series_many(a, &[created.id, SeriesId::new()])
            .await
            .unwrap(),
        vec![created.clone()]
    );
    assert_eq!(
        store.list_series(a, cal.id, None, 10).await.unwrap(),
        vec![created.clone()]
    );

    let dup = store
        .create_series(
            a,
            new_series(cal.id, "weekly@example", OccurrenceSet::default()),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // Writing into another tenant's calendar is refused as if it did not exist.
    assert!(is_not_found(
        store
            .create_series(b, new_series(cal.id, "intruder", OccurrenceSet::default()))
            .await
    ));

    let window = |calendar_id| OccurrenceQuery {
        start: t("2026-03-01T00:00:00Z"),
        end: t("2026-04-01T00:00:00Z"),
        calendar_id,
        after: None,
        limit: 100,
    };
    let occ = store
        .list_occurrences(a, &window(Some(cal.id)))
        .await
        .unwrap();
    assert_eq!(occ.items.len(), 4);
    assert_eq!(occ.items[1].recurrence_id.as_deref(), Some("R1"));
    assert!(occ.next.is_none());
    assert!(
        store
            .list_occurrences(b, &window(None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // By series: the ones overlapping the range only, in start order; another tenant sees none.
    let of_series = store
        .occurrences_of_series(
            a,
            &[created.id, SeriesId::new()],
            t("2026-03-09T09:30:00Z"),
            t("2026-03-23T09:00:00Z"),
        )
        .await
        .unwrap();
    let rids: Vec<_> = of_series
        .iter()
        .map(|o| o.recurrence_id.as_deref())
        .collect();
    assert_eq!(rids, vec![Some("R1"), Some("R2")]);
    assert!(
        store
            .occurrences_of_series(b, &[created.id], window(None).start, window(None).end)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_occurrences(a, &window(Some(b_cal.id)))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let moved = single(t("2026-03-10T15:00:00Z"), t("2026-03-10T16:00:00Z"));
    let update = SeriesUpdate {
        ical: "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".into(),
        model_json: r#"{"counter":1}"#.into(),
        hash: "h2".into(),
        occurrences: moved,
    };
    let updated = store
        .update_series(a, created.id, 1, update.clone())
        .await
        .unwrap();
    assert_eq!((updated.version, updated.hash.as_str()), (2, "h2"));
    assert!(matches!(
        store.update_series(a, created.id, 1, update.clone()).await,
        Err(StoreError::PreconditionFailed {
            current: Some(2),
            ..
        })
    ));
    assert!(is_not_found(
        store.update_series(b, created.id, 2, update.clone()).await
    ));
    let occ = store.list_occurrences(a, &window(None)).await.unwrap();
    assert_eq!(occ.items.len(), 1);
    assert_eq!(
        (occ.items[0].start, occ.items[0].recurrence_id.clone()),
        (t("2026-03-10T15:00:00Z"), None)
    );
    assert_eq!(occ.items[0].data.as_deref(), Some(r#"{"summary":"x"}"#));

    assert!(matches!(
        store.delete_series(a, created.id, 1).await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    assert!(is_not_found(store.delete_series(b, created.id, 2).await));
    let deleted = store.delete_series(a, created.id, 2).await.unwrap();
    assert_eq!(deleted.version, 3);
    assert!(deleted.deleted_at.is_some());
    assert!(
        is_not_found(store.update_series(a, created.id, 3, update.clone()).await),
        "deleted series stay deleted"
    );
    assert!(is_not_found(store.delete_series(a, created.id, 3).await));
    assert!(
        store
            .list_occurrences(a, &window(None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        store
            .get_series_by_uid(a, cal.id, "weekly@example")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_series(a, cal.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_series(a, created.id)
            .await
            .unwrap()
            .deleted_at
            .is_some()
    );
    // The UID is free again after a deletion.
    let again = store
        .create_series(
            a,
            new_series(cal.id, "weekly@example", OccurrenceSet::default()),
        )
        .await
        .unwrap();
    assert_ne!(again.id, created.id);

    // Horizon extension replaces rows without bumping the version.
    let extended = single(t("2026-03-20T08:00:00Z"), t("2026-03-20T09:00:00Z"));
    store
        .replace_occurrences(
            a,
            again.id,
            1,
            OccurrenceSet {
                expanded_until: Some(t("2027-01-01T00:00:00Z")),
                ..extended.clone()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .replace_occurrences(a, again.id, 7, extended.clone())
            .await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    assert_eq!(store.get_series(a, again.id).await.unwrap().version, 1);
    assert_eq!(
        store
            .list_occurrences(a, &window(None))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let due = store
        .series_needing_expansion(t("2028-01-01T00:00:00Z"), 100)
        .await
        .unwrap();
    assert!(due.contains(&(a, again.id)));
    assert!(
        !store
            .series_needing_expansion(t("2026-06-01T00:00:00Z"), 100)
            .await
            .unwrap()
            .contains(&(a, again.id))
    );

    // Every series write left a change-stream entry, in order, visible only to its tenant.
    let changes = store.list_changes(a, 0, None, 100).await.unwrap();
    let kinds: Vec<&str> = changes.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "event.created",
            "event.updated",
            "event.deleted",
            "event.created"
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        store.latest_change_seq(a).await.unwrap(),
        changes.last().unwrap().seq
    );
    assert_eq!(
        store
            .list_changes(a, changes[1].seq, None, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .list_changes(a, 0, Some(b_cal.id), 100)
            .await
            .unwrap()
            .len(),
        0
    );
    assert!(
        store
            .list_changes(b, 0, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let custom = store
        .append_change(
            a,
            NewChange {
                calendar_id: None,
                kind: "sync.finished".into(),
                subject_id: "run".into(),
                data_json: "{}".into(),
            },
        )
        .await
        .unwrap();
    assert!(custom.seq > changes[3].seq);
    assert!(is_not_found(
        store
            .append_change(
                b,
                NewChange {
                    calendar_id: Some(cal.id),
                    kind: "x".into(),
                    subject_id: "y".into(),
                    data_json: "{}".into()
                }
            )
            .await
    ));
    assert_eq!(
        store
            .purge_changes(Timestamp::now().checked_add(1.hour()).unwrap())
            .await
            .unwrap(),
        5
    );
    assert!(
        store
            .list_changes(a, 0, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The purge left its mark: a reader resuming before it knows it may have missed entries.
    assert_eq!(store.change_stream_floor(a).await.unwrap(), custom.seq);
    // The head does not move back when everything was removed.
    assert_eq!(store.latest_change_seq(a).await.unwrap(), custom.seq);
    assert_eq!(store.change_stream_floor(b).await.unwrap(), 0);
}

pub async fn concurrent_updates_lose_nothing(db: &TestDb) {
    let store = db.store.clone();
    let a = tenant(store.as_ref(), "a").await;
    let cal = calendar(store.as_ref(), a, "c").await;
    let series = store
        .create_series(a, new_series(cal.id, "contended", OccurrenceSet::default()))
        .await
        .unwrap();
    let writers = 8;
    let increments = 10;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut stale = 0u32;
            for _ in 0..increments {
                loop {
                    let current = store.get_series(a, series.id).await.unwrap();
                    let model: serde_json::Value =
                        serde_json::from_str(&current.model_json).unwrap();
                    let counter = model["counter"].as_i64().unwrap() + 1;
                    let update = SeriesUpdate {
                        ical: current.ical.clone(),
                        model_json: serde_json::json!({ "counter": counter }).to_string(),
                        hash: format!("h{counter}"),
                        occurrences: OccurrenceSet::default(),
                    };
                    match store
                        .update_series(a, series.id, current.version, update)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::PreconditionFailed { .. }) => stale += 1,
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                }
            }
            stale
        }));
    }
    let mut stale_total = 0;
    for task in tasks {
        stale_total += task.await.unwrap();
    }
    let last = store.get_series(a, series.id).await.unwrap();
    let model: serde_json::Value = serde_json::from_str(&last.model_json).unwrap();
    assert_eq!(
        model["counter"].as_i64().unwrap(),
        writers * increments,
        "an update was lost"
    );
    assert_eq!(last.version, 1 + writers * increments);
    eprintln!(
        "{}: {stale_total} stale writes refused and retried",
        store.backend()
    );
}

/// A tiny deterministic generator, so the data set is the same on every run and backend.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

pub async fn window_query_matches_brute_force_with_pagination(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cals = [
        calendar(store, a, "one").await.id,
        calendar(store, a, "two").await.id,
    ];
    let b_cal = calendar(store, b, "other").await.id;
    let base = t("2026-01-01T00:00:00Z").as_millisecond();
    let hour = 3_600_000i64;
    let mut rng = Lcg(42);
    let mut all: Vec<Occurrence> = Vec::new();
    for n in 0..120 {
        let calendar_id = cals[(n % 2) as usize];
        let recurring = n % 5 == 0;
        let count = if recurring {
            1 + rng.next(30) as i64
        } else {
            1
        };
        let first = base + rng.next(24 * 90) as i64 * hour;
        let mut rows = Vec::new();
        for i in 0..count {
            let start = first + i * 24 * hour;
            let length = match rng.next(10) {
                0 => 0,                                     // zero-length (a reminder)
                1 => (2 + rng.next(20) as i64) * 24 * hour, // multi-day
                _ => (1 + rng.next(4) as i64) * hour / 2,
            };
            rows.push(NewOccurrence {
                recurrence_id: recurring.then(|| format!("{i:04}")),
                start: ms(start),
                end: ms(start + length),
                all_day: length % (24 * hour) == 0 && length > 0,
                data: None,
            });
        }
        let series = store
            .create_series(
                a,
                new_series(
                    calendar_id,
                    &format!("u{n}"),
                    OccurrenceSet {
                        rows: rows.clone(),
                        expanded_until: None,
                    },
                ),
            )
            .await
            .unwrap();
        for row in rows {
            all.push(Occurrence {
                series_id: series.id,
                calendar_id,
                recurrence_id: row.recurrence_id,
                start: row.start,
                end: row.end,
                all_day: row.all_day,
                data: None,
            });
        }
        // Same times in another tenant: must never show up.
        if n % 3 == 0 {
            store
                .create_series(
                    b,
                    new_series(b_cal, &format!("b{n}"), single(ms(first), ms(first + hour))),
                )
                .await
                .unwrap();
        }
    }
    let key = |o: &Occurrence| {
        (
            o.start,
            o.series_id,
            o.recurrence_id.clone().unwrap_or_default(),
        )
    };
    all.sort_by_key(key);

    let windows = [
        ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
        ("2026-01-15T12:00:00Z", "2026-01-16T12:00:00Z"),
        ("2025-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z"),
    ];
    let mut checked = 0;
    for (from, to) in windows {
        let (from, to) = (t(from), t(to));
        for calendar_id in [None, Some(cals[1])] {
            let expected: Vec<&Occurrence> = all
                .iter()
                .filter(|o| o.start < to && (o.end > from || o.start >= from))
                .filter(|o| calendar_id.is_none_or(|c| o.calendar_id == c))
                .collect();
            let mut got = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store
                    .list_occurrences(
                        a,
                        &OccurrenceQuery {
                            start: from,
                            end: to,
                            calendar_id,
                            after: after.clone(),
                            limit: 7,
                        },
                    )
                    .await
                    .unwrap();
                pages += 1;
                assert!(page.items.len() <= 7);
                got.extend(page.items);
                match page.next {
                    // The opaque token round-trips, as the API will hand it out and take it back.
                    Some(cursor) => {
                        after = Some(OccurrenceCursor::parse(&cursor.to_token()).unwrap())
                    }
                    None => break,
                }
                assert!(pages < 1000, "pagination does not terminate");
            }
            assert_eq!(
                got.len(),
                expected.len(),
                "window {from}..{to} calendar {calendar_id:?}"
            );
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, *e);
            }
            checked += got.len();
        }
    }
    assert!(
        checked > 100,
        "the windows should cover a good part of the data ({checked})"
    );
    let inverted = store
        .list_occurrences(
            a,
            &OccurrenceQuery {
                start: t("2026-02-01T00:00:00Z"),
                end: t("2026-01-01T00:00:00Z"),
                calendar_id: None,
                after: None,
                limit: 10,
            },
        )
        .await;
    assert!(matches!(inverted, Err(StoreError::Invalid(_))));
}

pub async fn connections_links_and_mappings(db: &TestDb) {
    let store = db.store.as_ref();
    let key = MasterKey::generate();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let creds = key
        .seal(Purpose::ConnectionCredentials, br#"{"password":"hunter2"}"#)
        .unwrap();
    let new = NewConnection {
        provider: Provider::Caldav,
        name: "Radicale".into(),
        calendar_id: cal.id,
        credentials: Some(creds.clone()),
        sync_options_json: r#"{"frequency":"15m"}"#.into(),
        status: ConnectionStatus::Active,
    };
    assert!(is_not_found(store.create_connection(b, new.clone()).await));
    let conn = store.create_connection(a, new).await.unwrap();
    let got = store.get_connection(a, conn.id).await.unwrap();
    assert_eq!(
        got.credentials.as_ref().map(|c| c.as_bytes()),
        Some(creds.as_bytes())
    );
    assert_eq!(
        key.open(
            Purpose::ConnectionCredentials,
            got.credentials.as_ref().unwrap()
        )
        .unwrap(),
        br#"{"password":"hunter2"}"#
    );
    assert!(!format!("{got:?}").contains("hunter2"));
    assert_eq!(store.list_connections(a).await.unwrap().len(), 1);
    assert!(store.list_connections(b).await.unwrap().is_empty());
    assert!(is_not_found(store.get_connection(b, conn.id).await));

    let update = ConnectionUpdate {
        name: "Radicale (home)".into(),
        sync_options_json: r#"{"frequency":"5m"}"#.into(),
    };
    let updated = store
        .update_connection(a, conn.id, Some(1), update.clone())
        .await
        .unwrap();
    assert_eq!(
        (updated.version, updated.name.as_str()),
        (2, "Radicale (home)")
    );
    assert!(matches!(
        store
            .update_connection(a, conn.id, Some(1), update.clone())
            .await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    assert!(is_not_found(
        store.update_connection(b, conn.id, None, update).await
    ));
    let status = store
        .set_connection_status(
            a,
            conn.id,
            ConnectionStatus::NeedsReauth,
            Some("invalid_grant"),
        )
        .await
        .unwrap();
    assert_eq!(
        (status.status, status.status_reason.as_deref()),
        (ConnectionStatus::NeedsReauth, Some("invalid_grant"))
    );
    assert!(is_not_found(
        store
            .set_connection_status(b, conn.id, ConnectionStatus::Active, None)
            .await
    ));
    let cleared = store
        .set_connection_credentials(a, conn.id, None)
        .await
        .unwrap();
    assert!(cleared.credentials.is_none());
    assert!(is_not_found(
        store
            .set_connection_credentials(b, conn.id, Some(creds))
            .await
    ));
    // The calendar cannot be deleted while a connection uses it.
    assert!(matches!(
        store.delete_calendar(a, cal.id, None).await,
        Err(StoreError::Conflict(_))
    ));

    let link = store
        .create_link(
            a,
            NewLink {
                connection_id: conn.id,
                remote_calendar_id: "/cal/ana/work/".into(),
                remote_name: Some("Work".into()),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_link(
                a,
                NewLink {
                    connection_id: conn.id,
                    remote_calendar_id: "/cal/ana/work/".into(),
                    remote_name: None
                }
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(
        store
            .create_link(
                b,
                NewLink {
                    connection_id: conn.id,
                    remote_calendar_id: "/x/".into(),
                    remote_name: None
                }
            )
            .await
    ));
    let full_at = t("2026-11-21T03:00:00Z");
    let with_cursor = store
        .set_link_cursor(a, link.id, Some("http://radicale/sync/42"), Some(full_at))
        .await
        .unwrap();
    assert_eq!(
        (with_cursor.cursor.as_deref(), with_cursor.last_full_sync_at),
        (Some("http://radicale/sync/42"), Some(full_at))
    );
    let next = store
        .set_link_cursor(a, link.id, Some("43"), None)
        .await
        .unwrap();
    assert_eq!(
        (next.cursor.as_deref(), next.last_full_sync_at),
        (Some("43"), Some(full_at))
    );
    assert!(is_not_found(
        store.set_link_cursor(b, link.id, None, None).await
    ));
    // Both change marks are saved together; the local one is a change-stream seq.
    assert_eq!(next.local_cursor, None);
    let head = store.latest_change_seq(a).await.unwrap();
    assert!(store.latest_change_seq(b).await.unwrap() >= 0);
    let both = store
        .set_link_cursors(
            a,
            link.id,
            LinkCursors {
                remote: Some("44"),
                local: Some(head),
                full_sync_at: None,
                time_detection_due: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            both.cursor.as_deref(),
            both.local_cursor,
            both.last_full_sync_at
        ),
        (Some("44"), Some(head), Some(full_at))
    );
    assert!(is_not_found(
        store
            .set_link_cursors(
                b,
                link.id,
                LinkCursors {
                    remote: None,
                    local: None,
                    full_sync_at: None,
                    time_detection_due: None,
                }
            )
            .await
    ));
    let suspect = store
        .set_link_status(
            a,
            link.id,
            LinkStatus::Suspect,
            Some("listing shrank by 80%"),
        )
        .await
        .unwrap();
    assert_eq!(suspect.status, LinkStatus::Suspect);
    assert_eq!(store.get_link(a, link.id).await.unwrap(), suspect);
    assert_eq!(
        store.list_links(a, conn.id).await.unwrap(),
        vec![suspect.clone()]
    );
    assert!(store.list_links(b, conn.id).await.unwrap().is_empty());
    assert!(is_not_found(store.get_link(b, link.id).await));

    let series = store
        .create_series(a, new_series(cal.id, "mapped", OccurrenceSet::default()))
        .await
        .unwrap();
    let upsert = MappingUpsert {
        link_id: link.id,
        remote_id: "/cal/ana/work/mapped.ics".into(),
        series_id: Some(series.id),
        remote_version: Some("\"etag-1\"".into()),
        base_json: Some(r#"{"summary":"base"}"#.into()),
        base_hash: Some("bh1".into()),
        last_seen_at: Some(full_at),
        write_ahead: true,
        local_version: None,
    };
    let m1 = store.upsert_mapping(a, upsert.clone()).await.unwrap();
    assert_eq!(
        store.write_ahead_mappings(a, link.id).await.unwrap(),
        vec![m1.clone()],
        "a write-ahead row is read by every run"
    );
    let m2 = store
        .upsert_mapping(
            a,
            MappingUpsert {
                remote_version: Some("\"etag-2\"".into()),
                base_hash: Some("bh2".into()),
                write_ahead: false,
                local_version: None,
                ..upsert.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(m1.id, m2.id, "an upsert keeps the mapping's identity");
    assert_eq!(m2.remote_version.as_deref(), Some("\"etag-2\""));
    assert_eq!(
        store
            .get_mapping(a, link.id, &upsert.remote_id)
            .await
            .unwrap(),
        Some(m2.clone())
    );
    assert_eq!(
        store.mappings_for_series(a, series.id).await.unwrap(),
        vec![m2.clone()]
    );
    assert_eq!(
        store.list_mappings(a, link.id).await.unwrap(),
        vec![m2.clone()]
    );
    assert!(
        store
            .get_mapping(b, link.id, &upsert.remote_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .mappings_for_series(b, series.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .write_ahead_mappings(a, link.id)
            .await
            .unwrap()
            .is_empty(),
        "an upsert without write_ahead clears it"
    );
    let other = store
        .create_series(a, new_series(cal.id, "unmapped", OccurrenceSet::default()))
        .await
        .unwrap();
    let link_id = link.id;
    let named = |remote: &[&str], series: &[SeriesId]| {
        let remote: Vec<String> = remote.iter().map(|r| (*r).to_owned()).collect();
        let series = series.to_vec();
        async move {
            store
                .mappings_naming(a, link_id, &remote, &series)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        named(&[upsert.remote_id.as_str()], &[]).await,
        vec![m2.clone()]
    );
    assert_eq!(named(&[], &[series.id, other.id]).await, vec![m2.clone()]);
    assert_eq!(
        named(&[upsert.remote_id.as_str()], &[series.id]).await,
        vec![m2.clone()],
        "a pair named both ways comes once"
    );
    assert!(
        named(&["/cal/ana/work/other.ics"], &[other.id])
            .await
            .is_empty()
    );
    // Long lists are read in bounded chunks; the pair, named in the last chunk of one list and the
    // first of the other, still comes once.
    let many: Vec<String> = (0..600)
        .map(|i| format!("/cal/ana/work/none-{i}.ics"))
        .collect();
    let mut remote: Vec<&str> = many.iter().map(String::as_str).collect();
    remote.push(upsert.remote_id.as_str());
    assert_eq!(named(&remote, &[series.id]).await, vec![m2.clone()]);
    assert!(
        store
            .mappings_naming(
                b,
                link.id,
                std::slice::from_ref(&upsert.remote_id),
                &[series.id]
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .write_ahead_mappings(b, link.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_mappings(b, link.id).await.unwrap().is_empty());
    assert!(is_not_found(store.upsert_mapping(b, upsert.clone()).await));
    assert!(is_not_found(store.delete_mapping(b, m2.id).await));
    store.delete_mapping(a, m2.id).await.unwrap();
    assert!(
        store
            .get_mapping(a, link.id, &upsert.remote_id)
            .await
            .unwrap()
            .is_none()
    );

    store.upsert_mapping(a, upsert.clone()).await.unwrap();
    assert!(is_not_found(store.delete_link(b, link.id).await));
    assert!(is_not_found(store.delete_connection(b, conn.id).await));
    store.delete_connection(a, conn.id).await.unwrap();
    assert!(
        is_not_found(store.get_link(a, link.id).await),
        "links go with their connection"
    );
    assert!(
        store
            .get_mapping(a, link.id, &upsert.remote_id)
            .await
            .unwrap()
            .is_none()
    );
    store.delete_calendar(a, cal.id, None).await.unwrap();
}

pub async fn conflicts_sync_runs_and_tombstones(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let conn = connection(
        store,
        a,
        cal.id,
        Provider::Google,
        ConnectionStatus::NeedsAuth,
    )
    .await;
    let link = store
        .create_link(
            a,
            NewLink {
                connection_id: conn.id,
                remote_calendar_id: "primary".into(),
                remote_name: None,
            },
        )
        .await
        .unwrap();
    let new = NewConflict {
        connection_id: Some(conn.id),
        link_id: Some(link.id),
        series_id: None,
        other_series_id: None,
        event_uid: "e1".into(),
        kind: ConflictKind::Update,
        local_json: Some(r#"{"summary":"L"}"#.into()),
        remote_json: Some(r#"{"summary":"R"}"#.into()),
        base_json: Some(r#"{"summary":"B"}"#.into()),
        fields_json: r#"["summary"]"#.into(),
        options_json: r#"["keep_local","keep_remote","keep_both","merge"]"#.into(),
    };
    assert!(is_not_found(store.create_conflict(b, new.clone()).await));
    let c1 = store.create_conflict(a, new.clone()).await.unwrap();
    let c2 = store
        .create_conflict(
            a,
            NewConflict {
                kind: ConflictKind::Deletion,
                event_uid: "e2".into(),
                ..new.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.get_conflict(a, c1.id).await.unwrap(), c1);
    let open = ConflictFilter {
        state: Some(ConflictState::Open),
        ..Default::default()
    };
    assert_eq!(store.list_conflicts(a, &open).await.unwrap().len(), 2);
    let deletions = ConflictFilter {
        kind: Some(ConflictKind::Deletion),
        ..Default::default()
    };
    assert_eq!(
        store.list_conflicts(a, &deletions).await.unwrap(),
        vec![c2.clone()]
    );
    assert!(
        store
            .list_conflicts(b, &ConflictFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(is_not_found(store.get_conflict(b, c1.id).await));
    // Paging in id (creation) order: one at a time reaches both, then nothing; filters and tenant hold.
    let all = ConflictFilter::default();
    let first = store.list_conflicts_after(a, &all, None, 1).await.unwrap();
    assert_eq!(first, vec![c1.clone()]);
    let second = store
        .list_conflicts_after(a, &all, Some(c1.id), 1)
        .await
        .unwrap();
    assert_eq!(second, vec![c2.clone()]);
    assert!(
        store
            .list_conflicts_after(a, &all, Some(c2.id), 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_conflicts_after(a, &deletions, None, 10)
            .await
            .unwrap(),
        vec![c2.clone()]
    );
    assert!(
        store
            .list_conflicts_after(b, &all, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Naming a series: as its series or as its other series (a time conflict's second, which its
    // local side need not spell out: the columns are read, not the JSON); the kind and the tenant hold.
    // The series live in a calendar of their own, kept out of the change stream asserted below.
    let named_cal = calendar(store, a, "named").await;
    let mut named_series = Vec::new();
    for uid in ["s1", "s2", "s3"] {
        let at = t("2026-11-20T09:00:00Z");
        let s = store
            .create_series(a, new_series(named_cal.id, uid, single(at, at + 1.hour())))
            .await
            .unwrap();
        named_series.push(s.id);
    }
    let (s1, s2, s3) = (named_series[0], named_series[1], named_series[2]);
    let time_conflict =
        |first: Option<SeriesId>, second: Option<SeriesId>, uid: &str| NewConflict {
            kind: ConflictKind::Time,
            // No connection: kept out of the calendar's change stream asserted below.
            connection_id: None,
            link_id: None,
            series_id: first,
            other_series_id: second,
            event_uid: uid.into(),
            local_json: Some(r#"{"key":"k"}"#.into()),
            ..new.clone()
        };
    // Another tenant's series is refused as either series.
    assert!(is_not_found(
        store
            .create_conflict(b, time_conflict(Some(s1), None, "x"))
            .await
    ));
    assert!(is_not_found(
        store
            .create_conflict(b, time_conflict(None, Some(s2), "x"))
            .await
    ));
    let named = store
        .create_conflict(a, time_conflict(Some(s1), Some(s2), "e3"))
        .await
        .unwrap();
    assert_eq!(
        (named.series_id, named.other_series_id),
        (Some(s1), Some(s2))
    );
    assert_eq!(store.get_conflict(a, named.id).await.unwrap(), named);
    // Found only through its second series (its first is gone from the columns).
    let second_only = store
        .create_conflict(a, time_conflict(None, Some(s3), "e4"))
        .await
        .unwrap();
    for (series, found) in [
        (s1, vec![named.clone()]),
        (s2, vec![named.clone()]),
        (s3, vec![second_only.clone()]),
    ] {
        assert_eq!(
            store
                .conflicts_naming_series(a, ConflictKind::Time, &[series])
                .await
                .unwrap(),
            found
        );
    }
    assert_eq!(
        store
            .conflicts_naming_series(a, ConflictKind::Time, &[s3, s2])
            .await
            .unwrap(),
        vec![named.clone(), second_only.clone()]
    );
    // Named in two chunks of a long list (bounded IN lists), each comes once, in id order.
    let mut many: Vec<SeriesId> = (0..250).map(|_| SeriesId::new()).collect();
    many.insert(0, s1);
    many.push(s2);
    many.push(s3);
    assert_eq!(
        store
            .conflicts_naming_series(a, ConflictKind::Time, &many)
            .await
            .unwrap(),
        vec![named.clone(), second_only.clone()]
    );
    for series in [s1, s3] {
        assert!(
            store
                .conflicts_naming_series(a, ConflictKind::Update, &[series])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .conflicts_naming_series(b, ConflictKind::Time, &[series])
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        store
            .conflicts_naming_series(a, ConflictKind::Time, &[SeriesId::new()])
            .await
            .unwrap()
            .is_empty()
    );
    // A series that goes for good (its calendar deleted) leaves the conflict, without it.
    store
        .resolve_conflict(
            a,
            second_only.id,
            r#"{"closed":"test"}"#,
            "key:x",
            Timestamp::now(),
        )
        .await
        .unwrap();
    store.delete_calendar(a, named_cal.id, None).await.unwrap();
    let kept = store.get_conflict(a, second_only.id).await.unwrap();
    assert_eq!((kept.series_id, kept.other_series_id), (None, None));
    assert_eq!(kept.state, ConflictState::Resolved);
    assert!(
        store
            .conflicts_naming_series(a, ConflictKind::Time, &[s3])
            .await
            .unwrap()
            .is_empty()
    );
    store
        .resolve_conflict(
            a,
            named.id,
            r#"{"closed":"test"}"#,
            "key:x",
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(is_not_found(
        store
            .resolve_conflict(
                b,
                c1.id,
                r#"{"option":"keep_local"}"#,
                "key:x",
                Timestamp::now()
            )
            .await
    ));
    // A resolution in progress is recorded on the open conflict (and cleared again), the conflict
    // staying open; the tenant holds, and the JSON must be JSON.
    assert_eq!(c1.resolving_json, None);
    let resolving = r#"{"option":"keep_local","actor":"key:admin"}"#;
    let marked = store
        .set_conflict_resolving(a, c1.id, Some(resolving))
        .await
        .unwrap();
    assert_eq!(
        (marked.state, marked.resolving_json.as_deref()),
        (ConflictState::Open, Some(resolving))
    );
    assert_eq!(store.get_conflict(a, c1.id).await.unwrap(), marked);
    assert!(is_not_found(
        store
            .set_conflict_resolving(b, c1.id, Some(resolving))
            .await
    ));
    assert!(
        store
            .set_conflict_resolving(a, c1.id, Some("{"))
            .await
            .is_err()
    );
    let cleared = store.set_conflict_resolving(a, c1.id, None).await.unwrap();
    assert_eq!(cleared.resolving_json, None);
    // Compare-and-set: only from the record expected (none here), so of two parties swapping the
    // same record the second finds it gone and changes nothing.
    let other = r#"{"option":"keep_remote","actor":"key:other"}"#;
    assert!(matches!(
        store
            .swap_conflict_resolving(a, c1.id, Some(resolving), Some(other))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let swapped = store
        .swap_conflict_resolving(a, c1.id, None, Some(resolving))
        .await
        .unwrap();
    assert_eq!(swapped.resolving_json.as_deref(), Some(resolving));
    assert!(matches!(
        store
            .swap_conflict_resolving(a, c1.id, None, Some(other))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(
        store
            .swap_conflict_resolving(b, c1.id, Some(resolving), None)
            .await
    ));
    let swapped = store
        .swap_conflict_resolving(a, c1.id, Some(resolving), Some(other))
        .await
        .unwrap();
    assert_eq!(swapped.resolving_json.as_deref(), Some(other));
    store
        .swap_conflict_resolving(a, c1.id, Some(other), Some(resolving))
        .await
        .unwrap();
    // Audited: the entries are appended in the swap's transaction, in order, and not at all when
    // the swap is refused or an entry is refused (the swap is then not made either).
    let entry = |action: &str| NewAuditEntry {
        actor: "key:admin".into(),
        action: action.into(),
        subject: c1.id.to_string(),
        details_json: "{}".into(),
    };
    let logged = store.list_audit(a, None, 1000).await.unwrap().len();
    assert!(matches!(
        store
            .swap_conflict_resolving_audited(a, c1.id, Some(other), None, vec![entry("refused")])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_audit(a, None, 1000).await.unwrap().len(), logged);
    let swapped = store
        .swap_conflict_resolving_audited(
            a,
            c1.id,
            Some(resolving),
            Some(other),
            vec![entry("first"), entry("second")],
        )
        .await
        .unwrap();
    assert_eq!(swapped.resolving_json.as_deref(), Some(other));
    let newest = store.list_audit(a, None, 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["second", "first"]
    );
    let unreadable = NewAuditEntry {
        details_json: "{".into(),
        ..entry("unreadable")
    };
    assert!(
        store
            .swap_conflict_resolving_audited(
                a,
                c1.id,
                Some(other),
                Some(resolving),
                vec![unreadable]
            )
            .await
            .is_err()
    );
    assert_eq!(
        store
            .get_conflict(a, c1.id)
            .await
            .unwrap()
            .resolving_json
            .as_deref(),
        Some(other)
    );
    assert_eq!(
        store.list_audit(a, None, 1000).await.unwrap().len(),
        logged + 2
    );
    store
        .swap_conflict_resolving(a, c1.id, Some(other), Some(resolving))
        .await
        .unwrap();
    let at = t("2026-11-21T04:00:00Z");
    // Closed with its audit entries in one transaction: an entry refused leaves the conflict
    // open and nothing logged; another tenant's conflict is not found and logs nothing.
    let logged = store.list_audit(a, None, 1000).await.unwrap().len();
    let unreadable = NewAuditEntry {
        details_json: "{".into(),
        ..entry("conflict.resolved")
    };
    assert!(
        store
            .resolve_conflict_audited(
                a,
                c1.id,
                r#"{"option":"keep_local"}"#,
                "key:admin",
                at,
                vec![entry("first"), unreadable],
            )
            .await
            .is_err()
    );
    assert_eq!(
        store.get_conflict(a, c1.id).await.unwrap().state,
        ConflictState::Open
    );
    assert!(is_not_found(
        store
            .resolve_conflict_audited(
                b,
                c1.id,
                r#"{"option":"keep_local"}"#,
                "key:admin",
                at,
                vec![entry("conflict.resolved")],
            )
            .await
    ));
    assert_eq!(store.list_audit(a, None, 1000).await.unwrap().len(), logged);
    let resolved = store
        .resolve_conflict_audited(
            a,
            c1.id,
            r#"{"option":"keep_local"}"#,
            "key:admin",
            at,
            vec![entry("conflict.resolved"), entry("second")],
        )
        .await
        .unwrap();
    let newest = store.list_audit(a, None, 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["second", "conflict.resolved"]
    );
    // Kept when the conflict closes (what was in progress), and no longer settable.
    assert_eq!(resolved.resolving_json.as_deref(), Some(resolving));
    assert!(matches!(
        store.set_conflict_resolving(a, c1.id, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .swap_conflict_resolving(a, c1.id, Some(resolving), None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        (
            resolved.state,
            resolved.resolved_at,
            resolved.resolved_by.as_deref()
        ),
        (ConflictState::Resolved, Some(at), Some("key:admin"))
    );
    assert!(matches!(
        store
            .resolve_conflict(a, c1.id, r#"{"option":"keep_remote"}"#, "key:other", at)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Refused once closed (two parties racing): neither closed again nor audited.
    assert!(matches!(
        store
            .resolve_conflict_audited(
                a,
                c1.id,
                r#"{"option":"keep_remote"}"#,
                "key:other",
                at,
                vec![entry("refused")],
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.list_audit(a, None, 1000).await.unwrap().len(),
        logged + 2
    );
    assert_eq!(
        store.list_conflicts(a, &open).await.unwrap(),
        vec![c2.clone()]
    );

    let run = store.create_sync_run(a, Some(conn.id), true).await.unwrap();
    assert_eq!(run.status, SyncRunStatus::Running);
    assert!(is_not_found(
        store.create_sync_run(b, Some(conn.id), false).await
    ));
    let finished = store
        .update_sync_run(
            a,
            run.id,
            SyncRunUpdate {
                status: SyncRunStatus::Partial,
                counts_json: r#"{"created":3,"updated":1}"#.into(),
                requests: 12,
                bytes: 34_567,
                errors_json: r#"[{"item":"x","cause":"412"}]"#.into(),
                finished_at: Some(at),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (finished.requests, finished.bytes, finished.finished_at),
        (12, 34_567, Some(at))
    );
    assert_eq!(store.get_sync_run(a, run.id).await.unwrap(), finished);
    assert!(is_not_found(store.get_sync_run(b, run.id).await));
    let all_run = store.create_sync_run(a, None, false).await.unwrap();
    let listed = store.list_sync_runs(a, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|r| r.id == all_run.id));
    assert_eq!(
        store.list_sync_runs(a, Some(conn.id), 10).await.unwrap(),
        vec![finished]
    );
    assert!(store.list_sync_runs(b, None, 10).await.unwrap().is_empty());

    // Conflicts, finished runs and status changes are announced on the tenant's change stream, on the
    // connection's calendar; a second update of a finished run or an unchanged status announces nothing.
    store
        .update_sync_run(
            a,
            run.id,
            SyncRunUpdate {
                status: SyncRunStatus::Partial,
                counts_json: "{}".into(),
                requests: 12,
                bytes: 0,
                errors_json: "[]".into(),
                finished_at: Some(at),
            },
        )
        .await
        .unwrap();
    store
        .set_connection_status(a, conn.id, ConnectionStatus::Active, None)
        .await
        .unwrap();
    store
        .set_connection_status(a, conn.id, ConnectionStatus::Active, None)
        .await
        .unwrap();
    let changes = store.list_changes(a, 0, Some(cal.id), 100).await.unwrap();
    let kinds: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.kind.as_str(), c.subject_id.as_str()))
        .collect();
    let (c1_id, c2_id, run_id, conn_id) = (
        c1.id.to_string(),
        c2.id.to_string(),
        run.id.to_string(),
        conn.id.to_string(),
    );
    assert_eq!(
        kinds,
        [
            ("conflict.detected", c1_id.as_str()),
            ("conflict.detected", c2_id.as_str()),
            ("conflict.resolved", c1_id.as_str()),
            ("sync.finished", run_id.as_str()),
            ("connection.status", conn_id.as_str()),
        ]
    );
    let detected: serde_json::Value = serde_json::from_str(&changes[1].data_json).unwrap();
    assert_eq!(
        (detected["kind"].as_str(), detected["event_uid"].as_str()),
        (Some("deletion"), Some("e2"))
    );
    let finished_msg: serde_json::Value = serde_json::from_str(&changes[3].data_json).unwrap();
    assert_eq!(
        (
            finished_msg["status"].as_str(),
            finished_msg["counts"]["created"].as_i64(),
            finished_msg["errors"].as_i64()
        ),
        (Some("partial"), Some(3), Some(1))
    );
    let status: serde_json::Value = serde_json::from_str(&changes[4].data_json).unwrap();
    assert_eq!(
        (status["status"].as_str(), status["previous"].as_str()),
        (Some("active"), Some("needs_auth"))
    );
    assert!(
        store
            .list_changes(b, 0, None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let tomb = NewTombstone {
        calendar_id: Some(cal.id),
        series_id: Some(SeriesId::new()),
        link_id: Some(link.id),
        remote_id: Some("evt-1".into()),
        uid: Some("e1".into()),
        deleted_at: t("2026-11-01T00:00:00Z"),
        expires_at: t("2026-12-01T00:00:00Z"),
    };
    assert!(is_not_found(store.put_tombstone(b, tomb.clone()).await));
    let kept = store.put_tombstone(a, tomb.clone()).await.unwrap();
    store
        .put_tombstone(
            a,
            NewTombstone {
                link_id: None,
                expires_at: t("2026-11-15T00:00:00Z"),
                ..tomb.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.list_tombstones(a, None).await.unwrap().len(), 2);
    assert_eq!(
        store.list_tombstones(a, Some(link.id)).await.unwrap(),
        vec![kept.clone()]
    );
    assert!(store.list_tombstones(b, None).await.unwrap().is_empty());
    assert_eq!(
        store
            .purge_tombstones(t("2026-11-20T00:00:00Z"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.list_tombstones(a, None).await.unwrap(), vec![kept]);
}

pub async fn audit_log_is_append_only(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let mut seqs = Vec::new();
    for i in 0..5 {
        let entry = store
            .append_audit(
                a,
                NewAuditEntry {
                    actor: "key:cbk_1".into(),
                    action: "event.updated".into(),
                    subject: format!("evt-{i}"),
                    details_json: format!(r#"{{"i":{i}}}"#),
                },
            )
            .await
            .unwrap();
        seqs.push(entry.seq);
    }
    store
        .append_audit(
            b,
            NewAuditEntry {
                actor: "system".into(),
                action: "x".into(),
                subject: "y".into(),
                details_json: "{}".into(),
            },
        )
        .await
        .unwrap();
    let newest = store.list_audit(a, None, 3).await.unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|e| e.subject.as_str())
            .collect::<Vec<_>>(),
        ["evt-4", "evt-3", "evt-2"]
    );
    let older = store.list_audit(a, Some(newest[2].seq), 10).await.unwrap();
    assert_eq!(
        older.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>(),
        ["evt-1", "evt-0"]
    );
    assert_eq!(store.list_audit(b, None, 10).await.unwrap().len(), 1);
    assert!(is_not_found(
        store
            .append_audit(
                TenantId::new(),
                NewAuditEntry {
                    actor: "a".into(),
                    action: "b".into(),
                    subject: "c".into(),
                    details_json: "{}".into()
                }
            )
            .await
    ));
    // The database itself refuses to rewrite history, whatever client connects.
    assert!(
        db.raw_execute("UPDATE audit_log SET action = 'forged'")
            .await
            .is_err()
    );
    assert!(db.raw_execute("DELETE FROM audit_log").await.is_err());
    assert_eq!(store.list_audit(a, None, 10).await.unwrap().len(), 5);
    assert!(
        store
            .list_audit(a, None, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.action == "event.updated")
    );
}

pub async fn job_leases_are_exclusive(db: &TestDb) {
    let store = db.store.clone();
    let now = Timestamp::now();
    let jobs = 60;
    for i in 0..jobs {
        store
            .enqueue_job(NewJob {
                tenant_id: None,
                kind: "sync.link".into(),
                key: format!("link-{i}"),
                payload_json: format!(r#"{{"i":{i}}}"#),
                run_at: now,
            })
            .await
            .unwrap();
    }
    // A job of another kind is not leased by workers asking for sync.link only.
    store
        .enqueue_job(NewJob {
            tenant_id: None,
            kind: "webhook.deliver".into(),
            key: "w".into(),
            payload_json: "{}".into(),
            run_at: now,
        })
        .await
        .unwrap();
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let owner = format!("worker-{w}");
            let mut mine = Vec::new();
            while let Some(lease) = store
                .lease_next(&owner, &["sync.link"], Duration::from_secs(60), now)
                .await
                .unwrap()
            {
                assert_eq!(lease.job.kind, "sync.link");
                mine.push((lease.job.id, lease.fencing_token));
                store.complete_job(&lease, None, now).await.unwrap();
            }
            mine
        }));
    }
    let mut seen = BTreeMap::new();
    for task in tasks {
        for (job, token) in task.await.unwrap() {
            assert!(
                seen.insert(job, token).is_none(),
                "job {job} was leased twice"
            );
        }
    }
    assert_eq!(seen.len(), jobs, "every job leased exactly once");
    assert!(seen.values().all(|&token| token == 1));

    // Many leasers racing for one due job: exactly one wins.
    let single = store
        .enqueue_job(NewJob {
            tenant_id: None,
            kind: "race".into(),
            key: "one".into(),
            payload_json: "{}".into(),
            run_at: now,
        })
        .await
        .unwrap();
    let racers = futures::future::join_all((0..12).map(|w| {
        let store = Arc::clone(&store);
        async move {
            store
                .lease_next(
                    &format!("racer-{w}"),
                    &["race"],
                    Duration::from_secs(60),
                    now,
                )
                .await
                .unwrap()
        }
    }))
    .await;
    let winners: Vec<_> = racers.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].job.id, single.id);
}

pub async fn job_fencing_and_lifecycle(db: &TestDb) {
    let store = db.store.as_ref();
    let t0 = t("2026-11-21T03:00:00Z");
    let a = tenant(store, "a").await;
    let job = store
        .enqueue_job(NewJob {
            tenant_id: Some(a),
            kind: "sync.link".into(),
            key: "L1".into(),
            payload_json: "{}".into(),
            run_at: t0,
        })
        .await
        .unwrap();
    assert_eq!(
        (job.state, job.fencing_token, job.tenant_id),
        (JobState::Queued, 0, Some(a))
    );
    assert!(
        store
            .lease_next(
                "w1",
                &[],
                Duration::from_secs(1),
                ms(t0.as_millisecond() - 1)
            )
            .await
            .unwrap()
            .is_none(),
        "not due yet"
    );
    let first = store
        .lease_next("w1", &[], Duration::from_secs(30), t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.fencing_token, 1);
    assert!(
        store
            .lease_next("w2", &[], Duration::from_secs(30), t0)
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    let renewed = store
        .renew_lease(
            &first,
            Duration::from_secs(30),
            t0.checked_add(20.seconds()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(renewed.expires_at, t0.checked_add(50.seconds()).unwrap());
    assert!(
        store
            .lease_next(
                "w2",
                &[],
                Duration::from_secs(30),
                t0.checked_add(40.seconds()).unwrap()
            )
            .await
            .unwrap()
            .is_none()
    );

    // w1 stalls past its lease; w2 takes over with a larger fencing token; w1's late writes are refused.
    let later = t0.checked_add(60.seconds()).unwrap();
    let second = store
        .lease_next("w2", &[], Duration::from_secs(30), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.fencing_token, 2);
    assert!(matches!(
        store.complete_job(&renewed, None, later).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store
            .renew_lease(&renewed, Duration::from_secs(30), later)
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.fail_job(&renewed, "late", None, later).await,
        Err(StoreError::LeaseLost { .. })
    ));

    // Re-arming a running job does not hand it out twice; it runs again after completion.
    let rearmed = store
        .enqueue_job(NewJob {
            tenant_id: Some(a),
            kind: "sync.link".into(),
            key: "L1".into(),
            payload_json: r#"{"full":true}"#.into(),
            run_at: later,
        })
        .await
        .unwrap();
    assert_eq!((rearmed.id, rearmed.state), (job.id, JobState::Running));
    assert!(
        store
            .lease_next("w3", &[], Duration::from_secs(30), later)
            .await
            .unwrap()
            .is_none()
    );
    store.complete_job(&second, None, later).await.unwrap();
    let queued = store.get_job(job.id).await.unwrap();
    assert_eq!(
        (queued.state, queued.payload_json.as_str()),
        (JobState::Queued, r#"{"full":true}"#)
    );

    // Failure with a retry time, then a final failure.
    let third = store
        .lease_next("w3", &[], Duration::from_secs(30), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.fencing_token, 3);
    let retry_at = later.checked_add(5.minutes()).unwrap();
    store
        .fail_job(&third, "503 from provider", Some(retry_at), later)
        .await
        .unwrap();
    let waiting = store.get_job(job.id).await.unwrap();
    assert_eq!(
        (
            waiting.state,
            waiting.attempts,
            waiting.run_at,
            waiting.last_error.as_deref()
        ),
        (JobState::Queued, 1, retry_at, Some("503 from provider"))
    );
    assert!(
        store
            .lease_next("w3", &[], Duration::from_secs(30), later)
            .await
            .unwrap()
            .is_none()
    );
    let fourth = store
        .lease_next("w4", &[], Duration::from_secs(30), retry_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fourth.fencing_token, 4);
    store
        .fail_job(&fourth, "gave up", None, retry_at)
        .await
        .unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap().state, JobState::Failed);
    assert!(
        store
            .lease_next("w4", &[], Duration::from_secs(30), retry_at)
            .await
            .unwrap()
            .is_none()
    );

    // A periodic job completes with its next run time; tokens keep increasing across re-enqueues.
    store
        .enqueue_job(NewJob {
            tenant_id: Some(a),
            kind: "sync.link".into(),
            key: "L1".into(),
            payload_json: "{}".into(),
            run_at: retry_at,
        })
        .await
        .unwrap();
    let fifth = store
        .lease_next("w5", &[], Duration::from_secs(30), retry_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fifth.fencing_token, 5);
    let next_run = retry_at.checked_add(15.minutes()).unwrap();
    store
        .complete_job(&fifth, Some(next_run), retry_at)
        .await
        .unwrap();
    let periodic = store.get_job(job.id).await.unwrap();
    assert_eq!(
        (periodic.state, periodic.run_at, periodic.attempts),
        (JobState::Queued, next_run, 0)
    );
    assert!(
        store
            .renew_lease(&fifth, Duration::from_secs(5), retry_at)
            .await
            .is_err(),
        "completed lease cannot renew"
    );
}

pub async fn webhooks_and_deliveries(db: &TestDb) {
    let store = db.store.as_ref();
    let key = MasterKey::generate();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let secret = key.seal(Purpose::WebhookSecret, b"whsec_123").unwrap();
    let new = NewWebhook {
        url: "https://cms.example/hooks".into(),
        secret: secret.clone(),
        events_json: r#"["*"]"#.into(),
        calendar_id: None,
    };
    let hook = store.create_webhook(a, new.clone()).await.unwrap();
    assert!(hook.enabled);
    assert_eq!(
        key.open(
            Purpose::WebhookSecret,
            &store.get_webhook(a, hook.id).await.unwrap().secret
        )
        .unwrap(),
        b"whsec_123"
    );
    assert!(is_not_found(store.get_webhook(b, hook.id).await));
    assert!(store.list_webhooks(b).await.unwrap().is_empty());
    assert_eq!(store.list_webhooks(a).await.unwrap().len(), 1);
    let delivery = |status: &str, attempt| NewDelivery {
        subscription_id: hook.id,
        change_seq: Some(7),
        event: "event.updated".into(),
        attempt,
        status: status.into(),
        response_status: Some(if status == "delivered" { 200 } else { 500 }),
        error: (status != "delivered").then(|| "HTTP 500".to_owned()),
        latency_ms: Some(12),
    };
    assert!(is_not_found(
        store.record_delivery(b, delivery("failed", 1), 3).await
    ));
    store
        .record_delivery(a, delivery("failed", 1), 3)
        .await
        .unwrap();
    store
        .record_delivery(a, delivery("failed", 2), 3)
        .await
        .unwrap();
    store
        .record_delivery(a, delivery("delivered", 3), 3)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_webhook(a, hook.id)
            .await
            .unwrap()
            .consecutive_failures,
        0,
        "a success resets the streak"
    );
    for attempt in 4..7 {
        store
            .record_delivery(a, delivery("failed", attempt), 3)
            .await
            .unwrap();
    }
    let disabled = store.get_webhook(a, hook.id).await.unwrap();
    assert!(!disabled.enabled);
    assert_eq!(disabled.consecutive_failures, 3);
    assert!(disabled.disabled_reason.unwrap().contains("3 consecutive"));
    let log = store.list_deliveries(a, hook.id, 100).await.unwrap();
    assert_eq!(log.len(), 6);
    assert!(
        store
            .list_deliveries(b, hook.id, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let enabled = store
        .set_webhook_enabled(a, hook.id, true, None)
        .await
        .unwrap();
    assert!(
        enabled.enabled && enabled.disabled_reason.is_none() && enabled.consecutive_failures == 0
    );
    assert!(is_not_found(
        store
            .set_webhook_enabled(b, hook.id, false, Some("x"))
            .await
    ));
    assert_eq!(log[0].latency_ms, Some(12));

    // The delivery mark starts at the tenant's head and only moves forward.
    let cal = calendar(store, a, "hooked").await;
    let head = store
        .append_change(
            a,
            NewChange {
                calendar_id: Some(cal.id),
                kind: "event.created".into(),
                subject_id: "s".into(),
                data_json: "{}".into(),
            },
        )
        .await
        .unwrap()
        .seq;
    let later = store.create_webhook(a, new.clone()).await.unwrap();
    assert_eq!(later.delivered_seq, head);
    assert_eq!(
        store.get_webhook(a, hook.id).await.unwrap().delivered_seq,
        0
    );
    // Due: enabled, behind the head, not backing off.
    let due = |list: Vec<Webhook>| list.iter().map(|w| w.id).collect::<Vec<_>>();
    let now = Timestamp::now();
    assert_eq!(
        due(store.webhooks_due(now, 100).await.unwrap()),
        vec![hook.id]
    );
    let later_retry = now.checked_add(1.hour()).unwrap();
    store
        .set_webhook_retry(a, hook.id, Some(later_retry))
        .await
        .unwrap();
    assert!(store.webhooks_due(now, 100).await.unwrap().is_empty());
    assert_eq!(
        store.get_webhook(a, hook.id).await.unwrap().retry_at,
        Some(Timestamp::from_millisecond(later_retry.as_millisecond()).unwrap())
    );
    assert!(is_not_found(
        store.set_webhook_retry(b, hook.id, None).await
    ));
    store.set_webhook_retry(a, hook.id, None).await.unwrap();
    assert_eq!(
        due(store.webhooks_due(now, 100).await.unwrap()),
        vec![hook.id]
    );
    store.advance_webhook(a, hook.id, 5).await.unwrap();
    store.advance_webhook(a, hook.id, 3).await.unwrap();
    assert_eq!(
        store.get_webhook(a, hook.id).await.unwrap().delivered_seq,
        5
    );
    assert!(is_not_found(store.advance_webhook(b, hook.id, 9).await));
    // Updates change target, filter and secret; another tenant's calendar is refused.
    let other_secret = key.seal(Purpose::WebhookSecret, b"whsec_456").unwrap();
    let updated = store
        .update_webhook(
            a,
            hook.id,
            WebhookUpdate {
                url: Some("https://cms.example/v2".into()),
                events_json: Some(r#"["event.created"]"#.into()),
                calendar_id: Some(Some(cal.id)),
                secret: Some(other_secret),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            updated.url.as_str(),
            updated.events_json.as_str(),
            updated.calendar_id
        ),
        (
            "https://cms.example/v2",
            r#"["event.created"]"#,
            Some(cal.id)
        )
    );
    assert_eq!(
        key.open(Purpose::WebhookSecret, &updated.secret).unwrap(),
        b"whsec_456"
    );
    let cleared = store
        .update_webhook(
            a,
            hook.id,
            WebhookUpdate {
                calendar_id: Some(None),
                ..WebhookUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (cleared.calendar_id, cleared.url.as_str()),
        (None, "https://cms.example/v2")
    );
    let b_cal = calendar(store, b, "theirs").await;
    assert!(
        store
            .update_webhook(
                a,
                hook.id,
                WebhookUpdate {
                    calendar_id: Some(Some(b_cal.id)),
                    ..WebhookUpdate::default()
                },
            )
            .await
            .is_err()
    );
    assert!(is_not_found(
        store
            .update_webhook(b, hook.id, WebhookUpdate::default())
            .await
    ));
    assert_eq!(
        store
            .purge_deliveries(Timestamp::now().checked_add(1.hour()).unwrap())
            .await
            .unwrap(),
        6
    );
    assert!(is_not_found(store.delete_webhook(b, hook.id).await));
    store.delete_webhook(a, hook.id).await.unwrap();
    assert!(is_not_found(store.get_webhook(a, hook.id).await));
}

pub async fn rotate_master_round_trip(db: &TestDb) {
    let store = db.store.as_ref();
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let mut connections = Vec::new();
    for (tenant_id, secret) in [(a, "pw-a"), (b, "pw-b")] {
        let cal = calendar(store, tenant_id, "c").await;
        let conn = store
            .create_connection(
                tenant_id,
                NewConnection {
                    provider: Provider::Microsoft,
                    name: "m".into(),
                    calendar_id: cal.id,
                    credentials: Some(
                        old.seal(Purpose::ConnectionCredentials, secret.as_bytes())
                            .unwrap(),
                    ),
                    sync_options_json: "{}".into(),
                    status: ConnectionStatus::Active,
                },
            )
            .await
            .unwrap();
        connections.push((tenant_id, conn.id, secret));
    }
    // A feed without credentials.
    let feed = calendar(store, a, "feed").await;
    connection(store, a, feed.id, Provider::Ics, ConnectionStatus::Active).await;
    let hook = store
        .create_webhook(
            a,
            NewWebhook {
                url: "https://x/".into(),
                secret: old.seal(Purpose::WebhookSecret, b"whsec").unwrap(),
                events_json: "[]".into(),
                calendar_id: None,
            },
        )
        .await
        .unwrap();

    // A wrong "old" key fails and changes nothing.
    let wrong = MasterKey::generate();
    assert!(matches!(
        store.rotate_master(&wrong, &new).await,
        Err(StoreError::Crypto(CryptoError::WrongKey { .. }))
    ));
    let (t0, c0, s0) = connections[0];
    let still_old = store
        .get_connection(t0, c0)
        .await
        .unwrap()
        .credentials
        .unwrap();
    assert_eq!(
        old.open(Purpose::ConnectionCredentials, &still_old)
            .unwrap(),
        s0.as_bytes()
    );

    assert_eq!(store.rotate_master(&old, &new).await.unwrap(), 3);
    for (tenant_id, conn, secret) in &connections {
        let sealed = store
            .get_connection(*tenant_id, *conn)
            .await
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!(
            new.open(Purpose::ConnectionCredentials, &sealed).unwrap(),
            secret.as_bytes()
        );
        assert!(matches!(
            old.open(Purpose::ConnectionCredentials, &sealed),
            Err(CryptoError::WrongKey { .. })
        ));
        assert_eq!(sealed.key_id(), Some(new.key_id()));
    }
    assert_eq!(
        new.open(
            Purpose::WebhookSecret,
            &store.get_webhook(a, hook.id).await.unwrap().secret
        )
        .unwrap(),
        b"whsec"
    );
    // Running the same rotation again (say, after a crash before the config changed) is harmless.
    assert_eq!(store.rotate_master(&old, &new).await.unwrap(), 0);
}

pub async fn series_batch_is_all_or_nothing(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "import").await;
    let at = |h: i64| ms(t("2026-05-01T00:00:00Z").as_millisecond() + h * 3_600_000);
    let batch: Vec<NewSeries> = (0..50)
        .map(|i| new_series(cal.id, &format!("imp-{i}"), single(at(i), at(i + 1))))
        .collect();
    let created = store.create_series_batch(a, batch).await.unwrap();
    assert_eq!(created.len(), 50);
    assert_eq!(
        store
            .list_series(a, cal.id, None, 1000)
            .await
            .unwrap()
            .len(),
        50
    );
    let window = OccurrenceQuery {
        start: at(0),
        end: at(100),
        calendar_id: None,
        after: None,
        limit: 1000,
    };
    assert_eq!(
        store
            .list_occurrences(a, &window)
            .await
            .unwrap()
            .items
            .len(),
        50
    );
    assert_eq!(
        store.list_changes(a, 0, None, 1000).await.unwrap().len(),
        50
    );

    // One bad item (a UID already present) refuses the whole batch.
    let mut bad: Vec<NewSeries> = (50..60)
        .map(|i| new_series(cal.id, &format!("imp-{i}"), single(at(i), at(i + 1))))
        .collect();
    bad.push(new_series(cal.id, "imp-3", OccurrenceSet::default()));
    assert!(matches!(
        store.create_series_batch(a, bad).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .list_series(a, cal.id, None, 1000)
            .await
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        store
            .list_occurrences(a, &window)
            .await
            .unwrap()
            .items
            .len(),
        50
    );
    // A UID twice in one batch is refused too, before anything is written.
    let twice = vec![
        new_series(cal.id, "twice", single(at(70), at(71))),
        new_series(cal.id, "twice", single(at(72), at(73))),
    ];
    assert!(matches!(
        store.create_series_batch(a, twice).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .get_series_by_uid(a, cal.id, "twice")
            .await
            .unwrap()
            .is_none()
    );
    // Another tenant cannot import into this calendar (nor into one of its own mixed with it).
    let intrusion = vec![new_series(cal.id, "x", OccurrenceSet::default())];
    assert!(is_not_found(store.create_series_batch(b, intrusion).await));
    let own = calendar(store, b, "own").await;
    let mixed = vec![
        new_series(own.id, "fine", single(at(1), at(2))),
        new_series(cal.id, "x", OccurrenceSet::default()),
    ];
    assert!(is_not_found(store.create_series_batch(b, mixed).await));
    assert!(
        store
            .list_series(b, own.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A large batch over two calendars (more rows than one multi-row statement holds): every series, its
    // occurrence rows and its change-stream entry, in batch order; a long occurrence widens the window
    // bound, so a window starting inside it finds it.
    let cal2 = calendar(store, a, "import 2").await;
    let seq_before = store.latest_change_seq(a).await.unwrap();
    let big: Vec<NewSeries> = (0..700)
        .map(|i| {
            let target = if i % 2 == 0 { cal.id } else { cal2.id };
            let occurrences = if i == 699 {
                // Ten days long, starting well before the window below.
                single(at(-400), at(-160))
            } else if i % 5 == 0 {
                OccurrenceSet {
                    rows: (0..4)
                        .map(|k| NewOccurrence {
                            recurrence_id: Some(format!("r{k}")),
                            start: at(200 + k * 168),
                            end: at(201 + k * 168),
                            all_day: false,
                            data: Some(format!(r#"{{"summary":"weekly {i}"}}"#)),
                        })
                        .collect(),
                    expanded_until: Some(at(1000)),
                }
            } else {
                single(at(200 + i), at(201 + i))
            };
            new_series(target, &format!("big-{i}"), occurrences)
        })
        .collect();
    let created = store.create_series_batch(a, big).await.unwrap();
    assert_eq!(created.len(), 700);
    assert!(
        created
            .iter()
            .enumerate()
            .all(|(i, s)| s.uid == format!("big-{i}") && s.version == 1)
    );
    let weekly = store.get_series(a, created[5].id).await.unwrap();
    assert_eq!(weekly, created[5]);
    assert_eq!(weekly.expanded_until, Some(at(1000)));
    let changes = store.list_changes(a, seq_before, None, 1000).await.unwrap();
    assert_eq!(changes.len(), 700);
    assert!(
        changes
            .iter()
            .zip(&created)
            .all(|(c, s)| c.subject_id == s.id.to_string()
                && c.kind == "event.created"
                && c.calendar_id == Some(s.calendar_id))
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_occurrences(
                a,
                &OccurrenceQuery {
                    start: at(190),
                    end: at(2000),
                    calendar_id: Some(cal2.id),
                    after,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    // Odd indexes went to the second calendar: one row per single, four per weekly series.
    let expected: usize = (0..699)
        .filter(|i| i % 2 == 1)
        .map(|i| if i % 5 == 0 { 4 } else { 1 })
        .sum();
    assert_eq!(all.len(), expected);
    let long = store
        .list_occurrences(
            a,
            &OccurrenceQuery {
                start: at(-200),
                end: at(-199),
                calendar_id: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(long.items.len(), 1);
    assert_eq!(long.items[0].series_id, created[699].id);
    assert!(
        store
            .create_series_batch(a, Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn bad_input_is_refused_and_changes_nothing(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let cal = calendar(store, a, "c").await;
    assert!(matches!(
        store.create_tenant("  ").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .create_calendar(
                a,
                NewCalendar {
                    name: "".into(),
                    time_zone: "UTC".into(),
                    owner: None
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    let mut bad_model = new_series(cal.id, "bad", OccurrenceSet::default());
    bad_model.model_json = "{not json".into();
    assert!(matches!(
        store.create_series(a, bad_model).await,
        Err(StoreError::Invalid(_))
    ));
    let inverted = single(t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z"));
    assert!(matches!(
        store
            .create_series(a, new_series(cal.id, "inv", inverted))
            .await,
        Err(StoreError::Invalid(_))
    ));
    let twice = OccurrenceSet {
        rows: vec![
            NewOccurrence {
                recurrence_id: Some("R".into()),
                start: t("2026-01-01T00:00:00Z"),
                end: t("2026-01-01T01:00:00Z"),
                all_day: false,
                data: None,
            },
            NewOccurrence {
                recurrence_id: Some("R".into()),
                start: t("2026-01-02T00:00:00Z"),
                end: t("2026-01-02T01:00:00Z"),
                all_day: false,
                data: None,
            },
        ],
        expanded_until: None,
    };
    assert!(matches!(
        store
            .create_series(a, new_series(cal.id, "dup-rid", twice))
            .await,
        Err(StoreError::Invalid(_))
    ));
    // A failing write inside a transaction leaves nothing behind: the series row is rolled back with it.
    let s = store
        .create_series(a, new_series(cal.id, "ok", OccurrenceSet::default()))
        .await
        .unwrap();
    assert!(
        store
            .get_series_by_uid(a, cal.id, "bad")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_series_by_uid(a, cal.id, "inv")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.list_series(a, cal.id, None, 100).await.unwrap(),
        vec![s]
    );
    assert!(matches!(
        OccurrenceCursor::parse("garbage"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        OccurrenceCursor::parse("1.not-a-uuid.00"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .lease_next("w", &[], Duration::ZERO, Timestamp::now())
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        calbridge_store::connect("mysql://x").await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn oauth_states_are_single_use_and_tenant_checked(db: &TestDb) {
    let store = db.store.as_ref();
    let key = MasterKey::generate();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let conn = connection(
        store,
        a,
        cal.id,
        Provider::Google,
        ConnectionStatus::NeedsAuth,
    )
    .await;
    let pending = |hash: &str, expires_at: Timestamp| NewOAuthState {
        state_hash: hash.into(),
        connection_id: conn.id,
        provider: "google".into(),
        verifier: key.seal(Purpose::OAuthVerifier, b"verifier-1").unwrap(),
        expires_at,
    };
    let later = Timestamp::now() + 10.minutes();
    // Another tenant cannot start a sign-in for this connection.
    assert!(is_not_found(
        store.put_oauth_state(b, pending("h1", later)).await
    ));
    store
        .put_oauth_state(a, pending("h1", later))
        .await
        .unwrap();
    store
        .put_oauth_state(a, pending("h2", Timestamp::now() - 1.minutes()))
        .await
        .unwrap();
    // A state hash is unique.
    assert!(
        store
            .put_oauth_state(a, pending("h1", later))
            .await
            .is_err()
    );

    let taken = store.take_oauth_state("h1").await.unwrap().unwrap();
    assert_eq!(taken.tenant_id, a);
    assert_eq!(taken.connection_id, conn.id);
    assert_eq!(taken.provider, "google");
    assert_eq!(
        key.open(Purpose::OAuthVerifier, &taken.verifier).unwrap(),
        b"verifier-1"
    );
    assert!(
        key.open(Purpose::ConnectionCredentials, &taken.verifier)
            .is_err(),
        "the verifier is bound to its purpose"
    );
    // Single use.
    assert!(store.take_oauth_state("h1").await.unwrap().is_none());
    assert!(store.take_oauth_state("unknown").await.unwrap().is_none());

    // Expired ones are purged; live ones stay.
    store
        .put_oauth_state(a, pending("h3", later))
        .await
        .unwrap();
    assert_eq!(store.purge_oauth_states(Timestamp::now()).await.unwrap(), 1);
    assert!(store.take_oauth_state("h2").await.unwrap().is_none());
    // A master-key rotation re-seals pending verifiers too.
    let new = MasterKey::generate();
    store.rotate_master(&key, &new).await.unwrap();
    let taken = store.take_oauth_state("h3").await.unwrap().unwrap();
    assert_eq!(
        new.open(Purpose::OAuthVerifier, &taken.verifier).unwrap(),
        b"verifier-1"
    );
    // Deleting the connection drops its pending sign-ins.
    store
        .put_oauth_state(a, pending("h4", later))
        .await
        .unwrap();
    store.delete_connection(a, conn.id).await.unwrap();
    assert!(store.take_oauth_state("h4").await.unwrap().is_none());
}

/// Runs cut short by a dead process (no heartbeat within their bound, here the reaper's: they never
/// beat) are closed as failed with an `interrupted` error and announced; live ones (a recent heartbeat)
/// and finished ones are untouched; two nodes reaping at once close each run once.
pub async fn stale_sync_runs_are_closed_as_interrupted(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let dead = store.create_sync_run(a, None, false).await.unwrap();
    let dead_b = store.create_sync_run(b, None, true).await.unwrap();
    let live = store.create_sync_run(a, None, false).await.unwrap();
    let done = store.create_sync_run(a, None, false).await.unwrap();
    store
        .update_sync_run(
            a,
            done.id,
            SyncRunUpdate {
                status: SyncRunStatus::Succeeded,
                counts_json: "{}".into(),
                requests: 1,
                bytes: 2,
                errors_json: "[]".into(),
                finished_at: Some(Timestamp::now()),
            },
        )
        .await
        .unwrap();
    // The live run's process beats (a heartbeat "later" than the threshold below); the others do not.
    let later = Timestamp::now() + 60.seconds();
    let second = Duration::from_secs(1);
    assert!(
        store
            .touch_sync_run(a, live.id, later, second)
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch_sync_run(a, done.id, later, second)
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch_sync_run(b, live.id, later, second)
            .await
            .unwrap(),
        "tenant-checked"
    );
    // Rows without a bound of their own are judged by the reaper's (one second here).
    let cause = |bound: Duration| format!("no heartbeat for {bound:?}");
    let seq_before = store.latest_change_seq(a).await.unwrap();

    let now = Timestamp::now() + 31.seconds();
    let closed = store
        .fail_stale_sync_runs(now, second, &cause)
        .await
        .unwrap();
    let mut ids: Vec<SyncRunId> = closed.iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![dead.id, dead_b.id];
    want.sort();
    assert_eq!(ids, want, "{closed:?}");
    let reaped = store.get_sync_run(a, dead.id).await.unwrap();
    assert_eq!(reaped.status, SyncRunStatus::Failed);
    assert_eq!(
        reaped.finished_at.map(|t| t.as_millisecond()),
        Some(now.as_millisecond())
    );
    let errors: Vec<serde_json::Value> = serde_json::from_str(&reaped.errors_json).unwrap();
    assert_eq!(
        errors,
        vec![
            serde_json::json!({"item": "run", "action": "run", "class": "interrupted", "cause": "no heartbeat for 1s"})
        ]
    );
    assert_eq!(
        store.get_sync_run(a, live.id).await.unwrap().status,
        SyncRunStatus::Running
    );
    let untouched = store.get_sync_run(a, done.id).await.unwrap();
    assert_eq!(untouched.status, SyncRunStatus::Succeeded);
    assert_eq!(untouched.errors_json, "[]");
    // Announced like any finished run, once.
    let changes = store.list_changes(a, seq_before, None, 100).await.unwrap();
    let finished: Vec<&Change> = changes
        .iter()
        .filter(|c| c.kind == "sync.finished")
        .collect();
    assert_eq!(finished.len(), 1, "{changes:?}");
    assert_eq!(finished[0].subject_id, dead.id.to_string());
    assert!(finished[0].data_json.contains("\"failed\""));
    // A reaped run no longer beats, and reaping again finds nothing.
    assert!(
        !store
            .touch_sync_run(a, dead.id, later, second)
            .await
            .unwrap()
    );
    assert!(
        store
            .fail_stale_sync_runs(now, second, &cause)
            .await
            .unwrap()
            .is_empty()
    );

    // Two nodes reaping at once close each stale run exactly once.
    let mut stale = Vec::new();
    for _ in 0..6 {
        stale.push(store.create_sync_run(a, None, false).await.unwrap().id);
    }
    let other = db.second_store().await;
    let now = Timestamp::now() + 31.seconds();
    let (one, two) = tokio::join!(
        store.fail_stale_sync_runs(now, second, &cause),
        other.fail_stale_sync_runs(now, second, &cause),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    let mut closed: Vec<SyncRunId> = one.iter().chain(&two).map(|r| r.id).collect();
    closed.sort();
    // The live run beat "later" than this threshold too, so it is still not closed.
    stale.sort();
    assert_eq!(closed, stale, "one: {one:?} two: {two:?}");
    for id in &stale {
        let run = store.get_sync_run(a, *id).await.unwrap();
        let errors: Vec<serde_json::Value> = serde_json::from_str(&run.errors_json).unwrap();
        assert_eq!(errors.len(), 1, "closed once: {errors:?}");
    }
    assert_eq!(
        store.get_sync_run(a, live.id).await.unwrap().status,
        SyncRunStatus::Running
    );
}

/// A process paused past its run's staleness bound (SIGSTOP, a long stall) is reaped; when it
/// resumes, its report does not reopen the run or change its status and finish time (announced,
/// acted on) and announces nothing, but is kept: its counts, its errors after the row's, and a
/// `late_report` entry saying what it reported.
pub async fn a_late_report_leaves_a_reaped_run_closed(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let run = store.create_sync_run(a, None, false).await.unwrap();
    let e1 = serde_json::json!({"item": "x", "action": "update", "class": "http", "cause": "412"});
    let e2 = serde_json::json!({"item": "y", "action": "create", "class": "http", "cause": "500"});
    let report = |status, errors: &[&serde_json::Value], finished_at| SyncRunUpdate {
        status,
        counts_json: r#"{"created":2}"#.into(),
        requests: 5,
        bytes: 6,
        errors_json: serde_json::to_string(errors).unwrap(),
        finished_at,
    };
    // Progress before the pause, then the reaper closes the run.
    store
        .update_sync_run(a, run.id, report(SyncRunStatus::Running, &[&e1], None))
        .await
        .unwrap();
    let reaped_at = Timestamp::now() + 30.seconds();
    let reaped = store
        .fail_stale_sync_runs(reaped_at, Duration::from_secs(1), &|_: Duration| {
            String::from("no heartbeat")
        })
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    let seq_before = store.latest_change_seq(a).await.unwrap();

    // The process resumes and reports its outcome.
    let late = store
        .update_sync_run(
            a,
            run.id,
            report(
                SyncRunStatus::Succeeded,
                &[&e1, &e2],
                Some(reaped_at + 5.seconds()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(store.get_sync_run(a, run.id).await.unwrap(), late);
    assert_eq!(late.status, SyncRunStatus::Failed);
    assert_eq!(
        late.finished_at.map(|t| t.as_millisecond()),
        Some(reaped_at.as_millisecond())
    );
    assert_eq!(
        (late.counts_json.as_str(), late.requests, late.bytes),
        (r#"{"created":2}"#, 5, 6)
    );
    let errors: Vec<serde_json::Value> = serde_json::from_str(&late.errors_json).unwrap();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0], e1, "reported before the pause, kept once");
    assert_eq!(errors[1]["class"], "interrupted");
    assert_eq!(errors[2], e2);
    assert_eq!(
        (
            &errors[3]["item"],
            &errors[3]["action"],
            &errors[3]["class"]
        ),
        (
            &serde_json::json!("run"),
            &serde_json::json!("report"),
            &serde_json::json!("late_report")
        )
    );
    let cause = errors[3]["cause"].as_str().unwrap();
    assert!(
        cause.contains("closed as interrupted") && cause.contains("`succeeded`"),
        "{cause}"
    );
    // Nothing announced again: `sync.finished` went out once, when the reaper closed the run.
    let changes = store.list_changes(a, seq_before, None, 100).await.unwrap();
    assert!(changes.is_empty(), "{changes:?}");

    // A report without a finish does not reopen it either; the late entry is replaced, not repeated.
    let again = store
        .update_sync_run(a, run.id, report(SyncRunStatus::Running, &[&e1, &e2], None))
        .await
        .unwrap();
    assert_eq!(again.status, SyncRunStatus::Failed);
    assert_eq!(again.finished_at, late.finished_at);
    let errors: Vec<serde_json::Value> = serde_json::from_str(&again.errors_json).unwrap();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[3]["cause"]
            .as_str()
            .unwrap()
            .contains("still running"),
        "{errors:?}"
    );
    assert!(
        !store
            .touch_sync_run(a, run.id, Timestamp::now(), Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .list_changes(a, seq_before, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Another tenant's late report finds nothing.
    assert!(is_not_found(
        store
            .update_sync_run(b, run.id, report(SyncRunStatus::Succeeded, &[], None))
            .await
    ));
}

/// Every run is judged by the staleness bound its own process wrote with its heartbeat, not by the
/// reaper's: a reaper configured short never closes a live run that beats rarely under a long bound,
/// and one configured long still closes a run past its own short bound. Rows without a bound (before
/// migration 0009, or before their first beat) fall back to the reaper's.
pub async fn each_run_is_judged_by_its_own_staleness_bound(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let t0 = Timestamp::now() + 1.second();
    let hour = Duration::from_secs(3600);
    let long = store.create_sync_run(a, None, false).await.unwrap().id;
    let short = store.create_sync_run(a, None, false).await.unwrap().id;
    let legacy = store.create_sync_run(a, None, false).await.unwrap().id;
    assert!(store.touch_sync_run(a, long, t0, hour).await.unwrap());
    assert!(
        store
            .touch_sync_run(a, short, t0, Duration::from_secs(2))
            .await
            .unwrap()
    );
    let cause = |bound: Duration| format!("{}s", bound.as_secs());
    let closed_ids = |runs: &[SyncRun]| {
        let mut ids: Vec<SyncRunId> = runs.iter().map(|r| r.id).collect();
        ids.sort();
        ids
    };
    let reason = |run: &SyncRun| {
        let errors: Vec<serde_json::Value> = serde_json::from_str(&run.errors_json).unwrap();
        errors[0]["cause"].as_str().unwrap().to_owned()
    };

    // A node configured with 3 s, 10 s after the last beats: the short run (2 s) and the run without
    // a bound (3 s, the reaper's) are closed; the long one (1 h) is alive.
    let closed = store
        .fail_stale_sync_runs(t0 + 10.seconds(), Duration::from_secs(3), &cause)
        .await
        .unwrap();
    let mut want = vec![short, legacy];
    want.sort();
    assert_eq!(closed_ids(&closed), want, "{closed:?}");
    let by_id = |id| closed.iter().find(|r| r.id == id).unwrap();
    assert_eq!(reason(by_id(short)), "2s", "the run's own bound");
    assert_eq!(reason(by_id(legacy)), "3s", "the reaper's");
    // Still alive 59 minutes later for the short reaper; past its hour, closed (even by a reaper
    // configured longer than that).
    assert!(
        store
            .fail_stale_sync_runs(t0 + 59.minutes(), Duration::from_secs(3), &cause)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_sync_run(a, long).await.unwrap().status,
        SyncRunStatus::Running
    );
    let closed = store
        .fail_stale_sync_runs(t0 + 61.minutes(), hour * 24, &cause)
        .await
        .unwrap();
    assert_eq!(closed_ids(&closed), vec![long]);
    assert_eq!(reason(&closed[0]), "3600s");

    // Each beat writes the bound again: the latest is the one that counts.
    let run = store.create_sync_run(a, None, false).await.unwrap().id;
    assert!(store.touch_sync_run(a, run, t0, hour).await.unwrap());
    assert!(
        store
            .touch_sync_run(a, run, t0, Duration::from_secs(5))
            .await
            .unwrap()
    );
    let closed = store
        .fail_stale_sync_runs(t0 + 6.seconds(), hour, &cause)
        .await
        .unwrap();
    assert_eq!(closed_ids(&closed), vec![run]);
}

pub async fn detections_are_recorded_and_closed_in_one_transaction(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let conn = connection(store, a, cal.id, Provider::Caldav, ConnectionStatus::Active).await;
    let conflict = |uid: &str| NewConflict {
        connection_id: Some(conn.id),
        link_id: None,
        series_id: None,
        other_series_id: None,
        event_uid: uid.into(),
        kind: ConflictKind::Time,
        local_json: Some(format!(r#"{{"key":"{uid}"}}"#)),
        remote_json: None,
        base_json: None,
        fields_json: "[]".into(),
        options_json: r#"["keep_both"]"#.into(),
    };
    let found = |uid: &str, settled: Option<&str>| DetectedConflict {
        conflict: conflict(uid),
        actor: "sync:test".into(),
        details_json: format!(r#"{{"uid":"{uid}"}}"#),
        settled: settled.map(str::to_owned),
    };
    let at = t("2026-03-01T10:00:00Z");
    let audit_before = store.list_audit(a, None, 1000).await.unwrap().len();

    // Another tenant's connection is refused, and nothing of the batch is kept.
    assert!(is_not_found(
        store.record_conflicts(b, vec![found("x", None)], at).await
    ));
    // A batch refused half-way (its second conflict names a series that does not exist) keeps nothing.
    let mut bad = found("y", None);
    bad.conflict.series_id = Some(SeriesId::new());
    assert!(is_not_found(
        store
            .record_conflicts(a, vec![found("x", None), bad], at)
            .await
    ));
    let malformed = DetectedConflict {
        details_json: "not json".into(),
        ..found("z", None)
    };
    assert!(
        store
            .record_conflicts(a, vec![malformed], at)
            .await
            .is_err()
    );
    assert!(
        store
            .list_conflicts(a, &ConflictFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "a refused batch records nothing"
    );

    let recorded = store
        .record_conflicts(
            a,
            vec![
                found("one", None),
                found("two", Some(r#"{"policy":"keep_both"}"#)),
                found("three", None),
            ],
            at,
        )
        .await
        .unwrap();
    let uids: Vec<&str> = recorded.iter().map(|c| c.event_uid.as_str()).collect();
    assert_eq!(uids, ["one", "two", "three"], "in the order given");
    let states: Vec<ConflictState> = recorded.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [
            ConflictState::Open,
            ConflictState::Resolved,
            ConflictState::Open
        ]
    );
    assert_eq!(recorded[1].resolved_by.as_deref(), Some("sync:test"));
    assert_eq!(recorded[1].resolved_at, Some(at));
    for c in &recorded {
        assert_eq!(&store.get_conflict(a, c.id).await.unwrap(), c);
    }
    let audit = store.list_audit(a, None, 1000).await.unwrap();
    let actions = |subject: String| -> Vec<String> {
        let mut v: Vec<String> = audit
            .iter()
            .filter(|e| e.subject == subject)
            .map(|e| e.action.clone())
            .collect();
        v.reverse();
        v
    };
    assert_eq!(actions(recorded[0].id.to_string()), ["conflict.detected"]);
    assert_eq!(
        actions(recorded[1].id.to_string()),
        ["conflict.detected", "conflict.settled"]
    );
    assert_eq!(audit.len(), audit_before + 4);

    // Closing: an open one is closed with its entry; one already resolved is left as it is.
    let closing = |c: &Conflict| ConflictClosing {
        id: c.id,
        resolution_json: r#"{"closed":"overlap_gone"}"#.into(),
        actor: "sync:test".into(),
        details_json: "{}".into(),
    };
    assert_eq!(
        store
            .close_conflicts(b, vec![closing(&recorded[0])], at)
            .await
            .unwrap(),
        0,
        "another tenant closes nothing"
    );
    let closed = store
        .close_conflicts(a, vec![closing(&recorded[0]), closing(&recorded[1])], at)
        .await
        .unwrap();
    assert_eq!(closed, 1);
    let first = store.get_conflict(a, recorded[0].id).await.unwrap();
    assert_eq!(first.state, ConflictState::Resolved);
    assert_eq!(
        first.resolution_json.as_deref(),
        Some(r#"{"closed":"overlap_gone"}"#)
    );
    assert_eq!(
        store.get_conflict(a, recorded[1].id).await.unwrap(),
        recorded[1],
        "the settled one is untouched"
    );
    assert_eq!(
        store.get_conflict(a, recorded[2].id).await.unwrap().state,
        ConflictState::Open
    );
    let audit = store.list_audit(a, None, 1000).await.unwrap();
    assert_eq!(audit.len(), audit_before + 5);
    assert_eq!(audit[0].action, "conflict.closed");
    assert_eq!(audit[0].subject, recorded[0].id.to_string());

    // The link filter: a conflict of a link is found by it, a time conflict (no link) is not.
    let link = store
        .create_link(
            a,
            NewLink {
                connection_id: conn.id,
                remote_calendar_id: "/dav/a/".into(),
                remote_name: None,
            },
        )
        .await
        .unwrap();
    let linked = store
        .create_conflict(
            a,
            NewConflict {
                link_id: Some(link.id),
                kind: ConflictKind::Update,
                ..conflict("linked")
            },
        )
        .await
        .unwrap();
    let of_link = ConflictFilter {
        link_id: Some(link.id),
        ..Default::default()
    };
    assert_eq!(
        store.list_conflicts(a, &of_link).await.unwrap(),
        vec![linked.clone()]
    );
    assert_eq!(
        store
            .list_conflicts_after(a, &of_link, None, 10)
            .await
            .unwrap(),
        vec![linked]
    );
}

/// On a database migrated up to 0010: time conflicts stored then (the second series only in `local`)
/// get it as their `other_series_id` from migration 0011, and are found through it; rows it cannot use
/// (a series that no longer exists, JSON that does not parse, other kinds) are left without one.
pub async fn time_conflicts_get_their_second_series(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let cal = calendar(store, a, "c").await;
    let mut ids = Vec::new();
    for uid in ["s1", "s2"] {
        let at = t("2026-11-20T09:00:00Z");
        let s = store
            .create_series(a, new_series(cal.id, uid, single(at, at + 1.hour())))
            .await
            .unwrap();
        ids.push(s.id);
    }
    let (s1, s2, gone) = (ids[0], ids[1], SeriesId::new());
    let events = |x: SeriesId, y: SeriesId| {
        format!(r#"{{"key":"{x}|{y}","events":[{{"series_id":"{x}"}},{{"series_id":"{y}"}}]}}"#)
    };
    let rows = [
        ("time", Some(s1), events(s1, s2)),
        ("time", None, events(gone, s2)),
        ("time", Some(s1), events(s1, gone)),
        ("time", Some(s1), "not json".to_owned()),
        ("update", Some(s1), events(s1, s2)),
    ];
    let mut conflicts = Vec::new();
    for (kind, first, local) in rows {
        let id = ConflictId::new();
        let first = first.map_or("NULL".to_owned(), |s| format!("'{s}'"));
        db.raw_execute(&format!(
            "INSERT INTO conflicts (id, tenant_id, connection_id, link_id, series_id, event_uid, kind, \
             state, local, remote, base, fields, options, detected_at) VALUES ('{id}', '{a}', NULL, \
             NULL, {first}, 'e', '{kind}', 'open', '{local}', NULL, NULL, '[]', '[]', 1)"
        ))
        .await
        .unwrap();
        conflicts.push(id);
    }
    store.migrate().await.unwrap();
    let mut others = Vec::new();
    for id in &conflicts {
        others.push(store.get_conflict(a, *id).await.unwrap().other_series_id);
    }
    assert_eq!(others, vec![Some(s2), Some(s2), None, None, None]);
    let found: Vec<ConflictId> = store
        .conflicts_naming_series(a, ConflictKind::Time, &[s2])
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(found, conflicts[..2].to_vec());
}

/// The occurrence ids of remote series (Graph): stored for series with a pair on the link, found by
/// occurrence id within the link and tenant, replaced per series, and gone with the pair or the link.
pub async fn remote_occurrences_go_with_their_pair(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let (link, other) = two_links(store, a, cal.id, Provider::Microsoft).await;
    let mut pairs = BTreeMap::new();
    for (on, remote) in [(link, "s1"), (link, "s2"), (other, "s1")] {
        let m = store
            .upsert_mapping(
                a,
                MappingUpsert {
                    link_id: on,
                    remote_id: remote.into(),
                    series_id: None,
                    remote_version: Some("v".into()),
                    base_json: None,
                    base_hash: None,
                    last_seen_at: None,
                    write_ahead: false,
                    local_version: None,
                },
            )
            .await
            .unwrap();
        pairs.insert((on, remote), m.id);
    }
    let of = |remote: &str, ids: &[&str]| SeriesOccurrenceIds {
        remote_id: remote.into(),
        occurrence_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    let names = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    let pair = |o: &str, s: &str| (o.to_owned(), s.to_owned());
    store
        .replace_remote_occurrences(
            a,
            link,
            &[
                of("s1", &["o1", "o2", "o3"]),
                of("s2", &["o4"]),
                // No pair: not kept (nothing would ever remove it).
                of("unpaired", &["o9"]),
            ],
        )
        .await
        .unwrap();
    store
        .replace_remote_occurrences(a, other, &[of("s1", &["o1", "p1"])])
        .await
        .unwrap();
    let asked = names(&["o1", "o4", "o9", "p1", "unknown"]);
    assert_eq!(
        sorted(
            store
                .series_of_remote_occurrences(a, link, &asked)
                .await
                .unwrap()
        ),
        vec![pair("o1", "s1"), pair("o4", "s2")],
        "only this link's rows, only paired series"
    );
    assert!(
        store
            .series_of_remote_occurrences(b, link, &asked)
            .await
            .unwrap()
            .is_empty(),
        "another tenant reads nothing"
    );
    assert!(is_not_found(
        store
            .replace_remote_occurrences(b, link, &[of("s1", &["x"])])
            .await
    ));

    // Read again: the series' rows are replaced (o1 gone, o5 new), an id moving series follows it.
    store
        .replace_remote_occurrences(a, link, &[of("s1", &["o2", "o5", "o5"]), of("s2", &["o3"])])
        .await
        .unwrap();
    let all = names(&["o1", "o2", "o3", "o4", "o5"]);
    assert_eq!(
        sorted(
            store
                .series_of_remote_occurrences(a, link, &all)
                .await
                .unwrap()
        ),
        vec![pair("o2", "s1"), pair("o3", "s2"), pair("o5", "s1")]
    );

    // Forgetting a pair forgets its occurrences; the other pair's stay.
    store.delete_mapping(a, pairs[&(link, "s1")]).await.unwrap();
    assert_eq!(
        store
            .series_of_remote_occurrences(a, link, &all)
            .await
            .unwrap(),
        vec![pair("o3", "s2")]
    );
    // A chunked lookup (more ids than one statement binds) finds the same rows.
    let many: Vec<String> = (0..1200)
        .map(|i| format!("n{i}"))
        .chain(["o3".to_owned()])
        .collect();
    assert_eq!(
        store
            .series_of_remote_occurrences(a, link, &many)
            .await
            .unwrap(),
        vec![pair("o3", "s2")]
    );
    // Deleting the link takes the rows of its pairs with it; the other link's stay.
    store.delete_link(a, link).await.unwrap();
    assert_eq!(
        db.raw_execute(&format!(
            "DELETE FROM remote_occurrences WHERE link_id = '{link}'"
        ))
        .await
        .unwrap(),
        0,
        "no row of the deleted link is left"
    );
    assert_eq!(
        sorted(
            store
                .series_of_remote_occurrences(a, other, &names(&["o1", "p1"]))
                .await
                .unwrap()
        ),
        vec![pair("o1", "s1"), pair("p1", "s1")]
    );
}

/// A plain pair on `link` with remote id `remote` at `version` (no local series, no base).
async fn plain_pair(
    store: &dyn Store,
    tenant: TenantId,
    link: LinkId,
    remote: &str,
    version: &str,
) -> ItemMapping {
    store
        .upsert_mapping(
            tenant,
            MappingUpsert {
                link_id: link,
                remote_id: remote.into(),
                series_id: None,
                remote_version: Some(version.into()),
                base_json: None,
                base_hash: None,
                last_seen_at: None,
                write_ahead: false,
                local_version: None,
            },
        )
        .await
        .unwrap()
}

/// The remote ids of the pairs of `link` whose occurrences are not remembered.
async fn unknown_occurrences(store: &dyn Store, tenant: TenantId, link: LinkId) -> Vec<String> {
    store
        .mappings_with_unknown_occurrences(tenant, link)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.remote_id)
        .collect()
}

/// Whether a pair's occurrences are remembered: a new pair's are not; once the connector reports its
/// item (`replace_remote_occurrences`, an empty list too: a single event, or a series with none in
/// the window) they are, and stay so when the pair is upserted again; a pair recorded anew (after it
/// was deleted) starts over. Per link and per tenant.
pub async fn pairs_remember_their_occurrences_once_reported(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let (link, other) = two_links(store, a, cal.id, Provider::Microsoft).await;
    for remote in ["series", "single", "never"] {
        plain_pair(store, a, link, remote, "v1").await;
    }
    plain_pair(store, a, other, "series", "v1").await;
    assert_eq!(
        unknown_occurrences(store, a, link).await,
        ["never", "series", "single"],
        "new pairs remember nothing"
    );

    let of = |remote: &str, ids: &[&str]| SeriesOccurrenceIds {
        remote_id: remote.into(),
        occurrence_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    store
        .replace_remote_occurrences(
            a,
            link,
            &[
                of("series", &["o1", "o2"]),
                of("single", &[]),
                of("unpaired", &["o9"]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(unknown_occurrences(store, a, link).await, ["never"]);
    assert_eq!(
        unknown_occurrences(store, a, other).await,
        ["series"],
        "the same remote id on another link is another pair"
    );
    assert!(
        unknown_occurrences(store, b, link).await.is_empty(),
        "another tenant reads nothing"
    );

    // Read again (the flag is already set), and upserted with a new version: still remembered.
    store
        .replace_remote_occurrences(a, link, &[of("series", &["o2", "o3"])])
        .await
        .unwrap();
    let series = plain_pair(store, a, link, "series", "v2").await;
    plain_pair(store, a, link, "single", "v2").await;
    assert_eq!(unknown_occurrences(store, a, link).await, ["never"]);
    assert_eq!(
        store
            .series_of_remote_occurrences(a, link, &["o2".to_owned(), "o3".to_owned()])
            .await
            .unwrap()
            .len(),
        2
    );

    // Forgotten with the pair: a pair recorded again for the same remote id remembers nothing.
    store.delete_mapping(a, series.id).await.unwrap();
    plain_pair(store, a, link, "series", "v3").await;
    assert_eq!(
        unknown_occurrences(store, a, link).await,
        ["never", "series"]
    );

    // More series than one statement binds: every pair is marked.
    let many: Vec<String> = (0..1200).map(|i| format!("m{i:04}")).collect();
    store
        .upsert_mappings(
            a,
            many.iter()
                .map(|remote| MappingUpsert {
                    link_id: other,
                    remote_id: remote.clone(),
                    series_id: None,
                    remote_version: Some("v1".into()),
                    base_json: None,
                    base_hash: None,
                    last_seen_at: None,
                    write_ahead: false,
                    local_version: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(unknown_occurrences(store, a, other).await.len(), 1201);
    let reported: Vec<SeriesOccurrenceIds> = many.iter().map(|r| of(r, &[])).collect();
    store
        .replace_remote_occurrences(a, other, &reported)
        .await
        .unwrap();
    assert_eq!(unknown_occurrences(store, a, other).await, ["series"]);
}

/// On a database migrated up to 0017: migration 0018 marks the pairs with stored occurrence ids as
/// remembering them (a read replaced them whole), and leaves the others not remembered (a single
/// event, or a series read before occurrences were reported: no row tells which).
pub async fn pairs_with_occurrence_rows_are_remembered_after_0018(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let cal = calendar(store, a, "c").await;
    let (link, _) = two_links(store, a, cal.id, Provider::Microsoft).await;
    let read = plain_pair(store, a, link, "read", "v1").await;
    plain_pair(store, a, link, "older", "v1").await;
    db.raw_execute(&format!(
        "INSERT INTO remote_occurrences (link_id, tenant_id, occurrence_id, mapping_id) \
         VALUES ('{link}', '{a}', 'o1', '{}')",
        read.id
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(unknown_occurrences(store, a, link).await, ["older"]);
}

/// A pair remembers the local version its base was taken from; the series still at that version are
/// the ones a sync run may skip (its own writes coming back), per link and per tenant.
pub async fn series_at_their_pair_version_are_known(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let (link, other) = two_links(store, a, cal.id, Provider::Google).await;
    let mut series = Vec::new();
    for uid in ["kept", "edited", "deleted", "no-version", "unpaired"] {
        series.push(
            store
                .create_series(a, new_series(cal.id, uid, OccurrenceSet::default()))
                .await
                .unwrap(),
        );
    }
    let pair = |remote: &str, s: &Series, local_version: Option<i64>| MappingUpsert {
        link_id: link,
        remote_id: remote.into(),
        series_id: Some(s.id),
        remote_version: Some("v".into()),
        base_json: None,
        base_hash: None,
        last_seen_at: None,
        write_ahead: false,
        local_version,
    };
    for (i, s) in series.iter().take(4).enumerate() {
        let version = (s.uid != "no-version").then_some(s.version);
        store
            .upsert_mapping(a, pair(&format!("r{i}"), s, version))
            .await
            .unwrap();
    }
    // The other link's pair of "kept" is at another version: it says nothing about this link's.
    store
        .upsert_mapping(
            a,
            MappingUpsert {
                link_id: other,
                ..pair("r0", &series[0], Some(series[0].version + 7))
            },
        )
        .await
        .unwrap();
    let edited = &series[1];
    store
        .update_series(
            a,
            edited.id,
            edited.version,
            SeriesUpdate {
                ical: edited.ical.clone(),
                model_json: edited.model_json.clone(),
                hash: edited.hash.clone(),
                occurrences: OccurrenceSet::default(),
            },
        )
        .await
        .unwrap();
    store
        .delete_series(a, series[2].id, series[2].version)
        .await
        .unwrap();
    let ids: Vec<SeriesId> = series.iter().map(|s| s.id).collect();
    assert_eq!(
        store.series_at_pair_version(a, link, &ids).await.unwrap(),
        vec![series[0].id],
        "only the live series still at its pair's local version"
    );
    assert!(
        store
            .series_at_pair_version(a, other, &ids)
            .await
            .unwrap()
            .is_empty(),
        "another link's pair is at another version"
    );
    assert!(
        store
            .series_at_pair_version(b, link, &ids)
            .await
            .unwrap()
            .is_empty(),
        "another tenant reads nothing"
    );
    // A write-ahead upsert (an intent pending) forgets the version; recording the pair again sets it.
    store
        .upsert_mapping(
            a,
            MappingUpsert {
                write_ahead: true,
                ..pair("r0", &series[0], None)
            },
        )
        .await
        .unwrap();
    assert!(
        store
            .series_at_pair_version(a, link, &ids)
            .await
            .unwrap()
            .is_empty()
    );
    let now_edited = store.get_series(a, edited.id).await.unwrap();
    store
        .upsert_mapping(a, pair("r1", &now_edited, Some(now_edited.version)))
        .await
        .unwrap();
    // Long lists are asked in bounded chunks.
    let mut many: Vec<SeriesId> = (0..700).map(|_| SeriesId::new()).collect();
    many.push(edited.id);
    assert_eq!(
        store.series_at_pair_version(a, link, &many).await.unwrap(),
        vec![edited.id]
    );
}

/// A link's time detection is marked due by the run about to detect (with its cursor commit, or
/// alone) and stays due until that run's detection succeeded: a run takes over the mark it read, a
/// mark another run wrote after that read is neither taken over nor cleared by it, other tenants
/// cannot touch it, and every read of the link carries it (the engine needs no extra read).
pub async fn a_failed_time_detection_stays_due_until_covered(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let conn = connection(store, a, cal.id, Provider::Caldav, ConnectionStatus::Active).await;
    let new_link = |path: &str| NewLink {
        connection_id: conn.id,
        remote_calendar_id: path.into(),
        remote_name: None,
    };
    let link = store.create_link(a, new_link("/work/")).await.unwrap();
    let other = store.create_link(a, new_link("/home/")).await.unwrap();
    assert_eq!(link.time_detection_due, None);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(
            store
                .create_sync_run(a, Some(conn.id), false)
                .await
                .unwrap()
                .id,
        );
    }
    let (first, second, third) = (runs[0], runs[1], runs[2]);
    let due = || async { store.get_link(a, link.id).await.unwrap().time_detection_due };
    let cursors = |mark: Option<TimeDetectionMark>| LinkCursors {
        remote: Some("c2"),
        local: Some(7),
        full_sync_at: None,
        time_detection_due: mark,
    };

    // `first` marks its detection in its cursor commit.
    let committed = store
        .set_link_cursors(
            a,
            link.id,
            cursors(Some(TimeDetectionMark {
                run: first,
                seen: None,
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        (committed.cursor.as_deref(), committed.local_cursor),
        (Some("c2"), Some(7))
    );
    assert_eq!(committed.time_detection_due, Some(first));
    assert_eq!(due().await, Some(first));
    let listed = store.list_links(a, conn.id).await.unwrap();
    let marks: Vec<Option<SyncRunId>> = listed.iter().map(|l| l.time_detection_due).collect();
    let want = |l: &Link| if l.id == link.id { Some(first) } else { None };
    assert_eq!(
        marks,
        listed.iter().map(want).collect::<Vec<_>>(),
        "only the marked link is due"
    );
    assert_eq!(
        store
            .get_link(a, other.id)
            .await
            .unwrap()
            .time_detection_due,
        None
    );
    // Cursors without a mark and the status move on without touching it.
    store
        .set_link_cursors(a, link.id, cursors(None))
        .await
        .unwrap();
    let after = store
        .set_link_status(a, link.id, LinkStatus::Active, None)
        .await
        .unwrap();
    assert_eq!(after.time_detection_due, Some(first));

    // `second` read the link before `first` marked it: it does not take `first`'s mark over,
    // alone or with its cursors, and its success does not clear it.
    for marking in [true, false] {
        let mark = TimeDetectionMark {
            run: second,
            seen: None,
        };
        if marking {
            store
                .set_time_detection_due(a, link.id, mark)
                .await
                .unwrap();
        } else {
            store
                .set_link_cursors(a, link.id, cursors(Some(mark)))
                .await
                .unwrap();
        }
        assert_eq!(due().await, Some(first));
    }
    assert!(
        !store
            .clear_time_detection_due(a, link.id, second)
            .await
            .unwrap()
    );
    // `third` read `first`'s mark: it takes it over (its detection covers the whole window), and
    // `first`'s late success no longer clears it.
    store
        .set_time_detection_due(
            a,
            link.id,
            TimeDetectionMark {
                run: third,
                seen: Some(first),
            },
        )
        .await
        .unwrap();
    assert_eq!(due().await, Some(third));
    assert!(
        !store
            .clear_time_detection_due(a, link.id, first)
            .await
            .unwrap()
    );
    assert_eq!(due().await, Some(third));
    // Another tenant neither sets nor clears it.
    assert!(is_not_found(
        store
            .set_time_detection_due(
                b,
                link.id,
                TimeDetectionMark {
                    run: first,
                    seen: Some(third),
                },
            )
            .await
    ));
    assert!(
        !store
            .clear_time_detection_due(b, link.id, third)
            .await
            .unwrap()
    );
    assert_eq!(due().await, Some(third));

    assert!(
        store
            .clear_time_detection_due(a, link.id, third)
            .await
            .unwrap()
    );
    assert_eq!(due().await, None);
    assert!(
        !store
            .clear_time_detection_due(a, link.id, third)
            .await
            .unwrap()
    );
    assert!(is_not_found(
        store
            .set_time_detection_due(
                a,
                LinkId::new(),
                TimeDetectionMark {
                    run: first,
                    seen: None,
                },
            )
            .await
    ));
}

/// The migration versions `_sqlx_migrations` records as applied, in order.
async fn applied_migrations(db: &TestDb) -> Vec<i64> {
    db.raw_i64s("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// A database that has every migration but `missed` (numbered below migrations it already has: it
/// landed on main after them), opened through the store's normal open path, gets `missed` applied and
/// works with it. What each migration adds is checked by using it.
pub async fn a_migration_numbered_below_applied_ones_is_applied_on_open(db: &TestDb, missed: i64) {
    let before = applied_migrations(db).await;
    assert!(!before.contains(&missed), "{before:?}");
    assert!(
        before.iter().any(|v| *v > missed),
        "later ones applied: {before:?}"
    );
    let (probe, what) = match missed {
        9 => (
            "SELECT stale_after_ms FROM sync_runs",
            "sync_runs.stale_after_ms",
        ),
        12 => (
            "SELECT time_detection_due FROM links",
            "links.time_detection_due",
        ),
        other => panic!("no check for migration {other}"),
    };
    assert!(
        db.raw_i64s(probe).await.is_err(),
        "{what} exists before {missed}"
    );

    let store = calbridge_store::open(&db.url).await.unwrap();
    let after = applied_migrations(db).await;
    let mut want = before.clone();
    want.push(missed);
    want.sort();
    assert_eq!(after, want, "exactly the missed one was applied");
    // Opening again changes nothing (checksums of the applied ones, including the late one, agree).
    calbridge_store::open(&db.url).await.unwrap();
    assert_eq!(applied_migrations(db).await, want);

    let a = tenant(store.as_ref(), "a").await;
    match missed {
        9 => {
            // A heartbeat writes the run's own staleness bound, and the reaper judges by it.
            let at = Timestamp::now();
            let run = store.create_sync_run(a, None, false).await.unwrap().id;
            assert!(
                store
                    .touch_sync_run(a, run, at, Duration::from_secs(3600))
                    .await
                    .unwrap()
            );
            let bound = db
                .raw_i64s(&format!(
                    "SELECT stale_after_ms FROM sync_runs WHERE id = '{run}'"
                ))
                .await
                .unwrap();
            assert_eq!(bound, vec![Some(3_600_000)]);
            let closed = store
                .fail_stale_sync_runs(at + 10.minutes(), Duration::from_secs(60), &|_| "x".into())
                .await
                .unwrap();
            assert!(closed.is_empty(), "judged by its own hour: {closed:?}");
        }
        _ => {
            let cal = calendar(store.as_ref(), a, "c").await;
            let conn = connection(
                store.as_ref(),
                a,
                cal.id,
                Provider::Caldav,
                ConnectionStatus::Active,
            )
            .await;
            let link = store
                .create_link(
                    a,
                    NewLink {
                        connection_id: conn.id,
                        remote_calendar_id: "/work/".into(),
                        remote_name: None,
                    },
                )
                .await
                .unwrap();
            let run = store
                .create_sync_run(a, Some(conn.id), false)
                .await
                .unwrap()
                .id;
            let mark = TimeDetectionMark { run, seen: None };
            store
                .set_time_detection_due(a, link.id, mark)
                .await
                .unwrap();
            assert_eq!(
                store.get_link(a, link.id).await.unwrap().time_detection_due,
                Some(run)
            );
        }
    }
}

/// `upsert_pair` records a series' pair on a link and drops the series' other rows on that link (a
/// create's write-ahead row, an earlier pair) in one transaction: when the database refuses either
/// half, neither happens (a process killed between them must not lose the row that says a remote
/// item is the link's own). Other links' rows and other series' rows stay; a pair names a series.
pub async fn a_pair_replaces_the_series_other_rows_in_one_transaction(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let (link, other) = two_links(store, a, cal.id, Provider::Caldav).await;
    let s = store
        .create_series(a, new_series(cal.id, "s", OccurrenceSet::default()))
        .await
        .unwrap();
    let t = store
        .create_series(a, new_series(cal.id, "t", OccurrenceSet::default()))
        .await
        .unwrap();
    let row = |link_id: LinkId, remote: &str, series: &Series, write_ahead: bool| MappingUpsert {
        link_id,
        remote_id: remote.into(),
        series_id: Some(series.id),
        remote_version: (!write_ahead).then(|| "v1".to_owned()),
        base_json: Some(format!(r#"{{"remote":"{remote}"}}"#)),
        base_hash: None,
        last_seen_at: None,
        write_ahead,
        local_version: None,
    };
    for m in [
        row(link, "pending-create:k", &s, true),
        row(link, "old", &s, false),
        row(other, "elsewhere", &s, false),
        row(link, "t-pair", &t, false),
    ] {
        store.upsert_mapping(a, m).await.unwrap();
    }
    let remotes = |link_id: LinkId| async move {
        let mut r: Vec<(String, Option<SeriesId>)> = store
            .list_mappings(a, link_id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.remote_id, m.series_id))
            .collect();
        r.sort();
        r
    };
    let before = remotes(link).await;
    assert_eq!(before.len(), 3, "{before:?}");

    // The database refuses the pair, then the removal of the other rows: nothing changes either time.
    let refusals: [(&str, &[&str], &[&str]); 2] = match &db.raw {
        crate::harness::Raw::Sqlite(_) => [
            (
                "insert",
                &[
                    "CREATE TRIGGER refuse BEFORE INSERT ON item_mappings WHEN NOT NEW.write_ahead \
                   BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
                ],
                &["DROP TRIGGER refuse"],
            ),
            (
                "delete",
                &["CREATE TRIGGER refuse BEFORE DELETE ON item_mappings \
                   BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"],
                &["DROP TRIGGER refuse"],
            ),
        ],
        crate::harness::Raw::Pg(_) => [
            (
                "insert",
                &[
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                    "CREATE TRIGGER refuse BEFORE INSERT ON item_mappings FOR EACH ROW \
                     WHEN (NOT NEW.write_ahead) EXECUTE FUNCTION refuse()",
                ],
                &[
                    "DROP TRIGGER refuse ON item_mappings",
                    "DROP FUNCTION refuse()",
                ],
            ),
            (
                "delete",
                &[
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                    "CREATE TRIGGER refuse BEFORE DELETE ON item_mappings FOR EACH ROW \
                     EXECUTE FUNCTION refuse()",
                ],
                &[
                    "DROP TRIGGER refuse ON item_mappings",
                    "DROP FUNCTION refuse()",
                ],
            ),
        ],
    };
    for (what, create, drop) in refusals {
        for sql in create {
            db.raw_execute(sql).await.unwrap();
        }
        let refused = store.upsert_pair(a, row(link, "new", &s, false)).await;
        for sql in drop {
            db.raw_execute(sql).await.unwrap();
        }
        assert!(refused.is_err(), "{what}: {refused:?}");
        assert_eq!(
            remotes(link).await,
            before,
            "{what} refused: nothing changed"
        );
    }

    // Refused without a series, or for another tenant: nothing changes.
    let unnamed = store
        .upsert_pair(
            a,
            MappingUpsert {
                series_id: None,
                ..row(link, "new", &s, false)
            },
        )
        .await;
    assert!(
        matches!(unnamed, Err(StoreError::Invalid(_))),
        "{unnamed:?}"
    );
    assert!(
        store
            .upsert_pair(b, row(link, "new", &s, false))
            .await
            .is_err()
    );
    assert_eq!(remotes(link).await, before);

    // Recorded: the pair alone names `s` on this link; the other link and `t` keep theirs.
    let pair = store
        .upsert_pair(a, row(link, "new", &s, false))
        .await
        .unwrap();
    assert_eq!(pair.series_id, Some(s.id));
    assert_eq!(pair.remote_version.as_deref(), Some("v1"));
    assert_eq!(
        remotes(link).await,
        vec![
            ("new".to_owned(), Some(s.id)),
            ("t-pair".to_owned(), Some(t.id))
        ]
    );
    assert_eq!(
        remotes(other).await,
        vec![("elsewhere".to_owned(), Some(s.id))]
    );
    assert!(
        store
            .write_ahead_mappings(a, link)
            .await
            .unwrap()
            .is_empty()
    );
    // Recorded again (a new base): still one row.
    store
        .upsert_pair(
            a,
            MappingUpsert {
                remote_version: Some("v2".into()),
                ..row(link, "new", &s, false)
            },
        )
        .await
        .unwrap();
    let again = store.get_mapping(a, link, "new").await.unwrap().unwrap();
    assert_eq!(again.remote_version.as_deref(), Some("v2"));
    assert_eq!(remotes(link).await.len(), 2);
}

/// `get_deleted_series_by_uid`: the latest-created deleted series of a calendar with a UID created at
/// or after a time; live ones, older ones, other calendars' and other tenants' are not returned.
pub async fn deleted_series_are_found_by_uid_and_age(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let other = calendar(store, a, "other").await;
    let create = |calendar: CalendarId| {
        store.create_series(a, new_series(calendar, "u", OccurrenceSet::default()))
    };
    let old = create(cal.id).await.unwrap();
    store.delete_series(a, old.id, old.version).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = Timestamp::now();
    assert!(
        store
            .get_deleted_series_by_uid(a, cal.id, "u", since)
            .await
            .unwrap()
            .is_none(),
        "deleted before `since`"
    );
    let live = create(cal.id).await.unwrap();
    assert!(
        store
            .get_deleted_series_by_uid(a, cal.id, "u", since)
            .await
            .unwrap()
            .is_none(),
        "live"
    );
    store.delete_series(a, live.id, live.version).await.unwrap();
    let elsewhere = create(other.id).await.unwrap();
    store
        .delete_series(a, elsewhere.id, elsewhere.version)
        .await
        .unwrap();
    let found = store
        .get_deleted_series_by_uid(a, cal.id, "u", since)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, live.id);
    assert!(found.deleted_at.is_some());
    assert_eq!(
        store
            .get_deleted_series_by_uid(a, cal.id, "u", old.created_at)
            .await
            .unwrap()
            .map(|s| s.id),
        Some(live.id),
        "the latest created"
    );
    assert!(
        store
            .get_deleted_series_by_uid(a, cal.id, "v", old.created_at)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_deleted_series_by_uid(b, cal.id, "u", old.created_at)
            .await
            .unwrap()
            .is_none(),
        "another tenant"
    );
}

/// `get_series_by_uids`: the live series of one calendar holding any of the UIDs asked, across the
/// query's chunks of 500; deleted ones, other calendars' and other tenants' are not returned.
pub async fn series_are_found_by_many_uids(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let other = calendar(store, a, "other").await;
    let batch: Vec<NewSeries> = (0..600)
        .map(|i| new_series(cal.id, &format!("u{i}"), OccurrenceSet::default()))
        .collect();
    let created = store.create_series_batch(a, batch).await.unwrap();
    store
        .create_series(
            a,
            new_series(other.id, "elsewhere", OccurrenceSet::default()),
        )
        .await
        .unwrap();
    let gone = &created[7];
    store.delete_series(a, gone.id, gone.version).await.unwrap();

    let mut asked: Vec<String> = (0..600).map(|i| format!("u{i}")).collect();
    asked.extend(["missing".to_owned(), "elsewhere".to_owned()]);
    let found = store.get_series_by_uids(a, cal.id, &asked).await.unwrap();
    let mut uids: Vec<String> = found.iter().map(|s| s.uid.clone()).collect();
    uids.sort();
    let mut expected: Vec<String> = (0..600)
        .filter(|i| *i != 7)
        .map(|i| format!("u{i}"))
        .collect();
    expected.sort();
    assert_eq!(uids, expected, "live, of this calendar, each once");
    let one = found.iter().find(|s| s.uid == "u3").unwrap();
    assert_eq!(one, &store.get_series(a, one.id).await.unwrap());

    assert!(
        store
            .get_series_by_uids(a, cal.id, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_series_by_uids(b, cal.id, &asked)
            .await
            .unwrap()
            .is_empty(),
        "another tenant"
    );
}

/// `upsert_mappings` and `upsert_pairs`: many rows in one transaction, all or nothing; each pair
/// replaces its series' other rows on its link (as `upsert_pair` does), across statement chunks.
pub async fn mapping_and_pair_batches_are_all_or_nothing(db: &TestDb) {
    let store = db.store.as_ref();
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let cal = calendar(store, a, "c").await;
    let b_cal = calendar(store, b, "c").await;
    let (link, other) = two_links(store, a, cal.id, Provider::Caldav).await;
    let b_series = store
        .create_series(b, new_series(b_cal.id, "theirs", OccurrenceSet::default()))
        .await
        .unwrap();
    let n = 600;
    let series = store
        .create_series_batch(
            a,
            (0..n)
                .map(|i| new_series(cal.id, &format!("s{i}"), OccurrenceSet::default()))
                .collect(),
        )
        .await
        .unwrap();
    let row = |link_id: LinkId, remote: &str, series: Option<SeriesId>, write_ahead: bool| {
        MappingUpsert {
            link_id,
            remote_id: remote.into(),
            series_id: series,
            remote_version: Some(format!("v-{remote}")),
            base_json: Some(format!(r#"{{"remote":"{remote}"}}"#)),
            base_hash: Some(format!("h-{remote}")),
            last_seen_at: Some(ms(1_000)),
            write_ahead,
            local_version: None,
        }
    };
    let rows_of = |link_id: LinkId| async move {
        let mut r: Vec<(String, Option<SeriesId>, bool)> = store
            .list_mappings(a, link_id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.remote_id, m.series_id, m.remote_version.is_some()))
            .collect();
        r.sort();
        r
    };

    // Write-ahead rows of local creates (no series yet), one per item, in one call.
    let ahead: Vec<MappingUpsert> = (0..n)
        .map(|i| row(link, &format!("r{i}"), None, true))
        .collect();
    store.upsert_mappings(a, ahead.clone()).await.unwrap();
    assert_eq!(store.write_ahead_mappings(a, link).await.unwrap().len(), n);
    let r5 = store.get_mapping(a, link, "r5").await.unwrap().unwrap();
    assert_eq!(r5.series_id, None);
    assert_eq!(r5.remote_version.as_deref(), Some("v-r5"));
    assert_eq!(r5.base_json.as_deref(), Some(r#"{"remote":"r5"}"#));
    assert_eq!(r5.base_hash.as_deref(), Some("h-r5"));
    assert_eq!(r5.last_seen_at, Some(ms(1_000)));
    // Upserted again: the same rows, updated in place.
    store
        .upsert_mappings(
            a,
            vec![MappingUpsert {
                remote_version: Some("v2".into()),
                ..row(link, "r5", None, true)
            }],
        )
        .await
        .unwrap();
    let again = store.get_mapping(a, link, "r5").await.unwrap().unwrap();
    assert_eq!(
        (again.id, again.remote_version.as_deref()),
        (r5.id, Some("v2"))
    );
    assert_eq!(rows_of(link).await.len(), n);
    assert!(store.upsert_mappings(a, Vec::new()).await.is_ok());

    // Each series also has a stale row on the link (an earlier pair) and one on the other link.
    let mut extra: Vec<MappingUpsert> = series
        .iter()
        .enumerate()
        .map(|(i, s)| row(link, &format!("stale{i}"), Some(s.id), false))
        .collect();
    extra.push(row(other, "elsewhere", Some(series[0].id), false));
    store.upsert_mappings(a, extra).await.unwrap();
    let before = rows_of(link).await;
    assert_eq!(before.len(), 2 * n);

    // Refused before anything is written: nothing changes.
    let refusals: Vec<(&str, Vec<MappingUpsert>, bool)> = vec![
        (
            "a remote id twice",
            vec![row(link, "x", None, true), row(link, "x", None, true)],
            false,
        ),
        (
            "another tenant's series",
            vec![row(link, "x", Some(b_series.id), true)],
            false,
        ),
        (
            "a pair without its series",
            vec![row(link, "x", None, false)],
            true,
        ),
        (
            "a series paired twice on one link",
            vec![
                row(link, "x", Some(series[1].id), false),
                row(link, "y", Some(series[1].id), false),
            ],
            true,
        ),
    ];
    for (what, batch, pairs) in refusals {
        let refused = if pairs {
            store.upsert_pairs(a, batch).await
        } else {
            store.upsert_mappings(a, batch).await
        };
        assert!(refused.is_err(), "{what}: {refused:?}");
        assert_eq!(rows_of(link).await, before, "{what}: nothing changed");
    }
    assert!(
        store
            .upsert_mappings(b, vec![row(link, "x", None, true)])
            .await
            .is_err(),
        "another tenant's link"
    );
    assert_eq!(rows_of(link).await, before);

    let pairs: Vec<MappingUpsert> = series
        .iter()
        .enumerate()
        .map(|(i, s)| MappingUpsert {
            local_version: Some(s.version),
            ..row(link, &format!("r{i}"), Some(s.id), false)
        })
        .collect();
    // The database refuses one pair of the batch, then the removal of the other rows: nothing of
    // the batch is written either time.
    let refusals: [(&str, &[&str], &[&str]); 2] = match &db.raw {
        crate::harness::Raw::Sqlite(_) => [
            (
                "one pair",
                &[
                    "CREATE TRIGGER refuse BEFORE UPDATE ON item_mappings WHEN NEW.remote_id = 'r599' \
                   AND NOT NEW.write_ahead BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
                ],
                &["DROP TRIGGER refuse"],
            ),
            (
                "the removal",
                &["CREATE TRIGGER refuse BEFORE DELETE ON item_mappings \
                   BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"],
                &["DROP TRIGGER refuse"],
            ),
        ],
        crate::harness::Raw::Pg(_) => [
            (
                "one pair",
                &[
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                    "CREATE TRIGGER refuse BEFORE UPDATE ON item_mappings FOR EACH ROW \
                     WHEN (NEW.remote_id = 'r599' AND NOT NEW.write_ahead) EXECUTE FUNCTION refuse()",
                ],
                &[
                    "DROP TRIGGER refuse ON item_mappings",
                    "DROP FUNCTION refuse()",
                ],
            ),
            (
                "the removal",
                &[
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                    "CREATE TRIGGER refuse BEFORE DELETE ON item_mappings FOR EACH ROW \
                     EXECUTE FUNCTION refuse()",
                ],
                &[
                    "DROP TRIGGER refuse ON item_mappings",
                    "DROP FUNCTION refuse()",
                ],
            ),
        ],
    };
    for (what, create, drop) in refusals {
        for sql in create {
            db.raw_execute(sql).await.unwrap();
        }
        let refused = store.upsert_pairs(a, pairs.clone()).await;
        for sql in drop {
            db.raw_execute(sql).await.unwrap();
        }
        assert!(refused.is_err(), "{what}: {refused:?}");
        assert_eq!(
            rows_of(link).await,
            before,
            "{what} refused: nothing changed"
        );
    }

    // Recorded: each series is named on the link by its pair alone (its write-ahead row became the
    // pair, its stale row is gone); the other link keeps its row.
    store.upsert_pairs(a, pairs).await.unwrap();
    let expected: Vec<(String, Option<SeriesId>, bool)> = {
        let mut e: Vec<_> = series
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("r{i}"), Some(s.id), true))
            .collect();
        e.sort();
        e
    };
    assert_eq!(rows_of(link).await, expected);
    assert_eq!(
        rows_of(other).await,
        vec![("elsewhere".to_owned(), Some(series[0].id), true)]
    );
    assert!(
        store
            .write_ahead_mappings(a, link)
            .await
            .unwrap()
            .is_empty()
    );
    let ids: Vec<SeriesId> = series.iter().map(|s| s.id).collect();
    assert_eq!(
        store
            .series_at_pair_version(a, link, &ids)
            .await
            .unwrap()
            .len(),
        n,
        "each pair keeps its local version"
    );
    assert!(store.upsert_pairs(a, Vec::new()).await.is_ok());
}
