"""The daemon's partition job: one rotation, applied (each step audits itself)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core.config import Settings


def job_partition_rotation(settings: Settings, policy_dir: Path) -> str:
    """Premake, move stray default rows, detach/archive/drop expired partitions; one sentence back."""
    from opsctl.partitions.service import load_policy, rotate

    policy = load_policy(directory=policy_dir)
    result = rotate(settings, policy, datetime.now(UTC), apply=True)
    sentence = result.sentence()
    if result.done:
        detail = "; ".join(result.done)
        sentence += f": {detail}" if len(detail) < 300 else f": {len(result.done)} steps (see ops_events)"
    return sentence
