"""Printing data the kubectl way: ``-o table|json|yaml``; messages go to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import typer


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OUTPUT_OPTION = typer.Option(Output.table, "--output", "-o", help="table, json or yaml")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def emit(data: Any, output: Output, *, columns: Sequence[tuple[str, str]] | None = None,
         title: str | None = None) -> None:
    """Print ``data`` (a dict or a list of dicts) as a rich table, JSON or YAML on stdout."""
    if output is Output.json:
        sys.stdout.write(json.dumps(_plain(data), indent=2) + "\n")
        return
    if output is Output.yaml:
        import yaml

        sys.stdout.write(yaml.safe_dump(_plain(data), sort_keys=False))
        return
    from rich.console import Console
    from rich.table import Table

    rows = data if isinstance(data, list) else [data]
    cols = list(columns) if columns else [(k, k.upper().replace("_", " ")) for k in (rows[0] if rows else {})]
    table = Table(title=title, show_edge=False, header_style="bold")
    for _, header in cols:
        table.add_column(header, overflow="fold")  # ids and names wrap, never end in "…": they get pasted
    for row in rows:
        table.add_row(*("" if row.get(key) is None else str(row.get(key)) for key, _ in cols))
    # a pipe or a file gets whole rows (like kubectl), a terminal gets rows folded to its width
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def info(message: str) -> None:
    sys.stderr.write(message + "\n")


@contextmanager
def counted_progress() -> Iterator[Any]:
    """A rich progress display on stderr for work counted in items (a bar, done/total, elapsed
    time), so stdout keeps only the data of ``-o``. Transient; rich draws it on a terminal only."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        yield bar
