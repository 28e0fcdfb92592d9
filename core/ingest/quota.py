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

# The newest pending job of each external_id the company has waiting to be stored, with its bytes.
PENDING_SQL = """
    SELECT DISTINCT ON (external_id) external_id,
           CASE op WHEN 'upsert' THEN octet_length(payload->>'text') ELSE octet_length(raw) END AS bytes
    FROM ingest_jobs
    WHERE company_id = %(company)s AND op IN ('upsert', 'email') AND status IN ('queued', 'failed')
    ORDER BY external_id, id DESC
"""

# The company's kept totals (documents: bm25_title_totals, 0014; bytes: stored_bytes, 0019; both
# kept by the documents' statement trigger in the writing transaction), less the stored documents a
# pending job or the request replaces, plus the pending ones the request does not replace: the same
# figure as counting every stored document, at the cost of index lookups for the pending jobs only.
USAGE_SQL = """
WITH pending AS (""" + PENDING_SQL + """), kept AS (
    SELECT pending.external_id, pending.bytes FROM pending WHERE external_id <> ALL(%(sent)s::text[])
), replaced AS (
    SELECT count(*) AS n, coalesce(sum(octet_length(d.body)), 0) AS bytes
    FROM documents d
    WHERE d.company_id = %(company)s
      AND d.external_id IN (SELECT external_id FROM pending UNION ALL SELECT unnest(%(sent)s::text[]))
)
SELECT (SELECT coalesce(sum(documents), 0) FROM bm25_title_totals WHERE company_id = %(company)s)
       - r.n + (SELECT count(*) FROM kept),
       ((SELECT coalesce(sum(bytes), 0) FROM stored_bytes WHERE company_id = %(company)s)
       - r.bytes + (SELECT coalesce(sum(bytes), 0) FROM kept))::bigint
FROM replaced r
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
