-- 0007: the database's default hnsw.ef_search rises from 100 to 500, the smallest of the values
-- measured that keeps recall@10 at or above 0.95 on the benchmark corpus with the default build
-- (m 16, ef_construction 64). `opsctl index tune --apply` lowers it again where the data allows.
-- A value tuned by hand (anything but the old default) or by `opsctl index tune --apply` (its
-- audit row, even when it chose 100) is kept.
DO $$
DECLARE
    current_value text;
BEGIN
    SELECT split_part(option, '=', 2) INTO current_value
    FROM pg_db_role_setting s, unnest(s.setconfig) AS option
    WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND s.setrole = 0 AND option LIKE 'hnsw.ef_search=%';
    IF (current_value IS NULL OR current_value = '100')
       AND NOT EXISTS (SELECT 1 FROM ops_events WHERE action = 'index.tune') THEN
        EXECUTE format('ALTER DATABASE %I SET hnsw.ef_search = 500', current_database());
    END IF;
END
$$;
