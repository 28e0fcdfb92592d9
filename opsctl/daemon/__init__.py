"""The policy daemon: APScheduler runs the jobs of ``policies/schedule.yaml`` on the one replica
that holds the leader lock (a PostgreSQL advisory lock on a dedicated connection).

Modules: ``loop`` (the reusable skeleton: signal flags, guarded cycles, overruns), ``role`` (the
pure role decision), ``jobs`` (scheduler, claims, catch-up), ``service`` (the daemon: wires them
with policy snapshots, records and pruning), ``schedule`` (the policy model and the pure timing
decisions), ``leader`` (the lock), ``runner`` (one run of one job: resolve, call, record, count),
``policies`` (reload and snapshot of the policy files), ``retention`` (what the leader prunes),
``exporter`` (``/metrics``), ``process`` (the child that ``opsctl up`` supervises), ``status`` and
``events`` (what ``opsctl status`` and ``opsctl events`` read). See docs/daemon.md for the picture.
"""
