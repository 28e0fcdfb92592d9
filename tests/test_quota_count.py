"""The document quota's count (``core.ingest.quota.USAGE_SQL``) reads the kept totals and the
pending jobs only, and equals recounting every stored document, in every state a company's queue
and documents can be in (real PostgreSQL; the recount is the oracle)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.ingest.quota import PENDING_SQL, USAGE_SQL

# what the quota counted before the kept totals: every stored document, read
RECOUNT_SQL = """
WITH pending AS (""" + PENDING_SQL + """), held AS (
    SELECT external_id, bytes FROM pending
    UNION ALL
    SELECT d.external_id, octet_length(d.body) FROM documents d
    WHERE d.company_id = %(company)s
      AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.external_id = d.external_id)
)
SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM held WHERE external_id <> ALL(%(sent)s::text[])
"""


def store(conn: psycopg.Connection[Any], company: int, external_id: str, body: str) -> None:
    conn.execute("INSERT INTO documents (company_id, external_id, body, content_hash, created_at) "
                 "VALUES (%s, %s, %s, '\\x00', now())", (company, external_id, body))


def queue(conn: psycopg.Connection[Any], company: int, external_id: str, op: str, status: str = "queued",
          text: str | None = None, raw: bytes | None = None) -> None:
    payload = None if text is None else psycopg.types.json.Jsonb({"text": text})
    conn.execute("INSERT INTO ingest_jobs (company_id, external_id, op, status, payload, raw) "
                 "VALUES (%s, %s, %s, %s, %s, %s)", (company, external_id, op, status, payload, raw))


def counts(conn: psycopg.Connection[Any], company: int, sent: list[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    args = {"company": company, "sent": sent}
    kept = conn.execute(USAGE_SQL, args).fetchone()
    recount = conn.execute(RECOUNT_SQL, args).fetchone()
    assert kept is not None and recount is not None
    return (int(kept[0]), int(kept[1])), (int(recount[0]), int(recount[1]))


SENT = [[], ["a"], ["p-new"], ["a", "p-new", "never-seen"], ["mail-1", "b"]]


@pytest.mark.parametrize("sent", SENT)
def test_the_kept_count_equals_a_recount(conn: psycopg.Connection[Any], tenant: Any, other_tenant: Any,
                                         sent: list[str]) -> None:
    c, other = tenant.company_id, other_tenant.company_id
    for company in (c, other):  # another company's documents and jobs never count
        store(conn, company, "a", "alpha text")
        store(conn, company, "b", "ßeta ✓")  # multi-byte: bytes, not characters
        store(conn, company, "c", "gamma")
    store(conn, c, "updated-twice", "v1")
    queue(conn, c, "a", "upsert", text="alpha, longer now")  # a pending update of a stored one
    queue(conn, c, "updated-twice", "upsert", text="v2")
    queue(conn, c, "updated-twice", "upsert", status="failed", text="v3, the newest job")  # to be retried
    queue(conn, c, "p-new", "upsert", text="not stored yet")
    queue(conn, c, "done-one", "upsert", status="done", text="done jobs count through documents")
    queue(conn, c, "dead-one", "upsert", status="dead", text="never retried")
    queue(conn, c, "mail-1", "email", raw=b"Message-ID: <1@x>\r\n\r\nraw bytes")
    queue(conn, c, "c", "delete")  # a pending delete still counts
    assert counts(conn, c, sent)[0] == counts(conn, c, sent)[1]
    conn.execute("DELETE FROM documents WHERE company_id = %s AND external_id = 'b'", (c,))  # the trigger subtracts
    kept, recount = counts(conn, c, sent)
    assert kept == recount
    assert kept[0] == len({"a", "c", "updated-twice", "p-new", "mail-1"} - set(sent))  # held, less what is sent


def rows_read(plan: dict[str, Any], table_prefix: str) -> int:
    """Rows the plan's nodes over ``table_prefix``* returned or filtered away (EXPLAIN ANALYZE JSON)."""
    own = 0
    if str(plan.get("Relation Name", "")).startswith(table_prefix):
        loops = int(plan.get("Actual Loops", 1))
        own = (int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))) * loops
    return own + sum(rows_read(child, table_prefix) for child in plan.get("Plans", []))


def test_the_count_reads_the_pending_jobs_not_the_stored_documents(conn: psycopg.Connection[Any],
                                                                    tenant: Any) -> None:
    c = tenant.company_id
    conn.execute("INSERT INTO documents (company_id, external_id, body, content_hash, created_at) "
                 "SELECT %s, 'd' || g, 'text ' || g, '\\x00', now() FROM generate_series(1, 3000) g", (c,))
    conn.execute("ANALYZE documents")
    queue(conn, c, "d7", "upsert", text="an update")
    queue(conn, c, "new", "upsert", text="a new one")
    (plan,), = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + USAGE_SQL, {"company": c, "sent": ["d9"]}).fetchone()
    assert rows_read(plan["Plan"], "documents") <= 10, "the stored documents are not read one by one"
    kept, recount = counts(conn, c, ["d9"])
    assert kept == recount and kept[0] == 3000
