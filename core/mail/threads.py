"""Threads: which thread a message joins (a plan the store applies) and a thread's tree (JWZ).

A thread is every message connected through Message-ID, In-Reply-To and References (notmuch,
public-inbox): the connected components of the id graph, whatever the order of arrival. The
store records every id it has seen (a message's own and the ones it references) under a thread;
``plan_assignment`` reads the ones a new message names:
- none known: a new thread, every id registered under it;
- one thread: the message joins it;
- several (the message links threads that grew apart, e.g. a reply that arrived before its
  parent): they merge into the largest (ties: the smallest thread_id), so a merge rewrites the
  smaller threads only.
A reply that arrives before its parent registers the parent's id; the parent, arriving later,
finds its own id known and joins. So any order of arrival ends in the same partition.

``thread_tree`` lays one thread's messages out as JWZ does ("message threading",
https://www.jwz.org/doc/threading.html): parent links from References (the last one is the
parent) or In-Reply-To, loops and self-references refused, empty containers ("ghosts": ids
referenced but not stored) kept only where they join branches, siblings oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise


@dataclass(frozen=True)
class ThreadRef:
    thread_id: int
    size: int                  # messages in the thread (to pick the larger one on a merge)


@dataclass(frozen=True)
class Assignment:
    thread_id: int | None      # the thread the message joins; None: start a new thread
    merge: tuple[int, ...]     # other threads to fold into thread_id (each smaller or equal)
    register: tuple[str, ...]  # ids (own + references) not yet known: record them under the thread


def plan_assignment(ids: Sequence[str], known: Mapping[str, ThreadRef]) -> Assignment:
    """ids: the message's own id first, then its references. known: the ids already recorded for
    this company and their threads (found by index lookups). The largest thread survives a merge
    (ties: the smallest thread_id), so a merge rewrites the smaller threads only."""
    unique = tuple(dict.fromkeys(i for i in ids if i))
    threads: dict[int, int] = {}
    for i in unique:
        ref = known.get(i)
        if ref is not None:
            threads[ref.thread_id] = max(ref.size, threads.get(ref.thread_id, 0))
    register = tuple(i for i in unique if i not in known)
    if not threads:
        return Assignment(None, (), register)
    survivor = min(threads, key=lambda tid: (-threads[tid], tid))
    return Assignment(survivor, tuple(sorted(t for t in threads if t != survivor)), register)


@dataclass(frozen=True)
class Member:                  # one stored message of a thread, as the tree needs it
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    date: datetime | None
    subject: str | None
    from_: str | None


@dataclass(frozen=True)
class Node:
    message_id: str
    parent: str | None         # the message id of its parent (a ghost's id when the parent is missing)
    depth: int
    ghost: bool                # a referenced message that is not stored (JWZ's empty container)
    member: Member | None      # None for a ghost


class _Container:
    __slots__ = ("children", "id", "member", "parent")

    def __init__(self, id_: str) -> None:
        self.id = id_
        self.member: Member | None = None
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def reaches(self, other: _Container) -> bool:
        """Whether ``other`` is this container or one of its ancestors."""
        node: _Container | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def link_under(self, parent: _Container) -> bool:
        """Make ``parent`` this container's parent, unless that would close a loop."""
        if self.parent is parent:
            return True
        if parent is self or (self.children and parent.reaches(self)):
            return False
        if self.parent is not None:
            self.parent.children.remove(self)
        self.parent = parent
        parent.children.append(self)
        return True


def thread_tree(members: Sequence[Member]) -> list[Node]:
    """JWZ over one thread's messages: parents from References (last is the parent) falling back
    to In-Reply-To; loops and self-references broken; ghosts kept where they join branches (pruned
    when they have one child); siblings oldest first; the list in depth-first order."""
    table: dict[str, _Container] = {}

    def container(id_: str) -> _Container:
        found = table.get(id_)
        if found is None:
            found = table[id_] = _Container(id_)
        return found

    for member in sorted(members, key=_age):  # parents first: links rarely need a loop check
        own = container(member.message_id)
        if own.member is not None:
            continue  # a duplicate: the first one stands
        own.member = member
        refs = [r for r in dict.fromkeys(member.references or ((member.in_reply_to,) if member.in_reply_to else ()))
                if r and r != member.message_id]
        chain = [container(r) for r in refs]
        for parent, child in pairwise(chain):
            if child.parent is None:  # an existing link stands (JWZ): References disagree often
                child.link_under(parent)
        if chain and (own.parent is None or own.parent is not chain[-1]):
            if own.parent is not None:  # the message's own References are the better word
                own.parent.children.remove(own)
                own.parent = None
            own.link_under(chain[-1])
    roots = [c for c in table.values() if c.parent is None]
    return _flatten(_pruned(roots))


def _age(member: Member) -> tuple[bool, float, str]:
    """Oldest first; undated messages after dated ones; the id breaks ties."""
    date = member.date
    return (date is None, date.timestamp() if date is not None else 0.0, member.message_id)


def _every(roots: list[_Container]) -> list[_Container]:
    """Every container under ``roots``, each after its parent (iterative: threads run deep)."""
    order: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


def _pruned(roots: list[_Container]) -> list[_Container]:
    """Ghosts without children removed, ghosts with one child replaced by it (bottom-up)."""
    order = _every(roots)
    for node in reversed(order):  # children before parents
        node.children = [kept for child in node.children for kept in _kept(child)]
        for child in node.children:
            child.parent = node
    out = [kept for root in roots for kept in _kept(root)]
    for root in out:
        root.parent = None
    return out


def _kept(node: _Container) -> list[_Container]:
    if node.member is None and len(node.children) <= 1:
        return node.children
    return [node]


def _flatten(roots: list[_Container]) -> list[Node]:
    earliest: dict[str, tuple[bool, float, str]] = {}
    order = _every(roots)
    for node in reversed(order):  # a ghost sorts by its oldest descendant
        keys = [earliest[child.id] for child in node.children]
        own = [_age(node.member)] if node.member is not None else []
        earliest[node.id] = min([*own, *keys]) if own or keys else (True, 0.0, node.id)
    nodes: list[Node] = []
    pending = [(root, 0) for root in sorted(roots, key=lambda r: earliest[r.id], reverse=True)]
    while pending:
        node, depth = pending.pop()
        nodes.append(Node(node.id, node.parent.id if node.parent else None, depth, node.member is None, node.member))
        children = sorted(node.children, key=lambda c: earliest[c.id], reverse=True)
        pending.extend((child, depth + 1) for child in children)
    return nodes
