"""`opsctl up`'s supervisor with real child processes: stopping it abandons a restart in progress at once
(PostgreSQL's can wait 120 s to be ready) and starts nothing after; how a restart failed is one line."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ServiceUnavailable
from core.supervision import RestartPolicy
from core.threads import Abort
from opsctl.up.supervisor import Child, Supervisor
from tests.waiting import wait_for

NEVER = 120.0  # "ready" never comes within this: its expiry means the test failed


class SleepServer:
    """A child process (``sleep``) whose start waits to be ready, as PostgreSQL's does, for ``ready``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.starting = threading.Event()  # a start has begun and waits to be ready
        self.ready = threading.Event()
        self.error: str | None = None  # a start fails with this

    def start(self, abort: Abort | None = None) -> None:
        self.starts += 1
        self.proc = subprocess.Popen(["sleep", "600"])
        self.starting.set()
        if self.error:
            raise ServiceUnavailable(self.error)
        deadline = time.monotonic() + NEVER
        while not self.ready.is_set():
            if abort is not None and abort.is_set():
                raise ServiceUnavailable("start abandoned: stopping")
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"not ready within {NEVER:.0f} s")
            time.sleep(0.02)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def die(self) -> None:
        """``kill -9``, and reaped: the supervisor's next look sees it dead."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def servers() -> Iterator[list[SleepServer]]:
    made: list[SleepServer] = []
    yield made
    for server in made:
        server.ready.set()
        server.kill()


def started(servers: list[SleepServer]) -> SleepServer:
    server = SleepServer()
    servers.append(server)
    server.ready.set()
    server.start()
    server.ready.clear()
    server.starting.clear()
    return server


def supervisor(data_dir: Path) -> Supervisor:
    return Supervisor(data_dir, RestartPolicy(initial_delay=0.0, healthy_after=60.0), interval=0.05)


def test_stop_abandons_a_restart_in_progress_and_restarts_nothing_after(
        tmp_path: Path, servers: list[SleepServer]) -> None:
    slow, other = started(servers), started(servers)
    sup = supervisor(tmp_path)
    sup.add(Child("slow", slow, slow.start))
    sup.add(Child("other", other, other.start))
    slow.die()
    other.die()
    sup.start()
    try:
        assert slow.starting.wait(60), "the supervisor never restarted the first dead child"
        assert json.loads((tmp_path / "up.json").read_text())["children"][0]["state"] == "restarting"
        returned = threading.Event()
        stopper = threading.Thread(target=lambda: (sup.stop(), returned.set()))
        stopper.start()
        assert returned.wait(60), "stop() waited for the restart in progress"
        assert sup._thread is not None and not sup._thread.is_alive(), "the supervisor's loop still runs"
        assert (slow.starts, other.starts) == (2, 1), "a child was restarted after stop()"
    finally:
        slow.ready.set()
        sup.stop()


def test_how_a_restart_failed_is_one_line_in_up_json(tmp_path: Path, servers: list[SleepServer]) -> None:
    child = started(servers)
    child.error = "PostgreSQL exited with 1 while starting:\nLOG: a\n\nFATAL: b\n"
    sup = supervisor(tmp_path)
    sup.add(Child("postgres", child, child.start))
    child.die()
    sup.start()
    try:
        def failed() -> dict[str, str] | None:
            rows = json.loads((tmp_path / "up.json").read_text())["children"]
            return rows[0] if (rows[0]["last_exit"] or "").startswith("failed to start") else None

        row = wait_for(failed, 60, "a failed restart in up.json")
    finally:
        sup.stop()
    assert row["last_exit"] == "failed to start: PostgreSQL exited with 1 while starting: | LOG: a | FATAL: b"
