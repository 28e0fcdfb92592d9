"""A value read at most once per interval: what a ``/metrics`` collector serves between two reads,
so the scrape rate never sets the cost of asking Redis, the database or the filesystem."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class EveryInterval(Generic[T]):
    """``read()``'s last value, read again once ``min_interval`` seconds have passed (clock injected)."""

    def __init__(self, read: Callable[[], T], min_interval: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.min_interval = min_interval
        self.monotonic = monotonic
        self._last: tuple[float, T] | None = None

    def get(self) -> T:
        now = self.monotonic()
        if self._last is None or now - self._last[0] >= self.min_interval:
            self._last = (now, self.read())
        return self._last[1]
