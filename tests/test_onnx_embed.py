"""all-MiniLM-L6-v2 on ONNX Runtime (core.onnxembed): the graph reproduces the sentence-transformers
model, int8 stays close to it, rows do not depend on their batch, and no torch is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.embed import make_embedder
from core.errors import ConfigError
from core.onnxembed.embedder import OnnxMiniLMEmbedder
from tests.conftest import make_settings, project_root

pytestmark = pytest.mark.onnx

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by ten percent.",
    "The database server crashed and the site went offline.",
    "",
    "ssh key authentication",
    "Runbook: when PostgreSQL replication lag exceeds the threshold, check the standby's WAL receiver. " * 12,
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def int8(cache_dir: Path) -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder(precision="int8", batch_size=4, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def float32(cache_dir: Path) -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder(precision="float32", batch_size=4, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from core.embed import MiniLMEmbedder

    return MiniLMEmbedder(batch_size=8).embed(SENTENCES)


def test_vectors_are_384_dimensional_unit_rows(int8: OnnxMiniLMEmbedder) -> None:
    vectors = int8.embed(SENTENCES)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert int8.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        int8.embed("a single string")  # type: ignore[arg-type]


@pytest.mark.minilm
def test_float32_graph_reproduces_sentence_transformers(float32: OnnxMiniLMEmbedder, reference: np.ndarray) -> None:
    np.testing.assert_allclose(float32.embed(SENTENCES), reference, atol=1e-5)


@pytest.mark.minilm
def test_int8_stays_close_to_sentence_transformers(int8: OnnxMiniLMEmbedder, reference: np.ndarray) -> None:
    cosines = np.sum(int8.embed(SENTENCES) * reference, axis=1)
    # measured: 0.991-0.996 for sentences, 0.972 for the empty text (two tokens: [CLS] [SEP])
    real = [c for c, text in zip(cosines, SENTENCES, strict=True) if text]
    assert min(real) >= 0.99, cosines
    assert cosines.min() >= 0.95, cosines


def test_int8_keeps_the_model_s_judgement(int8: OnnxMiniLMEmbedder) -> None:
    cat, rug, revenue, outage = int8.embed(SENTENCES[:4])
    assert float(cat @ rug) > 0.5
    assert float(cat @ revenue) < 0.25
    assert float(outage @ cat) < 0.25


@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_rows_do_not_depend_on_the_batch(precision: str, int8: OnnxMiniLMEmbedder,
                                         float32: OnnxMiniLMEmbedder) -> None:
    embedder = int8 if precision == "int8" else float32
    together = embedder.embed(SENTENCES)
    alone = np.stack([embedder.embed([text])[0] for text in SENTENCES])
    # float32: padding to the batch's longest text changes nothing; int8: activations are quantized
    # per batch (one scale per tensor), so a row moves a little with its neighbours (measured:
    # 0.990-0.997 cosine for sentences, 0.972 for the empty text)
    if precision == "float32":
        np.testing.assert_allclose(together, alone, atol=1e-5)
    else:
        cosines = np.sum(together * alone, axis=1)
        assert min(c for c, text in zip(cosines, SENTENCES, strict=True) if text) >= 0.99, cosines
        assert cosines.min() >= 0.95, cosines


def test_the_model_file_is_built_once_and_reused(cache_dir: Path, int8: OnnxMiniLMEmbedder) -> None:
    int8.embed(["warm"])
    files = sorted(cache_dir.glob("*-int8-*.onnx"))
    assert len(files) == 1
    built = files[0].stat().st_mtime_ns
    OnnxMiniLMEmbedder(precision="int8", cache_dir=cache_dir).embed(["again"])
    assert files[0].stat().st_mtime_ns == built
    assert not list(cache_dir.glob(".build-*")), "no temporary build directory left behind"


def test_make_embedder_onnx(tmp_path: Path) -> None:
    embedder = make_embedder(make_settings(embedder="onnx", model_cache_dir=tmp_path))
    assert isinstance(embedder, OnnxMiniLMEmbedder)
    assert embedder.dim == 384
    with pytest.raises(ConfigError, match="embedder 'onnx' produces 384-dimensional vectors but embed_dim is 768"):
        make_embedder(make_settings(embedder="onnx", embed_dim=768))


def test_no_torch_at_run_time_even_when_building(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from core.config import Settings\n"
        "from core.embed import make_embedder\n"
        f"embedder = make_embedder(Settings(embedder='onnx', model_cache_dir=Path({str(tmp_path)!r})))\n"
        "print(embedder.embed(['no torch here', 'none at all']).shape)\n"
        "heavy = sorted({'torch', 'sentence_transformers', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=project_root(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(2, 384)"
