"""The daemon's ``slow-queries`` job: keep the server's threshold as the policy says, and count the
slow statements logged since the previous run in ``opsctl_slow_queries_total`` (the
SlowQueriesRising alert's rate). The job runs on the leader only; after a change of leader the new
one starts counting from the log's end (the rate is that of the leader's own runs)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from core.clock import utcnow
from opsctl.slowqueries.pg import LogFollower

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.slowqueries.policy import SlowQueriesPolicy

SLOW_STATEMENTS = Counter("opsctl_slow_queries_total", "Statements the database logged as slower than the "
                          "policy's threshold (log_min_duration_statement), counted by the daemon's slow-queries job")
THRESHOLD = Gauge("opsctl_slow_queries_threshold_ms", "The slow-query threshold the server runs with "
                  "(log_min_duration_statement; -1: off)")
FOLLOWER = LogFollower()
LOOKBACK = timedelta(days=1)  # files written to within this are followed (rotation: a new file each day)


def job_slow_queries(settings: Settings, policy_dir: Path) -> str:
    from opsctl.audit import default_actor
    from opsctl.context import connect_db
    from opsctl.slowqueries.policy import load_policy, policy_path

    if not policy_path(directory=policy_dir).exists():
        return "no slow-queries.yaml in the policies: the server's threshold is left as it is"
    policy = load_policy(directory=policy_dir)
    with connect_db(settings) as conn:
        return slow_queries_cycle(conn, policy, utcnow(), actor=default_actor())


def slow_queries_cycle(conn: Any, policy: SlowQueriesPolicy, now: datetime, actor: str | None = None) -> str:
    """One run at ``now``: the threshold applied, the new slow statements counted; its sentence."""
    from opsctl.slowqueries.pg import apply_threshold

    external = policy.apply == "external"
    planned = apply_threshold(conn, policy, apply=not external, actor=actor)
    THRESHOLD.set(float(planned.current.get("log_min_duration_statement", "-1")) if external else
                  float(policy.settings()["log_min_duration_statement"]))
    said = planned.sentence(applied=not external)
    if external and planned.changes:
        said += " (apply: external: the platform sets them)"
    if not planned.readable:
        return said
    found = FOLLOWER.new_statements(conn, now - LOOKBACK)
    SLOW_STATEMENTS.inc(len(found))
    return f"{said}; {len(found)} slow statements logged since the last run"
