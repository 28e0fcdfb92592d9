"""``opsctl up``'s supervisor: a child that dies is started again, with backoff, counted and logged.

Every ``interval`` seconds (one thread) it looks at each child (PostgreSQL, Redis, Prometheus,
the daemon): one that died is logged with how it died, marked down
(``opsctl_up_child_up{child} 0``) and started again when ``core.supervision.next_restart`` says
(1 s, 2 s, 4 s … 60 s while it keeps dying; a child that then runs for a minute starts the
sequence over), the same way ``opsctl up`` first started it; each restart is counted in
``opsctl_up_child_restarts_total{child}`` (served on the API's /metrics). Workers are restarted
by their own pool (``core.workerpool``, same backoff, ``child="worker"``); the supervisor only
records them.

PostgreSQL is restarted too: killed, it leaves a data dir that its own crash recovery makes
consistent at the next start (what any service manager does). While it is down, the API answers
503 and workers retry; nothing acknowledged is lost (a 2xx on ingest means committed).

After every change the supervisor rewrites ``up.json`` (``opsctl.up.record``): the next
``opsctl up`` and ``opsctl status`` read it. ``stop()`` ends all restarts before ``opsctl up``
stops its children: no restart begins after it, and one in progress is abandoned (each
``restart`` gets the supervisor's stop event as its ``Abort``: PostgreSQL's wait to be ready, up
to 120 s, gives up on it); what it started is stopped by ``opsctl up`` with everything else. The
lock guards the supervisor's state, never a restart: ``up.json`` and ``stop()`` never wait for one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from core import metrics
from core.procs import created_at
from core.supervision import RestartPolicy, Run, exit_reason, next_restart, one_line
from core.threads import Abort
from opsctl.up.record import write_record

log = logging.getLogger("opsctl.up")


class Server(Protocol):
    """What the supervisor needs of a child: ``EmbeddedPostgres``, ``EmbeddedRedis``, ``DaemonProcess`` …"""

    @property
    def proc(self) -> subprocess.Popen[bytes] | None: ...

    def exited(self) -> bool: ...

    def kill(self) -> None: ...


@dataclass
class Child:
    name: str
    server: Server
    restart: Callable[[Abort], object]  # starts it again, the way it was first started; gives up when set


@dataclass
class _Health:
    started: float  # monotonic, the current life
    runs: list[Run] = field(default_factory=list)  # past lives, the last 20
    restarts: int = 0
    next_at: float | None = None  # monotonic: down, restart then
    restarting: bool = False  # a restart is in progress (outside the lock)
    last_exit: str | None = None
    last_exit_at: float | None = None  # wall clock


def _iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


class Supervisor:
    def __init__(self, data_dir: Path, policy: RestartPolicy | None = None, interval: float = 0.5) -> None:
        self.data_dir = data_dir
        self.policy = policy or RestartPolicy()
        self.interval = interval
        self.children: dict[str, Child] = {}
        self.health: dict[str, _Health] = {}
        self.pool: Any = None  # core.workerpool.WorkerPool
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._me = {"pid": os.getpid(), "created": created_at(os.getpid()), "started_at": _iso(time.time())}
        self._created: dict[int, float | None] = {}
        self._written: dict[str, Any] | None = None

    # -- what it watches ---------------------------------------------------------------------------
    def add(self, child: Child) -> None:
        """Watch a child that has just started (and record it at once)."""
        with self._lock:
            self.children[child.name] = child
            self.health[child.name] = _Health(time.monotonic())
            metrics.CHILD_UP.labels(child.name).set(1)
            metrics.CHILD_RESTARTS.labels(child.name).inc(0)
            self.write()

    def watch_pool(self, pool: Any) -> None:
        with self._lock:
            self.pool = pool
            metrics.CHILD_RESTARTS.labels("worker").inc(0)
            self.write()

    # -- the loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="up-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """No restart from now on: one in progress is abandoned; wait (up to ``timeout``) for the loop to end."""
        self._stop.set()  # first, and without the lock: a restart in progress sees it at once
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the supervisor is still in a restart after %.0f s; stopping the children anyway", timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.cycle()
            except Exception:  # the supervisor must outlive one bad cycle
                log.exception("supervising the children failed")

    def cycle(self) -> None:
        """Note the children that died; restart those whose time has come (the lock is not held meanwhile)."""
        due = []
        with self._lock:
            for name, child in self.children.items():
                health = self.health[name]
                if health.next_at is None:
                    if not child.server.exited():
                        continue
                    self._died(child, health)
                if health.next_at is not None and time.monotonic() >= health.next_at:
                    due.append((child, health))
            self.write()
        for child, health in due:
            if self._stop.is_set():
                return
            self._restart(child, health)

    def _died(self, child: Child, health: _Health) -> None:
        now = time.monotonic()
        proc = child.server.proc
        what = f"pid {proc.pid} {exit_reason(proc.returncode)}" if proc is not None else "stopped"
        self._down(child, health, f"{what} after {now - health.started:.1f} s", now)

    def _down(self, child: Child, health: _Health, why: str, now: float) -> None:
        health.runs = [*health.runs[-19:], Run(health.started, now)]
        decision = next_restart(health.runs, now, self.policy)
        health.next_at = decision.at
        health.last_exit, health.last_exit_at = why, time.time()
        metrics.CHILD_UP.labels(child.name).set(0)
        log.warning("%s: %s; %s", child.name, why, decision.reason)

    def _restart(self, child: Child, health: _Health) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            health.restarting = True
            health.started = time.monotonic()
            self.write()
        try:
            child.restart(self._stop)
        except Exception as exc:
            why = one_line(str(exc)) or type(exc).__name__
            if self._stop.is_set():  # abandoned: opsctl up is stopping, and stops what it started
                health.restarting = False
                log.info("%s: restart abandoned: %s", child.name, why)
                return
            proc = child.server.proc
            if proc is not None and proc.poll() is None:  # started but never became ready
                child.server.kill()
            with self._lock:
                health.restarting = False
                self._down(child, health, f"failed to start: {why}", time.monotonic())
                self.write()
            return
        with self._lock:
            health.restarting = False
            health.next_at = None
            health.restarts += 1
            metrics.CHILD_RESTARTS.labels(child.name).inc()
            metrics.CHILD_UP.labels(child.name).set(1)
            pid = child.server.proc.pid if child.server.proc is not None else "?"
            log.warning("%s: restarted (pid %s), restart %d", child.name, pid, health.restarts)
            self.write()

    # -- the record ----------------------------------------------------------------------------------
    def _created_at(self, pid: int) -> float | None:
        if pid not in self._created:
            self._created[pid] = created_at(pid)
        return self._created[pid]

    def _processes(self, pids: list[int]) -> list[dict[str, Any]]:
        return [{"pid": pid, "created": created} for pid in pids if (created := self._created_at(pid)) is not None]

    def record(self, stopped: bool = False) -> dict[str, Any]:
        """up.json's content: this process and each child's processes and health."""
        children: list[dict[str, Any]] = []
        now, wall = time.monotonic(), time.time()
        for name, child in self.children.items():
            health = self.health[name]
            proc = child.server.proc
            down = health.next_at is not None
            pids = [proc.pid] if proc is not None and proc.returncode is None and not down else []
            waiting = down and not health.restarting and health.next_at is not None
            children.append({
                "name": name, "processes": self._processes(pids),
                "state": "stopped" if stopped else "restarting" if health.restarting else "down" if down else "running",
                "restarts": health.restarts, "last_exit": health.last_exit, "last_exit_at": _iso(health.last_exit_at),
                "next_restart_at": _iso(wall + max(0.0, health.next_at - now)) if waiting and health.next_at else None,
            })
        if self.pool is not None:
            pool = self.pool.status()
            running, desired = pool["running"], pool["replicas"]
            state = "running" if running >= desired else "degraded" if running else "down"
            children.append({
                "name": "worker", "processes": [] if stopped else self._processes(self.pool.pids()),
                "state": "stopped" if stopped else state,
                "desired": desired, "running": running, "restarts": pool["restarts"],
                "last_exit": pool["last_exit"], "last_exit_at": _iso(pool["last_exit_at"]), "next_restart_at": None,
            })
        live = {p["pid"] for c in children for p in c["processes"]}
        self._created = {pid: created for pid, created in self._created.items() if pid in live}
        return {**self._me, "stopped_at": _iso(wall) if stopped else None, "children": children}

    def write(self, stopped: bool = False) -> None:
        """Rewrite up.json if anything in it changed."""
        with self._lock:
            record = self.record(stopped)
            comparable = {**record, "children": [{k: v for k, v in c.items() if k != "next_restart_at"}
                                                 for c in record["children"]]}
            if comparable != self._written:
                write_record(self.data_dir, record)
                self._written = comparable
