"""`opsctl index reembed`: plan, start, status, abort, and the runner the daemon (or ``--wait``) drives."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.clock import Clock, utcnow
from core.config import Settings
from core.errors import OpsError
from core.spaces.spec import SpaceSpec, settings_for, spec_of
from core.spaces.store import Space, active, building
from opsctl.reembed import pg, tenants
from opsctl.reembed.plan import Progress, estimate_seconds, next_step, progress
from opsctl.vindex.online import ProgressFn

if TYPE_CHECKING:
    import psycopg

    from core.embed import Embedder

log = logging.getLogger(__name__)

SAMPLE_CHUNKS = 32
BATCH = 64
SWITCH_BATCHES = 4  # the switch embeds at most this many batches itself (the table locked meanwhile)
SAMPLE_SQL = "SELECT body FROM chunks ORDER BY company_id, id LIMIT %s"
CHUNKS_SQL = "SELECT count(*) FROM chunks"


def target(settings: Settings, embedder: str, dim: int | None = None, precision: str | None = None,
           openai_model: str | None = None) -> SpaceSpec:
    """The space ``--embedder`` (and its options) names, the rest from the settings (pure)."""
    update: dict[str, Any] = {"embedder": embedder}
    if dim is not None:
        update["embed_dim"] = dim
    elif embedder in ("onnx", "minilm"):
        update["embed_dim"] = 384
    if precision is not None:
        update["embed_precision"] = precision
    if openai_model is not None:
        update["openai_model"] = openai_model
    return spec_of(settings.model_copy(update=update))


def make_space_embedder(settings: Settings, spec: SpaceSpec) -> Embedder:
    """The embedder writing ``spec`` (ConfigError when it cannot: not installed, wrong dimension)."""
    from core.embed import make_embedder

    return make_embedder(settings_for(spec, settings))


@contextmanager
def _connect(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    from pgvector.psycopg import register_vector

    from opsctl.context import connect_db

    with connect_db(settings) as conn:
        register_vector(conn)
        yield conn


@dataclass(frozen=True)
class Plan:
    active: SpaceSpec
    target: SpaceSpec
    chunks: int
    sample: int
    sample_seconds: float
    estimate_seconds: float | None
    in_progress: dict[str, Any] | None

    def sentence(self) -> str:
        eta = "unknown" if self.estimate_seconds is None else f"~{self.estimate_seconds:.0f} s"
        rate = (f"{self.sample / self.sample_seconds:.0f} chunks/s measured on {self.sample}"
                if self.sample and self.sample_seconds > 0 else "no chunk to measure on")
        return (f"re-embed {self.chunks} chunks from {self.active.label()} into {self.target.label()}: "
                f"{eta} of embedding ({rate}), then the HNSW index and the switch")

    def as_dict(self) -> dict[str, Any]:
        return {"active": self.active.label(), "target": self.target.label(), "target_embedder": self.target.embedder,
                "chunks": self.chunks, "sample_chunks": self.sample, "sample_seconds": round(self.sample_seconds, 4),
                "estimate_seconds": None if self.estimate_seconds is None else round(self.estimate_seconds, 1),
                "in_progress": self.in_progress, "summary": self.sentence()}


def plan(settings: Settings, spec: SpaceSpec) -> Plan:
    """The dry run: chunks to embed, and the time it takes at the rate measured on a sample of them."""
    embedder = make_space_embedder(settings, spec)
    with _connect(settings) as conn:
        current = active(conn)
        other = building(conn)
        chunks = int(conn.execute(CHUNKS_SQL).fetchone()[0])  # type: ignore[index]
        texts = [r[0] for r in conn.execute(SAMPLE_SQL, (SAMPLE_CHUNKS,))]
    if current.spec.same_space(spec):
        raise OpsError(f"{spec.label()} is the active vector space already")
    started = time.perf_counter()
    if texts:
        embedder.embed(texts)
    seconds = time.perf_counter() - started
    return Plan(current.spec, spec, chunks, len(texts), seconds, estimate_seconds(chunks, len(texts), seconds),
                other.as_dict() if other else None)


def start(settings: Settings, spec: SpaceSpec, actor: str) -> Space:
    make_space_embedder(settings, spec)  # refuse a space this machine cannot embed in, before recording it
    with _connect(settings) as conn:
        return pg.start(conn, spec, actor)


def abort(settings: Settings, actor: str, apply: bool) -> Space | None:
    with _connect(settings) as conn:
        if not apply:
            return building(conn)
        return pg.abort(conn, actor)


def space_progress(space: Space, now: Any) -> Progress:
    return progress(space.chunks_done, space.chunks_total, space.created_at, now)


def status(conn: Any, now: Any) -> dict[str, Any]:
    """The active space, the one being built with its progress, and the step the runner takes next."""
    state, space = pg.read_state(conn)
    found: dict[str, Any] = {"active": active(conn).as_dict(), "building": None, "next": next_step(state).step}
    if space is not None:
        p = space_progress(space, now)
        found["building"] = {**space.as_dict(), "ratio": round(p.ratio, 4), "missing": state.missing,
                             "tenant_indexes_to_carry": list(state.carry),
                             "chunks_per_second": _round(p.chunks_per_second), "eta_seconds": _round(p.eta_seconds)}
    return found


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def read_status(settings: Settings, clock: Clock = utcnow) -> dict[str, Any]:
    with _connect(settings) as conn:
        return status(conn, clock())


@dataclass
class RunResult:
    steps: list[str] = field(default_factory=list)
    embedded: int = 0
    busy: bool = False  # another runner holds the lock
    finished: str | None = None
    waiting: str | None = None  # the step it stopped at cannot be taken now (why); a later run takes it

    def sentence(self) -> str:
        if self.busy:
            return "another runner is re-embedding"
        if self.waiting:
            return f"re-embed waits: {self.waiting}"
        if not self.steps:
            return "no re-embed in progress"
        done = f"; {self.finished}" if self.finished else ""
        return f"re-embed: {self.embedded} chunks embedded ({', '.join(dict.fromkeys(self.steps))}){done}"


Report = Callable[[str, Space | None], None]


def run(settings: Settings, actor: str, *, budget_seconds: float | None = None, batch: int = BATCH,
        report: Report | None = None, monotonic: Callable[[], float] = time.monotonic) -> RunResult:
    """Take the next steps until there is nothing left (or ``budget_seconds`` passed): the daemon's
    job, and ``--wait``. One runner at a time (a session advisory lock: a killed runner's is freed)."""
    result = RunResult()
    deadline = None if budget_seconds is None else monotonic() + budget_seconds
    embedders: dict[int, Embedder] = {}
    with _connect(settings) as conn:
        if not pg.try_lock_runner(conn):
            result.busy = True
            return result
        while deadline is None or monotonic() < deadline:
            state, space = pg.read_state(conn)
            step = next_step(state, catch_up_in_switch=batch * SWITCH_BATCHES)
            if step.step == "idle":
                break
            result.steps.append(step.step)
            if report:
                report(step.step, space)
            if space is not None and space.id not in embedders:
                embedders[space.id] = make_space_embedder(settings, space.spec)
            try:
                result.finished = _take(conn, settings, actor, step.step, space, embedders, batch, result, report)
            except pg.Aborted as exc:
                log.info("%s", exc)
            except tenants.Waiting as exc:
                result.waiting = str(exc)
                break
    return result


def _take(conn: Any, settings: Settings, actor: str, step: str, space: Space | None, embedders: dict[int, Embedder],
          batch: int, result: RunResult, report: Report | None) -> str | None:
    if step == "drop_retired":
        pg.drop_column(conn, "embedding_retired")
        return "the old vectors are dropped"
    if step == "drop_next":
        pg.drop_column(conn, "embedding_next")
        return "the aborted re-embed's vectors are dropped"
    assert space is not None
    embedder = embedders[space.id]
    if step == "add_column":
        pg.add_column(conn, space)
    elif step == "backfill":
        result.embedded += pg.backfill_batch(conn, space, embedder, batch)
    elif step == "build_index":
        pg.build_index(conn, space, settings, _index_progress(report, space, "index"))
    elif step == "carry_tenant_indexes":
        tenants.carry(conn, settings, space, actor, _index_progress(report, space, "tenant index"))
    elif step == "catch_up":
        result.embedded += pg.catch_up_batch(conn, space, embedder, batch)
    elif step == "switch":
        try:
            result.embedded += pg.switch(conn, space, embedder, actor, limit=batch * SWITCH_BATCHES)
        except OpsError as exc:
            if isinstance(exc, (pg.Aborted, tenants.Waiting)):
                raise
            log.info("%s", exc)
            return None
        return f"switched to {space.spec.label()}"
    return None


def _index_progress(report: Report | None, space: Space, what: str) -> ProgressFn | None:
    """An index build's progress as the runner's report: "<what> <partition>: <phase>"."""
    if report is None:
        return None
    told = report

    def progress(leaf: str, phase: str, done: int, total: int) -> None:
        told(f"{what} {leaf}: {phase}", space)

    return progress


def run_to_end(settings: Settings, actor: str, report: Report, poll_seconds: float = 1.0,
               sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """``--wait``: run the re-embed here, or, while another runner (the daemon) holds it, follow its
    progress, until no step is left."""
    total = RunResult()
    while True:
        result = run(settings, actor, report=report)
        total.steps += result.steps
        total.embedded += result.embedded
        total.finished = result.finished or total.finished
        if not (result.busy or result.waiting):
            return total
        with _connect(settings) as conn:
            space = building(conn)
            state, _ = pg.read_state(conn)
        if next_step(state).step == "idle":
            return total
        report(f"waiting: {result.waiting}" if result.waiting else "waiting for the runner that holds the re-embed",
               space)
        sleep(poll_seconds)
