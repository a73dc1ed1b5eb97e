-- Every sync run reads the open conflicts of its link (they park their series). That read went
-- through `conflicts_tenant (tenant_id, state, ...)` and every open conflict of the tenant, time
-- conflicts included (which name no link), then sorted them: ~4 ms per run with a thousand time
-- conflicts open beside a 10,000-event calendar, and growing with them. This index answers it with
-- the link's own conflicts, already in id order (the page order of `list_conflicts_after`).
CREATE INDEX conflicts_link ON conflicts (link_id, state, id) WHERE link_id IS NOT NULL;
