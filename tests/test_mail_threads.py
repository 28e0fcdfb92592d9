"""Threads: plan_assignment (tables, and any arrival order giving the id graph's components)
and thread_tree (JWZ's edge cases)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mailcorpus import id_components
from core.mail.message import parse_message
from core.mail.threads import Assignment, Member, Node, ThreadRef, plan_assignment, thread_tree
from tests.mailfixtures import THREAD_CASES, ThreadCase
from tests.mailfixtures import message as raw_message


@pytest.mark.parametrize(
    ("ids", "known", "expected"),
    [
        pytest.param(["m"], {}, Assignment(None, (), ("m",)), id="alone-new-thread"),
        pytest.param(["m", "a", "b"], {}, Assignment(None, (), ("m", "a", "b")), id="reply-first-registers-refs"),
        pytest.param(["m", "a"], {"a": ThreadRef(7, 3)}, Assignment(7, (), ("m",)), id="joins-the-parent-thread"),
        pytest.param(["a"], {"a": ThreadRef(7, 1)}, Assignment(7, (), ()), id="parent-arrives-after-reply"),
        pytest.param(["m", "a", "b"], {"a": ThreadRef(1, 2), "b": ThreadRef(2, 5)}, Assignment(2, (1,), ("m",)),
                     id="merge-largest-survives"),
        pytest.param(["m", "a", "b"], {"a": ThreadRef(4, 3), "b": ThreadRef(2, 3)}, Assignment(2, (4,), ("m",)),
                     id="merge-tie-smallest-id"),
        pytest.param(["m", "a", "b", "c"], {"a": ThreadRef(3, 1), "b": ThreadRef(1, 1), "c": ThreadRef(9, 4)},
                     Assignment(9, (1, 3), ("m",)), id="three-threads-merge-into-one"),
        pytest.param(["m", "a", "a", "", "m"], {}, Assignment(None, (), ("m", "a")), id="duplicates-and-empty-ids"),
        pytest.param(["m", "a", "b"], {"a": ThreadRef(5, 2), "b": ThreadRef(5, 2)}, Assignment(5, (), ("m",)),
                     id="two-refs-one-thread"),
    ],
)
def test_plan_assignment(ids: list[str], known: dict[str, ThreadRef], expected: Assignment) -> None:
    assert plan_assignment(ids, known) == expected


class Store:
    """The store's side of threading, as a dict: ids -> thread, thread sizes, stored messages."""

    def __init__(self) -> None:
        self.thread_of: dict[str, int] = {}
        self.size: dict[int, int] = {}
        self.stored: set[str] = set()
        self.next_id = 1
        self.merged_sizes: list[tuple[int, int]] = []  # (survivor size, merged size) at each merge

    def add(self, ids: Sequence[str]) -> None:
        if ids[0] in self.stored:  # a duplicate: stored once
            return
        known = {i: ThreadRef(self.thread_of[i], self.size[self.thread_of[i]]) for i in ids if i in self.thread_of}
        plan = plan_assignment(ids, known)
        thread = plan.thread_id
        if thread is None:
            thread, self.next_id = self.next_id, self.next_id + 1
            self.size[thread] = 0
        for other in plan.merge:
            self.merged_sizes.append((self.size[thread], self.size[other]))
            for i, t in self.thread_of.items():
                if t == other:
                    self.thread_of[i] = thread
            self.size[thread] += self.size.pop(other)
        for i in plan.register:
            self.thread_of[i] = thread
        self.stored.add(ids[0])
        self.size[thread] += 1

    def partition(self) -> set[frozenset[str]]:
        groups: dict[int, set[str]] = {}
        for message in self.stored:
            groups.setdefault(self.thread_of[message], set()).add(message)
        return {frozenset(g) for g in groups.values()}


def components(messages: Iterable[Sequence[str]]) -> set[frozenset[str]]:
    """The connected components of the id graph (message -- each id it references), messages only."""
    return set(id_components(messages))


@pytest.mark.parametrize("case", THREAD_CASES, ids=[c.name for c in THREAD_CASES])
def test_thread_cases_end_in_their_expected_threads(case: ThreadCase) -> None:
    store = Store()
    label_of: dict[str, str] = {}
    for mail, raw in zip(case.mails, case.raws(), strict=True):
        parsed = parse_message(raw)
        label_of[parsed.message_id] = mail.label
        store.add([parsed.message_id, *parsed.references])
    assert {frozenset(label_of[m] for m in thread) for thread in store.partition()} == set(case.threads)
    assert {label_of[m] for m in store.stored} == case.stored


@st.composite
def thread_sets(draw: st.DrawFn) -> list[list[str]]:
    """Messages (own id first, then references) of a few threads: replies to earlier messages
    with chains, ghosts (referenced ids never sent), loops and self-references."""
    count = draw(st.integers(1, 30))
    names = [f"m{i}" for i in range(count)]
    ghosts = [f"g{i}" for i in range(draw(st.integers(0, 4)))]
    messages = []
    for index, name in enumerate(names):
        pool = names[:index] + ghosts + (names[index:] if draw(st.booleans()) else [])  # later ids: loops
        refs = draw(st.lists(st.sampled_from(pool), max_size=4)) if pool else []
        messages.append([name, *refs])
    return messages


@given(thread_sets(), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_any_arrival_order_gives_the_components_of_the_id_graph(messages: list[list[str]], rnd: object) -> None:
    order = list(messages)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    store = Store()
    for ids in order + order[: len(order) // 3]:  # and some re-deliveries
        store.add(ids)
    assert store.partition() == components(messages)
    assert all(merged <= survivor for survivor, merged in store.merged_sizes)


T0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


def member(message_id: str, refs: Sequence[str] = (), in_reply_to: str | None = None, minute: int | None = 0) -> Member:
    date = None if minute is None else T0 + timedelta(minutes=minute)
    return Member(message_id, in_reply_to, tuple(refs), date, f"subject {message_id}", "ann@example.com")


def shape(nodes: list[Node]) -> list[tuple[str, str | None, int, bool]]:
    return [(n.message_id, n.parent, n.depth, n.ghost) for n in nodes]


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        pytest.param([member("a"), member("b", ["a"], minute=1), member("c", ["a", "b"], minute=2)],
                     [("a", None, 0, False), ("b", "a", 1, False), ("c", "b", 2, False)], id="chain"),
        pytest.param([member("c", ["a", "b"], minute=2), member("b", ["a"], minute=1), member("a")],
                     [("a", None, 0, False), ("b", "a", 1, False), ("c", "b", 2, False)], id="any-input-order"),
        pytest.param([member("b", ["a"], minute=1), member("c", ["a"], minute=2)],
                     [("a", None, 0, True), ("b", "a", 1, False), ("c", "a", 1, False)],
                     id="ghost-parent-kept-where-it-joins-branches"),
        pytest.param([member("b", ["x", "a"], minute=1), member("a", ["x"])],
                     [("a", None, 0, False), ("b", "a", 1, False)], id="ghost-root-with-one-child-pruned"),
        pytest.param([member("a"), member("c", ["a", "b"], minute=2)],
                     [("a", None, 0, False), ("c", "a", 1, False)], id="ghost-in-the-middle-pruned"),
        pytest.param([member("a"), member("b", [], "a", minute=1)],
                     [("a", None, 0, False), ("b", "a", 1, False)], id="in-reply-to-only"),
        pytest.param([member("a", ["b"]), member("b", ["a"], minute=1)],
                     [("b", None, 0, False), ("a", "b", 1, False)], id="two-message-loop-broken"),
        pytest.param([member("a", ["c"]), member("b", ["a"], minute=1), member("c", ["b"], minute=2)],
                     [("c", None, 0, False), ("a", "c", 1, False), ("b", "a", 2, False)], id="three-message-loop"),
        pytest.param([member("a", ["a"], "a")], [("a", None, 0, False)], id="self-reference"),
        pytest.param([member("a"), member("b", ["a"], minute=1), member("b", ["z"], minute=9)],
                     [("a", None, 0, False), ("b", "a", 1, False)], id="duplicate-first-one-stands"),
        pytest.param([member("a"), member("c", ["a"], minute=5), member("b", ["a"], minute=1)],
                     [("a", None, 0, False), ("b", "a", 1, False), ("c", "a", 1, False)], id="siblings-oldest-first"),
        pytest.param([member("a"), member("u", ["a"], minute=None), member("b", ["a"], minute=1)],
                     [("a", None, 0, False), ("b", "a", 1, False), ("u", "a", 1, False)], id="undated-last"),
        pytest.param([member("a"), member("b", ["a"], minute=1), member("c", ["q", "b"], minute=2)],
                     [("a", None, 0, False), ("b", "a", 1, False), ("c", "b", 2, False)],
                     id="conflicting-references-keep-the-first-link"),
    ],
)
def test_thread_tree(members: list[Member], expected: list[tuple[str, str | None, int, bool]]) -> None:
    assert shape(thread_tree(members)) == expected


def test_messages_naming_yes_are_no_children_of_a_ghost_yes() -> None:
    """Old git send-email's "In-Reply-To: <yes>": two unrelated patches naming it stay apart, and
    a reply naming it hangs under its last valid reference (JWZ's fallback), not under "yes"."""
    raws = [raw_message(message_id="p1@lkml", subject="[PATCH] one", in_reply_to="yes", references=["yes"]),
            raw_message(message_id="p2@lkml", subject="[PATCH] two", in_reply_to="yes", date=T0 + timedelta(days=400)),
            raw_message(message_id="r2@lkml", subject="Re: [PATCH] two", in_reply_to="yes", references=["p2@lkml"],
                    date=T0 + timedelta(days=401))]
    members = [Member(p.message_id, p.in_reply_to, p.references, p.date, p.subject, p.from_)
               for p in map(parse_message, raws)]
    store = Store()
    for m in members:
        store.add([m.message_id, *m.references])
    assert store.partition() == {frozenset({"p1@lkml"}), frozenset({"p2@lkml", "r2@lkml"})}
    assert shape(thread_tree(members[1:])) == [("p2@lkml", None, 0, False), ("r2@lkml", "p2@lkml", 1, False)]
    assert shape(thread_tree(members[:1])) == [("p1@lkml", None, 0, False)]


def test_a_message_referencing_fifty_ids_hangs_under_the_last() -> None:
    refs = [f"r{i}" for i in range(50)]
    nodes = thread_tree([member("r0"), member("z", refs, minute=9)])
    assert shape(nodes) == [("r0", None, 0, False), ("z", "r0", 1, False)]  # the 48 ghosts between: one child each
    nodes = thread_tree([member("r0"), member("r49", refs[:49], minute=1), member("z", refs, minute=9)])
    assert [(n.message_id, n.parent) for n in nodes] == [("r0", None), ("r49", "r0"), ("z", "r49")]


def test_a_long_chain_is_laid_out_without_recursion() -> None:
    members = [member(f"m{i}", [f"m{j}" for j in range(max(0, i - 5), i)], minute=i) for i in range(3000)]
    nodes = thread_tree(list(reversed(members)))
    assert [n.depth for n in nodes] == list(range(3000))


@given(thread_sets())
@settings(max_examples=200, deadline=None)
def test_thread_tree_is_a_forest_over_every_member(messages: list[list[str]]) -> None:
    members = [member(ids[0], ids[1:], minute=i) for i, ids in enumerate(messages)]
    nodes = thread_tree(members)
    ids = [n.message_id for n in nodes]
    assert len(ids) == len(set(ids))  # no node twice: no cycle
    assert {n.message_id for n in nodes if not n.ghost} == {m.message_id for m in members}
    position = {n.message_id: i for i, n in enumerate(nodes)}
    for index, node in enumerate(nodes):
        if node.parent is None:
            assert node.depth == 0
        else:  # depth-first: the parent comes before, one level up
            parent = nodes[position[node.parent]]
            assert position[node.parent] < index and node.depth == parent.depth + 1
    for node in nodes:
        if node.ghost:  # a ghost is kept only where it joins branches
            assert sum(1 for n in nodes if n.parent == node.message_id) >= 2
