-- 0013: BM25 statistics for keyword search (core/search/bm25.py), per company: how many chunks
-- hold each term (document frequency), how many chunks and how many words there are. A
-- statement-level trigger on chunks keeps them in the transaction that writes or deletes chunks;
-- a partition's rows are subtracted in the transaction that detaches it (opsctl/partitions/pg.py).
-- The counts are split over 8 stripes (bm25_stripe) so that concurrent ingest transactions of one
-- company update different rows; a search sums the stripes.
-- A chunk's length in words (the positions its tsvector holds), stored with the row: ranking reads it
-- for every matching chunk.
CREATE FUNCTION bm25_words(tsv tsvector) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(sum(cardinality(u.positions)), 0)::integer FROM unnest(tsv) u
$$;
ALTER TABLE chunks ADD COLUMN words integer NOT NULL GENERATED ALWAYS AS (bm25_words(to_tsvector('english', body))) STORED;

CREATE TABLE bm25_terms (
    company_id  bigint NOT NULL,
    term        text NOT NULL,
    stripe      smallint NOT NULL,
    chunks      bigint NOT NULL,
    PRIMARY KEY (company_id, term, stripe)
);
CREATE TABLE bm25_totals (
    company_id  bigint NOT NULL,
    stripe      smallint NOT NULL,
    chunks      bigint NOT NULL,
    words       bigint NOT NULL,
    PRIMARY KEY (company_id, stripe)
);

-- The stripe a transaction writes a company's counts to: the first of the 8 that no other open
-- transaction holds (a transaction-level advisory lock, kept to the commit, the choice remembered in
-- a transaction-local setting), so concurrent writers of one company never wait on each other's
-- rows, nor deadlock on them; a ninth waits for its stripe.
CREATE FUNCTION bm25_stripe(company bigint) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    setting text := 'opsctl.bm25_stripe_' || company;
    chosen text := current_setting(setting, true);
    stripe integer;
BEGIN
    IF chosen IS NOT NULL AND chosen <> '' THEN
        RETURN chosen::smallint;
    END IF;
    FOR s IN 0..7 LOOP
        IF pg_try_advisory_xact_lock(hashtextextended('bm25:' || company || ':' || s, 0)) THEN
            stripe := s;
            EXIT;
        END IF;
    END LOOP;
    IF stripe IS NULL THEN
        stripe := pg_backend_pid() % 8;
        PERFORM pg_advisory_xact_lock(hashtextextended('bm25:' || company || ':' || stripe, 0));
    END IF;
    PERFORM set_config(setting, stripe::text, true);
    RETURN stripe;
END $$;

-- The two statements adding (sign $1 = 1) or subtracting (-1) the chunks of the relation named
-- ``source`` (a table, or a trigger's transition table, which only the trigger's own function sees);
-- rows are locked in key order, so two transactions never deadlock on them.
CREATE FUNCTION bm25_statements(source text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
SELECT ARRAY[
    format('INSERT INTO bm25_terms AS t (company_id, term, stripe, chunks)'
           ' SELECT r.company_id, u.lexeme, bm25_stripe(r.company_id), $1 * count(*)'
           ' FROM %s r, unnest(r.tsv) u GROUP BY r.company_id, u.lexeme ORDER BY r.company_id, u.lexeme'
           ' ON CONFLICT (company_id, term, stripe) DO UPDATE SET chunks = t.chunks + excluded.chunks', source),
    format('INSERT INTO bm25_totals AS t (company_id, stripe, chunks, words)'
           ' SELECT r.company_id, bm25_stripe(r.company_id), $1 * count(*),'
           ' $1 * sum(r.words)'
           ' FROM %s r GROUP BY r.company_id ORDER BY r.company_id'
           ' ON CONFLICT (company_id, stripe) DO UPDATE SET chunks = t.chunks + excluded.chunks,'
           ' words = t.words + excluded.words', source)]
$$;

-- Add (1) or subtract (-1) the chunks of a table: the chunks already stored, a partition detached.
CREATE FUNCTION bm25_apply(source regclass, sign integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    statement text;
BEGIN
    FOREACH statement IN ARRAY bm25_statements(source::text) LOOP
        EXECUTE statement USING sign;
    END LOOP;
END $$;

CREATE FUNCTION bm25_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    statement text;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        FOREACH statement IN ARRAY bm25_statements('old_chunks') LOOP
            EXECUTE statement USING -1;
        END LOOP;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        FOREACH statement IN ARRAY bm25_statements('new_chunks') LOOP
            EXECUTE statement USING 1;
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER chunks_bm25_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION bm25_count();
CREATE TRIGGER chunks_bm25_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT EXECUTE FUNCTION bm25_count();
CREATE TRIGGER chunks_bm25_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION bm25_count();

-- the chunks already stored
SELECT bm25_apply('chunks', 1);
