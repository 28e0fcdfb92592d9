"""The search path's shape: one threadpool hop per search, cached or not (README "Performance").

A sync dependency, or a second ``run_in_threadpool``, would double the thread handoffs of the
hottest route; this counts them on the real server (in this process) instead of timing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest

from tests.conftest import RunningApi, client_for


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    original = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        named = getattr(func, "func", func)  # run_in_threadpool hands over a functools.partial
        seen.append(getattr(named, "__name__", repr(named)))
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    yield seen


def test_a_search_is_one_hop_cached_or_not(api: RunningApi, tenant: Any, hops: list[str]) -> None:
    with client_for(api, tenant.api_key) as client:
        for expect_cached in (False, True):
            hops.clear()
            response = client.post("/v1/search", json={"query": "alpha", "mode": "keyword"})
            assert response.status_code == 200
            assert response.json()["cached"] is expect_cached
            assert len(hops) == 1, hops
        hops.clear()
        refused = client.post("/v1/search", json={"query": ""})  # refused in the same hop
        assert refused.status_code == 422
        assert len(hops) == 1, hops


def test_queueing_documents_is_one_hop_and_a_stranger_none(api: RunningApi, tenant: Any, hops: list[str]) -> None:
    """Authenticate, parse, validate and store in the route's one worker thread; no key: refused on the
    event loop (the body not even read)."""
    with client_for(api, tenant.api_key) as client:
        accepted = client.post("/v1/documents", json={"documents": [{"external_id": "a", "text": "alpha"}]})
        assert accepted.status_code == 202
        assert hops == ["queue_documents"]
        hops.clear()
        assert client.post("/v1/documents", content=b"{").status_code == 400  # parsed in the same hop
        assert hops == ["queue_documents"]
    hops.clear()
    with client_for(api, None) as stranger:
        assert stranger.post("/v1/documents", content=b"{").status_code == 401
    assert hops == []


def test_resizing_the_pool_is_one_hop(settings: Any, hops: list[str]) -> None:
    from tests.test_bad_input import FakePool

    running = RunningApi(settings, workers=FakePool())
    try:
        with client_for(running, "admin-secret") as admin:
            assert admin.put("/admin/workers", json={"replicas": 2}).status_code == 200
            assert hops == ["resize"]
    finally:
        running.close()


def test_queueing_an_email_is_one_hop_and_a_stranger_none(api: RunningApi, tenant: Any, hops: list[str]) -> None:
    """Authenticate, read the Message-ID, check for a duplicate and store in one worker thread."""
    raw = b"Message-ID: <hop@x>\r\nSubject: hop\r\n\r\nbody\r\n"
    with client_for(api, tenant.api_key) as client:
        for duplicate in (False, True):
            hops.clear()
            accepted = client.post("/v1/emails", content=raw, headers={"Content-Type": "message/rfc822"})
            assert accepted.status_code == 202 and accepted.json()["duplicate"] is duplicate
            assert hops == ["queue_email"]
        hops.clear()
        assert client.post("/v1/emails", content=raw, headers={"Content-Type": "text/plain"}).status_code == 415
        assert hops == ["queue_email"]
    hops.clear()
    with client_for(api, None) as stranger:
        assert stranger.post("/v1/emails", content=raw).status_code == 401
    assert hops == []


def test_a_search_checks_out_one_pooled_connection(api: RunningApi, tenant: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The key lookup and the search's SQL share one checkout of the pool, cached or not, the key
    verified in this process or not."""
    import threading

    import core.api.routers.search as route

    inside = threading.local()
    checkouts: list[int] = []
    answer, getconn = route.answer, api.pool.getconn

    def counted_answer(*args: Any) -> Any:
        inside.on = True
        try:
            return answer(*args)
        finally:
            inside.on = False

    def counted_getconn(*args: Any, **kwargs: Any) -> Any:
        if getattr(inside, "on", False):
            checkouts.append(1)
        return getconn(*args, **kwargs)

    monkeypatch.setattr(route, "answer", counted_answer)
    monkeypatch.setattr(api.pool, "getconn", counted_getconn)
    with client_for(api, tenant.api_key) as client:
        for query, expect_cached in (("alpha", False), ("beta", False), ("beta", True)):
            checkouts.clear()
            response = client.post("/v1/search", json={"query": query, "mode": "vector"})
            assert response.status_code == 200, response.text
            assert response.json()["cached"] is expect_cached
            assert len(checkouts) == 1, (query, expect_cached, checkouts)
