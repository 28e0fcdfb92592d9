"""The cache policy: TTLs per data type, Redis memory limits and the hit-rate target.

``policy`` is the model of ``policies/cache.yaml``; ``plan`` holds the pure decisions (what to
change, the search hit rate and how it compares with its target, which queries to warm); ``ops``
is the thin adapter that reads and changes Redis; ``hitrate`` reads the one search hit rate that
``opsctl status``, ``opsctl cache status`` and the daemon job show; ``jobs`` is the daemon's entry point.
"""
