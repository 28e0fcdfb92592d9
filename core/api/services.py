"""What the API's routes work with: one ``Services`` per process, handed to ``create_app``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.cache import LocalMap
from core.ratelimit import RateLimiter
from core.sharedlimit import SharedLimiter
from core.tierpolicy import tenants_policy
from core.usage.recorder import UsageRecorder

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from core.cache import Cache
    from core.config import Settings
    from core.embed import Embedder
    from core.replicas.reader import ReplicaSet


class WorkerPoolControl(Protocol):
    """The embedded scale target behind ``/admin/workers`` (``core.workerpool.WorkerPool``)."""

    def status(self) -> dict[str, Any]: ...
    def resize(self, replicas: int) -> dict[str, Any]: ...


@dataclass
class Services:
    settings: Settings
    pool: ConnectionPool
    cache: Cache
    embedder: Embedder
    workers: WorkerPoolControl | None = None
    replicas: ReplicaSet | None = None  # read replicas for searches (core.replicas.reader.make_replicas)

    def __post_init__(self) -> None:
        s = self.settings
        # per company at its tier's rate, shared through Redis; charged only once a request proved
        # which company it acts for
        self.tiers = tenants_policy(s)
        self.limiter = SharedLimiter(self.cache, s.rate_limit_max_buckets)
        # per client address, charged for requests that failed to authenticate
        self.strangers = RateLimiter(s.rate_limit_anonymous_per_second, s.rate_limit_anonymous_burst,
                                     s.rate_limit_max_buckets)
        # companies' webhook secrets, kept for auth_cache_ttl_seconds (they never change: no rotation)
        self.secrets = LocalMap()
        # what a webhook naming no existing company is checked against: it fails as any wrong signature does
        self.decoy_secret = "whsec_" + secrets.token_urlsafe(32)
        # companies' searches and cache results, added to usage_hourly every usage_flush_seconds
        self.usage = UsageRecorder(self.pool.connection, s.usage_flush_seconds).start()

    def close(self) -> None:
        """At stop, before the pool closes: the usage counted since the last flush goes to the database."""
        self.usage.close()
