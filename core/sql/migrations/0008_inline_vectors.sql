-- 0008: a chunk row keeps its vector in its page (core/partitioning.py, PARTITION_OPTIONS): the
-- vector is TOASTed last (MAIN), and rows up to 4 kB are not TOASTed at all. With the defaults, a
-- 384-d vector (1.5 kB) went out of line and every exact distance cost a TOAST fetch. Rows written
-- before this migration keep their layout until rewritten (VACUUM FULL, or a partition rotation).
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN;
DO $$
DECLARE
    leaf regclass;
BEGIN
    FOR leaf IN SELECT relid FROM pg_partition_tree('chunks') WHERE isleaf LOOP
        EXECUTE format('ALTER TABLE %s SET (toast_tuple_target = 4080)', leaf);
    END LOOP;
END
$$;
