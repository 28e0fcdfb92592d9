"""``<data dir>/up.json``: what the running ``opsctl up`` owns, kept current by its supervisor.

Who it is (PID and creation time), and for each child (postgres, redis, prometheus, daemon,
worker): its processes as (PID, creation time), whether it runs, how often it was restarted and
why it last died. Two readers: the next ``opsctl up``, which stops whatever a dead instance left
(``opsctl.up.leftovers``), and ``opsctl status``, which shows the children's health: ``observe``
adds which of the recorded processes still live, and ``opsctl.up.health`` (pure) summarizes.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from core.procs import same_process
from core.supervision import Recorded

RECORD_FILE = "up.json"

# how a leftover child is stopped: (signal, also its session, after the others)
STOPPING: dict[str, tuple[int, bool, bool]] = {
    "postgres": (signal.SIGINT, False, True),  # a fast shutdown; the postmaster stops its own backends
}
DEFAULT_STOPPING = (signal.SIGTERM, True, False)


def read_record(data_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((data_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(data_dir: Path, record: dict[str, Any]) -> None:
    path = data_dir / RECORD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def recorded_processes(record: dict[str, Any]) -> list[Recorded]:
    """The processes a record names, with how each is stopped (malformed entries are skipped)."""
    out = []
    for child in record.get("children") or []:
        if not isinstance(child, dict):
            continue
        name = str(child.get("name"))
        # a standby (replica-K) is a postmaster too
        sig, session, last = STOPPING.get("postgres" if name.startswith("replica-") else name, DEFAULT_STOPPING)
        for proc in child.get("processes") or []:
            try:
                out.append(Recorded(name, int(proc["pid"]), float(proc["created"]), sig, session, last))
            except (KeyError, TypeError, ValueError):
                continue
    return out


def observe(data_dir: Path) -> dict[str, Any] | None:
    """``up.json`` with ``alive`` on the record and on every process (by PID and creation time)."""
    record = read_record(data_dir)
    if not record.get("pid"):
        return None

    def alive(proc: dict[str, Any]) -> bool:
        try:
            return same_process(int(proc["pid"]), float(proc["created"]))
        except (KeyError, TypeError, ValueError):
            return False

    children = [{**child, "processes": [{**p, "alive": alive(p)} for p in child.get("processes") or []
                                        if isinstance(p, dict)]}
                for child in record.get("children") or [] if isinstance(child, dict)]
    return {**record, "alive": alive(record), "children": children}
