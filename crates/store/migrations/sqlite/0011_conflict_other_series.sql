-- A time conflict names two series: the first in `series_id`, the second only inside its `local` JSON
-- (`events[1].series_id`). A detection after an incremental run reads the stored conflicts naming the
-- series it changed; it found the second ones by `local LIKE '%<id>%'`, which read every conflict row
-- of the tenant (~1 kB of JSON each) on every run. The second series gets its own column, and both get
-- an index led by the series (which also serves the `ON DELETE SET NULL` of a deleted series), so the
-- read is a few index probes per series whatever the number of conflicts stored.
ALTER TABLE conflicts ADD COLUMN other_series_id TEXT REFERENCES series (id) ON DELETE SET NULL;
-- Existing time conflicts: the event that is not `series_id` (the second), if its series still exists.
UPDATE conflicts
SET other_series_id = (
    SELECT s.id FROM series s
    WHERE s.id = CASE
        WHEN json_extract(conflicts.local, '$.events[1].series_id') = conflicts.series_id
            THEN json_extract(conflicts.local, '$.events[0].series_id')
        ELSE json_extract(conflicts.local, '$.events[1].series_id')
    END
)
WHERE kind = 'time' AND json_valid(local);
CREATE INDEX conflicts_series ON conflicts (series_id, tenant_id, kind);
CREATE INDEX conflicts_other_series ON conflicts (other_series_id, tenant_id, kind);
