"""Reading one document's metadata (``GET /v1/documents/{external_id}``), through the cache.

The cache key carries the company's data version, like search results: a completed ingest
(create, update or delete) changes the key, so an answer is never staler than that ingest.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from core import metrics
from core.cache import DOCUMENT_PREFIX

if TYPE_CHECKING:
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
