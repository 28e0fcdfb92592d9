"""``opsctl ingest``: send files to the core."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit

HELP = """Ingest .txt, .md, .json and .jsonl files or directories through the API, in batches.

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

Example: opsctl ingest ./docs examples/notes.jsonl --wait
"""


def ingest(
    paths: list[Path] = typer.Argument(..., help="files or directories"),
    batch_size: int = typer.Option(200, "--batch-size", min=1, max=1000, help="documents per request"),
    wait: bool = typer.Option(False, "--wait", help="wait until every job is done"),
    timeout: float = typer.Option(600, "--timeout", help="seconds to wait with --wait"),
    api_url: str | None = typer.Option(None, "--api-url", envvar="OPSCTL_API_URL", help="the core API"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPSCTL_API_KEY", help="a tenant API key"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from core.errors import OperationFailed
    from opsctl.context import api_client, settings
    from opsctl.loader import IngestReport, JobCounts, send, wait_for_jobs
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

    sources, unreadable = read_files(paths, on_refused=refused)
    for external_id, files in duplicate_ids(sources):
        where = ", ".join(dict.fromkeys(str(f) for f in files))
        say(f"warning: {len(files)} documents have the external id {external_id!r} ({where}): the last one sent "
            "replaces the others")
    report = IngestReport(refused=list(unreadable))
    with api_client(settings(api_url=api_url, api_key=api_key)) as client, counted_progress() as progress:
        bar.append(progress)
        task = progress.add_task("sending", total=sum(len(s.docs) for s in sources))
        sent = send(client, sources, batch_size, on_sent=lambda n: progress.advance(task, n), on_refused=refused)
        report.job_ids, report.documents = sent.job_ids, sent.documents
        report.refused += sent.refused
        report.files = len(sources) - len(sent.refused)
        if wait and report.job_ids:
            waiting = progress.add_task("indexing", total=len(set(report.job_ids)))

            def show(counts: JobCounts) -> None:
                dead = f", {counts.dead} dead" if counts.dead else ""
                progress.update(waiting, completed=counts.finished, description=f"indexing{dead}")

            report.jobs = wait_for_jobs(client, report.job_ids, timeout, show)
        elif wait:
            report.jobs = JobCounts()
    emit(report.as_dict() if output is not Output.table else report.row(), output)
    problems = [report.summary()] if report.refused else []
    jobs = report.jobs
    if jobs is not None and (jobs.dead or jobs.pending):
        late = f"{jobs.pending} still pending when --timeout ({timeout:g} s) ran out" if jobs.pending else ""
        dead = f"{jobs.dead} dead (see GET /v1/jobs/ID for the error)" if jobs.dead else ""
        said = ", ".join(p for p in (f"{jobs.done} done" if jobs.done else "", dead, late) if p)
        problems.append(f"not every document was indexed: {said}")
    if problems:
        raise OperationFailed("; ".join(problems))
