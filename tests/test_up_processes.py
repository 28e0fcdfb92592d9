"""The children of `opsctl up`, one by one, with real processes: the daemon's job processes are killed
even when the daemon died just before the stop; a spawn that fails leaks no descriptor; a PostgreSQL that
cannot start says why on one line."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

from core.embedded import EmbeddedPostgres, EmbeddedPrometheus
from core.errors import ServiceUnavailable
from core.workerpool import WorkerPool
from opsctl.daemon.process import DaemonProcess
from tests.conftest import outside_pytest_tmp
from tests.waiting import wait_for


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class ShortLivedDaemon(DaemonProcess):
    """A "daemon" whose job starts a process in the daemon's group, and which then dies on its own."""

    def __init__(self, job_pid_file: Path, log_dir: Path) -> None:
        super().__init__({}, 0, log_dir=log_dir)
        self.job_pid_file = job_pid_file

    def command(self) -> list[str]:
        return ["sh", "-c", f'sleep 600 & echo $! > "{self.job_pid_file}.tmp"; mv "{self.job_pid_file}.tmp" '
                            f'"{self.job_pid_file}"; exit 3']


def test_the_daemons_job_processes_are_killed_when_the_daemon_died_just_before_the_stop(tmp_path: Path) -> None:
    pid_file = tmp_path / "job.pid"
    daemon = ShortLivedDaemon(pid_file, tmp_path / "logs")
    daemon.start()
    assert daemon.proc is not None
    job = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, "the job's process"))
    try:
        wait_for(lambda: psutil.Process(daemon.proc.pid).status() == psutil.STATUS_ZOMBIE, 60,  # type: ignore[union-attr]
                 "the daemon to die")
        daemon.stop()
        assert daemon.proc.returncode == 3
        wait_for(lambda: gone(job), 60, "its job's process to be killed with the daemon's group")
    finally:
        if not gone(job):
            os.kill(job, 9)


def test_a_spawn_that_fails_leaks_no_log_descriptor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the worker pool and the supervisor retry a failed spawn forever: each try must close its log file
    pool = WorkerPool(env={}, log_dir=tmp_path / "logs")
    daemon = DaemonProcess({}, 0, log_dir=tmp_path / "logs")
    not_a_binary = tmp_path / "bin" / "prometheus"  # on PATH, executable, and not a program
    not_a_binary.parent.mkdir()
    not_a_binary.write_bytes(b"\x7fELF garbage")
    not_a_binary.chmod(not_a_binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{not_a_binary.parent}{os.pathsep}{os.environ['PATH']}")
    prometheus = EmbeddedPrometheus(tmp_path / "prometheus", "127.0.0.1:1")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    for what, spawn in (("worker", pool._spawn), ("daemon", daemon.start), ("prometheus", prometheus.start)):
        before = open_fds()
        with pytest.raises(OSError) as failed:
            spawn()
        assert open_fds() == before, f"{what}: a descriptor is left open after the failed spawn ({failed.value})"


def test_postgresql_that_cannot_start_says_why_on_one_line() -> None:
    pg = EmbeddedPostgres(outside_pytest_tmp("opsctl-test-pgfail-") / "pg", extra_conf=("no_such_setting = 1",))
    with pytest.raises(ServiceUnavailable) as failed:
        pg.start()
    message = failed.value.message
    assert "\n" not in message
    assert message.startswith("PostgreSQL exited with 1 while starting: "), message
    assert 'unrecognized configuration parameter "no_such_setting"' in message, message
    assert " | " in message and message.endswith(f"(log: {pg.log_file})"), message
