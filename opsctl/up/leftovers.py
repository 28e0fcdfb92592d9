"""Before starting: stop what a dead ``opsctl up`` left running on this data dir.

Children die with ``opsctl up`` (parent-death signal); this is the second line, for what that
cannot reach: processes a child started in its session (a daemon job's ``pg_basebackup``), a
child that ignored its signal or was stuck, a PostgreSQL started on the data dir by someone else
or by an older version. Which processes: ``core.supervision.plan_cleanup`` (pure), from
``up.json`` and ``postmaster.pid``, never a process that merely reused a recorded PID, and
nothing in a recorded child's session that does not carry this data dir in its environment
(``OPSCTL_DATA_DIR``: ``opsctl up`` sets it for every child, and their children inherit it).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from core.errors import ServiceUnavailable
from core.procs import send, snapshot, wait_gone
from core.supervision import Stop, plan_cleanup
from opsctl.up.record import read_record, recorded_processes

GRACE_SECONDS = 45.0  # a leftover daemon's stop grace (30 s) and its margin
POSTGRES_GRACE_SECONDS = 120.0  # a fast shutdown checkpoints


def postmaster_of(pg_data_dir: Path) -> tuple[int, str] | None:
    """(pid, data dir) from ``postmaster.pid``, if there is one."""
    try:
        pid = int((pg_data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid, str(pg_data_dir.resolve())


def clean_leftovers(data_dir: Path, pg_data_dir: Path, say: Callable[[str], None]) -> list[Stop]:
    """Stop every leftover (plan, signal, wait, escalate); raise if one survives. Returns what was stopped."""
    record = read_record(data_dir)
    recorded = recorded_processes(record)
    postmaster = postmaster_of(pg_data_dir)
    sessions = [r.pid for r in recorded if r.whole_session]
    table = snapshot(cwd_of=[postmaster[0]] if postmaster else [], sessions=sessions)
    stops = plan_cleanup(recorded, table, str(data_dir.resolve()), postmaster)
    if not stops:
        return []
    owner = f"opsctl up (pid {record['pid']})" if record.get("pid") else "an earlier opsctl up"
    say(f"{owner} did not stop its children; stopping what is left: " + ", ".join(s.what for s in stops))
    for group in ([s for s in stops if not s.last], [s for s in stops if s.last]):
        _stop(group)
    return stops


def _stop(stops: list[Stop]) -> None:
    if not stops:
        return
    for s in stops:
        send(s.pid, s.created, s.signal)
    grace = POSTGRES_GRACE_SECONDS if any(s.last for s in stops) else GRACE_SECONDS
    left = {(p, c) for p, c in wait_gone([(s.pid, s.created) for s in stops], grace)}
    for s in stops:
        if (s.pid, s.created) in left:  # PostgreSQL: an immediate shutdown first (crash-safe), others: SIGKILL
            send(s.pid, s.created, signal.SIGQUIT if s.last else signal.SIGKILL)
    left = set(wait_gone(left, 30.0))
    for pid, created in left:
        send(pid, created, signal.SIGKILL)
    left = set(wait_gone(left, 10.0))
    if left:
        names = ", ".join(s.what for s in stops if (s.pid, s.created) in left)
        raise ServiceUnavailable(f"could not stop what an earlier opsctl up left running: {names}")
