"""``opsctl capacity``: replicas, connections, Redis memory and database size for a demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import typer

from opsctl.output import OUTPUT_OPTION, Output

HELP = """What the system needs for a demand: API and worker replicas, database connections and pool
sizes (direct and behind PgBouncer), Redis memory, database size and the HNSW index, with what
breaks first against one node's limits, and the source of every number.

Throughput per replica and bytes per chunk/document/cache entry come from the calibration
(`make calibrate` writes <policy dir>/capacity.json; OPSCTL_CAPACITY_FILE or --calibration), the
headroom from the autoscaling policy's target utilisation, TTLs and maxmemory from the cache policy,
pool sizes from the settings.

\b
Example: opsctl capacity --users 100 --documents 50000 --growth 2000
         opsctl capacity --rps 10000 --chunks 1000000000 -p manifests/base/policies/autoscaling.yaml -o json
"""


def capacity(
    rps: float | None = typer.Option(None, "--rps", min=0, help="requests/s at the peak (wins over --users)"),
    users: int | None = typer.Option(None, "--users", min=0, help="concurrent users (rps = users / --think)"),
    think: float = typer.Option(5.0, "--think", min=0.001, help="seconds a user waits between requests"),
    documents: int | None = typer.Option(None, "--documents", min=0, help="documents stored now"),
    chunks: int | None = typer.Option(None, "--chunks", min=0, help="chunks stored now (instead of --documents)"),
    growth: float = typer.Option(0.0, "--growth", min=0, help="documents added per day"),
    horizon: int = typer.Option(365, "--horizon", min=0, help="days of growth to size the database for"),
    peak_factor: float = typer.Option(3.0, "--peak-factor", min=1, help="peak ingest rate / the day's average"),
    max_connections: int | None = typer.Option(None, "--max-connections", min=1,
                                               help="PostgreSQL max_connections (default 100)"),
    db_cores: float = typer.Option(64.0, "--db-cores", min=0.001, help="CPU cores of the database host"),
    db_memory: float = typer.Option(256.0, "--db-memory", min=0.001, help="GiB of RAM of the database host"),
    db_disk: float = typer.Option(16.0, "--db-disk", min=0.001, help="TiB of disk for the database"),
    redis_memory: float = typer.Option(64.0, "--redis-memory", min=0.001, help="GiB of RAM of one Redis node"),
    calibration: Path | None = typer.Option(None, "--calibration", help="calibration file (default: "
                                            "<policy dir>/capacity.json)", envvar="OPSCTL_CAPACITY_FILE"),
    policy: Path | None = typer.Option(None, "--policy", "-p", help="autoscaling policy (default: <policy "
                                       "dir>/autoscaling.yaml; the Kubernetes one: manifests/base/policies/)"),
    cache_policy: Path | None = typer.Option(None, "--cache-policy", help="cache policy (default: <policy "
                                             "dir>/cache.yaml)"),
    basis: str = typer.Option("measured", "--basis", help="per-replica throughput: measured (on the calibrating "
                              "machine, as loaded as it was) or cpu (1 / CPU seconds per unit: a core of its own)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from opsctl.capacity.ops import Hosts, as_data
    from opsctl.capacity.ops import capacity as run
    from opsctl.capacity.plan import Basis, Demand
    from opsctl.output import emit, info

    if rps is None and users is None and documents is None and chunks is None and not growth:
        raise typer.BadParameter("name a demand: --rps or --users, --documents or --chunks, --growth")
    if basis not in ("measured", "cpu"):
        raise typer.BadParameter(f"--basis is measured or cpu, not {basis!r}")
    if documents is not None and chunks is not None:
        raise typer.BadParameter("--documents or --chunks, not both")
    demand = Demand(rps=rps, users=users, think_seconds=think, documents=documents, chunks=chunks,
                    growth_per_day=growth, horizon_days=horizon, ingest_peak_factor=peak_factor)
    hosts = Hosts(max_connections=max_connections or 100, db_cores=db_cores, db_memory_gib=db_memory,
                  db_disk_tib=db_disk, redis_memory_gib=redis_memory,
                  max_connections_given=max_connections is not None)
    data = as_data(demand, run(demand, hosts, calibration, policy, cache_policy, cast(Basis, basis)))
    if output is not Output.table:
        emit(data, output)
        return
    emit([{**line, "value": _show(line["value"], line["unit"])} for line in data["plan"]], output,
         columns=[("tier", "TIER"), ("item", "ITEM"), ("value", "VALUE"), ("how", "HOW")], title="plan")
    emit([{**lim, "need": _show(lim["need"], lim["unit"]), "limit": _show(lim["limit"], lim["unit"]),
           "ratio": f"{lim['ratio']:.2f}"} for lim in data["limits"]], output,
         columns=[("tier", "TIER"), ("what", "LIMIT"), ("need", "NEED"), ("limit", "ALLOWED"),
                  ("ratio", "NEED/ALLOWED"), ("kind", "KIND"), ("advice", "WHEN OVER")], title="limits (highest first)")
    emit([{**a, "value": _show(a["value"], a["unit"])} for a in data["assumptions"]], output,
         columns=[("name", "ASSUMPTION"), ("value", "VALUE"), ("source", "SOURCE")], title="assumptions")
    for note in data["notes"]:
        info(f"note: {note}")
    first = data["breaks_first"]
    over = [lim["what"] for lim in data["limits"] if lim["breaks"] and lim["kind"] == "setting"]
    info(f"breaks first: {first}" if first else "no node limit is exceeded")
    if over:
        info("settings to change: " + "; ".join(over))


def _show(value: Any, unit: str) -> str:
    from opsctl.output import size

    if unit == "bytes":
        return size(value)
    number = f"{value:,.0f}" if float(value) == int(value) or abs(value) >= 100 else f"{value:,.3g}"
    if value == 1 and unit.endswith("s") and not unit.endswith("/s"):
        unit = unit[:-1]  # 1 replica, 1 connection
    return f"{number} {unit}".strip()
