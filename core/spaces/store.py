"""The ``vector_spaces`` table (migration 0015): the active space, the one being built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from core.config import Settings
from core.errors import ConfigError
from core.spaces.spec import SpaceSpec, mismatch, spec_of

log = logging.getLogger(__name__)

SPACE_COLUMNS = ("id, embedder, name, dim, options, state, chunks_total, chunks_done, cursor, started_by,"
                 " created_at, updated_at, activated_at, finished_at")
ACTIVE_SQL = f"SELECT {SPACE_COLUMNS} FROM vector_spaces WHERE state = 'active'"
BUILDING_SQL = f"SELECT {SPACE_COLUMNS} FROM vector_spaces WHERE state = 'building'"
# an ingest batch holds the active row until it commits: the switch (FOR UPDATE) waits for it
HOLD_ACTIVE_SQL = ACTIVE_SQL + " FOR SHARE"
RECORD_FIRST_SQL = """
INSERT INTO vector_spaces (embedder, name, dim, options, state, activated_at)
SELECT %s, %s, %s, %s, 'active', now() WHERE NOT EXISTS (SELECT 1 FROM vector_spaces WHERE state = 'active')
"""
COLUMN_DIM_SQL = """
SELECT attname, atttypmod FROM pg_attribute
WHERE attrelid = 'chunks'::regclass AND NOT attisdropped
  AND attname IN ('embedding', 'embedding_next', 'embedding_retired')
"""
SPACE_CHANGED = "OPS01"  # SQLSTATE of vector_space_is(): the query's space is not the active one


@dataclass(frozen=True)
class Space:
    id: int
    spec: SpaceSpec
    state: str
    chunks_total: int
    chunks_done: int
    cursor: Any  # building: [company_id, id] of the last chunk embedded, "end" once past the last
    started_by: str | None
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "embedder": self.spec.embedder, "name": self.spec.name, "dim": self.spec.dim,
                "options": self.spec.options, "state": self.state, "chunks_total": self.chunks_total,
                "chunks_done": self.chunks_done, "started_by": self.started_by,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "activated_at": self.activated_at.isoformat() if self.activated_at else None}


def _space(row: Any) -> Space:
    return Space(int(row[0]), SpaceSpec(row[1], row[2], int(row[3]), dict(row[4] or {})), row[5], int(row[6]),
                 int(row[7]), row[8], row[9], row[10], row[11], row[12],
                 row[13])


def active(conn: Any, hold: bool = False) -> Space:
    """The active space; ``hold``: FOR SHARE, to the end of the transaction (an ingest batch)."""
    row = conn.execute(HOLD_ACTIVE_SQL if hold else ACTIVE_SQL).fetchone()
    if row is None:
        raise ConfigError("the database records no active vector space: run the migrations (opsctl up, or any "
                          "core process start)")
    return _space(row)


def building(conn: Any) -> Space | None:
    row = conn.execute(BUILDING_SQL).fetchone()
    return _space(row) if row else None


def column_dims(conn: Any) -> dict[str, int]:
    """The dimension of ``embedding`` and (during a re-embed) ``embedding_next``, ``embedding_retired``."""
    return {r[0]: int(r[1]) for r in conn.execute(COLUMN_DIM_SQL)}


def record_first(conn: Any, settings: Settings) -> Space:
    """At start: record the settings' space as the active one if none is (a new database, or one
    made before 0015, whose vectors the configured embedder wrote); check ``chunks.embedding``
    holds the active space's dimension; say so when the settings ask for another space."""
    spec = spec_of(settings)
    conn.execute(RECORD_FIRST_SQL, (spec.embedder, spec.name, spec.dim, Jsonb(spec.options)))
    space = active(conn)
    stored = column_dims(conn).get("embedding")
    if stored is not None and stored != space.spec.dim:
        raise ConfigError(f"the database stores {stored}-dimensional embeddings but its active vector space "
                          f"{space.spec.label()} has {space.spec.dim}: the database is inconsistent")
    warning = mismatch(spec, space.spec)
    if warning:
        log.warning(warning)
    return space
