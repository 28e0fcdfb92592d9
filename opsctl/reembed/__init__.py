"""`opsctl index reembed`: switch embedders on a live system (docs/embedders.md).

    plan.py     pure: the next step from the state read, progress and estimates from the clock
    pg.py       the adapter: the column, the backfill, the indexes, the switch, the clean-up
    tenants.py  the adapter carrying the companies' own HNSW indexes across the switch
    service.py  start / status / abort / run (the CLI's and the daemon's entry points)
    jobs.py     the daemon's ``reembed`` job
"""
