"""Slow queries: the database logs statements over a policy's threshold; opsctl reads the log through
SQL, groups the statements by their normalised text and counts them for an alert (docs/operations.md)."""
