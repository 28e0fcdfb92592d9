"""Connections to PostgreSQL directly or through a transaction pooler (PgBouncer, Supavisor).

In a transaction pooler's transaction mode a client owns a server connection only for the length
of one transaction; the next transaction may run on another server connection, and the one it
leaves is handed to another client as it is. So, on a connection to the pooler
(``database_pool_mode: transaction``):

- no server-side prepared statements (PgBouncer before 1.21 does not track them): psycopg's
  ``prepare_threshold=None`` (which also overrides ``execute(..., prepare=True)``);
- no session ``SET``: it would stay on the server connection for whichever client gets it next,
  and be missing from this client's next transaction. Settings a query needs are set with
  ``set_config(name, value, true)`` (``SET LOCAL``) inside the transaction that runs it;
- what needs a session of its own uses ``database_direct_url`` (``Settings.direct_url``): LISTEN
  (the ingest worker's naps), session advisory locks (the daemon's leader lock, migrations,
  partition rotation), DDL and backups.

In session mode (PostgreSQL itself, or a session pooler) the search settings are session ``SET``s
made once per pooled connection, as before: no extra round trip per search.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

if TYPE_CHECKING:
    from core.config import Settings

PoolMode = Literal["session", "transaction"]
Setting = tuple[str, str]

SET_CONFIG_SQL = "SELECT count(set_config(n, v, %s)) FROM unnest(%s::text[], %s::text[]) AS t(n, v)"


def search_settings(settings: Settings) -> tuple[Setting, ...]:
    """The settings a vector search runs with: iterative scans (a company filter still gets k rows),
    and ``hnsw.ef_search`` only when configured (else the database's default, `opsctl index tune`)."""
    found: list[Setting] = [("hnsw.iterative_scan", "relaxed_order")]
    if "hnsw_ef_search" in settings.model_fields_set:
        found.append(("hnsw.ef_search", str(settings.hnsw_ef_search)))
    return tuple(found)


def connect_kwargs(mode: PoolMode) -> dict[str, Any]:
    """psycopg connection arguments for a connection to ``database_url`` in this pool mode."""
    return {"prepare_threshold": None} if mode == "transaction" else {}


def apply_settings(conn: psycopg.Connection[Any], settings: tuple[Setting, ...], *, local: bool) -> None:
    """Set ``settings`` in one statement: for the current transaction only (``local``) or the session."""
    if settings:
        conn.execute(SET_CONFIG_SQL, (local, [n for n, _ in settings], [v for _, v in settings]))


def begin_with(settings: tuple[Setting, ...]) -> sql.Composed:
    """``BEGIN`` and the settings for that transaction only, as one simple-protocol message: one round
    trip where ``conn.transaction()`` and :func:`apply_settings` would take two."""
    calls = [sql.SQL("set_config({}, {}, true)").format(sql.Literal(n), sql.Literal(v)) for n, v in settings]
    return sql.SQL("BEGIN; SELECT {}").format(sql.SQL(", ").join(calls)) if calls else sql.Composed([sql.SQL("BEGIN")])


class CorePool(ConnectionPool):  # type: ignore[type-arg]
    """The core's connection pool, knowing whether ``search_settings`` are per session or per
    transaction (see :func:`search_connection`)."""

    def __init__(self, url: str, *, mode: PoolMode, search: tuple[Setting, ...], **kwargs: Any) -> None:
        self.mode: PoolMode = mode
        self.search_settings = search
        self.begin_search = begin_with(search)
        super().__init__(url, **kwargs)


@contextmanager
def search_connection(pool: ConnectionPool, *, vector: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection for a search's statements with the search settings in effect (``vector``:
    the search may read the HNSW index; a keyword search needs none of them).

    Session mode: autocommit (each statement its own snapshot, no BEGIN/ROLLBACK round trips); the
    pool set the settings on the session when it opened the connection. Transaction mode: one
    transaction whose first message sets them locally (:func:`begin_with`), so they hold for
    exactly these statements; committed at the end, rolled back on an error."""
    from psycopg.pq import TransactionStatus

    from core.db import read_connection

    with read_connection(pool) as conn:
        if not isinstance(pool, CorePool) or pool.mode == "session" or not vector:
            yield conn
            return
        conn.execute(pool.begin_search)
        try:
            yield conn
        except BaseException:
            if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                with suppress(psycopg.Error):  # a broken connection: the pool discards it
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
