"""Leader election: a session-level PostgreSQL advisory lock held on a dedicated connection.

Whoever holds ``DAEMON_LOCK`` leads. The lock lives exactly as long as the connection: a leader
that crashes, is killed or loses the network loses its session, PostgreSQL releases the lock and
a follower's next ``try_acquire`` wins. The leader checks its connection and lock every cycle and
claims each run on that same connection (``daemon_runs``), so a leader whose session is gone
cannot start a job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime
from typing import Any

from core.db import LOCK_NAMESPACE, first_line
from opsctl.daemon.role import LockCheck

log = logging.getLogger("opsctl.daemon")

DAEMON_LOCK = (LOCK_NAMESPACE, 10)

HOLDER_SQL = """
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = (%s::int4)::oid AND l.objid = (%s::int4)::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def application_name(actor: str | None = None) -> str:
    """``opsctl-daemon <actor> pid <pid>``: what ``pg_stat_activity`` (and ``opsctl status``) shows."""
    who = actor or f"daemon@{socket.gethostname()}"
    return f"opsctl-daemon {who} pid {os.getpid()}"[:63]


def lock_holder(conn: Any) -> dict[str, Any] | None:
    """Who holds the leader lock right now (pid, application_name, client_addr, backend_start)."""
    row = conn.execute(HOLDER_SQL, DAEMON_LOCK).fetchone()
    if row is None:
        return None
    return {"pid": row[0], "application_name": row[1], "client_addr": row[2], "backend_start": row[3]}


class LeaderLock:
    """The leader lock on its own connection; every method is safe to call from any thread."""

    def __init__(self, url: str, name: str, connect_timeout: int = 5) -> None:
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self.conn: Any = None
        self.held = False
        self._mutex = threading.Lock()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            self.url, autocommit=True, application_name=self.name, connect_timeout=self.connect_timeout,
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
        )

    def _drop(self) -> None:
        self.held = False
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # closing a dead connection may raise; it is gone either way
                log.debug("closing the leader connection failed", exc_info=True)
        self.conn = None

    def try_acquire(self) -> bool:
        """Take the lock if free (connecting first if needed). Raises on connection errors."""
        with self._mutex:
            if self.held:
                return True
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = self._connect()
                row = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", DAEMON_LOCK).fetchone()
            except Exception:
                self._drop()
                raise
            self.held = bool(row and row[0])
            return self.held

    def verify(self) -> bool:
        """Is the connection alive and the lock still ours? False drops the connection."""
        with self._mutex:
            if not self.held or self.conn is None:
                return False
            try:
                row = self.conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND objsubid = 2"
                    " AND classid = (%s::int4)::oid AND objid = (%s::int4)::oid)", DAEMON_LOCK).fetchone()
            except Exception as exc:
                log.warning("leader connection failed: %s", first_line(exc))
                self._drop()
                return False
            if not (row and row[0]):
                self._drop()
                return False
            return True

    def claim(self, job: str, scheduled_at: datetime, runner: str) -> bool:
        """Claim one scheduled run on the lock's connection: True only for the first claimant."""
        with self._mutex:
            if not self.held or self.conn is None:
                return False
            try:
                row = self.conn.execute(
                    "INSERT INTO daemon_runs (job, scheduled_at, runner) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING RETURNING 1", (job, scheduled_at, runner)).fetchone()
            except Exception as exc:
                import psycopg

                if isinstance(exc, psycopg.OperationalError):
                    log.warning("leader connection failed while claiming %s: %s", job, exc)
                    self._drop()
                    return False
                raise
            return row is not None

    def last_runs(self) -> dict[str, datetime]:
        """The latest scheduled time claimed per job (by any replica)."""
        with self._mutex:
            if self.conn is None:
                return {}
            rows = self.conn.execute("SELECT job, max(scheduled_at) FROM daemon_runs GROUP BY job").fetchall()
            return {job: at for job, at in rows}

    def holder(self) -> dict[str, Any] | None:
        with self._mutex:
            if self.conn is None:
                return None
            try:
                return lock_holder(self.conn)
            except Exception:
                self._drop()
                return None

    def check(self, leading: bool) -> LockCheck:
        """One look for :func:`opsctl.daemon.role.decide_role`: a leader verifies; a follower tries to
        take the lock and, having won, reads the runs already claimed. Never raises."""
        if leading:
            return LockCheck(held=self.verify())
        try:
            acquired = self.try_acquire()
        except Exception as exc:
            return LockCheck(held=False, error=first_line(exc))
        if not acquired:
            holder = self.holder()
            return LockCheck(held=False, holder=holder["application_name"] if holder else None)
        try:
            return LockCheck(held=True, last_runs=self.last_runs())
        except Exception as exc:
            return LockCheck(held=True, error=first_line(exc))

    def release(self) -> None:
        with self._mutex:
            if self.held and self.conn is not None:
                try:
                    self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", DAEMON_LOCK)
                except Exception:
                    log.debug("unlock failed; closing the connection releases the lock", exc_info=True)
            self._drop()
