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


class RepoCompression(PolicyModel):
    type: Literal["zstd", "none"] = "zstd"
    level: int = Field(default=3, ge=1, le=22, description="zstd level")


class RepoEncryption(PolicyModel):
    """AES-256-GCM; the key (32 bytes: raw, hex or base64) from a file or an environment variable."""

    type: Literal["aes-256-gcm"] = "aes-256-gcm"
    key_file: str | None = None
    key_env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> RepoEncryption:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("encryption needs exactly one of key_file and key_env")
        return self


class RepositorySpec(PolicyModel):
    """One repository (pgBackRest's repo1, repo2 …): the local directory or an object store.
    Credentials are never here: the object-store library reads them from the environment/profile."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")
    type: Literal["local", "s3", "gcs", "azure"]
    path: str | None = Field(default=None, description="local: the directory; default <data dir>/backups")
    bucket: str | None = None
    prefix: str | None = None
    endpoint: str | None = Field(default=None, description="S3-compatible servers (MinIO, R2, moto …)")
    region: str | None = None
    retention: Retention = Field(default_factory=Retention)
    compression: RepoCompression = Field(default_factory=RepoCompression)
    encryption: RepoEncryption | None = None

    @model_validator(mode="after")
    def _where(self) -> RepositorySpec:
        if self.type != "local" and not self.bucket:
            raise ValueError(f"repository {self.name}: a {self.type} repository needs a bucket")
        if self.type == "local" and self.bucket:
            raise ValueError(f"repository {self.name}: a local repository has a path, not a bucket")
        return self

    @property
    def remote(self) -> bool:
        return self.type != "local"


class WalPush(PolicyModel):
    spool: str | None = Field(default=None, description="where archive_command puts WAL when no repository is "
                                                        "local; default <data dir>/wal-spool")
    max_lag_seconds: float = Field(default=300, gt=0, le=30 * 86400,
                                   description="the push lag (RPO) the WalPushLagging alert allows")


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
    fsync: bool = Field(default=True, description="sync backups to disk (off only for throwaway test setups)")
    targets: Targets = Field(default_factory=Targets)
    drill: Drill = Field(default_factory=Drill)
    repositories: list[RepositorySpec] | None = Field(
        default=None, description="absent: one local repository named local at `repository:`")
    wal_push: WalPush = Field(default_factory=WalPush)

    @model_validator(mode="after")
    def _check(self) -> BackupPolicy:
        if self.repository is not None and not self.repository.strip():
            raise ValueError("repository must not be empty")
        names = [r.name for r in self.repositories or []]
        if len(set(names)) != len(names):
            raise ValueError(f"repository names must be unique: {', '.join(names)}")
        if self.repositories is not None and not self.repositories:
            raise ValueError("repositories must name at least one repository (or be left out)")
        if sum(1 for r in self.repositories or [] if not r.remote) > 1:
            raise ValueError("at most one local repository")
        return self

    @property
    def remote_repositories(self) -> list[RepositorySpec]:
        return [r for r in self.repositories or [] if r.remote]

    def local_repository(self) -> RepositorySpec | None:
        """The local repository: the one of type local, or the implicit one when none is listed."""
        if self.repositories is None:
            return RepositorySpec(name="local", type="local", path=self.repository, retention=self.retention)
        return next((r for r in self.repositories if not r.remote), None)

    def wal_dir(self, data_dir: Path) -> tuple[Path, bool]:
        """Where ``archive_command`` writes WAL, and whether it is the local repository's WAL dir (which
        doubles as the spool of the remote repositories) rather than a spool alone."""
        local = self.local_repository()
        if local is not None:
            root = Path(local.path).expanduser() if local.path else data_dir / "backups"
            return root / "wal", True
        return (Path(self.wal_push.spool).expanduser() if self.wal_push.spool else data_dir / "wal-spool"), False

    def repository_path(self, data_dir: Path) -> Path:
        return Path(self.repository).expanduser() if self.repository else data_dir / "backups"


def load_policy(path: Path | None = None, directory: Path | None = None) -> BackupPolicy:
    """The backup policy from ``path`` or the policy dir; the defaults when the file does not exist."""
    from opsctl.policy import load, policy_dir

    target = path or policy_dir(directory) / "backup.yaml"
    if path is None and not target.exists():
        return BackupPolicy()
    return load(BackupPolicy, "backup", target)
