"""The closed loop's stand-in embedding API (bench.embedserver) and how the loop wires its workers to it."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from bench import embedserver
from bench.closed_loop import DIM, default_factor, embedder_env, top_up
from core.config import load_settings
from core.embed import HashEmbedder, make_embedder

TEXTS = ["alpha beta gamma", "the quick brown fox", "", "alpha beta gamma delta", "x"]


def test_the_answer_is_the_hash_embedding_after_at_least_the_delay() -> None:
    with embedserver.serve(dim=64, delay=0.3) as url:
        started = time.monotonic()
        r = httpx.post(f"{url}/embeddings", json={"model": embedserver.MODEL, "input": TEXTS}, timeout=30)
        elapsed = time.monotonic() - started
    assert r.status_code == 200
    assert elapsed >= 0.3
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(TEXTS)))
    got = np.array([d["embedding"] for d in data], dtype=np.float32)
    np.testing.assert_allclose(got, HashEmbedder(64).embed(TEXTS), atol=1e-6)


def test_the_workers_client_gets_the_hash_vectors_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """opsctl's own OpenAI client, configured from the environment the loop gives `opsctl up`'s
    workers: the vectors stored are the hash embedder's, so the documents search as with `hash`."""
    with embedserver.serve(dim=DIM, delay=0.0) as url:
        for name, value in {**embedder_env(50, url), "OPSCTL_EMBED_BATCH_SIZE": "2"}.items():
            monkeypatch.setenv(name, value)
        embedder = make_embedder(load_settings(with_state=False))
        vectors = embedder.embed(TEXTS)
    assert embedder.name == f"openai/{embedserver.MODEL}"
    np.testing.assert_allclose(vectors, HashEmbedder(DIM).embed(TEXTS), atol=1e-5)


def test_requests_wait_in_parallel() -> None:
    """Each request sleeps on its own thread: four clients at once are all answered, each no sooner
    than the delay (a latency-bound API, not a queue of one)."""
    import threading

    answered: list[float] = []
    with embedserver.serve(dim=16, delay=0.2) as url:
        def ask() -> None:
            started = time.monotonic()
            httpx.post(f"{url}/embeddings", json={"input": ["a b"]}, timeout=30).raise_for_status()
            answered.append(time.monotonic() - started)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(answered) == 4 and min(answered) >= 0.2


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/embeddings", b"not json", 400, "not JSON"),
    ("/v1/embeddings", b'{"input": []}', 400, "non-empty list of strings"),
    ("/v1/embeddings", b'{"input": [1, 2]}', 400, "non-empty list of strings"),
    ("/v1/embeddings", b"[]", 400, "non-empty list of strings"),
    ("/v1/chat/completions", b'{"input": ["a"]}', 404, "no route"),
])
def test_bad_requests_get_a_json_error(path: str, body: bytes, status: int, message: str) -> None:
    with embedserver.serve(dim=16, delay=0.0) as url:
        r = httpx.post(url.removesuffix("/v1") + path, content=body, timeout=30)
    assert r.status_code == status
    assert message in r.json()["error"]["message"]


def test_a_single_string_input_is_one_embedding() -> None:
    assert embedserver.inputs_of(b'{"input": "one text"}') == ["one text"]


@pytest.mark.parametrize("latency, url, expected", [
    (0, None, {"OPSCTL_EMBEDDER": "hash"}),
    (400, "http://127.0.0.1:9/v1", {"OPSCTL_EMBEDDER": "openai", "OPSCTL_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                    "OPSCTL_OPENAI_MODEL": embedserver.MODEL, "OPSCTL_EMBED_DIM": str(DIM)}),
])
def test_the_loops_workers_embed_in_process_or_at_the_stand_in(latency: float, url: str | None,
                                                               expected: dict[str, str]) -> None:
    assert embedder_env(latency, url) == expected


def test_a_latency_without_the_stand_ins_url_is_refused() -> None:
    with pytest.raises(ValueError, match="URL"):
        embedder_env(400, None)


@pytest.mark.parametrize("latency, factor", [(0, 1.0), (800, 3.5), (1, 3.5)])
def test_the_step_needs_about_four_latency_bound_workers_or_the_whole_machine(latency: float, factor: float) -> None:
    assert default_factor(latency) == factor


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 0"), embedserver.serve(dim=16, delay=-1):
        pass


@pytest.mark.parametrize("queued, posted, n, keep, add", [
    (0, 0, 300, 80, 80),  # the first fill: up to keep, not all 300 (which would start 2 more workers)
    (50, 80, 300, 80, 30),  # topped up to keep
    (80, 200, 300, 80, 0),  # full
    (10, 280, 300, 80, 20),  # the last 20: no more than n in all
    (0, 300, 300, 80, 0),  # all posted
    (95, 100, 300, 80, 0),  # above keep (the posts of a second raced): none
])
def test_the_warm_up_keeps_the_queue_below_a_second_workers_backlog(queued: int, posted: int, n: int, keep: int,
                                                                   add: int) -> None:
    assert top_up(queued, posted, n, keep) == add


@pytest.mark.parametrize(("error", "printed"), [
    (BrokenPipeError("the worker hung up"), False),  # a worker stopped mid-answer: not the stand-in's error
    (ConnectionResetError("reset"), False),
    (ValueError("a bug in the stand-in"), True),  # anything else is reported with its traceback
])
def test_only_a_client_hanging_up_goes_unreported(error: Exception, printed: bool,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    server = embedserver._Server(8, 0.0)
    try:
        try:
            raise error
        except Exception:
            server.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.server_close()
    assert (type(error).__name__ in capsys.readouterr().err) is printed
