"""``opsctl up``: the whole system on one machine, in a process tree it owns.

- ``system``: start, serve, stop (``System``);
- ``lock``: one ``opsctl up`` per data dir;
- ``leftovers``: before starting, stop what a dead instance left running;
- ``supervisor``: restart a child that dies, with backoff; keep ``up.json`` (``record``) current;
- ``terminal``: messages that never stop a shutdown.

The decisions are pure, in ``core.supervision``: ``next_restart`` and ``plan_cleanup``.
"""
