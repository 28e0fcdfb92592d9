"""Policies: the YAML files in ``policies/`` that the daemon and the CLI enforce.

Each file holds one kind of policy, named by its file stem (``autoscaling.yaml``) or by a
top-level ``kind:`` key, and validated by that kind's pydantic model. Errors name the file, the
line, the path inside the document and the reason, all of them at once::

    policies/autoscaling.yaml:12: services.core-worker.maxReplicas: must be >= minReplicas

Models subclass :class:`PolicyModel` (unknown keys are errors, so a typo never passes silently;
types are strict) and register in :data:`KINDS` as ``"module:Class"`` strings, imported only
when that kind is loaded so ``opsctl --help`` stays fast.

Files are read with bounds (:mod:`core.safeyaml`: size, depth, aliases expanded, repeated keys)
and every failure of loading one, whatever it is, comes out as a :class:`PolicyError` naming the
file: the daemon keeps its last good set on it, the CLI exits 2.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError

# kind → "module:Class" of its model; the file stem (or ``kind:``) selects the kind
KINDS: dict[str, str] = {
    "schedule": "opsctl.daemon.schedule:SchedulePolicy",
    "autoscaling": "opsctl.scaling.policy:AutoscalingPolicy",
    "cache": "opsctl.cachepolicy.policy:CachePolicy",
    "partitions": "opsctl.partitions.policy:PartitionsPolicy",
    "vector-index": "opsctl.vindex.policy:VectorIndexPolicy",
    "backup": "opsctl.backup.policy:BackupPolicy",
    "tenants": "core.tiers:TenantsPolicy",
    "slow-queries": "opsctl.slowqueries.policy:SlowQueriesPolicy",
}

DEFAULT_DIR = Path("policies")
M = TypeVar("M", bound=BaseModel)


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float | int) -> timedelta:
    """A policy duration: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, ``"1w"``, or a number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip().replace(" ", "")
        parts = _DURATION.findall(value)
        if not value or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m, 2d, 1w")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def window_start(text: str, now: datetime) -> datetime:
    """The moment a ``--since`` duration (``parse_duration``) before ``now``; ValueError when the
    duration is malformed or reaches before the calendar's first year."""
    window = parse_duration(text)
    try:
        return now - window
    except OverflowError:
        raise ValueError(f"duration {text!r} reaches before the year 1") from None


def format_duration(delta: timedelta) -> str:
    """A duration as a policy writes it, in its largest whole unit: ``1h``, ``2d``, ``1w``, else ``90s``."""
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{delta.total_seconds():g}s"


class PolicyModel(BaseModel):
    """Base of every policy model: unknown keys are errors; HPA-style camelCase names stay as written.

    Strict types: ``true`` is not the integer 1, ``3.0`` not the integer 3, ``"5"`` not a number;
    floats are finite (``.inf`` and ``.nan`` are refused). Give counts an upper bound
    (``le=MAX_REPLICAS`` and the like) so that a 30-digit number is refused with its line.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class PolicyError(ConfigError):
    """Invalid policy."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid policy"
        more = f" (and {len(problems) - 1} more; run `opsctl policy validate`)" if len(problems) > 1 else ""
        super().__init__(first + more)


def model_for(kind: str) -> type[BaseModel]:
    try:
        module, _, name = KINDS[kind].partition(":")
    except KeyError:
        raise ConfigError(f"unknown policy kind {kind!r} (known: {', '.join(sorted(KINDS))})") from None
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, BaseModel)
    return cls


def policy_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``OPSCTL_POLICY_DIR``, else ``./policies``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("OPSCTL_POLICY_DIR")
    return Path(env) if env else DEFAULT_DIR


# --- reading a file --------------------------------------------------------------------------

MAX_BYTES = 1 << 20  # a policy is a few kilobytes; a megabyte is not a policy


def _read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document and the line (1-based) where each path of keys and indexes starts.

    Every failure is a PolicyError naming the file (and the line when there is one): a missing,
    unreadable, oversized or non-UTF-8 file, a syntax error, and what :mod:`core.safeyaml`
    refuses (aliases that expand too far, recursive aliases, deep nesting, repeated keys).
    """
    import yaml

    from core import safeyaml
    from opsctl.files import FileProblem, read_text

    def fail(reason: str, line: int | None = None) -> PolicyError:
        return PolicyError([Problem(str(path), line, "", reason)])

    try:
        text = read_text(path, MAX_BYTES, "a policy file")
    except FileProblem as exc:
        raise fail(exc.reason, exc.line) from exc
    try:
        return safeyaml.parse(text)
    except safeyaml.Refused as exc:
        raise fail(str(exc.problem), safeyaml.line_of(exc)) from exc
    except yaml.YAMLError as exc:
        raise fail(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", safeyaml.line_of(exc)) from exc


@contextmanager
def _as_problem(file: Path | str) -> Iterator[None]:
    """Whatever goes wrong while loading ``file`` comes out as a PolicyError naming it."""
    try:
        yield
    except PolicyError:
        raise
    except Exception as exc:  # RecursionError, MemoryError, a model's own bug: still a problem of the file
        reason = f"cannot load ({type(exc).__name__}: {(str(exc) or 'no detail')[:200]})"
        raise PolicyError([Problem(str(file), None, "", reason)]) from exc


def _dotted(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def validate_data(data: Any, model: type[M], file: str, lines: dict[tuple[Any, ...], int] | None = None) -> M:
    """Validate an already-parsed document; every error becomes a :class:`Problem`."""
    lines = lines or {}
    with _as_problem(file):
        try:
            return model.model_validate(data if data is not None else {})
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                # pydantic adds the union member or validator name to the location; keep real keys only
                loc = tuple(p for p in err["loc"]
                            if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
                reason = str(err["msg"]).removeprefix("Value error, ")
                problems.append(Problem(file, _line_of(lines, loc), _dotted(loc), reason))
            raise PolicyError(problems) from exc


def kind_of(path: Path, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("kind"), str):
        return str(data["kind"])
    return path.stem


def _strip_kind(data: Any) -> Any:
    return {k: v for k, v in data.items() if k != "kind"} if isinstance(data, dict) else data


def _model_of(path: Path, data: Any, kind: str | None, lines: dict[tuple[Any, ...], int]) -> type[BaseModel]:
    kind = kind or kind_of(path, data)
    if kind not in KINDS:
        named = isinstance(data, dict) and "kind" in data
        raise PolicyError([Problem(str(path), lines.get(("kind",)) if named else None, "kind" if named else "",
                                   f"unknown policy kind {kind!r}: name the file or set kind: to one of "
                                   f"{', '.join(sorted(KINDS))}")])
    return model_for(kind)


def load_file(path: Path, kind: str | None = None) -> BaseModel:
    """Read and validate one policy file; its kind comes from ``kind``, ``kind:`` or the file stem.

    Raises PolicyError, and nothing else, for anything wrong with the file."""
    with _as_problem(path):
        data, lines = _read_yaml(path)
        return validate_data(_strip_kind(data), _model_of(path, data, kind, lines), str(path), lines)


def load(model: type[M], kind: str, path: Path | None = None, directory: Path | None = None) -> M:
    """The ``kind`` policy as ``model``: from ``path``, else ``<policy dir>/<kind>.yaml``.

    Raises PolicyError, and nothing else, for anything wrong with the file.
    Example: ``load(AutoscalingPolicy, "autoscaling", path)``
    """
    target = path or policy_dir(directory) / f"{kind}.yaml"
    with _as_problem(target):
        data, lines = _read_yaml(target)
        return validate_data(_strip_kind(data), model, str(target), lines)


def validate_paths(paths: list[Path]) -> tuple[list[str], list[Problem]]:
    """Validate files and every ``*.yaml``/``*.yml`` in directories; returns (files ok, problems)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                problems.append(Problem(str(path), None, "", "no policy files (*.yaml) here"))
            files.extend(found)
        else:
            files.append(path)
    ok: list[str] = []
    for file in files:
        try:
            load_file(file)
            ok.append(str(file))
        except PolicyError as exc:
            problems.extend(exc.problems)
    return ok, problems
