-- The daemon's claim on each scheduled run: one row per (job, scheduled time), inserted on the
-- leader's own lock connection before the job starts, so a run happens once even if two
-- replicas briefly both believe they lead.
CREATE TABLE daemon_runs (
    job           text NOT NULL,
    scheduled_at  timestamptz NOT NULL,
    runner        text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text CHECK (outcome IN ('ok', 'failed')),
    PRIMARY KEY (job, scheduled_at)
);
