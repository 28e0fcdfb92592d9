"""The claim statements: a worker takes its next batch of jobs (one statement, ``SKIP LOCKED``).

``fair`` (the default, ``ingest_claim``) is :func:`core.ingest.fair.claim_order` in SQL:

1. ``waiting``: the companies with jobs waiting, by a loose index scan of ``ingest_jobs_fair_idx``
   (one index descent per company, however long its backlog);
2. ``heads``: each one's weight (its tier's ``ingestWeight``, passed in as arrays) and its next
   runnable job (one index lookup);
3. ``chosen``: the ``n`` companies whose next job is due first, each with its share ``ceil(n·w/W)``;
4. per chosen company, its first ``share`` runnable jobs by ``(due_at, id)``, locked
   ``FOR UPDATE SKIP LOCKED`` (jobs another worker holds are passed over, as in the FIFO);
5. the ``n`` with the lowest virtual finish time ``rank / weight`` (ties: due first).

A claim locks at most one job more than it returns per chosen company (the shares' rounding up);
those stay queued and are released at the commit. The companies are chosen by their next job without
knowing whether another worker holds it: when every chosen company's jobs are held (more companies
waiting than a batch, each with a job or two, behind another worker's batch), the fair claim finds
nothing, and the worker takes the FIFO's batch instead of napping while the other companies wait.
``fifo`` is the old single queue by job id, kept as the baseline ``bench/fair_bench.py`` measures
against. Either way the batch is one transaction: a worker killed with ``-9`` leaves its jobs queued,
and they are claimed again.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg

from core.ingest.fair import ClaimWeights

ClaimMode = Literal["fair", "fifo"]

COLUMNS = "id, company_id, external_id, op, content_hash, payload, attempts, raw"

FIFO_CLAIM_SQL = f"""
SELECT {COLUMNS}
FROM ingest_jobs
WHERE status IN ('queued', 'failed') AND run_after <= now()
ORDER BY id
LIMIT %(n)s
FOR UPDATE SKIP LOCKED
"""

FAIR_CLAIM_SQL = f"""
WITH RECURSIVE waiting(company_id) AS (
    (SELECT company_id FROM ingest_jobs WHERE status IN ('queued', 'failed') ORDER BY company_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.company_id FROM ingest_jobs j
            WHERE j.status IN ('queued', 'failed') AND j.company_id > w.company_id
            ORDER BY j.company_id LIMIT 1)
    FROM waiting w WHERE w.company_id IS NOT NULL
),
heads AS (
    SELECT w.company_id, coalesce(t.weight, %(default_weight)s)::bigint AS weight, h.due_at, h.id
    FROM waiting w
    JOIN companies c ON c.id = w.company_id
    LEFT JOIN unnest(%(tiers)s::text[], %(weights)s::int[]) AS t(tier, weight) ON t.tier = c.tier
    CROSS JOIN LATERAL (
        SELECT j.due_at, j.id FROM ingest_jobs j
        WHERE j.company_id = w.company_id AND j.status IN ('queued', 'failed') AND j.run_after <= now()
        ORDER BY j.due_at, j.id LIMIT 1
    ) h
),
chosen AS (
    SELECT company_id, weight, (%(n)s * weight + total - 1) / total AS share  -- ceil(n·w/W), in integers
    FROM (SELECT company_id, weight, (sum(weight) OVER ())::bigint AS total
          FROM (SELECT company_id, weight FROM heads ORDER BY due_at, id LIMIT %(n)s) f) g
),
claimed AS (
    SELECT j.*, c.weight, row_number() OVER (PARTITION BY c.company_id ORDER BY j.due_at, j.id) AS rank
    FROM chosen c
    CROSS JOIN LATERAL (
        SELECT {COLUMNS}, due_at FROM ingest_jobs j
        WHERE j.company_id = c.company_id AND j.status IN ('queued', 'failed') AND j.run_after <= now()
        ORDER BY j.due_at, j.id
        LIMIT c.share
        FOR UPDATE SKIP LOCKED
    ) j
)
SELECT {COLUMNS}
FROM claimed
ORDER BY rank::float8 / weight, due_at, id
LIMIT %(n)s
"""


def claim_jobs(conn: psycopg.Connection[Any], mode: ClaimMode, weights: ClaimWeights, n: int) -> list[Any]:
    """Lock and return up to ``n`` runnable jobs (rows of ``COLUMNS``), in claim order, inside the
    caller's transaction."""
    if mode == "fifo":
        return conn.execute(FIFO_CLAIM_SQL, {"n": n}, binary=True).fetchall()
    params = {"n": n, "default_weight": weights.default, "tiers": list(weights.tiers),
              "weights": list(weights.weights)}
    # binary: an e-mail job's raw message comes as its bytes, not hex-escaped text
    rows = conn.execute(FAIR_CLAIM_SQL, params, binary=True).fetchall()
    if rows:
        return rows
    # the chosen companies' jobs are all held by other workers (or nothing waits: an index probe)
    return conn.execute(FIFO_CLAIM_SQL, {"n": n}, binary=True).fetchall()
