"""Policy files: every error names the file, the line, the path and the reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, model_validator

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
        f"{path}:4: services.api.maxReplicas: Input should be a valid integer",
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


# --- hostile and clumsy files: refused with exit 2 and file:line, in bounded time and memory -------

SERVICE = """services:
  w:
    target: {kind: local}
    minReplicas: %s
    maxReplicas: %s
    metrics: [{name: b, query: q, target: {type: AverageValue, averageValue: 10}}]
"""


def billion_laughs(levels: int, width: int, leaf: str) -> str:
    """The classic alias bomb: each level refers ``width`` times to the one before."""
    lines = [f"l0: &l0 [{', '.join([leaf] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int, width: int) -> str:
    """The same with merge keys: each mapping merges the one before ``width`` times."""
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: 1" for i in range(width)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * width)}], own{i}: 1}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "recursive alias": ("a: &x [*x]\n", 1, "found a recursive alias *x (it refers to a node that contains it)"),
    "recursive alias in a mapping": ("services:\n  w: &w\n    target: *w\n", 3, "found a recursive alias *w"),
    "3,000-deep nesting": ("services: " + "[" * 3000 + "]" * 3000 + "\n", 1, "nested deeper than 64 levels"),
    "1,000-deep block mappings": ("".join(f"{' ' * i}k{i}:\n" for i in range(1000)), 64,
                                  "nested deeper than 64 levels"),
    "billion laughs (9 levels of 9)": (billion_laughs(9, 9, '"lol"'), 5,
                                       "aliases expand this to more than 20,000 nodes (an alias bomb?)"),
    "10^6 nodes of aliases": (billion_laughs(6, 10, "1"), 5, "aliases expand this to more than 20,000 nodes"),
    "merge-key bomb": (merge_bomb(9, 9), 5, "aliases expand this to more than 20,000 nodes"),
    "deep through aliases": ("".join(f"a{i}: &a{i} [*a{i - 1}]\n" if i else "a0: &a0 [1]\n" for i in range(80)),
                             64, "nested deeper than 64 levels through its aliases"),
    "duplicate key": (SERVICE % ("1", "5") + "    maxReplicas: 7\n", 7, "found the key 'maxReplicas' twice "
                                                                       "(first on line 5)"),
    "duplicate key spelled differently": ("services: {}\n0x1: a\n1: b\n", 3, "found the key 1 twice (first on line 2)"),
    "minReplicas: true": (SERVICE % ("true", "5"), 4, "services.w.minReplicas: Input should be a valid integer"),
    "maxReplicas: 5.0": (SERVICE % ("1", "5.0"), 5, "services.w.maxReplicas: Input should be a valid integer"),
    "30-digit maxReplicas": (SERVICE % ("1", "1" * 30), 5,
                             "services.w.maxReplicas: Input should be less than or equal to 10000"),
    # numbers: YAML 1.2's core schema, and a numeric scalar over 40 characters is refused before conversion
    "5,000-digit integer": (SERVICE % ("1", "9" * 5000), 5, "cannot read 99999999999999999999… (5,000 characters): "
                                                            "a number of more than 40 characters"),
    "900 KB float": ("kind: autoscaling\nx: 1." + "1" * 900_000 + "\n", 2,
                     "cannot read 1.111111111111111111… (900,002 characters): a number of more than 40 characters"),
    "900 KB hex integer": ("kind: autoscaling\nx: 0x" + "f" * 900_000 + "\n", 2,
                           "(900,002 characters): a number of more than 40 characters"),
    "600 KB sexagesimal, tagged !!int": ("kind: autoscaling\nx: !!int 1" + ":0" * 300_000 + "\n", 2,
                                        "(600,001 characters): a number of more than 40 characters"),
    "600 KB sexagesimal (YAML 1.2: a string)": (SERVICE % ("1" + ":0" * 300_000, "5"), 4,
                                                "services.w.minReplicas: Input should be a valid integer"),
    "minReplicas: 010": (SERVICE % ("010", "12"), 4,
                         "cannot read 010: a leading zero is ambiguous (YAML 1.1 and Kubernetes read it as the "
                         "octal 8, YAML 1.2 as 10): write 10, or 0o10 for octal"),
    "maxReplicas: 1:30": (SERVICE % ("1", "1:30"), 5, "services.w.maxReplicas: Input should be a valid integer"),
    "maxReplicas: !!int 1:30": (SERVICE % ("1", "!!int 1:30"), 5,
                                "cannot read 1:30: not an integer (YAML 1.2: 10, -3, 0o17 or 0x1F)"),
    "infinite target": (SERVICE.replace("averageValue: 10", "averageValue: .inf") % ("1", "5"), 6,
                        "averageValue: Input should be a finite number"),
    "not UTF-8": ("services:\n  w: caf\xe9\n", 2, "not UTF-8 text (invalid continuation byte at byte 18)"),
}


@pytest.mark.timeout(60)  # the alias bombs ran for minutes before: fail, do not hang
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_are_refused_with_a_line_and_bounded_memory(tmp_path: Path, case: str) -> None:
    import tracemalloc

    text, line, reason = HOSTILE[case]
    path = tmp_path / "autoscaling.yaml"
    path.write_bytes(text.encode("latin-1") if case == "not UTF-8" else text.encode())
    tracemalloc.start()
    try:
        ok, problems = policy.validate_paths([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ok == [] and len(problems) == 1, problems
    assert str(problems[0]).startswith(f"{path}:{line}: "), str(problems[0])
    assert reason in str(problems[0])
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB to refuse {case}"


@pytest.mark.parametrize(("scalar", "expected"), [
    ("10", 10), ("-3", -3), ("+7", 7), ("0", 0), ("-0", 0), ("0o17", 15), ("0x1F", 31), ("1.5", 1.5), (".5", 0.5),
    ("1e3", 1000.0), ("-2.5E-1", -0.25), ("1.", 1.0), (".inf", float("inf")), ("-.Inf", float("-inf")),
    # YAML 1.1 only: strings in YAML 1.2, as Kubernetes reads them too (a count then fails validation)
    ("1:30", "1:30"), ("1:30.5", "1:30.5"), ("1_000", "1_000"), ("0b101", "0b101"), ("+.5e", "+.5e"),
    ("0x", "0x"), ("12e", "12e"), ("01:30", "01:30"),
])
def test_numbers_are_read_as_yaml_1_2_reads_them(scalar: str, expected: Any) -> None:
    from core import safeyaml

    value = safeyaml.parse(f"x: {scalar}\n")[0]["x"]
    assert (type(value), value) == (type(expected), expected)


@pytest.mark.parametrize(("scalar", "reason"), [
    ("010", "cannot read 010: a leading zero is ambiguous (YAML 1.1 and Kubernetes read it as the octal 8, "
            "YAML 1.2 as 10): write 10, or 0o10 for octal"),
    ("-007", "cannot read -007: a leading zero is ambiguous"),
    ("!!int 0b11", "cannot read 0b11: not an integer"),
    ("!!float 1:30", "cannot read 1:30: not a number"),
    ("1" * 41, "(41 characters): a number of more than 40 characters"),
    ("1." + "0" * 39, "(41 characters): a number of more than 40 characters"),
])
def test_numbers_yaml_1_1_and_1_2_disagree_on_are_refused(scalar: str, reason: str) -> None:
    from core import safeyaml

    with pytest.raises(safeyaml.Refused) as info:
        safeyaml.parse(f"a: 1\nx: {scalar}\n")
    assert reason in str(info.value.problem) and safeyaml.line_of(info.value) == 2, info.value


def test_a_number_of_40_characters_is_still_read() -> None:
    from core import safeyaml

    assert safeyaml.parse("x: " + "1" * 40 + "\n")[0]["x"] == int("1" * 40)


def test_keys_are_read_as_numbers_the_same_way(tmp_path: Path) -> None:
    from core import safeyaml

    assert safeyaml.parse("10: a\n1:30: b\n0o10: c\n")[0] == {10: "a", "1:30": "b", 8: "c"}
    with pytest.raises(safeyaml.Refused, match="found the key 8 twice"):
        safeyaml.parse("0o10: a\n8: b\n")
    with pytest.raises(safeyaml.Refused, match="a leading zero is ambiguous"):
        safeyaml.parse("010: a\n")


def test_the_billion_laughs_case_is_the_small_file_of_the_issue() -> None:
    assert len(HOSTILE["billion laughs (9 levels of 9)"][0].encode()) < 600


@pytest.mark.parametrize("case", ["recursive alias", "3,000-deep nesting", "billion laughs (9 levels of 9)",
                                  "duplicate key", "minReplicas: true", "30-digit maxReplicas"])
def test_policy_validate_exits_2_with_file_and_line(tmp_path: Path, case: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from opsctl.cli import main

    text, line, _ = HOSTILE[case]
    path = tmp_path / "autoscaling.yaml"
    path.write_text(text)
    assert main(["policy", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}: " in err and "Traceback" not in err and "RecursionError" not in err


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "autoscaling.yaml"
    path.write_text("services: {}\n" + "#" * policy.MAX_BYTES + "\n")
    with pytest.raises(PolicyError, match=r"larger than 1 MiB: not a policy file"):
        policy.load_file(path)


def test_aliases_and_merge_keys_within_the_limits_still_work(tmp_path: Path, sample_kind: None) -> None:
    path = write(tmp_path, "sample.yaml", "services:\n  api: &api {minReplicas: 2, maxReplicas: 4}\n"
                                          "  worker: {<<: *api, maxReplicas: 6}\n")
    loaded = policy.load(Sample, "sample", path)
    assert (loaded.services["worker"].minReplicas, loaded.services["worker"].maxReplicas) == (2, 6)


# --- whatever fails while loading comes out as a PolicyError (the daemon keeps its old set on it) --


class Exploding(PolicyModel):
    services: dict[str, Limits] = {}

    @model_validator(mode="after")
    def _explode(self) -> Exploding:
        raise RecursionError("maximum recursion depth exceeded")


def test_any_failure_of_a_model_is_a_policy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(policy.KINDS, "exploding", f"{__name__}:Exploding")
    path = write(tmp_path, "exploding.yaml", "services: {}\n")
    with pytest.raises(PolicyError, match=r"exploding.yaml: cannot load \(RecursionError: maximum recursion"):
        policy.load_file(path)
    with pytest.raises(PolicyError, match="RecursionError"):
        policy.load(Exploding, "exploding", path)
    ok, problems = policy.validate_paths([tmp_path])
    assert ok == [] and [p.reason[:33] for p in problems] == ["cannot load (RecursionError: maxi"]


@pytest.mark.parametrize(("setup", "reason"), [
    (lambda d: (d / "autoscaling.yaml").mkdir(), "not a regular file"),
    (lambda d: (d / "autoscaling.yaml").symlink_to(d / "nowhere"), "no such file"),
    (lambda d: os.mkfifo(d / "autoscaling.yaml"), "not a regular file"),
])
def test_files_that_are_not_files_are_policy_errors(tmp_path: Path, setup: Any, reason: str) -> None:
    setup(tmp_path)
    with pytest.raises(PolicyError, match=reason):
        policy.load_file(tmp_path / "autoscaling.yaml")


def test_unknown_or_broken_kinds_are_policy_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "staging.yaml", "services: {}\nkind: nope\n")
    with pytest.raises(PolicyError) as info:
        policy.load_file(path)
    assert str(info.value.problems[0]).startswith(f"{path}:2: kind: unknown policy kind 'nope'")
    monkeypatch.setitem(policy.KINDS, "gone", "opsctl.no_such_module:Model")
    with pytest.raises(PolicyError, match="ModuleNotFoundError"):
        policy.load_file(write(tmp_path, "gone.yaml", "a: 1\n"))
