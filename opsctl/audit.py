"""The audit log: every change opsctl makes is one ``ops_events`` row and one count in metrics.

``ops_events`` columns: when (``at``), who (``actor``), what (``action``, ``target``), from → to,
why (``reason``) and ``details`` (JSON: a decision's snapshot, a drill's report …).
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from prometheus_client import Counter

CHANGES = Counter("opsctl_changes_total", "Changes opsctl made to the system, by action", ["action"])


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
    """Write one audit row (and count it as a change unless ``change=False``); returns its id."""
    from core.db import record_event

    event_id = record_event(conn, actor=actor or default_actor(), action=action, target=target,
                            from_state=None if from_state is None else str(from_state),
                            to_state=None if to_state is None else str(to_state), reason=reason, details=details)
    if change:
        CHANGES.labels(action).inc()
    return event_id
