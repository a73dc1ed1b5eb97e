-- The version (series.version) of the local series a pair's base was taken from, when the pair was
-- recorded by the very step that read or wrote that row; NULL otherwise (write-ahead rows, intents,
-- pairs recorded by a resolution). A sync run drops the series its change stream names that are still
-- at this version before reading them: its own writes coming back (after a 100,000-event import, all
-- of them). Looked up through item_mappings_link_series and the series' primary key.
ALTER TABLE item_mappings ADD COLUMN local_version BIGINT;
