"""Bad input gets the right 4xx, a JSON error, and writes nothing."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import psycopg
import pytest

from core.tenants import sign
from tests.conftest import RunningApi, client_for


def jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM ingest_jobs").fetchone()
    assert row is not None
    return int(row[0])


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return dict(body["error"])


GOOD = {"external_id": "a", "text": "hello"}

BAD_DOCUMENT_BODIES = [
    (b'{"documents": [', 400, "invalid_json"),
    (b"\xff\xfe{}", 400, "invalid_encoding"),
    (b'{"documents": [{"external_id": "a", "text": "caf\xe9"}]}', 400, "invalid_encoding"),
    (b"[]", 422, "validation_error"),
    (b"{}", 422, "validation_error"),
    (b'{"documents": []}', 422, "validation_error"),
    (b'{"documents": "nope"}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": ""}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": "   \\n "}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "", "text": "x"}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": 5, "text": "x"}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": 12}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": "x", "metadata": []}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": "x", "created_at": "yesterday"}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": "x", "colour": "red"}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": "nul \\u0000 byte"}]}', 422, "validation_error"),
    (b'{"documents": [{"external_id": "a", "text": "x", "metadata": {"k": "\\u0000"}}]}', 422,
     "validation_error"),
    # one bad document in a batch: the whole request is refused, nothing written
    (json.dumps({"documents": [GOOD, {"external_id": "b", "text": ""}]}).encode(), 422, "validation_error"),
]


def test_validation_message_names_the_field(api: RunningApi, tenant: Any) -> None:
    with client_for(api, tenant.api_key) as client:
        response = client.post("/v1/documents", json={"documents": [GOOD, {"external_id": "b", "text": ""}]})
    error = assert_error(response, 422)
    assert "documents.1.text" in error["message"]
    assert "empty" in error["message"]


def test_twenty_megabyte_body_is_413(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    text = "x" * (20 * 1024 * 1024)
    body = json.dumps({"documents": [{"external_id": "big", "text": text}]}).encode()
    with client_for(api, tenant.api_key) as client:
        response = client.post("/v1/documents", content=body, headers={"Content-Type": "application/json"})
        assert_error(response, 413, "body_too_large")

        def chunks() -> Any:  # no Content-Length: the limit holds while streaming
            for i in range(0, len(body), 1 << 20):
                yield body[i:i + (1 << 20)]

        streamed = client.post("/v1/documents", content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(streamed, 413, "body_too_large")
    assert jobs(conn) == 0


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ok_not-a-real-key", "Basic abc", "ok_raw"])
def test_unknown_or_missing_key_is_401(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                       header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    with httpx.Client(base_url=api.url, headers=headers) as client:
        for method, path, body in (("POST", "/v1/documents", {"documents": [GOOD]}),
                                   ("POST", "/v1/search", {"query": "x"}), ("GET", "/v1/jobs/1", None),
                                   ("DELETE", "/v1/documents/a", None)):
            assert_error(client.request(method, path, json=body), 401, "unauthorized")
    assert jobs(conn) == 0


def test_revoked_key_is_401(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    from core.tenants import rotate_key

    rotated = rotate_key(conn, "acme")
    with client_for(api, tenant.api_key) as old, client_for(api, rotated.api_key) as new:
        assert_error(old.post("/v1/search", json={"query": "x"}), 401)
        assert new.post("/v1/search", json={"query": "x"}).status_code == 200


BAD_SEARCHES = [
    ({"query": ""}, 422),
    ({"query": "   "}, 422),
    ({"k": 5}, 422),
    ({"query": "x", "k": 0}, 422),
    ({"query": "x", "k": 100000}, 422),
    ({"query": "x", "k": "ten"}, 422),
    ({"query": "x", "mode": "psychic"}, 422),
    ({"query": "x", "filters": {"colour": "red"}}, 422),
    ({"query": "x", "filters": {"created_after": "soon"}}, 422),
    ({"query": "x" * 5000}, 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_SEARCHES)
def test_bad_searches(api: RunningApi, tenant: Any, body: dict[str, Any], status: int) -> None:
    with client_for(api, tenant.api_key) as client:
        assert_error(client.post("/v1/search", json=body), status, "validation_error")


def test_unknown_routes_and_methods_are_json(api: RunningApi, tenant: Any) -> None:
    with client_for(api, tenant.api_key) as client:
        assert_error(client.get("/v1/nothing-here"), 404, "not_found")
        assert_error(client.put("/v1/search", json={}), 405, "method_not_allowed")
        assert_error(client.get("/v1/jobs/not-a-number"), 422, "validation_error")
        assert_error(client.get("/v1/jobs/99999999"), 404, "not_found")


def webhook(api: RunningApi, tenant: Any, body: bytes, signature: str | None, source: str = "crm") -> httpx.Response:
    headers = {"X-Opsctl-Company": str(tenant.company_id)}
    if signature is not None:
        headers["X-Opsctl-Signature"] = signature
    with client_for(api, None) as client:
        return client.post(f"/v1/webhooks/{source}", content=body, headers=headers)


def test_webhook_bad_signatures(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    body = b'{"id": "e1", "text": "hello"}'
    now = int(time.time())
    assert_error(webhook(api, tenant, body, None), 401, "bad_signature")
    assert_error(webhook(api, tenant, body, "garbage"), 401, "bad_signature")
    assert_error(webhook(api, tenant, body, sign("whsec_wrong", now, body)), 401, "bad_signature")
    assert_error(webhook(api, tenant, body + b" ", sign(tenant.webhook_secret, now, body)), 401, "bad_signature")
    # the exact 300 s boundary is a table in test_decisions (pure, clock passed in); over HTTP the
    # clock moves between here and the server, so stay well clear of it
    stale = webhook(api, tenant, body, sign(tenant.webhook_secret, now - 360, body))
    assert "stale" in assert_error(stale, 401, "bad_signature")["message"]
    future = webhook(api, tenant, body, sign(tenant.webhook_secret, now + 360, body))
    assert_error(future, 401, "bad_signature")
    assert jobs(conn) == 0
    ok = webhook(api, tenant, body, sign(tenant.webhook_secret, now - 200, body))
    assert ok.status_code == 202
    assert jobs(conn) == 1


def test_webhook_bad_bodies(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    now = int(time.time())
    for body, status in ((b"\xff\xfe", 400), (b"", 422), (b'{"id": "e", "text": "a\\u0000b"}', 422)):
        assert_error(webhook(api, tenant, body, sign(tenant.webhook_secret, now, body)), status)
    assert_error(webhook(api, tenant, b"x", sign(tenant.webhook_secret, now, b"x"), source="BAD SOURCE!"), 404)
    with client_for(api, None) as client:
        assert_error(client.post("/v1/webhooks/crm", content=b"x"), 401, "unauthorized")
    assert jobs(conn) == 0


def test_rate_limit_is_429_with_retry_after(settings: Any, tenant: Any) -> None:
    from tests.test_api_ratelimit import SLOW

    limited = RunningApi(settings.model_copy(update={"rate_limit_per_second": SLOW, "rate_limit_burst": 3}))
    try:
        with client_for(limited, tenant.api_key) as client:
            statuses = [client.post("/v1/search", json={"query": "x"}) for _ in range(5)]
    finally:
        limited.close()
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    refused = statuses[3]
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


class FakePool:
    """A worker pool that only records what it was asked (the real one: tests/test_scaling_e2e.py)."""

    def __init__(self) -> None:
        self.replicas = 1

    def status(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "running": self.replicas, "stopping": 0, "restarts": 0, "workers": []}

    def resize(self, replicas: int) -> dict[str, Any]:
        self.replicas = replicas
        return self.status()


def test_admin_requires_token(api: RunningApi) -> None:
    with httpx.Client(base_url=api.url) as client:
        assert_error(client.get("/admin/workers"), 401, "unauthorized")
        assert_error(client.get("/admin/workers", headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(client.put("/admin/workers", content=b"{"), 401, "unauthorized")  # before the body
        admin = {"Authorization": "Bearer admin-secret"}
        assert_error(client.get("/admin/workers", headers=admin), 409, "no_local_pool")
        # a bad body is refused as such, pool or no pool; a good one reaches the (missing) pool
        assert_error(client.put("/admin/workers", headers=admin, json={"replicas": -1}), 422, "validation_error")
        assert_error(client.put("/admin/workers", headers=admin, content=b"{"), 400, "invalid_json")
        assert_error(client.put("/admin/workers", headers=admin, json={"replicas": 2}), 409, "no_local_pool")


def test_admin_resizes_the_pool(settings: Any) -> None:
    pool = FakePool()
    running = RunningApi(settings, workers=pool)
    try:
        with httpx.Client(base_url=running.url, headers={"Authorization": "Bearer admin-secret"}) as client:
            resized = client.put("/admin/workers", json={"replicas": 3})
            refused = client.put("/admin/workers", json={"replicas": 65})
    finally:
        running.close()
    assert resized.status_code == 200 and resized.json()["replicas"] == 3 == pool.replicas
    assert_error(refused, 422, "validation_error")
    assert pool.replicas == 3


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the bodies the API parsed (its servers run in this process)."""
    import core.api.body

    seen: list[int] = []
    original = core.api.body.parse_json

    def counting(body: Any) -> Any:
        seen.append(len(body))
        return original(body)

    monkeypatch.setattr(core.api.body, "parse_json", counting)
    return seen


def test_a_body_without_credentials_is_never_parsed(settings: Any, tenant: Any, parses: list[int]) -> None:
    """No key: 401 (429 once the address failed too often) before the body is parsed, whatever it
    holds; a made-up key: looked up first, the body still unparsed."""
    from tests.test_api_ratelimit import SLOW

    limited = RunningApi(settings.model_copy(update={"rate_limit_anonymous_per_second": SLOW,
                                                     "rate_limit_anonymous_burst": 2}))
    huge = b"[" * (limited.settings.max_body_bytes - 1)
    try:
        with client_for(limited, None) as anonymous:
            broken = [anonymous.post("/v1/documents", content=b"{").status_code for _ in range(10)]
            big = anonymous.post("/v1/documents", content=huge)
            admin = anonymous.put("/admin/workers", content=huge)
        with httpx.Client(base_url=limited.url, headers={"Authorization": "Bearer ok_made-up"}) as client:
            made_up = client.post("/v1/documents", content=huge)
    finally:
        limited.close()
    assert broken == [401, 401] + [429] * 8
    for response in (big, admin, made_up):
        assert_error(response, 429, "rate_limited")
    assert parses == []


def test_no_key_is_refused_before_the_body_is_even_sent(api: RunningApi) -> None:
    """The answer comes while the client still holds the whole body back: nothing waited for it."""
    import socket

    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000000\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b'"code":"unauthorized"' in answer


# -- malformed input that once escaped as 500 (issue 10) -------------------------------------------------------

DEEP = 100_000


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def doc_body(**fields: Any) -> bytes:
    return json.dumps({"documents": [{**GOOD, **fields}]}).encode()


def raw_doc(fragment: bytes) -> bytes:
    """A documents body with ``fragment`` spliced in as is (for what json.dumps cannot write)."""
    return b'{"documents": [{"external_id": "a", "text": "hello", ' + fragment + b"}]}"


MALFORMED_DOCUMENTS = [
    # nesting far past any parser's stack, and past what PostgreSQL and orjson serialize
    pytest.param(b'{"documents": ' + nested(DEEP) + b"}", 400, "invalid_json", id="body-100k-deep"),
    pytest.param(raw_doc(b'"metadata": ' + deep_object(600)), 400, "invalid_json", id="metadata-600-deep"),
    pytest.param(raw_doc(b'"metadata": {"k": ' + nested(300) + b"}"), 400, "invalid_json", id="metadata-300-deep"),
    # not JSON numbers (RFC 8259), and a number no double holds
    pytest.param(raw_doc(b'"metadata": {"k": NaN}'), 400, "invalid_json", id="metadata-NaN"),
    pytest.param(raw_doc(b'"metadata": {"k": Infinity}'), 400, "invalid_json", id="metadata-Infinity"),
    pytest.param(raw_doc(b'"metadata": {"k": -Infinity}'), 400, "invalid_json", id="metadata--Infinity"),
    pytest.param(raw_doc(b'"metadata": {"k": 1e400}'), 400, "invalid_json", id="metadata-1e400"),
    # NUL (PostgreSQL stores none) and lone surrogates (not Unicode) anywhere
    pytest.param(raw_doc(b'"metadata": {"k\\u0000": 1}'), 422, "validation_error", id="metadata-key-NUL"),
    pytest.param(raw_doc(b'"metadata": {"k": [{"deeper": "\\u0000"}]}'), 422, "validation_error",
                 id="metadata-nested-NUL"),
    pytest.param(b'{"documents": [{"external_id": "a", "text": "x\\ud800y"}]}', 400, "invalid_json",
                 id="text-lone-surrogate"),
    pytest.param(b'{"documents": [{"external_id": "\\udc00", "text": "x"}]}', 400, "invalid_json",
                 id="external-id-lone-surrogate"),
    pytest.param(raw_doc(b'"metadata": {"\\ud800": 1}'), 400, "invalid_json", id="metadata-key-lone-surrogate"),
    pytest.param(raw_doc(b'"title": "\\udfff"'), 400, "invalid_json", id="title-lone-surrogate"),
    # timestamps at the limits: an offset or a session time zone would push them out of years 1 to 9999
    pytest.param(doc_body(created_at="9999-12-31T23:00:00-05:00"), 422, "validation_error", id="created-at-max"),
    pytest.param(doc_body(created_at="9999-01-01T00:00:00Z"), 422, "validation_error", id="created-at-year-9999"),
    pytest.param(doc_body(created_at="0001-01-01T00:30:00+05:00"), 422, "validation_error", id="created-at-min"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_DOCUMENT_BODIES + MALFORMED_DOCUMENTS)
def test_bad_documents_are_refused_and_nothing_written(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                       body: bytes, status: int, code: str) -> None:
    with client_for(api, tenant.api_key) as client:
        response = client.post("/v1/documents", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, status, code)
    assert jobs(conn) == 0


def search_body(filters: bytes) -> bytes:
    return b'{"query": "hello", "filters": ' + filters + b"}"


MALFORMED_SEARCHES = [
    pytest.param(nested(DEEP), 400, "invalid_json", id="body-100k-deep"),
    pytest.param(search_body(b'{"metadata": ' + deep_object(600) + b"}"), 400, "invalid_json",
                 id="filter-metadata-600-deep"),
    pytest.param(search_body(b'{"metadata": {"k": NaN}}'), 400, "invalid_json", id="filter-NaN"),
    pytest.param(search_body(b'{"metadata": {"k": Infinity}}'), 400, "invalid_json", id="filter-Infinity"),
    pytest.param(search_body(b'{"metadata": {"k": 1e400}}'), 400, "invalid_json", id="filter-1e400"),
    pytest.param(search_body(b'{"metadata": {"k": "\\u0000"}}'), 422, "validation_error", id="filter-metadata-NUL"),
    pytest.param(search_body(b'{"metadata": {"\\u0000": "v"}}'), 422, "validation_error", id="filter-key-NUL"),
    pytest.param(search_body(b'{"external_ids": ["a\\u0000"]}'), 422, "validation_error", id="filter-id-NUL"),
    pytest.param(search_body(b'{"external_ids": ["\\ud800"]}'), 400, "invalid_json", id="filter-id-lone-surrogate"),
    pytest.param(b'{"query": "\\ud800"}', 400, "invalid_json", id="query-lone-surrogate"),
    pytest.param(search_body(b'{"created_after": "9999-12-31T23:00:00-05:00"}'), 422, "validation_error",
                 id="created-after-max"),
    pytest.param(search_body(b'{"created_before": "0001-01-01T00:30:00+05:00"}'), 422, "validation_error",
                 id="created-before-min"),
]


@pytest.mark.parametrize(("body", "status", "code"), MALFORMED_SEARCHES)
def test_malformed_searches_are_4xx(api: RunningApi, tenant: Any, body: bytes, status: int, code: str) -> None:
    with client_for(api, tenant.api_key) as client:
        response = client.post("/v1/search", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, status, code)


def test_deep_admin_body_is_400(api: RunningApi) -> None:
    with httpx.Client(base_url=api.url, headers={"Authorization": "Bearer admin-secret"}) as client:
        assert_error(client.put("/admin/workers", content=deep_object(DEEP)), 400, "invalid_json")


def signed(api: RunningApi, tenant: Any, body: bytes, **headers: str) -> httpx.Response:
    sent = {"X-Opsctl-Company": str(tenant.company_id),
            "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body), **headers}
    with client_for(api, None) as client:
        return client.post("/v1/webhooks/crm", content=body, headers=sent)


@pytest.mark.parametrize("body", [
    pytest.param(nested(DEEP), id="100k-deep"),
    pytest.param(b'{"id": "e1", "text": "hi", "type": NaN}', id="NaN"),
    pytest.param(b'{"id": "e1", "text": "hi", "type": 1e400}', id="1e400"),
    pytest.param(b'{"id": "e1", "text": "hi \\ud800"}', id="lone-surrogate-text"),
    pytest.param(b'{"id": "\\udc00", "text": "hi"}', id="lone-surrogate-id"),
    pytest.param(b'{"id": "e1", "amount": 1e400}', id="1e400-in-text-fallback"),
    pytest.param(b'{"id": "e1", "deep": ' + nested(600) + b"}", id="600-deep-in-text-fallback"),
])
def test_webhook_events_that_are_not_json_are_stored_as_text(api: RunningApi, tenant: Any,
                                                              conn: psycopg.Connection[Any], body: bytes) -> None:
    """The documented rule: a body that is not JSON is stored as text under its digest (nothing lost)."""
    import hashlib

    response = signed(api, tenant, body)
    assert response.status_code == 202, response.text
    assert response.json()["external_id"] == f"crm:{hashlib.sha256(body).hexdigest()}"
    assert jobs(conn) == 1


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/vnd.crm+json"])
@pytest.mark.parametrize("body", [
    pytest.param(nested(DEEP), id="100k-deep"),
    pytest.param(b'{"id": "e1", "text": "hi", "type": NaN}', id="NaN"),
    pytest.param(b'{"id": "e1", "text": "hi", "type": 1e400}', id="1e400"),
    pytest.param(b'{"id": "e1", "text": "hi \\ud800"}', id="lone-surrogate-text"),
    pytest.param(b'{"id": "e1", "text": "cut', id="truncated"),
])
def test_webhook_events_declared_json_that_are_not_are_400(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                           body: bytes, content_type: str) -> None:
    """A sender that says JSON and sends something else has a bug to hear about: not a document of brackets."""
    response = signed(api, tenant, body, **{"Content-Type": content_type})
    assert_error(response, 400, "invalid_json")
    assert content_type.split(";")[0] in response.json()["error"]["message"]
    assert jobs(conn) == 0


def test_webhook_event_with_nul_anywhere_is_422(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    assert_error(signed(api, tenant, b'{"id": "e1", "text": "hi", "extra": {"k": "\\u0000"}}'), 422,
                 "validation_error")
    assert jobs(conn) == 0


def raw_header(value: str) -> bytes:
    """A header value as a client may send it: Latin-1 when it can be (servers decode headers as Latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


@pytest.mark.parametrize(("headers", "query"), [
    pytest.param({"X-Opsctl-Company": "²"}, "", id="superscript-two-header"),
    pytest.param({"X-Opsctl-Company": "١٢"}, "", id="arabic-digits-header"),
    pytest.param({}, "?company=%C2%B2", id="superscript-two-query"),
    pytest.param({"X-Opsctl-Company": "9" * 40}, "", id="beyond-bigint"),
    pytest.param({"X-Opsctl-Company": "-1"}, "", id="negative"),
    pytest.param({"X-Opsctl-Signature": "t=" + "9" * 400 + ",v1=00"}, "", id="400-digit-t"),
    pytest.param({"X-Opsctl-Signature": "t=1e9,v1=00"}, "", id="float-t"),
    pytest.param({"X-Opsctl-Signature": "t=١٢٣,v1=00"}, "", id="arabic-digit-t"),
])
def test_webhook_header_junk_is_401(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                    headers: dict[str, str], query: str) -> None:
    body = b'{"id": "e1", "text": "hello"}'
    sent = {"X-Opsctl-Company": str(tenant.company_id),
            "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body)}
    sent.update(headers)
    if query:
        del sent["X-Opsctl-Company"]
    with client_for(api, None) as client:
        response = client.post(f"/v1/webhooks/crm{query}", content=body,
                               headers={k: raw_header(v) for k, v in sent.items()})
    assert_error(response, 401)
    assert jobs(conn) == 0


def test_webhook_non_ascii_v1_is_401(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    body = b'{"id": "e1", "text": "hello"}'
    now = int(time.time())
    for v1 in ("é" * 64, "\uff10" * 64, sign(tenant.webhook_secret, now, body).split("v1=")[1][:-1] + "é"):
        header = raw_header(f"t={now},v1={v1}")
        with client_for(api, None) as client:
            response = client.post("/v1/webhooks/crm", content=body,
                                   headers={"X-Opsctl-Company": str(tenant.company_id),
                                            "X-Opsctl-Signature": header})
        assert_error(response, 401, "bad_signature")
    assert jobs(conn) == 0


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/v1/documents/%FF%FE"),
    ("GET", "/v1/documents/%FF%FE"),
    ("DELETE", "/v1/documents/ok%C3"),
    ("DELETE", "/v1/documents/%ED%A0%80"),  # an encoded surrogate is not UTF-8 either
    ("GET", "/v1/jobs/%FF"),
    ("POST", "/v1/webhooks/%FF"),
])
def test_invalid_utf8_in_the_path_is_400(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                         method: str, path: str) -> None:
    with client_for(api, tenant.api_key) as client:
        response = client.request(method, httpx.URL(api.url + path))
    assert_error(response, 400, "invalid_encoding")
    assert jobs(conn) == 0


def test_invalid_utf8_in_the_query_is_400(api: RunningApi, tenant: Any) -> None:
    with client_for(api, None) as client:
        assert_error(client.post(httpx.URL(api.url + "/v1/webhooks/crm?company=%FF"), content=b"x"), 400,
                     "invalid_encoding")


def test_a_path_names_exactly_its_document(api: RunningApi, tenant: Any, settings: Any, db_url: str) -> None:
    """A newline in an external id is data, not the end of the path (``/a%0A`` is not ``/a``)."""
    from tests.conftest import drain

    with client_for(api, tenant.api_key) as client:
        docs = [{"external_id": "abc", "text": "x"}, {"external_id": "a\nb", "text": "y"}]
        assert client.post("/v1/documents", json={"documents": docs}).status_code == 202
        drain(settings, db_url)
        assert client.get("/v1/documents/abc").status_code == 200
        assert_error(client.get("/v1/documents/abc%0A"), 404, "not_found")
        assert client.get("/v1/documents/a%0Ab").json()["external_id"] == "a\nb"


@pytest.mark.parametrize("signature", [None, "garbage", "t=1,v1=00", f"t={int(time.time())},v1={'0' * 64}"],
                         ids=["none", "garbage", "old", "now"])  # ids the same in every xdist worker
def test_a_webhook_does_not_tell_which_companies_exist(api: RunningApi, tenant: Any, signature: str | None) -> None:
    """A company that does not exist fails every check exactly as one that does."""
    def answer(company: int) -> tuple[int, Any]:
        headers = {"X-Opsctl-Company": str(company)}
        if signature is not None:
            headers["X-Opsctl-Signature"] = signature
        with client_for(api, None) as client:
            response = client.post("/v1/webhooks/crm", content=b'{"id": "e1", "text": "hi"}', headers=headers)
        found = response.json()
        # a stale signature's message says how many seconds old it is: two requests may straddle a second
        found["error"]["message"] = re.sub(r"\d+", "N", found["error"]["message"])
        return response.status_code, found

    existing, missing = answer(tenant.company_id), answer(999_999)
    assert existing == missing
    assert existing[0] == 401 and existing[1]["error"]["code"] == "bad_signature"


@pytest.mark.parametrize(("headers", "query", "named"), [
    ({"X-Opsctl-Company": "acme"}, "", "X-Opsctl-Company"),
    ({"X-Opsctl-Company": "0"}, "", "X-Opsctl-Company"),
    ({"X-Opsctl-Company": "007"}, "", "X-Opsctl-Company"),
    ({}, "?company=acme", "?company="),
])
def test_a_company_named_by_name_is_told_to_use_its_id(api: RunningApi, tenant: Any, headers: dict[str, str],
                                                       query: str, named: str) -> None:
    with client_for(api, None) as client:
        response = client.post(f"/v1/webhooks/crm{query}", content=b"x", headers=headers)
    message = assert_error(response, 401, "unauthorized")["message"]
    assert message.startswith(f"{named} must be the company's numeric id"), message
    assert "opsctl tenant list" in message


@pytest.mark.parametrize("path", ["/v1/jobs/%201", "/v1/jobs/1%20", "/v1/jobs/1_000", "/v1/jobs/01", "/v1/jobs/+1",
                                  "/v1/jobs/0", "/v1/jobs/9223372036854775808", "/v1/jobs/%D9%A1"])
def test_a_job_id_is_its_decimal_digits(api: RunningApi, tenant: Any, path: str) -> None:
    """Python's int() reads " 1", "1_000" and "01" as numbers: a path naming job 1 must say "1"."""
    with client_for(api, tenant.api_key) as client:
        assert client.post("/v1/documents", json={"documents": [GOOD]}).json()["job_ids"] == [1]
        assert client.get("/v1/jobs/1").status_code == 200
        assert_error(client.get(httpx.URL(api.url + path)), 422, "validation_error")


@pytest.mark.parametrize("path", ["/v1/documents/%20", "/v1/documents/%09%0A", "/v1/documents/%E3%80%80"])
def test_a_blank_external_id_in_the_path_is_422(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                path: str) -> None:
    """The path takes the ids a body takes: a blank one names no document that could exist."""
    with client_for(api, tenant.api_key) as client:
        assert_error(client.delete(httpx.URL(api.url + path)), 422, "validation_error")
        assert_error(client.get(httpx.URL(api.url + path)), 422, "validation_error")
    assert jobs(conn) == 0


@pytest.mark.parametrize("kind", ["job", "thread"])
@pytest.mark.parametrize("digits", ["9223372036854775808", "12345678901234567890", "9" * 5000])
def test_an_id_past_the_largest_says_it_is_out_of_range(api: RunningApi, tenant: Any, kind: str, digits: str) -> None:
    """A 20-digit id is decimal digits: the answer names the real limit, not the digits."""
    with client_for(api, tenant.api_key) as client:
        message = assert_error(client.get(f"/v1/{kind}s/{digits}"), 422, "validation_error")["message"]
        assert f"a {kind} id is at most 9223372036854775807 (out of range)" in message, message
        assert "decimal digits" not in message
        assert "decimal digits" in assert_error(client.get(f"/v1/{kind}s/1_000"), 422, "validation_error")["message"]
