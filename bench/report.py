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
from bench.search import LatencyRow, RecallRow
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
    recall: list[RecallRow]

    def targets(self) -> list[Target]:
        targets = [Target("ingest chunks/s vs naive indexed COPY", ratio(self.service_ingest.rate,
                          self.raw_ingest.indexed_rate), 1.0, True, "x")]
        for row in self.latency:
            limit = 1.5 * row.raw.p50_ms + 2.0
            targets.append(Target(f"uncached p50 c={row.concurrency}", row.uncached.p50_ms, limit, False, " ms"))
            targets.append(Target(f"cached server took_ms p50 c={row.concurrency}", row.cached_took_p50_ms, 1.0,
                                  False, " ms"))
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
    t = Table(title="opsctl core benchmark: service vs raw baseline (same run, same database)", show_lines=False)
    for col in ("measure", "service", "raw baseline", "ratio", "target", "verdict"):
        t.add_column(col, justify="left" if col in ("measure", "raw baseline", "verdict") else "right")
    targets = {x.name: x for x in r.targets()}

    def row(measure: str, service: float, base: float | None, base_label: str, target: str | None = None) -> None:
        tg = targets.get(target) if target else None
        t.add_row(measure, _num(service), f"{_num(base)}  {base_label}" if base is not None else DASH,
                  _x(ratio(service, base)) if base is not None else DASH, tg.text if tg else "",
                  tg.verdict if tg else "")

    si, ri = r.service_ingest, r.raw_ingest
    t.add_section()
    t.add_row("[bold](a) ingest[/bold]", "", "", "", "", "")
    row("chunks/s, service end to end", si.rate, ri.indexed_rate, "COPY into indexed table",
        "ingest chunks/s vs naive indexed COPY")
    row("chunks/s vs unindexed COPY", si.rate, ri.unindexed_rate, "COPY into unindexed table")
    row("chunks/s vs COPY + index build", si.rate, ri.bulk_rate, "COPY unindexed, then CREATE INDEX")
    row("wall seconds", si.seconds, ri.indexed_seconds, "indexed COPY")
    for lat in r.latency:
        c = lat.concurrency
        t.add_section()
        t.add_row(f"[bold](b) vector search, concurrency {c}[/bold]", "", "", "", "", "")
        row("uncached p50 ms", lat.uncached.p50_ms, lat.raw.p50_ms, "raw SQL", f"uncached p50 c={c}")
        row("uncached p99 ms", lat.uncached.p99_ms, lat.raw.p99_ms, "raw SQL")
        row("uncached QPS", lat.uncached.qps, lat.raw.qps, "raw SQL")
        row("uncached server took_ms p50", lat.uncached_took_p50_ms, lat.raw.p50_ms, "raw SQL (client side)")
        row("cached p50 ms", lat.cached.p50_ms, lat.raw.p50_ms, "raw SQL")
        row("cached p99 ms", lat.cached.p99_ms, lat.raw.p99_ms, "raw SQL")
        row("cached QPS", lat.cached.qps, lat.raw.qps, "raw SQL")
        row("cached server took_ms p50", lat.cached_took_p50_ms, None, "", f"cached server took_ms p50 c={c}")
    t.add_section()
    t.add_row("[bold](c) recall@10 vs exact search[/bold]", "", "", "", "", "")
    for rec in r.recall:
        row(f"company {rec.company} ({rec.rows_share:.0%} of rows), {rec.queries} queries", rec.service,
            rec.raw_hnsw, "raw HNSW query (exact = 1.000)", f"recall@10 company {rec.company}")
    return t


def _profile_table(r: Results) -> Table:
    si = r.service_ingest
    t = Table(title="where service ingest time goes", show_header=True)
    t.add_column("component")
    t.add_column("value", justify="right")
    t.add_column("note")
    for stage, share in list(si.stages.items())[:8]:
        t.add_row(stage, f"{share:.0%}", "of worker-backend samples")
    t.add_section()
    cpu = si.cpu.get("cpu_seconds", {})
    capacity = si.seconds * si.cpu.get("cpus", 1)
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        t.add_row(name, f"{seconds:.1f} s", f"{seconds / capacity:.0%} of machine CPU over the run")
    busy = si.cpu.get("machine_busy_fraction")
    if busy is not None:
        t.add_row("machine busy", f"{busy:.0%}", f"of {si.cpu.get('cpus')} CPUs during the run")
    t.add_section()
    wm = si.worker_metrics
    workers = int(r.options.get("workers", 1))
    batch = wm.get("core_ingest_batch_seconds_sum", 0.0)
    t.add_row("worker batch time (sum)", f"{batch:.1f} s",
              f"{batch / (si.seconds * workers):.0%} of {workers} workers x wall; "
              f"{int(wm.get('core_ingest_batch_seconds_count', 0))} batches")
    embed = wm.get("core_embed_seconds_sum", 0.0)
    t.add_row("worker embedding time (sum)", f"{embed:.1f} s", f"{embed / batch:.0%} of batch time" if batch else "")
    t.add_row("POST /v1/documents p50 / p99", f"{si.post_p50_ms:.0f} / {si.post_p99_ms:.0f} ms",
              f"{r.options.get('batch_docs')} docs per POST; all POSTs done after {si.posting_seconds:.1f} s")
    t.add_section()
    comp = r.components
    t.add_row("chunk_text alone (1 core)", f"{comp['chunk_rate']:,.0f} chunks/s", "component baseline")
    t.add_row("hash embedder alone (1 core)", f"{comp['embed_rate']:,.0f} chunks/s", "component baseline")
    t.add_row("hash embedder, one query", f"{comp['query_embed_ms']:.3f} ms", "inside every uncached search")
    ri = r.raw_ingest
    t.add_row("index maintenance in raw COPY", f"{ri.indexed_seconds - ri.unindexed_seconds:.1f} s",
              f"{1 - ri.unindexed_seconds / ri.indexed_seconds:.0%} of indexed COPY time")
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


def render(results: Results, console: Console) -> None:
    console.print(_machine_table(results))
    console.print(_main_table(results))
    console.print(_profile_table(results))
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
        raw = row["raw"]
        for kind in ("uncached", "cached"):
            row[f"{kind}_ratio"] = {m: ratio(row[kind][m], raw[m]) for m in ("p50_ms", "p99_ms", "qps")}
    data["targets"] = [t.as_dict() for t in results.targets()]
    return data


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results), indent=2, sort_keys=False) + "\n")
