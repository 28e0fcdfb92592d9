"""One run of ``opsctl ingest``: the documents in batches (:mod:`opsctl.loader`), then the mail in batches
of messages (:mod:`opsctl.mailsend`), then with ``wait`` the jobs, each step shown on a progress display;
the outcome is an :class:`~opsctl.loader.IngestReport` the command prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from opsctl.loader import IngestReport, JobCounts, send, wait_for_jobs
from opsctl.mailsend import send_mail
from opsctl.readers import Inputs, Refusal, nothing_to_ingest


def run_ingest(client: httpx.Client, inputs: Inputs, progress: Any, *, batch_size: int, parallel: int, wait: bool,
               timeout: float, on_refused: Callable[[Refusal], None]) -> IngestReport:
    """Send ``inputs`` and, with ``wait``, follow their jobs. ``progress``: a rich ``Progress`` (from
    :func:`opsctl.output.counted_progress`). A Ctrl-C while mail is sent ends the run at once (the
    report says ``interrupted``); mail files that hold no message at all, with nothing else sent or
    refused, are a usage error."""
    report = IngestReport(refused=list(inputs.refused))
    sources = inputs.sources
    if sources or not inputs.mail:
        task = progress.add_task("sending", total=sum(len(s.docs) for s in sources))
        sent = send(client, sources, batch_size, on_sent=lambda n: progress.advance(task, n), on_refused=on_refused)
        report.job_ids, report.documents = sent.job_ids, sent.documents
        report.refused += sent.refused
        report.files = len(sources) - len(sent.refused)
    if inputs.mail:
        mail = progress.add_task("mail", total=sum(m.size for m in inputs.mail), messages=0)
        dealt = [0]  # messages (and unreadable files) dealt with

        def done(size: int) -> None:
            dealt[0] += 1
            progress.update(mail, advance=size, messages=dealt[0])

        mailed = send_mail(client, inputs.mail, parallel, on_done=done, on_refused=on_refused, batch_size=batch_size)
        report.files += mailed.files
        report.job_ids += mailed.job_ids
        report.refused += mailed.refused
        report.mail, report.interrupted = mailed.counts(), mailed.interrupted
        if report.interrupted:
            return report
        if not (report.documents or report.refused or mailed.accepted + mailed.duplicate):
            raise nothing_to_ingest([m.path for m in inputs.mail], "no message")
    if wait and report.job_ids:
        waiting = progress.add_task("indexing", total=len(set(report.job_ids)))

        def show(counts: JobCounts) -> None:
            dead = f", {counts.dead} dead" if counts.dead else ""
            progress.update(waiting, completed=counts.finished, description=f"indexing{dead}")

        report.jobs = wait_for_jobs(client, report.job_ids, timeout, show)
    elif wait:
        report.jobs = JobCounts()
    return report
