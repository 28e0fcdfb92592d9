"""Redis's memory and evictions, exported by the API's ``/metrics`` (alerts ``RedisMemoryHigh``,
``RedisEvicting``).

    core_redis_used_memory_bytes       INFO memory: used_memory
    core_redis_maxmemory_bytes         INFO memory: maxmemory (0: no limit; the alert then stays quiet)
    core_redis_evicted_keys_total      INFO stats: evicted_keys (since the server started)
    core_redis_up                      1 when the last read answered, 0 when Redis did not

Bounded cost: one ``INFO memory`` and one ``INFO stats`` round trip at most every ``min_interval``
seconds per API process, whatever the scrape rate, with the cache's short socket timeout; while
Redis is down only ``core_redis_up 0`` is exported (no stale numbers). Every API replica reads the
same server, so use ``max()`` across replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.throttle import EveryInterval

NAMES = ("core_redis_used_memory_bytes", "core_redis_maxmemory_bytes", "core_redis_evicted_keys_total",
         "core_redis_up")


def redis_families(info: Mapping[str, Any] | None) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """The families from the merged ``INFO memory`` and ``INFO stats`` answers (pure); None: Redis down."""
    up = GaugeMetricFamily("core_redis_up", "1 when Redis answered the last INFO, 0 when it did not",
                           value=0 if info is None else 1)
    if info is None:
        return [up]
    return [
        up,
        GaugeMetricFamily("core_redis_used_memory_bytes", "Bytes Redis has allocated (INFO memory used_memory)",
                          value=float(info.get("used_memory", 0))),
        GaugeMetricFamily("core_redis_maxmemory_bytes", "Redis's maxmemory limit in bytes (0: no limit)",
                          value=float(info.get("maxmemory", 0))),
        # the exposition adds _total; the family's name is without it
        CounterMetricFamily("core_redis_evicted_keys", "Keys Redis evicted to stay under maxmemory since it started",
                            value=float(info.get("evicted_keys", 0))),
    ]


class RedisCollector(Collector):
    """Reads ``INFO`` when scraped, at most every ``min_interval`` seconds (then serves the last read)."""

    def __init__(self, client: Callable[[], Any], min_interval: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client  # the cache's client, or None when no Redis is configured
        self._info = EveryInterval(self._read, min_interval, monotonic)

    def _read(self) -> dict[str, Any] | None:
        client = self.client()
        if client is None:
            return None
        try:
            return {**client.info("memory"), **client.info("stats")}
        except Exception:  # a scrape must never fail: Redis down shows as core_redis_up 0
            return None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # registering must not talk to Redis
        for name in NAMES:
            yield GaugeMetricFamily(name, name)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from redis_families(self._info.get())
