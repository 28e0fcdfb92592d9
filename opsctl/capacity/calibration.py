"""The calibration file: what one replica of each component serves, and what data costs, measured.

Written by ``make calibrate`` (``python -m bench.calibrate``) on the machine it runs on; read by
``opsctl capacity`` (and by ``opsctl scale simulate`` as its default ``--capacity``). Where it is:
``--calibration FILE``, else ``OPSCTL_CAPACITY_FILE``, else ``<policy dir>/capacity.json``
(``./policies/capacity.json``, versioned with the policies). Schema (``schema_version`` 1), every
rate per second of wall time on the machine described under ``machine``:

- ``worker``: one ingest worker process at saturation (a queue deeper than it can drain):
  ``documents_per_second`` and ``chunks_per_second``, with the embedder and batch size it ran;
- ``api``: one API process at saturation under the search mix of ``bench/locustfile.py``
  (``requests_per_second``), with its latency and CPU per request and each run it took;
- ``storage``: bytes on disk per chunk (table, HNSW, GIN, btree) and per document (table and
  indexes, ingest job rows), measured with ``pg_table_size``/``pg_relation_size`` over all partitions;
- ``cache``: bytes of one Redis entry (``MEMORY USAGE``) per cached search answer and per cached
  document, and the hit ratio the mix reached.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError
from core.files import FileProblem, read_text

FILE_NAME = "capacity.json"
ENV = "OPSCTL_CAPACITY_FILE"
MAX_BYTES = 1 << 20  # a calibration is a few kilobytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Machine(_Strict):
    cpus: int = Field(ge=1)
    cpu_model: str
    ram_gib: float
    load_before: tuple[float, float, float] = Field(description="1, 5, 15-minute load averages before the runs")
    load_after: tuple[float, float, float]
    other_cpu_cores: float = Field(ge=0, description="CPU used by processes outside the measured system during "
                                   "the runs, in cores (other work on a shared machine)")


class WorkerCapacity(_Strict):
    documents_per_second: float = Field(gt=0)
    chunks_per_second: float = Field(gt=0)
    documents: int = Field(ge=1, description="documents drained in the measurement")
    chunks: int = Field(ge=1)
    seconds: float = Field(gt=0)
    embedder: str
    batch_size: int = Field(ge=1)
    cpu_seconds_per_chunk: float | None = Field(None, ge=0, description="CPU of the worker process and its "
                                                "PostgreSQL backends per chunk: 1 / this is the rate on a core "
                                                "of its own (the measured rate shares the machine)")


class ApiRun(_Strict):
    users: int = Field(ge=1)
    requests_per_second: float = Field(ge=0)
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    failures: int = Field(ge=0)
    cpu_seconds_per_request: float = Field(ge=0, description="the API process's CPU per request")
    db_cpu_seconds_per_request: float | None = Field(None, ge=0, description="CPU of the API's PostgreSQL "
                                                     "backends per request")


class ApiCapacity(_Strict):
    requests_per_second: float = Field(gt=0, description="the best run's: one API process, saturated")
    mix: str = Field(description="what the requests were")
    runs: list[ApiRun] = Field(min_length=1)


class ChunkBytes(_Strict):
    table: float = Field(ge=0, description="heap and TOAST")
    hnsw: float = Field(ge=0)
    gin: float = Field(ge=0)
    btree: float = Field(ge=0)

    @property
    def total(self) -> float:
        return self.table + self.hnsw + self.gin + self.btree


class DocumentBytes(_Strict):
    table: float = Field(ge=0)
    indexes: float = Field(ge=0)
    jobs: float = Field(ge=0, description="ingest_jobs rows (and their indexes) a document leaves behind")

    @property
    def total(self) -> float:
        return self.table + self.indexes + self.jobs


class Storage(_Strict):
    chunks_per_document: float = Field(gt=0)
    chunk: ChunkBytes
    document: DocumentBytes
    documents: int = Field(ge=1, description="documents the sizes were measured over")


class CacheSizes(_Strict):
    search_entry_bytes: float = Field(gt=0)
    document_entry_bytes: float = Field(gt=0)
    search_hit_ratio: float = Field(ge=0, le=1)


class Calibration(_Strict):
    schema_version: Literal[1] = 1
    measured_at: datetime
    command: str = Field(description="what measured it")
    machine: Machine
    worker: WorkerCapacity
    api: ApiCapacity
    storage: Storage
    cache: CacheSizes


def default_path(policy_dir: Path) -> Path:
    """``OPSCTL_CAPACITY_FILE``, else ``<policy dir>/capacity.json``."""
    env = os.environ.get(ENV)
    return Path(env) if env else policy_dir / FILE_NAME


def parse(text: str, where: str) -> Calibration:
    """A calibration from its JSON, or ``ConfigError`` naming the file and the field."""
    try:
        return Calibration.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise ConfigError(f"{where}: {field}: {first['msg']}") from exc


def load(path: Path) -> Calibration:
    if not path.exists():
        raise ConfigError(f"{path}: no calibration file (measure one with `make calibrate`, or pass "
                          f"--calibration FILE)")
    try:
        text = read_text(path, MAX_BYTES, "a calibration")
    except FileProblem as exc:
        raise ConfigError(f"{path}: cannot read: {exc.reason}") from exc
    return parse(text, str(path))


def dump(calibration: Calibration) -> str:
    return calibration.model_dump_json(indent=2) + "\n"
