"""Per-tenant token buckets (pure arithmetic; the caller passes the clock)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second with bursts of ``burst``, per key, in this process."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: int, now: float) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is available."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
