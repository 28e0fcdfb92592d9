"""The one report: rich tables on stdout and the same figures as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.ingest import RawIngest, ServiceIngest
from bench.profile import BENCH_PROCESS, LOAD_PROCESS, OTHER_PROCESSES
from bench.search import Decomposition, LatencyRow, RecallRow
from bench.stats import ratio

DASH = "—"


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    higher_is_better: bool
    unit: str

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def verdict(self) -> str:
        if self.met:
            return "[green]met[/green]"
        miss = abs(self.value - self.limit) / self.limit
        return f"[red]missed by {miss:.0%}[/red]"

    @property
    def text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {_num(self.limit)}{self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit, "unit": self.unit.strip(),
                "higher_is_better": self.higher_is_better, "met": self.met}


@dataclass
class Results:
    options: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    corpus: dict[str, Any]
    raw_ingest: RawIngest
    service_ingest: ServiceIngest
    components: dict[str, float]
    plans: dict[str, dict[str, str]]
    latency: list[LatencyRow]
    decomposition: Decomposition
    recall: list[RecallRow]

    def targets(self) -> list[Target]:
        targets = [Target("ingest chunks/s vs naive indexed COPY", ratio(self.service_ingest.rate,
                          self.raw_ingest.indexed_rate), 1.0, True, "x")]
        for row in self.latency:
            limit = 1.5 * row.raw.latency.p50_ms + 2.0
            targets.append(Target(f"uncached p50 c={row.concurrency}", row.uncached.latency.p50_ms, limit, False,
                                  " ms"))
            targets.append(Target(f"cached server took_ms p50 c={row.concurrency}", row.cached.took_p50_ms or 0.0,
                                  1.0, False, " ms"))
        targets.extend(Target(f"recall@10 company {r.company}", r.service, 0.95, True, "") for r in self.recall)
        return targets


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _x(value: float) -> str:
    return DASH if math.isnan(value) else f"{value:.2f}x"


def _main_table(r: Results) -> Table:
    t = Table(title="opsctl core benchmark: service vs raw baseline (same run, same database; "
                    f"{r.corpus.get('chunks')} chunks, {r.settings.get('embedder')} embedder)", show_lines=False)
    for col in ("measure", "service", "raw baseline", "ratio", "target", "verdict"):
        t.add_column(col, justify="left" if col in ("measure", "raw baseline", "verdict") else "right")
    targets = {x.name: x for x in r.targets()}

    def row(measure: str, service: float, base: float | None, base_label: str, target: str | None = None,
            pct: bool = False) -> None:
        if math.isnan(service):  # a section heading
            t.add_section()
            t.add_row(measure, "", "", "", "", "")
            return
        fmt = (lambda v: f"{v:.0%}") if pct else _num
        tg = targets.get(target) if target else None
        t.add_row(measure, fmt(service), f"{fmt(base)}  {base_label}" if base is not None else DASH,
                  _x(ratio(service, base)) if base is not None and not pct else DASH, tg.text if tg else "",
                  tg.verdict if tg else "")

    si, ri = r.service_ingest, r.raw_ingest
    row("[bold](a) ingest[/bold]", math.nan, None, "")
    row("chunks/s, service end to end", si.rate, ri.indexed_rate, "COPY into indexed table",
        "ingest chunks/s vs naive indexed COPY")
    row("chunks/s vs unindexed COPY", si.rate, ri.unindexed_rate, "COPY into unindexed table")
    row("chunks/s vs COPY + index build", si.rate, ri.bulk_rate, "COPY unindexed, then CREATE INDEX")
    row("wall seconds", si.seconds, ri.indexed_seconds, "indexed COPY")
    row("CPU ms per chunk (all benchmark processes)", _cpu_ms_per(si.cpu, si.chunks), _cpu_ms_per(ri.cpu, ri.chunks),
        "indexed COPY (one connection)")
    row("other processes' CPU share", si.cpu.get("other_processes_share", 0.0),
        ri.cpu.get("other_processes_share", 0.0), "during the indexed COPY (noise, not the benchmark)", pct=True)
    for lat in r.latency:
        _latency_rows(row, lat)
    per_document = r.settings.get("search_per_document", False)
    row("[bold](c) recall@10 vs exact search[/bold]" + (" (per-document hits: each document's nearest chunk)"
                                                         if per_document else ""), math.nan, None, "")
    for rec in r.recall:
        row(f"company {rec.company} ({rec.rows_share:.0%} of rows), {rec.queries} queries", rec.service,
            rec.raw_hnsw, "raw HNSW query (exact = 1.000)", f"recall@10 company {rec.company}")
        ef = r.settings.get("hnsw_ef_search")
        forced = next((p.get("hnsw_recall") for p in rec.sweep if p["ef_search"] == ef), None)
        if forced is not None:  # the planner chose an exact scan: show what the index itself finds
            row(f"  the planner scanned exactly; HNSW index forced, ef_search {ef}", forced, rec.raw_hnsw,
                "raw query as planned")
    return t


def _contrast(rec: RecallRow) -> str:
    c = rec.contrast
    keys = ("distance_1", "distance_10", "distance_100", "distance_1000", "distance_median")
    return " / ".join(f"{c[k]:.3f}" if k in c else DASH for k in keys)


def _cpu_ms_per(cpu: dict[str, Any], n: int) -> float:
    """CPU milliseconds per item over every process of the benchmark (not other processes)."""
    own = sum(v for k, v in cpu.get("cpu_seconds", {}).items() if k != OTHER_PROCESSES)
    return own * 1000 / n if n else math.nan


def _latency_rows(row: Any, lat: LatencyRow) -> None:
    c, raw, unc, cac = lat.concurrency, lat.raw, lat.uncached, lat.cached
    row(f"[bold](b) vector search, concurrency {c}[/bold]", math.nan, None, "")
    row("uncached p50 ms", unc.latency.p50_ms, raw.latency.p50_ms, "raw SQL", f"uncached p50 c={c}")
    row("uncached p99 ms", unc.latency.p99_ms, raw.latency.p99_ms, "raw SQL")
    row("uncached QPS", unc.latency.qps, raw.latency.qps, "raw SQL")
    row("uncached server took_ms p50", unc.took_p50_ms or 0.0, raw.latency.p50_ms, "raw SQL (client side)")
    row("cached p50 ms", cac.latency.p50_ms, raw.latency.p50_ms, "raw SQL")
    row("cached p99 ms", cac.latency.p99_ms, raw.latency.p99_ms, "raw SQL")
    row("cached QPS", cac.latency.qps, raw.latency.qps, "raw SQL")
    row("cached server took_ms p50", cac.took_p50_ms or 0.0, None, "", f"cached server took_ms p50 c={c}")
    row("API process CPU ms per uncached request", unc.cpu_ms_per_request(BENCH_PROCESS), None, "")
    row("API process CPU ms per cached request", cac.cpu_ms_per_request(BENCH_PROCESS), None, "")
    row("DB CPU ms per uncached request", unc.db_cpu_ms, raw.db_cpu_ms, "raw SQL")
    row("client CPU ms per uncached request", unc.cpu_ms_per_request(LOAD_PROCESS),
        raw.cpu_ms_per_request(LOAD_PROCESS), "raw SQL client (psycopg)")
    row("other processes' CPU share (uncached run)", unc.other_share, raw.other_share, "during the raw run (noise)",
        pct=True)


def _cpu_rows(t: Table, cpu: dict[str, Any], wall: float, label: str) -> None:
    capacity = wall * cpu.get("cpus", 1)
    for name, seconds in sorted(cpu.get("cpu_seconds", {}).items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            t.add_row(f"  {name}", f"{seconds:.1f} s", f"{seconds / capacity:.0%} of machine CPU during {label}")
    busy = cpu.get("machine_busy_fraction")
    if busy is not None:
        t.add_row("  machine busy", f"{busy:.0%}", f"of {cpu.get('cpus')} CPUs during {label}")


def _ingest_profile(t: Table, r: Results) -> None:
    si, ri = r.service_ingest, r.raw_ingest
    t.add_row("[bold]service ingest: worker backends, sampled[/bold]", "", "")
    for stage, share in list(si.stages.items())[:8]:
        t.add_row(f"  {stage}", f"{share:.0%}", "of pg_stat_activity samples")
    t.add_row("[bold]service ingest: CPU by process[/bold]", "", "")
    _cpu_rows(t, si.cpu, si.seconds, "the service run")
    t.add_row("[bold]raw indexed COPY: CPU by process[/bold]", "", "")
    _cpu_rows(t, ri.cpu, ri.indexed_seconds, "the raw indexed COPY")
    t.add_row("[bold]service ingest: workers and API[/bold]", "", "")
    wm = si.worker_metrics
    workers = int(r.options.get("workers", 1))
    batch = wm.get("core_ingest_batch_seconds_sum", 0.0)
    t.add_row("  worker batch time (sum)", f"{batch:.1f} s",
              f"{batch / (si.seconds * workers):.0%} of {workers} workers x wall; "
              f"{int(wm.get('core_ingest_batch_seconds_count', 0))} batches")
    embed = wm.get("core_embed_seconds_sum", 0.0)
    t.add_row("  worker embedding time (sum)", f"{embed:.1f} s", f"{embed / batch:.0%} of batch time" if batch else "")
    t.add_row("  POST /v1/documents p50 / p99", f"{si.post_p50_ms:.0f} / {si.post_p99_ms:.0f} ms",
              f"{r.options.get('batch_docs')} docs per POST; all POSTs done after {si.posting_seconds:.1f} s")
    t.add_row("[bold]component baselines[/bold]", "", "")
    comp = r.components
    t.add_row("  chunk_text alone (1 core)", f"{comp['chunk_rate']:,.0f} chunks/s", "")
    t.add_row(f"  {r.settings.get('embedder')} embedder alone (in-process)", f"{comp['embed_rate']:,.0f} chunks/s", "")
    t.add_row("  index maintenance inside raw indexed COPY", f"{ri.indexed_seconds - ri.unindexed_seconds:.1f} s",
              f"{1 - ri.unindexed_seconds / ri.indexed_seconds:.0%} of its time (indexed minus unindexed COPY)")


def _search_profile(t: Table, d: Decomposition, embedder: str) -> None:
    t.add_row("[bold]uncached search, concurrency 1: each step alone (p50)[/bold]", "", "")
    steps = (
        ("HTTP floor: GET /healthz (uvicorn, FastAPI, the client)", d.http_floor),
        ("API-key lookup SQL (autocommit)", d.auth_sql),
        ("Redis GET (cache miss)", d.redis_get),
        (f"query embedding ({embedder})", d.query_embed),
        (f"service vector SQL (CTE query, autocommit, {d.service_depth} chunks)", d.service_sql),
    )
    for name, ms in steps:
        t.add_row(f"  {name}", f"{ms:.2f} ms", f"{ms / d.observed:.0%} of observed")
    t.add_row("  API process CPU per GET /healthz", f"{d.http_floor_cpu:.2f} ms", "the HTTP stack's own CPU cost")
    t.add_row("  sum of the steps", f"{d.accounted:.2f} ms", f"observed {d.observed:.2f} ms client side, "
              f"{d.observed_took:.2f} ms server took_ms")
    t.add_row("  service vector SQL inside BEGIN … ROLLBACK", f"{d.service_sql_txn:.2f} ms",
              f"raw plain query {d.raw_sql:.2f} ms")


def _recall_profile(t: Table, recall: list[RecallRow]) -> None:
    for rec in recall:
        t.add_row(f"[bold]exact search, company {rec.company}[/bold]", f"{rec.exact_p50_ms:.1f} ms",
                  "p50 at concurrency 1, index scans off (plan in the first table)")
        t.add_row("  cosine distance: neighbour 1 / 10 / 100 / 1000 / median chunk", _contrast(rec),
                  "means; a flat profile (10th close to the median) is hard for any ANN index")
        t.add_row(f"[bold]raw query recall@10 by hnsw.ef_search, company {rec.company}[/bold]", "", "")
        for point in rec.sweep:
            forced = point.get("hnsw_recall")
            t.add_row(f"  ef_search = {point['ef_search']:.0f}", f"{point['recall']:.3f}",
                      f"p50 {point['p50_ms']:.2f} ms at concurrency 1; planner: {point['plan']}"
                      + (f"; HNSW forced: recall {forced:.3f}" if forced is not None else ""))


def _profile_table(r: Results) -> Table:
    t = Table(title="where the time goes", show_header=True)
    t.add_column("component")
    t.add_column("value", justify="right")
    t.add_column("note")
    _ingest_profile(t, r)
    _search_profile(t, r.decomposition, str(r.settings.get("embedder")))
    _recall_profile(t, r.recall)
    return t


def _machine_table(r: Results) -> Table:
    t = Table(title="machine and settings", show_header=False)
    t.add_column("key")
    t.add_column("value")
    for key, value in r.machine.items():
        t.add_row(key, str(value))
    t.add_row("settings", ", ".join(f"{k}={v}" for k, v in r.settings.items()))
    t.add_row("corpus", ", ".join(f"{k}={v}" for k, v in r.corpus.items()))
    for company, plans in r.plans.items():
        for kind, plan in plans.items():
            t.add_row(f"plan {kind}, company {company}", plan)
    return t


NOISE_LIMIT = 0.10


def noise_notes(r: Results) -> list[str]:
    """Measured phases during which processes outside the benchmark used notable CPU."""
    phases = [("service ingest", r.service_ingest.cpu), ("raw indexed COPY", r.raw_ingest.cpu)]
    for lat in r.latency:
        for name, run in (("raw", lat.raw), ("uncached", lat.uncached), ("cached", lat.cached)):
            phases.append((f"search {name} c={lat.concurrency}", run.cpu))
    return [f"{name} {float(cpu.get('other_processes_share') or 0):.0%}" for name, cpu in phases
            if float(cpu.get("other_processes_share") or 0) > NOISE_LIMIT]


def render(results: Results, console: Console) -> None:
    console.print(_machine_table(results))
    console.print(_main_table(results))
    console.print(_profile_table(results))
    noisy = noise_notes(results)
    if noisy:
        console.print("[yellow]the machine was shared: processes outside the benchmark used this share of all CPUs "
                      "during[/yellow] " + ", ".join(noisy) + " [yellow](treat those figures as noisy)[/yellow]")
    missed = [t for t in results.targets() if not t.met]
    if missed:
        console.print("[red]targets missed:[/red] " + "; ".join(
            f"{t.name}: {_num(t.value)}{t.unit} vs {t.text}" for t in missed))
    else:
        console.print("[green]all targets met[/green]")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def to_json(results: Results) -> dict[str, Any]:
    data = _jsonable(results)
    si, ri = results.service_ingest, results.raw_ingest
    data["raw_ingest"].update(indexed_rate=ri.indexed_rate, unindexed_rate=ri.unindexed_rate, bulk_rate=ri.bulk_rate)
    data["service_ingest"].update(rate=si.rate, ratio_vs_indexed=ratio(si.rate, ri.indexed_rate),
                                  ratio_vs_unindexed=ratio(si.rate, ri.unindexed_rate),
                                  ratio_vs_bulk=ratio(si.rate, ri.bulk_rate))
    for row in data["latency"]:
        raw = row["raw"]["latency"]
        for kind in ("uncached", "cached"):
            row[f"{kind}_ratio"] = {m: ratio(row[kind]["latency"][m], raw[m]) for m in ("p50_ms", "p99_ms", "qps")}
    data["targets"] = [t.as_dict() for t in results.targets()]
    data["noisy_phases"] = noise_notes(results)
    return data


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results), indent=2, sort_keys=False) + "\n")
