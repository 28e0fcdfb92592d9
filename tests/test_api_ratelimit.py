"""Rate limits: a company pays only for its own authenticated requests; strangers pay per address.

The token buckets are pure (``core.ratelimit``, the clock passed in): tables below. Over HTTP the
rates are set so low (one token per 1,000 s) that no refill can happen while a test runs.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest

from core import metrics
from core.ratelimit import RateLimiter, address_bucket
from core.tenants import sign
from tests.conftest import RunningApi, client_for
from tests.test_bad_input import assert_error, jobs

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


@pytest.mark.parametrize(("takes", "now", "wait"), [
    pytest.param([], 0, 0.0, id="no-bucket"),
    pytest.param([0, 0], 0, 1.0, id="empty"),
    pytest.param([0, 0], 0.5, 0.5, id="refilling"),
    pytest.param([0], 0, 0.0, id="a-token-left"),
])
def test_peek_says_what_take_would_and_takes_nothing(takes: list[float], now: float, wait: float) -> None:
    limiter = RateLimiter(1.0, 2)
    for at in takes:
        limiter.take("a", at)
    assert [limiter.peek("a", now), limiter.peek("a", now)] == pytest.approx([wait, wait])
    assert limiter.take("a", now) == pytest.approx(wait)


@pytest.mark.parametrize(("host", "bucket"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8::ffff:1", "2001:db8::/64"),  # the same /64: one host, one bucket
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client seen through an IPv6 socket
    ("fe80::1%eth0", "fe80::/64"),
    ("", ""),
    ("not-an-address:x", "not-an-address:x"),
])
def test_address_buckets(host: str, bucket: str) -> None:
    assert address_bucket(host) == bucket


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
        with client_for(api, None) as sender:
            statuses = []
            for i in range(3):  # three events (the same signed request again is a replay: not charged)
                body = b'{"id": "e%d", "text": "hello"}' % i
                headers = {"X-Opsctl-Company": str(tenant.company_id),
                           "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body)}
                statuses.append(sender.post("/v1/webhooks/crm", content=body, headers=headers))
        assert [r.status_code for r in statuses[:2]] == [202, 202]
        assert_error(statuses[2], 429, "rate_limited")
    finally:
        api.close()


def test_unauthenticated_requests_are_limited_per_address(settings: Any, tenant: Any, other_tenant: Any) -> None:
    api = limited_api(settings, rate_limit_anonymous_per_second=SLOW, rate_limit_anonymous_burst=4)
    try:
        with client_for(api, tenant.api_key) as client:
            assert client.post("/v1/search", json={"query": "x"}).status_code == 200  # verified: known here now
        with httpx.Client(base_url=api.url, headers={"Authorization": "Bearer ok_not-a-key"}) as stranger:
            refused = [stranger.post("/v1/search", json={"query": "x"}) for _ in range(6)]
        with client_for(api, None) as nobody:
            no_key = nobody.get("/v1/jobs/1")
            webhook = nobody.post("/v1/webhooks/crm", content=b"x",
                                  headers={"X-Opsctl-Company": str(tenant.company_id)})
        with client_for(api, tenant.api_key) as client:  # a key this process verified still works
            ok = client.post("/v1/search", json={"query": "x"})
        with client_for(api, other_tenant.api_key) as client:  # one it never saw waits like a stranger
            unseen = client.post("/v1/search", json={"query": "x"})
    finally:
        api.close()
    for response in refused[:4]:
        assert_error(response, 401, "unauthorized")
    for response in (*refused[4:], no_key, webhook, unseen):
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
    assert ok.status_code == 200


def test_a_limited_address_is_refused_before_any_lookup(settings: Any, tenant: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its burst, a stranger's made-up keys and unsigned webhooks cost no query at all."""
    import core.api.deps
    import core.api.routers.webhooks

    lookups: list[str] = []
    resolve, secret = core.api.deps.resolve_principal, core.api.routers.webhooks.company_secret
    monkeypatch.setattr(core.api.deps, "resolve_principal", lambda *a: lookups.append("key") or resolve(*a))
    monkeypatch.setattr(core.api.routers.webhooks, "company_secret", lambda *a: lookups.append("secret") or secret(*a))
    api = limited_api(settings, rate_limit_anonymous_per_second=SLOW, rate_limit_anonymous_burst=2)
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": "Bearer ok_made-up"}) as stranger:
            keyed = [stranger.post("/v1/search", json={"query": "x"}).status_code for _ in range(5)]
        with client_for(api, None) as stranger:
            unsigned = stranger.post("/v1/webhooks/crm", content=b"x",
                                     headers={"X-Opsctl-Company": str(tenant.company_id)})
    finally:
        api.close()
    assert keyed == [401, 401, 429, 429, 429]
    assert_error(unsigned, 429, "rate_limited")
    assert lookups == ["key", "key"]


def test_a_replayed_webhook_is_answered_again_without_a_charge(settings: Any, tenant: Any,
                                                              conn: psycopg.Connection[Any]) -> None:
    replays = metrics.WEBHOOK_REPLAYS.labels("hit")._value.get()
    api = limited_api(settings, rate_limit_per_second=SLOW, rate_limit_burst=2)
    try:
        with client_for(api, None) as sender:
            def send(body: bytes, signature: str) -> httpx.Response:
                return sender.post("/v1/webhooks/crm", content=body, headers={
                    "X-Opsctl-Company": str(tenant.company_id), "X-Opsctl-Signature": signature})

            event = b'{"id": "e1", "text": "hello"}'
            captured = sign(tenant.webhook_secret, int(time.time()), event)
            first, *again = [send(event, captured) for _ in range(3)]
            other = b'{"id": "e2", "text": "hi"}'
            second = send(other, sign(tenant.webhook_secret, int(time.time()), other))
            third = send(b"three", sign(tenant.webhook_secret, int(time.time()), b"three"))
    finally:
        api.close()
    assert first.status_code == 202 and [r.json() for r in again] == [first.json()] * 2
    assert second.status_code == 202  # the replays took none of the company's two tokens
    assert_error(third, 429, "rate_limited")
    assert metrics.WEBHOOK_REPLAYS.labels("hit")._value.get() - replays == 2
    assert jobs(conn) == 2


def test_without_redis_a_replay_is_taken_as_a_new_delivery(settings: Any, tenant: Any,
                                                           conn: psycopg.Connection[Any]) -> None:
    """Redis is a cache: down, every delivery is accepted (and charged), counted as unchecked; the
    same event is still the same job."""
    unchecked = metrics.WEBHOOK_REPLAYS.labels("error")._value.get()
    api = limited_api(settings, redis_url="redis://127.0.0.1:1", rate_limit_per_second=SLOW, rate_limit_burst=2)
    try:
        event = b'{"id": "e1", "text": "hello"}'
        headers = {"X-Opsctl-Company": str(tenant.company_id),
                   "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), event)}
        with client_for(api, None) as sender:
            answers = [sender.post("/v1/webhooks/crm", content=event, headers=headers) for _ in range(3)]
    finally:
        api.close()
    assert [r.status_code for r in answers] == [202, 202, 429]
    assert answers[0].json() == answers[1].json()
    assert metrics.WEBHOOK_REPLAYS.labels("error")._value.get() - unchecked == 3
    assert jobs(conn) == 1


def test_fake_company_ids_create_no_buckets(api: RunningApi) -> None:
    with client_for(api, None) as stranger:
        for company in range(1000, 1300):
            response = stranger.post("/v1/webhooks/crm", content=b"x",
                                     headers={"X-Opsctl-Company": str(company), "X-Opsctl-Signature": "t=1,v1=0"})
            assert response.status_code in (401, 429)
    assert len(api.services.limiter.local) == 0
    assert api.cache.client.keys("opsctl:rl:*") == []
