"""The audit log (``ops_events``) as ``opsctl events`` lists it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

EVENTS_SQL = """
SELECT id, at, actor, action, target, from_state, to_state, reason, details
FROM ops_events
WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(action)s::text IS NULL OR action LIKE %(action)s)
  AND (%(target)s::text IS NULL OR target = %(target)s)
ORDER BY at DESC, id DESC
LIMIT %(limit)s
"""


def action_pattern(action: str | None) -> str | None:
    """``backup.*`` → a LIKE pattern; anything else matches exactly."""
    if action is None:
        return None
    escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def list_events(conn: Any, *, now: datetime, since: timedelta | None = None, action: str | None = None,
                target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest ``limit`` events matching, oldest first (a log reads downwards)."""
    rows = conn.execute(EVENTS_SQL, {"since": now - since if since is not None else None,
                                     "action": action_pattern(action), "target": target, "limit": limit}).fetchall()
    return [{"id": r[0], "at": r[1].isoformat(timespec="seconds"), "actor": r[2], "action": r[3], "target": r[4],
             "from": r[5], "to": r[6], "reason": r[7], "details": r[8]} for r in reversed(rows)]
