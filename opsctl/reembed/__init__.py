"""`opsctl index reembed`: switch embedders on a live system (docs/embedders.md).

    plan.py     pure: the next step from the state read, progress and estimates from the clock
    pg.py       the adapter: the column, the backfill, the index, the switch, the clean-up
    service.py  start / status / abort / run (the CLI's and the daemon's entry points)
    jobs.py     the daemon's ``reembed`` job
"""
