-- 0015: the vector spaces (core/spaces, docs/embedders.md): the embedder whose vectors
-- chunks.embedding holds ('active', exactly one, recorded at the first start from the settings),
-- and during `opsctl index reembed` the one being built into chunks.embedding_next ('building').
-- Searches check, in their own statement, that the space they embedded the query in is the active
-- one (vector_space_is); ingest workers hold the active row FOR SHARE while they write, and the
-- switch takes it FOR UPDATE: both lock it before chunks, so they never deadlock.
CREATE TABLE vector_spaces (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    embedder      text NOT NULL,                 -- the setting `embedder`: hash | onnx | minilm | openai
    name          text NOT NULL,                 -- the embedder's name: vectors compare within (name, dim)
    dim           integer NOT NULL CHECK (dim BETWEEN 1 AND 16000),
    options       jsonb NOT NULL DEFAULT '{}',   -- the settings that change vectors (embed_precision, openai_model)
    state         text NOT NULL CHECK (state IN ('active', 'building', 'retired', 'aborted')),
    chunks_total  bigint NOT NULL DEFAULT 0,     -- building: chunks to embed, counted at the start
    chunks_done   bigint NOT NULL DEFAULT 0,     -- building: chunks embedded so far
    cursor        jsonb,                         -- building: the last (company_id, id) the backfill embedded
    started_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    finished_at   timestamptz
);
CREATE UNIQUE INDEX vector_spaces_active_idx ON vector_spaces ((true)) WHERE state = 'active';
CREATE UNIQUE INDEX vector_spaces_building_idx ON vector_spaces ((true)) WHERE state = 'building';

-- true when ``space`` is the active space; an error (SQLSTATE OPS01) otherwise, so a search whose
-- query vector belongs to another space fails instead of answering from the wrong vectors.
CREATE FUNCTION vector_space_is(space bigint) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM vector_spaces WHERE id = space AND state = 'active') THEN
        RAISE EXCEPTION 'vector space % is not the active one', space USING ERRCODE = 'OPS01';
    END IF;
    RETURN true;
END $$;

-- An UPDATE that changes no indexed text (a re-embed writing chunks.embedding_next, a document's
-- metadata) changes no BM25 statistic: the trigger returns before subtracting and adding the same
-- counts (0014's function otherwise, unchanged).
CREATE OR REPLACE FUNCTION bm25_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    statement text;
    title boolean := TG_TABLE_NAME = 'documents';
BEGIN
    IF TG_OP = 'UPDATE' THEN  -- nested: an INSERT's or DELETE's trigger has no transition tables of an UPDATE
        IF title THEN
            IF NOT EXISTS (SELECT 1 FROM old_documents o FULL JOIN new_documents n
                               ON n.company_id = o.company_id AND n.id = o.id AND n.created_at = o.created_at
                           WHERE o.title_tsv IS DISTINCT FROM n.title_tsv) THEN
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
