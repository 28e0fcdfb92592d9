"""What the leader prunes, and when: run claims (``daemon_runs``) and routine decisions (``ops_decisions``).

Changes (``ops_events``) are never pruned, nor the newest decision of each action and target. The
leader prunes at most once per ``every``, with the clock of its cycle; :func:`cutoffs` is the pure part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.db import first_line

log = logging.getLogger("opsctl.daemon")

PRUNE_RUNS_SQL = "DELETE FROM daemon_runs WHERE scheduled_at < %s"


@dataclass(frozen=True)
class Retention:
    runs: timedelta = timedelta(days=30)  # daemon_runs: the claims (catch-up needs only the latest per job)
    # ops_decisions (scaling decisions, job runs, measurements): the longest shipped schedule (weekly)
    # plus the alerts looking back at it (RestoreDrillStale: 8 d), with room; the newest row of each
    # action and target is kept past it anyway
    decisions: timedelta = timedelta(days=35)
    every: timedelta = timedelta(hours=1)  # how often the leader prunes


def cutoffs(retention: Retention, last: datetime | None, now: datetime) -> dict[str, datetime] | None:
    """Delete-before times per table if a prune is due at ``now`` (the last was at ``last``), else None."""
    if last is not None and now - last < retention.every:
        return None
    return {"daemon_runs": now - retention.runs, "ops_decisions": now - retention.decisions}


def prune(conn: Any, before: dict[str, datetime]) -> dict[str, int]:
    """Delete what is older than ``before``; returns the rows deleted per table."""
    from opsctl.audit import prune_decisions

    runs = conn.execute(PRUNE_RUNS_SQL, (before["daemon_runs"],)).rowcount
    return {"daemon_runs": int(runs), "ops_decisions": prune_decisions(conn, before["ops_decisions"])}


class Pruner:
    """Prunes when due; a failure is logged and retried at the next due time."""

    def __init__(self, url: str, retention: Retention) -> None:
        self.url = url
        self.retention = retention
        self.last: datetime | None = None

    def __call__(self, now: datetime) -> dict[str, int] | None:
        before = cutoffs(self.retention, self.last, now)
        if before is None:
            return None
        self.last = now
        from core.db import connect

        try:
            with connect(self.url, autocommit=True, connect_timeout=5) as conn:
                deleted = prune(conn, before)
        except Exception as exc:
            log.warning("pruning daemon_runs and ops_decisions failed: %s", first_line(exc))
            return None
        if any(deleted.values()):
            log.info("pruned %d run claims and %d decisions", deleted["daemon_runs"], deleted["ops_decisions"])
        return deleted
