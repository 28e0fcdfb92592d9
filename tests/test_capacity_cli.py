"""``opsctl capacity``: reads the calibration and the policies, prints the plan with its sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsctl.capacity.calibration import dump
from tests.conftest import project_root
from tests.test_capacity_plan import CAL
from tests.test_cli_output import run

POLICIES = project_root() / "policies"
KUBERNETES = project_root() / "manifests" / "base" / "policies" / "autoscaling.yaml"


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    path = tmp_path / "capacity.json"
    path.write_text(dump(CAL))
    return path


@pytest.fixture(autouse=True)
def _policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(POLICIES))


def test_json_carries_the_plan_the_limits_and_each_source(capsys: pytest.CaptureFixture[str],
                                                          calibration: Path) -> None:
    code, out, _ = run(capsys, "capacity", "--users", "100", "--documents", "1000", "--calibration",
                       str(calibration), "-o", "json")
    assert code == 0
    data = json.loads(out)
    plan = {line["item"]: line for line in data["plan"]}
    assert plan["requests/s"]["value"] == 20
    assert plan["API replicas"]["value"] == 1  # `opsctl up`'s policies: one API process, 70 % of 100 req/s
    sources = {a["name"]: a["source"] for a in data["assumptions"]}
    assert sources["worker min replicas"] == f"{POLICIES}/autoscaling.yaml core-worker minReplicas"
    assert sources["search ttl seconds"] == f"{POLICIES}/cache.yaml ttlSeconds.searchResults"
    assert str(calibration) in sources["API requests/s per process (search mix)"]
    assert data["breaks_first"] is None


def test_the_kubernetes_policy_gives_the_api_its_utilization_target(capsys: pytest.CaptureFixture[str],
                                                                     calibration: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_CAPACITY_FILE", str(calibration))
    code, out, _ = run(capsys, "capacity", "--rps", "10000", "--chunks", "1000000000", "-p", str(KUBERNETES),
                       "-o", "yaml")
    assert code == 0
    import yaml

    data = yaml.safe_load(out)
    assumed = {a["name"]: a for a in data["assumptions"]}
    assert assumed["api utilization"]["value"] == 0.7
    assert assumed["api utilization"]["source"] == f"{KUBERNETES} core-api metric cpu averageUtilization"
    assert {line["item"]: line["value"] for line in data["plan"]}["API replicas"] == 143  # ceil(10,000 / 70)
    assert data["breaks_first"] == "HNSW index against the database host's memory"


def test_the_table_names_what_breaks_first(capsys: pytest.CaptureFixture[str], calibration: Path) -> None:
    code, out, err = run(capsys, "capacity", "--rps", "10000", "--documents", "10", "--calibration",
                         str(calibration))
    assert code == 0
    assert "ASSUMPTION" in out and "NEED/ALLOWED" in out and "HOW" in out
    assert "breaks first: connections behind a pooler against max_connections" in err


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no calibration file"),
    ("{", "(file): Invalid JSON"),
    (json.dumps({**json.loads(dump(CAL)), "api": {"requests_per_second": 0, "mix": "x", "runs": []}}),
     "api.requests_per_second: Input should be greater than 0"),
    (json.dumps({**json.loads(dump(CAL)), "schema_version": 2}), "schema_version: Input should be 1"),
])
def test_a_bad_calibration_is_refused_naming_the_file_and_field(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                content: str | None, reason: str) -> None:
    path = tmp_path / "capacity.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "capacity", "--rps", "10", "--calibration", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}") and reason in err, err


def test_no_demand_is_a_usage_error(capsys: pytest.CaptureFixture[str], calibration: Path) -> None:
    code, _, err = run(capsys, "capacity", "--calibration", str(calibration))
    assert code == 2 and "name a demand" in err
    code, _, err = run(capsys, "capacity", "--documents", "1", "--chunks", "2", "--calibration", str(calibration))
    assert code == 2 and "not both" in err


def test_the_cpu_basis_without_cpu_figures_is_a_config_error(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    data = json.loads(dump(CAL))
    del data["worker"]["cpu_seconds_per_chunk"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "capacity", "--rps", "10", "--calibration", str(path), "--basis", "cpu")
    assert code == 2 and err.startswith(f"error: {path}: the calibration has no CPU seconds"), err
    code, _, err = run(capsys, "capacity", "--rps", "10", "--calibration", str(path), "--basis", "wall")
    assert code == 2 and "measured or cpu" in err


@pytest.mark.timeout(20)  # the FIFO case blocked the reader forever before the file was read with bounds
@pytest.mark.parametrize("kind, reason", [("fifo", "cannot read: not a regular file"),
                                          ("large", "cannot read: larger than 1 MiB: not a calibration")])
def test_a_calibration_that_is_not_a_small_regular_file_is_refused_unread(tmp_path: Path, kind: str,
                                                                          reason: str) -> None:
    import os

    from core.errors import ConfigError
    from opsctl.capacity.calibration import load

    path = tmp_path / "capacity.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text(dump(CAL)[:-2] + " " * (1 << 20) + "}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: {reason}"
