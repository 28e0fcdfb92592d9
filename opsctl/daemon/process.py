"""The daemon as a child of ``opsctl up``: started, restarted by ``opsctl up``'s supervisor if it
dies (``restart``), stopped with SIGTERM.

The child runs in its own session (Ctrl-C in the terminal is ``opsctl up``'s to handle), so its
process group holds the daemon and whatever its jobs started (pg_basebackup, a restore drill's
server …): stopping kills that group once the daemon is gone, so an abandoned job leaves nothing
behind. It gets SIGTERM if ``opsctl up`` dies (``core.procs.spawn``); what its jobs started is
then stopped by the next ``opsctl up`` (its session is recorded, ``core.supervision.plan_cleanup``).

The daemon is reaped only after its group was killed (``_reap``): as long as it is not reaped,
its PID, and so its group's id, can name no other process. Nothing here calls ``Popen.poll`` or
``Popen.send_signal`` (which polls first) on it: that would reap a daemon that just died, and
its group would never be killed. Signals go by ``os.kill``, deaths are seen by
``waitid(WNOWAIT)``.
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core.procs import output_file, spawn
from core.threads import Abort

log = logging.getLogger("opsctl.up")

KILL_MARGIN_SECONDS = 15.0  # after the daemon's own stop grace: time to record abandoned runs and exit


@dataclass
class DaemonProcess:
    """The daemon (and the template of ``opsctl up``'s other long-running opsctl children:
    ``opsctl.up.walpush.WalPushProcess`` changes the command, the log file and the name)."""

    log_name: ClassVar[str] = "daemon.log"
    label: ClassVar[str] = "the daemon"

    env: dict[str, str]
    metrics_port: int
    log_dir: Path | None = None
    stop_grace_seconds: float = 30.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        # no daemon starts after stop() or kill() began (the supervisor restarts it from its own thread)
        self._spawning = threading.RLock()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Spawn the daemon (a no-op once stop() or kill() was called)."""
        with self._spawning:
            if not self._stop.is_set():
                self._spawn()

    def exited(self) -> bool:
        """Whether the daemon was started and has died since; what its jobs left running is killed then."""
        if self.proc is None:
            return False
        if self.proc.returncode is None and self._dead_unreaped(0):
            self._reap()
        return self.proc.returncode is not None

    def restart(self, abort: Abort | None = None) -> None:
        """Start a new daemon in place of the dead one (a no-op once stop() was called)."""
        with self._spawning:
            if not self._stop.is_set():
                self._spawn()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "opsctl.cli", "daemon", "--metrics-port", str(self.metrics_port),
                "--metrics-host", "127.0.0.1", "--stop-grace-seconds", f"{self.stop_grace_seconds:g}"]

    def _spawn(self) -> None:
        env = {**os.environ, "OPSCTL_ACTOR": f"daemon@{socket.gethostname()}", **self.env}
        with output_file(self.log_dir, self.log_name) as out:
            self.proc = spawn(self.command(), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              start_new_session=True)
        log.info("started %s (pid %d, metrics on :%d)", self.label, self.proc.pid, self.metrics_port)

    def stop(self, abort: Abort | None = None) -> None:
        """SIGTERM (the running job gets the daemon's stop grace), then kill what is left: at the end of
        the grace, or as soon as ``abort`` is set."""
        with self._spawning:
            self._stop.set()
        if self.proc is None or self.proc.returncode is not None:
            return  # never started, or reaped: its group was killed then
        if not self._dead_unreaped(0):
            os.kill(self.proc.pid, signal.SIGTERM)  # unreaped: the PID is still the daemon's
            stopped = self._dead_unreaped(self.stop_grace_seconds + KILL_MARGIN_SECONDS, abort)
            if not stopped and not (abort is not None and abort.is_set()):
                log.warning("%s did not stop in time; killing it", self.label)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the daemon and every process its jobs started."""
        with self._spawning:
            self._stop.set()
        if self.proc is not None and self.proc.returncode is None:
            self._reap()

    def _dead_unreaped(self, timeout: float, abort: Abort | None = None) -> bool:
        """Wait up to ``timeout`` (or until ``abort`` is set) for the daemon to die, without reaping it:
        while it is a zombie its PID, and so its process group's id, cannot be given to another process."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # reaped already
                return True
            if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
                return False
            time.sleep(0.05)

    def _reap(self) -> None:
        """Kill the daemon's process group (the daemon and whatever its jobs started), then reap it."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: the group id is the daemon's pid
        self.proc.wait()
