"""Daemon jobs: one scheduled run each (acting), audited, returning one sentence."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings
from core.errors import OperationFailed
from opsctl.backup.catalog import megabytes as _size
from opsctl.backup.policy import load_policy


def job_backup_full(settings: Settings, policy_dir: Path) -> str:
    from opsctl.backup.service import create_backup

    record = create_backup(settings, load_policy(directory=policy_dir))
    return f"took {record.type} backup {record.id} ({_size(record.size_bytes)}, up to LSN {record.stop_lsn})"


def job_backup_incremental(settings: Settings, policy_dir: Path) -> str:
    from opsctl.backup.service import create_backup

    policy = load_policy(directory=policy_dir)
    record = create_backup(settings, policy, incremental=policy.mode == "physical")
    on = f" on {record.parent}" if record.parent else " (no earlier backup: took a full one)"
    return f"took {record.type} backup {record.id}{on if record.type != 'logical' else ''} ({_size(record.size_bytes)})"


def job_backup_prune(settings: Settings, policy_dir: Path) -> str:
    from opsctl.backup.service import apply_prune, plan_prune

    policy = load_policy(directory=policy_dir)
    plan = plan_prune(settings, policy)
    apply_prune(settings, policy, plan)
    said = [plan.summary()]
    if policy.remotes:  # then each remote repository by its own retention
        from opsctl.backup.repos import apply_prune_in, plan_prune_in

        for config in policy.remotes:
            remote_plan = plan_prune_in(settings, policy, config.name)
            apply_prune_in(settings, policy, config.name, remote_plan)
            said.append(f"{config.name}: {remote_plan.summary()}")
    return "; ".join(said)


def job_restore_drill(settings: Settings, policy_dir: Path) -> str:
    from opsctl.backup.drill import failure_reason, run_drill

    report = run_drill(settings, load_policy(directory=policy_dir))
    rpo = "not measured" if report["rpo_seconds"] is None else f"{report['rpo_seconds']:.0f} s"
    summary = f"restore drill of {report['backup']}: RTO {report['rto_seconds']:.0f} s, RPO {rpo}"
    if not report["passed"]:
        raise OperationFailed(f"{summary}: FAILED ({failure_reason(report)})")
    return f"{summary}: all {len(report['checks'])} checks passed"
