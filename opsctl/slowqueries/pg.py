"""Slow queries, the adapter: apply the policy's threshold, read the server's log through SQL.

The log is read where the database keeps it, through the database: ``pg_ls_logdir()`` lists the
collector's files, ``pg_read_file()`` reads them (a superuser, or a role granted ``pg_monitor`` and
``pg_read_server_files``), so opsctl needs no access to the server's disk. Only ``jsonlog`` files
are read (each line a JSON object: exact to parse). ``ALTER SYSTEM`` needs a superuser or
``GRANT ALTER SYSTEM ON PARAMETER`` (PostgreSQL 15+).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from psycopg import sql

from core.errors import OperationFailed
from opsctl.slowqueries.parse import SlowStatement, group, parse_log
from opsctl.slowqueries.plan import ThresholdPlan, plan_threshold
from opsctl.slowqueries.policy import SlowQueriesPolicy

SETTINGS_SQL = "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)"
SHOWN = ("logging_collector", "log_destination")

# the collector's JSON files changed at or after a moment, oldest first, with their path for pg_read_file
LOG_FILES_SQL = """
SELECT current_setting('log_directory') || '/' || name, size, modification FROM pg_ls_logdir()
WHERE name LIKE '%%.json' AND modification >= %s ORDER BY modification, name
"""
READ_SQL = "SELECT pg_read_binary_file(%s, %s, %s)"
MAX_READ_BYTES = 256 * 1024 * 1024  # of log read by one command: the newest part of a larger log


def plan(conn: Any, policy: SlowQueriesPolicy) -> ThresholdPlan:
    wanted = policy.settings()
    current = dict(conn.execute(SETTINGS_SQL, ([*wanted, *SHOWN],)).fetchall())
    return plan_threshold(current, wanted)


def apply_threshold(conn: Any, policy: SlowQueriesPolicy, *, apply: bool, actor: str | None = None) -> ThresholdPlan:
    """Plan the policy's settings and, with ``apply``, set them (``ALTER SYSTEM`` + ``pg_reload_conf()``,
    audited as ``slowqueries.threshold``). ``conn`` is in autocommit (ALTER SYSTEM runs outside a
    transaction)."""
    from opsctl.audit import record

    planned = plan(conn, policy)
    if not apply or not planned.changes:
        return planned
    if policy.apply == "external":
        raise OperationFailed(f"the server's logging differs from the policy ({planned.sentence(False)}), and the "
                              "policy says the platform sets it (apply: external): change it there (for "
                              "CloudNativePG, the Cluster's spec.postgresql.parameters)")
    try:
        for change in planned.changes:
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(change.name),
                                                                    sql.Literal(change.wanted)))
        conn.execute("SELECT pg_reload_conf()")
    except Exception as exc:
        from core.db import first_line

        raise OperationFailed(f"cannot set the slow-query threshold: {first_line(exc)} (ALTER SYSTEM needs a "
                              "superuser or GRANT ALTER SYSTEM ON PARAMETER)") from exc
    record(conn, "slowqueries.threshold", target="log_min_duration_statement",
           from_state=", ".join(f"{c.name}={c.current}" for c in planned.changes),
           to_state=", ".join(f"{c.name}={c.wanted}" for c in planned.changes), actor=actor,
           reason="policies/slow-queries.yaml")
    return planned


def _read(conn: Any, path: str, start: int, end: int) -> bytes:
    """The bytes [start, end) of a log file."""
    row = conn.execute(READ_SQL, (path, start, end - start)).fetchone()
    return bytes(row[0] or b"")


def whole_lines(data: bytes, from_line_start: bool) -> tuple[str, int]:
    """The whole lines of ``data`` as text, and how many bytes they take: a line still being written
    (no newline yet) is left for the next read; without ``from_line_start`` the first, partial line
    is skipped."""
    begin = 0 if from_line_start else data.find(b"\n") + 1
    end = data.rfind(b"\n") + 1
    return (data[begin:end].decode("utf-8", "replace") if end > begin else ""), end


def tail_reads(files: list[tuple[str, int]], max_bytes: int) -> list[tuple[str, int, int, bool]]:
    """What to read of the (path, size) log files, oldest first, to have their newest ``max_bytes``:
    (path, start, end, from_line_start), newest first. A read cut inside a file starts one byte
    before the cut, so ``whole_lines`` sees whether a line begins right at it (a newline there)."""
    budget, reads = max_bytes, []
    for path, size in reversed(files):
        if budget <= 0:
            break
        start = max(0, size - budget)
        reads.append((path, max(0, start - 1), size, start == 0))
        budget -= size - start
    return reads


def readable_or_fail(conn: Any) -> None:
    """An OperationFailed saying why when the server's log cannot be read through SQL."""
    planned = plan_threshold(dict(conn.execute(SETTINGS_SQL, (list(SHOWN),)).fetchall()), {})
    if not planned.readable:
        raise OperationFailed(f"cannot read slow queries: {planned.why_unreadable}")


def read_slow(conn: Any, since: datetime, max_bytes: int = MAX_READ_BYTES) -> list[SlowStatement]:
    """The slow statements of the JSON log files written to since ``since`` (the newest ``max_bytes``)."""
    try:
        files = [(path, int(size)) for path, size, _ in conn.execute(LOG_FILES_SQL, (since,)).fetchall()]
        texts = [whole_lines(_read(conn, path, start, end), from_line_start)[0]
                 for path, start, end, from_line_start in tail_reads(files, max_bytes)]
    except Exception as exc:
        from core.db import first_line

        raise OperationFailed(f"cannot read the server's log: {first_line(exc)} (pg_ls_logdir and pg_read_file "
                              "need a superuser, or pg_monitor and pg_read_server_files)") from exc
    return [s for text in reversed(texts) for s in parse_log(text)]


def company_names(conn: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(conn.execute("SELECT id, name FROM companies WHERE id = ANY(%s)", (sorted(ids),)).fetchall())


def slow_report(conn: Any, since: datetime, *, top: int | None = None,
                max_bytes: int = MAX_READ_BYTES) -> list[dict[str, object]]:
    """``opsctl slow-queries``: the statements logged since ``since``, grouped, by total time."""
    readable_or_fail(conn)
    groups = group(read_slow(conn, since, max_bytes), since)[:top]
    names = company_names(conn, {c for g in groups for c in g.companies})
    return [g.as_dict(names) for g in groups]


# --- counting, for the alert ----------------------------------------------------------------------

class LogFollower:
    """Counts the slow statements logged since its previous call (the daemon's ``slow-queries`` job):
    the first call only notes where each file ends; later ones read what was appended since."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] | None = None
        self.lock = threading.Lock()

    def new_statements(self, conn: Any, since: datetime) -> list[SlowStatement]:
        with self.lock:
            files = conn.execute(LOG_FILES_SQL, (since,)).fetchall()
            first = self.offsets is None
            offsets = self.offsets or {}
            found: list[SlowStatement] = []
            for path, size, _ in files:
                start = offsets.get(path, int(size) if first else 0)
                if start > int(size):  # truncated at a rotation: a new file under the old name
                    start = 0
                text, used = whole_lines(_read(conn, path, start, int(size)), True) if int(size) > start else ("", 0)
                found += parse_log(text)
                offsets[path] = start + used
            self.offsets = {p: offsets[p] for p, _, _ in files}
            return found
