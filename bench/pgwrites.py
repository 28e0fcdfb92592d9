"""What a benchmark phase made PostgreSQL write: WAL (records, full-page images, bytes), checkpoints,
buffer I/O per backend type (``pg_stat_io``) and blocks touched per table, heap / index / TOAST /
TOAST index (``pg_statio_user_tables``, a partitioned table's partitions summed under its root).

``snapshot`` reads the cumulative counters, flattened to ``name: value``; ``delta`` and ``per_item``
are pure. Statistics are flushed by each backend within about a second of its transactions (idle
ones within ten): ``settled`` reads until two reads a second apart agree.

Needs PostgreSQL 17+ (``pg_stat_checkpointer``; ``pg_stat_io`` rows for WAL from 18 on).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

WAL_SQL = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
CHECKPOINTER_SQL = "SELECT num_timed, num_requested, buffers_written FROM pg_stat_checkpointer"
IO_SQL = """
SELECT backend_type, object, sum(coalesce(reads, 0)), sum(coalesce(writes, 0)), sum(coalesce(extends, 0)),
       sum(coalesce(hits, 0)), sum(coalesce(evictions, 0)), sum(coalesce(fsyncs, 0))
FROM pg_stat_io WHERE object IN ('relation', 'wal')
GROUP BY backend_type, object
"""
STATIO_SQL = """
SELECT coalesce(pg_partition_root(relid), relid)::regclass::text AS root,
       sum(coalesce(heap_blks_read, 0)), sum(coalesce(heap_blks_hit, 0)),
       sum(coalesce(idx_blks_read, 0)), sum(coalesce(idx_blks_hit, 0)),
       sum(coalesce(toast_blks_read, 0)), sum(coalesce(toast_blks_hit, 0)),
       sum(coalesce(tidx_blks_read, 0)), sum(coalesce(tidx_blks_hit, 0))
FROM pg_statio_user_tables
GROUP BY 1
"""
IO_FIELDS = ("reads", "writes", "extends", "hits", "evictions", "fsyncs")
BLOCK_PARTS = ("heap", "idx", "toast", "tidx")  # table, its indexes, its TOAST table, the TOAST index
SETTINGS = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "checkpoint_completion_target",
            "wal_compression", "full_page_writes", "data_checksums", "synchronous_commit", "wal_buffers")
BLOCK_SIZE = 8192


def snapshot(conn: Any, tables: Iterable[str]) -> dict[str, float]:
    """The cumulative counters of the whole server, and of ``tables`` (names as ``regclass`` prints
    them), as ``wal.*``, ``checkpoints.*``, ``io.<backend type>.<object>.<field>`` and
    ``blocks.<table>.<part>_<read|hit>``."""
    out: dict[str, float] = {}
    records, fpi, wal_bytes = conn.execute(WAL_SQL).fetchone()
    out.update({"wal.records": float(records), "wal.fpi": float(fpi), "wal.bytes": float(wal_bytes)})
    timed, requested, written = conn.execute(CHECKPOINTER_SQL).fetchone()
    out.update({"checkpoints.timed": float(timed), "checkpoints.requested": float(requested),
                "checkpoints.buffers_written": float(written)})
    for backend, obj, *values in conn.execute(IO_SQL):
        for name, value in zip(IO_FIELDS, values, strict=True):
            out[f"io.{backend}.{obj}.{name}"] = float(value)
    wanted = set(tables)
    for root, *values in conn.execute(STATIO_SQL):
        if root in wanted:
            for i, part in enumerate(BLOCK_PARTS):
                out[f"blocks.{root}.{part}_read"] = float(values[2 * i])
                out[f"blocks.{root}.{part}_hit"] = float(values[2 * i + 1])
    return out


def server_settings(conn: Any) -> dict[str, str]:
    """The settings that decide how much a write costs in WAL and checkpoints, as the server runs."""
    rows = conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", (list(SETTINGS),))
    return {name: value for name, value in rows}


def settled(read: Callable[[], dict[str, float]], timeout: float = 15.0, pause: float = 1.0,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> dict[str, float]:
    """``read()`` once two reads ``pause`` apart agree (the backends have flushed their statistics),
    or the last read at ``timeout``."""
    previous = read()
    deadline = clock() + timeout
    while clock() < deadline:
        sleep(pause)
        current = read()
        if current == previous:
            return current
        previous = current
    return previous


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """``after - before`` per counter (a counter new in ``after`` counts from zero) (pure)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def per_item(d: Mapping[str, float], items: int, opening_checkpoints: int = 0) -> dict[str, float]:
    """The figures of a phase per item stored: WAL records, full-page images and bytes; checkpoints
    in the phase (a count, not per item; less the ``opening_checkpoints`` the phase issued itself
    before its first write); blocks written by the checkpointer; blocks each backend type read,
    wrote (a dirty buffer evicted: shared_buffers too small) and evicted; blocks touched (hit +
    read) per table part (pure)."""
    if items <= 0:
        raise ValueError("items must be positive")
    checkpoints = d.get("checkpoints.timed", 0.0) + d.get("checkpoints.requested", 0.0) - opening_checkpoints
    out = {"wal_records": d.get("wal.records", 0.0) / items, "wal_fpi": d.get("wal.fpi", 0.0) / items,
           "wal_bytes": d.get("wal.bytes", 0.0) / items, "checkpoints": checkpoints,
           "checkpointer_blocks_written": d.get("checkpoints.buffers_written", 0.0) / items}
    for key, value in d.items():
        parts = key.split(".")
        if parts[0] == "io" and parts[2] == "relation" and parts[3] in ("writes", "reads", "evictions"):
            out[f"{parts[1]} blocks {parts[3]}"] = out.get(f"{parts[1]} blocks {parts[3]}", 0.0) + value / items
        if parts[0] == "blocks":
            table, what = ".".join(parts[1:-1]), parts[-1].rsplit("_", 1)[0]
            name = f"{table} {what} blocks touched"
            out[name] = out.get(name, 0.0) + value / items
    return out
