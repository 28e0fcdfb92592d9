"""Autoscaling figures: `opsctl --help` and a snapshot decision as whole processes, and decide() for
100 services, each next to its raw baseline measured in the same run.

    python -m bench.scale_bench [--quick]

Baselines: `python -c pass` (interpreter start) for the processes; for decide(), the same loop
calling a trivial function (the cost of the loop itself). Median of N runs; the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
services:
  core-worker:
    target: {kind: local}
    maxReplicas: 20
    metrics:
      - {name: backlog, query: q, target: {type: AverageValue, averageValue: 100}}
      - name: cpu
        usageQuery: u
        requestQuery: r
        target: {type: Utilization, averageUtilization: 70}
"""
SNAPSHOT = {"now": "2026-11-22T12:00:00Z", "current_replicas": 3,
            "metrics": {"backlog": {"value": 450},
                        "cpu": {"pods": [{"usage": 600, "request": 1000}, {"usage": 900, "request": 1000},
                                         {"request": 1000, "ready": False}]}},
            "history": {"recommendations": [{"at": "2026-11-22T11:58:00Z", "replicas": 4}],
                        "scale_events": [{"at": "2026-11-22T11:59:30Z", "change": 2}]}}


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_call(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke test)")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 15

    from opsctl.scaling.engine import decide
    from opsctl.scaling.policy import AutoscalingPolicy
    from opsctl.scaling.snapshot import parse

    py = sys.executable
    rows: list[tuple[str, float, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        policy_file, snap_file = Path(tmp) / "autoscaling.yaml", Path(tmp) / "snap.json"
        policy_file.write_text(POLICY)
        snap_file.write_text(json.dumps(SNAPSHOT))
        base = wall([py, "-c", "pass"], runs)
        helped = wall([py, "-m", "opsctl.cli", "--help"], runs)
        decided = wall([py, "-m", "opsctl.cli", "scale", "core-worker", "--policy", str(policy_file),
                        "--snapshot", str(snap_file), "-o", "json"], runs)
    rows.append(("opsctl --help (process)", helped, "python -c pass", base, 0.3))
    rows.append(("opsctl scale --snapshot (process)", decided, "python -c pass", base, 0.3))

    import yaml

    data = yaml.safe_load(POLICY)
    svc = data["services"]["core-worker"]
    policy = AutoscalingPolicy.model_validate({"services": {f"svc-{i}": svc for i in range(100)}})
    snap = parse(SNAPSHOT)
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    items = list(policy.services.items())

    def hundred() -> None:
        for name, service in items:
            decide(name, service, snap, now)

    def noop(name: str, service: object, s: object, n: object) -> None:
        return None

    def hundred_noop() -> None:
        for name, service in items:
            noop(name, service, snap, now)

    rows.append(("decide() x 100 services", per_call(hundred, runs * 10), "loop of 100 no-op calls",
                 per_call(hundred_noop, runs * 10), 0.010))

    table = Table(title="autoscaling (median; shared 2-core machine, noisy)", header_style="bold")
    for col in ("figure", "seconds", "baseline", "baseline s", "ratio", "target s", "verdict"):
        table.add_column(col)
    for name, value, base_name, base_value, target in rows:
        table.add_row(name, f"{value:.4f}", base_name, f"{base_value:.6f}", f"{value / base_value:.1f}x",
                      f"{target:g}", "[green]met[/green]" if value <= target else "[red]missed[/red]")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
