"""A partitioned HNSW index on ``chunks`` built online: the one mechanism behind a company's own
index (``opsctl.vindex.tenants_pg``) and a re-embed's index over ``embedding_next`` (``opsctl.reembed.pg``).

The parent is created ``ON ONLY chunks`` (no rows read: it stays invalid), each partition's piece
with ``CREATE INDEX CONCURRENTLY`` on a connection of its own (its progress polled, ``run_with_progress``),
then attached; the parent turns valid when every partition has its piece, and from then on a
partition created or attached later gets its piece from PostgreSQL itself. An interrupted build
leaves an invalid parent and maybe an invalid piece: the next build completes it (it waits for a
killed runner's piece still building in the server, then drops an invalid piece and builds it
again). The short-locking statements run under ``lock_timeout``, retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from core.errors import OperationFailed
from opsctl.lockretry import with_lock_retries

DDL_LOCK_TIMEOUT_MS = 2000
DDL_RETRIES = 14  # 15 tries

PARTITIONS_SQL = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'chunks'::regclass ORDER BY c.relname
"""

# The partitions whose piece of the parent index is attached.
ATTACHED_SQL = """
SELECT t.relname FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid
JOIN pg_class t ON t.oid = x.indrelid WHERE ii.inhparent = to_regclass(%s)
"""

# An index by name: (valid, attached to a parent).
PIECE_SQL = """
SELECT x.indisvalid, EXISTS (SELECT 1 FROM pg_inherits ii WHERE ii.inhrelid = x.indexrelid)
FROM pg_index x WHERE x.indexrelid = to_regclass(%s)
"""

# Index builds on a partition by other sessions (one whose client was killed goes on in the server).
OTHER_BUILDS_SQL = """
SELECT count(*) FROM pg_stat_progress_create_index WHERE relid = to_regclass(%s) AND pid <> pg_backend_pid()
"""
OTHER_BUILD_POLL_SECONDS = 0.5

ProgressFn = Callable[[str, str, int, int], None]  # partition, phase, done, total


def ddl(conn: psycopg.Connection[Any], statement: sql.Composed) -> None:
    """One short-locking DDL statement under ``lock_timeout``, retried with backoff while the lock is busy."""
    with_lock_retries(conn, statement.as_string(conn), lambda: conn.execute(statement),
                      timeout_ms=DDL_LOCK_TIMEOUT_MS, retries=DDL_RETRIES, hint="long transactions on chunks?")


def index_valid(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(PIECE_SQL, (name,)).fetchone()
    return bool(row and row[0])


def wait_for_other_builds(conn: psycopg.Connection[Any], partition: str,
                          sleep: Callable[[float], None] = time.sleep) -> None:
    """Until no other session builds an index on ``partition``. Two concurrent builds on one table
    deadlock (each waits for the other's transaction), and a killed runner's build goes on in its
    server process: the next run waits for it, then finds its piece (complete, or invalid: rebuilt)."""
    while True:
        row = conn.execute(OTHER_BUILDS_SQL, (partition,)).fetchone()
        if not (row and row[0]):
            return
        sleep(OTHER_BUILD_POLL_SECONDS)


def build_partitioned(conn: psycopg.Connection[Any], url: str, parent: str, definition: sql.Composable,
                      piece_name: Callable[[str], str], progress: ProgressFn | None = None) -> list[str]:
    """Create (or complete) the index ``parent`` on ``chunks`` (``definition``: ``USING hnsw (…) WITH
    (…) [WHERE …]``) online; returns the partitions whose piece was built. ``conn``: autocommit;
    ``piece_name``: the partition's piece's name."""
    from opsctl.vindex.pg import run_with_progress

    ddl(conn, sql.SQL("CREATE INDEX IF NOT EXISTS {} ON ONLY chunks {}").format(sql.Identifier(parent), definition))
    built: list[str] = []
    for _ in range(3):  # a partition created meanwhile gets its piece from PostgreSQL; one missing is built here
        attached = {r[0] for r in conn.execute(ATTACHED_SQL, (parent,)).fetchall()}
        missing = [r[0] for r in conn.execute(PARTITIONS_SQL).fetchall() if r[0] not in attached]
        if not missing:
            break
        for partition in missing:
            piece = piece_name(partition)
            wait_for_other_builds(conn, partition)
            found = conn.execute(PIECE_SQL, (piece,)).fetchone()
            if found is not None and not found[0]:  # an interrupted concurrent build
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(piece)))
                found = None
            if found is None:
                statement = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} {}").format(
                    sql.Identifier(piece), sql.Identifier(partition), definition)
                run_with_progress(url, statement, f"building {piece}",
                                  None if progress is None else partial(progress, partition))
                built.append(partition)
            if found is None or not found[1]:
                ddl(conn, sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                    sql.Identifier(parent), sql.Identifier(piece)))
    if not index_valid(conn, parent):
        raise OperationFailed(f"{parent} is still incomplete after building {len(built)} partitions; run again")
    return built

