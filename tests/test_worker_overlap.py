"""The worker writes a batch while its chunks are still being embedded (``core.ingest.overlap``),
inside the batch's one transaction: the rows reach the database in order with their own vectors,
and an embedding error in a later group leaves nothing written."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from core.chunking import chunk_text
from core.config import Settings
from core.embed import HashEmbedder, Vectors
from core.errors import EmbedderError
from core.ingest.accept import DocumentIn, accept_documents
from core.ingest.overlap import group_bounds
from core.ingest.worker import BatchResult, IngestProcessor, warm_up

GROUP = 4  # chunks per embedding call


class GatedEmbedder:
    """The hash embedder, whose second call waits for ``release`` (or fails, with ``fail``): the
    test sees what the worker does while a group is being embedded."""

    def __init__(self, dim: int, fail: bool = False) -> None:
        self.inner = HashEmbedder(dim)
        self.name, self.dim = self.inner.name, dim
        self.fail = fail
        self.calls: list[int] = []
        self.second_started = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(len(texts))
        if len(self.calls) == 2:
            self.second_started.set()
            if self.fail:
                raise EmbedderError("the model went away")
            assert self.release.wait(60), "never released"
        return self.inner.embed(texts)


@pytest.fixture
def worker_conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as connection:
        register_vector(connection)
        yield connection


def doc_text(i: int) -> str:
    return " ".join(f"Page {i} paragraph {j} explains option --flag{j} of tool{i} at some length." for j in range(40))


def queue_docs(conn: psycopg.Connection[Any], company_id: int, n: int) -> list[str]:
    docs = [DocumentIn(external_id=f"doc-{i}", text=doc_text(i)) for i in range(n)]
    accept_documents(conn, company_id, docs)
    return [d.text for d in docs]


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    return thread, out


def statement_of(conn: psycopg.Connection[Any], pid: int) -> tuple[str, str]:
    row = conn.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


@pytest.mark.parametrize(("n", "size", "expected"), [
    (0, 4, []),
    (3, 4, [(0, 3)]),
    (4, 4, [(0, 4)]),
    (9, 4, [(0, 4), (4, 8), (8, 9)]),
    (2, 1, [(0, 1), (1, 2)]),
])
def test_group_bounds(n: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert group_bounds(n, size) == expected


def test_group_bounds_refuses_empty_groups() -> None:
    with pytest.raises(ValueError, match="at least one"):
        group_bounds(3, 0)


def test_chunks_are_copied_while_the_next_group_is_embedded(
        settings: Settings, conn: psycopg.Connection[Any], worker_conn: psycopg.Connection[Any], tenant: Any) -> None:
    texts = queue_docs(conn, tenant.company_id, 3)
    chunks = [c for t in texts for c in chunk_text(t, settings.chunk_size, settings.chunk_overlap)]
    assert len(chunks) > 2 * GROUP
    embedder = GatedEmbedder(settings.embed_dim)
    processor = IngestProcessor(settings.model_copy(update={"embed_batch_size": GROUP}), embedder)
    pid = worker_conn.info.backend_pid

    batch, result = in_thread(processor.run_batch, worker_conn)
    try:
        while not embedder.second_started.is_set() and batch.is_alive():
            embedder.second_started.wait(0.01)
        assert embedder.second_started.is_set(), f"the batch was embedded in calls of {embedder.calls}, not in groups"
        # the second group is still being embedded: the worker is COPYing the first group's rows meanwhile
        deadline = time.monotonic() + 60
        while not statement_of(conn, pid)[1].startswith("COPY chunks"):
            assert time.monotonic() < deadline, f"the worker's backend never COPYs: {statement_of(conn, pid)}"
            time.sleep(0.01)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (0,), "nothing visible before the commit"
    finally:
        embedder.release.set()
        batch.join(60)
    assert isinstance(result[0], BatchResult)
    assert (result[0].done, result[0].chunks) == (3, len(chunks))
    assert embedder.calls == [hi - lo for lo, hi in group_bounds(len(chunks), GROUP)]

    rows = conn.execute("SELECT c.body, c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id "
                        "ORDER BY d.external_id, c.ord").fetchall()
    assert [r[0] for r in rows] == chunks
    stored = np.array([r[1].to_numpy() for r in rows])
    expected = HashEmbedder(settings.embed_dim).embed(chunks)
    assert np.allclose(stored, expected, atol=1e-6), "a chunk has another's vector"


def test_an_embedding_error_in_a_later_group_writes_nothing_and_the_jobs_retry(
        settings: Settings, conn: psycopg.Connection[Any], worker_conn: psycopg.Connection[Any], tenant: Any) -> None:
    texts = queue_docs(conn, tenant.company_id, 3)
    small = settings.model_copy(update={"embed_batch_size": GROUP})
    failed = IngestProcessor(small, GatedEmbedder(settings.embed_dim, fail=True)).run_batch(worker_conn)

    assert (failed.claimed, failed.done, failed.failed) == (3, 0, 3)
    assert conn.execute("SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks)").fetchone() == (0, 0)
    assert conn.execute("SELECT array_agg(DISTINCT status) FROM ingest_jobs").fetchone() == (["failed"],)

    retried = IngestProcessor(small, HashEmbedder(settings.embed_dim)).run_batch(worker_conn)
    chunks = sum(len(chunk_text(t, settings.chunk_size, settings.chunk_overlap)) for t in texts)
    assert (retried.done, retried.chunks) == (3, chunks)
    assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (chunks,)


class Loading:
    """An embedder with a model to load (as the ONNX one): counts the loads, or fails them."""

    name, dim = "loading", 8

    def __init__(self, error: Exception | None = None) -> None:
        self.loads = 0
        self.error = error

    def load(self) -> None:
        self.loads += 1
        if self.error:
            raise self.error

    def embed(self, texts: Sequence[str]) -> Vectors:
        return HashEmbedder(self.dim).embed(texts)


def test_a_worker_loads_its_model_before_its_first_claim_and_survives_a_model_that_cannot_load(
        caplog: pytest.LogCaptureFixture) -> None:
    loaded, broken = Loading(), Loading(EmbedderError("no model file"))
    warm_up(loaded)
    warm_up(broken)
    warm_up(HashEmbedder(8))  # nothing to load
    assert (loaded.loads, broken.loads) == (1, 1)
    assert "could not load its model: no model file" in caplog.text


def test_the_worker_s_embedder_of_the_database_s_space_loads_its_model_too(settings: Settings) -> None:
    """core-worker embeds through a SpaceEmbedder (``follow_database``): the warm-up reaches its model."""
    from datetime import UTC, datetime

    from core.spaces.follow import SpaceEmbedder
    from core.spaces.spec import SpaceSpec
    from core.spaces.store import Space

    t = datetime(2026, 11, 27, tzinfo=UTC)
    space = Space(1, SpaceSpec("onnx", "loading", 8), "active", 0, 0, None, None, t, t, t, None)
    loaded = Loading()
    warm_up(SpaceEmbedder(settings, space, make=lambda _: loaded))
    assert loaded.loads == 1
