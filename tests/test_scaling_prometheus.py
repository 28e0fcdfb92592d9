"""Reading Prometheus: one deadline for a service's whole read, and `scale decide` when every read fails.

The Prometheus here is a stdlib HTTP server in a thread that answers as told, or hangs until the
test ends: a real socket, so timeouts and retries are the adapter's real ones.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.workerpool import WorkerPool
from opsctl.scaling.policy import MetricSpec
from opsctl.scaling.prometheus import PrometheusSource
from opsctl.scaling.targets import PodStatus, TargetState
from tests.conftest import RunningApi

HANG_SECONDS = 60  # far longer than any deadline below: a read that waited for it would be obvious


class FakeProm:
    """Answers each GET /api/v1/query with the next of ``answers`` (status, body), or hangs when they run out."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]] | None = None) -> None:
        self.answers = list(answers or [])
        self.queries: list[str] = []
        self.release = threading.Event()
        self.arrived = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner.arrived:
                    owner.queries.append(self.path)
                    owner.arrived.notify_all()
                if not owner.answers:
                    owner.release.wait(HANG_SECONDS)
                    return
                status, body = owner.answers.pop(0)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self, count: int) -> list[str]:
        """The queries once ``count`` have reached the handler: the client may give up on its deadline
        before this server's thread (on a loaded machine) has read the request."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.queries) >= count, timeout=HANG_SECONDS)
            return list(self.queries)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging() -> Iterator[FakeProm]:
    prom = FakeProm()
    yield prom
    prom.close()


def vector(value: str) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "success", "data": {"resultType": "vector",
                                               "result": [{"metric": {}, "value": [1.7e9, value]}]}}


def specs(*names: str) -> list[MetricSpec]:
    return [MetricSpec.model_validate({"name": n, "query": f"{n}_query", "target": {"type": "Value", "value": 1}})
            for n in names]


STATE = TargetState(replicas=2, ready_replicas=2, pods=(PodStatus("w-1", True), PodStatus("w-2", True)))


def test_a_hanging_prometheus_costs_one_deadline_for_all_queries(hanging: FakeProm) -> None:
    cpu = MetricSpec.model_validate({"name": "cpu", "usageQuery": "u", "requestQuery": "r",
                                     "target": {"type": "Utilization", "averageUtilization": 70}})
    read = PrometheusSource(hanging.url, timeout=1).read([*specs("backlog", "p95"), cpu], STATE)
    assert read["backlog"].error == "prometheus: deadline exceeded: no answer within timeoutSeconds 1"
    for later in ("p95", "cpu"):
        assert read[later].error == ("prometheus: deadline exceeded: timeoutSeconds 1 was spent before this "
                                     "query (one deadline for all of a service's queries)")
    # the first query waited for the deadline and was not retried; the others were never sent
    queries = hanging.received(1)
    assert len(queries) == 1 and "backlog_query" in queries[0]
    assert "timeout=" in queries[0]  # Prometheus is told the time left, too


class SlowServer:
    """A raw socket server that answers one connection with ``opening`` and then ``drip`` every ``pause``
    seconds for ``SLOW_SECONDS``, far longer than any deadline here; ``closed`` is set when the client hangs up."""

    def __init__(self, opening: bytes, drip: bytes, pause: float = 0.1) -> None:
        self.opening, self.drip, self.pause = opening, drip, pause
        self.closed, self.stop = threading.Event(), threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(self.opening)
                    deadline = time.monotonic() + SLOW_SECONDS
                    while time.monotonic() < deadline and not self.stop.wait(self.pause):
                        conn.sendall(self.drip)
                except OSError:  # EPIPE / ECONNRESET: the client closed the connection
                    self.closed.set()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


SLOW_SECONDS = 60  # the server would keep going this long; the deadline below is 1 s
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(("case", "opening", "drip"), [
    ("the headers a byte at a time", b"HTTP/1.1 200 OK\r\nX-Pad: ", b"a"),  # 18.04 s before
    ("the body a byte at a time", OK_HEAD + b"Content-Length: 100000\r\n\r\n[", b" "),  # 6.05 s before
    ("an endless chunked body", OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\n \r\n"),
])
def test_a_slow_sender_gets_the_deadline_and_is_hung_up_on(case: str, opening: bytes, drip: bytes) -> None:
    server = SlowServer(opening, drip)
    try:
        started = time.monotonic()
        read = PrometheusSource(server.url, timeout=1).read(specs("m"), STATE)["m"]
        elapsed = time.monotonic() - started
        assert read.error == "prometheus: deadline exceeded: no answer within timeoutSeconds 1"
        assert server.closed.wait(30), "the connection was left open"
    finally:
        server.close()
    assert elapsed < 10, f"{elapsed:.1f} s against timeoutSeconds 1 and a server that drips for {SLOW_SECONDS} s"


def test_an_answer_past_10_mib_is_refused_as_it_arrives() -> None:
    """A server that would send forever, fast: the cap is checked between chunks, not after the end."""
    server = SlowServer(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b" " * 65536 + b"\r\n",
                        pause=0)
    try:
        read = PrometheusSource(server.url, timeout=30).read(specs("m"), STATE)["m"]
        assert server.closed.wait(30)
    finally:
        server.close()
    assert read.error == "prometheus: an answer of more than 10,485,760 bytes (aggregate the query)"


def test_a_name_that_never_resolves_costs_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system resolver hanging (a dead DNS server): the deadline covers the name lookup too."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("prometheus.hangs.test", b"prometheus.hangs.test"):  # anyio passes it IDNA-encoded
            release.wait(SLOW_SECONDS)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        started = time.monotonic()
        read = PrometheusSource("http://prometheus.hangs.test:9090", timeout=1).read(specs("m"), STATE)["m"]
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert read.error == "prometheus: deadline exceeded: no answer within timeoutSeconds 1"
    assert elapsed < 10, f"{elapsed:.1f} s against timeoutSeconds 1 and a lookup that hangs for {SLOW_SECONDS} s"


def test_a_503_is_retried_once_within_the_deadline() -> None:
    prom = FakeProm([(503, {"status": "error", "errorType": "unavailable", "error": "starting"}), vector("7"),
                     (503, {}), (503, {"status": "error", "errorType": "unavailable", "error": "still starting"})])
    try:
        read = PrometheusSource(prom.url, timeout=5).read(specs("first", "second"), STATE)
    finally:
        prom.close()
    assert read["first"].value == 7.0
    assert read["second"].error == "prometheus: HTTP 503: unavailable: still starting"
    assert len(prom.queries) == 4


@pytest.mark.parametrize(("answer", "error"), [
    ((200, {"status": "success", "data": {"resultType": "vector", "result": []}}), "prometheus: no data"),
    (vector("NaN"), "prometheus: NaN (e.g. a rate over no requests)"),
    (vector("+Inf"), "prometheus: infinite value"),
    ((200, {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "-5"]}}), None),
    ((400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}),
     "prometheus: HTTP 400: bad_data: parse error at char 3"),
    ((200, {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1.7e9, "1"]]}]}}), "prometheus: a sample without a value"),
])
def test_answers_become_values_or_errors(answer: tuple[int, dict[str, Any]], error: str | None) -> None:
    prom = FakeProm([answer])
    try:
        read = PrometheusSource(prom.url, timeout=5).read(specs("m"), STATE)["m"]
    finally:
        prom.close()
    if error is None:
        assert (read.value, read.error) == (-5.0, None)  # passed on: the engine says it cannot be right
    else:
        assert read.error is not None and read.error.startswith(error), read.error


def by_pod(*values: tuple[str, str]) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": pod}, "value": [1.7e9, value]} for pod, value in values]}}


CPU = MetricSpec.model_validate({"name": "cpu", "usageQuery": "u", "requestQuery": "r",
                                 "target": {"type": "Utilization", "averageUtilization": 70}})


@pytest.mark.parametrize("broken", ["NaN", "+Inf", "-Inf"])
def test_a_pod_whose_usage_is_not_a_number_is_a_pod_without_a_metric(broken: str) -> None:
    """As the HPA treats a pod with no sample: the engine counts it as missing, and the snapshot stays JSON."""
    prom = FakeProm([by_pod(("w-1", broken), ("w-2", "300")), by_pod(("w-1", "1000"), ("w-2", "1000"))])
    try:
        read = PrometheusSource(prom.url, timeout=5).read([CPU], STATE)["cpu"]
    finally:
        prom.close()
    assert read.error is None and read.pods is not None
    assert [(p.name, p.usage, p.request) for p in read.pods] == [("w-1", None, 1000.0), ("w-2", 300.0, 1000.0)]


def test_a_pod_whose_request_is_not_a_number_fails_the_metric() -> None:
    prom = FakeProm([by_pod(("w-1", "300"), ("w-2", "300")), by_pod(("w-1", "NaN"), ("w-2", "1000"))])
    try:
        read = PrometheusSource(prom.url, timeout=5).read([CPU], STATE)["cpu"]
    finally:
        prom.close()
    assert read.error == "prometheus: NaN (e.g. a rate over no requests)"


# --- `opsctl scale decide` when every metric fails: exit 1, the reason on stderr, the output printed ---

POLICY = """
prometheus: {{url: "{url}", timeoutSeconds: 1}}
services:
  core-worker:
    target: {{kind: local}}
    minReplicas: 1
    maxReplicas: 5
    metrics:
      - {{name: backlog, query: backlog_q, target: {{type: AverageValue, averageValue: 10}}}}
      - {{name: p95, query: p95_q, target: {{type: Value, value: 2}}}}
"""


@pytest.fixture
def pool_api(settings: Settings) -> Iterator[RunningApi]:
    """The real API with a worker pool that is never started: /admin/workers reports 2 replicas."""
    running = RunningApi(settings, workers=WorkerPool(env={}, replicas=2))
    yield running
    running.close()


def test_scale_decide_exits_1_when_every_metric_failed(tmp_path: Path, settings: Settings, pool_api: RunningApi,
                                                      hanging: FakeProm, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from opsctl.cli import main

    assert settings.database_url
    monkeypatch.setenv("OPSCTL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("OPSCTL_API_URL", pool_api.url)
    monkeypatch.setenv("OPSCTL_ADMIN_TOKEN", "admin-secret")
    policy = tmp_path / "autoscaling.yaml"
    policy.write_text(POLICY.format(url=hanging.url))
    assert main(["scale", "decide", "core-worker", "--policy", str(policy), "--apply", "-o", "json"]) == 1
    out, err = capsys.readouterr()
    decision = json.loads(out)  # printed all the same
    assert (decision["current_replicas"], decision["desired_replicas"]) == (2, 2)
    assert (decision["limited_by"], decision["applied"], decision["consecutive_failures"]) == (["fallback"], False, 1)
    assert err == ("error: core-worker: keep 2: all 2 metric(s) failed (backlog: prometheus: deadline exceeded: "
                   "no answer within timeoutSeconds 1) 1 time(s) in a row, limited by fallback hold\n")
    assert len(hanging.received(1)) == 1
