"""``python -m bench.http_cost``: the API's per-request CPU outside a route's work, by layer, in-process.

Measured on uvloop, ``--rounds`` rounds of ``--requests`` calls each, the median round printed:

* the thread-pool hop a blocking route pays (``run_in_threadpool`` of a function that does nothing:
  both threads' CPU);
* ``GET /healthz`` called as ASGI (no socket, no HTTP parsing) through the app ``create_app`` builds,
  and through the same app without its four middlewares (metrics and access log, request guard,
  rate-limit fields, compression): their difference is what the middleware costs per request.

What uvicorn itself costs (the socket, HTTP parsing, writing the answer) is the rest of a real
request's CPU: compare with ``python -m bench``'s ``http_floor_cpu`` (a ``GET /healthz`` over a socket).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from starlette.concurrency import run_in_threadpool

from bench.stack import scratch_stores
from core.api import Services, create_app
from core.spaces.follow import follow_database


def nothing() -> None:
    return None


def http_scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"accept-encoding", b"gzip, zstd")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


def asgi_call(app: Any, scope: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def call() -> None:
        await app(dict(scope), receive, send)

    return call


async def cpu_us(call: Callable[[], Awaitable[Any]], rounds: int, requests: int) -> float:
    """Process CPU µs per call (every thread's), the median of ``rounds`` rounds, after a warm-up."""
    for _ in range(requests // 4):
        await call()
    found = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            await call()
        found.append((time.process_time() - started) * 1e6 / requests)
    return statistics.median(found)


async def measure(app: Any, bare: Any, rounds: int, requests: int) -> list[tuple[str, float]]:
    scope = http_scope("/healthz")
    return [
        ("thread-pool hop (run_in_threadpool of a no-op)", await cpu_us(lambda: run_in_threadpool(nothing),
                                                                         rounds, requests)),
        ("GET /healthz through the app (middleware + FastAPI)", await cpu_us(asgi_call(app, scope), rounds, requests)),
        ("GET /healthz without the four middlewares", await cpu_us(asgi_call(bare, scope), rounds, requests)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=4000)
    opts = parser.parse_args(argv)
    with scratch_stores("opsctl-http-cost-") as stores:
        with stores.pool.connection() as conn:
            embedder = follow_database(stores.settings, conn)
        services = Services(stores.settings, stores.pool, stores.cache, embedder)
        try:
            app, bare = create_app(services), create_app(services)
            bare.user_middleware.clear()  # built on its first call: FastAPI's own layers only
            found = uvloop.run(measure(app, bare, opts.rounds, opts.requests))
        finally:
            services.close()
    print(f"process CPU µs per call, median of {opts.rounds} rounds of {opts.requests}")
    for label, us in found:
        print(f"  {us:7.1f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
