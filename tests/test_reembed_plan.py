"""The re-embed's pure decisions: the next step, progress and the estimate (tables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.spaces.spec import SpaceSpec, mismatch, settings_for, spec_of
from opsctl.reembed.plan import State, estimate_seconds, next_step, progress, tenant_gate, to_carry
from opsctl.reembed.service import target
from tests.conftest import make_settings


def st(building: bool = True, next_column: bool = True, retired: bool = False, backfilled: bool = True,
       index_valid: bool = True, missing: int | None = 0, carry: tuple[int, ...] = ()) -> State:
    return State(building, next_column, retired, backfilled, index_valid, missing, carry)


@pytest.mark.parametrize(("state", "step"), [
    (st(building=False, next_column=False, backfilled=False, index_valid=False, missing=None), "idle"),
    (st(building=False, next_column=True, backfilled=False, index_valid=False, missing=None), "drop_next"),
    (st(building=False, next_column=False, retired=True, missing=None), "drop_retired"),
    (st(retired=True), "drop_retired"),  # a switch not yet cleaned comes before a new re-embed's steps
    (st(next_column=False, backfilled=False, index_valid=False, missing=None), "add_column"),
    (st(backfilled=False, index_valid=False, missing=None), "backfill"),
    (st(index_valid=False, missing=None), "build_index"),
    (st(index_valid=False, missing=None, carry=(7,)), "build_index"),  # the shared index first
    (st(missing=None, carry=(7,)), "carry_tenant_indexes"),
    (st(missing=0, carry=(7, 9)), "carry_tenant_indexes"),  # the switch never drops an own index uncopied
    (st(backfilled=False, index_valid=False, missing=None, carry=(7,)), "backfill"),
    (st(retired=True, carry=(7,)), "drop_retired"),
    (st(missing=None), "catch_up"),
    (st(missing=257), "catch_up"),
    (st(missing=256), "switch"),
    (st(missing=0), "switch"),
])
def test_next_step(state: State, step: str) -> None:
    assert next_step(state, catch_up_in_switch=256).step == step


@pytest.mark.parametrize(("own", "copies", "carry"), [
    ([], {}, ()),
    ([3, 1], {}, (1, 3)),                       # none copied yet: every one, in id order
    ([1, 3], {1: True}, (3,)),                  # one copied
    ([1, 3], {1: True, 3: False}, (3,)),        # an interrupted copy is completed
    ([1], {1: True, 5: True}, ()),              # a copy whose company has no own index: nothing to build
])
def test_to_carry(own: list[int], copies: dict[int, bool], carry: tuple[int, ...]) -> None:
    assert to_carry(own, copies) == carry


@pytest.mark.parametrize(("step", "free", "said"), [
    ("idle", True, "no re-embed in progress"),
    ("add_column", True, "copies the own indexes later"),
    ("backfill", True, "copies the own indexes later"),        # hours on a large corpus: the runs go on
    ("build_index", True, "copies the own indexes later"),     # the carry waits for a run under way (the lock)
    ("carry_tenant_indexes", False, "carrying the own indexes"),
    ("catch_up", False, "carrying the own indexes"),           # the copies are made: the switch must find them
    ("switch", False, "carrying the own indexes"),
    ("drop_retired", True, "switched"),                        # the own indexes are on the new vectors
    ("drop_next", True, "aborted"),                            # the copies go with the aborted column
])
def test_tenant_gate(step: str, free: bool, said: str) -> None:
    gate = tenant_gate(step)  # type: ignore[arg-type]
    assert gate.free is free and said in gate.why
    if not free:
        assert "after its switch" in gate.why and step in gate.why  # why, and when it can go again


def test_the_catch_up_threshold_is_the_callers() -> None:
    assert next_step(st(missing=10), catch_up_in_switch=5).step == "catch_up"
    assert next_step(st(missing=10), catch_up_in_switch=10).step == "switch"


T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(("done", "total", "elapsed", "ratio", "rate", "eta"), [
    (0, 100, 10, 0.0, None, None),
    (50, 100, 10, 0.5, 5.0, 10.0),
    (100, 100, 20, 1.0, 5.0, 0.0),
    (120, 100, 20, 1.0, 6.0, 0.0),     # chunks ingested meanwhile: never past 100 %
    (0, 0, 0, 1.0, None, None),        # nothing to embed
    (10, 100, 0, 0.1, None, None),     # no time passed: no rate
])
def test_progress(done: int, total: int, elapsed: float, ratio: float, rate: float | None, eta: float | None) -> None:
    p = progress(done, total, T0, T0 + timedelta(seconds=elapsed))
    assert (p.ratio, p.chunks_per_second, p.eta_seconds) == (pytest.approx(ratio), rate, eta)


@pytest.mark.parametrize(("chunks", "sample", "seconds", "expected"), [
    (1000, 32, 0.32, 10.0),
    (0, 32, 0.32, 0.0),
    (1000, 0, 0.0, None),
    (1000, 32, 0.0, None),
])
def test_estimate(chunks: int, sample: int, seconds: float, expected: float | None) -> None:
    assert estimate_seconds(chunks, sample, seconds) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(("overrides", "name", "dim", "options"), [
    ({}, "hash-v1", 384, {}),
    ({"embed_dim": 256}, "hash-v1", 256, {}),
    ({"embedder": "onnx"}, "sentence-transformers/all-MiniLM-L6-v2", 384, {"embed_precision": "float32"}),
    ({"embedder": "onnx", "embed_precision": "int8"}, "all-MiniLM-L6-v2/onnx-int8", 384, {"embed_precision": "int8"}),
    ({"embedder": "minilm"}, "sentence-transformers/all-MiniLM-L6-v2", 384, {}),
    ({"embedder": "openai", "embed_dim": 512}, "openai/text-embedding-3-small", 512,
     {"openai_model": "text-embedding-3-small"}),
])
def test_spec_of_settings_and_back(overrides: dict[str, object], name: str, dim: int,
                                   options: dict[str, object]) -> None:
    spec = spec_of(make_settings(**overrides))
    assert (spec.name, spec.dim, spec.options) == (name, dim, options)
    assert spec_of(settings_for(spec, make_settings(embed_dim=1000))) == spec


def test_onnx_float32_and_minilm_are_one_space() -> None:
    assert spec_of(make_settings(embedder="onnx")).same_space(spec_of(make_settings(embedder="minilm")))
    assert mismatch(spec_of(make_settings(embedder="onnx")), spec_of(make_settings(embedder="minilm"))) is None


def test_a_mismatch_names_both_spaces_and_the_choice() -> None:
    said = mismatch(spec_of(make_settings()), SpaceSpec("onnx", "all-MiniLM-L6-v2/onnx-int8", 384))
    assert said is not None
    assert "hash-v1 (384-d)" in said and "all-MiniLM-L6-v2/onnx-int8 (384-d)" in said
    assert "following the database" in said


@pytest.mark.parametrize(("args", "name", "dim"), [
    (("hash", 256), "hash-v1", 256),
    (("hash",), "hash-v1", 100),          # the settings' dimension
    (("onnx",), "sentence-transformers/all-MiniLM-L6-v2", 384),   # a model's own, whatever embed_dim says
    (("onnx", None, "int8"), "all-MiniLM-L6-v2/onnx-int8", 384),
])
def test_target(args: tuple[object, ...], name: str, dim: int) -> None:
    spec = target(make_settings(embed_dim=100), *args)  # type: ignore[arg-type]
    assert (spec.name, spec.dim) == (name, dim)
