"""The re-embed's database side: each step of ``opsctl.reembed.plan`` as statements.

Every function takes an autocommit connection (with ``register_vector``) and opens its own
transactions: the backfill commits each batch with its cursor, so a kill -9 loses at most one
batch's embedding work and the next run resumes after the cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core.config import Settings
from core.db import LOCK_NAMESPACE
from core.errors import OpsError
from core.spaces.spec import SpaceSpec
from core.spaces.store import Space, active, building, column_dims
from opsctl.audit import record
from opsctl.reembed.plan import Next, State, next_step
from opsctl.reembed.tenants import Waiting, exclude_tenant_runs, pending, promote
from opsctl.vindex.online import ProgressFn, build_partitioned, ddl, index_valid

if TYPE_CHECKING:
    from core.embed import Embedder

log = logging.getLogger(__name__)

RUNNER_LOCK = (LOCK_NAMESPACE, 4)  # one re-embedder at a time (session lock, released by a kill); 3: tenant indexes
SWITCH_LOCK_TIMEOUT = "30s"  # how long the switch waits for ingest batches and searches to let go

START_SQL = """
INSERT INTO vector_spaces (embedder, name, dim, options, state, chunks_total, started_by)
VALUES (%s, %s, %s, %s, 'building', (SELECT count(*) FROM chunks), %s) RETURNING id
"""
ABORT_SQL = "UPDATE vector_spaces SET state = 'aborted', finished_at = now(), updated_at = now() WHERE id = %s"
BACKFILL_SQL = """
SELECT company_id, id, created_at, body FROM chunks
WHERE (company_id, id) > (%s, %s) ORDER BY company_id, id LIMIT %s
"""
# The chunks without a new vector once the backfill has passed: read through the partial index
# ``missing_index`` (built after the backfill, so it holds only the chunks written or attached since),
# never by a scan of chunks. The database keeps it exact: re-ingest, deletes, partitions created or
# attached during the run (ATTACH PARTITION builds their piece) all show in it.
MISSING_ROWS_SQL = ("SELECT company_id, id, created_at, body FROM chunks WHERE embedding_next IS NULL"
                    " ORDER BY company_id, id LIMIT %s")
MISSING_COUNT_SQL = "SELECT count(*) FROM chunks WHERE embedding_next IS NULL"
MISSING_INDEX_DEFINITION = sql.SQL("USING btree (company_id, id) WHERE embedding_next IS NULL")
WRITE_SQL = """
UPDATE chunks c SET embedding_next = v.e
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::vector[]) AS v(company_id, id, created_at, e)
WHERE c.company_id = v.company_id AND c.id = v.id AND c.created_at = v.created_at AND c.embedding_next IS NULL
"""
ADVANCE_SQL = """
UPDATE vector_spaces SET cursor = coalesce(%s, cursor), chunks_done = chunks_done + %s,
    chunks_total = chunks_total + %s, updated_at = now()
WHERE id = %s AND state = 'building'
"""
LOCK_SPACES_SQL = "SELECT id FROM vector_spaces WHERE state IN ('active', 'building') ORDER BY id FOR UPDATE"
SWITCH_DDL = (
    "ALTER TABLE chunks ALTER COLUMN embedding DROP NOT NULL",
    "ALTER TABLE chunks RENAME COLUMN embedding TO embedding_retired",
    "ALTER TABLE chunks RENAME COLUMN embedding_next TO embedding",
    "ALTER TABLE chunks ALTER COLUMN embedding SET NOT NULL",
)
RETIRE_SQL = "UPDATE vector_spaces SET state = 'retired', finished_at = now(), updated_at = now() WHERE id = %s"
ACTIVATE_SQL = ("UPDATE vector_spaces SET state = 'active', activated_at = now(), updated_at = now(), cursor = NULL"
                " WHERE id = %s")
# rows locked in id order (as the ingest worker's bump), so the two never deadlock
BUMP_ALL_SQL = ("UPDATE companies SET data_version = data_version + 1"
                " WHERE id IN (SELECT id FROM companies ORDER BY id FOR UPDATE)")


class Aborted(OpsError):
    """The re-embed was aborted (or finished) while this runner worked on it."""


def parent_index(space: Space) -> str:
    return f"chunks_embedding_s{space.id}_hnsw_idx"


def _leaf_name(leaf: str, suffix: str) -> str:
    return leaf[: 63 - len(suffix)] + suffix


def leaf_index(leaf: str, space: Space) -> str:
    return _leaf_name(leaf, f"_emb_s{space.id}_idx")


def missing_index(space: Space) -> str:
    return f"chunks_embedding_s{space.id}_missing_idx"


def missing_leaf_index(leaf: str, space: Space) -> str:
    return _leaf_name(leaf, f"_nul_s{space.id}_idx")


def read_state(conn: Any) -> tuple[State, Space | None]:
    """The state ``plan.next_step`` decides from, and the space being built (if any): catalog reads,
    and once the indexes are built, one count over the partial index of the chunks still missing."""
    space = building(conn)
    dims = column_dims(conn)
    backfilled = space is not None and space.cursor == "end"
    valid = (space is not None and index_valid(conn, missing_index(space))
             and index_valid(conn, parent_index(space)))
    missing = None
    carry: tuple[int, ...] = ()
    if space is not None and "embedding_next" in dims and backfilled and valid:
        missing = int(conn.execute(MISSING_COUNT_SQL).fetchone()[0])
        carry = pending(conn, space)
    state = State(building=space is not None, next_column="embedding_next" in dims,
                  retired_column="embedding_retired" in dims, backfilled=backfilled, index_valid=valid,
                  missing=missing, carry=carry)
    return state, space


def read_step(conn: Any) -> tuple[Next, Space | None]:
    """The step the runner takes next, as the database says now, and the space being built (if any)."""
    state, space = read_state(conn)
    return next_step(state), space


def start(conn: Any, spec: SpaceSpec, actor: str) -> Space:
    """Record ``spec`` as the space being built (audited); OpsError if one is, or it is the active one."""
    with conn.transaction():
        current = active(conn)
        if current.spec.same_space(spec):
            raise OpsError(f"{spec.label()} is the active vector space already")
        other = building(conn)
        if other is not None:
            raise OpsError(f"a re-embed into {other.spec.label()} is in progress (space {other.id}): "
                           f"wait for it, or `opsctl index reembed --abort --apply`")
        conn.execute(START_SQL, (spec.embedder, spec.name, spec.dim, Jsonb(spec.options), actor))
        space = building(conn)
        assert space is not None
        record(conn, "reembed.start", target=f"vector space {space.id}", from_state=current.spec.label(),
               to_state=spec.label(), reason=f"{space.chunks_total} chunks to embed", actor=actor,
               details={"space": space.id, "embedder": spec.embedder, "options": spec.options})
    return space


def abort(conn: Any, actor: str, reason: str | None = None) -> Space | None:
    """Mark the space being built aborted (audited); the runner drops its column next. None: nothing to abort."""
    with conn.transaction():
        space = building(conn)
        if space is None:
            return None
        conn.execute(ABORT_SQL, (space.id,))
        record(conn, "reembed.abort", target=f"vector space {space.id}", from_state="building",
               to_state="aborted", reason=reason or f"{space.chunks_done} of {space.chunks_total} chunks embedded",
               actor=actor, details={"space": space.id})
    return space


def add_column(conn: Any, space: Space) -> None:
    """``embedding_next``, its vector kept in the row's page as ``embedding``'s (0008): one statement
    under lock_timeout, retried (``opsctl.vindex.online.ddl``), so it never queues its ACCESS
    EXCLUSIVE lock behind a long transaction on chunks with every search waiting behind it."""
    ddl(conn, sql.SQL("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS embedding_next vector({}), "
                      "ALTER COLUMN embedding_next SET STORAGE MAIN").format(sql.Literal(space.spec.dim)))


def _store(conn: Any, space: Space, rows: Sequence[Any], vectors: Any, cursor: Any, grows: bool) -> int:
    """Store ``vectors`` for ``rows`` and advance the space's progress (``grows``: the chunks are
    new since the start, so the total grows too), in the caller's transaction."""
    written = conn.execute(WRITE_SQL, ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                       list(vectors))).rowcount
    moved = conn.execute(ADVANCE_SQL, (None if cursor is None else Jsonb(cursor), written,
                                       written if grows else 0, space.id)).rowcount
    if not moved:
        raise Aborted(f"the re-embed into space {space.id} is no longer in progress")
    return int(written)


def _write(conn: Any, space: Space, rows: Sequence[Any], vectors: Any, cursor: Any, grows: bool) -> int:
    with conn.transaction():
        return _store(conn, space, rows, vectors, cursor, grows)


def backfill_batch(conn: Any, space: Space, embedder: Embedder, batch: int) -> int:
    """Embed the next ``batch`` chunks after the cursor; 0 when past the last (the cursor then says "end")."""
    after = space.cursor if isinstance(space.cursor, list) else [0, 0]
    rows = conn.execute(BACKFILL_SQL, (after[0], after[1], batch)).fetchall()
    if not rows:
        _write(conn, space, [], [], "end", grows=False)
        return 0
    vectors = embedder.embed([r[3] for r in rows])
    _write(conn, space, rows, vectors, [int(rows[-1][0]), int(rows[-1][1])], grows=False)
    return len(rows)


def catch_up_batch(conn: Any, space: Space, embedder: Embedder, batch: int) -> int:
    """Embed up to ``batch`` chunks that have no new vector (written since the backfill passed them)."""
    rows = conn.execute(MISSING_ROWS_SQL, (batch,)).fetchall()
    if not rows:
        return 0
    return _write(conn, space, rows, embedder.embed([r[3] for r in rows]), None, grows=True)


def build_index(conn: Any, space: Space, settings: Settings, progress: ProgressFn | None = None) -> None:
    """Without blocking writes, partition by partition (``opsctl.vindex.online``): the partial btree
    of the chunks without a new vector (after the backfill: only those written since; then an
    ANALYZE, a sampled read), then the HNSW over embedding_next."""
    from opsctl.context import database_url

    url = database_url(settings)
    build_partitioned(conn, url, missing_index(space), MISSING_INDEX_DEFINITION,
                      lambda leaf: missing_leaf_index(leaf, space), progress)
    # the statistics of embedding_next may still say "all NULL" (analyzed before the backfill): with
    # them the planner scans chunks rather than read the partial index (a resumed step analyzes again)
    conn.execute("ANALYZE chunks")
    definition = sql.SQL("USING hnsw (embedding_next vector_cosine_ops) WITH (m = {}, ef_construction = {})").format(
        sql.Literal(settings.hnsw_m), sql.Literal(settings.hnsw_ef_construction))
    build_partitioned(conn, url, parent_index(space), definition, lambda leaf: leaf_index(leaf, space), progress)


def switch(conn: Any, space: Space, embedder: Embedder, actor: str, limit: int) -> int:
    """The one transaction after which searches and ingest use the new space: it waits for the
    ingest batches holding the active space, locks chunks, embeds the chunks still without a new
    vector (at most ``limit``; more: OpsError, the runner catches up first), renames the columns,
    replaces the companies' own indexes by their copies on the new vectors (``opsctl.reembed.tenants``;
    one without a copy: OpsError, the runner copies it first), makes the space active and bumps every
    company's data version (cached answers are of the old space). Returns the chunks it embedded.
    It holds the tenant index runs' lock for its transaction (``tenants.Waiting`` while a run that
    began before the carry still holds it), so the own indexes it replaces are the ones it checked."""
    try:
        with conn.transaction():
            exclude_tenant_runs(conn)  # before any table lock: never queued behind a tenant run's build
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWITCH_LOCK_TIMEOUT)))
            conn.execute(LOCK_SPACES_SQL)  # waits for ingest batches (they hold the active row FOR SHARE)
            current = active(conn)
            now_building = building(conn)
            if now_building is None or now_building.id != space.id:
                raise Aborted(f"the re-embed into space {space.id} is no longer in progress")
            conn.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
            rows = conn.execute(MISSING_ROWS_SQL, (limit + 1,)).fetchall()
            if len(rows) > limit:
                raise OpsError(f"more than {limit} chunks still lack a new vector: catching up first")
            written = 0
            if rows:
                written = _store(conn, space, rows, embedder.embed([r[3] for r in rows]), None, grows=True)
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(missing_index(space))))
            for statement in SWITCH_DDL:
                conn.execute(statement)
            carried = promote(conn, space)
            conn.execute(RETIRE_SQL, (current.id,))
            conn.execute(ACTIVATE_SQL, (space.id,))
            conn.execute(BUMP_ALL_SQL)
            record(conn, "reembed.switch", target=f"vector space {space.id}", from_state=current.spec.label(),
                   to_state=space.spec.label(), reason=f"{space.chunks_done + written} chunks embedded", actor=actor,
                   details={"space": space.id, "retired": current.id, "embedded_in_switch": written,
                            "tenant_indexes": carried})
    except psycopg.errors.LockNotAvailable as exc:  # a long transaction on chunks or on the spaces
        # Waiting ends the run: retried at once, the switch would queue its lock again and again, and
        # every search and ingest on chunks waits behind a queued ACCESS EXCLUSIVE lock
        raise Waiting(f"the switch could not take its locks within {SWITCH_LOCK_TIMEOUT} (long transactions on "
                      f"chunks?): nothing changed, the next run tries again") from exc
    return written


def drop_column(conn: Any, column: str) -> None:
    """Drop ``embedding_retired`` (after a switch) or ``embedding_next`` (after an abort), and with
    it its HNSW index. Metadata only: the bytes of the old vectors are reused as rows are rewritten
    (VACUUM FULL, or the partition's rotation, gives them back to the disk)."""
    assert column in ("embedding_retired", "embedding_next")
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWITCH_LOCK_TIMEOUT)))
        conn.execute(sql.SQL("ALTER TABLE chunks DROP COLUMN IF EXISTS {}").format(sql.Identifier(column)))


def try_lock_runner(conn: Any) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", RUNNER_LOCK).fetchone()
    return bool(row and row[0])
