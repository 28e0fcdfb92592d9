"""`opsctl up` as a newcomer meets it: `make up ARGS=…`, a port in use, the endpoints and curl lines it
prints (run here, as printed, against the real API), Prometheus moved off a taken port, a quiet daemon
log, a last line when it stops, and a restart that resumes the worker count the autoscaler left."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.embedded import prometheus_binary
from opsctl.daemon.loop import gist
from opsctl.up.banner import endpoint_lines, try_it
from opsctl.up.stopping import stop_summary
from opsctl.up.workers import LastCount, Workers, initial_workers
from tests.conftest import free_port, outside_pytest_tmp, project_root
from tests.test_up import opsctl, prom_query, ready
from tests.test_up_health import reads_nothing
from tests.waiting import wait_for

ROOT = project_root()
NOW = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
LAST = LastCount("core-worker", 1, NOW - timedelta(minutes=12))


@pytest.mark.parametrize(("requested", "last", "bounds", "expected"), [
    (4, LAST, (1, 10), Workers(4, "--workers")),
    (0, LAST, (1, 10), Workers(0, "--workers")),  # what the user asks for, even outside the policy's bounds
    (None, LAST, (1, 10), Workers(1, "as the autoscaler left core-worker 12 min ago; --workers N to choose")),
    (None, LastCount("core-worker", 3, NOW - timedelta(seconds=40)), (1, 10),
     Workers(3, "as the autoscaler left core-worker 40 s ago; --workers N to choose")),
    (None, None, (1, 10), Workers(2, "the default; --workers N to choose")),
    (None, LAST, None, Workers(2, "the default; --workers N to choose")),  # no local service in the policy
    (None, LastCount("core-worker", 1, NOW - timedelta(hours=25)), (1, 10),
     Workers(2, "the default: the autoscaler's last count (1, 25 h ago) is older than 24 h")),
    (None, LastCount("core-worker", 12, NOW - timedelta(minutes=1)), (1, 10),
     Workers(2, "the default: the autoscaler's last count (12) is outside core-worker's minReplicas..maxReplicas "
                "(1..10)")),
])
def test_initial_workers(requested: int | None, last: LastCount | None, bounds: tuple[int, int] | None,
                         expected: Workers) -> None:
    assert initial_workers(requested, last, bounds, NOW) == expected


@pytest.mark.parametrize(("problems", "line"), [
    ([], "stopped: everything exited cleanly"),
    (["the daemon: pid 7 exited with 1", "workers: pid 9 was killed by SIGKILL"],
     "stopped, not cleanly: the daemon: pid 7 exited with 1; workers: pid 9 was killed by SIGKILL"),
])
def test_stop_summary(problems: list[str], line: str) -> None:
    assert stop_summary(problems) == line


def test_endpoint_lines_keep_every_value_whole() -> None:
    url = "postgresql://pgserver:@/opsctl?host=" + "/very/long" * 12
    assert endpoint_lines({"api": "http://127.0.0.1:8080", "database": url}) == [
        "  api       http://127.0.0.1:8080", f"  database  {url}"]


def test_every_curl_line_names_its_content_type() -> None:
    curls = [line for line in try_it("http://127.0.0.1:8080") if line.startswith("curl ")]
    assert len(curls) == 2 and all("-H 'Content-Type: application/json'" in line for line in curls)


@pytest.mark.parametrize("module", ["workers", "banner"])
def test_the_decisions_read_nothing(module: str) -> None:
    """Pure: no import but the standard library's, none of its I/O either (inside functions included)."""
    assert reads_nothing(ROOT / "opsctl" / "up" / f"{module}.py")


def test_make_up_passes_args_to_opsctl_up(tmp_path: Path) -> None:
    """`make up ARGS="…"`: the options reach `opsctl up` (a stand-in that prints its arguments)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    shim = venv / "bin" / "opsctl"
    shim.write_text('#!/bin/sh\necho "opsctl $*"\n')
    shim.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: make installs nothing
    tools = tmp_path / "tools"  # what system-deps looks for, so that it never reaches for apt-get
    tools.mkdir()
    for tool in ("prometheus", "promtool", "kubectl"):
        (tools / tool).write_text("#!/bin/sh\n")
        (tools / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    run = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "up", f"VENV={venv}",
                          "ARGS=--port 8081 --prometheus-port 9091"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "opsctl up --port 8081 --prometheus-port 9091", run.stdout


def clean_env(data_dir: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), HOME_DIR=str(home), PYTHONPATH=str(ROOT))
    return env


def test_a_port_in_use_says_how_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(tmp_path / "state", tmp_path)
        run = opsctl("up", "--port", str(port), "--no-prometheus", env=env, check=False)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f'error: port {port} is in use: choose another with --port N (make up ARGS="--port N", or OPSCTL_PORT=N)')
    assert "stopped" not in run.stderr, "nothing had started: no stop line"


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def policies(directory: Path) -> Path:
    """The shipped autoscaling policy, scaling down without a stabilization window; autoscale the only job."""
    directory.mkdir()
    text = (ROOT / "policies" / "autoscaling.yaml").read_text()
    assert "stabilizationWindowSeconds: 300" in text
    (directory / "autoscaling.yaml").write_text(text.replace("stabilizationWindowSeconds: 300",
                                                             "stabilizationWindowSeconds: 0"))
    (directory / "schedule.yaml").write_text("jobs:\n  autoscale:\n    every: 30s\n")
    return directory


def opsctl_on_path(directory: Path) -> Path:
    """A bin directory with `opsctl`, as the venv would have it."""
    directory.mkdir()
    shim = directory / "opsctl"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m opsctl.cli "$@"\n')
    shim.chmod(0o755)
    return directory


def printed_block(out: str, heading: str) -> str:
    """The indented lines after ``heading`` in what `opsctl up` printed, as a shell script."""
    lines = out.split(f"\n{heading}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return "\n".join(line[2:] for line in lines)


def json_values(text: str) -> list[object]:
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(line)[0] for line in text.splitlines() if line.strip()]


def cycle_lines(daemon_log: str) -> list[str]:
    return re.findall(r" INFO opsctl\.daemon: cycle \d+: (.*)", daemon_log)


def stopped_cleanly(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Ctrl-C: exit 0, and the last line printed says every child exited cleanly."""
    proc.send_signal(signal.SIGINT)
    code = proc.wait(180)
    out = log.read_text()
    assert code == 0, out[-3000:]
    assert out.strip().splitlines()[-1] == "stopped: everything exited cleanly", out[-3000:]


def test_the_banner_the_stop_line_and_a_restart_that_resumes_the_autoscalers_count(tmp_path: Path,
                                                                                    occupied: int) -> None:
    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    assert shutil.which("curl"), "curl runs the printed lines"
    # a long data dir: the database URL is wider than the 80 columns a file gets
    data_dir = outside_pytest_tmp("opsctl-test-banner-") / ("a-data-dir-deep-enough-to-be-wide" * 2) / "state"
    env = clean_env(data_dir, tmp_path)
    env.update(COLUMNS="80", OPSCTL_PROMETHEUS_PORT=str(occupied), OPSCTL_POLICY_DIR=str(policies(tmp_path / "p")))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("wb") as out:  # no terminal: a file, as with `make up 2>&1 | tee log`
            return subprocess.Popen([sys.executable, "-m", "opsctl.cli", "up", "--port", str(port)], env=env,
                                    cwd=tmp_path, stdout=out, stderr=out)

    def banner() -> str:
        text = log.read_text()
        return text if "Ctrl-C stops everything" in text else ""

    proc = start()
    try:
        out = wait_for(banner, 180, "the endpoints")
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # printed once the API listens
        state = json.loads((data_dir / "state.json").read_text())
        # every URL, and the data dir, whole on one line: not wrapped at 80 columns, not cut (a table of
        # two columns would have folded the database's URL, and the data dir is wider than 80 by itself)
        assert len(str(data_dir)) > 80
        lines = out.splitlines()
        urls = [state[key] for key in ("api_url", "database_url", "redis_url", "prometheus_url")]
        for value in (*urls, str(data_dir)):
            assert any(line.split()[-1:] == [value] for line in lines), (value, out)
        # Prometheus moved off the port in use (OPSCTL_PROMETHEUS_PORT): said once, and in the endpoints
        moved = int(state["prometheus_url"].rsplit(":", 1)[1])
        assert moved != occupied
        assert [line for line in lines if line.startswith("Prometheus: ")] == [
            f"Prometheus: port {occupied} is in use, so it listens on {moved} (choose with --prometheus-port N: "
            f'make up ARGS="--prometheus-port N", or OPSCTL_PROMETHEUS_PORT=N)']
        assert re.search(r"^  workers +2 \(the default; --workers N to choose\)$", out, re.MULTILINE), out

        # the printed lines for a second terminal, run as printed: a key, a document in, a search
        user_env = {**env, "PATH": f"{opsctl_on_path(tmp_path / 'bin')}:{env['PATH']}"}
        script = printed_block(out, "In another terminal:")
        tried = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=user_env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert tried.returncode == 0, tried.stderr
        accepted, searched = json_values(tried.stdout)
        assert isinstance(accepted, dict) and accepted.get("accepted") == 1, accepted
        assert isinstance(searched, dict) and "results" in searched, searched

        # the autoscaler brings the idle pool down to 1 (no stabilization window in this policy)
        prom = state["prometheus_url"]
        wait_for(lambda: prom_query(prom, "max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight) == 0"),
                 120, "Prometheus to see an empty queue")
        scaled = json.loads(opsctl("scale", "core-worker", "--apply", "-o", "json", env=env).stdout)
        assert scaled["desired_replicas"] == 1, scaled
        admin = {"Authorization": f"Bearer {state['admin_token']}"}
        assert httpx.get(f"{api}/admin/workers", headers=admin, timeout=10).json()["replicas"] == 1
        # the daemon's own autoscale run (its first one may have come before Prometheus had data)
        wait_for(lambda: json.loads(opsctl("events", "--all", "--action", "daemon.job", "-o", "json",
                                           env=env).stdout), 90, "a daemon job run")
    finally:
        stopped_cleanly(proc, log)
    # the last line is in logs/up.log too
    assert (data_dir / "logs" / "up.log").read_text().strip().splitlines()[-1].endswith(
        "INFO opsctl.up: stopped: everything exited cleanly")

    # the daemon's log: no failed autoscale run, no line per HTTP request, a cycle's sentence once
    daemon_log = (data_dir / "logs" / "daemon.log").read_text()
    assert "job autoscale failed" not in daemon_log, daemon_log[-3000:]
    assert "HTTP Request:" not in daemon_log, daemon_log[-3000:]
    said = [gist(line) for line in cycle_lines(daemon_log)]
    assert said and all(a != b for a, b in itertools.pairwise(said)), said

    # a restart resumes the autoscaler's count, and says so
    proc = start()
    try:
        out = wait_for(banner, 180, "the endpoints after the restart")
        resumed = r"^  workers +1 \(as the autoscaler left core-worker \d+ (s|min) ago; --workers N to choose\)$"
        assert re.search(resumed, out, re.MULTILINE), out
        assert wait_for(lambda: ready(api), 60, "the API")
        state = json.loads((data_dir / "state.json").read_text())
        admin = {"Authorization": f"Bearer {state['admin_token']}"}
        assert httpx.get(f"{api}/admin/workers", headers=admin, timeout=10).json()["replicas"] == 1
    finally:
        stopped_cleanly(proc, log)
