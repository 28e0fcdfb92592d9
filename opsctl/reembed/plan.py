"""What a re-embed does next, and how far along it is: pure functions of the state read and the clock.

A re-embed moves through these steps, one at a time, each resumable (its state is in the database):

    add_column   ALTER TABLE chunks ADD COLUMN embedding_next vector(dim)
    backfill     embed the chunks after the cursor, in (company_id, id) order, into embedding_next
    build_index  HNSW over embedding_next, partition by partition, CONCURRENTLY, and a small partial
                 btree over the chunks still without a new vector (the catch-up's and the count's index)
    carry_tenant_indexes
                 every company with its own HNSW index (``opsctl index tenants``) gets the same partial
                 index over embedding_next, built online under a name of its own
    catch_up     embed the chunks still without a new vector (written since the backfill passed them)
    switch       one transaction: the last few chunks, the columns renamed, the companies' own indexes
                 replaced by their copies on the new vectors (renamed to the canonical names), the space
                 made active, every company's data version bumped
    drop_retired drop the old column (and with it its HNSW index): after the switch
    drop_next    drop an aborted re-embed's column
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Step = Literal["idle", "add_column", "backfill", "build_index", "carry_tenant_indexes", "catch_up", "switch",
               "drop_retired", "drop_next"]

CATCH_UP_IN_SWITCH = 256  # chunks the switch may embed itself while it holds chunks locked (the runner's: 4 batches)


@dataclass(frozen=True)
class State:
    building: bool            # a space is being built (state 'building')
    next_column: bool         # chunks.embedding_next exists
    retired_column: bool      # chunks.embedding_retired exists (a switch happened, not yet cleaned)
    backfilled: bool          # the backfill's cursor passed the last chunk
    index_valid: bool         # the HNSW index over embedding_next is complete
    missing: int | None       # chunks without a new vector (counted once backfilled), None: not counted
    carry: tuple[int, ...] = ()  # companies whose own index has no complete copy on embedding_next yet


@dataclass(frozen=True)
class Next:
    step: Step
    why: str


def next_step(state: State, catch_up_in_switch: int = CATCH_UP_IN_SWITCH) -> Next:
    """The one thing to do now (pure)."""
    if state.retired_column:
        return Next("drop_retired", "the switch is done: the old vectors go")
    if not state.building:
        if state.next_column:
            return Next("drop_next", "the re-embed was aborted: its vectors go")
        return Next("idle", "no re-embed in progress")
    if not state.next_column:
        return Next("add_column", "the new vectors need their column")
    if not state.backfilled:
        return Next("backfill", "chunks remain before the cursor's end")
    if not state.index_valid:
        return Next("build_index", "every chunk has a new vector: the HNSW index is built")
    if state.carry:
        return Next("carry_tenant_indexes", f"{len(state.carry)} companies with their own index need it on the "
                                            f"new vectors: {', '.join(map(str, state.carry))}")
    if state.missing is None or state.missing > catch_up_in_switch:
        return Next("catch_up", f"{'some' if state.missing is None else state.missing} chunks written during "
                                f"the re-embed have no new vector yet")
    return Next("switch", f"{state.missing} chunks left: the switch embeds them while it holds the table")


def to_carry(own: Iterable[int], copies: Mapping[int, bool]) -> tuple[int, ...]:
    """The companies with their own index (``own``) whose copy on the new vectors is missing or
    incomplete (``copies``: company -> valid), in id order (pure)."""
    return tuple(sorted(c for c in set(own) if not copies.get(c, False)))


# From the carry to the switch the own indexes must stay as they are: the carry copies the set it
# finds, and the switch replaces exactly the set it copied.
CARRYING: frozenset[Step] = frozenset({"carry_tenant_indexes", "catch_up", "switch"})


@dataclass(frozen=True)
class TenantGate:
    free: bool  # a tenant index run (``opsctl index tenants``) may build and drop own indexes now
    why: str


def tenant_gate(step: Step) -> TenantGate:
    """May a tenant index run change the own indexes while the re-embed is at ``step``? (pure)

    Before the carry (the column, the backfill: hours on a large corpus, the shared index) it may:
    the carry copies the own indexes as they are when it starts, under the tenant runs' lock, so a
    run already going finishes first. From the carry to the switch it may not."""
    if step == "idle":
        return TenantGate(True, "no re-embed in progress")
    if step in CARRYING:
        return TenantGate(False, f"it is carrying the own indexes onto the new vectors (step {step}): they can "
                                 f"change again after its switch (or an abort)")
    if step == "drop_retired":
        return TenantGate(True, "the re-embed has switched: the own indexes are on the new vectors")
    if step == "drop_next":
        return TenantGate(True, "the re-embed was aborted: its copies go with its column")
    return TenantGate(True, f"the re-embed is at {step}: it copies the own indexes later, as they are then")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    ratio: float
    chunks_per_second: float | None
    eta_seconds: float | None


def progress(done: int, total: int, started: datetime, now: datetime) -> Progress:
    """How far the backfill is, its rate since ``started`` and the time left at that rate (pure)."""
    total = max(total, done)
    ratio = 1.0 if total == 0 else done / total
    elapsed = (now - started).total_seconds()
    rate = done / elapsed if elapsed > 0 and done > 0 else None
    eta = (total - done) / rate if rate else None
    return Progress(done, total, ratio, rate, eta)


def estimate_seconds(chunks: int, sample: int, sample_seconds: float) -> float | None:
    """Time to embed ``chunks`` at the rate measured on ``sample`` chunks (pure; None: no sample)."""
    if sample <= 0 or sample_seconds <= 0:
        return None
    return chunks * sample_seconds / sample
