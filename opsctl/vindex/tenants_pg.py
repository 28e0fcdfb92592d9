"""The PostgreSQL side of per-company HNSW indexes: chunk counts, the own indexes the catalog holds,
an online build and a drop.

A company's index is a partitioned partial index on ``chunks`` (``core.search.tenantindex``),
``… WHERE company_id = N``, built without blocking reads or writes by ``opsctl.vindex.online``.
Until it is valid the core keeps searching the company as before (exactly, or through the shared
graph), so a search during the move still answers.

Dropping is ``DROP INDEX`` of the parent (PostgreSQL cannot drop a partitioned index
concurrently): it waits for the searches running on ``chunks`` and holds its lock for an instant.
``lock_timeout`` bounds the wait so that queries queued behind it are not held up; it is retried.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from core.db import LOCK_NAMESPACE
from core.errors import OperationFailed
from core.search.tenantindex import INDEX_PREFIX, INDEX_SUFFIX, tenant_index_name, tenant_of_index
from opsctl.vindex.online import PARTITIONS_SQL, ProgressFn, build_partitioned, ddl
from opsctl.vindex.tenants import OwnIndex

TENANT_INDEX_LOCK = (LOCK_NAMESPACE, 3)
MAX_NAME = 63  # PostgreSQL's identifier length

INDEXES_NAMED_SQL = "SELECT relname FROM pg_class WHERE relkind = 'i' AND relname = ANY(%s)"

COMPANY_ROWS_SQL = "SELECT company_id, count(*) FROM chunks GROUP BY company_id"

OWN_INDEXES_SQL = """
SELECT ic.relname, i.indisvalid FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = 'chunks'::regclass AND ic.relname LIKE %s
"""


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


def piece_name(partition: str, company_id: int, suffix: str = INDEX_SUFFIX) -> str:
    """A partition's piece of a company's own index (``suffix``: of a re-embed's copy, ``opsctl.reembed.tenants``)."""
    name = f"{partition}_c{int(company_id)}{suffix}"
    if len(name) > MAX_NAME:
        raise OperationFailed(f"index name {name} is longer than {MAX_NAME} characters")
    return name


def index_definition(company_id: int, m: int, ef_construction: int, column: str = "embedding") -> sql.Composed:
    """``USING hnsw (column …) WITH (…) WHERE company_id = N``: a company's own index (on ``embedding_next``:
    a re-embed's copy of it)."""
    return sql.SQL("USING hnsw ({} vector_cosine_ops) WITH (m = {}, ef_construction = {}) "
                   "WHERE company_id = {}").format(sql.Identifier(column), sql.Literal(int(m)),
                                                   sql.Literal(int(ef_construction)), sql.Literal(int(company_id)))


def build(conn: psycopg.Connection[Any], url: str, company_id: int, m: int, ef_construction: int,
          progress: ProgressFn | None = None) -> list[str]:
    """Create (or complete) the company's own index online; returns the partitions built (``conn``: autocommit)."""
    return build_partitioned(conn, url, tenant_index_name(company_id),
                             index_definition(company_id, m, ef_construction),
                             lambda partition: piece_name(partition, company_id), progress)


def drop(conn: psycopg.Connection[Any], company_id: int) -> None:
    """Drop the company's own index (every partition's piece with it, and the pieces an interrupted
    build left unattached); searches use the shared graph again (``conn``: autocommit)."""
    ddl(conn, sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(tenant_index_name(company_id))))
    drop_leftover_pieces(conn, company_id, concurrently=True)


def drop_leftover_pieces(conn: psycopg.Connection[Any], company_id: int, suffix: str = INDEX_SUFFIX,
                         concurrently: bool = False) -> list[str]:
    """After the drop of a company's partitioned index (own, or a re-embed's copy: ``suffix``): drop
    the pieces an interrupted build left unattached, which that drop does not reach (a killed run's
    ``CREATE INDEX CONCURRENTLY`` finishes in the server, and every write to the partition keeps
    maintaining its graph). ``concurrently``: without blocking writes (``conn`` autocommit), else
    in the caller's transaction. Returns the pieces dropped."""
    names = []
    for (partition,) in conn.execute(PARTITIONS_SQL).fetchall():
        try:
            names.append(piece_name(partition, company_id, suffix))
        except OperationFailed:  # a name too long: no build could have made it
            continue
    found = [name for (name,) in conn.execute(INDEXES_NAMED_SQL, (names,)).fetchall()]
    for name in found:
        if concurrently:
            ddl(conn, sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    return found
