"""What the benchmark ran on: CPUs, memory, PostgreSQL and pgvector versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def describe(conn: Any) -> dict[str, Any]:
    """Machine facts; ``conn`` is a psycopg connection to the benchmarked database."""
    pg_version = conn.execute("SHOW server_version").fetchone()[0]
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "ram_gib": round(_ram_gib(), 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "pgvector": row[0] if row else "absent",
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
