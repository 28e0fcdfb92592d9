"""``opsctl index status | tune | maintain | reembed | tenants``: the HNSW indexes of chunks, by the
vector-index policy, and switching embedders (``opsctl.reembed``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info, size, stderr_progress

app = typer.Typer(help="Vector (HNSW) indexes: measured recall, ef_search tuning, reindex and vacuum.\n\n"
                       "Example: opsctl index tune --apply", no_args_is_help=True)

if TYPE_CHECKING:
    from core.config import Settings
    from core.spaces.store import Space


@contextmanager
def build_progress(first: str) -> Iterator[Callable[[str, str, int, int], None]]:
    """A progress bar on stderr for index builds: ``progress(what, phase, done, total)``."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    with stderr_progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(first, total=None)

        def progress(what: str, phase: str, done: int, total: int) -> None:
            bar.update(task, description=f"{what}: {phase}", completed=done, total=total or None)

        yield progress


POLICY_OPTION = typer.Option(None, "--policy", help="policy file (default: <policy dir>/vector-index.yaml)")


@app.command("status")
def status(policy: Path | None = POLICY_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """Per partition index: size, live/dead tuples, last vacuum, recall@k against exact search,
    the ef_search new connections use, p50 latency.

    Example: opsctl index status -o json
    """
    from opsctl.context import settings
    from opsctl.vindex.service import load_policy
    from opsctl.vindex.service import status as run

    pol = load_policy(policy)
    rows = run(settings(), pol)
    if output is not Output.table:
        emit(rows, output)  # sizes in bytes
        return
    emit([{**r, "index_bytes": size(r["index_bytes"]), "table_bytes": size(r["table_bytes"])} for r in rows], output,
         columns=[("table", "PARTITION"), ("index_bytes", "INDEX SIZE"), ("table_bytes", "TABLE SIZE"),
                  ("live_tuples", "LIVE"), ("dead_tuples", "DEAD"), ("last_vacuum", "LAST VACUUM"),
                  (f"recall@{pol.k}", f"RECALL@{pol.k}"), ("ef_search", "EF_SEARCH"), ("p50_ms", "P50 MS"),
                  ("valid", "VALID")])


@app.command("tune")
def tune(
    apply: bool = typer.Option(False, "--apply", help="set the chosen ef_search as the database default"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Find the smallest ef_search (within the policy's bounds) whose recall@k meets the target;
    --apply makes it the database's default for the service's new connections (audited).

    Example: opsctl index tune --apply
    """
    from opsctl.context import settings
    from opsctl.vindex.service import load_policy
    from opsctl.vindex.service import tune as run

    pol = load_policy(policy)
    with stderr_progress() as bar:
        task = bar.add_task("measuring recall per ef_search", total=None)
        result = run(settings(), pol, apply=apply,
                     on_point=lambda p: bar.update(task, description=f"ef_search {p.ef_search}: recall "
                                                                     f"{p.recall:.3f}"))
    rows = [{"ef_search": p.ef_search, f"recall@{pol.k}": round(p.recall, 4), "p50_ms": round(p.p50_ms, 3),
             "chosen": bool(result.chosen and p.ef_search == result.chosen.ef_search)} for p in result.points]
    chosen = result.chosen.ef_search if result.chosen else None
    if output is Output.table:
        emit(rows, output, title=f"{result.queries} queries; exact search p50 {result.exact_p50_ms:.2f} ms")
        info(f"ef_search {result.previous} → {chosen}" + (" (applied: database default)" if apply
                                                           else " (dry run: add --apply)"))
    else:
        emit({"steps": rows, "chosen": chosen, "previous": result.previous, "applied": apply,
              "exact_p50_ms": result.exact_p50_ms, "queries": result.queries}, output)


@app.command("maintain")
def maintain(
    apply: bool = typer.Option(False, "--apply", help="rebuild and vacuum (default: print the decisions only)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Decide per index whether a reindex trigger fired (recall, dead tuples, bloat); --apply runs
    REINDEX INDEX CONCURRENTLY (progress from pg_stat_progress_create_index), then VACUUM.

    Example: opsctl index maintain --apply
    """
    from opsctl.context import settings
    from opsctl.vindex.service import load_policy
    from opsctl.vindex.service import maintain as run

    pol = load_policy(policy)
    with build_progress("measuring recall") as progress:
        result = run(settings(), pol, apply=apply, progress=progress)
    rows = [{"index": st.index, "table": st.table, f"recall@{pol.k}": st.recall, "live": st.live_tuples,
             "dead": st.dead_tuples, "reindex": d.reindex, "reasons": "; ".join(d.reasons)}
            for st, d in result.decisions]
    if output is Output.table:
        emit(rows, output, title="applied" if apply else "decisions (dry run: add --apply to rebuild)")
        info(result.sentence())
    else:
        emit({"applied": apply, "indexes": rows, "done": result.done, "summary": result.sentence()}, output)


REEMBED_HELP = """Switch embedders on a live system: embed every chunk again into a new vector space in the
background (a new column; searches keep using the old vectors), build its HNSW index, then switch in
one transaction. Dry run by default: the chunks to embed and the time, measured on a sample.
--apply starts it (the daemon's `reembed` job runs it; --wait runs it here with a progress bar);
--status shows progress; --abort --apply abandons it. Start, switch and abort are audited.

\b
Example: opsctl index reembed --embedder onnx
         opsctl index reembed --embedder onnx --apply --wait
         opsctl index reembed --status -o json
"""


@app.command("reembed", help=REEMBED_HELP)
def reembed(
    embedder: str | None = typer.Option(None, "--embedder", help="hash | onnx | minilm | openai"),
    dim: int | None = typer.Option(None, "--dim", min=8, max=16000, help="the new space's dimension "
                                   "(hash, openai; default: embed_dim, 384 for onnx and minilm)"),
    precision: str | None = typer.Option(None, "--precision", help="onnx: float32 | int8"),
    openai_model: str | None = typer.Option(None, "--openai-model", help="openai: the model"),
    apply: bool = typer.Option(False, "--apply", help="start it (with --abort: abort it)"),
    wait: bool = typer.Option(False, "--wait", help="run it here with a progress bar until the switch"),
    show_status: bool = typer.Option(False, "--status", help="the active space and the re-embed's progress"),
    abort: bool = typer.Option(False, "--abort", help="abandon the re-embed in progress (with --apply)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from opsctl.audit import default_actor
    from opsctl.context import settings
    from opsctl.reembed import service

    s, actor = settings(), default_actor()
    if show_status:
        found = service.read_status(s)
        if output is not Output.table:
            emit(found, output)
            return
        from datetime import UTC, datetime

        from opsctl.daemon.status import space_line, vector_space

        summary = vector_space(found, datetime.now(UTC))
        assert summary is not None
        info(f"vector space: {space_line(summary)}; next step: {found['next']}")
        return
    if abort:
        space = service.abort(s, actor, apply)
        if space is None:
            info("no re-embed in progress")
        else:
            info(f"re-embed into {space.spec.label()} " + ("aborted: its column is dropped next"
                                                           if apply else "would be aborted (dry run: add --apply)"))
        return
    if embedder is None:
        if not wait:
            raise typer.BadParameter("give --embedder NAME (or --status, --abort, --wait)")
    else:
        if embedder not in ("hash", "onnx", "minilm", "openai"):
            raise typer.BadParameter(f"--embedder must be hash, onnx, minilm or openai, not {embedder!r}")
        if precision not in (None, "float32", "int8"):
            raise typer.BadParameter("--precision must be float32 or int8")
        spec = service.target(s, embedder, dim, precision, openai_model)
        if not apply:
            planned = service.plan(s, spec)
            emit(planned.as_dict(), output) if output is not Output.table else info(planned.sentence())
            info("dry run: add --apply to start it")
            return
        space = service.start(s, spec, actor)
        info(f"re-embed into {space.spec.label()} started (space {space.id}, {space.chunks_total} chunks)")
    if wait:
        _wait(s, actor)


def _wait(s: Settings, actor: str) -> None:
    from opsctl.reembed import service

    with stderr_progress() as bar:
        task = bar.add_task("re-embedding", total=None)

        def report(step: str, space: Space | None) -> None:
            if space is None:
                bar.update(task, description=step)
            else:
                bar.update(task, description=step, completed=space.chunks_done, total=max(space.chunks_total, 1))

        result = service.run_to_end(s, actor, report)
    info(result.sentence())


@app.command("tenants")
def tenants(
    apply: bool = typer.Option(False, "--apply", help="build, complete and drop the indexes (default: the plan only)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Own HNSW indexes for large companies (the policy's `tenants:` section): shows which companies
    would get or lose one; --apply drops those no longer wanted and builds the others online (CREATE
    INDEX CONCURRENTLY per partition, with progress), an audit row per move.

    Example: opsctl index tenants --apply
    """
    from core.search.tenantindex import tenant_index_name
    from opsctl.context import settings
    from opsctl.vindex.service import load_policy
    from opsctl.vindex.tenants_service import tenant_indexes

    pol = load_policy(policy)
    with build_progress("counting chunks per company") as progress:
        result = tenant_indexes(settings(), pol, apply=apply, progress=progress)
    rows = [{"company_id": m.company_id, "action": m.action.value, "index": tenant_index_name(m.company_id),
             "chunks": m.rows, "share": round(m.share, 6), "reason": m.reason} for m in result.moves]
    if output is Output.table:
        emit(rows, output, columns=[("company_id", "COMPANY"), ("action", "ACTION"), ("index", "INDEX"),
                                    ("chunks", "CHUNKS"), ("share", "SHARE"), ("reason", "WHY")],
             title="applied" if apply else "plan (dry run: add --apply)")
        info(f"{len(result.own)} companies with their own index before this run; " + result.sentence())
    else:
        emit({"applied": apply, "moves": rows, "own_before": result.own, "done": result.done,
              "summary": result.sentence()}, output)
