"""The closed loop: ``opsctl up`` scaling its worker pool under a step of ingest, replayed by ``scale simulate``.

    python -m bench.closed_loop [--quick] [--embed-latency MS] [--factor F]
    python -m bench.closed_loop --replot [--out JSON] [--chart FILE.svg|FILE.png]

1. Starts ``opsctl up`` in a temp dir (its own PostgreSQL, Redis, Prometheus scraping every 5 s, the
   API, one ingest worker, the daemon) with a policy of the experiment's own (:data:`POLICY`: the
   shipped backlog metric, windows short enough to fit minutes) and the daemon's autoscale job every
   ``SYNC`` seconds. Its workers embed with ``openai`` against :mod:`bench.embedserver`, a local
   stand-in for an embedding API answering each request after ``--embed-latency`` ms (hash vectors):
   each worker is bound by that latency, not by the machine's CPUs, so N workers serve about N
   times one worker's rate, the simulator's model (capacity x ready replicas). ``--embed-latency 0``:
   the hash embedder in each worker, CPU-bound (on 2 CPUs the pool's throughput is the machine's).
2. **Warm-up**: with the one worker, ``--warmup`` documents, the queue kept below the backlog that
   would start a second worker, and times the drain: one
   worker's rate, from which the step's demand is set (``--factor`` times it).
3. **Step**: starting on a multiple of ``SYNC`` seconds (so the daemon's ticks fall where the
   replay's do), idle, then ``--step-seconds`` of that demand (one ``POST /v1/documents`` a second,
   the documents it accepted counted), then idle until the end while the pool scales back.
4. **Record**, from Prometheus at 1 s: the replicas the autoscaler set (``core_workers{state="desired"}``),
   the running ones (``core_workers{state="running"}``: the ready replicas) and the policy's backlog.
   **Capacity**, measured in the same run: the median of ``rate(core_ingest_jobs_total{status="done"})``
   per running worker while work waited (``opsctl.simulate.reconstruct.capacity_from``, what
   ``scale simulate --throughput-query`` does). **Startup**: the median time from a rise of the
   desired count to the running count reaching it.
5. **Replay** through ``scale simulate``'s own ``run`` with the same policy, the measured capacity
   and startup, ``--sync SYNC`` and ``--lag 5`` (the scrape interval): once from the trace
   exported from the recording (the demand the driver sent, ``trace.csv``), once from Prometheus
   (``--from/--to``, demand reconstructed from the backlog).
6. **Compare** replica-minutes and time-to-capacity, real against simulated (target: within 20 %).

Writes ``--out`` (default ``bench/results/closed_loop.json``; the recording and trace next to it)
and the chart of the timelines to ``--chart`` (default ``docs/img/closed-loop.svg``; ``.png`` for a
PNG): each one's ready replicas (the real run's: the running workers) solid, the replicas set dashed.
``--replot`` draws the chart again from ``--out``'s timelines (``"policies"``) and capacity, no run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import embedserver
from bench.loadmix import Mix
from bench.loadtest import create_tenants
from bench.machine import describe
from core.workerpool import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "core-worker"
TITLE = f"{SERVICE} closed loop"
SYNC = 10  # seconds between the daemon's autoscale runs (and the replay's decisions)
DIM = 384  # the embedding dimension (the settings' default)
LATENCY_MS = 800.0  # the stand-in embedding API's answer time: 2 calls per batch of 32 documents
PER_WORKER = SYNC * 10  # the policy's backlog per worker (jobs)
SCRAPE = 5  # the embedded Prometheus' scrape interval: the metrics' lag
THROUGHPUT = 'sum(rate(core_ingest_jobs_total{status="done"}[15s]))'
DESIRED = 'max(core_workers{state="desired"})'
RUNNING = 'max(core_workers{state="running"})'
POLICY = """\
# the closed loop's own policy: the shipped backlog metric, windows of seconds, not minutes
prometheus: {timeoutSeconds: 5}
services:
  core-worker:
    target: {kind: local}
    minReplicas: 1
    maxReplicas: 4
    tolerance: {scaleUp: 0.0, scaleDown: 0.1}
    metrics:
      - name: backlog
        query: max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)
        target: {type: AverageValue, averageValue: %(per_worker)d}
    behavior:
      scaleUp:
        stabilizationWindowSeconds: 0
        policies: [{type: Pods, value: 2, periodSeconds: %(sync)d}]
      scaleDown:
        stabilizationWindowSeconds: 30
        policies: [{type: Pods, value: 1, periodSeconds: %(sync)d}]
"""
QUEUED_SQL = "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'failed', 'running')"


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return value


def embedder_env(latency_ms: float, url: str | None) -> dict[str, str]:
    """The settings that give ``opsctl up``'s processes their embedder: with a latency, ``openai`` at the
    stand-in API at ``url`` (:mod:`bench.embedserver`); with none, the hash embedder in-process."""
    if latency_ms <= 0:
        return {"OPSCTL_EMBEDDER": "hash"}
    if url is None:
        raise ValueError("an embedding latency needs the stand-in API's URL")
    return {"OPSCTL_EMBEDDER": "openai", "OPSCTL_OPENAI_BASE_URL": url, "OPSCTL_OPENAI_MODEL": embedserver.MODEL,
            "OPSCTL_EMBED_DIM": str(DIM)}


def default_factor(latency_ms: float) -> float:
    """The step's demand in one worker's rates when ``--factor`` is not given. Latency-bound workers
    add up: 3.5 of them, more than 3 serve, less than 4 do (3 would be exactly what 3 serve, and the
    shortfall would flicker on and off). CPU-bound ones share 2 CPUs: one worker's rate is about the
    machine's."""
    return 3.5 if latency_ms > 0 else 1.0


@contextmanager
def opsctl_up(root: Path, per_worker: int, embedder: dict[str, str]) -> Iterator[dict[str, Any]]:
    """``opsctl up`` on a data dir under ``root`` with the experiment's policy and ``embedder``'s
    settings; its state.json."""
    policies = root / "policies"
    policies.mkdir()
    (policies / "autoscaling.yaml").write_text(POLICY % {"per_worker": per_worker, "sync": SYNC})
    (policies / "schedule.yaml").write_text(f"jobs:\n  autoscale:\n    every: {SYNC}s\n")
    data = root / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data), OPSCTL_POLICY_DIR=str(policies), PYTHONPATH=str(ROOT),
               **embedder)
    log = root / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "opsctl.cli", "up", "--port", str(free_port()),
                                 "--prometheus-port", str(free_port()), "--workers", "1"],
                                env=env, cwd=root, stdout=out, stderr=out)
    try:
        _wait(lambda: proc.poll() is not None or "Ctrl-C stops everything" in log.read_text(), 300, "opsctl up")
        if proc.poll() is not None:
            raise RuntimeError(f"opsctl up exited {proc.returncode}: {log.read_text()[-2000:]}")
        state = json.loads((data / "state.json").read_text())
        _wait(lambda: _ready(state["api_url"]), 120, "the API")
        yield state
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(180)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _replicas(client: httpx.Client, token: str) -> int:
    r = client.get("/admin/workers", headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    return int(r.json()["replicas"])


def _queued(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        return int(conn.execute(QUEUED_SQL).fetchone()[0])  # type: ignore[index]


def _post(client: httpx.Client, key: str, mix: Mix, n: int, tag: str) -> int:
    if n <= 0:
        return 0
    docs = [{"external_id": f"{tag}-{i}", "title": tag, "text": mix.document_text()} for i in range(n)]
    r = client.post("/v1/documents", json={"documents": docs}, headers={"Authorization": f"Bearer {key}"})
    r.raise_for_status()
    return int(r.json()["accepted"])


def top_up(queued: int, posted: int, n: int, keep: int) -> int:
    """The warm-up's documents to post now: up to ``keep`` waiting, ``n`` in all (pure)."""
    return max(0, min(keep - queued, n - posted))


def warm_up(client: httpx.Client, key: str, db_url: str, mix: Mix, n: int, keep: int) -> float:
    """One worker's documents per second: ``n`` documents drained, the queue topped up to ``keep``
    (below the policy's backlog per worker, so the autoscaler keeps the one worker: 300 queued at
    once had it start 2 more within the drain, and a rate of 3 workers passed for one's), timed from
    the first document done to the last."""
    posted, started, done_then = 0, 0.0, 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        queued = _queued(db_url)
        done = posted - queued
        if done > 0 and not started:
            started, done_then = time.monotonic(), done
        if done >= n:
            return (n - done_then) / max(time.monotonic() - started, 1e-3)
        if add := top_up(queued, posted, n, keep):
            posted += _post(client, key, mix, add, f"warmup{posted}")
        time.sleep(0.25)
    raise RuntimeError("timed out waiting for the warm-up to drain")


def drive(client: httpx.Client, key: str, mix: Mix, start: float, idle: int, step: int, total: int,
          rate: float) -> list[float]:
    """From wall-clock ``start``: ``idle`` s idle, ``step`` s at ``rate`` documents/s, idle to ``total``;
    the documents accepted in each second."""
    sent = [0.0] * total
    carry = 0.0
    for second in range(total):
        _sleep_until(start + second)
        if idle <= second < idle + step:
            carry += rate
            n = int(carry)
            carry -= n
            sent[second] = float(_post(client, key, mix, n, f"s{second}"))
    _sleep_until(start + total)
    return sent


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def draw(report: dict[str, Any], path: Path) -> None:
    """The chart of a report's timelines (real, then simulated; the real demand is the need) at ``path``."""
    from opsctl.simulate import chart

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(chart.render(path.suffix, report["policies"], report["model"]["capacity"], TITLE))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.closed_loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a shorter step and tail (about 4 minutes in all)")
    p.add_argument("--warmup", type=int, default=300, help="documents the one worker drains to size the step")
    p.add_argument("--factor", type=float, default=None,
                   help="the step's demand, in one worker's rates (default 3.5; 1 with --embed-latency 0)")
    p.add_argument("--embed-latency", type=float, default=LATENCY_MS, metavar="MS",
                   help="the stand-in embedding API's answer time in ms: the workers' bound (default %(default)g); "
                        "0: the hash embedder in-process, workers bound by the machine's CPUs")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "closed_loop.json")
    p.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "closed-loop.svg",
                   help="the chart: FILE.svg, FILE.png or FILE.html")
    p.add_argument("--replot", action="store_true", help="draw --chart again from the report at --out, no new run")
    args = p.parse_args(argv)
    from opsctl.simulate import chart

    try:
        chart.check_format(args.chart.suffix)
    except chart.UnknownFormat as exc:
        p.error(f"--chart {args.chart}: {exc}")
    if args.replot:
        draw(json.loads(args.out.read_text()), args.chart)
        print(f"wrote {args.chart} from {args.out}")
        return 0
    if args.embed_latency < 0:
        p.error("--embed-latency: at least 0 ms")
    factor = default_factor(args.embed_latency) if args.factor is None else args.factor
    idle, step, tail = (20, 60, 120) if args.quick else (30, 120, 180)
    total = idle + step + tail

    from opsctl.policy import load
    from opsctl.scaling.policy import AutoscalingPolicy
    from opsctl.simulate import observed, reconstruct, trace
    from opsctl.simulate.compare import Result
    from opsctl.simulate.history import Window, query_range
    from opsctl.simulate.model import Trace
    from opsctl.simulate.service import Request, run

    args.out.parent.mkdir(parents=True, exist_ok=True)
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsctl-closed-loop-")))
        url = (stack.enter_context(embedserver.serve(DIM, args.embed_latency / 1000))
               if args.embed_latency > 0 else None)
        with opsctl_up(root, PER_WORKER, embedder_env(args.embed_latency, url)) as state:
            tenant = create_tenants(state["database_url"], 1, prefix="closedloop")[0]
            mix = Mix.make(14)
            with httpx.Client(base_url=state["api_url"], timeout=60) as client:
                print(f"warm-up: one worker drains {args.warmup} documents", file=sys.stderr)
                one = warm_up(client, tenant.api_key, state["database_url"], mix, args.warmup, PER_WORKER * 8 // 10)
                rate = round(factor * one, 1)
                print(f"  {one:.1f} documents/s; the step: {rate} documents/s for {step} s", file=sys.stderr)
                _wait(lambda: _queued(state["database_url"]) == 0, 120, "an empty queue")
                print("waiting for the autoscaler to bring the pool back to 1 worker", file=sys.stderr)
                _wait(lambda: _replicas(client, state["admin_token"]) == 1, 300, "the pool back at 1 worker")
                start = float((int(time.time()) // SYNC + 2) * SYNC)
                sent = drive(client, tenant.api_key, mix, start, idle, step, total, rate)
            time.sleep(3 * SCRAPE)  # the last seconds scraped
            prom = state["prometheus_url"]
            begin = datetime.fromtimestamp(start, UTC)
            window = Window(begin, begin + timedelta(seconds=total - 1), 1.0)
            policy = load(AutoscalingPolicy, "autoscaling", root / "policies" / "autoscaling.yaml")
            svc = policy.services[SERVICE]
            backlog_query = svc.metrics[0].query
            assert backlog_query is not None
            desired = query_range(prom, DESIRED, window)
            running = query_range(prom, RUNNING, window)
            backlog = query_range(prom, backlog_query, window)
            served = query_range(prom, THROUGHPUT, window)
            # what --throughput-query measures (history.measure_capacity), on the series just read
            capacity = round(reconstruct.capacity_from(served, backlog, running), 3)
            import psycopg

            with psycopg.connect(state["database_url"], autocommit=True) as conn:
                machine = {**describe(conn), "load_average_at_start": load_at_start,
                           "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg())}
            recorded = [observed.Row(float(t), sent[t], int(desired[t]), int(running[t]), backlog[t],
                            served[t]) for t in range(total)]
            startup = observed.startup_seconds(recorded) or 0.0
            exported = Trace(tuple(float(t) for t in range(total)), tuple(sent), 1.0, {}, begin)
            trace_file = args.out.with_name("closed_loop_trace.csv")
            trace_file.write_text(trace.dump(exported))
            common: dict[str, Any] = {"capacity": capacity, "startup": startup, "sync": float(SYNC),
                                      "lag": float(SCRAPE), "start_replicas": int(desired[0])}
            from_trace = run(policy, Request(SERVICE, trace_file=trace_file, **common))
            # at the scrape interval: at 1 s, a backlog held between scrapes reads as demand = capacity
            scraped = Window(begin, begin + timedelta(seconds=total - SCRAPE), float(SCRAPE))
            from_prom = run(policy, Request(SERVICE, window=scraped, prometheus_url=prom, replicas_query=RUNNING,
                                            **common))
    model = from_trace.model
    down = svc.behavior.scaleDown.stabilizationWindowSeconds
    real = Result("real (opsctl up)", svc, observed.observed_run(recorded, model),
                  observed.observed_summary(recorded, model, down))
    simulated = [Result(f"simulated ({how})", svc, out.results[0].run, out.results[0].summary)
                 for how, out in (("recorded demand", from_trace), ("Prometheus history", from_prom))]
    report: dict[str, Any] = {
        "command": "python -m bench.closed_loop" + (" --quick" if args.quick else "")
        + f" --embed-latency {args.embed_latency:g} --factor {factor:g}",
        "machine": machine, "measured_at": begin.isoformat(),
        "policy": POLICY % {"per_worker": PER_WORKER, "sync": SYNC},
        "phases": {"idle_seconds": idle, "step_seconds": step, "tail_seconds": tail,
                   "step_documents_per_second": rate, "step_factor": factor},
        "embedder": ({"name": f"openai/{embedserver.MODEL}", "latency_ms": args.embed_latency,
                      "how": "bench.embedserver: hash vectors answered after the latency"}
                     if args.embed_latency > 0 else {"name": "hash", "how": "in each worker's process"}),
        "model": {"capacity": capacity, "capacity_how": f"median of {THROUGHPUT} / {RUNNING} while work waited",
                  "warmup_one_worker_documents_per_second": round(one, 2), "startup_seconds": startup,
                  "startup_how": "median seconds from a rise of desired to running reaching it",
                  "sync_seconds": SYNC, "lag_seconds": SCRAPE,
                  "saturated_documents_per_second_by_ready_workers": observed.saturated_throughput(recorded)},
        "real": real.summary.as_dict(),
        "simulated": {r.name: r.summary.as_dict() for r in simulated},
        "sources": {"recorded demand": from_trace.source.replace(str(trace_file), trace_file.name),
                    "Prometheus history": from_prom.source},
        "agreement": {r.name: [f.as_dict() for f in observed.agreement(real.summary, r.summary)] for r in simulated},
        "recording": [dataclasses.asdict(r) for r in recorded],
        # each timeline as `scale simulate -o json` gives it: what the chart draws, kept to draw it again
        "policies": [r.as_dict() for r in (real, *simulated)],
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    draw(report, args.chart)
    for name, figures in report["agreement"].items():
        for f in figures:
            err = "n/a" if f["relative_error"] is None else f"{100 * f['relative_error']:.0f} %"
            print(f"{name}: {f['name']} real {f['real']:g} simulated {f['simulated']:g} ({err}, "
                  f"{'within' if f['within'] else 'NOT within'} 20 %)")
    print(f"capacity {capacity}/s per worker, startup {startup:g} s; wrote {args.out} and {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
