-- The local change mark of a link: the change-stream seq up to which local edits have been synced to it.
-- NULL until the first sync committed (the engine then lists every series instead of reading the stream).
ALTER TABLE links ADD COLUMN local_cursor BIGINT;
