"""The daemon's own Prometheus metrics, served on ``--metrics-port``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOB_RUNS = Counter("opsctl_job_runs_total", "Daemon job runs by job and outcome (ok|failed)", ["job", "outcome"])
JOB_DURATION = Histogram("opsctl_job_duration_seconds", "Duration of daemon job runs", ["job"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
JOB_LAST_SUCCESS = Gauge("opsctl_job_last_success_timestamp_seconds",
                         "Unix time of the last successful run of each job", ["job"])
LEADER = Gauge("opsctl_daemon_leader", "1 while this daemon replica holds the leader lock")
POLICIES_LOADED = Gauge("opsctl_daemon_policies_loaded",
                        "1 while this replica enforces a valid policy set; 0 while it has none (its set at start "
                        "was refused: it does not lead until the files are fixed)")
RELOAD_ERRORS = Counter("opsctl_policy_reload_errors_total",
                        "Policy loads refused because a policy file was invalid (at a reload the old policies stay)")
CYCLE_OVERRUNS = Counter("opsctl_daemon_cycle_overruns_total", "Control-loop cycles that took longer than the cycle")
JOBS_SKIPPED = Counter("opsctl_job_skipped_total",
                       "Scheduled runs not started, by reason (overrun: still running; missed: too late)",
                       ["job", "reason"])
