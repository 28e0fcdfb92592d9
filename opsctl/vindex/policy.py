"""The ``vector-index`` policy (``policies/vector-index.yaml``): recall target, ef_search bounds, triggers,
the companies that get their own index."""

from __future__ import annotations

from pydantic import Field, model_validator

from opsctl.policy import PolicyModel


class ReindexTriggers(PolicyModel):
    """Any one of these firing rebuilds the index (REINDEX INDEX CONCURRENTLY, then VACUUM)."""

    recall_below_target: bool = Field(True, description="measured recall@k under target_recall at the "
                                                        "current ef_search")
    dead_tuple_fraction: float | None = Field(0.2, ge=0, le=1, description="dead / (live + dead) tuples above this")
    index_to_table_ratio: float | None = Field(4.0, gt=0, le=1000, description="index size above this multiple of the "
                                                                      "table's size (bloat)")
    min_rows: int = Field(1000, ge=0, le=10**12, description="partitions with fewer live rows are never rebuilt")


class TenantIndexes(PolicyModel):
    """Which companies get their own HNSW index (``opsctl index tenants``; the daemon's ``tenant-indexes``)."""

    enabled: bool = Field(True, description="false: plan no new index; existing ones are dropped")
    min_rows: int = Field(5000, ge=1, le=10**12, description="a company with at least this many chunks gets its "
                                                               "own index")
    max_share: float = Field(0.5, gt=0, le=1, description="... unless it holds more than this share of all "
                                                          "chunks: the shared graph then serves it as well")
    hysteresis: float = Field(0.2, ge=0, lt=1, description="an own index is kept until the company falls under "
                                                           "min_rows·(1 - h) or rises over max_share·(1 + h)")
    max_builds: int = Field(4, ge=1, le=1000, description="indexes built per run at most (largest first)")


class VectorIndexPolicy(PolicyModel):
    """How the HNSW indexes of ``chunks`` are measured, tuned and maintained."""

    k: int = Field(10, ge=1, le=1000, description="recall is measured at k")
    target_recall: float = Field(0.95, gt=0, le=1)
    ef_search_min: int = Field(10, ge=1, le=1000)
    ef_search_max: int = Field(800, ge=1, le=1000)
    sample_queries: int = Field(50, ge=1, le=5000, description="queries per measurement")
    reindex: ReindexTriggers = Field(default_factory=lambda: ReindexTriggers.model_validate({}))
    tenants: TenantIndexes = Field(default_factory=lambda: TenantIndexes.model_validate({}))

    @model_validator(mode="after")
    def _bounds(self) -> VectorIndexPolicy:
        if self.ef_search_min > self.ef_search_max:
            raise ValueError("ef_search_min must not exceed ef_search_max")
        if self.ef_search_max < self.k:
            raise ValueError("ef_search_max must be at least k (HNSW returns at most ef_search rows per scan)")
        return self
