"""The Redis cache: a cache and nothing more.

Every call degrades to "miss" when Redis is slow or down: the error is counted
(``core_search_cache_requests_total{result="error"}``) and, for ``breaker_seconds`` after a
failure, Redis is not asked again, so an outage costs one short timeout, not one per request.

Keys (every one carries a TTL, except the small published policy hash)::

    opsctl:search:<company>:<data version>:<request digest>   search results (JSON)
    opsctl:doc:<company>:<data version>:<external id digest>  one document's metadata (JSON)
    opsctl:auth:<sha256 of the API key, hex>                   API-key lookup: company and key version
    opsctl:querylog:<company>:<hour>                           sorted set: normalized request → count
    opsctl:cache:policy                                        hash: TTLs and query-log size, live

The running service re-reads ``opsctl:cache:policy`` at most every ``refresh_seconds`` (through
the same breaker), so ``opsctl cache apply`` changes TTLs without a restart. When the hash is
missing or Redis is down, the settings' defaults apply.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter

from core import metrics

log = logging.getLogger(__name__)

SEARCH_PREFIX = "opsctl:search:"
AUTH_PREFIX = "opsctl:auth:"
DOCUMENT_PREFIX = "opsctl:doc:"
QUERYLOG_PREFIX = "opsctl:querylog:"
POLICY_KEY = "opsctl:cache:policy"
# data type → key prefix (what `opsctl cache status` counts and `flush` deletes)
DATA_TYPES = {"search": SEARCH_PREFIX, "document": DOCUMENT_PREFIX, "auth": AUTH_PREFIX,
              "querylog": QUERYLOG_PREFIX}
# fields of the published policy hash, all integers
POLICY_FIELDS = ("ttl_search", "ttl_document", "ttl_auth", "querylog_max", "querylog_hours")
QUERYLOG_DEFAULTS = {"querylog_max": 500, "querylog_hours": 24}
MAX_LOGGED_REQUEST = 2048


# Space-Saving (Metwally et al.): a bounded top-k counter. A request already counted, or room left:
# +1. Otherwise the least counted request makes way and the newcomer inherits its count + 1, so
# any request seen more often than total/size is guaranteed to stay; counts err upward by at most
# the evicted count. One round trip, atomic.
COUNT_QUERY_LUA = """
local key, member, size = KEYS[1], ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', key, member) or redis.call('ZCARD', key) < size then
    redis.call('ZINCRBY', key, 1, member)
else
    local low = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    redis.call('ZREM', key, low[1])
    redis.call('ZADD', key, tonumber(low[2]) + 1, member)
end
local excess = redis.call('ZCARD', key) - size
if excess > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
end
redis.call('EXPIRE', key, ARGV[3])
return 1
"""


def search_key(company_id: int, data_version: int, digest: str) -> str:
    """Search results of one company at one data version: a newer ingest changes the key."""
    return f"{SEARCH_PREFIX}{company_id}:{data_version}:{digest}"


def auth_key(key_hash: bytes) -> str:
    return AUTH_PREFIX + key_hash.hex()


def querylog_key(company_id: int, hour: int) -> str:
    return f"{QUERYLOG_PREFIX}{company_id}:{hour}"


def hour_of(now: float) -> int:
    return int(now // 3600)


class Cache:
    def __init__(self, url: str | None, timeout: float = 0.25, breaker_seconds: float = 1.0,
                 refresh_seconds: float = 5.0) -> None:
        self.url = url
        self.breaker_seconds = breaker_seconds
        self.refresh_seconds = refresh_seconds
        self._open_until = 0.0
        self._policy: dict[str, int] = {}
        self._policy_read_at = float("-inf")
        self._count_query: Any = None
        self.client: Any = None
        if url:
            import redis

            self.client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
            )

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._open_until

    def _trip(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + self.breaker_seconds
        log.warning("redis unavailable (%s); caching is off for %.1f s", type(exc).__name__, self.breaker_seconds)

    def get_json(self, key: str, counter: Counter = metrics.SEARCH_CACHE) -> tuple[Any, str]:
        """(value, result) where result is hit, miss or error; counted in ``counter``."""
        if not self.available:
            counter.labels("error").inc()
            return None, "error"
        try:
            raw = self.client.get(key)
        except Exception as exc:
            self._trip(exc)
            counter.labels("error").inc()
            return None, "error"
        if raw is None:
            counter.labels("miss").inc()
            return None, "miss"
        counter.labels("hit").inc()
        return json.loads(raw), "hit"

    def set_json(self, key: str, value: Any, ttl: int) -> bool:
        if not self.available or ttl <= 0:
            return False
        try:
            self.client.set(key, json.dumps(value, separators=(",", ":")), ex=ttl)
        except Exception as exc:
            self._trip(exc)
            return False
        return True

    # -- the live policy -------------------------------------------------------------------------
    def setting(self, name: str, default: int) -> int:
        """A published policy value (``ttl_search`` …), re-read at most every ``refresh_seconds``."""
        now = time.monotonic()
        if now - self._policy_read_at >= self.refresh_seconds:
            self._policy_read_at = now
            if self.available:
                try:
                    self._policy = parse_policy_hash(self.client.hgetall(POLICY_KEY))
                except Exception as exc:
                    self._trip(exc)
        return self._policy.get(name, default)

    # -- the query log ---------------------------------------------------------------------------
    def log_query(self, company_id: int, request_json: str, now: float) -> bool:
        """Count one normalized request in the company's query log of this hour (bounded)."""
        if not self.available or len(request_json) > MAX_LOGGED_REQUEST:
            return False
        size = self.setting("querylog_max", QUERYLOG_DEFAULTS["querylog_max"])
        hours = self.setting("querylog_hours", QUERYLOG_DEFAULTS["querylog_hours"])
        key = querylog_key(company_id, hour_of(now))
        try:
            if self._count_query is None:
                self._count_query = self.client.register_script(COUNT_QUERY_LUA)
            self._count_query(keys=[key], args=[request_json, max(size, 1), (hours + 1) * 3600])
        except Exception as exc:
            self._trip(exc)
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` (SCAN, never KEYS); returns how many."""
        return self.delete_keys(self.client.scan_iter(match=prefix + "*", count=1000))

    def delete_keys(self, keys: Iterable[bytes | str]) -> int:
        deleted = 0
        batch: list[bytes | str] = []
        for key in keys:
            batch.append(key)
            if len(batch) >= 1000:
                deleted += self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += self.client.unlink(*batch)
        return deleted

    def ping(self) -> bool:
        try:
            return bool(self.client is not None and self.client.ping())
        except Exception:
            return False

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def parse_policy_hash(raw: dict[Any, Any]) -> dict[str, int]:
    """The published policy hash as integers; unknown or malformed fields are ignored (pure)."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name not in POLICY_FIELDS:
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if number >= 0:
            out[name] = number
    return out
