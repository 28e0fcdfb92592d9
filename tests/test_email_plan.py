"""The worker's mail planner (pure): which thread each message of a batch joins, and every write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.ingest.mail import written_at
from core.ingest.mailplan import PROVISIONAL, MailIn, MailPlan, Merge, Remaining, ThreadState, ThreadWrite, plan_mail

T0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
P0, P1 = PROVISIONAL, PROVISIONAL + 1


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def mail(mid: str, *refs: str, minute: int = 0, company: int = 1, subject: str | None = "Topic",
         key: str = "") -> MailIn:
    return MailIn(company, mid, refs, at(minute), subject, key)


def state(count: int, first: int = 0, last: int = 0, subject: str | None = "Topic", key: str = "") -> ThreadState:
    return ThreadState(count, at(first), at(last), subject, key)


def memberships(plan: MailPlan, messages: list[MailIn]) -> dict[int | None, set[str]]:
    found: dict[int | None, set[str]] = {}
    for message, thread in zip(messages, plan.thread_of, strict=True):
        found.setdefault(thread, set()).add(message.message_id)
    return found


# (name, messages, registry, stored, threads, expected thread per message)
ASSIGNMENTS = [
    ("parent then reply, one batch", [mail("a"), mail("b", "a", minute=1)], {}, set(), {}, [P0, P0]),
    ("reply before parent, one batch", [mail("b", "a", minute=1), mail("a")], {}, set(), {}, [P0, P0]),
    ("grandchild first, one batch", [mail("c", "a", "b"), mail("a"), mail("b", "a")], {}, set(), {}, [P0, P0, P0]),
    ("two ghosts' siblings", [mail("b", "a"), mail("c", "a")], {}, set(), {}, [P0, P0]),
    ("unrelated", [mail("a"), mail("b")], {}, set(), {}, [P0, P1]),
    ("joins a stored thread", [mail("b", "a")], {(1, "a"): 5}, {(1, "a")}, {(1, 5): state(3)}, [5]),
    ("the parent finds its ghost", [mail("a")], {(1, "a"): 5}, set(), {(1, 5): state(1)}, [5]),
    ("merge: the larger survives", [mail("d", "a", "c")], {(1, "a"): 5, (1, "c"): 7}, set(),
     {(1, 5): state(1), (1, 7): state(2)}, [7]),
    ("merge of equals: the smaller id survives", [mail("d", "a", "c")], {(1, "a"): 5, (1, "c"): 3}, set(),
     {(1, 5): state(1), (1, 3): state(1)}, [3]),
    ("a new thread loses a tie to a stored one", [mail("x"), mail("y", "x", "a")], {(1, "a"): 5}, set(),
     {(1, 5): state(1)}, [5, 5]),
    ("duplicate of a stored message", [mail("a")], {(1, "a"): 5}, {(1, "a")}, {(1, 5): state(1)}, [None]),
    ("the same id in two companies", [mail("a", company=1), mail("a", company=2)], {}, set(), {}, [P0, P1]),
    ("a loop terminates", [mail("a", "b"), mail("b", "a")], {}, set(), {}, [P0, P0]),
]


@pytest.mark.parametrize(("name", "messages", "registry", "stored", "threads", "expected"), ASSIGNMENTS,
                         ids=[a[0] for a in ASSIGNMENTS])
def test_assignments(name: str, messages: list[MailIn], registry: dict[tuple[int, str], int],
                     stored: set[tuple[int, str]], threads: dict[tuple[int, int], ThreadState],
                     expected: list[int | None]) -> None:
    plan = plan_mail(messages, registry, stored, threads, {}, group_by_subject=False)
    assert list(plan.thread_of) == expected


def test_a_merge_says_every_write() -> None:
    messages = [mail("d", "a", "c", minute=9, subject="Re: Topic")]
    threads = {(1, 5): state(3, 0, 5, "Topic"), (1, 7): state(1, -10, -10, "Older")}
    plan = plan_mail(messages, {(1, "a"): 5, (1, "c"): 7}, {(1, "a"), (1, "c")}, threads, {}, False)
    assert plan.thread_of == (5,)
    assert plan.created == ()
    assert plan.merged == (Merge(1, 7, 5),)
    # the survivor counts every message, spans both, and takes the subject of the oldest one
    assert plan.changed == (ThreadWrite(1, 5, ThreadState(5, at(-10), at(9), "Older", "")),)
    assert plan.registered == ((1, "d", 5),)


def test_a_new_thread_larger_than_a_stored_one_survives_and_is_numbered() -> None:
    messages = [mail("x"), mail("y", "x", minute=1), mail("z", "y", minute=2), mail("w", "z", "a", minute=3)]
    plan = plan_mail(messages, {(1, "a"): 5}, {(1, "a")}, {(1, 5): state(1, -60, -60)}, {}, False)
    assert plan.thread_of == (P0, P0, P0, P0)
    assert plan.merged == (Merge(1, 5, P0),)
    assert plan.created == (ThreadWrite(1, P0, ThreadState(5, at(-60), at(3), "Topic", "")),)
    assert plan.changed == ()
    numbered = plan.numbered([42])
    assert numbered.thread_of == (42, 42, 42, 42)
    assert numbered.merged == (Merge(1, 5, 42),)
    assert numbered.registered == ((1, "x", 42), (1, "y", 42), (1, "z", 42), (1, "w", 42))
    with pytest.raises(ValueError, match="1 new threads, 2 ids"):
        plan.numbered([42, 43])


def test_new_threads_merged_within_the_batch_are_never_created() -> None:
    messages = [mail("a"), mail("b"), mail("c", "a", "b")]
    plan = plan_mail(messages, {}, set(), {}, {}, False)
    assert plan.thread_of == (P0, P0, P0)
    assert [w.thread_id for w in plan.created] == [P0]
    assert plan.created[0].state.message_count == 3
    assert plan.merged == ()
    assert {name for _, name, _ in plan.registered} == {"a", "b", "c"}


def test_a_duplicate_writes_nothing_and_a_repeat_in_the_batch_is_stored_once() -> None:
    plan = plan_mail([mail("a"), mail("a")], {}, set(), {}, {}, False)
    assert plan.thread_of == (P0, None)
    assert plan.created[0].state.message_count == 1
    stored = plan_mail([mail("a")], {(1, "a"): 5}, {(1, "a")}, {(1, 5): state(1)}, {}, False)
    assert stored == MailPlan((None,), (), (), (), ())


GROUPING = [
    # (name, message, by_subject, on, expected thread)
    ("off: a thread of its own", mail("b", key="lunch"), {(1, "lunch"): 9}, False, P0),
    ("on: joins the newest thread of its subject", mail("b", key="lunch"), {(1, "lunch"): 9}, True, 9),
    ("on, but it names another message: ids decide", mail("b", "zz", key=""), {(1, "lunch"): 9}, True, P0),
    ("on, an empty subject never groups", mail("b", key=""), {(1, ""): 9}, True, P0),
    ("on, another company's subject", mail("b", company=2, key="lunch"), {(1, "lunch"): 9}, True, P0),
]


@pytest.mark.parametrize(("name", "message", "by_subject", "on", "expected"), GROUPING, ids=[g[0] for g in GROUPING])
def test_grouping_by_subject(name: str, message: MailIn, by_subject: dict[tuple[int, str], int], on: bool,
                             expected: int) -> None:
    plan = plan_mail([message], {}, set(), {(1, 9): state(2)}, by_subject, on)
    assert plan.thread_of == (expected,)


def test_grouping_by_subject_within_a_batch() -> None:
    messages = [mail("a", key="lunch"), mail("b", minute=1, key="lunch"), mail("c", minute=2, key="other")]
    plan = plan_mail(messages, {}, set(), {}, {}, True)
    assert memberships(plan, messages) == {P0: {"a", "b"}, P1: {"c"}}


@pytest.mark.parametrize(("date", "expected"), [
    (None, T0), (at(-5), at(-5)), (at(5), T0), (T0, T0)])
def test_written_at_is_the_date_unless_missing_or_in_the_future(date: datetime | None, expected: datetime) -> None:
    assert written_at(date, T0) == expected


# A thread whose messages were all deleted keeps its row (its ids stay registered) with no message:
# the next message it gets starts its counters again, and merged into another it adds nothing.
EMPTY = ThreadState(0, at(-500), at(-400), None, "")

STATES = [
    ("add to a live thread", state(2, 0, 10).add(at(-5), "Older", "older"), state(3, -5, 10, "Older", "older")),
    ("add to an empty thread starts its span", EMPTY.add(at(7), "Re: x", ""), state(1, 7, 7, "Re: x")),
    ("add a subjectless message to an empty thread", EMPTY.add(at(7), None, ""), state(1, 7, 7, None)),
    ("absorb an empty thread", state(2, 0, 10).absorb(EMPTY), state(2, 0, 10)),
    ("an empty thread absorbs a live one", EMPTY.absorb(state(2, 0, 10)), state(2, 0, 10)),
]


@pytest.mark.parametrize(("name", "found", "expected"), STATES, ids=[s[0] for s in STATES])
def test_thread_states(name: str, found: ThreadState, expected: ThreadState) -> None:
    assert found == expected


def test_a_message_naming_an_emptied_thread_joins_it_afresh() -> None:
    plan = plan_mail([mail("again", "gone", minute=3)], {(1, "gone"): 5}, set(), {(1, 5): EMPTY}, {}, False)
    assert plan.thread_of == (5,)
    assert plan.changed == (ThreadWrite(1, 5, state(1, 3, 3)),)


def test_an_emptied_thread_merged_into_a_live_one_leaves_its_span() -> None:
    plan = plan_mail([mail("d", "gone", "a", minute=20)], {(1, "gone"): 5, (1, "a"): 7}, set(),
                     {(1, 5): EMPTY, (1, 7): state(2, 0, 10)}, {}, False)
    assert plan.thread_of == (7,) and plan.merged == (Merge(1, 5, 7),)
    assert plan.changed == (ThreadWrite(1, 7, state(3, 0, 20)),)


REMAINING = [
    # (name, what is left, grouping by subject, the thread after)
    ("nothing left", Remaining(0, None, None, None, False), False, ThreadState(0, at(-500), at(-400), None, "")),
    ("one left", Remaining(1, at(10), at(10), "Re: Kickoff", False), False, state(1, 10, 10, "Re: Kickoff")),
    ("grouping: an unreferenced oldest message keys the thread", Remaining(2, at(0), at(9), "Re: Lunch?", True),
     True, state(2, 0, 9, "Re: Lunch?", "lunch?")),
    ("grouping: a referencing oldest message does not", Remaining(2, at(0), at(9), "Re: Lunch?", False), True,
     state(2, 0, 9, "Re: Lunch?", "")),
    ("grouping off", Remaining(2, at(0), at(9), "Lunch?", True), False, state(2, 0, 9, "Lunch?", "")),
]


@pytest.mark.parametrize(("name", "left", "grouping", "expected"), REMAINING, ids=[r[0] for r in REMAINING])
def test_a_thread_after_deletes_counts_what_is_left(name: str, left: Remaining, grouping: bool,
                                                     expected: ThreadState) -> None:
    assert left.state(ThreadState(5, at(-500), at(-400), "Gone", "gone"), grouping) == expected
