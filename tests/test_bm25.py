"""BM25 keyword ranking (core.search.bm25): the company's statistics stay equal to a recount from
scratch through ingest, re-ingest, delete and partition rotation; ranking equals a pure-Python BM25."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.config import Settings
from core.embed import HashEmbedder
from core.ingest.accept import DocumentIn, accept_delete, accept_documents
from core.search.bm25 import Bm25
from core.search.fusion import Ranking
from core.search.retrieve import SearchRequest, retrieve
from core.tenants import create_company
from opsctl.partitions.pg import Rotator, partitions
from opsctl.partitions.plan import plan_rotation
from tests.conftest import drain
from tests.test_partitions import NOW, month_start, name, old_partition, policy_for

Stats = tuple[dict[str, int], int, int]  # units (chunks; documents for titles) per term, units, words
# the body's statistics over chunks (0013), the title's over documents (0014)
FIELDS = {"body": ("bm25_terms", "bm25_totals", "chunks", "chunks", "tsv"),
          "title": ("bm25_title_terms", "bm25_title_totals", "documents", "documents", "title_tsv")}


def stored(conn: psycopg.Connection[Any], company: int, field: str = "body") -> Stats:
    """The statistics as the triggers and rotation keep them (stripes summed, zeros dropped)."""
    terms_table, totals_table, unit, _, _ = FIELDS[field]
    terms = {r[0]: int(r[1]) for r in conn.execute(
        f"SELECT term, sum({unit}) FROM {terms_table} WHERE company_id = %s GROUP BY term HAVING sum({unit}) <> 0",
        (company,)).fetchall()}
    row = conn.execute(f"SELECT coalesce(sum({unit}), 0), coalesce(sum(words), 0) FROM {totals_table} "
                       "WHERE company_id = %s", (company,)).fetchone()
    assert row is not None
    return terms, int(row[0]), int(row[1])


def recounted(conn: psycopg.Connection[Any], company: int, field: str = "body") -> Stats:
    """The same statistics counted from scratch from the rows search can find."""
    _, _, _, table, tsv = FIELDS[field]
    terms = {r[0]: int(r[1]) for r in conn.execute(
        f"SELECT u.lexeme, count(*) FROM {table} c, unnest(c.{tsv}) u WHERE c.company_id = %s GROUP BY u.lexeme",
        (company,)).fetchall()}
    row = conn.execute(f"SELECT count(*), coalesce(sum((SELECT sum(cardinality(u.positions)) FROM unnest(c.{tsv}) u)),"
                       f" 0) FROM {table} c WHERE c.company_id = %s", (company,)).fetchone()
    assert row is not None
    return terms, int(row[0]), int(row[1])


def ingest(settings: Settings, conn: psycopg.Connection[Any], company: int, docs: dict[str, str],
           created_at: Any = None) -> None:
    accept_documents(conn, company, [DocumentIn(external_id=k, title=f"{k} key manual", text=v, created_at=created_at)
                                     for k, v in docs.items()])
    drain(settings, str(settings.database_url))


def delete(settings: Settings, conn: psycopg.Connection[Any], company: int, external_id: str) -> None:
    accept_delete(conn, company, external_id)
    drain(settings, str(settings.database_url))


def rotate(conn: psycopg.Connection[Any], db_url: str, tmp: Path) -> list[str]:
    pol = policy_for(tmp)
    steps = plan_rotation(partitions(conn, pol), pol, NOW)
    Rotator(conn, db_url, pol, tmp / "archive").apply(steps)
    return [s.action for s in steps]


def case_ingest(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    ingest(s, conn, c, {"a": "Secure shell keys and key authentication", "b": "Terminal multiplexer key bindings"})


def case_reingest(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    case_ingest(s, conn, c, tmp)
    ingest(s, conn, c, {"a": "A different text about compression of archives, archives and tapes"})


def case_delete(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    case_ingest(s, conn, c, tmp)
    delete(s, conn, c, "a")


def case_update(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    case_ingest(s, conn, c, tmp)
    conn.execute("UPDATE chunks SET body = body || ' keys keys rotated' WHERE company_id = %s AND external_id = 'b'",
                 (c,))


def case_title_update(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    case_ingest(s, conn, c, tmp)
    conn.execute("UPDATE documents SET title = 'secure shell keys' WHERE company_id = %s AND external_id = 'a'", (c,))
    conn.execute("UPDATE documents SET title = NULL WHERE company_id = %s AND external_id = 'b'", (c,))


def case_partition_dropped(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    for table in ("documents", "chunks"):
        old_partition(conn, table, -14)
    ingest(s, conn, c, {"old-1": "Old pages on tape drives and key escrow", "old-2": "Old tape formats"},
           month_start(-14).replace(day=3))
    case_ingest(s, conn, c, tmp)
    assert stored(conn, c)[1] == 4
    assert rotate(conn, str(s.database_url), tmp)[-3:] == ["detach", "archive", "drop"]
    assert not conn.execute("SELECT to_regclass(%s)", (name("chunks", -14),)).fetchone()[0]  # type: ignore[index]


def case_default_rows_moved(s: Settings, conn: psycopg.Connection[Any], c: int, tmp: Path) -> None:
    ingest(s, conn, c, {"future": "Pages dated ahead land in the default partition"}, month_start(8).replace(day=9))
    case_ingest(s, conn, c, tmp)
    assert "move_default_rows" in rotate(conn, str(s.database_url), tmp)


CASES: dict[str, Callable[[Settings, psycopg.Connection[Any], int, Path], None]] = {
    "ingest": case_ingest, "re-ingest of the same id": case_reingest, "delete": case_delete,
    "update of a chunk": case_update, "update of a title": case_title_update,
    "a partition detached and dropped": case_partition_dropped,
    "rows moved out of the default partition": case_default_rows_moved,
}


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("case", list(CASES))
def test_statistics_equal_a_recount(case: str, field: str, settings: Settings, conn: psycopg.Connection[Any],
                                    tenant: Any, other_tenant: Any, tmp_path: Path) -> None:
    ingest(settings, conn, other_tenant.company_id, {"x": "Another company's key, keys and more keys"})
    other = stored(conn, other_tenant.company_id, field)
    CASES[case](settings, conn, tenant.company_id, tmp_path)
    found = stored(conn, tenant.company_id, field)
    assert found == recounted(conn, tenant.company_id, field)
    assert found[1] > 0
    # the other company's statistics are its own: untouched, and still equal to its recount
    assert stored(conn, other_tenant.company_id, field) == other == recounted(conn, other_tenant.company_id, field)


# --- ranking ---------------------------------------------------------------------------------------------

CORPUS = [
    "SSH keys: public key authentication for the secure shell, and how an agent holds your key",
    "tmux key bindings: the prefix key, then a key; keys can be rebound with bind-key and unbind-key",
    "gpg signs and encrypts files with a key pair",
    "Authentication of users by PAM modules, passwords and one-time codes",
    "rsync copies files over ssh or its own daemon",
    "The keyboard layout and key repeat rate of the console",
    "cron runs commands on a schedule; a schedule per user",
    "Compress files with gzip, bzip2 or xz; archives with tar",
]


def insert_chunks(conn: psycopg.Connection[Any], company: int, texts: list[str]) -> list[int]:
    vectors = HashEmbedder(384).embed(texts)
    ids = []
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        row = conn.execute(
            "INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
            " VALUES (%s, %s, %s, 0, %s, %s, now()) RETURNING id",
            (company, i + 1, f"doc-{i}", text, vector)).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


def reference_bm25(conn: psycopg.Connection[Any], company: int, query: str, k1: float, b: float) -> dict[int, float]:
    """BM25 in plain Python over the company's chunks, as PostgreSQL's English parser splits the words."""
    tf: dict[int, dict[str, int]] = {}
    for cid, lexeme, n in conn.execute("SELECT c.id, u.lexeme, cardinality(u.positions) FROM chunks c, unnest(c.tsv) u"
                                       " WHERE c.company_id = %s", (company,)).fetchall():
        tf.setdefault(int(cid), {})[lexeme] = int(n)
    terms = {r[0] for r in conn.execute("SELECT lexeme FROM unnest(to_tsvector('english', %s))", (query,))}
    n_chunks = len(tf)
    avgdl = sum(sum(t.values()) for t in tf.values()) / n_chunks
    scores = {}
    for cid, freqs in tf.items():
        dl = sum(freqs.values())
        matched = terms & freqs.keys()
        if not matched:
            continue
        score = 0.0
        for term in matched:
            df = sum(1 for f in tf.values() if term in f)
            idf = math.log(1 + (n_chunks - df + 0.5) / (df + 0.5))
            score += idf * freqs[term] * (k1 + 1) / (freqs[term] + k1 * (1 - b + b * dl / avgdl))
        scores[cid] = score
    return scores


@pytest.mark.parametrize("params", [Bm25(), Bm25(2.0, 0.3), Bm25(0.5, 1.0)])
@pytest.mark.parametrize("query", ["ssh key authentication", "files", "key", "schedule of commands per user",
                                   "nothing matches zzz"])
def test_ranking_equals_a_python_bm25(conn: psycopg.Connection[Any], tenant: Any, other_tenant: Any,
                                      query: str, params: Bm25) -> None:
    insert_chunks(conn, tenant.company_id, CORPUS)
    insert_chunks(conn, other_tenant.company_id, ["key " * 50, "ssh ssh ssh"] * 5)  # not ours: no effect
    expected = reference_bm25(conn, tenant.company_id, query, params.k1, params.b)
    hits = retrieve(conn, None, tenant.company_id, SearchRequest(query=query, k=20, mode="keyword"),
                    ranking=Ranking(bm25=params))
    assert {h.chunk_id for h in hits} == set(expected)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.chunk_id], rel=1e-9)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_chunk_with_every_word_beats_one_repeating_a_word(conn: psycopg.Connection[Any], tenant: Any) -> None:
    ssh = ("ssh is the secure shell client. " + "It reads its options from a configuration file in your home "
           "directory, and a host can be named by an alias. " * 4 + "A key pair allows authentication without "
           "a password.")
    tmux = "tmux key bindings: " + "press the prefix key, then a key; the key table maps each key to a command. " * 4
    ids = insert_chunks(conn, tenant.company_id, [tmux, ssh, *CORPUS[2:]])
    hits = retrieve(conn, None, tenant.company_id, SearchRequest(query="ssh key authentication", k=10, mode="keyword"))
    assert hits[0].chunk_id == ids[1], "the page holding every word first"
    # any word matches: chunks holding only "key" or only "authentication" are found, below
    assert {h.external_id for h in hits} == {"doc-0", "doc-1", "doc-2", "doc-3", "doc-4", "doc-5"}


def test_more_matched_words_rank_higher(conn: psycopg.Connection[Any], tenant: Any) -> None:
    ids = insert_chunks(conn, tenant.company_id, [
        "compress archives", "compress archives with tar", "compress", "tar", "archives", "unrelated words here"])
    hits = retrieve(conn, None, tenant.company_id, SearchRequest(query="compress tar archives", k=10, mode="keyword"))
    assert hits[0].chunk_id == ids[1]
    assert {h.chunk_id for h in hits[1:2]} == {ids[0]}
    assert {h.chunk_id for h in hits[2:]} == set(ids[2:5])


def test_a_new_company_starts_empty(conn: psycopg.Connection[Any]) -> None:
    company = create_company(conn, "empty").company_id
    assert stored(conn, company) == ({}, 0, 0)
    assert retrieve(conn, None, company, SearchRequest(query="anything", mode="keyword")) == []


def test_concurrent_writers_of_one_company_do_not_wait_on_each_other(db_url: str, conn: psycopg.Connection[Any],
                                                                      tenant: Any) -> None:
    """Eight open transactions write the same words for one company; none waits for another's rows
    (a wait would end the statement at the lock timeout), each on its own stripe."""
    vector = "[" + ",".join(["0.5"] * 384) + "]"
    writers = [psycopg.connect(db_url) for _ in range(8)]
    try:
        for i, writer in enumerate(writers):
            writer.execute("SET lock_timeout = '2s'")
            writer.execute(
                "INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
                " VALUES (%s, %s, %s, 0, 'the same key words in every chunk', %s, now())",
                (tenant.company_id, i, f"w-{i}", vector))
        for writer in writers:
            writer.commit()
    finally:
        for writer in writers:
            writer.close()
    stripes = conn.execute("SELECT count(DISTINCT stripe) FROM bm25_totals WHERE company_id = %s",
                           (tenant.company_id,)).fetchone()
    assert stripes == (8,)
    assert stored(conn, tenant.company_id) == recounted(conn, tenant.company_id)



def test_a_write_chooses_its_stripe_once_per_company_and_statistic(conn: psycopg.Connection[Any], tenant: Any,
                                                                   other_tenant: Any) -> None:
    """One INSERT of chunks of two companies, many words each: the trigger reads each company's
    stripe once per statistics statement (terms, totals), not once per (company, term) group (0021:
    about a thousand PL/pgSQL calls per ingest batch before), and the counts are a recount's."""
    vector = "[" + ",".join(["0.5"] * 384) + "]"
    words = " ".join(f"word{i}" for i in range(300))
    conn.execute("SET track_functions = 'pl'")
    conn.execute(
        "INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
        " SELECT c, c, 'x-' || c, 0, %s, %s, now() FROM unnest(%s::bigint[]) AS c",
        (words, vector, [tenant.company_id, other_tenant.company_id]))
    calls = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
                         " WHERE funcname = 'bm25_stripe'").fetchone()
    conn.commit()
    assert calls is not None and int(calls[0]) == 2 * 2  # 2 companies x (terms, totals)
    for company in (tenant.company_id, other_tenant.company_id):
        assert stored(conn, company) == recounted(conn, company)


# --- the title as its own field (0014) ---------------------------------------------------------------------

TITLED = {"ssh": ("ssh", "OpenSSH remote login client: connects and logs into the specified host"),
          "ssh-keygen": ("ssh-keygen", "generates, manages and converts authentication keys for ssh"),
          "tmux": ("tmux", "terminal multiplexer: key bindings, windows and panes"),
          "gpg": ("gpg", "OpenPGP encryption and signing tool"),
          "untitled": (None, "a page about ssh keys without any title")}


def ingest_titled(settings: Settings, conn: psycopg.Connection[Any], company: int) -> None:
    accept_documents(conn, company, [DocumentIn(external_id=k, title=t, text=v) for k, (t, v) in TITLED.items()])
    drain(settings, str(settings.database_url))


def reference_title_bm25(conn: psycopg.Connection[Any], company: int, query: str, k1: float,
                         b: float) -> dict[int, float]:
    """BM25 of the titles in plain Python, over the company's documents: document id -> score."""
    tf: dict[int, dict[str, int]] = {int(r[0]): {} for r in conn.execute(
        "SELECT id FROM documents WHERE company_id = %s", (company,)).fetchall()}
    for did, lexeme, n in conn.execute("SELECT d.id, u.lexeme, cardinality(u.positions) FROM documents d,"
                                       " unnest(d.title_tsv) u WHERE d.company_id = %s", (company,)).fetchall():
        tf[int(did)][lexeme] = int(n)
    terms = {r[0] for r in conn.execute("SELECT lexeme FROM unnest(to_tsvector('english', %s))", (query,))}
    avgdl = sum(sum(t.values()) for t in tf.values()) / len(tf)
    scores = {}
    for did, freqs in tf.items():
        dl = sum(freqs.values())
        matched = terms & freqs.keys()
        if matched:
            scores[did] = sum(math.log(1 + (len(tf) - df + 0.5) / (df + 0.5)) * freqs[t] * (k1 + 1)
                              / (freqs[t] + k1 * (1 - b + b * dl / avgdl))
                              for t in matched for df in [sum(1 for f in tf.values() if t in f)])
    return scores


@pytest.mark.parametrize("title_weight", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("query", ["ssh key authentication", "tmux", "gpg encryption", "login"])
def test_title_score_adds_to_the_body_score(settings: Settings, conn: psycopg.Connection[Any], tenant: Any,
                                            other_tenant: Any, query: str, title_weight: float) -> None:
    ingest_titled(settings, conn, tenant.company_id)
    ingest_titled(settings, conn, other_tenant.company_id)  # not ours: no effect
    ingest(settings, conn, other_tenant.company_id, {"tmux-2": "tmux tmux gpg"})
    bm25 = Bm25()
    body = reference_bm25(conn, tenant.company_id, query, bm25.k1, bm25.b)
    titles = reference_title_bm25(conn, tenant.company_id, query, bm25.k1, bm25.b) if title_weight else {}
    doc_of = {int(r[0]): int(r[1]) for r in conn.execute(
        "SELECT id, document_id FROM chunks WHERE company_id = %s", (tenant.company_id,)).fetchall()}
    expected = {c: body.get(c, 0.0) + title_weight * titles.get(d, 0.0) for c, d in doc_of.items()
                if c in body or d in titles}
    hits = retrieve(conn, None, tenant.company_id, SearchRequest(query=query, k=20, mode="keyword"),
                    ranking=Ranking(bm25=bm25, title_weight=title_weight, per_document=False))
    assert {h.chunk_id: h.score for h in hits} == pytest.approx(expected, rel=1e-9)


def test_a_document_matching_by_its_title_alone_is_found(settings: Settings, conn: psycopg.Connection[Any],
                                                         tenant: Any) -> None:
    """"tmux" is only tmux's title: found (its first chunk) with a title weight, not without; and the
    filters hold for it as for the body's matches."""
    ingest_titled(settings, conn, tenant.company_id)
    accept_documents(conn, tenant.company_id, [DocumentIn(external_id="tmux", title="tmux", text=(
        "terminal multiplexer: key bindings, windows and panes. " * 40))])  # re-ingested: several chunks
    drain(settings, str(settings.database_url))
    req = SearchRequest(query="tmux", k=5, mode="keyword")
    hits = retrieve(conn, None, tenant.company_id, req)
    assert [h.external_id for h in hits] == ["tmux"]
    first = conn.execute("SELECT id FROM chunks WHERE company_id = %s AND external_id = 'tmux' ORDER BY ord LIMIT 1",
                         (tenant.company_id,)).fetchone()
    assert first is not None and hits[0].chunk_id == first[0]
    assert retrieve(conn, None, tenant.company_id, req, ranking=Ranking(title_weight=0.0)) == []
    filtered = SearchRequest.model_validate({"query": "tmux", "mode": "keyword", "filters": {"external_ids": ["gpg"]}})
    assert retrieve(conn, None, tenant.company_id, filtered) == []


def test_hits_are_one_per_document_by_default(settings: Settings, conn: psycopg.Connection[Any], tenant: Any) -> None:
    accept_documents(conn, tenant.company_id, [
        DocumentIn(external_id="long", text="secure shell keys and key authentication. " * 60),
        DocumentIn(external_id="short", text="ssh key authentication")])
    drain(settings, str(settings.database_url))
    req = SearchRequest(query="ssh key authentication", k=10, mode="keyword")
    chunks = retrieve(conn, None, tenant.company_id, req, ranking=Ranking(per_document=False))
    assert len(chunks) > 2 and {h.external_id for h in chunks} == {"long", "short"}
    hits = retrieve(conn, None, tenant.company_id, req)
    assert sorted(h.external_id for h in hits) == ["long", "short"]
