"""Load generators. They run in a separate process (see ``LoadProcess``) so the clients never
compete with the API's event loop for this process's GIL, as remote clients would not.

Every run opens its connections first, releases all threads at once, and times each request
from the client's side.
"""

from __future__ import annotations

import http.client
import itertools
import json
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

HTTP_TIMEOUT = 120.0


class Session(Protocol):
    """One client (a thread's connection): performs item ``i``, returns what to keep of it."""

    def __call__(self, i: int) -> Any: ...

    def close(self) -> None: ...


@dataclass
class RunResult:
    seconds: list[float]
    extras: list[Any]
    wall_seconds: float
    started_at: float  # time.time() when the threads were released
    cpu_seconds: float  # this process's CPU time during the run
    errors: list[str] = field(default_factory=list)
    server_cpu_seconds: float = 0.0  # CPU of the PostgreSQL backends of raw sessions, open to close


def _backend_cpu_seconds(pid: int) -> float:
    """utime + stime of a local process (a PostgreSQL backend), from /proc."""
    try:
        text = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one short read
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_concurrently(n: int, concurrency: int, open_session: Callable[[], Session]) -> RunResult:
    """Items 0..n-1 spread over ``concurrency`` threads, each with its own session."""
    sessions = [open_session() for _ in range(concurrency)]
    counter = itertools.count()
    seconds: list[float] = [0.0] * n
    extras: list[Any] = [None] * n
    errors: list[str] = []
    gate = threading.Barrier(concurrency + 1)

    def work(session: Session) -> None:
        gate.wait()
        while (i := next(counter)) < n:
            started = time.perf_counter()
            try:
                extras[i] = session(i)
            except Exception as exc:  # recorded, and the run is reported as failed
                errors.append(f"item {i}: {type(exc).__name__}: {exc}"[:500])
            seconds[i] = time.perf_counter() - started

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in sessions]
    for t in threads:
        t.start()
    cpu_before = _cpu()
    gate.wait()
    started_at, started = time.time(), time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = _cpu() - cpu_before
    for s in sessions:
        s.close()
    server_cpu = sum(float(getattr(s, "server_cpu", 0.0)) for s in sessions)
    return RunResult(seconds, extras, wall, started_at, cpu, errors, server_cpu)


# --- HTTP -------------------------------------------------------------------------------------


class HttpResponse:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LeanHttpClient:
    """One keep-alive HTTP/1.1 connection (the standard library's ``http.client``).

    The load generator shares this machine's cores with the service, which remote clients would
    not. httpx cost about 1 to 1.7 ms of CPU per search, as much as the API itself; this client
    costs a third of that (the report prints it per request, next to the raw baseline's psycopg
    client), so the figures stay about the service.
    """

    def __init__(self, base_url: str, timeout: float = HTTP_TIMEOUT) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
        """``body``: bytes as they are (with the caller's Content-Type), anything else as JSON."""
        if isinstance(body, bytes):
            data: bytes | None = body
            sent = dict(headers or {})
        else:
            data = None if body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else dict(headers or {})
        try:
            self.conn.request(method, path, body=data, headers=sent)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):  # the server closed the keep-alive connection
            self.conn.close()  # reconnect once, as httpx would
            self.conn.request(method, path, body=data, headers=sent)
            response = self.conn.getresponse()
        return HttpResponse(response.status, response.read())

    def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
        return self.request("POST", path, json, headers)

    def get(self, path: str) -> HttpResponse:
        return self.request("GET", path)

    def close(self) -> None:
        self.conn.close()


class _HttpSession:
    def __init__(self, base_url: str, call: Callable[[Any, int], Any]) -> None:
        self.client = LeanHttpClient(base_url)
        if self.client.get("/healthz").status_code != 200:  # open the keep-alive connection now
            raise RuntimeError(f"{base_url}/healthz is not 200")
        self.call = call

    def __call__(self, i: int) -> Any:
        return self.call(self.client, i)

    def close(self) -> None:
        self.client.close()


def post_documents(api_url: str, batches: Sequence[tuple[str, list[dict[str, Any]]]], clients: int) -> RunResult:
    """POST /v1/documents for each (api key, documents) batch; extras: the job ids of each."""

    def call(client: LeanHttpClient, i: int) -> list[int]:
        key, docs = batches[i]
        response = client.post("/v1/documents", json={"documents": docs},
                               headers={"Authorization": f"Bearer {key}"})
        if response.status_code != 202:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        return list(response.json()["job_ids"])

    return run_concurrently(len(batches), clients, lambda: _HttpSession(api_url, call))


def search_api(api_url: str, key: str, queries: Sequence[str], concurrency: int, k: int = 10,
               keep_hits: bool = False) -> RunResult:
    """POST /v1/search mode=vector; extras: (took_ms, cached, hits?) with hits = [(chunk_id, score)]."""
    headers = {"Authorization": f"Bearer {key}"}

    def call(client: LeanHttpClient, i: int) -> tuple[float, bool, list[tuple[int, float]] | None]:
        response = client.post("/v1/search", json={"query": queries[i], "k": k, "mode": "vector"}, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        hits = [(int(h["chunk_id"]), float(h["score"])) for h in body["results"]] if keep_hits else None
        return float(body["took_ms"]), bool(body["cached"]), hits

    return run_concurrently(len(queries), concurrency, lambda: _HttpSession(api_url, call))


# --- raw PostgreSQL ---------------------------------------------------------------------------

RAW_VECTOR_SQL = (
    "SELECT id, embedding <=> %(q)s AS distance FROM chunks WHERE company_id = %(company)s"
    " ORDER BY embedding <=> %(q)s LIMIT %(k)s"
)


class _PgSession:
    """A dedicated connection with the service pool's session settings."""

    def __init__(self, url: str, ef_search: int, call: Callable[[Any, int], Any], autocommit: bool = True,
                 force_index: bool = False) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        self.conn = psycopg.connect(url, autocommit=True)
        register_vector(self.conn)
        self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
        self.conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
        if force_index:  # the planner may prefer an exact scan on small tables; measure the index itself
            self.conn.execute("SET enable_seqscan = off")
            self.conn.execute("SET enable_bitmapscan = off")
        self.conn.autocommit = autocommit
        self.call = call
        self.backend_pid = self.conn.info.backend_pid
        self._cpu_at_open = _backend_cpu_seconds(self.backend_pid)
        self.server_cpu = 0.0

    def __call__(self, i: int) -> Any:
        return self.call(self.conn, i)

    def close(self) -> None:
        self.server_cpu = _backend_cpu_seconds(self.backend_pid) - self._cpu_at_open
        self.conn.close()


def search_raw(url: str, company_id: int, vectors: Any, concurrency: int, ef_search: int, k: int = 10,
               force_index: bool = False) -> RunResult:
    """The raw top-k query over precomputed query vectors; extras: [(chunk_id, distance)].
    ``force_index``: sequential and bitmap scans off, so the HNSW index answers."""

    def call(conn: Any, i: int) -> list[tuple[int, float]]:
        rows = conn.execute(RAW_VECTOR_SQL, {"q": vectors[i], "company": company_id, "k": k}).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    return run_concurrently(len(vectors), concurrency,
                            lambda: _PgSession(url, ef_search, call, force_index=force_index))


def sql_repeat(url: str, query: str, params: Sequence[Any], concurrency: int, ef_search: int,
               in_transaction: bool) -> RunResult:
    """``query`` once per params; ``in_transaction``: BEGIN … ROLLBACK around each, as the API's
    pooled connections do; extras: row counts."""

    def call(conn: Any, i: int) -> int:
        n = len(conn.execute(query, params[i], prepare=True).fetchall())
        if in_transaction:
            conn.rollback()
        return n

    return run_concurrently(len(params), concurrency,
                            lambda: _PgSession(url, ef_search, call, autocommit=not in_transaction))


def http_get(api_url: str, path: str, n: int, concurrency: int) -> RunResult:
    """GET ``path`` n times: the HTTP floor of the stack (uvicorn, FastAPI, the client, no database)."""

    def call(client: LeanHttpClient, i: int) -> int:
        status = client.get(path).status_code
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}")
        return status

    return run_concurrently(n, concurrency, lambda: _HttpSession(api_url, call))


class _RedisSession:
    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.client.ping()

    def __call__(self, i: int) -> Any:
        return self.client.get(f"bench:absent:{i}")

    def close(self) -> None:
        self.client.close()


def redis_get(url: str, n: int, concurrency: int) -> RunResult:
    """GET of absent keys: what an uncached search pays to learn it is uncached."""
    return run_concurrently(n, concurrency, lambda: _RedisSession(url))


# --- the load process -------------------------------------------------------------------------


def _ready() -> int:
    import psycopg  # noqa: F401 - imported once, before any timing

    return os.getpid()


class LoadProcess:
    """One long-lived child process (spawned, so nothing of this process leaks into it)."""

    def __init__(self) -> None:
        self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.pid: int = self._executor.submit(_ready).result(timeout=120)

    def submit(self, fn: Callable[..., RunResult], *args: Any, **kwargs: Any) -> Future[RunResult]:
        return self._executor.submit(fn, *args, **kwargs)

    def run(self, fn: Callable[..., RunResult], *args: Any, **kwargs: Any) -> RunResult:
        result = self.submit(fn, *args, **kwargs).result()
        if result.errors:
            raise RuntimeError(f"{len(result.errors)} requests failed; first: {result.errors[0]}")
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
