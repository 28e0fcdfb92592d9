"""The PostgreSQL side of partition rotation: read the partitions, apply a plan's steps.

Every step is idempotent, so a rotation that crashed halfway is finished by running it again:
``create`` skips a partition that exists; ``move_default_rows`` resumes from its standalone
table; ``detach`` skips a detached table and finalizes an interrupted concurrent detach;
``archive`` keeps a dump that still verifies; ``drop`` re-verifies the archive right before
dropping and refuses to drop an attached partition.

Locks (pg_partman#796/#834 deadlock around the default partition): every DDL runs with
``lock_timeout`` and is retried with backoff, each transaction touches one table, and locks are
taken in one order (the parent, then the default partition). ``DETACH … CONCURRENTLY`` is used
when the table has no default partition; PostgreSQL does not allow it when one exists (the core's
tables have one), so the plain detach is used, briefly, under the same timeout. ``chunks`` is always
detached plainly, in one transaction with the subtraction of its rows from keyword search's BM25
statistics (``core.search.bm25``), so a search never counts rows it can no longer find.

Moving rows out of the default partition keeps them visible throughout: they are copied in
batches into a standalone table that carries the new partition's indexes and a CHECK constraint
of its range; then one short transaction locks the parent and the default, reconciles rows that
changed since the copy, deletes the range from the default and attaches the table (the CHECK
constraint spares the attach a validation scan).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from core.embedded import pg_command
from core.errors import OperationFailed
from core.humanize import format_bytes, plural
from core.partitioning import partition_with
from opsctl.audit import record
from opsctl.files import sha256_file
from opsctl.lockretry import with_lock_retries
from opsctl.partitions.plan import Partition, Step, parse_bound, retention_cutoff
from opsctl.partitions.policy import PartitionsPolicy

T = TypeVar("T")
Progress = Callable[[Step, str], None]
SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

PARTITIONS_SQL = """
SELECT parent.relname, c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending,
       greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid),
       (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid),
       (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid AND x.indisvalid AND x.indisready),
       (SELECT count(*) FROM pg_index x WHERE x.indrelid = parent.oid)
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class parent ON parent.oid = i.inhparent
WHERE parent.relname = ANY(%s) AND parent.relkind = 'p' AND parent.relnamespace = 'public'::regnamespace
ORDER BY parent.relname, c.relname
"""

STANDALONE_SQL = """
SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)
FROM pg_class c
WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relnamespace = 'public'::regnamespace
  AND c.relname LIKE %s
ORDER BY c.relname
"""

# Tables whose rows feed keyword search's BM25 statistics (migrations 0013: chunks, 0014: documents' titles):
# a detach subtracts them.
KEYWORD_STATISTICS = ("chunks", "documents")


def _ident(name: str) -> sql.Identifier:
    if not SAFE_NAME.match(name):
        raise OperationFailed(f"refusing an unexpected table name {name!r}")
    return sql.Identifier(name)


@dataclass(frozen=True)
class PartitionRow:
    """A partition with what `opsctl partitions list` shows."""

    partition: Partition
    size_bytes: int
    indexes: int
    valid_indexes: int
    expected_indexes: int


def inspect(conn: psycopg.Connection[Any], policy: PartitionsPolicy) -> list[PartitionRow]:
    """Every partition, default partition and standalone leftover of the policy's tables."""
    conn.execute("SET TimeZone = 'UTC'")
    tables = list(policy.tables)
    out: list[PartitionRow] = []
    for table, name, bound, pending, est, size, idx, valid, expected in conn.execute(
            PARTITIONS_SQL, (tables,)).fetchall():
        if bound == "DEFAULT":
            tp = policy.tables[table]  # type: ignore[index]
            days = conn.execute(
                sql.SQL("SELECT date_trunc('day', created_at, {}) AS d, count(*) FROM {} GROUP BY 1 ORDER BY 1")
                .format(sql.Literal(tp.time_zone), _ident(name))).fetchall()
            rows = sum(int(n) for _, n in days)
            part = Partition(table, name, is_default=True, rows=rows,
                             default_days=tuple((d, int(n)) for d, n in days))
        else:
            parsed = parse_bound(bound)
            if parsed is None:
                continue  # MINVALUE/MAXVALUE bounds are not ours to rotate
            start, end = parsed
            part = Partition(table, name, start, end, detach_pending=bool(pending), rows=int(est))
        out.append(PartitionRow(part, int(size), int(idx), int(valid), int(expected)))
    for table in tables:
        for name, est, size in conn.execute(STANDALONE_SQL, (table.replace("_", r"\_") + r"\_p%",)).fetchall():
            out.append(PartitionRow(Partition(table, name, attached=False, rows=int(est)), int(size), 0, 0, 0))
    return out


def partitions(conn: psycopg.Connection[Any], policy: PartitionsPolicy) -> list[Partition]:
    return [row.partition for row in inspect(conn, policy)]


# `partitions list` counts the rows of a partition the planner estimates below this (a bounded scan);
# bigger ones show the estimate (pg_class.reltuples, 0 until the first ANALYZE), marked as such
EXACT_ROWS_UP_TO = 100_000


def _rows(conn: psycopg.Connection[Any], p: Partition, up_to: int) -> tuple[int, bool]:
    """(rows, exact): the default partition's exact count, else a count when small, else the estimate."""
    if p.is_default or p.rows > up_to:
        return p.rows, p.is_default
    row = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) s").format(_ident(p.name)),
                       (up_to + 1,)).fetchone()
    counted = int(row[0]) if row else 0
    return (counted, True) if counted <= up_to else (p.rows, False)


def list_rows(conn: psycopg.Connection[Any], policy: PartitionsPolicy, now: datetime,
              exact_up_to: int = EXACT_ROWS_UP_TO) -> list[dict[str, Any]]:
    """Rows for `opsctl partitions list`: range, rows (``rows_exact``: counted, not estimated), size,
    index state, retention."""
    from opsctl.partitions.plan import interval_range

    rows: list[dict[str, Any]] = []
    for row in inspect(conn, policy):
        p = row.partition
        count, exact = _rows(conn, p, exact_up_to)
        tp = policy.tables[p.table]  # type: ignore[index]
        tz = ZoneInfo(tp.time_zone)
        current = interval_range(p.table, now, tp)
        cutoff = retention_cutoff(now, tp)
        if p.is_default:
            rng, state = "DEFAULT", "stray rows: run rotate" if p.rows else "empty"
        elif not p.attached:
            rng, state = "(standalone)", "left by an interrupted rotation: run rotate"
        else:
            assert p.start is not None and p.end is not None
            rng = f"{p.start.astimezone(tz):%Y-%m-%d %H:%M} → {p.end.astimezone(tz):%Y-%m-%d %H:%M}"
            if p.start <= now < p.end or p.start == current.start:
                state = "current"
            elif p.start > now:
                state = "future"
            elif cutoff is not None and p.end <= cutoff:
                state = "expired"
            else:
                state = "kept"
            if p.detach_pending:
                state += " (detach pending)"
        if row.expected_indexes and row.valid_indexes == row.expected_indexes == row.indexes:
            index_state = f"ok {row.valid_indexes}/{row.expected_indexes}"
        elif row.expected_indexes:
            index_state = f"INVALID {row.valid_indexes}/{row.expected_indexes} valid"
        else:
            index_state = "-"
        rows.append({"table": p.table, "partition": p.name, "range": rng,
                     "rows": count, "rows_exact": exact, "size": format_bytes(row.size_bytes),
                     "size_bytes": row.size_bytes, "indexes": index_state, "retention": state})
    return rows


# --- applying steps ------------------------------------------------------------------------------


def _retrying(conn: psycopg.Connection[Any], policy: PartitionsPolicy, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` under the policy's lock_timeout; on a lock timeout or deadlock, back off and retry."""
    return with_lock_retries(conn, what, fn, timeout_ms=policy.lock_timeout_ms, retries=policy.lock_retries)


def _exists(conn: psycopg.Connection[Any], name: str) -> tuple[bool, bool]:
    """(exists, attached as a partition)."""
    row = conn.execute("SELECT relispartition FROM pg_class WHERE relname = %s AND relnamespace = "
                       "'public'::regnamespace", (name,)).fetchone()
    return (row is not None, bool(row and row[0]))


def _default_of(conn: psycopg.Connection[Any], table: str) -> str | None:
    row = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'", (table,)).fetchone()
    return None if row is None else str(row[0])


def _bounds(step: Step) -> tuple[sql.Literal, sql.Literal]:
    return sql.Literal(step.start.isoformat()), sql.Literal(step.end.isoformat())


def _audit(conn: psycopg.Connection[Any], action: str, step: Step, from_state: str, to_state: str,
           **details: Any) -> None:
    record(conn, action, target=f"{step.table}/{step.partition}", from_state=from_state, to_state=to_state,
           reason=step.reason, details={"start": step.start.isoformat(), "end": step.end.isoformat(), **details})


class Rotator:
    """Applies a rotation plan's steps to one database."""

    def __init__(self, conn: psycopg.Connection[Any], url: str, policy: PartitionsPolicy, archive_dir: Path,
                 progress: Progress | None = None) -> None:
        if not conn.autocommit:
            raise OperationFailed("the rotation needs an autocommit connection (DETACH CONCURRENTLY)")
        self.conn, self.url, self.policy, self.archive_dir = conn, url, policy, archive_dir
        self.progress = progress or (lambda step, phase: None)

    def apply(self, steps: list[Step]) -> list[str]:
        """Run the steps in order; returns one line per step saying what it did."""
        done = []
        for step in steps:
            self.progress(step, "start")
            method = getattr(self, "_" + step.action)
            done.append(f"{step.action} {step.partition}: {method(step)}")
            self.progress(step, "done")
        return done

    # create ---------------------------------------------------------------------------------
    def _create(self, step: Step) -> str:
        exists, attached = _exists(self.conn, step.partition)
        if exists:
            return "exists" if attached else self._move_default_rows(step)
        lo, hi = _bounds(step)
        stmt = sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                       + partition_with(step.table)).format(_ident(step.partition), _ident(step.table), lo, hi)

        def create() -> bool:
            try:
                with self.conn.transaction():
                    self.conn.execute(stmt)
                    _audit(self.conn, "partition.create", step, "absent", "attached")
                return True
            except psycopg.errors.CheckViolation:
                return False  # rows of this range reached the default partition since the plan
            except psycopg.errors.DuplicateTable:
                return True

        if _retrying(self.conn, self.policy, f"create {step.partition}", create):
            return "created with the parent's indexes"
        return self._move_default_rows(step)

    # move rows out of the default partition ---------------------------------------------------
    def _columns(self, table: str) -> list[str]:
        """Stored columns (generated ones are recomputed on insert)."""
        return [r[0] for r in self.conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
            " AND attgenerated = '' ORDER BY attnum", (table,)).fetchall()]

    def _move_default_rows(self, step: Step) -> str:
        exists, attached = _exists(self.conn, step.partition)
        if attached:
            return "already attached"
        default = _default_of(self.conn, step.table)
        if default is None:
            raise OperationFailed(f"{step.table} has no default partition to move rows from")
        part, parent, dflt = _ident(step.partition), _ident(step.table), _ident(default)
        lo, hi = _bounds(step)
        names = self._columns(step.table)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        dcols = sql.SQL(", ").join(sql.Identifier("d", n) for n in names)
        if not exists:
            self.conn.execute(sql.SQL(
                "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED"
                " INCLUDING INDEXES INCLUDING STORAGE INCLUDING COMPRESSION)" + partition_with(step.table)).format(
                    part, parent))
        check = step.partition + "_range"
        if self.conn.execute("SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
                             (check, step.partition)).fetchone() is None:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (created_at IS NOT NULL AND "
                                      "created_at >= {} AND created_at < {})").format(part, _ident(check), lo, hi))
        same = sql.SQL("s.company_id = d.company_id AND s.id = d.id AND s.created_at = d.created_at")
        in_range = sql.SQL("d.created_at >= {} AND d.created_at < {}").format(lo, hi)
        copy = sql.SQL("INSERT INTO {part} ({cols}) SELECT {dcols} FROM {dflt} d WHERE {in_range} AND NOT EXISTS "
                       "(SELECT 1 FROM {part} s WHERE {same}) LIMIT {n}").format(
            part=part, cols=cols, dcols=dcols, dflt=dflt, in_range=in_range, same=same,
            n=sql.Literal(self.policy.move_batch_rows))
        copied = 0
        while True:  # batches, each its own short transaction; the rows stay visible in the default
            with self.conn.transaction():
                n = self.conn.execute(copy).rowcount
            copied += max(n, 0)
            self.progress(step, f"copied {copied}")
            if n <= 0:
                break
        self.progress(step, "copied")

        def swap() -> tuple[int, int]:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(parent))
                self.conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(dflt))
                gone = self.conn.execute(sql.SQL(
                    "DELETE FROM {part} s WHERE NOT EXISTS (SELECT 1 FROM {dflt} d WHERE {same})").format(
                    part=part, dflt=dflt, same=same)).rowcount
                late = self.conn.execute(sql.SQL(
                    "INSERT INTO {part} ({cols}) SELECT {dcols} FROM {dflt} d WHERE {in_range} AND NOT EXISTS "
                    "(SELECT 1 FROM {part} s WHERE {same})").format(
                    part=part, cols=cols, dcols=dcols, dflt=dflt, in_range=in_range, same=same)).rowcount
                moved = self.conn.execute(sql.SQL("DELETE FROM {} d WHERE {}").format(dflt, in_range)).rowcount
                self.conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    parent, part, lo, hi))
                _audit(self.conn, "partition.move_default_rows", step, "default", "attached",
                       rows=moved, copied_in_batches=copied, reconciled_removed=gone, reconciled_added=late,
                       batch_rows=self.policy.move_batch_rows, default_partition=default)
                return moved, late

        moved, late = _retrying(self.conn, self.policy, f"attach {step.partition}", swap)
        return f"moved {plural(moved, 'row')} out of {default} ({late} arrived during the copy) and attached"

    # detach -----------------------------------------------------------------------------------
    def _pending(self, name: str) -> bool:
        row = self.conn.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass",
                                (name,)).fetchone()
        return bool(row and row[0])

    def _finalize_detach(self, step: Step) -> str:
        return self._detach(step)

    def _detach(self, step: Step) -> str:
        exists, attached = _exists(self.conn, step.partition)
        if not exists:
            return "already gone"
        if not attached:
            return "already detached"
        part, parent = _ident(step.partition), _ident(step.table)
        if self._pending(step.partition):
            method, stmt = "finalize", sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(parent, part)
        elif step.table in KEYWORD_STATISTICS:
            method, stmt = "plain (keyword statistics leave with the rows)", sql.SQL(
                "ALTER TABLE {} DETACH PARTITION {}").format(parent, part)
        elif _default_of(self.conn, step.table) is None:
            method, stmt = "concurrently", sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                parent, part)
        else:
            # PostgreSQL refuses CONCURRENTLY when the table has a default partition
            method, stmt = "plain (the table has a default partition)", sql.SQL(
                "ALTER TABLE {} DETACH PARTITION {}").format(parent, part)

        finalize = sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(parent, part)

        def run() -> None:
            if self._pending(step.partition):
                # a concurrent detach cut short (lock timeout, crash) is "detach pending": finalize it
                self.conn.execute(finalize)
            elif step.table in KEYWORD_STATISTICS:
                # the rows' BM25 statistics are subtracted in the detach's own transaction; SHARE keeps
                # writers out of the partition (searches read on) while they are counted
                with self.conn.transaction():
                    self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(part))
                    self.conn.execute("SELECT bm25_apply(%s::regclass, -1)", (step.partition,))
                    self.conn.execute(stmt)
            else:  # autocommit: CONCURRENTLY cannot run inside a transaction
                self.conn.execute(stmt)

        _retrying(self.conn, self.policy, f"detach {step.partition}", run)
        _audit(self.conn, "partition.detach", step, "attached", "detached", method=method)
        return f"detached ({method})"

    # archive ----------------------------------------------------------------------------------
    def paths(self, step: Step) -> tuple[Path, Path]:
        dump = self.archive_dir / step.table / f"{step.partition}.dump"
        return dump, dump.with_name(dump.name + ".sha256")

    def _archive(self, step: Step) -> str:
        exists, attached = _exists(self.conn, step.partition)
        dump, digest_file = self.paths(step)
        if not exists:
            return "table already dropped"
        if attached:
            raise OperationFailed(f"{step.partition} is still attached: detach it before archiving")
        rows = self._count(step.partition)
        if dump.exists() and digest_file.exists():
            with contextlib.suppress(OperationFailed):  # a torn or stale dump is made again below
                verify_archive(dump, step.partition, rows)
                return f"kept the verified archive {dump.name}"
        dump.parent.mkdir(parents=True, exist_ok=True)
        partial = dump.with_name(dump.name + ".partial")
        with partial.open("wb") as out:
            proc = subprocess.run(pg_command("pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                                             "--table", f"public.{step.partition}", "--dbname", self.url),
                                  stdout=out, stderr=subprocess.PIPE, check=False)
            out.flush()
            os.fsync(out.fileno())
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise OperationFailed(f"pg_dump of {step.partition} failed: "
                                  f"{proc.stderr.decode(errors='replace').strip()[:300]}")
        digest = sha256_file(partial)
        partial.replace(dump)
        digest_file.write_text(f"{digest}  {dump.name}\n")
        size = dump.stat().st_size
        _audit(self.conn, "partition.archive", step, "detached", "archived", path=dump.name, bytes=size,
               sha256=digest, rows=rows)
        return f"dumped {plural(rows, 'row')}, {format_bytes(size)}, sha256 {digest[:12]}…"

    def _count(self, name: str) -> int:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(name))).fetchone()
        return int(row[0]) if row else 0

    # drop -------------------------------------------------------------------------------------
    def _drop(self, step: Step) -> str:
        exists, attached = _exists(self.conn, step.partition)
        if not exists:
            return "already dropped"
        if attached:
            raise OperationFailed(f"refusing to drop {step.partition}: it is still attached")
        tp = self.policy.tables[step.table]  # type: ignore[index]
        details: dict[str, Any] = {"archived": tp.archive}
        if tp.archive:
            dump, _ = self.paths(step)
            details.update(verify_archive(dump, step.partition, self._count(step.partition)))
        part = _ident(step.partition)

        def drop() -> None:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("DROP TABLE {}").format(part))
                _audit(self.conn, "partition.drop", step, "archived" if tp.archive else "detached", "dropped",
                       **details)

        _retrying(self.conn, self.policy, f"drop {step.partition}", drop)
        return "dropped" + (" (archive verified)" if tp.archive else "")




def verify_archive(dump: Path, table: str, expected_rows: int | None = None) -> dict[str, Any]:
    """Check a partition's dump before its table is dropped: the digest recorded next to it,
    ``pg_restore --list`` reading its table of contents, and (given ``expected_rows``) its rows.
    Raises OperationFailed when any check fails."""
    digest_file = dump.with_name(dump.name + ".sha256")
    if not dump.is_file() or not digest_file.is_file():
        raise OperationFailed(f"archive {dump.name} or its .sha256 is missing: not dropping {table}")
    recorded = digest_file.read_text().split()[0] if digest_file.read_text().split() else ""
    actual = sha256_file(dump)
    if actual != recorded:
        raise OperationFailed(f"archive {dump.name}: sha256 {actual[:12]}… does not match the recorded "
                              f"{recorded[:12]}…: not dropping {table}")
    with dump.open("rb") as f:
        listing = subprocess.run(pg_command("pg_restore", "--list"), stdin=f, capture_output=True, check=False)
    toc = listing.stdout.decode(errors="replace")
    if listing.returncode != 0 or f"TABLE DATA public {table} " not in toc:
        raise OperationFailed(f"archive {dump.name}: pg_restore --list does not show the data of {table}: "
                              f"{listing.stderr.decode(errors='replace').strip()[:200]}")
    result: dict[str, Any] = {"sha256": actual, "bytes": dump.stat().st_size, "pg_restore_list": "ok"}
    if expected_rows is not None:
        rows = _dumped_rows(dump)
        if rows != expected_rows:
            raise OperationFailed(f"archive {dump.name} holds {plural(rows, 'row')} but {table} has {expected_rows}: "
                                  "not dropping")
        result["rows"] = rows
    return result


def _dumped_rows(dump: Path) -> int:
    """Rows in the dump's COPY data (one line per row in COPY text format)."""
    with dump.open("rb") as f:
        proc = subprocess.Popen(pg_command("pg_restore", "--data-only", "--file", "-"), stdin=f,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        rows, inside = 0, False
        for line in proc.stdout:
            if inside:
                if line == b"\\.\n":
                    inside = False
                else:
                    rows += 1
            elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
                inside = True
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise OperationFailed(f"pg_restore could not read {dump.name}: {err.decode(errors='replace')[:200]}")
    return rows
