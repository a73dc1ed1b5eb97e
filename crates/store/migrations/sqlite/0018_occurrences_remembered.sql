-- Whether the remote_occurrences rows of a pair are every occurrence id the connector last reported of
-- its remote item (0013). No rows cannot tell "remembered: none in the window" (a single event, a series
-- with no occurrence in the window) from "never remembered" (a pair the engine recorded for its own
-- write, not read back yet; a pair recorded before occurrences were reported). Microsoft Graph's delta
-- reports `@removed` ids that name no series (a deleted occurrence) and, alike, every event added,
-- changed or deleted outside the window; when no remembered series holds such an id, the connector
-- re-reads the series among the pairs flagged FALSE here, not every series of the link: a meeting edited
-- next year no longer makes the next round of a 100,000-event mailbox read every series.
-- Set by replace_remote_occurrences (the connector read the item); a new pair starts FALSE; an upsert of
-- an existing pair keeps it (a change to the remote item after the cursor shows up in the next delta).
ALTER TABLE item_mappings ADD COLUMN occurrences_remembered BOOLEAN NOT NULL DEFAULT FALSE;
-- Pairs with rows were replaced whole by a read since 0013; the others (singles, series read before
-- 0013 or with no occurrence in the window) stay FALSE until the connector reports them (every item of
-- the next complete listing is reported).
UPDATE item_mappings SET occurrences_remembered = TRUE
 WHERE id IN (SELECT mapping_id FROM remote_occurrences);
-- A link's pairs not remembered: few in steady state, found without reading every pair of the link.
CREATE INDEX item_mappings_occurrences_unknown ON item_mappings (link_id) WHERE NOT occurrences_remembered;
