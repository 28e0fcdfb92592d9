"""The cache policy against a real Redis, a real PostgreSQL and the real API in a thread."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from core.cache import POLICY_KEY, Cache, auth_key, hour_of, querylog_key, search_key
from core.config import Settings
from core.search.fusion import Ranking
from core.search.retrieve import SearchRequest
from core.tenants import hash_key
from opsctl.cachepolicy import ops
from opsctl.cachepolicy.jobs import job_cache_policy
from opsctl.cachepolicy.policy import CachePolicy
from tests.conftest import RunningApi, client_for, drain, make_settings, project_root
from tests.test_ingest_search import DOCS, ingest, search

MB = 1024 * 1024


def cli(*args: str, settings: Settings, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATABASE_URL=str(settings.database_url), OPSCTL_REDIS_URL=str(settings.redis_url),
               OPSCTL_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(project_root()))
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(str(settings.redis_url))


def policy_file(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    path = folder / "cache.yaml"
    path.write_text(text)
    return path


def data_version(conn: psycopg.Connection[Any], company_id: int) -> int:
    row = conn.execute("SELECT data_version FROM companies WHERE id = %s", (company_id,)).fetchone()
    assert row is not None
    return int(row[0])


def key_of(conn: psycopg.Connection[Any], company_id: int, query: str, settings: Settings) -> str:
    digest = SearchRequest(query=query).digest(Ranking.of(settings))
    return search_key(company_id, data_version(conn, company_id), digest)


def events(conn: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT target, from_state, to_state, details FROM ops_events WHERE action = %s ORDER BY id",
                        (action,)).fetchall()


@pytest.fixture
def restore_redis_config(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    saved = client.config_get("maxmemory*")
    yield
    client.config_set("maxmemory", saved["maxmemory"])
    client.config_set("maxmemory-policy", saved["maxmemory-policy"])
    client.close()


def test_ttl_change_reaches_the_running_api_without_restart(api: RunningApi, tenant: Any, db_url: str,
                                                             conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    client = redis_client(api.settings)
    search(api, tenant.api_key, "refunds before")
    assert api.cache.drain_writes()  # the answer is stored in Redis off the request's path
    ttl = client.ttl(key_of(conn, tenant.company_id, "refunds before", api.settings))
    assert 250 < ttl <= 300, "the settings' default"

    path = policy_file(tmp_path, "ttlSeconds:\n  searchResults: 7\n  apiKeys: 3\n")
    changes, sentence = ops.apply(api.settings, ops_policy(path), do_apply=True)
    assert ("ttl_search", None, 7) in [(c.name, c.current, c.desired) for c in changes]
    assert sentence.startswith(f"{len(changes)} changes applied") and "ttl_search unset → 7" in sentence
    server_before = api.server

    deadline = time.monotonic() + 20
    attempt = 0
    while True:  # the API re-reads the published policy every few seconds
        attempt += 1
        query = f"refunds after {attempt}"
        assert search(api, tenant.api_key, query)["cached"] is False
        assert api.cache.drain_writes()
        ttl = client.ttl(key_of(conn, tenant.company_id, query, api.settings))
        if 0 < ttl <= 7:
            break
        assert ttl > 250
        assert time.monotonic() < deadline, "the running API never picked up the new TTL"
        time.sleep(0.5)
    assert api.server is server_before and not api.server.should_exit
    assert client.ttl(auth_key(hash_key(tenant.api_key))) > 3, "cached before the change"
    client.delete(auth_key(hash_key(tenant.api_key)))
    api.cache.local.clear()  # and the API process's own copy of the lookup
    search(api, tenant.api_key, "refunds before")
    assert 0 < client.ttl(auth_key(hash_key(tenant.api_key))) <= 3
    (row,) = events(conn, "cache.apply")
    assert {c["name"] for c in row[3]["changes"]} >= {"ttl_search", "ttl_auth"}
    assert row[1] != row[2] and "ttl_search " in row[1] and "ttl_search 7" in row[2], row  # a TTL change reads as one
    client.close()


def ops_policy(path: Path) -> CachePolicy:
    from opsctl.policy import load

    return load(CachePolicy, "cache", path)


def test_rotate_key_revokes_a_cached_key_at_once(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                 tmp_path: Path) -> None:
    client = redis_client(api.settings)
    with client_for(api, tenant.api_key) as http:
        assert http.post("/v1/search", json={"query": "x"}).status_code == 200
        assert http.post("/v1/search", json={"query": "y"}).status_code == 200
    cached = json.loads(client.get(auth_key(hash_key(tenant.api_key))) or b"null")
    assert cached == [tenant.company_id, 0], "the lookup is cached with the key version"

    new_key = json.loads(cli("tenant", "rotate-key", "acme", "-o", "json", settings=api.settings,
                             tmp_path=tmp_path).stdout)["api_key"]
    assert client.exists(auth_key(hash_key(tenant.api_key))), "still in Redis: the database check revokes it"
    with client_for(api, tenant.api_key) as http:
        response = http.post("/v1/search", json={"query": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    with client_for(api, new_key) as http:
        assert http.post("/v1/search", json={"query": "x"}).status_code == 200
        assert http.post("/v1/search", json={"query": "x"}).status_code == 200  # from the cached lookup

    # revoked by hand, not through opsctl: the trigger bumps the key version all the same
    conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(new_key),))
    with client_for(api, new_key) as http:
        assert http.post("/v1/search", json={"query": "x"}).status_code == 401
    client.close()


def test_redis_down_keeps_auth_search_and_policy_working(api: RunningApi, tenant: Any, db_url: str,
                                                         redis_server: Any) -> None:
    from prometheus_client import REGISTRY

    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    assert search(api, tenant.api_key, "refunds")["cached"] is False
    assert search(api, tenant.api_key, "refunds")["cached"] is True
    errors_before = REGISTRY.get_sample_value("core_auth_cache_requests_total", {"result": "error"}) or 0.0
    redis_server.kill()
    try:
        api.cache.refresh_seconds = 0  # re-read the policy on every request: it must not fail either
        for query in ("refunds", "refunds issued", "refunds within days"):
            api.cache.local.clear()  # the key lookup must go to Redis (and fail there) too
            api.cache.near.clear()  # and so must the search
            result = search(api, tenant.api_key, query)
            assert result["cached"] is False
            assert result["results"][0]["external_id"] == "kb-1"
        errors_after = REGISTRY.get_sample_value("core_auth_cache_requests_total", {"result": "error"}) or 0.0
        assert errors_after - errors_before >= 3
        with client_for(api, "ok_not-a-key") as http:
            assert http.post("/v1/search", json={"query": "refunds"}).status_code == 401
    finally:
        redis_server.start()


def test_query_log_is_bounded_per_company_and_hour(redis_url: str) -> None:
    cache = Cache(redis_url, querylog_flush_seconds=3600)  # flushed by hand below
    client = redis.Redis.from_url(redis_url)
    client.hset(POLICY_KEY, mapping={"querylog_max": 10, "querylog_hours": 2})
    now = 7200.0 * 1000
    key = "opsctl:querylog:1:" + str(int(now // 3600))
    popular = SearchRequest(query="popular").canonical()
    for i in range(25):
        assert cache.log_query(1, SearchRequest(query=f"q{i}").canonical(), now)
    for _ in range(3):
        cache.log_query(1, popular, now)
    cache.log_query(2, SearchRequest(query="other company").canonical(), now)
    assert client.exists(key) == 0, "counted in memory until the next flush"
    assert cache.flush_query_log() == 27, "one entry per distinct request"
    assert cache.flush_query_log() == 0, "nothing counted twice"
    assert client.zcard(key) == 10
    assert client.zrevrange(key, 0, 0)[0].decode() == popular, "a frequent newcomer is not crowded out"
    assert client.zscore(key, popular) >= 3, "three searches weigh three"
    client.hset(POLICY_KEY, "querylog_max", 4)
    cache.refresh_seconds = 0
    cache.log_query(1, popular, now)
    cache.flush_query_log()
    assert client.zcard(key) == 4, "a smaller size trims the log"
    assert client.zrevrange(key, 0, 0)[0].decode() == popular
    assert 0 < client.ttl(key) <= 3 * 3600
    assert client.zcard("opsctl:querylog:2:" + str(int(now // 3600))) == 1
    assert not cache.log_query(1, json.dumps({"query": "x" * 5000}), now), "oversized requests are not logged"
    cache.close()
    client.close()


def test_query_log_is_written_in_the_background_and_on_close(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    now = time.time()
    key = querylog_key(41, hour_of(now))
    client.delete(key)
    cache = Cache(redis_url, querylog_flush_seconds=0.1)
    assert cache.log_query(41, "first", now)
    deadline = time.monotonic() + 10
    while not client.exists(key):
        assert time.monotonic() < deadline, "the background thread never wrote the query log"
        time.sleep(0.05)
    cache.close()

    slow = Cache(redis_url, querylog_flush_seconds=3600)
    for _ in range(2):
        assert slow.log_query(41, "second", now)
    slow.close()
    assert not slow.log_query(41, "after close", now), "nothing is counted once closed"
    assert client.zscore(key, "second") == 2, "closing writes what is still counted"
    assert client.zscore(key, "first") == 1
    client.close()


def test_near_cache_answers_before_redis_and_only_under_the_same_ttl(redis_url: str) -> None:
    cache = Cache(redis_url)
    client = redis.Redis.from_url(redis_url)
    key = search_key(9, 3, "near")
    assert cache.set_raw(key, b'[{"chunk_id":1}]', 60, near=True)
    assert client.get(key) == b'[{"chunk_id":1}]', "Redis has it too"
    client.delete(key)
    assert cache.get_raw(key, near_ttl=60) == (b'[{"chunk_id":1}]', "hit"), "from this process"
    assert cache.get_raw(key) == (None, "miss"), "without near_ttl only Redis is asked"
    assert cache.get_raw(key, near_ttl=5) == (None, "miss"), "another TTL in effect: not the near copy"
    other = search_key(9, 3, "from-redis")
    client.set(other, b"[2]")
    assert cache.get_raw(other, near_ttl=60) == (b"[2]", "hit")
    client.delete(other)
    assert cache.get_raw(other, near_ttl=60) == (b"[2]", "hit"), "a Redis hit is kept near"
    assert search_key(9, 4, "near") != key, "a new data version is a new key: near copies retire with it"

    short = search_key(9, 3, "short")
    client.set(short, b"[3]", px=300)
    fresh = Cache(redis_url)
    assert fresh.get_raw(short, near_ttl=60) == (b"[3]", "hit")
    time.sleep(0.4)
    assert fresh.get_raw(short, near_ttl=60) == (None, "miss"), "kept near only as long as Redis had left"
    fresh.close()
    cache.close()
    client.close()


def test_a_search_answer_is_stored_in_redis_off_the_request_path(redis_url: str) -> None:
    """While Redis holds every write (CLIENT PAUSE WRITE), an answer is kept near at once and the
    caller goes on; the SET is made once Redis takes writes again, and on close."""
    cache = Cache(redis_url, timeout=60)
    client = redis.Redis.from_url(redis_url)
    key, later = search_key(9, 3, "off-path"), search_key(9, 3, "on-close")
    stored = threading.Event()
    client.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        caller = threading.Thread(target=lambda: cache.set_raw_later(key, b"[1]", 60) and stored.set())
        caller.start()
        assert stored.wait(30), "the caller waited for Redis"
        assert cache.get_raw(key, near_ttl=60) == (b"[1]", "hit"), "kept near at once"
        assert not cache.drain_writes(timeout=0.2), "the SET waits in the background"
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    assert cache.drain_writes()
    assert client.get(key) == b"[1]" and 0 < client.ttl(key) <= 60
    assert cache.set_raw_later(later, b"[2]", 60)
    cache.close()
    assert client.get(later) == b"[2]", "closing writes what is still queued"
    assert not cache.set_raw_later(search_key(9, 3, "closed"), b"[3]", 60), "nothing is queued once closed"
    client.close()


def test_near_cache_is_bounded_in_bytes() -> None:
    from core.cache import LocalMap

    near = LocalMap(max_entries=100, max_bytes=1000)
    for i in range(10):
        near.put(f"k{i}", b"x" * 90, 60, 0.0)
    assert near.bytes == 900
    near.put("k10", b"x" * 90, 60, 0.0)
    assert near.bytes == 990 and near.get("k0", 60, 1.0) == b"x" * 90, "still within the budget"
    near.put("k11", b"x" * 90, 60, 0.0)
    assert near.bytes == 990 and near.get("k0", 60, 1.0) is None, "the oldest made way"
    near.put("big", b"x" * 101, 60, 0.0)
    assert near.get("big", 60, 1.0) is None, "over a tenth of the budget: not kept"
    near.put("k10", b"y" * 10, 60, 0.0)
    assert near.bytes == 910 and near.get("k10", 60, 1.0) == b"y" * 10
    near.drop("k10")
    assert near.bytes == 900
    near.clear()
    assert near.bytes == 0


def test_flush_retires_near_answers_in_running_api(api: RunningApi, tenant: Any, db_url: str) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    assert search(api, tenant.api_key, "refunds")["cached"] is False
    assert search(api, tenant.api_key, "refunds")["cached"] is True
    redis_client(api.settings).flushall()  # even with Redis emptied by hand, the near copy answers
    assert search(api, tenant.api_key, "refunds")["cached"] is True
    ops.flush(api.settings, tenant.company_id, do_apply=True)
    assert search(api, tenant.api_key, "refunds")["cached"] is False, "flush bumps the data version"


def test_auth_lookups_are_kept_in_process_for_their_ttl(redis_url: str) -> None:
    cache = Cache(redis_url)
    client = redis.Redis.from_url(redis_url)
    lookup = auth_key(b"local-test")
    assert cache.set_json(lookup, [7, 0], 60, local=True)
    client.delete(lookup)
    assert cache.get_json(lookup, local_ttl=60) == ([7, 0], "hit"), "from this process, Redis not asked"
    assert cache.get_json(lookup, local_ttl=5) == (None, "miss"), "a changed TTL asks Redis again"
    client.set(lookup, "[8, 1]")
    assert cache.get_json(lookup, local_ttl=5) == ([8, 1], "hit")
    client.delete(lookup)
    assert cache.get_json(lookup, local_ttl=5) == ([8, 1], "hit"), "a Redis hit is kept in process"
    cache.local.drop(lookup)
    assert cache.get_json(lookup, local_ttl=5) == (None, "miss")
    assert cache.get_json(search_key(1, 0, "not-local"))[1] == "miss"
    cache.close()
    client.close()


def test_warm_makes_the_next_identical_search_a_hit(api: RunningApi, tenant: Any, other_tenant: Any, db_url: str,
                                                    conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    for _ in range(3):
        search(api, tenant.api_key, "refunds", mode="keyword")
    search(api, tenant.api_key, "shipping")
    search(api, other_tenant.api_key, "anything")
    ops.flush(api.settings, None, do_apply=True)
    assert search(api, tenant.api_key, "refunds", mode="keyword")["cached"] is False  # flushed (and logged again)
    ops.flush(api.settings, None, do_apply=True)
    api.cache.flush_query_log()  # what the API's background thread does every second

    seen: list[tuple[int, int]] = []
    result = ops.warm(api.settings, CachePolicy(), tenant.company_id, 1, lambda d, t: seen.append((d, t)))
    assert result["companies"] == {str(tenant.company_id): {"warmed": 1, "already_cached": 0, "skipped": 0}}
    assert seen == [(1, 1)]
    hit = search(api, tenant.api_key, "refunds", mode="keyword")
    assert hit["cached"] is True
    assert hit["results"][0]["external_id"] == "kb-1"
    assert search(api, tenant.api_key, "shipping")["cached"] is False, "only the top 1 was warmed"
    (row,) = events(conn, "cache.warm")
    assert row[0] == f"company/{tenant.company_id}" and row[2] == "1 warmed of 1"

    shipped = str(project_root() / "policies" / "cache.yaml")
    table = cli("cache", "warm", "--company", str(other_tenant.company_id), "--policy", shipped,
                settings=api.settings, tmp_path=tmp_path)
    assert "WARMED" in table.stdout and "1 of 1 requests warmed" in table.stderr
    again = json.loads(cli("cache", "warm", "--top", "5", "--policy", shipped, "-o", "json", settings=api.settings,
                           tmp_path=tmp_path).stdout)
    assert again["companies"][str(tenant.company_id)]["already_cached"] >= 1
    assert again["companies"][str(other_tenant.company_id)]["already_cached"] == 1


@pytest.fixture
def lasting_api(db_url: str, redis_url: str) -> Iterator[RunningApi]:
    """The API with cache lifetimes no run of a test outlasts: counting the cached keys must not depend
    on how fast a loaded machine gets to the count (the auth lookups' 30 s default did expire)."""
    running = RunningApi(make_settings(database_url=db_url, redis_url=redis_url, admin_token="admin-secret",
                                       auth_cache_ttl_seconds=3600, search_cache_ttl_seconds=3600))
    yield running
    running.close()


def test_flush_one_company_leaves_the_others(lasting_api: RunningApi, tenant: Any, other_tenant: Any,
                                             conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    api = lasting_api
    for key in (tenant.api_key, other_tenant.api_key):
        search(api, key, "alpha")
        search(api, key, "beta")
        with client_for(api, key) as http:
            assert http.get("/v1/documents/none-yet").status_code == 404  # nothing cached for a 404
    api.cache.flush_query_log()  # what the API's background thread does every second
    assert api.cache.drain_writes()  # and the answers' SETs, made off the requests' path
    client = redis_client(api.settings)
    mine = [key_of(conn, tenant.company_id, q, api.settings) for q in ("alpha", "beta")]
    theirs = [key_of(conn, other_tenant.company_id, q, api.settings) for q in ("alpha", "beta")]
    assert client.exists(*mine, *theirs) == 4

    dry = json.loads(cli("cache", "flush", "--company", str(tenant.company_id), "-o", "json",
                         settings=api.settings, tmp_path=tmp_path).stdout)
    assert dry == {"scope": f"company/{tenant.company_id}", "applied": False,
                   "keys": {"search": 2, "document": 0, "auth": 1}}
    assert client.exists(*mine) == 2 and events(conn, "cache.flush") == []

    done = json.loads(cli("cache", "flush", "--company", str(tenant.company_id), "--apply", "-o", "json",
                          settings=api.settings, tmp_path=tmp_path).stdout)
    assert done["keys"] == {"search": 2, "document": 0, "auth": 1}
    assert client.exists(*mine) == 0
    assert client.exists(auth_key(hash_key(tenant.api_key))) == 0
    assert client.exists(*theirs) == 2
    assert client.exists(auth_key(hash_key(other_tenant.api_key))) == 1
    assert client.zcard(f"opsctl:querylog:{tenant.company_id}:{int(time.time() // 3600)}") == 2, "log kept"
    (row,) = events(conn, "cache.flush")
    assert row[0] == f"company/{tenant.company_id}" and row[2] == "3 deleted"

    table = cli("cache", "flush", settings=api.settings, tmp_path=tmp_path)
    assert "WOULD DELETE" in table.stdout and "dry run for all companies" in table.stderr
    everything = ops.flush(api.settings, None, do_apply=True)
    assert everything["keys"] == {"search": 2, "document": 0, "auth": 1}
    assert client.exists(*theirs) == 0
    client.close()


def test_apply_sets_redis_config_and_publishes(settings: Settings, conn: psycopg.Connection[Any], tmp_path: Path,
                                               restore_redis_config: None) -> None:
    client = redis_client(settings)
    client.config_set("maxmemory", 256 * MB)
    client.config_set("maxmemory-policy", "allkeys-lru")
    path = policy_file(tmp_path, "redis:\n  maxmemory: 64mb\n  maxmemoryPolicy: allkeys-lfu\n"
                                 "ttlSeconds:\n  searchResults: 120\n")

    plan = json.loads(cli("cache", "apply", "--policy", str(path), "-o", "json", settings=settings,
                          tmp_path=tmp_path).stdout)
    assert {p["name"]: (p["current"], p["desired"]) for p in plan} == {
        "maxmemory": (256 * MB, 64 * MB), "maxmemory-policy": ("allkeys-lru", "allkeys-lfu"),
        "ttl_search": (None, 120), "ttl_document": (None, 300), "ttl_auth": (None, 30),
        "querylog_max": (None, 500), "querylog_hours": (None, 24)}
    assert client.config_get("maxmemory")["maxmemory"] == str(256 * MB), "a plan changes nothing"
    table = cli("cache", "apply", "--policy", str(path), settings=settings, tmp_path=tmp_path).stdout
    assert re.search(r"maxmemory\s+│ 256 MiB\s+│ 64 MiB", table), table
    assert events(conn, "cache.apply") == []

    cli("cache", "apply", "--policy", str(path), "--apply", settings=settings, tmp_path=tmp_path)
    assert client.config_get("maxmemory")["maxmemory"] == str(64 * MB)
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu"
    assert client.hgetall(POLICY_KEY) == {b"ttl_search": b"120", b"ttl_document": b"300", b"ttl_auth": b"30",
                                          b"querylog_max": b"500", b"querylog_hours": b"24"}
    (row,) = events(conn, "cache.apply")
    assert row[1].startswith("maxmemory 256 MiB, maxmemory-policy allkeys-lru, ttl_search unset"), row[1]
    assert row[2].startswith("maxmemory 64 MiB, maxmemory-policy allkeys-lfu, ttl_search 120"), row[2]

    again = cli("cache", "apply", "--policy", str(path), "-o", "json", settings=settings, tmp_path=tmp_path)
    assert json.loads(again.stdout) == [] and "already in effect" in again.stderr
    client.close()


def test_status_figures_match_what_was_done(settings: Settings, tmp_path: Path) -> None:
    client = redis_client(settings)
    client.config_resetstat()
    cache = Cache(settings.redis_url)
    cache.set_json(search_key(1, 0, "a"), [1], 60)
    cache.set_json(search_key(1, 0, "b"), [2], 60)
    cache.set_json(search_key(2, 0, "c"), [3], 60)
    cache.set_json(auth_key(b"k"), [1, 0], 60)
    for name in ("a", "b", "a"):
        assert cache.get_json(search_key(1, 0, name))[1] == "hit"
    for name in ("x", "y"):
        assert cache.get_json(search_key(1, 0, name))[1] == "miss"
    cache.close()

    data = ops.status(settings, CachePolicy())
    assert data["redis"]["keyspace_hits"] == 3
    assert data["redis"]["keyspace_misses"] == 2
    assert "hit_rate" not in data["redis"], "Redis INFO counts every key read: it is no search hit rate"
    assert data["keys"] == {"search": 3, "document": 0, "auth": 1, "querylog": 0}
    # no Prometheus and no API to read the core's counter from: said, not guessed from Redis INFO
    assert (data["search_cache"]["source"], data["search_cache"]["hit_rate"]) == ("none", None)
    assert data["search_cache"]["text"].startswith("unknown: no Prometheus")
    assert data["redis"]["used_memory"] > 0
    assert data["redis"]["maxmemory"] == int(client.config_get("maxmemory")["maxmemory"])

    shipped = str(project_root() / "policies" / "cache.yaml")
    table = cli("cache", "status", "--policy", shipped, settings=settings, tmp_path=tmp_path).stdout
    assert "keys: search" in table and "memory" in table and "search hit rate" in table and "unknown" in table
    (memory,) = [line for line in table.splitlines() if line.strip().startswith("memory")]
    size = r"\d+(\.\d)? (B|KiB|MiB|GiB)"  # sizes a person reads (the exact bytes are in -o json)
    assert re.search(rf"│ {size} of (unlimited|{size} \(\d+\.\d%\)), allkeys-", memory), memory
    client.close()


def test_cache_status_refuses_its_own_bad_policy_naming_the_file(settings: Settings, tmp_path: Path) -> None:
    """`cache status` reads the policy it reports against: a bad one is a config error (exit 2, one
    line naming file, line and reason), unlike `opsctl status`, which shows the hit rate as unknown."""
    path = policy_file(tmp_path, "kind: cache\nhitRate:\n  target: lots\n")
    proc = cli("cache", "status", "--policy", str(path), settings=settings, tmp_path=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:3: hitRate.target: Input should be a valid number"]


def three_hit_rates(settings: Settings, db_url: str, policy_dir: Path, at: datetime) -> list[dict[str, Any]]:
    """The hit rate as `opsctl status`, `opsctl cache status` and the cache-policy job report it at ``at``."""
    from opsctl.cachepolicy.jobs import cache_policy_cycle
    from opsctl.daemon.status import read, summarize
    from opsctl.policy import load

    policy = load(CachePolicy, "cache", directory=policy_dir)
    with psycopg.connect(db_url, autocommit=True) as conn:
        screen = summarize(read(conn, settings, policy_dir, at), at)["cache_hit_rate"]
    cache_status = ops.status(settings, policy, at)["search_cache"]
    sentence = cache_policy_cycle(settings, policy, at)
    assert sentence.endswith(f"; search hit rate {cache_status['text']}"), sentence
    return [screen, cache_status]


def test_status_cache_status_and_the_job_report_one_hit_rate(api: RunningApi, tenant: Any, db_url: str,
                                                             tmp_path: Path, restore_redis_config: None) -> None:
    """Same inputs, same figure: from Prometheus over the policy's window, and from the API's
    /metrics without Prometheus, each labelled with its source and window."""
    from core import metrics
    from core.embedded import EmbeddedPrometheus, prometheus_binary
    from tests.conftest import free_port, outside_pytest_tmp

    assert prometheus_binary(), "CI installs prometheus"
    policy_file(tmp_path, "hitRate:\n  target: 0.9\n  windowSeconds: 60\n")
    for result in ("hit", "miss", "error"):
        metrics.SEARCH_CACHE.labels(result)  # every series exists before the first scrape
    prom = EmbeddedPrometheus(outside_pytest_tmp("opsctl-test-prom-"), f"127.0.0.1:{api.port}", port=free_port(),
                              scrape_interval="1s")
    prom.start()
    try:
        settings = api.settings.model_copy(update={"prometheus_url": prom.url, "api_url": api.url})
        wait_scraped(prom.url, lambda v: v is not None)
        base = {r: metrics.SEARCH_CACHE.labels(r)._value.get() for r in ("hit", "miss", "error")}
        for i in range(4):
            search(api, tenant.api_key, f"question {i}")  # 4 misses
        for _ in range(3):
            for i in range(4):
                search(api, tenant.api_key, f"question {i}")  # 12 hits
        final = metrics.SEARCH_CACHE.labels("hit")._value.get()
        assert final - base["hit"] == 12
        # evaluated at the time of a sample that holds every lookup: later scrapes change nothing
        at = wait_scraped(prom.url, lambda v: v is not None and v >= final)
        reports = three_hit_rates(settings, db_url, tmp_path / "policies", at)
    finally:
        prom.stop()
    assert reports[0] == reports[1], reports
    shown = reports[0]
    assert (shown["source"], shown["window_seconds"], shown["target"]) == ("prometheus", 60, 0.9)
    assert shown["hits"] >= 12 and shown["misses"] >= 4
    assert shown["hit_rate"] == pytest.approx(0.75, abs=0.1) and shown["verdict"] == "below target"
    assert "over the last 1m (Prometheus); target 90%: below target" in shown["text"]

    # without Prometheus: the same counter, read from the API's own /metrics, labelled as such
    settings = api.settings.model_copy(update={"prometheus_url": None, "api_url": api.url})
    reports = three_hit_rates(settings, db_url, tmp_path / "policies", datetime.now(UTC))
    assert reports[0] == reports[1], reports
    totals = {r: metrics.SEARCH_CACHE.labels(r)._value.get() for r in ("hit", "miss", "error")}
    assert (reports[0]["source"], reports[0]["hits"], reports[0]["misses"], reports[0]["errors"]) == (
        "api", totals["hit"], totals["miss"], totals["error"])
    assert "over the API process's lifetime (its /metrics: no Prometheus)" in reports[0]["text"]


def wait_scraped(url: str, ok: Any) -> datetime:
    """Wait until Prometheus holds a sample of the hit counter that ``ok`` accepts; its time."""
    import httpx

    deadline = time.monotonic() + 30
    while True:
        body = httpx.get(f"{url}/api/v1/query", params={"query": 'core_search_cache_requests_total{result="hit"}'},
                         timeout=5).json()
        found = body["data"]["result"]
        if ok(float(found[0]["value"][1]) if found else None):
            return datetime.fromtimestamp(float(found[0]["value"][0]) if found else time.time(), UTC)
        assert time.monotonic() < deadline, "Prometheus did not scrape the API"
        time.sleep(0.3)


def test_daemon_job_applies_and_reports(settings: Settings, conn: psycopg.Connection[Any], tmp_path: Path,
                                        restore_redis_config: None) -> None:
    client = redis_client(settings)
    client.config_set("maxmemory", 256 * MB)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_resetstat()
    policy_file(tmp_path, "redis:\n  maxmemory: 32mb\nhitRate:\n  target: 0.8\n")
    first = job_cache_policy(settings, tmp_path / "policies")
    assert first.startswith("6 changes applied (maxmemory 256 MiB → 32 MiB, ttl_search unset → 300")
    assert first.endswith("; target 80%")
    assert client.config_get("maxmemory")["maxmemory"] == str(32 * MB)
    second = job_cache_policy(settings, tmp_path / "policies")
    assert second.startswith("cache policy already in effect; search hit rate")
    (row,) = events(conn, "cache.apply")
    assert row[3]["changes"][0]["name"] == "maxmemory"
    client.close()


@pytest.mark.parametrize("command", [["cache"], ["cache", "status"], ["cache", "apply"], ["cache", "warm"],
                                     ["cache", "flush"]])
def test_cache_commands_have_help_with_an_example(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", *command, "--help"], capture_output=True, text=True,
                          cwd=project_root(), timeout=60)
    assert proc.returncode == 0 and "Example:" in proc.stdout, proc.stdout + proc.stderr


def test_document_metadata_is_cached_until_the_next_ingest(api: RunningApi, tenant: Any, other_tenant: Any,
                                                           db_url: str, conn: psycopg.Connection[Any]) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    with client_for(api, tenant.api_key) as http:
        first = http.get("/v1/documents/kb-2")
        second = http.get("/v1/documents/kb-2")
        missing = http.get("/v1/documents/kb-404")
    assert first.status_code == 200 and second.status_code == 200
    body = first.json()
    assert body["cached"] is False and second.json()["cached"] is True
    assert {k: body[k] for k in ("external_id", "title", "metadata", "chunks")} == \
        {"external_id": "kb-2", "title": "Shipping", "metadata": {"lang": "en", "team": "logistics"}, "chunks": 1}
    assert {**second.json(), "cached": False} == body
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    with client_for(api, other_tenant.api_key) as http:
        assert http.get("/v1/documents/kb-2").status_code == 404, "another company's document is invisible"

    ingest(api, tenant.api_key, [{**DOCS[1], "title": "Shipping (new)"}])
    drain(api.settings, db_url)
    with client_for(api, tenant.api_key) as http:
        fresh = http.get("/v1/documents/kb-2").json()
    assert fresh["cached"] is False and fresh["title"] == "Shipping (new)"
    client = redis_client(api.settings)
    keys = list(client.scan_iter(match="opsctl:doc:*"))
    assert len(keys) == 2 and all(0 < client.ttl(k) <= 300 for k in keys)
    flushed = ops.flush(api.settings, tenant.company_id, do_apply=True)
    assert flushed["keys"]["document"] == 2
    client.close()


def test_a_near_miss_looks_in_the_near_cache_once(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_raw(..., near_ttl=)`` asks the near cache once, then Redis (not the near cache twice)."""
    cache = Cache(redis_url)
    asked: list[str] = []
    near_get = cache.near.get

    def counting(key: str, ttl: int, now: float) -> Any:
        asked.append(key)
        return near_get(key, ttl, now)

    monkeypatch.setattr(cache.near, "get", counting)
    key = search_key(9, 3, "once")
    assert cache.get_raw(key, near_ttl=60) == (None, "miss")
    assert asked == [key]
    cache.close()


def test_a_search_key_redis_refuses_gives_its_connection_back(redis_url: str) -> None:
    """A GET Redis answers with an error (a key of another type: WRONGTYPE) is a cache error, and the
    connection goes back to the pool with the PTTL sent after it read: none is left open per read."""
    cache = Cache(redis_url)
    client = redis.Redis.from_url(redis_url)
    key = search_key(9, 3, "wrong-type")
    client.rpush(key, b"not a string")
    assert cache.get_raw(search_key(9, 3, "absent"), near_ttl=60) == (None, "miss")  # one pooled connection made
    before = client.info("clients")["connected_clients"]
    for _ in range(5):
        assert cache.get_raw(key, near_ttl=60) == (None, "error")
    assert client.info("clients")["connected_clients"] == before, "a connection left checked out per read"
    assert cache.get_raw(search_key(9, 3, "absent"), near_ttl=60) == (None, "miss")
    client.delete(key)
    client.close()
    cache.close()
