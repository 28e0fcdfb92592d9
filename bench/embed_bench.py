"""``python -m bench.embed_bench [--quick]``: all-MiniLM-L6-v2 on ONNX Runtime, alone (no database).

For each precision (float32: the sentence-transformers model's own vectors; int8: dynamic
quantization) and each (batch size, ONNX Runtime threads): chunks per second of the bench corpus'
chunks (``bench.corpus``, the service's chunker at 800/100 characters), wall and per CPU-second
(the process's CPU time: what the machine could do when other processes leave it the cores), and
the single-query embedding time (p50, wall and CPU). The same on chunks of real manual pages
(``bench.manpages``): real prose tokenises shorter than the corpus' pseudo-words (mean tokens per
chunk is printed), so its rate is higher. Then how far int8 moves the vectors: cosine between
int8 and float32 on every chunk measured.

On a machine shared with other work, wall rates fall with the load and CPU rates do not; both are
printed, with the load average, and a JSON report is written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.corpus import build_corpus
from bench.manpages import choose_pages, man_files
from bench.scratch import scratch_dir
from core.chunking import chunk_text
from core.embed import Embedder, HashEmbedder
from core.onnxembed.embedder import OnnxMiniLMEmbedder

RESULTS = Path(__file__).resolve().parent / "results" / "embed-latest.json"
QUERIES = ["ssh key authentication", "list directory contents", "restart the ingest worker when the queue grows",
           "postgres replication lag alert", "compress files"]


def measure(embedder: Embedder, texts: list[str], query_rounds: int) -> dict[str, float]:
    embedder.embed(texts[:8])  # load and warm up
    wall0, cpu0 = time.perf_counter(), time.process_time()
    embedder.embed(texts)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    q_wall, q_cpu = [], []
    for i in range(query_rounds):
        w, c = time.perf_counter(), time.process_time()
        embedder.embed([QUERIES[i % len(QUERIES)]])
        q_wall.append(time.perf_counter() - w)
        q_cpu.append(time.process_time() - c)
    return {
        "chunks_per_s": len(texts) / wall,
        "chunks_per_cpu_s": len(texts) / cpu,
        "query_p50_ms": statistics.median(q_wall) * 1000,
        "query_cpu_p50_ms": statistics.median(q_cpu) * 1000,
    }


def corpora(n: int) -> dict[str, list[str]]:
    """``n`` chunks of the bench corpus (pseudo-words) and of real manual pages (this machine's
    ``man1``/``man8``, as ``bench.search_eval`` draws them), cut by the service's chunker."""
    synthetic = build_corpus(max(n, 64) * 2, seed=7, chunk_size=800, chunk_overlap=100).chunk_texts()[:n]
    real: list[str] = []
    for page in choose_pages(man_files(), max(n // 2, 8), seed=13):
        real.extend(chunk_text(page.text, 800, 100))
    return {"bench": synthetic, "man": real[:n]}


def measure_corpora(n: int, configs: list[tuple[int, int]], query_rounds: int, cache: Path,
                    console: Console) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Each corpus through each (precision, batch, threads), the hash embedder, and int8 against float32."""
    rows: list[dict[str, Any]] = []
    quality: dict[str, dict[str, float]] = {}
    for corpus, texts in corpora(n).items():
        vectors = {}
        for precision in ("float32", "int8"):
            for batch, threads in configs:
                e = OnnxMiniLMEmbedder(precision=precision, batch_size=batch,  # type: ignore[arg-type]
                                       threads=threads, cache_dir=cache)
                figures = measure(e, texts, query_rounds=query_rounds)
                rows.append({"corpus": corpus, "precision": precision, "batch": batch,
                             "threads": threads or os.cpu_count(), **figures})
                console.print(rows[-1])
            vectors[precision] = e.embed(texts)
        # the no-dependency fallback on the same chunks, one core (its target: 5,000 texts/s)
        rows.append({"corpus": corpus, "precision": "hash", "batch": len(texts), "threads": 1,
                     **measure(HashEmbedder(384), texts, query_rounds=query_rounds)})
        console.print(rows[-1])
        tokenizer, _ = e.load()
        cosines = np.sum(vectors["int8"] * vectors["float32"], axis=1)
        quality[corpus] = {"chunks": len(texts), "mean_tokens": float(np.mean([len(x.ids) for x in
                                                                            tokenizer.encode_batch(texts)])),
                           "int8_vs_float32_cosine_min": float(cosines.min()),
                           "int8_vs_float32_cosine_mean": float(cosines.mean())}
    return rows, quality


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.embed_bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="64 chunks, one configuration per precision")
    p.add_argument("--chunks", type=int, help="chunks of each corpus per configuration (default 256; 64 with --quick)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    a = p.parse_args()
    n = a.chunks or (64 if a.quick else 256)
    configs = [(8, 1)] if a.quick else [(8, 1), (32, 1), (8, 0), (32, 0)]
    console = Console()
    with scratch_dir("opsctl-embed-bench-") as cache:  # the model files built for this run
        rows, quality = measure_corpora(n, configs, 20 if a.quick else 100, cache, console)
    load = os.getloadavg()[0]
    table = Table(title=f"all-MiniLM-L6-v2 on ONNX Runtime, load average {load:.1f} on {os.cpu_count()} cores")
    for col in ("corpus", "precision", "batch", "threads", "chunks/s", "chunks/CPU-s", "query p50 ms",
                "query CPU p50 ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["corpus"], r["precision"], str(r["batch"]), str(r["threads"]), f"{r['chunks_per_s']:.1f}",
                      f"{r['chunks_per_cpu_s']:.1f}", f"{r['query_p50_ms']:.2f}", f"{r['query_cpu_p50_ms']:.2f}")
    console.print(table)
    for corpus, q in quality.items():
        console.print(f"{corpus}: {q['chunks']} chunks, {q['mean_tokens']:.0f} tokens mean; int8 vs float32 cosine "
                      f"min {q['int8_vs_float32_cosine_min']:.4f}, mean {q['int8_vs_float32_cosine_mean']:.4f}")
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({"cores": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows,
                                    "corpora": quality}, indent=2))


if __name__ == "__main__":
    main()
