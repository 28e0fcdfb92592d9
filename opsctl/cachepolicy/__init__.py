"""The cache policy: TTLs per data type, Redis memory limits and the hit-rate target.

``policy`` is the model of ``policies/cache.yaml``; ``plan`` holds the pure decisions (what to
change, how the hit rate compares with its target, which queries to warm); ``redis_admin`` is the
thin adapter that reads and changes Redis; ``jobs`` is the daemon's entry point.
"""
