"""Snapshots: the JSON contract, its errors, and `opsctl scale --snapshot` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from opsctl.scaling import snapshot
from tests.conftest import project_root

ISSUE_EXAMPLE = {
    "now": "2026-11-22T12:00:00Z",
    "current_replicas": 3,
    "ready_replicas": 3,
    "metrics": {
        "backlog": {"value": 450},
        "cpu": {"pods": [{"usage": 600, "request": 2000, "ready": True, "phase": "Running"},
                         {"request": 2000, "ready": True, "phase": "Running"}]},
        "broken_metric": {"error": "prometheus: no data"},
    },
    "history": {
        "recommendations": [{"at": "2026-11-22T11:58:00Z", "replicas": 4}],
        "scale_events": [{"at": "2026-11-22T11:59:30Z", "change": 2}],
    },
}

POLICY = """
services:
  core-worker:
    target: {kind: local, url: http://127.0.0.1:9}
    minReplicas: 1
    maxReplicas: 20
    metrics:
      - name: backlog
        query: max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)
        target: {type: AverageValue, averageValue: 100}
      - name: cpu
        usageQuery: u
        requestQuery: r
        target: {type: Utilization, averageUtilization: 70}
      - name: broken_metric
        query: nothing
        target: {type: Value, value: 1}
  other:
    target: {kind: local}
    maxReplicas: 4
    metrics: [{name: backlog, query: q, target: {type: AverageValue, averageValue: 10}}]
"""


def test_round_trip_of_the_issue_example() -> None:
    parsed = snapshot.parse(ISSUE_EXAMPLE)
    assert parsed.metrics["cpu"].pods is not None and parsed.metrics["cpu"].pods[1].usage is None
    again = snapshot.parse(snapshot.to_dict(parsed))
    assert again == parsed
    assert snapshot.parse({"now": "2026-11-22T12:00:00Z", "current_replicas": 2}).ready_replicas == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"now": "yesterday"}, "snapshot: now: 'yesterday' is not an ISO 8601 time"),
    ({"current_replicas": -1}, "snapshot: current_replicas: must be >= 0, got -1"),
    ({"current_replicas": "3"}, "snapshot: current_replicas: expected an integer, got '3'"),
    ({"metrics": {"backlog": {"value": "lots"}}}, "snapshot: metrics.backlog.value: expected a number, got 'lots'"),
    ({"metrics": {"backlog": {}}}, "snapshot: metrics.backlog: give exactly one of value, pods or error"),
    ({"metrics": {"cpu": {"pods": [{"request": 1, "phase": "Sleeping"}]}}},
     "snapshot: metrics.cpu.pods[0].phase: 'Sleeping' is not one of Pending, Running"),
    ({"history": {"recommendations": [{"at": "2026-11-22T11:58:00Z"}]}},
     "snapshot: history.recommendations[0].replicas: expected an integer, got None"),
    ({"extra": 1}, "snapshot: unknown key(s) extra"),
])
def test_parse_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        snapshot.parse({**ISSUE_EXAMPLE, **change})
    assert info.value.message.startswith(message)
    assert info.value.exit_code == 2


def opsctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(PYTHONPATH=str(project_root()), OPSCTL_DATA_DIR=str(cwd / ".none"))
    return subprocess.run([sys.executable, "-m", "opsctl.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_scale_from_a_snapshot_as_json(tmp_path: Path) -> None:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    (tmp_path / "snap.json").write_text(json.dumps(ISSUE_EXAMPLE))
    proc = opsctl("scale", "core-worker", "--policy", "autoscaling.yaml", "--snapshot", "snap.json", "-o", "json",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["current_replicas"], out["desired_replicas"], out["limited_by"]) == (3, 5, [])
    assert out["reason"] == "scale up 3 → 5: backlog 450 = 150/replica vs 100/replica target (ratio 1.50)"
    metrics = {m["name"]: m for m in out["metrics"]}
    # cpu: one pod at 30 % and one without a metric: on a scale-down it counts as 100 % → flips → keep 3
    assert (metrics["cpu"]["value"], metrics["cpu"]["proposal"]) == (30, 3)
    assert metrics["broken_metric"]["error"] == "prometheus: no data"
    assert metrics["backlog"] == {"name": "backlog", "type": "AverageValue", "value": 450, "target": 100,
                                  "ratio": 1.5, "proposal": 5, "error": None}


def test_scale_several_services_from_one_file_and_table(tmp_path: Path) -> None:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    other = {"now": "2026-11-22T12:00:00Z", "current_replicas": 2, "metrics": {"backlog": {"value": 5}}}
    (tmp_path / "snaps.json").write_text(json.dumps({"core-worker": ISSUE_EXAMPLE, "other": other}))
    proc = opsctl("scale", "--policy", "autoscaling.yaml", "--snapshot", "snaps.json", "-o", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [(d["service"], d["desired_replicas"]) for d in json.loads(proc.stdout)] == [("core-worker", 5),
                                                                                      ("other", 2)]
    table = opsctl("scale", "--policy", "autoscaling.yaml", "--snapshot", "snaps.json", cwd=tmp_path)
    assert table.returncode == 0 and "core-worker" in table.stdout and "3 → 5" in table.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["scale", "nope", "--policy", "autoscaling.yaml", "--snapshot", "snap.json"], 2, "no autoscaling policy for nope"),
    (["scale", "--policy", "autoscaling.yaml", "--snapshot", "snap.json"], 2, "name exactly one service"),
    (["scale", "core-worker", "--policy", "autoscaling.yaml", "--snapshot", "missing.json"], 2, "no such file"),
    (["scale", "core-worker", "--policy", "autoscaling.yaml", "--snapshot", "snap.json", "--apply"], 2,
     "never applies"),
    (["scale", "core-worker", "--policy", "bad.yaml", "--snapshot", "snap.json"], 2,
     "bad.yaml:3: services.core-worker: maxReplicas (1) must be >= minReplicas (2)"),
])
def test_scale_usage_errors_exit_2(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    (tmp_path / "bad.yaml").write_text(POLICY.replace("minReplicas: 1\n    maxReplicas: 20", "minReplicas: 2\n"
                                                                                         "    maxReplicas: 1"))
    (tmp_path / "snap.json").write_text(json.dumps(ISSUE_EXAMPLE))
    proc = opsctl(*args, cwd=tmp_path)
    assert proc.returncode == code and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [["scale"], ["scale", "decide"], ["scale", "set"], ["scale", "pause"],
                                     ["scale", "resume"], ["scale", "explain"]])
def test_every_scale_command_has_help_with_an_example(command: list[str], tmp_path: Path) -> None:
    proc = opsctl(*command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Example:" in proc.stdout, proc.stdout + proc.stderr
