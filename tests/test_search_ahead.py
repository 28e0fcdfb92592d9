"""The search route asks the cache while the database authenticates (``core.search.ahead``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import redis

from core.cache import Cache, search_key
from core.search.fusion import Ranking
from core.search.retrieve import SearchRequest
from core.tenants import hash_key, resolve_principal, verified_company
from tests.conftest import RunningApi, client_for, drain
from tests.test_ingest_search import DOCS, ingest, search
from tests.waiting import wait_for


def gets(client: redis.Redis) -> int:
    """How many GETs Redis has answered, less the one each call of the shared rate limit's script
    makes (``core.sharedlimit``: a script's commands count in commandstats too)."""
    stats = client.info("commandstats")
    scripts = sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    return int(stats.get("cmdstat_get", {}).get("calls", 0)) - scripts





def test_the_cache_is_asked_while_the_database_authenticates(api: RunningApi, tenant: Any, db_url: str,
                                                            conn: psycopg.Connection[Any]) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    assert search(api, tenant.api_key, "refunds")["cached"] is False  # the key and the version now known here
    client = redis.Redis.from_url(str(api.settings.redis_url))
    before = gets(client)
    answered: dict[str, Any] = {}

    def ask() -> None:
        answered.update(search(api, tenant.api_key, "parcels weekday"))

    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE companies IN ACCESS EXCLUSIVE MODE")  # the key lookup waits on it
        asking = threading.Thread(target=ask)
        asking.start()
        wait_for(lambda: gets(client) > before, 30, "the GET, sent while the lookup waits on the database")
        assert not answered
        blocker.rollback()
    asking.join(30)
    assert answered["cached"] is False and answered["results"][0]["external_id"] == "kb-2"
    assert gets(client) == before + 1, "one GET: the one sent ahead was the right key"
    assert search(api, tenant.api_key, "parcels weekday")["cached"] is True
    client.close()


def test_a_guess_of_an_old_version_is_dropped(api: RunningApi, tenant: Any, db_url: str) -> None:
    """An ingest since the last request: the answer read ahead (an older version's) is never used."""
    ingest(api, tenant.api_key, DOCS[:1])
    drain(api.settings, db_url)
    assert search(api, tenant.api_key, "parcels", mode="keyword")["results"] == []
    assert search(api, tenant.api_key, "parcels", mode="keyword")["cached"] is True
    ingest(api, tenant.api_key, DOCS[1:2])
    drain(api.settings, db_url)
    fresh = search(api, tenant.api_key, "parcels", mode="keyword")
    assert fresh["cached"] is False and fresh["results"][0]["external_id"] == "kb-2"


def test_a_known_key_revoked_is_refused_before_its_body(api: RunningApi, tenant: Any,
                                                        conn: psycopg.Connection[Any]) -> None:
    """A key this process verified (so its body is parsed ahead), revoked since: 401, not its body's 422."""
    assert search(api, tenant.api_key, "anything")["cached"] is False
    conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(tenant.api_key),))
    with client_for(api, tenant.api_key) as http:
        refused = http.post("/v1/search", json={"query": "x", "k": 0})
        assert refused.status_code == 401, refused.text
    key = search_key(tenant.company_id, 0, SearchRequest(query="anything").digest(Ranking.of(api.settings)))
    assert api.cache.near.get(key, api.settings.search_cache_ttl_seconds, time.monotonic()) is not None


def test_a_known_key_with_a_bad_body_gets_the_body_error(api: RunningApi, tenant: Any) -> None:
    assert search(api, tenant.api_key, "anything")["cached"] is False
    with client_for(api, tenant.api_key) as http:
        assert http.post("/v1/search", json={"query": "x", "k": 0}).status_code == 422
        assert http.post("/v1/search", content=b"{", headers={"content-type": "application/json"}).status_code == 400
        assert http.post("/v1/search", json={"query": "x", "k": 10_000}).status_code == 422
        assert http.post("/v1/search", json={"query": "refunds"}).status_code == 200


def test_the_company_of_a_key_verified_here_is_read_without_io(conn: psycopg.Connection[Any], tenant: Any,
                                                               other_tenant: Any) -> None:
    """``verified_company``: what the read-ahead keys its guess by, from ``resolve_principal``'s copy."""
    cache = Cache(None)
    assert verified_company(cache, tenant.api_key, 60) is None, "never verified in this process"
    assert resolve_principal(conn, cache, tenant.api_key, 60) is not None
    assert verified_company(cache, tenant.api_key, 60) == tenant.company_id
    assert verified_company(cache, other_tenant.api_key, 60) is None
    assert verified_company(cache, tenant.api_key, 5) is None, "kept under another TTL: not trusted"


def test_an_answer_ranked_otherwise_is_not_served_from_the_cache(api: RunningApi, tenant: Any, db_url: str) -> None:
    """Two API versions sharing Redis during a rollout (or a ranking setting changed): the cached
    answer of one ranking is another key for the other, in the route and in its read-ahead."""
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    assert search(api, tenant.api_key, "refunds")["cached"] is False
    assert api.cache.drain_writes()
    assert search(api, tenant.api_key, "refunds")["cached"] is True
    # what another API version would rank by (the route reads its settings on every request)
    api.services.settings = api.settings.model_copy(update={"search_fusion": "rrf", "search_per_document": False})
    assert search(api, tenant.api_key, "refunds")["cached"] is False
    assert api.cache.drain_writes()
    assert search(api, tenant.api_key, "refunds")["cached"] is True  # its own key, read ahead this time
    assert Ranking().fingerprint != Ranking(per_document=False).fingerprint
