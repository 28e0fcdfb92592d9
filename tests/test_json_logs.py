"""``log_format: json``: one JSON object per line from the API (an access line per request, by route
template, with the request id and the company), the workers and the daemon, all started by a real
``opsctl up``; request ids honoured (sanitised, bounded) or made, and returned. Text stays the default."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from core.config import Settings
from core.logs import FIELDS, REQUEST_ID_MAX, JsonFormatter, RequestInfo, request_id, rfc3339
from tests.conftest import free_port, project_root
from tests.test_up import ready
from tests.waiting import wait_for

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize(("header", "expected"), [
    (b"trace-abc.123", "trace-abc.123"),
    (TRACEPARENT.encode(), TRACEPARENT),
    (b"abc<script>\"'{}", "abcscript"),  # what a log viewer or a header could misread is dropped
    (b"caf\xc3\xa9 42", "caf42"),
    (b"x" * 1000, "x" * REQUEST_ID_MAX),  # bounded
])
def test_an_incoming_request_id_is_kept_sanitised_and_bounded(header: bytes, expected: str) -> None:
    assert request_id(header) == expected


@pytest.mark.parametrize("header", [None, b"", b"<>\"' \t", "é".encode()])
def test_a_request_id_is_made_when_none_is_usable(header: bytes | None) -> None:
    made = request_id(header)
    assert re.fullmatch(r"[0-9a-f]{32}", made) and made != request_id(header)


def test_a_record_is_one_line_with_every_field_and_the_exception() -> None:
    import logging

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("core.api", logging.ERROR, __file__, 1, "unexpected %s", ("error",),
                                   sys.exc_info())
    record.created = 1_764_198_245.123456
    line = JsonFormatter("api").format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert list(doc)[:len(FIELDS)] == list(FIELDS)
    assert doc["time"] == "2025-11-26T23:04:05.123Z" == rfc3339(record.created)
    assert (doc["level"], doc["component"], doc["message"]) == ("error", "api", "unexpected error")
    assert doc["request_id"] is None and doc["status"] is None
    assert "ValueError: bad\nthing" in doc["exception"]


def test_text_stays_the_default_and_unchanged() -> None:
    assert Settings.model_fields["log_format"].default == "text"
    code = ("import logging, sys; from core.logs import configure; configure('worker', sys.argv[1], "
            "'%(levelname)s worker %(message)s'); logging.getLogger('core.ingest.worker').info('batch: 1 claimed')")
    run = [sys.executable, "-c", code]
    text = subprocess.run([*run, "text"], capture_output=True, text=True, cwd=project_root(), check=True).stderr
    assert text == "INFO worker batch: 1 claimed\n"
    line = subprocess.run([*run, "json"], capture_output=True, text=True, cwd=project_root(), check=True).stderr
    doc = json.loads(line)
    assert (doc["component"], doc["level"], doc["message"]) == ("worker", "info", "batch: 1 claimed")


def json_lines(text: str, component: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed: each must be one JSON object of ``component`` with every field."""
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            doc = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(doc, dict) and set(FIELDS) <= set(doc), line
        assert doc["component"] == component and RFC3339_UTC.match(doc["time"]), line
        datetime.fromisoformat(doc["time"])
        docs.append(doc)
    assert docs, f"no {component} lines"
    return docs


def test_opsctl_up_with_json_logs_api_worker_and_daemon(db_url: str, redis_url: str, tmp_path: Path) -> None:
    from core.tenants import create_company

    with psycopg.connect(db_url, autocommit=True) as conn:
        tenant = create_company(conn, "acme")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schedule.yaml").write_text("kind: schedule\njobs:\n  autoscale:\n    every: 30s\n    enabled: false\n")
    data_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), OPSCTL_DATABASE_URL=db_url, OPSCTL_REDIS_URL=redis_url,
               OPSCTL_LOG_FORMAT="json", OPSCTL_POLICY_DIR=str(policies), PYTHONPATH=str(project_root()))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "opsctl.cli", "up", "--port", str(port), "--workers", "1",
                                 "--no-prometheus"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: ready(api), 90, "the API")
        auth = {"Authorization": f"Bearer {tenant.api_key}"}
        with httpx.Client(base_url=api, headers=auth, timeout=30) as client:
            sent = client.post("/v1/documents", json={"documents": [{"external_id": "a", "text": "the lazy dog"}]},
                               headers={"X-Request-ID": "trace-abc<script>"})
            assert sent.status_code == 202 and sent.headers["x-request-id"] == "trace-abcscript"
            (job_id,) = sent.json()["job_ids"]
            job = wait_for(lambda: (r := client.get(f"/v1/jobs/{job_id}")).json()["status"] == "done" and r, 90,
                           "the worker to finish the job")
            made = job.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", made)
            refused = httpx.get(f"{api}/v1/jobs/{job_id}", headers={"X-Request-ID": "no-key"}, timeout=10)
            assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-key"
        wait_for(lambda: "daemon" in (data_dir / "logs" / "daemon.log").read_text(), 60, "the daemon's first line")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(90)
    assert code == 0, stderr.read_text()[-3000:]

    api_lines = json_lines(stderr.read_text(), "api")
    access = {d["request_id"]: d for d in api_lines if d["logger"] == "core.api.access"}
    posted = access["trace-abcscript"]
    assert (posted["route"], posted["method"], posted["status"], posted["company_id"]) == (
        "/v1/documents", "POST", 202, tenant.company_id)
    assert isinstance(posted["latency_ms"], float) and posted["latency_ms"] >= 0
    polled = access[made]  # the route template, never the raw path
    assert (polled["route"], polled["status"], polled["company_id"]) == ("/v1/jobs/{job_id}", 200, tenant.company_id)
    assert (access["no-key"]["status"], access["no-key"]["company_id"]) == (401, None)
    assert any("stopped" in d["message"] for d in api_lines)  # what `opsctl up` says is JSON too

    workers = json_lines((data_dir / "logs" / "workers.log").read_text(), "worker")
    assert any(d["message"].startswith("batch: 1 claimed, 1 done") for d in workers)
    daemon = json_lines((data_dir / "logs" / "daemon.log").read_text(), "daemon")
    assert any(d["logger"] == "opsctl.daemon" and "started" in d["message"] for d in daemon)


def test_a_500_carries_its_request_id() -> None:
    """Starlette answers a 500 outside the middleware that adds the header to every other answer."""
    import asyncio

    from core import logs
    from core.api import errors

    token = logs.CURRENT.set(RequestInfo("req-500"))
    try:
        response = asyncio.run(errors._unexpected(None, RuntimeError("boom")))  # type: ignore[arg-type]
    finally:
        logs.CURRENT.reset(token)
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-500"


def test_made_ids_differ_across_processes_and_a_forked_child() -> None:
    code = ("import os\nfrom core.logs import request_id\nfirst = request_id(None)\nr, w = os.pipe()\n"
            "pid = os.fork()\nif pid == 0:\n    os.write(w, request_id(None).encode())\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\nprint(first, os.read(r, 64).decode(), request_id(None))")
    run = [sys.executable, "-c", code]
    one = subprocess.run(run, capture_output=True, text=True, cwd=project_root(), check=True).stdout.split()
    two = subprocess.run(run, capture_output=True, text=True, cwd=project_root(), check=True).stdout.split()
    ids = one + two
    assert len(set(ids)) == 6 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    prefixes = {i[:16] for i in ids}
    assert len(prefixes) == 4  # each process its own; the parent's two ids share theirs
