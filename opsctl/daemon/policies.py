"""Reloading policies: validate every file, then switch to a private snapshot of them.

The daemon hands jobs its snapshot directory, never the live ``policies/`` directory: an edit
that breaks a file is refused as a whole (the jobs keep running on the last valid snapshot) and
the reason is logged, recorded (``daemon.reload`` refused) and counted. The files are copied
first and the copies validated, so what was validated is exactly what the jobs read.

Every failure of loading a file is that file's problem, whatever the loader raised (a
``PolicyError``, or a ``RecursionError``, ``MemoryError`` … from a hostile YAML file):
:func:`load_policy_set` raises only ``PolicyError``, naming the original files.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from core.db import first_line
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


def _refusal(copy: Path, original: Path, exc: Exception) -> PolicyError:
    """What loading ``copy`` raised, as a PolicyError naming ``original``: any exception is this file's problem."""
    problems = (exc.problems if isinstance(exc, PolicyError) else
                [Problem(str(copy), None, "", f"cannot load: {type(exc).__name__}: {first_line(exc)}")])
    return PolicyError([replace(p, file=p.file.replace(str(copy), str(original))) for p in problems])


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
        problems: list[Problem] = []
        for copy in copies:
            try:
                _, found = validate_paths([copy])
                if found:
                    raise PolicyError(found)
            except Exception as exc:
                problems.extend(_refusal(copy, directory / copy.name, exc).problems)
        if problems:
            raise PolicyError(problems)
        copy = snapshot / "schedule.yaml"
        from_file = copy.exists()
        try:
            schedule = load(SchedulePolicy, "schedule", path=copy) if from_file else SchedulePolicy.model_validate({})
        except Exception as exc:
            raise _refusal(copy, directory / copy.name, exc) from exc
    except BaseException:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise
    return PolicySet(schedule, snapshot, sig, tuple(p.name for p in copies), from_file)
