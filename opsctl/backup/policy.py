"""The ``backup`` policy (``policies/backup.yaml``): repository, mode, schedule, retention, targets, drill."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from opsctl.policy import PolicyModel, parse_duration

CHECKS = ("point_in_time", "page_checksums", "heap_read", "index_vs_seq", "row_counts", "document_checksums",
          "vector_indexes", "vector_recall", "recorded_search", "accepts_write")


class Schedule(PolicyModel):
    full_every: str = Field(default="7d", description="a full backup this often")
    incremental_every: str = Field(default="1d", description="an incremental backup this often (physical mode)")
    drill_every: str = Field(default="7d", description="a restore drill this often")

    @field_validator("full_every", "incremental_every", "drill_every")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)  # raises for a malformed or non-positive duration
        return v


class Retention(PolicyModel):
    """pgBackRest-like: ``count`` keeps the newest ``full`` full backups; ``time`` keeps every full
    backup needed to restore to any point of the last ``full`` days. Incrementals live and die
    with their full; WAL is kept from the start of the oldest kept backup."""

    type: Literal["count", "time"] = "count"
    full: int = Field(default=2, ge=1, le=10_000, description="full backups (type count) or days (type time)")


class Targets(PolicyModel):
    rto_seconds: float = Field(default=900, gt=0, le=30 * 86400, description="drill start → verified and queryable")
    rpo_seconds: float = Field(default=300, gt=0, le=30 * 86400,
                               description="newest source data minus the recovered point")


class Drill(PolicyModel):
    checks: list[str] = Field(default_factory=lambda: list(CHECKS))
    recall_at_10_min: float = Field(default=0.9, ge=0, le=1)
    recall_sample: int = Field(default=20, ge=1, le=1000)
    index_sample: int = Field(default=50, ge=1, le=10000, description="keys looked up by index and by seq scan")
    timeout_seconds: float = Field(default=1800, gt=0, le=7 * 86400, description="recovery must finish within this")
    scratch_dir: str | None = Field(default=None, description="parent of the scratch cluster; default: the temp dir")

    @field_validator("checks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
        return v


class BackupPolicy(PolicyModel):
    repository: str | None = Field(default=None, description="repository dir; default <data dir>/backups")
    mode: Literal["physical", "logical"] = "physical"
    schedule: Schedule = Field(default_factory=Schedule)
    retention: Retention = Field(default_factory=Retention)
    archive_timeout_seconds: int = Field(default=60, ge=0, le=86400,
                                         description="switch WAL segments at least this often (RPO)")
    compression: Literal["none", "gzip"] = Field(default="gzip", description="logical dumps (physical stay plain for "
                                                                     "pg_combinebackup)")
    compression_level: int = Field(default=6, ge=0, le=9)
    from_standby: bool = Field(default=False, description="physical backups streamed from the first read replica "
                               "(database_replica_urls), not the primary; `opsctl backup create --from-standby`")
    fsync: bool = Field(default=True, description="sync backups to disk (off only for throwaway test setups)")
    targets: Targets = Field(default_factory=Targets)
    drill: Drill = Field(default_factory=Drill)

    @model_validator(mode="after")
    def _check(self) -> BackupPolicy:
        if self.repository is not None and not self.repository.strip():
            raise ValueError("repository must not be empty")
        return self

    def repository_path(self, data_dir: Path) -> Path:
        return Path(self.repository).expanduser() if self.repository else data_dir / "backups"


def load_policy(path: Path | None = None, directory: Path | None = None) -> BackupPolicy:
    """The backup policy from ``path`` or the policy dir; the defaults when the file does not exist."""
    from opsctl.policy import load, policy_dir

    target = path or policy_dir(directory) / "backup.yaml"
    if path is None and not target.exists():
        return BackupPolicy()
    return load(BackupPolicy, "backup", target)
