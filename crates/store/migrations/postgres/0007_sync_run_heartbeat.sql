-- A running sync run's row is touched periodically by the process running it; a run whose heartbeat
-- (or, for rows older than this column, its start) is older than `sync.run_stale_after` was cut short
-- (the process was killed or lost its database) and the scheduler closes it as failed/interrupted.
ALTER TABLE sync_runs ADD COLUMN heartbeat_at BIGINT;
CREATE INDEX sync_runs_unfinished ON sync_runs (started_at) WHERE finished_at IS NULL;
