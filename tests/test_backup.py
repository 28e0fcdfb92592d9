"""Backups and restore drills against real PostgreSQL clusters (one per test: archiving is per cluster)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.embedded import pid_alive
from core.errors import OperationFailed
from opsctl.backup.archive import switch_and_wait
from opsctl.backup.drill import run_drill
from opsctl.backup.restore import ScratchServer, build_data_dir, load_logical, restore_to
from opsctl.backup.service import create_backup, repository, verify_backups
from tests.backup_helpers import Cluster, add_documents, archived_cluster, company
from tests.conftest import outside_pytest_tmp, project_root


def cli(cluster: Cluster, *args: str, check: bool = True, policy: Path | None = None,
        db_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATABASE_URL=db_url or cluster.url, OPSCTL_DATA_DIR=str(cluster.root),
               PYTHONPATH=str(project_root()))
    pol = policy or write_policy(cluster)
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", *args, "--policy", str(pol)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=cluster.root)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_policy(cluster: Cluster, **extra: Any) -> Path:
    import yaml

    data = {"repository": str(cluster.root / "repo"), "fsync": False, **extra}
    path = cluster.root / "backup.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def digest(url: str, table: str, where: str = "") -> tuple[int, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                           f" FROM {table} t {where}").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def test_full_backup_is_catalogued_verified_and_a_flipped_byte_is_named() -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 3)
        created = json.loads(cli(c, "backup", "create", "-o", "json").stdout)
        assert created["type"] == "full" and created["start_lsn"] and created["timeline"] == 1
        listed = json.loads(cli(c, "backup", "list", "-o", "json").stdout)
        assert [b["id"] for b in listed] == [created["id"]]
        assert cli(c, "backup", "verify", created["id"]).returncode == 0
        events = conn.execute("SELECT action FROM ops_events WHERE action LIKE 'backup.%' ORDER BY id").fetchall()
        assert [e[0] for e in events] == ["backup.create", "backup.verify"]

        # the catalog lives in the repository: it lists without the database
        env_less = cli(c, "backup", "list", "-o", "json", db_url="postgresql://nobody@/x?host=/nonexistent")
        assert [b["id"] for b in json.loads(env_less.stdout)] == [created["id"]]

        repo = repository(c.settings, c.policy)
        data = repo.backup_dir(created["id"]) / "data"
        victim = max((p for p in (data / "base").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))

        failed = cli(c, "backup", "verify", created["id"], check=False)
        assert failed.returncode == 1
        assert str(victim) in failed.stderr and "SHA-256" in failed.stderr
        assert json.loads(cli(c, "backup", "list", "-o", "json").stdout)[0]["verify_result"].startswith("failed")

        report = run_drill(c.settings, c.policy, backup_id=created["id"])
        assert not report["passed"]
        assert report["checks"][0]["name"] == "backup_verify" and str(victim) in report["checks"][0]["detail"]


def test_point_in_time_drill_and_restore_hold_exactly_the_rows_up_to_the_target() -> None:
    with archived_cluster() as c, c.connect() as conn:
        acme = company(conn, "acme")
        add_documents(conn, acme, "t1", 4, seed=1)
        create_backup(c.settings, c.policy)
        add_documents(conn, acme, "t2", 4, seed=2)
        time.sleep(0.05)
        t2 = datetime.now(UTC)
        time.sleep(0.05)
        add_documents(conn, acme, "t3", 4, seed=3)
        switch_and_wait(conn, repository(c.settings, c.policy).wal_dir)

        report = run_drill(c.settings, c.policy, target_time=t2)
        assert report["passed"], report
        names = {ch["name"] for ch in report["checks"]}
        assert {"point_in_time", "page_checksums", "vector_recall", "accepts_write", "row_counts"} <= names
        assert report["recovered_point"] == t2.isoformat()
        drill_row = conn.execute("SELECT details FROM ops_events WHERE action = 'restore.drill'").fetchone()
        assert drill_row is not None and drill_row[0]["passed"] is True and "rto_seconds" in drill_row[0]
        prom = (c.root / "metrics" / "opsctl_restore_drill.prom").read_text()
        assert 'opsctl_restore_drill_success{repo="local"} 1.0' in prom

        # the same recovery for real, into a directory, started the way the command says
        target = outside_pytest_tmp("opsctl-test-restore-") / "pgdata"
        result = restore_to(c.settings, c.policy, backup_id="latest", target=target, target_time=t2)
        assert "pg_ctl" in result["start_command"]
        server = ScratchServer(target, target.parent / "run")
        try:
            server.start(120)
            server.wait_promoted("opsctl", 120)
            with psycopg.connect(server.url("opsctl")) as restored:
                prefixes = dict(restored.execute("SELECT title, count(*) FROM documents GROUP BY 1").fetchall())
            assert prefixes == {"t1": 4, "t2": 4}
        finally:
            server.kill()
            import shutil

            shutil.rmtree(target.parent, ignore_errors=True)


def _restore_immediate(c: Cluster, chain_ids: list[str], name: str) -> dict[str, tuple[int, str]]:
    repo = repository(c.settings, c.policy)
    chain = [repo.get(i) for i in chain_ids]
    scratch = outside_pytest_tmp(f"opsctl-test-{name}-")
    server = ScratchServer(scratch / "data", scratch / "run")
    try:
        build_data_dir(repo, chain, server.data_dir, None, scratch=True, immediate=True)
        server.start(120)
        server.wait_promoted("opsctl", 120)
        url = server.url("opsctl")
        return {t: digest(url, t) for t in ("documents", "chunks", "companies", "ingest_jobs")}
    finally:
        server.kill()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def test_incremental_chain_restores_the_same_content_as_a_full_backup_at_the_same_point() -> None:
    with archived_cluster() as c, c.connect() as conn:
        acme = company(conn, "acme")
        add_documents(conn, acme, "base", 5)
        full = create_backup(c.settings, c.policy)
        add_documents(conn, acme, "later", 5, seed=4)
        conn.execute("DELETE FROM documents WHERE external_id = 'base-0'")
        conn.execute("UPDATE documents SET title = 'changed' WHERE external_id = 'base-1'")
        incr = create_backup(c.settings, c.policy, incremental=True)
        assert incr.type == "incr" and incr.parent == full.id
        second = create_backup(c.settings, c.policy)  # nothing written in between: the same content
        assert second.type == "full"
        assert all(r.ok for r in verify_backups(c.settings, c.policy, incr.id))
        via_chain = _restore_immediate(c, [full.id, incr.id], "chain")
        via_full = _restore_immediate(c, [second.id], "full")
        assert via_chain == via_full
        assert via_chain["documents"][0] == 9
        assert via_chain == {t: digest(c.url, t) for t in via_chain}


def test_logical_backup_round_trip() -> None:
    with archived_cluster(mode="logical") as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "doc", 6)
        record = create_backup(c.settings, c.policy)
        assert record.type == "logical"
        assert all(r.ok for r in verify_backups(c.settings, c.policy))
        conn.execute("CREATE DATABASE roundtrip")
        target = c.url.replace("/opsctl?", "/roundtrip?")
        load_logical(repository(c.settings, c.policy), record, target)
        for table in ("documents", "chunks", "companies", "api_keys", "ops_events"):
            where = "WHERE action NOT LIKE 'backup.%'" if table == "ops_events" else ""
            assert digest(target, table, where) == digest(c.url, table, where), table
        report = run_drill(c.settings, c.policy)  # a drill of a logical backup: a fresh cluster, pg_restore
        assert report["passed"] and report["backup"] == record.id, report
        assert {"document_checksums", "vector_recall", "page_checksums"} <= {ch["name"] for ch in report["checks"]}
        dump = repository(c.settings, c.policy).backup_dir(record.id) / "dump.pgdump"
        raw = bytearray(dump.read_bytes())
        raw[100] ^= 0x01
        dump.write_bytes(bytes(raw))
        results = verify_backups(c.settings, c.policy, record.id)
        assert not results[0].ok and str(dump) in results[0].problems[0]


def test_daemon_jobs_back_up_prune_and_drill_without_breaking_the_newest_chain(tmp_path: Path) -> None:
    from opsctl.backup.jobs import job_backup_full, job_backup_incremental, job_backup_prune, job_restore_drill
    from opsctl.backup.service import plan_prune

    with archived_cluster() as c, c.connect() as conn:
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir()
        (policy_dir / "backup.yaml").write_text(f"repository: {c.root / 'repo'}\nfsync: false\n"
                                                "retention: {type: count, full: 1}\n")
        acme = company(conn, "acme")
        add_documents(conn, acme, "one", 3)
        assert job_backup_incremental(c.settings, policy_dir).startswith("took full backup")  # none yet: a full
        add_documents(conn, acme, "two", 3)
        assert "incr" in job_backup_incremental(c.settings, policy_dir)
        assert job_backup_full(c.settings, policy_dir).startswith("took full backup")
        add_documents(conn, acme, "three", 3)
        newest = job_backup_incremental(c.settings, policy_dir)
        before = repository(c.settings, c.policy).list()
        plan = plan_prune(c.settings, c.policy.model_copy(update={"retention": c.policy.retention.model_copy(
            update={"full": 1})}))
        sentence = job_backup_prune(c.settings, policy_dir)
        assert sentence == plan.summary() and "remove 2 backup(s)" in sentence
        after = repository(c.settings, c.policy).list()
        assert [b.id for b in after] == [b.id for b in before[2:]] and newest.split()[3] == after[-1].id
        assert all(r.ok for r in verify_backups(c.settings, c.policy, after[-1].id))  # its WAL is all there
        assert "checks passed" in job_restore_drill(c.settings, policy_dir)
        actions = [r[0] for r in conn.execute("SELECT action FROM ops_events WHERE action LIKE 'backup.%'"
                                              " OR action LIKE 'restore.%' ORDER BY id")]
        assert actions.count("backup.create") == 4 and "backup.prune" in actions and actions[-1] == "restore.drill"


def test_ctrl_c_during_a_drill_leaves_no_scratch_server(tmp_path: Path) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "x", 2)
        nothing = run_drill(c.settings, c.policy)  # no backup yet: a failed drill, recorded and alerting
        assert not nothing["passed"] and "no good physical backup" in nothing["error"]
        prom = (c.root / "metrics" / "opsctl_restore_drill.prom").read_text()
        assert 'opsctl_restore_drill_success{repo="local"} 0.0' in prom
        create_backup(c.settings, c.policy)
        scratch_parent = outside_pytest_tmp("opsctl-test-drill-scratch-")
        policy = write_policy(c, drill={"scratch_dir": str(scratch_parent)})
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
        env.update(OPSCTL_DATABASE_URL=c.url, OPSCTL_DATA_DIR=str(c.root), PYTHONPATH=str(project_root()))
        # a small drill can finish before any signal lands: hold a lock on a source table that the
        # drill reads only once its scratch server is up, so Ctrl-C always arrives mid-drill
        holder = c.connect()
        holder.autocommit = False
        holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([sys.executable, "-m", "opsctl.cli", "restore-test", "--policy", str(policy)],
                                env=env, cwd=c.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pid = None
        deadline = time.monotonic() + 120
        while pid is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scratch server never started"
            for pidfile in scratch_parent.glob("*/data/postmaster.pid"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    pid = int(pidfile.read_text().splitlines()[0])
            time.sleep(0.05)
        assert pid_alive(pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        holder.rollback()
        holder.close()
        assert proc.returncode == 130, err
        assert list(scratch_parent.iterdir()) == []
        # the postmaster was not our child: give PID 1 a moment to reap it, then it must be gone
        deadline = time.monotonic() + 15
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(pid), err
        assert _processes_mentioning(str(scratch_parent)) == [], err


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text in path.read_bytes().decode(errors="replace") and _running(int(path.parent.name)):
                found.append(path.parent.name)
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return pid_alive(pid) and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_shipped_policy_validates_and_commands_have_examples() -> None:
    from typer.testing import CliRunner

    from opsctl.cli import app

    root = project_root()
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", "policy", "validate", "policies/backup.yaml"],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    runner = CliRunner()
    for args in (["backup", "create"], ["backup", "list"], ["backup", "verify"], ["backup", "prune"],
                 ["restore-test"], ["restore"]):
        out = runner.invoke(app, [*args, "--help"])
        assert out.exit_code == 0 and "Example:" in out.output, args
    target = outside_pytest_tmp("opsctl-test-restore-prompt-") / "restored"
    answered_no = runner.invoke(app, ["restore", "--backup", "latest", "--to", str(target)], input="n\n")
    assert answered_no.exit_code != 0 and "restore backup latest into" in answered_no.output
    assert not target.exists()


def test_physical_backup_refuses_a_database_without_archiving(pg_server: Any, settings: Any) -> None:
    from opsctl.backup.policy import BackupPolicy

    pol = BackupPolicy(repository=str(outside_pytest_tmp("opsctl-test-noarchive-")))
    with pytest.raises(Exception, match="archiving") as info:
        create_backup(settings, pol)
    assert not isinstance(info.value, OperationFailed)


def test_a_backup_whose_wal_spans_segments_does_not_wait_for_archive_timeout() -> None:
    """The first backup of a fresh `opsctl up` took 65.7 s: its WAL crossed into a second segment, the
    archiver's newest file was then the `.backup` history file named after the first one, and the
    wait for "the segment after" lasted until archive_timeout made one. Here archive_timeout is off:
    the old wait never ends (its own 60 s limit fails the test); the backup needs none."""
    from opsctl.backup.plan import parse_lsn, segment_number
    from opsctl.backup.verify import segment_size
    from tests.backup_helpers import stalling_proxy

    with archived_cluster(archive_timeout_seconds=0) as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 3)

        def switch_mid_backup() -> None:  # WAL written while the backup runs, past a segment boundary
            with c.connect() as other:
                other.execute("CREATE TABLE mid_backup AS SELECT 1 AS x")
                other.execute("SELECT pg_switch_wal()")

        with stalling_proxy(c, 1 << 20, switch_mid_backup) as url:
            record = create_backup(c.settings.model_copy(update={"database_url": url}), c.policy)
        repo = repository(c.settings, c.policy)
        assert record.start_lsn and record.stop_lsn
        size = segment_size(repo)
        first, last = (segment_number(parse_lsn(lsn), size) for lsn in (record.start_lsn, record.stop_lsn))
        assert last > first, (record.start_lsn, record.stop_lsn)  # the case of the report
        assert all(r.ok for r in verify_backups(c.settings, c.policy, record.id))  # every segment archived


@pytest.mark.parametrize(("line", "parsed"), [
    ("     0/39845 kB (0%), 0/1 tablespace", (0, 39845 * 1024, False)),
    ("12345/39845 kB (30%), 0/1 tablespace (…data/base/5/1259)", (12345 * 1024, 39845 * 1024, False)),
    ("39845/39845 kB (100%), 0/1 tablespace", (39845 * 1024, 39845 * 1024, False)),  # files sent, WAL not yet
    ("39845/39845 kB (100%), 1/1 tablespace", (39845 * 1024, 39845 * 1024, True)),
    (" 4981/31809 kB (15%), 1/1 tablespace", (4981 * 1024, 4981 * 1024, True)),  # incremental: the real total
    ("pg_basebackup: error: could not connect", None),
    ("", None),
])
def test_basebackup_progress_lines(line: str, parsed: tuple[int, int, bool] | None) -> None:
    from opsctl.backup.create import basebackup_progress

    assert basebackup_progress(line) == parsed


def test_backup_progress_counts_the_bytes_pg_basebackup_streams_up_to_the_total() -> None:
    """Full and incremental backups report pg_basebackup's own count: increasing, ending at the total."""
    with archived_cluster() as c, c.connect() as conn:
        acme = company(conn, "acme")
        add_documents(conn, acme, "a", 3)
        for incremental in (False, True):
            seen: list[tuple[str, float | None]] = []
            record = create_backup(c.settings, c.policy, incremental=incremental,
                                   progress=lambda step, fraction, seen=seen: seen.append((step, fraction)))
            assert record.type == ("incr" if incremental else "full")
            streamed = [f if f is not None else -1.0 for step, f in seen if step.startswith("pg_basebackup")]
            assert len(streamed) >= 2 and streamed[-1] == 1.0, seen  # its first report, …, its last
            assert all(a < b for a, b in itertools.pairwise(streamed)), seen
            assert seen[-1][1] == 1.0, seen  # nothing after the bar is full
            assert "iB of " in seen[-1][0], seen  # done and total in the step's text
            add_documents(conn, acme, "b", 3, seed=1)
