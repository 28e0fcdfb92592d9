"""The companies' rate limit, shared by every API process through Redis; per process when Redis is down.

One key per company (``opsctl:rl:<id>``) holds its GCRA theoretical arrival time; a Lua script
reads the clock of Redis (``TIME``: one clock for every API process), charges one request and
stores the new time in one atomic step, the same steps as :func:`core.tiers.gcra`. The key expires
when the bucket is full again, so an idle company costs nothing.

A search by a key this process verified sends its charge before its key lookup, with the cache
GET (``charge_ahead``, ``core.redisbatch``): one sequential round trip fewer. Such a charge is
kept only when the lookup proves it is owed (a valid key, at the tier charged); otherwise it is
undone (``REFUND_LUA``: the bucket's time moves back one interval, exactly what the charge added)
and the request charged as before, so a key revoked since or a tier changed since costs the company
what it did without the read-ahead. (Between the two, for a round trip, the company's bucket holds
one token less: at most once per process and revocation, for the key is forgotten at its refusal.
And if the bucket refilled past that charge within the round trip and another request was charged
meanwhile, the refund leaves it one token fuller than it would be: possible only when the interval
is shorter than the round trip, i.e. rates of hundreds per second and more.)

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
    from core.redisbatch import Batch

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
# undo one charge of ``charge_ahead``: its interval off the bucket's time (a time in the past is a full bucket)
REFUND_LUA = """
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local new_tat = tat - 1 / tonumber(ARGV[1])
if new_tat <= now then redis.call('DEL', KEYS[1]) return 1 end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return 1
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
        self._refund: Any = None
        self._warned_at = float("-inf")
        self._lock = threading.Lock()
        metrics.RATE_LIMIT_SHARED.set(1 if cache.client is not None else 0)  # until a charge says otherwise

    def script(self) -> Any:
        if self._script is None:  # no I/O: its SHA1 computed here, the script loaded at its first NOSCRIPT
            self._script = self.cache.client.register_script(GCRA_LUA)
        return self._script

    def charge_ahead(self, batch: Batch, company_id: int, tier: Tier) -> AheadCharge | None:
        """Add the charge of one request to ``batch`` (sent by the caller); None when Redis is not
        available (then ``charge`` as usual)."""
        if not self.cache.available:
            return None
        index = batch.add("EVALSHA", self.script().sha, 1, company_key(company_id), repr(tier.rate_per_second),
                          tier.burst)
        return AheadCharge(self, batch, index, company_id, tier)

    def refund(self, company_id: int, tier: Tier) -> None:
        """Undo one allowed charge of ``company_id`` at ``tier`` (its interval off the bucket's time)."""
        if not self.cache.available:
            return
        try:
            if self._refund is None:
                self._refund = self.cache.client.register_script(REFUND_LUA)
            self._refund(keys=[company_key(company_id)], args=[repr(tier.rate_per_second)])
        except Exception as exc:  # redis.RedisError, OSError
            self.cache._trip(exc)
            self._warn(exc)

    def charge(self, company_id: int, tier: Tier) -> Charge:
        if self.cache.available:
            try:
                charge = parse_reply(self.script()(keys=[company_key(company_id)],
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


class AheadCharge:
    """A charge sent before the request proved it is owed (``SharedLimiter.charge_ahead``): settled
    once, by ``taken`` (the request is owed it) or ``cancel`` (it is not: undone if it was allowed)."""

    def __init__(self, limiter: SharedLimiter, batch: Batch, index: int, company_id: int, tier: Tier) -> None:
        self.limiter, self.batch, self.index = limiter, batch, index
        self.company_id, self.tier = company_id, tier
        self.settled = False

    def _reply(self) -> Charge | None:
        """What Redis answered; None when it charged nothing (``NOSCRIPT``: a restarted Redis) or the
        connection failed (the breaker is open: the caller charges in this process, as ``charge``
        does when its script call fails)."""
        try:
            return parse_reply(self.batch.reply(self.index))
        except Exception:
            return None

    def taken(self, company_id: int, tier: Tier) -> Charge | None:
        """The charge, when it is the one owed (this company at this tier's rate and burst); else
        None, with the charge made ahead undone: charge the request as usual."""
        if self.settled:
            return None
        self.settled = True
        charge = self._reply()
        if charge is None:
            return None
        if company_id == self.company_id and (tier.rate_per_second, tier.burst) == \
                (self.tier.rate_per_second, self.tier.burst):
            metrics.RATE_LIMIT_SHARED.set(1)
            return charge
        if charge.allowed:
            self.limiter.refund(self.company_id, self.tier)
        return None

    def cancel(self) -> None:
        """The request is not owed it (a key revoked since, a failed lookup): undone if it was allowed."""
        if self.settled:
            return
        self.settled = True
        charge = self._reply()
        if charge is not None and charge.allowed:
            self.limiter.refund(self.company_id, self.tier)
