"""Reading documents: one's metadata (``GET /v1/documents/{external_id}``, through the cache), the
company's list (``GET /v1/documents``, keyset-paginated) and one's stored text (``.../content``).

Metadata: the cache key carries the company's data version, like search results: a completed ingest
(create, update or delete) changes the key, so an answer is never staler than that ingest.

The list is in ``external_id`` order (as PostgreSQL compares text: the database's collation), a
page after the last external id given (``core.cursor``). The
external id is a document's identity: an update writes a new row (a new ``document_id``) under
the same external id, and a company holds at most one row per external id at any moment (the
worker replaces it in one transaction, under the key's lock). So a document that exists for the
whole walk is listed exactly once, whatever is ingested, updated or deleted meanwhile; one
created or deleted during the walk may or may not be. Each page is one statement over the
index ``documents_external_id_idx (company_id, external_id)``: on the partitioned table, a
Merge Append of one index scan per partition, each starting after the cursor, so a page reads
its rows and no more, however deep the walk (``tests/test_documents_list.py`` checks the plan).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from core import metrics
from core.cache import DOCUMENT_PREFIX
from core.cursor import listing_cursor, listing_position
from core.db import read_connection

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from psycopg_pool import ConnectionPool

    from core.cache import Cache
    from core.tenants import Principal

DOCUMENT_SQL = """
SELECT d.id, d.external_id, d.title, d.metadata, d.created_at, d.updated_at,
       (SELECT count(*) FROM chunks c WHERE c.company_id = d.company_id AND c.document_id = d.id)
FROM documents d WHERE d.company_id = %s AND d.external_id = %s
ORDER BY d.updated_at DESC LIMIT 1
"""


def document_key(company_id: int, data_version: int, external_id: str) -> str:
    digest = hashlib.sha256(external_id.encode()).hexdigest()[:32]
    return f"{DOCUMENT_PREFIX}{company_id}:{data_version}:{digest}"


def get_document(pool: ConnectionPool, cache: Cache, principal: Principal, external_id: str,
                 ttl: int) -> tuple[dict[str, Any] | None, bool]:
    """(metadata or None when the company has no such document, served from the cache)."""
    key = document_key(principal.company_id, principal.data_version, external_id)
    cached, _ = cache.get_json(key, metrics.DOCUMENT_CACHE)
    if isinstance(cached, dict):
        return cached, True
    with pool.connection() as conn:
        row = conn.execute(DOCUMENT_SQL, (principal.company_id, external_id), prepare=True).fetchone()
        conn.rollback()
    if row is None:
        return None, False
    found = {"document_id": int(row[0]), "external_id": row[1], "title": row[2], "metadata": row[3],
             "created_at": row[4].isoformat(), "updated_at": row[5].isoformat(), "chunks": int(row[6])}
    cache.set_json(key, found, ttl)
    return found, False


# a page and one row more (whether another page follows); '' sorts before every external id (never empty)
LIST_SQL = """
SELECT id, external_id, title, metadata, created_at, updated_at, octet_length(body)
FROM documents WHERE company_id = %s AND external_id > %s
ORDER BY external_id LIMIT %s
"""
MAX_LIST_LIMIT = 1000


def listed(row: Sequence[Any]) -> dict[str, Any]:
    return {"document_id": int(row[0]), "external_id": row[1], "title": row[2], "metadata": row[3],
            "created_at": row[4].isoformat(), "updated_at": row[5].isoformat(), "bytes": int(row[6])}


def page_of(rows: Sequence[Sequence[Any]], limit: int, company_id: int) -> dict[str, Any]:
    """A listing page from up to ``limit`` + 1 rows in order: the first ``limit``, and the cursor
    after the last of them when another row follows (None: the walk is complete)."""
    page = [listed(r) for r in rows[:limit]]
    more = len(rows) > limit
    return {"documents": page, "next_cursor": listing_cursor(company_id, page[-1]["external_id"]) if more else None}


def list_documents(pool: ConnectionPool, company_id: int, cursor: str | None, limit: int) -> dict[str, Any]:
    """One page of the company's documents in external id order, after ``cursor`` (None: the first);
    ``core.cursor.CursorRefused`` for a cursor not issued to this company by this listing."""
    after = "" if cursor is None else listing_position(cursor, company_id)
    with read_connection(pool) as conn:
        rows = conn.execute(LIST_SQL, (company_id, after, limit + 1), prepare=True).fetchall()
    return page_of(rows, limit, company_id)


# -- the stored text ---------------------------------------------------------------------------------------------

CONTENT_SQL = "SELECT id, title, body FROM documents WHERE company_id = %s AND external_id = %s LIMIT 1"
TEXT_SLICE = 256 * 1024  # characters encoded at a time: at most ~1 MB of bytes in flight


def get_content(pool: ConnectionPool, company_id: int, external_id: str) -> tuple[int, str | None, str] | None:
    """(document id, title, text) of the company's document, or None. The text is read once, as one
    string; ``text_pieces`` encodes it a slice at a time."""
    with read_connection(pool) as conn:
        row = conn.execute(CONTENT_SQL, (company_id, external_id), prepare=True).fetchone()
    return None if row is None else (int(row[0]), row[1], row[2])


def text_pieces(text: str, encode: Any = str.encode, size: int = TEXT_SLICE) -> Iterator[bytes]:
    """``text`` as bytes, ``size`` characters at a time, each slice through ``encode`` (UTF-8 by
    default): the whole body is never held twice."""
    for start in range(0, len(text), size):
        yield encode(text[start:start + size])
