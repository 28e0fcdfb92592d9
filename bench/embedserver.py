"""A local OpenAI-compatible embeddings API with a fixed latency: the stand-in for a remote embedding
service, whose round trip (not the machine's CPUs) bounds what one ingest worker can do.

``POST {url}/embeddings`` (``url`` ends in ``/v1``) with ``{"model", "input": [str, ...]}`` is answered
after ``delay`` seconds with core.embed's hash embedding of each input, in order, so the documents
ingested through it search as they would with ``embedder: hash``. Each request sleeps on its own
thread (``ThreadingHTTPServer``): N workers waiting on it wait in parallel, as on a real API. The
vectors are rounded to 6 decimals (the client normalises them again): less JSON to write and parse.
Anything else gets a JSON ``{"error": {"message"}}``: 404 for another path, 400 for a body that is not
such a request.

    with serve(dim=384, delay=0.4) as url:   # OPSCTL_EMBEDDER=openai OPSCTL_OPENAI_BASE_URL=url
        ...
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.embed import HashEmbedder

MODEL = "hash-stand-in"  # no OpenAI model's name: core.embed checks no native dimension against it
DECIMALS = 6


class BadRequest(ValueError):
    """The body is not an embeddings request."""


def inputs_of(body: bytes) -> list[str]:
    """The texts of an embeddings request body (``input``: one string or a list of them)."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    texts = payload.get("input") if isinstance(payload, dict) else None
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'input' must be a string or a non-empty list of strings")
    return texts


def answer(embedder: HashEmbedder, texts: list[str]) -> dict[str, Any]:
    """The API's answer for ``texts``: one embedding per input, ``index`` its position."""
    vectors = embedder.embed(texts).round(DECIMALS)
    data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": MODEL,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, dim: int, delay: float) -> None:
        self.embedder = HashEmbedder(dim)
        self.delay = delay
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (a worker stopped by the scale-down) is no error of the
        stand-in's: it is not printed. Anything else is, with its traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset, ...
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as a client pool expects of an API

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        started = time.monotonic()
        if self.path.rstrip("/") != "/v1/embeddings":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        try:
            texts = inputs_of(body)
        except BadRequest as exc:
            return self._send(400, {"error": {"message": str(exc)}})
        result = answer(self.server.embedder, texts)
        time.sleep(max(0.0, self.server.delay - (time.monotonic() - started)))
        self._send(200, result)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the loop's figures come from Prometheus, and a line per request would flood its output."""


@contextmanager
def serve(dim: int, delay: float) -> Iterator[str]:
    """The API on a free local port for the block, answering each request ``delay`` seconds after it
    arrived (the embedding counted in); its base URL (``http://127.0.0.1:PORT/v1``)."""
    if delay < 0:
        raise ValueError("the delay is at least 0 seconds")
    httpd = _Server(dim, delay)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                              name="embed-stand-in")
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
