-- Rows that record a write which may or may not have happened (the write-ahead row of a create, a pair
-- with an intent): every sync run reads these, and of the other pairs only those its changes name, so an
-- incremental run's cost follows the changes, not the size of the calendar.
ALTER TABLE item_mappings ADD COLUMN write_ahead BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE item_mappings SET write_ahead = TRUE
 WHERE series_id IS NULL OR remote_version IS NULL OR base LIKE '%"intent":%';
CREATE INDEX item_mappings_write_ahead ON item_mappings (link_id) WHERE write_ahead;
-- Every run reads the ids and versions of all pairs of its link (the provider's "known versions"): from
-- this index alone, without touching the rows and their bases.
CREATE INDEX item_mappings_versions ON item_mappings (link_id, tenant_id, remote_id, series_id, remote_version);
