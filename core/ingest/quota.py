"""The tier's document quotas, checked in the intake transaction (adapter; the decision is
:func:`core.tiers.documents_quota`).

What a company holds is counted as the documents it would hold once its queue is drained: each
``external_id`` once, stored (``documents``) or waiting in an upsert job (queued, or failed and to
be retried; its newest job's text), minus the ids the request sends, plus the request's own ids
and text. Bytes are the UTF-8 bytes of the documents' text; a message waiting in an ``email`` job
counts its raw size until the worker stores its text (unknown before it is parsed; the headers,
encodings and markup make the raw message the larger). A pending delete still counts until it is
done (the quota never lets a company hold more than its limit, even for a moment).

Two requests racing at the edge must not both pass: the check takes a transaction-level advisory
lock per company before counting, and holds it until the jobs it allowed are committed, so the
next request's count (a new snapshot: READ COMMITTED) sees them. The lock is not the company's
row, which every ingest transaction updates (its data version): an intake never waits for a worker.
A tier without document quotas takes no lock and counts nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg

from core.tiers import QuotaRefusal, Tier, batch_usage, documents_quota

LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('opsctl:quota:' || %s::text, 0))"

USAGE_SQL = """
WITH pending AS (
    SELECT DISTINCT ON (external_id) external_id,
           CASE op WHEN 'upsert' THEN octet_length(payload->>'text') ELSE octet_length(raw) END AS bytes
    FROM ingest_jobs
    WHERE company_id = %(company)s AND op IN ('upsert', 'email') AND status IN ('queued', 'failed')
    ORDER BY external_id, id DESC
), held AS (
    SELECT external_id, bytes FROM pending
    UNION ALL
    SELECT d.external_id, octet_length(d.body) FROM documents d
    WHERE d.company_id = %(company)s
      AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.external_id = d.external_id)
)
SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM held WHERE external_id <> ALL(%(sent)s::text[])
"""


def check_documents_quota(conn: psycopg.Connection[Any], company_id: int, tier: Tier,
                          docs: list[tuple[str, int]]) -> QuotaRefusal | None:
    """Whether ``docs`` ((external_id, bytes of text)) fit the tier's quotas; call it inside the
    transaction that queues them (the lock it takes lasts until that transaction ends)."""
    if not tier.has_document_quotas:
        return None
    sent, sent_bytes = batch_usage(docs)
    conn.execute(LOCK_SQL, (company_id,))
    row = conn.execute(USAGE_SQL, {"company": company_id, "sent": sent}).fetchone()
    assert row is not None
    return documents_quota(tier, int(row[0]) + len(sent), int(row[1]) + sent_bytes)
