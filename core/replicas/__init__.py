"""Read replicas for searches: where a search reads (``route``, pure) and the replicas' pools and
lag measurement (``reader``). See docs/replicas.md."""
