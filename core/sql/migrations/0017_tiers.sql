-- 0017: a tier per company (core/tiers.py: its limits come from policies/tenants.yaml). NULL is
-- the policy's default tier; a name the policy no longer defines is treated as the default too.
ALTER TABLE companies ADD COLUMN tier text CHECK (tier ~ '^[a-z0-9][a-z0-9_-]{0,62}$');
