"""kill -9 a worker in the middle of a batch: every accepted document ends up searchable exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from core.chunking import chunk_text
from core.metrics import queue_stats
from tests.conftest import RunningApi, client_for, project_root
from tests.waiting import wait_for

N_DOCS = 240


def start_worker(settings: Any, tmp: Path, batch: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPSCTL_DATABASE_URL": settings.database_url, "OPSCTL_EMBEDDER": "hash",
           "OPSCTL_EMBED_DIM": str(settings.embed_dim), "OPSCTL_WORKER_BATCH_SIZE": str(batch),
           "OPSCTL_DATA_DIR": str(tmp), "OPSCTL_RETRY_BASE_SECONDS": "0"}
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "core.ingest.worker"], env=env, cwd=project_root(),
                            stdout=log, stderr=log)





def doc_text(i: int) -> str:
    sentences = [f"Document tag{i}x sentence {j} talks about topic {i % 7} and item {j * i}." for j in range(60)]
    return " ".join(sentences)


def test_kill_9_worker_mid_batch_loses_nothing_duplicates_nothing(
    api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    docs = [{"external_id": f"doc-{i}", "text": doc_text(i)} for i in range(N_DOCS)]
    with client_for(api, tenant.api_key) as client:
        for start in range(0, N_DOCS, 60):
            assert client.post("/v1/documents", json={"documents": docs[start:start + 60]}).status_code == 202

    kills = 0
    for _ in range(3):
        worker = start_worker(api.settings, tmp_path, batch=8)
        # wait until this worker holds a batch (jobs in flight), then kill it without warning
        wait_for(lambda: queue_stats(conn)[1] > 0, 60, "a batch in flight")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        # the killed batch goes back to the queue as soon as PostgreSQL notices the dead client
        wait_for(lambda: queue_stats(conn)[1] == 0, 30, "the killed batch to be released")
    assert kills == 3
    waiting_after_kills = queue_stats(conn)[0]
    assert waiting_after_kills > 0, "the kills happened mid-way, with work left"

    worker = start_worker(api.settings, tmp_path, batch=8)
    try:
        wait_for(lambda: queue_stats(conn)[0] == 0 and queue_stats(conn)[1] == 0, 240, "the queue to drain")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, "a SIGTERMed worker exits cleanly"

    statuses = dict(conn.execute("SELECT status, count(*) FROM ingest_jobs GROUP BY status").fetchall())
    assert statuses == {"done": N_DOCS}
    per_doc = dict(conn.execute(
        "SELECT external_id, count(*) FROM documents WHERE company_id = %s GROUP BY external_id",
        (tenant.company_id,)).fetchall())
    assert len(per_doc) == N_DOCS and set(per_doc.values()) == {1}, "every document exactly once"
    chunk_counts = dict(conn.execute(
        "SELECT external_id, count(*) FROM chunks GROUP BY external_id").fetchall())
    duplicates = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM chunks GROUP BY company_id, external_id, ord HAVING count(*) > 1) d"
    ).fetchone()
    assert duplicates == (0,)
    s = api.settings
    for i in range(N_DOCS):
        assert chunk_counts[f"doc-{i}"] == len(chunk_text(doc_text(i), s.chunk_size, s.chunk_overlap))
    with client_for(api, tenant.api_key) as client:
        hit = client.post("/v1/search", json={"query": "tag123x", "mode": "keyword", "k": 1}).json()
    assert hit["results"][0]["external_id"] == "doc-123"
