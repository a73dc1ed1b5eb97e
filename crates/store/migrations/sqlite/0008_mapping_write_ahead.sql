-- Rows that record a write which may or may not have happened (the write-ahead row of a create, a pair
-- with an intent): every sync run reads these, and of the other pairs only those its changes name, so an
-- incremental run's cost follows the changes, not the size of the calendar.
ALTER TABLE item_mappings ADD COLUMN write_ahead BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE item_mappings SET write_ahead = TRUE
 WHERE series_id IS NULL OR remote_version IS NULL OR base LIKE '%"intent":%';
CREATE INDEX item_mappings_write_ahead ON item_mappings (link_id) WHERE write_ahead;
