"""The audit log as ``opsctl events`` lists it: the changes (``ops_events``), or with ``--all`` the
routine decisions and job runs too (``ops_log``: both tables, see :mod:`opsctl.audit`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

_FILTERS = """
WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(action)s::text IS NULL OR action LIKE %(action)s)
  AND (%(target)s::text IS NULL OR target = %(target)s)
"""
EVENTS_SQL = {
    False: "SELECT id, at, actor, action, target, from_state, to_state, reason, details, true FROM ops_events"
           + _FILTERS + "ORDER BY at DESC, id DESC LIMIT %(limit)s",
    True: "SELECT id, at, actor, action, target, from_state, to_state, reason, details, change FROM ops_log"
          + _FILTERS + "ORDER BY at DESC, id DESC LIMIT %(limit)s",
}
HIDDEN_SQL = "SELECT count(*) FROM ops_decisions" + _FILTERS


def action_pattern(action: str | None) -> str | None:
    """``backup.*`` → a LIKE pattern; anything else matches exactly."""
    if action is None:
        return None
    escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _params(now: datetime, since: timedelta | None, action: str | None, target: str | None) -> dict[str, Any]:
    return {"since": now - since if since is not None else None, "action": action_pattern(action), "target": target}


def list_events(conn: Any, *, now: datetime, since: timedelta | None = None, action: str | None = None,
                target: str | None = None, limit: int = 100, everything: bool = False) -> list[dict[str, Any]]:
    """The latest ``limit`` changes matching (with ``everything``, decisions and job runs too), oldest
    first (a log reads downwards). ``kind`` is ``change`` or ``decision``."""
    rows = conn.execute(EVENTS_SQL[everything], {**_params(now, since, action, target), "limit": limit}).fetchall()
    return [{"id": r[0], "at": r[1].isoformat(timespec="seconds"), "actor": r[2], "action": r[3], "target": r[4],
             "from": r[5], "to": r[6], "reason": r[7], "details": r[8], "kind": "change" if r[9] else "decision"}
            for r in reversed(rows)]


def hidden_decisions(conn: Any, *, now: datetime, since: timedelta | None = None, action: str | None = None,
                     target: str | None = None) -> int:
    """How many decisions and job runs match the same filters (what ``--all`` would add)."""
    row = conn.execute(HIDDEN_SQL, _params(now, since, action, target)).fetchone()
    return int(row[0]) if row else 0
