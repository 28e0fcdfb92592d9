"""The policy daemon: APScheduler runs the jobs of ``policies/schedule.yaml`` on the one replica
that holds the leader lock (a PostgreSQL advisory lock on a dedicated connection).

Modules: ``schedule`` (the policy model and the pure timing decisions), ``leader`` (the lock),
``runner`` (one run of one job: resolve, call, record, count), ``service`` (the control loop),
``policies`` (reload and snapshot of the policy files), ``process`` (the child that ``opsctl up``
supervises), ``status`` and ``events`` (what ``opsctl status`` and ``opsctl events`` read).
See docs/daemon.md for the picture.
"""
