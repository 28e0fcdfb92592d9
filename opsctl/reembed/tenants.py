"""A re-embed carries the companies' own HNSW indexes (``opsctl index tenants``) across its switch.

Before the switch, every company with its own index gets a copy of it on ``embedding_next``: the
same partial HNSW (``opsctl.vindex.tenants_pg.index_definition``), built online by
``opsctl.vindex.online.build_partitioned`` under a name of its own (``chunks_c<N>_s<space>_next_idx``,
pieces ``<partition>_c<N>_s<space>_next_idx``), so an interrupted build is completed by the next run.
The switch's transaction (chunks held ACCESS EXCLUSIVE) drops the old own indexes and renames the
copies, parent and pieces, to the canonical names: right after the switch every large company
searches its own index on the new vectors.

The copies and ``opsctl index tenants`` exclude each other: the copy step takes the tenant runs'
advisory lock (``TENANT_INDEX_LOCK``; held: the step waits for a later run) and reads the own
indexes under it; a tenant run decides under the same lock, and from the carry to the switch it
refuses (``opsctl.reembed.plan.tenant_gate``; before, during the hours of a backfill, it goes on).
The switch holds the lock for its transaction: a run that began before the carry and is still
going (the carry found nothing to copy, so it never waited) makes the switch wait, and an own
index that run built makes the switch give up and the runner copy it. So the set the carry
copied is the set the switch finds.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import sql

from core.errors import OperationFailed, OpsError
from core.search.tenantindex import INDEX_PREFIX, INDEX_SUFFIX, tenant_index_name
from opsctl.audit import record
from opsctl.reembed.plan import to_carry
from opsctl.vindex.online import ProgressFn, build_partitioned
from opsctl.vindex.tenants_pg import (
    TENANT_INDEX_LOCK,
    drop_leftover_pieces,
    index_definition,
    own_indexes,
    piece_name,
)

if TYPE_CHECKING:
    from core.config import Settings
    from core.spaces.store import Space

COPIES_SQL = """
SELECT ic.relname, i.indisvalid FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = 'chunks'::regclass AND ic.relname LIKE %s
"""
# The pieces of a partitioned index, with their partitions.
PIECES_SQL = """
SELECT pc.relname, t.relname FROM pg_inherits ii JOIN pg_class pc ON pc.oid = ii.inhrelid
JOIN pg_index x ON x.indexrelid = ii.inhrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE ii.inhparent = to_regclass(%s)
"""


class Waiting(OpsError):
    """The step cannot be taken now (another run holds what it needs): a later run takes it."""


def exclude_tenant_runs(conn: Any) -> None:
    """In the caller's transaction: hold the tenant runs' lock until it ends; ``Waiting`` while a run holds it."""
    got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", TENANT_INDEX_LOCK).fetchone()
    if not (got and got[0]):
        raise Waiting("a tenant index run (`opsctl index tenants`) that began before the carry is still going: "
                      "the switch waits for it")


def copy_suffix(space: Space) -> str:
    return f"_s{space.id}_next_idx"


def copy_name(company_id: int, space: Space) -> str:
    """The parent of the company's own index copied onto ``embedding_next`` during the re-embed into ``space``."""
    return f"{INDEX_PREFIX}{int(company_id)}{copy_suffix(space)}"


def copies(conn: Any, space: Space) -> dict[int, bool]:
    """The copies the catalog holds: company -> valid (every partition has its piece)."""
    suffix = copy_suffix(space)
    pattern = (INDEX_PREFIX + "%" + suffix).replace("_", r"\_")
    found: dict[int, bool] = {}
    for name, valid in conn.execute(COPIES_SQL, (pattern,)).fetchall():
        middle = name[len(INDEX_PREFIX):-len(suffix)]
        if middle.isdigit():
            found[int(middle)] = bool(valid)
    return found


def pending(conn: Any, space: Space) -> tuple[int, ...]:
    """The companies whose own index has no complete copy yet (two catalog reads)."""
    return to_carry(own_indexes(conn), copies(conn, space))


def carry(conn: Any, settings: Settings, space: Space, actor: str, progress: ProgressFn | None = None) -> list[int]:
    """Copy every own index without a complete copy onto ``embedding_next`` (online), an audit row
    each; returns the companies. ``Waiting`` while a tenant index run holds its lock."""
    from opsctl.context import database_url

    got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", TENANT_INDEX_LOCK).fetchone()
    if not (got and got[0]):
        raise Waiting("a tenant index run (`opsctl index tenants`) is building: the own indexes are copied "
                      "onto the new vectors after it")
    try:
        companies = list(pending(conn, space))  # read under the lock: the set a tenant run can no longer change
        for company in companies:
            started = time.monotonic()
            built = build_partitioned(
                conn, database_url(settings), copy_name(company, space),
                index_definition(company, settings.hnsw_m, settings.hnsw_ef_construction, "embedding_next"),
                partial(piece_name, company_id=company, suffix=copy_suffix(space)), _labelled(progress, company))
            record(conn, "reembed.tenant_index", target=tenant_index_name(company),
                   from_state="own index on the old vectors", to_state="copy on the new vectors",
                   reason=f"the re-embed into {space.spec.label()} carries the company's own index across", actor=actor,
                   details={"space": space.id, "company": company, "copy": copy_name(company, space),
                            "partitions_built": built, "seconds": round(time.monotonic() - started, 3)})
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", TENANT_INDEX_LOCK)
    return companies


def _labelled(progress: ProgressFn | None, company: int) -> ProgressFn | None:
    """``progress`` with the company named next to the partition."""
    if progress is None:
        return None
    report = progress

    def labelled(partition: str, phase: str, done: int, total: int) -> None:
        report(f"{partition} (company {company})", phase, done, total)

    return labelled


def promote(conn: Any, space: Space) -> list[int]:
    """In the switch's transaction (chunks locked): drop the own indexes on the old vectors, rename
    their copies (parent and pieces) to the canonical names; returns the companies. OpsError, and
    nothing changed, when an own index has no complete copy (the runner copies it first)."""
    own = own_indexes(conn)
    found = copies(conn, space)
    left = to_carry(own, found)
    if left:
        raise OpsError(f"companies {', '.join(map(str, left))} have their own index without a complete copy on the "
                       f"new vectors: copying first")
    for company in sorted(own):
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(tenant_index_name(company))))
        drop_leftover_pieces(conn, company, INDEX_SUFFIX)  # they hold the names the copy's pieces take
    for company in sorted(found):
        copy = copy_name(company, space)
        if company not in own:  # an own index dropped by hand since: its copy goes too
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(copy)))
            drop_leftover_pieces(conn, company, copy_suffix(space))
            continue
        canonical = tenant_index_name(company)
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(copy), sql.Identifier(canonical)))
        for piece, partition in conn.execute(PIECES_SQL, (canonical,)).fetchall():
            try:
                name = piece_name(partition, company)
            except OperationFailed:  # a partition name too long for the canonical piece name: keep its own
                continue
            if piece != name:
                conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(piece), sql.Identifier(name)))
    return sorted(own)

