"""The daemon as a child of ``opsctl up``: started, restarted if it dies, stopped with SIGTERM."""

from __future__ import annotations

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

log = logging.getLogger("opsctl.up")


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
        self._thread: threading.Thread | None = None

    def start(self) -> None:
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
             "--metrics-host", "127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        log.info("started the daemon (pid %d, metrics on :%d)", self.proc.pid, self.metrics_port)

    def _watch(self) -> None:
        while not self._stop.wait(self.restart_delay_seconds):
            if self.proc is not None and self.proc.poll() is not None and not self._stop.is_set():
                self.restarts += 1
                log.warning("the daemon exited with %s; restarting it", self.proc.returncode)
                self._spawn()

    def stop(self) -> None:
        """SIGTERM (the running job may finish), then kill after the grace period."""
        self._stop.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("the daemon did not stop in time; killing it")
            self.kill()

    def kill(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
