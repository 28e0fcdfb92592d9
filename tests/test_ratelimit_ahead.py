"""A search by a key this process verified is charged to its company in the read-ahead's round trip
(``core.search.ahead``): the rate limit's script rides with the cache GET, sent before the key
lookup and read after it. What a request costs its company does not change: a key revoked since
charges nothing, a tier changed since is charged once at the new tier, a rate-limited request
changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from core.sharedlimit import company_key
from core.tenants import hash_key, rotate_key, set_tier
from tests.conftest import RunningApi, client_for
from tests.waiting import wait_for

POLICY = """kind: tenants
defaultTier: small
tiers:
  small: {ratePerSecond: 0.001, burst: 4}
  big: {ratePerSecond: 0.001, burst: 50}
"""


@pytest.fixture
def tiered_api(settings: Any, tmp_path: Path) -> Iterator[RunningApi]:
    path = tmp_path / "tenants.yaml"
    path.write_text(POLICY)
    api = RunningApi(settings.model_copy(update={"tenants_policy": path}))
    try:
        yield api
    finally:
        api.close()


def ask(api: RunningApi, key: str) -> httpx.Response:
    with client_for(api, key) as http:
        return http.post("/v1/search", json={"query": "anything", "k": 2})


def remaining(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return answer.headers["RateLimit-Remaining"]


def test_the_limit_is_charged_while_the_database_authenticates(tiered_api: RunningApi, tenant: Any,
                                                              db_url: str) -> None:
    assert remaining(ask(tiered_api, tenant.api_key)) == "3"  # the key and its company now known here
    client = redis.Redis.from_url(str(tiered_api.settings.redis_url))
    tat = client.get(company_key(tenant.company_id))
    answered: list[httpx.Response] = []
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE companies IN ACCESS EXCLUSIVE MODE")  # the key lookup waits on it
        asking = threading.Thread(target=lambda: answered.append(ask(tiered_api, tenant.api_key)))
        asking.start()
        wait_for(lambda: client.get(company_key(tenant.company_id)) != tat, 30,
                 "the charge, made while the lookup waits on the database")
        assert not answered
        blocker.rollback()
    asking.join(30)
    assert remaining(answered[0]) == "2", "charged once: the charge made ahead is the request's"
    client.close()


def test_a_known_key_revoked_since_charges_its_company_nothing(tiered_api: RunningApi, tenant: Any,
                                                              conn: psycopg.Connection[Any]) -> None:
    assert remaining(ask(tiered_api, tenant.api_key)) == "3"
    second = rotate_key(conn, str(tenant.company_id), keep_old=True).api_key
    assert remaining(ask(tiered_api, tenant.api_key)) == "2"  # verified again after the new key's bump
    client = redis.Redis.from_url(str(tiered_api.settings.redis_url))
    tat = client.get(company_key(tenant.company_id))
    conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(tenant.api_key),))
    refused = ask(tiered_api, tenant.api_key)
    assert refused.status_code == 401, refused.text
    assert client.get(company_key(tenant.company_id)) == tat, "the company's bucket as it was"
    assert remaining(ask(tiered_api, second)) == "1"
    client.close()


def test_a_tier_changed_since_is_charged_once_at_the_new_tier(tiered_api: RunningApi, tenant: Any,
                                                             conn: psycopg.Connection[Any]) -> None:
    assert remaining(ask(tiered_api, tenant.api_key)) == "3"
    assert remaining(ask(tiered_api, tenant.api_key)) == "2"
    set_tier(conn, "acme", "big", apply=True)
    answer = ask(tiered_api, tenant.api_key)
    assert answer.headers["RateLimit-Limit"] == "50"
    assert remaining(answer) == "47", "three requests charged in all, the last at the big tier"
    set_tier(conn, "acme", "small", apply=True)
    refused = ask(tiered_api, tenant.api_key)
    assert refused.status_code == 200 and remaining(refused) == "0"
    assert ask(tiered_api, tenant.api_key).status_code == 429


def test_a_limited_request_changes_nothing_and_a_flushed_script_is_loaded_again(tiered_api: RunningApi,
                                                                               tenant: Any) -> None:
    assert [remaining(ask(tiered_api, tenant.api_key)) for _ in range(4)] == ["3", "2", "1", "0"]
    client = redis.Redis.from_url(str(tiered_api.settings.redis_url))
    tat = client.get(company_key(tenant.company_id))
    refused = ask(tiered_api, tenant.api_key)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1000"
    assert client.get(company_key(tenant.company_id)) == tat
    client.delete(company_key(tenant.company_id))  # a full bucket again
    client.script_flush()  # Redis restarted, say: the script sent ahead is unknown to it
    assert [remaining(ask(tiered_api, tenant.api_key)) for _ in range(2)] == ["3", "2"]
    client.close()


def test_a_charge_sent_ahead_is_kept_only_as_charged(redis_url: str) -> None:
    """``AheadCharge``: taken at the tier it was sent at, it is the request's charge; taken at another
    tier, or cancelled (a refused key, a failed lookup), the bucket is as it was, a full one too."""
    from core.cache import Cache
    from core.redisbatch import Batch
    from core.sharedlimit import SharedLimiter
    from core.tiers import Tier

    small = Tier.model_validate({"ratePerSecond": 0.001, "burst": 4})
    big = Tier.model_validate({"ratePerSecond": 0.001, "burst": 50})
    cache = Cache(redis_url)
    limiter = SharedLimiter(cache)
    client = redis.Redis.from_url(redis_url)

    def sent(tier: Tier) -> Any:
        batch = Batch(cache)
        ahead = limiter.charge_ahead(batch, 7, tier)
        assert ahead is not None and batch.send()
        return ahead

    client.script_flush()
    assert sent(small).taken(7, small) is None, "NOSCRIPT: nothing charged, to be charged as usual"
    limiter.charge(9, small)  # loads the script, as the first request of a process does
    sent(small).cancel()
    assert client.get(company_key(7)) is None, "a full bucket stays full (no key)"
    first = sent(small).taken(7, small)
    assert first is not None and first.allowed and first.remaining == 3
    tat = client.get(company_key(7))
    sent(small).cancel()
    assert client.get(company_key(7)) == tat
    assert sent(small).taken(7, big) is None, "another tier: undone, to be charged as usual"
    assert client.get(company_key(7)) == tat
    assert sent(small).taken(8, small) is None and client.get(company_key(7)) == tat
    kept = sent(small)
    assert kept.taken(7, small) is not None
    kept.cancel()  # settled: a no-op
    assert client.get(company_key(7)) != tat
    client.delete(company_key(7), company_key(8), company_key(9))
    client.close()
    cache.close()
