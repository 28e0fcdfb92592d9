"""Pure decisions of the cache policy: no Redis, no database, no clock read here.

- :func:`plan_cache` — what ``cache apply`` changes: Redis ``CONFIG SET``s and published TTLs.
- :func:`hit_rate` / :func:`verdict` — the hit rate and how it compares with the target.
- :class:`SearchHitRate` / :func:`hit_rate_report` — the one search cache hit rate, as ``opsctl
  status``, ``opsctl cache status`` and the daemon's cache-policy job all show it;
  :func:`bad_policy_report` when the policy itself cannot be read.
- :func:`top_queries` — the most frequent requests across the hourly query-log buckets.
- :func:`querylog_hours` — which hourly buckets a window covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from core.humanize import format_bytes
from opsctl.cachepolicy.policy import CachePolicy
from opsctl.policy import format_duration

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

    def show(self, value: str | int | None) -> str:
        """A value of this setting as a person reads it: ``maxmemory`` in MiB/GiB (``unlimited``: 0)."""
        if value is None:
            return "unset"
        if self.name == "maxmemory" and isinstance(value, int):
            return memory_limit(value)
        return str(value)

    def describe(self) -> str:
        return f"{self.name} {self.show(self.current)} → {self.show(self.desired)}"


def memory_limit(maxmemory: int) -> str:
    """Redis's maxmemory as a person reads it (0 is Redis's "no limit")."""
    return "unlimited" if maxmemory == 0 else format_bytes(maxmemory)


def changes_text(changes: list[Change], side: Literal["current", "desired"]) -> str:
    """One side of ``changes`` in one phrase (a ``cache.apply`` event's from and to): ``maxmemory 256 MiB,
    maxmemory-policy allkeys-lru, ttl_search 300``; every changed setting, so the two sides always differ."""
    return ", ".join(f"{c.name} {c.show(getattr(c, side))}" for c in changes)


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


SEARCH_HIT_RATE = ("hits / lookups of the core's core_search_cache_requests_total{result} (hit, miss, error: "
                   "an error counts as a miss), summed over every API process; answers from an API process's "
                   "near cache are hits (Redis INFO never sees them)")


Source = Literal["prometheus", "api", "none"]
# what the hit, miss and error counts of a report are, by source (shown rounded to whole lookups)
COUNTS: dict[str, str] = {
    "prometheus": "estimates: Prometheus' increase() over the window, which extrapolates to the window's edges",
    "api": "exact: the API process's counters since it started",
}


@dataclass(frozen=True)
class SearchHitRate:
    """The search cache hit rate, defined once (:data:`SEARCH_HIT_RATE`), and where it was read.

    ``prometheus``: the counter's increase over ``window_seconds`` (the truth: every replica, a
    window); ``api``: the fallback without Prometheus, the counter's totals read from the API's own
    ``/metrics`` (one process, since it started); ``none``: nothing to read it from.
    """

    source: Source
    hits: float = 0.0
    misses: float = 0.0
    errors: float = 0.0
    window_seconds: int | None = None
    error: str | None = None  # why it could not be measured

    @property
    def lookups(self) -> float:
        return self.hits + self.misses + self.errors

    @property
    def rate(self) -> float | None:
        return None if self.error else hit_rate(self.hits, self.misses + self.errors)

    def over(self) -> str:
        if self.source == "prometheus" and self.window_seconds:
            return f"the last {format_duration(timedelta(seconds=self.window_seconds))} (Prometheus)"
        if self.source == "api":
            return "the API process's lifetime (its /metrics: no Prometheus)"
        return "nothing (no Prometheus, no API)"

    def describe(self) -> str:
        if self.error:
            return f"unknown: {self.error}"
        rate = self.rate
        if rate is None:
            return f"no lookups over {self.over()}"
        return f"{rate:.1%} of {self.lookups:,.0f} lookups over {self.over()}"


def hit_rate_report(measured: SearchHitRate, target: float | None,
                    policy_error: str | None = None) -> dict[str, Any]:
    """The hit rate as every command shows it: figures (whole lookups; ``counts`` says whether they
    are exact or Prometheus' estimates), source, window, definition, the target and the verdict,
    and ``text``, the one line that `status`, `cache status` and the job print.
    ``target`` is None when the cache policy could not be read (``policy_error`` says why)."""
    rate = measured.rate
    word = "unknown" if measured.error or target is None else verdict(rate, target)
    text = measured.describe()
    if target is not None:
        text += f"; target {target * 100:g}%" + (f": {word}" if rate is not None else "")
    return {
        "hit_rate": None if rate is None else round(rate, 4),
        "hits": round(measured.hits), "misses": round(measured.misses), "errors": round(measured.errors),
        "counts": None if measured.error else COUNTS.get(measured.source),
        "source": measured.source, "window_seconds": measured.window_seconds, "error": measured.error,
        "definition": SEARCH_HIT_RATE, "target": target, "verdict": word, "policy_error": policy_error,
        "text": text,
    }


def bad_policy_report(problem: str) -> dict[str, Any]:
    """The hit rate when the cache policy (its window and target) cannot be read: unknown, saying
    which file and why, so the screen that shows it still shows everything else."""
    return hit_rate_report(SearchHitRate("none", error=f"invalid policy: {problem}"), None, problem)


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
