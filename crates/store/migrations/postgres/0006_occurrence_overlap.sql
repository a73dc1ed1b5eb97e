-- The window query finds occurrences that start before a window and overlap it in this index: `end_utc` is
-- checked on index entries, so only overlapping rows are fetched from the heap (before, every row starting
-- within the tenant's longest occurrence before the window was fetched and dropped).
CREATE INDEX occurrences_overlap ON occurrences (tenant_id, start_utc, end_utc);
