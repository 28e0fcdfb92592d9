"""Running pg_* tools of the embedded install (as the server's system user) with their output in a file."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.embedded import pg_command
from core.errors import OperationFailed

Progress = Callable[[str, float | None], None]
"""What long backup work reports: a step's name and its fraction done (None: unknown)."""


def no_progress(_: str, __: float | None) -> None:
    return None


def run_pg(tool: str, *args: str, timeout: float | None = None, cwd: Path | None = None) -> str:
    """Run a pg tool; raise OperationFailed with the tail of its output when it fails.

    Output goes through a file, never a pipe: ``pg_ctl start`` leaves the postmaster holding it.
    """
    code, text = run_pg_status(tool, *args, timeout=timeout, cwd=cwd)
    if code != 0:
        raise OperationFailed(f"{tool} failed (exit {code}): {tail(text)}")
    return text


def run_pg_status(tool: str, *args: str, timeout: float | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run a pg tool; its exit code and output (stdout and stderr together), for the caller to judge."""
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.run(pg_command(tool, *args), stdout=out, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise OperationFailed(f"{tool} did not finish within {timeout:.0f} s") from exc
        out.seek(0)
        return proc.returncode, out.read()


def tail(text: str, lines: int = 4) -> str:
    """The last lines of a tool's output, on one line."""
    return " | ".join(text.strip().splitlines()[-lines:])


def dir_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    size = files = 0
    for p in path.rglob("*"):
        if p.is_file():
            size += p.stat().st_size
            files += 1
    return size, files
