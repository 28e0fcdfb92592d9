"""The default ``--capacity``: a replica's measured throughput, from the calibration file.

``opsctl capacity`` (issue 14 §2/§3) measures one worker's and one API process's throughput at
saturation and writes it to :func:`calibration_path` (``<data dir>/calibration.json``, or the
file ``OPSCTL_CALIBRATION`` names). This module reads, per service, the number::

    {"services": {"core-worker": {"capacity": 12.5, ...}, "core-api": {"capacity": 180.0, ...}}}

``capacity``: work units per second one ready replica serves. Without the file, or without the
service in it, ``scale simulate`` needs ``--capacity`` (or measures it from Prometheus history
with ``--throughput-query``): it never assumes a number.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from core.errors import ConfigError

ENV = "OPSCTL_CALIBRATION"
FILE_NAME = "calibration.json"
MAX_BYTES = 1 << 20


def calibration_path(data_dir: Path) -> Path:
    given = os.environ.get(ENV)
    return Path(given) if given else data_dir / FILE_NAME


def capacity_of(data: Any, service: str, file: str) -> float | None:
    """``services.<service>.capacity`` of a calibration document (None when the service is not in it)."""
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        raise ConfigError(f"calibration {file}: expected {{\"services\": {{name: {{\"capacity\": ...}}}}}}")
    entry = services.get(service)
    if entry is None:
        return None
    value = entry.get("capacity") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"calibration {file}: services.{service}.capacity must be a positive number, got {value!r}")
    return float(value)


def calibrated(data_dir: Path, service: str) -> tuple[float, str] | None:
    """(capacity, where it came from) from the calibration file, or None when there is none for ``service``."""
    from opsctl.files import FileProblem, read_text

    path = calibration_path(data_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(read_text(path, MAX_BYTES, "a calibration file"))
    except (FileProblem, ValueError) as exc:
        raise ConfigError(f"calibration {path}: {exc}") from exc
    found = capacity_of(data, service, str(path))
    return None if found is None else (found, str(path))
