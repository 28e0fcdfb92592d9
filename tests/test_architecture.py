"""The layering, enforced: pure decisions import no I/O library, and commands stay thin and fast.

Checked by importing each module in a fresh interpreter and looking at ``sys.modules``, so an
indirect import (a pure module importing a helper that imports psycopg) is caught too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import project_root

# the decisions: (inputs, policy, clock) -> plan, tested by tables
PURE = (
    "core.chunking", "core.partitioning", "core.ratelimit", "core.supervision", "core.tiers", "core.cursor",
    "core.negotiate", "core.search.page",
    "core.ingest.mailplan", "core.ingest.fair", "core.replicas.route",
    "opsctl.scaling.engine", "opsctl.scaling.snapshot", "opsctl.scaling.policy",
    "opsctl.simulate.model", "opsctl.simulate.summary", "opsctl.simulate.compare", "opsctl.simulate.tune",
    "opsctl.simulate.forecast", "opsctl.simulate.shapes", "opsctl.simulate.chart", "opsctl.simulate.reconstruct",
    "opsctl.capacity.plan", "opsctl.capacity.calibration",
    "opsctl.partitions.plan", "opsctl.partitions.policy",
    "opsctl.vindex.decide", "opsctl.vindex.policy", "opsctl.vindex.tenants", "opsctl.reembed.plan", "core.spaces.spec",
    "opsctl.backup.plan", "opsctl.backup.policy", "opsctl.backup.repoplan", "opsctl.backup.walplan",
    "opsctl.cachepolicy.plan", "opsctl.cachepolicy.policy",
    "opsctl.daemon.schedule", "opsctl.daemon.role", "core.usage.tally",
    "opsctl.slowqueries.parse", "opsctl.slowqueries.plan", "opsctl.slowqueries.policy",
    "opsctl.up.health", "opsctl.container.probe",
    "core.mail.message", "core.mail.ids", "core.mail.headers", "core.mail.mime", "core.mail.html",
    "core.mail.quotes", "core.mail.subjects", "core.mail.text", "core.mail.threads", "core.mail.mbox",
)
# areas built on another's decisions: the simulator replays the scaling engine itself and reads the
# capacity calibration for its default capacity
ALSO = {"opsctl.simulate": ("opsctl.scaling", "opsctl.capacity")}
IO_LIBRARIES = ("psycopg", "psycopg_pool", "redis", "kubernetes", "httpx", "prometheus_api_client", "requests",
                "apscheduler", "fastapi", "uvicorn", "psutil")


def loaded_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=project_root()).stdout
    return {name.split(".")[0] for name in json.loads(out)}


@pytest.mark.parametrize("module", PURE)
def test_pure_decisions_import_no_io(module: str) -> None:
    leaked = loaded_after(f"import {module}") & set(IO_LIBRARIES)
    assert not leaked, f"{module} pulls in {sorted(leaked)}: keep I/O in the adapters"


def test_the_cli_starts_without_heavy_libraries() -> None:
    # `opsctl --help` must stay fast: command modules import their libraries inside the command
    leaked = loaded_after("import opsctl.cli") & {*IO_LIBRARIES, "pydantic", "numpy", "torch", "yaml"}
    assert not leaked, f"importing the CLI loads {sorted(leaked)}"


def test_every_pure_module_exists_and_every_planner_is_listed() -> None:
    root = project_root()
    for module in PURE:
        assert (root / Path(*module.split("."))).with_suffix(".py").is_file(), module
    planners = {str(p.relative_to(root).with_suffix("")).replace("/", ".")
                for p in (root / "opsctl").rglob("*.py") if p.stem in ("plan", "decide", "engine")}
    assert planners <= set(PURE), f"decision modules not checked here: {sorted(planners - set(PURE))}"


@pytest.mark.parametrize("module", [m for m in PURE if m.startswith("opsctl.")])
def test_a_pure_module_depends_only_on_its_own_area_and_the_policy_loader(module: str) -> None:
    # a cache decision that imports the daemon package drags the scheduler's module tree along
    code = (f"import sys; import {module}; import json; "
            "print(json.dumps(sorted({'.'.join(n.split('.')[:2]) for n in sys.modules if n.startswith('opsctl.')})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=project_root()).stdout
    own = ".".join(module.split(".")[:2])
    others = set(json.loads(out)) - {own, "opsctl.policy", *ALSO.get(own, ())}
    assert not others, f"{module} imports {sorted(others)}: share helpers through opsctl.policy or core"
