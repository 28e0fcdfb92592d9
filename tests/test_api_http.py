"""The HTTP edges around the routes: a client that hangs up, a trailing slash, HEAD, and the
middleware's own refusals, each counted in ``core_http_request_duration_seconds`` as what it was.

The servers run in this process, so the counts are read from the registry itself (as deltas: other
tests' servers count there too), and waited for as events, never timed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import RunningApi, client_for
from tests.test_bad_input import assert_error


def answered() -> Counter[tuple[str, str, str]]:
    """(method, route, status) → requests answered so far by this process's API servers."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for family in REGISTRY.collect():
        if family.name == "core_http_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    labels = sample.labels
                    counts[(labels["method"], labels["route"], labels["status"])] += int(sample.value)
    return counts


def wait_counted(before: Counter[tuple[str, str, str]], route: str, method: str) -> dict[str, int]:
    """The statuses newly counted for ``route`` and ``method``, once there is one."""
    deadline = time.monotonic() + 30  # a guard against hanging, not a measurement
    while True:
        new = {status: n for (m, r, status), n in (answered() - before).items() if (r, m) == (route, method)}
        if new or time.monotonic() > deadline:
            return new
        time.sleep(0.01)


def hang_up(api: RunningApi, head: bytes) -> None:
    """Send ``head`` promising a 100-byte body, send 9 bytes of it, and close the connection."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(head + b"Content-Length: 100\r\nContent-Type: application/json\r\n\r\n" + b'{"query":')


@pytest.mark.parametrize(("method", "path", "route"), [
    ("POST", "/v1/search", "/v1/search"),
    ("POST", "/v1/documents", "/v1/documents"),
    ("POST", "/v1/webhooks/crm", "/v1/webhooks/{source}"),
    ("PUT", "/admin/workers", "/admin/workers"),
])
def test_a_client_hanging_up_mid_body_is_499_not_a_server_error(api: RunningApi, tenant: Any, method: str,
                                                                path: str, route: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """nginx's 499: the client went away. Never a 500 (it would feed ErrorRateHigh and the
    error-rate autoscaling metric) nor a 400 (the client sent nothing wrong, it left)."""
    token = "admin-secret" if path.startswith("/admin") else tenant.api_key
    before = answered()
    hang_up(api, f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                 f"X-Opsctl-Company: {tenant.company_id}\r\n".encode())
    assert wait_counted(before, route, method) == {"499": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback for a client leaving"


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/search/"), ("GET", "/healthz/"),
                                              ("GET", "/v1/jobs/1/"), ("POST", "/v1/documents/")])
def test_a_trailing_slash_is_a_404_not_a_redirect(api: RunningApi, tenant: Any, method: str, path: str) -> None:
    """No 307 built from the Host header (an open redirect), no empty body outside the error shape."""
    with client_for(api, tenant.api_key) as client:
        response = client.request(method, path, json={"query": "x"}, headers={"Host": "evil.example"})
    assert_error(response, 404, "not_found")
    assert "location" not in response.headers


def test_head_is_served_wherever_get_is(api: RunningApi, tenant: Any) -> None:
    with client_for(api, tenant.api_key) as client:
        health = client.head("/healthz")
        job = client.head("/v1/jobs/99999")
        post_only = client.head("/v1/search")
        get = client.get("/healthz")
    assert (health.status_code, health.content) == (200, b"")
    assert health.headers["content-type"] == get.headers["content-type"] == "application/json"
    assert (job.status_code, job.content) == (404, b"")
    assert post_only.status_code == 405 and post_only.headers["allow"] == "POST"
    assert_error(get_with_wrong_method(api), 405, "method_not_allowed")


def get_with_wrong_method(api: RunningApi) -> httpx.Response:
    with httpx.Client(base_url=api.url) as client:
        response = client.post("/healthz")
    assert response.headers["allow"] == "GET, HEAD"
    return response


def test_what_the_middleware_refuses_is_counted_under_its_route(api: RunningApi, tenant: Any) -> None:
    """The size limit and the UTF-8 check answer before routing: counted all the same."""
    before = answered()
    with client_for(api, tenant.api_key) as client:
        too_large = client.post("/v1/documents", content=b"x" * (api.settings.max_body_bytes + 1))
        bad_path = client.get(httpx.URL(api.url + "/v1/jobs/%FF"))
    assert_error(too_large, 413, "body_too_large")
    assert_error(bad_path, 400, "invalid_encoding")
    counted = answered() - before
    assert counted[("POST", "/v1/documents", "413")] == 1
    assert counted[("GET", "/v1/jobs/{job_id}", "400")] == 1
