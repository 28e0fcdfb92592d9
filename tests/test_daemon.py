"""The daemon as it runs in production: real subprocesses, one real database, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

from opsctl.daemon import metrics
from opsctl.daemon.leader import LeaderLock, lock_holder
from opsctl.daemon.process import DaemonProcess
from opsctl.daemon.service import Daemon, DaemonConfig
from tests.conftest import free_port, make_settings, project_root
from tests.waiting import wait_for

TICK = 'kind: schedule\njobs:\n  tick:\n    every: 1s\n    run: "tests.daemon_jobs:job_tick"\n'
FAILING = TICK + ('  raise:\n    every: 1s\n    run: "tests.daemon_jobs:job_raise"\n'
                  '  missing:\n    every: 1s\n    run: "opsctl_no_such_module.jobs:job_x"\n')


def env_for(db_url: str, tmp_path: Path, actor: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATABASE_URL=db_url, OPSCTL_DATA_DIR=str(tmp_path / "state"), OPSCTL_ACTOR=actor,
               PYTHONPATH=str(project_root()))
    return env


def start_daemon(db_url: str, tmp_path: Path, policy_dir: Path, actor: str, metrics_port: int = 0,
                 cycle: float = 0.5, debug: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
    """``debug``: every cycle's sentence in the log (without it, a sentence that repeats is not logged)."""
    log = tmp_path / f"{actor}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsctl.cli", *(["--debug"] if debug else []), "daemon", "--policy-dir",
             str(policy_dir), "--metrics-port",
             str(metrics_port), "--metrics-host", "127.0.0.1", "--cycle-seconds", str(cycle),
             "--stop-grace-seconds", "10"],
            env=env_for(db_url, tmp_path, actor), cwd=tmp_path, stdout=out, stderr=out)
    return proc, log





def events(conn: psycopg.Connection[Any], action: str) -> list[dict[str, Any]]:
    """Rows of ``action`` in ``ops_log``: changes (``ops_events``) and decisions (``ops_decisions``)."""
    rows = conn.execute("SELECT id, actor, target, to_state, reason, details, change FROM ops_log WHERE action = %s"
                        " ORDER BY id", (action,)).fetchall()
    return [{"id": r[0], "actor": r[1], "target": r[2], "to": r[3], "reason": r[4], "details": r[5], "change": r[6]}
            for r in rows]


def runs(conn: psycopg.Connection[Any], job: str, outcome: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events(conn, "daemon.job") if e["target"] == job and (outcome is None or e["to"] == outcome)]


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_two_daemons_run_each_scheduled_time_once_and_the_survivor_takes_over(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schedule.yaml").write_text(TICK)
    procs = {actor: start_daemon(db_url, tmp_path, policies, actor, debug=True)  # (cycles counted in the log)
             for actor in ("daemon-a@test", "daemon-b@test")}
    try:
        holder = wait_for(lambda: lock_holder(conn), 30, "a leader")
        leader_pid = int(re.search(r"pid (\d+)$", holder["application_name"]).group(1))  # type: ignore[union-attr]
        leader = next(a for a, (p, _) in procs.items() if p.pid == leader_pid)
        survivor = next(a for a in procs if a != leader)
        wait_for(lambda: len(runs(conn, "tick", "ok")) >= 5, 60, "5 ticks", procs[leader][1])

        # the survivor has been following all along; kill -9 the leader mid-schedule
        procs[leader][0].kill()
        procs[leader][0].wait()
        cycles_then = max((int(n) for n in re.findall(r"cycle (\d+):", procs[survivor][1].read_text())), default=0)
        took_over = wait_for(lambda: [e for e in events(conn, "daemon.leader")
                                      if e["actor"] == survivor and e["to"] == "leader"], 30, "the takeover",
                             procs[survivor][1])[0]
        assert took_over["details"]["cycle"] - cycles_then <= 2, "the follower took over within two of its cycles"
        before = len(runs(conn, "tick", "ok"))
        wait_for(lambda: len(runs(conn, "tick", "ok")) >= before + 3, 60, "ticks by the new leader",
                 procs[survivor][1])
        assert stop(procs[survivor][0]) == 0
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    ticks = runs(conn, "tick")
    per_time = Counter(e["details"]["scheduled_at"] for e in ticks)
    assert per_time and max(per_time.values()) == 1, "every scheduled time ran once, across both replicas"
    assert all(e["to"] == "ok" and e["reason"] == "ticked" for e in ticks)
    rows = conn.execute("SELECT count(*) FROM ops_events WHERE action = 'test.tick'").fetchone()
    assert rows is not None and len(ticks) <= rows[0] <= len(ticks) + 1  # + the run the kill cut short
    # before the takeover only the leader ran jobs; after it only the survivor
    assert {e["actor"] for e in ticks if e["id"] < took_over["id"]} == {leader}
    assert {e["actor"] for e in ticks if e["id"] > took_over["id"]} == {survivor}
    stopped = [e for e in events(conn, "daemon.leader") if e["to"] == "stopped"]
    assert [e["actor"] for e in stopped] == [survivor]


def test_failures_are_recorded_and_survived_and_invalid_reloads_keep_the_old_policy(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    schedule = policies / "schedule.yaml"
    schedule.write_text(FAILING)
    port = free_port()
    proc, log = start_daemon(db_url, tmp_path, policies, "daemon@test", metrics_port=port)
    try:
        wait_for(lambda: len(runs(conn, "raise", "failed")) >= 2 and runs(conn, "missing", "failed"), 60,
                 "failed runs", log)
        failure = runs(conn, "raise", "failed")[0]
        assert failure["reason"] == "RuntimeError: boom: an unexpected bug"
        assert failure["details"]["outcome"] == "failed" and failure["details"]["error"] == failure["reason"]
        assert {"start", "end", "job", "scheduled_at"} <= set(failure["details"])
        assert runs(conn, "missing", "failed")[0]["reason"].startswith("cannot import opsctl_no_such_module")
        assert proc.poll() is None, "the daemon survived its jobs' failures"
        assert "Traceback" in log.read_text(), "an unexpected exception is logged with its traceback"

        # an edit that breaks the schedule is refused; so is a SIGHUP while it stays broken
        schedule.write_text(TICK + "  broken:\n    every: often\n")
        refused = wait_for(lambda: [e for e in events(conn, "daemon.reload") if e["to"] == "refused"], 30,
                           "the refused reload", log)
        assert refused[0]["details"]["trigger"] == "policy files changed"
        assert "schedule.yaml:7: jobs.broken.every: invalid duration 'often'" in refused[0]["reason"]
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len([e for e in events(conn, "daemon.reload") if e["to"] == "refused"]) == 2, 30,
                 "the refused SIGHUP reload", log)
        # loading at start changes nothing in the system, nor does a refusal: decisions (--all, status)
        assert [(e["details"]["trigger"], e["to"], e["change"]) for e in events(conn, "daemon.reload")] == [
            ("start", "loaded", False), ("policy files changed", "refused", False), ("SIGHUP", "refused", False)]
        assert {e["change"] for e in events(conn, "daemon.job")} == {False}, "job runs are decisions, not changes"
        failed_before = len(runs(conn, "raise", "failed"))
        wait_for(lambda: len(runs(conn, "raise", "failed")) >= failed_before + 2, 30, "the old policy still running",
                 log)
        scraped = scrape(port)
        assert scraped["opsctl_policy_reload_errors_total"] == 2
        assert scraped["opsctl_daemon_leader"] == 1
        assert scraped['opsctl_job_runs_total{job="raise",outcome="failed"}'] >= 4
        assert scraped['opsctl_job_runs_total{job="tick",outcome="ok"}'] >= 1
        assert scraped['opsctl_job_last_success_timestamp_seconds{job="tick"}'] > 0
        assert scraped['opsctl_job_duration_seconds_count{job="tick"}'] >= 1

        # a valid edit (no signal: the mtime changes) applies: the failing jobs are gone
        schedule.write_text(TICK)
        loaded = wait_for(lambda: [e for e in events(conn, "daemon.reload") if e["to"] == "loaded"
                                   and e["details"]["trigger"] != "start"], 30, "the reload", log)[0]
        assert loaded["change"]
        assert loaded["details"]["jobs_changed"] == ["missing", "raise"]
        ticks = len(runs(conn, "tick", "ok"))
        wait_for(lambda: len(runs(conn, "tick", "ok")) >= ticks + 3, 30, "ticks after the reload", log)
        late = [e for e in events(conn, "daemon.job") if e["target"] == "raise" and e["id"] > loaded["id"]]
        assert len(late) <= 1  # at most the run already under way when the reload landed
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-2000:]


def test_once_runs_one_job_and_exits_with_its_outcome(db_url: str, conn: psycopg.Connection[Any],
                                                      tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schedule.yaml").write_text(FAILING)
    env = env_for(db_url, tmp_path, "cron@test")

    def once(job: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "opsctl.cli", "daemon", "--once", job, "--policy-dir",
                               str(policies), "-o", "json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)

    ok = once("tick")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["sentence"] == "ticked"
    failed = once("raise")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"] == "RuntimeError: boom: an unexpected bug"
    unknown = once("nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown job 'nope'")
    assert [(e["target"], e["to"], e["actor"]) for e in events(conn, "daemon.job")] == [
        ("tick", "ok", "cron@test"), ("raise", "failed", "cron@test")]


def test_a_leader_whose_connection_dies_stops_acting_within_one_cycle(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    settings = make_settings(database_url=db_url)
    (tmp_path / "schedule.yaml").write_text(TICK)
    first = Daemon(settings, DaemonConfig(tmp_path))
    first.start()
    second = LeaderLock(db_url, "opsctl-daemon second")
    try:
        assert first.cycle(first.clock()).startswith("became leader: 1 jobs scheduled")
        assert metrics.LEADER._value.get() == 1
        assert first.cycle(first.clock()).startswith("leader: 1 jobs scheduled, next tick in")
        assert not second.try_acquire()
        holder = lock_holder(conn)
        assert holder is not None and holder["application_name"] == first.name

        conn.execute("SELECT pg_terminate_backend(%s)", (holder["pid"],))
        assert first.cycle(first.clock()).startswith("lost leadership: the lock's connection failed")
        assert metrics.LEADER._value.get() == 0
        assert not first.lock.claim("tick", first.clock(), first.name), "no job starts without the lock"
        assert second.try_acquire()
        assert first.cycle(first.clock()) == "follower: opsctl-daemon second leads"
    finally:
        second.release()
        first.stop_requested = True
        first.shutdown()
    changes = [(e["from"], e["to"]) for e in
               [{"from": r[0], "to": r[1]} for r in conn.execute(
                   "SELECT from_state, to_state FROM ops_events WHERE action = 'daemon.leader' ORDER BY id")]]
    assert changes == [("follower", "leader"), ("leader", "follower")]


YEARLY = 'kind: schedule\njobs:\n  tick:\n    cron: "0 0 1 1 *"\n    run: "tests.daemon_jobs:job_tick"\n'


def test_a_leadership_lost_by_a_jobs_claim_is_noticed_in_the_next_cycle(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    (tmp_path / "schedule.yaml").write_text(YEARLY)
    first = Daemon(make_settings(database_url=db_url), DaemonConfig(tmp_path))
    first.start()
    second = LeaderLock(db_url, "opsctl-daemon second")
    try:
        assert first.cycle(first.clock()).startswith("became leader")
        holder = lock_holder(conn)
        assert holder is not None
        conn.execute("SELECT pg_terminate_backend(%s)", (holder["pid"],))
        # a job thread finds the dead connection first, between two cycles
        assert not first.lock.claim("tick", first.clock(), first.name)
        assert second.try_acquire()
        assert first.cycle(first.clock()).startswith("lost leadership")
        assert metrics.LEADER._value.get() == 0, "a follower does not report itself as leader"
        assert first.cycle(first.clock()) == "follower: opsctl-daemon second leads"
        assert metrics.LEADER._value.get() == 0
    finally:
        second.release()
        first.stop_requested = True
        first.shutdown()
    changes = [(r[0], r[1]) for r in conn.execute(
        "SELECT from_state, to_state FROM ops_events WHERE action = 'daemon.leader' ORDER BY id")]
    assert changes == [("follower", "leader"), ("leader", "follower")]


def test_signal_flags_alone_wake_a_sleeping_loop(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    (tmp_path / "schedule.yaml").write_text(YEARLY)
    daemon = Daemon(make_settings(database_url=db_url), DaemonConfig(tmp_path, cycle_seconds=300))
    daemon.start()
    thread = threading.Thread(target=daemon.loop, daemon=True)
    try:
        thread.start()
        wait_for(lambda: daemon.leading, 30, "the first cycle")
        daemon.on_signal(signal.SIGHUP, None)  # what the handler does, from outside the 300 s sleep
        (reloaded,) = wait_for(lambda: [e for e in events(conn, "daemon.reload")
                                        if e["details"]["trigger"] == "SIGHUP"], 30, "the SIGHUP reload")
        # the same files again: no job changed, so it is a decision, not a change
        assert (reloaded["to"], reloaded["details"]["jobs_changed"], reloaded["change"]) == ("loaded", [], False)
        daemon.on_signal(signal.SIGTERM, None)
        thread.join(30)
        assert not thread.is_alive(), "SIGTERM's flag ends the loop without waiting for the cycle"
    finally:
        daemon.stop_requested = True
        thread.join(30)
        daemon.shutdown()


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_up_stopping_its_daemon_records_the_abandoned_job_and_kills_what_it_started(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schedule.yaml").write_text(
        'kind: schedule\njobs:\n  hang:\n    every: 1s\n    run: "tests.daemon_jobs:job_hang"\n')
    state = tmp_path / "state"
    state.mkdir()
    env = {**env_for(db_url, tmp_path, "daemon@test"), "OPSCTL_POLICY_DIR": str(policies)}
    child = DaemonProcess(env, 0, log_dir=tmp_path / "logs", stop_grace_seconds=1)
    child.start()
    try:
        pid = int(wait_for(lambda: (state / "hang.pid").exists() and (state / "hang.pid").read_text(), 60,
                           "the job's child process", tmp_path / "logs" / "daemon.log"))
        assert process_alive(pid)
    finally:
        child.stop()
    assert child.proc is not None and child.proc.returncode is not None
    wait_for(lambda: not process_alive(pid), 30, "the abandoned job's child process to be gone")
    abandoned = runs(conn, "hang", "failed")
    assert abandoned and abandoned[0]["reason"].startswith("abandoned at shutdown"), (
        tmp_path / "logs" / "daemon.log").read_text()[-2000:]
