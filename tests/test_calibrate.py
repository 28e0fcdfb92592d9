"""``make calibrate`` on a core of its own, kept tiny: it writes a calibration ``opsctl capacity`` reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.calibrate import main
from opsctl.capacity.calibration import load
from tests.test_cli_output import run


def test_calibrate_measures_a_worker_an_api_process_sizes_and_cache_entries(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_DATA_DIR", os.environ["OPSCTL_DATA_DIR"])  # bench.stack points it at its own
    out = tmp_path / "capacity.json"
    assert main(["--embedder", "hash", "--documents", "100", "--users", "2", "--seconds", "3",
                 "--out", str(out), "--results", str(tmp_path / "results")]) == 0
    cal = load(out)
    assert cal.worker.embedder == "hash" and cal.worker.documents == 100
    assert cal.worker.chunks_per_second > 0 and cal.worker.cpu_seconds_per_chunk
    assert cal.storage.chunks_per_document > 1  # the load mix's documents are 2-3 chunks
    assert cal.storage.chunk.table > 1536 and cal.storage.chunk.hnsw > 0 and cal.storage.chunk.gin > 0
    assert [r.users for r in cal.api.runs] == [2] and cal.api.runs[0].failures == 0
    assert cal.api.requests_per_second == cal.api.runs[0].requests_per_second > 0
    assert cal.cache.search_entry_bytes > cal.cache.document_entry_bytes > 0
    assert cal.machine.cpus >= 1 and "--documents 100" in cal.command
    capsys.readouterr()
    code, printed, _ = run(capsys, "capacity", "--users", "100", "--calibration", str(out), "-o", "json")
    assert code == 0 and json.loads(printed)["plan"]
