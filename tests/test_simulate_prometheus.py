"""`scale simulate --from/--to` against a real Prometheus holding recorded history.

The history is written as OpenMetrics with timestamps and turned into TSDB blocks by `promtool
tsdb create-blocks-from openmetrics` before Prometheus starts, so the test reads exactly what was
recorded (no scrape timing): two workers at 10 jobs/s, 30 jobs/s arriving for ten minutes, then
the queue draining; an arrivals counter and a jobs-done counter beside it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.embedded import EmbeddedPrometheus, prometheus_binary
from tests.conftest import free_port, outside_pytest_tmp

STEP = 15
CAPACITY = 10.0  # jobs per second one worker serves
READY = 2
ARRIVING = 30.0  # jobs per second for the first ten minutes
POINTS = 240  # an hour at 15 s

POLICY = """
prometheus: {{url: "{url}"}}
services:
  core-worker:
    target: {{kind: local}}
    minReplicas: 1
    maxReplicas: 10
    metrics:
      - name: backlog
        query: max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)
        target: {{type: AverageValue, averageValue: 100}}
"""


def recorded(start: int) -> tuple[str, list[float]]:
    """OpenMetrics of the hour from ``start`` (unix seconds) and the backlog it records."""
    backlog, done, arrived = [], [], []
    b = total_done = total_in = 0.0
    for i in range(POINTS):
        backlog.append(b)
        done.append(total_done)
        arrived.append(total_in)
        incoming = ARRIVING * STEP if i < 40 else 0.0
        served = min(b + incoming, READY * CAPACITY * STEP)
        b += incoming - served
        total_done += served
        total_in += incoming
    lines = ["# TYPE core_ingest_queue_depth gauge"]
    lines += [f"core_ingest_queue_depth {v} {start + i * STEP}" for i, v in enumerate(backlog)]
    lines += ["# TYPE core_ingest_queue_in_flight gauge"]
    lines += [f"core_ingest_queue_in_flight 0 {start + i * STEP}" for i in range(POINTS)]
    lines += ["# TYPE core_workers gauge"]
    lines += [f'core_workers{{state="running"}} {READY} {start + i * STEP}' for i in range(POINTS)]
    lines += ["# TYPE core_ingest_accepted counter"]
    lines += [f"core_ingest_accepted_total {v} {start + i * STEP}" for i, v in enumerate(arrived)]
    lines += ["# TYPE core_ingest_jobs counter"]
    lines += [f"core_ingest_jobs_total {v} {start + i * STEP}" for i, v in enumerate(done)]
    lines.append("# EOF")
    return "\n".join(lines) + "\n", backlog


@pytest.fixture(scope="module")
def history() -> Iterator[dict[str, Any]]:
    assert prometheus_binary() and shutil.which("promtool"), "Prometheus and promtool must be installed"
    root = outside_pytest_tmp("opsctl-test-simulate-")
    now = int(datetime.now(UTC).timestamp())
    start = now - 3 * 3600 - now % STEP
    text, backlog = recorded(start)
    (root / "history.om").write_text(text)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
                    str(root / "prom" / "tsdb")], check=True, capture_output=True, timeout=120)
    prom = EmbeddedPrometheus(root / "prom", f"127.0.0.1:{free_port()}", port=free_port(), scrape_interval="1h")
    prom.start()
    policies = root / "policies"
    policies.mkdir()
    (policies / "autoscaling.yaml").write_text(POLICY.format(url=prom.url))
    try:
        yield {"start": datetime.fromtimestamp(start, UTC), "backlog": backlog, "policies": policies, "root": root}
    finally:
        prom.stop()
        shutil.rmtree(root, ignore_errors=True)


def simulate(history: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             *args: str, minutes: int = 59, skip: int = 0, code: int = 0) -> tuple[str, str]:
    from opsctl.cli import main

    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(history["policies"]))
    monkeypatch.setenv("OPSCTL_DATA_DIR", str(history["root"] / "data"))
    start = history["start"] + timedelta(minutes=skip)  # a rate() has its first value a step in
    end = history["start"] + timedelta(minutes=minutes)
    argv = ["scale", "simulate", "core-worker", "--from", start.isoformat(), "--to", end.isoformat(),
            "--step", str(STEP), "--replicas", str(READY), *args]
    assert main(argv) == code, capsys.readouterr()
    return capsys.readouterr()


def test_demand_reconstructed_from_the_backlog_replays_the_recorded_queue(
        history: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pinned = history["policies"] / "pinned.yaml"
    pinned.write_text((history["policies"] / "autoscaling.yaml").read_text().replace("maxReplicas: 10",
                                                                                     "maxReplicas: 2")
                      .replace("minReplicas: 1", "minReplicas: 2"))
    out, _ = simulate(history, monkeypatch, capsys, "--capacity", str(CAPACITY), "-p", str(pinned), "-o", "json")
    timeline = json.loads(out)["policies"][0]["timeline"]
    assert len(timeline) == 237  # 59 minutes at 15 s, and the last step
    # 30/s while work waited; the queue drained (80 min of 20/s) and the idle tail is 0
    assert [p["demand"] for p in timeline[:39]] == pytest.approx([ARRIVING] * 39)
    assert [p["backlog"] for p in timeline] == pytest.approx(history["backlog"][:237])


def test_the_real_policy_scales_the_reconstructed_load(
        history: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = simulate(history, monkeypatch, capsys, "--capacity", str(CAPACITY), "--against", "hpa-default")
    assert "demand reconstructed from the backlog (max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight))" \
        " and the ready replicas (max(core_workers{state=\"running\"}))" in err
    assert "hpa-default" in out


def test_a_demand_query_and_capacity_measured_from_history(
        history: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = simulate(history, monkeypatch, capsys, "--demand-query", "sum(rate(core_ingest_accepted_total[1m]))",
                        "--throughput-query", "sum(rate(core_ingest_jobs_total[1m]))", "-o", "json", skip=1)
    timeline = json.loads(out)["policies"][0]["timeline"]
    assert timeline[10]["demand"] == pytest.approx(ARRIVING)
    assert timeline[100]["demand"] == 0
    _, err = simulate(history, monkeypatch, capsys, "--demand-query", "sum(rate(core_ingest_accepted_total[1m]))",
                      "--throughput-query", "sum(rate(core_ingest_jobs_total[1m]))", "--no-chart", skip=1)
    assert f"capacity {CAPACITY:g}/s per replica (measured from sum(rate(core_ingest_jobs_total[1m]))" in err


def test_a_gap_in_the_history_and_a_query_of_several_series_exit_2(
        history: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = simulate(history, monkeypatch, capsys, "--capacity", "10", minutes=90, code=2)
    assert "a gap in the history" in err and err.count("\n") == 1
    _, err = simulate(history, monkeypatch, capsys, "--capacity", "10", "--demand-query",
                      "core_ingest_queue_depth or core_workers", code=2)
    assert "answered 2 series" in err


def test_prometheus_unreachable_exits_1(history: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    down = history["policies"] / "down.yaml"
    down.write_text(POLICY.format(url=f"http://127.0.0.1:{free_port()}"))
    _, err = simulate(history, monkeypatch, capsys, "--capacity", "10", "-p", str(down), code=1)
    assert "prometheus: cannot reach" in err
