"""Which thread each message of a batch joins, and every write that follows (pure).

The worker reads, for a whole batch, every id its messages name (one registry read: own ids,
In-Reply-To, References), the threads those ids belong to (locked, with their counters) and,
when grouping by subject is on, the newest thread of each subject. ``plan_mail`` then takes the
messages in batch order, each through ``core.mail.threads.plan_assignment`` over what is known so
far — the batch's earlier messages included — so messages of one batch that name each other end
in one thread whatever their order. The plan says every write: threads to create, threads whose
counters change, threads merged away (each with its final survivor), ids to register, and each
message's thread.

New threads carry provisional ids (``PROVISIONAL`` and up) until the database numbers them
(``MailPlan.numbered``): above every real id, so a merge between equals keeps the existing thread
(``plan_assignment`` keeps the smallest id), and in creation order, as the real ids will be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime

from core.mail.subjects import normalize_subject
from core.mail.threads import ThreadRef, plan_assignment

PROVISIONAL = 1 << 62

Key = tuple[int, str]  # (company id, message id)
ThreadKey = tuple[int, int]  # (company id, thread id)


@dataclass(frozen=True)
class MailIn:
    """One message to thread, as the planner needs it."""

    company_id: int
    message_id: str
    references: tuple[str, ...]  # In-Reply-To and References, without the message's own id
    at: datetime  # when it was written (its document's created_at)
    subject: str | None
    subject_key: str  # the normalized subject; '' when there is none


@dataclass(frozen=True)
class ThreadState:
    """A thread's counters: how many messages, their time span, the subject of its oldest message.

    A thread whose messages were all deleted keeps its row (its ids stay registered: a message naming
    one of them joins it) with ``message_count`` 0 and its old span: its next message starts the
    counters again, and folded into another thread it adds nothing."""

    message_count: int
    first_at: datetime
    last_at: datetime
    subject: str | None
    subject_key: str

    def add(self, at: datetime, subject: str | None, subject_key: str) -> ThreadState:
        return self.absorb(ThreadState(1, at, at, subject, subject_key))

    def absorb(self, other: ThreadState) -> ThreadState:
        if not other.message_count:
            return self
        if not self.message_count:
            return other
        take = other.subject is not None and (other.first_at < self.first_at or self.subject is None)
        return ThreadState(self.message_count + other.message_count, min(self.first_at, other.first_at),
                           max(self.last_at, other.last_at), other.subject if take else self.subject,
                           other.subject_key if take else self.subject_key)


@dataclass(frozen=True)
class Remaining:
    """What a thread holds after deletes, as one aggregate read over its messages says it."""

    message_count: int
    first_at: datetime | None  # of its messages' created_at (None: no message left)
    last_at: datetime | None
    subject: str | None  # of its oldest message with a subject
    unreferenced: bool  # that message names no other (only such a message groups by subject)

    def state(self, before: ThreadState, group_by_subject: bool) -> ThreadState:
        """The thread's counters now (an emptied thread keeps its old span: the columns are NOT NULL)."""
        if not self.message_count or self.first_at is None or self.last_at is None:
            return ThreadState(0, before.first_at, before.last_at, None, "")
        key = normalize_subject(self.subject) if group_by_subject and self.unreferenced and self.subject else ""
        return ThreadState(self.message_count, self.first_at, self.last_at, self.subject, key)


@dataclass(frozen=True)
class ThreadWrite:
    company_id: int
    thread_id: int
    state: ThreadState


@dataclass(frozen=True)
class Merge:
    company_id: int
    thread_id: int  # merged away: its ids and messages move to ``into``
    into: int


@dataclass(frozen=True)
class MailPlan:
    thread_of: tuple[int | None, ...]  # per message, in order: its thread; None: stored already (a duplicate)
    created: tuple[ThreadWrite, ...]  # new threads, in creation order (provisional ids until ``numbered``)
    changed: tuple[ThreadWrite, ...]  # existing threads whose counters changed (survivors of merges included)
    merged: tuple[Merge, ...]  # existing threads folded into another
    registered: tuple[tuple[int, str, int], ...]  # (company id, message id, thread id) not known before

    def numbered(self, ids: Sequence[int]) -> MailPlan:
        """The plan with the new threads' provisional ids replaced by ``ids`` (one per created thread, in order)."""
        if len(ids) != len(self.created):
            raise ValueError(f"{len(self.created)} new threads, {len(ids)} ids")
        real = {w.thread_id: new for w, new in zip(self.created, ids, strict=True)}

        def num(thread_id: int) -> int:
            return real.get(thread_id, thread_id)

        return MailPlan(
            tuple(None if t is None else num(t) for t in self.thread_of),
            tuple(replace(w, thread_id=num(w.thread_id)) for w in self.created),
            self.changed,
            tuple(replace(m, into=num(m.into)) for m in self.merged),
            tuple((c, i, num(t)) for c, i, t in self.registered),
        )


def plan_mail(messages: Sequence[MailIn], registry: Mapping[Key, int], stored: Set[Key],
              threads: Mapping[ThreadKey, ThreadState], by_subject: Mapping[tuple[int, str], int],
              group_by_subject: bool) -> MailPlan:
    """Thread ``messages`` in order.

    ``registry``: the known ids among those the messages name, and their threads; ``stored``: the
    ids among them that are stored messages; ``threads``: the state of every thread ``registry``
    and ``by_subject`` name; ``by_subject``: per (company, subject key), the newest thread with it.
    With ``group_by_subject``, a message naming no other message and whose own id is unknown joins
    the newest thread of its subject (an empty subject never groups)."""
    state = dict(threads)
    known = dict(registry)
    subjects = dict(by_subject)
    done = set(stored)
    parent: dict[ThreadKey, int] = {}  # merged away -> where it went
    created: list[ThreadKey] = []
    fresh: dict[Key, None] = {}  # ids registered by this batch, in order
    placed: list[ThreadKey | None] = []
    provisional = PROVISIONAL

    def root(company: int, thread: int) -> int:
        while (company, thread) in parent:
            thread = parent[(company, thread)]
        return thread

    for message in messages:
        company = message.company_id
        if (company, message.message_id) in done:
            placed.append(None)
            continue
        ids = (message.message_id, *message.references)
        refs: dict[str, ThreadRef] = {}
        for name in ids:
            thread = known.get((company, name))
            if thread is not None:
                thread = root(company, thread)
                refs[name] = ThreadRef(thread, state[(company, thread)].message_count)
        plan = plan_assignment(ids, refs)
        target = plan.thread_id
        if target is None and group_by_subject and not message.references and message.subject_key:
            grouped = subjects.get((company, message.subject_key))
            target = None if grouped is None else root(company, grouped)
        if target is None:
            target, provisional = provisional, provisional + 1
            created.append((company, target))
            state[(company, target)] = ThreadState(0, message.at, message.at, message.subject, message.subject_key)
            if message.subject_key:
                subjects[(company, message.subject_key)] = target
        for other in plan.merge:
            other = root(company, other)
            if other != target:
                parent[(company, other)] = target
                state[(company, target)] = state[(company, target)].absorb(state[(company, other)])
        for name in plan.register:
            known[(company, name)] = target
            fresh[(company, name)] = None
        state[(company, target)] = state[(company, target)].add(message.at, message.subject, message.subject_key)
        done.add((company, message.message_id))
        placed.append((company, target))

    new = set(created)
    return MailPlan(
        thread_of=tuple(None if p is None else root(*p) for p in placed),
        created=tuple(ThreadWrite(c, t, state[(c, t)]) for c, t in created if (c, t) not in parent),
        changed=tuple(ThreadWrite(c, t, s) for (c, t), s in state.items()
                      if (c, t) not in new and (c, t) not in parent and s != threads.get((c, t))),
        merged=tuple(Merge(c, t, root(c, t)) for (c, t) in parent if (c, t) not in new),
        registered=tuple((c, name, root(c, known[(c, name)])) for c, name in fresh),
    )
