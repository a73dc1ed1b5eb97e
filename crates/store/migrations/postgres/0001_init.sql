-- calbridge schema, PostgreSQL flavour. Ids are UUIDv7 text, times are Unix milliseconds (BIGINT), JSON is text.
-- The SQLite flavour in ../sqlite has the same tables and columns; keep them in step.

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    -- Longest occurrence ever indexed for this tenant (ms): bounds the window scan from below.
    max_occurrence_ms BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE calendars (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    time_zone  TEXT NOT NULL,
    owner      TEXT,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX calendars_tenant ON calendars (tenant_id, id);

CREATE TABLE series (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    calendar_id    TEXT NOT NULL REFERENCES calendars (id) ON DELETE CASCADE,
    uid            TEXT NOT NULL,
    ical           TEXT NOT NULL,
    model          TEXT NOT NULL,
    hash           TEXT NOT NULL,
    version        BIGINT NOT NULL,
    expanded_until BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    deleted_at     BIGINT
);
CREATE UNIQUE INDEX series_live_uid ON series (calendar_id, uid) WHERE deleted_at IS NULL;
CREATE INDEX series_tenant_calendar ON series (tenant_id, calendar_id, id);

-- The window query reads occurrences_window in (tenant, start, series, recurrence id) order.
CREATE TABLE occurrences (
    tenant_id     TEXT NOT NULL,
    start_utc     BIGINT NOT NULL,
    -- Byte-order collation: the keyset order must not depend on the cluster's locale (and compares faster).
    series_id     TEXT COLLATE "C" NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    recurrence_id TEXT COLLATE "C" NOT NULL,
    end_utc       BIGINT NOT NULL,
    calendar_id   TEXT NOT NULL,
    all_day       BOOLEAN NOT NULL,
    data          TEXT,
    PRIMARY KEY (series_id, recurrence_id)
);
CREATE INDEX occurrences_window ON occurrences (tenant_id, start_utc, series_id, recurrence_id);
CREATE INDEX occurrences_calendar ON occurrences (tenant_id, calendar_id, start_utc, series_id, recurrence_id);

CREATE TABLE connections (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    provider      TEXT NOT NULL,
    name          TEXT NOT NULL,
    calendar_id   TEXT NOT NULL REFERENCES calendars (id),
    credentials   BYTEA,
    sync_options  TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    version       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX connections_tenant ON connections (tenant_id, id);

CREATE TABLE links (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    connection_id      TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    remote_calendar_id TEXT NOT NULL,
    remote_name        TEXT,
    cursor             TEXT,
    last_full_sync_at  BIGINT,
    status             TEXT NOT NULL,
    status_reason      TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    UNIQUE (connection_id, remote_calendar_id)
);
CREATE INDEX links_tenant ON links (tenant_id, connection_id);

CREATE TABLE item_mappings (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    link_id        TEXT NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    series_id      TEXT REFERENCES series (id) ON DELETE SET NULL,
    remote_id      TEXT NOT NULL,
    remote_version TEXT,
    base           TEXT,
    base_hash      TEXT,
    last_seen_at   BIGINT,
    updated_at     BIGINT NOT NULL,
    UNIQUE (link_id, remote_id)
);
CREATE INDEX item_mappings_series ON item_mappings (series_id);
CREATE INDEX item_mappings_tenant ON item_mappings (tenant_id, link_id);

CREATE TABLE conflicts (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    connection_id TEXT REFERENCES connections (id) ON DELETE SET NULL,
    link_id       TEXT REFERENCES links (id) ON DELETE SET NULL,
    series_id     TEXT REFERENCES series (id) ON DELETE SET NULL,
    event_uid     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,
    local         TEXT,
    remote        TEXT,
    base          TEXT,
    fields        TEXT NOT NULL,
    options       TEXT NOT NULL,
    detected_at   BIGINT NOT NULL,
    resolved_at   BIGINT,
    resolution    TEXT,
    resolved_by   TEXT
);
CREATE INDEX conflicts_tenant ON conflicts (tenant_id, state, detected_at);

CREATE TABLE sync_runs (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    connection_id TEXT REFERENCES connections (id) ON DELETE SET NULL,
    full_sync     BOOLEAN NOT NULL,
    status        TEXT NOT NULL,
    counts        TEXT NOT NULL,
    requests      BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    errors        TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT
);
CREATE INDEX sync_runs_tenant ON sync_runs (tenant_id, started_at);

CREATE TABLE audit_log (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    details   TEXT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);
-- Append-only is enforced by the database too, not only by the absence of an API.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE tombstones (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    calendar_id TEXT,
    series_id   TEXT,
    link_id     TEXT,
    remote_id   TEXT,
    uid         TEXT,
    deleted_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX tombstones_tenant ON tombstones (tenant_id, deleted_at);
CREATE INDEX tombstones_expiry ON tombstones (expires_at);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT,
    kind             TEXT NOT NULL,
    key              TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,
    run_at           BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    fencing_token    BIGINT NOT NULL,
    requeued         BOOLEAN NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (kind, key)
);
CREATE INDEX jobs_due ON jobs (state, run_at);
CREATE INDEX jobs_lease ON jobs (state, lease_expires_at);

CREATE TABLE webhook_subscriptions (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    url                  TEXT NOT NULL,
    secret               BYTEA NOT NULL,
    events               TEXT NOT NULL,
    calendar_id          TEXT REFERENCES calendars (id) ON DELETE CASCADE,
    enabled              BOOLEAN NOT NULL,
    disabled_reason      TEXT,
    consecutive_failures BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    change_seq      BIGINT,
    event           TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    response_status BIGINT,
    error           TEXT,
    at              BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_sub ON webhook_deliveries (tenant_id, subscription_id, at);

CREATE TABLE changes (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    calendar_id TEXT,
    kind        TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    data        TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX changes_tenant ON changes (tenant_id, seq);
CREATE INDEX changes_at ON changes (at);
