"""Threads and signal handlers: which thread may install a handler, and a flag a handler may set.

A leaf module (the standard library only), so that anything that handles signals can use it
without loading the process machinery of ``core.procs``.

A Python signal handler runs in the main thread between two bytecodes of whatever it was doing,
so it must not take a lock that code may hold: ``threading.Event.set`` takes one (a handler
that interrupts ``Event.wait`` can deadlock), a write to ``sys.stderr`` can block on a pipe
nobody reads, ``Popen.wait`` takes the ``Popen``'s own lock. A handler sets a ``Flag``; the
code it interrupted looks at the flag and does the work.
"""

from __future__ import annotations

import threading
from typing import Protocol


def main_thread() -> bool:
    """Whether this is the main thread: the only one that may install signal handlers."""
    return threading.current_thread() is threading.main_thread()


class Abort(Protocol):
    """What a long wait looks at to give up early: a ``threading.Event`` or a ``Flag``."""

    def is_set(self) -> bool: ...


class Flag:
    """A flag that a signal handler may set: a plain attribute, no lock. Read it with ``is_set``."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set
