"""Search quality: a known-item evaluation on real manual pages, every ranker on the same corpus.

    python -m bench.search_eval [--quick] [--pages N] [--embedder hash[,minilm,...]] [--output FILE]

Corpus (``bench/manpages.py``): N pages (600; 150 with --quick) of /usr/share/man/man1 and man8
drawn with a fixed seed, no page family over 5 %; a page's NAME description is its query and is
removed from its text; the title is the page name. Ordered by a seeded hash, the queries are cut
into two equal halves, ``tune`` (choose parameters on it) and ``test`` (report on it); MRR@10 and
recall@10 are given for both, with the distinct pages per answer and the p50 time per query
(the client's; for the service also the API's own ``took_ms``).

Rankers, each answering the top 10 for every query (chunks of one page count once, at their
first position):

    fts5 bm25           SQLite FTS5 (the standard library's sqlite3): one row per page with
                        columns title and body, tokenizer unicode61 (the default); the query is
                        the OR of its tokens, cut as unicode61 cuts them (runs of letters and
                        digits, anything else separates), each quoted; ordered by bm25() with
                        the column weights 1, 1 (FTS5's default), and again with the title's
                        weight chosen from FTS5_TITLE_WEIGHTS on the tune half
    service <mode>      POST /v1/search {"mode": keyword|vector|hybrid, "k": 10} to the real core
                        (``bench/stack.py``), documents ingested by POST /v1/documents (one per
                        page, title = page name) through the worker pool
    raw <mode>          the service's own SQL (``core.search.retrieve.retrieve``) on a direct
                        connection, with the same exact/HNSW choice: the service overhead is the
                        difference in time; the rankings must equal the service's

One stack per embedder (``--embedder hash,minilm``); keyword and fts5 do not depend on it and
run with the first. Prints rich tables; writes JSON (default bench/results/search-eval.json).
"""

from __future__ import annotations

import argparse
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from rich.console import Console
from rich.table import Table

from bench.evalmetrics import HALVES, choose, distinct, doc_rank, mrr, recall, split
from bench.manpages import MAN_DIRS, Page, choose_pages, corpus_checksum, man_files
from bench.scratch import scratch_dir
from core.errors import OpsError

RESULTS = Path(__file__).resolve().parent / "results" / "search-eval.json"
K = 10
SEED = 13
POST_DOCS = 100
INGEST_TIMEOUT = 3600.0
TENANT = "Manpages"

Ranker = Callable[[str], list[str]]  # query -> page names, best first


@dataclass(frozen=True)
class Options:
    pages: int
    seed: int
    embedders: tuple[str, ...]
    output: Path
    workers: int
    keep: bool
    sweep: bool = False


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.search_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="150 pages instead of 600")
    p.add_argument("--pages", type=int, help="pages in the corpus (default 600; 150 with --quick)")
    p.add_argument("--seed", type=int, default=SEED, help=f"page choice and tune/test split (default {SEED})")
    p.add_argument("--embedder", default="hash",
                   help="the service's embedders, comma-separated, each a name core.embed accepts "
                        "(hash, minilm, …); one stack per embedder (default hash)")
    p.add_argument("--workers", type=int, default=2, help="ingest worker processes (default 2)")
    p.add_argument("--output", type=Path, help=f"JSON report (default {RESULTS})")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (database, logs)")
    p.add_argument("--sweep", action="store_true", help="also score every combination of the ranking's parameters "
                   "on each stack's raw path (bench/fusion_sweep.py), chosen on tune")
    a = p.parse_args(argv)
    embedders = tuple(e.strip() for e in a.embedder.split(",") if e.strip())
    offered = embedder_names()
    if not embedders or not set(embedders) <= set(offered):
        p.error(f"--embedder: a comma-separated list of {', '.join(offered)}")
    pages = a.pages or (150 if a.quick else 600)
    if pages < 2:
        p.error("--pages must be at least 2")
    return Options(pages, a.seed, embedders, a.output or RESULTS, a.workers, a.keep, a.sweep)


def embedder_names() -> tuple[str, ...]:
    """The embedders the core's settings accept (``OPSCTL_EMBEDDER``)."""
    from core.config import Settings

    return tuple(get_args(Settings.model_fields["embedder"].annotation))


# --- the peer: SQLite FTS5 ---------------------------------------------------------------------

_FTS5_TOKEN = re.compile(r"[^\W_]+")  # unicode61: letters and digits are token characters


def fts5_query(text: str) -> str:
    """The OR of ``text``'s unicode61 tokens, each quoted (so no token is read as FTS5 syntax)."""
    return " OR ".join(f'"{t}"' for t in _FTS5_TOKEN.findall(text))


FTS5_TITLE_WEIGHTS = (1.0, 2.0, 3.0, 5.0, 10.0)  # bm25(pages, title, 1.0): the first is FTS5's default


class Fts5:
    """The pages in an in-memory FTS5 table (title, body), ranked by bm25() with the title's
    column weight ``title_weight`` (the body's is 1)."""

    def __init__(self, pages: Sequence[Page]) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE pages USING fts5(title, body)")
        self.db.executemany("INSERT INTO pages (title, body) VALUES (?, ?)", [(p.name, p.text) for p in pages])

    def search(self, query: str, k: int = K, title_weight: float = 1.0) -> list[str]:
        match = fts5_query(query)
        if not match:
            return []
        rows = self.db.execute("SELECT title FROM pages WHERE pages MATCH ? ORDER BY bm25(pages, ?, 1.0), rowid "
                               "LIMIT ?", (match, title_weight, k)).fetchall()
        return [r[0] for r in rows]

    def ranker(self, title_weight: float) -> Ranker:
        return lambda query: self.search(query, K, title_weight)


# --- scoring -----------------------------------------------------------------------------------


@dataclass
class Score:
    system: str  # fts5, service, raw
    mode: str  # bm25, keyword, vector, hybrid
    embedder: str | None
    mrr: dict[str, float]  # by half: tune, test, all
    recall: dict[str, float]
    queries: dict[str, int]
    p50_ms: float  # per query, measured from this process
    seconds: float
    ranks: dict[str, int | None] = field(repr=False)  # page -> rank of its page for its query
    docs_per_answer: float = 0.0  # distinct pages in an answer of K results (chunks of one page count once)
    server_p50_ms: float | None = None  # service rows: the API's own took_ms
    parameters: str = ""  # parameters chosen on the tune half, if any
    same_as_service: bool | None = None  # raw rows: the rankings equal the service's


def percentile50(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def score(system: str, mode: str, embedder: str | None, ranker: Ranker, pages: Sequence[Page],
          halves: dict[str, list[str]]) -> Score:
    """Run ``ranker`` on every page's query; MRR@K and recall@K per half."""
    ranks: dict[str, int | None] = {}
    took: list[float] = []
    answered = 0
    started = time.perf_counter()
    for page in pages:
        t0 = time.perf_counter()
        ranked = ranker(page.query)
        took.append(time.perf_counter() - t0)
        ranks[page.name] = doc_rank(ranked, page.name, K)
        answered += len(distinct(ranked[:K]))
    seconds = time.perf_counter() - started
    per: dict[str, list[int | None]] = {h: [ranks[n] for n in halves[h]] for h in HALVES}
    per["all"] = list(ranks.values())
    return Score(system, mode, embedder, {h: mrr(r) for h, r in per.items()}, {h: recall(r) for h, r in per.items()},
                 {h: len(r) for h, r in per.items()}, percentile50(took) * 1000, seconds, ranks,
                 answered / len(pages) if pages else 0.0)


# --- the service ---------------------------------------------------------------------------------


def _ingest(stack: Any, pages: Sequence[Page], key: str, say: Callable[[str], None]) -> dict[str, float]:
    """POST every page, wait until every job is done; chunks stored and the rates."""
    from bench.ingest import COUNTS_SQL, PENDING_SQL, POLL_SECONDS
    from bench.load import LeanHttpClient

    docs = [{"external_id": p.name, "title": p.name, "text": p.text} for p in pages]
    client = LeanHttpClient(stack.api_url)
    started = time.perf_counter()
    try:
        for i in range(0, len(docs), POST_DOCS):
            response = client.post("/v1/documents", json={"documents": docs[i : i + POST_DOCS]},
                                   headers={"Authorization": f"Bearer {key}"})
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/documents: HTTP {response.status_code}: {response.text[:300]}")
    finally:
        client.close()
    deadline = time.monotonic() + INGEST_TIMEOUT
    with stack.connect(autocommit=True) as conn:
        while (pending := conn.execute(PENDING_SQL).fetchone()[0]) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest did not finish: {pending} jobs pending")
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        jobs, dead = conn.execute(COUNTS_SQL).fetchone()
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        conn.execute("VACUUM (ANALYZE) chunks")
    if jobs != len(docs) or dead:
        raise RuntimeError(f"{jobs} jobs for {len(docs)} pages, {dead} dead")
    say(f"ingested {len(docs)} pages as {chunks} chunks in {seconds:.1f}s")
    return {"pages": len(docs), "chunks": int(chunks), "seconds": seconds, "chunks_per_second": chunks / seconds}


def service_ranker(api_url: str, key: str, mode: str, took_ms: list[float]) -> tuple[Ranker, Callable[[], None]]:
    """POST /v1/search in ``mode`` on one keep-alive connection; the ranker and its closer. Each
    answer's server-side ``took_ms`` is appended to ``took_ms``."""
    from bench.load import LeanHttpClient

    client = LeanHttpClient(api_url)
    headers = {"Authorization": f"Bearer {key}"}

    def rank(query: str) -> list[str]:
        response = client.post("/v1/search", json={"query": query, "k": K, "mode": mode}, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"POST /v1/search: HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        took_ms.append(float(body["took_ms"]))
        return [str(h["external_id"]) for h in body["results"]]

    return rank, client.close


def raw_ranker(conn: Any, embedder: Any, company_id: int, mode: str, exact: bool, ranking: Any) -> Ranker:
    """The service's retrieval SQL on a direct connection (no HTTP, auth, cache or pool), with the
    service's ``ranking`` (``core.search.fusion.Ranking.of`` its settings)."""
    from core.search.retrieve import SearchRequest, retrieve

    def rank(query: str) -> list[str]:
        req = SearchRequest.model_validate({"query": query, "k": K, "mode": mode})
        hits = retrieve(conn, embedder, company_id, req, exact=exact, ranking=ranking)
        conn.rollback()
        return [h.external_id for h in hits]

    return rank


MODES = ("keyword", "vector", "hybrid")


def measure_embedder(pages: Sequence[Page], halves: dict[str, list[str]], embedder: str, opts: Options,
                     with_keyword: bool, say: Callable[[str], None]) -> tuple[list[Score], dict[str, Any]]:
    """Start a stack with ``embedder`` in a temp dir, ingest, score its modes; the dir is removed
    however this ends (kept with ``--keep``)."""
    with scratch_dir(f"opsctl-search-eval-{embedder}-", opts.keep, say) as root:
        return _measure_in(root, pages, halves, embedder, opts, with_keyword, say)


def _measure_in(root: Path, pages: Sequence[Page], halves: dict[str, list[str]], embedder: str, opts: Options,
                with_keyword: bool, say: Callable[[str], None]) -> tuple[list[Score], dict[str, Any]]:
    from bench.search import service_searches_exactly
    from bench.stack import running_stack
    from core.embed import make_embedder
    from core.pooler import apply_settings, search_settings
    from core.search.fusion import Ranking

    scores: list[Score] = []
    with running_stack(root, opts.workers, (TENANT,), embedder=embedder) as stack:
        tenant = stack.tenants[TENANT]
        say(f"{embedder}: ingesting {len(pages)} pages")
        ingest = _ingest(stack, pages, tenant.api_key, say)
        modes = MODES if with_keyword else MODES[1:]
        local_embedder = make_embedder(stack.settings)
        ranking = Ranking.of(stack.settings)
        swept: dict[str, Any] | None = None
        with stack.connect() as conn:
            exact = service_searches_exactly(conn, stack.settings, tenant.company_id)
            apply_settings(conn, search_settings(stack.settings), local=False)  # as the service's pool
            conn.commit()
            if opts.sweep:
                from bench.fusion_sweep import sweep

                swept = sweep(conn, local_embedder, tenant.company_id, exact, pages, halves, ranking, say)
            for mode in modes:
                label = None if mode == "keyword" else embedder
                say(f"{embedder}: service {mode}")
                took: list[float] = []
                rank, close = service_ranker(stack.api_url, tenant.api_key, mode, took)
                try:
                    service = score("service", mode, label, rank, pages, halves)
                finally:
                    close()
                service.server_p50_ms = percentile50(took)
                say(f"{embedder}: raw {mode}")
                raw_rank = raw_ranker(conn, local_embedder, tenant.company_id, mode, exact, ranking)
                raw = score("raw", mode, label, raw_rank, pages, halves)
                raw.same_as_service = raw.ranks == service.ranks
                scores.extend((service, raw))
    facts: dict[str, Any] = {"ingest": ingest, "exact_vector_search": exact}
    if swept is not None:
        facts["sweep"] = swept
    return scores, facts


@dataclass
class Results:
    corpus: dict[str, Any]
    scores: list[Score]
    stacks: dict[str, Any]
    seconds: float
    queries: list[dict[str, str]]  # name, query, half: what each score's ranks refer to

    def as_dict(self) -> dict[str, Any]:
        return {"k": K, "corpus": self.corpus, "stacks": self.stacks, "seconds": round(self.seconds, 1),
                "scores": [asdict(s) for s in self.scores], "queries": self.queries}


def build_corpus(opts: Options) -> tuple[list[Page], dict[str, list[str]], dict[str, Any]]:
    files = man_files(MAN_DIRS)
    if not files:
        raise RuntimeError(f"no manual pages under {', '.join(map(str, MAN_DIRS))} (Debian package man-db/manpages)")
    pages = choose_pages(files, opts.pages, opts.seed)
    halves = split([p.name for p in pages], opts.seed)
    facts = {"source": [str(d) for d in MAN_DIRS], "files": len(files), "pages": len(pages), "seed": opts.seed,
             "renderer": "python (bench/manpages.py)", "sha256": corpus_checksum(pages),
             "chars": sum(len(p.text) for p in pages), "queries": {h: len(v) for h, v in halves.items()}}
    return pages, {h: halves[h] for h in HALVES}, facts


def fts5_scores(pages: Sequence[Page], halves: dict[str, list[str]], say: Callable[[str], None]) -> list[Score]:
    """The peer as a user would run it first (default weights), and with the title weight chosen
    on the tune half."""
    fts = Fts5(pages)
    tried = {w: score("fts5", "bm25", None, fts.ranker(w), pages, halves) for w in FTS5_TITLE_WEIGHTS}
    best = choose(FTS5_TITLE_WEIGHTS, lambda w: tried[w].mrr["tune"])
    say(f"fts5: title weight {best:g} is best on the tune half")
    tuned = replace(tried[best], parameters=f"title weight {best:g} (chosen on tune)")
    return [tried[FTS5_TITLE_WEIGHTS[0]], tuned]


def run(opts: Options, say: Callable[[str], None]) -> Results:
    started = time.perf_counter()
    pages, halves, facts = build_corpus(opts)
    say(f"corpus: {facts['pages']} pages of {facts['files']} files, sha256 {facts['sha256'][:16]}")
    scores = fts5_scores(pages, halves, say)
    stacks: dict[str, Any] = {}
    for i, embedder in enumerate(opts.embedders):
        measured, stacks[embedder] = measure_embedder(pages, halves, embedder, opts, i == 0, say)
        scores.extend(measured)
    half = {name: h for h, names in halves.items() for name in names}
    queries = [{"name": p.name, "query": p.query, "half": half[p.name]} for p in pages]
    return Results(facts, scores, stacks, time.perf_counter() - started, queries)


def render(r: Results, console: Console) -> None:
    c = r.corpus
    table = Table(title=f"Known-item search on {c['pages']} manual pages (MRR@{K}, recall@{K}; "
                        f"tune {c['queries']['tune']} / test {c['queries']['test']} queries; "
                        f"corpus sha256 {c['sha256'][:12]})")
    labels = ("system", "mode", "embedder", "MRR test", "MRR tune", "recall test", "recall tune", "pages/answer",
              "p50 ms", "server p50", "notes")
    for col in labels:
        numeric = col.startswith(("MRR", "recall", "pages", "p50", "server"))
        table.add_column(col, justify="right" if numeric else "left")
    for s in r.scores:
        notes = s.parameters or {True: "= service", False: "DIFFERS from service", None: ""}[s.same_as_service]
        table.add_row(s.system, s.mode, s.embedder or "-", f"{s.mrr['test']:.3f}", f"{s.mrr['tune']:.3f}",
                      f"{s.recall['test']:.3f}", f"{s.recall['tune']:.3f}", f"{s.docs_per_answer:.1f}",
                      f"{s.p50_ms:.1f}", "-" if s.server_p50_ms is None else f"{s.server_p50_ms:.1f}", notes)
    console.print(table)
    for name, facts in r.stacks.items():
        i = facts["ingest"]
        console.print(f"{name}: ingest: {i['pages']} pages, {i['chunks']} chunks in {i['seconds']:.1f}s "
                      f"({i['chunks_per_second']:.1f} chunks/s); vector search "
                      f"{'exact (few chunks)' if facts['exact_vector_search'] else 'HNSW'}")
    for name, facts in r.stacks.items():
        if "sweep" in facts:
            render_sweep(name, facts["sweep"], console)
    console.print(f"total {r.seconds:.0f}s")


def render_sweep(embedder: str, swept: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{embedder}: the ranking's parameters ({swept['combinations']} combinations on the raw "
                        f"path; best chosen on tune)")
    for col in ("row", "mode", "parameters", "MRR test", "MRR tune", "recall test"):
        table.add_column(col, justify="right" if col.startswith(("MRR", "recall")) else "left")
    rows = [(f"best {m}", t) for m, t in swept["best"].items()] + list(swept["reference"].items())
    for label, t in rows:
        table.add_row(label, t["mode"], t["parameters"], f"{t['mrr']['test']:.3f}", f"{t['mrr']['tune']:.3f}",
                      f"{t['recall']['test']:.3f}")
    console.print(table)
    c = swept["ceiling"]
    console.print(f"{embedder}: fusion's ceiling (the page among either half's top 10 pages): recall@10 test "
                  f"{c['top10']['test']:.3f}, tune {c['top10']['tune']:.3f}; among either half's candidates: "
                  f"test {c['candidates']['test']:.3f}")


def write_json(r: Results, path: Path) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r.as_dict(), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    err = Console(stderr=True)
    # `kill PID`: unwind, so the stack stops its database, Redis and workers instead of orphaning them
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def say(message: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")

    try:
        results = run(opts, say)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"search_eval: {exc}", file=sys.stderr)
        return 1
    except OpsError as exc:
        print(f"search_eval: {exc.message}", file=sys.stderr)
        return exc.exit_code
    render(results, Console())
    write_json(results, opts.output)
    say(f"wrote {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
