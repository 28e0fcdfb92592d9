"""bench.ingest_cost: the pure parts (CPU per chunk by column, the rounds' order, the spread, --tree)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.ingest_cost import parse_tree, per_chunk, rotated, spread


def test_per_chunk_sums_each_column_in_ms_and_leaves_out_other_processes() -> None:
    cpu = {"cpu_seconds": {"worker processes (Python)": 1.0, "PostgreSQL backends of workers": 20.0,
                           "bench process (API, raw COPY client, polling)": 0.5,
                           "PostgreSQL backends of the API": 0.1,
                           "PostgreSQL other (WAL writer, checkpointer, autovacuum, ...)": 0.2,
                           "PostgreSQL processes that exited (short sessions, autovacuum workers)": 0.2,
                           "other processes on the machine (not the benchmark)": 99.0}}
    out = per_chunk(cpu, 10000)
    assert out == pytest.approx({"workers": 0.1, "worker PG": 2.0, "API": 0.05, "API PG": 0.01, "PG other": 0.04,
                                 "total": 2.2})


@pytest.mark.parametrize(("round_no", "order"), [(0, ["a", "b", "c"]), (1, ["b", "c", "a"]), (2, ["c", "a", "b"]),
                                                 (3, ["a", "b", "c"])])
def test_each_round_starts_with_the_next_tree(round_no: int, order: list[str]) -> None:
    assert rotated(["a", "b", "c"], round_no) == order


def test_spread_is_mean_then_min_to_max() -> None:
    assert spread([2.0, 1.0, 3.0], "{:.1f}") == "2.0 (1.0-3.0)"


def test_a_tree_is_a_name_and_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "ingest.py").write_text("")
    assert parse_tree(f"old={tmp_path}") == ("old", tmp_path.resolve())
    for bad in ("old", f"={tmp_path}", "old=", f"old={tmp_path / 'nowhere'}"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tree(bad)
