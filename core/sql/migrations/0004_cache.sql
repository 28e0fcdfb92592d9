-- 0004: a per-company key version, bumped whenever one of its API keys is revoked or deleted,
-- so a cached API-key lookup is checked against it and a revoked key stops working at once.

ALTER TABLE companies ADD COLUMN key_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION api_keys_bump_key_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE companies SET key_version = key_version + 1 WHERE id = OLD.company_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_key_version
    AFTER UPDATE OF revoked_at, key_hash, company_id OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_bump_key_version();
