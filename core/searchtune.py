"""The database's tuned ``hnsw.ef_search``, in force from the next search of every API process.

``opsctl index tune --apply`` writes the value as the database's default (``ALTER DATABASE … SET
hnsw.ef_search``). PostgreSQL applies a database default only to sessions that start after it, so
a pooled connection would keep the old value until the pool recycles it (up to an hour). Instead:

- every request already reads its company's row (``core.tenants.resolve_principal``: the data
  version keys the cache); the same statement also reads the database's setting
  (``DATABASE_EF_SEARCH_SQL``, two catalog index probes), so each search knows the value in force
  when it started (``Principal.ef_search``), with no extra round trip;
- a pooled connection remembers the value its session runs with (``SessionEf``); a vector search
  on a connection whose value differs sets it first (one ``set_config`` on that connection, once
  per change), or, behind a transaction pooler, sets it in the search's own transaction as it does
  the other search settings (no extra round trip at all).

An explicitly configured ``hnsw_ef_search`` still wins over the database's value
(``core.pooler.search_settings``): the learned value is then ignored.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

# pgvector's own default, what a session runs with when the database sets none
PGVECTOR_DEFAULT_EF_SEARCH = 40

# the database's default hnsw.ef_search as a scalar subquery (NULL: none set), appended to the
# per-request company lookups of core.tenants (``%%``: the statements take parameters)
DATABASE_EF_SEARCH_SQL = (
    "(SELECT split_part(s, '=', 2) FROM pg_db_role_setting r, unnest(r.setconfig) s"
    " WHERE r.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND r.setrole = 0 AND s LIKE 'hnsw.ef_search=%%' LIMIT 1)"
)


def ef_search_of(value: str | None) -> int:
    """The ef_search a new session gets from the database's setting text (None: not set) (pure).
    A value PostgreSQL accepted is an integer; anything else falls back to pgvector's default."""
    if value is None:
        return PGVECTOR_DEFAULT_EF_SEARCH
    try:
        return int(value.strip())
    except ValueError:
        return PGVECTOR_DEFAULT_EF_SEARCH


def needs_set(session: int | None, wanted: int | None) -> bool:
    """Whether a session running with ``session`` (None: unknown) must be set to ``wanted`` (None:
    nothing learned, leave it) before a vector search (pure)."""
    return wanted is not None and session != wanted


class SessionEf:
    """The ef_search each pooled connection's session was last set to by this process (a
    connection it never set is unknown: it is set at its first vector search)."""

    def __init__(self) -> None:
        self._values: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, conn: Any) -> int | None:
        with self._lock:
            return self._values.get(conn)

    def put(self, conn: Any, value: int) -> None:
        with self._lock:
            self._values[conn] = value
