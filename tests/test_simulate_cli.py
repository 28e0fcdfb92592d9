"""``opsctl scale simulate``: bad traces refused with file:line (exit 2), the JSON schema of the issue,
the table and terminal chart, --plot, --against, --tune, --forecast, and the capacity it needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsctl.simulate.trace import TraceError, parse

POLICY = """
services:
  core-worker:
    target: {kind: local}
    minReplicas: 1
    maxReplicas: 20
    tolerance: {scaleUp: 0.0, scaleDown: 0.1}
    metrics:
      - name: backlog
        query: max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)
        target: {type: AverageValue, averageValue: 100}
      - name: oldest-pending
        query: max(core_ingest_oldest_pending_seconds)
        target: {type: Value, value: 600}
    behavior:
      scaleDown:
        stabilizationWindowSeconds: 300
        policies: [{type: Pods, value: 2, periodSeconds: 60}]
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("OPSCTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPSCTL_CAPACITY_FILE", raising=False)
    return tmp_path


def opsctl(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    from opsctl.cli import main

    assert main(["scale", "simulate", *args]) == code, capsys.readouterr()
    out, err = capsys.readouterr()
    return out, err


# --- bad traces ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, line, reason", [
    ("time,demand\n0,1\n30,2\n15,3\n", 4, "time 15 is not after the row before (line 3): sort the trace by time"),
    ("time,demand\n0,1\n15,1\n15,1\n", 4, "is not after the row before"),
    ("time,demand\n0,1\n15,1\n30,1\n75,1\n", 5,
     "a gap: 45 s since the row before (line 4), the trace's interval is 15 s"),
    ("time,demand\n0,1\n15,1\n20,1\n", 4, "5 s since the row before (line 3), the trace's interval is 15 s"),
    ("time,demand\n0,1\n15,-3\n", 3, "demand -3 is negative"),
    ("time,demand\n0,1\n15,lots\n", 3, "demand 'lots' is not a number"),
    ("time,demand\n0,1\n15,nan\n", 3, "demand 'nan' is not a finite number"),
    ("time,demand\nnoon,1\n", 2, "time 'noon' is neither seconds nor an ISO 8601 time"),
    ("time,demand\n0,1\n2026-11-20T09:00:00Z,1\n", 3, "time mixes seconds and ISO 8601 times"),
    ("time,demand\n0,1,7\n", 2, "3 field(s), the header has 2"),
    ("time,load\n0,1\n", 1, "the header has no demand column"),
    ("time,demand,cpu\n0,1,3\n", 1, "column(s) cpu are not metrics of the policy"),
    ("time,demand,backlog\n0,1,-1\n", 2, "backlog -1 is negative"),
    ("time,demand\n", None, "no rows after the header"),
    ("time,demand\n0,4\n", None, "one row after the header: a trace needs two or more"),
    ("", None, "empty: expected a header line"),
    ("time,demand\n0001-01-01T00:00:00+01:00,1\n", 2, "time '0001-01-01T00:00:00+01:00' is out of range"),
])
def test_bad_traces_name_the_file_and_line(text: str, line: int | None, reason: str) -> None:
    with pytest.raises(TraceError) as caught:
        parse(text, "load.csv", ["backlog", "oldest-pending"])
    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"trace load.csv{f':{line}' if line else ''}: ")


def test_a_good_trace_in_iso_times_with_a_metric_column() -> None:
    tr = parse("time,demand,backlog\n2026-11-20T09:00:00Z,1.5,\n2026-11-20T09:00:15+00:00,2,40\n"
               "2026-11-20T09:00:30Z,0,\n", "t.csv", ["backlog"])
    assert tr.times == (0, 15, 30) and tr.demand == (1.5, 2, 0) and tr.step == 15 and tr.duration == 45
    assert tr.columns == {"backlog": (None, 40.0, None)}
    assert tr.start is not None and tr.start.isoformat() == "2026-11-20T09:00:00+00:00"


@pytest.mark.parametrize("text, reason", [
    ("time,demand\n0,1\n30,2\n15,3\n", ":4: time 15 is not after the row before"),
    ("time,demand\n0,1\n15,1\n30,1\n75,1\n", ":5: a gap: 45 s"),
    ("time,demand\n0,1\n15,-3\n", ":3: demand -3 is negative"),
    ("time,demand\n0,1\n15,lots\n", ":3: demand 'lots' is not a number"),
])
def test_the_command_refuses_a_bad_trace_with_one_line_and_exit_2(
        env: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str) -> None:
    path = env / "load.csv"
    path.write_text(text)
    out, err = opsctl(capsys, "core-worker", "--trace", str(path), "--capacity", "10", code=2)
    assert out == ""
    assert err == f"error: trace {path}{reason}" + err.split(reason, 1)[1]
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "-99999999999d", "-1e400d", "-nand"])
def test_a_time_out_of_range_is_bad_usage_not_a_failure(
        env: Path, capsys: pytest.CaptureFixture[str], since: str) -> None:
    out, err = opsctl(capsys, "core-worker", "--capacity", "10", "--from", since, code=2)
    assert out == "" and err.startswith("error: ") and repr(since) in err
    assert err.count("\n") == 1 and "Overflow" not in err


# --- the command -----------------------------------------------------------------------------------


STEP = "step:base=50,peak=600,at=60,duration=1800"


def test_json_is_the_issues_schema(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", "--startup", "20",
                    "--against", "hpa-default", "-o", "json")
    data = json.loads(out)
    assert set(data) == {"service", "policies"} and data["service"] == "core-worker"
    assert [p["name"] for p in data["policies"]] == ["policy", "hpa-default"]
    for p in data["policies"]:
        assert set(p) == {"name", "timeline", "summary"}
        assert set(p["summary"]) == {"replica_minutes", "underprovisioned_seconds", "slo_violation_seconds",
                                     "max_backlog", "scale_events", "flaps", "time_to_capacity_seconds"}
        assert len(p["timeline"]) == 120  # one point per 15 s sync over 1800 s
        assert set(p["timeline"][0]) == {"t", "demand", "desired_replicas", "ready_replicas", "backlog"}
    mine = data["policies"][0]
    # 600/s at 40/s per replica: 15 replicas; the backlog target (100/replica) asks for more while it drains
    assert max(pt["desired_replicas"] for pt in mine["timeline"]) >= 15
    assert mine["timeline"][0]["desired_replicas"] == 1 and mine["timeline"][0]["demand"] == 50
    # the policy's SLO is its oldest-pending bound (600 s); nothing waits that long here
    assert mine["summary"]["slo_violation_seconds"] == 0
    assert mine["summary"]["underprovisioned_seconds"] > 0 and mine["summary"]["time_to_capacity_seconds"] > 0


def test_table_chart_and_plot(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = env / "sim.html"
    out, err = opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", "--against", "hpa-default",
                      "--plot", str(plot))
    assert "REPLICA-MINUTES" in out and "hpa-default" in out and "P policy: ready replicas (p: set)" in out
    assert "shape step; capacity 40/s per replica (--capacity)" in err
    page = plot.read_text()
    assert page.startswith("<!doctype html>")
    assert all(f"<title>{name}: {what}</title>" in page for name in ("policy", "hpa-default")
               for what in ("ready replicas", "replicas set"))
    svg = env / "sim.svg"
    opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", "--plot", str(svg), "-o", "json")
    assert svg.read_text().startswith("<svg")


def test_plot_png(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    png = env / "sim.png"
    _, err = opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", "--plot", str(png), "--no-chart")
    assert f"chart written to {png}" in err
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (900, 380)
    _, err = opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", "--plot", str(env / "sim.pdf"), code=2)
    assert ".png, .svg, .html, .htm, not '.pdf'" in err and not (env / "sim.pdf").exists()


def test_against_another_policy_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = env / "fast.yaml"
    other.write_text(POLICY.replace("stabilizationWindowSeconds: 300", "stabilizationWindowSeconds: 0"))
    out, _ = opsctl(capsys, "core-worker", "--shape", "spike:base=10,peak=600,at=60,width=120,duration=1200",
                    "--capacity", "40", "--against", str(other), "-o", "json")
    mine, fast = json.loads(out)["policies"]
    assert fast["name"] == str(other)
    assert fast["summary"]["replica_minutes"] < mine["summary"]["replica_minutes"]


def test_tune_prints_a_yaml_diff(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = opsctl(capsys, "core-worker", "--shape", "spike:base=10,peak=600,at=60,width=120,duration=1200",
                    "--capacity", "40", "--no-chart", "--tune")
    assert "--- autoscaling.yaml (current)" in out and "+++ autoscaling.yaml (tuned)" in out
    assert "SLO violation no worse" in out
    changed = [line for line in out.splitlines() if line.startswith(("+ ", "- ", "+  ", "-  "))]
    assert changed


def test_forecast_needs_a_day_and_reports_its_mape(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", "--forecast", code=2)
    assert "needs at least one season" in err
    out, _ = opsctl(capsys, "core-worker", "--shape", "diurnal:base=10,peak=400,period=3600,duration=7200,step=60",
                    "--capacity", "40", "--forecast", "--season", "3600", "-o", "json")
    data = json.loads(out)
    assert data["forecast"]["mape"] == 0.0 and data["forecast"]["never_scales_in"] is True
    assert data["forecast"]["name"] == "policy+forecast"


@pytest.mark.parametrize("args, reason", [
    ((), "give one of --trace FILE, --shape NAME or --from/--to"),
    (("--shape", STEP), "no capacity for core-worker: give --capacity"),
    (("--shape", "step:peak=x", "--capacity", "1"), "shape parameter peak: 'x' is not a number"),
    (("--shape", "wave:peak=1,duration=60", "--capacity", "1"), "unknown shape 'wave'"),
    (("--shape", STEP, "--capacity", "-1"), "capacity must be a positive number"),
    (("--from", "yesterday", "--capacity", "1"), "'yesterday' is not a time"),
    (("--from", "-1h", "--to", "-2h", "--capacity", "1"), "must be after --from"),
    (("--from", "-30d", "--step", "15", "--capacity", "1"), "Prometheus answers at most 11000; raise --step"),
])
def test_usage_errors_exit_2(env: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                             reason: str) -> None:
    _, err = opsctl(capsys, "core-worker", *args, code=2)
    assert reason in err and err.count("\n") == 1


def test_the_calibration_gives_the_default_capacity(env: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # the file `make calibrate` writes (the repository's own, measured), with another worker figure
    measured = json.loads((Path(__file__).parent.parent / "policies" / "capacity.json").read_text())
    measured["worker"]["documents_per_second"] = 40
    calibration = env / "capacity.json"  # <policy dir>/capacity.json
    calibration.write_text(json.dumps(measured))
    _, err = opsctl(capsys, "core-worker", "--shape", STEP, "--no-chart")
    assert f"capacity 40/s per replica (the calibration's worker.documents_per_second of {calibration})" in err
    measured["worker"]["documents_per_second"] = "fast"
    elsewhere = env / "measured.json"
    elsewhere.write_text(json.dumps(measured))
    monkeypatch.setenv("OPSCTL_CAPACITY_FILE", str(elsewhere))
    _, err = opsctl(capsys, "core-worker", "--shape", STEP, code=2)
    assert f"{elsewhere}: worker.documents_per_second: Input should be a valid number" in err


def test_unmodelled_metric_names_the_column_to_add(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra: Any = POLICY.replace("    behavior:", "      - name: error-rate\n        query: errors\n"
                                "        target: {type: Value, value: 0.01}\n    behavior:")
    (env / "autoscaling.yaml").write_text(extra)
    _, err = opsctl(capsys, "core-worker", "--shape", STEP, "--capacity", "40", code=2)
    assert "cannot compute metric error-rate (errors): add a column named like it to the trace" in err
