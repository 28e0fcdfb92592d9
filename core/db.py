"""Database access: migrations, partitions premade from the clock, and the connection pool.

Migrations are the numbered files in ``core/sql/migrations``; they are applied on start, each in
its own transaction, while holding an advisory lock so concurrent starters serialize.
``core/sql/schema.sql`` is the declared schema; a test checks both produce the same database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from core.errors import ServiceUnavailable
from core.partitioning import PARTITIONED_TABLES, months_to_premake, partition_with

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from core.config import Settings

log = logging.getLogger(__name__)

# Advisory locks: jobs in flight use the one-bigint form (the job id); keys of documents use the
# two-int4 form (company id, hashtext(external_id)); opsctl's own locks use the two-int4 form with
# a negative first half, which no company id has.
LOCK_NAMESPACE = -0x6F70
MIGRATION_LOCK = (LOCK_NAMESPACE, 1)
PARTITION_LOCK = (LOCK_NAMESPACE, 2)
PREMAKE_MONTHS = 4


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def render(text: str, settings: Settings) -> str:
    return (
        text.replace("{{EMBED_DIM}}", str(settings.embed_dim))
        .replace("{{HNSW_M}}", str(settings.hnsw_m))
        .replace("{{HNSW_EF_CONSTRUCTION}}", str(settings.hnsw_ef_construction))
    )


def migrations(settings: Settings) -> list[Migration]:
    folder = resources.files("core") / "sql" / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append(Migration(version, entry.name, render(entry.read_text(), settings)))
    return sorted(found, key=lambda m: m.version)


def declared_schema(settings: Settings) -> str:
    return render((resources.files("core") / "sql" / "schema.sql").read_text(), settings)


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"cannot connect to PostgreSQL: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (driver errors carry multi-line details)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def migrate(url: str, settings: Settings, now: datetime | None = None) -> list[str]:
    """Apply pending migrations, record (or check) the active vector space, premake partitions.

    Returns the names of the migrations applied by this call.
    """
    applied: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATION_LOCK)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in migrations(settings):
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration.name)
                log.info("applied migration %s", migration.name)
            from core.spaces.store import record_first

            record_first(conn, settings)  # the active vector space; its dimension checked
            ensure_partitions(conn, now or datetime.now(UTC))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATION_LOCK)
    return applied


def ensure_partitions(conn: psycopg.Connection[Any], now: datetime, ahead: int = PREMAKE_MONTHS) -> list[str]:
    """Create the current month's partition and ``ahead`` more, if missing. Returns those created."""
    created = []
    for month in months_to_premake(now, ahead):
        for table in PARTITIONED_TABLES:
            name = month.name(table)
            exists = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
            if exists and exists[0] is not None:
                continue
            create = "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})" + partition_with(table)
            stmt = sql.SQL(create).format(
                sql.Identifier(name), sql.Identifier(table),
                sql.Literal(month.start.isoformat()), sql.Literal(month.end.isoformat()),
            )
            try:
                with conn.transaction():
                    conn.execute(stmt)
                created.append(name)
            except psycopg.errors.CheckViolation:
                log.warning("partition %s not created: the default partition holds rows of its range", name)
            except psycopg.errors.InvalidObjectDefinition:
                log.info("partition %s not created: a partition of another interval covers its range", name)
    return created


def make_pool(url: str, settings: Settings, *, name: str = "core", min_size: int | None = None,
              max_size: int | None = None, wait: bool = True) -> ConnectionPool:
    """The core's pool on ``url`` (``database_url``), shaped by ``database_pool_mode`` (``core.pooler``):
    session mode sets the search settings once per connection, transaction mode per search.
    ``wait``: open at least ``min_size`` now (else fail), or not (connections are made in the
    background, and on demand)."""
    from pgvector.psycopg import register_vector

    from core.pooler import CorePool, apply_settings, connect_kwargs, search_settings

    mode = settings.database_pool_mode
    search = search_settings(settings)

    def configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        if mode == "session":
            apply_settings(conn, search, local=False)
        conn.commit()

    pool = CorePool(
        url,
        mode=mode,
        search=search,
        kwargs=connect_kwargs(mode),
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max if max_size is None else max_size,
        configure=configure,
        name=name,
        open=False,
        timeout=10,
    )
    if not wait:
        pool.open(wait=False)
        return pool
    try:
        pool.open(wait=True, timeout=30)
    except Exception as exc:
        pool.close()
        raise ServiceUnavailable(f"cannot connect to PostgreSQL: {first_line(exc)}") from exc
    return pool


@contextmanager
def read_connection(pool: ConnectionPool,
                    held: psycopg.Connection[Any] | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection in autocommit, for one read-only statement: each statement is its own
    snapshot, and no BEGIN or ROLLBACK round trip is paid around it. ``held``: one of ``pool`` the
    caller holds already from an outer ``read_connection`` (a request's key lookup and its search),
    yielded as it is: no second checkout."""
    if held is not None:
        yield held
        return
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = False


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection inside one transaction (commit on success, rollback on error)."""
    with pool.connection() as conn, conn.transaction():
        yield conn


def record_event(
    conn: psycopg.Connection[Any],
    *,
    actor: str,
    action: str,
    target: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one row to the audit log (``ops_events``); returns its id."""
    from psycopg.types.json import Jsonb

    row = conn.execute(
        "INSERT INTO ops_events (actor, action, target, from_state, to_state, reason, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (actor, action, target, from_state, to_state, reason, Jsonb(details or {})),
    ).fetchone()
    assert row is not None
    return int(row[0])
