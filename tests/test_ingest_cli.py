"""``opsctl ingest``: paths that hold nothing are usage errors, a file that cannot be read or that the API
refuses is skipped and reported (the rest is sent, exit 1), ids carry the named directory's name (two
directories never replace each other's files), ``--wait`` follows the jobs as they finish, and the result
prints as a table, JSON or YAML. Against the real API and database."""

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
from opsctl.loader import IngestReport, JobCounts, post_batch, wait_for_jobs
from opsctl.readers import Document, Refusal, file_id, read_files
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


def load_documents(paths: list[Path]) -> tuple[list[Path], list[Document]]:
    inputs = read_files(paths)
    assert inputs.refused == [] and inputs.mail == []
    return [s.path for s in inputs.sources], [doc for s in inputs.sources for doc in s.docs]


def jobs_in(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM ingest_jobs").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "absent.jsonl", "absent.jsonl: no such file or directory"),
    (lambda d: d, "no .txt, .md, .json, .jsonl or .eml file, mbox or Maildir in this directory or below"),
    (lambda d: (d / "scan.pdf").write_bytes(b"%PDF") and d, "no .txt, .md, .json, .jsonl or .eml file, mbox or"),
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
    (IngestReport(2, 7, [1, 2, 2]), {"files": 2, "documents": 7, "jobs": 2, "refused": 0},
     {"files": 2, "documents": 7, "jobs": 2, "refused": []}),
    (IngestReport(1, 3, [1, 2, 3], JobCounts(done=1, dead=1, pending=1)),
     {"files": 1, "documents": 3, "jobs": 3, "refused": 0, "done": 1, "dead": 1, "pending": 1},
     {"files": 1, "documents": 3, "jobs": 3, "refused": [], "statuses": {"done": 1, "dead": 1, "pending": 1}}),
    (IngestReport(1, 2, [4, 5], JobCounts(done=2), [Refusal(Path("d/bad.txt"), "not UTF-8 text")]),
     {"files": 1, "documents": 2, "jobs": 2, "refused": 1, "done": 2, "dead": 0, "pending": 0},
     {"files": 1, "documents": 2, "jobs": 2, "refused": [{"file": "d/bad.txt", "error": "not UTF-8 text"}],
      "statuses": {"done": 2}}),
])
def test_report_as_a_row_and_as_data(report: IngestReport, row: dict[str, int], data: dict[str, Any]) -> None:
    assert report.row() == row and report.as_dict() == data


def test_table_json_and_yaml_output(api: RunningApi, tenant: Any, db_url: str, capsys: pytest.CaptureFixture[str],
                                    conn: psycopg.Connection[Any]) -> None:
    # nothing processes the jobs yet: --wait gives up at once, says so, and exits 1
    code, out, err = run(capsys, api, tenant.api_key, str(NOTES), "--wait", "--timeout", "0")
    assert code == 1 and "not every document was indexed: 5 still pending when --timeout (0 s) ran out" in err
    assert table(out) == [["FILES", "DOCUMENTS", "JOBS", "REFUSED", "DONE", "DEAD", "PENDING"],
                          ["1", "5", "5", "0", "0", "0", "5"]]

    assert drain(api.settings, db_url) == 5
    # the same files again: the API answers with the jobs it already ran
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES), "--wait", "-o", "json")
    done = {"files": 1, "documents": 5, "jobs": 5, "refused": [], "statuses": {"done": 5}}
    assert code == 0 and json.loads(out) == done
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES), "--wait", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == done
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES), "--wait")
    assert code == 0 and table(out) == [["FILES", "DOCUMENTS", "JOBS", "REFUSED", "DONE", "DEAD", "PENDING"],
                                        ["1", "5", "5", "0", "5", "0", "0"]]
    code, out, _ = run(capsys, api, tenant.api_key, str(NOTES))
    assert code == 0 and table(out) == [["FILES", "DOCUMENTS", "JOBS", "REFUSED"], ["1", "5", "5", "0"]]
    assert jobs_in(conn) == 5


def folder(path: Path, files: dict[str, str | bytes]) -> Path:
    """A directory holding ``files`` (name → text or bytes)."""
    path.mkdir(parents=True)
    for name, content in files.items():
        (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def lines(err: str) -> list[str]:
    """What stderr says, line by line (the progress display leaves an empty line when it is no terminal)."""
    return [line for line in err.splitlines() if line.strip()]


def external_ids(conn: psycopg.Connection[Any]) -> list[str]:
    """The external ids of the documents queued for ingest, in order."""
    rows = conn.execute("SELECT external_id FROM ingest_jobs ORDER BY id").fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(("path", "named", "expected"), [
    ("docs/cache.md", "docs", "docs/cache.md"),
    ("docs/guide/cache.md", "docs/", "docs/guide/cache.md"),
    ("/tmp/other/cache.md", "/tmp/other", "other/cache.md"),
    ("docs/cache.md", "docs/cache.md", "docs/cache.md"),  # a file named by itself: its path as written
    ("/srv/x/notes.jsonl", "/srv/x/notes.jsonl", "/srv/x/notes.jsonl"),
])
def test_a_files_id_includes_the_named_directorys_name(path: str, named: str, expected: str) -> None:
    assert file_id(Path(path), Path(named)) == expected


def test_the_current_directory_is_named_by_its_own_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes").mkdir()
    monkeypatch.chdir(tmp_path / "notes")
    assert file_id(Path("cache.md"), Path(".")) == "notes/cache.md"
    assert file_id(Path("../notes/cache.md"), Path("../notes")) == "notes/cache.md"


def test_two_directories_with_the_same_file_name_do_not_replace_each_other(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    for folder, text in (("docs", "cache eviction in docs"), ("other", "cache eviction elsewhere")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "cache.md").write_text(text)
        code, _, err = run(capsys, api, tenant.api_key, str(tmp_path / folder), "-o", "json")
        assert code == 0 and lines(err) == [], err
    assert external_ids(conn) == ["docs/cache.md", "other/cache.md"]


def test_two_files_with_one_id_in_a_run_are_warned_about(api: RunningApi, tenant: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for parent in ("a", "b"):
        (tmp_path / parent / "docs").mkdir(parents=True)
        (tmp_path / parent / "docs" / "cache.md").write_text(f"cache notes from {parent}")
    code, out, err = run(capsys, api, tenant.api_key, str(tmp_path / "a" / "docs"), str(tmp_path / "b" / "docs"),
                         "-o", "json")
    assert code == 0 and json.loads(out)["documents"] == 2
    assert lines(err) == [
        f"warning: 2 documents have the external id 'docs/cache.md' ({tmp_path}/a/docs/cache.md, "
        f"{tmp_path}/b/docs/cache.md): the last one sent replaces the others"]


def test_bad_files_are_reported_and_skipped_and_the_rest_is_sent(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import os

    docs = folder(tmp_path / "docs", {
        "a-good.md": "a good document", "bad.txt": b"caf\xe9 latin-1\n", "binary.txt": "text\x00with a NUL",
        "broken.jsonl": '{"text": "fine"}\n{"text": \n',
        "z-good.jsonl": '{"external_id": "z1", "text": "one"}\n{"external_id": "z2", "text": "two"}\n'})
    os.mkfifo(docs / "pipe.txt")  # a FIFO where a file should be: refused, not waited on
    code, out, err = run(capsys, api, tenant.api_key, str(docs), "-o", "json")
    assert code == 1
    assert lines(err) == [
        f"error: {docs}/bad.txt: not UTF-8 text (invalid continuation byte at byte 3)",
        f"error: {docs}/binary.txt: holds NUL characters (a binary file?), which no document may hold",
        f"error: {docs}/broken.jsonl: line 2: not valid JSON: Expecting value: line 1 column 10 (char 9)",
        f"error: {docs}/pipe.txt: not a regular file",
        "error: 2 files ingested, 4 refused"]
    report = json.loads(out)
    assert (report["files"], report["documents"], report["jobs"]) == (2, 3, 3)
    assert [r["file"] for r in report["refused"]] == [str(docs / n) for n in ("bad.txt", "binary.txt",
                                                                              "broken.jsonl", "pipe.txt")]
    assert external_ids(conn) == ["docs/a-good.md", "z1", "z2"]


def test_a_file_the_api_refuses_is_skipped_and_the_others_in_its_batch_are_sent(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    docs = folder(tmp_path / "docs", {
        "a.md": "first", "c.md": "third",
        "b.json": '[{"external_id": "b1", "text": "ok"}, {"external_id": "b2", "text": "x", "metadata": "no"}]'})
    code, out, err = run(capsys, api, tenant.api_key, str(docs), "--wait", "--timeout", "0", "-o", "json")
    assert code == 1
    said = lines(err)
    assert said[0].startswith(f"error: {docs}/b.json: the API refused it: 422 validation_error: documents.1"), err
    assert said[-1].startswith("error: 2 files ingested, 1 refused; not every document was indexed: "), err
    assert json.loads(out)["documents"] == 2
    assert external_ids(conn) == ["docs/a.md", "docs/c.md"]  # b1 was not sent alone: a file is all or nothing


def test_a_path_that_does_not_exist_is_a_usage_error_even_beside_good_ones(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.md").write_text("fine")
    code, out, err = run(capsys, api, tenant.api_key, str(tmp_path / "good.md"), str(tmp_path / "absent"))
    assert code == 2 and out == "" and err.strip() == f"error: {tmp_path}/absent: no such file or directory"
    assert jobs_in(conn) == 0


def test_send_refuses_a_file_by_the_apis_answer_and_sends_none_of_its_later_documents() -> None:
    """A stand-in for the API that refuses any request holding a document marked bad: a file split over
    two batches, refused in the second, is refused with what had been accepted before; its third batch
    is never sent, and the other files are."""
    from opsctl.loader import BatchRefused, send
    from opsctl.readers import Source

    requests: list[list[str]] = []

    def post(_client: Any, batch: list[Document]) -> list[int]:
        requests.append([d["external_id"] for d in batch])
        if any(d.get("bad") for d in batch):
            raise BatchRefused("422 validation_error: documents.0.metadata: not an object")
        return list(range(len(batch)))

    big = Source(Path("big.jsonl"), [{"external_id": f"big#{i}", "text": "x", "bad": i == 3} for i in range(6)])
    small = Source(Path("small.md"), [{"external_id": "small", "text": "y"}])
    seen: list[Refusal] = []
    sent = send(None, [small, big], batch_size=3, on_refused=seen.append, post=post)  # type: ignore[arg-type]
    assert requests == [["small", "big#0", "big#1"],  # accepted
                        ["big#2", "big#3", "big#4"],  # refused: one file only, so the file is refused
                        ]  # big#5 is not sent
    assert seen == sent.refused == [Refusal(Path("big.jsonl"), "the API refused it: 422 validation_error: "
                                    "documents.0.metadata: not an object (2 of its 6 documents were accepted before)")]
    assert (sent.documents, len(sent.job_ids)) == (3, 3)
