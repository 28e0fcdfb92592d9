"""``opsctl ingest``: send files to the core."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit

HELP = """Ingest .txt, .md, .json and .jsonl files or directories through the API, in batches.

A text file is one document (its path is the external id); JSON holds a document, a list, or
{"documents": [...]}; JSONL one document per line. Re-ingesting unchanged files is a no-op.

Example: opsctl ingest ./docs notes.jsonl --wait
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
    from rich.progress import Progress

    from core.errors import OperationFailed
    from opsctl.context import api_client, settings
    from opsctl.loader import IngestReport, batches, find_files, post_batch, read_documents, wait_for_jobs

    files = find_files(paths)
    report = IngestReport(files=len(files))
    docs: list[dict[str, object]] = []
    for path in files:
        root = next((p for p in paths if p.is_dir() and path.is_relative_to(p)), None)
        docs.extend(read_documents(path, root))
    report.documents = len(docs)
    with api_client(settings(api_url=api_url, api_key=api_key)) as client, \
            Progress(transient=True, disable=output is not Output.table) as progress:
        task = progress.add_task("sending", total=len(docs))
        for batch in batches(docs, batch_size, 4 * 1024 * 1024):
            report.job_ids.extend(post_batch(client, batch))
            progress.advance(task, len(batch))
        if wait and report.job_ids:
            unique = len(set(report.job_ids))
            waiting = progress.add_task("indexing", total=unique)
            report.statuses = wait_for_jobs(client, report.job_ids, timeout,
                                            lambda n: progress.update(waiting, completed=n))
    emit({"files": report.files, "documents": report.documents, "jobs": len(set(report.job_ids)),
          **({"statuses": report.statuses} if wait else {})}, output)
    if wait and (report.statuses.get("dead") or report.statuses.get("pending")):
        raise OperationFailed(f"not every document was indexed: {report.statuses}")
