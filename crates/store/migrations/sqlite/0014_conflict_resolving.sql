-- A resolution begun and not known to be finished: the option an admin chose, its `merged` body, who
-- chose it and when (JSON), written before the resolution's first write and kept when the conflict
-- closes. A process that dies between a resolution's writes leaves the conflict open with this set, so
-- the next sync (or the admin's retry) can finish the resolution as the admin decided instead of
-- taking its writes for someone else's change.
ALTER TABLE conflicts ADD COLUMN resolving TEXT;
