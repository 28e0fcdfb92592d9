"""A control loop's skeleton (patroni's ``AbstractPatroniDaemon``): flags, guarded cycles, one sentence each.

Signal handlers only set flags (nothing else is safe in a handler). Every ``cycle_seconds`` the
loop runs one guarded cycle: a pending reload first (SIGHUP, or what :meth:`reload_trigger`
reports), then :meth:`cycle`. Each sits inside its own error handling, so no exception — a
reload's included — ends the loop or skips the cycle's work: it is logged with its traceback and
the cycle's sentence says what failed. A cycle longer than ``cycle_seconds`` is warned about and
counted. Between cycles the loop sleeps in short steps, so a flag wakes it at once.

A cycle's sentence is logged at INFO when it says something the previous cycle's did not, and at
DEBUG when it repeats it (compared without their numbers: "next autoscale in 12 s" counts down every
cycle): a leader that stays leader writes one line, not one every ``cycle_seconds``.

Subclasses implement :meth:`cycle` and :meth:`reload` (each returns one sentence) and may
override :meth:`start`, :meth:`shutdown` and :meth:`reload_trigger`. The wall clock comes in as
``clock``; durations are measured on ``monotonic``, and ``sleep`` waits: tests pass their own.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from core.clock import Clock, utcnow
from core.db import first_line

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
FLAG_POLL_SECONDS = 0.2  # how often a sleeping loop looks at the signal flags


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def gist(sentence: str) -> str:
    """What a cycle's sentence says, without its numbers (counts, countdowns): what is compared (pure)."""
    return _NUMBER.sub("#", sentence)


class Incrementable(Protocol):
    def inc(self) -> None: ...


class ControlLoop:
    """Run ``reload`` (when asked) and ``cycle`` every ``cycle_seconds`` until SIGTERM/SIGINT."""

    def __init__(self, cycle_seconds: float, *, clock: Clock = utcnow, log: logging.Logger | None = None,
                 overruns: Incrementable | None = None, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cycle_seconds = cycle_seconds
        self.clock = clock
        self.log = log or logging.getLogger(type(self).__module__)
        self.overruns = overruns
        self.monotonic = monotonic
        self.sleep = sleep
        self.stop_requested = False
        self.reload_requested = False
        self.cycle_no = 0

    # -- what a loop does: subclasses ----------------------------------------------------------
    def cycle(self, now: datetime) -> str:
        """One cycle's work; returns the sentence saying what it decided."""
        raise NotImplementedError

    def reload(self, why: str) -> str:
        """Reload the configuration; returns a sentence. Exceptions are survived (and logged)."""
        raise NotImplementedError

    def reload_trigger(self) -> str | None:
        """Why to reload now (``SIGHUP``), or None; a subclass adds its own reasons (a file changed)."""
        return "SIGHUP" if self.reload_requested else None

    def start(self) -> None:
        """Before the first cycle (an exception here ends ``run`` before any cycle)."""

    def shutdown(self) -> Any:
        """After the last cycle, also when ``start`` failed; ``run`` returns its result."""
        return None

    # -- signals: flags only -------------------------------------------------------------------
    def on_signal(self, signum: int, _frame: Any) -> None:
        # nothing but assignments: even Event.set() takes a lock the interrupted main thread may hold
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True

    # -- the skeleton --------------------------------------------------------------------------
    def _guarded(self, what: str, step: Callable[[], str | None]) -> str | None:
        try:
            return step()
        except Exception as exc:  # a cycle's surprise must not end the loop
            self.log.exception("cycle %d: %s failed", self.cycle_no, what)
            return f"{what} failed: {first_line(exc)}"

    def _reload_if_asked(self) -> str | None:
        why = self.reload_trigger()
        if why is None:
            return None
        self.reload_requested = False
        return self.reload(why)

    def run_cycle(self) -> str:
        """One guarded cycle: the reload if one is due, then the cycle; never raises."""
        self.cycle_no += 1
        reloaded = self._guarded("reload", self._reload_if_asked)
        sentence = self._guarded("cycle", lambda: self.cycle(self.clock()))
        return "; ".join(s for s in (reloaded, sentence) if s)

    def wait(self, seconds: float) -> None:
        """Sleep until the next cycle, or until a signal has set a flag."""
        deadline = self.monotonic() + seconds
        while not (self.stop_requested or self.reload_requested):
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return
            self.sleep(min(FLAG_POLL_SECONDS, remaining))

    def loop(self) -> None:
        said: str | None = None  # the gist of the last sentence logged
        while not self.stop_requested:
            began = self.monotonic()
            sentence = self.run_cycle()
            new = gist(sentence)
            self.log.log(logging.DEBUG if new == said else logging.INFO, "cycle %d: %s", self.cycle_no, sentence)
            said = new
            elapsed = self.monotonic() - began
            if elapsed > self.cycle_seconds:
                if self.overruns is not None:
                    self.overruns.inc()
                self.log.warning("cycle %d took %.1f s, longer than the %.1f s cycle", self.cycle_no, elapsed,
                                 self.cycle_seconds)
            self.wait(self.cycle_seconds - elapsed)

    def run(self) -> Any:
        """Install the signal flags, start, loop until SIGTERM/SIGINT, shut down; restore the handlers."""
        handlers = {sig: signal.signal(sig, self.on_signal) for sig in SIGNALS}
        try:
            self.start()
            self.loop()
        finally:
            result = self.shutdown()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return result
