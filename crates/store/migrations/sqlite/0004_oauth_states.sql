-- Pending OAuth sign-ins (authorize → callback). The `state` sent to the provider is stored only as its
-- SHA-256 (hex) in `id`, so a database read cannot complete someone's sign-in; the PKCE verifier is sealed
-- under the master key. A row is taken (deleted) by the callback that uses it: single use.
CREATE TABLE oauth_states (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    verifier      BLOB NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);
