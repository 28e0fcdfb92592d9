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
    level: int = Field(default=3, ge=1, le=22, description="zstd level (1 fast … 19+ small)")


class RepoEncryption(PolicyModel):
    """AES-256-GCM with a key from a file or an environment variable (never the key itself)."""

    type: Literal["aes-256-gcm"] = "aes-256-gcm"
    key_file: str | None = None
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> RepoEncryption:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_file and key_env")
        return self


class RepositoryConfig(PolicyModel):
    """One backup repository (pgBackRest's repo1, repo2 …): the local directory backups are taken
    into, or an object store they are copied to. Credentials come from the environment/profile the
    object-store library reads (AWS_ACCESS_KEY_ID …), never from here."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: Literal["local", "s3", "gcs", "azure"]
    path: str | None = Field(default=None, description="local: the directory (default <data dir>/backups)")
    bucket: str | None = Field(default=None, description="s3/gcs: the bucket; azure: the container")
    prefix: str | None = None
    endpoint: str | None = Field(default=None, description="MinIO, R2, a test server …; default the provider's")
    region: str | None = None
    retention: Retention | None = Field(default=None, description="default: the policy's retention")
    compression: RepoCompression = Field(default_factory=RepoCompression)
    encryption: RepoEncryption | None = None
    timeout_seconds: float = Field(default=60, gt=0, le=3600, description="one request to the store")
    retries: int = Field(default=3, ge=0, le=20, description="retries of a failed request (with backoff)")
    parallel: int = Field(default=4, ge=1, le=64, description="files uploaded or downloaded at once")

    @model_validator(mode="after")
    def _shape(self) -> RepositoryConfig:
        if self.type == "local":
            extra = sorted(self.model_fields_set & {"bucket", "prefix", "endpoint", "region", "compression",
                                                     "encryption"})
            if extra:
                raise ValueError(f"a local repository has no {', '.join(extra)} (it holds plain backups that "
                                 "pg_combinebackup reads)")
        else:
            if not self.bucket:
                raise ValueError(f"a {self.type} repository needs a bucket")
            if self.path is not None:
                raise ValueError(f"a {self.type} repository has no path (use bucket and prefix)")
        return self

    @property
    def remote(self) -> bool:
        return self.type != "local"


class WalPush(PolicyModel):
    """WAL off the host: ``archive_command`` writes each segment into the local repository's WAL dir,
    which doubles as the spool ``opsctl wal push`` empties towards every remote repository."""

    max_lag_seconds: float = Field(default=300, gt=0, le=30 * 86400,
                                   description="the push lag (RPO) the WalPushLagging alert allows")


class BackupPolicy(PolicyModel):
    repository: str | None = Field(default=None, description="repository dir; default <data dir>/backups")
    repositories: list[RepositoryConfig] | None = Field(
        default=None, description="the repositories: exactly one local (backups are taken there), any number "
                                  "of object stores they are copied to; default: one local named local")
    offsite_before_prune: bool = Field(
        default=True, description="the local repository removes a backup only once every remote repository "
                                  "has held a verified copy of it")
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
    wal_push: WalPush = Field(default_factory=WalPush)

    @model_validator(mode="after")
    def _check(self) -> BackupPolicy:
        if self.repository is not None and not self.repository.strip():
            raise ValueError("repository must not be empty")
        if self.repositories is not None:
            names = [r.name for r in self.repositories]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"repository name(s) used twice: {', '.join(twice)}")
            local = [r for r in self.repositories if r.type == "local"]
            if len(local) != 1:
                raise ValueError(f"repositories: exactly one local repository (backups are taken there), "
                                 f"not {len(local)}")
            if self.repository is not None and local[0].path is not None:
                raise ValueError("repository and the local repository's path both say where backups go: keep one")
        return self

    @property
    def local_name(self) -> str:
        return next((r.name for r in self.repositories or [] if r.type == "local"), "local")

    @property
    def remotes(self) -> list[RepositoryConfig]:
        """The object-store repositories, in the policy's order."""
        return [r for r in self.repositories or [] if r.remote]

    def remote(self, name: str) -> RepositoryConfig:
        """The remote repository ``name``; ValueError naming the known ones."""
        for r in self.remotes:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.remotes) or "none"
        hint = " (the local one)" if name == self.local_name else ""
        raise ValueError(f"no remote repository {name!r}{hint} in the backup policy (remote: {known})")

    def retention_of(self, name: str) -> Retention:
        found = next((r for r in self.repositories or [] if r.name == name), None)
        return found.retention if found is not None and found.retention is not None else self.retention

    def wal_dir(self, data_dir: Path) -> Path:
        """Where ``archive_command`` writes WAL: the local repository's WAL dir, also the spool of the
        remote repositories (the local prune removes WAL from it, never before they hold it verified)."""
        return self.repository_path(data_dir) / "wal"

    def repository_path(self, data_dir: Path) -> Path:
        """The local repository's directory: its ``path``, else ``repository:``, else <data dir>/backups."""
        local = next((r for r in self.repositories or [] if r.type == "local"), None)
        chosen = local.path if local is not None and local.path else self.repository
        return Path(chosen).expanduser() if chosen else data_dir / "backups"


def load_policy(path: Path | None = None, directory: Path | None = None) -> BackupPolicy:
    """The backup policy from ``path`` or the policy dir; the defaults when the file does not exist."""
    from opsctl.policy import load, policy_dir

    target = path or policy_dir(directory) / "backup.yaml"
    if path is None and not target.exists():
        return BackupPolicy()
    return load(BackupPolicy, "backup", target)
