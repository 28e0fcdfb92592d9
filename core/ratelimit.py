"""Token buckets, one per key, bounded in number (pure arithmetic; the caller passes the clock).

The API keeps two limiters: one keyed by company, charged only for requests that proved who they
are (a valid key, a verified webhook signature), and one keyed by client address, charged for the
requests that did not. Neither can be grown without bound: a bucket idle long enough to be full
again is the same as no bucket and is dropped, and past ``max_keys`` the least recently used one
goes. ``address_bucket`` names the client address's bucket: an IPv6 client gets one per /64 (a
host usually holds a whole /64, so per address it would get 2**64 buckets).
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 10_000


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second with bursts of ``burst``, per key, in this process."""

    def __init__(self, rate: float, burst: int, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._refill_seconds = burst / rate  # an untouched bucket is full again after this long
        self._buckets: OrderedDict[Hashable, Bucket] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def take(self, key: Hashable, now: float) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is available."""
        with self._lock:
            self._drop_idle(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = Bucket(float(self.burst), now)
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def peek(self, key: Hashable, now: float) -> float:
        """What ``take`` would answer, without taking a token: 0 when one is available, else the wait."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.updated) * self.rate)
            return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def _drop_idle(self, now: float) -> None:
        """Forget the least recently used buckets that have refilled (amortized O(1) per take)."""
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if oldest.tokens + (now - oldest.updated) * self.rate < self.burst:
                return
            self._buckets.popitem(last=False)

    def keys(self) -> list[Hashable]:
        """The keys holding a bucket, least recently used first."""
        with self._lock:
            return list(self._buckets)

    def __len__(self) -> int:
        return len(self._buckets)


def address_bucket(host: str) -> str:
    """The bucket of a client address: an IPv4 address itself; an IPv6 one its /64 (an IPv4-mapped
    one its IPv4 address); anything else (a Unix socket's empty host) as it is."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
