"""Fair ingest: which waiting jobs a worker claims, and in which order (pure: no I/O).

Across companies, a batch of ``n`` jobs is shared by the companies' tier ``ingestWeight``: the
``n`` companies whose next job is due first take part, company ``c`` may take up to
``ceil(n · w_c / W)`` of its jobs (``W`` the weights of the companies taking part), and its k-th job
is tagged with the virtual finish time ``k / w_c`` (weighted fair queueing's tag for jobs of equal
cost); the batch is the ``n`` lowest tags, ties to the job due first. So a company with one document
waiting gets it into the very next batch however long another company's backlog is, and two
backlogged companies of weights 4 and 1 share batches 4 to 1.

Why per batch and without a record of what each company was served: every batch is one round of
the weighted round robin over the companies waiting at that moment. Keeping a per-company account
("served so far", deficit round robin) would be a row every claim updates, a hot spot that
serializes the workers, and state to repair after a ``kill -9``; the per-batch round needs neither,
and a company's share over time is still its weight's while it keeps jobs waiting.

Within a company the jobs go by ``due_at``: an interactive job (one document, a webhook, one e-mail)
is due when it is queued, a bulk job (``opsctl ingest``, a POST of many documents, an mbox upload)
``ingest_bulk_delay_seconds`` later: earliest deadline first. An interactive send passes the bulk
jobs queued less than that delay before it, and a bulk job is never passed by interactive jobs
queued after its due time, so bulk work always progresses (no starvation).

``claim_order`` is the decision the claim statement (``core.ingest.claim``) makes in SQL;
``tests/test_fair_claim.py`` checks both against the same tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from core.tiers import TenantsPolicy
from core.usage.tally import OTHER, top_with_other

Priority = Literal["interactive", "bulk"]
PRIORITY_CODE: Mapping[Priority, int] = {"interactive": 0, "bulk": 1}  # ingest_jobs.priority
PRIORITY_HEADER = "Ingest-Priority"


@dataclass(frozen=True)
class Lane:
    """How a request's jobs are queued: their class and how long after queueing they are due."""

    priority: Priority
    delay_seconds: float

    @property
    def code(self) -> int:
        return PRIORITY_CODE[self.priority]


INTERACTIVE = Lane("interactive", 0.0)


def parse_priority(value: str | None) -> Priority | None:
    """The ``Ingest-Priority`` header: ``interactive`` or ``bulk`` (any case), None when absent; a
    ValueError for anything else."""
    if value is None:
        return None
    wanted = value.strip().lower()
    if wanted == "interactive" or wanted == "bulk":
        return wanted  # type: ignore[return-value]
    raise ValueError(f"{PRIORITY_HEADER} must be 'interactive' or 'bulk', got {value[:40]!r}")


def intake_lane(items: int, asked: Priority | None, interactive_max: int, bulk_delay_seconds: float) -> Lane:
    """The lane of a request of ``items`` documents or messages: what the client asked for, else
    interactive up to ``interactive_max`` items and bulk above. A company's priorities order only its
    own jobs, so a client may ask for either."""
    priority: Priority = asked or ("interactive" if items <= interactive_max else "bulk")
    return Lane(priority, bulk_delay_seconds if priority == "bulk" else 0.0)


@dataclass(frozen=True)
class ClaimWeights:
    """The claim's weights: ``ingestWeight`` per tier name, and the default tier's for a company
    without a tier or with one the policy no longer has."""

    tiers: tuple[str, ...]
    weights: tuple[int, ...]
    default: int


def claim_weights(policy: TenantsPolicy) -> ClaimWeights:
    names = tuple(sorted(policy.tiers))
    return ClaimWeights(names, tuple(policy.tiers[n].ingest_weight for n in names),
                        policy.tiers[policy.default_tier].ingest_weight)


@dataclass(frozen=True)
class Waiting:
    """One company's runnable jobs (``(due_at, job id)``, any order) and its weight."""

    company_id: int
    weight: int
    jobs: tuple[tuple[datetime, int], ...]


def shares(weights: Mapping[int, int], n: int) -> dict[int, int]:
    """Up to how many jobs each company (id → weight) may take of a batch of ``n``: ``ceil(n·w/W)``."""
    total = sum(weights.values())
    return {c: -(-n * w // total) for c, w in weights.items()}


def claim_order(waiting: Sequence[Waiting], n: int) -> list[int]:
    """The job ids a claim of ``n`` takes, in order, when no other claim holds any of them."""
    queues = {q.company_id: (q.weight, sorted(q.jobs)) for q in waiting if q.jobs}
    first = sorted(queues, key=lambda c: queues[c][1][0])[:n]
    quota = shares({c: queues[c][0] for c in first}, n)
    tagged = [((k / queues[c][0]), due, job_id)
              for c in first for k, (due, job_id) in enumerate(queues[c][1][:quota[c]], start=1)]
    return [job_id for _, _, job_id in sorted(tagged)[:n]]


# --- the queue's gauges per company --------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """A company's (or ``other``'s) waiting jobs and the age of its oldest unfinished job."""

    company: str
    waiting: int
    oldest_seconds: float


def top_backlogs(rows: Iterable[Backlog], top: int) -> list[Backlog]:
    """The ``top`` companies with the most jobs waiting (``core.usage.tally.top_with_other``: ties by
    name), and the rest as ``other``: their jobs summed, its age the oldest of theirs. At most
    ``top + 1`` label values, the same companies in both gauges."""
    rows = list(rows)
    named = top_with_other({b.company: float(b.waiting) for b in rows}, top)
    by_name = {b.company: b for b in rows}
    head = [by_name[name] for name in named if name != OTHER]
    rest = [b for b in rows if b.company not in named]
    if rest:
        head.append(Backlog(OTHER, sum(b.waiting for b in rest), max(b.oldest_seconds for b in rest)))
    return head
