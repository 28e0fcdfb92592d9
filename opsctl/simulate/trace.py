"""Trace files: CSV with a header, ``time`` and ``demand``, optional columns named like the policy's metrics.

``time`` is seconds from the start (``0``, ``15``, ``30``…) or ISO 8601 (``2026-11-20T09:00:00Z``),
the same kind on every row, strictly increasing, at one interval (the first one: a longer interval
is a gap, a shorter one an irregular row). ``demand`` is work units per second, a number >= 0. A
metric column holds that metric's value (empty: the model's). Every problem is a
:class:`TraceError` naming ``file:line`` and the reason (exit 2)::

    trace load.csv:5: time 30 is not after the row before (45, line 4): sort the trace by time
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from core.errors import ConfigError
from opsctl.simulate.model import MAX_TRACE_SECONDS, Trace

MAX_BYTES = 64 << 20
TOLERANCE = 1e-6  # seconds: how far an interval may stray from the trace's step


class TraceError(ConfigError):
    """A trace that cannot be replayed: ``file:line: reason``."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"trace {file}{f':{line}' if line else ''}: {reason}")


def _number(text: str, what: str, file: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(file, line, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(file, line, f"{what} {text!r} is not a finite number")
    return value


def utc_time(text: str) -> datetime:
    """ISO 8601 ``text`` (``Z``, an offset, or none: UTC) as a moment in UTC: ValueError when it is not
    one, OverflowError when UTC cannot hold it (``0001-01-01T00:00:00+01:00``)."""
    at = datetime.fromisoformat(text)
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def _moment(text: str, file: str, line: int) -> datetime | None:
    """The ISO 8601 moment ``text`` names, or None when it is a number of seconds."""
    try:
        float(text)
        return None
    except ValueError:
        pass
    try:
        return utc_time(text)
    except ValueError:
        raise TraceError(file, line, f"time {text!r} is neither seconds nor an ISO 8601 time such as "
                                     "2026-11-20T09:00:00Z") from None
    except OverflowError:
        raise TraceError(file, line, f"time {text!r} is out of range in UTC") from None


def parse(text: str, file: str, metrics: Iterable[str] = ()) -> Trace:
    """The trace in CSV ``text`` (from ``file``, for messages); ``metrics``: the columns allowed besides."""
    rows = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration:
        raise TraceError(file, None, "empty: expected a header line with time and demand") from None
    except csv.Error as exc:
        raise TraceError(file, 1, f"not CSV: {exc}") from None
    missing = [c for c in ("time", "demand") if c not in header]
    if missing:
        raise TraceError(file, 1, f"the header has no {' and no '.join(missing)} column (it has: {', '.join(header)})")
    allowed = {"time", "demand", *metrics}
    unknown = [h for h in header if h not in allowed]
    if unknown:
        raise TraceError(file, 1, f"column(s) {', '.join(unknown)} are not metrics of the policy "
                                  f"(allowed besides time and demand: {', '.join(sorted(metrics)) or 'none'})")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise TraceError(file, 1, f"column(s) {', '.join(repeated)} repeated")
    extra = [h for h in header if h not in ("time", "demand")]
    times: list[float] = []
    demand: list[float] = []
    columns: dict[str, list[float | None]] = {h: [] for h in extra}
    start: datetime | None = None
    iso: bool | None = None
    lines: list[int] = []
    try:
        for record in rows:
            line = rows.line_num
            if not record or all(not c.strip() for c in record):
                continue
            if len(record) != len(header):
                raise TraceError(file, line, f"{len(record)} field(s), the header has {len(header)}")
            cells = dict(zip(header, (c.strip() for c in record), strict=True))
            moment = _moment(cells["time"], file, line)
            if iso is None:
                iso = moment is not None
                start = moment
            elif iso != (moment is not None):
                raise TraceError(file, line, "time mixes seconds and ISO 8601 times: use one kind")
            t = (moment - start).total_seconds() if moment is not None and start is not None \
                else _number(cells["time"], "time", file, line)
            if not iso and t < 0:
                raise TraceError(file, line, f"time {cells['time']} is negative")
            if times:
                step = times[1] - times[0] if len(times) > 1 else None
                gap = t - times[-1]
                if gap <= 0:
                    raise TraceError(file, line, f"time {cells['time']} is not after the row before "
                                                 f"(line {lines[-1]}): sort the trace by time")
                if step is not None and gap > step + TOLERANCE:
                    raise TraceError(file, line, f"a gap: {gap:g} s since the row before (line {lines[-1]}), "
                                                 f"the trace's interval is {step:g} s: fill it in")
                if step is not None and gap < step - TOLERANCE:
                    raise TraceError(file, line, f"{gap:g} s since the row before (line {lines[-1]}), the "
                                                 f"trace's interval is {step:g} s: one interval throughout")
            d = _number(cells["demand"], "demand", file, line)
            if d < 0:
                raise TraceError(file, line, f"demand {cells['demand']} is negative")
            for h in extra:
                cell = cells[h]
                value = None if cell == "" else _number(cell, h, file, line)
                if value is not None and value < 0:
                    raise TraceError(file, line, f"{h} {cell} is negative")
                columns[h].append(value)
            times.append(t)
            demand.append(d)
            lines.append(line)
            if t - times[0] > MAX_TRACE_SECONDS:
                raise TraceError(file, line, f"the trace is longer than {MAX_TRACE_SECONDS} s (31 days)")
    except csv.Error as exc:
        raise TraceError(file, rows.line_num, f"not CSV: {exc}") from None
    if len(times) < 2:
        raise TraceError(file, None, f"{'one row' if times else 'no rows'} after the header: a trace needs two or "
                                     "more (the interval between them is how long each row lasts)")
    offset = times[0]
    step = times[1] - times[0]
    return Trace(tuple(t - offset for t in times), tuple(demand), step,
                 {h: tuple(v) for h, v in columns.items()}, start)


def read(path: Path, metrics: Iterable[str] = ()) -> Trace:
    """The trace in the CSV file at ``path``; TraceError for anything wrong with it."""
    from opsctl.files import FileProblem, read_text

    try:
        text = read_text(path, MAX_BYTES, "a trace")
    except FileProblem as exc:
        raise TraceError(str(path), exc.line, exc.reason) from exc
    return parse(text, str(path), metrics)


def dump(trace: Trace) -> str:
    """``trace`` as the CSV :func:`parse` reads back: ``time`` in seconds from the start (ISO 8601 when
    the trace has a start moment), ``demand``, then its metric columns (empty where the model's)."""
    from datetime import timedelta

    from opsctl.scaling.snapshot import iso

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(trace.columns)
    writer.writerow(["time", "demand", *names])
    for i, (t, d) in enumerate(zip(trace.times, trace.demand, strict=True)):
        when = iso(trace.start + timedelta(seconds=t)) if trace.start else f"{t:g}"
        cells = [trace.columns[n][i] for n in names]
        writer.writerow([when, repr(d), *("" if c is None else repr(c) for c in cells)])
    return out.getvalue()
