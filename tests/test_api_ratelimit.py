"""Rate limits: a company pays only for its own authenticated requests; strangers pay per address.

The token buckets are pure (``core.ratelimit``, the clock passed in): tables below. Over HTTP the
rates are set so low (one token per 1,000 s) that no refill can happen while a test runs.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from core.ratelimit import RateLimiter
from core.tenants import sign
from tests.conftest import RunningApi, client_for
from tests.test_bad_input import assert_error

# (rate, burst, max_keys, [(key, now)...], expected waits, keys left, in least recently used order)
LIMITER_TABLE = [
    pytest.param(1.0, 2, 10, [("a", 0), ("a", 0), ("a", 0)], [0, 0, 1.0], ["a"], id="burst-then-wait"),
    pytest.param(1.0, 2, 10, [("a", 0), ("a", 0), ("a", 0.5)], [0, 0, 0.5], ["a"], id="partial-refill"),
    pytest.param(1.0, 1, 2, [("a", 0), ("b", 0), ("c", 0)], [0, 0, 0], ["b", "c"], id="lru-evicted-at-cap"),
    pytest.param(1.0, 1, 2, [("a", 0), ("b", 0), ("a", 0.1), ("c", 0.2)], [0, 0, 0.9, 0], ["a", "c"],
                 id="recent-use-keeps-a-bucket"),
    # a bucket idle long enough to be full again is the same as no bucket: dropped at the next take
    pytest.param(1.0, 2, 10, [("a", 0), ("b", 1), ("c", 3)], [0, 0, 0], ["c"], id="idle-full-buckets-dropped"),
    pytest.param(1.0, 2, 10, [("a", 0), ("b", 0.5), ("c", 0.9)], [0, 0, 0], ["a", "b", "c"],
                 id="not-yet-full-kept"),
]


@pytest.mark.parametrize(("rate", "burst", "max_keys", "takes", "waits", "left"), LIMITER_TABLE)
def test_rate_limiter(rate: float, burst: int, max_keys: int, takes: list[tuple[str, float]],
                      waits: list[float], left: list[str]) -> None:
    limiter = RateLimiter(rate, burst, max_keys=max_keys)
    assert [limiter.take(key, now) for key, now in takes] == pytest.approx(waits)
    assert limiter.keys() == left


def test_forty_thousand_keys_keep_the_cap() -> None:
    limiter = RateLimiter(100.0, 200, max_keys=1000)
    for i in range(40_000):
        limiter.take(i, 0.0)
    assert len(limiter) == 1000
    assert limiter.keys()[-1] == 39_999


def limited_api(settings: Any, **limits: Any) -> RunningApi:
    return RunningApi(settings.model_copy(update=limits))


SLOW = 0.001  # tokens per second: none come back during a test


def test_unsigned_webhooks_naming_a_company_do_not_drain_its_bucket(settings: Any, tenant: Any) -> None:
    api = limited_api(settings, rate_limit_per_second=SLOW, rate_limit_burst=3,
                      rate_limit_anonymous_per_second=SLOW, rate_limit_anonymous_burst=1000)
    try:
        with client_for(api, None) as stranger:
            for _ in range(20):
                junk = stranger.post("/v1/webhooks/crm", content=b'{"id": "x", "text": "junk"}',
                                     headers={"X-Opsctl-Company": str(tenant.company_id),
                                              "X-Opsctl-Signature": f"t={int(time.time())},v1=00"})
                assert_error(junk, 401, "bad_signature")
        with client_for(api, tenant.api_key) as client:
            assert [client.post("/v1/search", json={"query": "x"}).status_code for _ in range(3)] == [200] * 3
            assert_error(client.post("/v1/search", json={"query": "x"}), 429, "rate_limited")
    finally:
        api.close()


def test_a_signed_webhook_is_charged_to_its_company(settings: Any, tenant: Any) -> None:
    api = limited_api(settings, rate_limit_per_second=SLOW, rate_limit_burst=2)
    try:
        body = b'{"id": "e1", "text": "hello"}'
        with client_for(api, None) as sender:
            statuses = []
            for _ in range(3):
                headers = {"X-Opsctl-Company": str(tenant.company_id),
                           "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body)}
                statuses.append(sender.post("/v1/webhooks/crm", content=body, headers=headers))
        assert [r.status_code for r in statuses[:2]] == [202, 202]
        assert_error(statuses[2], 429, "rate_limited")
    finally:
        api.close()


def test_unauthenticated_requests_are_limited_per_address(settings: Any, tenant: Any) -> None:
    api = limited_api(settings, rate_limit_anonymous_per_second=SLOW, rate_limit_anonymous_burst=4)
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": "Bearer ok_not-a-key"}) as stranger:
            refused = [stranger.post("/v1/search", json={"query": "x"}) for _ in range(6)]
        with client_for(api, None) as nobody:
            no_key = nobody.get("/v1/jobs/1")
            webhook = nobody.post("/v1/webhooks/crm", content=b"x",
                                  headers={"X-Opsctl-Company": str(tenant.company_id)})
        with client_for(api, tenant.api_key) as client:  # a valid key from the same address still works
            ok = client.post("/v1/search", json={"query": "x"})
    finally:
        api.close()
    for response in refused[:4]:
        assert_error(response, 401, "unauthorized")
    for response in (*refused[4:], no_key, webhook):
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
    assert ok.status_code == 200


def test_fake_company_ids_create_no_buckets(api: RunningApi) -> None:
    with client_for(api, None) as stranger:
        for company in range(1000, 1300):
            response = stranger.post("/v1/webhooks/crm", content=b"x",
                                     headers={"X-Opsctl-Company": str(company), "X-Opsctl-Signature": "t=1,v1=0"})
            assert response.status_code in (401, 429)
    assert len(api.services.limiter) == 0
