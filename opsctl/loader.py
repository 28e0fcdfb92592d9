"""Sending documents to the core in batches, with retries; a file the API refuses does not stop the rest.

The documents come from :mod:`opsctl.readers` (one reader per file format), grouped by file
(:class:`~opsctl.readers.Source`). A batch the API refuses for what it holds (a 4xx other than
401/403: a document it finds invalid) is sent again file by file, so only the files it refuses
are refused, and their documents in later batches are not sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import httpx

from core.errors import ConfigError, OperationFailed, ServiceUnavailable
from core.humanize import plural
from core.ingest.fair import PRIORITY_HEADER
from opsctl.readers import Document, Refusal, Source

T = TypeVar("T")

RETRY_STATUSES = (429, 500, 502, 503, 504)


def json_size(doc: Any) -> int:
    return len(json.dumps(doc, ensure_ascii=False).encode())


def batches(docs: Iterable[T], max_docs: int, max_bytes: int, size: Callable[[T], int] = json_size,
            ) -> Iterator[list[T]]:
    """Group documents into requests of at most ``max_docs`` and about ``max_bytes`` of JSON (pure)."""
    batch: list[T] = []
    total = 0
    for doc in docs:
        doc_size = size(doc)
        if batch and (len(batch) >= max_docs or total + doc_size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(doc)
        total += doc_size
    if batch:
        yield batch


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): Retry-After when given, else 0.5·2^n (pure)."""
    if retry_after and retry_after.isdigit():
        return float(retry_after)
    return float(min(30.0, 0.5 * 2 ** (attempt - 1)))


class BatchRefused(OperationFailed):
    """The API refused a request for what it holds (a 4xx other than 401/403); ``detail``: its answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the API refused a batch: {detail}")
        self.detail = detail


def post_retrying(client: httpx.Client, path: str, attempts: int = 6, sleep: Callable[[float], None] = time.sleep,
                  **request: Any) -> httpx.Response:
    """POST to ``path`` until the API takes it (its 2xx answer): transport errors, 429 and 5xx are tried
    again (after Retry-After when the API says it), up to ``attempts`` times (then ``ServiceUnavailable``).
    ``BatchRefused`` when the API refuses what the request holds, ``ConfigError`` when it refuses the key."""
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            response = client.post(path, **request)
        except httpx.TransportError as exc:
            last = f"cannot reach the API: {exc}"
            sleep(retry_delay(attempt, None))
            continue
        if response.is_success:
            return response
        try:
            err = response.json()["error"]
            last = f"{response.status_code} {err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            last = f"{response.status_code} {response.text[:200]}"
        if response.status_code in (401, 403):
            raise ConfigError(f"the API refused the key: {last}")
        if response.status_code not in RETRY_STATUSES:
            raise BatchRefused(last)
        sleep(retry_delay(attempt, response.headers.get("retry-after")))
    raise ServiceUnavailable(f"gave up after {attempts} attempts: {last}")


def post_batch(client: httpx.Client, batch: list[dict[str, Any]], attempts: int = 6,
               sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """POST one batch of documents (:func:`post_retrying`) as bulk (``Ingest-Priority``: the company's
    interactive sends go first, ``core.ingest.fair``); returns the job ids."""
    response = post_retrying(client, "/v1/documents", attempts, sleep, json={"documents": batch},
                             headers={PRIORITY_HEADER: "bulk"})
    return list(response.json()["job_ids"])


@dataclass
class Sent:
    """What sending some files came to: the job ids, the documents accepted, the files the API refused."""

    job_ids: list[int] = field(default_factory=list)
    documents: int = 0
    refused: list[Refusal] = field(default_factory=list)


def send(client: httpx.Client, sources: list[Source], batch_size: int, max_bytes: int = 4 * 1024 * 1024, *,
         on_sent: Callable[[int], None] = lambda _: None, on_refused: Callable[[Refusal], None] = lambda _: None,
         post: Callable[[httpx.Client, list[Document]], list[int]] = post_batch) -> Sent:
    """Send every document of ``sources`` in batches. A batch the API refuses (``BatchRefused``) is sent
    again file by file: a file whose part is refused is refused (``on_refused``) and the rest of its
    documents are not sent; the other files go on. ``on_sent`` gets the count of documents dealt with
    (accepted or dropped with their file) after each request, for a progress bar."""
    sent = Sent()
    refused: dict[int, str] = {}
    accepted = [0] * len(sources)

    def refuse(index: int, detail: str) -> None:
        before = f" ({accepted[index]} of its {len(sources[index].docs)} documents were accepted before)" \
            if accepted[index] else ""
        refused[index] = f"the API refused it: {detail}{before}"
        refusal = Refusal(sources[index].path, refused[index])
        sent.refused.append(refusal)
        on_refused(refusal)

    def post_part(part: list[tuple[int, Document]]) -> None:
        sent.job_ids.extend(post(client, [doc for _, doc in part]))
        sent.documents += len(part)
        for index, _ in part:
            accepted[index] += 1

    items = [(index, doc) for index, source in enumerate(sources) for doc in source.docs]
    for batch in batches(items, batch_size, max_bytes, size=lambda item: json_size(item[1])):
        part = [item for item in batch if item[0] not in refused]
        try:
            if part:
                post_part(part)
        except BatchRefused as whole:
            by_file: dict[int, list[tuple[int, Document]]] = {}
            for item in part:
                by_file.setdefault(item[0], []).append(item)
            if len(by_file) == 1:
                refuse(part[0][0], whole.detail)
            else:
                for index, own in by_file.items():
                    try:
                        post_part(own)
                    except BatchRefused as exc:
                        refuse(index, exc.detail)
        on_sent(len(batch))
    return sent


JOB_STATUSES = ("done", "dead", "pending")  # what `ingest --wait` reports: finished well, gave up, not yet


@dataclass(frozen=True)
class JobCounts:
    """Where the jobs of one ingest stand: done, dead (out of attempts) or still pending."""

    done: int = 0
    dead: int = 0
    pending: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.dead

    def statuses(self) -> dict[str, int]:
        """The non-zero counts by status, e.g. ``{"done": 2}``."""
        return {name: count for name, count in zip(JOB_STATUSES, (self.done, self.dead, self.pending), strict=True)
                if count}


@dataclass(frozen=True)
class MailCounts:
    """The messages of a run: accepted (new), duplicate (the company already had that Message-ID: nothing
    written), refused (by the API, or before sending: too large, not mail)."""

    accepted: int = 0
    duplicate: int = 0
    refused: int = 0


@dataclass
class IngestReport:
    files: int = 0  # files sent (or empty), not refused
    documents: int = 0  # documents the API accepted
    job_ids: list[int] = field(default_factory=list)
    jobs: JobCounts | None = None  # with --wait: how the jobs ended
    refused: list[Refusal] = field(default_factory=list)  # files (and messages) not sent, and why
    mail: MailCounts | None = None  # when the run found mail
    interrupted: bool = False  # Ctrl-C stopped the mail: the rest was not sent

    def summary(self) -> str:
        """``3 files ingested, 1 refused`` (with mail: ``…, 40 messages accepted, 2 duplicate, 1 refused``)."""
        said = f"{plural(self.files, 'file')} ingested"
        if self.mail is not None:
            said += f", {plural(self.mail.accepted, 'message')} accepted, {self.mail.duplicate} duplicate"
        return f"{said}, {len(self.refused)} refused"

    def problems(self, timeout: float) -> list[str]:
        """Why the run failed (exit 1), if it did: files or messages refused, jobs dead or still pending when
        ``--timeout`` (``timeout`` seconds) ran out."""
        problems = [self.summary()] if self.refused else []
        jobs = self.jobs
        if jobs is not None and (jobs.dead or jobs.pending):
            late = f"{jobs.pending} still pending when --timeout ({timeout:g} s) ran out" if jobs.pending else ""
            dead = f"{jobs.dead} dead (see GET /v1/jobs/ID for the error)" if jobs.dead else ""
            said = ", ".join(p for p in (f"{jobs.done} done" if jobs.done else "", dead, late) if p)
            problems.append(f"not every {'document and message' if self.mail else 'document'} was indexed: {said}")
        return problems

    def as_dict(self) -> dict[str, Any]:
        """What ``-o json|yaml`` prints: counts, the messages by outcome when there was mail, the refused
        files and messages, and with --wait the jobs by status."""
        out: dict[str, Any] = {"files": self.files, "documents": self.documents}
        if self.mail is not None:
            out["messages"] = asdict(self.mail)
        out.update(jobs=len(set(self.job_ids)), refused=[r.as_dict() for r in self.refused])
        if self.jobs is not None:
            out["statuses"] = self.jobs.statuses()
        return out

    def row(self) -> dict[str, Any]:
        """What the table prints: one row, the refused files and messages counted, a column per status
        (zeros shown); with mail, the messages accepted and the duplicates."""
        out = {k: v for k, v in self.as_dict().items() if k not in ("statuses", "messages")}
        if self.mail is not None:
            out = {"files": self.files, "documents": self.documents, "messages": self.mail.accepted,
                   "duplicates": self.mail.duplicate, **out}
        out["refused"] = len(self.refused)
        if self.jobs is not None:
            out.update(zip(JOB_STATUSES, (self.jobs.done, self.jobs.dead, self.jobs.pending), strict=True))
        return out


def capped(timeout: httpx.Timeout, seconds: float) -> httpx.Timeout:
    """``timeout`` with no phase longer than ``seconds`` (pure)."""
    def cap(value: float | None) -> float:
        return seconds if value is None else min(value, seconds)

    return httpx.Timeout(connect=cap(timeout.connect), read=cap(timeout.read), write=cap(timeout.write),
                         pool=cap(timeout.pool))


def wait_for_jobs(client: httpx.Client, job_ids: list[int], timeout: float,
                  on_progress: Callable[[JobCounts], None] | None = None, *,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> JobCounts:
    """Poll ``GET /v1/jobs/{id}`` until every job is done or dead, or ``timeout`` seconds pass.

    ``timeout`` is a deadline: it is checked before each request, and no request may wait longer
    than the time left (the client's own timeout, capped), so a hung API costs at most the
    deadline, not one client timeout per pending job. ``on_progress`` gets the counts once before
    the first poll and again each time a job finishes, so a progress bar moves with the jobs, not
    with the polling passes. A job that cannot be read (the API briefly unreachable, a non-200
    answer, a request cut short by the deadline) stays pending and is asked again.
    """
    pending = list(dict.fromkeys(job_ids))
    total = len(pending)
    done = dead = 0
    if on_progress:
        on_progress(JobCounts(pending=total))
    deadline = clock() + timeout
    while pending:
        still = []
        for i, job_id in enumerate(pending):
            remaining = deadline - clock()
            if remaining <= 0:
                still.extend(pending[i:])
                break
            try:
                response = client.get(f"/v1/jobs/{job_id}", timeout=capped(client.timeout, remaining))
                status = response.json().get("status") if response.status_code == 200 else None
            except (httpx.TransportError, ValueError):
                status = None
            if status not in ("done", "dead"):
                still.append(job_id)
                continue
            done, dead = (done + 1, dead) if status == "done" else (done, dead + 1)
            if on_progress:
                on_progress(JobCounts(done, dead, total - done - dead))
        pending = still
        remaining = deadline - clock()
        if not pending or remaining <= 0:
            break
        sleep(min(0.5, remaining))
    return JobCounts(done, dead, len(pending))
