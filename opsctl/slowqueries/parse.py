"""Slow queries, the pure part: read the server's JSON log lines, normalise statements, group them.

PostgreSQL (``log_min_duration_statement``, ``log_destination = jsonlog``) writes one JSON object a
line; a statement over the threshold is a ``message`` of the form::

    duration: 812.345 ms  statement: SELECT ... WHERE company_id = 7            (simple protocol)
    duration: 812.345 ms  execute <unnamed>: SELECT ... WHERE company_id = $1   (extended protocol)

with the bound values in ``detail``: ``Parameters: $1 = '7', $2 = 'abc'``. The parse and bind
steps of the extended protocol are logged apart (``parse <unnamed>:``, ``bind <unnamed>:``) when
they alone pass the threshold; they are not executions and are left out.

A statement's company, where known, is the value compared with ``company_id`` (a literal, or the
parameter's logged value); statements are grouped by their text with every literal and parameter
made ``?`` (:func:`normalise`), and each group has its count, total, p95 and max time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

_MESSAGE = re.compile(r"\Aduration: (\d+(?:\.\d+)?) ms\s+(?:statement|execute [^:]*): (.*)\Z", re.DOTALL)
_PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")
_COMPANY = re.compile(r"\bcompany_id\s*=\s*(\$\d+|\d+|'\d+')", re.IGNORECASE)

# normalising: one scan left to right (a comment marker in a string is text, a quote in a comment is
# not a string), then the lists the literals leave, then the spaces
_TOKEN = re.compile(r"""
    (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<name>"(?:[^"]|"")*")
  | (?P<literal>
        \b[eE]'(?:[^'\\]|\\.|'')*'
      | (?:\b(?:[bBxX]|[uU]&))?'(?:[^']|'')*'
      | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$
      | \$\d+
      | (?<![\w$.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])
    )""", re.DOTALL | re.VERBOSE)
_LIST = re.compile(r"\?(?:\s*,\s*\?)+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SlowStatement:
    """One logged execution over the threshold."""

    at: datetime
    duration_ms: float
    statement: str
    company_id: int | None = None
    database: str | None = None
    user: str | None = None
    application: str | None = None


def parameters(detail: str | None) -> dict[int, str | None]:
    """``Parameters: $1 = '7', $2 = NULL`` → {1: "7", 2: None} (quotes undone)."""
    if not detail or not detail.startswith("Parameters:"):
        return {}
    return {int(n): None if v == "NULL" else v[1:-1].replace("''", "'") for n, v in _PARAM.findall(detail)}


def company_of(statement: str, params: dict[int, str | None]) -> int | None:
    """The company a statement is about: what ``company_id =`` compares with first (a literal, or a
    parameter's logged value); None when it names none or the value is not an id."""
    found = _COMPANY.search(statement)
    if found is None:
        return None
    ref = found.group(1)
    value = params.get(int(ref[1:])) if ref.startswith("$") else ref.strip("'")
    return int(value) if value is not None and value.isdigit() else None


_ZONE = re.compile(r"\A([+-])(\d\d)(?::?(\d\d))?\Z")


def log_time(text: str) -> datetime | None:
    """A jsonlog ``timestamp`` (``2026-11-27 05:45:01.123 UTC``, in ``log_timezone``): aware, or None
    for a zone named otherwise than UTC, GMT or an offset (the policy sets log_timezone = UTC)."""
    stamp, _, zone = text.rpartition(" ")
    try:
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return None
    if zone in ("UTC", "GMT"):
        return at.replace(tzinfo=UTC)
    offset = _ZONE.match(zone)
    if offset is None:
        return None
    delta = timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3) or 0))
    return at.replace(tzinfo=timezone(-delta if offset.group(1) == "-" else delta)).astimezone(UTC)


def parse_line(line: str) -> SlowStatement | None:
    """A jsonlog line's slow statement; None for any other line (other messages, parse/bind steps,
    a line cut short)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    found = _MESSAGE.match(str(entry.get("message", "")))
    if found is None:
        return None
    at = log_time(str(entry.get("timestamp")))
    if at is None:
        return None
    statement = found.group(2).strip()
    return SlowStatement(at, float(found.group(1)), statement,
                         company_of(statement, parameters(entry.get("detail"))), entry.get("dbname"),
                         entry.get("user"), entry.get("application_name"))


def parse_log(text: str) -> list[SlowStatement]:
    return [s for s in (parse_line(line) for line in text.splitlines() if line.startswith("{")) if s is not None]


def _token(found: re.Match[str]) -> str:
    if found.group("comment") is not None:
        return " "
    return found.group("name") or "?"


def normalise(statement: str) -> str:
    """The statement with every literal and parameter made ``?``, lists of them ``?, ...``, and
    comments and runs of whitespace gone: executions of one query with other values fall together."""
    text = _TOKEN.sub(_token, statement)
    text = _LIST.sub("?, ...", text)
    return _SPACE.sub(" ", text).strip().rstrip(";").strip()


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Group:
    """Executions of one normalised statement."""

    query: str
    durations: list[float] = field(default_factory=list)
    companies: dict[int, int] = field(default_factory=dict)  # company id → executions
    last_at: datetime | None = None

    @property
    def total_ms(self) -> float:
        return sum(self.durations)

    def as_dict(self, names: dict[int, str] | None = None) -> dict[str, object]:
        """``companies``: the companies known, most executions first, by name where ``names`` has one."""
        names = names or {}
        known = sorted(self.companies.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"query": self.query, "count": len(self.durations), "total_ms": round(self.total_ms, 3),
                "p95_ms": round(percentile(self.durations, 95), 3), "max_ms": round(max(self.durations), 3),
                "companies": [names.get(c, str(c)) for c, _ in known],
                "last_at": None if self.last_at is None else self.last_at.isoformat()}


def group(statements: Iterable[SlowStatement], since: datetime | None = None) -> list[Group]:
    """The statements logged at or after ``since``, grouped by normalised text, by total time
    (largest first; ties by text)."""
    groups: dict[str, Group] = {}
    for s in statements:
        if since is not None and s.at < since:
            continue
        query = normalise(s.statement)
        g = groups.get(query)
        if g is None:
            g = groups[query] = Group(query)
        g.durations.append(s.duration_ms)
        if s.company_id is not None:
            g.companies[s.company_id] = g.companies.get(s.company_id, 0) + 1
        if g.last_at is None or s.at > g.last_at:
            g.last_at = s.at
    return sorted(groups.values(), key=lambda g: (-g.total_ms, g.query))
