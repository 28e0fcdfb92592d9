"""Pure decisions of the cache policy: no Redis, no database, no clock read here.

- :func:`plan_cache` — what ``cache apply`` changes: Redis ``CONFIG SET``s and published TTLs.
- :func:`hit_rate` / :func:`verdict` — the hit rate and how it compares with the target.
- :func:`top_queries` — the most frequent requests across the hourly query-log buckets.
- :func:`querylog_hours` — which hourly buckets a window covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opsctl.cachepolicy.policy import CachePolicy

CONFIG = "redis-config"
PUBLISH = "published"


@dataclass(frozen=True)
class RedisState:
    """What Redis holds now: its memory settings and the published policy hash."""

    maxmemory: int
    maxmemory_policy: str
    published: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    kind: str            # CONFIG (CONFIG SET name value) or PUBLISH (HSET opsctl:cache:policy name value)
    name: str
    current: str | int | None
    desired: str | int

    def describe(self) -> str:
        return f"{self.name} {'unset' if self.current is None else self.current} → {self.desired}"


def plan_cache(current: RedisState, policy: CachePolicy) -> list[Change]:
    """The changes that bring Redis to ``policy``; empty when it already matches."""
    changes: list[Change] = []
    want_bytes = policy.redis.maxmemory_bytes
    if current.maxmemory != want_bytes:
        changes.append(Change(CONFIG, "maxmemory", current.maxmemory, want_bytes))
    if current.maxmemory_policy != policy.redis.maxmemoryPolicy:
        changes.append(Change(CONFIG, "maxmemory-policy", current.maxmemory_policy, policy.redis.maxmemoryPolicy))
    for name, value in policy.published().items():
        if current.published.get(name) != value:
            changes.append(Change(PUBLISH, name, current.published.get(name), value))
    return changes


def hit_rate(hits: float, misses: float) -> float | None:
    """hits / (hits + misses); None without lookups."""
    total = hits + misses
    return None if total <= 0 else hits / total


def verdict(rate: float | None, target: float) -> str:
    if rate is None:
        return "no lookups"
    return "met" if rate >= target else "below target"


def querylog_hours(now: float, window_hours: int) -> list[int]:
    """The hourly bucket numbers (``unix seconds // 3600``) of the last ``window_hours``, newest first."""
    current = int(now // 3600)
    return [current - i for i in range(window_hours)]


def top_queries(buckets: Iterable[Mapping[str, float]], n: int) -> list[tuple[str, float]]:
    """The ``n`` requests counted most often across ``buckets`` (ties: the request text)."""
    totals: dict[str, float] = {}
    for bucket in buckets:
        for request, count in bucket.items():
            totals[request] = totals.get(request, 0.0) + count
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:n]


def summary(changes: list[Change], applied: bool) -> str:
    if not changes:
        return "cache policy already in effect"
    verb = "applied" if applied else "planned"
    return f"{len(changes)} change{'s' if len(changes) != 1 else ''} {verb} (" + \
        ", ".join(c.describe() for c in changes) + ")"
