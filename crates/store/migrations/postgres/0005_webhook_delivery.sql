-- Outbound webhook delivery state and change-stream retention.
-- `delivered_seq`: the change-stream seq up to which a webhook's messages are settled (delivered, or not
-- matching its filter); the delivery worker sends the first matching entry after it.
ALTER TABLE webhook_subscriptions ADD COLUMN delivered_seq BIGINT NOT NULL DEFAULT 0;
-- After a failed attempt: not before this time (Unix ms) is the next one made; NULL when not backing off.
ALTER TABLE webhook_subscriptions ADD COLUMN retry_at BIGINT;
-- Wall time of one delivery attempt (request sent to answer or error), milliseconds.
ALTER TABLE webhook_deliveries ADD COLUMN latency_ms BIGINT;
-- The highest change-stream seq of the tenant removed by retention: a reader resuming at or after it misses
-- nothing; one resuming before it may have missed entries (the stream answers with a reset).
ALTER TABLE tenants ADD COLUMN changes_purged_through BIGINT NOT NULL DEFAULT 0;
