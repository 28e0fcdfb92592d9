"""The re-embed's catch-up and state read once the backfill has passed: a scan of chunks per call
(before) against the partial index of the chunks still without a new vector (now).

    python -m bench.reembed_bench                  # 200,000 chunks
    python -m bench.reembed_bench --chunks 20000   # a smoke run

``--chunks`` random 384-d chunks of 20 companies are loaded by binary COPY into a scratch database
(the HNSW indexes dropped first: they are not what this measures), a re-embed into hash 48-d is
started, its column added and backfilled in one statement (the vectors' values do not matter here),
and ``--written`` chunks are then written "during the re-embed" (no new vector). Measured: the
count ``read_state`` runs on every state read and one catch-up batch's read (64 rows), the median
of ``--repeat`` calls each, and the reads of a whole catch-up (64 at a time until none is left,
each batch written before the next read, rolled back after); with the statements as they were
(no index to use: a scan of chunks) and as they are (through ``opsctl.reembed.pg.missing_index``,
built online after the backfill; its build time is reported too), before and after the ANALYZE
the runner runs once that index is built (statistics from before the backfill say every new
vector is NULL), with each plan's scans. Prints a table and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.scratch import scratch_dir

DIM = 384
NEXT_DIM = 48
COMPANIES = 20
BATCH = 64
# the catch-up's read and read_state's count as they were before the partial index
OLD_ROWS_SQL = "SELECT company_id, id, created_at, body FROM chunks WHERE embedding_next IS NULL LIMIT %s"
OLD_COUNT_SQL = "SELECT count(*) FROM chunks WHERE embedding_next IS NULL"


def _copy(conn: Any, companies: list[int], docs: dict[int, int], n: int, offset: int, rng: Any) -> None:
    now = datetime.now(UTC)
    with conn.cursor() as cur, cur.copy("COPY chunks (company_id, document_id, external_id, ord, body, embedding,"
                                        " created_at) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int8", "text", "int4", "text", "vector", "timestamptz"])
        for start in range(0, n, 10_000):
            vectors = rng.standard_normal((min(10_000, n - start), DIM)).astype(np.float32)
            for j, vector in enumerate(vectors):
                i = offset + start + j
                company = companies[i % len(companies)]
                copy.write_row((company, docs[company], "bench", i, f"chunk {i} of the re-embed bench", vector, now))


def _timed(conn: Any, statement: str, params: tuple[Any, ...], repeat: int) -> tuple[float, str]:
    """Median milliseconds of ``statement`` and the scans of its plan."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(statement, params).fetchall()
        seconds.append(time.perf_counter() - started)
    plan = [r[0].strip() for r in conn.execute("EXPLAIN (COSTS OFF) " + statement, params).fetchall()]
    return statistics.median(seconds) * 1000, " / ".join(line for line in plan if "Scan" in line)


def _catch_up(conn: Any, statement: str) -> tuple[float, int]:
    """Milliseconds the reads of a whole catch-up take (``statement``: 64 rows at a time, each batch
    given its new vector before the next read), and the reads; rolled back after."""
    reads, seconds = 0, 0.0
    with contextlib.suppress(_RolledBack), conn.transaction():
        while True:
            started = time.perf_counter()
            rows = conn.execute(statement, (BATCH,)).fetchall()
            seconds += time.perf_counter() - started
            reads += 1
            if not rows:
                raise _RolledBack
            conn.execute(f"UPDATE chunks SET embedding_next = subvector(embedding, 1, {NEXT_DIM})"
                         " WHERE (company_id, id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
                         ([r[0] for r in rows], [r[1] for r in rows]))
    return seconds * 1000, reads


class _RolledBack(Exception):
    pass


def run(root: Path, chunks: int, written: int, repeat: int, console: Console) -> dict[str, Any]:
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from core.config import Settings
    from core.db import migrate
    from core.embedded import EmbeddedPostgres
    from core.spaces.store import building
    from core.tenants import create_company
    from opsctl.reembed import pg as reembed
    from opsctl.reembed.service import start, target
    from opsctl.vindex.online import build_partitioned

    server = EmbeddedPostgres(root / "pg", database="reembedbench")
    url = server.start()
    try:
        settings = Settings.model_validate({"database_url": url, "embedder": "hash", "embed_dim": DIM,
                                            "data_dir": root / "data"})
        migrate(url, settings)
        rng = np.random.default_rng(5)
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            companies = [create_company(conn, f"c{i}", actor="bench").company_id for i in range(COMPANIES)]
            docs = {c: int(conn.execute("INSERT INTO documents (company_id, external_id, title, body, content_hash,"
                                        " created_at) VALUES (%s, 'bench', 't', '', %s, now()) RETURNING id",
                                        (c, b"\x00" * 32)).fetchone()[0]) for c in companies}  # type: ignore[index]
            conn.execute("DROP INDEX chunks_embedding_hnsw_idx")
            started = time.monotonic()
            _copy(conn, companies, docs, chunks, 0, rng)
            console.print(f"loaded {chunks:,} chunks in {time.monotonic() - started:.0f} s")
            space = start(settings, target(settings, "hash", NEXT_DIM), "bench")
            reembed.add_column(conn, space)
            conn.execute("ANALYZE chunks")  # the statistics as autovacuum may leave them: every new vector NULL
            started = time.monotonic()
            conn.execute(f"UPDATE chunks SET embedding_next = subvector(embedding, 1, {NEXT_DIM})")
            conn.execute("UPDATE vector_spaces SET cursor = %s WHERE id = %s", (Jsonb("end"), space.id))
            console.print(f"backfilled in {time.monotonic() - started:.0f} s")
            _copy(conn, companies, docs, written, chunks, rng)  # written during the re-embed
            before_count = _timed(conn, OLD_COUNT_SQL, (), repeat)
            before_rows = _timed(conn, OLD_ROWS_SQL, (BATCH,), repeat)
            before_catch_up = _catch_up(conn, OLD_ROWS_SQL)
            started = time.monotonic()
            build_partitioned(conn, url, reembed.missing_index(space), reembed.MISSING_INDEX_DEFINITION,
                              lambda leaf: reembed.missing_leaf_index(leaf, space))
            index_seconds = time.monotonic() - started
            after_count = _timed(conn, reembed.MISSING_COUNT_SQL, (), repeat)
            after_rows = _timed(conn, reembed.MISSING_ROWS_SQL, (BATCH,), repeat)
            started = time.monotonic()
            conn.execute("ANALYZE chunks")  # as the runner's build_index step does after the partial index
            analyze_seconds = time.monotonic() - started
            analyzed_count = _timed(conn, reembed.MISSING_COUNT_SQL, (), repeat)
            analyzed_rows = _timed(conn, reembed.MISSING_ROWS_SQL, (BATCH,), repeat)
            after_catch_up = _catch_up(conn, reembed.MISSING_ROWS_SQL)
            assert building(conn) is not None
            size = conn.execute("SELECT pg_size_pretty(sum(pg_relation_size(relid))) FROM pg_partition_tree(%s)",
                                (reembed.missing_index(space),)).fetchone()
        rows = [
            {"query": "count (read_state)", "before_ms": before_count[0], "after_ms": after_count[0],
             "after_analyze_ms": analyzed_count[0], "plan_before": before_count[1], "plan_after": after_count[1]},
            {"query": f"catch-up read ({BATCH} rows)", "before_ms": before_rows[0], "after_ms": after_rows[0],
             "after_analyze_ms": analyzed_rows[0], "plan_before": before_rows[1], "plan_after": after_rows[1]},
            {"query": f"whole catch-up's reads ({before_catch_up[1]} reads)", "before_ms": before_catch_up[0],
             "after_ms": None, "after_analyze_ms": after_catch_up[0], "plan_before": "", "plan_after": ""},
        ]
        return {"chunks": chunks, "written_during": written, "repeat": repeat, "rows": rows,
                "missing_index_build_seconds": round(index_seconds, 2), "analyze_seconds": round(analyze_seconds, 2),
                "missing_index_size": size[0] if size else None}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reembed_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--written", type=int, default=500, help="chunks written during the re-embed")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory for inspection")
    parser.add_argument("--quick", action="store_true", help="20,000 chunks, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.repeat = 20_000, 3
    console = Console(stderr=True)
    with scratch_dir("opsctl-reembed-bench-", args.keep, console.print) as root:
        result = run(root, args.chunks, args.written, args.repeat, console)
    table = Table(title=f"re-embed catch-up: {args.chunks:,} chunks, {args.written} without a new vector; "
                        f"median of {args.repeat}")
    for column in ("query", "before_ms", "after_ms", "after_analyze_ms"):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(row["query"], f"{row['before_ms']:.1f}",
                      "" if row["after_ms"] is None else f"{row['after_ms']:.2f}", f"{row['after_analyze_ms']:.2f}")
    Console().print(table)
    Console().print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
