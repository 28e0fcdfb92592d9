"""``opsctl ingest``: send files to the core."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit


class Format(StrEnum):
    auto = "auto"
    email = "email"


HELP = """Ingest documents (.txt, .md, .json, .jsonl) and mail (.eml, mbox, Maildir) through the API.

A text file is one document whose external id is its path from the directory named, that
directory's name included (`opsctl ingest ./docs` gives docs/guide/cache.md; a file named by
itself keeps its path as written). JSON holds a document, a list, or {"documents": [...]}; JSONL
one document per line; one without "external_id" gets <file id>#<index or line>. Re-ingesting
unchanged files is a no-op; two documents with the same id in one run are warned about (the last
one sent replaces the other).

A file that cannot be read or that the API refuses (not UTF-8, invalid JSON, …) is reported on
stderr and skipped; the others are sent, and the command exits 1 at the end with how many files
were ingested and refused. A path that does not exist, or files that hold no document at all, are
a usage error (exit 2) and nothing is sent. --wait shows the jobs finishing (a progress bar on
stderr) and exits 1 unless every job is done.

Mail goes in batches of --batch-size messages (one mbox per request, --parallel requests at a
time): .eml files, mbox files (by suffix .mbox or .mbx, or by a first line "From <address>
<date>"; streamed, whatever their size) and Maildirs (cur/ and new/, Maildir++ folders like .Sent/
included, tmp/ skipped). --format email sends every
file given as one message. A message the company already has (same Message-ID) counts as a
duplicate and writes nothing, so ingesting a folder again is safe; a message that is refused is
reported on stderr with its file (and its number and line in an mbox), the others go on. Ctrl-C
stops after the requests in flight are answered: what was accepted is stored, and running the same
command again sends the rest (exit 130).

Everything it sends is queued as bulk (header Ingest-Priority: bulk; mbox requests are bulk
anyway): the company's interactive sends (one document, a webhook, one e-mail) are ingested first
and the import keeps progressing (docs/ingest-queue.md).

\b
Example: opsctl ingest ./docs examples/notes.jsonl --wait
         opsctl ingest ~/Maildir archive.mbox --parallel 8
"""


def ingest(
    paths: list[Path] = typer.Argument(..., help="files or directories"),
    format: Format = typer.Option(Format.auto, "--format", help="auto (by suffix and content) or email (every "
                                  "file one mail message)"),
    batch_size: int = typer.Option(200, "--batch-size", min=1, max=1000,
                                   help="documents (or mail messages) per request"),
    parallel: int = typer.Option(4, "--parallel", min=1, max=32, help="mail requests sent at once"),
    wait: bool = typer.Option(False, "--wait", help="wait until every job is done"),
    timeout: float = typer.Option(600, "--timeout", help="seconds to wait with --wait"),
    api_url: str | None = typer.Option(None, "--api-url", envvar="OPSCTL_API_URL", help="the core API"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPSCTL_API_KEY", help="a tenant API key"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from core.errors import OperationFailed
    from opsctl.context import api_client, settings
    from opsctl.intake import run_ingest
    from opsctl.output import counted_progress
    from opsctl.readers import Refusal, duplicate_ids, read_files

    bar: list[Any] = []  # the progress display while it shows: lines go above it

    def say(text: str) -> None:
        if bar:
            bar[0].console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr)

    def refused(refusal: Refusal) -> None:
        say(f"error: {refusal}")

    inputs = read_files(paths, on_refused=refused, format=format.value)
    for external_id, files in duplicate_ids(inputs.sources):
        where = ", ".join(dict.fromkeys(str(f) for f in files))
        say(f"warning: {len(files)} documents have the external id {external_id!r} ({where}): the last one sent "
            "replaces the others")
    with api_client(settings(api_url=api_url, api_key=api_key)) as client, counted_progress() as progress:
        bar.append(progress)
        report = run_ingest(client, inputs, progress, batch_size=batch_size, parallel=parallel, wait=wait,
                            timeout=timeout, on_refused=refused)
    emit(report.as_dict() if output is not Output.table else report.row(), output)
    if report.interrupted:
        print(f"interrupted: {report.summary()} before Ctrl-C; the rest was not sent (running the same command "
              "again sends it: what was accepted comes back as duplicates)", file=sys.stderr)
        raise typer.Exit(130)
    problems = report.problems(timeout)
    if problems:
        raise OperationFailed("; ".join(problems))
