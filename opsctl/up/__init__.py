"""``opsctl up``: the whole system on one machine, in a process tree it owns (docs/up.md).

- ``system``: start, serve, stop (``System``); ``server``: the API served in this process;
- ``signals``: SIGINT/SIGTERM/SIGHUP from the first step to the last (flags only);
- ``lock``: one ``opsctl up`` per data dir;
- ``leftovers``: before starting, stop what a dead instance left running;
- ``supervisor``: restart a child that dies, with backoff; keep ``up.json`` (``record``) current;
- ``health``: what ``opsctl status`` shows of it;
- ``stopping``: the stop's steps, in order, shared by the API's shutdown and ``System.stop``;
- ``terminal``: messages that never stop a shutdown; ``banner``: what it prints once it runs;
- ``workers``: how many workers to start (pure), ``resume``: what it reads for that.

The decisions are pure, in ``core.supervision`` (``next_restart``, ``plan_cleanup``) and
``workers`` (``initial_workers``).
"""
