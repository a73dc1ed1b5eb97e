// Shared implementation of `Store`, included by `sqlite.rs` and `postgres.rs` after each defines `Db` (the sqlx
// database), `Backend` (the store struct, with `r()` read pool and `wtx()` write transaction), `BACKEND`,
// `LEASE_LOCK` (row-locking suffix of the job-lease subquery), `SPLIT_WINDOW_QUERY` (the shape of the window
// query, see `list_occurrences`) and `lock_change_stream`. Both dialects accept
// `$N` placeholders, `RETURNING`, `ON CONFLICT … DO UPDATE` and partial indexes, so the SQL is written once.

use std::time::Duration as StdDuration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::{QueryBuilder, Row};

use crate::crypto::{MasterKey, Purpose, Sealed};
use crate::error::{Result, StoreError};
use crate::records::*;
use crate::rows::*;
use crate::store::Store;

type DbRow = <Db as sqlx::Database>::Row;
type Tx = sqlx::Transaction<'static, Db>;

const TENANT_COLS: &str = "id, name, created_at";
const KEY_COLS: &str =
    "id, tenant_id, name, prefix, secret_hash, scopes, created_at, last_used_at, revoked_at";
const CAL_COLS: &str = "id, tenant_id, name, time_zone, owner, version, created_at, updated_at";
const SERIES_COLS: &str = "id, tenant_id, calendar_id, uid, ical, model, hash, version, expanded_until, created_at, updated_at, deleted_at";
const CONN_COLS: &str = "id, tenant_id, provider, name, calendar_id, credentials, sync_options, status, status_reason, version, created_at, updated_at";
const LINK_COLS: &str = "id, tenant_id, connection_id, remote_calendar_id, remote_name, cursor, local_cursor, last_full_sync_at, status, status_reason, time_detection_due, created_at, updated_at";
/// `series_at_pair_version` up to its tenant, link and series bindings.
const SERIES_AT_PAIR_VERSION: &str = "SELECT m.series_id FROM item_mappings m JOIN series s \
     ON s.id = m.series_id AND s.tenant_id = m.tenant_id AND s.version = m.local_version \
     AND s.deleted_at IS NULL WHERE m.tenant_id = ";
/// `get_deleted_series_by_uid` after its column list: one probe of `series_deleted_uid`
/// (migration 0016).
const DELETED_SERIES_BY_UID: &str = "FROM series WHERE tenant_id = $1 AND calendar_id = $2 \
     AND uid = $3 AND deleted_at IS NOT NULL AND created_at >= $4 \
     ORDER BY created_at DESC, id DESC LIMIT 1";
/// The `time_detection_due` a run's mark leaves (see `TimeDetectionMark`): the marking run (the
/// parameter `run`) when the marker is empty or names the run it read (`seen`), else the marker as it
/// is (another run marked it after the read); a NULL `run` leaves it as it is.
fn take_detection_mark(run: &str, seen: &str) -> String {
    format!(
        "CASE WHEN {run} IS NOT NULL AND (time_detection_due IS NULL OR time_detection_due = {seen}) \
         THEN {run} ELSE time_detection_due END"
    )
}
const MAP_COLS: &str = "id, tenant_id, link_id, series_id, remote_id, remote_version, base, base_hash, last_seen_at, updated_at";
const CONFLICT_COLS: &str = "id, tenant_id, connection_id, link_id, series_id, other_series_id, event_uid, kind, state, local, remote, base, fields, options, detected_at, resolved_at, resolution, resolved_by, resolving";
const RUN_COLS: &str = "id, tenant_id, connection_id, full_sync, status, counts, requests, bytes, errors, started_at, finished_at";
const AUDIT_COLS: &str = "seq, tenant_id, actor, action, subject, details, at";
const TOMB_COLS: &str =
    "id, tenant_id, calendar_id, series_id, link_id, remote_id, uid, deleted_at, expires_at";
const JOB_COLS: &str = "id, tenant_id, kind, key, payload, state, run_at, attempts, last_error, lease_owner, lease_expires_at, fencing_token";
const HOOK_COLS: &str = "id, tenant_id, url, secret, events, calendar_id, enabled, disabled_reason, consecutive_failures, delivered_seq, retry_at, created_at, updated_at";
const DELIVERY_COLS: &str = "id, tenant_id, subscription_id, change_seq, event, attempt, status, response_status, error, latency_ms, at";
const CHANGE_COLS: &str = "seq, tenant_id, calendar_id, kind, subject_id, data, at";
const PUSH_COLS: &str =
    "provider, id, tenant_id, link_id, secret_hash, resource_id, expires_at, last_message, created_at";
const OCC_COLS: &str = "series_id, calendar_id, recurrence_id, start_utc, end_utc, all_day, data";
const OAUTH_STATE_COLS: &str =
    "id, tenant_id, connection_id, provider, verifier, created_at, expires_at";


/// The INSERT heads of rows written both one at a time and in multi-row batches, each with the one function
/// that binds a record in the same column order (`insert_rows`), so the two paths cannot disagree.
const SERIES_INSERT: &str = "INSERT INTO series (id, tenant_id, calendar_id, uid, ical, model, hash, version, expanded_until, created_at, updated_at) ";
const OCC_INSERT: &str = "INSERT INTO occurrences (tenant_id, start_utc, series_id, recurrence_id, end_utc, calendar_id, all_day, data) ";
const CHANGE_INSERT: &str = "INSERT INTO changes (tenant_id, calendar_id, kind, subject_id, data, at) ";
/// Mappings are upserted by `(link, remote id)`: the head and the tail around the `VALUES` list.
const MAP_INSERT: &str = "INSERT INTO item_mappings (id, tenant_id, link_id, series_id, remote_id, remote_version, base, base_hash, last_seen_at, updated_at, write_ahead, local_version) ";
const MAP_UPSERT: &str = " ON CONFLICT (link_id, remote_id) DO UPDATE SET series_id = excluded.series_id, \
     remote_version = excluded.remote_version, base = excluded.base, base_hash = excluded.base_hash, \
     last_seen_at = excluded.last_seen_at, updated_at = excluded.updated_at, write_ahead = excluded.write_ahead, \
     local_version = excluded.local_version";

/// One row of a multi-row `VALUES` list (every value is bound owned, hence `'static`).
type Values<'qb> = sqlx::query_builder::Separated<'qb, 'static, Db, &'static str>;

fn bind_series(mut b: Values<'_>, record: &Series) {
    b.push_bind(record.id.to_string())
        .push_bind(record.tenant_id.to_string())
        .push_bind(record.calendar_id.to_string())
        .push_bind(record.uid.clone())
        .push_bind(record.ical.clone())
        .push_bind(record.model_json.clone())
        .push_bind(record.hash.clone())
        .push_bind(record.version)
        .push_bind(record.expanded_until.map(ms))
        .push_bind(ms(record.created_at))
        .push_bind(ms(record.updated_at));
}

/// An occurrence row with the ids it is stored under.
struct OccurrenceRow<'a> {
    tenant: &'a str,
    series: &'a str,
    calendar: &'a str,
    row: &'a NewOccurrence,
}

fn bind_occurrence(mut b: Values<'_>, o: &OccurrenceRow<'_>) {
    b.push_bind(o.tenant.to_owned())
        .push_bind(ms(o.row.start))
        .push_bind(o.series.to_owned())
        .push_bind(rid_to_db(&o.row.recurrence_id))
        .push_bind(ms(o.row.end))
        .push_bind(o.calendar.to_owned())
        .push_bind(o.row.all_day)
        .push_bind(o.row.data.clone());
}

/// A change-stream entry with its tenant and time.
struct ChangeRow<'a> {
    tenant: &'a str,
    change: &'a NewChange,
    at: Timestamp,
}

fn bind_change(mut b: Values<'_>, c: &ChangeRow<'_>) {
    b.push_bind(c.tenant.to_owned())
        .push_bind(c.change.calendar_id.map(|id| id.to_string()))
        .push_bind(c.change.kind.clone())
        .push_bind(c.change.subject_id.clone())
        .push_bind(c.change.data_json.clone())
        .push_bind(ms(c.at));
}

/// A mapping row with the ids and time it is stored under.
struct MappingRow<'a> {
    id: String,
    tenant: &'a str,
    updated_at: i64,
    mapping: &'a MappingUpsert,
}

impl<'a> MappingRow<'a> {
    fn new(tenant: &'a str, updated_at: i64, mapping: &'a MappingUpsert) -> Self {
        Self {
            id: MappingId::new().to_string(),
            tenant,
            updated_at,
            mapping,
        }
    }
}

fn bind_mapping(mut b: Values<'_>, r: &MappingRow<'_>) {
    let m = r.mapping;
    b.push_bind(r.id.clone())
        .push_bind(r.tenant.to_owned())
        .push_bind(m.link_id.to_string())
        .push_bind(m.series_id.map(|s| s.to_string()))
        .push_bind(m.remote_id.clone())
        .push_bind(m.remote_version.clone())
        .push_bind(m.base_json.clone())
        .push_bind(m.base_hash.clone())
        .push_bind(m.last_seen_at.map(ms))
        .push_bind(r.updated_at)
        .push_bind(m.write_ahead)
        .push_bind(m.local_version);
}

/// Inserts `items` with multi-row statements of at most `per_statement` rows (one round trip each).
async fn insert_rows<T>(
    tx: &mut Tx,
    head: &'static str,
    items: &[T],
    per_statement: usize,
    bind: fn(Values<'_>, &T),
) -> Result<()> {
    insert_rows_then(tx, head, "", items, per_statement, bind).await
}

/// [`insert_rows`] with `tail` after each statement's `VALUES` list (an `ON CONFLICT` clause).
async fn insert_rows_then<T>(
    tx: &mut Tx,
    head: &'static str,
    tail: &'static str,
    items: &[T],
    per_statement: usize,
    bind: fn(Values<'_>, &T),
) -> Result<()> {
    for chunk in items.chunks(per_statement) {
        let mut builder: QueryBuilder<'static, Db> = QueryBuilder::new(head);
        builder.push_values(chunk, bind);
        builder.push(tail);
        builder.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// What a write statement reports (rows affected).
type DbDone = <Db as sqlx::Database>::QueryResult;

/// The tail of a write addressed to one row by id and tenant: a statement that changed nothing found
/// no such row of the tenant's (absent, or another tenant's, which reads the same).
trait Found {
    /// `Err(NotFound { entity })` when no row was affected.
    fn found(self, entity: &'static str) -> Result<()>;
}

impl Found for DbDone {
    fn found(self, entity: &'static str) -> Result<()> {
        if self.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity });
        }
        Ok(())
    }
}

/// Why an open-only change of `conflict` matched no row: it is not the tenant's (`NotFound`), or it is
/// no longer open.
async fn not_open(
    tx: &mut Tx,
    tenant: TenantId,
    conflict: ConflictId,
) -> StoreError {
    match ensure_owned(tx, "conflicts", "conflict", &conflict.to_string(), tenant).await {
        Ok(()) => StoreError::Conflict("the conflict is already resolved".into()),
        Err(e) => e,
    }
}

/// `SELECT … FROM conflicts WHERE` the tenant and each filter that is set. Only the set ones are
/// written (not `($n IS NULL OR col = $n)`), so the planner can use the index they match: the run's
/// read of its link's open conflicts goes through `conflicts_link` (migration 0017).
fn conflicts_matching(tenant: TenantId, filter: &ConflictFilter) -> QueryBuilder<'static, Db> {
    let mut q = QueryBuilder::new(format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE tenant_id = "));
    q.push_bind(tenant.to_string());
    if let Some(state) = filter.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(connection) = filter.connection_id {
        q.push(" AND connection_id = ").push_bind(connection.to_string());
    }
    if let Some(kind) = filter.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(link) = filter.link_id {
        q.push(" AND link_id = ").push_bind(link.to_string());
    }
    q
}

/// Appends ` AND {column} IN (…)` with one bound parameter per id.
fn push_in_list<I: ToString>(q: &mut QueryBuilder<'static, Db>, column: &str, ids: &[I]) {
    q.push(format!(" AND {column} IN ("));
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    q.push(")");
}

/// The rows that bounded `IN` lists name (both engines cap the number of bound parameters): `query`
/// builds the statement for one chunk of at most `per_query` ids of one of `lists` (each tagged, e.g.
/// with the column it names), `row` reads a result row, and a record that several chunks or lists name
/// is kept once (by `key`), where it was first read.
async fn rows_naming<'a, L: Copy, I, T, K: Eq + std::hash::Hash>(
    pool: &sqlx::Pool<Db>,
    lists: &[(L, &'a [I])],
    per_query: usize,
    mut query: impl FnMut(L, &'a [I]) -> QueryBuilder<'static, Db>,
    row: fn(&DbRow) -> Result<T>,
    key: fn(&T) -> K,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut have = std::collections::HashSet::new();
    for &(list, ids) in lists {
        for chunk in ids.chunks(per_query) {
            for r in query(list, chunk).build().fetch_all(pool).await? {
                let record = row(&r)?;
                if have.insert(key(&record)) {
                    out.push(record);
                }
            }
        }
    }
    Ok(out)
}

fn push_row(row: &DbRow) -> Result<PushChannel> {
    Ok(PushChannel {
        provider: row.try_get("provider")?,
        id: row.try_get("id")?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        link_id: id(row.try_get("link_id")?)?,
        secret_hash: row.try_get("secret_hash")?,
        resource_id: row.try_get("resource_id")?,
        expires_at: ts(row.try_get("expires_at")?)?,
        last_message: row.try_get("last_message")?,
        created_at: ts(row.try_get("created_at")?)?,
    })
}

fn tenant_row(row: &DbRow) -> Result<Tenant> {
    Ok(Tenant {
        id: id(row.try_get("id")?)?,
        name: row.try_get("name")?,
        created_at: ts(row.try_get("created_at")?)?,
    })
}

fn key_row(row: &DbRow) -> Result<ApiKey> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKey {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        secret_hash: row.try_get("secret_hash")?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("api key scopes: {e}")))?,
        created_at: ts(row.try_get("created_at")?)?,
        last_used_at: ots(row.try_get("last_used_at")?)?,
        revoked_at: ots(row.try_get("revoked_at")?)?,
    })
}

fn cal_row(row: &DbRow) -> Result<Calendar> {
    Ok(Calendar {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        name: row.try_get("name")?,
        time_zone: row.try_get("time_zone")?,
        owner: row.try_get("owner")?,
        version: row.try_get("version")?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
    })
}

fn series_row(row: &DbRow) -> Result<Series> {
    Ok(Series {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        calendar_id: id(row.try_get("calendar_id")?)?,
        uid: row.try_get("uid")?,
        ical: row.try_get("ical")?,
        model_json: row.try_get("model")?,
        hash: row.try_get("hash")?,
        version: row.try_get("version")?,
        expanded_until: ots(row.try_get("expanded_until")?)?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
        deleted_at: ots(row.try_get("deleted_at")?)?,
    })
}

fn occ_row(row: &DbRow) -> Result<Occurrence> {
    Ok(Occurrence {
        series_id: id(row.try_get("series_id")?)?,
        calendar_id: id(row.try_get("calendar_id")?)?,
        recurrence_id: rid_from_db(row.try_get("recurrence_id")?),
        start: ts(row.try_get("start_utc")?)?,
        end: ts(row.try_get("end_utc")?)?,
        all_day: row.try_get("all_day")?,
        data: row.try_get("data")?,
    })
}

fn conn_row(row: &DbRow) -> Result<Connection> {
    let provider: String = row.try_get("provider")?;
    let status: String = row.try_get("status")?;
    let credentials: Option<Vec<u8>> = row.try_get("credentials")?;
    Ok(Connection {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        provider: parse_enum(&provider, Provider::parse)?,
        name: row.try_get("name")?,
        calendar_id: id(row.try_get("calendar_id")?)?,
        credentials: credentials.map(Sealed::from_stored),
        sync_options_json: row.try_get("sync_options")?,
        status: parse_enum(&status, ConnectionStatus::parse)?,
        status_reason: row.try_get("status_reason")?,
        version: row.try_get("version")?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
    })
}

fn link_row(row: &DbRow) -> Result<Link> {
    let status: String = row.try_get("status")?;
    Ok(Link {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        connection_id: id(row.try_get("connection_id")?)?,
        remote_calendar_id: row.try_get("remote_calendar_id")?,
        remote_name: row.try_get("remote_name")?,
        cursor: row.try_get("cursor")?,
        local_cursor: row.try_get("local_cursor")?,
        last_full_sync_at: ots(row.try_get("last_full_sync_at")?)?,
        status: parse_enum(&status, LinkStatus::parse)?,
        status_reason: row.try_get("status_reason")?,
        time_detection_due: oid(row.try_get("time_detection_due")?)?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
    })
}

fn map_row(row: &DbRow) -> Result<ItemMapping> {
    Ok(ItemMapping {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        link_id: id(row.try_get("link_id")?)?,
        series_id: oid(row.try_get("series_id")?)?,
        remote_id: row.try_get("remote_id")?,
        remote_version: row.try_get("remote_version")?,
        base_json: row.try_get("base")?,
        base_hash: row.try_get("base_hash")?,
        last_seen_at: ots(row.try_get("last_seen_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
    })
}

fn conflict_row(row: &DbRow) -> Result<Conflict> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    Ok(Conflict {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        connection_id: oid(row.try_get("connection_id")?)?,
        link_id: oid(row.try_get("link_id")?)?,
        series_id: oid(row.try_get("series_id")?)?,
        other_series_id: oid(row.try_get("other_series_id")?)?,
        event_uid: row.try_get("event_uid")?,
        kind: parse_enum(&kind, ConflictKind::parse)?,
        state: parse_enum(&state, ConflictState::parse)?,
        local_json: row.try_get("local")?,
        remote_json: row.try_get("remote")?,
        base_json: row.try_get("base")?,
        fields_json: row.try_get("fields")?,
        options_json: row.try_get("options")?,
        detected_at: ts(row.try_get("detected_at")?)?,
        resolved_at: ots(row.try_get("resolved_at")?)?,
        resolution_json: row.try_get("resolution")?,
        resolved_by: row.try_get("resolved_by")?,
        resolving_json: row.try_get("resolving")?,
    })
}

fn run_row(row: &DbRow) -> Result<SyncRun> {
    let status: String = row.try_get("status")?;
    Ok(SyncRun {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        connection_id: oid(row.try_get("connection_id")?)?,
        full: row.try_get("full_sync")?,
        status: parse_enum(&status, SyncRunStatus::parse)?,
        counts_json: row.try_get("counts")?,
        requests: row.try_get("requests")?,
        bytes: row.try_get("bytes")?,
        errors_json: row.try_get("errors")?,
        started_at: ts(row.try_get("started_at")?)?,
        finished_at: ots(row.try_get("finished_at")?)?,
    })
}

fn audit_row(row: &DbRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        subject: row.try_get("subject")?,
        details_json: row.try_get("details")?,
        at: ts(row.try_get("at")?)?,
    })
}

fn tomb_row(row: &DbRow) -> Result<Tombstone> {
    Ok(Tombstone {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        calendar_id: oid(row.try_get("calendar_id")?)?,
        series_id: oid(row.try_get("series_id")?)?,
        link_id: oid(row.try_get("link_id")?)?,
        remote_id: row.try_get("remote_id")?,
        uid: row.try_get("uid")?,
        deleted_at: ts(row.try_get("deleted_at")?)?,
        expires_at: ts(row.try_get("expires_at")?)?,
    })
}

fn job_row(row: &DbRow) -> Result<Job> {
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: id(row.try_get("id")?)?,
        tenant_id: oid(row.try_get("tenant_id")?)?,
        kind: row.try_get("kind")?,
        key: row.try_get("key")?,
        payload_json: row.try_get("payload")?,
        state: parse_enum(&state, JobState::parse)?,
        run_at: ts(row.try_get("run_at")?)?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: ots(row.try_get("lease_expires_at")?)?,
        fencing_token: row.try_get("fencing_token")?,
    })
}

fn hook_row(row: &DbRow) -> Result<Webhook> {
    Ok(Webhook {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        url: row.try_get("url")?,
        secret: Sealed::from_stored(row.try_get("secret")?),
        events_json: row.try_get("events")?,
        calendar_id: oid(row.try_get("calendar_id")?)?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        delivered_seq: row.try_get("delivered_seq")?,
        retry_at: row
            .try_get::<Option<i64>, _>("retry_at")?
            .map(ts)
            .transpose()?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
    })
}

fn delivery_row(row: &DbRow) -> Result<Delivery> {
    Ok(Delivery {
        id: id(row.try_get("id")?)?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        subscription_id: id(row.try_get("subscription_id")?)?,
        change_seq: row.try_get("change_seq")?,
        event: row.try_get("event")?,
        attempt: row.try_get("attempt")?,
        status: row.try_get("status")?,
        response_status: row.try_get("response_status")?,
        error: row.try_get("error")?,
        latency_ms: row.try_get("latency_ms")?,
        at: ts(row.try_get("at")?)?,
    })
}

fn oauth_state_row(row: &DbRow) -> Result<OAuthState> {
    Ok(OAuthState {
        state_hash: row.try_get("id")?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        connection_id: id(row.try_get("connection_id")?)?,
        provider: row.try_get("provider")?,
        verifier: Sealed::from_stored(row.try_get("verifier")?),
        created_at: ts(row.try_get("created_at")?)?,
        expires_at: ts(row.try_get("expires_at")?)?,
    })
}

fn change_row(row: &DbRow) -> Result<Change> {
    Ok(Change {
        seq: row.try_get("seq")?,
        tenant_id: id(row.try_get("tenant_id")?)?,
        calendar_id: oid(row.try_get("calendar_id")?)?,
        kind: row.try_get("kind")?,
        subject_id: row.try_get("subject_id")?,
        data_json: row.try_get("data")?,
        at: ts(row.try_get("at")?)?,
    })
}

fn lease_ms(ttl: StdDuration) -> Result<i64> {
    let ms = i64::try_from(ttl.as_millis())
        .map_err(|_| StoreError::Invalid("lease ttl too long".into()))?;
    if ms <= 0 {
        return Err(StoreError::Invalid("lease ttl must be positive".into()));
    }
    Ok(ms)
}

/// Inserts or updates the row of `(link, remote id)` inside `tx` (the link and series checked as the
/// tenant's).
async fn upsert_mapping_in(
    tx: &mut Tx,
    tenant: TenantId,
    mapping: &MappingUpsert,
) -> Result<ItemMapping> {
    ensure_owned(tx, "links", "link", &mapping.link_id.to_string(), tenant).await?;
    if let Some(series) = mapping.series_id {
        ensure_owned(tx, "series", "event", &series.to_string(), tenant).await?;
    }
    let tenant = tenant.to_string();
    let mut builder: QueryBuilder<'static, Db> = QueryBuilder::new(MAP_INSERT);
    builder.push_values([MappingRow::new(&tenant, ms(now()), mapping)], |b, row| {
        bind_mapping(b, &row)
    });
    builder.push(MAP_UPSERT);
    builder.push(format!(" RETURNING {MAP_COLS}"));
    let row = builder.build().fetch_one(&mut **tx).await?;
    map_row(&row)
}

/// Checks a batch of mappings before its transaction: remote ids given, no `(link, remote id)` twice
/// (one multi-row upsert cannot name a row twice: PostgreSQL refuses it, SQLite would keep the last),
/// and for pairs a series on each, never twice on one link. Returns the batch's distinct links and
/// series, for the ownership checks.
fn validate_mappings(
    mappings: &[MappingUpsert],
    pairs: bool,
) -> Result<(Vec<LinkId>, Vec<SeriesId>)> {
    let mut rows = std::collections::HashSet::new();
    let mut paired = std::collections::HashSet::new();
    let mut links = std::collections::BTreeSet::new();
    let mut series = std::collections::BTreeSet::new();
    for m in mappings {
        non_empty("remote id", &m.remote_id)?;
        if !rows.insert((m.link_id, m.remote_id.as_str())) {
            return Err(StoreError::Invalid(format!(
                "the remote id {:?} appears twice on one link in the batch",
                m.remote_id
            )));
        }
        links.insert(m.link_id);
        match m.series_id {
            Some(s) => {
                series.insert(s);
                if pairs && !paired.insert((m.link_id, s)) {
                    return Err(StoreError::Invalid(format!(
                        "the event {s} is paired twice on one link in the batch"
                    )));
                }
            }
            None if pairs => return Err(StoreError::Invalid("a pair names its series".into())),
            None => {}
        }
    }
    Ok((links.into_iter().collect(), series.into_iter().collect()))
}

/// Upserts a validated batch of mappings inside `tx` with multi-row statements, after checking its
/// links and series as the tenant's (one query per few hundred series, not one per row).
async fn upsert_mappings_in(
    tx: &mut Tx,
    tenant: TenantId,
    mappings: &[MappingUpsert],
    links: &[LinkId],
    series: &[SeriesId],
) -> Result<()> {
    for link in links {
        ensure_owned(tx, "links", "link", &link.to_string(), tenant).await?;
    }
    let tenant_s = tenant.to_string();
    for chunk in series.chunks(INSERT_CHUNK) {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {SERIES_BY_ID} WHERE tenant_id = $1 AND id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(tenant_s.clone());
        for s in chunk {
            query = query.bind(s.to_string());
        }
        let owned: i64 = query.fetch_one(&mut **tx).await?.try_get("n")?;
        if usize::try_from(owned).ok() != Some(chunk.len()) {
            return Err(StoreError::NotFound { entity: "event" });
        }
    }
    let at = ms(now());
    let rows: Vec<_> = mappings
        .iter()
        .map(|m| MappingRow::new(&tenant_s, at, m))
        .collect();
    // 12 columns: half the usual rows per statement keeps the bound parameters alike.
    insert_rows_then(tx, MAP_INSERT, MAP_UPSERT, &rows, INSERT_CHUNK / 2, bind_mapping).await
}

/// Refuses a row reference that does not belong to `tenant` (foreign keys alone would accept any tenant's id).
async fn ensure_owned(
    tx: &mut Tx,
    table: &'static str,
    entity: &'static str,
    row_id: &str,
    tenant: TenantId,
) -> Result<()> {
    let sql = format!("SELECT 1 AS one FROM {table} WHERE id = $1 AND tenant_id = $2");
    let found = sqlx::query(&sql)
        .bind(row_id)
        .bind(tenant.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound { entity }),
    }
}

async fn ensure_tenant(tx: &mut Tx, tenant: TenantId) -> Result<()> {
    let found = sqlx::query("SELECT 1 AS one FROM tenants WHERE id = $1")
        .bind(tenant.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound { entity: "tenant" }),
    }
}

/// After a versioned UPDATE matched nothing: tell a missing row from a stale version.
async fn version_failure(
    tx: &mut Tx,
    table: &'static str,
    entity: &'static str,
    row_id: &str,
    tenant: TenantId,
    expected: i64,
) -> StoreError {
    // A soft-deleted series is gone for writers, whatever version they hold.
    let live = if table == "series" {
        " AND deleted_at IS NULL"
    } else {
        ""
    };
    let sql = format!("SELECT version FROM {table} WHERE id = $1 AND tenant_id = $2{live}");
    match sqlx::query(&sql)
        .bind(row_id)
        .bind(tenant.to_string())
        .fetch_optional(&mut **tx)
        .await
    {
        Ok(Some(row)) => match row.try_get::<i64, _>("version") {
            Ok(current) => StoreError::PreconditionFailed {
                entity,
                expected,
                current: Some(current),
            },
            Err(e) => e.into(),
        },
        Ok(None) => StoreError::NotFound { entity },
        Err(e) => e.into(),
    }
}

fn validate_occurrences(set: &OccurrenceSet) -> Result<i64> {
    if set.rows.len() > MAX_OCCURRENCES_PER_SERIES {
        return Err(StoreError::Invalid(format!(
            "{} occurrence rows for one series (at most {MAX_OCCURRENCES_PER_SERIES}); shorten the horizon",
            set.rows.len()
        )));
    }
    let mut longest = 0i64;
    let mut seen = std::collections::HashSet::new();
    for row in &set.rows {
        let span = ms(row.end) - ms(row.start);
        if span < 0 {
            return Err(StoreError::Invalid(
                "an occurrence ends before it starts".into(),
            ));
        }
        if !seen.insert(row.recurrence_id.as_deref()) {
            return Err(StoreError::Invalid(format!(
                "recurrence id {:?} appears twice in one series",
                row.recurrence_id
            )));
        }
        if let Some(data) = &row.data {
            check_json("occurrence data", data)?;
        }
        longest = longest.max(span);
    }
    Ok(longest)
}

/// Removes the occurrence rows of one series, before [`insert_occurrences`] writes its new ones.
async fn delete_occurrences(tx: &mut Tx, tenant: TenantId, series: SeriesId) -> Result<()> {
    sqlx::query(&format!("DELETE FROM {OCCURRENCES_BY_SERIES} WHERE series_id = $1 AND tenant_id = $2"))
        .bind(series.to_string())
        .bind(tenant.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The occurrence rows of a series that has none yet (a new one: its id was just made), and the
/// tenant's longest-span bound. Skipping the replace's `DELETE` saves a statement per created series,
/// which an import makes thousands of times.
async fn insert_occurrences(
    tx: &mut Tx,
    tenant: TenantId,
    calendar: CalendarId,
    series: SeriesId,
    set: &OccurrenceSet,
    longest: i64,
) -> Result<()> {
    let tenant_s = tenant.to_string();
    let series_s = series.to_string();
    let calendar_s = calendar.to_string();
    let rows: Vec<_> = set
        .rows
        .iter()
        .map(|row| OccurrenceRow {
            tenant: &tenant_s,
            series: &series_s,
            calendar: &calendar_s,
            row,
        })
        .collect();
    insert_rows(tx, OCC_INSERT, &rows, INSERT_CHUNK, bind_occurrence).await?;
    widen_longest(tx, &tenant_s, longest).await
}

/// Raises the tenant's longest-occurrence bound to `longest` (it only grows; see `list_occurrences`).
async fn widen_longest(tx: &mut Tx, tenant: &str, longest: i64) -> Result<()> {
    sqlx::query(
        "UPDATE tenants SET max_occurrence_ms = $2 WHERE id = $1 AND max_occurrence_ms < $2",
    )
    .bind(tenant)
    .bind(longest)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_change(
    tx: &mut Tx,
    tenant: TenantId,
    change: &NewChange,
    at: Timestamp,
) -> Result<Change> {
    lock_change_stream(tx, tenant).await?;
    let tenant = tenant.to_string();
    let mut builder: QueryBuilder<'static, Db> = QueryBuilder::new(CHANGE_INSERT);
    builder.push_values([ChangeRow { tenant: &tenant, change, at }], |b, row| {
        bind_change(b, &row)
    });
    builder.push(format!(" RETURNING {CHANGE_COLS}"));
    let row = builder.build().fetch_one(&mut **tx).await?;
    change_row(&row)
}

/// A run's staleness bound in milliseconds, capped (at ~3,000 years) so that adding it to a
/// heartbeat time cannot overflow a `BIGINT`.
fn stale_ms(bound: StdDuration) -> i64 {
    const CAP: i64 = 100_000_000_000_000;
    i64::try_from(bound.as_millis()).map_or(CAP, |ms| ms.min(CAP))
}

/// The errors of a closed run that a late report joins (see [`Store::update_sync_run`]): the
/// row's entries, then the report's that the row does not hold yet (counted, so an error the process
/// had already reported before the run was closed appears once), then one `late_report` entry saying
/// what the process reported and when (replacing the entry of an earlier late report).
fn with_late_report(closed: &SyncRun, update: &SyncRunUpdate) -> Result<String> {
    let late = |e: &serde_json::Value| e["item"] == "run" && e["class"] == "late_report";
    let mut errors: Vec<serde_json::Value> = serde_json::from_str(&closed.errors_json)
        .unwrap_or_default();
    errors.retain(|e| !late(e));
    let reaped = errors
        .iter()
        .any(|e| e["item"] == "run" && e["class"] == "interrupted");
    let mut held: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for e in &errors {
        *held.entry(e.to_string()).or_default() += 1;
    }
    let reported = match serde_json::from_str(&update.errors_json) {
        Ok(serde_json::Value::Array(list)) => list,
        Ok(other) => vec![other],
        Err(e) => return Err(StoreError::Invalid(format!("run errors: {e}"))),
    };
    for e in reported {
        match held.get_mut(&e.to_string()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => errors.push(e),
        }
    }
    let when = match update.finished_at {
        Some(at) => format!("finished at {at}"),
        None => "still running".into(),
    };
    let closed_as = if reaped {
        "the process running this sync resumed after the run had been closed as interrupted"
    } else {
        "a report of this sync arrived after the run had been closed"
    };
    errors.push(serde_json::json!({
        "item": "run",
        "action": "report",
        "class": "late_report",
        "cause": format!(
            "{closed_as}, and reported `{}` ({when}): the run stays closed as it was; its counts and \
             errors are the report's",
            update.status.as_str()
        ),
    }));
    serde_json::to_string(&errors).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Appends a non-series message (conflicts, connection status, finished runs) to the change stream inside the
/// caller's transaction, so the message exists exactly when the state it announces does. The calendar is
/// the connection's, so a stream filtered by calendar sees its connections' messages.
/// `sync.finished`, the first time a run gets its `finished_at` (closed by its process, or as
/// interrupted by the reaper).
async fn announce_run_finished(tx: &mut Tx, record: &SyncRun) -> Result<()> {
    let errors =
        serde_json::from_str::<Vec<serde_json::Value>>(&record.errors_json).map_or(0, |e| e.len());
    announce(
        tx,
        record.tenant_id,
        record.connection_id,
        "sync.finished",
        record.id.to_string(),
        serde_json::json!({
            "connection_id": record.connection_id,
            "status": record.status.as_str(),
            "full": record.full,
            "counts": json_or_null(Some(&record.counts_json)),
            "requests": record.requests,
            "errors": errors,
        }),
    )
    .await?;
    Ok(())
}

async fn announce(
    tx: &mut Tx,
    tenant: TenantId,
    connection: Option<ConnectionId>,
    kind: &str,
    subject_id: String,
    data: serde_json::Value,
) -> Result<Change> {
    let calendar_id = match connection {
        Some(c) => {
            let row = sqlx::query("SELECT calendar_id FROM connections WHERE id = $1 AND tenant_id = $2")
                .bind(c.to_string())
                .bind(tenant.to_string())
                .fetch_optional(&mut **tx)
                .await?;
            match row {
                Some(row) => oid(row.try_get("calendar_id")?)?,
                None => None,
            }
        }
        None => None,
    };
    let change = NewChange {
        calendar_id,
        kind: kind.to_owned(),
        subject_id,
        data_json: data.to_string(),
    };
    insert_change(tx, tenant, &change, now()).await
}

/// A tenant's stream head: its newest entry's seq, or, once retention removed every entry, the highest
/// seq removed (a head never moves back, so marks taken from it stay valid).
const HEAD_SQL: &str = "SELECT COALESCE((SELECT MAX(seq) FROM changes WHERE tenant_id = $1), 0) AS head, \
     COALESCE((SELECT changes_purged_through FROM tenants WHERE id = $1), 0) AS floor";

fn head_of(row: &DbRow) -> Result<i64> {
    let head: i64 = row.try_get("head")?;
    let floor: i64 = row.try_get("floor")?;
    Ok(head.max(floor))
}

fn json_or_null(text: Option<&str>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn series_change(kind: &str, series: &Series) -> NewChange {
    NewChange {
        calendar_id: Some(series.calendar_id),
        kind: kind.to_owned(),
        subject_id: series.id.to_string(),
        data_json: serde_json::json!({ "uid": series.uid, "version": series.version }).to_string(),
    }
}

/// One series with its occurrence rows and change entry, inside the caller's transaction.
async fn insert_series(tx: &mut Tx, tenant: TenantId, series: NewSeries) -> Result<Series> {
    non_empty("event uid", &series.uid)?;
    check_json("event model", &series.model_json)?;
    let longest = validate_occurrences(&series.occurrences)?;
    let at = now();
    let (record, occurrences) = new_series_record(tenant, series, at);
    ensure_owned(
        tx,
        "calendars",
        "calendar",
        &record.calendar_id.to_string(),
        tenant,
    )
    .await?;
    insert_rows(tx, SERIES_INSERT, std::slice::from_ref(&record), 1, bind_series)
    .await
    .map_err(|e| match e {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("an event with UID {:?} already exists in this calendar", record.uid))
        }
        other => other,
    })?;
    insert_occurrences(
        tx,
        tenant,
        record.calendar_id,
        record.id,
        &occurrences,
        longest,
    )
    .await?;
    insert_change(tx, tenant, &series_change("event.created", &record), at).await?;
    Ok(record)
}

/// A new series' record (version 1, created `at`) and the occurrence rows that go with it.
fn new_series_record(tenant: TenantId, series: NewSeries, at: Timestamp) -> (Series, OccurrenceSet) {
    let record = Series {
        id: SeriesId::new(),
        tenant_id: tenant,
        calendar_id: series.calendar_id,
        uid: series.uid,
        ical: series.ical,
        model_json: series.model_json,
        hash: series.hash,
        version: 1,
        expanded_until: series.occurrences.expanded_until,
        created_at: at,
        updated_at: at,
        deleted_at: None,
    };
    (record, series.occurrences)
}

/// Inserts a new open conflict and announces it on the change stream, inside `tx`.
async fn insert_conflict(tx: &mut Tx, tenant: TenantId, conflict: NewConflict) -> Result<Conflict> {
    check_json("conflict fields", &conflict.fields_json)?;
    check_json("conflict options", &conflict.options_json)?;
    let record = Conflict {
        id: ConflictId::new(),
        tenant_id: tenant,
        connection_id: conflict.connection_id,
        link_id: conflict.link_id,
        series_id: conflict.series_id,
        other_series_id: conflict.other_series_id,
        event_uid: conflict.event_uid,
        kind: conflict.kind,
        state: ConflictState::Open,
        local_json: conflict.local_json,
        remote_json: conflict.remote_json,
        base_json: conflict.base_json,
        fields_json: conflict.fields_json,
        options_json: conflict.options_json,
        detected_at: now(),
        resolved_at: None,
        resolution_json: None,
        resolved_by: None,
        resolving_json: None,
    };
    if let Some(c) = record.connection_id {
        ensure_owned(tx, "connections", "connection", &c.to_string(), tenant).await?;
    }
    if let Some(l) = record.link_id {
        ensure_owned(tx, "links", "link", &l.to_string(), tenant).await?;
    }
    for s in record.series_id.iter().chain(&record.other_series_id) {
        ensure_owned(tx, "series", "event", &s.to_string(), tenant).await?;
    }
    sqlx::query(
        "INSERT INTO conflicts (id, tenant_id, connection_id, link_id, series_id, other_series_id, event_uid, kind, state, local, remote, base, fields, options, detected_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(record.id.to_string())
    .bind(tenant.to_string())
    .bind(record.connection_id.map(|c| c.to_string()))
    .bind(record.link_id.map(|c| c.to_string()))
    .bind(record.series_id.map(|c| c.to_string()))
    .bind(record.other_series_id.map(|c| c.to_string()))
    .bind(&record.event_uid)
    .bind(record.kind.as_str())
    .bind(record.state.as_str())
    .bind(&record.local_json)
    .bind(&record.remote_json)
    .bind(&record.base_json)
    .bind(&record.fields_json)
    .bind(&record.options_json)
    .bind(ms(record.detected_at))
    .execute(&mut **tx)
    .await?;
    announce(
        &mut *tx,
        tenant,
        record.connection_id,
        "conflict.detected",
        record.id.to_string(),
        serde_json::json!({
            "kind": record.kind.as_str(),
            "event_uid": record.event_uid,
            "series_id": record.series_id,
            "connection_id": record.connection_id,
            "link_id": record.link_id,
            "fields": json_or_null(Some(&record.fields_json)),
        }),
    )
    .await?;
    Ok(record)
}

/// Resolves `conflict` if it is still open, announcing it on the change stream, inside `tx`; `None` when
/// it is not open (resolved meanwhile, or not this tenant's).
async fn resolve_open_conflict(
    tx: &mut Tx,
    tenant: TenantId,
    conflict: ConflictId,
    resolution_json: &str,
    resolved_by: &str,
    at: Timestamp,
) -> Result<Option<Conflict>> {
    let sql = format!(
        "UPDATE conflicts SET state = 'resolved', resolution = $3, resolved_by = $4, resolved_at = $5 \
         WHERE id = $1 AND tenant_id = $2 AND state = 'open' RETURNING {CONFLICT_COLS}"
    );
    let row = sqlx::query(&sql)
        .bind(conflict.to_string())
        .bind(tenant.to_string())
        .bind(resolution_json)
        .bind(resolved_by)
        .bind(ms(at))
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record = conflict_row(&row)?;
    announce(
        tx,
        tenant,
        record.connection_id,
        "conflict.resolved",
        record.id.to_string(),
        serde_json::json!({
            "kind": record.kind.as_str(),
            "event_uid": record.event_uid,
            "series_id": record.series_id,
            "connection_id": record.connection_id,
            "link_id": record.link_id,
            "resolution": json_or_null(record.resolution_json.as_deref()),
            "resolved_by": record.resolved_by,
        }),
    )
    .await?;
    Ok(Some(record))
}

/// Appends one audit entry inside `tx` (the tenant is checked by the caller).
async fn insert_audit(tx: &mut Tx, tenant: TenantId, entry: NewAuditEntry) -> Result<AuditEntry> {
    non_empty("audit action", &entry.action)?;
    check_json("audit details", &entry.details_json)?;
    let sql = format!(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, details, at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {AUDIT_COLS}"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.to_string())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.subject)
        .bind(&entry.details_json)
        .bind(ms(now()))
        .fetch_one(&mut **tx)
        .await?;
    audit_row(&row)
}

impl Backend {
    /// Writes an open conflict's `resolving` record: unconditionally (`expected: None`), or only while
    /// it still holds `expected` as stored (`Some(None)`: none), and appends `entries` to the audit
    /// log in the same transaction. The one statement behind [`Store::set_conflict_resolving`],
    /// [`Store::swap_conflict_resolving`] and [`Store::swap_conflict_resolving_audited`].
    async fn write_resolving(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        expected: Option<Option<&str>>,
        resolving_json: Option<&str>,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Conflict> {
        if let Some(json) = resolving_json {
            check_json("resolving", json)?;
        }
        let mut tx = self.wtx().await?;
        let guard = if expected.is_some() {
            " AND COALESCE(resolving, '') = COALESCE($4, '')"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE conflicts SET resolving = $3 WHERE id = $1 AND tenant_id = $2 AND state = 'open'{guard} \
             RETURNING {CONFLICT_COLS}"
        );
        let mut query = sqlx::query(&sql)
            .bind(conflict.to_string())
            .bind(tenant.to_string())
            .bind(resolving_json);
        if let Some(expected) = expected {
            query = query.bind(expected);
        }
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            if expected.is_none() {
                return Err(not_open(&mut tx, tenant, conflict).await);
            }
            return Err(
                match ensure_owned(&mut tx, "conflicts", "conflict", &conflict.to_string(), tenant)
                    .await
                {
                    Ok(()) => StoreError::Conflict(
                        "the conflict is no longer open, or another resolution of it began or ended meanwhile"
                            .into(),
                    ),
                    Err(e) => e,
                },
            );
        };
        let record = conflict_row(&row)?;
        for entry in entries {
            insert_audit(&mut tx, tenant, entry).await?;
        }
        tx.commit().await?;
        Ok(record)
    }
}

#[async_trait]
impl Store for Backend {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<()> {
        self.run_migrations().await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.r()).await?;
        Ok(())
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        non_empty("tenant name", name)?;
        let tenant = Tenant {
            id: TenantId::new(),
            name: name.to_owned(),
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO tenants (id, name, max_occurrence_ms, created_at) VALUES ($1, $2, 0, $3)",
        )
        .bind(tenant.id.to_string())
        .bind(&tenant.name)
        .bind(ms(tenant.created_at))
        .execute(self.w())
        .await?;
        Ok(tenant)
    }

    async fn get_tenant(&self, tenant: TenantId) -> Result<Tenant> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(tenant_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "tenant" })
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants ORDER BY id");
        sqlx::query(&sql)
            .fetch_all(self.r())
            .await?
            .iter()
            .map(tenant_row)
            .collect()
    }

    async fn create_api_key(&self, tenant: TenantId, key: NewApiKey) -> Result<ApiKey> {
        non_empty("key prefix", &key.prefix)?;
        non_empty("key secret hash", &key.secret_hash)?;
        let record = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant,
            name: key.name,
            prefix: key.prefix,
            secret_hash: key.secret_hash,
            scopes: key.scopes,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        let scopes = serde_json::to_string(&record.scopes)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(&record.name)
        .bind(&record.prefix)
        .bind(&record.secret_hash)
        .bind(scopes)
        .bind(ms(record.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn find_api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE prefix = $1");
        let row = sqlx::query(&sql)
            .bind(prefix)
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 ORDER BY id");
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(key_row)
            .collect()
    }

    async fn touch_api_key(&self, tenant: TenantId, key: ApiKeyId, at: Timestamp) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET last_used_at = $3 WHERE id = $1 AND tenant_id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(key.to_string())
        .bind(tenant.to_string())
        .bind(ms(at))
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            // Either a newer touch won (fine) or the key is not this tenant's.
            let sql = "SELECT 1 AS one FROM api_keys WHERE id = $1 AND tenant_id = $2";
            let exists = sqlx::query(sql)
                .bind(key.to_string())
                .bind(tenant.to_string())
                .fetch_optional(self.r())
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound { entity: "api key" });
            }
        }
        Ok(())
    }

    async fn revoke_api_key(&self, tenant: TenantId, key: ApiKeyId) -> Result<ApiKey> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 AND tenant_id = $2 RETURNING {KEY_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(key.to_string())
            .bind(tenant.to_string())
            .bind(ms(now()))
            .fetch_optional(self.w())
            .await?;
        row.as_ref()
            .map(key_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "api key" })
    }

    async fn create_calendar(&self, tenant: TenantId, calendar: NewCalendar) -> Result<Calendar> {
        non_empty("calendar name", &calendar.name)?;
        non_empty("calendar time zone", &calendar.time_zone)?;
        let at = now();
        let record = Calendar {
            id: CalendarId::new(),
            tenant_id: tenant,
            name: calendar.name,
            time_zone: calendar.time_zone,
            owner: calendar.owner,
            version: 1,
            created_at: at,
            updated_at: at,
        };
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        sqlx::query(
            "INSERT INTO calendars (id, tenant_id, name, time_zone, owner, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(&record.name)
        .bind(&record.time_zone)
        .bind(&record.owner)
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_calendar(&self, tenant: TenantId, calendar: CalendarId) -> Result<Calendar> {
        let sql = format!("SELECT {CAL_COLS} FROM calendars WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(calendar.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(cal_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "calendar" })
    }

    async fn list_calendars(&self, tenant: TenantId) -> Result<Vec<Calendar>> {
        let sql = format!("SELECT {CAL_COLS} FROM calendars WHERE tenant_id = $1 ORDER BY id");
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(cal_row)
            .collect()
    }

    async fn update_calendar(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        expected_version: i64,
        update: CalendarUpdate,
    ) -> Result<Calendar> {
        non_empty("calendar name", &update.name)?;
        non_empty("calendar time zone", &update.time_zone)?;
        let mut tx = self.wtx().await?;
        let sql = format!(
            "UPDATE calendars SET name = $4, time_zone = $5, owner = $6, version = version + 1, updated_at = $7 \
             WHERE id = $1 AND tenant_id = $2 AND version = $3 RETURNING {CAL_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(calendar.to_string())
            .bind(tenant.to_string())
            .bind(expected_version)
            .bind(&update.name)
            .bind(&update.time_zone)
            .bind(&update.owner)
            .bind(ms(now()))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(version_failure(
                &mut tx,
                "calendars",
                "calendar",
                &calendar.to_string(),
                tenant,
                expected_version,
            )
            .await);
        };
        let record = cal_row(&row)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_calendar(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        expected_version: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.wtx().await?;
        let done = sqlx::query("DELETE FROM calendars WHERE id = $1 AND tenant_id = $2 AND ($3 IS NULL OR version = $3)")
            .bind(calendar.to_string())
            .bind(tenant.to_string())
            .bind(expected_version)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            let expected = expected_version.unwrap_or_default();
            return Err(version_failure(
                &mut tx,
                "calendars",
                "calendar",
                &calendar.to_string(),
                tenant,
                expected,
            )
            .await);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_series(&self, tenant: TenantId, series: NewSeries) -> Result<Series> {
        let mut tx = self.wtx().await?;
        let record = insert_series(&mut tx, tenant, series).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn create_series_batch(
        &self,
        tenant: TenantId,
        batch: Vec<NewSeries>,
    ) -> Result<Vec<Series>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Checked before the transaction, so a bad item costs no write lock.
        let mut longest = 0i64;
        let mut uids = std::collections::HashSet::new();
        for series in &batch {
            non_empty("event uid", &series.uid)?;
            check_json("event model", &series.model_json)?;
            longest = longest.max(validate_occurrences(&series.occurrences)?);
            if !uids.insert((series.calendar_id, series.uid.as_str())) {
                return Err(StoreError::Conflict(format!(
                    "the UID {:?} appears twice in the batch",
                    series.uid
                )));
            }
        }
        drop(uids);
        let at = now();
        let mut tx = self.wtx().await?;
        let calendars: std::collections::BTreeSet<CalendarId> =
            batch.iter().map(|s| s.calendar_id).collect();
        for calendar in calendars {
            ensure_owned(&mut tx, "calendars", "calendar", &calendar.to_string(), tenant).await?;
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut occurrences = Vec::with_capacity(batch.len());
        for series in batch {
            let (record, set) = new_series_record(tenant, series, at);
            out.push(record);
            occurrences.push(set.rows);
        }
        let tenant_s = tenant.to_string();
        // Multi-row statements: one round trip per chunk instead of five per series.
        insert_rows(&mut tx, SERIES_INSERT, &out, INSERT_CHUNK / 2, bind_series)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict(
                    "an event with one of the batch's UIDs already exists in its calendar".into(),
                ),
                other => other,
            })?;
        let ids: Vec<_> = out
            .iter()
            .map(|record| (record.id.to_string(), record.calendar_id.to_string()))
            .collect();
        let rows: Vec<_> = ids
            .iter()
            .zip(&occurrences)
            .flat_map(|((series, calendar), rows)| {
                rows.iter().map(|row| OccurrenceRow {
                    tenant: &tenant_s,
                    series,
                    calendar,
                    row,
                })
            })
            .collect();
        insert_rows(&mut tx, OCC_INSERT, &rows, INSERT_CHUNK, bind_occurrence).await?;
        drop(rows);
        widen_longest(&mut tx, &tenant_s, longest).await?;
        // Change-stream entries in batch order (multi-row VALUES are numbered in order on both backends).
        lock_change_stream(&mut tx, tenant).await?;
        let changes: Vec<_> = out
            .iter()
            .map(|record| series_change("event.created", record))
            .collect();
        let rows: Vec<_> = changes
            .iter()
            .map(|change| ChangeRow {
                tenant: &tenant_s,
                change,
                at,
            })
            .collect();
        insert_rows(&mut tx, CHANGE_INSERT, &rows, INSERT_CHUNK, bind_change).await?;
        drop(rows);
        tx.commit().await?;
        Ok(out)
    }

    async fn get_series(&self, tenant: TenantId, series: SeriesId) -> Result<Series> {
        let sql = format!("SELECT {SERIES_COLS} FROM series WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(series.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(series_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "event" })
    }

    async fn get_series_by_uid(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        uid: &str,
    ) -> Result<Option<Series>> {
        let sql = format!(
            "SELECT {SERIES_COLS} FROM series WHERE calendar_id = $1 AND tenant_id = $2 AND uid = $3 AND deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(calendar.to_string())
            .bind(tenant.to_string())
            .bind(uid)
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(series_row).transpose()
    }

    async fn get_series_by_uids(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        uids: &[String],
    ) -> Result<Vec<Series>> {
        let mut out = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT {SERIES_COLS} FROM series WHERE calendar_id = $1 AND tenant_id = $2 \
                 AND deleted_at IS NULL AND uid IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql)
                .bind(calendar.to_string())
                .bind(tenant.to_string());
            for uid in chunk {
                query = query.bind(uid.as_str());
            }
            for row in query.fetch_all(self.r()).await? {
                out.push(series_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn get_deleted_series_by_uid(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        uid: &str,
        since: Timestamp,
    ) -> Result<Option<Series>> {
        let sql = format!("SELECT {SERIES_COLS} {DELETED_SERIES_BY_UID}");
        let row = sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(calendar.to_string())
            .bind(uid)
            .bind(ms(since))
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(series_row).transpose()
    }

    async fn get_series_many(&self, tenant: TenantId, ids: &[SeriesId]) -> Result<Vec<Series>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT {SERIES_COLS} FROM {SERIES_BY_ID} WHERE tenant_id = $1 AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(tenant.to_string());
            for series in chunk {
                query = query.bind(series.to_string());
            }
            for row in query.fetch_all(self.r()).await? {
                out.push(series_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn list_series(
        &self,
        tenant: TenantId,
        calendar: CalendarId,
        after: Option<SeriesId>,
        limit: u32,
    ) -> Result<Vec<Series>> {
        let sql = format!(
            "SELECT {SERIES_COLS} FROM series WHERE tenant_id = $1 AND calendar_id = $2 AND deleted_at IS NULL \
             AND id > $3 ORDER BY id LIMIT $4"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(calendar.to_string())
            .bind(after.map(|s| s.to_string()).unwrap_or_default())
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(series_row)
            .collect()
    }

    async fn update_series(
        &self,
        tenant: TenantId,
        series: SeriesId,
        expected_version: i64,
        update: SeriesUpdate,
    ) -> Result<Series> {
        check_json("event model", &update.model_json)?;
        let longest = validate_occurrences(&update.occurrences)?;
        let at = now();
        let mut tx = self.wtx().await?;
        let sql = format!(
            "UPDATE series SET ical = $4, model = $5, hash = $6, expanded_until = $7, version = version + 1, updated_at = $8 \
             WHERE id = $1 AND tenant_id = $2 AND version = $3 AND deleted_at IS NULL RETURNING {SERIES_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(series.to_string())
            .bind(tenant.to_string())
            .bind(expected_version)
            .bind(&update.ical)
            .bind(&update.model_json)
            .bind(&update.hash)
            .bind(update.occurrences.expanded_until.map(ms))
            .bind(ms(at))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(version_failure(
                &mut tx,
                "series",
                "event",
                &series.to_string(),
                tenant,
                expected_version,
            )
            .await);
        };
        let record = series_row(&row)?;
        delete_occurrences(&mut tx, tenant, record.id).await?;
        insert_occurrences(
            &mut tx,
            tenant,
            record.calendar_id,
            record.id,
            &update.occurrences,
            longest,
        )
        .await?;
        insert_change(
            &mut tx,
            tenant,
            &series_change("event.updated", &record),
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_series(
        &self,
        tenant: TenantId,
        series: SeriesId,
        expected_version: i64,
    ) -> Result<Series> {
        let at = now();
        let mut tx = self.wtx().await?;
        let sql = format!(
            "UPDATE series SET deleted_at = $4, version = version + 1, updated_at = $4, expanded_until = NULL \
             WHERE id = $1 AND tenant_id = $2 AND version = $3 AND deleted_at IS NULL RETURNING {SERIES_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(series.to_string())
            .bind(tenant.to_string())
            .bind(expected_version)
            .bind(ms(at))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(version_failure(
                &mut tx,
                "series",
                "event",
                &series.to_string(),
                tenant,
                expected_version,
            )
            .await);
        };
        let record = series_row(&row)?;
        sqlx::query(&format!("DELETE FROM {OCCURRENCES_BY_SERIES} WHERE series_id = $1 AND tenant_id = $2"))
            .bind(series.to_string())
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        insert_change(
            &mut tx,
            tenant,
            &series_change("event.deleted", &record),
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn replace_occurrences(
        &self,
        tenant: TenantId,
        series: SeriesId,
        expected_version: i64,
        occurrences: OccurrenceSet,
    ) -> Result<()> {
        let longest = validate_occurrences(&occurrences)?;
        let mut tx = self.wtx().await?;
        let row = sqlx::query(
            "UPDATE series SET expanded_until = $4 WHERE id = $1 AND tenant_id = $2 AND version = $3 AND deleted_at IS NULL RETURNING calendar_id",
        )
        .bind(series.to_string())
        .bind(tenant.to_string())
        .bind(expected_version)
        .bind(occurrences.expanded_until.map(ms))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(version_failure(
                &mut tx,
                "series",
                "event",
                &series.to_string(),
                tenant,
                expected_version,
            )
            .await);
        };
        let calendar: CalendarId = id(row.try_get("calendar_id")?)?;
        delete_occurrences(&mut tx, tenant, series).await?;
        insert_occurrences(&mut tx, tenant, calendar, series, &occurrences, longest).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn series_needing_expansion(
        &self,
        horizon: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, SeriesId)>> {
        let rows = sqlx::query(
            "SELECT tenant_id, id FROM series WHERE deleted_at IS NULL AND expanded_until IS NOT NULL AND expanded_until < $1 \
             ORDER BY expanded_until LIMIT $2",
        )
        .bind(ms(horizon))
        .bind(page(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|row| Ok((id(row.try_get("tenant_id")?)?, id(row.try_get("id")?)?)))
            .collect()
    }

    async fn list_occurrences(
        &self,
        tenant: TenantId,
        query: &OccurrenceQuery,
    ) -> Result<OccurrencePage> {
        if query.end <= query.start {
            return Err(StoreError::Invalid(
                "the window must end after it starts".into(),
            ));
        }
        let limit = page(query.limit);
        let window_start = ms(query.start);
        // Rows starting more than the tenant's longest occurrence before the window cannot overlap it: this
        // lower bound turns the overlap test into bounded index ranges. It is read in the same statement (a
        // one-row subquery both planners evaluate once, before the range scan).
        let mut filter = String::new();
        if query.calendar_id.is_some() {
            filter.push_str(" AND calendar_id = $5");
        }
        if query.after.is_some() {
            filter.push_str(
                " AND start_utc >= $6 AND (start_utc > $6 OR (start_utc = $6 AND (series_id > $7 OR (series_id = $7 AND recurrence_id > $8))))",
            );
        }
        const ORDER: &str = " ORDER BY start_utc, series_id, recurrence_id";
        const BOUND: &str = "$2 - COALESCE((SELECT max_occurrence_ms FROM tenants WHERE id = $1), 0)";
        let sql = if SPLIT_WINDOW_QUERY {
            // Rows starting inside the window (a plain range of the primary key, read in order), and apart
            // from them the few starting before it that still overlap it: those are found in the
            // `occurrences_overlap` index (tenant, start, end), whose `end_utc > $4` is checked on index
            // entries, so only matching rows are fetched.
            format!(
                "SELECT {OCC_COLS} FROM (SELECT {OCC_COLS} FROM occurrences WHERE tenant_id = $1 AND start_utc >= $4 AND start_utc < $3{filter}{ORDER} LIMIT $9) AS inside \
                 UNION ALL \
                 SELECT {OCC_COLS} FROM (SELECT {OCC_COLS} FROM occurrences WHERE tenant_id = $1 AND start_utc >= {BOUND} AND start_utc < $4 AND end_utc > $4{filter}{ORDER} LIMIT $9) AS before_window\
                 {ORDER} LIMIT $9"
            )
        } else {
            format!(
                "SELECT {OCC_COLS} FROM occurrences WHERE tenant_id = $1 AND start_utc >= {BOUND} AND start_utc < $3 \
                 AND (start_utc >= $4 OR end_utc > $4){filter}{ORDER} LIMIT $9"
            )
        };
        let after = query.after.as_ref();
        let rows = sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(window_start)
            .bind(ms(query.end))
            .bind(window_start)
            .bind(query.calendar_id.map(|c| c.to_string()))
            .bind(after.map(|c| ms(c.start)))
            .bind(after.map(|c| c.series_id.to_string()))
            .bind(after.map(|c| rid_to_db(&c.recurrence_id)))
            .bind(limit + 1)
            .fetch_all(self.r())
            .await?;
        let mut items = rows.iter().map(occ_row).collect::<Result<Vec<_>>>()?;
        let more = items.len() as i64 > limit;
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more {
            items.last().map(|o| OccurrenceCursor {
                start: o.start,
                series_id: o.series_id,
                recurrence_id: o.recurrence_id.clone(),
            })
        } else {
            None
        };
        Ok(OccurrencePage { items, next })
    }

    async fn occurrences_of_series(
        &self,
        tenant: TenantId,
        series: &[SeriesId],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Occurrence>> {
        let mut out = Vec::new();
        for chunk in series.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT {OCC_COLS} FROM {OCCURRENCES_BY_SERIES} WHERE tenant_id = $1 AND start_utc < $2 AND end_utc > $3 \
                 AND series_id IN ({}) ORDER BY start_utc, series_id, recurrence_id",
                placeholders(4, chunk.len())
            );
            let mut query = sqlx::query(&sql)
                .bind(tenant.to_string())
                .bind(ms(end))
                .bind(ms(start));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(self.r()).await? {
                out.push(occ_row(&row)?);
            }
        }
        out.sort_by(|a, b| {
            (a.start, a.series_id.to_string(), &a.recurrence_id).cmp(&(
                b.start,
                b.series_id.to_string(),
                &b.recurrence_id,
            ))
        });
        Ok(out)
    }

    async fn create_connection(
        &self,
        tenant: TenantId,
        connection: NewConnection,
    ) -> Result<Connection> {
        non_empty("connection name", &connection.name)?;
        check_json("sync options", &connection.sync_options_json)?;
        let at = now();
        let record = Connection {
            id: ConnectionId::new(),
            tenant_id: tenant,
            provider: connection.provider,
            name: connection.name,
            calendar_id: connection.calendar_id,
            credentials: connection.credentials,
            sync_options_json: connection.sync_options_json,
            status: connection.status,
            status_reason: None,
            version: 1,
            created_at: at,
            updated_at: at,
        };
        let mut tx = self.wtx().await?;
        ensure_owned(
            &mut tx,
            "calendars",
            "calendar",
            &record.calendar_id.to_string(),
            tenant,
        )
        .await?;
        sqlx::query(
            "INSERT INTO connections (id, tenant_id, provider, name, calendar_id, credentials, sync_options, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(record.provider.as_str())
        .bind(&record.name)
        .bind(record.calendar_id.to_string())
        .bind(record.credentials.as_ref().map(|c| c.as_bytes().to_vec()))
        .bind(&record.sync_options_json)
        .bind(record.status.as_str())
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_connection(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
    ) -> Result<Connection> {
        let sql = format!("SELECT {CONN_COLS} FROM connections WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(connection.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(conn_row)
            .transpose()?
            .ok_or(StoreError::NotFound {
                entity: "connection",
            })
    }

    async fn list_connections(&self, tenant: TenantId) -> Result<Vec<Connection>> {
        let sql = format!("SELECT {CONN_COLS} FROM connections WHERE tenant_id = $1 ORDER BY id");
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(conn_row)
            .collect()
    }

    async fn update_connection(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        expected_version: Option<i64>,
        update: ConnectionUpdate,
    ) -> Result<Connection> {
        non_empty("connection name", &update.name)?;
        check_json("sync options", &update.sync_options_json)?;
        let mut tx = self.wtx().await?;
        let sql = format!(
            "UPDATE connections SET name = $4, sync_options = $5, version = version + 1, updated_at = $6 \
             WHERE id = $1 AND tenant_id = $2 AND ($3 IS NULL OR version = $3) RETURNING {CONN_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(connection.to_string())
            .bind(tenant.to_string())
            .bind(expected_version)
            .bind(&update.name)
            .bind(&update.sync_options_json)
            .bind(ms(now()))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            let expected = expected_version.unwrap_or_default();
            return Err(version_failure(
                &mut tx,
                "connections",
                "connection",
                &connection.to_string(),
                tenant,
                expected,
            )
            .await);
        };
        let record = conn_row(&row)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn set_connection_credentials(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        credentials: Option<Sealed>,
    ) -> Result<Connection> {
        let sql = format!(
            "UPDATE connections SET credentials = $3, version = version + 1, updated_at = $4 \
             WHERE id = $1 AND tenant_id = $2 RETURNING {CONN_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(connection.to_string())
            .bind(tenant.to_string())
            .bind(credentials.map(|c| c.as_bytes().to_vec()))
            .bind(ms(now()))
            .fetch_optional(self.w())
            .await?;
        row.as_ref()
            .map(conn_row)
            .transpose()?
            .ok_or(StoreError::NotFound {
                entity: "connection",
            })
    }

    async fn set_connection_status(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        status: ConnectionStatus,
        reason: Option<&str>,
    ) -> Result<Connection> {
        let mut tx = self.wtx().await?;
        let previous: Option<String> =
            sqlx::query("SELECT status FROM connections WHERE id = $1 AND tenant_id = $2")
                .bind(connection.to_string())
                .bind(tenant.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("status"))
                .transpose()?;
        let Some(previous) = previous else {
            return Err(StoreError::NotFound {
                entity: "connection",
            });
        };
        let sql = format!(
            "UPDATE connections SET status = $3, status_reason = $4, version = version + 1, updated_at = $5 \
             WHERE id = $1 AND tenant_id = $2 RETURNING {CONN_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(connection.to_string())
            .bind(tenant.to_string())
            .bind(status.as_str())
            .bind(reason)
            .bind(ms(now()))
            .fetch_optional(&mut *tx)
            .await?;
        let record = row
            .as_ref()
            .map(conn_row)
            .transpose()?
            .ok_or(StoreError::NotFound {
                entity: "connection",
            })?;
        if previous != status.as_str() {
            announce(
                &mut tx,
                tenant,
                Some(connection),
                "connection.status",
                connection.to_string(),
                serde_json::json!({
                    "status": status.as_str(),
                    "previous": previous,
                    "reason": reason,
                }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_connection(&self, tenant: TenantId, connection: ConnectionId) -> Result<()> {
        sqlx::query("DELETE FROM connections WHERE id = $1 AND tenant_id = $2")
            .bind(connection.to_string())
            .bind(tenant.to_string())
            .execute(self.w())
            .await?
            .found("connection")
    }

    async fn create_link(&self, tenant: TenantId, link: NewLink) -> Result<Link> {
        non_empty("remote calendar id", &link.remote_calendar_id)?;
        let at = now();
        let record = Link {
            id: LinkId::new(),
            tenant_id: tenant,
            connection_id: link.connection_id,
            remote_calendar_id: link.remote_calendar_id,
            remote_name: link.remote_name,
            cursor: None,
            local_cursor: None,
            last_full_sync_at: None,
            status: LinkStatus::Active,
            status_reason: None,
            time_detection_due: None,
            created_at: at,
            updated_at: at,
        };
        let mut tx = self.wtx().await?;
        ensure_owned(
            &mut tx,
            "connections",
            "connection",
            &record.connection_id.to_string(),
            tenant,
        )
        .await?;
        sqlx::query(
            "INSERT INTO links (id, tenant_id, connection_id, remote_calendar_id, remote_name, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(record.connection_id.to_string())
        .bind(&record.remote_calendar_id)
        .bind(&record.remote_name)
        .bind(record.status.as_str())
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_link(&self, tenant: TenantId, link: LinkId) -> Result<Link> {
        let sql = format!("SELECT {LINK_COLS} FROM links WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(link_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "link" })
    }

    async fn list_links(&self, tenant: TenantId, connection: ConnectionId) -> Result<Vec<Link>> {
        let sql = format!(
            "SELECT {LINK_COLS} FROM links WHERE tenant_id = $1 AND connection_id = $2 ORDER BY id"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(connection.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(link_row)
            .collect()
    }

    async fn set_link_cursor(
        &self,
        tenant: TenantId,
        link: LinkId,
        cursor: Option<&str>,
        full_sync_at: Option<Timestamp>,
    ) -> Result<Link> {
        let sql = format!(
            "UPDATE links SET cursor = $3, last_full_sync_at = COALESCE($4, last_full_sync_at), updated_at = $5 \
             WHERE id = $1 AND tenant_id = $2 RETURNING {LINK_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .bind(cursor)
            .bind(full_sync_at.map(ms))
            .bind(ms(now()))
            .fetch_optional(self.w())
            .await?;
        row.as_ref()
            .map(link_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "link" })
    }

    async fn set_link_cursors(
        &self,
        tenant: TenantId,
        link: LinkId,
        cursors: LinkCursors<'_>,
    ) -> Result<Link> {
        let sql = format!(
            "UPDATE links SET cursor = $3, local_cursor = $4, last_full_sync_at = COALESCE($5, last_full_sync_at), updated_at = $6, \
             time_detection_due = {mark} \
             WHERE id = $1 AND tenant_id = $2 RETURNING {LINK_COLS}",
            mark = take_detection_mark("$7", "$8"),
        );
        let mark = cursors.time_detection_due;
        let row = sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .bind(cursors.remote)
            .bind(cursors.local)
            .bind(cursors.full_sync_at.map(ms))
            .bind(ms(now()))
            .bind(mark.map(|m| m.run.to_string()))
            .bind(mark.and_then(|m| m.seen).map(|s| s.to_string()))
            .fetch_optional(self.w())
            .await?;
        row.as_ref()
            .map(link_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "link" })
    }

    async fn set_link_status(
        &self,
        tenant: TenantId,
        link: LinkId,
        status: LinkStatus,
        reason: Option<&str>,
    ) -> Result<Link> {
        let sql = format!(
            "UPDATE links SET status = $3, status_reason = $4, updated_at = $5 WHERE id = $1 AND tenant_id = $2 RETURNING {LINK_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .bind(status.as_str())
            .bind(reason)
            .bind(ms(now()))
            .fetch_optional(self.w())
            .await?;
        row.as_ref()
            .map(link_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "link" })
    }

    async fn delete_link(&self, tenant: TenantId, link: LinkId) -> Result<()> {
        sqlx::query("DELETE FROM links WHERE id = $1 AND tenant_id = $2")
            .bind(link.to_string())
            .bind(tenant.to_string())
            .execute(self.w())
            .await?
            .found("link")
    }

    async fn set_time_detection_due(
        &self,
        tenant: TenantId,
        link: LinkId,
        mark: TimeDetectionMark,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE links SET time_detection_due = {mark}, updated_at = $5 \
             WHERE id = $1 AND tenant_id = $2",
            mark = take_detection_mark("$3", "$4"),
        ))
        .bind(link.to_string())
        .bind(tenant.to_string())
        .bind(mark.run.to_string())
        .bind(mark.seen.map(|s| s.to_string()))
        .bind(ms(now()))
        .execute(self.w())
        .await?
        .found("link")
    }

    async fn clear_time_detection_due(
        &self,
        tenant: TenantId,
        link: LinkId,
        seen: SyncRunId,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE links SET time_detection_due = NULL, updated_at = $4 \
             WHERE id = $1 AND tenant_id = $2 AND time_detection_due = $3",
        )
        .bind(link.to_string())
        .bind(tenant.to_string())
        .bind(seen.to_string())
        .bind(ms(now()))
        .execute(self.w())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn upsert_mapping(
        &self,
        tenant: TenantId,
        mapping: MappingUpsert,
    ) -> Result<ItemMapping> {
        non_empty("remote id", &mapping.remote_id)?;
        let mut tx = self.wtx().await?;
        let record = upsert_mapping_in(&mut tx, tenant, &mapping).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn upsert_mappings(&self, tenant: TenantId, mappings: Vec<MappingUpsert>) -> Result<()> {
        if mappings.is_empty() {
            return Ok(());
        }
        let (links, series) = validate_mappings(&mappings, false)?;
        let mut tx = self.wtx().await?;
        upsert_mappings_in(&mut tx, tenant, &mappings, &links, &series).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_pairs(&self, tenant: TenantId, pairs: Vec<MappingUpsert>) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let (links, series) = validate_mappings(&pairs, true)?;
        let mut tx = self.wtx().await?;
        upsert_mappings_in(&mut tx, tenant, &pairs, &links, &series).await?;
        // In the same transaction, as `upsert_pair` does. Once the pairs are written, a row of a
        // batch's link with another batch pair's remote id names that pair's series, so "a series of
        // the chunk, a remote id not among the chunk's pairs" is exactly "another row of a pair's series".
        let tenant_s = tenant.to_string();
        for link in links {
            let on_link: Vec<(String, String)> = pairs
                .iter()
                .filter(|p| p.link_id == link)
                .filter_map(|p| Some((p.series_id?.to_string(), p.remote_id.clone())))
                .collect();
            for chunk in on_link.chunks(INSERT_CHUNK / 2) {
                let mut q: QueryBuilder<'static, Db> =
                    QueryBuilder::new("DELETE FROM item_mappings WHERE tenant_id = ");
                q.push_bind(tenant_s.clone());
                q.push(" AND link_id = ").push_bind(link.to_string());
                let series: Vec<&String> = chunk.iter().map(|(s, _)| s).collect();
                push_in_list(&mut q, "series_id", &series);
                q.push(" AND remote_id NOT IN (");
                let mut list = q.separated(", ");
                for (_, remote) in chunk {
                    list.push_bind(remote.clone());
                }
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_pair(&self, tenant: TenantId, pair: MappingUpsert) -> Result<ItemMapping> {
        non_empty("remote id", &pair.remote_id)?;
        let Some(series) = pair.series_id else {
            return Err(StoreError::Invalid("a pair names its series".into()));
        };
        let mut tx = self.wtx().await?;
        let record = upsert_mapping_in(&mut tx, tenant, &pair).await?;
        // In the same transaction: a process that dies here leaves the rows it replaces (a create's
        // write-ahead row above all, which alone says the remote item is ours), never neither.
        sqlx::query(
            "DELETE FROM item_mappings WHERE tenant_id = $1 AND link_id = $2 AND series_id = $3 AND remote_id <> $4",
        )
        .bind(tenant.to_string())
        .bind(pair.link_id.to_string())
        .bind(series.to_string())
        .bind(&pair.remote_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_mapping(
        &self,
        tenant: TenantId,
        link: LinkId,
        remote_id: &str,
    ) -> Result<Option<ItemMapping>> {
        let sql = format!(
            "SELECT {MAP_COLS} FROM item_mappings WHERE link_id = $1 AND tenant_id = $2 AND remote_id = $3"
        );
        let row = sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .bind(remote_id)
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(map_row).transpose()
    }

    async fn mappings_for_series(
        &self,
        tenant: TenantId,
        series: SeriesId,
    ) -> Result<Vec<ItemMapping>> {
        let sql = format!(
            "SELECT {MAP_COLS} FROM item_mappings WHERE series_id = $1 AND tenant_id = $2 ORDER BY id"
        );
        sqlx::query(&sql)
            .bind(series.to_string())
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(map_row)
            .collect()
    }

    async fn list_mappings(&self, tenant: TenantId, link: LinkId) -> Result<Vec<ItemMapping>> {
        let sql = format!(
            "SELECT {MAP_COLS} FROM item_mappings WHERE tenant_id = $1 AND link_id = $2 ORDER BY remote_id"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(link.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(map_row)
            .collect()
    }

    async fn mappings_naming(
        &self,
        tenant: TenantId,
        link: LinkId,
        remote_ids: &[String],
        series: &[SeriesId],
    ) -> Result<Vec<ItemMapping>> {
        let series: Vec<String> = series.iter().map(ToString::to_string).collect();
        let lists = [("remote_id", remote_ids), ("series_id", series.as_slice())];
        let statement = |column: &str, ids: &[String]| {
            let mut q: QueryBuilder<'static, Db> = QueryBuilder::new(format!(
                "SELECT {MAP_COLS} FROM item_mappings WHERE tenant_id = "
            ));
            q.push_bind(tenant.to_string())
                .push(" AND link_id = ")
                .push_bind(link.to_string());
            push_in_list(&mut q, column, ids);
            q
        };
        rows_naming(self.r(), &lists, 500, statement, map_row, |m| m.id).await
    }

    async fn series_at_pair_version(
        &self,
        tenant: TenantId,
        link: LinkId,
        series: &[SeriesId],
    ) -> Result<Vec<SeriesId>> {
        let ids: Vec<String> = series.iter().map(ToString::to_string).collect();
        let statement = |column: &str, ids: &[String]| {
            let mut q: QueryBuilder<'static, Db> = QueryBuilder::new(SERIES_AT_PAIR_VERSION);
            q.push_bind(tenant.to_string())
                .push(" AND m.link_id = ")
                .push_bind(link.to_string());
            push_in_list(&mut q, column, ids);
            q
        };
        let series_of = |row: &DbRow| -> Result<SeriesId> { id(row.try_get("series_id")?) };
        rows_naming(
            self.r(),
            &[("m.series_id", ids.as_slice())],
            500,
            statement,
            series_of,
            |s| *s,
        )
        .await
    }

    async fn write_ahead_mappings(
        &self,
        tenant: TenantId,
        link: LinkId,
    ) -> Result<Vec<ItemMapping>> {
        let sql = format!(
            "SELECT {MAP_COLS} FROM {WRITE_AHEAD_MAPPINGS} WHERE link_id = $1 AND write_ahead AND tenant_id = $2 ORDER BY remote_id"
        );
        sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(map_row)
            .collect()
    }

    async fn delete_mapping(&self, tenant: TenantId, mapping: MappingId) -> Result<()> {
        sqlx::query("DELETE FROM item_mappings WHERE id = $1 AND tenant_id = $2")
            .bind(mapping.to_string())
            .bind(tenant.to_string())
            .execute(self.w())
            .await?
            .found("item mapping")
    }

    async fn replace_remote_occurrences(
        &self,
        tenant: TenantId,
        link: LinkId,
        series: &[SeriesOccurrenceIds],
    ) -> Result<()> {
        if series.is_empty() {
            return Ok(());
        }
        for s in series {
            non_empty("remote id", &s.remote_id)?;
            for id in &s.occurrence_ids {
                non_empty("occurrence id", id)?;
            }
        }
        let (tenant_s, link_s) = (tenant.to_string(), link.to_string());
        let mut tx = self.wtx().await?;
        ensure_owned(&mut tx, "links", "link", &link_s, tenant).await?;
        // An id listed twice is kept once (one statement may not update a row twice), where first seen.
        let mut have = std::collections::HashSet::new();
        for chunk in series.chunks(500) {
            let remote_ids: Vec<&str> = chunk.iter().map(|s| s.remote_id.as_str()).collect();
            let mut q: QueryBuilder<'static, Db> =
                QueryBuilder::new("SELECT id, remote_id, occurrences_remembered FROM item_mappings WHERE tenant_id = ");
            q.push_bind(tenant_s.clone())
                .push(" AND link_id = ")
                .push_bind(link_s.clone());
            push_in_list(&mut q, "remote_id", &remote_ids);
            let mut pair_of = std::collections::HashMap::new();
            let mut unremembered: Vec<String> = Vec::new();
            for row in q.build().fetch_all(&mut *tx).await? {
                let id: String = row.try_get("id")?;
                let remote: String = row.try_get("remote_id")?;
                if !row.try_get::<bool, _>("occurrences_remembered")? {
                    unremembered.push(id.clone());
                }
                pair_of.insert(remote, id);
            }
            if pair_of.is_empty() {
                continue;
            }
            // Written once per pair: a pair already remembered (every later read) is not rewritten.
            if !unremembered.is_empty() {
                let mut q: QueryBuilder<'static, Db> = QueryBuilder::new(
                    "UPDATE item_mappings SET occurrences_remembered = TRUE WHERE tenant_id = ",
                );
                q.push_bind(tenant_s.clone());
                push_in_list(&mut q, "id", &unremembered);
                q.build().execute(&mut *tx).await?;
            }
            let pairs: Vec<&String> = pair_of.values().collect();
            let mut q: QueryBuilder<'static, Db> =
                QueryBuilder::new("DELETE FROM remote_occurrences WHERE tenant_id = ");
            q.push_bind(tenant_s.clone());
            push_in_list(&mut q, "mapping_id", &pairs);
            q.build().execute(&mut *tx).await?;
            let rows: Vec<(&str, &str)> = chunk
                .iter()
                .filter_map(|s| Some((pair_of.get(&s.remote_id)?, &s.occurrence_ids)))
                .flat_map(|(pair, ids)| ids.iter().map(move |id| (id.as_str(), pair.as_str())))
                .filter(|(id, _)| have.insert(id.to_string()))
                .collect();
            for rows in rows.chunks(500) {
                let mut q: QueryBuilder<'static, Db> = QueryBuilder::new(
                    "INSERT INTO remote_occurrences (link_id, tenant_id, occurrence_id, mapping_id) ",
                );
                q.push_values(rows, |mut b, (id, pair)| {
                    b.push_bind(link_s.clone())
                        .push_bind(tenant_s.clone())
                        .push_bind(id.to_string())
                        .push_bind(pair.to_string());
                });
                q.push(
                    " ON CONFLICT (link_id, tenant_id, occurrence_id) \
                     DO UPDATE SET mapping_id = excluded.mapping_id",
                );
                q.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mappings_with_unknown_occurrences(
        &self,
        tenant: TenantId,
        link: LinkId,
    ) -> Result<Vec<ItemMapping>> {
        let sql = format!(
            "SELECT {MAP_COLS} FROM {UNKNOWN_OCCURRENCE_MAPPINGS} WHERE link_id = $1 AND NOT occurrences_remembered AND tenant_id = $2 ORDER BY remote_id"
        );
        sqlx::query(&sql)
            .bind(link.to_string())
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(map_row)
            .collect()
    }

    async fn series_of_remote_occurrences(
        &self,
        tenant: TenantId,
        link: LinkId,
        occurrence_ids: &[String],
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in occurrence_ids.chunks(500) {
            let mut q: QueryBuilder<'static, Db> = QueryBuilder::new(
                "SELECT o.occurrence_id, m.remote_id FROM remote_occurrences o \
                 JOIN item_mappings m ON m.id = o.mapping_id WHERE o.link_id = ",
            );
            q.push_bind(link.to_string())
                .push(" AND o.tenant_id = ")
                .push_bind(tenant.to_string());
            push_in_list(&mut q, "o.occurrence_id", chunk);
            for row in q.build().fetch_all(self.r()).await? {
                out.push((row.try_get("occurrence_id")?, row.try_get("remote_id")?));
            }
        }
        Ok(out)
    }

    async fn create_conflict(&self, tenant: TenantId, conflict: NewConflict) -> Result<Conflict> {
        let mut tx = self.wtx().await?;
        let record = insert_conflict(&mut tx, tenant, conflict).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn record_conflicts(
        &self,
        tenant: TenantId,
        found: Vec<DetectedConflict>,
        at: Timestamp,
    ) -> Result<Vec<Conflict>> {
        for f in &found {
            check_json("audit details", &f.details_json)?;
            if let Some(settled) = &f.settled {
                check_json("resolution", settled)?;
            }
        }
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        let mut out = Vec::with_capacity(found.len());
        for f in found {
            let mut record = insert_conflict(&mut tx, tenant, f.conflict).await?;
            let entry = |action: &str| NewAuditEntry {
                actor: f.actor.clone(),
                action: action.into(),
                subject: record.id.to_string(),
                details_json: f.details_json.clone(),
            };
            insert_audit(&mut tx, tenant, entry("conflict.detected")).await?;
            if let Some(settled) = &f.settled {
                let audit = entry("conflict.settled");
                if let Some(resolved) =
                    resolve_open_conflict(&mut tx, tenant, record.id, settled, &f.actor, at).await?
                {
                    record = resolved;
                }
                insert_audit(&mut tx, tenant, audit).await?;
            }
            out.push(record);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn close_conflicts(
        &self,
        tenant: TenantId,
        closing: Vec<ConflictClosing>,
        at: Timestamp,
    ) -> Result<u64> {
        for c in &closing {
            check_json("resolution", &c.resolution_json)?;
            check_json("audit details", &c.details_json)?;
        }
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        let mut closed = 0;
        for c in closing {
            let resolved =
                resolve_open_conflict(&mut tx, tenant, c.id, &c.resolution_json, &c.actor, at)
                    .await?;
            if resolved.is_none() {
                continue;
            }
            insert_audit(
                &mut tx,
                tenant,
                NewAuditEntry {
                    actor: c.actor,
                    action: "conflict.closed".into(),
                    subject: c.id.to_string(),
                    details_json: c.details_json,
                },
            )
            .await?;
            closed += 1;
        }
        tx.commit().await?;
        Ok(closed)
    }

    async fn get_conflict(&self, tenant: TenantId, conflict: ConflictId) -> Result<Conflict> {
        let sql = format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(conflict.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(conflict_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "conflict" })
    }

    async fn list_conflicts(
        &self,
        tenant: TenantId,
        filter: &ConflictFilter,
    ) -> Result<Vec<Conflict>> {
        let mut q = conflicts_matching(tenant, filter);
        q.push(" ORDER BY detected_at, id LIMIT ")
            .push_bind(page(MAX_PAGE));
        q.build()
            .fetch_all(self.r())
            .await?
            .iter()
            .map(conflict_row)
            .collect()
    }

    async fn list_conflicts_after(
        &self,
        tenant: TenantId,
        filter: &ConflictFilter,
        after: Option<ConflictId>,
        limit: u32,
    ) -> Result<Vec<Conflict>> {
        let mut q = conflicts_matching(tenant, filter);
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after.to_string());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page(limit));
        q.build()
            .fetch_all(self.r())
            .await?
            .iter()
            .map(conflict_row)
            .collect()
    }

    async fn conflicts_naming_series(
        &self,
        tenant: TenantId,
        kind: ConflictKind,
        series: &[SeriesId],
    ) -> Result<Vec<Conflict>> {
        // Each column has an index led by it (migration 0011), and each is asked on its own: a few
        // probes per series, whatever the number of conflicts stored. (Asked as one `OR`, SQLite without
        // statistics read every conflict of the tenant through `conflicts_tenant`.) A conflict naming two
        // of the series comes from both halves; `rows_naming` keeps it once.
        let statement = |(): (), ids: &[SeriesId]| {
            let mut q: QueryBuilder<'static, Db> = QueryBuilder::new("");
            for (i, column) in ["series_id", "other_series_id"].into_iter().enumerate() {
                if i > 0 {
                    q.push(" UNION ALL ");
                }
                q.push(format!(
                    "SELECT {CONFLICT_COLS} FROM conflicts WHERE tenant_id = "
                ))
                .push_bind(tenant.to_string())
                .push(" AND kind = ")
                .push_bind(kind.as_str());
                push_in_list(&mut q, column, ids);
            }
            q.push(" ORDER BY id");
            q
        };
        rows_naming(self.r(), &[((), series)], 100, statement, conflict_row, |c| c.id).await
    }

    async fn resolve_conflict(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        resolution_json: &str,
        resolved_by: &str,
        at: Timestamp,
    ) -> Result<Conflict> {
        self.resolve_conflict_audited(
            tenant,
            conflict,
            resolution_json,
            resolved_by,
            at,
            Vec::new(),
        )
        .await
    }

    async fn resolve_conflict_audited(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        resolution_json: &str,
        resolved_by: &str,
        at: Timestamp,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Conflict> {
        check_json("resolution", resolution_json)?;
        let mut tx = self.wtx().await?;
        let resolved =
            resolve_open_conflict(&mut tx, tenant, conflict, resolution_json, resolved_by, at)
                .await?;
        let Some(record) = resolved else {
            return Err(not_open(&mut tx, tenant, conflict).await);
        };
        for entry in entries {
            insert_audit(&mut tx, tenant, entry).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn set_conflict_resolving(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        resolving_json: Option<&str>,
    ) -> Result<Conflict> {
        self.write_resolving(tenant, conflict, None, resolving_json, Vec::new())
            .await
    }

    async fn swap_conflict_resolving(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        expected: Option<&str>,
        resolving_json: Option<&str>,
    ) -> Result<Conflict> {
        self.write_resolving(
            tenant,
            conflict,
            Some(expected),
            resolving_json,
            Vec::new(),
        )
        .await
    }

    async fn swap_conflict_resolving_audited(
        &self,
        tenant: TenantId,
        conflict: ConflictId,
        expected: Option<&str>,
        resolving_json: Option<&str>,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Conflict> {
        self.write_resolving(tenant, conflict, Some(expected), resolving_json, entries)
            .await
    }

    async fn create_sync_run(
        &self,
        tenant: TenantId,
        connection: Option<ConnectionId>,
        full: bool,
    ) -> Result<SyncRun> {
        let record = SyncRun {
            id: SyncRunId::new(),
            tenant_id: tenant,
            connection_id: connection,
            full,
            status: SyncRunStatus::Running,
            counts_json: "{}".into(),
            requests: 0,
            bytes: 0,
            errors_json: "[]".into(),
            started_at: now(),
            finished_at: None,
        };
        let mut tx = self.wtx().await?;
        match connection {
            Some(c) => {
                ensure_owned(&mut tx, "connections", "connection", &c.to_string(), tenant).await?
            }
            None => ensure_tenant(&mut tx, tenant).await?,
        }
        sqlx::query(
            "INSERT INTO sync_runs (id, tenant_id, connection_id, full_sync, status, counts, requests, bytes, errors, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $8)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(connection.map(|c| c.to_string()))
        .bind(full)
        .bind(record.status.as_str())
        .bind(&record.counts_json)
        .bind(&record.errors_json)
        .bind(ms(record.started_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn update_sync_run(
        &self,
        tenant: TenantId,
        run: SyncRunId,
        update: SyncRunUpdate,
    ) -> Result<SyncRun> {
        check_json("run counts", &update.counts_json)?;
        check_json("run errors", &update.errors_json)?;
        let mut tx = self.wtx().await?;
        // A running run takes the update as it is. `finished_at IS NULL` in the statement itself, so
        // a reaper that closed the run meanwhile (PostgreSQL re-reads the row it waited for) wins.
        let sql = format!(
            "UPDATE sync_runs SET status = $3, counts = $4, requests = $5, bytes = $6, errors = $7, finished_at = $8 \
             WHERE id = $1 AND tenant_id = $2 AND finished_at IS NULL RETURNING {RUN_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(run.to_string())
            .bind(tenant.to_string())
            .bind(update.status.as_str())
            .bind(&update.counts_json)
            .bind(update.requests)
            .bind(update.bytes)
            .bind(&update.errors_json)
            .bind(update.finished_at.map(ms))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(record) = row.as_ref().map(run_row).transpose()? {
            if record.finished_at.is_some() {
                announce_run_finished(&mut tx, &record).await?;
            }
            tx.commit().await?;
            return Ok(record);
        }
        // Closed already (or absent): the late report joins the row, which stays closed.
        let closed = sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM sync_runs WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(run.to_string())
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(run_row)
        .transpose()?
        .ok_or(StoreError::NotFound { entity: "sync run" })?;
        let errors = with_late_report(&closed, &update)?;
        let sql = format!(
            "UPDATE sync_runs SET counts = $3, requests = $4, bytes = $5, errors = $6 \
             WHERE id = $1 AND tenant_id = $2 AND finished_at IS NOT NULL RETURNING {RUN_COLS}"
        );
        let record = sqlx::query(&sql)
            .bind(run.to_string())
            .bind(tenant.to_string())
            .bind(&update.counts_json)
            .bind(update.requests)
            .bind(update.bytes)
            .bind(&errors)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(run_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "sync run" })?;
        tx.commit().await?;
        tracing::warn!(
            %run,
            reported = update.status.as_str(),
            kept = record.status.as_str(),
            "a sync run was reported after it had been closed (reaped as interrupted while its \
             process was paused?): it stays closed as it was, with the report's counts and errors"
        );
        Ok(record)
    }

    async fn touch_sync_run(
        &self,
        tenant: TenantId,
        run: SyncRunId,
        at: Timestamp,
        stale_after: StdDuration,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sync_runs SET heartbeat_at = $3, stale_after_ms = $4 \
             WHERE id = $1 AND tenant_id = $2 AND finished_at IS NULL",
        )
        .bind(run.to_string())
        .bind(tenant.to_string())
        .bind(ms(at))
        .bind(stale_ms(stale_after))
        .execute(self.w())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn fail_stale_sync_runs(
        &self,
        now: Timestamp,
        stale_after: StdDuration,
        cause: &(dyn Fn(StdDuration) -> String + Sync),
    ) -> Result<Vec<SyncRun>> {
        // Each run by its own bound (`$b`), the caller's for rows without one; `$n` is now.
        let bound = |b: u8| format!("COALESCE(stale_after_ms, ${b})");
        let stale = |b: u8, n: u8| {
            format!(
                "finished_at IS NULL AND COALESCE(heartbeat_at, started_at) + {} < ${n}",
                bound(b)
            )
        };
        let candidates: Vec<String> = sqlx::query(&format!(
            "SELECT id FROM sync_runs WHERE {} ORDER BY started_at LIMIT 500",
            stale(1, 2)
        ))
        .bind(stale_ms(stale_after))
        .bind(ms(now))
        .fetch_all(self.r())
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<std::result::Result<_, _>>()?;
        let mut closed = Vec::new();
        for run in candidates {
            let mut tx = self.wtx().await?;
            let found = sqlx::query(&format!(
                "SELECT errors, {} AS bound FROM sync_runs WHERE id = $1 AND {}",
                bound(2),
                stale(2, 3)
            ))
            .bind(&run)
            .bind(stale_ms(stale_after))
            .bind(ms(now))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(found) = found else {
                continue;
            };
            let errors: String = found.try_get("errors")?;
            let bound: i64 = found.try_get("bound")?;
            let bound = StdDuration::from_millis(u64::try_from(bound).unwrap_or(0));
            let mut list: Vec<serde_json::Value> = serde_json::from_str(&errors).unwrap_or_default();
            list.push(serde_json::json!({
                "item": "run",
                "action": "run",
                "class": "interrupted",
                "cause": cause(bound),
            }));
            let errors = serde_json::to_string(&list).map_err(|e| StoreError::Invalid(e.to_string()))?;
            // The staleness is checked again here: a heartbeat committed meanwhile wins.
            let row = sqlx::query(&format!(
                "UPDATE sync_runs SET status = $4, finished_at = $3, errors = $5 \
                 WHERE id = $1 AND {} RETURNING {RUN_COLS}",
                stale(2, 3)
            ))
            .bind(&run)
            .bind(stale_ms(stale_after))
            .bind(ms(now))
            .bind(SyncRunStatus::Failed.as_str())
            .bind(&errors)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(record) = row.as_ref().map(run_row).transpose()? else {
                continue;
            };
            announce_run_finished(&mut tx, &record).await?;
            tx.commit().await?;
            closed.push(record);
        }
        Ok(closed)
    }

    async fn get_sync_run(&self, tenant: TenantId, run: SyncRunId) -> Result<SyncRun> {
        let sql = format!("SELECT {RUN_COLS} FROM sync_runs WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(run.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(run_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "sync run" })
    }

    async fn list_sync_runs(
        &self,
        tenant: TenantId,
        connection: Option<ConnectionId>,
        limit: u32,
    ) -> Result<Vec<SyncRun>> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM sync_runs WHERE tenant_id = $1 AND ($2 IS NULL OR connection_id = $2) \
             ORDER BY started_at DESC, id DESC LIMIT $3"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(connection.map(|c| c.to_string()))
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(run_row)
            .collect()
    }

    async fn append_audit(&self, tenant: TenantId, entry: NewAuditEntry) -> Result<AuditEntry> {
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        let record = insert_audit(&mut tx, tenant, entry).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_audit(
        &self,
        tenant: TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE tenant_id = $1 AND ($2 IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(before)
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(audit_row)
            .collect()
    }

    async fn put_tombstone(&self, tenant: TenantId, tombstone: NewTombstone) -> Result<Tombstone> {
        let record = Tombstone {
            id: TombstoneId::new(),
            tenant_id: tenant,
            calendar_id: tombstone.calendar_id,
            series_id: tombstone.series_id,
            link_id: tombstone.link_id,
            remote_id: tombstone.remote_id,
            uid: tombstone.uid,
            deleted_at: tombstone.deleted_at,
            expires_at: tombstone.expires_at,
        };
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        if let Some(l) = record.link_id {
            ensure_owned(&mut tx, "links", "link", &l.to_string(), tenant).await?;
        }
        if let Some(c) = record.calendar_id {
            ensure_owned(&mut tx, "calendars", "calendar", &c.to_string(), tenant).await?;
        }
        sqlx::query(
            "INSERT INTO tombstones (id, tenant_id, calendar_id, series_id, link_id, remote_id, uid, deleted_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(record.calendar_id.map(|c| c.to_string()))
        .bind(record.series_id.map(|c| c.to_string()))
        .bind(record.link_id.map(|c| c.to_string()))
        .bind(&record.remote_id)
        .bind(&record.uid)
        .bind(ms(record.deleted_at))
        .bind(ms(record.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_tombstones(
        &self,
        tenant: TenantId,
        link: Option<LinkId>,
    ) -> Result<Vec<Tombstone>> {
        let sql = format!(
            "SELECT {TOMB_COLS} FROM tombstones WHERE tenant_id = $1 AND ($2 IS NULL OR link_id = $2) ORDER BY deleted_at, id"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(link.map(|l| l.to_string()))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(tomb_row)
            .collect()
    }

    async fn purge_tombstones(&self, now_at: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tombstones WHERE expires_at <= $1")
            .bind(ms(now_at))
            .execute(self.w())
            .await?;
        Ok(done.rows_affected())
    }

    async fn enqueue_job(&self, job: NewJob) -> Result<Job> {
        non_empty("job kind", &job.kind)?;
        check_json("job payload", &job.payload_json)?;
        let at = now();
        let sql = format!(
            "INSERT INTO jobs (id, tenant_id, kind, key, payload, state, run_at, attempts, fencing_token, requeued, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, 0, 0, FALSE, $7, $7) \
             ON CONFLICT (kind, key) DO UPDATE SET \
               payload = excluded.payload, \
               requeued = CASE WHEN jobs.state = 'running' THEN TRUE ELSE jobs.requeued END, \
               run_at = CASE WHEN jobs.state = 'running' THEN jobs.run_at \
                             WHEN jobs.state = 'queued' AND jobs.run_at < excluded.run_at THEN jobs.run_at \
                             ELSE excluded.run_at END, \
               attempts = CASE WHEN jobs.state IN ('done', 'failed') THEN 0 ELSE jobs.attempts END, \
               state = CASE WHEN jobs.state = 'running' THEN 'running' ELSE 'queued' END, \
               updated_at = excluded.updated_at \
             RETURNING {JOB_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(JobId::new().to_string())
            .bind(job.tenant_id.map(|t| t.to_string()))
            .bind(&job.kind)
            .bind(&job.key)
            .bind(&job.payload_json)
            .bind(ms(job.run_at))
            .bind(ms(at))
            .fetch_one(self.w())
            .await?;
        job_row(&row)
    }

    async fn lease_next(
        &self,
        owner: &str,
        kinds: &[&str],
        ttl: StdDuration,
        now_at: Timestamp,
    ) -> Result<Option<Lease>> {
        non_empty("lease owner", owner)?;
        let expires = ms(now_at).saturating_add(lease_ms(ttl)?);
        let due = "((state = 'queued' AND run_at <= $3) OR (state = 'running' AND lease_expires_at <= $3))";
        let kind_filter = if kinds.is_empty() {
            String::new()
        } else {
            format!(" AND kind IN ({})", placeholders(4, kinds.len()))
        };
        // The outer re-check matters on PostgreSQL: a row picked by the subquery may have been leased by a
        // concurrent transaction before this UPDATE locks it.
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, \
             fencing_token = fencing_token + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE {due}{kind_filter} ORDER BY run_at, id LIMIT 1{LEASE_LOCK}) AND {due} \
             RETURNING {JOB_COLS}"
        );
        let mut query = sqlx::query(&sql).bind(owner).bind(expires).bind(ms(now_at));
        for kind in kinds {
            query = query.bind(*kind);
        }
        let row = query.fetch_optional(self.w()).await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_row(&row)?;
        Ok(Some(Lease {
            owner: owner.to_owned(),
            fencing_token: job.fencing_token,
            expires_at: ts(expires)?,
            job,
        }))
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: StdDuration,
        now_at: Timestamp,
    ) -> Result<Lease> {
        let expires = ms(now_at).saturating_add(lease_ms(ttl)?);
        let sql = format!(
            "UPDATE jobs SET lease_expires_at = $4, updated_at = $5 \
             WHERE id = $1 AND fencing_token = $2 AND lease_owner = $3 AND state = 'running' RETURNING {JOB_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(lease.job.id.to_string())
            .bind(lease.fencing_token)
            .bind(&lease.owner)
            .bind(expires)
            .bind(ms(now_at))
            .fetch_optional(self.w())
            .await?;
        let Some(row) = row else {
            return Err(StoreError::LeaseLost {
                job: lease.job.id.to_string(),
                token: lease.fencing_token,
            });
        };
        Ok(Lease {
            job: job_row(&row)?,
            owner: lease.owner.clone(),
            fencing_token: lease.fencing_token,
            expires_at: ts(expires)?,
        })
    }

    async fn complete_job(
        &self,
        lease: &Lease,
        run_again_at: Option<Timestamp>,
        now_at: Timestamp,
    ) -> Result<()> {
        let state = if run_again_at.is_some() {
            "queued"
        } else {
            "done"
        };
        let done = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN requeued THEN 'queued' ELSE $4 END, \
             run_at = CASE WHEN requeued THEN $6 ELSE COALESCE($5, run_at) END, \
             lease_owner = NULL, lease_expires_at = NULL, requeued = FALSE, attempts = 0, last_error = NULL, updated_at = $6 \
             WHERE id = $1 AND fencing_token = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(lease.job.id.to_string())
        .bind(lease.fencing_token)
        .bind(&lease.owner)
        .bind(state)
        .bind(run_again_at.map(ms))
        .bind(ms(now_at))
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                job: lease.job.id.to_string(),
                token: lease.fencing_token,
            });
        }
        Ok(())
    }

    async fn fail_job(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: Option<Timestamp>,
        now_at: Timestamp,
    ) -> Result<()> {
        let state = if retry_at.is_some() {
            "queued"
        } else {
            "failed"
        };
        let done = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN requeued THEN 'queued' ELSE $4 END, \
             run_at = CASE WHEN requeued THEN COALESCE($5, $7) ELSE COALESCE($5, run_at) END, \
             attempts = attempts + 1, last_error = $6, lease_owner = NULL, lease_expires_at = NULL, requeued = FALSE, updated_at = $7 \
             WHERE id = $1 AND fencing_token = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(lease.job.id.to_string())
        .bind(lease.fencing_token)
        .bind(&lease.owner)
        .bind(state)
        .bind(retry_at.map(ms))
        .bind(error)
        .bind(ms(now_at))
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                job: lease.job.id.to_string(),
                token: lease.fencing_token,
            });
        }
        Ok(())
    }

    async fn get_job(&self, job: JobId) -> Result<Job> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(job.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(job_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "job" })
    }

    async fn create_webhook(&self, tenant: TenantId, webhook: NewWebhook) -> Result<Webhook> {
        non_empty("webhook url", &webhook.url)?;
        check_json("webhook events", &webhook.events_json)?;
        let at = now();
        let record = Webhook {
            id: WebhookId::new(),
            tenant_id: tenant,
            url: webhook.url,
            secret: webhook.secret,
            events_json: webhook.events_json,
            calendar_id: webhook.calendar_id,
            enabled: true,
            disabled_reason: None,
            consecutive_failures: 0,
            delivered_seq: 0,
            retry_at: None,
            created_at: at,
            updated_at: at,
        };
        let mut record = record;
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        if let Some(c) = record.calendar_id {
            ensure_owned(&mut tx, "calendars", "calendar", &c.to_string(), tenant).await?;
        }
        // A new webhook receives what happens from now on: its mark starts at the tenant's head.
        lock_change_stream(&mut tx, tenant).await?;
        let head = sqlx::query(HEAD_SQL)
            .bind(tenant.to_string())
            .fetch_one(&mut *tx)
            .await?;
        record.delivered_seq = head_of(&head)?;
        sqlx::query(
            "INSERT INTO webhook_subscriptions (id, tenant_id, url, secret, events, calendar_id, enabled, consecutive_failures, delivered_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, TRUE, 0, $8, $7, $7)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(&record.url)
        .bind(record.secret.as_bytes().to_vec())
        .bind(&record.events_json)
        .bind(record.calendar_id.map(|c| c.to_string()))
        .bind(ms(at))
        .bind(record.delivered_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_webhook(&self, tenant: TenantId, webhook: WebhookId) -> Result<Webhook> {
        let sql = format!(
            "SELECT {HOOK_COLS} FROM webhook_subscriptions WHERE id = $1 AND tenant_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(webhook.to_string())
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        row.as_ref()
            .map(hook_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "webhook" })
    }

    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<Webhook>> {
        let sql = format!(
            "SELECT {HOOK_COLS} FROM webhook_subscriptions WHERE tenant_id = $1 ORDER BY id"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(hook_row)
            .collect()
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        delivery: NewDelivery,
        disable_after: i64,
    ) -> Result<Delivery> {
        let record = Delivery {
            id: DeliveryId::new(),
            tenant_id: tenant,
            subscription_id: delivery.subscription_id,
            change_seq: delivery.change_seq,
            event: delivery.event,
            attempt: delivery.attempt,
            status: delivery.status,
            response_status: delivery.response_status,
            error: delivery.error,
            latency_ms: delivery.latency_ms,
            at: now(),
        };
        let succeeded = record.status == "delivered";
        let mut tx = self.wtx().await?;
        ensure_owned(
            &mut tx,
            "webhook_subscriptions",
            "webhook",
            &record.subscription_id.to_string(),
            tenant,
        )
        .await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, tenant_id, subscription_id, change_seq, event, attempt, status, response_status, error, at, latency_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(record.id.to_string())
        .bind(tenant.to_string())
        .bind(record.subscription_id.to_string())
        .bind(record.change_seq)
        .bind(&record.event)
        .bind(record.attempt)
        .bind(&record.status)
        .bind(record.response_status)
        .bind(&record.error)
        .bind(ms(record.at))
        .bind(record.latency_ms)
        .execute(&mut *tx)
        .await?;
        let reason = format!(
            "disabled after {disable_after} consecutive failed deliveries; the last: {}",
            record.error.as_deref().unwrap_or("failed")
        );
        sqlx::query(
            "UPDATE webhook_subscriptions SET \
             consecutive_failures = CASE WHEN $3 THEN 0 ELSE consecutive_failures + 1 END, \
             retry_at = CASE WHEN $3 THEN NULL ELSE retry_at END, \
             enabled = CASE WHEN NOT $3 AND consecutive_failures + 1 >= $4 THEN FALSE ELSE enabled END, \
             disabled_reason = CASE WHEN NOT $3 AND consecutive_failures + 1 >= $4 AND enabled THEN $5 ELSE disabled_reason END, \
             updated_at = $6 WHERE id = $1 AND tenant_id = $2",
        )
        .bind(record.subscription_id.to_string())
        .bind(tenant.to_string())
        .bind(succeeded)
        .bind(disable_after)
        .bind(reason)
        .bind(ms(record.at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn set_webhook_enabled(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<Webhook> {
        let sql = format!(
            "UPDATE webhook_subscriptions SET enabled = $3, disabled_reason = $4, \
             consecutive_failures = CASE WHEN $3 THEN 0 ELSE consecutive_failures END, \
             retry_at = CASE WHEN $3 THEN NULL ELSE retry_at END, updated_at = $5 \
             WHERE id = $1 AND tenant_id = $2 RETURNING {HOOK_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(webhook.to_string())
            .bind(tenant.to_string())
            .bind(enabled)
            .bind(if enabled { None } else { reason })
            .bind(ms(now()))
            .fetch_optional(self.w())
            .await?;
        row.as_ref()
            .map(hook_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "webhook" })
    }

    async fn list_deliveries(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE tenant_id = $1 AND subscription_id = $2 ORDER BY at DESC, id DESC LIMIT $3"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(webhook.to_string())
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(delivery_row)
            .collect()
    }

    async fn delete_webhook(&self, tenant: TenantId, webhook: WebhookId) -> Result<()> {
        sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1 AND tenant_id = $2")
            .bind(webhook.to_string())
            .bind(tenant.to_string())
            .execute(self.w())
            .await?
            .found("webhook")
    }

    async fn update_webhook(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        update: WebhookUpdate,
    ) -> Result<Webhook> {
        if let Some(url) = &update.url {
            non_empty("webhook url", url)?;
        }
        if let Some(events) = &update.events_json {
            check_json("webhook events", events)?;
        }
        let mut tx = self.wtx().await?;
        if let Some(Some(c)) = update.calendar_id {
            ensure_owned(&mut tx, "calendars", "calendar", &c.to_string(), tenant).await?;
        }
        let sql = format!(
            "UPDATE webhook_subscriptions SET url = COALESCE($3, url), events = COALESCE($4, events), \
             calendar_id = CASE WHEN $5 THEN $6 ELSE calendar_id END, secret = COALESCE($7, secret), updated_at = $8 \
             WHERE id = $1 AND tenant_id = $2 RETURNING {HOOK_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(webhook.to_string())
            .bind(tenant.to_string())
            .bind(update.url)
            .bind(update.events_json)
            .bind(update.calendar_id.is_some())
            .bind(update.calendar_id.flatten().map(|c| c.to_string()))
            .bind(update.secret.map(|s| s.as_bytes().to_vec()))
            .bind(ms(now()))
            .fetch_optional(&mut *tx)
            .await?;
        let record = row
            .as_ref()
            .map(hook_row)
            .transpose()?
            .ok_or(StoreError::NotFound { entity: "webhook" })?;
        tx.commit().await?;
        Ok(record)
    }

    async fn advance_webhook(&self, tenant: TenantId, webhook: WebhookId, seq: i64) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_subscriptions SET delivered_seq = CASE WHEN delivered_seq < $3 THEN $3 ELSE delivered_seq END \
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(webhook.to_string())
        .bind(tenant.to_string())
        .bind(seq)
        .execute(self.w())
        .await?
        .found("webhook")
    }

    async fn set_webhook_retry(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        at: Option<Timestamp>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_subscriptions SET retry_at = $3 WHERE id = $1 AND tenant_id = $2",
        )
        .bind(webhook.to_string())
        .bind(tenant.to_string())
        .bind(at.map(ms))
        .execute(self.w())
        .await?
        .found("webhook")
    }

    async fn webhooks_due(&self, now: Timestamp, limit: u32) -> Result<Vec<Webhook>> {
        let sql = format!(
            "SELECT {HOOK_COLS} FROM webhook_subscriptions w WHERE enabled AND (retry_at IS NULL OR retry_at <= $1) \
             AND delivered_seq < (SELECT COALESCE(MAX(seq), 0) FROM changes c WHERE c.tenant_id = w.tenant_id) \
             ORDER BY id LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(ms(now))
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(hook_row)
            .collect()
    }

    async fn purge_deliveries(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_deliveries WHERE at < $1")
            .bind(ms(before))
            .execute(self.w())
            .await?;
        Ok(done.rows_affected())
    }

    async fn put_push_channel(
        &self,
        tenant: TenantId,
        channel: NewPushChannel,
    ) -> Result<PushChannel> {
        non_empty("push channel provider", &channel.provider)?;
        non_empty("push channel id", &channel.id)?;
        let mut tx = self.wtx().await?;
        ensure_owned(&mut tx, "links", "link", &channel.link_id.to_string(), tenant).await?;
        let sql = format!(
            "INSERT INTO push_channels ({PUSH_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8) \
             ON CONFLICT (provider, id) DO UPDATE SET secret_hash = excluded.secret_hash, \
             resource_id = excluded.resource_id, expires_at = excluded.expires_at \
             WHERE push_channels.tenant_id = excluded.tenant_id RETURNING {PUSH_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(&channel.provider)
            .bind(&channel.id)
            .bind(tenant.to_string())
            .bind(channel.link_id.to_string())
            .bind(&channel.secret_hash)
            .bind(&channel.resource_id)
            .bind(ms(channel.expires_at))
            .bind(ms(now()))
            .fetch_optional(&mut *tx)
            .await?;
        let record = row
            .as_ref()
            .map(push_row)
            .transpose()?
            .ok_or_else(|| StoreError::Conflict("push channel id belongs to another tenant".into()))?;
        tx.commit().await?;
        Ok(record)
    }

    async fn find_push_channel(&self, provider: &str, id: &str) -> Result<Option<PushChannel>> {
        let sql = format!("SELECT {PUSH_COLS} FROM push_channels WHERE provider = $1 AND id = $2");
        sqlx::query(&sql)
            .bind(provider)
            .bind(id)
            .fetch_optional(self.r())
            .await?
            .as_ref()
            .map(push_row)
            .transpose()
    }

    async fn list_push_channels(&self, tenant: TenantId, link: LinkId) -> Result<Vec<PushChannel>> {
        let sql = format!(
            "SELECT {PUSH_COLS} FROM push_channels WHERE tenant_id = $1 AND link_id = $2 ORDER BY expires_at"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(link.to_string())
            .fetch_all(self.r())
            .await?
            .iter()
            .map(push_row)
            .collect()
    }

    async fn push_channels_expiring(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<PushChannel>> {
        let sql = format!(
            "SELECT {PUSH_COLS} FROM push_channels WHERE expires_at < $1 ORDER BY expires_at LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(ms(before))
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(push_row)
            .collect()
    }

    async fn accept_push_message(&self, provider: &str, id: &str, number: i64) -> Result<bool> {
        // One conditional UPDATE: two nodes receiving the same retried message cannot both accept it.
        let done = sqlx::query(
            "UPDATE push_channels SET last_message = $3 WHERE provider = $1 AND id = $2 \
             AND (last_message IS NULL OR last_message < $3)",
        )
        .bind(provider)
        .bind(id)
        .bind(number)
        .execute(self.w())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_push_channel(&self, tenant: TenantId, provider: &str, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM push_channels WHERE tenant_id = $1 AND provider = $2 AND id = $3")
            .bind(tenant.to_string())
            .bind(provider)
            .bind(id)
            .execute(self.w())
            .await?;
        Ok(())
    }

    async fn append_change(&self, tenant: TenantId, change: NewChange) -> Result<Change> {
        non_empty("change kind", &change.kind)?;
        check_json("change data", &change.data_json)?;
        let mut tx = self.wtx().await?;
        ensure_tenant(&mut tx, tenant).await?;
        if let Some(c) = change.calendar_id {
            ensure_owned(&mut tx, "calendars", "calendar", &c.to_string(), tenant).await?;
        }
        let record = insert_change(&mut tx, tenant, &change, now()).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_changes(
        &self,
        tenant: TenantId,
        after: i64,
        calendar: Option<CalendarId>,
        limit: u32,
    ) -> Result<Vec<Change>> {
        let sql = format!(
            "SELECT {CHANGE_COLS} FROM changes WHERE tenant_id = $1 AND seq > $2 AND ($3 IS NULL OR calendar_id = $3) ORDER BY seq LIMIT $4"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(after)
            .bind(calendar.map(|c| c.to_string()))
            .bind(page(limit))
            .fetch_all(self.r())
            .await?
            .iter()
            .map(change_row)
            .collect()
    }

    async fn latest_change_seq(&self, tenant: TenantId) -> Result<i64> {
        let row = sqlx::query(HEAD_SQL)
            .bind(tenant.to_string())
            .fetch_one(self.r())
            .await?;
        head_of(&row)
    }

    async fn purge_changes(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.wtx().await?;
        // The floor first, in the same transaction: a reader never sees entries gone without the floor.
        sqlx::query(
            "UPDATE tenants SET changes_purged_through = \
             (SELECT MAX(seq) FROM changes WHERE changes.tenant_id = tenants.id AND changes.at < $1) \
             WHERE EXISTS (SELECT 1 FROM changes WHERE changes.tenant_id = tenants.id AND changes.at < $1)",
        )
        .bind(ms(before))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM changes WHERE at < $1")
            .bind(ms(before))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn put_oauth_state(&self, tenant: TenantId, state: NewOAuthState) -> Result<()> {
        non_empty("oauth state hash", &state.state_hash)?;
        let mut tx = self.wtx().await?;
        ensure_owned(
            &mut tx,
            "connections",
            "connection",
            &state.connection_id.to_string(),
            tenant,
        )
        .await?;
        sqlx::query(
            "INSERT INTO oauth_states (id, tenant_id, connection_id, provider, verifier, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&state.state_hash)
        .bind(tenant.to_string())
        .bind(state.connection_id.to_string())
        .bind(&state.provider)
        .bind(state.verifier.as_bytes().to_vec())
        .bind(ms(now()))
        .bind(ms(state.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_oauth_state(&self, state_hash: &str) -> Result<Option<OAuthState>> {
        let sql = format!("DELETE FROM oauth_states WHERE id = $1 RETURNING {OAUTH_STATE_COLS}");
        let row = sqlx::query(&sql)
            .bind(state_hash)
            .fetch_optional(self.w())
            .await?;
        row.as_ref().map(oauth_state_row).transpose()
    }

    async fn purge_oauth_states(&self, now: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(ms(now))
            .execute(self.w())
            .await?;
        Ok(done.rows_affected())
    }

    async fn change_stream_floor(&self, tenant: TenantId) -> Result<i64> {
        let row = sqlx::query("SELECT changes_purged_through FROM tenants WHERE id = $1")
            .bind(tenant.to_string())
            .fetch_optional(self.r())
            .await?;
        match row {
            Some(row) => Ok(row.try_get("changes_purged_through")?),
            None => Err(StoreError::NotFound { entity: "tenant" }),
        }
    }

    async fn rotate_master(&self, old: &MasterKey, new: &MasterKey) -> Result<u64> {
        let mut tx = self.wtx().await?;
        let mut count = 0u64;
        let targets: [(&str, &str, Purpose); 3] = [
            ("connections", "credentials", Purpose::ConnectionCredentials),
            ("webhook_subscriptions", "secret", Purpose::WebhookSecret),
            ("oauth_states", "verifier", Purpose::OAuthVerifier),
        ];
        for (table, column, purpose) in targets {
            let select =
                format!("SELECT id, {column} AS sealed FROM {table} WHERE {column} IS NOT NULL");
            let rows = sqlx::query(&select).fetch_all(&mut *tx).await?;
            let update = format!("UPDATE {table} SET {column} = $2 WHERE id = $1");
            for row in rows {
                let row_id: String = row.try_get("id")?;
                let sealed = Sealed::from_stored(row.try_get("sealed")?);
                if new.sealed_this(&sealed) {
                    new.open(purpose, &sealed)?;
                    continue;
                }
                let plain = old.open(purpose, &sealed)?;
                let resealed = new.seal(purpose, &plain)?;
                sqlx::query(&update)
                    .bind(&row_id)
                    .bind(resealed.as_bytes().to_vec())
                    .execute(&mut *tx)
                    .await?;
                count += 1;
            }
        }
        tx.commit().await?;
        Ok(count)
    }
}
