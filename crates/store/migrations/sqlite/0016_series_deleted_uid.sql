-- A sync run that finds a write-ahead row without its pair asks for the latest deleted series of the
-- calendar with that UID (`get_deleted_series_by_uid`: a series it created, deleted by the application
-- before the pair was recorded). No index served that: `series_live_uid` holds live rows only, so the
-- read went through `series_tenant_calendar` and every series of the calendar, once per such row
-- after an interrupted run. This one holds deleted rows only (the live ones have theirs), in the
-- query's order, so the answer is one probe.
CREATE INDEX series_deleted_uid ON series (calendar_id, uid, created_at, id) WHERE deleted_at IS NOT NULL;
