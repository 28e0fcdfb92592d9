"""`opsctl up` owns its processes, tried with real ones: Ctrl-C with nobody reading its output, `kill -9`
of it, a second one on the same data dir, leftovers of a dead one, children that die, a SIGTERM while it
starts, and a second Ctrl-C while it stops."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from core.embedded import EmbeddedPostgres, pg_command
from tests.conftest import free_port, outside_pytest_tmp, project_root
from tests.test_up import opsctl, ready, start_up
from tests.waiting import wait_for

KINDS = ("postgres", "redis", "prometheus", "worker", "daemon")
Proc = tuple[int, float]  # (pid, creation time): a PID alone may name another process later


def kind_of(proc: psutil.Process) -> str | None:
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return None
    if not argv:
        return None
    exe = Path(argv[0]).name
    if exe in ("postgres", "postmaster"):
        return "postgres"
    if exe == "redis-server":
        return "redis"
    if exe == "prometheus":
        return "prometheus"
    if "core.ingest.worker" in argv:
        return "worker"
    if "opsctl.cli" in argv and "daemon" in argv:
        return "daemon"
    return None


def alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - created) < 0.01
    except psutil.Error:
        return False


def children(up_pid: int, data_dir: Path) -> dict[str, list[Proc]]:
    """The processes `opsctl up` runs, by kind: its children, and the postmaster of its data dir."""
    found: dict[str, list[Proc]] = {}
    procs = []
    with contextlib.suppress(psutil.Error):
        procs = psutil.Process(up_pid).children()
    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        postmaster = psutil.Process(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
        if postmaster.pid not in {p.pid for p in procs}:
            procs.append(postmaster)
    for proc in procs:
        kind = kind_of(proc)
        if kind is not None and proc.status() != psutil.STATUS_ZOMBIE:
            found.setdefault(kind, []).append((proc.pid, proc.create_time()))
    return found


def every_kind(up_pid: int, data_dir: Path) -> dict[str, list[Proc]]:
    kids = children(up_pid, data_dir)
    return kids if set(KINDS) <= kids.keys() else {}


def still_alive(kids: dict[str, list[Proc]]) -> list[str]:
    return [f"{kind} {pid}" for kind, procs in kids.items() for pid, created in procs if alive(pid, created)]


def cluster_state(pg_dir: Path) -> str:
    out = subprocess.run(pg_command("pg_controldata", "-D", str(pg_dir)), capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"Database cluster state:\s+(.+)", out)
    assert match, out
    return match.group(1).strip()


@dataclass
class Up:
    """Where `opsctl up` runs in a test: its data dir, environment, ports and output file."""

    data_dir: Path
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    prom_port: int = field(default_factory=free_port)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> subprocess.Popen[bytes]:
        return start_up(self.env, self.port, self.prom_port, self.log)

    def running(self, proc: subprocess.Popen[bytes]) -> dict[str, list[Proc]]:
        """Wait for the API and every child; return the children."""
        wait_for(lambda: ready(self.api), 120, "the API")
        return wait_for(lambda: every_kind(proc.pid, self.data_dir), 120, "every child to run")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """A data dir and the environment of `opsctl up`; afterwards, whatever still runs on it is killed
    (so that a failing test leaves nothing running on a shared machine)."""
    data_dir = outside_pytest_tmp("opsctl-test-owns-") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), HOME_DIR=str(tmp_path), PYTHONPATH=str(project_root()))
    yield Up(data_dir, env, tmp_path / "up.log")
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            mine = (proc.info["environ"] or {}).get("OPSCTL_DATA_DIR") == str(data_dir)
            if proc.pid != os.getpid() and (mine or str(data_dir) in " ".join(proc.info["cmdline"] or [])):
                proc.send_signal(signal.SIGQUIT if kind_of(proc) == "postgres" else signal.SIGKILL)


def test_ctrl_c_with_nobody_reading_the_output_still_stops_every_child(up: Up) -> None:
    # `make up 2>&1 | tee log`, then Ctrl-C: tee dies with the SIGINT, so every write to stderr fails
    data_dir = up.data_dir
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsctl.cli", "up", "--port", str(up.port), "--prometheus-port", str(up.prom_port),
         "--workers", "1"], env=up.env, cwd=up.env["HOME_DIR"], stdout=write_end, stderr=write_end)
    os.close(write_end)
    try:
        kids = up.running(proc)
        os.close(read_end)  # the reader goes first, as tee does
        read_end = -1
        proc.send_signal(signal.SIGINT)
        code = proc.wait(180)
    finally:
        if read_end >= 0:
            os.close(read_end)
        if proc.poll() is None:
            proc.kill()
    assert still_alive(kids) == [], "opsctl up exited leaving these running"
    assert code == 0
    assert not (data_dir / "pg" / "postmaster.pid").exists()
    assert cluster_state(data_dir / "pg") == "shut down"
    assert "pid" not in json.loads((data_dir / "state.json").read_text())
    assert "stopping PostgreSQL" in (data_dir / "logs" / "up.log").read_text()


def test_kill_9_takes_the_children_along_one_up_per_data_dir_and_leftovers_are_stopped(up: Up) -> None:
    data_dir, env = up.data_dir, up.env
    first = up.start()
    planted: list[subprocess.Popen[bytes]] = []
    third = None
    try:
        # a second opsctl up on the same data dir, while the first is still starting: refused at once
        wait_for(lambda: (data_dir / "pg" / "PG_VERSION").exists(), 120, "the first up to create its database")
        second = opsctl("up", "--port", str(free_port()), "--prometheus-port", str(free_port()), env=env, check=False)
        assert second.returncode == 1, second.stderr
        assert second.stderr.splitlines()[-1].startswith(
            f"error: opsctl up is already running on {data_dir} (pid {first.pid})"), second.stderr

        kids = up.running(first)
        first.kill()  # kill -9: no chance to stop anything
        first.wait()
        wait_for(lambda: not still_alive(kids), 120, "the children to die with their parent")
        assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL got a fast shutdown"

        # what the kernel's parent-death signal cannot reach, left for the next start to stop:
        # a process a dead daemon's job started in its session (it carries the data dir, as every child does) …
        job = subprocess.Popen(["sh", "-c", "sleep 601 & env OPSCTL_DATA_DIR=/elsewhere sleep 602 & exec sleep 600"],
                               start_new_session=True, env={**os.environ, "OPSCTL_DATA_DIR": str(data_dir)})
        planted.append(job)

        def job_children() -> dict[str, int]:
            found = {}
            for child in psutil.Process(job.pid).children():
                with contextlib.suppress(psutil.Error):  # gone since
                    if cmdline := child.cmdline():  # empty for an instant while the child execs
                        found[cmdline[-1]] = child.pid
            return found

        members = wait_for(lambda: (found := job_children()).keys() == {"601", "602"} and found, 30,
                           "the job's children")
        member, foreign_member = members["601"], members["602"]
        foreign_member_created = psutil.Process(foreign_member).create_time()
        job_created = psutil.Process(job.pid).create_time()
        job.kill()
        job.wait()
        # … a recorded PID that now belongs to an unrelated process, which must survive …
        unrelated = subprocess.Popen(["sleep", "600"], start_new_session=True)
        planted.append(unrelated)
        unrelated_created = psutil.Process(unrelated.pid).create_time()
        record = json.loads((data_dir / "up.json").read_text())
        record["children"] += [
            {"name": "daemon", "processes": [{"pid": job.pid, "created": job_created}]},
            {"name": "worker", "processes": [{"pid": unrelated.pid, "created": unrelated_created - 100}]}]
        (data_dir / "up.json").write_text(json.dumps(record))
        # … and a PostgreSQL started on the data dir by someone else (pg_ctl: nobody's child)
        elsewhere = outside_pytest_tmp("opsctl-test-foreign-")
        elsewhere.chmod(0o777)
        subprocess.run(pg_command("pg_ctl", "-w", "-D", str(data_dir / "pg"), "-l", str(elsewhere / "pg.log"),
                                  "-o", f"-k {elsewhere} -p 5432", "start"), check=True, capture_output=True)
        foreign = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        foreign_created = psutil.Process(foreign).create_time()

        third = up.start()
        wait_for(lambda: ready(up.api), 120, "the API after the restart")
        assert not psutil.pid_exists(member) or psutil.Process(member).status() == psutil.STATUS_ZOMBIE
        assert alive(foreign_member, foreign_member_created), "a process of another data dir was killed"
        assert alive(unrelated.pid, unrelated_created), "a process that reused a recorded PID was killed"
        assert not alive(foreign, foreign_created)
        own = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        assert psutil.Process(own).ppid() == third.pid, "the new PostgreSQL is the new opsctl up's child"
        assert "did not stop its children; stopping what is left: " in up.log.read_text()
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(180)
        for proc in planted:
            proc.kill()
            proc.wait()
        with contextlib.suppress(UnboundLocalError, ProcessLookupError):
            os.kill(foreign_member, signal.SIGKILL)
    assert third is not None and third.returncode == 0, up.log.read_text()[-3000:]
    assert cluster_state(data_dir / "pg") == "shut down"


def metric(api: str, name: str, child: str) -> float | None:
    text = httpx.get(f"{api}/metrics", timeout=10).text
    match = re.search(rf'^{name}\{{child="{child}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


def kill_and_wait_for_another(up_pid: int, data_dir: Path, kind: str, pid: int) -> dict[str, list[Proc]]:
    os.kill(pid, signal.SIGKILL)

    def replaced() -> dict[str, list[Proc]]:
        kids = every_kind(up_pid, data_dir)
        return kids if kids and pid not in {p for p, _ in kids[kind]} else {}

    return wait_for(replaced, 180, f"{kind} to be restarted")


def test_a_child_that_dies_is_restarted_counted_logged_and_shown_by_status(up: Up) -> None:
    data_dir, env, api = up.data_dir, up.env, up.api
    proc = up.start()
    try:
        kids = up.running(proc)
        for kind in ("redis", "prometheus", "daemon", "worker", "postgres"):
            kids = kill_and_wait_for_another(proc.pid, data_dir, kind, kids[kind][0][0])
        wait_for(lambda: ready(api), 120, "the API with PostgreSQL back")
        # (the daemon or a worker may die once more of PostgreSQL's restart: at least one restart each)
        wait_for(lambda: all((metric(api, "opsctl_up_child_restarts_total", k) or 0) >= 1 for k in KINDS), 60,
                 "every restart counted")
        for kind in ("postgres", "redis", "prometheus", "daemon"):
            assert metric(api, "opsctl_up_child_up", kind) == 1.0, kind

        def all_running() -> dict[str, Any] | None:
            shown = json.loads(opsctl("status", "-o", "json", env=env).stdout)
            return shown if all(r["state"] == "running" for r in shown["up"]["children"]) else None

        status = wait_for(all_running, 60, "status to show every child running")
        rows = {row["child"]: row for row in status["up"]["children"]}
        assert sorted(rows) == sorted(KINDS)
        assert all(row["restarts"] >= 1 for row in rows.values()), rows
        for kind in ("postgres", "redis", "prometheus"):
            assert " was killed by SIGKILL after " in rows[kind]["last_exit"], rows[kind]
        for kind in KINDS:
            assert any(re.match(rf"{kind} was restarted \d+ times?; the last time ", line)
                       for line in status["attention"]), status["attention"]
        table = opsctl("status", env=env).stdout
        assert f"opsctl up: pid {proc.pid}, running" in table
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(180)
    text = up.log.read_text()
    assert "error connecting" not in text, "a library's log reached the terminal"  # logs/up.log has them
    for kind in KINDS:
        assert re.search(rf"{kind}: pid \d+ was killed by SIGKILL after [\d.]+ s; restart in", text), kind
        assert re.search(rf"{kind}: restarted \(pid \d+\)", text) or kind == "worker", (kind, text[-3000:])
    assert code == 0, text[-3000:]


def up_log(data_dir: Path) -> str:
    try:
        return (data_dir / "logs" / "up.log").read_text()
    except FileNotFoundError:
        return ""


def anything_left(data_dir: Path) -> list[str]:
    """Every live process that belongs to this data dir (by its environment or its command line)."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        with contextlib.suppress(psutil.Error):
            mine = (proc.info["environ"] or {}).get("OPSCTL_DATA_DIR") == str(data_dir)
            if (proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE
                    and (mine or str(data_dir) in " ".join(proc.info["cmdline"] or []))):
                left.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
    return left


def release(fifo: Path) -> None:
    """Let a reader blocked in opening ``fifo`` read on (to its end)."""
    with contextlib.suppress(OSError):  # ENXIO: nobody reads it now
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_sigterm_while_it_starts_stops_what_has_started_and_records_the_stop(up: Up) -> None:
    # hold the start in PostgreSQL's wait to be ready: its configuration includes a FIFO, which the
    # postmaster reads (signals blocked) until the test opens it for writing
    data_dir = up.data_dir
    pg = EmbeddedPostgres(data_dir / "pg")
    pg.init()
    os.mkfifo(pg.data_dir / "hold.conf", 0o644)
    with (pg.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("include 'hold.conf'\n")
    proc = up.start()
    try:
        kids = wait_for(lambda: "starting PostgreSQL" in up_log(data_dir) and "postgres" in (
            found := children(proc.pid, data_dir)) and found, 180, "opsctl up to start PostgreSQL")
        proc.send_signal(signal.SIGTERM)  # a service manager stopping it (or a plain kill)
        wait_for(lambda: "stopping PostgreSQL" in up_log(data_dir), 120, "opsctl up to stop PostgreSQL")
        wait_for(lambda: release(pg.data_dir / "hold.conf") or proc.poll() is not None, 180,  # PostgreSQL reads on
                 "opsctl up to exit")  # (it reads its configuration twice), sees the SIGINT, and stops
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    out = up.log.read_text()
    assert code == 130, out[-3000:]
    assert still_alive(kids) == [] and anything_left(data_dir) == [], "opsctl up exited leaving these running"
    assert json.loads((data_dir / "up.json").read_text())["stopped_at"]
    assert "applying migrations" not in up_log(data_dir), "the start went on after the signal"


def test_a_second_ctrl_c_while_it_stops_kills_what_is_left_at_once(up: Up) -> None:
    data_dir = up.data_dir
    proc = up.start()
    try:
        kids = up.running(proc)
        # a daemon and a worker that never stop by themselves: their graceful stops would take 45 s and 60 s
        for kind in ("daemon", "worker"):
            os.kill(kids[kind][0][0], signal.SIGSTOP)
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping the daemon" in up_log(data_dir), 120, "the stop to reach the daemon")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)  # the graceful path would take over 100 s
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, up.log.read_text()[-3000:]
    assert still_alive(kids) == [] and anything_left(data_dir) == [], "opsctl up exited leaving these running"
    text = up_log(data_dir)
    assert "forcing: killing" in text, text[-3000:]
    assert "stopping workers" not in text, "the forced stop still waited for the workers"
    # the last line says what did not stop cleanly (the terminal has the same)
    last = text.strip().splitlines()[-1]
    assert re.search(r"INFO opsctl\.up: stopped, not cleanly: forced by a second signal; the daemon: pid \d+ was "
                     r"killed by SIGKILL; workers: pid \d+ was killed by SIGKILL", last), last
    assert json.loads((data_dir / "up.json").read_text())["stopped_at"]
