"""The Redis cache: a cache and nothing more.

Every call degrades to "miss" when Redis is slow or down: the error is counted
(``core_search_cache_requests_total{result="error"}``) and, for ``breaker_seconds`` after a
failure, Redis is not asked again, so an outage costs one short timeout, not one per request.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from core import metrics

log = logging.getLogger(__name__)

SEARCH_PREFIX = "opsctl:search:"


def search_key(company_id: int, data_version: int, digest: str) -> str:
    """Search results of one company at one data version: a newer ingest changes the key."""
    return f"{SEARCH_PREFIX}{company_id}:{data_version}:{digest}"


class Cache:
    def __init__(self, url: str | None, timeout: float = 0.25, breaker_seconds: float = 1.0) -> None:
        self.url = url
        self.breaker_seconds = breaker_seconds
        self._open_until = 0.0
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

    def get_json(self, key: str) -> tuple[Any, str]:
        """(value, result) where result is hit, miss or error."""
        if not self.available:
            metrics.SEARCH_CACHE.labels("error").inc()
            return None, "error"
        try:
            raw = self.client.get(key)
        except Exception as exc:
            self._trip(exc)
            metrics.SEARCH_CACHE.labels("error").inc()
            return None, "error"
        if raw is None:
            metrics.SEARCH_CACHE.labels("miss").inc()
            return None, "miss"
        metrics.SEARCH_CACHE.labels("hit").inc()
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

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` (SCAN, never KEYS); returns how many."""
        deleted = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=prefix + "*", count=1000):
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
