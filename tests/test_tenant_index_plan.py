"""The plan of own HNSW indexes per company: thresholds, hysteresis, incomplete indexes (tables)."""

from __future__ import annotations

import pytest

from opsctl.vindex.policy import TenantIndexes, VectorIndexPolicy
from opsctl.vindex.tenants import Action, OwnIndex, plan_tenant_indexes, sentence

POLICY = TenantIndexes(min_rows=1000, max_share=0.5, hysteresis=0.2, max_builds=10)
OTHERS = 100_000  # company 99: most of the chunks, over max_share, never its own index


def _plan(rows: int, has: bool | None, policy: TenantIndexes = POLICY) -> list[tuple[Action, int]]:
    counts = {1: rows, 99: OTHERS}
    current = {} if has is None else {1: OwnIndex(1, has)}
    return [(m.action, m.company_id) for m in plan_tenant_indexes(counts, current, policy) if m.company_id == 1]


@pytest.mark.parametrize(("rows", "has", "expected"), [
    (999, None, []),                                    # under min_rows: stays exact
    (1000, None, [(Action.build, 1)]),                  # at min_rows: its own index
    (5000, None, [(Action.build, 1)]),
    (900, True, []),                                    # under min_rows but within the hysteresis: kept
    (800, True, []),                                    # at min_rows·0.8: kept
    (799, True, [(Action.drop, 1)]),                    # under it: dropped
    (0, True, [(Action.drop, 1)]),                      # a company without chunks (deleted)
    (900, None, []),                                    # the same 900 without an index: none built
    (5000, False, [(Action.complete, 1)]),              # incomplete (a new partition missing its piece)
    (700, False, [(Action.drop, 1)]),                   # incomplete and no longer wanted: dropped
])
def test_rows_threshold_with_hysteresis(rows: int, has: bool | None, expected: list[tuple[Action, int]]) -> None:
    assert _plan(rows, has) == expected


@pytest.mark.parametrize(("share_rows", "has", "expected"), [
    (50_000, None, [(Action.build, 1)]),                # 50/150 = 33 % (company 99: 67 %, none of its own)
    (100_000, None, [(Action.build, 1)]),               # 50 %: at max_share
    (110_000, None, []),                                # 52 %: over max_share, the shared graph serves it
    (110_000, True, []),                                # 52 % with an index: within max_share·1.2, kept
    (150_000, True, []),                                # 60 %: at max_share·1.2, kept
    (160_000, True, [(Action.drop, 1)]),                # 61.5 %: dropped
])
def test_share_threshold_with_hysteresis(share_rows: int, has: bool | None,
                                         expected: list[tuple[Action, int]]) -> None:
    assert _plan(share_rows, has) == expected


def test_a_company_near_the_line_does_not_flap() -> None:
    """Counts wandering around min_rows: built once on the way up, kept on the wiggle, dropped only
    well under the line, not rebuilt until min_rows again."""
    state: dict[int, OwnIndex] = {}
    actions = []
    for rows in (990, 1001, 995, 1003, 960, 850, 801, 790, 850, 999, 1000):
        moves = plan_tenant_indexes({1: rows, 99: OTHERS}, state, POLICY)
        for m in moves:
            actions.append((rows, m.action))
            if m.action is Action.build:
                state[1] = OwnIndex(1, True)
            elif m.action is Action.drop:
                state.pop(1)
    assert actions == [(1001, Action.build), (790, Action.drop), (1000, Action.build)]


def test_builds_largest_first_and_at_most_max_builds_drops_all() -> None:
    policy = TenantIndexes(min_rows=1000, max_share=0.5, hysteresis=0.2, max_builds=2)
    counts = {1: 2000, 2: 9000, 3: 5000, 4: 1000, 5: 10, 6: 50, 99: OTHERS}
    current = {5: OwnIndex(5, True), 6: OwnIndex(6, True), 7: OwnIndex(7, False)}
    moves = plan_tenant_indexes(counts, current, policy)
    assert [(m.action, m.company_id) for m in moves] == [
        (Action.drop, 5), (Action.drop, 6), (Action.drop, 7), (Action.build, 2), (Action.build, 3)]
    assert moves[3].share == pytest.approx(9000 / sum(counts.values()))


def test_completing_an_index_goes_before_new_builds() -> None:
    policy = TenantIndexes(min_rows=1000, max_share=0.5, hysteresis=0.2, max_builds=1)
    moves = plan_tenant_indexes({1: 2000, 2: 9000, 99: OTHERS}, {1: OwnIndex(1, False)}, policy)
    assert [(m.action, m.company_id) for m in moves] == [(Action.complete, 1)]


def test_disabled_drops_every_own_index() -> None:
    policy = TenantIndexes(enabled=False)
    moves = plan_tenant_indexes({1: 50_000, 2: 60_000, 99: OTHERS}, {1: OwnIndex(1, True)}, policy)
    assert [(m.action, m.company_id) for m in moves] == [(Action.drop, 1)]


def test_sentence_says_what_was_done_or_would_be() -> None:
    moves = plan_tenant_indexes({1: 5000, 99: OTHERS}, {}, POLICY)
    assert sentence(moves, applied=False).startswith("would build company 1's index (5000 chunks >= 1000")
    assert sentence(moves, applied=True).startswith("built company 1's index")
    assert sentence([], applied=True) == "tenant indexes in line with the policy: nothing to do"


def test_the_policy_section_has_defaults_and_validates() -> None:
    assert VectorIndexPolicy.model_validate({}).tenants.min_rows == 5000
    with pytest.raises(ValueError, match="hysteresis"):
        VectorIndexPolicy.model_validate({"tenants": {"hysteresis": 1.5}})
    with pytest.raises(ValueError, match="max_share"):
        VectorIndexPolicy.model_validate({"tenants": {"max_share": 0}})
