"""Policy files: every error names the file, the line, the path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from opsctl import policy
from opsctl.policy import PolicyError, PolicyModel


class Limits(PolicyModel):
    minReplicas: int = Field(1, ge=0)
    maxReplicas: int = Field(10, ge=1)


class Sample(PolicyModel):
    services: dict[str, Limits]


@pytest.fixture
def sample_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(policy.KINDS, "sample", f"{__name__}:Sample")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_errors_name_file_line_path_and_reason(tmp_path: Path, sample_kind: None) -> None:
    path = write(tmp_path, "sample.yaml", "services:\n  api:\n    minReplicas: 1\n    maxReplicas: zero\n"
                                          "  worker:\n    minReplicas: -1\n    typo: 3\n")
    with pytest.raises(PolicyError) as info:
        policy.load(Sample, "sample", path)
    shown = sorted(str(p) for p in info.value.problems)
    assert shown == sorted([
        f"{path}:4: services.api.maxReplicas: Input should be a valid integer, unable to parse string as an integer",
        f"{path}:6: services.worker.minReplicas: Input should be greater than or equal to 0",
        f"{path}:7: services.worker.typo: Extra inputs are not permitted",
    ])
    assert info.value.exit_code == 2


def test_yaml_syntax_error_has_a_line(tmp_path: Path, sample_kind: None) -> None:
    path = write(tmp_path, "sample.yaml", "services:\n  api: [1, 2\n")
    with pytest.raises(PolicyError) as info:
        policy.load(Sample, "sample", path)
    problem = info.value.problems[0]
    assert problem.file == str(path) and problem.line is not None and "not valid YAML" in problem.reason


def test_validate_paths_by_stem_and_kind_key(tmp_path: Path, sample_kind: None) -> None:
    good = write(tmp_path, "sample.yaml", "services: {api: {maxReplicas: 3}}\n")
    renamed = write(tmp_path, "staging.yaml", "kind: sample\nservices: {}\n")
    unknown = write(tmp_path, "mystery.yaml", "a: 1\n")
    ok, problems = policy.validate_paths([tmp_path])
    assert ok == [str(good), str(renamed)]
    assert [(p.file, "unknown policy kind 'mystery'" in p.reason) for p in problems] == [(str(unknown), True)]
    loaded = policy.load_file(good)
    assert isinstance(loaded, Sample) and loaded.services["api"].maxReplicas == 3


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        policy.load(Sample, "sample", tmp_path / "absent.yaml")


# -- the shipped policies -------------------------------------------------------------------------
def shipped_dirs() -> list[Path]:
    from tests.conftest import project_root

    root = project_root()
    return [root / "policies", root / "manifests" / "base" / "policies"]


def test_shipped_policies_validate() -> None:
    """policies/ (what `opsctl up` and the daemon read) and the Kubernetes ones in manifests/base/policies."""
    for directory in shipped_dirs():
        ok, problems = policy.validate_paths([directory])
        assert problems == [] and len(ok) == len(list(directory.glob("*.yaml"))) > 0, (directory, problems)


def test_every_autoscaling_service_in_policies_targets_what_opsctl_up_runs() -> None:
    """`opsctl up` runs one API process and a worker pool that the `local` target resizes; nothing in
    policies/ may point at Kubernetes (that policy lives with the manifests)."""
    from opsctl.scaling.policy import AutoscalingPolicy

    shipped = policy.load(AutoscalingPolicy, "autoscaling", shipped_dirs()[0] / "autoscaling.yaml")
    assert {name: svc.target.kind for name, svc in shipped.services.items()} == {"core-worker": "local"}
    assert all(svc.target.url is None for svc in shipped.services.values()), "the running system's API, found itself"
