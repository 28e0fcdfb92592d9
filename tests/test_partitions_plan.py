"""The rotation planner, by tables: month ends, time zones, premake, retention, default rows, resumes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from opsctl.partitions.plan import Partition, interval_range, plan_rotation, range_of_name
from opsctl.partitions.policy import PartitionsPolicy, TablePolicy
from opsctl.policy import PolicyError, validate_data


def policy(**table: object) -> PartitionsPolicy:
    tp = TablePolicy(**table)  # type: ignore[arg-type]
    return PartitionsPolicy(tables={"documents": tp})


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def month(table: str, y: int, m: int, **kw: object) -> Partition:
    nxt = (y + (m == 12), m % 12 + 1)
    return Partition(table, f"{table}_p{y}_{m:02d}", utc(y, m, 1), utc(nxt[0], nxt[1], 1), **kw)  # type: ignore[arg-type]


def brief(steps: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(s.action, s.partition) for s in steps]


@pytest.mark.parametrize(("now", "tz", "interval", "expected"), [
    # the last instant of a month is still that month; the first of the next is the next
    (utc(2026, 1, 31, 23, 59, 59), "UTC", "month", ("documents_p2026_01", utc(2026, 1, 1), utc(2026, 2, 1))),
    (utc(2026, 2, 1, 0, 0, 0), "UTC", "month", ("documents_p2026_02", utc(2026, 2, 1), utc(2026, 3, 1))),
    # December rolls over the year
    (utc(2026, 12, 31, 12), "UTC", "month", ("documents_p2026_12", utc(2026, 12, 1), utc(2027, 1, 1))),
    # leap February
    (utc(2028, 2, 29, 12), "UTC", "month", ("documents_p2028_02", utc(2028, 2, 1), utc(2028, 3, 1))),
    # 23:30 UTC on Jan 31 is already February in Tokyo (+9); its month starts at 15:00 UTC
    (utc(2026, 1, 31, 23, 30), "Asia/Tokyo", "month",
     ("documents_p2026_02", utc(2026, 1, 31, 15), utc(2026, 2, 28, 15))),
    # 02:00 UTC on March 1 is still February in New York (-5)
    (utc(2026, 3, 1, 2), "America/New_York", "month",
     ("documents_p2026_02", utc(2026, 2, 1, 5), utc(2026, 3, 1, 5))),
    # a month that crosses the DST change: March in Paris is 31 days minus an hour
    (utc(2026, 3, 15), "Europe/Paris", "month", ("documents_p2026_03", utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))),
    # ISO weeks start on Monday; 2027-01-01 is in week 53 of 2026
    (utc(2027, 1, 1, 12), "UTC", "week", ("documents_p2026_w53", utc(2026, 12, 28), utc(2027, 1, 4))),
    (utc(2026, 11, 25, 1), "UTC", "day", ("documents_p2026_11_25", utc(2026, 11, 25), utc(2026, 11, 26))),
])
def test_interval_boundaries(now: datetime, tz: str, interval: str, expected: tuple[str, datetime, datetime]) -> None:
    tp = TablePolicy(interval=interval, time_zone=tz)  # type: ignore[arg-type]
    r = interval_range("documents", now, tp)
    assert (r.name, r.start, r.end) == expected
    assert range_of_name("documents", r.name, tp) == r


@pytest.mark.parametrize(("name", "interval", "ours"), [
    ("documents_p2026_11", "month", True),
    ("documents_p2026_13", "month", False),
    ("documents_default", "month", False),
    ("documentsx_p2026_11", "month", False),
    ("documents_p2026_w48", "week", True),
    ("documents_p2026_11_31", "day", False),
    ("documents_p2026_11_30", "day", True),
])
def test_names_are_recognised(name: str, interval: str, ours: bool) -> None:
    assert (range_of_name("documents", name, TablePolicy(interval=interval)) is not None) is ours  # type: ignore[arg-type]


NOW = utc(2026, 11, 22, 12)


@pytest.mark.parametrize(("existing", "pol", "expected"), [
    # premake from an empty table: the current month and 4 ahead, from the clock
    ([], policy(), [("create", f"documents_p{m}") for m in
                    ("2026_11", "2026_12", "2027_01", "2027_02", "2027_03")]),
    # in line: nothing to do
    ([month("documents", y, m) for y, m in ((2026, 11), (2026, 12), (2027, 1), (2027, 2), (2027, 3))],
     policy(), []),
    # premake 0: only the current one
    ([], policy(premake=0), [("create", "documents_p2026_11")]),
    # one missing in the middle
    ([month("documents", y, m) for y, m in ((2026, 11), (2027, 1))], policy(premake=2),
     [("create", "documents_p2026_12")]),
    # retention 12 months: Oct 2025 and older go (detach, archive, drop); Nov 2025 stays
    ([month("documents", 2025, 10), month("documents", 2025, 11), month("documents", 2026, 11)],
     policy(premake=0),
     [("detach", "documents_p2025_10"), ("archive", "documents_p2025_10"), ("drop", "documents_p2025_10")]),
    # no archive: detach then drop
    ([month("documents", 2025, 10), month("documents", 2026, 11)], policy(premake=0, archive=False),
     [("detach", "documents_p2025_10"), ("drop", "documents_p2025_10")]),
    # retention 0 keeps the current month only, never drops it
    ([month("documents", 2026, 10), month("documents", 2026, 11)], policy(premake=0, retention=0),
     [("detach", "documents_p2026_10"), ("archive", "documents_p2026_10"), ("drop", "documents_p2026_10")]),
    # retention null keeps everything
    ([month("documents", 2020, 1), month("documents", 2026, 11)], policy(premake=0, retention=None), []),
    # an interrupted concurrent detach is finalized
    ([month("documents", 2025, 1, detach_pending=True), month("documents", 2026, 11)], policy(premake=0),
     [("finalize_detach", "documents_p2025_01"), ("archive", "documents_p2025_01"), ("drop", "documents_p2025_01")]),
    # a table left detached by a crash resumes at archive
    ([Partition("documents", "documents_p2025_01", attached=False), month("documents", 2026, 11)],
     policy(premake=0), [("archive", "documents_p2025_01"), ("drop", "documents_p2025_01")]),
    # a standalone table of a kept interval is an interrupted move: resume it
    ([Partition("documents", "documents_p2026_12", attached=False), month("documents", 2026, 11)],
     policy(premake=1), [("move_default_rows", "documents_p2026_12")]),
    # unrelated tables with a similar name are left alone
    ([Partition("documents", "documents_p2025_01_old", attached=False), month("documents", 2026, 11)],
     policy(premake=0), []),
])
def test_plan(existing: list[Partition], pol: PartitionsPolicy, expected: list[tuple[str, str]]) -> None:
    assert brief(plan_rotation(existing, pol, NOW)) == expected


def test_retention_never_drops_the_current_or_future_partitions() -> None:
    parts = [month("documents", y, m) for y in (2025, 2026, 2027) for m in range(1, 13)]
    for retention in (0, 1, 12):
        steps = plan_rotation(parts, policy(premake=0, retention=retention), NOW)
        dropped = {s.partition for s in steps if s.action == "drop"}
        assert "documents_p2026_11" not in dropped
        assert not any(name >= "documents_p2026_11" for name in dropped)
        assert len(dropped) == 10 + 12 - retention


def test_default_rows_become_moves_instead_of_creates() -> None:
    default = Partition("documents", "documents_default", is_default=True, rows=7,
                        default_days=((utc(2026, 12, 3), 5), (utc(2026, 12, 20), 1), (utc(2030, 1, 1), 1)))
    steps = plan_rotation([default, month("documents", 2026, 11)], policy(premake=1), NOW)
    assert [(s.action, s.partition, s.rows) for s in steps] == [
        ("move_default_rows", "documents_p2026_12", 6),
        ("move_default_rows", "documents_p2030_01", 1),
    ]


def test_default_rows_of_an_expired_month_are_moved_then_expired() -> None:
    default = Partition("documents", "documents_default", is_default=True, rows=2,
                        default_days=((utc(2024, 5, 5), 2),))
    steps = plan_rotation([default, month("documents", 2026, 11)], policy(premake=0), NOW)
    assert brief(steps) == [("move_default_rows", "documents_p2024_05"), ("detach", "documents_p2024_05"),
                            ("archive", "documents_p2024_05"), ("drop", "documents_p2024_05")]


def test_another_intervals_partition_is_not_overlapped() -> None:
    # monthly UTC partitions exist; a Tokyo-month policy must not create overlapping ones
    parts = [month("documents", 2026, 11), month("documents", 2026, 12)]
    steps = plan_rotation(parts, policy(premake=1, time_zone="Asia/Tokyo"), NOW)
    assert steps == []


def test_tables_in_order_creates_before_expiry() -> None:
    pol = PartitionsPolicy()
    parts = [month("documents", 2024, 1), month("chunks", 2024, 1)]
    steps = plan_rotation(parts, pol, NOW)
    actions = [s.action for s in steps]
    assert actions.index("drop") > max(i for i, a in enumerate(actions) if a == "create")
    assert brief(steps)[-3:] == [("detach", "chunks_p2024_01"), ("archive", "chunks_p2024_01"),
                                 ("drop", "chunks_p2024_01")]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_rotation([], policy(), datetime(2026, 1, 1))


@pytest.mark.parametrize(("data", "reason"), [
    ({"tables": {"documents": {"time_zone": "Mars/Olympus"}}}, "unknown time zone"),
    ({"tables": {"documents": {"interval": "year"}}}, "Input should be"),
    ({"tables": {"documents": {"retention": 6}, "chunks": {"retention": 3}}}, "must equal"),
    ({"tables": {"orders": {}}}, "Input should be"),
])
def test_policy_validation(data: dict[str, object], reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        validate_data(data, PartitionsPolicy, "partitions.yaml")


@pytest.mark.parametrize(("expression", "expected"), [
    ("FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')",
     (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))),
    ("FOR VALUES FROM ('2026-11-25 00:00:00+09') TO ('2026-11-26 00:00:00+09')",  # a day in Tokyo
     (datetime(2026, 11, 24, 15, tzinfo=UTC), datetime(2026, 11, 25, 15, tzinfo=UTC))),
    ("DEFAULT", None),
    ("FOR VALUES FROM (MINVALUE) TO ('2026-01-01 00:00:00+00')", None),
    (None, None),
])
def test_parse_bound(expression: str | None, expected: tuple[datetime, datetime] | None) -> None:
    from opsctl.partitions.plan import parse_bound

    assert parse_bound(expression) == expected
