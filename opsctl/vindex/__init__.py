"""Vector index maintenance: measured recall, ef_search tuning, reindex and vacuum (``opsctl index``)."""
