"""``policies/cache.yaml``: the model (kind ``cache``).

Example::

    kind: cache
    ttlSeconds:
      searchResults: 300   # a cached answer also dies with the company's next completed ingest
      documentMetadata: 300
      apiKeys: 30          # revocation is immediate regardless (checked against the database)
    redis:
      maxmemory: 256mb
      maxmemoryPolicy: allkeys-lru
    hitRate:
      target: 0.5
      windowSeconds: 3600
    queryLog:
      maxEntries: 500      # per company and hour
      windowHours: 24
    warm:
      top: 50
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from opsctl.policy import PolicyModel

EVICTION_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
                     "volatile-random", "volatile-ttl")
_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|m|mb|g|gb)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def parse_size(text: str | int) -> int:
    """Redis memory notation to bytes: ``256mb`` → 268435456, ``1g`` → 10**9 (Redis's own units)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use bytes or a number with b, k, kb, m, mb, g, gb")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


class Ttls(PolicyModel):
    searchResults: int = Field(default=300, ge=0, le=7 * 86400, description="search results; 0 disables")
    documentMetadata: int = Field(default=300, ge=0, le=7 * 86400,
                                  description="GET /v1/documents/{id}; 0 disables")
    apiKeys: int = Field(default=30, ge=0, le=3600, description="API-key lookups; 0 disables")


class RedisLimits(PolicyModel):
    maxmemory: str | int = "256mb"
    maxmemoryPolicy: str = "allkeys-lru"

    @field_validator("maxmemory")
    @classmethod
    def _size(cls, v: str | int) -> str | int:
        if parse_size(v) < 1024 * 1024:
            raise ValueError("maxmemory must be at least 1mb (0, unlimited, is not a cache limit)")
        return v

    @field_validator("maxmemoryPolicy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in EVICTION_POLICIES:
            raise ValueError(f"must be one of {', '.join(EVICTION_POLICIES)} (a cache must evict: "
                             "noeviction makes writes fail when memory is full)")
        return v

    @property
    def maxmemory_bytes(self) -> int:
        return parse_size(self.maxmemory)


class HitRate(PolicyModel):
    target: float = Field(default=0.5, ge=0, le=1, description="search cache hits / lookups")
    windowSeconds: int = Field(default=3600, ge=60, le=7 * 86400, description="measured over this window")


class QueryLog(PolicyModel):
    maxEntries: int = Field(default=500, ge=10, le=100_000, description="distinct requests kept per company and hour")
    windowHours: int = Field(default=24, ge=1, le=168, description="warm reads this many hours of the log")


class Warm(PolicyModel):
    top: int = Field(default=50, ge=1, le=10_000, description="requests warmed per company")


class CachePolicy(PolicyModel):
    ttlSeconds: Ttls = Ttls()
    redis: RedisLimits = RedisLimits()
    hitRate: HitRate = HitRate()
    queryLog: QueryLog = QueryLog()
    warm: Warm = Warm()

    def published(self) -> dict[str, int]:
        """The values the running service reads live from Redis (``opsctl:cache:policy``)."""
        return {"ttl_search": self.ttlSeconds.searchResults, "ttl_document": self.ttlSeconds.documentMetadata,
                "ttl_auth": self.ttlSeconds.apiKeys,
                "querylog_max": self.queryLog.maxEntries, "querylog_hours": self.queryLog.windowHours}
