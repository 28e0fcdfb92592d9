"""``opsctl ingest``: send files to the core."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit

HELP = """Ingest .txt, .md, .json and .jsonl files or directories through the API, in batches.

A text file is one document (its path is the external id); JSON holds a document, a list, or
{"documents": [...]}; JSONL one document per line. Re-ingesting unchanged files is a no-op.
A path that does not exist, or holds no document, is an error (exit 2) and nothing is sent.
--wait shows the jobs finishing (a progress bar on stderr) and exits 1 unless every job is done.

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
    from opsctl.loader import IngestReport, JobCounts, batches, load_documents, post_batch, wait_for_jobs
    from opsctl.output import counted_progress

    files, docs = load_documents(paths)
    report = IngestReport(files=len(files), documents=len(docs))
    with api_client(settings(api_url=api_url, api_key=api_key)) as client, counted_progress() as progress:
        task = progress.add_task("sending", total=len(docs))
        for batch in batches(docs, batch_size, 4 * 1024 * 1024):
            report.job_ids.extend(post_batch(client, batch))
            progress.advance(task, len(batch))
        if wait:
            waiting = progress.add_task("indexing", total=len(set(report.job_ids)))

            def show(counts: JobCounts) -> None:
                dead = f", {counts.dead} dead" if counts.dead else ""
                progress.update(waiting, completed=counts.finished, description=f"indexing{dead}")

            report.jobs = wait_for_jobs(client, report.job_ids, timeout, show)
    emit(report.as_dict() if output is not Output.table else report.row(), output)
    jobs = report.jobs
    if jobs is not None and (jobs.dead or jobs.pending):
        late = f"{jobs.pending} still pending when --timeout ({timeout:g} s) ran out" if jobs.pending else ""
        dead = f"{jobs.dead} dead (see GET /v1/jobs/ID for the error)" if jobs.dead else ""
        said = ", ".join(p for p in (f"{jobs.done} done" if jobs.done else "", dead, late) if p)
        raise OperationFailed(f"not every document was indexed: {said}")
