-- 0012: an e-mail job's raw message is stored as it is (EXTERNAL: out of line, not compressed). It
-- lives only until its job is done, and the worker deflates it once for mail_messages: PostgreSQL's
-- own pglz compression on insert (in the API's transaction) and decompression in the worker were
-- paid for bytes read once and cleared minutes later.
ALTER TABLE ingest_jobs ALTER COLUMN raw SET STORAGE EXTERNAL;
