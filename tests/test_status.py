"""``opsctl status`` (a pure summary of fetched rows, by table; then for real) and ``opsctl events``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsctl.audit import record
from opsctl.cachepolicy.plan import SearchHitRate, bad_policy_report, hit_rate_report
from opsctl.daemon.events import list_events
from opsctl.daemon.leader import LeaderLock
from opsctl.daemon.status import NO_PROMETHEUS, fetch, render, summarize
from tests.conftest import project_root

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scale": [], "jobs": [], "job_failures_24h": {}, "backup": None, "drill": None, "recall": None,
        "partitions": [
            {"table": "documents", "name": "documents_default", "bound": "DEFAULT"},
            {"table": "documents", "name": "documents_p2026_11",
             "bound": "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"},
            {"table": "documents", "name": "documents_p2026_12",
             "bound": "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"},
        ],
        "default_rows": {"documents": 0},
        "queue": {"depth": 3, "in_flight": 1, "oldest_pending_seconds": 12.345, "dead": 0},
        "leader": {"pid": 1, "application_name": "opsctl-daemon daemon@a pid 7", "client_addr": None,
                   "backend_start": NOW - HOUR},
        "prometheus": None,
    }
    base.update(overrides)
    return base


def backup(age: timedelta) -> dict[str, Any]:
    return {"at": NOW - age, "details": {"id": "20261122T1100F", "type": "full", "size": 1024}}


@pytest.mark.parametrize(("overrides", "check", "attention"), [
    # a healthy system: nothing to do; no Prometheus is said, not guessed
    ({"backup": backup(HOUR), "drill": {"at": NOW - 2 * HOUR, "details": {"passed": True, "rto_seconds": 42.5}}},
     lambda s: s["services"][0]["p95_latency_ms"] == NO_PROMETHEUS and s["cache_hit_rate"] is None
     and s["backup"]["age_seconds"] == 3600 and s["drill"]["rto_seconds"] == 42.5
     and s["partitions"]["documents"] == {"partitions": 2, "premade_ahead": 1, "default_rows": 0}
     and s["queue"]["oldest_pending_seconds"] == 12.3 and s["daemon"]["leader"].endswith("pid 7"),
     []),
    # no leader, a failed drill, rows in the default partition, nothing premade, a failing job
    ({"leader": None, "backup": backup(HOUR), "default_rows": {"documents": 5},
      "partitions": [{"table": "documents", "name": "documents_p2026_11",
                      "bound": "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"}],
      "drill": {"at": NOW - HOUR, "details": {"passed": False, "rto_seconds": 900}},
      "jobs": [{"target": "backup-full", "at": NOW - HOUR, "from": None, "to": "failed", "reason": "disk full",
                "details": {}}], "job_failures_24h": {"backup-full": 3}},
     lambda s: s["daemon"]["jobs"][0]["failures_24h"] == 3 and s["daemon"]["leader"] is None,
     ["the last restore drill failed", "documents: no partition premade after the current one",
      "documents: 5 rows in the default partition", "no daemon holds the leader lock: no scheduled job runs",
      "job backup-full failed its last run: disk full"]),
    # never backed up, never drilled
    ({}, lambda s: s["backup"] is None and s["drill"] is None,
     ["no backup has been taken", "no restore drill has run"]),
    # replicas from the latest scale decision; Prometheus figures by job; NaN (no traffic) is None
    ({"backup": backup(HOUR), "drill": {"at": NOW, "details": {"passed": True}},
      "scale": [{"target": "core-worker", "at": NOW, "from": "2", "to": "4", "reason": "backlog 450 > 100/replica",
                 "details": {}}],
      "prometheus": {"p95_latency_seconds": {"core-api": 0.0123}, "request_rate": {"core-api": 5.0},
                     "error_rate": {"core-api": float("nan")}},
      "cache_hit_rate": hit_rate_report(SearchHitRate("prometheus", 9, 3, 0, 3600), 0.5)},
     lambda s: s["services"] == [
         {"service": "core-api", "current": None, "desired": None, "decided_at": None, "why": None,
          "p95_latency_ms": 12.3, "requests_per_second": 5.0, "errors_per_second": None},
         {"service": "core-worker", "current": 2, "desired": 4, "decided_at": NOW.isoformat(timespec="seconds"),
          "why": "backlog 450 > 100/replica", "p95_latency_ms": None, "requests_per_second": None,
          "errors_per_second": None}]
     and s["cache_hit_rate"]["text"] == "75.0% of 12 lookups over the last 1h (Prometheus); target 50%: met",
     []),
    # the cache policy cannot be read: the hit rate is unknown, and the file asks for attention
    ({"backup": backup(HOUR), "drill": {"at": NOW, "details": {"passed": True}},
      "cache_hit_rate": bad_policy_report("policies/cache.yaml:3: hitRate.target: not a number")},
     lambda s: s["cache_hit_rate"]["text"] == "unknown: invalid policy: policies/cache.yaml:3: hitRate.target: "
                                               "not a number",
     ["invalid policy file: policies/cache.yaml:3: hitRate.target: not a number"]),
    # the newest load was refused: with the previous set kept, or (a bad set at start) with none at all
    ({"backup": backup(HOUR), "drill": {"at": NOW, "details": {"passed": True}},
      "reload": {"at": NOW, "to": "refused", "reason": "p/bad.yaml: not valid YAML", "by": "d1",
                 "details": {"trigger": "SIGHUP", "enforcing": True}}},
     lambda s: s["daemon"]["policies"]["enforcing"] is True,
     ["policy reload refused: p/bad.yaml: not valid YAML (d1 keeps the previous policies)"]),
    ({"backup": backup(HOUR), "drill": {"at": NOW, "details": {"passed": True}},
      "reload": {"at": NOW, "to": "refused", "reason": "p/bad.yaml: not valid YAML", "by": "d2",
                 "details": {"trigger": "start", "enforcing": False}}},
     lambda s: s["daemon"]["policies"] == {"state": "refused", "at": NOW.isoformat(timespec="seconds"),
                                           "reason": "p/bad.yaml: not valid YAML", "enforcing": False},
     ["policy files refused: p/bad.yaml: not valid YAML (d2 has no valid set: it enforces nothing and does not "
      "lead until they are fixed)"]),
    # Prometheus configured but failing: said once, figures marked
    ({"backup": backup(HOUR), "drill": {"at": NOW, "details": {"passed": True}},
      "prometheus": {"error": "Prometheus at http://p failed: refused"}},
     lambda s: s["services"][0]["p95_latency_ms"] == "n/a (Prometheus failed)",
     ["Prometheus at http://p failed: refused"]),
])
def test_summarize(overrides: dict[str, Any], check: Any, attention: list[str]) -> None:
    summary = summarize(raw(**overrides), NOW)
    assert check(summary), summary
    assert summary["attention"] == attention
    json.dumps(summary)  # -o json prints exactly this


def screen(data: dict[str, Any], width: int = 80) -> str:
    """The status screen as a terminal of ``width`` columns shows it."""
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    Console(file=buf, width=width).print(render(data))
    return buf.getvalue()


LONG = ("keep 2: backlog 12 / 100 per replica → 1, limited by minReplicas 2; scale-down stabilized over the 300s "
        "window (highest recommendation 2)")


def test_the_screen_fits_80_columns_with_one_line_per_service_and_job() -> None:
    data = summarize(raw(scale=[{"target": "core-worker", "at": NOW, "from": "2", "to": "2", "reason": LONG,
                                 "details": {}}],
                         jobs=[{"target": "autoscale", "at": NOW, "from": None, "to": "ok", "reason": LONG,
                                "details": {}}]), NOW)
    text = screen(data)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "opsctl status at 2026-11-22 12:00:00Z"
    assert all(len(line) <= 80 for line in lines), text
    for name in ("core-worker", "autoscale"):  # the reason cut with "…" on its row, not wrapped below it
        (row,) = [line for line in lines if f" {name} " in line]
        assert "keep 2: backlog" in row and row.endswith("…"), text
    assert "stabilized" not in text and text.count("keep 2: backlog") == 2, text
    (header,) = [line for line in lines if "SERVICE" in line]
    assert "REPLICAS" in header and "LAST DECISION" in header, text  # headers on one line
    assert "n/a: no Prometheus" in lines, text  # said once, the cells say n/a
    assert LONG in screen(data, width=300)  # whole where the width allows


@pytest.mark.parametrize(("recall", "shown"), [
    (None, "not measured yet (opsctl index status measures it)"),
    ({"at": NOW - 2 * HOUR, "details": {"recall": {"chunks_p2026_11_embedding_idx": 0.97}}}, "0.97, 2.0h ago"),
    ({"at": NOW - HOUR, "details": {"recall": {"a": 1.0, "b": 0.9712, "c": None}, "target": 0.95}},
     "0.971 (lowest of 2 indexes), 1.0h ago"),
    ({"at": NOW - HOUR, "details": {"recall": {"a": None}}}, "no index held rows to measure (1.0h ago)"),
])
def test_index_recall_reads_as_a_figure(recall: dict[str, Any] | None, shown: str) -> None:
    text = screen(summarize(raw(recall=recall), NOW))
    assert f"index recall          │ {shown}" in text, text


def cli(*args: str, db_url: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATABASE_URL=db_url, OPSCTL_DATA_DIR=str(tmp_path / "state"), PYTHONPATH=str(project_root()),
               **extra)
    return subprocess.run([sys.executable, "-m", "opsctl.cli", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def test_status_reads_the_real_database(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    record(conn, "scale.decide", target="core-worker", from_state=1, to_state=3, reason="backlog")
    record(conn, "backup.create", target="db", details={"id": "b1", "type": "full", "size": 10})
    record(conn, "restore.drill", details={"passed": True, "rto_seconds": 12.0, "rpo_seconds": 1.0})
    record(conn, "index.recall", details={"recall": {"chunks_embedding_idx": 0.97}})
    record(conn, "daemon.job", target="autoscale", to_state="ok", reason="held core-worker at 3")
    record(conn, "daemon.job", target="autoscale", to_state="failed", reason="Prometheus down")
    lock = LeaderLock(db_url, "opsctl-daemon daemon@test pid 1")
    assert lock.try_acquire()
    try:
        summary = summarize(fetch(conn, None), datetime.now(UTC))
        out = cli("status", "-o", "json", db_url=db_url, tmp_path=tmp_path)
        table = cli("status", db_url=db_url, tmp_path=tmp_path)
    finally:
        lock.release()
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["daemon"] == {**summary["daemon"], "jobs": printed["daemon"]["jobs"]}
    assert printed["daemon"]["leader"] == "opsctl-daemon daemon@test pid 1"
    assert [(j["job"], j["outcome"], j["failures_24h"]) for j in printed["daemon"]["jobs"]] == [
        ("autoscale", "failed", 1)]
    assert [(s["service"], s["current"], s["desired"]) for s in printed["services"]] == [
        ("core-api", None, None), ("core-worker", 1, 3)]
    assert printed["backup"]["id"] == "b1" and printed["drill"]["passed"] is True
    assert printed["index_recall"]["recall"] == {"chunks_embedding_idx": 0.97}
    chunks = printed["partitions"]["chunks"]
    assert chunks["premade_ahead"] >= 4 and chunks["default_rows"] == 0
    assert printed["attention"] == ["job autoscale failed its last run: Prometheus down"]
    assert table.returncode == 0, table.stderr
    assert "daemon: leader opsctl-daemon daemon@test pid 1" in table.stdout
    assert "search cache hit rate │ unknown: no Prometheus" in table.stdout
    assert "index recall          │ 0.97, " in table.stdout
    # the hit rate says why it is unknown instead of reading a different counter
    assert printed["cache_hit_rate"]["source"] == "none" and printed["cache_hit_rate"]["hit_rate"] is None
    assert printed["cache_hit_rate"]["text"].startswith("unknown: no Prometheus")


@pytest.mark.parametrize(("text", "where"), [
    ("kind: cache\nhitRate:\n  target: lots\n", ":3: hitRate.target: "),  # invalid
    ("a: &x [*x]\n", ""),  # a recursive alias: whatever the loader raises is the file's problem
])
def test_a_bad_cache_policy_leaves_the_screen_and_says_which_file(db_url: str, conn: psycopg.Connection[Any],
                                                                   tmp_path: Path, text: str, where: str) -> None:
    """status is on-call's first command: a broken policies/cache.yaml makes the hit rate unknown,
    naming the file and the reason, and asks for attention; everything else still shows (exit 0)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    bad = policies / "cache.yaml"
    bad.write_text(text)
    record(conn, "backup.create", target="db", details={"id": "b1", "type": "full", "size": 10})
    out = cli("status", "-o", "json", db_url=db_url, tmp_path=tmp_path, OPSCTL_POLICY_DIR=str(policies))
    table = cli("status", db_url=db_url, tmp_path=tmp_path, OPSCTL_POLICY_DIR=str(policies), COLUMNS="200")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    rate = shown["cache_hit_rate"]
    assert (rate["hit_rate"], rate["verdict"], rate["target"]) == (None, "unknown", None)
    assert rate["policy_error"].startswith(f"{bad}{where}"), rate
    assert rate["text"] == f"unknown: invalid policy: {rate['policy_error']}"
    assert f"invalid policy file: {rate['policy_error']}" in shown["attention"]
    assert shown["backup"]["id"] == "b1" and shown["queue"]["depth"] == 0  # the rest of the screen
    assert table.returncode == 0, table.stderr
    assert f"search cache hit rate │ unknown: invalid policy: {bad}{where}" in table.stdout
    assert "last backup" in table.stdout and "invalid policy file" in table.stdout


def test_events_filters(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    record(conn, "backup.create", target="db", reason="scheduled full")
    record(conn, "backup.prune", target="db", from_state=5, to_state=3, reason="retention 3")
    record(conn, "scale.set", target="core-worker", from_state=1, to_state=2, reason="by hand")
    conn.execute("UPDATE ops_events SET at = now() - interval '3 hours' WHERE action = 'backup.create'")
    now = datetime.now(UTC)
    assert [e["action"] for e in list_events(conn, now=now)] == ["backup.create", "backup.prune", "scale.set"]
    assert [e["action"] for e in list_events(conn, now=now, action="backup.*")] == ["backup.create", "backup.prune"]
    assert [e["action"] for e in list_events(conn, now=now, since=timedelta(hours=1))] == ["backup.prune", "scale.set"]
    assert [e["action"] for e in list_events(conn, now=now, limit=1)] == ["scale.set"]
    assert [e["action"] for e in list_events(conn, now=now, target="core-worker")] == ["scale.set"]
    assert list_events(conn, now=now, action="backup_create") == []  # _ is a character, not a wildcard

    out = cli("events", "--since", "1h", "--action", "backup.*", "-o", "json", db_url=db_url, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [(e["action"], e["from"], e["to"], e["reason"]) for e in json.loads(out.stdout)] == [
        ("backup.prune", "5", "3", "retention 3")]
    table = cli("events", db_url=db_url, tmp_path=tmp_path)
    assert "5 → 3" in table.stdout and "by hand" in table.stdout
    bad = cli("events", "--since", "soon", db_url=db_url, tmp_path=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --since: invalid duration 'soon'")
