"""Snapshots: the JSON contract, its errors, and `opsctl scale --snapshot` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from opsctl.scaling import snapshot
from opsctl.scaling.snapshot import POD_PHASES
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
     "snapshot: history.recommendations[0].replicas: expected an integer, got null"),
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


def deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


HUGE = "9" * 5000
# (what, the snapshot file's text, the field named, the reason): every one exits 2 naming file and field
BAD_FILES = [
    ("a year-1 now", '{"now": "0001-01-01T00:00:00Z", "current_replicas": 3}', "now",
     "'0001-01-01T00:00:00Z' is out of range (1970 to 9998)"),
    ("a year-9999 now west of UTC", '{"now": "9999-12-31T23:00:00-05:00", "current_replicas": 3}', "now",
     "'9999-12-31T23:00:00-05:00' is out of range (1970 to 9998)"),
    ("a year-1 recommendation", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 3, "history": '
     '{"recommendations": [{"at": "0001-01-01T00:00:00Z", "replicas": 2}]}}', "history.recommendations[0].at",
     "'0001-01-01T00:00:00Z' is out of range (1970 to 9998)"),
    ("5,000-deep JSON in a value", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 3, "metrics": {"backlog": '
     f'{{"value": {deep(5000)}}}}}}}', "metrics.backlog.value[0]…", "nested deeper than 32 levels"),
    ("5,000-deep JSON at the top", deep(5000), "[0][0][0][0]…", "nested deeper than 32 levels"),
    ("a 5,000-digit integer as current_replicas", f'{{"now": "2026-11-22T12:00:00Z", "current_replicas": {HUGE}}}',
     "current_replicas", "a 5,000-digit number is out of range"),
    ("a 5,000-digit integer as a value", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 3, "metrics": '
     f'{{"backlog": {{"value": -{HUGE}}}}}}}', "metrics.backlog.value", "a 5,000-digit number is out of range"),
    ("a 400-digit integer as a value", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 3, "metrics": '
     f'{{"backlog": {{"value": {"9" * 400}}}}}}}', "metrics.backlog.value", "a 400-digit number is out of range"),
    ("1e999 as a pod's usage", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 1, "metrics": {"cpu": '
     '{"pods": [{"usage": 1e999, "request": 1000}]}}}', "metrics.cpu.pods[0].usage", "must be finite, got inf"),
    ("NaN as a request", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 1, "metrics": {"cpu": '
     '{"pods": [{"usage": 1, "request": NaN}]}}}', "metrics.cpu.pods[0].request", "must be finite, got nan"),
    ("replicas beyond int32", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 3000000000}', "current_replicas",
     "must be <= 2147483647, got 3000000000"),
    ("metrics that is a number", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 1, "metrics": 5}', "metrics",
     "expected an object, got int"),
    ("metrics that is true", '{"now": "2026-11-22T12:00:00Z", "current_replicas": 1, "metrics": true}', "metrics",
     "expected an object, got bool"),
]


@pytest.mark.parametrize(("case", "text", "field", "reason"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_snapshot_files_exit_2_naming_file_and_field(tmp_path: Path, case: str, text: str, field: str,
                                                          reason: str) -> None:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    (tmp_path / "snap.json").write_text(text)
    proc = opsctl("scale", "decide", "core-worker", "--policy", "autoscaling.yaml", "--snapshot", "snap.json",
                  cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, f"error: snapshot snap.json: {field}: {reason}\n")


def test_errors_in_a_file_of_snapshots_name_the_service(tmp_path: Path) -> None:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    other = {"now": "0001-01-01T00:00:00Z", "current_replicas": 2}
    (tmp_path / "snaps.json").write_text(json.dumps({"core-worker": ISSUE_EXAMPLE, "other": other}))
    proc = opsctl("scale", "--policy", "autoscaling.yaml", "--snapshot", "snaps.json", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "error: snapshot snaps.json: other.now: '0001-01-01T00:00:00Z' is "
                                                 "out of range (1970 to 9998)\n")


def test_a_snapshot_file_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "autoscaling.yaml").write_text(POLICY)
    (tmp_path / "snap.json").write_text('{"now": "2026-11-22T12:00:00Z",\n "current_replicas": 3,,}')
    proc = opsctl("scale", "core-worker", "--policy", "autoscaling.yaml", "--snapshot", "snap.json", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "error: snapshot snap.json:2: not valid JSON: Expecting property "
                                                 "name enclosed in double quotes\n")


UNTERMINATED = '{"now": "2026-11-22T12:00:00Z", "current_replicas": 1, "x": ' + '"\\' * 400_000  # 800 KB


@pytest.mark.timeout(60)  # a safety net: quadratic before (80 KB took 21.7 s: each quote rescanned the rest)
def test_an_unterminated_string_is_not_valid_json_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    path.write_text(UNTERMINATED)
    with pytest.raises(snapshot.SnapshotError) as info:
        snapshot.read(path)
    assert str(info.value) == f"snapshot {path}:1: not valid JSON: Unterminated string starting at"


@pytest.mark.parametrize(("text", "tokens"), [
    ('["\\', ['[', '"\\']),
    ('["a\\"b', ['[', '"a\\"b']),
    ('{"k": "v', ['{', '"k"', ':', '"v']),
    ('"""', ['""', '"']),
    ('["\\\\"]', ['[', '"\\\\"', ']']),
])
def test_the_depth_scan_reads_each_character_once(text: str, tokens: list[str]) -> None:
    """An unterminated string is one token to the end of the text, so no character is matched twice and the
    scan is linear (it used to retry the rest of the text from every quote: 21.7 s for 80 KB)."""
    from core import jsondepth

    assert [m.group() for m in jsondepth.TOKEN.finditer(text)] == tokens
    found = [m.group() for m in jsondepth.TOKEN.finditer(UNTERMINATED)]
    assert found[-1] == '"\\' * 400_000 and len(found) == 11


@pytest.mark.parametrize(("text", "where"), [
    ('{"a": {"b": [1, [2]]}}', None),  # 4 levels
    ('{"a": {"b": [1, [[3]]]}}', "a.b[1][0]"),
    ('[{"k\\"ey": [[[1]]]}]', '[0].k\\"ey[0][0]'),
    ('{"a": "[[[[[", "b": {"c": {}}}', None),  # brackets inside strings do not count
    ('{"a": 1, "b": [[[[1]]]]}', "b[0][0][0]"),
    ('{"a": [[[["', "a[0][0][0]"),  # the parser will refuse it; the scan still stops at the limit
])
def test_the_depth_scan_names_where_it_goes_too_deep(text: str, where: str | None) -> None:
    from core import jsondepth

    assert jsondepth.deeper_than(text, 4) == where


LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.text(max_size=4),
    st.sampled_from(["2026-11-22T12:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00",
                     "1970-01-01T00:00:00+14:00", "2026-11-22T11:59:00"]), st.lists(st.integers(), max_size=2))


def mostly(sane: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``sane`` nine times in ten, anything JSON holds otherwise: most examples reach decide()."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda i: LEAVES if i == 0 else sane)


TIMES = mostly(st.sampled_from(["2026-11-22T11:58:00Z", "2026-11-22T11:00:00Z", "2026-11-22T12:00:00Z"]))
COUNTS = mostly(st.integers(min_value=0, max_value=30))
NUMBERS = mostly(st.one_of(st.integers(min_value=-5, max_value=3000), st.floats(min_value=-1e3, max_value=1e12)))
POD = st.fixed_dictionaries({"request": NUMBERS}, optional={"usage": NUMBERS, "ready": st.booleans(),
                                                          "phase": st.sampled_from(POD_PHASES), "deleting": LEAVES})
SNAPSHOTS = st.fixed_dictionaries(
    {"now": TIMES, "current_replicas": COUNTS},
    optional={"ready_replicas": COUNTS, "metrics": mostly(st.fixed_dictionaries({}, optional={
        "backlog": st.one_of(st.fixed_dictionaries({"value": NUMBERS}), st.fixed_dictionaries({"error": LEAVES})),
        "cpu": mostly(st.fixed_dictionaries({"pods": mostly(st.lists(mostly(POD), max_size=4))})),
        "broken_metric": st.fixed_dictionaries({"value": NUMBERS})})),
        "history": st.fixed_dictionaries({}, optional={
            "recommendations": st.lists(st.fixed_dictionaries({"at": TIMES, "replicas": COUNTS}), max_size=3),
            "scale_events": st.lists(st.fixed_dictionaries({"at": TIMES, "change": NUMBERS}), max_size=3),
            "consecutive_failures": COUNTS, "last_active": TIMES, "paused": st.booleans()})})


@settings(max_examples=300, deadline=None)
@given(SNAPSHOTS)
def test_any_snapshot_is_refused_with_a_field_or_decided(data: dict[str, Any]) -> None:
    """Whatever a snapshot holds, parse names a field or decide returns a decision: nothing else escapes."""
    from opsctl.policy import validate_data
    from opsctl.scaling.engine import decide
    from opsctl.scaling.policy import AutoscalingPolicy

    policy = validate_data(yaml.safe_load(POLICY), AutoscalingPolicy, "autoscaling.yaml").services["core-worker"]
    try:
        snap = snapshot.parse(data)
    except snapshot.SnapshotError as exc:
        assert exc.where and exc.reason
        return
    decision = decide("core-worker", policy, snap, snap.now)
    assert 0 <= decision.desired_replicas <= max(snap.current_replicas, policy.maxReplicas)


SNAPSHOT_TEXT = json.dumps(ISSUE_EXAMPLE)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    # a snapshot cut anywhere (an unterminated string, object or number), or with a piece spliced in
    st.integers(0, len(SNAPSHOT_TEXT)).map(lambda i: SNAPSHOT_TEXT[:i]),
    st.tuples(st.integers(0, len(SNAPSHOT_TEXT)), st.text('"\\{}[],:ab01 -.eE', max_size=12)).map(
        lambda cut: SNAPSHOT_TEXT[:cut[0]] + cut[1] + SNAPSHOT_TEXT[cut[0]:]),
    st.text('"\\{}[],:ab01 -.eEnutrl', max_size=60),
))
def test_any_snapshot_file_is_read_or_refused_as_a_snapshot_error(text: str) -> None:
    """Whatever a file holds, reading and parsing it gives snapshots or a SnapshotError: nothing else escapes."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "snap.json"
        path.write_text(text)
        try:
            snapshot.parse_for_services(snapshot.read(path), ["core-worker"], str(path))
        except snapshot.SnapshotError as exc:
            assert exc.reason and (exc.file or "").startswith(str(path))
        except ConfigError as exc:  # a document of several snapshots given one service name: a usage error
            assert "name exactly one service" in str(exc) or "no snapshot for" in str(exc)


@pytest.mark.parametrize("command", [["scale"], ["scale", "decide"], ["scale", "set"], ["scale", "pause"],
                                     ["scale", "resume"], ["scale", "explain"]])
def test_every_scale_command_has_help_with_an_example(command: list[str], tmp_path: Path) -> None:
    proc = opsctl(*command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Example:" in proc.stdout, proc.stdout + proc.stderr
