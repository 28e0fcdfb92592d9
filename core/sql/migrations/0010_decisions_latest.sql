-- 0010: the daemon prunes ops_decisions past their retention, but never the newest row of an
-- (action, target): a weekly job's last run, the last refused reload of a file still broken, the
-- latest decision per service stay for `opsctl status` and the runbooks however old they are.
-- This index finds "a newer row of the same action and target" per candidate row, so a prune
-- costs what it deletes, not a scan of the whole table (3 ms instead of 80 ms per hourly prune
-- at 35 days of a 30 s autoscaler). coalesce: a NULL target is one target, as in `status`.
CREATE INDEX ops_decisions_latest_idx ON ops_decisions (action, (coalesce(target, '')), at, id);
