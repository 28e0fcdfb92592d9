"""The ``partitions`` policy (``policies/partitions.yaml``): interval, premake, retention, archive."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from opsctl.policy import PolicyModel

Interval = Literal["day", "week", "month"]
TableName = Literal["documents", "chunks"]


class TablePolicy(PolicyModel):
    """How one partitioned table is cut and kept."""

    interval: Interval = "month"
    premake: int = Field(4, ge=0, le=366, description="intervals created ahead of the current one, from the clock")
    retention: int | None = Field(12, ge=0, le=10_000,
                                  description="whole intervals kept before the current one; null: forever")
    archive: bool = Field(True, description="pg_dump each expired partition (verified) before dropping it")
    time_zone: str = Field("UTC", description="boundaries fall on midnight in this zone")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as UTC or Europe/Paris)") from None
        return v


def _default_tables() -> dict[TableName, TablePolicy]:
    return {"documents": TablePolicy.model_validate({}), "chunks": TablePolicy.model_validate({})}


class PartitionsPolicy(PolicyModel):
    """Partition rotation of the core's time-partitioned tables."""

    archive_dir: str | None = Field(None, description="where dumps go; relative paths are under the data dir; "
                                                      "unset: <data dir>/archive/partitions")
    lock_timeout_ms: int = Field(2000, ge=10, le=600_000, description="per DDL statement; it is retried on timeout")
    lock_retries: int = Field(20, ge=0, le=1000)
    move_batch_rows: int = Field(1000, ge=1, le=1_000_000, description="rows copied out of the default per batch")
    tables: dict[TableName, TablePolicy] = Field(default_factory=_default_tables)

    @model_validator(mode="after")
    def _chunks_follow_documents(self) -> PartitionsPolicy:
        docs, chunks = self.tables.get("documents"), self.tables.get("chunks")
        if docs and chunks:
            for key in ("interval", "retention", "time_zone"):
                if getattr(docs, key) != getattr(chunks, key):
                    raise ValueError(f"tables.chunks.{key} must equal tables.documents.{key}: a document's chunks "
                                     "share its created_at and must live and expire with it")
        return self
