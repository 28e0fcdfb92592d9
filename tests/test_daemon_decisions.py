"""``ops_events`` holds changes; routine decisions (no change, dry runs), job runs and measurements go to
``ops_decisions``: ``opsctl events`` shows the first, ``--all`` both, ``scale explain`` replays either,
and the leader prunes decisions past their retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.config import Settings
from core.db import migrate, record_event
from core.embedded import EmbeddedPrometheus, prometheus_binary
from opsctl.audit import CHANGES, record
from opsctl.daemon.runner import run_once
from opsctl.daemon.service import Daemon, DaemonConfig
from opsctl.scaling import service
from opsctl.scaling.policy import AutoscalingPolicy
from opsctl.scaling.targets import TargetState
from tests.conftest import free_port, make_settings, outside_pytest_tmp, project_root
from tests.test_daemon import YEARLY

NOOP = 'kind: schedule\njobs:\n  noop:\n    every: 1h\n    run: "tests.daemon_jobs:job_noop"\n'


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    """A real Prometheus; the policies below ask it constant expressions (``vector(20)``)."""
    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    prom = EmbeddedPrometheus(outside_pytest_tmp("opsctl-test-decisions-") / "prom", "127.0.0.1:9", port=free_port())
    prom.start()
    try:
        yield prom.url
    finally:
        prom.stop()


class MemoryTarget:
    """A scale target that keeps its replica count in memory (the ScaleTarget contract, nothing else)."""

    description = "memory"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def read(self) -> TargetState:
        return TargetState(self.replicas, self.replicas)

    def scale(self, replicas: int) -> None:
        self.replicas = replicas

    def check_unmanaged(self) -> None:
        return None


def policy(prom: str, backlog: int) -> AutoscalingPolicy:
    return AutoscalingPolicy.model_validate({
        "prometheus": {"url": prom},
        "services": {"svc": {"target": {"kind": "local"}, "minReplicas": 1, "maxReplicas": 5, "metrics": [
            {"name": "backlog", "query": f"vector({backlog})",
             "target": {"type": "AverageValue", "averageValue": 10}}]}},
    })


def count(conn: psycopg.Connection[Any], table: str, action: str | None = None) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE %(a)s::text IS NULL OR action = %(a)s",
                       {"a": action}).fetchone()
    assert row is not None
    return int(row[0])


def cli(*args: str, db_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATABASE_URL=db_url, OPSCTL_DATA_DIR=str(tmp_path / "state"), PYTHONPATH=str(project_root()))
    return subprocess.run([sys.executable, "-m", "opsctl.cli", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def test_decisions_without_a_change_leave_the_audit_log_to_changes(
        settings: Settings, db_url: str, conn: psycopg.Connection[Any], prometheus: str, tmp_path: Path) -> None:
    target = MemoryTarget(2)
    start = datetime.now(UTC)
    times = iter(start + timedelta(seconds=30 * i) for i in range(100))

    def cycle(backlog: int, apply: bool) -> service.Outcome:
        [outcome] = service.run(settings, policy(prometheus, backlog), apply=apply, now=lambda: next(times),
                                targets=lambda spec, s: target)
        assert outcome.error is None and outcome.decision is not None
        return outcome

    changes = CHANGES.labels("scale.decide")._value.get()
    for _ in range(5):  # 20 / 10 per replica → 2: "2 → 2", every 30 s
        assert not cycle(20, apply=True).decision.change  # type: ignore[union-attr]
    assert count(conn, "ops_events") == 0
    assert count(conn, "ops_decisions", "scale.decide") == 5
    dry = cycle(30, apply=False)  # a dry run that would scale: still not a change
    assert dry.decision is not None and dry.decision.change and not dry.applied
    assert count(conn, "ops_events") == 0 and count(conn, "ops_decisions", "scale.decide") == 6
    assert CHANGES.labels("scale.decide")._value.get() == changes

    real = cycle(30, apply=True)  # 30 / 10 → 3: a change, applied
    assert real.applied and target.replicas == 3
    rows = conn.execute("SELECT id, action, from_state, to_state FROM ops_events").fetchall()
    assert rows == [(real.event_id, "scale.decide", "2", "3")]
    assert count(conn, "ops_decisions", "scale.decide") == 6
    assert CHANGES.labels("scale.decide")._value.get() == changes + 1

    shown = cli("events", "-o", "json", db_url=db_url, tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert [(e["id"], e["from"], e["to"], e["kind"]) for e in json.loads(shown.stdout)] == [
        (real.event_id, "2", "3", "change")]
    everything = cli("events", "--all", "-o", "json", db_url=db_url, tmp_path=tmp_path)
    assert everything.returncode == 0, everything.stderr
    listed = json.loads(everything.stdout)
    assert [(e["from"], e["to"], e["kind"]) for e in listed] == [("2", "2", "decision")] * 5 + [
        ("2", "3", "decision"), ("2", "3", "change")]
    assert len({e["id"] for e in listed}) == 7, "one id names one row of either table"
    table = cli("events", db_url=db_url, tmp_path=tmp_path)
    assert table.returncode == 0 and "2 → 3" in table.stdout and "2 → 2" not in table.stdout
    assert "6 decisions and job runs not shown: add --all" in table.stderr

    for event_id, applied in ((listed[0]["id"], False), (real.event_id, True)):
        explained = cli("scale", "explain", str(event_id), "-o", "json", db_url=db_url, tmp_path=tmp_path)
        assert explained.returncode == 0, explained.stderr
        body = json.loads(explained.stdout)
        assert body["applied"] is applied and body["service"] == "svc"
    assert body["stored"]["desired_replicas"] == 3


def test_job_runs_are_decisions_and_the_leader_prunes_all_but_the_newest_of_each(
        db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """Past the retention the leader prunes decisions, but never the newest row of an (action, target):
    a weekly job's last run, the last reload refused while the file is still broken and the latest
    decision per service stay, so `status` and the runbooks still see them."""
    from opsctl.daemon.retention import Retention
    from opsctl.daemon.status import fetch, summarize

    settings = make_settings(database_url=db_url)
    (tmp_path / "schedule.yaml").write_text(NOOP)
    for _ in range(3):
        assert run_once(settings, tmp_path, "noop").outcome == "ok"
    assert count(conn, "ops_events") == 0 and count(conn, "ops_decisions", "daemon.job") == 3
    weekly = record(conn, "daemon.job", target="backup-full", to_state="failed", reason="disk full", change=False)
    for replicas in (2, 3):
        record(conn, "scale.decide", target="svc", from_state=replicas, to_state=replicas, change=False)
    record(conn, "backup.create", target="db", reason="a change: kept however old")
    record(conn, "index.recall", target="chunks", details={"recall": {"i": 0.97}}, change=False)
    now = datetime.now(UTC)
    later = now + Retention().decisions + timedelta(days=1)  # the daemon's clock, injected: past the retention
    fresh = conn.execute("UPDATE ops_decisions SET at = %s WHERE action = 'index.recall' RETURNING id",
                         (later - timedelta(days=6),)).fetchone()
    assert fresh is not None
    newest = {action: row[0] for action, row in (
        ("noop", conn.execute("SELECT max(id) FROM ops_decisions WHERE target = 'noop'").fetchone()),
        ("svc", conn.execute("SELECT max(id) FROM ops_decisions WHERE target = 'svc'").fetchone()))}

    (tmp_path / "schedule.yaml").write_text(YEARLY)
    daemon = Daemon(settings, DaemonConfig(tmp_path), clock=lambda: later)
    daemon.start()
    started = conn.execute("SELECT id FROM ops_decisions WHERE action = 'daemon.reload' AND target = %s",
                           (daemon.name,)).fetchone()
    assert started is not None
    # another replica's reload, refused and never fixed since: the newest daemon.reload
    refused = record(conn, "daemon.reload", target="opsctl-daemon daemon@b pid 2", to_state="refused",
                     reason="policies/cache.yaml:3: hitRate.target: not a number", change=False)
    try:
        assert daemon.cycle(later).startswith("became leader")
        daemon.cycle(later)  # the leader prunes (once an hour)
    finally:
        daemon.stop_requested = True
        daemon.shutdown()
    left = {r[0] for r in conn.execute("SELECT id FROM ops_decisions")}
    assert left == {fresh[0], weekly, newest["noop"], newest["svc"], refused, started[0]}
    assert count(conn, "ops_events", "backup.create") == 1

    screen = summarize(fetch(conn, None), later)
    assert [(j["job"], j["outcome"]) for j in screen["daemon"]["jobs"]] == [("backup-full", "failed"), ("noop", "ok")]
    assert "job backup-full failed its last run: disk full" in screen["attention"]
    assert any(a.startswith("policy reload refused: policies/cache.yaml:3") for a in screen["attention"])


def test_the_default_retention_outlives_the_longest_schedule_and_the_alert_windows() -> None:
    """`opsctl events --all --since 8d --action daemon.job` (RestoreDrillStale) must still find the
    weekly runs: the retention covers the longest gap between two runs of any shipped job plus the
    longest alert window looking back at them (8 days)."""
    import inspect

    from opsctl.commands.daemon import daemon as daemon_command
    from opsctl.daemon.retention import Retention
    from opsctl.daemon.schedule import SchedulePolicy, job_specs
    from opsctl.policy import load, parse_duration

    shipped = load(SchedulePolicy, "schedule", project_root() / "policies" / "schedule.yaml")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    longest = timedelta(0)
    for spec in job_specs(shipped).values():
        if spec.every is not None:
            longest = max(longest, spec.trigger.interval)
            continue
        fire = spec.trigger.get_next_fire_time(None, start)
        while fire is not None and fire < start + timedelta(days=400):
            following = spec.trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            longest = max(longest, following - fire)
            fire = following
    assert longest == timedelta(days=7)  # backup-full and restore-drill: weekly
    assert Retention().decisions >= max(longest + timedelta(days=8), timedelta(days=35))
    option = inspect.signature(daemon_command).parameters["keep_decisions"].default
    assert parse_duration(option.default) == Retention().decisions, "`opsctl daemon` keeps the same by default"


def test_migration_0009_moves_the_routine_rows_written_before_it(db_url: str, conn: psycopg.Connection[Any]) -> None:
    # the database as migration 0008 left it, with what opsctl wrote into ops_events then
    conn.execute("DROP VIEW ops_log")
    conn.execute("DROP TABLE ops_decisions")
    conn.execute("DELETE FROM schema_migrations WHERE version = 9")
    rows = [("daemon.job", "ok", {}), ("index.recall", None, {"recall": {"i": 0.9}}),
            ("scale.decide", "2", {"applied": False}), ("scale.decide", "3", {"applied": True}),
            ("daemon.reload", "refused", {}), ("daemon.reload", "loaded", {}), ("backup.create", None, {})]
    ids = [record_event(conn, actor="old", action=action, to_state=to, details=details) for action, to, details in rows]

    assert migrate(db_url, make_settings()) == ["0009_decisions.sql"]
    moved = conn.execute("SELECT id, action FROM ops_decisions ORDER BY id").fetchall()
    kept = conn.execute("SELECT id, action FROM ops_events ORDER BY id").fetchall()
    assert moved == [(ids[0], "daemon.job"), (ids[1], "index.recall"), (ids[2], "scale.decide"),
                     (ids[4], "daemon.reload")]
    assert kept == [(ids[3], "scale.decide"), (ids[5], "daemon.reload"), (ids[6], "backup.create")]
    new = record(conn, "daemon.job", target="tick", to_state="ok", change=False)
    assert new > ids[-1], "new decisions take ids after every old event"
