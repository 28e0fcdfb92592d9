"""Companies with their own HNSW index: its name, and how a search finds out (``opsctl index tenants``).

A large company gets a partial HNSW index on ``chunks`` (``WHERE company_id = N``), a partitioned
index, so every time partition has its own piece and a partition created later gets one too. Its
search is then an unfiltered graph search over its own rows: no other company's rows crowd the
candidate list. The planner matches a partial index only when the query's company id is a
constant, so the vector query carries the id as a literal (``core.search.retrieve.vector_sql``):
a parameter would let a generic plan (prepared statements) fall back to the shared index.
"""

from __future__ import annotations

INDEX_PREFIX = "chunks_c"
INDEX_SUFFIX = "_hnsw_idx"


def tenant_index_name(company_id: int) -> str:
    """The parent (partitioned) index of a company's own HNSW index."""
    return f"{INDEX_PREFIX}{int(company_id)}{INDEX_SUFFIX}"


def tenant_of_index(name: str) -> int | None:
    """The company of a parent index named by ``tenant_index_name`` (None: another index)."""
    if not (name.startswith(INDEX_PREFIX) and name.endswith(INDEX_SUFFIX)):
        return None
    middle = name[len(INDEX_PREFIX):-len(INDEX_SUFFIX)]
    return int(middle) if middle.isdigit() else None


# Whether the company's own index is complete (valid: every partition has its piece). One catalog lookup.
OWN_INDEX_SQL = "SELECT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)), false)"
