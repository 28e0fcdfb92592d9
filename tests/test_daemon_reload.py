"""A bad policy file never stops enforcement: the reload is refused, counted, logged and shown,
and the daemon keeps running jobs on the previous set. At start there is no previous set: the
daemon stays up without leading (never a crash loop) and loads the files once they are fixed;
only `--once` exits 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from opsctl.daemon import metrics
from opsctl.daemon.leader import lock_holder
from opsctl.daemon.service import NOT_ENFORCING, Daemon, DaemonConfig
from opsctl.daemon.status import fetch, summarize
from tests.conftest import free_port, make_settings
from tests.test_daemon import TICK, YEARLY, env_for, events, scrape, start_daemon, stop
from tests.waiting import wait_for

RECURSIVE = "a: &x [*x]\n"


def ticks(conn: psycopg.Connection[Any]) -> int:
    """Runs of tests.daemon_jobs:job_tick, counted by the rows the job itself writes."""
    row = conn.execute("SELECT count(*) FROM ops_events WHERE action = 'test.tick'").fetchone()
    assert row is not None
    return int(row[0])


def alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"the daemon exited with {proc.returncode}\n{log.read_text()[-3000:]}")


def reload_errors(proc: subprocess.Popen[bytes], log: Path, port: int) -> float:
    alive(proc, log)
    try:
        return scrape(port).get("opsctl_policy_reload_errors_total", 0.0)
    except httpx.HTTPError:  # not serving yet, or going down: the next look at the process says which
        return 0.0


def test_a_recursive_alias_is_refused_and_the_daemon_keeps_running_its_jobs(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schedule.yaml").write_text(TICK)
    port = free_port()
    proc, log = start_daemon(db_url, tmp_path, policies, "daemon@test", metrics_port=port)
    try:
        wait_for(lambda: ticks(conn) >= 2, 60, "the first ticks", log)

        (policies / "bad.yaml").write_text(RECURSIVE)  # seen by the file-change detection
        wait_for(lambda: reload_errors(proc, log, port) >= 1, 60, "the refused reload", log)
        proc.send_signal(signal.SIGHUP)  # and again on SIGHUP while it stays broken
        wait_for(lambda: reload_errors(proc, log, port) >= 2, 60, "the refused SIGHUP reload", log)

        before = ticks(conn)
        wait_for(lambda: ticks(conn) >= before + 3, 60, "ticks on the previous policies", log)
        alive(proc, log)
        text = log.read_text()
        assert "policy reload (SIGHUP) refused" in text and "bad.yaml" in text, text[-3000:]

        status = subprocess.run([sys.executable, "-m", "opsctl.cli", "status", "-o", "json"],
                                env=env_for(db_url, tmp_path, "someone@test"), cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        refused = [a for a in shown["attention"] if a.startswith("policy reload refused")]
        assert len(refused) == 1 and "bad.yaml" in refused[0], shown["attention"]
        assert shown["daemon"]["policies"]["state"] == "refused"

        (policies / "bad.yaml").unlink()  # the fix loads, and status stops asking for attention
        wait_for(lambda: "policies reloaded" in log.read_text(), 60, "the reload of the fixed set", log)
        status = subprocess.run([sys.executable, "-m", "opsctl.cli", "status", "-o", "json"],
                                env=env_for(db_url, tmp_path, "someone@test"), cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        shown = json.loads(status.stdout)
        assert not [a for a in shown["attention"] if a.startswith("policy reload")], shown["attention"]
        assert shown["daemon"]["policies"]["state"] == "loaded"
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]


def test_any_exception_while_loading_is_a_refused_reload_not_a_dead_loop(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "schedule.yaml").write_text(YEARLY)
    daemon = Daemon(make_settings(database_url=db_url), DaemonConfig(tmp_path, cycle_seconds=300))
    daemon.start()
    errors = metrics.RELOAD_ERRORS._value.get()
    thread = threading.Thread(target=daemon.loop, daemon=True)
    try:
        thread.start()
        wait_for(lambda: daemon.leading, 30, "the first cycle")

        def broken(paths: list[Path]) -> Any:
            raise ZeroDivisionError("a bug in the loader")

        monkeypatch.setattr("opsctl.daemon.policies.validate_paths", broken)
        daemon.on_signal(signal.SIGHUP, None)
        wait_for(lambda: metrics.RELOAD_ERRORS._value.get() == errors + 1, 30, "the refused reload")
        cycles = daemon.cycle_no
        daemon.on_signal(signal.SIGHUP, None)
        wait_for(lambda: metrics.RELOAD_ERRORS._value.get() == errors + 2 and daemon.cycle_no > cycles, 30,
                 "a second refused reload, and the cycle after it")
        assert thread.is_alive() and daemon.leading
        assert set(daemon.specs) == {"tick"}, "the previous schedule stays"
        assert daemon.policies.snapshot.is_dir(), "jobs still read the previous snapshot"
    finally:
        daemon.on_signal(signal.SIGTERM, None)
        thread.join(30)
        daemon.shutdown()
    assert not thread.is_alive()


def test_a_bad_set_at_start_is_refused_and_the_replica_waits_without_leading(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """No exception at start (a pod would crash-loop on it): the refusal is recorded, counted, shown
    and the replica is not ready; it never tries the lock, so a replica with a valid set leads; the
    fixed files load at the next cycle and it leads from then on."""
    (tmp_path / "schedule.yaml").write_text(YEARLY)
    (tmp_path / "bad.yaml").write_text(RECURSIVE)
    port = free_port()
    errors = metrics.RELOAD_ERRORS._value.get()
    daemon = Daemon(make_settings(database_url=db_url),
                    DaemonConfig(tmp_path, cycle_seconds=300, metrics_port=port, metrics_host="127.0.0.1"))
    daemon.start()
    try:
        assert daemon.policies is None and daemon.specs == {}
        assert metrics.RELOAD_ERRORS._value.get() == errors + 1
        assert scrape(port)["opsctl_daemon_policies_loaded"] == 0
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503 and b"no valid policy set" in ready.content
        assert daemon.run_cycle() == NOT_ENFORCING
        assert lock_holder(conn) is None, "a replica without policies does not even try the lock"
        (refused,) = events(conn, "daemon.reload")
        assert (refused["to"], refused["change"], refused["details"]["trigger"]) == ("refused", False, "start")
        assert refused["details"]["enforcing"] is False and "bad.yaml" in refused["reason"]
        attention = summarize(fetch(conn, None), datetime.now(UTC))["attention"]
        assert [a for a in attention if a.startswith("policy")] == [
            f"policy files refused: {refused['reason']} ({daemon.name} has no valid set: it enforces nothing and "
            "does not lead until they are fixed)"]

        daemon.on_signal(signal.SIGHUP, None)  # still broken: refused again, still not leading
        assert daemon.run_cycle() == f"policies refused (SIGHUP): {refused['reason']}; {NOT_ENFORCING}"
        assert metrics.RELOAD_ERRORS._value.get() == errors + 2 and lock_holder(conn) is None

        (tmp_path / "bad.yaml").unlink()  # the fix: seen by the file signature, no signal needed
        assert daemon.run_cycle() == ("policies reloaded (policy files changed): the first valid set, enforcing "
                                      "1 jobs; became leader: 1 jobs scheduled")
        assert set(daemon.specs) == {"tick"} and daemon.leading
        assert scrape(port)["opsctl_daemon_policies_loaded"] == 1
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        loaded = events(conn, "daemon.reload")[-1]
        assert (loaded["to"], loaded["change"], loaded["details"]["jobs_changed"]) == ("loaded", True, ["tick"])
        attention = summarize(fetch(conn, None), datetime.now(UTC))["attention"]
        assert not [a for a in attention if a.startswith("policy")], attention
    finally:
        daemon.stop_requested = True
        daemon.shutdown()


def test_the_daemon_process_stays_up_on_a_bad_set_and_once_still_exits_2(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schedule.yaml").write_text(TICK)
    (policies / "bad.yaml").write_text(RECURSIVE)
    once = subprocess.run([sys.executable, "-m", "opsctl.cli", "daemon", "--once", "tick", "--policy-dir",
                           str(policies)], env=env_for(db_url, tmp_path, "cron@test"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 2, once.stderr  # one run asked for now: a bad set is a config error
    last = once.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bad.yaml" in last and "Traceback" not in once.stderr, once.stderr

    port = free_port()
    proc, log = start_daemon(db_url, tmp_path, policies, "daemon@test", metrics_port=port)
    try:
        wait_for(lambda: reload_errors(proc, log, port) >= 1, 60, "the refused load at start", log)
        assert scrape(port)["opsctl_daemon_policies_loaded"] == 0
        alive(proc, log)
        assert ticks(conn) == 0 and lock_holder(conn) is None

        (policies / "bad.yaml").unlink()
        wait_for(lambda: ticks(conn) >= 2, 60, "ticks once the files are fixed", log)
        assert scrape(port)["opsctl_daemon_policies_loaded"] == 1
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
