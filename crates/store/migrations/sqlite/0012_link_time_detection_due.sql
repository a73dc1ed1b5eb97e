-- A link whose time-conflict detection failed after its cursors advanced: the id of the run whose
-- detection failed. The link's next run detects over the owner's whole window and clears the marker
-- only if it still names that run (a later failure wrote its own run id and stays due). NULL: nothing due.
ALTER TABLE links ADD COLUMN time_detection_due TEXT;
