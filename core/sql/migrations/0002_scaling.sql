-- Autoscaling history: what stabilization windows, rate policies, fallback and scale-to-zero
-- cooldowns need to remember across CLI runs and daemon restarts (opsctl.scaling.history).
CREATE TABLE scaling_recommendations (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service   text NOT NULL,
    at        timestamptz NOT NULL,
    replicas  integer NOT NULL CHECK (replicas >= 0)
);
CREATE INDEX scaling_recommendations_service_at_idx ON scaling_recommendations (service, at);

CREATE TABLE scaling_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service        text NOT NULL,
    at             timestamptz NOT NULL,
    from_replicas  integer NOT NULL,
    to_replicas    integer NOT NULL,
    change         integer NOT NULL
);
CREATE INDEX scaling_events_service_at_idx ON scaling_events (service, at);

CREATE TABLE scaling_state (
    service               text PRIMARY KEY,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    last_active           timestamptz,
    paused                boolean NOT NULL DEFAULT false,
    paused_reason         text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
