"""``opsctl ingest``: paths that hold nothing are usage errors, ``--wait`` follows the jobs as they
finish, and the result prints as a table, JSON or YAML. Against the real API and database."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pgvector.psycopg import register_vector

from core.embed import make_embedder
from core.ingest.worker import IngestProcessor
from opsctl.loader import IngestReport, JobCounts, load_documents, post_batch, wait_for_jobs
from tests.conftest import RunningApi, client_for, drain, project_root

NOTES = project_root() / "examples" / "notes.jsonl"


def run(capsys: pytest.CaptureFixture[str], api: RunningApi, key: str, *args: str) -> tuple[int, str, str]:
    from opsctl.cli import main

    code = main(["ingest", *args, "--api-url", api.url, "--api-key", key])
    out = capsys.readouterr()
    return code, out.out, out.err


def table(out: str) -> list[list[str]]:
    """The cells of a printed rich table, row by row (the header first, the rule left out)."""
    return [[cell.strip() for cell in re.split("[│┃]", line)] for line in out.strip().splitlines() if "━" not in line]


def jobs_in(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM ingest_jobs").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "absent.jsonl", "absent.jsonl: no such file or directory"),
    (lambda d: d, "no .txt, .md, .json, .jsonl file in this directory or below"),
    (lambda d: (d / "scan.pdf").write_bytes(b"%PDF") and d, "no .txt, .md, .json, .jsonl file in this directory"),
    (lambda d: (d / "empty.txt").write_text("  \n") and d / "empty.txt", "nothing to ingest: "),
    (lambda d: (d / "blank.jsonl").write_text("\n\n") and d, "blank.jsonl holds no document"),
    (lambda d: (d / "none.json").write_text("[]") and d / "none.json", "none.json holds no document"),
])
def test_paths_that_hold_no_document_are_usage_errors_and_send_nothing(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], make: Any, message: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = make(folder)
    code, out, err = run(capsys, api, tenant.api_key, str(path), "--wait")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert str(path) in err
    assert jobs_in(conn) == 0


def test_the_readme_sample_loads() -> None:
    files, docs = load_documents([NOTES])
    assert files == [NOTES] and len(docs) == 5
    assert any("refund" in d["text"].lower() for d in docs)


def test_wait_reports_every_job_as_it_finishes(api: RunningApi, tenant: Any, db_url: str,
                                               conn: psycopg.Connection[Any]) -> None:
    """The callback follows real job statuses read from the API: one call per finished job."""
    _, docs = load_documents([NOTES])
    with client_for(api, tenant.api_key) as client:
        job_ids = post_batch(client, docs)
    conn.execute("UPDATE ingest_jobs SET status = 'dead', attempts = 5 WHERE id = %s", (job_ids[-1],))
    processor = IngestProcessor(api.settings, make_embedder(api.settings))
    worker = psycopg.connect(db_url)
    register_vector(worker)
    slept: list[float] = []

    def work_instead_of_sleeping(seconds: float) -> None:  # between polls: the real processor runs 2 jobs
        slept.append(seconds)
        processor.run_batch(worker, limit=2)

    seen: list[JobCounts] = []
    try:
        with client_for(api, tenant.api_key) as client:
            final = wait_for_jobs(client, job_ids, 600, seen.append, sleep=work_instead_of_sleeping)
    finally:
        worker.close()
    assert [(c.done, c.dead, c.pending) for c in seen] == [
        (0, 0, 5), (0, 1, 4), (1, 1, 3), (2, 1, 2), (3, 1, 1), (4, 1, 0)]
    assert final == JobCounts(done=4, dead=1, pending=0) and slept == [0.5, 0.5]


def test_wait_gives_up_at_the_timeout_with_the_jobs_still_pending(api: RunningApi, tenant: Any) -> None:
    _, docs = load_documents([NOTES])
    ticks = iter(range(100))
    seen: list[JobCounts] = []
    asked: list[str] = []
    with client_for(api, tenant.api_key) as client:
        job_ids = post_batch(client, docs)
        client.event_hooks["request"] = [lambda request: asked.append(request.url.path)]
        final = wait_for_jobs(client, job_ids, 3, seen.append, sleep=lambda _: None, clock=lambda: next(ticks))
    # the deadline (0 + 3) is checked before each request: at clock 1 and 2 a job is asked, at 3 none
    assert final == JobCounts(pending=5) and seen == [JobCounts(pending=5)]
    assert asked == [f"/v1/jobs/{job_ids[0]}", f"/v1/jobs/{job_ids[1]}"]


class HangingApi:
    """A local HTTP server that reads each request and never answers (until closed): a hung API."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                outer.release.wait()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_wait_against_a_hanging_api_stops_at_its_deadline() -> None:
    """--timeout is a deadline: it is checked before every request and caps each request's own
    timeout, so a hung API costs one capped request, not one client timeout per pending job."""
    import httpx

    hung = HangingApi()
    try:
        with httpx.Client(base_url=hung.url, timeout=2) as client:
            final = wait_for_jobs(client, [1, 2, 3, 4, 5], 0.2, sleep=lambda _: None)
    finally:
        hung.close()
    assert final == JobCounts(pending=5)
    assert hung.requests <= 1, f"{hung.requests} requests after the deadline passed"


@pytest.mark.parametrize(("report", "row", "data"), [
    (IngestReport(2, 7, [1, 2, 2]), {"files": 2, "documents": 7, "jobs": 2},
     {"files": 2, "documents": 7, "jobs": 2}),
    (IngestReport(1, 3, [1, 2, 3], JobCounts(done=1, dead=1, pending=1)),
     {"files": 1, "documents": 3, "jobs": 3, "done": 1, "dead": 1, "pending": 1},
     {"files": 1, "documents": 3, "jobs": 3, "statuses": {"done": 1, "dead": 1, "pending": 1}}),
    (IngestReport(1, 2, [4, 5], JobCounts(done=2)), {"files": 1, "documents": 2, "jobs": 2, "done": 2, "dead": 0,
                                                     "pending": 0},
     {"files": 1, "documents": 2, "jobs": 2, "statuses": {"done": 2}}),
])
def test_report_as_a_row_and_as_data(report: IngestReport, row: dict[str, int], data: dict[str, Any]) -> None:
    assert report.row() == row and report.as_dict() == data


def test_table_json_and_yaml_output(api: RunningApi, tenant: Any, db_url: str, capsys: pytest.CaptureFixture[str],
                                    conn: psycopg.Connection[Any]) -> None:
    # nothing processes the jobs yet: --wait gives up at once, says so, and exits 1
    code, out, err = run(capsys, api, tenant.api_key, str(NOTES), "--wait", "--timeout", "0")
    assert code == 1 and "not every document was indexed: 5 still pending when --timeout (0 s) ran out" in err
    assert table(out) == [["FILES", "DOCUMENTS", "JOBS", "DONE", "DEAD", "PENDING"], ["1", "5", "5", "0", "0", "5"]]

    assert drain(api.settings, db_url) == 5
    # the same files again: the API answers with the jobs it already ran
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES), "--wait", "-o", "json")
    assert code == 0 and json.loads(out) == {"files": 1, "documents": 5, "jobs": 5, "statuses": {"done": 5}}
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES), "--wait", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == {"files": 1, "documents": 5, "jobs": 5, "statuses": {"done": 5}}
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES), "--wait")
    assert code == 0 and table(out) == [["FILES", "DOCUMENTS", "JOBS", "DONE", "DEAD", "PENDING"],
                                        ["1", "5", "5", "5", "0", "0"]]
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES))
    assert code == 0 and table(out) == [["FILES", "DOCUMENTS", "JOBS"], ["1", "5", "5"]]
    assert jobs_in(conn) == 5
