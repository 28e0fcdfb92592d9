"""Scaling history in PostgreSQL: recommendations, scale events, failures, last activity, pause.

The HPA keeps these in memory, so a controller restart forgets its stabilization window; we keep
them in tables (migration ``0002_scaling.sql``) so windows, rate policies, the fallback count and
the scale-to-zero cooldown hold across CLI runs and daemon restarts. Rows older than
:data:`KEEP` are pruned (the longest window is 3600 s, the longest period 1800 s).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from opsctl.scaling.engine import Decision
from opsctl.scaling.snapshot import History

KEEP = timedelta(hours=2)
# opsctl's advisory locks use a negative first half (no company id is negative); this one is the
# scaling lock, the second half the service name's hash: one decision per service at a time
SCALE_LOCK_NAMESPACE = -0x6F71


def lock(conn: Any, service: str) -> None:
    """Serialize decisions for ``service`` until the current transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SCALE_LOCK_NAMESPACE, service))


def load(conn: Any, service: str, now: datetime) -> History:
    since = now - KEEP
    recs = conn.execute("SELECT at, replicas FROM scaling_recommendations WHERE service = %s AND at > %s"
                        " AND at <= %s ORDER BY at", (service, since, now)).fetchall()
    events = conn.execute("SELECT at, change FROM scaling_events WHERE service = %s AND at > %s AND at <= %s"
                          " ORDER BY at", (service, since, now)).fetchall()
    state = conn.execute("SELECT consecutive_failures, last_active, paused FROM scaling_state WHERE service = %s",
                         (service,)).fetchone()
    failures, last_active, paused = state if state else (0, None, False)
    return History(recommendations=tuple((r[0], int(r[1])) for r in recs),
                   scale_events=tuple((e[0], int(e[1])) for e in events),
                   consecutive_failures=int(failures), last_active=last_active, paused=bool(paused))


def remember(conn: Any, service: str, decision: Decision, now: datetime, applied: bool) -> None:
    """Store what the next decision needs: the recommendation, the scale event, failures, activity."""
    if decision.seeded:
        conn.execute("INSERT INTO scaling_recommendations (service, at, replicas) VALUES (%s, %s, %s)",
                     (service, now, decision.current_replicas))
    if decision.recommendation is not None:
        conn.execute("INSERT INTO scaling_recommendations (service, at, replicas) VALUES (%s, %s, %s)",
                     (service, now, decision.recommendation))
    if applied and decision.change:
        record_scale(conn, service, now, decision.current_replicas, decision.desired_replicas)
    conn.execute(
        "INSERT INTO scaling_state AS s (service, consecutive_failures, last_active) VALUES (%s, %s, %s)"
        " ON CONFLICT (service) DO UPDATE SET consecutive_failures = excluded.consecutive_failures,"
        " last_active = coalesce(excluded.last_active, s.last_active), updated_at = now()",
        (service, decision.consecutive_failures, now if decision.active else None))


def record_scale(conn: Any, service: str, now: datetime, before: int, after: int) -> None:
    conn.execute("INSERT INTO scaling_events (service, at, from_replicas, to_replicas, change)"
                 " VALUES (%s, %s, %s, %s, %s)", (service, now, before, after, after - before))


def set_paused(conn: Any, service: str, paused: bool, reason: str | None) -> bool:
    """Pause or resume ``service``; returns whether it was paused before."""
    row = conn.execute("SELECT paused FROM scaling_state WHERE service = %s FOR UPDATE", (service,)).fetchone()
    conn.execute(
        "INSERT INTO scaling_state (service, paused, paused_reason) VALUES (%s, %s, %s)"
        " ON CONFLICT (service) DO UPDATE SET paused = excluded.paused, paused_reason = excluded.paused_reason,"
        " updated_at = now()", (service, paused, reason if paused else None))
    return bool(row[0]) if row else False


def stored_decision(conn: Any, event_id: int) -> dict[str, Any] | None:
    """The ``scale.decide`` with this id: an applied change (``ops_events``) or a decision that changed
    nothing, a dry run included (``ops_decisions``); None if there is none."""
    from opsctl.audit import find

    row = find(conn, event_id)
    return row if row is not None and row["action"] == "scale.decide" else None


def prune(conn: Any, now: datetime) -> int:
    """Delete history older than :data:`KEEP`; returns the rows deleted."""
    cutoff = now - KEEP
    deleted = conn.execute("DELETE FROM scaling_recommendations WHERE at < %s", (cutoff,)).rowcount
    deleted += conn.execute("DELETE FROM scaling_events WHERE at < %s", (cutoff,)).rowcount
    return int(deleted)
