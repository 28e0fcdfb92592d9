"""The default ``--capacity``: a replica's measured throughput, from the capacity calibration.

``make calibrate`` (``opsctl capacity``'s calibration, issue 14 §3) measures one ingest worker and
one API process at saturation and writes them to ``OPSCTL_CAPACITY_FILE``, else
``<policy dir>/capacity.json``. The simulator reads two of its figures, by the service's name:

- a service named like ``*worker*``: ``worker.documents_per_second`` (the queue the worker policy
  scales on counts ingest jobs, one per document);
- a service named like ``*api*``: ``api.requests_per_second`` (one API process under the search mix).

Without the file, or for another service, ``scale simulate`` needs ``--capacity`` (or measures it
from Prometheus history with ``--throughput-query``): it never assumes a number.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from core.errors import ConfigError

ENV = "OPSCTL_CAPACITY_FILE"
FILE_NAME = "capacity.json"
MAX_BYTES = 1 << 20
FIGURES = (("worker", "worker", "documents_per_second"), ("api", "api", "requests_per_second"))


def calibration_path(policy_dir: Path) -> Path:
    given = os.environ.get(ENV)
    return Path(given) if given else policy_dir / FILE_NAME


def figure_for(service: str) -> tuple[str, str] | None:
    """(component, field) of the calibration that measures ``service``, or None."""
    return next(((part, field) for word, part, field in FIGURES if word in service), None)


def capacity_of(data: Any, service: str, file: str) -> float | None:
    """The calibrated capacity of ``service`` in a calibration document (None: it measures no such service)."""
    found = figure_for(service)
    if found is None:
        return None
    part, field = found
    section = data.get(part) if isinstance(data, dict) else None
    value = section.get(field) if isinstance(section, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"calibration {file}: {part}.{field} must be a positive number, got {value!r}")
    return float(value)


def calibrated(policy_dir: Path, service: str) -> tuple[float, str] | None:
    """(capacity, where it came from), or None when there is no calibration for ``service``."""
    from opsctl.files import FileProblem, read_text

    path = calibration_path(policy_dir)
    if figure_for(service) is None or not path.exists():
        return None
    try:
        data = json.loads(read_text(path, MAX_BYTES, "a calibration file"))
    except (FileProblem, ValueError) as exc:
        raise ConfigError(f"calibration {path}: {exc}") from exc
    found = capacity_of(data, service, str(path))
    if found is None:
        return None
    part, field = figure_for(service) or ("", "")
    return found, f"{part}.{field} of {path}"
