"""The search evaluation's pure parts: man-page rendering, queries from NAME lines, the metrics,
the tune/test split, the FTS5 peer's query (bench/manpages.py, bench/evalmetrics.py,
bench/search_eval.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.evalmetrics import choose, distinct, doc_rank, mrr, recall, split
from bench.manpages import (
    Page,
    choose_pages,
    corpus_checksum,
    description,
    family,
    page_name,
    parse_page,
    render,
    unescape,
)
from bench.search_eval import Fts5, fts5_query, score

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "frobnicate.1"

EXPECTED_TEXT = """SYNOPSIS
frobnicate [OPTION]... FILE
DESCRIPTION
Frobnicate reads FILE and rewrites the widget cache-fast. It never touches "live" data.
-q, --quiet print nothing; see unfrob(1) for the reverse.
* a bulleted item \\ escaped
Exit status
0 success
1 failure
Name Meaning
cache the widget store
SEE ALSO
widget(5)"""


def test_fixture_page_becomes_query_and_text_without_its_name_section() -> None:
    page = parse_page("frobnicate", FIXTURE.read_text())
    assert page == Page("frobnicate", "tune the widget cache for batch jobs", EXPECTED_TEXT)
    assert "NAME" not in page.text and "batch jobs" not in page.text  # the query is not indexed
    assert "never printed" not in page.text  # a macro definition is not text


@pytest.mark.parametrize(("name_lines", "expected"), [
    (["ls \\- list directory contents"], "list directory contents"),
    (["gzip, gunzip, zcat \\- compress or expand files"], "compress or expand files"),
    ([".B foo", "\\- do \\fIfoo\\fR things"], "do foo things"),
    (["a-b \\- the first dash with spaces separates"], "the first dash with spaces separates"),
    (["x - a plain hyphen"], "a plain hyphen"),
    ([".Nm cat", ".Nd concatenate and print files"], "concatenate and print files"),
    (["nodescription"], ""),
    ([], ""),
])
def test_description_of_a_name_section(name_lines: list[str], expected: str) -> None:
    assert description(name_lines) == expected


@pytest.mark.parametrize(("roff", "expected"), [
    (".SH NAME\nfoo \\- bar\n.SH DESCRIPTION\nbody", Page("foo", "bar", "DESCRIPTION\nbody")),
    ('.SH "NAME"\nfoo \\- bar\n.SH X\nbody', Page("foo", "bar", "X\nbody")),
    (".Sh NAME\n.Nm foo\n.Nd bar\n.Sh DESCRIPTION\nThe\n.Nm\ntool", Page("foo", "bar", "DESCRIPTION\nThe foo tool")),
    (".SH NAME\nfoo\n.SH DESCRIPTION\nbody", None),  # no description
    (".SH NAME\nfoo \\- bar\n", None),  # nothing but the NAME
    (".SH DESCRIPTION\nbody", None),  # no NAME section
])
def test_parse_page(roff: str, expected: Page | None) -> None:
    assert parse_page("foo", roff) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("\\fBbold\\fR and \\fIitalic\\fP", "bold and italic"),
    ("a\\-b \\(em c \\[em] d", "a-b - c - d"),
    ("\\(lqq\\(rq \\*(lqs\\*(rq", '"q" "s"'),
    ("x\\&y\\|z \\e", "xyz \\"),
    ("\\s-1SMALL\\s0 \\f[CW]mono\\f[]", "SMALL mono"),
    ('kept \\" a comment', "kept "),
    ("\\[u00E9]t\\[u00E9]", "été"),
])
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text) == expected


def test_render_no_fill_keeps_lines_and_fill_joins_them() -> None:
    assert render("a\nb\n.nf\nc\nd\n.fi\ne\nf") == "a b\nc\nd\ne f"


@pytest.mark.parametrize(("path", "name"), [
    ("/usr/share/man/man1/ls.1.gz", "ls"),
    ("/usr/share/man/man1/CA.pl.1ssl.gz", "CA.pl"),
    ("/usr/share/man/man8/apt-get.8.gz", "apt-get"),
    ("/usr/share/man/man1/[.1.gz", "["),
])
def test_page_name(path: str, name: str) -> None:
    assert page_name(Path(path)) == name


def test_choose_pages_is_seeded_sorted_and_skips_redirects_and_duplicates() -> None:
    sources = {
        "/m/b.1.gz": ".SH NAME\nb \\- beta\n.SH D\nb text",
        "/m/a.1.gz": ".SH NAME\na \\- alpha\n.SH D\na text",
        "/m/c.1.gz": ".so man1/a.1",  # a redirect
        "/m/d.1.gz": ".SH NAME\nd \\- Alpha\n.SH D\nd text",  # the same description as a
        "/m/e.1.gz": ".SH NAME\ne \\- epsilon\n.SH D\ne text",
        "/m/f.1.gz": ".SH D\nno name section",
    }
    files = [Path(p) for p in sorted(sources)]
    chosen = choose_pages(files, 10, seed=1, read=lambda p: sources[str(p)])
    names = [p.name for p in chosen]
    assert names == sorted(names)
    assert "c" not in names and "f" not in names
    assert ("a" in names) != ("d" in names)  # one of the two, never both
    assert len(names) == 3
    assert choose_pages(files, 10, seed=1, read=lambda p: sources[str(p)]) == chosen
    two = choose_pages(files, 2, seed=1, read=lambda p: sources[str(p)])
    assert len(two) == 2
    assert corpus_checksum(two) != corpus_checksum(chosen)
    assert corpus_checksum(chosen) == corpus_checksum(list(chosen))


@pytest.mark.parametrize(("ranked", "target", "k", "rank"), [
    (["a", "b", "c"], "a", 10, 1),
    (["a", "b", "c"], "c", 10, 3),
    (["a", "a", "b", "a", "c"], "c", 10, 3),  # chunks of one document count once
    (["a", "b", "c"], "c", 2, None),  # beyond k
    (["a", "a", "a", "b"], "b", 2, 2),  # k counts distinct documents
    ([], "a", 10, None),
    (["b"], "a", 10, None),
])
def test_doc_rank(ranked: list[str], target: str, k: int, rank: int | None) -> None:
    assert doc_rank(ranked, target, k) == rank


@pytest.mark.parametrize(("ranks", "expected_mrr", "expected_recall"), [
    ([1, 1], 1.0, 1.0),
    ([1, None], 0.5, 0.5),
    ([2, 4], 0.375, 1.0),
    ([None, None, None], 0.0, 0.0),
    ([1, 2, 5, None], (1 + 0.5 + 0.2) / 4, 0.75),
    ([], 0.0, 0.0),
])
def test_mrr_and_recall(ranks: list[int | None], expected_mrr: float, expected_recall: float) -> None:
    assert mrr(ranks) == pytest.approx(expected_mrr)
    assert recall(ranks) == pytest.approx(expected_recall)


def test_distinct_keeps_first_occurrences_in_order() -> None:
    assert distinct(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_split_is_deterministic_into_equal_disjoint_halves() -> None:
    keys = [f"page{i}" for i in range(101)]
    halves = split(keys, seed=13)
    assert len(halves["tune"]) == 51 and len(halves["test"]) == 50
    assert set(halves["tune"]) | set(halves["test"]) == set(keys)
    assert not set(halves["tune"]) & set(halves["test"])
    assert halves["tune"] == [k for k in keys if k in set(halves["tune"])]  # input order kept
    assert split(keys, seed=13) == halves
    assert split(list(reversed(keys)), seed=13)["tune"] == list(reversed(halves["tune"]))
    assert split(keys, seed=14) != halves
    assert halves["tune"] != keys[:51]  # not simply the first half


@pytest.mark.parametrize(("query", "expected"), [
    ("list directory contents", '"list" OR "directory" OR "contents"'),
    ("base64 encode/decode data", '"base64" OR "encode" OR "decode" OR "data"'),
    ('a "quoted" NEAR(x) -y', '"a" OR "quoted" OR "NEAR" OR "x" OR "y"'),
    ("snake_case über", '"snake" OR "case" OR "über"'),
    ("--- ...", ""),
])
def test_fts5_query_is_an_or_of_unicode61_tokens(query: str, expected: str) -> None:
    assert fts5_query(query) == expected


def test_fts5_peer_ranks_by_bm25_over_title_and_body() -> None:
    fts = Fts5([Page("ls", "", "show the files of a folder"), Page("cp", "", "copy files"),
                Page("rm", "", "remove files and folders, files")])
    assert fts.search("copy files") == ["cp", "rm", "ls"]
    assert fts.search("ls") == ["ls"]  # the title is indexed
    assert fts.search("...") == []


@pytest.mark.parametrize(("candidates", "scores", "chosen"), [
    ([1.0, 2.0, 5.0], {1.0: 0.5, 2.0: 0.7, 5.0: 0.6}, 2.0),
    ([1.0, 2.0, 5.0], {1.0: 0.7, 2.0: 0.7, 5.0: 0.7}, 1.0),  # equals: the first (the default) stays
    ([1.0, 2.0], {1.0: 0.1, 2.0: 0.2}, 2.0),
    ([3.0], {3.0: 0.0}, 3.0),
])
def test_choose_takes_the_best_tune_score_and_the_first_of_equals(candidates: list[float], scores: dict[float, float],
                                                                   chosen: float) -> None:
    assert choose(candidates, scores.__getitem__) == chosen


def test_choose_needs_a_candidate() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        choose([], lambda c: 0.0)


def test_fts5_title_weight_lifts_a_title_match() -> None:
    pages = [Page("copy", "", "move data around"), Page("mover", "", "copy copy copy data between disks")]
    fts = Fts5(pages)
    assert fts.search("copy") == ["mover", "copy"]
    assert fts.ranker(10.0)("copy") == ["copy", "mover"]


def test_choose_pages_caps_a_family_at_five_percent() -> None:
    sources = {f"/m/gen_{i:03d}.1.gz": f".SH NAME\ngen_{i} \\- generated page {i}\n.SH D\ntext {i}"
               for i in range(100)}
    sources |= {f"/m/tool{i:02d}.1.gz": f".SH NAME\ntool{i} \\- tool number {i}\n.SH D\ntool text {i}"
                for i in range(40)}
    files = [Path(p) for p in sorted(sources)]
    chosen = choose_pages(files, 40, seed=3, read=lambda p: sources[str(p)])
    assert len(chosen) == 40
    assert sum(p.name.startswith("gen_") for p in chosen) == 2  # 5 % of 40
    assert [family(p.name) for p in chosen].count("gen") == 2


@pytest.mark.parametrize(("name", "expected"), [
    ("gcloud_alpha_compute_disks_list", "gcloud"), ("pg_dump", "pg"), ("git-commit", "git-commit"), ("ls", "ls"),
])
def test_family(name: str, expected: str) -> None:
    assert family(name) == expected


def test_score_runs_every_query_and_reports_each_half() -> None:
    pages = [Page("a", "qa", "x"), Page("b", "qb", "x"), Page("c", "qc", "x"), Page("d", "qd", "x")]
    answers = {"qa": ["a", "a", "b"], "qb": ["a", "b"], "qc": ["a", "b", "d"], "qd": []}
    s = score("peer", "bm25", None, answers.__getitem__, pages, {"tune": ["a", "b"], "test": ["c", "d"]})
    assert s.ranks == {"a": 1, "b": 2, "c": None, "d": None}
    assert s.mrr == {"tune": 0.75, "test": 0.0, "all": 0.375}
    assert s.recall == {"tune": 1.0, "test": 0.0, "all": 0.5}
    assert s.queries == {"tune": 2, "test": 2, "all": 4}
    assert s.docs_per_answer == (2 + 2 + 3 + 0) / 4


def test_sweep_scores_combinations_on_given_lists_and_the_ceiling() -> None:
    """bench.fusion_sweep: each combination's MRR from the candidate lists alone; the ceiling is the
    share of queries whose page either half holds in its top 10 pages."""
    from bench.fusion_sweep import TITLE_WEIGHTS, ceiling, trials
    from core.search.fusion import Hit, Ranking

    def hits(*pages: str) -> list[Hit]:
        return [Hit(i, ord(p), p, "", 10.0 - i) for i, p in enumerate(pages)]

    # "a": keyword has it 2nd after two chunks of "x" (per document: 2nd; chunks: 2nd page too);
    # "b": only vector has it; "c": neither half
    lists = {"a": (hits("y", "a"), hits("x", "x", "a")), "b": (hits("b"), hits("z")), "c": (hits("q"), hits("r"))}
    halves = {"tune": ["a", "b"], "test": ["c"]}
    tried = trials({w: lists for w in TITLE_WEIGHTS}, halves, Ranking())
    keyword = [t for t in tried if t.mode == "keyword"]
    assert keyword and all(t.mrr["tune"] == pytest.approx(0.25) for t in keyword)  # a at 2, b missed
    vector = [t for t in tried if t.mode == "vector"]
    assert all(t.mrr["tune"] == pytest.approx(0.75) and t.mrr["test"] == 0.0 for t in vector)
    assert {t.mode for t in tried} == {"keyword", "vector", "hybrid"}
    assert ceiling(lists, halves) == {"top10": {"tune": 1.0, "test": 0.0}, "candidates": {"tune": 1.0, "test": 0.0}}
