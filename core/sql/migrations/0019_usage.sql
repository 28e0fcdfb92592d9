-- 0019: per-company usage (core/usage). Counted events — searches, search cache hits and misses,
-- ingest jobs done, texts embedded — are tallied in each API and worker process and added here per
-- company and hour, one upsert per flush (a process killed -9 loses at most one flush interval).
-- documents, chunks and stored_bytes are the company's totals when the row was last flushed.
CREATE TABLE usage_hourly (
    company_id    bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    hour          timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour, 'UTC')),
    searches      bigint NOT NULL DEFAULT 0,
    cache_hits    bigint NOT NULL DEFAULT 0,
    cache_misses  bigint NOT NULL DEFAULT 0,
    ingest_jobs   bigint NOT NULL DEFAULT 0,
    embeddings    bigint NOT NULL DEFAULT 0,
    documents     bigint,
    chunks        bigint,
    stored_bytes  bigint,
    PRIMARY KEY (company_id, hour)
);
CREATE INDEX usage_hourly_hour_idx ON usage_hourly (hour);

-- A company's stored bytes (UTF-8 bytes of its documents' text), kept like its document count:
-- the documents' statement trigger (0014) runs one more statement, over the same stripes, and a
-- detached partition is subtracted by bm25_apply. octet_length reads a TOASTed text's size from its
-- header: the text is not decompressed.
CREATE TABLE stored_bytes (
    company_id  bigint NOT NULL,
    stripe      smallint NOT NULL,
    bytes       bigint NOT NULL,
    PRIMARY KEY (company_id, stripe)
);

CREATE OR REPLACE FUNCTION bm25_title_statements(source text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
SELECT bm25_field_statements(source, 'bm25_title_terms', 'bm25_title_totals', 'documents', 'title_tsv', 'title_words')
    || format('INSERT INTO stored_bytes AS t (company_id, stripe, bytes)'
              ' SELECT r.company_id, bm25_stripe(r.company_id), $1 * sum(octet_length(r.body))'
              ' FROM %1$s r GROUP BY r.company_id ORDER BY r.company_id'
              ' ON CONFLICT (company_id, stripe) DO UPDATE SET bytes = t.bytes + excluded.bytes', source)
$$;

-- an UPDATE of documents that changes their size but no title counts too (0015 skipped those)
CREATE OR REPLACE FUNCTION bm25_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    statement text;
    title boolean := TG_TABLE_NAME = 'documents';
BEGIN
    IF TG_OP = 'UPDATE' THEN  -- nested: an INSERT's or DELETE's trigger has no transition tables of an UPDATE
        IF title THEN
            IF NOT EXISTS (SELECT 1 FROM old_documents o FULL JOIN new_documents n
                               ON n.company_id = o.company_id AND n.id = o.id AND n.created_at = o.created_at
                           WHERE o.title_tsv IS DISTINCT FROM n.title_tsv
                              OR octet_length(o.body) IS DISTINCT FROM octet_length(n.body)) THEN
                RETURN NULL;
            END IF;
        ELSIF NOT EXISTS (SELECT 1 FROM old_chunks o FULL JOIN new_chunks n
                              ON n.company_id = o.company_id AND n.id = o.id AND n.created_at = o.created_at
                          WHERE o.tsv IS DISTINCT FROM n.tsv) THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        FOREACH statement IN ARRAY CASE WHEN title THEN bm25_title_statements('old_documents')
                                        ELSE bm25_statements('old_chunks') END LOOP
            EXECUTE statement USING -1;
        END LOOP;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        FOREACH statement IN ARRAY CASE WHEN title THEN bm25_title_statements('new_documents')
                                        ELSE bm25_statements('new_chunks') END LOOP
            EXECUTE statement USING 1;
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

-- the documents already stored
INSERT INTO stored_bytes (company_id, stripe, bytes)
SELECT company_id, 0, sum(octet_length(body)) FROM documents GROUP BY company_id;
