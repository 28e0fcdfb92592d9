"""Per-company usage: counted in process, flushed hourly to the database, read back (docs/tenants.md)."""
