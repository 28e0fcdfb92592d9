"""Runbooks: one per alert, linked from its alert, every cited command exists, and `opsctl runbook` shows them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from opsctl import runbooks
from opsctl.cli import main
from tests.cli_citations import citations_in_markdown, problems, resolve, root_command
from tests.conftest import project_root

ROOT = project_root()
RUNBOOKS = ROOT / "runbooks"
ALERTS = ["IngestBacklogHigh", "IngestJobsDead", "SearchLatencyHigh", "ErrorRateHigh", "ScalingAtMaxReplicas",
          "AutoscalerMetricsUnavailable", "BackupStale", "RestoreDrillFailed", "RestoreDrillStale",
          "PartitionsNotPremade", "DefaultPartitionHasRows", "VectorIndexRecallLow", "CacheHitRateLow",
          "DaemonNoLeader", "DaemonJobFailing", "DaemonPoliciesNotLoaded", "DatabaseConnectionsSaturated",
          "ReplicaLagHigh", "ReplicaDown",
          "ContainerCpuThrottled", "ContainerMemoryNearLimit", "ContainerOOMKilled", "DiskNearlyFull", "DiskFillingUp",
          "DatabaseConnectionsNearMax", "DatabasePoolWaits", "RedisMemoryHigh", "RedisEvicting", "RateLimitNotShared",
          "CertificateExpiringSoon", "WalPushLagging", "WalPushFailing", "SlowQueriesRising"]
SECTIONS = ["## What it means", "## User impact", "## Diagnosis", "## Remediation", "## Escalate when"]


def alert_rules() -> list[dict[str, object]]:
    rule = yaml.safe_load((ROOT / "manifests" / "base" / "prometheusrule.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def opsctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsctl.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "COLUMNS": "100"})


def test_every_alert_has_a_runbook_and_every_runbook_is_linked_from_its_alert() -> None:
    rules = alert_rules()
    assert sorted(str(r["alert"]) for r in rules) == sorted(ALERTS)
    assert [b.name for b in runbooks.all_runbooks(RUNBOOKS)] == sorted(ALERTS)
    bases = set()
    for rule in rules:
        url = str(rule["annotations"]["runbook_url"])  # type: ignore[index]
        base, _, file = url.rpartition("/runbooks/")
        bases.add(base)
        assert file == f"{rule['alert']}.md", url
        assert (RUNBOOKS / file).is_file(), url
    assert len(bases) == 1, f"runbook_url bases differ: {bases}"


@pytest.mark.parametrize("name", ALERTS)
def test_runbook_has_every_section_and_diagnosis_commands(name: str) -> None:
    text = (RUNBOOKS / f"{name}.md").read_text()
    assert text.startswith(f"# {name}\n")
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), f"{name}: sections missing or out of order"
    diagnosis = text[positions[2]:positions[3]]
    assert "```promql" in diagnosis and "```sh" in diagnosis, f"{name}: diagnosis needs PromQL and commands"
    assert runbooks.find(name, RUNBOOKS).summary()["fires_when"], f"{name}: no 'Fires when' line"
    for link in re.findall(r"\]\(([^)]+\.md)\)", text):
        assert (RUNBOOKS / link).is_file(), f"{name}: broken link {link}"


def test_every_cited_opsctl_command_parses() -> None:
    root = root_command()
    cited = [c for path in sorted(RUNBOOKS.glob("*.md")) for c in citations_in_markdown(path.read_text(), path.name)]
    assert len(cited) > 50
    errors: list[str] = []
    checked: set[tuple[str, ...]] = set()
    for citation in cited:
        top = citation.argv[0]
        if top not in root.commands:
            errors.append(f"{citation.source}: `{citation.line}`: unknown command {top!r}")
            continue
        errors.extend(problems(citation, root))
        path, _, _ = resolve(root, citation.argv)
        checked.add(tuple(path))
    assert not errors, "\n".join(errors)
    assert ("runbook", "show") in checked and ("policy", "validate") in checked
    for path in sorted(checked):
        assert main([*path, "--help"]) == 0, f"opsctl {' '.join(path)} --help failed"


def test_runbooks_send_on_call_to_the_policy_files_the_cluster_mounts() -> None:
    """Alerts fire in the cluster, where manifests/base/policies/X.yaml replaces policies/X.yaml: a
    runbook that names the local file of such a policy names the cluster's too."""
    replaced = sorted(p.name for p in (ROOT / "manifests" / "base" / "policies").glob("*.yaml"))
    assert "autoscaling.yaml" in replaced
    wrong = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        text = path.read_text()
        for name in replaced:
            local = re.findall(rf"(?<![\w/])policies/{re.escape(name)}", text)
            if local and f"manifests/base/policies/{name}" not in text:
                wrong.append(f"{path.name}: policies/{name} without manifests/base/policies/{name}")
    assert not wrong, "\n".join(wrong)


def test_citation_checker_rejects_unknown_commands_and_options() -> None:
    root = root_command()
    bad = citations_in_markdown("```sh\nopsctl policy validate --frobnicate\nopsctl runbook shwo X\n```\n", "t.md")
    assert problems(bad[0], root) == ["t.md: `opsctl policy validate --frobnicate`: policy validate has no option "
                                      "--frobnicate"]
    assert problems(bad[1], root) == ["t.md: `opsctl runbook shwo X`: runbook has no subcommand 'shwo'"]
    good = citations_in_markdown("run `opsctl runbook show x --raw` then\n```\n$ opsctl runbook list -o json | jq\n```",
                                 "t.md")
    assert [c.argv for c in good] == [("runbook", "list", "-o", "json"), ("runbook", "show", "x", "--raw")]
    assert all(problems(c, root) == [] for c in good)


def test_runbook_promql_parses(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "promtool must be installed (make test installs Prometheus): never skipped"
    exprs = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"^[ \t]*```promql\n(.*?)^[ \t]*```", path.read_text(),
                                re.MULTILINE | re.DOTALL):
            exprs.extend(line for line in block.splitlines() if line.strip())
    assert len(exprs) >= len(ALERTS) * 2
    rules = {"groups": [{"name": "runbooks", "rules": [{"record": f"runbook:expr{i}", "expr": e}
                                                       for i, e in enumerate(exprs)]}]}
    file = tmp_path / "runbook-queries.yaml"
    file.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(["promtool", "check", "rules", str(file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_show_renders_markdown_case_insensitively() -> None:
    proc = opsctl("runbook", "show", "backupstale")
    assert proc.returncode == 0, proc.stderr
    assert "BackupStale" in proc.stdout and "opsctl backup create" in proc.stdout
    assert "## " not in proc.stdout and "```" not in proc.stdout, "Markdown was printed, not rendered"
    raw = opsctl("runbook", "show", "DaemonNoLeader.md", "--raw")
    assert raw.returncode == 0 and raw.stdout == (RUNBOOKS / "DaemonNoLeader.md").read_text()


def test_unknown_runbook_exits_2_and_lists_the_names() -> None:
    proc = opsctl("runbook", "show", "NoSuchAlert")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no runbook 'NoSuchAlert'; known: ")
    assert all(name in proc.stderr for name in ALERTS)
    assert "Traceback" not in proc.stderr


def test_list_json_has_every_runbook_with_severity() -> None:
    proc = opsctl("runbook", "list", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == sorted(ALERTS)
    assert {r["severity"].split()[0] for r in rows} <= {"critical", "warning", "info"}
    assert all(r["fires_when"] for r in rows)


def test_runbook_dir_prefers_env_then_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "OnlyHere.md").write_text("# OnlyHere\n")
    (tmp_path / "README.md").write_text("# not a runbook\n")
    monkeypatch.setenv("OPSCTL_RUNBOOK_DIR", str(tmp_path))
    assert [b.name for b in runbooks.all_runbooks()] == ["OnlyHere"]
    monkeypatch.delenv("OPSCTL_RUNBOOK_DIR")
    assert runbooks.runbook_dir() == RUNBOOKS
    with pytest.raises(runbooks.ConfigError, match="no runbooks found"):
        runbooks.runbook_dir([tmp_path / "nowhere"])


def test_installed_package_ships_and_finds_the_runbooks(tmp_path: Path) -> None:
    """A wheel carries the runbooks as data files, and an install outside the checkout finds them."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("core", "opsctl", "runbooks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("opsctl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {Path(n).name for n in zf.namelist() if "/share/opsctl/runbooks/" in n}
    assert {f"{a}.md" for a in ALERTS} <= shipped
    prefix = tmp_path / "prefix"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--prefix", str(prefix), str(wheel)], capture_output=True, text=True, timeout=240)
    assert install.returncode == 0, install.stderr
    (site,) = prefix.glob("lib/python*/site-packages")
    # run the installed copy from outside the checkout, with that prefix as its data dir
    probe = ("import sys, sysconfig; sysconfig.get_path = lambda name, *a, **k: sys.argv[1]; "
             "from opsctl import runbooks; print(runbooks.runbook_dir()); print(len(runbooks.all_runbooks()))")
    proc = subprocess.run([sys.executable, "-c", probe, str(prefix)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    found, count = proc.stdout.split()
    assert Path(found) == prefix / "share" / "opsctl" / "runbooks" and int(count) == len(ALERTS)


@pytest.mark.parametrize("command", [["runbook"], ["runbook", "list"], ["runbook", "show"]])
def test_runbook_help_has_an_example(command: list[str]) -> None:
    proc = opsctl(*command, "--help")
    assert proc.returncode == 0 and "Example: opsctl runbook" in proc.stdout, proc.stdout


def test_the_runbook_index_lists_every_runbook() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    listed = re.findall(r"^\| \[(\w+)\]\((\w+)\.md\) \|", index, re.MULTILINE)
    assert [name for name, _ in listed] == [file for _, file in listed]
    assert sorted(name for name, _ in listed) == sorted(ALERTS)
