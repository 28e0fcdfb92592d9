"""The signals that stop ``opsctl up``, from its first step to its last.

Installed before anything starts and kept until everything stopped, so no signal ever meets
its default action (which would end the process on the spot: children left to their
parent-death signal, ``up.json`` never marked stopped). SIGINT, SIGTERM and SIGHUP (the
terminal closed) ask for a stop: ``stop`` is set; once it is, a second SIGINT or SIGTERM asks to
force it: ``force`` is set (a second SIGHUP changes nothing). The handler only sets these flags
(``core.threads.Flag``); ``opsctl up`` looks at them between its steps and in every wait.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from core.threads import Flag, main_thread

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """A signal asked ``opsctl up`` to stop before it finished starting (the CLI says "interrupted", exit 130)."""


class StopSignals:
    def __init__(self) -> None:
        self.stop = Flag()
        self.force = Flag()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGINT, SIGTERM and SIGHUP (from the main thread only: elsewhere, nothing is installed)."""
        if main_thread() and not self._previous:
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        """The handler: flags only (it interrupts the main thread anywhere, locks and writes included)."""
        if self.stop.is_set() and signum != signal.SIGHUP:
            self.force.set()
        self.stop.set()

    def check(self) -> None:
        """Raise ``StopRequested`` if a signal asked to stop."""
        if self.stop.is_set():
            raise StopRequested()
