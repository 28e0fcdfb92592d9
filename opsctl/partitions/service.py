"""Partition rotation end to end: read the partitions, plan, apply (the CLI and the daemon call this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.partitions.plan import Step, plan_rotation
from opsctl.partitions.policy import PartitionsPolicy

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.partitions.pg import Progress

KIND = "partitions"


def load_policy(path: Path | None = None, directory: Path | None = None) -> PartitionsPolicy:
    from opsctl.policy import load

    return load(PartitionsPolicy, KIND, path, directory)


def archive_dir(policy: PartitionsPolicy, settings: Settings) -> Path:
    if policy.archive_dir is None:
        return settings.data_dir / "archive" / "partitions"
    path = Path(policy.archive_dir).expanduser()
    return path if path.is_absolute() else settings.data_dir / path


@dataclass
class Rotation:
    steps: list[Step]
    applied: bool
    done: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        if not self.steps:
            return "nothing to do: partitions in line with the policy"
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.action] = counts.get(s.action, 0) + 1
        what = ", ".join(f"{n} {a}" for a, n in counts.items())
        return ("applied " if self.applied else "planned ") + what


def list_partitions(settings: Settings, policy: PartitionsPolicy, now: datetime) -> list[dict[str, Any]]:
    from opsctl.context import connect_db
    from opsctl.partitions.pg import list_rows

    with connect_db(settings) as conn:
        return list_rows(conn, policy, now)


def rotate(settings: Settings, policy: PartitionsPolicy, now: datetime, *, apply: bool,
           progress: Progress | None = None) -> Rotation:
    """Plan the rotation at ``now``; with ``apply``, run every step (each audited)."""
    from core.db import PARTITION_LOCK
    from core.errors import OperationFailed
    from opsctl.context import connect_db, database_url
    from opsctl.partitions.pg import Rotator, partitions

    with connect_db(settings) as conn:
        steps = plan_rotation(partitions(conn, policy), policy, now)
        result = Rotation(steps, apply)
        if apply and steps:
            # one rotation at a time (the daemon and an engineer by hand): a session advisory lock
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", PARTITION_LOCK).fetchone()
            if not (got and got[0]):
                raise OperationFailed("another partition rotation is running; try again when it has finished")
            try:
                # plan again under the lock: the other rotation may have changed things meanwhile
                steps = result.steps = plan_rotation(partitions(conn, policy), policy, now)
                rotator = Rotator(conn, database_url(settings), policy, archive_dir(policy, settings), progress)
                result.done = rotator.apply(steps)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", PARTITION_LOCK)
    return result
