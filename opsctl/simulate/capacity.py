"""The default ``--capacity``: a replica's measured throughput, from the capacity calibration.

``make calibrate`` measures one ingest worker and one API process at saturation and writes the
calibration file (``opsctl.capacity.calibration``: its schema and where it is found). The simulator
takes one of its figures, by the service's name:

- a service named like ``*worker*``: ``worker.documents_per_second`` (the queue the worker policy
  scales on counts ingest jobs, one per document);
- a service named like ``*api*``: ``api.requests_per_second`` (one API process under the search mix).

Without the file, or for another service, ``scale simulate`` needs ``--capacity`` (or measures it
from Prometheus history with ``--throughput-query``): it never assumes a number.
"""

from __future__ import annotations

from pathlib import Path

from opsctl.capacity.calibration import Calibration, default_path, load

FIGURES = (("worker", "worker", "documents_per_second"), ("api", "api", "requests_per_second"))


def figure_for(service: str) -> tuple[str, str] | None:
    """(component, field) of the calibration that measures ``service``, or None."""
    return next(((part, field) for word, part, field in FIGURES if word in service), None)


def capacity_of(calibration: Calibration, service: str) -> float | None:
    """The calibrated capacity of ``service`` (None: the calibration measures no such service)."""
    found = figure_for(service)
    if found is None:
        return None
    part, field = found
    return float(getattr(getattr(calibration, part), field))


def calibrated(policy_dir: Path, service: str) -> tuple[float, str] | None:
    """(capacity, where it came from), or None when there is no calibration for ``service``;
    a calibration file that is there but invalid is a ``ConfigError`` naming the file and field."""
    path = default_path(policy_dir)
    found = figure_for(service)
    if found is None or not path.exists():
        return None
    value = capacity_of(load(path), service)
    return (value, f"{found[0]}.{found[1]} of {path}") if value is not None else None
