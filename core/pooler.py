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

from core.searchtune import SessionEf, needs_set

if TYPE_CHECKING:
    from core.config import Settings

PoolMode = Literal["session", "transaction"]
Setting = tuple[str, str]
EF_SEARCH = "hnsw.ef_search"

SET_CONFIG_SQL = "SELECT count(set_config(n, v, %s)) FROM unnest(%s::text[], %s::text[]) AS t(n, v)"


def search_settings(settings: Settings) -> tuple[Setting, ...]:
    """The settings a vector search runs with: iterative scans (a company filter still gets k rows),
    and ``hnsw.ef_search`` only when configured (else the database's default, `opsctl index tune`)."""
    found: list[Setting] = [("hnsw.iterative_scan", "relaxed_order")]
    if "hnsw_ef_search" in settings.model_fields_set:
        found.append((EF_SEARCH, str(settings.hnsw_ef_search)))
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
    transaction (see :func:`search_connection`), and which ef_search each session runs with
    (``core.searchtune``: the database's tuned value reaches a pooled connection at its next search)."""

    def __init__(self, url: str, *, mode: PoolMode, search: tuple[Setting, ...], **kwargs: Any) -> None:
        self.mode: PoolMode = mode
        self.search_settings = search
        self.ef_configured = any(name == EF_SEARCH for name, _ in search)  # an explicit setting wins
        self.sessions = SessionEf()
        self._begins: dict[int | None, sql.Composed] = {}
        super().__init__(url, **kwargs)

    def wanted_ef(self, learned: int | None) -> int | None:
        """The ef_search a vector search must run with beyond ``search_settings`` (None: nothing to set)."""
        return None if self.ef_configured else learned

    def ef_search(self, learned: int | None) -> int | None:
        """The ef_search a vector search runs with: the configured one, else ``learned`` (None: unknown)."""
        return int(dict(self.search_settings)[EF_SEARCH]) if self.ef_configured else learned

    def settings_for(self, learned: int | None) -> tuple[Setting, ...]:
        """``search_settings`` with the learned ef_search, for one transaction (transaction mode)."""
        wanted = self.wanted_ef(learned)
        return self.search_settings if wanted is None else (*self.search_settings, (EF_SEARCH, str(wanted)))

    def begin_search(self, learned: int | None = None) -> sql.Composed:
        """:func:`begin_with` the settings of :meth:`settings_for` (kept per value)."""
        key = self.wanted_ef(learned)
        found = self._begins.get(key)
        if found is None:
            found = self._begins[key] = begin_with(self.settings_for(learned))
        return found

    def tune_session(self, conn: psycopg.Connection[Any], learned: int | None) -> None:
        """Session mode: set the session's ef_search to the learned value when it differs (one
        statement, once per change and connection; none while it holds)."""
        wanted = self.wanted_ef(learned)
        if wanted is not None and needs_set(self.sessions.get(conn), wanted):
            apply_settings(conn, ((EF_SEARCH, str(wanted)),), local=False)
            self.sessions.put(conn, wanted)


@contextmanager
def search_connection(pool: ConnectionPool, *, vector: bool = True, ef_search: int | None = None,
                      conn: psycopg.Connection[Any] | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection for a search's statements with the search settings in effect (``vector``:
    the search may read the HNSW index; a keyword search needs none of them; ``ef_search``: the
    database's value learned by this request, ``core.searchtune``). ``conn``: one this request
    already holds from ``core.db.read_connection`` (its key lookup's), used instead of a second checkout.

    Session mode: autocommit (each statement its own snapshot, no BEGIN/ROLLBACK round trips); the
    pool set the settings on the session when it opened the connection, and ef_search is set again
    only when the learned value differs from the session's. Transaction mode: one transaction
    whose first message sets them locally (:func:`begin_with`), so they hold for exactly these
    statements; committed at the end, rolled back on an error."""
    from psycopg.pq import TransactionStatus

    from core.db import read_connection

    with read_connection(pool, conn) as conn:
        if not isinstance(pool, CorePool) or not vector:
            yield conn
            return
        if pool.mode == "session":
            pool.tune_session(conn, ef_search)
            yield conn
            return
        conn.execute(pool.begin_search(ef_search))
        try:
            yield conn
        except BaseException:
            if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                with suppress(psycopg.Error):  # a broken connection: the pool discards it
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
