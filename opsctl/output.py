"""Printing data the kubectl way: ``-o table|json|yaml``; messages go to stderr.

JSON and YAML carry the data as it is (booleans, exact byte counts, ISO 8601 timestamps with their
offset) in UTF-8. The table is for people, and one renderer phrases every cell the same way:
booleans ``yes``/``no``, lists joined with ``, ``, moments (datetimes and ISO 8601 strings with an
offset) in UTC as ``2026-11-26 18:03:27Z`` (:func:`timestamp`); byte counts read ``32.4 MiB`` where a
command passes them through :func:`size`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import typer

from core.humanize import format_bytes, plural

__all__ = ["OUTPUT_OPTION", "Output", "cell", "counted_progress", "emit", "info", "plural", "size", "timestamp"]


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OUTPUT_OPTION = typer.Option(Output.table, "--output", "-o", help="table, json or yaml")

YES, NO = "yes", "no"


def size(n: int | float | None) -> str:
    """A byte count for a table or a sentence: ``32.4 MiB`` (JSON and YAML keep the integer)."""
    return "" if n is None else format_bytes(n)


def timestamp(value: datetime | str | None) -> str:
    """A moment as every table shows it: UTC, to the second, ``2026-11-26 18:03:27Z``. Takes a
    datetime or an ISO 8601 string (what JSON output carries); a naive one is taken as UTC, the
    only zone opsctl stores."""
    if value is None or value == "":
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# a whole cell that is an ISO 8601 moment with its offset (what JSON output carries)
_ISO_MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)")


def cell(value: Any) -> str:
    """One table cell: what a person reads, never Python's repr. A moment (a datetime, or an ISO
    8601 string with its offset) reads as :func:`timestamp` does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return YES if value else NO
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_MOMENT.fullmatch(value)):
        return timestamp(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(cell(v) for v in value)
    return str(value)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default))


def emit(data: Any, output: Output, *, columns: Sequence[tuple[str, str]] | None = None,
         title: str | None = None) -> None:
    """Print ``data`` (a dict or a list of dicts) as a rich table, JSON or YAML on stdout."""
    if output is Output.json:
        sys.stdout.write(json.dumps(_plain(data), indent=2, ensure_ascii=False) + "\n")
        return
    if output is Output.yaml:
        import yaml

        sys.stdout.write(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows = data if isinstance(data, list) else [data]
    cols = list(columns) if columns else [(k, k.upper().replace("_", " ")) for k in (rows[0] if rows else {})]
    # cells and title as plain text: "[list] Re: hello" is a subject, not rich markup to drop
    table = Table(title=None if title is None else Text(title), show_edge=False, header_style="bold")
    for _, header in cols:
        table.add_column(header, overflow="fold")  # ids and names wrap, never end in "…": they get pasted
    for row in rows:  # a cell that draws itself (``__rich_console__``) is drawn so; the rest as plain text
        table.add_row(*(value if hasattr(value := row.get(key), "__rich_console__") else Text(cell(value))
                        for key, _ in cols))
    # a pipe or a file gets whole rows (like kubectl), a terminal gets rows folded to its width
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def info(message: str) -> None:
    sys.stderr.write(message + "\n")


def stderr_progress(*columns: Any) -> Any:
    """A transient rich ``Progress`` (``columns``, or rich's defaults) drawn on stderr and only when
    stderr is a terminal: stdout keeps only the data of ``-o``, and logs and pipes get no bars."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


@contextmanager
def counted_progress() -> Iterator[Any]:
    """Progress of work counted in items: a bar, done/total, elapsed time (``stderr_progress``). A task
    added with ``messages=0`` counts bytes instead (an mbox's messages are not known before it is read)
    and shows ``1,204 messages, 3.2 MiB/2.0 GiB``: keep its ``messages`` field up to date."""
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Counted(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self.items = MofNCompleteColumn()

        def render(self, task: Any) -> Any:
            if "messages" not in task.fields:
                return self.items.render(task)
            return Text(f"{plural(task.fields['messages'], 'message')}, {size(task.completed)}/{size(task.total)}",
                        style="progress.download")

    with stderr_progress(TextColumn("{task.description}"), BarColumn(), Counted(), TimeElapsedColumn()) as bar:
        yield bar
