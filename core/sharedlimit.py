"""The companies' rate limit, shared by every API process through Redis; per process when Redis is down.

One key per company (``opsctl:rl:<id>``) holds its GCRA theoretical arrival time; a Lua script
reads the clock of Redis (``TIME``: one clock for every API process), charges one request and
stores the new time in one atomic step, the same steps as :func:`core.tiers.gcra`. The key expires
when the bucket is full again, so an idle company costs nothing.

When Redis is unreachable (or the cache's breaker is open after a failure), the request is charged
to this process's own buckets instead (:class:`LocalBuckets`, the same arithmetic): the limit then
holds per process, as it did before Redis shared it. ``core_rate_limit_shared`` says which
(1 shared, 0 per process), ``core_rate_limit_local_total`` counts the requests charged locally,
and a warning is logged at most once a minute while it lasts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from core import metrics
from core.ratelimit import DEFAULT_MAX_KEYS
from core.tiers import Charge, Tier, gcra

if TYPE_CHECKING:
    from core.cache import Cache

log = logging.getLogger("core.ratelimit")
KEY_PREFIX = "opsctl:rl:"
WARN_EVERY_SECONDS = 60.0

GCRA_LUA = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval = 1 / rate
local capacity = burst * interval
local base = now
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat and tat > now then base = tat end
local new_tat = base + interval
if new_tat - now > capacity + 1e-9 then
    return {0, 0, string.format('%.6f', base - now), string.format('%.6f', new_tat - now - capacity)}
end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, math.floor((capacity - (new_tat - now)) / interval + 1e-9), string.format('%.6f', new_tat - now), '0'}
"""


def company_key(company_id: int) -> str:
    return f"{KEY_PREFIX}{company_id}"


def parse_reply(reply: list[Any]) -> Charge:
    """The script's answer ``[allowed, remaining, reset, retry_after]`` as a Charge (its ``tat``
    is not known here: Redis keeps it)."""
    allowed, remaining, reset, wait = reply
    return Charge(bool(int(allowed)), int(remaining), float(reset), float(wait), float("nan"))


class LocalBuckets:
    """This process's GCRA times per key, bounded: a key whose bucket is full again is dropped, and
    past ``max_keys`` the least recently used one goes."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._tats: OrderedDict[int, float] = OrderedDict()
        self._lock = threading.Lock()

    def charge(self, key: int, tier: Tier, now: float) -> Charge:
        with self._lock:
            while self._tats and next(iter(self._tats.values())) <= now:
                self._tats.popitem(last=False)
            charge = gcra(self._tats.get(key), now, tier.rate_per_second, tier.burst)
            self._tats[key] = charge.tat
            self._tats.move_to_end(key)
            if len(self._tats) > self.max_keys:
                self._tats.popitem(last=False)
            return charge

    def __len__(self) -> int:
        return len(self._tats)


class SharedLimiter:
    """Charge a company one request at its tier's rate: in Redis, else in this process."""

    def __init__(self, cache: Cache, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.cache = cache
        self.local = LocalBuckets(max_keys)
        self._script: Any = None
        self._warned_at = float("-inf")
        self._lock = threading.Lock()
        metrics.RATE_LIMIT_SHARED.set(1 if cache.client is not None else 0)  # until a charge says otherwise

    def charge(self, company_id: int, tier: Tier) -> Charge:
        if self.cache.available:
            try:
                if self._script is None:
                    self._script = self.cache.client.register_script(GCRA_LUA)
                charge = parse_reply(self._script(keys=[company_key(company_id)],
                                                  args=[repr(tier.rate_per_second), tier.burst]))
                metrics.RATE_LIMIT_SHARED.set(1)
                return charge
            except Exception as exc:  # redis.RedisError, OSError: any failure means per process
                self.cache._trip(exc)
                self._warn(exc)
        elif self.cache.client is not None:
            self._warn(None)
        metrics.RATE_LIMIT_SHARED.set(0)
        metrics.RATE_LIMIT_LOCAL.inc()
        return self.local.charge(company_id, tier, time.monotonic())

    def _warn(self, exc: BaseException | None) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._warned_at < WARN_EVERY_SECONDS:
                return
            self._warned_at = now
        why = type(exc).__name__ if exc is not None else "breaker open"
        log.warning("redis unavailable (%s): rate limits hold per API process until it is back", why)
