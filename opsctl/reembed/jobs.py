"""The daemon's ``reembed`` job: carry a re-embed forward (started by `opsctl index reembed --apply`)."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings

BUDGET_SECONDS = 300.0  # a run stops taking steps after this; the next run (30 s later) resumes


def job_reembed(settings: Settings, policy_dir: Path) -> str:
    """Steps of the re-embed in progress for up to BUDGET_SECONDS; its one-sentence outcome."""
    from opsctl.audit import default_actor
    from opsctl.reembed.service import run

    return run(settings, default_actor(), budget_seconds=BUDGET_SECONDS).sentence()
