"""Waiting in tests: on a condition, never on a wall-clock margin.

``wait_for`` polls ``predicate`` until it returns something true and returns that value; past
``timeout`` seconds it fails the test, naming what it waited for (and the tail of ``log``, when
given: a child process's output usually says why it never got there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, log: Path | None = None,
             interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{tail}" if tail else ""))
        time.sleep(interval)
