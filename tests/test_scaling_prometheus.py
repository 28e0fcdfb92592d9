"""Reading Prometheus: one deadline for a service's whole read, and `scale decide` when every read fails.

The Prometheus here is a stdlib HTTP server in a thread that answers as told, or hangs until the
test ends: a real socket, so timeouts and retries are the adapter's real ones.
"""

from __future__ import annotations

import json
import threading
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
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.queries.append(self.path)
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
    assert len(hanging.queries) == 1 and "backlog_query" in hanging.queries[0]
    assert "timeout=" in hanging.queries[0]  # Prometheus is told the time left, too


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
    assert len(hanging.queries) == 1
