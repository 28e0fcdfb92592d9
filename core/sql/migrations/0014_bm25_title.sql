-- 0014: the title as its own field of keyword search (core/search/bm25.py). A document's title is
-- indexed (title_tsv, its length in title_words) and has BM25 statistics of its own per company,
-- over documents: how many documents' titles hold each term, how many documents and title words
-- there are. As for chunks (0013), a statement-level trigger on documents keeps them in the
-- transaction that writes or deletes documents, over the same stripes; a partition's rows are
-- subtracted in the transaction that detaches it (bm25_apply picks the statistics by the table).
ALTER TABLE documents ADD COLUMN title_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english', coalesce(title, ''))) STORED;
ALTER TABLE documents ADD COLUMN title_words integer NOT NULL
    GENERATED ALWAYS AS (bm25_words(to_tsvector('english', coalesce(title, '')))) STORED;
CREATE INDEX documents_title_tsv_idx ON documents USING gin (title_tsv);

CREATE TABLE bm25_title_terms (
    company_id  bigint NOT NULL,
    term        text NOT NULL,
    stripe      smallint NOT NULL,
    documents   bigint NOT NULL,
    PRIMARY KEY (company_id, term, stripe)
);
CREATE TABLE bm25_title_totals (
    company_id  bigint NOT NULL,
    stripe      smallint NOT NULL,
    documents   bigint NOT NULL,
    words       bigint NOT NULL,
    PRIMARY KEY (company_id, stripe)
);

-- The two statements adding ($1 = 1) or subtracting (-1) the rows of the relation ``source`` to the
-- statistics of one field: ``terms``/``totals`` the tables, ``unit`` their count column, ``tsv`` and
-- ``words`` the field's columns; rows locked in key order, so two transactions never deadlock on them.
CREATE FUNCTION bm25_field_statements(source text, terms text, totals text, unit text, tsv text, words text)
RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
SELECT ARRAY[
    format('INSERT INTO %2$I AS t (company_id, term, stripe, %3$I)'
           ' SELECT r.company_id, u.lexeme, bm25_stripe(r.company_id), $1 * count(*)'
           ' FROM %1$s r, unnest(r.%4$I) u GROUP BY r.company_id, u.lexeme ORDER BY r.company_id, u.lexeme'
           ' ON CONFLICT (company_id, term, stripe) DO UPDATE SET %3$I = t.%3$I + excluded.%3$I',
           source, terms, unit, tsv),
    format('INSERT INTO %2$I AS t (company_id, stripe, %3$I, words)'
           ' SELECT r.company_id, bm25_stripe(r.company_id), $1 * count(*), $1 * sum(r.%4$I)'
           ' FROM %1$s r GROUP BY r.company_id ORDER BY r.company_id'
           ' ON CONFLICT (company_id, stripe) DO UPDATE SET %3$I = t.%3$I + excluded.%3$I,'
           ' words = t.words + excluded.words', source, totals, unit, words)]
$$;

CREATE OR REPLACE FUNCTION bm25_statements(source text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
SELECT bm25_field_statements(source, 'bm25_terms', 'bm25_totals', 'chunks', 'tsv', 'words')
$$;

CREATE FUNCTION bm25_title_statements(source text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
SELECT bm25_field_statements(source, 'bm25_title_terms', 'bm25_title_totals', 'documents', 'title_tsv', 'title_words')
$$;

-- Add (1) or subtract (-1) the rows of a table of chunks (the body's statistics) or of documents
-- (the title's): the rows already stored, a partition detached.
CREATE OR REPLACE FUNCTION bm25_apply(source regclass, sign integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    statement text;
    statements text[] := CASE WHEN coalesce(pg_partition_root(source), source) = 'documents'::regclass
                              THEN bm25_title_statements(source::text) ELSE bm25_statements(source::text) END;
BEGIN
    FOREACH statement IN ARRAY statements LOOP
        EXECUTE statement USING sign;
    END LOOP;
END $$;

-- The trigger function of chunks (0013) and documents: the statistics of the table it fires on.
CREATE OR REPLACE FUNCTION bm25_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    statement text;
    title boolean := TG_TABLE_NAME = 'documents';
BEGIN
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

CREATE TRIGGER documents_bm25_insert AFTER INSERT ON documents
    REFERENCING NEW TABLE AS new_documents FOR EACH STATEMENT EXECUTE FUNCTION bm25_count();
CREATE TRIGGER documents_bm25_delete AFTER DELETE ON documents
    REFERENCING OLD TABLE AS old_documents FOR EACH STATEMENT EXECUTE FUNCTION bm25_count();
CREATE TRIGGER documents_bm25_update AFTER UPDATE ON documents
    REFERENCING OLD TABLE AS old_documents NEW TABLE AS new_documents FOR EACH STATEMENT EXECUTE FUNCTION bm25_count();

-- the documents already stored
SELECT bm25_apply('documents', 1);
