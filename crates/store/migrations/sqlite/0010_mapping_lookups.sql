-- A run reads a link's pairs by the ids its changes name: remote ids (what a provider round lists) and
-- local series (what the change stream names). Both lookups get an index led by the link and tenant, so
-- they are a few index probes whatever the size of the link. (Without statistics SQLite answered
-- `series_id IN (...)` through `item_mappings_tenant` and read every pair of the link: ~100 ms per
-- run at 100,000 events.) The covering `item_mappings_versions` served the read of every pair's version,
-- which no run makes any more: providers ask only about the ids they name.
DROP INDEX item_mappings_versions;
CREATE INDEX item_mappings_link_remote ON item_mappings (link_id, tenant_id, remote_id);
CREATE INDEX item_mappings_link_series ON item_mappings (link_id, tenant_id, series_id);
