"""Embedding that overlaps the database writes of the same batch.

A batch's chunks are embedded in groups of the embedder's call size, in order, by one thread of
the worker (``EmbedAhead``): while the worker's connection streams group k into the COPY (the
server inserting heap rows and HNSW, GIN and btree entries, the client building rows) the thread
embeds group k+1 (ONNX Runtime and the tokenizer release the GIL). Everything stays inside the
batch's one transaction, so the queue's guarantees are those of ``core.ingest.worker``: a crash
anywhere returns the whole batch to the queue, nothing is written twice, and the rows reach the
COPY in the order of the chunks. An embedding error surfaces when its group is reached, as it
would from one call; the groups not yet embedded are then dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core import metrics

if TYPE_CHECKING:
    from core.embed import Embedder, Vectors


def group_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each group of ``n`` items cut ``size`` at a time, in order (pure)."""
    if size < 1:
        raise ValueError("a group holds at least one item")
    return [(start, min(start + size, n)) for start in range(0, n, size)]


class EmbedAhead:
    """One embedding thread per worker: ``vectors()`` yields each group's vectors in order while
    the next groups are embedded behind the caller's back."""

    def __init__(self, embedder: Embedder, group_size: int) -> None:
        self.embedder = embedder
        self.group_size = group_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-ahead")

    def _embed(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        vectors = self.embedder.embed(texts)
        metrics.EMBED_SECONDS.labels(self.embedder.name).observe(time.perf_counter() - started)
        return vectors

    @contextmanager
    def embedding(self, texts: Sequence[str]) -> Iterator[Iterator[tuple[int, int, Vectors]]]:
        """Start embedding ``texts`` now; the block gets ``(start, end, vectors of
        texts[start:end])`` group by group, in order, each as soon as it is ready. Every group is
        queued at once on the one thread, which embeds them one after the other, so the block's
        database work runs meanwhile. Leaving the block (done, or an error while writing) cancels
        the groups not started and waits for the running one: the next batch never shares the
        thread with this one."""
        bounds = group_bounds(len(texts), self.group_size)
        futures: list[Future[Vectors]] = [self._pool.submit(self._embed, texts[lo:hi]) for lo, hi in bounds]
        try:
            yield ((lo, hi, future.result()) for (lo, hi), future in zip(bounds, futures, strict=True))
        finally:
            for future in futures:
                future.cancel()
            wait(futures)
