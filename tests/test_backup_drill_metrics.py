"""The restore drill's gauges carry the repository drilled: a drill from the object store
(`restore-test --repo offsite`) never overwrites the local drill's, in the process or the textfile."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from opsctl.backup.metrics import publish, read_textfile, textfile


def report(repo: str, passed: bool, rto: float) -> dict[str, object]:
    return {"repo": repo, "passed": passed, "duration_seconds": rto + 1, "rto_seconds": rto, "rpo_seconds": 2.0}


def test_each_repository_keeps_its_own_drill_gauges(tmp_path: Path) -> None:
    publish(report("local", True, 10.0), tmp_path)
    local = read_textfile(textfile(tmp_path))["local"]
    assert (local["success"], local["rto"], local["duration"], local["rpo"]) == (1.0, 10.0, 11.0, 2.0)
    assert local["last_success"] > 0

    publish(report("offsite", False, 50.0), tmp_path)  # the store's drill fails
    after = read_textfile(textfile(tmp_path))
    assert after["local"] == local  # the local drill's series stay as they were
    assert (after["offsite"]["success"], after["offsite"]["rto"]) == (0.0, 50.0)
    assert "last_success" not in after["offsite"]  # it never passed
    assert REGISTRY.get_sample_value("opsctl_restore_drill_success", {"repo": "local"}) == 1.0
    assert REGISTRY.get_sample_value("opsctl_restore_drill_success", {"repo": "offsite"}) == 0.0

    publish(report("local", False, 12.0), tmp_path)  # a failed drill keeps the time of the last pass
    again = read_textfile(textfile(tmp_path))
    assert again["local"]["success"] == 0.0 and again["local"]["last_success"] == local["last_success"]
    assert again["offsite"] == after["offsite"]


def test_a_textfile_without_repo_labels_or_that_does_not_parse_is_no_drill(tmp_path: Path) -> None:
    path = textfile(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("opsctl_restore_drill_success 1.0\n")  # written before drills had a repo label
    assert read_textfile(path) == {}
    path.write_text("not { a metric\n")
    assert read_textfile(path) == {}
    assert read_textfile(tmp_path / "none.prom") == {}
