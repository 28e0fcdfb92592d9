"""The model file: built once from the wheel's weights, int8-quantized, cached under a content key.

Building needs ``onnx`` (graph + quantizer), never torch, and takes a few seconds on first use.
The file name carries a digest of the weights and ``BUILD_VERSION``, so a new wheel or a change
of the graph builds a new file instead of reusing a stale one. Concurrent first uses (several
workers) each write a temporary file and rename it into place: the last rename wins, every
reader sees a whole file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when graph.py or the quantization settings change
Precision = Literal["int8", "float32"]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/opsctl/models`` (``~/.cache/opsctl/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opsctl" / "models"


def weights_digest(weights: Path) -> str:
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def model_file(model_dir: Path, cache_dir: Path, precision: Precision) -> Path:
    """The cached ``.onnx`` of the sentence-transformers model in ``model_dir``, built if absent."""
    weights = model_dir / "model.safetensors"
    target = cache_dir / f"all-MiniLM-L6-v2-{precision}-v{BUILD_VERSION}-{weights_digest(weights)}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("building %s from %s (once)", target.name, weights)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
        float_path = Path(tmp) / "float32.onnx"
        _write_float32(model_dir, float_path)
        built = float_path
        if precision == "int8":
            built = Path(tmp) / "int8.onnx"
            quantize_int8(float_path, built)
        os.replace(built, target)
    return target


def _write_float32(model_dir: Path, out: Path) -> None:
    from core.onnxembed.graph import BertShape, build_sentence_encoder
    from core.onnxembed.weights import read_safetensors

    shape = BertShape.from_config(json.loads((model_dir / "config.json").read_text()))
    model = build_sentence_encoder(read_safetensors(model_dir / "model.safetensors"), shape)
    out.write_bytes(model.SerializeToString())


def quantize_int8(source: Path, out: Path) -> None:
    """Dynamic quantization of the matrix products' weights to int8 (activations quantized per
    batch at run time). The embedding tables stay float32: they are lookups, not arithmetic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True)
