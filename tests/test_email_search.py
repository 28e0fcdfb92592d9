"""Search over mail: hits carry their thread (now, after merges), and ``group_by: thread`` answers k threads."""

from __future__ import annotations

from typing import Any

import pytest

from core.search.retrieve import Hit, group_by_thread
from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import post_email
from tests.mailfixtures import message


def mail(mid: str, text: str, *refs: str) -> bytes:
    return message(message_id=mid, references=refs, in_reply_to=refs[-1] if refs else None, body=text + "\n",
                   subject="Re: fruit" if refs else "fruit")


def search(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_hits_on_mail_carry_their_thread_now(api: RunningApi, tenant: Any, db_url: str) -> None:
    with client_for(api, tenant.api_key) as client:
        post_email(client, mail("a1@x", "kiwi orchard report"))
        post_email(client, mail("a2@x", "kiwi again", "a1@x"))
        post_email(client, mail("b1@x", "kiwi elsewhere"))
        client.post("/v1/documents", json={"documents": [{"external_id": "doc", "text": "a kiwi document"}]})
        drain(api.settings, db_url)
        threads = {m: client.get(f"/v1/emails/{m}").json()["thread_id"] for m in ("a1@x", "a2@x", "b1@x")}
        first = search(client, query="kiwi", mode="keyword")
        assert search(client, query="kiwi", mode="keyword")["cached"] is True
        by_id = {h["external_id"]: h for h in first["results"]}
        assert {e: h.get("thread_id") for e, h in by_id.items()} == {
            "email:a1@x": threads["a1@x"], "email:a2@x": threads["a1@x"], "email:b1@x": threads["b1@x"], "doc": None}
        assert "thread_id" not in by_id["doc"] and "matched_messages" not in by_id["doc"]
        # b1 and the a-thread merge (a2 thread is larger): the next answer says so, not the cached one
        post_email(client, mail("c1@x", "no fruit here", "a2@x", "b1@x"))
        drain(api.settings, db_url)
        after = search(client, query="kiwi", mode="keyword")
    assert after["cached"] is False
    assert {h["thread_id"] for h in after["results"] if "thread_id" in h} == {threads["a1@x"]}


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_group_by_thread_answers_k_threads_past_a_long_one(api: RunningApi, tenant: Any, db_url: str,
                                                           mode: str) -> None:
    """A thread of 30 messages that all match ranks first and fills the first 10·k candidates on its
    own; the answer still holds k threads, each its best chunk and its matched messages."""
    with client_for(api, tenant.api_key) as client:
        post_email(client, mail("long0@x", "durian durian durian durian"))
        for i in range(1, 30):
            post_email(client, mail(f"long{i}@x", "durian durian durian durian", f"long{i - 1}@x"))
        post_email(client, mail("short0@x", "durian"))
        post_email(client, mail("short1@x", "a durian and a banana", "short0@x"))
        client.post("/v1/documents", json={"documents": [{"external_id": "doc", "text": "durian"}]})
        drain(api.settings, db_url)
        long_thread = client.get("/v1/emails/long0@x").json()["thread_id"]
        short_thread = client.get("/v1/emails/short0@x").json()["thread_id"]
        grouped = search(client, query="durian", mode=mode, k=3, group_by="thread")["results"]
        two = search(client, query="durian", mode="keyword", k=2, group_by="thread")["results"]
    if mode == "keyword":  # ranked by how often the word appears: the long thread first
        assert [(g.get("thread_id"), g.get("matched_messages")) for g in grouped] == [
            (long_thread, 30), (short_thread, 2), (None, None)]
        assert [g.get("thread_id") for g in two] == [long_thread, short_thread]
    else:  # similarity ranks as it does: three distinct groups, each counting its messages among the candidates
        assert len(grouped) == 3
        assert {g.get("thread_id") for g in grouped} == {long_thread, short_thread, None}
        matched = {g.get("thread_id"): g.get("matched_messages") for g in grouped}
        assert 1 <= matched[long_thread] <= 30 and 1 <= matched[short_thread] <= 2 and matched[None] is None


HITS = [Hit(1, 10, "email:a", "t", 0.9), Hit(2, 11, "email:b", "t", 0.8), Hit(3, 20, "doc", "t", 0.7),
        Hit(4, 10, "email:a", "t", 0.6), Hit(5, 12, "email:c", "t", 0.5), Hit(6, 21, "email:orphan", "t", 0.4)]


@pytest.mark.parametrize(("k", "expected"), [
    (1, [(1, 7, 2)]),
    (3, [(1, 7, 2), (3, None, 1), (5, 8, 1)]),
    (9, [(1, 7, 2), (3, None, 1), (5, 8, 1), (6, None, 1)]),
])
def test_grouping_is_pure_and_keeps_rank_order(k: int, expected: list[tuple[int, int | None, int]]) -> None:
    threads = {"email:a": 7, "email:b": 7, "email:c": 8}  # email:orphan: a document whose message is gone
    groups = group_by_thread(HITS, threads, k)
    assert [(hit.chunk_id, thread, matched) for hit, thread, matched in groups] == expected
