-- A running sync run carries its own staleness bound: the process running it writes, with each heartbeat,
-- the `sync.run_stale_after` it was configured with, and a reaper closes the run only when the heartbeat
-- (or start) is older than that bound, so nodes configured differently never reap each other's live runs.
-- NULL (rows written before this column, or before their first heartbeat): the reaper's own setting.
ALTER TABLE sync_runs ADD COLUMN stale_after_ms BIGINT;
