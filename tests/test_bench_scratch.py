"""A benchmark's scratch directory goes however the run ends, SIGTERM included (a CI timeout's kill
used to leave tens of GB in /tmp), and stays with ``keep``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, time
from bench.scratch import scratch_dir
with scratch_dir("opsctl-scratch-test-", keep=sys.argv[1] == "keep") as root:
    (root / "data").write_text("x")
    print(root, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize(("keep", "left"), [("drop", False), ("keep", True)])
def test_sigterm_unwinds_and_removes_the_directory_unless_kept(tmp_path: Path, keep: str, left: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, keep], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    root = Path(proc.stdout.readline().strip())  # the directory exists and holds data now
    assert (root / "data").is_file()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert root.exists() is left
    assert (f"kept {root}" in out) is left


def test_an_exception_removes_it_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from bench.scratch import scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[Path] = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), scratch_dir("opsctl-scratch-test-") as root:
        seen.append(root)
        raise RuntimeError("boom")
    assert seen and not seen[0].exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
