-- A Microsoft Graph occurrence's id does not name its series, so an incremental round that lists the
-- `@removed` id of a deleted occurrence could only re-read every recurring series of the link to find
-- it: O(series) requests for one deleted occurrence. The connector reports the occurrence ids of each
-- series it reads (occurrences and exceptions in the link's window); they are kept here with the pair
-- of their series, found by (link, tenant, occurrence id), replaced when the series is read again and
-- deleted with the pair (and so with the link). Rows are what the connector saw: the occurrences of the
-- window, nothing more.
CREATE TABLE remote_occurrences (
    link_id       TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    occurrence_id TEXT NOT NULL,
    mapping_id    TEXT NOT NULL REFERENCES item_mappings (id) ON DELETE CASCADE,
    PRIMARY KEY (link_id, tenant_id, occurrence_id)
) WITHOUT ROWID;
-- A pair's rows: replaced together, and deleted with the pair (the cascade looks them up here).
CREATE INDEX remote_occurrences_mapping ON remote_occurrences (mapping_id);
