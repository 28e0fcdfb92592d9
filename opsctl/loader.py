"""Reading files into documents and sending them to the core in batches, with retries."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.errors import ConfigError, OperationFailed, ServiceUnavailable

EXTENSIONS = (".txt", ".md", ".json", ".jsonl")
RETRY_STATUSES = (429, 500, 502, 503, 504)


def find_files(paths: Iterable[Path]) -> list[Path]:
    """The files to ingest: each named file, and every supported file under each named directory.

    A path that does not exist, a file of another type and a directory without a supported file
    are usage errors (``ConfigError``, exit 2) naming the path: nothing is sent.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
            if not inside:
                raise ConfigError(f"{path}: no {', '.join(EXTENSIONS)} file in this directory or below")
            found.extend(inside)
        elif path.is_file():
            if path.suffix.lower() not in EXTENSIONS:
                raise ConfigError(f"{path}: unsupported file type (use {', '.join(EXTENSIONS)})")
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such file or directory")
    return found


def _doc(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or "text" not in obj:
        raise ConfigError(f"{where}: expected an object with at least \"text\" (and \"external_id\")")
    return obj


def read_documents(path: Path, root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Documents from one file: a text file is one document; JSON holds one or many; JSONL one per line."""
    name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    if suffix in (".txt", ".md"):
        if text.strip():
            yield {"external_id": name, "title": path.stem, "text": text}
        return
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{path}:{number}: not valid JSON: {exc}") from exc
                yield _with_id(_doc(obj, f"{path}:{number}"), f"{name}#{number}")
        return
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    items = data.get("documents") if isinstance(data, dict) and "documents" in data else data
    if isinstance(items, list):
        for i, obj in enumerate(items):
            yield _with_id(_doc(obj, f"{path}[{i}]"), f"{name}#{i}")
    else:
        yield _with_id(_doc(items, str(path)), name)


def _with_id(doc: dict[str, Any], default: str) -> dict[str, Any]:
    return doc if doc.get("external_id") else {**doc, "external_id": default}


def load_documents(paths: list[Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """The files named by ``paths`` and every document they hold (external ids relative to a named
    directory); a ``ConfigError`` when they hold no document at all (empty files)."""
    files = find_files(paths)
    docs: list[dict[str, Any]] = []
    for path in files:
        root = next((p for p in paths if p.is_dir() and path.is_relative_to(p)), None)
        docs.extend(read_documents(path, root))
    if not docs:
        shown = ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise ConfigError(f"nothing to ingest: {shown} hold{'s' if len(files) == 1 else ''} no document "
                          "(empty text, an empty JSON list or blank JSONL lines)")
    return files, docs


def batches(docs: Iterable[dict[str, Any]], max_docs: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """Group documents into requests of at most ``max_docs`` and about ``max_bytes`` of JSON (pure)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for doc in docs:
        doc_size = len(json.dumps(doc, ensure_ascii=False).encode())
        if batch and (len(batch) >= max_docs or size + doc_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += doc_size
    if batch:
        yield batch


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): Retry-After when given, else 0.5·2^n (pure)."""
    if retry_after and retry_after.isdigit():
        return float(retry_after)
    return float(min(30.0, 0.5 * 2 ** (attempt - 1)))


def post_batch(client: httpx.Client, batch: list[dict[str, Any]], attempts: int = 6,
               sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """POST one batch; retry transport errors, 429 and 5xx; returns the job ids."""
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            response = client.post("/v1/documents", json={"documents": batch})
        except httpx.TransportError as exc:
            last = f"cannot reach the API: {exc}"
            sleep(retry_delay(attempt, None))
            continue
        if response.status_code == 202:
            return list(response.json()["job_ids"])
        try:
            err = response.json()["error"]
            last = f"{response.status_code} {err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            last = f"{response.status_code} {response.text[:200]}"
        if response.status_code not in RETRY_STATUSES:
            raise (ConfigError if response.status_code in (401, 403) else OperationFailed)(
                f"the API refused a batch: {last}")
        sleep(retry_delay(attempt, response.headers.get("retry-after")))
    raise ServiceUnavailable(f"gave up after {attempts} attempts: {last}")


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


@dataclass
class IngestReport:
    files: int = 0
    documents: int = 0
    job_ids: list[int] = field(default_factory=list)
    jobs: JobCounts | None = None  # with --wait: how the jobs ended

    def as_dict(self) -> dict[str, Any]:
        """What ``-o json|yaml`` prints: counts, and with --wait the jobs by status."""
        out: dict[str, Any] = {"files": self.files, "documents": self.documents, "jobs": len(set(self.job_ids))}
        if self.jobs is not None:
            out["statuses"] = self.jobs.statuses()
        return out

    def row(self) -> dict[str, Any]:
        """What the table prints: one row, a column per status (zeros shown)."""
        out = {k: v for k, v in self.as_dict().items() if k != "statuses"}
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
