"""A drill neither invents a failure nor hides one: it recovers to the last archived commit, expects
exactly what the restored commit log holds, and fails when the archive lost WAL before that commit."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from opsctl.backup.archive import switch_and_wait
from opsctl.backup.drill import failure_reason, run_drill
from opsctl.backup.plan import parse_lsn, segment_number, segment_of_name
from opsctl.backup.service import create_backup, repository
from opsctl.backup.target import commits_in
from opsctl.backup.verify import segment_size
from tests.backup_helpers import Cluster, add_documents, archived_cluster, company

WRITES = "CREATE TABLE drill_writes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, writer text NOT NULL)"


def stamped_in_the_past(conn: psycopg.Connection[Any], lag: str, sql: str) -> None:
    """Run ``sql`` in a transaction whose commit timestamp is ``lag`` before its commit, as a logical
    replication subscriber applying a publisher's transaction does: commit-time order is then not
    WAL order, which is what a drill comparing timestamps mistook for lost rows."""
    with conn.transaction():
        conn.execute("SELECT pg_replication_origin_xact_setup('0/1', clock_timestamp() - %s::interval)", (lag,))
        conn.execute(sql)


@contextlib.contextmanager
def origin_session(c: Cluster, name: str) -> Iterator[psycopg.Connection[Any]]:
    with c.connect() as conn:
        conn.execute("SELECT pg_replication_origin_create(%s)", (name,))
        conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_replication_origin_session_reset()")


def test_a_row_stamped_before_the_point_but_committed_after_it_is_not_missing() -> None:
    """The newcomer's failure, made certain: a transaction stamped an hour before the last archived
    commit but written to WAL after it. The drill used to expect it (its timestamp is before the
    point) and failed a good backup; it is simply not at the point."""
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 2)
        create_backup(c.settings, c.policy)
        add_documents(conn, company(conn, "globex"), "b", 2)
        switch_and_wait(conn, repository(c.settings, c.policy).wal_dir)
        with origin_session(c, "late") as late:
            stamped_in_the_past(late, "1 hour", "INSERT INTO companies (name, webhook_secret) VALUES ('late', 'x')")

        report = run_drill(c.settings, c.policy)
        assert report["passed"], failure_reason(report)
        point = next(ch for ch in report["checks"] if ch["name"] == "point_in_time")
        assert "the last one archived" in point["figure"], point
        assert report["recovery_target"].startswith("the commit of transaction")
        assert report["rpo_seconds"] is not None and report["rpo_seconds"] >= 0


def test_drills_pass_every_time_while_the_source_keeps_writing() -> None:
    """Writers commit throughout (one plainly, one stamping its commits a second in the past, as a
    subscriber does) while WAL segments are archived under them: every drill passes, each with rows
    of both writers on both sides of its point."""
    with archived_cluster() as c, c.connect() as conn:
        conn.execute(WRITES)
        add_documents(conn, company(conn, "acme"), "a", 2)
        create_backup(c.settings, c.policy)
        stop = threading.Event()
        wrote = {"plain": threading.Event(), "subscriber": threading.Event()}
        errors: list[BaseException] = []

        def write(name: str, conn: psycopg.Connection[Any], stamped: bool) -> None:
            while not stop.is_set():
                sql = f"INSERT INTO drill_writes (writer) VALUES ('{name}')"
                if stamped:
                    stamped_in_the_past(conn, "1 second", sql)
                else:
                    conn.execute(sql)
                wrote[name].set()
                stop.wait(0.005)

        def writer(name: str) -> None:
            try:
                if name == "subscriber":
                    with origin_session(c, name) as w:
                        write(name, w, stamped=True)
                else:
                    with c.connect() as w:
                        write(name, w, stamped=False)
            except BaseException as exc:  # surfaced by the assertions below
                errors.append(exc)
                stop.set()

        def each_writer_commits() -> None:
            for event in wrote.values():
                event.clear()
            for event in wrote.values():
                assert event.wait(120) and not errors, errors

        threads = [threading.Thread(target=writer, args=(name,)) for name in wrote]
        for t in threads:
            t.start()
        try:
            for n in range(3):
                each_writer_commits()  # rows at the point
                switch_and_wait(conn, repository(c.settings, c.policy).wal_dir)  # a new end of the archive
                each_writer_commits()  # rows after it, the source holds and the restore does not
                report = run_drill(c.settings, c.policy)
                assert report["passed"], (n, failure_reason(report))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors


def test_wal_lost_before_the_last_archived_commit_fails_the_drill() -> None:
    """A segment missing or damaged between the backup and the last archived commit: the rows in
    and after it are lost. The drill used to recover "to the end of the archive", stop at the gap,
    and pass; now the target is the last archived commit, so it fails and says why."""
    with archived_cluster() as c, c.connect() as conn:
        acme = company(conn, "acme")
        add_documents(conn, acme, "a", 2)
        backup = create_backup(c.settings, c.policy)
        repo = repository(c.settings, c.policy)
        add_documents(conn, acme, "b", 2, seed=1)
        lost = repo.wal_dir / switch_and_wait(conn, repo.wal_dir)
        add_documents(conn, acme, "c", 2, seed=2)
        switch_and_wait(conn, repo.wal_dir)
        size = segment_size(repo)
        assert backup.stop_lsn and segment_number(parse_lsn(backup.stop_lsn), size) < segment_of_name(lost.name, size)
        # the lost segment is after the backup: `backup verify` cannot see it, only the drill

        commit = commits_in(repo, 1, segment_of_name(lost.name, size), size)[0]  # one of "b"'s
        raw = lost.read_bytes()
        lost.unlink()
        report = run_drill(c.settings, c.policy)
        assert not report["passed"]
        assert str(lost) in report["error"] and "missing from the archive" in report["error"], report["error"]

        # the segment is there, but a commit record in it is damaged: recovery stops at it, short of the target
        damaged = bytearray(raw)
        damaged[commit.lsn % size + 10] ^= 0xFF
        lost.write_bytes(bytes(damaged))
        report = run_drill(c.settings, c.policy)
        assert not report["passed"]
        assert "recovery ended before configured recovery target was reached" in report["error"], report["error"]


def test_a_passing_drill_records_every_backup_of_its_chain_as_verified() -> None:
    with archived_cluster() as c, c.connect() as conn:
        acme = company(conn, "acme")
        add_documents(conn, acme, "a", 2)
        full = create_backup(c.settings, c.policy)
        add_documents(conn, acme, "b", 2, seed=1)
        incr = create_backup(c.settings, c.policy, incremental=True)
        assert incr.parent == full.id
        report = run_drill(c.settings, c.policy)
        assert report["passed"] and report["chain"] == [full.id, incr.id], failure_reason(report)
        assert report["recovery_target"].startswith("the end of the backup"), report  # nothing committed since
        repo = repository(c.settings, c.policy)
        for record in (repo.get(full.id), repo.get(incr.id)):
            assert record.verified_at is not None and record.verify_result == "ok", record
            assert record.verified_at >= report["started_at"]
