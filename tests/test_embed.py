"""Embedders: the hash embedder, the real MiniLM model, and the OpenAI client against a local server."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import core.embed
from core.config import Settings
from core.embed import (
    Embedder,
    HashEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    _retry_after_seconds,
    make_embedder,
)
from core.errors import ConfigError, EmbedderError

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings from explicit values only: no config file, no state file, no OPSCTL_* leaking in."""
    for name in list(os.environ):
        if name.startswith("OPSCTL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPSCTL_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return lambda **values: Settings(**values)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSCTL_", "HF_", "TRANSFORMERS_"))}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "OPSCTL_DATA_DIR": str(tmp_path)}


# --- HashEmbedder -----------------------------------------------------------------------------


def test_hash_rows_are_unit_float32_and_never_zero() -> None:
    vectors = HashEmbedder(64).embed(["hello world", "", "!!! ???", "a much longer text " * 50])
    assert vectors.dtype == np.float32
    assert vectors.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: HashEmbedder(32),
        lambda: MiniLMEmbedder(),
        lambda: OpenAIEmbedder(base_url="http://127.0.0.1:9", model="m", dim=8, max_retries=0),
    ],
    ids=["hash", "minilm", "openai"],
)
def test_no_texts_no_work(make: Callable[[], Embedder]) -> None:
    """An empty batch answers at once: no model load, no request (port 9 would refuse it)."""
    embedder = make()
    vectors = embedder.embed([])
    assert vectors.shape == (0, embedder.dim)
    assert vectors.dtype == np.float32
    if isinstance(embedder, MiniLMEmbedder):
        assert embedder._model is None
    if isinstance(embedder, OpenAIEmbedder):
        embedder.close()


def test_a_single_string_is_rejected() -> None:
    with pytest.raises(TypeError):
        HashEmbedder(32).embed("not a list")


def test_hash_is_case_insensitive_and_ignores_punctuation() -> None:
    a, b = HashEmbedder(64).embed(["Hello, World!", "hello world"])
    np.testing.assert_array_equal(a, b)


def test_hash_bigrams_make_word_order_count() -> None:
    a, b = HashEmbedder(384).embed(["dog bites man", "man bites dog"])
    assert 0.2 < _cosine(a, b) < 0.9


def test_hash_similar_texts_are_close_and_unrelated_far() -> None:
    backup, reworded, cat, revenue = HashEmbedder(384).embed(
        [
            "The database backup failed last night because the disk was full.",
            "Last night the database backup failed: the disk was full.",
            "Our cat enjoys sleeping in the warm afternoon sun on the sofa.",
            "Quarterly revenue grew by ten percent in Europe.",
        ]
    )
    assert _cosine(backup, reworded) > 0.7
    assert _cosine(backup, cat) < 0.3
    assert _cosine(backup, revenue) < 0.3


def test_hash_rows_do_not_depend_on_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.embed, "_HASH_CELLS", 1000)  # passes of 7 texts: many pass boundaries
    texts = [f"document number {i} talks about topic {i % 7}" for i in range(50)]
    embedder = HashEmbedder(64)
    one_by_one = np.concatenate([embedder.embed([text]) for text in texts])
    np.testing.assert_allclose(embedder.embed(texts), one_by_one, rtol=1e-6)


def test_hash_layout_is_pinned() -> None:
    """Changing the hashing scheme silently invalidates every stored vector: bump ``name`` instead."""
    vector = HashEmbedder(64).embed(["alpha beta"])[0]
    layout = {int(i): int(np.sign(vector[i])) for i in np.flatnonzero(vector)}
    assert HashEmbedder.name == "hash-v1"
    assert layout == {9: 1, 21: -1, 47: 1}  # "alpha", "beta", "alpha beta": one bucket and sign each


def test_hash_is_the_same_in_another_process(tmp_path: Path) -> None:
    texts = ["the same text in two processes", "zweite Zeile, mit Umlauten: äöü"]
    script = (
        "import sys; from core.embed import HashEmbedder; "
        f"sys.stdout.buffer.write(HashEmbedder(64).embed({texts!r}).tobytes())"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script],
            env={**_clean_env(tmp_path), "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] == HashEmbedder(64).embed(texts).tobytes()


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# --- make_embedder ----------------------------------------------------------------------------


def test_make_hash_embedder(make_settings: Callable[..., Settings]) -> None:
    embedder = make_embedder(make_settings(embedder="hash", embed_dim=64))
    assert isinstance(embedder, HashEmbedder)
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 64


def test_minilm_dimension_mismatch_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(
        ConfigError, match="embedder 'minilm' produces 384-dimensional vectors but embed_dim is 768"
    ):
        make_embedder(make_settings(embedder="minilm", embed_dim=768))


@pytest.mark.parametrize(
    ("model", "dim", "message"),
    [
        ("text-embedding-ada-002", 384, "produces 1536-dimensional vectors but embed_dim is 384"),
        ("text-embedding-3-small", 2000, "at most 1536-dimensional vectors but embed_dim is 2000"),
    ],
)
def test_openai_known_model_dimension_mismatch(
    make_settings: Callable[..., Settings], model: str, dim: int, message: str
) -> None:
    settings = make_settings(embedder="openai", embed_dim=dim, openai_model=model, openai_api_key=API_KEY)
    with pytest.raises(ConfigError, match=message):
        make_embedder(settings)


def test_openai_api_needs_a_key(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="openai_api_key"):
        make_embedder(make_settings(embedder="openai", openai_api_key=None))


def test_importing_and_choosing_an_embedder_loads_no_torch(tmp_path: Path) -> None:
    script = (
        "import sys; from core.config import Settings; from core.embed import make_embedder; "
        "make_embedder(Settings(embedder='hash')); "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=_clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"


# --- a local OpenAI-compatible server ---------------------------------------------------------


@dataclass
class FakeServer:
    """Serves ``POST /v1/embeddings`` with 3 times the hash embedding of each input, in reverse order."""

    dim: int
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # answered first, in order
    delays: list[float] = field(default_factory=list)  # seconds to stall the next requests
    body: Callable[[list[str], int], Any] | None = None  # replaces the normal answer

    def answer(self, inputs: list[str]) -> Any:
        if self.body is not None:
            return self.body(inputs, self.dim)
        vectors = 3 * HashEmbedder(self.dim).embed(inputs)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data[::-1], "model": "fake"}


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append({"path": self.path, "headers": dict(self.headers), "json": payload})
            if server.delays:
                time.sleep(server.delays.pop(0))
            if self.path != "/v1/embeddings":
                return self._send(404, {"error": {"message": "no such route"}})
            if server.failures:
                status, headers = server.failures.pop(0)
                auth = self.headers.get("Authorization", "")
                return self._send(
                    status, {"error": {"message": f"failure {status} for key {auth[7:]}"}}, headers
                )
            answer = server.answer(payload["input"])
            self._send(200, answer) if not isinstance(answer, bytes) else self._send_raw(200, answer)

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            self._send_raw(status, json.dumps(body).encode(), headers)

        def _send_raw(self, status: int, raw: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:  # the client gave up (a timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(dim=64)
    httpd = _QuietServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _client(server: FakeServer, **options: Any) -> OpenAIEmbedder:
    values: dict[str, Any] = {
        "base_url": server.url,
        "api_key": API_KEY,
        "model": "test-model",
        "dim": server.dim,
        "batch_size": 4,
        "timeout_seconds": 5.0,
        "max_retries": 3,
        "backoff_seconds": 0.001,
    }
    return OpenAIEmbedder(**{**values, **options})


TEXTS = [f"text number {i} about subject {i % 3}" for i in range(10)]


def test_openai_batches_reorders_and_renormalises(
    server: FakeServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        embedder="openai",
        embed_dim=64,
        embed_batch_size=4,
        openai_base_url=server.url + "/",
        openai_api_key=API_KEY,
        openai_model="test-model",
    )
    embedder = make_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    with embedder:
        vectors = embedder.embed(TEXTS)
    np.testing.assert_allclose(vectors, HashEmbedder(64).embed(TEXTS), atol=1e-6)
    assert vectors.dtype == np.float32
    assert [r["path"] for r in server.requests] == ["/v1/embeddings"] * 3
    assert [r["json"]["input"] for r in server.requests] == [TEXTS[0:4], TEXTS[4:8], TEXTS[8:10]]
    assert all(r["json"] == {"model": "test-model", "input": r["json"]["input"]} for r in server.requests)
    assert all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    assert embedder.name == "openai/test-model"


def test_openai_without_key_sends_no_authorization(server: FakeServer) -> None:
    with _client(server, api_key=None) as embedder:
        embedder.embed(["one"])
    assert "Authorization" not in server.requests[0]["headers"]


def test_openai_shortenable_models_are_asked_for_embed_dim(
    server: FakeServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        embedder="openai",
        embed_dim=64,
        openai_base_url=server.url,
        openai_api_key=API_KEY,
        openai_model="text-embedding-3-small",
    )
    embedder = make_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    with embedder:
        embedder.embed(["one"])
    assert server.requests[0]["json"] == {
        "model": "text-embedding-3-small",
        "input": ["one"],
        "dimensions": 64,
    }


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_openai_retries_transient_statuses(
    server: FakeServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server.failures = [(status, {}), (status, {})]
    with caplog.at_level(logging.WARNING, logger="core.embed"), _client(server) as embedder:
        vectors = embedder.embed(TEXTS[:2])
    np.testing.assert_allclose(vectors, HashEmbedder(64).embed(TEXTS[:2]), atol=1e-6)
    assert len(server.requests) == 3
    assert len([r for r in caplog.records if f"HTTP {status}" in r.getMessage()]) == 2
    assert API_KEY not in caplog.text


def test_openai_honours_retry_after(server: FakeServer) -> None:
    server.failures = [(429, {"Retry-After": "1"})]
    with _client(server) as embedder:
        elapsed = _timed(lambda: embedder.embed(["one"]))
    assert len(server.requests) == 2
    assert 0.95 <= elapsed < 5


def test_openai_gives_up_after_max_retries(server: FakeServer) -> None:
    server.failures = [(503, {})] * 10
    with _client(server, max_retries=2) as embedder, pytest.raises(EmbedderError) as caught:
        embedder.embed(["one"])
    assert len(server.requests) == 3
    assert "after 3 attempts" in caught.value.message
    assert "HTTP 503" in caught.value.message
    assert API_KEY not in caught.value.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_openai_does_not_retry_other_client_errors(
    server: FakeServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server.failures = [(status, {})]
    with caplog.at_level(logging.DEBUG), _client(server) as embedder, pytest.raises(EmbedderError) as caught:
        embedder.embed(["one"])
    assert len(server.requests) == 1
    assert f"HTTP {status}" in caught.value.message
    assert "failure" in caught.value.message  # the server's own explanation is kept...
    assert API_KEY not in str(caught.value)  # ...but the key it echoed is not
    assert API_KEY[:12] not in str(caught.value)
    assert API_KEY not in caplog.text


def test_openai_retries_timeouts(server: FakeServer) -> None:
    server.delays = [1.5]
    with _client(server, timeout_seconds=0.3) as embedder:
        vectors = embedder.embed(["slow"])
    assert vectors.shape == (1, 64)
    assert len(server.requests) == 2


def test_openai_connection_refused_is_retried_then_reported(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OpenAIEmbedder(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=API_KEY,
        model="m",
        dim=8,
        max_retries=2,
        backoff_seconds=0.001,
    )
    with (
        caplog.at_level(logging.WARNING, logger="core.embed"),
        embedder,
        pytest.raises(EmbedderError) as caught,
    ):
        embedder.embed(["one"])
    assert "ConnectError" in caught.value.message
    assert "after 3 attempts" in caught.value.message
    assert len(caplog.records) == 2


def test_openai_wrong_dimension(server: FakeServer) -> None:
    with _client(server, dim=32) as embedder, pytest.raises(EmbedderError) as caught:
        embedder.embed(["one"])
    assert "returned 64-dimensional vectors but embed_dim is 32" in caught.value.message
    assert len(server.requests) == 1


def _items(vectors: list[Any], indexes: list[Any]) -> dict[str, Any]:
    return {"data": [{"index": i, "embedding": v} for i, v in zip(indexes, vectors, strict=True)]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lambda inputs, dim: b"<html>gateway</html>", "not JSON"),
        (lambda inputs, dim: {"result": []}, "expected 2 embeddings, got no 'data' list"),
        (
            lambda inputs, dim: {"data": [{"index": 0, "embedding": [1.0] * dim}]},
            "expected 2 embeddings, got 1 items",
        ),
        (lambda inputs, dim: _items([[1.0] * dim] * 2, [0, 0]), "index 0 appears twice"),
        (lambda inputs, dim: _items([[1.0] * dim] * 2, [0, 2]), "bad or missing 'index' 2"),
        (lambda inputs, dim: _items([[1.0] * dim] * 2, ["0", 1]), "bad or missing 'index' '0'"),
        (lambda inputs, dim: _items([["x"] * dim] * 2, [0, 1]), "bad 'embedding'"),
        (lambda inputs, dim: _items(["AAAA", "AAAA"], [0, 1]), "bad 'embedding'"),
        (lambda inputs, dim: {"data": [{"index": 0}, {"index": 1}]}, "bad 'embedding'"),
        (lambda inputs, dim: _items([[0.0] * dim] * 2, [0, 1]), "all-zero vector"),
    ],
    ids=[
        "html",
        "no-data",
        "too-few",
        "duplicate",
        "out-of-range",
        "string-index",
        "strings",
        "base64",
        "missing-embedding",
        "zero-vector",
    ],
)
def test_openai_malformed_responses(
    server: FakeServer, body: Callable[[list[str], int], Any], message: str
) -> None:
    server.body = body
    with _client(server) as embedder, pytest.raises(EmbedderError, match=message):
        embedder.embed(["one", "two"])
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("soon", None)],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    assert _retry_after_seconds(httpx.Response(429, headers=headers)) == expected


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = _retry_after_seconds(httpx.Response(503, headers={"Retry-After": when}))
    assert seconds is not None
    assert 25 <= seconds <= 30


# --- MiniLM (the real model; CI installs the extra) --------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    embedder = MiniLMEmbedder(batch_size=8)
    embedder.model()
    return embedder


THREADS_PROBE = """
import sys, threading, torch
from core.config import Settings
from core.embed import make_embedder
embedder = make_embedder(Settings(embedder="minilm", embed_threads=int(sys.argv[1])))
seen = []
worker = threading.Thread(target=lambda: (embedder.embed(["a query"]), seen.append(torch.get_num_threads())))
worker.start()
worker.join()
print(seen[0])
"""


@pytest.mark.minilm
@pytest.mark.parametrize("threads", [1, 2])
def test_minilm_runs_torch_with_embed_threads(threads: int) -> None:
    """``embed_threads`` reaches torch (its default 1 keeps the API's query embeddings off OpenMP
    teams started from request threads); in a process of its own: the setting is process-wide."""
    done = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(threads)], capture_output=True, text=True,
                          timeout=600, check=True)
    assert done.stdout.strip().splitlines()[-1] == str(threads)


@pytest.mark.minilm
def test_minilm_vectors(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(["hello world", "", "a second text"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.minilm
def test_minilm_paraphrases_are_closer_than_unrelated_texts(minilm: MiniLMEmbedder) -> None:
    cat, rug, revenue, outage, down = minilm.embed(
        [
            "The cat sits on the mat.",
            "A kitten is resting on a rug.",
            "Quarterly revenue grew by ten percent.",
            "The database server crashed and the site went offline.",
            "Our website was down because the DB host failed.",
        ]
    )
    assert _cosine(cat, rug) > 0.5
    assert _cosine(outage, down) > 0.5
    for unrelated in (_cosine(cat, revenue), _cosine(cat, outage), _cosine(revenue, down)):
        assert unrelated < 0.25
    # shared words alone do not fool it the way they fool the hash embedder
    assert _cosine(outage, down) > _cosine(outage, cat) + 0.3


@pytest.mark.minilm
def test_minilm_rows_do_not_depend_on_the_batch(minilm: MiniLMEmbedder) -> None:
    texts = [f"sentence {i} about the weather in city {i}" for i in range(20)]
    together = minilm.embed(texts)
    np.testing.assert_allclose(together[13], minilm.embed([texts[13]])[0], atol=1e-5)


@pytest.mark.minilm
def test_minilm_loads_with_the_network_blocked(tmp_path: Path) -> None:
    script = (
        "import socket, sys\n"
        "def deny(*args, **kwargs):\n"
        "    raise OSError('network disabled by the test')\n"
        "socket.socket.connect = deny\n"
        "socket.create_connection = deny\n"
        "from core.config import Settings\n"
        "from core.embed import make_embedder\n"
        "embedder = make_embedder(Settings(embedder='minilm', embed_dim=384))\n"
        "assert 'torch' not in sys.modules, 'torch imported before first use'\n"
        "print(embedder.embed(['offline works']).shape)\n"
    )
    env = {**_clean_env(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(1, 384)"
