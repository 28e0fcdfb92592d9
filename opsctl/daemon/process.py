"""The daemon as a child of ``opsctl up``: started, restarted if it dies, stopped with SIGTERM.

The child runs in its own session (Ctrl-C in the terminal is ``opsctl up``'s to handle), so its
process group holds the daemon and whatever its jobs started (pg_basebackup, a restore drill's
server …): stopping kills that group once the daemon is gone, so an abandoned job leaves nothing
behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("opsctl.up")

KILL_MARGIN_SECONDS = 15.0  # after the daemon's own stop grace: time to record abandoned runs and exit


@dataclass
class DaemonProcess:
    env: dict[str, str]
    metrics_port: int
    log_dir: Path | None = None
    stop_grace_seconds: float = 30.0
    restart_delay_seconds: float = 5.0
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        # the watcher never starts a daemon after stop() began; re-entrant: up's force handler calls kill()
        self._spawning = threading.RLock()
        self._thread: threading.Thread | None = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Spawn the daemon and watch it (a no-op once stop() or kill() was called)."""
        with self._spawning:
            if self._stop.is_set():
                return
            self._spawn()
        self._thread = threading.Thread(target=self._watch, name="daemon-watch", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "OPSCTL_ACTOR": f"daemon@{socket.gethostname()}", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opsctl.cli", "daemon", "--metrics-port", str(self.metrics_port),
             "--metrics-host", "127.0.0.1", "--stop-grace-seconds", f"{self.stop_grace_seconds:g}"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        log.info("started the daemon (pid %d, metrics on :%d)", self.proc.pid, self.metrics_port)

    def _watch(self) -> None:
        while not self._stop.wait(self.restart_delay_seconds):
            with self._spawning:
                if self.proc is not None and self.proc.poll() is not None and not self._stop.is_set():
                    self.restarts += 1
                    log.warning("the daemon exited with %s; restarting it", self.proc.returncode)
                    self._kill_group()  # what its jobs left running
                    self._spawn()

    def stop(self) -> None:
        """SIGTERM (the running job gets the daemon's stop grace), then kill what is left."""
        with self._spawning:
            self._stop.set()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_grace_seconds + KILL_MARGIN_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("the daemon did not stop in time; killing it")
        self.kill()

    def kill(self) -> None:
        """SIGKILL the daemon and every process its jobs started."""
        with self._spawning:
            self._stop.set()
        if self.proc is not None:
            self._kill_group()
            self.proc.wait()

    def _kill_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: the group id is the daemon's pid
