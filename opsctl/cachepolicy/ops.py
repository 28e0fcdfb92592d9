"""The cache operations behind ``opsctl cache``: thin I/O around the pure decisions in ``plan``.

Each function opens what it needs (Redis, the database, Prometheus), does one thing, audits it
when it changed the system, and returns plain data for ``emit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.cache import (
    AUTH_PREFIX,
    DATA_TYPES,
    DOCUMENT_PREFIX,
    POLICY_KEY,
    SEARCH_PREFIX,
    parse_policy_hash,
    querylog_key,
)
from core.db import first_line
from core.errors import ConfigError, ServiceUnavailable
from core.humanize import format_bytes
from opsctl.cachepolicy import plan
from opsctl.cachepolicy.plan import Change, RedisState

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.cachepolicy.policy import CachePolicy

Progress = Callable[[int, int], None]


def connect_redis(settings: Settings) -> Any:
    """A Redis client, checked with PING; ``ServiceUnavailable`` when it cannot be reached."""
    import redis

    if not settings.redis_url:
        raise ConfigError("no Redis: start the system with `opsctl up` (or set OPSCTL_REDIS_URL)")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        from opsctl.context import up_stopped

        why = up_stopped(settings, "redis_url") or f"Redis at {settings.redis_url} is unreachable: {first_line(exc)}"
        raise ServiceUnavailable(why) from exc
    return client


# -- reading -------------------------------------------------------------------------------------
def read_state(client: Any) -> RedisState:
    config = client.config_get("maxmemory*")
    return RedisState(int(config.get("maxmemory", 0)), str(config.get("maxmemory-policy", "")),
                      parse_policy_hash(client.hgetall(POLICY_KEY)))


def count_keys(client: Any) -> dict[str, int]:
    """Keys per data type, by SCAN (never KEYS)."""
    counts = dict.fromkeys(DATA_TYPES, 0)
    for key in client.scan_iter(match="opsctl:*", count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        for kind, prefix in DATA_TYPES.items():
            if name.startswith(prefix):
                counts[kind] += 1
    return counts


def status(settings: Settings, policy: CachePolicy, now: datetime | None = None) -> dict[str, Any]:
    """The search hit rate (``hitrate.report``: the figure `status` and the daemon job show too),
    Redis's own keyspace counters, memory, evictions, keys per type, the published values."""
    from opsctl.cachepolicy import hitrate

    client = connect_redis(settings)
    try:
        stats = client.info("stats")
        memory = client.info("memory")
        state = read_state(client)
        keys = count_keys(client)
    finally:
        client.close()
    used = int(memory.get("used_memory", 0))
    return {
        "search_cache": hitrate.report(settings, policy, now),
        # every key read (search, documents, API keys, the policy hash), since Redis started: not a
        # search hit rate (a near-cache hit never reaches Redis), so none is computed from it
        "redis": {"keyspace_hits": int(stats.get("keyspace_hits", 0)),
                  "keyspace_misses": int(stats.get("keyspace_misses", 0)),
                  "used_memory": used, "maxmemory": state.maxmemory,
                  "memory_used_fraction": round(used / state.maxmemory, 4) if state.maxmemory else None,
                  "maxmemory_policy": state.maxmemory_policy,
                  "evicted_keys": int(stats.get("evicted_keys", 0)),
                  "expired_keys": int(stats.get("expired_keys", 0))},
        "keys": keys,
        "published": dict(state.published),
    }


def status_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The status as (item, value) rows for the table view."""
    rows: list[dict[str, Any]] = [{"item": "search hit rate", "value": data["search_cache"]["text"]}]
    redis = data["redis"]
    rows.append({"item": "redis keyspace reads (INFO: every key type, since Redis started)",
                 "value": f"{redis['keyspace_hits']} hits, {redis['keyspace_misses']} misses"})
    used = format_bytes(redis["used_memory"])
    share = f" ({redis['memory_used_fraction']:.1%})" if redis["memory_used_fraction"] is not None else ""
    rows.append({"item": "memory", "value": f"{used} of {plan.memory_limit(redis['maxmemory'])}{share}, "
                                            f"{redis['maxmemory_policy']}"})
    rows.append({"item": "evicted / expired keys", "value": f"{redis['evicted_keys']} / {redis['expired_keys']}"})
    for kind, count in data["keys"].items():
        rows.append({"item": f"keys: {kind}", "value": count})
    for name, value in sorted(data["published"].items()):
        rows.append({"item": f"published {name}", "value": value})
    return rows


# -- apply ---------------------------------------------------------------------------------------
def execute(client: Any, changes: list[Change]) -> None:
    for change in changes:
        if change.kind == plan.CONFIG:
            client.config_set(change.name, change.desired)
        else:
            client.hset(POLICY_KEY, change.name, change.desired)


def apply(settings: Settings, policy: CachePolicy, *, do_apply: bool, reason: str = "opsctl cache apply") -> \
        tuple[list[Change], str]:
    """Plan (and with ``do_apply`` make) the changes; audited as ``cache.apply`` when applied."""
    client = connect_redis(settings)
    try:
        state = read_state(client)
        changes = plan.plan_cache(state, policy)
        if do_apply and changes:
            execute(client, changes)
    finally:
        client.close()
    sentence = plan.summary(changes, do_apply)
    if do_apply and changes:
        _audit(settings, "cache.apply", target="redis",
               from_state=plan.changes_text(changes, "current"), to_state=plan.changes_text(changes, "desired"),
               reason=reason, details={"changes": [c.__dict__ for c in changes]})
    return changes, sentence


def _audit(settings: Settings, action: str, **fields: Any) -> None:
    from opsctl.audit import record
    from opsctl.context import connect_db

    with connect_db(settings) as conn:
        record(conn, action, **fields)


# -- flush ---------------------------------------------------------------------------------------
def _flush_targets(client: Any, company: int | None) -> dict[str, list[bytes]]:
    """Keys a flush removes, per type: search results, document metadata and API-key lookups
    (never the query log nor the published policy, so a flush can be followed by a warm)."""
    scope = f"{company}:*" if company is not None else "*"
    targets: dict[str, list[bytes]] = {
        "search": list(client.scan_iter(match=SEARCH_PREFIX + scope, count=1000)),
        "document": list(client.scan_iter(match=DOCUMENT_PREFIX + scope, count=1000)),
        "auth": [],
    }
    auth = list(client.scan_iter(match=f"{AUTH_PREFIX}*", count=1000))
    if company is None:
        targets["auth"] = auth
    elif auth:
        values = client.mget(auth)
        targets["auth"] = [k for k, v in zip(auth, values, strict=True) if v and _auth_company(v) == company]
    return targets


def _auth_company(raw: bytes) -> int | None:
    import json

    try:
        value = json.loads(raw)
        return int(value[0])
    except (ValueError, TypeError, IndexError):
        return None


# rows locked in id order, as the ingest worker locks them: a flush during ingest cannot deadlock
BUMP_ONE_SQL = "UPDATE companies SET data_version = data_version + 1 WHERE id = %s"
BUMP_ALL_SQL = ("UPDATE companies SET data_version = data_version + 1"
                " WHERE id IN (SELECT id FROM companies ORDER BY id FOR UPDATE)")


def retire_cached_answers(settings: Settings, company: int | None) -> None:
    """Bump the data version (of one company or all): every cached answer, in Redis or in any API
    process's near cache, was stored under the old version, so none is served again."""
    from opsctl.context import connect_db

    with connect_db(settings) as conn, conn.transaction():
        if company is None:
            conn.execute(BUMP_ALL_SQL)
        else:
            conn.execute(BUMP_ONE_SQL, (company,))


def flush(settings: Settings, company: int | None, *, do_apply: bool) -> dict[str, Any]:
    client = connect_redis(settings)
    try:
        targets = _flush_targets(client, company)
        deleted = {kind: 0 for kind in targets}
        if do_apply:
            retire_cached_answers(settings, company)
            for kind, keys in targets.items():
                for start in range(0, len(keys), 1000):
                    deleted[kind] += int(client.unlink(*keys[start:start + 1000]))
    finally:
        client.close()
    found = {kind: len(keys) for kind, keys in targets.items()}
    scope = "all companies" if company is None else f"company/{company}"
    result = {"scope": scope, "applied": do_apply, "keys": deleted if do_apply else found}
    if do_apply:
        _audit(settings, "cache.flush", target=scope, from_state=f"{sum(found.values())} keys",
               to_state=f"{sum(deleted.values())} deleted", reason="opsctl cache flush", details=result)
    return result


# -- warm ----------------------------------------------------------------------------------------
def read_query_log(client: Any, company: int, hours: list[int]) -> list[dict[str, float]]:
    pipe = client.pipeline(transaction=False)
    for hour in hours:
        pipe.zrange(querylog_key(company, hour), 0, -1, withscores=True)
    return [{(m.decode() if isinstance(m, bytes) else m): float(s) for m, s in rows} for rows in pipe.execute()]


def warm(settings: Settings, policy: CachePolicy, company: int | None, top: int | None,
         progress: Callable[[int, int], None] | None = None, now: float | None = None) -> dict[str, Any]:
    """Re-run each company's most frequent recent requests through the core's own search."""
    from pydantic import ValidationError

    from core.cache import Cache
    from core.db import make_pool
    from core.search.fusion import Ranking
    from core.search.retrieve import SearchRequest, search
    from core.spaces.follow import follow_database
    from core.tenants import Principal
    from opsctl.context import database_url

    now = time.time() if now is None else now
    n = top or policy.warm.top
    client = connect_redis(settings)
    pool = make_pool(database_url(settings), settings)
    cache = Cache(settings.redis_url, timeout=5)
    try:
        with pool.connection() as conn:
            sql = "SELECT id, data_version FROM companies" + (" WHERE id = %s" if company is not None else "")
            companies = conn.execute(sql + " ORDER BY id", (company,) if company is not None else ()).fetchall()
            conn.rollback()
        if company is not None and not companies:
            raise ConfigError(f"no company {company}")
        hours = plan.querylog_hours(now, policy.queryLog.windowHours)
        planned = [(int(cid), int(version), plan.top_queries(read_query_log(client, int(cid), hours), n))
                for cid, version in companies]
        total = sum(len(queries) for _, _, queries in planned)
        ttl = cache.setting("ttl_search", policy.ttlSeconds.searchResults)
        embedder = None
        if total:
            with pool.connection() as conn:
                embedder = follow_database(settings, conn)  # the answers the API would give: the active space
        report: dict[str, dict[str, int]] = {}
        done = 0
        for cid, version, queries in planned:
            counts = {"warmed": 0, "already_cached": 0, "skipped": 0}
            for request_json, _ in queries:
                try:
                    req = SearchRequest.model_validate_json(request_json)
                except ValidationError:
                    counts["skipped"] += 1
                else:
                    assert embedder is not None
                    result = search(pool, cache, embedder, Principal(cid, version), req, ttl,
                                    settings.vector_exact_max_rows, ranking=Ranking.of(settings))
                    counts["already_cached" if result["cached"] else "warmed"] += 1
                done += 1
                if progress is not None:
                    progress(done, total)
            report[str(cid)] = counts
    finally:
        client.close()
        cache.close()
        pool.close()
    warmed = sum(c["warmed"] for c in report.values())
    result = {"companies": report, "warmed": warmed, "requests": total, "ttl_seconds": ttl}
    _audit(settings, "cache.warm", target="all companies" if company is None else f"company/{company}",
           to_state=f"{warmed} warmed of {total}", reason="opsctl cache warm", details=result, change=warmed > 0)
    return result
