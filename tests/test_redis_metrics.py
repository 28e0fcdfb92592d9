"""Redis's memory, its limit and its evictions, and the database server's connections, as the API
exports them for the alerts (RedisMemoryHigh, RedisEvicting, DatabaseConnectionsNearMax,
DatabasePoolWaits): read from the real Redis and PostgreSQL of the tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.redis_metrics import RedisCollector
from tests.conftest import RunningApi, free_port


def exposition(text: str) -> dict[str, float]:
    return {s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" if s.labels else ""):
            s.value for family in text_string_to_metric_families(text) for s in family.samples}


def samples(registry: CollectorRegistry) -> dict[str, float]:
    return exposition(generate_latest(registry).decode())


class Counting:
    """The real client, counting the INFO calls that reach Redis."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def info(self, section: str) -> Any:
        self.calls += 1
        return self.client.info(section)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    before = c.config_get("maxmemory*")
    try:
        yield c
    finally:
        c.config_set("maxmemory", before["maxmemory"])
        c.config_set("maxmemory-policy", before["maxmemory-policy"])
        c.flushall()
        c.close()


def test_used_memory_limit_and_evictions_come_from_the_real_redis(client: redis.Redis) -> None:
    registry = CollectorRegistry()
    collector = RedisCollector(lambda: client, min_interval=0)
    registry.register(collector)
    before = samples(registry)
    assert before["core_redis_up"] == 1
    assert before["core_redis_maxmemory_bytes"] == int(client.config_get("maxmemory")["maxmemory"]) > 0
    assert before["core_redis_used_memory_bytes"] > 0
    evicted_before = before["core_redis_evicted_keys_total"]

    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("maxmemory", str(used + 2 * 1024 * 1024))
    value = b"x" * 10_000
    for i in range(2000):  # 20 MB into a 2 MB headroom: Redis must evict
        client.set(f"opsctl:test:evict:{i}", value)
    after = samples(registry)
    assert after["core_redis_maxmemory_bytes"] == used + 2 * 1024 * 1024
    assert after["core_redis_evicted_keys_total"] > evicted_before
    assert after["core_redis_evicted_keys_total"] == client.info("stats")["evicted_keys"]
    assert after["core_redis_used_memory_bytes"] <= after["core_redis_maxmemory_bytes"] * 1.1


def test_redis_is_asked_at_most_once_per_interval_whatever_the_scrape_rate(client: redis.Redis) -> None:
    now = [100.0]
    counting = Counting(client)
    collector = RedisCollector(lambda: counting, min_interval=5, monotonic=lambda: now[0])
    for _ in range(10):
        list(collector.collect())
    assert counting.calls == 2  # INFO memory + INFO stats, once
    now[0] += 5
    list(collector.collect())
    assert counting.calls == 4


def test_redis_down_exports_up_zero_and_no_stale_numbers() -> None:
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.25, socket_connect_timeout=0.25)
    registry = CollectorRegistry()
    registry.register(RedisCollector(lambda: down, min_interval=0))
    assert samples(registry) == {"core_redis_up": 0}
    unconfigured = CollectorRegistry()
    unconfigured.register(RedisCollector(lambda: None, min_interval=0))
    assert samples(unconfigured) == {"core_redis_up": 0}


def test_the_api_exports_redis_pool_waits_and_server_connections(api: RunningApi) -> None:
    metrics = exposition(httpx.get(f"{api.url}/metrics", timeout=10).text)
    assert metrics["core_redis_up"] == 1 and metrics["core_redis_used_memory_bytes"] > 0
    assert "core_redis_maxmemory_bytes" in metrics and "core_redis_evicted_keys_total" in metrics
    assert metrics['core_db_pool_waiting{pool="core"}'] == 0
    with api.pool.connection() as conn:
        open_now = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                                ).fetchone()[0]
        limit = conn.execute("SELECT current_setting('max_connections')::int "
                             "- current_setting('superuser_reserved_connections')::int "
                             "- current_setting('reserved_connections')::int").fetchone()[0]
    assert metrics["core_db_server_max_connections"] == limit > 0
    assert 1 <= metrics["core_db_server_connections"] <= open_now + 5
