-- 0018: fair ingest (issue 15 §1, docs/ingest-queue.md). Workers claim across companies by their
-- tier's ingestWeight, and within a company by due_at: interactive jobs are due when queued, bulk
-- jobs (opsctl ingest, large batches, mbox uploads) ingest_bulk_delay_seconds later, so an
-- interactive send passes a bulk import queued up to that long before it and no bulk job starves.
ALTER TABLE ingest_jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0 CHECK (priority IN (0, 1));  -- 1: bulk
ALTER TABLE ingest_jobs ADD COLUMN due_at timestamptz NOT NULL DEFAULT now();
-- a claim finds the waiting companies by a loose scan of this index and reads each one's next jobs
-- from it: index lookups per waiting company, never a company's whole backlog
CREATE INDEX ingest_jobs_fair_idx ON ingest_jobs (company_id, due_at, id) WHERE status IN ('queued', 'failed');
