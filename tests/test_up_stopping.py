"""The stop of `opsctl up`: one sequence of steps shared by the API's shutdown and `System.stop`,
and the API still serving while the steps before it run (the daemon's last job calls the API)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from fastapi import FastAPI

from core.threads import Flag
from opsctl.up.server import api_server
from opsctl.up.signals import StopSignals
from opsctl.up.stopping import Step, StopSequence
from tests.waiting import wait_for


def _steps(ran: list[str], names: list[str | None]) -> list[Step]:
    return [Step(name, lambda i=i: ran.append(f"graceful {i}"), lambda i=i: ran.append(f"forced {i}"))
            for i, name in enumerate(names)]


@pytest.mark.parametrize(("calls", "expected"), [
    ([None], ["graceful 0", "graceful 1", "graceful 2", "graceful 3"]),
    (["the daemon", None], ["graceful 0", "graceful 1", "graceful 2", "graceful 3"]),
    (["the daemon"], ["graceful 0", "graceful 1"]),
    (["the daemon", "the daemon", None], ["graceful 0", "graceful 1", "graceful 2", "graceful 3"]),
    ([None, "the daemon", None], ["graceful 0", "graceful 1", "graceful 2", "graceful 3"]),
])
def test_each_step_runs_once_whoever_reaches_it(calls: list[str | None], expected: list[str]) -> None:
    ran: list[str] = []
    sequence = StopSequence(_steps(ran, [None, "the daemon", "workers", "PostgreSQL"]), Flag())
    for through in calls:
        sequence.run(through=through)
    assert ran == expected


def test_a_force_between_the_calls_kills_the_rest_and_says_so_first() -> None:
    ran: list[str] = []
    force = Flag()
    sequence = StopSequence(_steps(ran, [None, "the daemon", "workers", "PostgreSQL"]), force)
    sequence.run(through="the daemon")
    force.set()
    sequence.run()
    assert ran == ["graceful 0", "graceful 1", "forced 2", "forced 3"]
    assert sequence.summary() == "stopped, not cleanly: forced by a second signal"


def test_the_summary_names_a_failed_step_and_a_child_that_did_not_exit_cleanly() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])

    def fail() -> None:
        raise OSError("gone")

    sequence = StopSequence([Step("Redis", fail), Step("workers", child.wait, processes=lambda: [child])], Flag())
    sequence.run()
    assert sequence.summary() == (f"stopped, not cleanly: stopping Redis failed (OSError: gone); "
                                  f"workers: pid {child.pid} exited with 3")


def test_a_stop_with_nothing_started_has_no_summary() -> None:
    sequence = StopSequence([Step(None, lambda: None), Step("the daemon", None)], Flag())
    sequence.run()
    assert sequence.summary() is None


def test_the_api_still_serves_while_what_calls_it_stops() -> None:
    import uvicorn

    app = FastAPI()

    @app.get("/admin/workers")
    def workers() -> dict[str, int]:
        return {"replicas": 2}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen: list[object] = []

    def before_shutdown() -> None:  # the daemon's last autoscale run, against the API being stopped
        try:
            seen.append(httpx.get(f"http://127.0.0.1:{port}/admin/workers", timeout=10).json())
        except httpx.HTTPError as exc:
            seen.append(exc)

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = api_server(config, StopSignals(), before_shutdown=before_shutdown)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the API to serve")
    server.handle_exit(signal.SIGTERM, None)
    thread.join(30)
    assert not thread.is_alive()
    assert seen == [{"replicas": 2}]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/admin/workers", timeout=5)
