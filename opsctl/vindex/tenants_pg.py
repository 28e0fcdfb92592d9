"""The PostgreSQL side of per-company HNSW indexes: chunk counts, the own indexes the catalog holds,
an online build (partitioned index, every partition's piece built CONCURRENTLY) and a drop.

A company's index is a partitioned partial index on ``chunks`` (``core.search.tenantindex``). It is
built without blocking reads or writes: the parent is created ``ON ONLY chunks`` (no rows read: it
stays invalid), each partition's piece with ``CREATE INDEX CONCURRENTLY … WHERE company_id = N``,
then attached; the parent turns valid when every partition has its piece, and from then on a
partition created or attached later gets its piece from PostgreSQL itself (rotation needs nothing
more). Until it is valid the core keeps searching the company as before (exactly, or through
the shared graph), so a search during the move still answers. An interrupted build leaves an
invalid parent and maybe an invalid piece: the next run completes it (the piece is dropped and rebuilt).

Dropping is ``DROP INDEX`` of the parent (PostgreSQL cannot drop a partitioned index
concurrently): it waits for the searches running on ``chunks`` and holds its lock for an instant.
``lock_timeout`` bounds the wait so that queries queued behind it are not held up; it is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from core.db import LOCK_NAMESPACE
from core.errors import OperationFailed
from core.search.tenantindex import INDEX_PREFIX, INDEX_SUFFIX, tenant_index_name, tenant_of_index
from opsctl.lockretry import with_lock_retries
from opsctl.vindex.tenants import OwnIndex

TENANT_INDEX_LOCK = (LOCK_NAMESPACE, 3)
DDL_LOCK_TIMEOUT_MS = 2000
DDL_RETRIES = 14  # 15 tries
MAX_NAME = 63  # PostgreSQL's identifier length

COMPANY_ROWS_SQL = "SELECT company_id, count(*) FROM chunks GROUP BY company_id"

OWN_INDEXES_SQL = """
SELECT ic.relname, i.indisvalid FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = 'chunks'::regclass AND ic.relname LIKE %s
"""

PARTITIONS_SQL = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'chunks'::regclass ORDER BY c.relname
"""

# The partitions whose piece of the parent index is attached.
ATTACHED_SQL = """
SELECT t.relname FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid
JOIN pg_class t ON t.oid = x.indrelid WHERE ii.inhparent = to_regclass(%s)
"""

# A piece by name on a partition: (valid, attached to a parent).
PIECE_SQL = """
SELECT x.indisvalid, EXISTS (SELECT 1 FROM pg_inherits ii WHERE ii.inhrelid = x.indexrelid)
FROM pg_index x WHERE x.indexrelid = to_regclass(%s)
"""

ProgressFn = Callable[[str, str, int, int], None]  # partition, phase, done, total


def company_rows(conn: psycopg.Connection[Any]) -> dict[int, int]:
    """Chunks per company (one scan of ``chunks``)."""
    return {int(r[0]): int(r[1]) for r in conn.execute(COMPANY_ROWS_SQL).fetchall()}


def own_indexes(conn: psycopg.Connection[Any]) -> dict[int, OwnIndex]:
    pattern = INDEX_PREFIX.replace("_", r"\_") + "%" + INDEX_SUFFIX.replace("_", r"\_")
    found: dict[int, OwnIndex] = {}
    for name, valid in conn.execute(OWN_INDEXES_SQL, (pattern,)).fetchall():
        company = tenant_of_index(name)
        if company is not None:
            found[company] = OwnIndex(company, bool(valid))
    return found


def piece_name(partition: str, company_id: int) -> str:
    name = f"{partition}_c{int(company_id)}{INDEX_SUFFIX}"
    if len(name) > MAX_NAME:
        raise OperationFailed(f"index name {name} is longer than {MAX_NAME} characters")
    return name


def _ddl(conn: psycopg.Connection[Any], statement: sql.Composed) -> None:
    """One short-locking DDL statement under ``lock_timeout``, retried while the lock is busy."""
    with_lock_retries(conn, statement.as_string(conn), lambda: conn.execute(statement),
                      timeout_ms=DDL_LOCK_TIMEOUT_MS, retries=DDL_RETRIES, hint="long transactions on chunks?")


def _index_definition(company_id: int, m: int, ef_construction: int) -> sql.Composed:
    return sql.SQL("USING hnsw (embedding vector_cosine_ops) WITH (m = {}, ef_construction = {}) "
                   "WHERE company_id = {}").format(sql.Literal(int(m)), sql.Literal(int(ef_construction)),
                                                   sql.Literal(int(company_id)))


def build(conn: psycopg.Connection[Any], url: str, company_id: int, m: int, ef_construction: int,
          progress: ProgressFn | None = None) -> list[str]:
    """Create (or complete) the company's own index online; returns the partitions built. ``conn``:
    autocommit; each piece is built on a connection of its own (``run_with_progress``)."""
    from opsctl.vindex.pg import run_with_progress

    parent = tenant_index_name(company_id)
    definition = _index_definition(company_id, m, ef_construction)
    _ddl(conn, sql.SQL("CREATE INDEX IF NOT EXISTS {} ON ONLY chunks {}").format(sql.Identifier(parent), definition))
    built: list[str] = []
    for _ in range(3):  # a partition created meanwhile gets its piece from PostgreSQL; one missing is built here
        attached = {r[0] for r in conn.execute(ATTACHED_SQL, (parent,)).fetchall()}
        missing = [r[0] for r in conn.execute(PARTITIONS_SQL).fetchall() if r[0] not in attached]
        if not missing:
            break
        for partition in missing:
            piece = piece_name(partition, company_id)
            found = conn.execute(PIECE_SQL, (piece,)).fetchone()
            if found is not None and not found[0]:  # an interrupted concurrent build
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(piece)))
                found = None
            if found is None:
                statement = sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} {}").format(
                    sql.Identifier(piece), sql.Identifier(partition), definition)
                report = None if progress is None else _for_partition(progress, partition)
                run_with_progress(url, statement, f"building {piece}", report)
                built.append(partition)
            if found is None or not found[1]:
                _ddl(conn, sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                    sql.Identifier(parent), sql.Identifier(piece)))
    valid = conn.execute(PIECE_SQL, (parent,)).fetchone()
    if valid is None or not valid[0]:
        raise OperationFailed(f"{parent} is still incomplete after building {len(built)} partitions; run again")
    return built


def _for_partition(progress: ProgressFn, partition: str) -> Callable[[str, int, int], None]:
    def report(phase: str, done: int, total: int) -> None:
        progress(partition, phase, done, total)

    return report


def drop(conn: psycopg.Connection[Any], company_id: int) -> None:
    """Drop the company's own index (every partition's piece with it); searches use the shared graph again."""
    _ddl(conn, sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(tenant_index_name(company_id))))
