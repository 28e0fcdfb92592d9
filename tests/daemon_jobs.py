"""Jobs for the daemon tests (scheduled with ``run: tests.daemon_jobs:…``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from core.config import Settings
from core.errors import OperationFailed


def job_tick(settings: Settings, policy_dir: Path) -> str:
    """Writes one row, so a test can count the runs independently of the daemon's own records."""
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO ops_events (actor, action) VALUES ('test', 'test.tick')")
    return "ticked"


def job_raise(settings: Settings, policy_dir: Path) -> str:
    raise RuntimeError("boom: an unexpected bug")


def job_fail(settings: Settings, policy_dir: Path) -> str:
    raise OperationFailed("the drill failed: 3 documents missing")


def job_hang(settings: Settings, policy_dir: Path) -> str:
    """Starts a long child process (as pg_basebackup would be) and waits for it; the pid goes to the data dir."""
    child = subprocess.Popen(["sleep", "600"])
    (settings.data_dir / "hang.pid").write_text(str(child.pid))
    child.wait()
    return "hung"


def job_noop(settings: Settings, policy_dir: Path) -> str:
    """Changes nothing: its runs are routine decisions, never audit events."""
    return "nothing to do"
