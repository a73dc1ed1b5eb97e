-- A time conflict names two series: the first in `series_id`, the second only inside its `local` JSON
-- (`events[1].series_id`). A detection after an incremental run reads the stored conflicts naming the
-- series it changed; it found the second ones by `local LIKE '%<id>%'`, which read every conflict row
-- of the tenant (~1 kB of JSON each) on every run. The second series gets its own column, and both get
-- an index led by the series (which also serves the `ON DELETE SET NULL` of a deleted series), so the
-- read is a few index probes per series whatever the number of conflicts stored.
ALTER TABLE conflicts ADD COLUMN other_series_id TEXT REFERENCES series (id) ON DELETE SET NULL;
-- Existing time conflicts: the event that is not `series_id` (the second), if its series still exists.
-- `local` is text; one that does not parse is left without a second series instead of failing the
-- migration.
CREATE FUNCTION calbridge_0011_jsonb(t TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
UPDATE conflicts c
SET other_series_id = s.id
FROM series s
WHERE c.kind = 'time'
  AND s.id = (
    SELECT CASE
        WHEN j #>> '{events,1,series_id}' = c.series_id THEN j #>> '{events,0,series_id}'
        ELSE j #>> '{events,1,series_id}'
    END
    FROM (SELECT calbridge_0011_jsonb(c.local) AS j) parsed
  );
DROP FUNCTION calbridge_0011_jsonb(TEXT);
CREATE INDEX conflicts_series ON conflicts (series_id, tenant_id, kind);
CREATE INDEX conflicts_other_series ON conflicts (other_series_id, tenant_id, kind);
