"""The local worker pool: the embedded scale target behind ``/admin/workers``.

A small reconciler (like a ReplicaSet): it keeps ``replicas`` worker processes running,
replaces any that die (with backoff when they keep dying: ``core.supervision.next_restart``;
no worker starts, not even for a resize, until the backoff is over), and scales down by SIGTERM
so a worker finishes its batch first. Each worker serves its own ``/metrics``; the pool keeps a
Prometheus file_sd target list current. Workers get SIGTERM when the pool's process dies
(``core.procs.spawn``), so a pool killed with ``kill -9`` leaves no worker behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import metrics
from core.procs import output_file, spawn, wait_exit
from core.supervision import RestartPolicy, Run, exit_reason, next_restart
from core.threads import Abort

log = logging.getLogger("core.workerpool")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    metrics_port: int
    started_at: float  # wall clock, for uptime
    started: float  # monotonic, for the restart backoff
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class WorkerPool:
    env: dict[str, str]
    replicas: int = 2
    log_dir: Path | None = None
    targets_file: Path | None = None
    stop_grace_seconds: float = 60.0
    interval: float = 0.5
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    workers: list[WorkerProcess] = field(default_factory=list)
    restarts: int = 0
    last_exit: str | None = None  # the last unexpected death, one sentence
    last_exit_at: float | None = None  # wall clock

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deaths: list[Run] = []  # unexpected deaths, monotonic clock, the last 20
        self._owed = 0  # deaths not replaced yet
        self._hold_until = 0.0  # no worker starts before this (monotonic): the backoff

    # -- control -------------------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="worker-pool", daemon=True)
        self._thread.start()

    def resize(self, replicas: int) -> dict[str, Any]:
        with self._lock:
            before = self.replicas
            self.replicas = replicas
            log.info("worker pool: %d -> %d replicas", before, replicas)
            self.reconcile()
            return self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            active = [w for w in self.workers if w.alive() and not w.stopping]
            return {
                "replicas": self.replicas,
                "running": len(active),
                "stopping": sum(1 for w in self.workers if w.alive() and w.stopping),
                "restarts": self.restarts,
                "last_exit": self.last_exit,
                "last_exit_at": self.last_exit_at,
                "workers": [{"pid": w.pid, "metrics_port": w.metrics_port,
                             "uptime_seconds": round(time.time() - w.started_at, 1)} for w in active],
            }

    def pids(self) -> list[int]:
        """Every live worker process, stopping ones included."""
        with self._lock:
            return [w.pid for w in self.workers if w.alive()]

    def stop(self, timeout: float | None = None, abort: Abort | None = None) -> None:
        """Stop every worker gracefully (SIGTERM, wait), killing those that outlive ``timeout``, or every
        one left once ``abort`` is set."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self.replicas = 0
            for w in self.workers:
                if w.alive():
                    w.stopping = True
                    w.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + (self.stop_grace_seconds if timeout is None else timeout)
            for w in self.workers:
                if not wait_exit(w.proc, max(0.0, deadline - time.monotonic()), abort):
                    if not (abort is not None and abort.is_set()):
                        log.warning("worker %d did not stop in time; killing it", w.pid)
                    w.proc.kill()
                    w.proc.wait()
            self.workers.clear()
            self._publish()

    def kill_all(self) -> None:
        """SIGKILL every worker (and reap it)."""
        self._stop.set()
        with self._lock:
            for w in self.workers:
                if w.alive():
                    w.proc.kill()
            for w in self.workers:
                w.proc.wait()
            self.workers.clear()

    # -- reconcile -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile()
            except Exception:  # the pool must outlive one bad cycle
                log.exception("worker pool reconcile failed")

    def reconcile(self) -> None:
        with self._lock:
            if self._stop.is_set() and self.replicas:
                return
            now = time.monotonic()
            for w in list(self.workers):
                if not w.alive():
                    self.workers.remove(w)
                    if not w.stopping:
                        self._died(w, now)
            active = [w for w in self.workers if not w.stopping]
            missing = self.replicas - len(active)
            owed = min(self._owed, max(0, missing))  # deaths beyond the replicas wanted now are not replaced
            if missing > 0 and now >= self._hold_until:
                for _ in range(missing):
                    self.workers.append(self._spawn())
                self.restarts += owed
                if owed:
                    metrics.CHILD_RESTARTS.labels("worker").inc(owed)
                owed = 0
            self._owed = owed
            for w in active[self.replicas:] if len(active) > self.replicas else []:
                w.stopping = True
                w.proc.send_signal(signal.SIGTERM)
            self._publish()

    def _died(self, w: WorkerProcess, now: float) -> None:
        self._deaths = [*self._deaths[-19:], Run(w.started, now)]
        decision = next_restart(self._deaths, now, self.restart_policy)
        self._hold_until = decision.at
        self._owed += 1
        self.last_exit = f"pid {w.pid} {exit_reason(w.proc.returncode)} after {now - w.started:.1f} s"
        self.last_exit_at = time.time()
        log.warning("worker: %s; %s", self.last_exit, decision.reason)

    def _spawn(self) -> WorkerProcess:
        port = free_port()
        with output_file(self.log_dir, "workers.log") as out:  # the child has its own copy
            proc = spawn(
                [sys.executable, "-m", "core.ingest.worker", "--metrics-port", str(port)],
                env={**os.environ, **self.env}, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )
        log.info("started worker %d (metrics on :%d)", proc.pid, port)
        return WorkerProcess(proc, port, time.time(), time.monotonic())

    def _publish(self) -> None:
        running = [w for w in self.workers if w.alive() and not w.stopping]
        metrics.WORKERS.labels("desired").set(self.replicas)
        metrics.WORKERS.labels("running").set(len(running))
        if self.targets_file is not None:
            targets = [{"targets": [f"127.0.0.1:{w.metrics_port}" for w in self.workers if w.alive()],
                        "labels": {"job": "core-worker"}}]
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(targets))
            os.replace(tmp, self.targets_file)
