"""Partition rotation against real PostgreSQL: apply, crash and re-run, archive verified before drop,
rotation while the real API ingests and searches, the CLI and the daemon job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.config import Settings
from core.errors import OperationFailed
from core.tiers import builtin_policy
from opsctl.partitions.jobs import job_partition_rotation
from opsctl.partitions.pg import Rotator, partitions, verify_archive
from opsctl.partitions.plan import Step, add_intervals, plan_rotation
from opsctl.partitions.policy import PartitionsPolicy
from tests.conftest import RunningApi, client_for, drain, project_root

NOW = datetime.now(UTC)


def month_start(shift: int) -> datetime:
    return add_intervals(datetime(NOW.year, NOW.month, 1, tzinfo=UTC), "month", shift)


def name(table: str, shift: int) -> str:
    return f"{table}_p{month_start(shift):%Y_%m}"


def policy_for(tmp: Path, **kw: Any) -> PartitionsPolicy:
    return PartitionsPolicy(archive_dir=str(tmp / "archive"), lock_timeout_ms=500, move_batch_rows=7, **kw)


def add_rows(conn: psycopg.Connection[Any], company: int, at: datetime, n: int, prefix: str) -> None:
    """Documents with one chunk each, written as the core writes them."""
    for i in range(n):
        doc = conn.execute(
            "INSERT INTO documents (company_id, external_id, body, content_hash, created_at)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (company, f"{prefix}-{i}", f"text {prefix} {i}", b"h", at)).fetchone()
        assert doc is not None
        conn.execute(
            "INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
            " VALUES (%s, %s, %s, 0, %s, %s, %s)",
            (company, doc[0], f"{prefix}-{i}", f"text {prefix} {i}", "[" + ",".join(["0.5"] * 384) + "]", at))


def old_partition(conn: psycopg.Connection[Any], table: str, shift: int) -> None:
    conn.execute(f"CREATE TABLE {name(table, shift)} PARTITION OF {table} FOR VALUES FROM "
                 f"('{month_start(shift).isoformat()}') TO ('{month_start(shift + 1).isoformat()}')")


def exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] is not None


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def actions(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute("SELECT action, target FROM ops_events ORDER BY id").fetchall()]


@pytest.fixture
def world(conn: psycopg.Connection[Any], tenant: Any) -> int:
    """An expired month with rows (14 months ago) and stray rows in the default (8 months ahead)."""
    for table in ("documents", "chunks"):
        old_partition(conn, table, -14)
    add_rows(conn, tenant.company_id, month_start(-14).replace(day=3), 5, "old")
    add_rows(conn, tenant.company_id, month_start(8).replace(day=9), 17, "future")
    add_rows(conn, tenant.company_id, month_start(0).replace(day=1), 3, "now")
    return int(tenant.company_id)


def rotator(conn: psycopg.Connection[Any], db_url: str, pol: PartitionsPolicy, tmp: Path,
            progress: Any = None) -> Rotator:
    return Rotator(conn, db_url, pol, tmp / "archive", progress)


def test_rotate_apply_moves_archives_drops_and_is_then_in_line(conn: psycopg.Connection[Any], db_url: str,
                                                              world: int, tmp_path: Path) -> None:
    pol = policy_for(tmp_path)
    steps = plan_rotation(partitions(conn, pol), pol, NOW)
    assert [(s.action, s.partition) for s in steps] == [
        ("move_default_rows", name("documents", 8)), ("move_default_rows", name("chunks", 8)),
        ("detach", name("documents", -14)), ("archive", name("documents", -14)), ("drop", name("documents", -14)),
        ("detach", name("chunks", -14)), ("archive", name("chunks", -14)), ("drop", name("chunks", -14)),
    ]
    done = rotator(conn, db_url, pol, tmp_path).apply(steps)
    assert len(done) == len(steps)
    assert count(conn, "documents_default") == count(conn, "chunks_default") == 0
    assert count(conn, name("documents", 8)) == count(conn, name("chunks", 8)) == 17
    assert not exists(conn, name("documents", -14)) and not exists(conn, name("chunks", -14))
    assert count(conn, "documents") == count(conn, "chunks") == 20
    # the moved partition is a real partition with every index of the parent, all valid
    idx = conn.execute("SELECT count(*), bool_and(indisvalid) FROM pg_index WHERE indrelid = %s::regclass",
                       (name("chunks", 8),)).fetchone()
    assert idx == (4, True)
    dump = tmp_path / "archive" / "documents" / f"{name('documents', -14)}.dump"
    assert verify_archive(dump, name("documents", -14), 5)["rows"] == 5
    assert (dump.parent / (dump.name + ".sha256")).read_text().startswith(verify_archive(dump, name(
        "documents", -14))["sha256"])
    audited = [a for a, _ in actions(conn)]
    assert audited.count("partition.move_default_rows") == 2
    for action in ("partition.detach", "partition.archive", "partition.drop"):
        assert audited.count(action) == 2
    assert plan_rotation(partitions(conn, pol), pol, NOW) == []


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [("move_default_rows", "copied"), ("archive", "start"), ("drop", "start"),
                                      ("detach", "done")])
def test_crash_halfway_then_rerun_finishes(conn: psycopg.Connection[Any], db_url: str, world: int,
                                           tmp_path: Path, crash_at: tuple[str, str]) -> None:
    pol = policy_for(tmp_path)

    def crash(step: Step, phase: str) -> None:
        if (step.action, phase) == crash_at:
            raise Crash(f"{step.action} {phase}")

    with pytest.raises(Crash):
        rotator(conn, db_url, pol, tmp_path, crash).apply(plan_rotation(partitions(conn, pol), pol, NOW))
    # nothing lost, nothing doubled while half done: the parent plus a detached leftover hold all rows
    assert count(conn, "documents") + _detached_rows(conn, "documents") == 25
    assert count(conn, "chunks") + _detached_rows(conn, "chunks") == 25
    steps = plan_rotation(partitions(conn, pol), pol, NOW)
    assert steps, "the re-run must have something left to do"
    rotator(conn, db_url, pol, tmp_path).apply(steps)
    assert plan_rotation(partitions(conn, pol), pol, NOW) == []
    assert count(conn, "documents") == count(conn, "chunks") == 20
    assert count(conn, name("documents", 8)) == 17 and count(conn, "documents_default") == 0
    rows = conn.execute("SELECT count(DISTINCT (company_id, id)) FROM documents").fetchone()
    assert rows == (20,)
    assert [a for a, t in actions(conn) if a == "partition.drop"] == ["partition.drop"] * 2


def _detached_rows(conn: psycopg.Connection[Any], table: str) -> int:
    """Rows of the old month in a detached (not yet dropped) table: no longer seen through the parent."""
    old = name(table, -14)
    row = conn.execute("SELECT relispartition FROM pg_class WHERE relname = %s", (old,)).fetchone()
    return count(conn, old) if row is not None and not row[0] else 0


def test_a_corrupt_archive_blocks_the_drop(conn: psycopg.Connection[Any], db_url: str, world: int,
                                           tmp_path: Path) -> None:
    pol = policy_for(tmp_path)
    steps = plan_rotation(partitions(conn, pol), pol, NOW)
    before_drop = [s for s in steps if s.action != "drop"]
    rotator(conn, db_url, pol, tmp_path).apply(before_drop)
    dump = tmp_path / "archive" / "documents" / f"{name('documents', -14)}.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    drops = [s for s in steps if s.action == "drop"]
    with pytest.raises(OperationFailed, match="sha256"):
        rotator(conn, db_url, pol, tmp_path).apply(drops)
    assert exists(conn, name("documents", -14)) and count(conn, name("documents", -14)) == 5
    # a dump whose digest matches but that is not a dump is refused by pg_restore --list
    dump.write_bytes(b"not a dump")
    (dump.parent / (dump.name + ".sha256")).write_text(
        __import__("hashlib").sha256(b"not a dump").hexdigest() + f"  {dump.name}\n")
    with pytest.raises(OperationFailed, match="pg_restore"):
        rotator(conn, db_url, pol, tmp_path).apply(drops[:1])
    assert exists(conn, name("documents", -14))
    assert "partition.drop" not in [a for a, _ in actions(conn)]
    # the next rotation re-dumps (the archive step finds it does not verify), then drops
    rotator(conn, db_url, pol, tmp_path).apply(plan_rotation(partitions(conn, pol), pol, NOW))
    assert not exists(conn, name("documents", -14))


def test_rows_reaching_the_default_after_the_plan_are_moved_not_lost(conn: psycopg.Connection[Any], db_url: str,
                                                                     tenant: Any, tmp_path: Path) -> None:
    pol = policy_for(tmp_path, tables={"documents": {"premake": 6}, "chunks": {"premake": 6}})
    steps = plan_rotation(partitions(conn, pol), pol, NOW)
    assert [s.action for s in steps] == ["create", "create", "create", "create"]
    add_rows(conn, tenant.company_id, month_start(5).replace(day=2), 4, "late")  # after the plan was made
    rotator(conn, db_url, pol, tmp_path).apply(steps)
    assert count(conn, name("documents", 5)) == 4 and count(conn, "documents_default") == 0
    assert count(conn, name("chunks", 6)) == 0
    assert {a for a, _ in actions(conn)} >= {"partition.create", "partition.move_default_rows"}


def test_rotation_while_the_api_ingests_and_searches(settings: Settings, api: RunningApi, db_url: str,
                                                     conn: psycopg.Connection[Any], tenant: Any,
                                                     tmp_path: Path) -> None:
    for table in ("documents", "chunks"):
        old_partition(conn, table, -15)
    add_rows(conn, tenant.company_id, month_start(-15).replace(day=4), 6, "expired")
    stray = month_start(9).replace(day=5).isoformat()
    api.services.tiers = builtin_policy(1e6, 10**6, 100)  # unpaced clients: this test is not about the rate limit
    errors: list[str] = []
    stop = threading.Event()
    sent: list[str] = []

    def ingest() -> None:
        with client_for(api, tenant.api_key) as client:
            i = 0
            while not stop.is_set() or i < 20:
                docs = [{"external_id": f"doc-{i}-{j}", "text": f"alpha beta {i} {j}",
                         **({"created_at": stray} if j % 2 else {})} for j in range(3)]
                r = client.post("/v1/documents", json={"documents": docs})
                if r.status_code != 202:
                    errors.append(f"ingest {r.status_code} {r.text[:100]}")
                sent.extend(d["external_id"] for d in docs)
                i += 1

    def search() -> None:
        with client_for(api, tenant.api_key) as client:
            while not stop.is_set():
                r = client.post("/v1/search", json={"query": "alpha beta", "k": 5, "mode": "hybrid"})
                if r.status_code != 200:
                    errors.append(f"search {r.status_code} {r.text[:100]}")

    def work() -> None:
        while not stop.is_set():
            try:
                drain(settings, db_url, max_batches=5)
            except Exception as exc:  # any error of the real processor fails the test
                errors.append(f"drain {type(exc).__name__}: {exc}")
                return

    threads = [threading.Thread(target=f) for f in (ingest, search, work)]
    for t in threads:
        t.start()
    try:
        import time

        deadline = time.monotonic() + 60
        while count(conn, "documents_default") < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        pol = policy_for(tmp_path)
        from opsctl.partitions.service import rotate

        result = rotate(settings, pol.model_copy(update={"archive_dir": str(tmp_path / "archive")}), NOW,
                        apply=True)
        assert {s.action for s in result.steps} >= {"move_default_rows", "detach", "archive", "drop"}
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    drain(settings, db_url)
    assert errors == []
    expected = len(set(sent))
    # every accepted document is stored exactly once; the stray ones live in their own month now
    assert count(conn, "documents") == expected
    assert conn.execute("SELECT count(DISTINCT (company_id, external_id)) FROM documents").fetchone() == (expected,)
    assert count(conn, "documents_default") == 0 and count(conn, "chunks_default") == 0
    assert not exists(conn, name("documents", -15))


def test_job_and_cli(settings: Settings, conn: psycopg.Connection[Any], world: int, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (project_root() / "policies" / "partitions.yaml").read_text()
    (policies / "partitions.yaml").write_text(text.replace("archive_dir: archive/partitions",
                                                           f"archive_dir: {tmp_path / 'arch'}"))
    env = {**os.environ, "OPSCTL_DATABASE_URL": settings.database_url or "", "OPSCTL_POLICY_DIR": str(policies)}
    listed = subprocess.run([sys.executable, "-m", "opsctl.cli", "partitions", "list", "-o", "json"], env=env,
                            capture_output=True, text=True, cwd=project_root(), check=True)
    rows = {r["partition"]: r for r in json.loads(listed.stdout)}
    assert rows[name("documents", -14)]["retention"] == "expired"
    assert rows[name("documents", 0)]["retention"] == "current"
    assert rows["documents_default"]["rows"] == 17 and rows["documents_default"]["rows_exact"] is True
    # never analyzed, the planner estimates 0 rows: a small partition is counted instead
    assert (rows[name("documents", 0)]["rows"], rows[name("documents", 0)]["rows_exact"]) == (3, True)
    assert (rows[name("documents", -14)]["rows"], rows[name("documents", -14)]["rows_exact"]) == (5, True)
    table = subprocess.run([sys.executable, "-m", "opsctl.cli", "partitions", "list"], env=env,
                           capture_output=True, text=True, cwd=project_root(), check=True).stdout
    (current,) = [line for line in table.splitlines() if name("documents", 0) in line]
    assert re.search(r"│ 3 +│", current), current
    assert rows[name("chunks", 0)]["indexes"] == "ok 4/4"
    plan = subprocess.run([sys.executable, "-m", "opsctl.cli", "partitions", "rotate", "-o", "json"], env=env,
                          capture_output=True, text=True, cwd=project_root(), check=True)
    assert json.loads(plan.stdout)["applied"] is False and len(json.loads(plan.stdout)["steps"]) == 8
    assert count(conn, "documents_default") == 17  # a dry run changes nothing
    sentence = job_partition_rotation(settings, policies)
    assert sentence.startswith("applied 2 move_default_rows, 2 detach, 2 archive, 2 drop")
    assert job_partition_rotation(settings, policies) == "nothing to do: partitions in line with the policy"
    idle = subprocess.run([sys.executable, "-m", "opsctl.cli", "partitions", "rotate"], env=env,
                          capture_output=True, text=True, cwd=project_root(), check=True)
    assert idle.stdout == "" and idle.stderr == "nothing to do: partitions in line with the policy\n"
    ok = subprocess.run([sys.executable, "-m", "opsctl.cli", "policy", "validate", "policies/partitions.yaml"],
                        env=env, capture_output=True, text=True, cwd=project_root())
    assert ok.returncode == 0, ok.stderr


def test_a_big_partition_shows_the_estimate_marked(conn: psycopg.Connection[Any], world: int, tmp_path: Path) -> None:
    from opsctl.partitions.pg import list_rows

    current = name("documents", 0)
    conn.execute(f"ANALYZE {current}")  # the planner's figure: 3
    add_rows(conn, world, month_start(0).replace(day=2), 1, "later")
    pol = policy_for(tmp_path)
    rows = {r["partition"]: r for r in list_rows(conn, pol, NOW, exact_up_to=2)}
    # above the bound: the estimate (3 at ANALYZE), not a count (4 now), and said to be one
    assert (rows[current]["rows"], rows[current]["rows_exact"]) == (3, False)
    assert rows[name("documents", 1)]["rows"] == 0 and rows[name("documents", 1)]["rows_exact"] is True
    assert (rows["documents_default"]["rows"], rows["documents_default"]["rows_exact"]) == (17, True)


def test_detach_is_concurrent_when_there_is_no_default_partition(conn: psycopg.Connection[Any], db_url: str,
                                                                  tenant: Any, tmp_path: Path) -> None:
    for table in ("documents", "chunks"):
        old_partition(conn, table, -20)
        conn.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_default")
    add_rows(conn, tenant.company_id, month_start(-20).replace(day=2), 3, "old")
    pol = policy_for(tmp_path)
    steps = plan_rotation(partitions(conn, pol), pol, NOW)
    rotator(conn, db_url, pol, tmp_path).apply(steps)
    methods = [r[0] for r in conn.execute(
        "SELECT details->>'method' FROM ops_events WHERE action = 'partition.detach' ORDER BY id").fetchall()]
    # documents (their titles, 0014) and chunks: plainly, in the transaction that subtracts the rows'
    # keyword statistics (core.search.bm25)
    assert methods == ["plain (keyword statistics leave with the rows)"] * 2
    assert not exists(conn, name("documents", -20)) and count(conn, "documents") == 0


def test_one_rotation_at_a_time(settings: Settings, conn: psycopg.Connection[Any], world: int,
                                tmp_path: Path) -> None:
    from core.db import PARTITION_LOCK
    from opsctl.partitions.service import rotate

    conn.execute("SELECT pg_advisory_lock(%s, %s)", PARTITION_LOCK)
    with pytest.raises(OperationFailed, match="another partition rotation is running"):
        rotate(settings, policy_for(tmp_path), NOW, apply=True)
    assert count(conn, "documents_default") == 17
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", PARTITION_LOCK)
    assert rotate(settings, policy_for(tmp_path), NOW, apply=True).done
    assert count(conn, "documents_default") == 0
