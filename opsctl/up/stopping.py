"""The stop of ``opsctl up``: its steps in order, each run once, by whichever caller reaches it first.

Two callers share one sequence. The API's shutdown runs the steps that must end while the API
still serves (the supervisor, so nothing restarts; the daemon, whose autoscale job calls the API's
``/admin/workers``); ``System.stop`` runs the rest once the API has stopped, or everything when the
API never served. A failing step is reported and the next one runs; once a second signal forces
the stop, each step's forced action (a kill) replaces its graceful one.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.supervision import exit_reason
from core.threads import Flag
from opsctl.up.terminal import say

log = logging.getLogger("opsctl.up")


@dataclass(frozen=True)
class Step:
    """One step of the stop: a child (``name``), or bookkeeping (``name`` None)."""

    name: str | None
    graceful: Any  # a callable, or a falsy value when there is nothing to stop
    forced: Any = None  # instead of ``graceful`` once a second signal forces the stop
    processes: Callable[[], list[subprocess.Popen[bytes]]] = lambda: []  # to check after it
    detail: str = ""  # said with "stopping <name>"
    stop_signal: int = signal.SIGTERM  # how it is asked to stop: a death by it is a clean stop (not started yet)

    def clean(self, returncode: int | None) -> bool:
        return returncode in (0, -self.stop_signal)


class StopSequence:
    """The steps of one stop; ``run`` goes on from where the last call left off (thread-safe)."""

    def __init__(self, steps: list[Step], force: Flag) -> None:
        self.steps = steps
        self.force = force
        self.forcing = False
        self.problems: list[str] = []
        self.stopped_any = False
        self._next = 0
        self._lock = threading.Lock()

    def run(self, through: str | None = None) -> None:
        """Run the steps not run yet, up to and including the one named ``through`` (None: all)."""
        with self._lock:
            end = len(self.steps) if through is None else next(
                i + 1 for i, step in enumerate(self.steps) if step.name == through)
            while self._next < end:
                step = self.steps[self._next]
                self._next += 1
                self._run(step)

    def summary(self) -> str | None:
        """The stop's last line, or None when nothing had started (the error that stopped the start says it all)."""
        return stop_summary(self.problems) if self.stopped_any else None

    def _run(self, step: Step) -> None:
        if self.force.is_set() and not self.forcing:
            self.forcing = True
            self.problems.insert(0, "forced by a second signal")
            announce("forcing: killing what is left (PostgreSQL: immediate shutdown)")
        action = (step.forced or step.graceful) if self.forcing else step.graceful
        if not action:
            return
        name = step.name or "opsctl up"
        if step.name and not self.forcing:
            announce(f"stopping {step.name}{step.detail}…")
        self.stopped_any = self.stopped_any or step.name is not None
        procs = step.processes()
        try:
            action()
        except Exception as exc:
            self.problems.append(f"stopping {name} failed ({type(exc).__name__}: {exc})")
            say(f"stopping {name} failed ({type(exc).__name__}: {exc}); going on")
            log.info("stopping %s failed", name, exc_info=True)
        self.problems += [f"{name}: pid {p.pid} {exit_reason(p.returncode)}" for p in procs
                          if not step.clean(p.returncode)]


def stop_summary(problems: list[str]) -> str:
    """The stop's last line (pure): all clean, or what was not."""
    if not problems:
        return "stopped: everything exited cleanly"
    return "stopped, not cleanly: " + "; ".join(problems)


def announce(text: str) -> None:
    """On the terminal if it is still there, and in logs/up.log in any case."""
    say(text)
    log.info("%s", text)
