"""``opsctl runbook list|show``: the on-call runbooks, one per alert, in the terminal."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit

app = typer.Typer(help="Read the on-call runbooks (one per alert).\n\nExample: opsctl runbook show BackupStale",
                  no_args_is_help=True)


@app.command("list")
def list_(output: Output = OUTPUT_OPTION) -> None:
    """List every runbook with its severity and when its alert fires.

    Example: opsctl runbook list -o json
    """
    from opsctl.runbooks import all_runbooks

    emit([book.summary() for book in all_runbooks()], output,
         columns=[("name", "NAME"), ("severity", "SEVERITY"), ("fires_when", "FIRES WHEN")])


@app.command("show")
def show(
    name: str = typer.Argument(..., help="alert name, any case (e.g. ingestbackloghigh)"),
    raw: bool = typer.Option(False, "--raw", help="print the Markdown source instead of rendering it"),
) -> None:
    """Show one runbook, rendered for the terminal.

    Example: opsctl runbook show IngestBacklogHigh
    """
    from opsctl.runbooks import find

    book = find(name)
    if raw:
        typer.echo(book.text, nl=False)
        return
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(book.text, code_theme="ansi_dark", hyperlinks=False))
