"""Where a search reads (core.replicas.route): tables of measurements → target and reason."""

from __future__ import annotations

import math

import pytest

from core.replicas.route import Measured, Route, choose, fresh_enough, replay_lag

INF = math.inf


@pytest.mark.parametrize(("replicas", "bound", "expected"), [
    ([], 5, Route("primary", "no_replicas")),
    ([Measured("replica-1", up=False)], 5, Route("primary", "down")),
    ([Measured("replica-1", False), Measured("replica-2", False, 0.0)], 5, Route("primary", "down")),
    ([Measured("replica-1", True, 0.0)], 5, Route("replica", "fresh", "replica-1")),
    ([Measured("replica-1", True, 4.99)], 5, Route("replica", "fresh", "replica-1")),
    ([Measured("replica-1", True, 5.0)], 5, Route("primary", "lagging")),  # at the bound: over it
    ([Measured("replica-1", True, INF)], 5, Route("primary", "lagging")),  # unknown lag is not under any bound
    ([Measured("replica-1", True, 9.0), Measured("replica-2", False)], 5, Route("primary", "lagging")),
    ([Measured("replica-1", False), Measured("replica-2", True, 1.0)], 5, Route("replica", "fresh", "replica-2")),
    ([Measured("replica-1", True, 2.0), Measured("replica-2", True, 0.5)], 5, Route("replica", "fresh", "replica-2")),
    ([Measured("replica-1", True, 0.0), Measured("replica-2", True, 0.0)], 5, Route("replica", "fresh", "replica-1")),
    ([Measured("replica-1", True, 0.0)], 0, Route("primary", "lagging")),  # a bound of 0 turns replicas off
])
def test_choose(replicas: list[Measured], bound: float, expected: Route) -> None:
    assert choose(replicas, bound) == expected


@pytest.mark.parametrize(("replica_version", "required", "expected"), [
    (7, 7, True), (8, 7, True), (6, 7, False), (None, 0, False), (0, 0, True),
])
def test_fresh_enough(replica_version: int | None, required: int, expected: bool) -> None:
    assert fresh_enough(replica_version, required) is expected


@pytest.mark.parametrize(("primary", "replay", "age", "expected"), [
    (100, 100, 3600.0, 0.0),   # idle primary, last commit an hour ago: caught up, not lagging
    (100, 120, 3600.0, 0.0),   # replayed past what the primary had when it was read
    (100, 90, 2.5, 2.5),       # behind: the age of the last replayed transaction
    (100, 90, -0.1, 0.0),      # clocks: never negative
    (100, 90, None, INF),      # behind, nothing replayed since start: unknown
    (100, None, None, INF),    # not a standby / no replay position
])
def test_replay_lag(primary: int, replay: int | None, age: float | None, expected: float) -> None:
    assert replay_lag(primary, replay, age) == expected


def test_describe_says_where_and_why() -> None:
    assert choose([Measured("replica-2", True, 0.0)], 5).describe() == "read from replica-2 (fresh)"
    assert choose([], 5).describe() == "read from the primary (no_replicas)"


def test_the_replica_docs_cite_real_commands() -> None:
    """docs/replicas.md cannot drift from the CLI: every `opsctl …` it cites parses."""
    from tests.cli_citations import citations_in_markdown, problems, root_command
    from tests.conftest import project_root

    text = (project_root() / "docs" / "replicas.md").read_text(encoding="utf-8")
    cited = citations_in_markdown(text, "docs/replicas.md")
    assert {c.argv[0] for c in cited} >= {"up", "backup"}
    assert [p for c in cited for p in problems(c, root_command())] == []
