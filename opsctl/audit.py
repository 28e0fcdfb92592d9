"""The audit log: every change opsctl makes is one ``ops_events`` row and one count in metrics.

``ops_events`` holds the CHANGES made to the system: scale 2 → 3, a backup, a reindex, a cache
policy applied, a leader change, a reload that changed the jobs. What changed nothing — a scaling
decision that kept the count or was a dry run, a job run, a recall measurement, the daemon's load
at start, a reload that changed no job, a refused reload — is ``change=False`` and
goes to ``ops_decisions`` instead: kept for ``opsctl events --all`` and ``opsctl scale explain``
without drowning the changes, and pruned by the daemon after its retention (all but the newest
row of each action and target).

Both tables have the same columns: when (``at``), who (``actor``), what (``action``, ``target``),
from → to, why (``reason``) and ``details`` (JSON: a decision's snapshot, a drill's report …).
Their ids come from one sequence, so an id names one row of either; the view ``ops_log`` is
both, with a ``change`` column. ``opsctl_changes_total`` counts the ``ops_events`` rows,
``opsctl_decisions_total`` the ``ops_decisions`` rows, by action.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime
from typing import Any

from prometheus_client import Counter

CHANGES = Counter("opsctl_changes_total", "Changes opsctl made to the system (ops_events rows), by action",
                  ["action"])
DECISIONS = Counter("opsctl_decisions_total",
                    "Routine records that changed nothing (ops_decisions rows: decisions, dry runs, job runs), "
                    "by action", ["action"])

RECORD_DECISION_SQL = """
INSERT INTO ops_decisions (actor, action, target, from_state, to_state, reason, details)
VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id
"""
FIND_SQL = """
SELECT id, at, actor, action, target, from_state, to_state, reason, details, change FROM ops_log WHERE id = %s
"""
# never the newest row of an (action, target): it is what `status` shows (a weekly job's last run, a
# reload refused while the file is still broken) however old it is; index ops_decisions_latest_idx
PRUNE_DECISIONS_SQL = """
DELETE FROM ops_decisions d WHERE d.at < %s AND EXISTS (
    SELECT 1 FROM ops_decisions n
    WHERE n.action = d.action AND coalesce(n.target, '') = coalesce(d.target, '') AND (n.at, n.id) > (d.at, d.id))
"""


def default_actor() -> str:
    """Who acts: ``OPSCTL_ACTOR`` when set (the daemon sets ``daemon@host``), else ``user@host``."""
    explicit = os.environ.get("OPSCTL_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def record(conn: Any, action: str, *, target: str | None = None, from_state: Any = None, to_state: Any = None,
           reason: str | None = None, details: dict[str, Any] | None = None, actor: str | None = None,
           change: bool = True) -> int:
    """Write one row: a change to ``ops_events`` (counted in ``opsctl_changes_total``), anything that
    changed nothing (``change=False``) to ``ops_decisions``. Returns its id (unique across both)."""
    from psycopg.types.json import Jsonb

    from core.db import record_event

    who = actor or default_actor()
    before = None if from_state is None else str(from_state)
    after = None if to_state is None else str(to_state)
    if change:
        event_id = record_event(conn, actor=who, action=action, target=target, from_state=before, to_state=after,
                                reason=reason, details=details)
        CHANGES.labels(action).inc()
        return event_id
    row = conn.execute(RECORD_DECISION_SQL,
                       (who, action, target, before, after, reason, Jsonb(details or {}))).fetchone()
    assert row is not None
    DECISIONS.labels(action).inc()
    return int(row[0])


def find(conn: Any, event_id: int) -> dict[str, Any] | None:
    """The row of either table with this id (``change`` says which), or None."""
    row = conn.execute(FIND_SQL, (event_id,)).fetchone()
    if row is None:
        return None
    return {"id": row[0], "at": row[1], "actor": row[2], "action": row[3], "target": row[4], "from": row[5],
            "to": row[6], "reason": row[7], "details": row[8], "change": row[9]}


def prune_decisions(conn: Any, before: datetime) -> int:
    """Delete the ``ops_decisions`` rows older than ``before``, except the newest of each (action,
    target), which stays however old (changes are never pruned); returns how many."""
    return int(conn.execute(PRUNE_DECISIONS_SQL, (before,)).rowcount)
