"""Reloading policies: validate every file, then switch to a private snapshot of them.

The daemon hands jobs its snapshot directory, never the live ``policies/`` directory: an edit
that breaks a file is refused as a whole (the jobs keep running on the last valid snapshot) and
the reason is logged, audited (``daemon.reload``) and counted. The files are copied first and the
copies validated, so what was validated is exactly what the jobs read.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from opsctl.daemon.schedule import SchedulePolicy
from opsctl.policy import PolicyError, Problem, load, validate_paths

Signature = tuple[tuple[str, int, int], ...]


def policy_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def signature(directory: Path) -> Signature:
    """(name, mtime, size) of each policy file: a change means reload."""
    out = []
    for path in policy_files(directory):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        out.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@dataclass(frozen=True)
class PolicySet:
    schedule: SchedulePolicy
    snapshot: Path
    signature: Signature
    files: tuple[str, ...]
    schedule_from_file: bool


def load_policy_set(directory: Path, snapshot_root: Path) -> PolicySet:
    """Snapshot and validate ``directory``; raises PolicyError (naming the original files) if invalid."""
    sig = signature(directory)
    snapshot = Path(tempfile.mkdtemp(prefix="policies-", dir=snapshot_root))
    try:
        copies = []
        for path in policy_files(directory):
            try:
                shutil.copy2(path, snapshot / path.name)
                copies.append(snapshot / path.name)
            except FileNotFoundError:
                continue
        _, problems = validate_paths(copies) if copies else ([], [])
        if problems:
            raise PolicyError([Problem(p.file.replace(str(snapshot), str(directory)), p.line, p.path, p.reason)
                               for p in problems])
        from_file = (snapshot / "schedule.yaml").exists()
        schedule = (load(SchedulePolicy, "schedule", directory=snapshot) if from_file
                    else SchedulePolicy.model_validate({}))
    except BaseException:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise
    return PolicySet(schedule, snapshot, sig, tuple(p.name for p in copies), from_file)
