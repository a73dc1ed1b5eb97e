-- Provider push channels: a Microsoft Graph subscription or a Google watch channel per link. Notifications are
-- looked up by the provider's id (`id`, unique per provider); `secret_hash` is the SHA-256 (hex) of the
-- clientState / channel token we chose, so a database read does not let anyone forge notifications.
CREATE TABLE push_channels (
    provider     TEXT NOT NULL,
    id           TEXT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    link_id      TEXT NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    secret_hash  TEXT NOT NULL,
    resource_id  TEXT,
    expires_at   BIGINT NOT NULL,
    last_message BIGINT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (provider, id)
);
CREATE INDEX push_channels_link ON push_channels (tenant_id, link_id);
CREATE INDEX push_channels_expiry ON push_channels (expires_at);
