-- 0006: the database's default hnsw.ef_search (the core's pool no longer overrides it unless
-- hnsw_ef_search is configured explicitly), so `opsctl index tune --apply` can change it for
-- every new connection. 100 is the value the pool used to set.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET hnsw.ef_search = 100', current_database());
END
$$;
