"""A thread's time span (``first_at``, ``last_at`` of ``GET /v1/threads/{id}``) is the span of the Date
headers its messages show: an undated message does not count, and a thread none of whose messages has
a date has no span (null), rather than the time it was ingested. A table for the pure function, and
the real API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.emails import thread_span
from core.mail.threads import Member
from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import post_email
from tests.mailfixtures import message


def at(hour: int) -> datetime:
    return datetime(2024, 3, 4, hour, tzinfo=UTC)


def member(mid: str, date: datetime | None) -> Member:
    return Member(mid, None, (), date, "s", "a@x")


@pytest.mark.parametrize(("dates", "span"), [
    ([], (None, None)),
    ([None], (None, None)),
    ([None, None], (None, None)),
    ([at(9)], (at(9), at(9))),
    ([at(11), None, at(9), at(10)], (at(9), at(11))),
    ([None, at(10)], (at(10), at(10))),
    ([datetime(2999, 1, 1, tzinfo=UTC), at(9)], (at(9), datetime(2999, 1, 1, tzinfo=UTC))),  # as the messages show
])
def test_the_span_is_that_of_the_dated_messages(dates: list[datetime | None],
                                                span: tuple[datetime | None, datetime | None]) -> None:
    assert thread_span([member(f"m{i}@x", d) for i, d in enumerate(dates)]) == span


def test_an_undated_thread_has_no_span_and_a_dated_reply_gives_it_one(api: RunningApi, tenant: Any,
                                                                       db_url: str) -> None:
    with client_for(api, tenant.api_key) as client:
        post_email(client, message(message_id="u1@x", date=None))
        post_email(client, message(message_id="u2@x", date="not a date", in_reply_to="u1@x"))
        drain(api.settings, db_url)
        thread_id = client.get("/v1/emails/u1@x").json()["thread_id"]
        undated = client.get(f"/v1/threads/{thread_id}").json()
        post_email(client, message(message_id="u3@x", date="Mon, 4 Mar 2024 10:05:00 +0000", in_reply_to="u2@x"))
        drain(api.settings, db_url)
        dated = client.get(f"/v1/threads/{thread_id}").json()
    assert [m["date"] for m in undated["messages"]] == [None, None]
    assert (undated["first_at"], undated["last_at"]) == (None, None)
    assert [m["date"] for m in dated["messages"]] == [None, None, "2024-03-04T10:05:00+00:00"]
    assert (dated["first_at"], dated["last_at"]) == ("2024-03-04T10:05:00+00:00", "2024-03-04T10:05:00+00:00")
