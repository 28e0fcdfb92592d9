-- 0009: ops_events keeps the changes made to the system (scale 2 → 3, a backup, a reindex …).
-- The routine records, which changed nothing, go to ops_decisions: scaling decisions that kept
-- the count or were dry runs, daemon job runs, recall measurements, refused policy reloads. The
-- daemon's leader prunes them after their retention (7 days by default, docs/daemon.md).
-- Ids come from ops_events' own sequence, so one id names one row of either table; ops_log is
-- both (`opsctl events --all`, `opsctl scale explain ID`).
CREATE TABLE ops_decisions (LIKE ops_events INCLUDING DEFAULTS);  -- the same columns
ALTER TABLE ops_decisions ALTER COLUMN id SET DEFAULT nextval('ops_events_id_seq'), ADD PRIMARY KEY (id);
CREATE INDEX ops_decisions_at_idx ON ops_decisions (at);
CREATE INDEX ops_decisions_action_idx ON ops_decisions (action, at);
CREATE VIEW ops_log AS
    SELECT id, at, actor, action, target, from_state, to_state, reason, details, true AS change FROM ops_events
    UNION ALL
    SELECT id, at, actor, action, target, from_state, to_state, reason, details, false AS change FROM ops_decisions;

-- the routine rows written before this migration move over, with their ids
WITH moved AS (
    DELETE FROM ops_events
    WHERE action IN ('daemon.job', 'index.recall')
       OR (action = 'scale.decide' AND details->>'applied' IS DISTINCT FROM 'true')
       OR (action = 'daemon.reload' AND to_state = 'refused')
    RETURNING id, at, actor, action, target, from_state, to_state, reason, details
)
INSERT INTO ops_decisions (id, at, actor, action, target, from_state, to_state, reason, details)
SELECT id, at, actor, action, target, from_state, to_state, reason, details FROM moved;
