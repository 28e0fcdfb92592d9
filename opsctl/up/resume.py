"""What ``opsctl up`` reads to resume the worker pool where the autoscaler left it (``opsctl.up.workers``).

The service: the one of ``<policy dir>/autoscaling.yaml`` whose target is ``local`` and names
this API (or no URL, which means the running system's); none, several, or a policy that does not
load: nothing to resume. Its last word: the newest ``scale.decide`` or ``scale.set`` row of the
audit log (``ops_log``: changes and decisions; the newest of each action and target is never
pruned): an applied change set ``to_state``, any other saw ``from_state`` running.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from opsctl.up.workers import LastCount, Workers, initial_workers

log = logging.getLogger("opsctl.up")

LAST_COUNT_SQL = """
SELECT at, CASE WHEN change THEN to_state ELSE from_state END FROM ops_log
WHERE action IN ('scale.decide', 'scale.set') AND target = %s
ORDER BY at DESC, id DESC LIMIT 1
"""


def local_service(policy_dir: Path, api_url: str) -> tuple[str, tuple[int, int]] | None:
    """The autoscaled service that is this ``opsctl up``'s worker pool, with its (min, max) replicas."""
    from opsctl.policy import PolicyError, load
    from opsctl.scaling.policy import AutoscalingPolicy

    try:
        policy = load(AutoscalingPolicy, "autoscaling", directory=policy_dir)
    except PolicyError as exc:
        log.info("workers: not resuming the autoscaler's count: %s", exc)
        return None
    local = [(name, (svc.minReplicas, svc.maxReplicas)) for name, svc in policy.services.items()
             if svc.target.kind == "local" and svc.target.url in (None, api_url)]
    return local[0] if len(local) == 1 else None


def last_count(conn: Any, service: str) -> LastCount | None:
    row = conn.execute(LAST_COUNT_SQL, (service,)).fetchone()
    if row is None or row[1] is None:
        return None
    try:
        return LastCount(service, int(row[1]), row[0])
    except ValueError:
        return None


def workers_to_start(requested: int | None, database_url: str, policy_dir: Path, api_url: str,
                     now: datetime) -> Workers:
    """``--workers``, or the autoscaler's last count for this pool when recent and within bounds."""
    if requested is not None:
        return initial_workers(requested, None, None, now)
    from core.db import connect

    found = local_service(policy_dir, api_url)
    last = None
    if found is not None:
        try:
            with connect(database_url, autocommit=True) as conn:
                last = last_count(conn, found[0])
        except Exception as exc:  # resuming is a convenience: it never stops the start
            log.warning("workers: cannot read the autoscaler's last count (%s: %s); starting the default",
                        type(exc).__name__, exc)
    return initial_workers(None, last, found[1] if found else None, now)
